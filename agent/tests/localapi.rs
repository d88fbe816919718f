//! The local API over a real Unix socket: a fake agent behind it, the blocking client in front.

use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use margay_agent::localapi::client::{Client, ClientError};
use margay_agent::localapi::proto::*;
use margay_agent::localapi::{ApiError, Handler, server};

#[derive(Default)]
struct Fake {
    calls: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl Handler for Fake {
    async fn allocate(&self, req: Allocate) -> Result<Allocated, ApiError> {
        let a = req.attachment.unwrap_or_default();
        self.calls
            .lock()
            .unwrap()
            .push(format!("allocate {}", a.handle_id));
        if req.ipv4_pools.iter().any(|p| p == "empty-pool") {
            return Err(ApiError::new(
                ErrorKind::Exhausted,
                "no address left in pools [empty-pool]",
            ));
        }
        Ok(Allocated {
            addresses: vec!["100.64.0.5/32".into()],
        })
    }
    async fn endpoint_up(&self, req: EndpointUp) -> Result<Done, ApiError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("up {} {:?}", req.host_ifname, req.addresses));
        Ok(Done {
            detail: "route programmed".into(),
        })
    }
    async fn endpoint_down(&self, req: EndpointDown) -> Result<Done, ApiError> {
        self.calls.lock().unwrap().push(format!(
            "down {}",
            req.attachment.unwrap_or_default().handle_id
        ));
        Ok(Done::default())
    }
    async fn release(&self, req: Release) -> Result<Done, ApiError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("release {}", req.handle_id));
        Ok(Done {
            detail: "released 1 address".into(),
        })
    }
    async fn status(&self) -> StatusReply {
        StatusReply {
            ready: true,
            reason: String::new(),
            agent_version: "test".into(),
        }
    }
    async fn gc(&self, req: Gc) -> Result<Done, ApiError> {
        self.calls.lock().unwrap().push(format!(
            "gc {} keep {}",
            req.network,
            req.valid_handles.len()
        ));
        Ok(Done::default())
    }
}

