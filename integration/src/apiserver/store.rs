//! The in-memory object store: every object as JSON, one revision counter for the whole store
//! (as etcd behind a kube-apiserver), a bounded history of changes for watches to resume from,
//! and a broadcast of new changes.
//!
//! Every write is a closure run under the store's lock on the current object, so a handler's
//! read-check-write (resourceVersion preconditions, patches) is atomic.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::broadcast;

use super::status::{ApiError, ApiResult};

/// Names one stored object. The namespace is empty for cluster-scoped objects.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjKey {
    /// API group (empty for core).
    pub group: String,
    /// Resource plural.
    pub plural: String,
    /// Namespace, empty for cluster-scoped objects.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Deleted.
    Deleted,
}

impl ChangeType {
    /// The watch event type (`ADDED`…).
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Added => "ADDED",
            ChangeType::Modified => "MODIFIED",
            ChangeType::Deleted => "DELETED",
        }
    }
}

/// One change, as watches see it.
#[derive(Debug, Clone)]
pub struct Change {
    /// The store revision of the change.
    pub rev: u64,
    /// The object changed.
    pub key: ObjKey,
    /// What happened.
    pub kind: ChangeType,
    /// The object after the change (for a delete: as it was, with the delete's revision).
    pub object: Value,
}

/// What a write closure decides.
#[derive(Debug)]
pub enum Write {
    /// Store this object (create or replace).
    Put(Value),
    /// Delete the object.
    Delete,
    /// Change nothing (a no-op patch, a dry run).
    Keep,
}

/// Where a watch starts.
#[derive(Debug)]
pub enum WatchStart {
    /// The objects that exist now (sent as `ADDED`), at revision `rev`.
    Now {
        /// Current objects of the resource.
        objects: Vec<Value>,
        /// The store revision they were read at.
        rev: u64,
    },
    /// The changes after the requested revision that are still in the history.
    After(Vec<Arc<Change>>),
}

#[derive(Debug)]
struct Inner {
    rev: u64,
    objects: BTreeMap<ObjKey, Value>,
    history: VecDeque<Arc<Change>>,
    /// A watch from a revision older than this has lost history: 410 Gone.
    oldest: u64,
    max_history: usize,
}

/// The object store.
#[derive(Debug)]
pub struct Store {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<Change>>,
}

/// Sets `metadata.resourceVersion` of an object.
pub fn set_rv(obj: &mut Value, rev: u64) {
    if !obj["metadata"].is_object() {
        obj["metadata"] = Value::Object(Default::default());
    }
    obj["metadata"]["resourceVersion"] = Value::String(rev.to_string());
}

