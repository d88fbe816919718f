//! A small policy lab for the agent's end-to-end tests: etcd in an infra namespace, nodes with
//! real agents on one bridge, pods wired as the CNI plugin does, each serving TCP and UDP on
//! ports 80 and 81 (threads in the pod's namespace), labelled as the controller would, and
//! probes run from inside the pods. Writes wait (local API `Applied`) until every node has
//! programmed them.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use margay_agent::localapi::client::Client;
use margay_agent::localapi::proto::*;
use margay_api::agentconfig::Protocol;
use margay_api::k8s::{Namespace, NetworkPolicy};
use margay_api::workload::EndpointPort;
use margay_api::{AgentConfiguration, IPPool, IPPoolSpec, WorkloadEndpoint};
use margay_datastore::{Datastore, Typed};
use margay_harness::fixtures::Etcd as EtcdServer;
use margay_harness::{Bridge, Daemon, Netns};

pub use crate::common::wait_for;
use crate::common::{agent_config, client, start_agent, wait_ready};

/// The ports every pod serves, on TCP and UDP.
pub const PORTS: [u16; 2] = [80, 81];

/// A probe's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

pub struct Pod {
    pub ns: Netns,
    pub namespace: String,
    pub name: String,
    pub node: usize,
    pub ip: String,
    /// The IPv6 address, for pods wired dual-stack.
    pub ip6: Option<String>,
    pub host_if: String,
    pub wep: String,
}

pub struct Lab {
    pub nodes: Vec<Netns>,
    pub agents: Vec<Daemon>,
    pub clients: Vec<Client>,
    pub pods: Vec<Pod>,
    endpoint: String,
    stop: Arc<AtomicBool>,
    servers: Vec<std::thread::JoinHandle<margay_harness::Result<()>>>,
    _etcd: EtcdServer,
    _infra: Netns,
    _bridge: Bridge,
    pub dir: tempfile::TempDir,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for s in self.servers.drain(..) {
            let _ = s.join();
        }
    }
}

async fn connect(endpoint: String) -> Arc<dyn Datastore> {
    crate::common::connect(endpoint).await.unwrap()
}

/// Serves TCP (accept, write, close) and UDP (echo) on `port` until `stop`.
fn serve(port: u16, stop: Arc<AtomicBool>) {
    // [::] takes IPv4 too (v4-mapped).
    let tcp = TcpListener::bind(("::", port)).expect("bind tcp");
    tcp.set_nonblocking(true).unwrap();
    let udp = UdpSocket::bind(("::", port)).expect("bind udp");
    udp.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut buf = [0u8; 64];
    while !stop.load(Ordering::SeqCst) {
        if let Ok((mut s, _)) = tcp.accept() {
            let _ = s.write_all(b"ok\n");
        }
        if let Ok((n, from)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(&buf[..n], from);
        }
    }
}

/// One probe from the calling thread's namespace.
pub fn probe_here(to: SocketAddr, proto: Proto, timeout: Duration) -> bool {
    match proto {
        Proto::Tcp => match TcpStream::connect_timeout(&to, timeout) {
            Ok(mut s) => {
                s.set_read_timeout(Some(timeout)).ok();
                let mut b = [0u8; 3];
                s.read_exact(&mut b).is_ok()
            }
            Err(_) => false,
        },
        Proto::Udp => {
            let any: SocketAddr = if to.is_ipv4() {
                "0.0.0.0:0".parse().unwrap()
            } else {
                "[::]:0".parse().unwrap()
            };
            let Ok(s) = UdpSocket::bind(any) else {
                return false;
            };
            s.set_read_timeout(Some(timeout)).ok();
            if s.send_to(b"probe", to).is_err() {
                return false;
            }
            let mut b = [0u8; 16];
            s.recv_from(&mut b).is_ok()
        }
    }
}

/// The named ports every pod has, as in the upstream e2e suite.
pub fn named_ports() -> Vec<EndpointPort> {
    let mut out = Vec::new();
    for port in PORTS {
        for (p, n) in [(Protocol::Tcp, "tcp"), (Protocol::Udp, "udp")] {
            out.push(EndpointPort {
                name: format!("serve-{port}-{n}"),
                protocol: p,
                port,
            });
        }
    }
    out
}

