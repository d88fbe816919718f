//! The controller role (`margay-node --role controllers`) against real etcd and the test API
//! server, both in a network namespace of the test's own (`infra`, 198.18.0.1), with the test
//! and the controllers running inside it too:
//!
//! - etcd mode: a deleted Node's blocks, endpoints and addresses are released; a Pod's label
//!   change reaches its WorkloadEndpoint in etcd; a NetworkPolicy created in the API appears in
//!   etcd (and goes when deleted); a leak is released only after its grace period;
//! - Kubernetes mode (the real binary): deleting the core Node deletes the Margay Node and
//!   releases its blocks;
//! - Kubernetes mode (no WorkloadEndpoints stored): the leak check takes the live handles from
//!   the Pods' `margay.dev/ipamHandleID` annotations, so a running pod keeps its address while
//!   an orphan is released.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

mod common;

use common::annotated_pod;

use margay_agent::config::DatastoreType;
use margay_agent::controllers::{self, Timers};
use margay_agent::health::Readiness;
use margay_api::k8s_openapi::api::core::v1::{Namespace, Node as KubeNode, Pod};
use margay_api::k8s_openapi::api::networking::v1::NetworkPolicy;
use margay_api::{
    BlockAffinity, IPAMBlock, IPPool, IPPoolSpec, MargayNode, NodeSpec, WorkloadEndpoint,
    WorkloadEndpointSpec,
};
use margay_datastore::{Datastore, Etcd, EtcdConfig, Kubernetes, KubernetesConfig, Typed};
use margay_harness::fixtures::Etcd as EtcdServer;
use margay_harness::{Daemon, Netns, Pair, Ready};
use margay_integration::apiserver::{ApiServer, Config};
use margay_ipam::Ipam;
use serde_json::json;

const INFRA: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
const WAIT: Duration = Duration::from_secs(30);

/// The infra namespace with etcd in it.
struct Infra {
    // Field order: etcd stops before its namespace goes.
    etcd: EtcdServer,
    pair: Pair,
}

fn infra() -> Infra {
    let pair = Pair::new("ctl").expect("namespaces");
    pair.a.link_up("lo").expect("lo up");
    let etcd = EtcdServer::start_in(&pair.a, INFRA)
        .expect("etcd starts (is etcd-server installed? scripts/install-deps.sh)");
    Infra { etcd, pair }
}

impl Infra {
    fn ns(&self) -> &Netns {
        &self.pair.a
    }

    /// Runs `fut` inside the namespace.
    fn run<F: Future + Send>(&self, fut: F) -> F::Output
    where
        F::Output: Send,
    {
        self.ns()
            .block_on(fut)
            .expect("runs in the infra namespace")
    }
}

/// Polls `check` until it returns `Some`, for at most [`WAIT`].
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn etcd(endpoint: String) -> Arc<dyn Datastore> {
    Arc::new(
        Etcd::connect(&EtcdConfig {
            endpoints: vec![endpoint],
            ..Default::default()
        })
        .await
        .expect("connect to etcd"),
    )
}

async fn api_server(listen: SocketAddr) -> (ApiServer, Kubernetes) {
    let server = ApiServer::start(Config {
        listen,
        ..Default::default()
    })
    .await
    .expect("the test API server starts");
    let kube = Kubernetes::connect(&KubernetesConfig {
        server: Some(server.url()),
        timeout: Some(Duration::from_secs(10)),
        ..Default::default()
    })
    .await
    .expect("a client of the API server");
    (server, kube)
}

fn timers() -> Timers {
    Timers {
        leak_check_interval: Duration::from_millis(500),
        leak_grace_period: Duration::from_secs(3),
        resync_interval: Duration::from_secs(2),
    }
}

async fn register(ds: &Arc<dyn Datastore>, node: &str) {
    Typed::<MargayNode>::new(Arc::clone(ds))
        .create(&MargayNode::new(node, NodeSpec::default()))
        .await
        .expect("create Node");
}

async fn blocks_of(ds: &Arc<dyn Datastore>, node: &str) -> (usize, usize) {
    let (blocks, _) = Typed::<IPAMBlock>::new(Arc::clone(ds))
        .list(None)
        .await
        .expect("list blocks");
    let (affs, _) = Typed::<BlockAffinity>::new(Arc::clone(ds))
        .list(None)
        .await
        .expect("list affinities");
    (
        blocks
            .iter()
            .filter(|b| b.spec.affinity_node() == Some(node))
            .count(),
        affs.iter().filter(|a| a.spec.node == node).count(),
    )
}

