//! The node's BGP speaker and its sessions, kept in line with the datastore.
//!
//! Each agent publishes its BGP address in its own `Node` (`spec.bgp.ipv4Address`). The sessions
//! come from [`crate::peering::desired_peers`] over the Nodes, the BGPPeers and
//! `BGPConfiguration default` (Calico's rules: full mesh unless turned off, BGPPeers by node and
//! peer selectors, external peers, route reflectors by `routeReflectorClusterID`), recomputed on
//! every change; only sessions whose settings changed are restarted. The cluster's service CIDRs
//! (`serviceClusterIPs`, `serviceExternalIPs`) are announced by every node.
//!
//! Learned routes go to the route driver as `PREFIX via NEXT_HOP` (a top-of-rack's default route
//! included); a learned route for one of our own blocks is never installed (our blackhole and pod
//! routes own those). A route reflector node without a dataplane passes no route driver.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use futures::stream::BoxStream;
use ipnet::IpNet;
use margay_api::bgp::BGPPassword;
use margay_api::k8s_openapi::api::core::v1::Secret;
use margay_api::node::NodeBGPSpec;
use margay_api::{BGPConfiguration, BGPConfigurationSpec, BGPPeer, MargayNode, NodeSpec};
use margay_bgp::rib::{NextHopMode, RouteChange};
use margay_bgp::wire::Family;
use margay_bgp::{GracefulRestart, PeerConfig, Speaker, SpeakerConfig};
use margay_datastore::{Backoff, Datastore, Event, Typed};
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

use crate::dataplane::{RouteDriver, RouteTarget};
use crate::peering::{DesiredPeer, LocalBgp, desired_peers, local_bgp};

/// Why each current session exists, by peer address (for the published status).
pub type PeerKinds = Arc<std::sync::Mutex<BTreeMap<IpAddr, margay_api::node::BGPPeerType>>>;

/// Where BGP passwords' Secrets live (the agent's namespace, as Calico).
pub const SECRETS_NAMESPACE: &str = "margay-system";

/// How often peering is recomputed even without an event (Secrets are read, not watched).
const REFRESH: Duration = Duration::from_secs(60);

/// The cluster-wide BGP settings: `BGPConfiguration default`, or the defaults.
pub async fn cluster_config(ds: &Arc<dyn Datastore>) -> anyhow::Result<BGPConfigurationSpec> {
    match Typed::<BGPConfiguration>::new(Arc::clone(ds))
        .get(None, margay_api::bgp::BGP_CONFIGURATION_DEFAULT)
        .await
    {
        Ok(c) => Ok(c.spec),
        Err(margay_datastore::Error::NotFound(_)) => Ok(BGPConfigurationSpec::default()),
        Err(e) => Err(e).context("cannot read BGPConfiguration default"),
    }
}

/// What a node publishes about itself in its `Node`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registration {
    /// Its BGP address as `ADDR/PREFIX`.
    pub ipv4: Option<IpNet>,
    /// Its IPv6 BGP address as `ADDR/PREFIX`, if it has one.
    pub ipv6: Option<IpNet>,
    /// Route-reflector cluster id (dedicated reflectors set theirs from their config).
    pub cluster_id: Option<Ipv4Addr>,
    /// Labels to add (e.g. `route-reflector=true` on dedicated reflectors).
    pub labels: BTreeMap<String, String>,
}