impl Lab {
    /// `nodes` nodes with agents resyncing every `resync`.
    pub fn new(tag: &str, nodes: usize, resync: &str) -> Lab {
        let net = |s: &str| s.parse().unwrap();
        let bridge = Bridge::new().expect("namespace (run as root)");
        let infra = Netns::with_tag(&format!("{tag}-infra")).unwrap();
        bridge
            .attach(&infra, "eth0", &[net("198.18.0.254/24")])
            .unwrap();
        let etcd = EtcdServer::start_in(&infra, "198.18.0.254".parse().unwrap()).expect("etcd");
        let endpoint = etcd.endpoint();
        let nodes: Vec<Netns> = (1..=nodes)
            .map(|i| Netns::with_tag(&format!("{tag}-n{i}")).unwrap())
            .collect();
        for (i, node) in nodes.iter().enumerate() {
            bridge
                .attach(node, "eth0", &[net(&format!("198.18.0.{}/24", 11 + i))])
                .unwrap();
            node.exec(&["ip", "route", "add", "default", "via", "198.18.0.254"])
                .unwrap();
        }
        let ep = endpoint.clone();
        let resync = resync.to_owned();
        nodes[0]
            .block_on(async move {
                let ds = connect(ep).await;
                for (name, cidr) in [("pool", "100.64.0.0/16"), ("pool6", "fd00:100:64::/112")] {
                    Typed::<IPPool>::new(Arc::clone(&ds))
                        .create(&IPPool::new(name, IPPoolSpec::new(cidr)))
                        .await
                        .unwrap();
                }
                let cfg: AgentConfiguration = serde_json::from_value(serde_json::json!({
                    "apiVersion": "crd.margay.dev/v1", "kind": "AgentConfiguration",
                    "metadata": {"name": "default"},
                    "spec": {"iptablesRefreshInterval": resync, "ipsetsRefreshInterval": resync}
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
            stop: Arc::new(AtomicBool::new(false)),
            servers: Vec::new(),
            _etcd: etcd,
            _infra: infra,
            _bridge: bridge,
            dir,
        }
    }

    /// Runs `f` with a datastore client, from node-1's namespace (etcd is on the underlay).
    pub fn ds<T, F, Fut>(&self, f: F) -> T
    where
        T: Send,
        F: FnOnce(Arc<dyn Datastore>) -> Fut + Send,
        Fut: std::future::Future<Output = T> + Send,
    {
        let ep = self.endpoint.clone();
        self.nodes[0]
            .block_on(async move { f(connect(ep).await).await })
            .unwrap()
    }

    /// Wires pod `namespace/name` on `node` as the CNI plugin does and starts its servers.
    pub fn pod(&mut self, node: usize, namespace: &str, name: &str) -> &Pod {
        self.wire(node, namespace, name, false)
    }

    /// As [`Lab::pod`], with an IPv6 address too.
    pub fn pod_dual(&mut self, node: usize, namespace: &str, name: &str) -> &Pod {
        self.wire(node, namespace, name, true)
    }

    fn wire(&mut self, node: usize, namespace: &str, name: &str, v6: bool) -> &Pod {
        let i = self.pods.len();
        let ns = Netns::with_tag(&format!("p{i}")).unwrap();
        let host_if = format!("mgyp{i:010}");
        let att = Some(Attachment {
            handle_id: format!("net.{namespace}.{name}"),
            container_id: format!("{namespace}-{name}"),
            namespace: namespace.into(),
            pod: name.into(),
            ifname: "eth0".into(),
        });
        let client = &self.clients[node];
        let got = client
            .allocate(Allocate {
                attachment: att.clone(),
                num_v4: 1,
                num_v6: u32::from(v6),
                ..Default::default()
            })
            .unwrap();
        let cidr = got.addresses[0].clone();
        let cidr6 = got.addresses.get(1).cloned();
        self.nodes[node]
            .connect(&host_if, &[], &ns, "eth0", &[])
            .unwrap();
        if let Some(c6) = &cidr6 {
            // As the CNI plugin: the host side's fixed MAC gives it the link-local gateway.
            for argv in [
                vec!["ip", "link", "set", host_if.as_str(), "down"],
                vec![
                    "ip",
                    "link",
                    "set",
                    host_if.as_str(),
                    "address",
                    "ee:ee:ee:ee:ee:ee",
                ],
                vec!["ip", "link", "set", host_if.as_str(), "up"],
            ] {
                self.nodes[node].exec(&argv).unwrap();
            }
            for argv in [
                vec![
                    "ip",
                    "-6",
                    "addr",
                    "add",
                    c6.as_str(),
                    "dev",
                    "eth0",
                    "nodad",
                ],
                vec![
                    "ip",
                    "-6",
                    "route",
                    "add",
                    "default",
                    "via",
                    "fe80::ecee:eeff:feee:eeee",
                    "dev",
                    "eth0",
                ],
            ] {
                ns.exec(&argv).unwrap();
            }
        }
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
                addresses: got.addresses.clone(),
                mac: String::new(),
            })
            .unwrap();
        for port in PORTS {
            let stop = Arc::clone(&self.stop);
            self.servers
                .push(ns.spawn(move || serve(port, stop)).unwrap());
        }
        self.pods.push(Pod {
            ns,
            namespace: namespace.into(),
            name: name.into(),
            node,
            ip: cidr.trim_end_matches("/32").to_owned(),
            ip6: cidr6.map(|c| c.trim_end_matches("/128").to_owned()),
            host_if,
            wep: WorkloadEndpoint::name_for(&format!("node-{}", node + 1), name, "eth0"),
        });
        &self.pods[i]
    }

    pub fn find(&self, namespace: &str, name: &str) -> usize {
        self.pods
            .iter()
            .position(|p| p.namespace == namespace && p.name == name)
            .unwrap_or_else(|| panic!("no pod {namespace}/{name}"))
    }

    pub fn logs(&self) -> String {
        self.agents
            .iter()
            .map(|a| a.log_tail(15))
            .collect::<Vec<_>>()
            .join("\n---\n")
    }

    /// Waits until every node reports `kind ns/name` present at `rev` (or absent, with `None`).
    pub fn wait_applied(&self, kind: &str, ns: &str, name: &str, rev: Option<&str>) {
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
    pub fn label(&self, pod: usize, labels: &[(&str, &str)], ports: Vec<EndpointPort>) {
        let p = &self.pods[pod];
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (ns, w) = (p.namespace.clone(), p.wep.clone());
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
        self.wait_applied("workloadendpoints", &p.namespace, &p.wep, Some(&rev));
    }

    /// Creates or replaces a namespace with `labels`.
    pub fn namespace(&self, name: &str, labels: &[(&str, &str)]) {
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": labels.iter().cloned().collect::<BTreeMap<_, _>>()}
        }))
        .unwrap();
        let n = name.to_owned();
        let rev = self.ds(move |ds| async move {
            let t = Typed::<Namespace>::new(ds);
            match t.get(None, &n).await {
                Ok(old) => {
                    let mut new = ns.clone();
                    new.metadata.resource_version = old.metadata.resource_version;
                    t.update(&new).await.unwrap()
                }
                Err(_) => t.create(&ns).await.unwrap(),
            }
            .metadata
            .resource_version
            .unwrap()
        });
        self.wait_applied("namespaces", "", name, Some(&rev));
    }

