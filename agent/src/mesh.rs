//! The node's BGP speaker: the node-to-node full mesh from the `Node` resources, the node's
//! affine blocks exported, routes learned from peers installed in the kernel.
//!
//! Each agent publishes its BGP address in its own `Node` (`spec.bgp.ipv4Address`); every agent
//! watches all Nodes and keeps one iBGP session to each other node while
//! `BGPConfiguration default` leaves `nodeToNodeMeshEnabled` on (as Calico). Learned routes go
//! to the route driver as `BLOCK via NODE`; a learned route for one of our own blocks is never
//! installed (our blackhole and pod routes own those).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use anyhow::Context;
use futures::StreamExt;
use ipnet::IpNet;
use margay_api::node::NodeBGPSpec;
use margay_api::{BGPConfiguration, MargayNode, NodeSpec};
use margay_bgp::rib::RouteChange;
use margay_bgp::{PeerConfig, Speaker, SpeakerConfig};
use margay_datastore::{Backoff, Datastore, Event, Typed};
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::dataplane::{RouteDriver, RouteTarget};

/// The cluster-wide BGP settings (`BGPConfiguration default`, or the defaults).
pub async fn cluster_settings(ds: &Arc<dyn Datastore>) -> anyhow::Result<(u32, bool, u16)> {
    match Typed::<BGPConfiguration>::new(Arc::clone(ds))
        .get(None, "default")
        .await
    {
        Ok(c) => Ok((
            c.spec.as_number(),
            c.spec.node_to_node_mesh_enabled(),
            c.spec.listen_port(),
        )),
        Err(margay_datastore::Error::NotFound(_)) => Ok((64512, true, 179)),
        Err(e) => Err(e).context("cannot read BGPConfiguration default"),
    }
}

/// Creates or updates this node's `Node` with its BGP address (`ADDR/PREFIX`, as Calico).
pub async fn register_node(ds: &Arc<dyn Datastore>, node: &str, addr: IpNet) -> anyhow::Result<()> {
    let nodes = Typed::<MargayNode>::new(Arc::clone(ds));
    let want = addr.to_string();
    let spec = NodeSpec {
        bgp: Some(NodeBGPSpec {
            ipv4_address: Some(want.clone()),
            ..Default::default()
        }),
    };
    match nodes.create(&MargayNode::new(node, spec)).await {
        Ok(_) => Ok(()),
        Err(margay_datastore::Error::AlreadyExists(_)) => {
            nodes
                .update_with(None, node, 10, |n| {
                    let bgp = n.spec.bgp.get_or_insert_with(Default::default);
                    let changed = bgp.ipv4_address.as_deref() != Some(want.as_str());
                    bgp.ipv4_address = Some(want.clone());
                    Ok(changed)
                })
                .await
                .with_context(|| format!("cannot update Node {node}"))?;
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("cannot create Node {node}")),
    }
}

fn node_addr(n: &MargayNode) -> Option<IpAddr> {
    let a = n.spec.bgp.as_ref()?.ipv4_address.as_deref()?;
    a.split('/').next()?.parse().ok()
}

/// Starts the speaker and the tasks that keep its peers and the kernel's learned routes current.
pub async fn start(
    ds: Arc<dyn Datastore>,
    node: String,
    addr: Ipv4Addr,
    routes: Arc<Mutex<RouteDriver>>,
    own_blocks: Arc<Mutex<BTreeSet<IpNet>>>,
    learned: Arc<Mutex<BTreeSet<IpNet>>>,
) -> anyhow::Result<Speaker> {
    let (asn, mesh, port) = cluster_settings(&ds).await?;
    let speaker = Speaker::start(SpeakerConfig {
        local_as: asn,
        router_id: addr,
        listen: Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)),
        cluster_id: None,
    })
    .await
    .with_context(|| format!("cannot start the BGP speaker on port {port}"))?;
    info!(%addr, asn, mesh, port, "BGP speaker started");

    let s = speaker.clone();
    let me = IpAddr::V4(addr);
    tokio::spawn(async move {
        let mut peers: BTreeMap<String, IpAddr> = BTreeMap::new();
        let mut watch = Typed::<MargayNode>::new(ds).watch(Backoff::default());
        while let Some(ev) = watch.next().await {
            let (name, target) = match ev {
                Ok(Event::Added(n) | Event::Modified(n)) => {
                    let name = n.metadata.name.clone().unwrap_or_default();
                    let target = if mesh && name != node {
                        node_addr(&n).filter(|a| *a != me)
                    } else {
                        None
                    };
                    (name, target)
                }
                Ok(Event::Deleted(key)) => (key.name, None),
                Ok(Event::Synced) => continue,
                Err(e) => {
                    warn!(error = %e, "node watch");
                    continue;
                }
            };
            let old = peers.get(&name).copied();
            if old == target {
                continue;
            }
            if let Some(a) = old {
                peers.remove(&name);
                if let Err(e) = s.remove_peer(a).await {
                    warn!(peer = %a, error = %e, "cannot remove peer");
                }
            }
            if let Some(a) = target {
                peers.insert(name.clone(), a);
                let mut cfg = PeerConfig::new(a, asn);
                cfg.port = port;
                match s.add_peer(cfg).await {
                    Ok(()) => info!(peer = %a, node = %name, "mesh peer added"),
                    Err(e) => warn!(peer = %a, error = %e, "cannot add peer"),
                }
            }
        }
    });

    let mut changes = speaker
        .subscribe()
        .context("cannot subscribe to best paths")?;
    tokio::spawn(async move {
        while let Some(batch) = changes.recv().await {
            let own = own_blocks.lock().await.clone();
            let mut learned = learned.lock().await;
            let mut r = routes.lock().await;
            for change in batch {
                match change {
                    RouteChange::Add { prefix, next_hop }
                    | RouteChange::Replace { prefix, next_hop } => {
                        let p = IpNet::from(prefix);
                        if !own.contains(&p) && next_hop != me {
                            r.set(p, RouteTarget::Via(next_hop));
                            learned.insert(p);
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
            if let Err(e) = r.apply().await {
                warn!(error = %e, "cannot install learned routes");
            }
        }
    });
    Ok(speaker)
}
