//! The policy task: three datastore watches feed the compiler; one loop programs the dataplane.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use margay_api::agentconfig::IptablesBackend;
use margay_api::k8s::{Namespace, NetworkPolicy};
use margay_api::workload::{LABEL_NAMESPACE, LABEL_ORCHESTRATOR, LABEL_SERVICE_ACCOUNT};
use margay_api::{AgentSettings, IPPool, WorkloadEndpoint};
use margay_datastore::{Backoff, Datastore, Event, Typed, Workloads};
use margay_policy::{Compiler, Endpoint, NamedPort, PolicyKey};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{Instrument, info, info_span, warn};

use super::applied::{AppliedIndex, ObjectId};
use super::dataplane::PolicyDataplane;
use crate::dataplane::iptables::{Mode, detect_mode};
use crate::health::Readiness;
use crate::settings::Settings;

/// How long to wait before retrying a failed programming.
const RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct Shared {
    compiler: Compiler,
    revisions: HashMap<ObjectId, String>,
    /// IP pools by name, for natOutgoing.
    pools: BTreeMap<String, IPPool>,
    /// The pools changed since natOutgoing was last loaded.
    nat_dirty: bool,
    synced: [bool; 4],
}

type SharedRef = Arc<Mutex<Shared>>;

fn lock(s: &SharedRef) -> std::sync::MutexGuard<'_, Shared> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// A WorkloadEndpoint as the compiler sees it; `node` decides whether it is local. The labels
/// the agent adds for itself (`margay.dev/…`) are not the pod's and are left out.
pub fn endpoint_of(w: &WorkloadEndpoint, node: &str) -> Endpoint {
    let mut labels: BTreeMap<String, String> = w.metadata.labels.clone().unwrap_or_default();
    for k in [LABEL_NAMESPACE, LABEL_ORCHESTRATOR, LABEL_SERVICE_ACCOUNT] {
        labels.remove(k);
    }
    Endpoint {
        namespace: w.metadata.namespace.clone().unwrap_or_default(),
        labels,
        ips: w.ips(),
        ports: w
            .spec
            .ports
            .iter()
            .map(|p| NamedPort {
                name: p.name.clone(),
                protocol: p.protocol,
                port: p.port,
            })
            .collect(),
        iface: w.spec.interface_name.clone(),
        local: w.spec.node == node,
    }
}

fn id(kind: &str, ns: Option<&str>, name: &str) -> ObjectId {
    (
        kind.to_owned(),
        ns.unwrap_or_default().to_owned(),
        name.to_owned(),
    )
}

/// Starts the policy task for `node`; it runs until aborted (its watches with it). The resync
/// interval follows `settings` live (the shorter of `iptablesRefreshInterval` and
/// `ipsetsRefreshInterval`); the iptables backend is chosen once, at start.
pub fn spawn(
    ds: Arc<dyn Datastore>,
    workloads: Workloads,
    node: String,
    readiness: Readiness,
    applied: AppliedIndex,
    settings: Settings,
) -> tokio::task::JoinHandle<()> {
    readiness.declare(
        "policy",
        "waiting for the initial sync of namespaces, network policies and workload endpoints",
    );
    tokio::spawn(
        run(ds, workloads, node, readiness, applied, settings).instrument(info_span!("policy")),
    )
}

fn interval(s: &AgentSettings) -> Duration {
    s.iptables_refresh_interval
        .min(s.ipsets_refresh_interval)
        .max(Duration::from_millis(100))
}

