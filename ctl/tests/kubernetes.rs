//! The same commands against the Kubernetes backend (Margay's test API server, in-process on
//! loopback, with Margay's real CRDs) print exactly what they print against etcd — except for
//! WorkloadEndpoints, which the Kubernetes datastore derives from Pods: `get` shows those and
//! writes are refused.

mod common;

use common::{Ctl, FIXTURES, GET_FORMS};
use margay_datastore::{Datastore, Key, Kubernetes, KubernetesConfig};
use margay_integration::apiserver::{ApiServer, Config};

/// The fixtures without their WorkloadEndpoints (not writable on Kubernetes).
fn fixtures_without_endpoints() -> String {
    FIXTURES
        .split("\n---\n")
        .filter(|d| !d.contains("kind: WorkloadEndpoint"))
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// The `get` forms that do not read WorkloadEndpoints.
fn get_forms_without_endpoints() -> Vec<&'static str> {
    GET_FORMS
        .iter()
        .copied()
        .filter(|f| !f.contains("wep") && !f.contains("workloadendpoint"))
        .collect()
}

async fn server_with_crds() -> ApiServer {
    let server = ApiServer::start(Config::default())
        .await
        .expect("the test API server starts");
    let ds = Kubernetes::connect(&KubernetesConfig {
        server: Some(server.url()),
        timeout: Some(std::time::Duration::from_secs(5)),
        ..Default::default()
    })
    .await
    .expect("connect to the test API server");
    for crd in margay_api::crd::all() {
        let name = crd.metadata.name.clone().expect("CRDs have names");
        ds.create(
            &Key::cluster("customresourcedefinitions", &name).unwrap(),
            serde_json::to_vec(&crd).unwrap(),
        )
        .await
        .expect("create CRD");
    }
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_get_form_prints_the_same_on_kubernetes_as_on_etcd() {
    let server = server_with_crds().await;
    let kube = Ctl::kubernetes(&server.kubeconfig());
    let etcd = Ctl::start();
    for ctl in [&kube, &etcd] {
        ctl.write("fixtures.yaml", &fixtures_without_endpoints());
        let out = ctl.run(&["apply", "-f", "fixtures.yaml"]);
        assert_eq!(out.code, 0, "{out:?}");
    }
    let forms = get_forms_without_endpoints();
    assert_eq!(kube.transcript(&forms), etcd.transcript(&forms));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloadendpoints_are_derived_from_pods_on_kubernetes() {
    let server = server_with_crds().await;
    let api = Kubernetes::connect(&KubernetesConfig {
        server: Some(server.url()),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut pod: margay_api::k8s::Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web-0", "namespace": "shop", "labels": {"app": "web"}},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "web"}]}
    }))
    .unwrap();
    let nets = ["100.64.0.1/32".parse().unwrap()];
    pod.metadata.annotations = Some(margay_api::pod::annotations_for(
        &nets,
        "c0ffee",
        "net.c0ffee",
    ));
    margay_datastore::Typed::new(std::sync::Arc::new(api) as std::sync::Arc<dyn Datastore>)
        .create(&pod)
        .await
        .expect("create Pod");
    let ctl = Ctl::kubernetes(&server.kubeconfig());
    let table = ctl.run(&["get", "wep", "-A", "-o", "wide"]).ok().stdout;
    let iface = margay_api::pod::host_interface_name("shop.web-0");
    assert!(
        table.contains("node--1-k8s-web--0-eth0")
            && table.contains("100.64.0.1/32")
            && table.contains(&iface),
        "{table}"
    );
    let yaml = ctl
        .run(&["get", "wep", "-n", "shop", "-o", "yaml"])
        .ok()
        .raw;
    let refused = ctl.run_with(&["apply", "-f", "-"], &yaml);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains("derived from Pods"),
        "{}",
        refused.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yaml_from_get_on_kubernetes_is_applied_back_unchanged_and_deleted() {
    let server = server_with_crds().await;
    let ctl = Ctl::kubernetes(&server.kubeconfig());
    ctl.write("fixtures.yaml", &fixtures_without_endpoints());
    ctl.run(&["apply", "-f", "fixtures.yaml"]).ok();
    for kind in [
        "ippool",
        "node",
        "bgppeer",
        "bgpconfiguration",
        "networkpolicy",
    ] {
        let yaml = ctl.run(&["get", kind, "-A", "-o", "yaml"]).ok().raw;
        let out = ctl.run_with(&["apply", "-f", "-"], &yaml).ok();
        assert!(
            out.stdout.lines().all(|l| l.ends_with(" unchanged")),
            "{kind}: {}",
            out.stdout
        );
    }
    let old = ctl.run(&["get", "ippool", "zone-b", "-o", "yaml"]).ok().raw;
    ctl.run_with(
        &["apply", "-f", "-"],
        &old.replace("disabled: true", "disabled: false"),
    )
    .ok();
    let conflict = ctl.run_with(&["apply", "-f", "-"], &old);
    assert_eq!(conflict.code, 1, "{conflict:?}");
    assert!(
        conflict.stderr.contains("was changed by someone else"),
        "{}",
        conflict.stderr
    );
    let deleted = ctl.run(&["delete", "-f", "fixtures.yaml"]).ok();
    assert_eq!(deleted.stdout.lines().count(), 9, "{}", deleted.stdout);
    assert_eq!(
        ctl.run(&["get", "ippool"]).ok().stdout,
        "NAME   CIDR   SELECTOR\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_status_reads_the_same_statuses_on_kubernetes() {
    let server = server_with_crds().await;
    let kube = Ctl::kubernetes(&server.kubeconfig());
    let etcd = Ctl::start();
    let status = "apiVersion: crd.margay.dev/v1\nkind: NodeStatus\nmetadata: {name: node-2}\n\
        spec: {node: node-2, updatePeriodSeconds: 10}\nstatus:\n  agentVersion: \"0.0.9\"\n  \
        lastUpdated: \"2026-01-01T00:00:00Z\"\n  bgp:\n    peers:\n    - {peerIP: 198.18.0.1, type: NodeMesh, \
        state: Established, since: \"2025-12-31T23:00:00Z\"}\n";
    for ctl in [&kube, &etcd] {
        ctl.run_with(&["apply", "-f", "-"], status).ok();
    }
    let lines = ["node status --all", "version"];
    let on_kube = kube.transcript(&lines);
    assert!(
        on_kube.contains("198.18.0.1     node-to-node mesh   Established"),
        "{on_kube}"
    );
    assert!(on_kube.contains("node node-2 is stale"), "{on_kube}");
    assert_eq!(on_kube, etcd.transcript(&lines));
}
