//! kube-rs's own watcher (kube-runtime), as the agent uses it for Kubernetes Nodes and Pods,
//! against the test API server: paged lists and watches, and streaming lists
//! (`sendInitialEvents`), with the `spec.nodeName` field selector.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Pod, PodSpec};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::watcher::{self, Event};
use margay_integration::apiserver::{ApiServer, Config};

fn pod(name: &str, node: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn client(server: &ApiServer) -> kube::Client {
    let config = kube::Config::new(server.url().parse().expect("a URL"));
    kube::Client::try_from(config).expect("client")
}

/// Follows a watcher until it has seen `InitDone` and then a pod named `last`; returns the names
/// of pods seen, initial and later.
async fn follow(
    config: watcher::Config,
    server: &ApiServer,
    last: &str,
) -> (Vec<String>, Vec<String>) {
    let pods: Api<Pod> = Api::all(client(server).await);
    let mut events = watcher::watcher(pods, config).boxed();
    let (mut initial, mut later, mut done) = (Vec::new(), Vec::new(), false);
    let create: Api<Pod> = Api::namespaced(client(server).await, "default");
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(20), events.try_next())
            .await
            .expect("a watcher event within 20 s")
            .expect("no watcher error")
            .expect("the watcher goes on");
        match ev {
            Event::Init => {}
            Event::InitApply(p) => initial.push(p.metadata.name.unwrap_or_default()),
            Event::InitDone => {
                done = true;
                create
                    .create(&PostParams::default(), &pod(last, "node-1"))
                    .await
                    .expect("create");
                create
                    .create(
                        &PostParams::default(),
                        &pod(&format!("{last}-elsewhere"), "node-2"),
                    )
                    .await
                    .expect("create");
            }
            Event::Apply(p) | Event::Delete(p) => {
                let name = p.metadata.name.unwrap_or_default();
                assert!(done, "a change before InitDone: {name}");
                later.push(name.clone());
                if name == last {
                    return (initial, later);
                }
            }
        }
    }
}

async fn seeded() -> ApiServer {
    let server = ApiServer::start(Config::default()).await.expect("server");
    let api: Api<Pod> = Api::namespaced(client(&server).await, "default");
    for (name, node) in [("a", "node-1"), ("b", "node-2"), ("c", "node-1")] {
        api.create(&PostParams::default(), &pod(name, node))
            .await
            .expect("create");
    }
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kube_runtime_watcher_lists_then_follows_one_nodes_pods() {
    let server = seeded().await;
    let config = watcher::Config::default()
        .fields("spec.nodeName=node-1")
        .page_size(1);
    let (initial, later) = follow(config, &server, "d").await;
    assert_eq!(initial, ["a", "c"]);
    assert_eq!(later, ["d"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kube_runtime_watcher_takes_streaming_lists() {
    let server = seeded().await;
    let config = watcher::Config::default()
        .fields("spec.nodeName=node-1")
        .streaming_lists();
    let (initial, later) = follow(config, &server, "d").await;
    assert_eq!(initial, ["a", "c"]);
    assert_eq!(later, ["d"]);
}