/// Creates or updates this node's `Node` with its BGP address (`ADDR/PREFIX`, as Calico), and
/// the cluster id and labels a dedicated reflector declares. Other fields (an AS number or a
/// cluster id set by an operator, other labels) are kept.
pub async fn register_node(
    ds: &Arc<dyn Datastore>,
    node: &str,
    reg: &Registration,
) -> anyhow::Result<()> {
    let nodes = Typed::<MargayNode>::new(Arc::clone(ds));
    let addr = reg.ipv4.map(|a| a.to_string());
    let addr6 = reg.ipv6.map(|a| a.to_string());
    let cluster = reg.cluster_id.map(|c| c.to_string());
    let mut fresh = MargayNode::new(
        node,
        NodeSpec {
            bgp: Some(NodeBGPSpec {
                ipv4_address: addr.clone(),
                ipv6_address: addr6.clone(),
                route_reflector_cluster_id: cluster.clone(),
                ..Default::default()
            }),
        },
    );
    if !reg.labels.is_empty() {
        fresh.metadata.labels = Some(reg.labels.clone());
    }
    match nodes.create(&fresh).await {
        Ok(_) => Ok(()),
        Err(margay_datastore::Error::AlreadyExists(_)) => {
            nodes
                .update_with(None, node, 10, |n| {
                    let before = n.clone();
                    let bgp = n.spec.bgp.get_or_insert_with(Default::default);
                    if addr.is_some() {
                        bgp.ipv4_address = addr.clone();
                    }
                    // The IPv6 address is this node's to state: a node without one clears it.
                    bgp.ipv6_address = addr6.clone();
                    if cluster.is_some() {
                        bgp.route_reflector_cluster_id = cluster.clone();
                    }
                    if !reg.labels.is_empty() {
                        let l = n.metadata.labels.get_or_insert_with(Default::default);
                        l.extend(reg.labels.clone());
                    }
                    Ok(*n != before)
                })
                .await
                .with_context(|| format!("cannot update Node {node}"))?;
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("cannot create Node {node}")),
    }
}

/// The inputs of peering, mirrored from the datastore.
#[derive(Debug, Default)]
struct Inputs {
    nodes: BTreeMap<String, MargayNode>,
    peers: BTreeMap<String, BGPPeer>,
    config: BGPConfigurationSpec,
    synced: [bool; 3],
}

enum Input {
    Node(margay_datastore::Result<Event<MargayNode>>),
    Peer(margay_datastore::Result<Event<BGPPeer>>),
    Config(margay_datastore::Result<Event<BGPConfiguration>>),
    Tick,
}

fn name_of<T: margay_api::kube_core::Resource>(o: &T) -> String {
    o.meta().name.clone().unwrap_or_default()
}

impl Inputs {
    /// Applies one input; `true` when the peering may have changed.
    fn apply(&mut self, input: Input) -> bool {
        fn mirror<T: margay_api::kube_core::Resource>(
            map: &mut BTreeMap<String, T>,
            synced: &mut bool,
            ev: margay_datastore::Result<Event<T>>,
            what: &str,
        ) -> bool {
            match ev {
                Ok(Event::Added(o) | Event::Modified(o)) => {
                    map.insert(name_of(&o), o);
                }
                Ok(Event::Deleted(k)) => {
                    map.remove(&k.name);
                }
                Ok(Event::Synced) => *synced = true,
                Err(e) => {
                    warn!(error = %e, kind = what, "watch");
                    return false;
                }
            }
            true
        }
        match input {
            Input::Node(ev) => mirror(&mut self.nodes, &mut self.synced[0], ev, "nodes"),
            Input::Peer(ev) => mirror(&mut self.peers, &mut self.synced[1], ev, "bgppeers"),
            // Only `default` counts (per-node `node.NAME` objects are not read here).
            Input::Config(ev) => {
                use margay_api::bgp::BGP_CONFIGURATION_DEFAULT as DEFAULT;
                match ev {
                    Ok(Event::Added(c) | Event::Modified(c)) if name_of(&c) == DEFAULT => {
                        self.config = c.spec;
                    }
                    Ok(Event::Deleted(k)) if k.name == DEFAULT => {
                        self.config = BGPConfigurationSpec::default();
                    }
                    Ok(Event::Synced) => self.synced[2] = true,
                    Ok(_) => return false,
                    Err(e) => {
                        warn!(error = %e, kind = "bgpconfigurations", "watch");
                        return false;
                    }
                }
                true
            }
            Input::Tick => true,
        }
    }

    fn synced(&self) -> bool {
        self.synced.iter().all(|s| *s)
    }
}

/// The speaker's view of a desired peer.
fn peer_config(d: &DesiredPeer) -> PeerConfig {
    let mut c = PeerConfig::new(d.addr, d.asn);
    c.port = d.port;
    c.rr_client = d.rr_client;
    c.password = d.password.clone();
    // One session per family, between addresses of that family (as Calico's BIRD): IPv6
    // routes need an IPv6 next hop.
    c.families = vec![if d.addr.is_ipv4() {
        Family::Ipv4Unicast
    } else {
        Family::Ipv6Unicast
    }];
    if d.keep_original_next_hop {
        c.next_hop = Some(NextHopMode::Unchanged);
    }
    c
}

