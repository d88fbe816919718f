//! The node role: everything `margay-node` runs on a node, wired together.
//!
//! Start-up order matters for a restart that must not disturb forwarding: the drivers first
//! learn what should exist (the node's WorkloadEndpoints and affine blocks from the datastore),
//! and only then sweep the kernel of Margay routes that are not desired. Until that first
//! resync the agent reports not ready and sweeps nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use ipnet::IpNet;
use margay_api::ipam::AffinityState;
use margay_api::{BlockAffinity, WorkloadEndpoint};
use margay_datastore::{Backoff, Datastore, Event, Typed, Workloads};
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::config::{AgentConfig, DatastoreType};
use crate::dataplane::sysctls::{interface_sysctls, node_sysctls};
use crate::dataplane::{RouteDriver, RouteTarget, SysctlDriver};
use crate::endpoints::LocalAgent;
use crate::health::{Metrics, Readiness};
use crate::localapi::server;

/// How long routes learned over BGP by a previous run are kept after a restart while the
/// speaker learns them again; those not re-learned by then are removed.
const BGP_CONVERGENCE: Duration = Duration::from_secs(30);

/// Connects to the configured datastore.
pub async fn connect(config: &AgentConfig) -> anyhow::Result<Arc<dyn Datastore>> {
    Ok(connect_with_kube(config).await?.0)
}

/// Connects to the configured datastore; in Kubernetes mode also returns the API server's
/// client (for Pods' annotations and the core Node).
pub async fn connect_with_kube(
    config: &AgentConfig,
) -> anyhow::Result<(Arc<dyn Datastore>, Option<margay_datastore::Kubernetes>)> {
    let ds = &config.datastore;
    Ok(match ds.kind {
        DatastoreType::EtcdV3 => {
            let c = margay_datastore::EtcdConfig {
                endpoints: ds.etcd_endpoints.clone(),
                ca_file: ds.etcd_ca_file.clone(),
                cert_file: ds.etcd_cert_file.clone(),
                key_file: ds.etcd_key_file.clone(),
                ..Default::default()
            };
            let etcd = margay_datastore::Etcd::connect(&c)
                .await
                .context("cannot connect to etcd")?;
            (Arc::new(etcd), None)
        }
        DatastoreType::Kubernetes => {
            let c = margay_datastore::KubernetesConfig {
                kubeconfig: ds.kubeconfig.clone(),
                ..Default::default()
            };
            let kube = margay_datastore::Kubernetes::connect(&c)
                .await
                .context("cannot connect to the Kubernetes API")?;
            (Arc::new(kube.clone()), Some(kube))
        }
    })
}

/// The routes and sysctls of this node's existing endpoints, from the datastore (stored, or
/// derived from the Pods on this node).
async fn restore_endpoints(
    workloads: &Workloads,
    node: &str,
    routes: &mut RouteDriver,
    sysctls: &mut SysctlDriver,
) -> anyhow::Result<Vec<WorkloadEndpoint>> {
    let weps = workloads
        .list()
        .await
        .context("cannot list the workload endpoints")?;
    let weps: Vec<WorkloadEndpoint> = weps.into_iter().filter(|w| w.spec.node == node).collect();
    for w in &weps {
        let nets: Vec<IpNet> = w
            .spec
            .ip_networks
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect();
        let (v4, v6) = (
            nets.iter().any(|n| n.addr().is_ipv4()),
            nets.iter().any(|n| n.addr().is_ipv6()),
        );
        sysctls.set(interface_sysctls(&w.spec.interface_name, v4, v6));
        for net in nets {
            routes.set(net, RouteTarget::Device(w.spec.interface_name.clone()));
        }
    }
    Ok(weps)
}

/// When the dataplane was last known to be in sync with the desired state.
#[derive(Debug, Clone)]
struct LastSync(
    Arc<std::sync::Mutex<Option<margay_api::k8s_openapi::jiff::Timestamp>>>,
    tokio::sync::watch::Sender<bool>,
);

impl Default for LastSync {
    fn default() -> Self {
        Self(Arc::default(), tokio::sync::watch::channel(false).0)
    }
}

impl LastSync {
    fn mark(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(margay_api::k8s_openapi::jiff::Timestamp::now());
        self.1.send_replace(true);
    }

