//! The manifests' RBAC against what the code does.
//!
//! What each role needs is `margay_agent::access::needs` (kinds and verbs), turned into API
//! groups and resources by the Kubernetes backend's own kind map
//! (`margay_datastore::kubernetes::api_resource`). Three checks keep that table honest:
//!
//! 1. **the source**: each role's source files are scanned for the datastore kinds they name
//!    (`Typed::<T>`, `Typed<T>`, `follow::<T>`, `mirror::<T>`, `Api<T>`, literal kind names in
//!    `Key::cluster("…")`/`Key::namespaced("…")`); a kind the table lacks fails;
//! 2. **the running code**: the controller runs against the test API server with its datastore
//!    wrapped in a recorder while it releases a deleted node and a leak; every (verb, kind) it
//!    used must be in the table;
//!    (`kube_slice.rs` adds the node agents' and a reflector's real requests, from the API
//!    server's access log);
//! 3. **the manifests**: for `margay.yaml` (Kubernetes mode) and `margay-etcd.yaml` (etcd mode),
//!    every permission in the table is granted to the role's ServiceAccount, nothing more is,
//!    and no rule has a `*`.

mod common;

use common::{annotated_pod, repo_root};

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use margay_agent::access::{KUBE_NODES, Need, kinds_by_type_name, needs};
use margay_agent::config::{DatastoreType, Role};
use margay_agent::controllers::{self, Timers};
use margay_agent::health::Readiness;
use margay_api::k8s_openapi::api::core::v1::Node as KubeNode;
use margay_api::k8s_openapi::api::core::v1::Pod;
use margay_api::k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use margay_api::{BlockAffinity, IPAMBlock, IPPool, IPPoolSpec, MargayNode, NodeSpec};
use margay_datastore::audit::Recorder;
use margay_datastore::kubernetes::api_resource;
use margay_datastore::{Datastore, Kubernetes, KubernetesConfig, Typed};
use margay_integration::apiserver::{ApiServer, Config};
use margay_integration::rbac::{Permission, allows, documents, granted, wildcards};
use margay_ipam::Ipam;
use serde_json::json;

const ROLES: [(Role, &str); 3] = [
    (Role::Node, "margay-node"),
    (Role::RouteReflector, "margay-route-reflector"),
    (Role::Controllers, "margay-controllers"),
];

/// A need as API permissions.
fn permissions(need: &Need) -> Vec<Permission> {
    let (group, resource) = if need.kind == KUBE_NODES {
        (String::new(), "nodes".to_string())
    } else {
        let ar = api_resource(&need.kind);
        (ar.group, ar.plural)
    };
    let ns = need.namespace.map(str::to_owned);
    let mut out: Vec<Permission> = need
        .verbs
        .iter()
        .map(|v| Permission {
            group: group.clone(),
            resource: resource.clone(),
            verb: v.as_str().to_owned(),
            namespace: ns.clone(),
        })
        .collect();
    if let Some(verb) = need.status {
        out.push(Permission {
            group,
            resource: format!("{resource}/status"),
            verb: verb.as_str().into(),
            namespace: ns,
        });
    }
    out
}

