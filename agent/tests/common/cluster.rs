//! A cluster of node namespaces on one underlay bridge, etcd in an infra namespace, an agent on
//! each node.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use margay_api::{IPAMConfig, IPPool};
use margay_datastore::{Datastore, Typed};
use margay_harness::fixtures::Etcd as EtcdServer;
use margay_harness::{Bridge, Netns, Underlay};

use super::*;

/// Something to write into the datastore before the agents start.
pub type Setup = Box<dyn FnOnce(Arc<dyn Datastore>) -> BoxFuture<'static, ()> + Send>;

/// A datastore client for `endpoint`, usable from inside `ns`.
pub fn with_datastore<T: Send + 'static>(
    ns: &Netns,
    endpoint: &str,
    f: impl FnOnce(Arc<dyn Datastore>) -> BoxFuture<'static, T> + Send + 'static,
) -> T {
    let ep = endpoint.to_owned();
    ns.block_on(async move { f(connect(ep).await.unwrap()).await })
        .unwrap()
}

/// (established, not established) sessions in node-1's NodeStatus, read through etcd from `ns`.
pub fn nodes_status(ns: &Netns, endpoint: String) -> Option<(u32, u32)> {
    ns.block_on(async move {
        let ds = connect(endpoint).await.ok()?;
        let s = Typed::<margay_api::NodeStatus>::new(ds)
            .get(None, "node-1")
            .await
            .ok()?;
        let bgp = s.status?.bgp?;
        Some((bgp.number_established, bgp.number_not_established))
    })
    .ok()
    .flatten()
}

/// Nodes on one bridge with etcd in an infra namespace, an agent on each.
pub struct Cluster {
    pub bridge: Bridge,
    pub infra: Netns,
    pub etcd: EtcdServer,
    pub endpoint: String,
    pub nodes: Vec<Netns>,
    pub agents: Vec<margay_harness::Daemon>,
    pub clients: Vec<margay_agent::localapi::client::Client>,
    pub dir: tempfile::TempDir,
}

/// How one node of a [`Cluster`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRole {
    /// A full node (`margay-node`), with its local API.
    Node,
    /// A dedicated route reflector (`margay-node --role route-reflector`, from the datastore).
    Reflector,
}

/// Starts a dedicated reflector named `node` in `ns`, configured from the environment as the
/// reflector Deployment is (`--config` would name a standalone speaker file); `config` names
/// its log file.
pub fn start_reflector(
    ns: &Netns,
    node: &str,
    etcd: &str,
    config: &std::path::Path,
    n: u32,
) -> margay_harness::Daemon {
    margay_harness::Daemon::builder("margay-rr", env!("CARGO_BIN_EXE_margay-node"))
        .args(["--role", "route-reflector"])
        .env("NODENAME", node)
        .env("ETCD_ENDPOINTS", etcd)
        .env("RUST_LOG", "info")
        .netns(ns)
        .log_file(config.with_extension(format!("{n}.log")))
        .ready(margay_harness::Ready::LogContains(
            "route reflector started".into(),
        ))
        .timeout(Duration::from_secs(30))
        .spawn()
        .expect("margay-node --role route-reflector starts")
}

/// The pool most tests use: `default-ipv4`, 100.64.0.0/16.
pub fn default_pool() -> IPPool {
    IPPool::new("default-ipv4", margay_api::IPPoolSpec::new("100.64.0.0/16"))
}

impl Cluster {
    /// One pod on node `i` (counting from 0) in a namespace tagged `TAG-p{i}`, wired as the CNI
    /// plugin does: its namespace and address.
    pub fn pod_on(&self, tag: &str, i: usize) -> (Netns, String) {
        let ns = Netns::with_tag(&format!("{tag}-p{i}")).unwrap();
        let ip = wire_pod(
            &self.clients[i],
            &self.nodes[i],
            &ns,
            &format!("pod-{i}"),
            &format!("mgytest{tag}{i}p"),
        );
        (ns, ip)
    }

    /// One pod on each of the first `n` nodes (see [`Cluster::pod_on`]).
    pub fn pods(&self, tag: &str, n: usize) -> Vec<(Netns, String)> {
        (0..n).map(|i| self.pod_on(tag, i)).collect()
    }

    /// `n` full nodes with `pool` (and an IPAM config).
    pub fn new(tag: &str, n: usize, pool: IPPool, ipam: Option<IPAMConfig>) -> Cluster {
        let setup: Setup = Box::new(move |ds| {
            Box::pin(async move {
                Typed::<IPPool>::new(Arc::clone(&ds))
                    .create(&pool)
                    .await
                    .unwrap();
                if let Some(c) = ipam {
                    Typed::<IPAMConfig>::new(ds).create(&c).await.unwrap();
                }
            })
        });
        Cluster::start(tag, &vec![NodeRole::Node; n], setup)
    }

    /// Nodes with `roles` (node-1 first, at 198.18.0.11), after `setup` wrote its objects.
    /// Each node namespace has a default route via the infra namespace at metric 1000, so that
    /// proxy ARP answers pods and a default route learned over BGP (metric 32) is preferred.
    pub fn start(tag: &str, roles: &[NodeRole], setup: Setup) -> Cluster {
        let Underlay {
            bridge,
            infra,
            nodes,
        } = Underlay::new(tag, roles.len()).expect("namespaces (run as root)");
        let etcd = EtcdServer::start_in(&infra, Underlay::INFRA_V4.into()).expect("etcd");
        let endpoint = etcd.endpoint();
        with_datastore(&nodes[0], &endpoint, setup);
        let dir = tempfile::tempdir().unwrap();
        let mut agents = Vec::new();
        let mut clients = Vec::new();
        for (i, (node, role)) in nodes.iter().zip(roles).enumerate() {
            let name = format!("node-{}", i + 1);
            let config = agent_config(dir.path(), &name, &endpoint);
            let c = client(&config);
            let a = match role {
                NodeRole::Node => {
                    let a = start_agent(node, &config, 1);
                    wait_ready(&c, &a);
                    a
                }
                NodeRole::Reflector => start_reflector(node, &name, &endpoint, &config, 1),
            };
            agents.push(a);
            clients.push(c);
        }
        Cluster {
            bridge,
            infra,
            etcd,
            endpoint,
            nodes,
            agents,
            clients,
            dir,
        }
    }
}