/// The service CIDRs every node announces.
fn service_prefixes(cfg: &BGPConfigurationSpec) -> BTreeSet<IpNet> {
    cfg.service_cluster_ips
        .iter()
        .chain(&cfg.service_external_ips)
        .filter_map(|b| match b.cidr.parse::<IpNet>() {
            Ok(n) => Some(n.trunc()),
            Err(e) => {
                warn!(cidr = %b.cidr, error = %e, "BGPConfiguration: ignoring a service CIDR that does not parse");
                None
            }
        })
        .collect()
}

/// Reads the Secrets the peering refers to (they are read, not watched: a changed password is
/// picked up at the next refresh).
async fn read_passwords(
    ds: &Arc<dyn Datastore>,
    refs: impl Iterator<Item = &BGPPassword>,
) -> BTreeMap<(String, String), Result<String, String>> {
    let secrets = Typed::<Secret>::new(Arc::clone(ds));
    let mut out = BTreeMap::new();
    for r in refs {
        let k = (r.secret_key_ref.name.clone(), r.secret_key_ref.key.clone());
        if out.contains_key(&k) {
            continue;
        }
        let v = match secrets.get(Some(SECRETS_NAMESPACE), &k.0).await {
            Ok(s) => s
                .data
                .as_ref()
                .and_then(|d| d.get(&k.1))
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                .or_else(|| s.string_data.as_ref().and_then(|d| d.get(&k.1)).cloned())
                .ok_or_else(|| format!("the Secret has no key {:?}", k.1)),
            Err(margay_datastore::Error::NotFound(_)) => Err(format!(
                "no Secret {}/{} in the datastore",
                SECRETS_NAMESPACE, k.0
            )),
            Err(e) => Err(e.to_string()),
        };
        out.insert(k, v);
    }
    out
}

/// Keeps the speaker's sessions and service announcements equal to the desired ones.
struct Reconciler {
    me: String,
    speaker: Speaker,
    local: LocalBgp,
    current: BTreeMap<IpAddr, DesiredPeer>,
    services: BTreeSet<IpNet>,
    last_skipped: Vec<String>,
    kinds: PeerKinds,
}

impl Reconciler {
    async fn reconcile(&mut self, ds: &Arc<dyn Datastore>, inputs: &Inputs) {
        if let Some(l) = local_bgp(&self.me, &inputs.nodes, &inputs.config)
            && l != self.local
        {
            warn!(
                running = ?self.local, wanted = ?l,
                "this node's AS number, route-reflector cluster id or the BGP port changed; \
                 restart margay-node to apply (sessions keep running with the old settings)"
            );
        }
        let refs = inputs
            .peers
            .values()
            .filter_map(|p| p.spec.password.as_ref())
            .chain(inputs.config.node_mesh_password.as_ref());
        let passwords = read_passwords(ds, refs).await;
        let lookup = |r: &BGPPassword| -> Result<String, String> {
            passwords
                .get(&(r.secret_key_ref.name.clone(), r.secret_key_ref.key.clone()))
                .cloned()
                .unwrap_or_else(|| Err("not read".into()))
        };
        let peers: Vec<BGPPeer> = inputs.peers.values().cloned().collect();
        let want = desired_peers(&self.me, &inputs.nodes, &peers, &inputs.config, &lookup);
        if want.skipped != self.last_skipped {
            for why in &want.skipped {
                warn!(reason = %why, "BGP peer left out");
            }
            self.last_skipped = want.skipped.clone();
        }
        let gone: Vec<IpAddr> = self
            .current
            .iter()
            .filter(|(a, d)| want.peers.get(a) != Some(d))
            .map(|(a, _)| *a)
            .collect();
        for a in gone {
            self.current.remove(&a);
            match self.speaker.remove_peer(a).await {
                Ok(()) => info!(peer = %a, "BGP peer removed"),
                Err(e) => warn!(peer = %a, error = %e, "cannot remove BGP peer"),
            }
        }
        for (a, d) in want.peers {
            if self.current.contains_key(&a) {
                continue;
            }
            match self.speaker.add_peer(peer_config(&d)).await {
                Ok(()) => {
                    info!(peer = %a, asn = d.asn, kind = ?d.kind, node = ?d.node, rr_client = d.rr_client, "BGP peer added");
                    self.current.insert(a, d);
                }
                Err(e) => warn!(peer = %a, error = %e, "cannot add BGP peer"),
            }
        }
        *self.kinds.lock().unwrap_or_else(|p| p.into_inner()) =
            self.current.iter().map(|(a, d)| (*a, d.kind)).collect();
        let services = service_prefixes(&inputs.config);
        for gone in self.services.difference(&services) {
            let _ = self.speaker.withdraw(*gone);
            info!(prefix = %gone, "service CIDR withdrawn");
        }
        for new in services.difference(&self.services) {
            match self.speaker.originate(*new, None) {
                Ok(()) => info!(prefix = %new, "service CIDR announced"),
                Err(e) => warn!(prefix = %new, error = %e, "cannot announce service CIDR"),
            }
        }
        self.services = services;
    }
}

