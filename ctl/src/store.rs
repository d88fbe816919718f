//! Reading and writing objects of any kind as JSON values, through the datastore's typed view so
//! that every write is a compare-and-swap on `metadata.resourceVersion`.

use std::sync::Arc;

use margay_datastore::{Datastore, Error as DsError, Typed, Workloads};
use serde_json::Value;

use crate::kinds::Kind;
use crate::with_type;

/// What went wrong reading or writing one object.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object is not there.
    #[error("{kind} {name:?} not found")]
    NotFound {
        /// Its kind.
        kind: Kind,
        /// Its name (`NAMESPACE/NAME` when namespaced).
        name: String,
    },
    /// `create` of an object that exists.
    #[error("{kind} {name:?} already exists; use apply or replace to change it")]
    AlreadyExists {
        /// Its kind.
        kind: Kind,
        /// Its name.
        name: String,
    },
    /// The object changed since it was read.
    #[error(
        "{kind} {name:?} was changed by someone else since it was read (resourceVersion {expected}); \
         get it again, redo the change and apply again"
    )]
    Conflict {
        /// Its kind.
        kind: Kind,
        /// Its name.
        name: String,
        /// The revision the write expected.
        expected: String,
    },
    /// Anything else the datastore said.
    #[error("{what}")]
    Datastore {
        /// What was being done (`IPPool "p1"`, `listing IPPool objects`).
        what: String,
        /// The datastore's error.
        #[source]
        source: Box<DsError>,
    },
    /// A write of an object that is derived from others (Kubernetes mode's WorkloadEndpoints).
    #[error(
        "{kind} {name:?} cannot be written: with the Kubernetes datastore WorkloadEndpoints are \
         derived from Pods; change the Pod (its labels, container ports) instead"
    )]
    Derived {
        /// Its kind.
        kind: Kind,
        /// Its name.
        name: String,
    },
    /// An object that does not decode as its kind (checked before, so a bug if it happens).
    #[error("{kind} {name:?} does not match its schema")]
    Schema {
        /// Its kind.
        kind: Kind,
        /// Its name.
        name: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
}

/// What `apply` did to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// It did not exist and was created.
    Created,
    /// It existed and was changed.
    Configured,
    /// It existed and was already as given; nothing was written.
    Unchanged,
}

/// Objects of every kind over one datastore.
#[derive(Debug, Clone)]
pub struct Store {
    ds: Arc<dyn Datastore>,
    /// Kubernetes mode: WorkloadEndpoints are read from the Pods, never written.
    derived: Option<Workloads>,
}