/// A pod of `node` with an address and its WorkloadEndpoint.
async fn pod_endpoint(ds: &Arc<dyn Datastore>, ipam: &Ipam, node: &str, ns: &str, pod: &str) {
    let handle = format!("k8s-pod-network.{node}-{pod}");
    let got = ipam
        .node(node, BTreeMap::new())
        .auto_assign(&handle, &BTreeMap::new(), 1, 0)
        .await
        .expect("an address");
    let name = WorkloadEndpoint::name_for(node, pod, "eth0");
    let mut w = WorkloadEndpoint::new(
        &name,
        WorkloadEndpointSpec {
            node: node.into(),
            pod: pod.into(),
            endpoint: "eth0".into(),
            interface_name: "mgy0123456789a".into(),
            ip_networks: got.ips().iter().map(|ip| format!("{ip}/32")).collect(),
            ipam_handle_id: Some(handle),
            ..Default::default()
        },
    );
    w.metadata.namespace = Some(ns.into());
    w.metadata.labels = Some(BTreeMap::from([
        ("margay.dev/namespace".to_string(), ns.to_string()),
        ("margay.dev/orchestrator".to_string(), "k8s".to_string()),
    ]));
    Typed::<WorkloadEndpoint>::new(Arc::clone(ds))
        .create(&w)
        .await
        .expect("create WorkloadEndpoint");
}

/// Waits until `handle` holds no address (the leak check released it).
async fn released(ipam: &Ipam, handle: &str) {
    eventually(
        &format!("{handle} is released after the grace period"),
        || {
            let ipam = ipam.clone();
            async move {
                ipam.addresses_of(handle)
                    .await
                    .ok()
                    .filter(|a| a.is_empty())
            }
        },
    )
    .await;
}

async fn pool(ds: &Arc<dyn Datastore>) {
    Typed::<IPPool>::new(Arc::clone(ds))
        .create(&IPPool::new("pool", IPPoolSpec::new("100.64.0.0/16")))
        .await
        .expect("create IPPool");
}

#[test]
fn etcd_mode_releases_a_deleted_nodes_blocks_and_endpoints() {
    let infra = infra();
    let endpoint = infra.etcd.endpoint();
    infra.run(async move {
        let ds = etcd(endpoint).await;
        let (_server, kube) = api_server(SocketAddr::new(INFRA, 0)).await;
        pool(&ds).await;
        let ipam = Ipam::new(Arc::clone(&ds));
        for n in ["node-1", "node-2"] {
            register(&ds, n).await;
            pod_endpoint(&ds, &ipam, n, "default", &format!("web-{n}")).await;
        }
        assert_eq!(blocks_of(&ds, "node-1").await, (1, 1));
        let readiness = Readiness::default();
        let _tasks = controllers::start(
            Arc::clone(&ds),
            kube,
            DatastoreType::EtcdV3,
            timers(),
            readiness.clone(),
        );
        eventually("the controllers are ready", || {
            let r = readiness.clone();
            async move { r.is_met("nodes").then_some(()) }
        })
        .await;

        Typed::<MargayNode>::new(Arc::clone(&ds))
            .delete(None, "node-1", None)
            .await
            .expect("delete node-1");
        eventually("node-1's block and affinity are released", || {
            let ds = Arc::clone(&ds);
            async move { (blocks_of(&ds, "node-1").await == (0, 0)).then_some(()) }
        })
        .await;
        let (weps, _) = Typed::<WorkloadEndpoint>::new(Arc::clone(&ds))
            .list(None)
            .await
            .unwrap();
        let nodes: Vec<&str> = weps.iter().map(|w| w.spec.node.as_str()).collect();
        assert_eq!(
            nodes,
            ["node-2"],
            "node-1's endpoint is deleted, node-2's kept"
        );
        assert!(
            ipam.addresses_of("k8s-pod-network.node-1-web-node-1")
                .await
                .unwrap()
                .is_empty(),
            "node-1's pod address is freed"
        );
        assert_eq!(
            blocks_of(&ds, "node-2").await,
            (1, 1),
            "node-2 keeps its block"
        );
        assert_eq!(
            ipam.addresses_of("k8s-pod-network.node-2-web-node-2")
                .await
                .unwrap()
                .len(),
            1
        );
    });
}

