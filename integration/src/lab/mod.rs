//! `margay-lab`: a multi-node Margay cluster on one Linux host, in network namespaces.
//!
//! ```text
//!  mgyl-ID-br  (bridge br0, the 198.18.0.0/24 underlay)
//!    ├─ mgyl-ID-infra   198.18.0.254   etcd or the test API server ── mgyl-ID-internet 198.19.0.1
//!    ├─ mgyl-ID-rr-N    198.18.0.(1+N) margay-node --role route-reflector (--route-reflectors)
//!    ├─ mgyl-ID-tor     198.18.0.1     BIRD, FRR or GoBGP, eBGP AS 65001 (--external-router)
//!    ├─ mgyl-ID-node-1  198.18.0.11    margay-node ── mgy… veths ── mgyl-ID-pod-N (pod server)
//!    └─ mgyl-ID-node-2  198.18.0.12    margay-node ── …
//! ```
//!
//! [`up::up`] builds it, a [`supervisor`] process owns its daemons, [`state`] records what was
//! made (in `$MARGAY_LAB_DIR`, default `/run/margay-lab`) and [`up::down`] removes it all, also
//! after the supervisor died. Pods are wired by the real `margay-cni`, invoked as a CNI runtime
//! does. In etcd mode the lab also stands in for Calico's kube-controllers: it writes Namespaces
//! and the pods' labels and named ports on their WorkloadEndpoints ([`objects`]); with the
//! Kubernetes datastore it writes Pod objects instead, from which the agents derive endpoints.

pub mod bins;
pub mod ds;
pub mod objects;
pub mod pods;
pub mod probe;
pub mod router;
pub mod state;
pub mod status;
pub mod supervisor;
pub mod sync;
pub mod up;

use std::time::Duration;

/// Polls `check` every 100 ms until it returns `Some`, or fails after `timeout` with
/// "`what` not within …" and the detail `last` gives.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
    last: impl Fn() -> String,
) -> anyhow::Result<T> {
    margay_harness::fixtures::wait_for(what, timeout, || Ok(check())).map_err(|_| {
        let detail = last();
        anyhow::anyhow!(
            "{what}: not within {} s{}{detail}",
            timeout.as_secs(),
            if detail.is_empty() { "" } else { "\n" }
        )
    })
}

/// The last `n` lines of a log file, for error messages.
pub fn log_tail(path: &std::path::Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    format!("--- {} ---\n{}", path.display(), lines[from..].join("\n"))
}
