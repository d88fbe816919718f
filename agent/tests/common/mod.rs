//! Shared pieces of the agent's process tests: start `margay-node` in a node namespace, wait
//! until it is ready, and wire a pod as the CNI plugin does.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use margay_agent::localapi::client::Client;
use margay_agent::localapi::proto::*;
use margay_datastore::{Datastore, Etcd, EtcdConfig};
use margay_harness::{Daemon, Netns, Ready};

/// A client of the etcd at `endpoint` (from a namespace that reaches it).
pub async fn connect(endpoint: String) -> margay_datastore::Result<Arc<dyn Datastore>> {
    Ok(Arc::new(
        Etcd::connect(&EtcdConfig {
            endpoints: vec![endpoint],
            ..Default::default()
        })
        .await?,
    ))
}

#[allow(unused_imports)]
pub use margay_harness::wait_for;

/// Writes an agent config for `node` into `dir` and returns its path.
pub fn agent_config(dir: &Path, node: &str, etcd: &str) -> PathBuf {
    let config = dir.join(format!("{node}.toml"));
    std::fs::write(
        &config,
        format!(
            "node_name = \"{node}\"\nsocket = \"{}\"\n[datastore]\netcd_endpoints = [\"{etcd}\"]\n",
            dir.join(format!("{node}.sock")).display()
        ),
    )
    .unwrap();
    config
}

/// Starts `margay-node` with `config` inside `ns`; `n` numbers its log file.
pub fn start_agent(ns: &Netns, config: &Path, n: u32) -> Daemon {
    let sock = config.with_extension("sock");
    Daemon::builder("margay-node", env!("CARGO_BIN_EXE_margay-node"))
        .args(["--config", config.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .netns(ns)
        .log_file(config.with_extension(format!("{n}.log")))
        .ready(Ready::File(sock))
        .timeout(Duration::from_secs(30))
        .spawn()
        .expect("margay-node starts")
}

/// The local API client of the agent started with `config`.
pub fn client(config: &Path) -> Client {
    Client::new(config.with_extension("sock"), Duration::from_secs(20))
}

/// Waits until the agent says it is ready.
pub fn wait_ready(client: &Client, agent: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.status() {
            Ok(s) if s.ready => return,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "agent not ready in 30 s: {other:?}\n{}",
                    agent.log_tail(30)
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// The attachment of pod `pod` (handle `net.<pod>`).
pub fn attachment(pod: &str) -> Option<Attachment> {
    Some(Attachment {
        handle_id: format!("net.{pod}"),
        container_id: pod.into(),
        namespace: "default".into(),
        pod: pod.into(),
        ifname: "eth0".into(),
    })
}

/// Does what the CNI plugin does for a pod: allocate, veth `host_if` from `node` to `pod`,
/// the address and default route in the pod, endpoint_up. Returns the pod's IP.
pub fn wire_pod(client: &Client, node: &Netns, pod: &Netns, name: &str, host_if: &str) -> String {
    let got = client
        .allocate(Allocate {
            attachment: attachment(name),
            num_v4: 1,
            ..Default::default()
        })
        .unwrap();
    let cidr = got.addresses[0].clone();
    node.connect(host_if, &[], pod, "eth0", &[]).unwrap();
    pod.exec(&["ip", "addr", "add", &cidr, "dev", "eth0"])
        .unwrap();
    pod.exec(&[
        "ip",
        "route",
        "add",
        "169.254.1.1",
        "dev",
        "eth0",
        "scope",
        "link",
    ])
    .unwrap();
    pod.exec(&[
        "ip",
        "route",
        "add",
        "default",
        "via",
        "169.254.1.1",
        "dev",
        "eth0",
    ])
    .unwrap();
    client
        .endpoint_up(EndpointUp {
            attachment: attachment(name),
            host_ifname: host_if.into(),
            addresses: vec![cidr.clone()],
            mac: String::new(),
        })
        .unwrap();
    cidr.trim_end_matches("/32").to_owned()
}

/// The Margay routes of a namespace.
pub fn routes(ns: &Netns) -> String {
    ns.exec(&["ip", "route", "show", "proto", "80"])
        .unwrap()
        .stdout
}

pub mod cluster;
