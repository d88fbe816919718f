//! NetworkPolicy end to end: two nodes with real agents, etcd, pods in namespaces, real
//! iptables and ipsets. Policies are written to etcd as `margayctl apply` would; each check
//! first waits (local API `Applied`) until both nodes have programmed the write.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use margay_agent::localapi::client::Client;
use margay_agent::localapi::proto::*;
use margay_api::k8s::{Namespace, NetworkPolicy};
use margay_api::workload::EndpointPort;
use margay_api::{AgentConfiguration, IPPool, IPPoolSpec, WorkloadEndpoint};
use margay_datastore::{Datastore, Etcd, EtcdConfig, Typed};
use margay_harness::fixtures::Etcd as EtcdServer;
use margay_harness::{Bridge, Daemon, Netns};

/// The resync interval the agents run with, so tamper repair is quick.
const RESYNC: &str = "2s";

struct Pod {
    ns: Netns,
    namespace: String,
    name: String,
    node: usize,
    ip: String,
    host_if: String,
    _http: Vec<Daemon>,
}

struct Lab {
    nodes: Vec<Netns>,
    agents: Vec<Daemon>,
    clients: Vec<Client>,
    pods: Vec<Pod>,
    endpoint: String,
    _etcd: EtcdServer,
    _infra: Netns,
    _bridge: Bridge,
    _dir: tempfile::TempDir,
}

impl Lab {
    /// Runs `f` with a datastore client, from node-1's namespace (etcd is on the underlay).
    fn ds<T, F, Fut>(&self, f: F) -> T
    where
        T: Send,
        F: FnOnce(Arc<dyn Datastore>) -> Fut + Send,
        Fut: std::future::Future<Output = T> + Send,
    {
        let ep = self.endpoint.clone();
        self.nodes[0]
            .block_on(async move {
                let ds: Arc<dyn Datastore> = Arc::new(
                    Etcd::connect(&EtcdConfig {
                        endpoints: vec![ep],
                        ..Default::default()
                    })
                    .await
                    .unwrap(),
                );
                f(ds).await
            })
            .unwrap()
    }
}

async fn connect(endpoint: String) -> Arc<dyn Datastore> {
    Arc::new(
        Etcd::connect(&EtcdConfig {
            endpoints: vec![endpoint],
            ..Default::default()
        })
        .await
        .unwrap(),
    )
}

/// Wires pod `namespace/name` on `node` as the CNI plugin does and serves HTTP on 80 and 81.
fn wire(lab: &mut Lab, node: usize, namespace: &str, name: &str) {
    let i = lab.pods.len();
    let ns = Netns::with_tag(&format!("pol-p{i}")).unwrap();
    let host_if = format!("mgypol{i:08}");
    let att = Some(Attachment {
        handle_id: format!("net.{namespace}.{name}"),
        container_id: format!("{namespace}-{name}"),
        namespace: namespace.into(),
        pod: name.into(),
        ifname: "eth0".into(),
    });
    let client = &lab.clients[node];
    let got = client
        .allocate(Allocate {
            attachment: att.clone(),
            num_v4: 1,
            ..Default::default()
        })
        .unwrap();
    let cidr = got.addresses[0].clone();
    lab.nodes[node]
        .connect(&host_if, &[], &ns, "eth0", &[])
        .unwrap();
    for argv in [
        vec!["ip", "addr", "add", cidr.as_str(), "dev", "eth0"],
        vec!["ip", "link", "set", "lo", "up"],
        vec![
            "ip",
            "route",
            "add",
            "169.254.1.1",
            "dev",
            "eth0",
            "scope",
            "link",
        ],
        vec![
            "ip",
            "route",
            "add",
            "default",
            "via",
            "169.254.1.1",
            "dev",
            "eth0",
        ],
    ] {
        ns.exec(&argv).unwrap();
    }
    client
        .endpoint_up(EndpointUp {
            attachment: att,
            host_ifname: host_if.clone(),
            addresses: vec![cidr.clone()],
            mac: String::new(),
        })
        .unwrap();
    let www = lab._dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "ok").unwrap();
    let http: Vec<Daemon> = [80, 81]
        .iter()
        .map(|port| {
            Daemon::builder(&format!("httpd-{i}-{port}"), "busybox")
                .args(["httpd", "-f", "-p", &format!("0.0.0.0:{port}"), "-h"])
                .arg(&www)
                .netns(&ns)
                .log_file(lab._dir.path().join(format!("httpd-{i}-{port}.log")))
                .spawn()
                .unwrap()
        })
        .collect();
    lab.pods.push(Pod {
        ns,
        namespace: namespace.into(),
        name: name.into(),
        node,
        ip: cidr.trim_end_matches("/32").to_owned(),
        host_if,
        _http: http,
    });
}

