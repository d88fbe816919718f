//! Synchronous writes: after a write that affects policy, wait until every node's agent has the
//! object in the model of its last successful policy programming, at least at the revision the
//! write returned (or absent after a delete) — the agent's `Applied` local API request.
//!
//! An agent that does not enforce network policy says so (`NotReady`, "not enforced by this
//! agent"); then a write is synchronous up to the datastore only, [`confirm`] returns
//! [`Confirmation::DatastoreOnly`] at once, and `policy apply/delete` exit 2 saying so.

use std::time::{Duration, Instant};

use margay_agent::localapi::ApiError;
use margay_agent::localapi::client::{Client, ClientError};
use margay_agent::localapi::proto::ErrorKind;

use super::log_tail;
use super::objects::Written;
use super::state::{LabDir, State};

/// How long the agents may take to program a write.
pub const APPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// How far a write is known to have taken effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmation {
    /// Every agent has programmed it.
    Agents,
    /// Stored in the datastore; agents cannot say whether they programmed it.
    DatastoreOnly,
}

/// The datastore kind the agent's `Applied` request names: plural, lower case. A pod's endpoint
/// is `workloadendpoints` in both modes: the agent records the endpoints it derives from Pods
/// under that kind too, at the Pod's revision.
fn kind(w: &Written) -> &'static str {
    match w.kind {
        "Namespace" => "namespaces",
        "NetworkPolicy" => "networkpolicies",
        _ => "workloadendpoints",
    }
}

/// Whether an agent's answer covers the write: present at least at the written revision, or
/// absent after a delete.
pub fn covers(w: &Written, present: bool, revision: &str) -> bool {
    match &w.revision {
        None => !present,
        Some(want) => {
            present
                && match (revision.parse::<u64>(), want.parse::<u64>()) {
                    (Ok(got), Ok(want)) => got >= want,
                    _ => revision == want,
                }
        }
    }
}

fn describe(w: &Written) -> String {
    let id = if w.namespace.is_empty() {
        w.name.clone()
    } else {
        format!("{}/{}", w.namespace, w.name)
    };
    match &w.revision {
        Some(r) => format!("{} {id} at revision {r}", w.kind),
        None => format!("the deletion of {} {id}", w.kind),
    }
}

/// Whether an agent's error says it does not enforce network policy at all (as opposed to
/// "not programmed yet", which is worth waiting for).
pub fn not_enforced(e: &ApiError) -> bool {
    e.kind == ErrorKind::NotReady
        && (e.message.contains("not enforced by this agent")
            || e.message.contains("does not program network policy"))
}

/// Waits until every node's agent has programmed every write.
pub fn confirm(lab: &LabDir, st: &State, written: &[Written]) -> anyhow::Result<Confirmation> {
    let deadline = Instant::now() + APPLY_TIMEOUT;
    for n in &st.nodes {
        let client = Client::new(n.socket.clone(), Duration::from_secs(5));
        for w in written {
            let mut last;
            loop {
                match client.applied(kind(w), &w.namespace, &w.name) {
                    Ok(a) if covers(w, a.present, &a.revision) => break,
                    Ok(a) if a.present => last = format!("it reports revision {}", a.revision),
                    Ok(_) => last = "it does not have the object yet".to_owned(),
                    Err(ClientError::Agent(e)) if not_enforced(&e) => {
                        tracing::debug!(node = %n.name, "{}", e.message);
                        return Ok(Confirmation::DatastoreOnly);
                    }
                    Err(e) => last = e.to_string(),
                }
                if Instant::now() > deadline {
                    anyhow::bail!(
                        "{}'s agent has not programmed {} within {} s ({last})\n{}",
                        n.name,
                        describe(w),
                        APPLY_TIMEOUT.as_secs(),
                        log_tail(&lab.join(&n.name).join("agent.log"), 15)
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    Ok(Confirmation::Agents)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(rev: Option<&str>) -> Written {
        Written {
            kind: "NetworkPolicy",
            namespace: "x".into(),
            name: "deny".into(),
            revision: rev.map(str::to_owned),
        }
    }

    #[test]
    fn a_write_is_covered_at_its_revision_or_later_and_a_delete_by_absence() {
        assert!(covers(&w(Some("12")), true, "12"));
        assert!(covers(&w(Some("12")), true, "15"));
        assert!(!covers(&w(Some("12")), true, "9"));
        assert!(!covers(&w(Some("12")), false, ""));
        assert!(covers(&w(None), false, ""));
        assert!(!covers(&w(None), true, "12"));
    }

    #[test]
    fn only_an_agent_without_policy_is_not_waited_for() {
        let no = ApiError::new(
            ErrorKind::NotReady,
            "network policy is not enforced by this agent",
        );
        assert!(not_enforced(&no));
        let later = ApiError::new(
            ErrorKind::NotReady,
            "network policy has not been programmed yet (waiting for the datastore sync); ask again",
        );
        assert!(!not_enforced(&later));
    }
}
