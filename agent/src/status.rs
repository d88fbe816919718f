//! Publishes this node's `NodeStatus`: agent version, last dataplane sync and every BGP
//! session, so that `margayctl node status` can show any node, not only the local one.

use std::sync::Arc;
use std::time::Duration;

use margay_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use margay_api::k8s_openapi::jiff::{SignedDuration, Timestamp};
use margay_api::node::{BGPPeerStatus, BGPPeerType, BGPSessionState, BGPStatus};
use margay_api::{NodeStatus, NodeStatusSpec, NodeStatusStatus};
use margay_bgp::fsm::State;
use margay_bgp::{PeerStatus, Speaker};
use margay_datastore::{Datastore, Typed};
use tracing::warn;

use crate::health::{Metrics, Readiness};

/// How often the status is written (the `updatePeriodSeconds` readers judge staleness by).
pub const UPDATE_PERIOD: Duration = Duration::from_secs(10);

fn state(s: State) -> BGPSessionState {
    match s {
        State::Idle => BGPSessionState::Idle,
        State::Connect => BGPSessionState::Connect,
        State::Active => BGPSessionState::Active,
        State::OpenSent => BGPSessionState::OpenSent,
        State::OpenConfirm => BGPSessionState::OpenConfirm,
        State::Established => BGPSessionState::Established,
    }
}

/// The status of one session, as published.
pub fn peer_status(p: &PeerStatus, now: Timestamp) -> BGPPeerStatus {
    let clamp = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
    BGPPeerStatus {
        peer_ip: p.addr.to_string(),
        as_number: Some(p.remote_as),
        peer_type: BGPPeerType::NodeMesh,
        state: state(p.state),
        since: p
            .uptime
            .and_then(|u| SignedDuration::try_from(u).ok())
            .and_then(|u| now.checked_sub(u).ok())
            .map(Time),
        last_error: p.last_error.clone(),
        prefixes_received: clamp(p.received),
        prefixes_accepted: clamp(p.accepted),
        prefixes_advertised: clamp(p.advertised),
    }
}

/// Sets the BGP gauges from the published sessions (series of removed peers disappear).
fn export_metrics(metrics: &Metrics, peers: &[BGPPeerStatus]) {
    metrics.bgp_peer_up.clear();
    metrics.bgp_peer_prefixes.clear();
    for p in peers {
        let kind = match p.peer_type {
            BGPPeerType::NodeMesh => "node-mesh",
            BGPPeerType::GlobalPeer => "global",
            BGPPeerType::NodePeer => "node",
        };
        let peer = ("peer".to_string(), p.peer_ip.clone());
        metrics
            .bgp_peer_up
            .get_or_create(&vec![peer.clone(), ("type".to_string(), kind.to_string())])
            .set(i64::from(p.state == BGPSessionState::Established));
        for (dir, n) in [
            ("received", p.prefixes_received),
            ("accepted", p.prefixes_accepted),
            ("advertised", p.prefixes_advertised),
        ] {
            metrics
                .bgp_peer_prefixes
                .get_or_create(&vec![
                    peer.clone(),
                    ("direction".to_string(), dir.to_string()),
                ])
                .set(i64::from(n));
        }
    }
}

/// Writes the status of the speaker's `sessions` once (and the BGP gauges of `metrics`);
/// returns (established, configured) sessions.
pub async fn publish(
    ds: &Arc<dyn Datastore>,
    node: &str,
    sessions: &[PeerStatus],
    kinds: &crate::mesh::PeerKinds,
    metrics: &Metrics,
    last_sync: Option<Timestamp>,
) -> anyhow::Result<(u32, u32)> {
    let now = Timestamp::now();
    let kinds = kinds.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let peers: Vec<BGPPeerStatus> = sessions
        .iter()
        .map(|p| {
            let mut s = peer_status(p, now);
            s.peer_type = kinds.get(&p.addr).copied().unwrap_or_default();
            s
        })
        .collect();
    export_metrics(metrics, &peers);
    let established = peers
        .iter()
        .filter(|p| p.state == BGPSessionState::Established)
        .count() as u32;
    let counts = (established, peers.len() as u32);
    let status = NodeStatusStatus {
        agent_version: Some(env!("CARGO_PKG_VERSION").into()),
        last_dataplane_sync: last_sync.map(Time),
        last_updated: Some(Time(now)),
        bgp: Some(BGPStatus {
            number_established: established,
            number_not_established: peers.len() as u32 - established,
            peers,
        }),
    };
    let typed = Typed::<NodeStatus>::new(Arc::clone(ds));
    let spec = NodeStatusSpec {
        node: node.to_owned(),
        update_period_seconds: UPDATE_PERIOD.as_secs() as u32,
    };
    let mut obj = NodeStatus::new(node, spec);
    obj.status = Some(status.clone());
    match typed.create(&obj).await {
        Ok(_) => Ok(counts),
        Err(margay_datastore::Error::AlreadyExists(_)) => {
            typed
                .update_with(None, node, 5, |s| {
                    s.status = Some(status.clone());
                    Ok(true)
                })
                .await?;
            Ok(counts)
        }
        Err(e) => Err(e.into()),
    }
}

/// Publishes on every session state change and every [`UPDATE_PERIOD`] until the task is
/// dropped; `last_sync` reads when the dataplane was last in sync.
pub async fn run(
    ds: Arc<dyn Datastore>,
    node: String,
    speaker: Speaker,
    kinds: crate::mesh::PeerKinds,
    metrics: Arc<Metrics>,
    readiness: Readiness,
    last_sync: impl Fn() -> Option<Timestamp>,
) {
    // Sessions are checked every second and the status is written when one changes state, or
    // every UPDATE_PERIOD at the latest, so readers see a session come up within a second.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last: Option<(Vec<(std::net::IpAddr, State)>, tokio::time::Instant)> = None;
    loop {
        tick.tick().await;
        let sessions = match speaker.peers().await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "cannot read the BGP sessions; NodeStatus not published");
                continue;
            }
        };
        let states: Vec<(std::net::IpAddr, State)> =
            sessions.iter().map(|p| (p.addr, p.state)).collect();
        if let Some((prev, at)) = &last
            && *prev == states
            && at.elapsed() < UPDATE_PERIOD
        {
            continue;
        }
        match publish(&ds, &node, &sessions, &kinds, &metrics, last_sync()).await {
            Ok((up, all)) => {
                // A failed write is retried at the next tick.
                last = Some((states, tokio::time::Instant::now()));
                // Ready when every configured session is up (a node with no peers is).
                if up == all {
                    readiness.met("bgp");
                } else {
                    readiness.unmet(
                        "bgp",
                        &format!("{} of {all} BGP sessions not established", all - up),
                    );
                }
            }
            Err(e) => warn!(error = %e, "cannot publish NodeStatus"),
        }
    }
}