fn lab() -> Lab {
    let net = |s: &str| s.parse().unwrap();
    let bridge = Bridge::new().expect("namespace (run as root)");
    let infra = Netns::with_tag("pol-infra").unwrap();
    bridge
        .attach(&infra, "eth0", &[net("198.18.0.254/24")])
        .unwrap();
    let etcd = EtcdServer::start_in(&infra, "198.18.0.254".parse().unwrap()).expect("etcd");
    let endpoint = etcd.endpoint();
    let nodes: Vec<Netns> = (1..=2)
        .map(|i| Netns::with_tag(&format!("pol-node{i}")).unwrap())
        .collect();
    for (i, node) in nodes.iter().enumerate() {
        bridge
            .attach(node, "eth0", &[net(&format!("198.18.0.{}/24", 11 + i))])
            .unwrap();
        node.exec(&["ip", "route", "add", "default", "via", "198.18.0.254"])
            .unwrap();
    }
    let ep = endpoint.clone();
    nodes[0]
        .block_on(async move {
            let ds = connect(ep).await;
            Typed::<IPPool>::new(Arc::clone(&ds))
                .create(&IPPool::new("pool", IPPoolSpec::new("100.64.0.0/16")))
                .await
                .unwrap();
            let cfg: AgentConfiguration = serde_json::from_value(serde_json::json!({
                "apiVersion": "crd.margay.dev/v1", "kind": "AgentConfiguration",
                "metadata": {"name": "default"},
                "spec": {"iptablesRefreshInterval": RESYNC, "ipsetsRefreshInterval": RESYNC}
            }))
            .unwrap();
            Typed::<AgentConfiguration>::new(ds)
                .create(&cfg)
                .await
                .unwrap();
        })
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut agents = Vec::new();
    let mut clients = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let config = agent_config(dir.path(), &format!("node-{}", i + 1), &endpoint);
        let a = start_agent(node, &config, 1);
        let c = client(&config);
        wait_ready(&c, &a);
        agents.push(a);
        clients.push(c);
    }
    Lab {
        nodes,
        agents,
        clients,
        pods: Vec::new(),
        endpoint,
        _etcd: etcd,
        _infra: infra,
        _bridge: bridge,
        _dir: dir,
    }
}

/// Whether a TCP connection (an HTTP GET) from `from` to `ip:port` succeeds.
fn reach(from: &Netns, ip: &str, port: u16) -> bool {
    from.exec(&[
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "--connect-timeout",
        "1",
        "-m",
        "2",
        &format!("http://{ip}:{port}/"),
    ])
    .is_ok()
}

