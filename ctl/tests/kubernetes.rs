//! The same commands against the Kubernetes backend (Margay's test API server, in-process on
//! loopback, with Margay's real CRDs) print exactly what they print against etcd.

mod common;

use common::{Ctl, FIXTURES, GET_FORMS};
use margay_datastore::{Datastore, Key, Kubernetes, KubernetesConfig};
use margay_integration::apiserver::{ApiServer, Config};

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
        ctl.write("fixtures.yaml", FIXTURES);
        let out = ctl.run(&["apply", "-f", "fixtures.yaml"]);
        assert_eq!(out.code, 0, "{out:?}");
    }
    assert_eq!(kube.transcript(GET_FORMS), etcd.transcript(GET_FORMS));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yaml_from_get_on_kubernetes_is_applied_back_unchanged_and_deleted() {
    let server = server_with_crds().await;
    let ctl = Ctl::kubernetes(&server.kubeconfig());
    ctl.write("fixtures.yaml", FIXTURES);
    ctl.run(&["apply", "-f", "fixtures.yaml"]).ok();
    for kind in [
        "ippool",
        "node",
        "bgppeer",
        "bgpconfiguration",
        "wep",
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
    assert_eq!(deleted.stdout.lines().count(), 11, "{}", deleted.stdout);
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
