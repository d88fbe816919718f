//! The dedicated route-reflector role (`margay-node --role route-reflector` with a datastore):
//! only the BGP speaker, peered from the datastore like every node, reflecting for its clients.
//!
//! It registers its `Node` with its address, a route-reflector cluster id
//! (`ROUTE_REFLECTOR_CLUSTER_ID`, default `244.0.0.1`) and the label `route-reflector=true`, so
//! that BGPPeers such as `peerSelector: has(route-reflector)` find it. It installs no routes and
//! runs no IPAM, policy or local API; it publishes its NodeStatus and serves health and metrics.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnet::IpNet;
use tracing::info;

use crate::config::AgentConfig;
use crate::health::{Metrics, Readiness};
use crate::mesh::{BgpParams, Registration};

/// The cluster id a dedicated reflector declares when none is configured.
pub const DEFAULT_CLUSTER_ID: Ipv4Addr = Ipv4Addr::new(244, 0, 0, 1);

/// The label a dedicated reflector puts on its Node.
pub const LABEL: &str = "route-reflector";

/// Runs the reflector until `shutdown` completes.
pub async fn run_reflector(
    config: AgentConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let node = config.node_name_or_hostname()?;
    let readiness = Readiness::default();
    readiness.declare("bgp", "BGP sessions not checked yet");
    let metrics = Arc::new(Metrics::new());
    let ds = crate::run::connect(&config).await?;
    let addr = crate::run::node_address(&config)?;
    let cluster_id = config
        .route_reflector_cluster_id
        .unwrap_or(DEFAULT_CLUSTER_ID);
    let addr6 = crate::run::node_address6(&config)?;
    let reg = Registration {
        ipv4: Some(IpNet::V4(addr)),
        ipv6: addr6.map(IpNet::V6),
        cluster_id: Some(cluster_id),
        labels: BTreeMap::from([(LABEL.to_string(), "true".to_string())]),
    };
    crate::mesh::register_node(&ds, &node, &reg).await?;
    let bgp = crate::mesh::start(
        Arc::clone(&ds),
        BgpParams {
            node: node.clone(),
            addr: addr.addr(),
            addr6: addr6.map(|a| a.addr()),
            routes: None,
            own_blocks: Arc::new(tokio::sync::Mutex::new(BTreeSet::new())),
            learned: Arc::new(tokio::sync::Mutex::new(BTreeSet::new())),
            restarting: false,
        },
    )
    .await?;
    // A reflector originates nothing: End-of-RIB as soon as its sessions follow the datastore.
    bgp.end_of_rib_after(async {});
    let (speaker, kinds) = (bgp.speaker, bgp.kinds);
    info!(node = %node, %addr, %cluster_id, "route reflector started");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    crate::health::serve(&config, &readiness, &metrics, stop_rx).await?;
    let status = tokio::spawn(crate::status::run(
        Arc::clone(&ds),
        node,
        speaker.clone(),
        kinds,
        Arc::clone(&metrics),
        readiness,
        || None,
    ));
    shutdown.await;
    info!("stopping the route reflector");
    let _ = stop_tx.send(true);
    status.abort();
    // No Cease: clients keep the reflected routes while the reflector restarts.
    speaker.stop_for_restart().await;
    Ok(())
}
