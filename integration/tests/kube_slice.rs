//! The 3-node slice in Kubernetes mode (issue 16), as far as the agent supports it today:
//! the test API server in an infra namespace (198.18.0.254:6443), Margay's CRDs, an IPPool, the
//! Nodes, Namespaces, Pods and a NetworkPolicy applied with `kubectl.1.33`; `margay-node` on three
//! node namespaces with `type = "kubernetes"`; pods wired by the `margay-cni` binary (ADD, as a
//! runtime runs it) through each agent; the controller (`--role controllers`) in the infra
//! namespace.
//!
//! What it shows: no WorkloadEndpoint object is stored (the agents derive endpoints from the
//! Pods, whose `margay.dev/podIPs` annotations the CNI ADD wrote); pods declared as Pod objects
//! reach each other across nodes over BGP-learned routes; a NetworkPolicy applied with kubectl
//! that selects pods by their Pod labels and allows a named container port takes effect across
//! nodes, and a Pod label change (`kubectl label`) changes who gets through; every core Node
//! gets `NetworkUnavailable=False` (`MargayIsUp`); deleting a core Node (after its agent
//! stopped) makes the controller release its blocks; and every request the agents and a
//! dedicated route reflector made (the API server's access log, by peer address) is one that
//! `manifests/margay.yaml` grants their ServiceAccount.

mod common;

use common::{kubectl_path, repo_root, workspace_bin};
use margay_harness::cmd::run_with_input;

use std::path::PathBuf;
use std::time::Duration;

use std::process::Stdio;

use margay_agent::localapi::client::Client;
use margay_harness::{Bridge, Daemon, Netns, Ready, Underlay, wait_for};
use margay_integration::lab::probe::{Proto, probe_here};

const API: &str = "198.18.0.254:6443";

fn margay_node_bin() -> PathBuf {
    workspace_bin("margay-node", "margay-agent")
}

/// Three node namespaces and an infra namespace on one bridge; the API server in infra.
struct KubeCluster {
    dir: tempfile::TempDir,
    // Field order: daemons stop before their namespaces go.
    controller: Option<Daemon>,
    agents: Vec<Daemon>,
    _apiserver: Daemon,
    nodes: Vec<Netns>,
    infra: Netns,
    _bridge: Bridge,
}