    /// Completes once the dataplane has been in sync once.
    fn first(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.1.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }
    fn get(&self) -> Option<margay_api::k8s_openapi::jiff::Timestamp> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Blackhole routes for the blocks affine to this node, kept up to date from the datastore; the
/// first complete view triggers the first resync (the sweep), then readiness.
#[allow(clippy::too_many_arguments)]
async fn follow_affinities(
    ds: Arc<dyn Datastore>,
    node: String,
    speaker: Option<margay_bgp::Speaker>,
    own_blocks: Arc<Mutex<BTreeSet<IpNet>>>,
    agent: Arc<LocalAgent>,
    routes: Arc<Mutex<RouteDriver>>,
    sysctls: Arc<Mutex<SysctlDriver>>,
    readiness: Readiness,
    metrics: Arc<Metrics>,
    last_sync: LastSync,
) {
    let mut blocks: BTreeMap<String, IpNet> = BTreeMap::new();
    let mut watch = Typed::<BlockAffinity>::new(ds).watch(Backoff::default());
    let mut synced = false;
    while let Some(ev) = watch.next().await {
        let mut changed = true;
        match ev {
            Ok(Event::Added(a) | Event::Modified(a)) => {
                let name = a.metadata.name.clone().unwrap_or_default();
                let ours = a.spec.node == node
                    && a.spec.state == AffinityState::Confirmed
                    && !a.spec.deleted;
                match (ours, a.spec.cidr.parse::<IpNet>()) {
                    (true, Ok(cidr)) => {
                        blocks.insert(name, cidr);
                    }
                    _ => changed = blocks.remove(&name).is_some(),
                }
            }
            Ok(Event::Deleted(key)) => changed = blocks.remove(&key.name).is_some(),
            Ok(Event::Synced) => synced = true,
            Err(e) => {
                warn!(error = %e, "block affinity watch");
                continue;
            }
        }
        if !synced || !changed {
            continue;
        }
        let now: BTreeSet<IpNet> = blocks.values().copied().collect();
        {
            let mut own = own_blocks.lock().await;
            if let Some(s) = &speaker {
                for gone in own.difference(&now) {
                    let _ = s.withdraw(*gone);
                }
                for new in now.difference(&own) {
                    let _ = s.originate(*new, None);
                }
            }
            *own = now;
        }
        agent.sync_exports().await;
        let mut r = routes.lock().await;
        let stale: Vec<IpNet> = r
            .desired()
            .iter()
            .filter(|(_, t)| **t == RouteTarget::Blackhole)
            .map(|(d, _)| *d)
            .collect();
        for d in stale {
            r.remove(&d);
        }
        for cidr in blocks.values() {
            r.set(*cidr, RouteTarget::Blackhole);
        }
        let t = std::time::Instant::now();
        let first = !readiness.is_met("dataplane");
        let result = if first {
            r.resync().await
        } else {
            r.apply().await
        };
        metrics
            .route_apply_seconds
            .observe(t.elapsed().as_secs_f64());
        match result {
            Ok(report) => {
                metrics.routes.set(r.desired().len() as i64);
                if first {
                    let failed = sysctls.lock().await.resync();
                    info!(
                        written = report.written,
                        removed = report.removed,
                        sysctl_failures = failed.len(),
                        "dataplane in sync"
                    );
                    readiness.met("datastore");
                    readiness.met("dataplane");
                    last_sync.mark();
                }
            }
            Err(e) => warn!(error = %e, "cannot program block routes"),
        }
    }
}

/// Runs the node role until `shutdown` completes. Kernel state is left in place on exit, so
/// pods keep forwarding while the agent restarts.
pub async fn run_node(
    config: AgentConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let node = config.node_name_or_hostname()?;
    let readiness = Readiness::default();
    let last_sync = LastSync::default();
    readiness.declare("datastore", "waiting for the initial sync");
    readiness.declare("dataplane", "waiting for the first resync");
    readiness.declare("bgp", "BGP sessions not checked yet");
    let metrics = Arc::new(Metrics::new());

    let (ds, kube) = connect_with_kube(&config).await?;
    let workloads = Workloads::for_datastore(Arc::clone(&ds), kube.clone());
    let mut routes = RouteDriver::new().context("cannot open netlink")?;
    let mut sysctls = SysctlDriver::new();
    sysctls.set(node_sysctls(true));
    let restored = restore_endpoints(&workloads, &node, &mut routes, &mut sysctls).await?;
    info!(node = %node, endpoints = restored.len(), datastore = %ds.describe(), "starting");
    let routes = Arc::new(Mutex::new(routes));
    let sysctls = Arc::new(Mutex::new(sysctls));

    let addr = node_address(&config)?;
    let addr6 = node_address6(&config)?;
    let registration = crate::mesh::Registration {
        ipv4: Some(IpNet::V4(addr)),
        ipv6: addr6.map(IpNet::V6),
        ..Default::default()
    };
    crate::mesh::register_node(&ds, &node, &registration).await?;
    let own_blocks: Arc<Mutex<BTreeSet<IpNet>>> = Arc::default();
    let learned: Arc<Mutex<BTreeSet<IpNet>>> = Arc::default();
    // Routes the previous run learned over BGP stay until the speaker has re-learned them.
    let adopted = routes
        .lock()
        .await
        .adopt(|t| matches!(t, RouteTarget::Via(_)))
        .await?;
    let restarting = !adopted.is_empty() || !restored.is_empty();
    if !adopted.is_empty() {
        info!(
            routes = adopted.len(),
            "keeping learned routes of the previous run while BGP converges"
        );
        let (routes, learned) = (Arc::clone(&routes), Arc::clone(&learned));
        tokio::spawn(async move {
            tokio::time::sleep(BGP_CONVERGENCE).await;
            let learned = learned.lock().await.clone();
            let mut r = routes.lock().await;
            for (dst, target) in adopted {
                if !learned.contains(&dst) && r.desired().get(&dst) == Some(&target) {
                    r.remove(&dst);
                }
            }
            if let Err(e) = r.apply().await {
                warn!(error = %e, "cannot remove routes not re-learned");
            }
        });
    }
    let bgp = crate::mesh::start(
        Arc::clone(&ds),
        crate::mesh::BgpParams {
            node: node.clone(),
            addr: addr.addr(),
            addr6: addr6.map(|a| a.addr()),
            routes: Some(Arc::clone(&routes)),
            own_blocks: Arc::clone(&own_blocks),
            learned,
            restarting,
        },
    )
    .await?;
    // End-of-RIB once our blocks and borrowed /32s are announced (the first dataplane sync).
    bgp.end_of_rib_after(last_sync.first());
    let (speaker, kinds) = (bgp.speaker, bgp.kinds);

    let applied = crate::policy::AppliedIndex::default();
    let ipam = margay_ipam::Ipam::new(Arc::clone(&ds));
    let agent = Arc::new(
        LocalAgent::new(
            &node,
            ipam.node(&node, BTreeMap::new()),
            workloads.clone(),
            Arc::clone(&routes),
            Arc::clone(&sysctls),
            readiness.clone(),
        )
        .with_exports(speaker.clone(), Arc::clone(&own_blocks))
        .with_applied(applied.clone()),
    );
    agent.restore(&restored).await;
    let listener = server::bind(&config.socket)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let api = tokio::spawn(server::serve(
        listener,
        Arc::clone(&agent) as Arc<dyn crate::localapi::Handler>,
        stopped(stop_rx.clone()),
    ));

    crate::health::serve(&config, &readiness, &metrics, stop_rx.clone()).await?;
    let watcher = tokio::spawn(follow_affinities(
        Arc::clone(&ds),
        node.clone(),
        Some(speaker.clone()),
        own_blocks,
        Arc::clone(&agent),
        Arc::clone(&routes),
        Arc::clone(&sysctls),
        readiness.clone(),
        Arc::clone(&metrics),
        last_sync.clone(),
    ));
    let status = {
        let last_sync = last_sync.clone();
        tokio::spawn(crate::status::run(
            Arc::clone(&ds),
            node.clone(),
            speaker.clone(),
            kinds,
            Arc::clone(&metrics),
            readiness.clone(),
            move || last_sync.get(),
        ))
    };
    let settings = crate::settings::follow(&ds, &node).await;
    let policy = crate::policy::spawn(
        Arc::clone(&ds),
        workloads,
        node.clone(),
        readiness.clone(),
        applied,
        settings.clone(),
    );
    let resync = tokio::spawn(refresh_routes(
        Arc::clone(&routes),
        Arc::clone(&sysctls),
        readiness.clone(),
        last_sync.clone(),
        Arc::clone(&metrics),
        settings,
    ));
    // Kubernetes mode: the core Node's NetworkUnavailable=False once its routes are up.
    let network_up = kube.map(|k| {
        tokio::spawn(crate::kubenode::announce_network_up(
            k.client(),
            node.clone(),
            last_sync.first(),
        ))
    });
    shutdown.await;
    info!("stopping; kernel routes stay in place");
    let _ = stop_tx.send(true);
    if let Some(t) = network_up {
        t.abort();
    }
    watcher.abort();
    policy.abort();
    resync.abort();
    status.abort();
    let _ = api.await;
    // No Cease: peers keep our routes for the restart time (graceful restart), so pods stay
    // reachable while the next agent starts.
    speaker.stop_for_restart().await;
    let _ = std::fs::remove_file(&config.socket);
    Ok(())
}

/// Re-reads the routes and sysctls the agent owns every `routeRefreshInterval` (live from
/// AgentConfiguration) and repairs what changed behind its back.
async fn refresh_routes(
    routes: Arc<Mutex<RouteDriver>>,
    sysctls: Arc<Mutex<SysctlDriver>>,
    readiness: Readiness,
    last_sync: LastSync,
    metrics: Arc<Metrics>,
    mut settings: crate::settings::Settings,
) {
    loop {
        let period = settings.borrow().route_refresh_interval;
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            // A new interval applies at once (the sleep restarts with it).
            changed = settings.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        }
        // Never sweep before the first complete view of the datastore.
        if !readiness.is_met("dataplane") {
            continue;
        }
        match routes.lock().await.resync().await {
            Ok(r) => {
                if r.written + r.removed > 0 {
                    info!(written = r.written, removed = r.removed, "repaired routes");
                }
                metrics.resynced("routes", r.written + r.removed);
                if r.failed.is_empty() {
                    last_sync.mark();
                }
            }
            Err(e) => warn!(error = %e, "route resync failed"),
        }
        let (repaired, _) = sysctls.lock().await.resync_counted();
        metrics.resynced("sysctls", repaired);
    }
}

