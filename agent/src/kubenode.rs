//! Kubernetes mode: the core Node's `NetworkUnavailable` condition.
//!
//! A node's pod network is up once the agent's first dataplane sync is done: the node's blocks
//! and its pods' routes are in the kernel and announced over BGP (End-of-RIB follows the same
//! moment). Then the agent patches `nodes/status` with `NetworkUnavailable=False`, reason
//! [`REASON`], as calico-node does with `CalicoIsUp`, so that the scheduler's network taint (set
//! by some cloud providers and kubeadm setups until a network plugin clears it) goes away. It is
//! a strategic merge patch keyed by the condition's `type`, so the kubelet's own conditions stay.

use std::time::Duration;

use k8s_openapi::api::core::v1::Node as KubeNode;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use margay_api::k8s_openapi;
use serde_json::{Value, json};
use tracing::{info, warn};

/// The condition's reason when Margay has set the node's network up.
pub const REASON: &str = "MargayIsUp";

/// The strategic merge patch of `nodes/status` that says the network is available, at `now`.
pub fn network_available_patch(now: &Time) -> Value {
    json!({"status": {"conditions": [{
        "type": "NetworkUnavailable",
        "status": "False",
        "reason": REASON,
        "message": "Margay is running on this node",
        "lastTransitionTime": now,
        "lastHeartbeatTime": now,
    }]}})
}

/// Waits for `routes_up`, then sets the core Node `node`'s `NetworkUnavailable=False`, retrying
/// with back-off (the Node may not be registered yet) until it succeeds.
pub async fn announce_network_up(
    client: kube::Client,
    node: String,
    routes_up: impl std::future::Future<Output = ()>,
) {
    routes_up.await;
    let api: Api<KubeNode> = Api::all(client);
    let mut delay = Duration::from_millis(200);
    loop {
        let patch = network_available_patch(&Time(k8s_openapi::jiff::Timestamp::now()));
        let (params, patch) = (PatchParams::default(), Patch::Strategic(&patch));
        let call = api.patch_status(&node, &params, &patch);
        match tokio::time::timeout(Duration::from_secs(10), call).await {
            Ok(Ok(_)) => {
                info!(node = %node, reason = REASON, "core Node: NetworkUnavailable=False");
                return;
            }
            Ok(Err(e)) => {
                warn!(node = %node, error = %e, retry_in = ?delay, "cannot set the core Node's NetworkUnavailable condition")
            }
            Err(_) => {
                warn!(node = %node, retry_in = ?delay, "no answer setting the core Node's NetworkUnavailable condition")
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_patch_sets_only_the_network_condition_to_false() {
        let now = Time("2025-01-02T03:04:05Z".parse().unwrap());
        let p = network_available_patch(&now);
        let conds = p["status"]["conditions"].as_array().unwrap();
        assert_eq!(conds.len(), 1, "other conditions are the kubelet's");
        assert_eq!(conds[0]["type"], "NetworkUnavailable");
        assert_eq!(conds[0]["status"], "False");
        assert_eq!(conds[0]["reason"], "MargayIsUp");
        assert_eq!(conds[0]["lastTransitionTime"], "2025-01-02T03:04:05Z");
    }
}
