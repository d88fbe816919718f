//! The test API server over plain HTTP/1.1: what kubectl does not exercise (bearer tokens,
//! which kubectl 1.33 does not send over `http://`; bookmarks; 410 Gone; preconditions).

use std::time::Duration;

use margay_integration::apiserver::{ApiServer, Config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends one request and reads until the server closes or `wait` passes; returns the status
/// code and everything after the headers (chunk sizes included, for streams).
async fn request(
    server: &ApiServer,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
    wait: Duration,
) -> (u16, String) {
    let mut s = TcpStream::connect(server.addr()).await.expect("connect");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
        server.addr(),
        body.len()
    );
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.expect("send");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => panic!("read: {e}"),
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

const SHORT: Duration = Duration::from_secs(5);

fn cm(name: &str) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}},"data":{{"a":"1"}}}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bearer_token_is_required_when_set() {
    let server = ApiServer::start(Config {
        token: Some("s3cret".into()),
        ..Config::default()
    })
    .await
    .unwrap();
    let (code, body) = request(&server, "GET", "/api/v1/namespaces", &[], "", SHORT).await;
    assert_eq!(code, 401, "{body}");
    assert!(body.contains(r#""reason":"Unauthorized""#), "{body}");
    let auth = ["Authorization: Bearer s3cret"];
    let (code, body) = request(&server, "GET", "/api/v1/namespaces", &auth, "", SHORT).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("kube-system"));
    // Version and health stay open, as on a real cluster.
    assert_eq!(
        request(&server, "GET", "/version", &[], "", SHORT).await.0,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_updates_and_deletes_conflict_and_duplicates_already_exist() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let path = "/api/v1/namespaces/default/configmaps";
    let json = ["Content-Type: application/json"];
    let (code, created) = request(&server, "POST", path, &json, &cm("x"), SHORT).await;
    assert_eq!(code, 201, "{created}");
    let (code, body) = request(&server, "POST", path, &json, &cm("x"), SHORT).await;
    assert_eq!(code, 409);
    assert!(body.contains(r#""reason":"AlreadyExists""#), "{body}");
    let obj: serde_json::Value = serde_json::from_str(&created).unwrap();
    let rv = obj["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();

    let stale = cm("x").replace(r#""name":"x""#, r#""name":"x","resourceVersion":"1""#);
    let (code, body) = request(&server, "PUT", &format!("{path}/x"), &json, &stale, SHORT).await;
    assert_eq!(code, 409, "{body}");
    assert!(body.contains(r#""reason":"Conflict""#), "{body}");
    let pre = r#"{"preconditions":{"resourceVersion":"1"}}"#;
    let (code, _) = request(&server, "DELETE", &format!("{path}/x"), &json, pre, SHORT).await;
    assert_eq!(code, 409);
    let pre = format!(
        r#"{{"preconditions":{{"resourceVersion":"{rv}"}},"propagationPolicy":"Background"}}"#
    );
    let (code, _) = request(&server, "DELETE", &format!("{path}/x"), &json, &pre, SHORT).await;
    assert_eq!(code, 200);
    let (code, body) = request(&server, "GET", &format!("{path}/x"), &[], "", SHORT).await;
    assert_eq!(code, 404);
    assert!(body.contains(r#"configmaps \"x\" not found"#), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_send_bookmarks_and_initial_events_end() {
    let server = ApiServer::start(Config {
        bookmark_interval: Duration::from_millis(200),
        ..Config::default()
    })
    .await
    .unwrap();
    let path = "/api/v1/namespaces/default/configmaps";
    request(
        &server,
        "POST",
        path,
        &["Content-Type: application/json"],
        &cm("x"),
        SHORT,
    )
    .await;
    let watch = format!(
        "{path}?watch=true&allowWatchBookmarks=true&sendInitialEvents=true&timeoutSeconds=1"
    );
    let (code, body) = request(&server, "GET", &watch, &[], "", SHORT).await;
    assert_eq!(code, 200);
    let added = body.find(r#""type":"ADDED""#).expect("the existing object");
    let end = body
        .find("k8s.io/initial-events-end")
        .expect("the initial-events-end bookmark");
    assert!(added < end, "{body}");
    assert!(
        body.matches(r#""type":"BOOKMARK""#).count() >= 2,
        "periodic bookmarks: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_a_compacted_revision_gets_410_gone() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let path = "/api/v1/namespaces/default/configmaps";
    for n in ["a", "b"] {
        request(
            &server,
            "POST",
            path,
            &["Content-Type: application/json"],
            &cm(n),
            SHORT,
        )
        .await;
    }
    let (code, _) = request(&server, "POST", "/margay-test/compact", &[], "", SHORT).await;
    assert_eq!(code, 200);
    let (code, body) = request(
        &server,
        "GET",
        &format!("{path}?watch=1&resourceVersion=2"),
        &[],
        "",
        SHORT,
    )
    .await;
    assert_eq!(code, 200);
    assert!(
        body.contains(r#""type":"ERROR""#) && body.contains(r#""code":410"#),
        "{body}"
    );
    assert!(body.contains(r#""reason":"Expired""#), "{body}");
    // From the current revision the watch is fine.
    let now = server.revision();
    let (_, body) = request(
        &server,
        "GET",
        &format!("{path}?watch=1&resourceVersion={now}&timeoutSeconds=1"),
        &[],
        "",
        SHORT,
    )
    .await;
    assert!(!body.contains("ERROR"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_and_openapi_list_a_new_crd() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let crd = r#"{"apiVersion":"apiextensions.k8s.io/v1","kind":"CustomResourceDefinition",
        "metadata":{"name":"things.example.margay.dev"},
        "spec":{"group":"example.margay.dev","scope":"Namespaced",
          "names":{"plural":"things","kind":"Thing"},
          "versions":[{"name":"v1","served":true,"storage":true,
            "schema":{"openAPIV3Schema":{"type":"object","properties":{"spec":{"type":"object",
              "properties":{"size":{"type":"integer"}}}}}}}]}}"#;
    let json = ["Content-Type: application/json"];
    let (code, body) = request(
        &server,
        "POST",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        &json,
        crd,
        SHORT,
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let (_, apis) = request(&server, "GET", "/apis", &[], "", SHORT).await;
    assert!(apis.contains("example.margay.dev/v1"), "{apis}");
    let (_, list) = request(
        &server,
        "GET",
        "/apis/example.margay.dev/v1",
        &[],
        "",
        SHORT,
    )
    .await;
    assert!(
        list.contains(r#""name":"things""#) && list.contains(r#""namespaced":true"#),
        "{list}"
    );
    let (_, index) = request(&server, "GET", "/openapi/v3", &[], "", SHORT).await;
    assert!(index.contains("apis/example.margay.dev/v1"), "{index}");
    // Without fieldValidation an unknown field is dropped with a warning.
    let thing = r#"{"apiVersion":"example.margay.dev/v1","kind":"Thing","metadata":{"name":"t"},"spec":{"size":3,"colour":"red"}}"#;
    let (code, body) = request(
        &server,
        "POST",
        "/apis/example.margay.dev/v1/namespaces/default/things",
        &json,
        thing,
        SHORT,
    )
    .await;
    assert_eq!(code, 201, "{body}");
    assert!(!body.contains("colour"), "{body}");
    // Deleting the CRD deletes its objects and stops serving them.
    let (code, _) = request(
        &server,
        "DELETE",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/things.example.margay.dev",
        &[],
        "",
        SHORT,
    )
    .await;
    assert_eq!(code, 200);
    let (code, _) = request(
        &server,
        "GET",
        "/apis/example.margay.dev/v1/things",
        &[],
        "",
        SHORT,
    )
    .await;
    assert_eq!(code, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_server_ends_open_watches() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let addr = server.addr();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET /api/v1/configmaps?watch=1 HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    tokio::time::timeout(SHORT, server.stop())
        .await
        .expect("stops within 5 s");
    // The watch ends and the connection closes.
    let mut rest = Vec::new();
    assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
    let read = tokio::time::timeout(SHORT, s.read_to_end(&mut rest)).await;
    assert!(
        read.is_ok(),
        "the connection stayed open after stop: {:?}",
        String::from_utf8_lossy(&rest)
    );
}