#[test]
fn etcd_mode_copies_pod_labels_and_named_ports_onto_the_endpoint() {
    let infra = infra();
    let endpoint = infra.etcd.endpoint();
    infra.run(async move {
        let ds = etcd(endpoint).await;
        let (_server, kube) = api_server(SocketAddr::new(INFRA, 0)).await;
        let api: Arc<dyn Datastore> = Arc::new(kube.clone());
        pool(&ds).await;
        let ipam = Ipam::new(Arc::clone(&ds));
        register(&ds, "node-1").await;
        let pods = Typed::<Pod>::new(Arc::clone(&api));
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web", "tier": "a"}},
            "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "web",
                "ports": [{"containerPort": 8080, "name": "http"}, {"containerPort": 9090}]}]}
        }))
        .unwrap();
        pods.create(&pod).await.expect("create Pod");
        pod_endpoint(&ds, &ipam, "node-1", "shop", "web").await;
        let _tasks = controllers::start(
            Arc::clone(&ds),
            kube,
            DatastoreType::EtcdV3,
            timers(),
            Readiness::default(),
        );
        let weps = Typed::<WorkloadEndpoint>::new(Arc::clone(&ds));
        let name = WorkloadEndpoint::name_for("node-1", "web", "eth0");
        let labels_of = |want: &'static str| {
            let weps = weps.clone();
            let name = name.clone();
            move || {
                let weps = weps.clone();
                let name = name.clone();
                async move {
                    let w = weps.get(Some("shop"), &name).await.ok()?;
                    let l = w.metadata.labels.clone().unwrap_or_default();
                    (l.get("tier").map(String::as_str) == Some(want)).then_some(w)
                }
            }
        };
        let w = eventually("the pod's labels reach the endpoint", labels_of("a")).await;
        let labels = w.metadata.labels.clone().unwrap();
        assert_eq!(labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(
            labels.get("margay.dev/namespace").map(String::as_str),
            Some("shop"),
            "the agent's own labels stay"
        );
        let ports: Vec<(String, u16)> = w
            .spec
            .ports
            .iter()
            .map(|p| (p.name.clone(), p.port))
            .collect();
        assert_eq!(
            ports,
            [("http".to_string(), 8080)],
            "only the named port is taken"
        );

        pods.update_with(Some("shop"), "web", 5, |p| {
            let l = p.metadata.labels.get_or_insert_with(Default::default);
            l.insert("tier".into(), "b".into());
            l.remove("app");
            Ok(true)
        })
        .await
        .expect("change the pod's labels");
        let w = eventually("the label change reaches the endpoint", labels_of("b")).await;
        let labels = w.metadata.labels.unwrap();
        assert!(
            !labels.contains_key("app"),
            "a label removed from the pod goes: {labels:?}"
        );
        assert_eq!(
            labels.get("margay.dev/orchestrator").map(String::as_str),
            Some("k8s")
        );
    });
}

#[test]
fn etcd_mode_copies_namespaces_and_network_policies() {
    let infra = infra();
    let endpoint = infra.etcd.endpoint();
    infra.run(async move {
        let ds = etcd(endpoint).await;
        let (_server, kube) = api_server(SocketAddr::new(INFRA, 0)).await;
        let api: Arc<dyn Datastore> = Arc::new(kube.clone());
        let ns: Namespace = serde_json::from_value(json!({
            "metadata": {"name": "shop", "labels": {"team": "blue"}}
        }))
        .unwrap();
        Typed::<Namespace>::new(Arc::clone(&api))
            .create(&ns)
            .await
            .expect("create Namespace");
        // A stale policy in etcd that the API does not have goes at the first reconcile.
        let stale: NetworkPolicy = serde_json::from_value(json!({
            "metadata": {"name": "stale", "namespace": "shop"}, "spec": {"podSelector": {}}
        }))
        .unwrap();
        Typed::<NetworkPolicy>::new(Arc::clone(&ds))
            .create(&stale)
            .await
            .unwrap();
        let readiness = Readiness::default();
        let _tasks = controllers::start(
            Arc::clone(&ds),
            kube,
            DatastoreType::EtcdV3,
            timers(),
            readiness.clone(),
        );
        let in_etcd = Typed::<NetworkPolicy>::new(Arc::clone(&ds));
        let etcd_ns = Typed::<Namespace>::new(Arc::clone(&ds));
        let copied = eventually("the namespace is copied into etcd", || {
            let etcd_ns = etcd_ns.clone();
            async move { etcd_ns.get(None, "shop").await.ok() }
        })
        .await;
        assert_eq!(
            copied
                .metadata
                .labels
                .unwrap()
                .get("team")
                .map(String::as_str),
            Some("blue")
        );
        eventually("the stale policy is removed from etcd", || {
            let p = in_etcd.clone();
            async move { p.get(Some("shop"), "stale").await.is_err().then_some(()) }
        })
        .await;

        let policy: NetworkPolicy = serde_json::from_value(json!({
            "metadata": {"name": "allow-web", "namespace": "shop"},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}},
                     "ingress": [{"ports": [{"port": "http", "protocol": "TCP"}]}],
                     "policyTypes": ["Ingress"]}
        }))
        .unwrap();
        let api_policies = Typed::<NetworkPolicy>::new(Arc::clone(&api));
        api_policies
            .create(&policy)
            .await
            .expect("create NetworkPolicy");
        let got = eventually("the policy appears in etcd", || {
            let p = in_etcd.clone();
            async move { p.get(Some("shop"), "allow-web").await.ok() }
        })
        .await;
        assert_eq!(got.spec, policy.spec);
        assert!(readiness.is_met("networkpolicies"));

        api_policies
            .delete(Some("shop"), "allow-web", None)
            .await
            .expect("delete NetworkPolicy");
        eventually("the policy goes from etcd", || {
            let p = in_etcd.clone();
            async move {
                p.get(Some("shop"), "allow-web")
                    .await
                    .is_err()
                    .then_some(())
            }
        })
        .await;
    });
}