    /// Creates or replaces a NetworkPolicy.
    pub fn apply(&self, namespace: &str, name: &str, spec: serde_json::Value) {
        let np: NetworkPolicy = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": namespace}, "spec": spec
        }))
        .unwrap();
        let (ns, n) = (namespace.to_owned(), name.to_owned());
        let rev = self.ds(move |ds| async move {
            let t = Typed::<NetworkPolicy>::new(ds);
            match t.get(Some(&ns), &n).await {
                Ok(old) => {
                    let mut new = np.clone();
                    new.metadata.resource_version = old.metadata.resource_version;
                    t.update(&new).await.unwrap()
                }
                Err(_) => t.create(&np).await.unwrap(),
            }
            .metadata
            .resource_version
            .unwrap()
        });
        self.wait_applied("networkpolicies", namespace, name, Some(&rev));
    }

    /// Deletes a NetworkPolicy.
    pub fn delete(&self, namespace: &str, name: &str) {
        let (ns, n) = (namespace.to_owned(), name.to_owned());
        self.ds(move |ds| async move {
            Typed::<NetworkPolicy>::new(ds)
                .delete(Some(&ns), &n, None)
                .await
                .unwrap()
        });
        self.wait_applied("networkpolicies", namespace, name, None);
    }

    /// Probes `from` → `to` once.
    pub fn probe(
        &self,
        from: usize,
        to: usize,
        port: u16,
        proto: Proto,
        timeout: Duration,
    ) -> bool {
        let addr: SocketAddr = SocketAddr::new(self.pods[to].ip.parse().unwrap(), port);
        self.pods[from]
            .ns
            .run(move || probe_here(addr, proto, timeout))
            .unwrap()
    }

    /// Probes `from` → `to` once over IPv6.
    pub fn probe6(
        &self,
        from: usize,
        to: usize,
        port: u16,
        proto: Proto,
        timeout: Duration,
    ) -> bool {
        let ip = self.pods[to].ip6.as_deref().expect("a dual-stack pod");
        let addr: SocketAddr = SocketAddr::new(ip.parse().unwrap(), port);
        self.pods[from]
            .ns
            .run(move || probe_here(addr, proto, timeout))
            .unwrap()
    }

    /// Probes every pair over TCP and UDP on both ports, in parallel.
    pub fn matrix(&self) -> BTreeMap<(usize, usize, u16, Proto), bool> {
        let mut cases = Vec::new();
        for from in 0..self.pods.len() {
            for to in 0..self.pods.len() {
                for port in PORTS {
                    for proto in [Proto::Tcp, Proto::Udp] {
                        cases.push((from, to, port, proto));
                    }
                }
            }
        }
        let mut out = BTreeMap::new();
        for chunk in cases.chunks(48) {
            let results: Vec<_> = std::thread::scope(|s| {
                let handles: Vec<_> = chunk
                    .iter()
                    .map(|&(f, t, port, proto)| {
                        s.spawn(move || {
                            (
                                (f, t, port, proto),
                                self.probe(f, t, port, proto, Duration::from_millis(700)),
                            )
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            out.extend(results);
        }
        out
    }
}