#[test]
fn every_role_is_granted_what_it_needs_and_nothing_more() {
    let mut problems = Vec::new();
    for (file, mode) in [
        ("manifests/margay.yaml", DatastoreType::Kubernetes),
        ("manifests/margay-etcd.yaml", DatastoreType::EtcdV3),
    ] {
        let text = std::fs::read_to_string(repo_root().join(file)).unwrap();
        let docs = documents(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        problems.extend(wildcards(&docs).into_iter().map(|w| format!("{file}: {w}")));
        for (role, sa) in ROLES {
            let want: BTreeSet<Permission> =
                needs(role, mode).iter().flat_map(permissions).collect();
            let got = granted(&docs, "margay-system", sa);
            for w in &want {
                if !allows(&got, w) {
                    problems.push(format!("{file}: {sa} ({role:?}) needs {w}, not granted"));
                }
            }
            for g in &got {
                if !want.contains(g) {
                    problems.push(format!(
                        "{file}: {sa} ({role:?}) is granted {g}, which the code never does"
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "RBAC problems:\n{}",
        problems.join("\n")
    );
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The source of each role: the node is the agent without the other roles' modules, plus IPAM;
/// the reflector is its module and what it calls (peering, status); the controller is its
/// module plus IPAM.
fn sources(role: Role) -> Vec<PathBuf> {
    let root = repo_root();
    let mut ipam = Vec::new();
    rust_files(&root.join("ipam/src"), &mut ipam);
    let mut agent = Vec::new();
    rust_files(&root.join("agent/src"), &mut agent);
    let rel = |p: &PathBuf| {
        p.strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    match role {
        Role::Node => agent
            .into_iter()
            .filter(|p| {
                let r = rel(p);
                !r.starts_with("agent/src/controllers/")
                    && ![
                        "agent/src/reflector.rs",
                        "agent/src/access.rs",
                        "agent/src/main.rs",
                    ]
                    .contains(&r.as_str())
            })
            .chain(ipam)
            .collect(),
        Role::RouteReflector => ["reflector.rs", "mesh.rs", "peering.rs", "status.rs"]
            .iter()
            .map(|f| root.join("agent/src").join(f))
            .collect(),
        Role::Controllers => agent
            .into_iter()
            .filter(|p| rel(p).starts_with("agent/src/controllers/"))
            .chain(ipam)
            .collect(),
    }
}

#[test]
fn the_code_of_each_role_names_no_kind_its_table_lacks() {
    let by_type: BTreeMap<&str, String> = kinds_by_type_name().into_iter().collect();
    let known_kinds: BTreeSet<String> = by_type.values().cloned().collect();
    let generic = regex::Regex::new(
        r"(?:\bTyped::<|\bTyped<|\bfollow::<|\bmirror::<|\bApi<)\s*([A-Za-z_][A-Za-z0-9_:]*)\s*>",
    )
    .unwrap();
    let literal = regex::Regex::new(r#"Key::(?:cluster|namespaced)\(\s*"([a-z]+)""#).unwrap();
    // Kinds a file uses only in etcd, never in the Kubernetes API: the controller's etcd-mode
    // copy writes the pods' labels and ports onto the WorkloadEndpoints in etcd.
    let etcd_only = [("agent/src/controllers/sync.rs", "workloadendpoints")];
    let mut problems = Vec::new();
    let mut total = 0;
    for (role, _) in ROLES {
        // A role's files serve both modes (the controller's etcd-mode copy reads Pods from the
        // API): a kind is declared if either mode's table has it.
        let declared: BTreeSet<String> = needs(role, DatastoreType::Kubernetes)
            .into_iter()
            .chain(needs(role, DatastoreType::EtcdV3))
            .map(|n| n.kind)
            .collect();
        for path in sources(role) {
            let text = std::fs::read_to_string(&path).unwrap();
            // Unit tests name kinds too; they run nowhere near an API server.
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            let mut found = Vec::new();
            for c in generic.captures_iter(code) {
                let name = c[1].rsplit("::").next().unwrap_or("");
                if name.len() == 1 || name == "DynamicObject" {
                    continue; // a generic parameter (`Typed<T>`)
                }
                match by_type.get(name) {
                    Some(kind) => found.push(kind.clone()),
                    None => problems.push(format!(
                        "{}: type {name} is not in margay_agent::access::kinds_by_type_name()",
                        path.display()
                    )),
                }
            }
            for c in literal.captures_iter(code) {
                if known_kinds.contains(&c[1]) {
                    found.push(c[1].to_string());
                } else {
                    problems.push(format!("{}: unknown kind {:?}", path.display(), &c[1]));
                }
            }
            total += found.len();
            let rel = path
                .strip_prefix(repo_root())
                .unwrap_or(&path)
                .to_path_buf();
            for kind in found {
                if etcd_only
                    .iter()
                    .any(|(f, k)| rel == Path::new(f) && *k == kind)
                {
                    continue;
                }
                if !declared.contains(&kind) {
                    problems.push(format!(
                        "{}: uses {kind}, which access::needs({role:?}) lacks",
                        path.display()
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        total > 20,
        "the scan found only {total} uses: is it still reading the code?"
    );
}

fn timers() -> Timers {
    Timers {
        leak_check_interval: Duration::from_millis(300),
        leak_grace_period: Duration::from_secs(1),
        resync_interval: Duration::from_secs(1),
    }
}

/// Waits for `check`, at most 30 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_the_controller_makes_is_in_its_table() {
    let server = ApiServer::start(Config::default())
        .await
        .expect("server starts");
    let connect = || async {
        Kubernetes::connect(&KubernetesConfig {
            server: Some(server.url()),
            timeout: Some(Duration::from_secs(10)),
            ..Default::default()
        })
        .await
        .expect("client")
    };
    let api: Arc<dyn Datastore> = Arc::new(connect().await);
    let crds = std::fs::read_to_string(repo_root().join("manifests/crds.yaml")).unwrap();
    for doc in documents(&crds).unwrap() {
        let crd: CustomResourceDefinition = serde_json::from_value(doc).unwrap();
        Typed::new(Arc::clone(&api))
            .create(&crd)
            .await
            .expect("create CRD");
    }
    let core: kube::Api<KubeNode> = kube::Api::all(
        kube::Client::try_from(kube::Config::new(server.url().parse().unwrap())).unwrap(),
    );
    Typed::<IPPool>::new(Arc::clone(&api))
        .create(&IPPool::new("pool", IPPoolSpec::new("100.64.0.0/16")))
        .await
        .unwrap();
    let ipam = Ipam::new(Arc::clone(&api));
    for n in ["node-1", "node-2"] {
        let node: KubeNode = serde_json::from_value(json!({"metadata": {"name": n}})).unwrap();
        core.create(&Default::default(), &node).await.unwrap();
        Typed::<MargayNode>::new(Arc::clone(&api))
            .create(&MargayNode::new(n, NodeSpec::default()))
            .await
            .unwrap();
    }
    // node-1: a pod with an endpoint; node-2: an address nothing uses (a leak).
    let handle = "k8s-pod-network.web";
    let got = ipam
        .node("node-1", BTreeMap::new())
        .auto_assign(handle, &BTreeMap::new(), 1, 0)
        .await
        .unwrap();
    // Kubernetes mode stores no WorkloadEndpoint: the pod's annotations make its endpoint.
    Typed::<Pod>::new(Arc::clone(&api))
        .create(&annotated_pod("web", "node-1", &got.ips(), handle))
        .await
        .unwrap();
    ipam.node("node-2", BTreeMap::new())
        .auto_assign("k8s-pod-network.leak", &BTreeMap::new(), 1, 0)
        .await
        .unwrap();

    let recorder = Recorder::new(Arc::new(connect().await));
    let _tasks = controllers::start(
        Arc::new(recorder.clone()),
        connect().await,
        DatastoreType::Kubernetes,
        timers(),
        Readiness::default(),
    );
    core.delete("node-1", &Default::default()).await.unwrap();
    let blocks = Typed::<IPAMBlock>::new(Arc::clone(&api));
    let affinities = Typed::<BlockAffinity>::new(Arc::clone(&api));
    eventually("node-1's block is released", || async {
        let (b, _) = blocks.list(None).await.unwrap();
        let (a, _) = affinities.list(None).await.unwrap();
        !b.iter().any(|b| b.spec.affinity_node() == Some("node-1"))
            && !a.iter().any(|a| a.spec.node == "node-1")
    })
    .await;
    eventually("the leak on node-2 is released", || async {
        ipam.addresses_of("k8s-pod-network.leak")
            .await
            .unwrap()
            .is_empty()
    })
    .await;

    let table: BTreeSet<(String, &str)> = needs(Role::Controllers, DatastoreType::Kubernetes)
        .into_iter()
        .flat_map(|n| {
            n.verbs
                .iter()
                .map(move |v| (n.kind.clone(), v.as_str()))
                .collect::<Vec<_>>()
        })
        .collect();
    let calls = recorder.calls();
    assert!(calls.len() >= 5, "the recorder saw too little: {calls:?}");
    let missing: Vec<String> = calls
        .iter()
        .filter(|(verb, kind, _)| !table.contains(&(kind.clone(), *verb)))
        .map(|(verb, kind, ns)| format!("{verb} {kind} {ns:?}"))
        .collect();
    assert!(
        missing.is_empty(),
        "the controller made calls its access table lacks: {missing:?}"
    );
}