#[test]
fn a_leak_is_released_only_after_its_grace_period() {
    let infra = infra();
    let endpoint = infra.etcd.endpoint();
    infra.run(async move {
        let ds = etcd(endpoint).await;
        let (_server, kube) = api_server(SocketAddr::new(INFRA, 0)).await;
        pool(&ds).await;
        register(&ds, "node-1").await;
        let ipam = Ipam::new(Arc::clone(&ds));
        // An address whose pod never got an endpoint (a CNI ADD that died half way).
        ipam.node("node-1", BTreeMap::new())
            .auto_assign("k8s-pod-network.orphan", &BTreeMap::new(), 1, 0)
            .await
            .unwrap();
        let allocated = tokio::time::Instant::now();
        let _tasks = controllers::start(
            Arc::clone(&ds),
            kube,
            DatastoreType::EtcdV3,
            timers(),
            Readiness::default(),
        );
        // Checks run every 0.5 s; the grace period is 3 s from the first look, which came after
        // the allocation: at 1.5 s the address cannot have been released.
        tokio::time::sleep_until(allocated + Duration::from_millis(1500)).await;
        assert_eq!(
            ipam.addresses_of("k8s-pod-network.orphan")
                .await
                .unwrap()
                .len(),
            1,
            "not released within the grace period"
        );
        released(&ipam, "k8s-pod-network.orphan").await;
        assert!(
            allocated.elapsed() >= timers().leak_grace_period,
            "released after the grace period"
        );
    });
}

/// Creates Margay's CRDs (from `manifests/crds.yaml`) in the API server behind `api`.
async fn install_crds(api: &Arc<dyn Datastore>) {
    let crds = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../manifests/crds.yaml"
    ))
    .unwrap();
    for doc in crds
        .split("\n---\n")
        .filter(|d| d.contains("kind: CustomResourceDefinition"))
    {
        let crd: margay_api::k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
            serde_saphyr::from_str(doc).expect("a CRD");
        Typed::new(Arc::clone(api))
            .create(&crd)
            .await
            .expect("create CRD");
    }
}

#[test]
fn kubernetes_mode_leak_check_keeps_the_addresses_of_pods() {
    let infra = infra();
    infra.run(async move {
        let (_server, kube) = api_server(SocketAddr::new(INFRA, 0)).await;
        let api: Arc<dyn Datastore> = Arc::new(kube.clone());
        install_crds(&api).await;
        pool(&api).await;
        register(&api, "node-1").await;
        let ipam = Ipam::new(Arc::clone(&api));
        let node = ipam.node("node-1", BTreeMap::new());
        let live = node
            .auto_assign("k8s-pod-network.web", &BTreeMap::new(), 1, 0)
            .await
            .unwrap();
        node.auto_assign("k8s-pod-network.orphan", &BTreeMap::new(), 1, 0)
            .await
            .unwrap();
        // The running pod: what the agent writes on CNI ADD in Kubernetes mode.
        let pod = annotated_pod("web", "node-1", &live.ips(), "k8s-pod-network.web");
        Typed::<Pod>::new(Arc::clone(&api))
            .create(&pod)
            .await
            .expect("create Pod");
        let _tasks = controllers::start(
            Arc::clone(&api),
            kube,
            DatastoreType::Kubernetes,
            timers(),
            Readiness::default(),
        );
        released(&ipam, "k8s-pod-network.orphan").await;
        assert_eq!(
            ipam.addresses_of("k8s-pod-network.web").await.unwrap(),
            live.ips(),
            "the pod's address outlives the grace period: its handle is live"
        );
        assert!(
            Typed::<WorkloadEndpoint>::new(Arc::clone(&api))
                .list(None)
                .await
                .unwrap()
                .0
                .is_empty(),
            "no WorkloadEndpoint is stored in Kubernetes mode"
        );
    });
}

