//! The test API server where the lab runs it: the `margay-test-apiserver` binary in an "infra"
//! namespace on the underlay (198.18.0.254:6443), and clients (kubectl 1.33, the Kubernetes
//! datastore backend) in a node namespace on the same bridge. Nothing touches the host's own
//! namespace; the namespaces go when the test ends.

mod common;

use common::kubectl_path;

use std::time::Duration;

use margay_datastore::{Datastore, Kubernetes, KubernetesConfig};
use margay_harness::{Bridge, Daemon, Netns, Ready};

const INFRA: &str = "198.18.0.254";

#[test]
fn a_node_namespace_reaches_the_server_in_the_infra_namespace() {
    let br = Bridge::new().expect("bridge");
    let infra = Netns::with_tag("infra").expect("infra netns");
    let node = Netns::with_tag("node").expect("node netns");
    br.attach(&infra, "eth0", &[format!("{INFRA}/24").parse().unwrap()])
        .unwrap();
    br.attach(&node, "eth0", &["198.18.0.11/24".parse().unwrap()])
        .unwrap();
    infra.link_up("lo").unwrap();

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let _server = Daemon::builder("apiserver", env!("CARGO_BIN_EXE_margay-test-apiserver"))
        .arg("--listen")
        .arg(format!("{INFRA}:6443"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .netns(&infra)
        .ready(Ready::LogContains("listening on".into()))
        .timeout(Duration::from_secs(20))
        .spawn()
        .expect("the server starts in the infra namespace");

    let crds = concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests/crds.yaml");
    let out = node
        .command(kubectl_path())
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .args(["--request-timeout=20s", "apply", "-f", crds])
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl apply from the node namespace: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let listing = node
        .block_on(async {
            let ds = Kubernetes::connect(&KubernetesConfig {
                server: Some(format!("http://{INFRA}:6443")),
                timeout: Some(Duration::from_secs(10)),
                ..Default::default()
            })
            .await?;
            ds.list("ippools", None).await
        })
        .expect("the namespace runs the client")
        .expect("the backend lists from the node namespace");
    assert!(listing.items.is_empty());
}
