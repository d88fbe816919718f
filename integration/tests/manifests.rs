//! The install manifests against the test API server, with the clients an operator uses:
//! `kubectl.1.33 apply -f manifests/crds.yaml -f manifests/margay.yaml` succeeds (every object of
//! both files, with kubectl's default strict field validation), and `margayctl` with
//! `DATASTORE_TYPE=kubernetes` sees an IPPool that kubectl applied.
//!
//! The server runs in-process on loopback (as in `apiserver_kubectl.rs`); kubectl gets its own
//! kubeconfig and cache dir; every child process has a time limit.

mod common;

use common::{kubectl_path, repo_root, workspace_bin};

use std::time::Duration;

use margay_integration::apiserver::{ApiServer, Config};
use tokio::process::Command;

const LIMIT: Duration = Duration::from_secs(60);

async fn run(mut c: Command, what: &str) -> String {
    let out = tokio::time::timeout(LIMIT, c.kill_on_drop(true).output())
        .await
        .unwrap_or_else(|_| panic!("{what} took over {LIMIT:?}"))
        .unwrap_or_else(|e| panic!("{what} cannot run: {e}"));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{what} failed: {stderr}{stdout}");
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_the_install_manifests_and_margayctl_sees_what_it_applied() {
    let server = ApiServer::start(Config::default())
        .await
        .expect("server starts");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, server.kubeconfig()).unwrap();
    let kubectl = |args: &[&str]| {
        let mut c = Command::new(kubectl_path());
        c.arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--cache-dir")
            .arg(dir.path().join("cache"))
            .args(args);
        c
    };
    let root = repo_root();
    let crds = root.join("manifests/crds.yaml");
    let margay = root.join("manifests/margay.yaml");
    let (crds, margay) = (crds.to_str().unwrap(), margay.to_str().unwrap());

    let out = run(
        kubectl(&["apply", "-f", crds, "-f", margay]),
        "kubectl apply crds.yaml margay.yaml",
    )
    .await;
    for created in [
        "namespace/margay-system created",
        "ippools.crd.margay.dev created",
        "daemonset.apps/margay-node created",
        "deployment.apps/margay-route-reflector created",
        "deployment.apps/margay-controllers created",
        "poddisruptionbudget.policy/margay-route-reflector created",
        "clusterrole.rbac.authorization.k8s.io/margay-node created",
        "role.rbac.authorization.k8s.io/margay-bgp-secrets created",
        "configmap/margay-config created",
        "serviceaccount/margay-controllers created",
    ] {
        assert!(out.contains(created), "no {created:?} in:\n{out}");
    }
    // Applying again changes nothing: the server kept every field kubectl sent. (Except that
    // kubectl always says "configured" for a PodDisruptionBudget, also against a real server:
    // its selector's patch strategy is "replace", so the computed patch is never empty.)
    let again = run(
        kubectl(&["apply", "-f", crds, "-f", margay]),
        "kubectl apply (again)",
    )
    .await;
    let changed: Vec<&str> = again
        .lines()
        .filter(|l| l.ends_with(" configured") && !l.starts_with("poddisruptionbudget."))
        .collect();
    assert!(changed.is_empty(), "{again}");
    assert!(
        again.contains("daemonset.apps/margay-node unchanged"),
        "{again}"
    );
    let ds = run(
        kubectl(&[
            "get",
            "daemonset",
            "-n",
            "margay-system",
            "margay-node",
            "-o",
            "jsonpath={.spec.template.spec.initContainers[0].command}",
        ]),
        "kubectl get daemonset",
    )
    .await;
    assert!(ds.contains("/host/opt/cni/bin"), "{ds}");

    let pool = root.join("manifests/examples/ippool.yaml");
    let out = run(
        kubectl(&["apply", "-f", pool.to_str().unwrap()]),
        "kubectl apply ippool.yaml",
    )
    .await;
    assert!(
        out.contains("ippool.crd.margay.dev/default-ipv4 created"),
        "{out}"
    );

    let mut ctl = Command::new(workspace_bin("margayctl", "margay-ctl"));
    ctl.args(["get", "ippools", "-o", "json"])
        .env("DATASTORE_TYPE", "kubernetes")
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("ETCD_ENDPOINTS");
    let json = run(ctl, "margayctl get ippools").await;
    let v: serde_json::Value = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("margayctl -o json is not JSON ({e}): {json}"));
    let items = v["items"].as_array().cloned().unwrap_or_else(|| vec![v]);
    let cidrs: Vec<(&str, &str)> = items
        .iter()
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap_or(""),
                p["spec"]["cidr"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(
        cidrs.contains(&("default-ipv4", "100.64.0.0/16")),
        "margayctl sees the pools kubectl applied: {cidrs:?}"
    );
    assert!(
        cidrs.contains(&("default-ipv6", "fd00:100::/112")),
        "{cidrs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_the_etcd_variant() {
    let server = ApiServer::start(Config::default())
        .await
        .expect("server starts");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, server.kubeconfig()).unwrap();
    let manifest = repo_root().join("manifests/margay-etcd.yaml");
    let mut c = Command::new(kubectl_path());
    c.arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .args(["apply", "-f", manifest.to_str().unwrap()]);
    let out = run(c, "kubectl apply margay-etcd.yaml").await;
    for created in [
        "daemonset.apps/margay-node created",
        "deployment.apps/margay-controllers created",
        "clusterrole.rbac.authorization.k8s.io/margay-controllers created",
    ] {
        assert!(out.contains(created), "no {created:?} in:\n{out}");
    }
}