/// What [`start`] needs besides the datastore.
#[derive(Debug)]
pub struct BgpParams {
    /// This node's name.
    pub node: String,
    /// This node's BGP address (router id, session source, next hop).
    pub addr: Ipv4Addr,
    /// This node's IPv6 BGP address (source and next hop of the IPv6 sessions), if any.
    pub addr6: Option<std::net::Ipv6Addr>,
    /// The route driver for learned routes (`None` on a dedicated route reflector).
    pub routes: Option<Arc<Mutex<RouteDriver>>>,
    /// Our affine blocks (never installed from BGP).
    pub own_blocks: Arc<Mutex<BTreeSet<IpNet>>>,
    /// The learned prefixes currently installed.
    pub learned: Arc<Mutex<BTreeSet<IpNet>>>,
    /// This process restarts a node whose forwarding state survived (its routes are still in
    /// the kernel): peers are told so (graceful restart R and F bits) and keep our routes until
    /// our End-of-RIB.
    pub restarting: bool,
}

/// The running speaker and what the rest of the agent needs of it.
#[derive(Debug)]
pub struct Bgp {
    /// The speaker.
    pub speaker: Speaker,
    /// Why each session exists.
    pub kinds: PeerKinds,
    /// Turns true once the sessions and service announcements follow the datastore.
    pub peering_ready: tokio::sync::watch::Receiver<bool>,
}

impl Bgp {
    /// Sends End-of-RIB to the peers once peering follows the datastore and `routes_in`
    /// completes (the application's own routes are originated), in the background.
    pub fn end_of_rib_after(
        &self,
        routes_in: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let (speaker, mut ready) = (self.speaker.clone(), self.peering_ready.clone());
        tokio::spawn(async move {
            routes_in.await;
            if ready.wait_for(|r| *r).await.is_ok() {
                match speaker.initial_routes_done() {
                    Ok(()) => info!("initial routes announced; End-of-RIB sent to peers"),
                    Err(e) => warn!(error = %e, "cannot send End-of-RIB"),
                }
            }
        });
    }
}

/// Most best-path changes taken at once when they queue up (a few netlink chunks' worth: the
/// kernel starts on the first while the next are decided).
const COALESCE_MAX: usize = 4 * 1024;

/// Bursts of at least this many best-path changes are logged with the time the kernel took.
const BURST_LOG: usize = 1000;

