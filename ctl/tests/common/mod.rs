//! Running the real `margayctl` binary against a real etcd on loopback.

#![allow(dead_code)]

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use margay_harness::fixtures::Etcd;

/// A datastore and a scratch directory that `margayctl` runs in.
pub struct Ctl {
    /// The etcd, when the datastore is etcd.
    pub etcd: Option<Etcd>,
    pub dir: tempfile::TempDir,
    /// The environment that names the datastore.
    env: Vec<(String, String)>,
}

/// What one run printed and its exit code.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// Standard output as printed, revisions and all (for feeding back to `apply`).
    pub raw: String,
}

impl Out {
    /// Panics unless the run succeeded.
    #[track_caller]
    pub fn ok(self) -> Out {
        assert_eq!(self.code, 0, "failed: {self:?}");
        self
    }
}

impl Ctl {
    /// Starts etcd on loopback (the test fails, never skips, if it cannot).
    pub fn start() -> Ctl {
        let etcd = Etcd::start_on_loopback().expect("start etcd on loopback");
        let env = vec![
            ("ETCD_ENDPOINTS".to_string(), etcd.endpoint()),
            ("DATASTORE_TYPE".to_string(), "etcdv3".to_string()),
        ];
        Ctl {
            etcd: Some(etcd),
            dir: tempfile::tempdir().expect("temp dir"),
            env,
        }
    }

    /// `margayctl` against the Kubernetes API server of this kubeconfig.
    pub fn kubernetes(kubeconfig: &str) -> Ctl {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("kubeconfig");
        std::fs::write(&path, kubeconfig).expect("write kubeconfig");
        Ctl {
            etcd: None,
            env: vec![
                ("DATASTORE_TYPE".to_string(), "kubernetes".to_string()),
                ("KUBECONFIG".to_string(), path.display().to_string()),
            ],
            dir,
        }
    }

    /// The etcd endpoint.
    pub fn endpoint(&self) -> String {
        self.etcd.as_ref().expect("an etcd datastore").endpoint()
    }

    /// Writes a file in the scratch directory.
    pub fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir.path().join(name), text).expect("write file");
    }

    /// The scratch directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `margayctl ARGS` in the scratch directory with `stdin`.
    pub fn run_with(&self, args: &[&str], stdin: &str) -> Out {
        let mut child = Command::new(env!("CARGO_BIN_EXE_margayctl"))
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("ETCD_ENDPOINTS")
            .env_remove("KUBECONFIG")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("MARGAYCTL_CONFIG")
            .env_remove("ETCD_CA_CERT_FILE")
            .env_remove("ETCD_CERT_FILE")
            .env_remove("ETCD_KEY_FILE")
            .env("NODENAME", "node-1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run margayctl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        let out = child.wait_with_output().expect("wait for margayctl");
        Out {
            code: out.status.code().unwrap_or(-1),
            raw: String::from_utf8_lossy(&out.stdout).into_owned(),
            stdout: normalise(&String::from_utf8_lossy(&out.stdout)),
            stderr: normalise(&String::from_utf8_lossy(&out.stderr)),
        }
    }

    /// Runs `margayctl ARGS`.
    pub fn run(&self, args: &[&str]) -> Out {
        self.run_with(args, "")
    }

    /// Runs each command line and records `$ margayctl …`, its output, errors and exit code,
    /// for a golden transcript.
    pub fn transcript(&self, lines: &[&str]) -> String {
        let mut t = String::new();
        for l in lines {
            let args: Vec<&str> = l.split_whitespace().collect();
            let out = self.run(&args);
            t.push_str(&format!("$ margayctl {l}\n{}", out.stdout));
            for e in out.stderr.lines() {
                t.push_str(&format!("[stderr] {e}\n"));
            }
            if out.code != 0 {
                t.push_str(&format!("[exit {}]\n", out.code));
            }
            t.push('\n');
        }
        t
    }

    /// Connects to the same etcd in-process.
    pub async fn datastore(&self) -> std::sync::Arc<dyn margay_datastore::Datastore> {
        let config = margay_datastore::EtcdConfig {
            endpoints: vec![self.endpoint()],
            ..Default::default()
        };
        std::sync::Arc::new(
            margay_datastore::Etcd::connect(&config)
                .await
                .expect("connect to etcd"),
        )
    }
}