fn wait_for(
    what: &str,
    timeout: Duration,
    mut ok: impl FnMut() -> bool,
    detail: impl Fn() -> String,
) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "{what} within {timeout:?}:\n{}",
            detail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Lab {
    fn pod(&self, namespace: &str, name: &str) -> &Pod {
        self.pods
            .iter()
            .find(|p| p.namespace == namespace && p.name == name)
            .unwrap()
    }

    fn logs(&self) -> String {
        self.agents
            .iter()
            .map(|a| a.log_tail(15))
            .collect::<Vec<_>>()
            .join("\n---\n")
    }

    /// Waits until every node reports `kind ns/name` present at `rev` (or absent, with `None`).
    fn wait_applied(&self, kind: &str, ns: &str, name: &str, rev: Option<&str>) {
        for (i, c) in self.clients.iter().enumerate() {
            wait_for(
                &format!("node-{} applies {kind} {ns}/{name} at {rev:?}", i + 1),
                Duration::from_secs(20),
                || match c.applied(kind, ns, name) {
                    Ok(r) => match rev {
                        Some(rev) => r.present && r.revision == rev,
                        None => !r.present,
                    },
                    Err(_) => false,
                },
                || format!("{:?}\n{}", c.applied(kind, ns, name), self.logs()),
            );
        }
    }

    /// Sets a pod's labels and named ports on its WorkloadEndpoint, as the controller does.
    fn label(
        &self,
        namespace: &str,
        name: &str,
        labels: &[(&str, &str)],
        ports: Vec<EndpointPort>,
    ) {
        let node = format!("node-{}", self.pod(namespace, name).node + 1);
        let wep = WorkloadEndpoint::name_for(&node, name, "eth0");
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (ns, w) = (namespace.to_owned(), wep.clone());
        let rev = self.ds(move |ds| async move {
            Typed::<WorkloadEndpoint>::new(ds)
                .update_with(Some(&ns), &w, 10, |e| {
                    e.metadata.labels = Some(labels.clone());
                    e.spec.ports = ports.clone();
                    Ok(true)
                })
                .await
                .unwrap()
                .metadata
                .resource_version
                .unwrap()
        });
        self.wait_applied("workloadendpoints", namespace, &wep, Some(&rev));
    }

    fn namespace(&self, name: &str, labels: &[(&str, &str)]) {
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": labels.iter().cloned().collect::<BTreeMap<_, _>>()}
        }))
        .unwrap();
        let rev = self.ds(move |ds| async move {
            Typed::<Namespace>::new(ds)
                .create(&ns)
                .await
                .unwrap()
                .metadata
                .resource_version
                .unwrap()
        });
        self.wait_applied("namespaces", "", name, Some(&rev));
    }

    fn apply(&self, namespace: &str, name: &str, spec: serde_json::Value) {
        let np: NetworkPolicy = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": namespace}, "spec": spec
        }))
        .unwrap();
        let (ns, n) = (namespace.to_owned(), name.to_owned());
        let rev = self.ds(move |ds| async move {
            let t = Typed::<NetworkPolicy>::new(ds);
            let _ = t.delete(Some(&ns), &n, None).await;
            t.create(&np)
                .await
                .unwrap()
                .metadata
                .resource_version
                .unwrap()
        });
        self.wait_applied("networkpolicies", namespace, name, Some(&rev));
    }

    fn delete(&self, namespace: &str, name: &str) {
        let (ns, n) = (namespace.to_owned(), name.to_owned());
        self.ds(move |ds| async move {
            Typed::<NetworkPolicy>::new(ds)
                .delete(Some(&ns), &n, None)
                .await
                .unwrap()
        });
        self.wait_applied("networkpolicies", namespace, name, None);
    }

    /// Asserts the reachability of each (from, to, port) case.
    fn expect(&self, cases: &[Case]) {
        for ((fns, fname), (tns, tname), port, want) in cases {
            let (from, to) = (self.pod(fns, fname), self.pod(tns, tname));
            let got = reach(&from.ns, &to.ip, *port);
            assert_eq!(
                got,
                *want,
                "{fns}/{fname} (node-{}) → {tns}/{tname}:{port} (node-{})",
                from.node + 1,
                to.node + 1
            );
        }
    }
}

/// (from pod, to pod, port, reachable), pods as (namespace, name).
type Case<'a> = ((&'a str, &'a str), (&'a str, &'a str), u16, bool);

fn http(port: u16) -> EndpointPort {
    EndpointPort {
        name: "serve-http".into(),
        protocol: margay_api::agentconfig::Protocol::Tcp,
        port,
    }
}

