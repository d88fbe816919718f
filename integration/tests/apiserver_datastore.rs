//! Margay's own resources through the Kubernetes datastore backend, against the test API server
//! with the project's CRDs (`manifests/crds.yaml`): the typed view, the CRD schemas enforced, and
//! a status subresource written through the backend.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use margay_api::{IPPool, IPPoolSpec, NodeStatus, NodeStatusSpec, NodeStatusStatus};
use margay_datastore::{
    Backoff, Datastore, Error, Event, Key, Kubernetes, KubernetesConfig, Typed,
};
use margay_integration::apiserver::{ApiServer, Config};

async fn start() -> (ApiServer, Arc<dyn Datastore>) {
    let server = ApiServer::start(Config::default()).await.expect("server");
    let ds = Kubernetes::connect(&KubernetesConfig {
        server: Some(server.url()),
        ..Default::default()
    })
    .await
    .expect("client");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests/crds.yaml");
    let text = std::fs::read_to_string(path).expect("manifests/crds.yaml");
    let crds: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).expect("CRD YAML");
    for crd in crds.iter().filter(|c| c.is_object()) {
        let name = crd["metadata"]["name"].as_str().expect("CRD name");
        ds.create(
            &Key::cluster("customresourcedefinitions", name).unwrap(),
            serde_json::to_vec(crd).unwrap(),
        )
        .await
        .unwrap_or_else(|e| panic!("create CRD {name}: {e}"));
    }
    (server, Arc::new(ds))
}

fn pool(name: &str, cidr: &str) -> IPPool {
    let spec: IPPoolSpec =
        serde_json::from_value(serde_json::json!({"cidr": cidr})).expect("a pool spec");
    IPPool::new(name, spec)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ippools_round_trip_through_the_typed_view_with_compare_and_swap() {
    let (_server, ds) = start().await;
    let pools = Typed::<IPPool>::new(Arc::clone(&ds));
    let mut watch = pools.watch(Backoff::default());
    let first = tokio::time::timeout(Duration::from_secs(10), watch.next()).await;
    assert!(matches!(first, Ok(Some(Ok(Event::Synced)))), "{first:?}");

    let created = pools.create(&pool("lab", "100.64.0.0/16")).await.unwrap();
    let stored = pools.get(None, "lab").await.unwrap();
    assert_eq!(stored.spec.cidr, "100.64.0.0/16");
    assert_eq!(
        stored.metadata.resource_version,
        created.metadata.resource_version
    );
    assert!(
        stored.metadata.uid.is_some(),
        "the server's metadata is kept"
    );

    let updated = pools
        .update_with(None, "lab", 5, |p| {
            p.spec.block_size = Some(28);
            Ok(true)
        })
        .await
        .unwrap();
    assert_eq!(updated.spec.block_size, Some(28));
    match pools.update(&stored).await {
        Err(Error::Conflict { .. }) => {}
        other => panic!("an update from a stale read must conflict, got {other:?}"),
    }
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(10), watch.next()).await {
            Ok(Some(Ok(Event::Added(p)))) => seen.push(("added", p.spec.block_size)),
            Ok(Some(Ok(Event::Modified(p)))) => seen.push(("modified", p.spec.block_size)),
            other => panic!("unexpected watch item {other:?}"),
        }
    }
    assert_eq!(seen, [("added", None), ("modified", Some(28))]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crd_schema_refuses_a_bad_pool() {
    let (_server, ds) = start().await;
    let key = Key::cluster("ippools", "bad").unwrap();
    let bad = br#"{"spec":{"cidr":"100.64.0.0/16","blockSize":200,"assignmentMode":"Sometimes"}}"#;
    match ds.create(&key, bad.to_vec()).await {
        Err(Error::BadRequest(why)) => {
            assert!(why.contains("spec.blockSize"), "{why}");
            assert!(why.contains("spec.assignmentMode"), "{why}");
        }
        other => panic!("expected BadRequest, got {other:?}"),
    }
    let missing = br#"{"spec":{"blockSize":26}}"#;
    assert!(matches!(
        ds.create(&key, missing.to_vec()).await,
        Err(Error::BadRequest(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_status_is_written_through_its_subresource() {
    let (_server, ds) = start().await;
    let statuses = Typed::<NodeStatus>::new(Arc::clone(&ds));
    let mut ns = NodeStatus::new(
        "node-1",
        NodeStatusSpec {
            node: "node-1".into(),
            update_period_seconds: 10,
        },
    );
    let status: NodeStatusStatus =
        serde_json::from_value(serde_json::json!({"agentVersion": "0.1.0"})).unwrap();
    ns.status = Some(status);
    statuses.create(&ns).await.unwrap();
    let got = statuses.get(None, "node-1").await.unwrap();
    let version = |n: &NodeStatus| n.status.as_ref().and_then(|s| s.agent_version.clone());
    assert_eq!(version(&got).as_deref(), Some("0.1.0"));
    statuses
        .update_with(None, "node-1", 5, |n| {
            if let Some(s) = n.status.as_mut() {
                s.agent_version = Some("0.2.0".into());
            }
            Ok(true)
        })
        .await
        .unwrap();
    let got = statuses.get(None, "node-1").await.unwrap();
    assert_eq!(version(&got).as_deref(), Some("0.2.0"));
}
