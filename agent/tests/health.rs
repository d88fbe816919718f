//! The health and metrics endpoints over real HTTP on loopback.

use std::sync::Arc;

use margay_agent::health::{Metrics, Readiness, router};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn readiness_turns_200_when_every_condition_is_met_and_metrics_are_served() {
    let readiness = Readiness::default();
    readiness.declare("datastore", "waiting for the initial sync");
    let metrics = Arc::new(Metrics::new());
    metrics.routes.set(3);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(readiness.clone(), metrics);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    assert!(get(addr, "/liveness").await.starts_with("HTTP/1.0 200"));
    let r = get(addr, "/readiness").await;
    assert!(
        r.starts_with("HTTP/1.0 503") && r.contains("datastore: waiting for the initial sync"),
        "{r}"
    );
    readiness.met("datastore");
    assert!(get(addr, "/readiness").await.starts_with("HTTP/1.0 200"));
    let m = get(addr, "/metrics").await;
    assert!(m.contains("margay_routes 3"), "{m}");
}