fn display_name(ns: Option<&str>, name: &str) -> String {
    match ns {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

/// The namespace and name of an object.
pub fn ns_name(obj: &Value) -> (Option<String>, String) {
    let meta = obj.get("metadata");
    let s = |k| {
        meta.and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    (s("namespace"), s("name").unwrap_or_default())
}

impl Store {
    /// A store over `ds`.
    pub fn new(ds: Arc<dyn Datastore>) -> Self {
        Store { ds, derived: None }
    }

    /// A store whose WorkloadEndpoints come from `workloads` when they are derived from Pods
    /// (Kubernetes mode), as the agents see them.
    pub fn with_workloads(mut self, workloads: Workloads) -> Self {
        self.derived = workloads.is_derived().then_some(workloads);
        self
    }

    /// The derived endpoints, when `kind` is WorkloadEndpoint in Kubernetes mode.
    fn derived(&self, kind: Kind) -> Option<&Workloads> {
        self.derived
            .as_ref()
            .filter(|_| kind == Kind::WorkloadEndpoint)
    }

    /// Fails a write of a derived kind.
    fn writable(&self, kind: Kind, ns: Option<&str>, name: &str) -> Result<(), StoreError> {
        match self.derived(kind) {
            Some(_) => Err(StoreError::Derived {
                kind,
                name: display_name(ns, name),
            }),
            None => Ok(()),
        }
    }

    /// The derived endpoints of namespace `ns` (all when `None`), in namespace and name order.
    async fn derived_list(
        &self,
        w: &Workloads,
        kind: Kind,
        ns: Option<&str>,
    ) -> Result<Vec<Value>, StoreError> {
        let mut items = w.list().await.map_err(|e| Self::err(kind, ns, "*", e))?;
        items.retain(|e| ns.is_none_or(|ns| e.metadata.namespace.as_deref() == Some(ns)));
        items.sort_by(|a, b| {
            (&a.metadata.namespace, &a.metadata.name)
                .cmp(&(&b.metadata.namespace, &b.metadata.name))
        });
        items.iter().map(|o| Self::to_value(kind, "*", o)).collect()
    }

    /// The datastore underneath.
    pub fn datastore(&self) -> Arc<dyn Datastore> {
        Arc::clone(&self.ds)
    }

    fn err(kind: Kind, ns: Option<&str>, name: &str, e: DsError) -> StoreError {
        let listing = name == "*";
        let name = display_name(ns, name);
        match e {
            DsError::NotFound(_) => StoreError::NotFound { kind, name },
            DsError::AlreadyExists(_) => StoreError::AlreadyExists { kind, name },
            DsError::Conflict { expected, .. } => StoreError::Conflict {
                kind,
                name,
                expected,
            },
            source => StoreError::Datastore {
                what: if listing {
                    format!("listing {kind} objects")
                } else {
                    format!("{kind} {name:?}")
                },
                source: Box::new(source),
            },
        }
    }

    fn to_value<T: serde::Serialize>(kind: Kind, name: &str, obj: &T) -> Result<Value, StoreError> {
        serde_json::to_value(obj).map_err(|source| StoreError::Schema {
            kind,
            name: name.to_string(),
            source,
        })
    }

    fn from_value<T: serde::de::DeserializeOwned>(
        kind: Kind,
        name: &str,
        v: &Value,
    ) -> Result<T, StoreError> {
        serde_json::from_value(v.clone()).map_err(|source| StoreError::Schema {
            kind,
            name: name.to_string(),
            source,
        })
    }

    /// Every object of `kind` (of namespace `ns` when given), in name order.
    pub async fn list(&self, kind: Kind, ns: Option<&str>) -> Result<Vec<Value>, StoreError> {
        let ns = if kind.namespaced() { ns } else { None };
        if let Some(w) = self.derived(kind) {
            return self.derived_list(w, kind, ns).await;
        }
        with_type!(kind, T => {
            let (items, _) = Typed::<T>::new(self.datastore())
                .list(ns)
                .await
                .map_err(|e| Self::err(kind, ns, "*", e))?;
            items.iter().map(|o| Self::to_value(kind, "*", o)).collect()
        })
    }

    /// One object.
    pub async fn get(&self, kind: Kind, ns: Option<&str>, name: &str) -> Result<Value, StoreError> {
        let ns = if kind.namespaced() { ns } else { None };
        if let Some(w) = self.derived(kind) {
            return self
                .derived_list(w, kind, ns)
                .await?
                .into_iter()
                .find(|v| v.pointer("/metadata/name").and_then(Value::as_str) == Some(name))
                .ok_or_else(|| StoreError::NotFound {
                    kind,
                    name: display_name(ns, name),
                });
        }
        with_type!(kind, T => {
            let o = Typed::<T>::new(self.datastore())
                .get(ns, name)
                .await
                .map_err(|e| Self::err(kind, ns, name, e))?;
            Self::to_value(kind, name, &o)
        })
    }

    /// Creates an object; fails if it exists.
    pub async fn create(&self, kind: Kind, obj: &Value) -> Result<Value, StoreError> {
        let (ns, name) = ns_name(obj);
        self.writable(kind, ns.as_deref(), &name)?;
        let mut obj = obj.clone();
        if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        with_type!(kind, T => {
            let typed: T = Self::from_value(kind, &name, &obj)?;
            let o = Typed::<T>::new(self.datastore())
                .create(&typed)
                .await
                .map_err(|e| Self::err(kind, ns.as_deref(), &name, e))?;
            Self::to_value(kind, &name, &o)
        })
    }

    /// Replaces an existing object's spec, status, labels and annotations with `obj`'s, as a
    /// compare-and-swap: against `obj`'s `resourceVersion` when it has one (so that a change made
    /// since the caller read it is a conflict), else against the revision just read. With
    /// `create_missing`, an object that does not exist is created (apply).
    pub async fn apply(
        &self,
        kind: Kind,
        obj: &Value,
        create_missing: bool,
    ) -> Result<Applied, StoreError> {
        let (ns, name) = ns_name(obj);
        let ns = ns.as_deref();
        self.writable(kind, ns, &name)?;
        let existing = match self.get(kind, ns, &name).await {
            Ok(v) => v,
            Err(StoreError::NotFound { .. }) if create_missing => {
                self.create(kind, obj).await?;
                return Ok(Applied::Created);
            }
            Err(e) => return Err(e),
        };
        let stored_rv = existing
            .pointer("/metadata/resourceVersion")
            .cloned()
            .unwrap_or(Value::Null);
        let mut merged = existing.clone();
        for field in ["spec", "status"] {
            match obj.get(field) {
                Some(v) => merged[field] = v.clone(),
                None => {
                    if let Some(m) = merged.as_object_mut() {
                        m.remove(field);
                    }
                }
            }
        }
        for field in ["labels", "annotations"] {
            let meta = merged["metadata"].as_object_mut();
            if let Some(meta) = meta {
                match obj.pointer(&format!("/metadata/{field}")) {
                    Some(v) => {
                        meta.insert(field.to_string(), v.clone());
                    }
                    None => {
                        meta.remove(field);
                    }
                }
            }
        }
        if let Some(rv) = obj.pointer("/metadata/resourceVersion")
            && *rv != stored_rv
        {
            return Err(StoreError::Conflict {
                kind,
                name: display_name(ns, &name),
                expected: crate::columns::scalar(rv),
            });
        }
        with_type!(kind, T => {
            let typed: T = Self::from_value(kind, &name, &merged)?;
            // Compared as the type reads it, so that defaults left out of the document count
            // as what they are.
            if Self::to_value(kind, &name, &typed)? == existing {
                return Ok(Applied::Unchanged);
            }
            Typed::<T>::new(self.datastore())
                .update(&typed)
                .await
                .map_err(|e| Self::err(kind, ns, &name, e))?;
        });
        Ok(Applied::Configured)
    }

    /// Deletes an object; with `expected`, only if it is still at that revision.
    pub async fn delete(
        &self,
        kind: Kind,
        ns: Option<&str>,
        name: &str,
        expected: Option<&str>,
    ) -> Result<(), StoreError> {
        let ns = if kind.namespaced() { ns } else { None };
        self.writable(kind, ns, name)?;
        let expected = expected.map(|r| margay_datastore::Revision(r.to_string()));
        with_type!(kind, T => {
            Typed::<T>::new(self.datastore())
                .delete(ns, name, expected.as_ref())
                .await
                .map_err(|e| Self::err(kind, ns, name, e))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use margay_datastore::{Key, Listing, Memory, RawWatch, Revision, Stored};
    use serde_json::json;

    use super::*;

    /// A datastore where someone else changes the object between our read and our write.
    #[derive(Debug)]
    struct Racing {
        inner: Memory,
        raced: AtomicBool,
    }

    #[async_trait::async_trait]
    impl Datastore for Racing {
        async fn get(&self, key: &Key) -> margay_datastore::Result<Stored> {
            let got = self.inner.get(key).await?;
            if !self.raced.swap(true, Ordering::SeqCst) {
                let mut theirs: Value = serde_json::from_slice(&got.value).unwrap();
                theirs["spec"]["disabled"] = json!(true);
                self.inner
                    .update(key, serde_json::to_vec(&theirs).unwrap(), &got.revision)
                    .await?;
            }
            Ok(got)
        }
        async fn list(&self, kind: &str, ns: Option<&str>) -> margay_datastore::Result<Listing> {
            self.inner.list(kind, ns).await
        }
        async fn create(&self, key: &Key, value: Vec<u8>) -> margay_datastore::Result<Revision> {
            self.inner.create(key, value).await
        }
        async fn update(
            &self,
            key: &Key,
            value: Vec<u8>,
            expected: &Revision,
        ) -> margay_datastore::Result<Revision> {
            self.inner.update(key, value, expected).await
        }
        async fn delete(
            &self,
            key: &Key,
            expected: Option<&Revision>,
        ) -> margay_datastore::Result<()> {
            self.inner.delete(key, expected).await
        }
        async fn watch(&self, kind: &str, from: &Revision) -> margay_datastore::Result<RawWatch> {
            self.inner.watch(kind, from).await
        }
        fn describe(&self) -> String {
            "racing memory".into()
        }
    }

    fn pool(nat: bool) -> Value {
        json!({"apiVersion": "crd.margay.dev/v1", "kind": "IPPool", "metadata": {"name": "p1"},
               "spec": {"cidr": "100.64.0.0/16", "natOutgoing": nat}})
    }

    #[tokio::test]
    async fn a_change_between_our_read_and_our_write_is_a_conflict_not_an_overwrite() {
        let ds = Arc::new(Racing {
            inner: Memory::new(),
            raced: AtomicBool::new(true),
        });
        let store = Store::new(ds.clone());
        store.create(Kind::IPPool, &pool(false)).await.unwrap();
        ds.raced.store(false, Ordering::SeqCst);
        let err = store
            .apply(Kind::IPPool, &pool(true), true)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
        let now = store.get(Kind::IPPool, None, "p1").await.unwrap();
        assert_eq!(now["spec"]["disabled"], true, "their change stays");
        assert_eq!(now["spec"]["natOutgoing"], false, "ours was not written");
    }

    #[tokio::test]
    async fn applying_what_is_stored_writes_nothing() {
        let store = Store::new(Arc::new(Memory::new()));
        assert_eq!(
            store.apply(Kind::IPPool, &pool(true), true).await.unwrap(),
            Applied::Created
        );
        assert_eq!(
            store.apply(Kind::IPPool, &pool(true), true).await.unwrap(),
            Applied::Unchanged
        );
        assert_eq!(
            store.apply(Kind::IPPool, &pool(false), true).await.unwrap(),
            Applied::Configured
        );
    }
}