/// Replaces what changes from run to run (revisions) with placeholders.
pub fn normalise(s: &str) -> String {
    s.lines()
        .map(|l| match l.find("resourceVersion") {
            Some(i) => {
                let comma = if l.trim_end().ends_with(',') { "," } else { "" };
                if l[..i].ends_with('"') {
                    format!("{}resourceVersion\": \"<rv>\"{comma}", &l[..i])
                } else {
                    format!("{}resourceVersion: \"<rv>\"", &l[..i])
                }
            }
            None => l.to_string(),
        })
        .map(|l| l + "\n")
        .collect()
}

/// The objects most tests start from: two pools, two nodes, a peer, the BGP configuration,
/// endpoints in two namespaces, a network policy and an IPAM block.
pub const FIXTURES: &str = r#"apiVersion: crd.margay.dev/v1
kind: IPPool
metadata:
  name: default-ipv4
  labels: {family: v4}
spec:
  cidr: 100.64.0.0/16
  natOutgoing: true
---
apiVersion: crd.margay.dev/v1
kind: IPPool
metadata:
  name: zone-b
  labels: {family: v4, zone: b}
spec:
  cidr: 100.65.0.0/24
  nodeSelector: zone == 'b'
  disabled: true
---
apiVersion: crd.margay.dev/v1
kind: IPPool
metadata:
  name: default-ipv6
  labels: {family: v6}
spec:
  cidr: fd00:100::/112
---
apiVersion: crd.margay.dev/v1
kind: Node
metadata: {name: node-1}
spec:
  bgp: {ipv4Address: 198.18.0.1/24, ipv6Address: "fd00:198::1/64"}
---
apiVersion: crd.margay.dev/v1
kind: Node
metadata: {name: node-2}
spec:
  bgp: {ipv4Address: 198.18.0.2/24, asNumber: 64513}
---
apiVersion: crd.margay.dev/v1
kind: BGPPeer
metadata: {name: tor-1}
spec: {peerIP: 198.18.0.250, asNumber: 65000, node: node-1}
---
apiVersion: crd.margay.dev/v1
kind: BGPPeer
metadata: {name: rr-mesh}
spec: {nodeSelector: all(), peerSelector: has(route-reflector)}
---
apiVersion: crd.margay.dev/v1
kind: BGPConfiguration
metadata: {name: default}
spec: {asNumber: 64600, nodeToNodeMeshEnabled: false, logSeverityScreen: Info}
---
apiVersion: crd.margay.dev/v1
kind: WorkloadEndpoint
metadata:
  name: node--1-k8s-web--0-eth0
  namespace: shop
  labels: {app: web}
spec:
  orchestrator: k8s
  node: node-1
  pod: web-0
  endpoint: eth0
  interfaceName: mgy0123456789a
  ipNetworks: [100.64.0.1/32]
---
apiVersion: crd.margay.dev/v1
kind: WorkloadEndpoint
metadata:
  name: node--2-k8s-db--0-eth0
  namespace: default
spec:
  orchestrator: k8s
  node: node-2
  pod: db-0
  endpoint: eth0
  interfaceName: mgyfedcba987654
  mac: "ee:ee:ee:ee:ee:ee"
  ipNetworks: [100.64.1.1/32, "fd00:100::1/128"]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: shop}
spec:
  podSelector: {}
  policyTypes: [Ingress]
"#;

/// Every form of `get` the golden transcripts show.
pub const GET_FORMS: &[&str] = &[
    "get ippool",
    "get ippools -o wide",
    "get ipp default-ipv4 zone-b",
    "get ippool --selector family=='v4'",
    "get ippool -o custom-columns=NAME:.metadata.name,CIDR:.spec.cidr,BLOCK:.spec.blockSize,ZONE:.metadata.labels.zone",
    "get node",
    "get nodes -o wide",
    "get bgppeer",
    "get bgppeers -o wide",
    "get bgpconfiguration",
    "get bgpconfigurations -o wide",
    "get workloadendpoint",
    "get wep -n shop",
    "get weps --all-namespaces",
    "get wep -A -o wide",
    "get networkpolicy -n shop",
    "get networkpolicies -A -o wide",
    "get ipamblock",
];