/// The core Kubernetes Nodes (not a datastore kind: `nodes` there is Margay's Node).
fn core_nodes(url: &str) -> kube::Api<KubeNode> {
    let config = kube::Config::new(url.parse().expect("a URL"));
    kube::Api::all(kube::Client::try_from(config).expect("a kube client"))
}

/// Whether `GET /readiness` answers 200.
async fn ready(addr: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let req = format!("GET /readiness HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    out.starts_with("HTTP/1.1 200")
}

fn margay_node_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/debug/deps");
    let bin = dir.join("margay-node");
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build -p margay-agent --bins` (same target dir)",
        bin.display()
    );
    bin
}

#[test]
fn kubernetes_mode_releases_the_blocks_of_a_deleted_core_node() {
    let infra = infra();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let toml = dir.path().join("controllers.toml");
    std::fs::write(
        &toml,
        "health_port = 19099\nmetrics_port = 0\nlog_level = \"info,margay_agent=debug\"\n",
    )
    .unwrap();
    let server = Daemon::builder("apiserver", env!("CARGO_BIN_EXE_margay-test-apiserver"))
        .arg("--listen")
        .arg(format!("{INFRA}:6443"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .netns(infra.ns())
        .ready(Ready::LogContains("listening on".into()))
        .timeout(Duration::from_secs(20))
        .spawn()
        .expect("the API server starts in the infra namespace");
    let url = format!("http://{INFRA}:6443");
    let connect = {
        let url = url.clone();
        move || {
            let url = url.clone();
            async move {
                Arc::new(
                    Kubernetes::connect(&KubernetesConfig {
                        server: Some(url),
                        timeout: Some(Duration::from_secs(10)),
                        ..Default::default()
                    })
                    .await
                    .expect("client"),
                ) as Arc<dyn Datastore>
            }
        }
    };
    let c = connect.clone();
    let u = url.clone();
    infra.run(async move {
        let url = u;
        let api = c().await;
        install_crds(&api).await;
        pool(&api).await;
        let ipam = Ipam::new(Arc::clone(&api));
        for n in ["node-1", "node-2"] {
            let core: KubeNode = serde_json::from_value(json!({"metadata": {"name": n}})).unwrap();
            core_nodes(&url)
                .create(&Default::default(), &core)
                .await
                .expect("create the core Node");
            register(&api, n).await;
            ipam.node(n, BTreeMap::new())
                .auto_assign(&format!("k8s-pod-network.{n}"), &BTreeMap::new(), 1, 0)
                .await
                .unwrap();
            // Its pod is gone; the address stays until the node goes.
            ipam.release_handle(&format!("k8s-pod-network.{n}"))
                .await
                .unwrap();
        }
        assert_eq!(blocks_of(&api, "node-1").await, (1, 1));
    });

    let mut controller = Daemon::builder("controllers", margay_node_bin())
        .args(["--role", "controllers", "--config"])
        .arg(&toml)
        .env("DATASTORE_TYPE", "kubernetes")
        .env("KUBECONFIG", &kubeconfig)
        .env("LEAK_CHECK_INTERVAL", "1h")
        .netns(infra.ns())
        .ready(Ready::LogContains("controllers started".into()))
        .timeout(Duration::from_secs(20))
        .spawn()
        .expect("margay-node --role controllers starts");

    infra.run(async move {
        let api = connect().await;
        eventually("the controller is ready", || async {
            ready("127.0.0.1:19099").await.then_some(())
        })
        .await;
        core_nodes(&url)
            .delete("node-1", &Default::default())
            .await
            .expect("delete the core Node");
        eventually("node-1's Margay Node, block and affinity go", || {
            let api = Arc::clone(&api);
            async move {
                let gone = Typed::<MargayNode>::new(Arc::clone(&api))
                    .get(None, "node-1")
                    .await
                    .is_err();
                (gone && blocks_of(&api, "node-1").await == (0, 0)).then_some(())
            }
        })
        .await;
        assert_eq!(
            blocks_of(&api, "node-2").await,
            (1, 1),
            "node-2 keeps its block"
        );
        assert!(
            Typed::<MargayNode>::new(api)
                .get(None, "node-2")
                .await
                .is_ok()
        );
    });
    assert!(controller.is_running(), "{}", controller.log_tail(30));
    drop(server);
}
