//! The conformance suite against a real etcd (Debian's etcd 3.4, data on tmpfs, host loopback).
//!
//! Connections go through a small TCP proxy on loopback so that a test can cut every open
//! connection at once, exactly as a network failure does, without waiting for keep-alives.

use std::sync::{Arc, Mutex};

use margay_datastore::conformance::{self, Backend};
use margay_datastore::{Datastore, Etcd, EtcdConfig, Key};
use margay_harness::fixtures::Etcd as EtcdServer;
use margay_harness::proxy::CutProxy;

/// How [`Backend::interrupt`] breaks the connections.
enum Interruption {
    /// Cut every connection at the proxy, as a network failure does.
    Cut(CutProxy),
    /// Stop etcd and start it again on the same data.
    Restart,
}

struct RealEtcd {
    // Field order: the client and proxy go before the server stops.
    store: Etcd,
    how: Interruption,
    server: Mutex<Option<EtcdServer>>,
}

impl RealEtcd {
    /// etcd behind a proxy whose connections `interrupt` cuts.
    async fn start() -> RealEtcd {
        Self::start_with(true).await
    }

    /// etcd reached directly, restarted by `interrupt`.
    async fn start_restartable() -> RealEtcd {
        Self::start_with(false).await
    }

    async fn start_with(proxied: bool) -> RealEtcd {
        let server = tokio::task::spawn_blocking(EtcdServer::start_on_loopback)
            .await
            .unwrap()
            .expect("etcd starts (is etcd-server installed? scripts/install-deps.sh)");
        let (endpoint, how) = if proxied {
            let proxy = CutProxy::start(server.client_addr()).await.expect("proxy");
            (format!("http://{}", proxy.addr()), Interruption::Cut(proxy))
        } else {
            (server.endpoint(), Interruption::Restart)
        };
        let config = EtcdConfig {
            endpoints: vec![endpoint],
            ..Default::default()
        };
        let store = Etcd::connect(&config).await.expect("connect to etcd");
        RealEtcd {
            store,
            how,
            server: Mutex::new(Some(server)),
        }
    }

    fn etcdctl(&self, args: &[&str]) -> String {
        let server = self.server.lock().unwrap();
        server
            .as_ref()
            .expect("server present")
            .etcdctl(args)
            .expect("etcdctl")
            .stdout
    }
}

#[async_trait::async_trait]
impl Backend for RealEtcd {
    fn store(&self) -> Arc<dyn Datastore> {
        Arc::new(self.store.clone())
    }
    async fn put_raw(&self, key: &Key, value: Vec<u8>) {
        self.store.put_raw(key, value).await.expect("raw put");
    }
    async fn compact(&self) {
        let r = self.store.current_revision().await.expect("revision");
        self.store.compact(&r).await.expect("compact");
    }
    async fn interrupt(&self) {
        match &self.how {
            Interruption::Cut(proxy) => proxy.cut(),
            Interruption::Restart => {
                let mut server = self.server.lock().unwrap().take().expect("server present");
                let server = tokio::task::spawn_blocking(move || {
                    server.restart().expect("etcd restarts");
                    server
                })
                .await
                .unwrap();
                *self.server.lock().unwrap() = Some(server);
            }
        }
        // The client redials on the next request; the contract is to return once it serves.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        while self.store.current_revision().await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "etcd did not serve again within 20 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_stopped_and_restarted_mid_watch_loses_nothing() {
    conformance::watch_resumes_after_interruption(&RealEtcd::start_restartable().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_passes_crud_and_namespaces() {
    let b = RealEtcd::start().await;
    conformance::crud(&b).await;
    conformance::namespaces(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_loses_no_update_under_concurrent_writers() {
    conformance::no_lost_update(&RealEtcd::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_watches_list_first_and_keep_order() {
    let b = RealEtcd::start().await;
    conformance::watch_lists_first(&b).await;
    conformance::watch_order(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_watch_resumes_after_the_connection_drops() {
    conformance::watch_resumes_after_interruption(&RealEtcd::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_watch_relists_after_compaction() {
    let relists = conformance::watch_relists_after_compaction(&RealEtcd::start().await).await;
    eprintln!("relisted after compaction in {relists} of 3 rounds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_reports_bad_data_with_its_key() {
    conformance::bad_data_is_reported_with_its_key(&RealEtcd::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_keys_follow_the_documented_layout() {
    let b = RealEtcd::start().await;
    let ds = b.store();
    ds.create(
        &Key::cluster("ippools", "default-ipv4").unwrap(),
        b"{}".to_vec(),
    )
    .await
    .unwrap();
    ds.create(
        &Key::cluster("ipamblocks", "100-64-0-0-26").unwrap(),
        b"{}".to_vec(),
    )
    .await
    .unwrap();
    ds.create(
        &Key::namespaced("workloadendpoints", "default", "pod-a").unwrap(),
        b"{}".to_vec(),
    )
    .await
    .unwrap();
    let out = b.etcdctl(&["get", "/margay/", "--prefix", "--keys-only"]);
    let mut keys: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "/margay/ipam/v1/ipamblocks/100-64-0-0-26",
            "/margay/v1/ippools/default-ipv4",
            "/margay/v1/workloadendpoints/default/pod-a"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_etcd_is_unavailable_naming_the_endpoint() {
    // A loopback port nobody listens on: bind, note the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = EtcdConfig {
        endpoints: vec![format!("http://127.0.0.1:{port}")],
        timeout: Some(std::time::Duration::from_millis(500)),
        ..Default::default()
    };
    let err = match Etcd::connect(&config).await {
        Err(e) => e,
        Ok(ds) => ds
            .get(&Key::cluster("ippools", "x").unwrap())
            .await
            .unwrap_err(),
    };
    assert!(err.is_retryable(), "{err}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}
