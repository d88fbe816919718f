//! What the last successful policy programming was computed from, for the local API's
//! `Applied` request: the lab writes an object, then waits until every node reports it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::localapi::ApiError;
use crate::localapi::proto::{AppliedReply, ErrorKind};

/// The kinds the policy model is built from, as the local API names them.
pub const KINDS: [&str; 3] = ["namespaces", "networkpolicies", "workloadendpoints"];

/// An object's identity for `Applied`: (kind, namespace, name).
pub type ObjectId = (String, String, String);

/// `(kind, namespace, name)` → `metadata.resourceVersion` of each object in the model of the
/// last successful programming; `None` until the first one.
#[derive(Debug, Clone, Default)]
pub struct AppliedIndex(Arc<RwLock<Option<HashMap<ObjectId, String>>>>);

impl AppliedIndex {
    /// Records the objects of a model that has just been programmed.
    pub fn publish(&self, objects: HashMap<ObjectId, String>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Some(objects);
    }

    /// Answers an `Applied` request.
    pub fn lookup(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<AppliedReply, ApiError> {
        if !KINDS.contains(&kind) {
            return Err(ApiError::new(
                ErrorKind::Invalid,
                format!(
                    "kind {kind:?} is not one the policy model holds; use one of {}",
                    KINDS.join(", ")
                ),
            ));
        }
        let guard = self.0.read().unwrap_or_else(|p| p.into_inner());
        let Some(objects) = guard.as_ref() else {
            return Err(ApiError::new(
                ErrorKind::NotReady,
                "network policy has not been programmed yet (waiting for the datastore sync); ask again",
            ));
        };
        let key = (kind.to_owned(), namespace.to_owned(), name.to_owned());
        Ok(match objects.get(&key) {
            Some(rev) => AppliedReply {
                present: true,
                revision: rev.clone(),
            },
            None => AppliedReply::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_before_the_first_programming_then_present_or_absent() {
        let idx = AppliedIndex::default();
        let e = idx.lookup("networkpolicies", "x", "deny").unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotReady);
        let mut m = HashMap::new();
        m.insert(
            ("networkpolicies".into(), "x".into(), "deny".into()),
            "42".into(),
        );
        idx.publish(m);
        let r = idx.lookup("networkpolicies", "x", "deny").unwrap();
        assert!(r.present);
        assert_eq!(r.revision, "42");
        assert!(!idx.lookup("namespaces", "", "x").unwrap().present);
        let e = idx.lookup("pods", "x", "a").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Invalid);
        assert!(e.message.contains("\"pods\""));
    }
}