/// Starts the speaker and the tasks that keep its sessions and the kernel's learned routes
/// current. This node's `Node` must be registered first. Graceful restart is on (restart time
/// `nodeMeshMaxRestartTime`, default 120 s); End-of-RIB waits for [`Bgp::end_of_rib_after`].
pub async fn start(ds: Arc<dyn Datastore>, p: BgpParams) -> anyhow::Result<Bgp> {
    let (nodes, _) = Typed::<MargayNode>::new(Arc::clone(&ds))
        .list(None)
        .await
        .context("cannot list Nodes")?;
    let nodes: BTreeMap<String, MargayNode> = nodes.into_iter().map(|n| (name_of(&n), n)).collect();
    let config = cluster_config(&ds).await?;
    let local = local_bgp(&p.node, &nodes, &config)
        .with_context(|| format!("Node {} is not in the datastore", p.node))?;
    let gr = GracefulRestart {
        restarting: p.restarting,
        restart_time: config.node_mesh_max_restart_time().as_secs().min(4095) as u16,
        ..GracefulRestart::default()
    };
    let speaker = Speaker::start_with(
        SpeakerConfig {
            local_as: local.asn,
            router_id: p.addr,
            // `[::]` takes IPv4 connections too (as mapped addresses) on a dual-stack host.
            listen: Some(SocketAddr::new(
                if p.addr6.is_some() {
                    IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
                } else {
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
                },
                local.port,
            )),
            cluster_id: local.cluster_id,
        },
        gr,
    )
    .await
    .with_context(|| format!("cannot start the BGP speaker on port {}", local.port))?;
    info!(addr = %p.addr, asn = local.asn, port = local.port, cluster_id = ?local.cluster_id, restarting = p.restarting, "BGP speaker started");
    let (ready_tx, peering_ready) = tokio::sync::watch::channel(false);

    let mut rec = Reconciler {
        me: p.node.clone(),
        speaker: speaker.clone(),
        local,
        current: BTreeMap::new(),
        services: BTreeSet::new(),
        last_skipped: Vec::new(),
        kinds: PeerKinds::default(),
    };
    let kinds = Arc::clone(&rec.kinds);
    let watch_ds = Arc::clone(&ds);
    tokio::spawn(async move {
        let streams: Vec<BoxStream<'static, Input>> = vec![
            Typed::<MargayNode>::new(Arc::clone(&watch_ds))
                .watch(Backoff::default())
                .map(Input::Node)
                .boxed(),
            Typed::<BGPPeer>::new(Arc::clone(&watch_ds))
                .watch(Backoff::default())
                .map(Input::Peer)
                .boxed(),
            Typed::<BGPConfiguration>::new(Arc::clone(&watch_ds))
                .watch(Backoff::default())
                .map(Input::Config)
                .boxed(),
            tokio_stream_interval(REFRESH).map(|_| Input::Tick).boxed(),
        ];
        let mut all = futures::stream::select_all(streams);
        let mut inputs = Inputs::default();
        while let Some(input) = all.next().await {
            if inputs.apply(input) && inputs.synced() {
                rec.reconcile(&watch_ds, &inputs).await;
                ready_tx.send_replace(true);
            }
        }
    });

    let mut changes = speaker
        .subscribe()
        .context("cannot subscribe to best paths")?;
    let me = IpAddr::V4(p.addr);
    let me6 = p.addr6.map(IpAddr::V6);
    let (routes, own_blocks, learned) = (p.routes, p.own_blocks, p.learned);
    tokio::spawn(async move {
        // A burst: changes taken since the queue was last empty, and when it began.
        let mut burst: Option<(std::time::Instant, usize)> = None;
        // Changes that arrived while the kernel was being waited for, taken next.
        let mut next: Option<Vec<RouteChange>> = None;
        loop {
            let mut batch = match next.take() {
                Some(b) => b,
                None => match changes.recv().await {
                    Some(b) => b,
                    None => break,
                },
            };
            let Some(routes) = &routes else { continue };
            // Whatever the speaker produced meanwhile is taken together: fuller netlink batches
            // when routes arrive faster than they are installed (a full table from a peer), no
            // wait when they do not.
            while batch.len() < COALESCE_MAX {
                match changes.try_recv() {
                    Ok(more) => batch.extend(more),
                    Err(_) => break,
                }
            }
            let b = burst.get_or_insert_with(|| (std::time::Instant::now(), 0));
            b.1 += batch.len();
            let own = own_blocks.lock().await.clone();
            let mut learned = learned.lock().await;
            let mut r = routes.lock().await;
            // Next hops resolved once per batch (a batch usually shares a handful).
            let mut via: BTreeMap<IpAddr, Option<IpAddr>> = BTreeMap::new();
            debug!(changes = ?batch, "best-path changes");
            for change in batch {
                match change {
                    RouteChange::Add { prefix, next_hop }
                    | RouteChange::Replace { prefix, next_hop } => {
                        let p = IpNet::from(prefix);
                        if own.contains(&p) || next_hop == me || Some(next_hop) == me6 {
                            continue;
                        }
                        let gw = match via.get(&next_hop) {
                            Some(g) => *g,
                            None => {
                                let g = match r.resolve_next_hop(next_hop).await {
                                    Ok(g) => Some(g),
                                    Err(why) => {
                                        warn!(%next_hop, reason = %why, "cannot install routes through this next hop");
                                        None
                                    }
                                };
                                via.insert(next_hop, g);
                                g
                            }
                        };
                        match gw {
                            Some(gw) => {
                                r.set(p, RouteTarget::Via(gw));
                                learned.insert(p);
                            }
                            None => {
                                if learned.remove(&p) {
                                    r.remove(&p);
                                }
                            }
                        }
                    }
                    RouteChange::Withdraw { prefix } => {
                        let p = IpNet::from(prefix);
                        if !own.contains(&p) {
                            r.remove(&p);
                        }
                        learned.remove(&p);
                    }
                }
            }
            drop(learned);
            // Queued for the writer thread, which writes while the next changes are decided.
            // Once none are queued, wait for the kernel's answers (refusals are logged, and the
            // next apply, at the latest the periodic resync, retries them), unless more changes
            // come first: those are taken at once, the kernel never waits for this task.
            if let Err(e) = r.submit().await {
                warn!(error = %e, "cannot install learned routes");
            }
            if !changes.is_empty() {
                continue;
            }
            tokio::select! {
                biased;
                more = changes.recv() => next = more,
                done = r.flush() => {
                    if let Err(e) = done {
                        warn!(error = %e, "cannot install learned routes");
                    }
                    if let Some((t, n)) = burst.take()
                        && n >= BURST_LOG
                    {
                        info!(
                            changes = n,
                            ms = t.elapsed().as_millis() as u64,
                            "learned routes written to the kernel"
                        );
                    }
                }
            }
        }
    });
    Ok(Bgp {
        speaker,
        kinds,
        peering_ready,
    })
}