impl KubeCluster {
    fn start(tag: &str, n: usize) -> KubeCluster {
        let Underlay {
            bridge,
            infra,
            nodes,
        } = Underlay::new(tag, n).expect("namespaces (run as root)");
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        let apiserver = Daemon::builder("apiserver", env!("CARGO_BIN_EXE_margay-test-apiserver"))
            .arg("--listen")
            .arg(API)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--access-log")
            .arg(dir.path().join("access.log"))
            .netns(&infra)
            .ready(Ready::LogContains("listening on".into()))
            .timeout(Duration::from_secs(20))
            .spawn()
            .expect("the API server starts in the infra namespace");
        let mut c = KubeCluster {
            dir,
            controller: None,
            agents: Vec::new(),
            _apiserver: apiserver,
            nodes,
            infra,
            _bridge: bridge,
        };
        let root = repo_root();
        c.kubectl_ok(&[
            "apply",
            "-f",
            root.join("manifests/crds.yaml").to_str().unwrap(),
        ]);
        let mut objects = String::from(
            "apiVersion: crd.margay.dev/v1\nkind: IPPool\nmetadata:\n  name: default-ipv4\n\
             spec:\n  cidr: 100.64.0.0/16\n  blockSize: 26\n",
        );
        for i in 1..=n {
            objects.push_str(&format!(
                "---\napiVersion: v1\nkind: Node\nmetadata:\n  name: node-{i}\n  labels: {{kubernetes.io/hostname: node-{i}}}\n"
            ));
        }
        c.apply(&objects);
        for i in 0..n {
            let name = format!("node-{}", i + 1);
            let config = c.dir.path().join(format!("{name}.toml"));
            std::fs::write(
                &config,
                format!(
                    "node_name = \"{name}\"\nsocket = \"{}\"\nhealth_port = 0\nmetrics_port = 0\n\
                     [datastore]\ntype = \"kubernetes\"\nkubeconfig = \"{}\"\n",
                    config.with_extension("sock").display(),
                    c.kubeconfig().display()
                ),
            )
            .unwrap();
            let agent = Daemon::builder("margay-node", margay_node_bin())
                .args(["--config", config.to_str().unwrap()])
                .env("RUST_LOG", "info")
                .netns(&c.nodes[i])
                .log_file(config.with_extension("log"))
                .ready(Ready::File(config.with_extension("sock")))
                .timeout(Duration::from_secs(30))
                .spawn()
                .expect("margay-node starts in Kubernetes mode");
            let client = Client::new(config.with_extension("sock"), Duration::from_secs(20));
            wait_for(
                &format!("{name} ready"),
                Duration::from_secs(60),
                || client.status().is_ok_and(|s| s.ready),
                || agent.log_tail(30),
            );
            c.agents.push(agent);
        }
        c
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// Runs kubectl inside the infra namespace; returns (success, stdout + stderr).
    fn kubectl(&self, args: &[&str]) -> (bool, String) {
        let out = self
            .infra
            .command(kubectl_path())
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .arg("--request-timeout=20s")
            .args(args)
            .output()
            .expect("kubectl runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    fn kubectl_ok(&self, args: &[&str]) -> String {
        let (ok, text) = self.kubectl(args);
        assert!(ok, "kubectl {args:?}: {text}");
        text
    }

    fn apply(&self, yaml: &str) -> String {
        let f = self.dir.path().join(format!("obj-{}.yaml", yaml.len()));
        std::fs::write(&f, yaml).unwrap();
        self.kubectl_ok(&["apply", "-f", f.to_str().unwrap()])
    }

    /// Declares Pod `ns/name` on node `i` (0-based) with `labels` and container `ports` (a YAML
    /// list), then runs `margay-cni ADD` for it on that node; returns its namespace and address.
    fn pod(&self, i: usize, ns: &str, name: &str, labels: &str, ports: &str) -> (Netns, String) {
        self.apply(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {labels}\n\
             spec:\n  nodeName: node-{}\n  containers:\n  - name: c\n    image: pause\n    ports: {ports}\n",
            i + 1
        ));
        let pod_ns = Netns::with_tag(&format!("ks-{name}")).unwrap();
        // The real plugin, as the runtime runs it on the node, with the network config that
        // `margay-cni install` writes (the first plugin of the conflist).
        let conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "k8s-pod-network",
            "type": "margay-cni",
            "agent_socket": self.dir.path().join(format!("node-{}.sock", i + 1)),
            "log_file": self.dir.path().join("cni.log"),
        });
        let mut cmd = self.nodes[i].command(workspace_bin("margay-cni", "margay-cni"));
        cmd.env("CNI_COMMAND", "ADD")
            .env("CNI_CONTAINERID", format!("{ns}-{name}"))
            .env("CNI_IFNAME", "eth0")
            .env("CNI_NETNS", pod_ns.path())
            .env("CNI_PATH", "/opt/cni/bin")
            .env(
                "CNI_ARGS",
                format!("K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name}"),
            )
            .stderr(Stdio::piped());
        let out = run_with_input(&mut cmd, conf.to_string().as_bytes()).expect("margay-cni runs");
        assert!(
            out.status.success(),
            "margay-cni ADD {ns}/{name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let cidr = result["ips"][0]["address"]
            .as_str()
            .unwrap_or_else(|| panic!("no address in {result}"))
            .to_owned();
        (pod_ns, cidr.trim_end_matches("/32").to_owned())
    }

