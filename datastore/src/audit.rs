//! A datastore that records which calls go through it: (verb, kind, namespace), for tests that
//! check what a component does against what it is allowed (the RBAC test).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use crate::error::Result;
use crate::key::{Key, Revision};
use crate::store::{Datastore, Listing, RawWatch, Stored};

/// One recorded call: the Kubernetes verb it is, the kind, and the namespace (when the call was
/// limited to one).
pub type Call = (&'static str, String, Option<String>);

/// Wraps a datastore and records every call.
#[derive(Debug, Clone)]
pub struct Recorder {
    inner: Arc<dyn Datastore>,
    calls: Arc<Mutex<BTreeSet<Call>>>,
}

impl Recorder {
    /// Records the calls made to `inner`.
    pub fn new(inner: Arc<dyn Datastore>) -> Self {
        Recorder {
            inner,
            calls: Arc::default(),
        }
    }

    /// Every distinct call so far.
    pub fn calls(&self) -> BTreeSet<Call> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn record(&self, verb: &'static str, kind: &str, namespace: Option<&str>) {
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((verb, kind.to_owned(), namespace.map(str::to_owned)));
    }
}

#[async_trait::async_trait]
impl Datastore for Recorder {
    async fn get(&self, key: &Key) -> Result<Stored> {
        self.record("get", &key.kind, key.namespace.as_deref());
        self.inner.get(key).await
    }

    async fn list(&self, kind: &str, namespace: Option<&str>) -> Result<Listing> {
        self.record("list", kind, namespace);
        self.inner.list(kind, namespace).await
    }

    async fn create(&self, key: &Key, value: Vec<u8>) -> Result<Revision> {
        self.record("create", &key.kind, key.namespace.as_deref());
        self.inner.create(key, value).await
    }

    async fn update(&self, key: &Key, value: Vec<u8>, expected: &Revision) -> Result<Revision> {
        self.record("update", &key.kind, key.namespace.as_deref());
        self.inner.update(key, value, expected).await
    }

    async fn delete(&self, key: &Key, expected: Option<&Revision>) -> Result<()> {
        self.record("delete", &key.kind, key.namespace.as_deref());
        self.inner.delete(key, expected).await
    }

    async fn watch(&self, kind: &str, from: &Revision) -> Result<RawWatch> {
        self.record("watch", kind, None);
        self.inner.watch(kind, from).await
    }

    fn describe(&self) -> String {
        format!("recorded {}", self.inner.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Memory;

    #[tokio::test]
    async fn every_call_is_recorded_with_its_verb_and_kind() {
        let r = Recorder::new(Arc::new(Memory::new()));
        let key = Key::namespaced("pods", "ns", "p").unwrap();
        r.create(&key, b"{}".to_vec()).await.unwrap();
        let got = r.get(&key).await.unwrap();
        r.update(&key, b"{}".to_vec(), &got.revision).await.unwrap();
        r.list("pods", None).await.unwrap();
        r.delete(&key, None).await.unwrap();
        let calls: Vec<(&str, String)> = r.calls().into_iter().map(|(v, k, _)| (v, k)).collect();
        assert_eq!(
            calls,
            ["create", "delete", "get", "list", "update"].map(|v| (v, "pods".to_string()))
        );
    }
}