impl Store {
    /// An empty store that keeps `max_history` changes for watches to resume from.
    pub fn new(max_history: usize) -> Self {
        let (tx, _) = broadcast::channel(16 * 1024);
        Self {
            inner: Mutex::new(Inner {
                rev: 1,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                oldest: 1,
                max_history: max_history.max(1),
            }),
            tx,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data: writes are one insert.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current store revision.
    pub fn revision(&self) -> u64 {
        self.lock().rev
    }

    /// One object.
    pub fn get(&self, key: &ObjKey) -> Option<Value> {
        self.lock().objects.get(key).cloned()
    }

    /// The objects of a resource (of one namespace when given), in key order, and the revision.
    pub fn list(&self, group: &str, plural: &str, namespace: Option<&str>) -> (Vec<Value>, u64) {
        let inner = self.lock();
        (Self::select(&inner, group, plural, namespace), inner.rev)
    }

    fn select(inner: &Inner, group: &str, plural: &str, namespace: Option<&str>) -> Vec<Value> {
        inner
            .objects
            .iter()
            .filter(|(k, _)| {
                k.group == group
                    && k.plural == plural
                    && namespace.is_none_or(|ns| k.namespace == ns)
            })
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn record(&self, inner: &mut Inner, key: ObjKey, kind: ChangeType, object: Value) {
        let change = Arc::new(Change {
            rev: inner.rev,
            key,
            kind,
            object,
        });
        inner.history.push_back(Arc::clone(&change));
        while inner.history.len() > inner.max_history {
            if let Some(old) = inner.history.pop_front() {
                inner.oldest = old.rev;
            }
        }
        // Nobody listening is fine.
        let _ = self.tx.send(change);
    }

    /// Runs `decide` on the current object under the lock and carries out its decision. Returns
    /// the object as stored (or as deleted, or as it is for `Keep`) and the closure's extra value.
    pub fn write<T>(
        &self,
        key: &ObjKey,
        decide: impl FnOnce(Option<&Value>) -> ApiResult<(Write, T)>,
    ) -> ApiResult<(Option<Value>, T)> {
        let mut inner = self.lock();
        let current = inner.objects.get(key);
        let existed = current.is_some();
        let (write, extra) = decide(current)?;
        match write {
            Write::Keep => Ok((inner.objects.get(key).cloned(), extra)),
            Write::Put(mut obj) => {
                inner.rev += 1;
                set_rv(&mut obj, inner.rev);
                inner.objects.insert(key.clone(), obj.clone());
                let kind = if existed {
                    ChangeType::Modified
                } else {
                    ChangeType::Added
                };
                self.record(&mut inner, key.clone(), kind, obj.clone());
                Ok((Some(obj), extra))
            }
            Write::Delete => match inner.objects.remove(key) {
                None => Ok((None, extra)),
                Some(mut obj) => {
                    inner.rev += 1;
                    set_rv(&mut obj, inner.rev);
                    self.record(&mut inner, key.clone(), ChangeType::Deleted, obj.clone());
                    Ok((Some(obj), extra))
                }
            },
        }
    }

    /// Deletes every object of a resource (when its CRD goes).
    pub fn delete_all(&self, group: &str, plural: &str) {
        let mut inner = self.lock();
        let keys: Vec<ObjKey> = inner
            .objects
            .keys()
            .filter(|k| k.group == group && k.plural == plural)
            .cloned()
            .collect();
        for key in keys {
            if let Some(mut obj) = inner.objects.remove(&key) {
                inner.rev += 1;
                set_rv(&mut obj, inner.rev);
                self.record(&mut inner, key, ChangeType::Deleted, obj);
            }
        }
    }

    /// Starts a watch: what to send first, and the receiver of later changes (subscribed under
    /// the same lock, so nothing falls between). `from: None` starts from the current state.
    pub fn watch(
        &self,
        group: &str,
        plural: &str,
        namespace: Option<&str>,
        from: Option<u64>,
    ) -> ApiResult<(WatchStart, broadcast::Receiver<Arc<Change>>)> {
        let inner = self.lock();
        let rx = self.tx.subscribe();
        let start = match from {
            None => WatchStart::Now {
                objects: Self::select(&inner, group, plural, namespace),
                rev: inner.rev,
            },
            Some(from) if from < inner.oldest => {
                return Err(ApiError::expired(from, inner.oldest));
            }
            Some(from) => WatchStart::After(
                inner
                    .history
                    .iter()
                    .filter(|c| c.rev > from)
                    .cloned()
                    .collect(),
            ),
        };
        Ok((start, rx))
    }

    /// Forgets all watch history: a watch from any earlier revision gets 410 Gone.
    pub fn compact(&self) {
        let mut inner = self.lock();
        inner.history.clear();
        inner.oldest = inner.rev;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(name: &str) -> ObjKey {
        ObjKey {
            group: "g".into(),
            plural: "things".into(),
            namespace: String::new(),
            name: name.into(),
        }
    }

    #[test]
    fn every_write_gets_a_new_revision_in_the_object() {
        let s = Store::new(100);
        let (a, ()) = s
            .write(&key("a"), |_| Ok((Write::Put(json!({"x": 1})), ())))
            .unwrap();
        let (b, ()) = s
            .write(&key("a"), |_| Ok((Write::Put(json!({"x": 2})), ())))
            .unwrap();
        let rv = |v: &Option<Value>| v.as_ref().unwrap()["metadata"]["resourceVersion"].clone();
        assert_eq!(rv(&a), json!("2"));
        assert_eq!(rv(&b), json!("3"));
    }

    #[test]
    fn a_watch_from_before_a_compaction_is_expired() {
        let s = Store::new(100);
        s.write(&key("a"), |_| Ok((Write::Put(json!({})), ())))
            .unwrap();
        s.compact();
        let err = s.watch("g", "things", None, Some(1)).unwrap_err();
        assert_eq!(err.code, 410);
        assert!(s.watch("g", "things", None, Some(2)).is_ok());
    }

    #[test]
    fn a_watch_resumes_with_the_changes_after_its_revision() {
        let s = Store::new(100);
        for n in ["a", "b", "c"] {
            s.write(&key(n), |_| Ok((Write::Put(json!({})), ())))
                .unwrap();
        }
        let (start, _rx) = s.watch("g", "things", None, Some(2)).unwrap();
        match start {
            WatchStart::After(changes) => {
                let names: Vec<_> = changes.iter().map(|c| c.key.name.as_str()).collect();
                assert_eq!(names, ["b", "c"]);
            }
            other => panic!("{other:?}"),
        }
    }
}
