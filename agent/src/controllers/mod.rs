//! The controller role (`margay-node --role controllers`, as Calico's kube-controllers): one
//! replica per cluster that keeps the datastore tidy and, in etcd mode, fed from Kubernetes.
//!
//! In both modes:
//! - **deleted nodes** ([`nodes`]): when a Margay `Node` is deleted (and in Kubernetes mode also
//!   when the core Kubernetes `Node` is), the node's WorkloadEndpoints and their addresses, its
//!   empty blocks and its affinities are released (`Ipam::release_node`);
//! - **IPAM leaks** ([`leaks`]): every `LEAK_CHECK_INTERVAL` (default 5m), `Ipam::check`, and what
//!   has been a leak for `LEAK_GRACE_PERIOD` (default 15m) is released (`Ipam::release_leaks`).
//!
//! In etcd mode also ([`sync`]): Namespaces, NetworkPolicies and each Pod's labels and named
//! ports (onto its WorkloadEndpoints) are copied from the Kubernetes API (in-cluster config, or
//! `KUBECONFIG`) into etcd, where the agents' policy reads them.
//!
//! Readiness (`/readiness` on the health port) waits for the node watches and, in etcd mode, for
//! the first full copy of each kind.

pub mod leaks;
pub mod nodes;
pub mod sync;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use margay_api::MargayNode;
use margay_api::k8s_openapi::api::core::v1::{Namespace, Node as KubeNode};
use margay_api::k8s_openapi::api::networking::v1::NetworkPolicy;
use margay_datastore::{Backoff, Datastore, Event, Kubernetes, KubernetesConfig, Typed, Workloads};
use margay_ipam::Ipam;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::config::{AgentConfig, DatastoreType};
use crate::health::{Metrics, Readiness};
use nodes::{NodeEvent, NodeState};

/// The controller's timers, from the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// How often the leak check runs (`LEAK_CHECK_INTERVAL`).
    pub leak_check_interval: Duration,
    /// How long a leak is seen before it is released (`LEAK_GRACE_PERIOD`).
    pub leak_grace_period: Duration,
    /// How often everything is reconciled again without an event (`RESYNC_INTERVAL`).
    pub resync_interval: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            leak_check_interval: Duration::from_secs(300),
            leak_grace_period: Duration::from_secs(900),
            resync_interval: Duration::from_secs(300),
        }
    }
}

impl Timers {
    /// Reads `LEAK_CHECK_INTERVAL`, `LEAK_GRACE_PERIOD` and `RESYNC_INTERVAL` (Go-style
    /// durations: `30s`, `5m`, `1h30m`) over the defaults; the error names the variable.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let mut t = Timers::default();
        for (var, field) in [
            ("LEAK_CHECK_INTERVAL", &mut t.leak_check_interval),
            ("LEAK_GRACE_PERIOD", &mut t.leak_grace_period),
            ("RESYNC_INTERVAL", &mut t.resync_interval),
        ] {
            if let Some(v) = env(var) {
                let d = margay_api::duration::parse_duration(v.trim()).map_err(|e| {
                    anyhow::anyhow!("environment variable {var}={v:?}: {e}; use e.g. 30s or 5m")
                })?;
                if d.is_zero() && var != "LEAK_GRACE_PERIOD" {
                    anyhow::bail!("environment variable {var}={v:?}: must be more than 0");
                }
                *field = d;
            }
        }
        Ok(t)
    }
}

/// The Kubernetes API the controller reads: the datastore itself in Kubernetes mode, otherwise
/// a connection of its own (in-cluster, or `datastore.kubeconfig` / `KUBECONFIG`).
async fn kubernetes(config: &AgentConfig) -> anyhow::Result<Kubernetes> {
    Kubernetes::connect(&KubernetesConfig {
        kubeconfig: config.datastore.kubeconfig.clone(),
        ..Default::default()
    })
    .await
    .context("cannot connect to the Kubernetes API")
}

/// Runs the controllers until `shutdown` completes.
pub async fn run_controllers(
    config: AgentConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let timers = Timers::from_env(|k| std::env::var(k).ok())?;
    let ds = crate::run::connect(&config).await?;
    let kube = kubernetes(&config).await?;
    let readiness = Readiness::default();
    let metrics = Arc::new(Metrics::new());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    crate::health::serve(&config, &readiness, &metrics, stop_rx).await?;
    let mut tasks = start(ds, kube, config.datastore.kind, timers, readiness);
    info!(mode = ?config.datastore.kind, ?timers, "controllers started");
    shutdown.await;
    info!("stopping the controllers");
    let _ = stop_tx.send(true);
    tasks.abort_all();
    Ok(())
}