#[test]
fn network_policy_across_two_nodes_with_real_agents() {
    let mut lab = lab();
    lab.namespace("x", &[("ns", "x")]);
    lab.namespace("y", &[("ns", "y")]);
    wire(&mut lab, 0, "x", "a");
    wire(&mut lab, 1, "x", "b");
    wire(&mut lab, 0, "y", "c");
    lab.label("x", "a", &[("pod", "a")], vec![]);
    lab.label("x", "b", &[("pod", "b")], vec![http(80)]);
    lab.label("y", "c", &[("pod", "c")], vec![]);
    // Servers up (the node reaches its own pods whatever the policy).
    for p in &lab.pods {
        wait_for(
            &format!("{}/{} serves HTTP", p.namespace, p.name),
            Duration::from_secs(10),
            || reach(&lab.nodes[p.node], &p.ip, 80) && reach(&lab.nodes[p.node], &p.ip, 81),
            String::new,
        );
    }
    let a = ("x", "a");
    let b = ("x", "b");
    let c = ("y", "c");

    // No policy: everything passes, across nodes and within one.
    lab.expect(&[
        (a, b, 80, true),
        (b, a, 80, true),
        (c, b, 81, true),
        (c, a, 80, true),
    ]);

    // Deny all ingress in x: x's pods take nothing; y's pod still does.
    lab.apply("x", "deny-all", serde_json::json!({"podSelector": {}}));
    lab.expect(&[
        (a, b, 80, false),
        (b, a, 80, false),
        (c, a, 80, false),
        (a, c, 80, true),
    ]);
    // The node still reaches its own pods.
    assert!(reach(&lab.nodes[1], &lab.pod("x", "b").ip, 80));

    // Tamper: flush b's to-workload chain on node-2; the resync puts it back.
    let tw = format!("mgy-tw-{}", lab.pod("x", "b").host_if);
    lab.nodes[1].exec(&["iptables", "-F", &tw]).unwrap();
    assert!(
        reach(&lab.pods[0].ns, &lab.pod("x", "b").ip, 80),
        "the flush opened b"
    );
    wait_for(
        "the flushed chain is repaired",
        Duration::from_secs(10),
        || !reach(&lab.pods[0].ns, &lab.pod("x", "b").ip, 80),
        || lab.nodes[1].exec(&["iptables-save"]).unwrap().stdout,
    );

    // Removing it restores traffic.
    lab.delete("x", "deny-all");
    lab.expect(&[(a, b, 80, true), (b, a, 80, true)]);

    // b takes only a, on its named port (80 here), from its own namespace.
    lab.apply(
        "x",
        "allow-a",
        serde_json::json!({"podSelector": {"matchLabels": {"pod": "b"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "a"}}}],
                         "ports": [{"port": "serve-http"}]}]}),
    );
    lab.expect(&[
        (a, b, 80, true),
        (a, b, 81, false),
        (c, b, 80, false),
        (b, a, 80, true),
    ]);

    // The named port follows the pod: now it is 81.
    lab.label("x", "b", &[("pod", "b")], vec![http(81)]);
    lab.expect(&[(a, b, 81, true), (a, b, 80, false)]);

    // c enters by a namespace selector: y's pods, any port.
    lab.apply(
        "x",
        "allow-y",
        serde_json::json!({"podSelector": {"matchLabels": {"pod": "b"}},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
    );
    lab.expect(&[(c, b, 80, true), (c, b, 81, true), (a, b, 80, false)]);

    // Tamper: delete c's address from the namespace set on node-2; the resync adds it back.
    let sets = lab.nodes[1].exec(&["ipset", "save"]).unwrap().stdout;
    let set = sets
        .lines()
        .find(|l| l.starts_with("add mgy4s-") && l.ends_with(&format!(" {}", lab.pod("y", "c").ip)))
        .and_then(|l| l.split(' ').nth(1))
        .expect("a set holds c")
        .to_owned();
    lab.nodes[1]
        .exec(&["ipset", "del", &set, &lab.pod("y", "c").ip])
        .unwrap();
    wait_for(
        "the deleted member is repaired",
        Duration::from_secs(10),
        || reach(&lab.pod("y", "c").ns, &lab.pod("x", "b").ip, 80),
        || lab.nodes[1].exec(&["ipset", "save"]).unwrap().stdout,
    );

    // a's label change moves it out of allow-a's set: one ipset change, no iptables write.
    lab.label("x", "a", &[("pod", "other")], vec![]);
    lab.expect(&[(a, b, 81, false)]);
    lab.label("x", "a", &[("pod", "a")], vec![]);
    lab.expect(&[(a, b, 81, true)]);

    // Egress: a may only talk to y.
    lab.apply(
        "x",
        "a-egress",
        serde_json::json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
            "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
    );
    lab.expect(&[(a, c, 80, true), (a, b, 81, false)]);
    // Replies to allowed connections pass: b → a is allowed by nobody's egress on b, and a's
    // replies ride conntrack.
    lab.expect(&[(b, a, 80, true)]);
}
