//! The IPAM leak check on a timer: what IPAM holds that no WorkloadEndpoint or Node accounts
//! for is released once it has been seen for a grace period (so that an address a pod is being
//! set up with, whose endpoint is not written yet, is never taken for a leak).
//!
//! What is alive comes from the WorkloadEndpoints (their `ipamHandleID`) as [`Workloads`] gives
//! them: the stored objects in etcd mode, the endpoints derived from Pods (their
//! `margay.dev/ipamHandleID` annotation) in Kubernetes mode, where no WorkloadEndpoint is stored.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use margay_api::MargayNode;
use margay_datastore::{Datastore, Typed, Workloads};
use margay_ipam::{Ipam, LeakRelease, LeakTracker, Live};
use tracing::{info, warn};

/// What is alive: the handles of every WorkloadEndpoint, and the Margay Nodes (when there are
/// any; with none registered, no block is called orphaned for that alone).
pub async fn live(workloads: &Workloads, ds: &Arc<dyn Datastore>) -> anyhow::Result<Live> {
    let weps = workloads
        .list()
        .await
        .map_err(|e| anyhow::anyhow!("cannot list the workload endpoints: {e}"))?;
    let (nodes, _) = Typed::<MargayNode>::new(Arc::clone(ds))
        .list(None)
        .await
        .map_err(|e| anyhow::anyhow!("cannot list Nodes: {e}"))?;
    let nodes: HashSet<String> = nodes.into_iter().filter_map(|n| n.metadata.name).collect();
    Ok(Live {
        handles: weps
            .into_iter()
            .filter_map(|w| w.spec.ipam_handle_id)
            .collect(),
        nodes: (!nodes.is_empty()).then_some(nodes),
    })
}

/// One look: checks, and releases what has been a leak for at least the grace period.
pub async fn check_once(
    workloads: &Workloads,
    ds: &Arc<dyn Datastore>,
    ipam: &Ipam,
    tracker: &mut LeakTracker,
    now: Instant,
) -> anyhow::Result<LeakRelease> {
    let live = live(workloads, ds).await?;
    let report = ipam
        .check(&live, tracker, now)
        .await
        .map_err(|e| anyhow::anyhow!("IPAM check failed: {e}"))?;
    for p in &report.problems {
        warn!(problem = %p, "IPAM inconsistency; it needs a person (margayctl ipam check)");
    }
    if !report.suspected.is_empty() {
        info!(
            suspected = report.suspected.len(),
            "possible IPAM leaks; released if still there after the grace period"
        );
    }
    if report.confirmed.is_empty() {
        return Ok(LeakRelease::default());
    }
    ipam.release_leaks(&report)
        .await
        .map_err(|e| anyhow::anyhow!("releasing IPAM leaks failed: {e}"))
}

/// Runs the leak check every `interval`, confirming leaks over `grace`, until dropped.
pub async fn run(
    workloads: Workloads,
    ds: Arc<dyn Datastore>,
    ipam: Ipam,
    interval: Duration,
    grace: Duration,
) {
    let mut tracker = LeakTracker::new(grace);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = check_once(&workloads, &ds, &ipam, &mut tracker, Instant::now()).await {
            warn!(error = %e, "IPAM leak check failed; trying again at the next interval");
        }
    }
}