    fn logs(&self) -> String {
        self.agents
            .iter()
            .enumerate()
            .map(|(i, a)| format!("--- node-{}\n{}", i + 1, a.log_tail(15)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl KubeCluster {
    /// Checks every request from `peers` (address prefixes, `198.18.0.11:`) in the API server's
    /// access log against what `margay.yaml` grants the ServiceAccount `account`; returns how
    /// many were checked.
    fn requests_granted(&self, peers: &[&str], account: &str) -> usize {
        use margay_integration::rbac::{allows, documents, granted, permission_of};
        let manifest = std::fs::read_to_string(repo_root().join("manifests/margay.yaml")).unwrap();
        let grants = granted(&documents(&manifest).unwrap(), "margay-system", account);
        let log = std::fs::read_to_string(self.dir.path().join("access.log")).unwrap();
        let mut checked = 0;
        let mut denied = std::collections::BTreeSet::new();
        for line in log.lines() {
            let mut f = line.split(' ');
            let (Some(peer), Some(method), Some(path)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            if !peers.iter().any(|p| peer.starts_with(p)) {
                continue;
            }
            if let Some(p) = permission_of(method, path) {
                checked += 1;
                if !allows(&grants, &p) {
                    denied.insert(format!("{p} ({method} {path})"));
                }
            }
        }
        assert!(
            denied.is_empty(),
            "margay.yaml does not grant {account} what it did:\n{}",
            denied.into_iter().collect::<Vec<_>>().join("\n")
        );
        checked
    }
}

fn pings(from: &Netns, ip: &str) -> bool {
    from.exec(&["ping", "-c", "1", "-W", "1", ip]).is_ok()
}

/// Whether a TCP connection from `from` to `ip:port` gets the pod server's answer.
fn connects(from: &Netns, ip: &str, port: u16) -> bool {
    let to = std::net::SocketAddr::new(ip.parse().unwrap(), port);
    from.run(move || probe_here(to, Proto::Tcp, Duration::from_secs(1)))
        .unwrap_or(false)
}

/// The core Node's `NetworkUnavailable` condition: (status, reason).
fn network_condition(c: &KubeCluster, node: &str) -> Option<(String, String)> {
    let (ok, text) = c.kubectl(&["get", "node", node, "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&text).ok().filter(|_| ok)?;
    let cond = v["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "NetworkUnavailable")?;
    Some((
        cond["status"].as_str()?.to_owned(),
        cond["reason"].as_str()?.to_owned(),
    ))
}

#[test]
fn three_nodes_in_kubernetes_mode() {
    let mut c = KubeCluster::start("ks", 3);
    c.apply(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels: {team: blue}\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata:\n  name: default\n",
    );
    // A dedicated route reflector on its own node (as the reflector Deployment runs it).
    let rr = Netns::with_tag("ks-rr").unwrap();
    c._bridge
        .attach(&rr, "eth0", &["198.18.0.20/24".parse().unwrap()])
        .unwrap();
    c.apply("apiVersion: v1\nkind: Node\nmetadata:\n  name: rr-1\n");
    let mut reflector = Daemon::builder("margay-rr", margay_node_bin())
        .args(["--role", "route-reflector"])
        .env("NODENAME", "rr-1")
        .env("DATASTORE_TYPE", "kubernetes")
        .env("KUBECONFIG", c.kubeconfig())
        .env("RUST_LOG", "info")
        .netns(&rr)
        .log_file(c.dir.path().join("rr.log"))
        .ready(Ready::LogContains("route reflector started".into()))
        .timeout(Duration::from_secs(30))
        .spawn()
        .expect("margay-node --role route-reflector starts in Kubernetes mode");
    let (web_ns, web_ip) = c.pod(
        0,
        "shop",
        "web",
        "{app: web}",
        "[{name: http, containerPort: 8080}, {name: metrics, containerPort: 9090}]",
    );
    let (cli_ns, cli_ip) = c.pod(1, "default", "client", "{app: client}", "[]");
    let (db_ns, db_ip) = c.pod(2, "default", "db", "{app: db}", "[]");
    let _web_server = Daemon::builder("pod-server", env!("CARGO_BIN_EXE_margay-lab"))
        .args([
            "pod-server",
            "--name",
            "shop/web",
            "--port",
            "8080",
            "--port",
            "9090",
        ])
        .netns(&web_ns)
        .log_file(c.dir.path().join("web-server.log"))
        .ready(Ready::TcpListen(9090))
        .timeout(Duration::from_secs(10))
        .spawn()
        .expect("the pod server starts in web's namespace");

    for (from, to) in [(&cli_ns, &web_ip), (&web_ns, &db_ip), (&db_ns, &cli_ip)] {
        wait_for(
            &format!("a pod reaches {to} on another node"),
            Duration::from_secs(60),
            || pings(from, to),
            || c.logs(),
        );
    }
    // Endpoints are derived from the Pods: none is stored; the CNI ADD wrote the addresses on
    // the Pod.
    let weps = c.kubectl_ok(&["get", "workloadendpoints", "-A", "-o", "name"]);
    assert!(
        weps.trim().is_empty(),
        "no WorkloadEndpoint is stored: {weps}"
    );
    let annotated = c.kubectl_ok(&[
        "get",
        "pod",
        "web",
        "-n",
        "shop",
        "-o",
        "jsonpath={.metadata.annotations.margay\\.dev/podIPs}",
    ]);
    assert_eq!(annotated.trim(), format!("{web_ip}/32"));
    // margayctl sees the endpoints the agents derive.
    let out = c
        .infra
        .command(workspace_bin("margayctl", "margay-ctl"))
        .env("DATASTORE_TYPE", "kubernetes")
        .env("KUBECONFIG", c.kubeconfig())
        .args(["get", "workloadendpoints", "-A", "-o", "wide"])
        .output()
        .expect("margayctl runs");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for ip in [&web_ip, &cli_ip, &db_ip] {
        assert!(
            table.contains(ip.as_str()),
            "margayctl shows {ip}:\n{table}"
        );
    }
    for node in ["node-1", "node-2", "node-3"] {
        wait_for(
            &format!("{node}'s core Node says NetworkUnavailable=False"),
            Duration::from_secs(30),
            || network_condition(&c, node) == Some(("False".into(), "MargayIsUp".into())),
            || c.logs(),
        );
    }
    assert!(connects(&cli_ns, &web_ip, 8080) && connects(&cli_ns, &web_ip, 9090));

    // web (selected by its Pod label) takes only the named port `http`, only from pods labelled
    // role=frontend: the client on node-2 is not one yet.
    c.apply(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: web-http\n  namespace: shop\n\
         spec:\n  podSelector: {matchLabels: {app: web}}\n  policyTypes: [Ingress]\n  ingress:\n\
         \x20 - from: [{namespaceSelector: {}, podSelector: {matchLabels: {role: frontend}}}]\n    ports: [{port: http}]\n",
    );
    wait_for(
        "the NetworkPolicy applied with kubectl isolates web",
        Duration::from_secs(60),
        || !connects(&cli_ns, &web_ip, 8080),
        || c.logs(),
    );
    assert!(!pings(&cli_ns, &web_ip), "ICMP is not allowed either");
    assert!(pings(&cli_ns, &db_ip), "db (no policy) is still reachable");
    c.kubectl_ok(&["label", "pod", "client", "-n", "default", "role=frontend"]);
    wait_for(
        "labelling the client role=frontend lets it reach web's named port http (8080)",
        Duration::from_secs(60),
        || connects(&cli_ns, &web_ip, 8080),
        || c.logs(),
    );
    assert!(
        !connects(&cli_ns, &web_ip, 9090),
        "metrics (9090) is not the named port the policy allows"
    );
    assert!(
        !connects(&db_ns, &web_ip, 8080),
        "db on node-3 has no role=frontend label"
    );
    c.kubectl_ok(&["label", "pod", "client", "-n", "default", "role-"]);
    wait_for(
        "removing the label shuts the client out again",
        Duration::from_secs(60),
        || !connects(&cli_ns, &web_ip, 8080),
        || c.logs(),
    );
    c.kubectl_ok(&["delete", "networkpolicy", "-n", "shop", "web-http"]);
    wait_for(
        "deleting the policy opens web again",
        Duration::from_secs(60),
        || pings(&cli_ns, &web_ip) && connects(&cli_ns, &web_ip, 9090),
        || c.logs(),
    );

    // node-3 goes away: its agent stops, its Kubernetes Node is deleted; the controller releases
    // its endpoint and block.
    let controller = Daemon::builder("controllers", margay_node_bin())
        .args(["--role", "controllers"])
        .env("DATASTORE_TYPE", "kubernetes")
        .env("KUBECONFIG", c.kubeconfig())
        .env("NODENAME", "controllers")
        .env("RUST_LOG", "info")
        .netns(&c.infra)
        .log_file(c.dir.path().join("controllers.log"))
        .ready(Ready::LogContains("controllers started".into()))
        .timeout(Duration::from_secs(20))
        .spawn()
        .expect("margay-node --role controllers starts");
    c.controller = Some(controller);
    c.agents[2].stop().expect("stop node-3's agent");
    let has_node3 = |c: &KubeCluster| {
        let affinities = c.kubectl_ok(&["get", "blockaffinities", "-o", "name"]);
        affinities.contains("node-3")
    };
    assert!(has_node3(&c), "node-3 holds a block before it goes");
    c.kubectl_ok(&["delete", "node", "node-3"]);
    wait_for(
        "the controller releases node-3's block",
        Duration::from_secs(60),
        || !has_node3(&c),
        || {
            c.controller
                .as_ref()
                .map(|d| d.log_tail(20))
                .unwrap_or_default()
        },
    );
    // Every request the agents and the reflector made is one margay.yaml grants their account.
    let nodes = c.requests_granted(
        &["198.18.0.11:", "198.18.0.12:", "198.18.0.13:"],
        "margay-node",
    );
    assert!(nodes > 20, "only {nodes} agent requests in the access log");
    let rr = c.requests_granted(&["198.18.0.20:"], "margay-route-reflector");
    assert!(rr > 3, "only {rr} reflector requests in the access log");
    let margay_nodes = c.kubectl_ok(&["get", "nodes.crd.margay.dev", "-o", "name"]);
    assert!(!margay_nodes.contains("node-3"), "{margay_nodes}");
    assert!(
        margay_nodes.contains("rr-1"),
        "the reflector's Node stays: {margay_nodes}"
    );
    assert!(reflector.is_running(), "{}", reflector.log_tail(20));
    reflector.stop().expect("stop the reflector");
    assert!(pings(&cli_ns, &web_ip), "the other nodes are untouched");
}
