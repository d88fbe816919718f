//! `margayctl node status [NODE|--all]`: the BGP sessions of any node, from the `NodeStatus`
//! objects the agents publish (calicoctl can only show the node it runs on), and `version`'s view
//! of the agents.

use std::fmt::Write as _;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use margay_api::NodeStatus;
use margay_api::node::{BGPPeerType, BGPSessionState};
use margay_datastore::Typed;

use crate::error::{CtlError, Result};
use crate::output::Table;
use crate::store::Store;

/// A status is stale when it is older than this many update periods.
pub const STALE_PERIODS: i64 = 3;

/// What `node status` prints: the report on standard output, warnings on standard error.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// The tables.
    pub stdout: String,
    /// Stale statuses and the like.
    pub warnings: Vec<String>,
}

fn peer_type(t: BGPPeerType) -> &'static str {
    match t {
        BGPPeerType::NodeMesh => "node-to-node mesh",
        BGPPeerType::GlobalPeer => "global",
        BGPPeerType::NodePeer => "node specific",
    }
}

fn state(s: BGPSessionState) -> &'static str {
    match s {
        BGPSessionState::Idle => "Idle",
        BGPSessionState::Connect => "Connect",
        BGPSessionState::Active => "Active",
        BGPSessionState::OpenSent => "OpenSent",
        BGPSessionState::OpenConfirm => "OpenConfirm",
        BGPSessionState::Established => "Established",
    }
}

/// Every NodeStatus, by node name.
pub async fn statuses(store: &Store) -> Result<Vec<NodeStatus>> {
    let (mut items, _) = Typed::<NodeStatus>::new(store.datastore())
        .list(None)
        .await
        .map_err(|e| CtlError::msg(format!("cannot list NodeStatus objects: {e}")))?;
    items.sort_by(|a, b| a.spec.node.cmp(&b.spec.node));
    Ok(items)
}

/// Why a status is stale at `now`, if it is.
pub fn staleness(s: &NodeStatus, now: Timestamp) -> Option<String> {
    let period = i64::from(s.spec.update_period_seconds.max(1));
    let limit = SignedDuration::from_secs(period * STALE_PERIODS);
    let updated = s.status.as_ref().and_then(|st| st.last_updated.as_ref());
    match updated {
        None => Some(format!(
            "the status of node {} has never been updated; is its agent running?",
            s.spec.node
        )),
        Some(t) if now.duration_since(t.0) > limit => Some(format!(
            "the status of node {} is stale: last updated {}, more than {}s ago ({STALE_PERIODS} × updatePeriodSeconds {period}); is its agent running?",
            s.spec.node,
            t.0,
            period * STALE_PERIODS
        )),
        Some(_) => None,
    }
}

/// Renders the status of one node: a summary line and the peer table.
pub fn render(s: &NodeStatus) -> String {
    let st = s.status.clone().unwrap_or_default();
    let peers = st.bgp.map(|b| b.peers).unwrap_or_default();
    let up = peers
        .iter()
        .filter(|p| p.state == BGPSessionState::Established)
        .count();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Node {} (agent {}): {} BGP session{}, {up} established, {} not established",
        s.spec.node,
        st.agent_version.as_deref().unwrap_or("unknown"),
        peers.len(),
        if peers.len() == 1 { "" } else { "s" },
        peers.len() - up
    );
    let mut t = Table::new(["peer address", "peer type", "state", "since", "info"]);
    for p in &peers {
        // An established session shows what it carries; the last error (kept in the status, e.g.
        // a refused connect before the peer came up) only explains a session that is down.
        let info = match (&p.last_error, p.state) {
            (_, BGPSessionState::Established) => format!(
                "{} prefixes received, {} accepted, {} advertised",
                p.prefixes_received, p.prefixes_accepted, p.prefixes_advertised
            ),
            (Some(e), _) => e.clone(),
            (None, _) => String::new(),
        };
        t.row([
            p.peer_ip.clone(),
            peer_type(p.peer_type).to_string(),
            state(p.state).to_string(),
            p.since
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default(),
            info,
        ]);
    }
    out.push_str(&t.render());
    out
}

/// `node status`: `node` names one node, `None` means all of them.
pub async fn node_status(store: &Store, node: Option<&str>, now: Timestamp) -> Result<Report> {
    let mut all = statuses(store).await?;
    if let Some(n) = node {
        all.retain(|s| s.spec.node == n);
        if all.is_empty() {
            return Err(CtlError::msg(format!(
                "no NodeStatus for node {n:?}: its agent has not published one (is it running?); \
                 `margayctl node status --all` lists the nodes that have"
            )));
        }
    }
    let mut report = Report::default();
    for (i, s) in all.iter().enumerate() {
        if i > 0 {
            report.stdout.push('\n');
        }
        report.stdout.push_str(&render(s));
        if let Some(w) = staleness(s, now) {
            report.warnings.push(w);
        }
    }
    Ok(report)
}

/// The current time.
pub fn now() -> Timestamp {
    Timestamp::now()
}

/// The node this command runs on: `$NODENAME`, else the host name.
pub fn local_node() -> Option<String> {
    std::env::var("NODENAME")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(updated: &str) -> NodeStatus {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "crd.margay.dev/v1", "kind": "NodeStatus",
            "metadata": {"name": "n1"},
            "spec": {"node": "n1", "updatePeriodSeconds": 10},
            "status": {"agentVersion": "0.1.0", "lastUpdated": updated,
                       "bgp": {"numberEstablished": 1, "numberNotEstablished": 1, "peers": [
                {"peerIP": "198.18.0.2", "type": "NodeMesh", "state": "Established",
                 "lastError": "Connect: connection refused",
                 "since": "2026-01-01T00:00:00Z", "prefixesReceived": 2, "prefixesAccepted": 2, "prefixesAdvertised": 1},
                {"peerIP": "198.18.0.3", "type": "NodePeer", "state": "Active", "lastError": "connection refused"}]}}
        }))
        .unwrap()
    }

    #[test]
    fn a_status_older_than_three_periods_is_stale() {
        let now: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        assert!(staleness(&status("2026-01-01T00:00:35Z"), now).is_none());
        let w = staleness(&status("2026-01-01T00:00:25Z"), now).unwrap();
        assert!(
            w.contains("node n1 is stale: last updated 2026-01-01T00:00:25Z"),
            "{w}"
        );
    }

    #[test]
    fn the_table_has_a_summary_line_and_one_row_per_peer() {
        let text = render(&status("2026-01-01T00:00:00Z"));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "Node n1 (agent 0.1.0): 2 BGP sessions, 1 established, 1 not established"
        );
        assert!(
            lines[1].starts_with("PEER ADDRESS   PEER TYPE"),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].contains("node-to-node mesh   Established"),
            "{}",
            lines[2]
        );
        // The established session's old error is not its info; the down session's is.
        assert!(
            lines[2].ends_with("2 prefixes received, 2 accepted, 1 advertised"),
            "{}",
            lines[2]
        );
        assert!(lines[3].ends_with("connection refused"), "{}", lines[3]);
    }
}