async fn run(
    ds: Arc<dyn Datastore>,
    workloads: Workloads,
    node: String,
    readiness: Readiness,
    applied: AppliedIndex,
    mut settings: Settings,
) {
    let backend = settings.borrow().iptables_backend;
    let mode = match backend {
        IptablesBackend::Nft => Mode::Nft,
        IptablesBackend::Legacy => Mode::Legacy,
        IptablesBackend::Auto => tokio::task::spawn_blocking(detect_mode)
            .await
            .unwrap_or(Mode::Nft),
    };
    let mut every = interval(&settings.borrow());
    info!(?mode, resync = ?every, "policy starting");

    let shared: SharedRef = Arc::default();
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let mut watches = JoinSet::new();
    watches.spawn(follow::<Namespace>(
        Arc::clone(&ds),
        shared.clone(),
        tx.clone(),
        0,
        {
            |s: &mut Shared, ev| match ev {
                Event::Added(n) | Event::Modified(n) => {
                    let name = n.metadata.name.clone().unwrap_or_default();
                    s.compiler
                        .upsert_namespace(&name, n.metadata.labels.clone().unwrap_or_default());
                    s.revisions.insert(
                        id("namespaces", None, &name),
                        n.metadata.resource_version.clone().unwrap_or_default(),
                    );
                }
                Event::Deleted(k) => {
                    s.compiler.remove_namespace(&k.name);
                    s.revisions.remove(&id("namespaces", None, &k.name));
                }
                Event::Synced => s.synced[0] = true,
            }
        },
    ));
    watches.spawn(follow::<NetworkPolicy>(Arc::clone(&ds), shared.clone(), tx.clone(), 1, {
        |s: &mut Shared, ev| match ev {
            Event::Added(p) | Event::Modified(p) => {
                let ns = p.metadata.namespace.clone().unwrap_or_default();
                let name = p.metadata.name.clone().unwrap_or_default();
                let key = PolicyKey(ns.clone(), name.clone());
                s.compiler
                    .upsert_policy(key.clone(), &p.spec.clone().unwrap_or_default());
                for (k, w) in s.compiler.warnings().into_iter().filter(|(k, _)| *k == key) {
                    warn!(policy = %format!("{}/{}", k.0, k.1), problem = %w, "part of a policy cannot be enforced; it allows nothing");
                }
                s.revisions.insert(
                    id("networkpolicies", Some(&ns), &name),
                    p.metadata.resource_version.clone().unwrap_or_default(),
                );
            }
            Event::Deleted(k) => {
                let ns = k.namespace.clone().unwrap_or_default();
                s.compiler.remove_policy(&PolicyKey(ns.clone(), k.name.clone()));
                s.revisions
                    .remove(&id("networkpolicies", Some(&ns), &k.name));
            }
            Event::Synced => s.synced[1] = true,
        }
    }));
    let me = node.clone();
    // Stored WorkloadEndpoints (etcd) or endpoints derived from every Pod (Kubernetes mode).
    watches.spawn(follow_stream(
        workloads.watch(Backoff::default()),
        shared.clone(),
        tx.clone(),
        2,
        {
            move |s: &mut Shared, ev| match ev {
                Event::Added(w) | Event::Modified(w) => {
                    let ns = w.metadata.namespace.clone().unwrap_or_default();
                    let name = w.metadata.name.clone().unwrap_or_default();
                    s.compiler
                        .upsert_endpoint((ns.clone(), name.clone()), endpoint_of(&w, &me));
                    s.revisions.insert(
                        id("workloadendpoints", Some(&ns), &name),
                        w.metadata.resource_version.clone().unwrap_or_default(),
                    );
                }
                Event::Deleted(k) => {
                    let ns = k.namespace.clone().unwrap_or_default();
                    s.compiler.remove_endpoint(&(ns.clone(), k.name.clone()));
                    s.revisions
                        .remove(&id("workloadendpoints", Some(&ns), &k.name));
                }
                Event::Synced => s.synced[2] = true,
            }
        },
    ));

    watches.spawn(follow::<IPPool>(
        Arc::clone(&ds),
        shared.clone(),
        tx.clone(),
        3,
        |s: &mut Shared, ev| {
            match ev {
                Event::Added(p) | Event::Modified(p) => {
                    s.pools
                        .insert(p.metadata.name.clone().unwrap_or_default(), p);
                }
                Event::Deleted(k) => {
                    s.pools.remove(&k.name);
                }
                Event::Synced => s.synced[3] = true,
            }
            s.nat_dirty = true;
        },
    ));

    let mut dp = PolicyDataplane::new(mode);
    let mut first = true;
    let mut next_resync = tokio::time::Instant::now() + every;
    let mut failures: u32 = 0;
    loop {
        let resync = tokio::select! {
            got = rx.recv() => {
                if got.is_none() {
                    return;
                }
                false
            }
            _ = tokio::time::sleep_until(next_resync) => true,
            changed = settings.changed() => {
                if changed.is_ok() {
                    every = interval(&settings.borrow());
                    next_resync = tokio::time::Instant::now() + every;
                }
                continue;
            }
        };
        if resync {
            next_resync = tokio::time::Instant::now() + every;
        }
        let revisions = {
            let mut s = lock(&shared);
            if !s.synced.iter().all(|x| *x) {
                continue;
            }
            let dirty = s.compiler.take_dirty();
            if first {
                dp.load_all(&s.compiler);
            } else {
                dp.load_dirty(&s.compiler, &dirty);
            }
            if first || s.nat_dirty {
                let pools: Vec<IPPool> = s.pools.values().cloned().collect();
                dp.set_nat(&super::nat::nat_state(&pools));
                s.nat_dirty = false;
            }
            s.revisions.clone()
        };
        let t = Instant::now();
        let result = if first || resync {
            dp.resync().await
        } else {
            dp.program().await
        };
        match result {
            Ok(r) => {
                failures = 0;
                applied.publish(revisions);
                if first {
                    info!(report = ?r, took = ?t.elapsed(), "network policy programmed");
                    readiness.met("policy");
                    first = false;
                } else if resync && r.wrote() {
                    info!(report = ?r, "repaired policy chains and sets changed behind our back");
                }
            }
            Err(e) => {
                failures += 1;
                let wait = RETRY * 2u32.pow(failures.min(5) - 1);
                warn!(error = %e, retry_in = ?wait, "cannot program network policy");
                let tx = tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    let _ = tx.try_send(());
                });
            }
        }
    }
}

/// Follows one resource type: every event goes through `apply` under the lock, then a
/// programming is requested (a full channel means one is pending already).
async fn follow<T>(
    ds: Arc<dyn Datastore>,
    shared: SharedRef,
    tx: mpsc::Sender<()>,
    index: usize,
    apply: impl Fn(&mut Shared, Event<T>) + Send + 'static,
) where
    T: margay_datastore::typed::Object,
{
    follow_stream(
        Typed::<T>::new(ds).watch(Backoff::default()),
        shared,
        tx,
        index,
        apply,
    )
    .await;
}

/// [`follow`] over any stream of events.
async fn follow_stream<T>(
    mut watch: futures::stream::BoxStream<'static, margay_datastore::Result<Event<T>>>,
    shared: SharedRef,
    tx: mpsc::Sender<()>,
    index: usize,
    apply: impl Fn(&mut Shared, Event<T>) + Send + 'static,
) {
    while let Some(ev) = watch.next().await {
        match ev {
            Ok(ev) => {
                apply(&mut lock(&shared), ev);
                let _ = tx.try_send(());
            }
            Err(e) => warn!(error = %e, watch = index, "policy watch"),
        }
    }
}