/// A stream that yields every `period` (the first after one period).
fn tokio_stream_interval(period: Duration) -> impl futures::Stream<Item = ()> {
    futures::stream::unfold(
        tokio::time::interval_at(tokio::time::Instant::now() + period, period),
        |mut i| async move {
            i.tick().await;
            Some(((), i))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use margay_api::bgp::ServiceIPBlock;

    #[test]
    fn service_cidrs_are_the_cluster_and_external_ranges_normalised() {
        let cfg = BGPConfigurationSpec {
            service_cluster_ips: vec![ServiceIPBlock {
                cidr: "100.96.0.1/12".into(),
            }],
            service_external_ips: vec![
                ServiceIPBlock {
                    cidr: "198.19.5.0/24".into(),
                },
                ServiceIPBlock {
                    cidr: "not-a-cidr".into(),
                },
            ],
            ..Default::default()
        };
        let got: Vec<String> = service_prefixes(&cfg)
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(got, vec!["100.96.0.0/12", "198.19.5.0/24"]);
    }

    #[test]
    fn other_bgp_configurations_do_not_replace_the_default() {
        let mut i = Inputs::default();
        let mut d = BGPConfiguration::new("default", BGPConfigurationSpec::default());
        d.spec.as_number = Some(65000);
        assert!(i.apply(Input::Config(Ok(Event::Added(d)))));
        let mut other = BGPConfiguration::new("node.n1", BGPConfigurationSpec::default());
        other.spec.as_number = Some(1);
        assert!(!i.apply(Input::Config(Ok(Event::Added(other)))));
        assert_eq!(i.config.as_number, Some(65000));
        let key = margay_datastore::Key::cluster("bgpconfigurations", "default").unwrap();
        assert!(i.apply(Input::Config(Ok(Event::Deleted(key)))));
        assert_eq!(i.config.as_number, None);
    }

    #[test]
    fn a_kept_next_hop_is_unchanged_and_reflector_clients_are_marked() {
        let d = DesiredPeer {
            addr: "198.18.0.254".parse().unwrap(),
            port: 1179,
            asn: 65001,
            kind: margay_api::node::BGPPeerType::GlobalPeer,
            bgp_peer: Some("tor".into()),
            node: None,
            rr_client: true,
            password: None,
            keep_original_next_hop: true,
            restart_time: Duration::from_secs(120),
        };
        let c = peer_config(&d);
        assert_eq!((c.port, c.remote_as, c.rr_client), (1179, 65001, true));
        assert_eq!(c.next_hop, Some(NextHopMode::Unchanged));
    }
}