/// Starts every controller of `mode` on `ds` (Margay's datastore) and `kube` (the Kubernetes
/// API); they run until the returned set is dropped or aborted.
pub fn start(
    ds: Arc<dyn Datastore>,
    kube: Kubernetes,
    mode: DatastoreType,
    timers: Timers,
    readiness: Readiness,
) -> tokio::task::JoinSet<()> {
    let mut tasks = tokio::task::JoinSet::new();
    let ipam = Ipam::new(Arc::clone(&ds));
    let kubernetes_mode = mode == DatastoreType::Kubernetes;
    // Kubernetes mode stores no WorkloadEndpoints: the leak check and the node clean-up see the
    // endpoints derived from Pods.
    let workloads =
        Workloads::for_datastore(Arc::clone(&ds), kubernetes_mode.then(|| kube.clone()));
    readiness.declare("nodes", "node watches have not listed yet");
    tasks.spawn(follow_nodes(
        workloads.clone(),
        Arc::clone(&ds),
        kubernetes_mode.then(|| kube.client()),
        ipam.clone(),
        timers.resync_interval,
        readiness.clone(),
    ));
    tasks.spawn(leaks::run(
        workloads,
        Arc::clone(&ds),
        ipam,
        timers.leak_check_interval,
        timers.leak_grace_period,
    ));
    if !kubernetes_mode {
        let source: Arc<dyn Datastore> = Arc::new(kube);
        for name in ["namespaces", "networkpolicies", "pods"] {
            readiness.declare(name, "not copied into etcd yet");
        }
        tasks.spawn(sync::mirror::<Namespace>(
            Arc::clone(&source),
            Arc::clone(&ds),
            sync::clean_namespace,
            timers.resync_interval,
            readiness.clone(),
            "namespaces",
        ));
        tasks.spawn(sync::mirror::<NetworkPolicy>(
            Arc::clone(&source),
            Arc::clone(&ds),
            sync::clean_policy,
            timers.resync_interval,
            readiness.clone(),
            "networkpolicies",
        ));
        tasks.spawn(sync::pod_endpoints(
            source,
            ds,
            timers.resync_interval,
            readiness,
            "pods",
        ));
    }
    tasks
}

/// Follows Margay Nodes (and core Nodes when `kube` is given) and cleans up the deleted ones.
async fn follow_nodes(
    workloads: Workloads,
    ds: Arc<dyn Datastore>,
    kube: Option<kube::Client>,
    ipam: Ipam,
    resync: Duration,
    readiness: Readiness,
) {
    let (tx, mut rx) = mpsc::channel::<NodeEvent>(1024);
    let mut state = NodeState::new(kube.is_some());
    let margay_tx = tx.clone();
    let margay_ds = Arc::clone(&ds);
    let margay = tokio::spawn(async move {
        let mut watch = Typed::<MargayNode>::new(margay_ds).watch(Backoff::default());
        while let Some(ev) = watch.next().await {
            let ev = match ev {
                Ok(Event::Added(n) | Event::Modified(n)) => {
                    NodeEvent::MargayUp(n.metadata.name.unwrap_or_default())
                }
                Ok(Event::Deleted(k)) => NodeEvent::MargayGone(k.name),
                Ok(Event::Synced) => NodeEvent::MargaySynced,
                Err(e) => {
                    warn!(error = %e, "Node watch");
                    continue;
                }
            };
            if margay_tx.send(ev).await.is_err() {
                return;
            }
        }
    });
    let core = kube.map(|client| tokio::spawn(follow_core_nodes(client, tx)));
    let _guard = AbortOnDrop(margay, core);
    let mut tick = tokio::time::interval(resync);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => state.apply(ev),
                None => return,
            },
            _ = tick.tick() => {}
        }
        if state.margay_synced && state.kube_synced {
            readiness.met("nodes");
            nodes::clean_up_gone(&workloads, &ds, &ipam, &mut state).await;
        }
    }
}

struct AbortOnDrop(
    tokio::task::JoinHandle<()>,
    Option<tokio::task::JoinHandle<()>>,
);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
        if let Some(h) = &self.1 {
            h.abort();
        }
    }
}

/// Core Kubernetes Nodes, with kube-runtime's watcher (list, then watch; relists on errors).
async fn follow_core_nodes(client: kube::Client, tx: mpsc::Sender<NodeEvent>) {
    use kube::runtime::watcher;
    let api: kube::Api<KubeNode> = kube::Api::all(client);
    let mut stream = watcher::watcher(api, watcher::Config::default()).boxed();
    let mut listing: BTreeSet<String> = BTreeSet::new();
    let mut backoff = Duration::from_millis(200);
    while let Some(ev) = stream.next().await {
        let out = match ev {
            Ok(watcher::Event::Apply(n)) => NodeEvent::KubeUp(n.metadata.name.unwrap_or_default()),
            Ok(watcher::Event::Delete(n)) => {
                NodeEvent::KubeGone(n.metadata.name.unwrap_or_default())
            }
            Ok(watcher::Event::Init) => {
                listing.clear();
                continue;
            }
            Ok(watcher::Event::InitApply(n)) => {
                listing.insert(n.metadata.name.unwrap_or_default());
                continue;
            }
            Ok(watcher::Event::InitDone) => NodeEvent::KubeListed(std::mem::take(&mut listing)),
            Err(e) => {
                warn!(error = %e, "Kubernetes Node watch; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        backoff = Duration::from_millis(200);
        if tx.send(out).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_come_from_the_environment_and_errors_name_the_variable() {
        let t = Timers::from_env(|k| match k {
            "LEAK_CHECK_INTERVAL" => Some("30s".into()),
            "LEAK_GRACE_PERIOD" => Some("1m".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(t.leak_check_interval, Duration::from_secs(30));
        assert_eq!(t.leak_grace_period, Duration::from_secs(60));
        assert_eq!(t.resync_interval, Timers::default().resync_interval);
        let err = Timers::from_env(|k| (k == "LEAK_GRACE_PERIOD").then(|| "soon".into()))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("environment variable LEAK_GRACE_PERIOD=\"soon\""),
            "{err}"
        );
        let err = Timers::from_env(|k| (k == "RESYNC_INTERVAL").then(|| "0s".into()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than 0"), "{err}");
    }
}
