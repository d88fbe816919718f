//! Shared set-up of the plugin's tests and benchmark: etcd in an infra namespace, a node
//! namespace running the real agent, and the plugin binary run inside it.

#![allow(dead_code)]

use margay_harness::cmd::run_with_input;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use margay_api::{IPPool, IPPoolSpec};
use margay_datastore::{Datastore, Etcd, EtcdConfig, Typed};
use margay_harness::fixtures::Etcd as EtcdServer;
use margay_harness::{Daemon, Netns, Ready};
use serde_json::{Value, json};

pub fn agent_binary() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_BIN_EXE_margay-cni")).with_file_name("margay-node");
    assert!(
        p.exists(),
        "{} is missing: build the workspace's binaries (cargo build -p margay-agent)",
        p.display()
    );
    p
}

pub struct Setup {
    pub _infra: Netns,
    pub node: Netns,
    pub _etcd: EtcdServer,
    pub agent: Daemon,
    pub dir: tempfile::TempDir,
}

pub fn setup() -> Setup {
    let net = |s: &str| s.parse().unwrap();
    let infra = Netns::with_tag("cni-infra").expect("namespace (run as root)");
    let node = Netns::with_tag("cni-node").unwrap();
    infra
        .connect(
            "eth0",
            &[net("198.18.0.254/24")],
            &node,
            "eth0",
            &[net("198.18.0.11/24")],
        )
        .unwrap();
    node.exec(&["ip", "route", "add", "default", "via", "198.18.0.254"])
        .unwrap();
    let etcd = EtcdServer::start_in(&infra, "198.18.0.254".parse().unwrap()).expect("etcd");
    let ep = etcd.endpoint();
    node.block_on(async move {
        let ds: Arc<dyn Datastore> = Arc::new(
            Etcd::connect(&EtcdConfig {
                endpoints: vec![ep],
                ..Default::default()
            })
            .await
            .unwrap(),
        );
        let pools = Typed::<IPPool>::new(ds);
        for (name, cidr) in [
            ("default-ipv4", "100.64.0.0/16"),
            ("default-ipv6", "fd00:100:64::/112"),
        ] {
            pools
                .create(&IPPool::new(name, IPPoolSpec::new(cidr)))
                .await
                .unwrap();
        }
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "node_name = \"node-1\"\nsocket = \"{}\"\n[datastore]\netcd_endpoints = [\"{}\"]\n",
            dir.path().join("agent.sock").display(),
            etcd.endpoint()
        ),
    )
    .unwrap();
    let agent = Daemon::builder("margay-node", agent_binary())
        .args(["--config", config.to_str().unwrap()])
        .netns(&node)
        .log_file(dir.path().join("agent.log"))
        .ready(Ready::File(dir.path().join("agent.sock")))
        .timeout(Duration::from_secs(30))
        .spawn()
        .expect("margay-node starts");
    let s = Setup {
        _infra: infra,
        node,
        _etcd: etcd,
        agent,
        dir,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while plugin(&s, "STATUS", "", None, &conf(&s, None)).0 != 0 {
        assert!(
            Instant::now() < deadline,
            "the agent never became ready: {}",
            s.agent.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    s
}

pub fn conf(s: &Setup, prev: Option<&Value>) -> Value {
    let mut c = json!({
        "cniVersion": "1.0.0",
        "name": "margay-test",
        "type": "margay-cni",
        "agent_socket": s.dir.path().join("agent.sock"),
        "log_file": s.dir.path().join("cni.log"),
        "runtimeConfig": {"ignored": true},
    });
    if let Some(p) = prev {
        c["prevResult"] = p.clone();
    }
    c
}

/// Runs the plugin inside the node namespace; returns (exit code, stdout as JSON or Null).
pub fn plugin(
    s: &Setup,
    cmd: &str,
    container: &str,
    netns: Option<&Netns>,
    conf: &Value,
) -> (i32, Value) {
    let mut c = s.node.command(env!("CARGO_BIN_EXE_margay-cni"));
    c.env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", container)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/nonexistent")
        .env(
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0",
        )
        .env(
            "CNI_NETNS",
            netns
                .map(|n| n.path().display().to_string())
                .unwrap_or_default(),
        )
        .stderr(Stdio::piped());
    let out = run_with_input(&mut c, conf.to_string().as_bytes()).unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), json)
}

pub fn routes(s: &Setup) -> String {
    s.node
        .exec(&["ip", "route", "show", "proto", "80"])
        .unwrap()
        .stdout
}