/// The node's IPv6 BGP address: configured (`ip6`), detected, or none.
pub(crate) fn node_address6(config: &AgentConfig) -> anyhow::Result<Option<ipnet::Ipv6Net>> {
    match config.ip6.as_deref() {
        None | Some("none" | "") => Ok(None),
        Some("autodetect") => {
            let method: crate::autodetect::Method = config.ip6_autodetection_method.parse()?;
            match crate::autodetect::detect(&method, true, &config.ip6_autodetection_method)? {
                IpNet::V6(n) => Ok(Some(n)),
                IpNet::V4(n) => anyhow::bail!("detected {n}, an IPv4 address, for ip6"),
            }
        }
        Some(ip) => Ok(Some(ip.parse::<ipnet::Ipv6Net>().or_else(|_| {
            ip.parse::<std::net::Ipv6Addr>().map(ipnet::Ipv6Net::from)
        })?)),
    }
}

/// The node's BGP address: configured (`ip`), or detected in the node's namespace.
pub(crate) fn node_address(config: &AgentConfig) -> anyhow::Result<ipnet::Ipv4Net> {
    match config.ip.as_deref().filter(|ip| *ip != "autodetect") {
        Some(ip) => Ok(ip
            .parse::<ipnet::Ipv4Net>()
            .or_else(|_| ip.parse::<std::net::Ipv4Addr>().map(ipnet::Ipv4Net::from))?),
        None => {
            let method: crate::autodetect::Method = config.ip_autodetection_method.parse()?;
            match crate::autodetect::detect(&method, false, &config.ip_autodetection_method)? {
                IpNet::V4(n) => Ok(n),
                IpNet::V6(n) => {
                    anyhow::bail!("detected {n}, an IPv6 address; the BGP router id needs IPv4")
                }
            }
        }
    }
}