fn attachment(handle: &str) -> Option<Attachment> {
    Some(Attachment {
        handle_id: handle.into(),
        container_id: "c1".into(),
        ifname: "eth0".into(),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_reaches_the_handler_and_answers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run/agent.sock");
    let fake = Arc::new(Fake::default());
    let listener = server::bind(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the socket is root-only");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let srv = tokio::spawn(server::serve(listener, fake.clone(), async {
        let _ = stopped.await;
    }));

    let client = Client::new(&path, Duration::from_secs(5));
    let out = tokio::task::spawn_blocking(move || {
        let a = client
            .allocate(Allocate {
                attachment: attachment("net.c1"),
                num_v4: 1,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(a.addresses, ["100.64.0.5/32"]);
        let up = EndpointUp {
            attachment: attachment("net.c1"),
            host_ifname: "mgyc440f455693".into(),
            addresses: a.addresses,
            mac: String::new(),
        };
        assert_eq!(client.endpoint_up(up).unwrap().detail, "route programmed");
        assert!(client.status().unwrap().ready);
        client
            .endpoint_down(EndpointDown {
                attachment: attachment("net.c1"),
            })
            .unwrap();
        assert_eq!(
            client.release("net.c1").unwrap().detail,
            "released 1 address"
        );
        client
            .gc(Gc {
                network: "net".into(),
                valid_handles: vec!["net.c2".into()],
            })
            .unwrap();
        match client.allocate(Allocate {
            attachment: attachment("net.c3"),
            num_v4: 1,
            ipv4_pools: vec!["empty-pool".into()],
            ..Default::default()
        }) {
            Err(ClientError::Agent(e)) => {
                assert_eq!(e.kind, ErrorKind::Exhausted);
                assert_eq!(e.to_string(), "no address left in pools [empty-pool]");
            }
            other => panic!("expected the agent's error, got {other:?}"),
        }
    })
    .await;
    out.unwrap();
    assert_eq!(
        *fake.calls.lock().unwrap(),
        [
            "allocate net.c1",
            "up mgyc440f455693 [\"100.64.0.5/32\"]",
            "down net.c1",
            "release net.c1",
            "gc net keep 1",
            "allocate net.c3"
        ]
    );
    stop.send(()).unwrap();
    srv.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_of_another_protocol_version_is_refused_with_what_to_do() {
    use prost::Message;
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.sock");
    let listener = server::bind(&path).unwrap();
    tokio::spawn(server::serve(
        listener,
        Arc::new(Fake::default()),
        std::future::pending(),
    ));
    let answer = tokio::task::spawn_blocking(move || {
        let mut s = std::os::unix::net::UnixStream::connect(&path).unwrap();
        let req = Request {
            version: 99,
            body: Some(request::Body::Status(Status {})),
        }
        .encode_to_vec();
        s.write_all(&(req.len() as u32).to_be_bytes()).unwrap();
        s.write_all(&req).unwrap();
        // Then garbage on the same connection: answered with an error, not a crash.
        s.write_all(&3u32.to_be_bytes()).unwrap();
        s.write_all(&[0xff, 0xff, 0xff]).unwrap();
        let mut read = || {
            let mut len = [0u8; 4];
            s.read_exact(&mut len).unwrap();
            let mut buf = vec![0; u32::from_be_bytes(len) as usize];
            s.read_exact(&mut buf).unwrap();
            Response::decode(buf.as_slice()).unwrap()
        };
        (read(), read())
    })
    .await
    .unwrap();
    match answer.0.body {
        Some(response::Body::Error(e)) => {
            assert_eq!(e.kind, ErrorKind::Version as i32);
            assert!(
                e.message.contains("version 99") && e.message.contains("margay-cni install"),
                "{}",
                e.message
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(answer.1.body, Some(response::Body::Error(e)) if e.kind == ErrorKind::Invalid as i32)
    );
}

#[test]
fn no_agent_is_an_unreachable_error_naming_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nobody.sock");
    let err = Client::new(&path, Duration::from_secs(1))
        .status()
        .unwrap_err();
    assert!(matches!(err, ClientError::Unreachable { .. }));
    assert!(
        err.to_string().contains("nobody.sock") && err.to_string().contains("margay-node running"),
        "{err}"
    );
}

#[test]
fn a_file_in_the_way_of_the_socket_is_never_removed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.sock");
    std::fs::write(&path, "precious").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt
        .block_on(async { server::bind(&path).map(|_| ()) })
        .unwrap_err();
    assert!(err.to_string().contains("is not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
}

/// A handler that programs policy: answers `Applied` from an index.
struct WithPolicy(margay_agent::policy::AppliedIndex);

#[async_trait::async_trait]
impl Handler for WithPolicy {
    async fn allocate(&self, _: Allocate) -> Result<Allocated, ApiError> {
        Ok(Allocated::default())
    }
    async fn endpoint_up(&self, _: EndpointUp) -> Result<Done, ApiError> {
        Ok(Done::default())
    }
    async fn endpoint_down(&self, _: EndpointDown) -> Result<Done, ApiError> {
        Ok(Done::default())
    }
    async fn release(&self, _: Release) -> Result<Done, ApiError> {
        Ok(Done::default())
    }
    async fn status(&self) -> StatusReply {
        StatusReply::default()
    }
    async fn gc(&self, _: Gc) -> Result<Done, ApiError> {
        Ok(Done::default())
    }
    async fn applied(&self, req: Applied) -> Result<AppliedReply, ApiError> {
        self.0.lookup(&req.kind, &req.namespace, &req.name)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_answers_not_ready_then_the_programmed_revision() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.sock");
    let index = margay_agent::policy::AppliedIndex::default();
    let listener = server::bind(&path).unwrap();
    tokio::spawn(server::serve(
        listener,
        Arc::new(WithPolicy(index.clone())),
        std::future::pending(),
    ));
    let no_policy = dir.path().join("plain.sock");
    let listener = server::bind(&no_policy).unwrap();
    tokio::spawn(server::serve(
        listener,
        Arc::new(Fake::default()),
        std::future::pending(),
    ));
    tokio::task::spawn_blocking(move || {
        let client = Client::new(&path, Duration::from_secs(5));
        match client.applied("networkpolicies", "x", "deny-all") {
            Err(ClientError::Agent(e)) => assert_eq!(e.kind, ErrorKind::NotReady),
            other => panic!("expected not ready, got {other:?}"),
        }
        index.publish(
            [(
                ("networkpolicies".into(), "x".into(), "deny-all".into()),
                "17".into(),
            )]
            .into_iter()
            .collect(),
        );
        let r = client.applied("networkpolicies", "x", "deny-all").unwrap();
        assert!(r.present);
        assert_eq!(r.revision, "17");
        let r = client.applied("workloadendpoints", "x", "gone").unwrap();
        assert!(!r.present);
        assert!(r.revision.is_empty());
        match client.applied("pods", "x", "a") {
            Err(ClientError::Agent(e)) => assert_eq!(e.kind, ErrorKind::Invalid),
            other => panic!("expected invalid, got {other:?}"),
        }
        // A handler without policy (the default method) says so.
        match Client::new(&no_policy, Duration::from_secs(5)).applied("namespaces", "", "x") {
            Err(ClientError::Agent(e)) => assert_eq!(e.kind, ErrorKind::NotReady),
            other => panic!("expected not ready, got {other:?}"),
        }
    })
    .await
    .unwrap();
}
