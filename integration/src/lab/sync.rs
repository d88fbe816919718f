//! Synchronous writes: after a write that affects policy, wait until every node's agent has
//! the object in its policy model at the written revision (or absent after a delete).
//!
//! The agent's "Applied" local API request arrives with the policy issue (#13). Until then a
//! write is synchronous up to the datastore only: [`confirm`] says so and returns
//! [`Confirmation::DatastoreOnly`], which `policy apply/delete` turn into exit code 2.

use super::objects::Written;
use super::state::State;

/// How far a write is known to have taken effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmation {
    /// Every agent has programmed it.
    Agents,
    /// Stored in the datastore; agents cannot yet say whether they programmed it.
    DatastoreOnly,
}

/// Waits for every agent to report the written objects; see the module docs.
pub fn confirm(_st: &State, written: &[Written]) -> anyhow::Result<Confirmation> {
    for w in written {
        tracing::debug!(
            kind = w.kind,
            namespace = %w.namespace,
            name = %w.name,
            revision = ?w.revision,
            "stored; the agents' Applied request (policy issue #13) is not available yet"
        );
    }
    Ok(Confirmation::DatastoreOnly)
}
