//! What the integration tests share: where the repository and the workspace's binaries are,
//! and kubectl 1.33.

#![allow(dead_code)]

pub mod lab;

use std::path::{Path, PathBuf};

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration/ has a parent")
        .to_path_buf()
}

/// kubectl 1.33 beside the dispatcher the image ships (`kubectl` itself would pick 1.32).
pub fn kubectl_path() -> PathBuf {
    let dispatcher = std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("kubectl"))
                .find(|p| p.exists())
        })
        .expect("kubectl is on PATH (google-cloud-cli's kubectl package)");
    let k = std::fs::canonicalize(&dispatcher)
        .expect("resolve kubectl")
        .with_file_name("kubectl.1.33");
    assert!(k.exists(), "{} is missing", k.display());
    k
}

/// A binary of the workspace, from the same target directory as this test.
pub fn workspace_bin(name: &str, package: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let bin = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/debug/deps")
        .join(name);
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build -p {package} --bins` (same target dir)",
        bin.display()
    );
    bin
}

/// A Pod `default/NAME` on `node` with the annotations the agent writes on CNI ADD in Kubernetes
/// mode (addresses, sandbox NAME, IPAM `handle`): the endpoint the derived view makes of it.
pub fn annotated_pod(
    name: &str,
    node: &str,
    ips: &[std::net::IpAddr],
    handle: &str,
) -> margay_api::k8s_openapi::api::core::v1::Pod {
    let nets: Vec<ipnet::IpNet> = ips.iter().copied().map(ipnet::IpNet::from).collect();
    let mut pod: margay_api::k8s_openapi::api::core::v1::Pod =
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": name}]}
        }))
        .expect("a Pod");
    pod.metadata.annotations = Some(margay_api::pod::annotations_for(&nets, name, handle));
    pod
}
