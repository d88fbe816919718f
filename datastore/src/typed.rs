//! The typed view: Kubernetes-style resources (Margay's CRD types, k8s-openapi's Namespace, Pod,
//! NetworkPolicy) stored as JSON, with the object's revision in `metadata.resourceVersion`.
//!
//! Reading sets `metadata.resourceVersion` to the stored revision; [`Typed::update`] uses it for
//! the compare-and-swap, as a Kubernetes client does. The revision is never stored in the bytes.

use std::marker::PhantomData;
use std::sync::Arc;

use futures::StreamExt;
use futures::stream::BoxStream;
use kube_core::Resource;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::key::{Key, Revision};
use crate::store::{Datastore, Stored};
use crate::watcher::{self, Backoff, WatchEvent};

/// What the typed view can store: a Kubernetes-style resource.
pub trait Object:
    Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Send + Sync + 'static
{
}

impl<T> Object for T where
    T: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Send + Sync + 'static
{
}

/// The datastore kind of a resource type: its lower-case plural (`ippools`).
pub fn kind_of<T: Object>() -> String {
    T::plural(&()).to_lowercase()
}

/// The key of an object, from its metadata.
pub fn key_of<T: Object>(obj: &T) -> Result<Key> {
    let meta = obj.meta();
    let name = meta.name.as_deref().ok_or_else(|| {
        Error::BadRequest(format!(
            "a {} without metadata.name cannot be stored",
            T::kind(&())
        ))
    })?;
    let kind = kind_of::<T>();
    let key = match meta.namespace.as_deref() {
        Some(ns) => Key::namespaced(&kind, ns, name),
        None => Key::cluster(&kind, name),
    };
    key.map_err(|e| Error::BadRequest(e.to_string()))
}

/// Serialises an object for storage, without its revision.
pub fn encode<T: Object>(obj: &T) -> Result<Vec<u8>> {
    let mut obj = obj.clone();
    obj.meta_mut().resource_version = None;
    serde_json::to_vec(&obj)
        .map_err(|e| Error::BadRequest(format!("cannot serialise {}: {e}", T::kind(&()))))
}

/// Decodes stored bytes, setting `metadata.resourceVersion` to the stored revision.
pub fn decode<T: Object>(stored: &Stored) -> Result<T> {
    let mut obj: T = serde_json::from_slice(&stored.value).map_err(|e| Error::Invalid {
        key: stored.key.to_string(),
        why: format!("not a valid {}: {e}", T::kind(&())),
    })?;
    obj.meta_mut().resource_version = Some(stored.revision.0.clone());
    Ok(obj)
}

/// A change to objects of one type, from [`Typed::watch`].
#[derive(Debug, Clone, PartialEq)]
pub enum Event<T> {
    /// An object the consumer has not seen.
    Added(T),
    /// A new revision of an object the consumer has seen.
    Modified(T),
    /// An object is gone.
    Deleted(Key),
    /// The consumer holds the complete state (after the initial list and every relist).
    Synced,
}

/// Typed access to one resource type over any [`Datastore`].
#[derive(Debug)]
pub struct Typed<T> {
    ds: Arc<dyn Datastore>,
    kind: String,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for Typed<T> {
    fn clone(&self) -> Self {
        Self {
            ds: Arc::clone(&self.ds),
            kind: self.kind.clone(),
            _t: PhantomData,
        }
    }
}

fn revision_of<T: Object>(obj: &T) -> Result<Revision> {
    obj.meta()
        .resource_version
        .clone()
        .map(Revision)
        .ok_or_else(|| {
            Error::BadRequest(format!(
                "{} {:?} has no metadata.resourceVersion: read it first, then update what was read",
                T::kind(&()),
                obj.meta().name.as_deref().unwrap_or("")
            ))
        })
}

impl<T: Object> Typed<T> {
    /// The typed view of `ds` for `T`.
    pub fn new(ds: Arc<dyn Datastore>) -> Self {
        Self {
            ds,
            kind: kind_of::<T>(),
            _t: PhantomData,
        }
    }

    fn key(&self, namespace: Option<&str>, name: &str) -> Result<Key> {
        match namespace {
            Some(ns) => Key::namespaced(&self.kind, ns, name),
            None => Key::cluster(&self.kind, name),
        }
        .map_err(|e| Error::BadRequest(e.to_string()))
    }

    /// Reads one object.
    pub async fn get(&self, namespace: Option<&str>, name: &str) -> Result<T> {
        decode(&self.ds.get(&self.key(namespace, name)?).await?)
    }

    /// Lists objects (of one namespace when given) and the revision a watch would start from.
    /// An object whose bytes cannot be decoded fails the whole list, naming its key.
    pub async fn list(&self, namespace: Option<&str>) -> Result<(Vec<T>, Revision)> {
        let listing = self.ds.list(&self.kind, namespace).await?;
        let items = listing
            .items
            .iter()
            .map(decode)
            .collect::<Result<Vec<T>>>()?;
        Ok((items, listing.revision))
    }

    /// Creates an object; returns it as stored (with its revision).
    pub async fn create(&self, obj: &T) -> Result<T> {
        let key = key_of(obj)?;
        let revision = self.ds.create(&key, encode(obj)?).await?;
        let mut out = obj.clone();
        out.meta_mut().resource_version = Some(revision.0);
        Ok(out)
    }

    /// Replaces an object if it has not changed since it was read (its `resourceVersion`).
    pub async fn update(&self, obj: &T) -> Result<T> {
        let key = key_of(obj)?;
        let expected = revision_of(obj)?;
        let revision = self.ds.update(&key, encode(obj)?, &expected).await?;
        let mut out = obj.clone();
        out.meta_mut().resource_version = Some(revision.0);
        Ok(out)
    }

    /// Deletes an object; with `expected`, only if it is still at that revision.
    pub async fn delete(
        &self,
        namespace: Option<&str>,
        name: &str,
        expected: Option<&Revision>,
    ) -> Result<()> {
        self.ds.delete(&self.key(namespace, name)?, expected).await
    }

    /// Read-modify-write as a bounded compare-and-swap loop: reads the object, calls `change`
    /// (which returns `false` to leave the object as it is), writes it back if it is unchanged
    /// since the read, and starts again on a conflict, at most `attempts` times.
    pub async fn update_with<F>(
        &self,
        namespace: Option<&str>,
        name: &str,
        attempts: usize,
        mut change: F,
    ) -> Result<T>
    where
        F: FnMut(&mut T) -> Result<bool>,
    {
        let mut last = None;
        for _ in 0..attempts.max(1) {
            let mut obj = self.get(namespace, name).await?;
            if !change(&mut obj)? {
                return Ok(obj);
            }
            match self.update(&obj).await {
                Ok(stored) => return Ok(stored),
                Err(e @ Error::Conflict { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("at least one attempt was made"))
    }

    /// Watches every object of this type; see [`crate::watch`]. Objects whose bytes cannot be
    /// decoded are reported as `Err(Invalid)` naming the key, and the watch goes on.
    pub fn watch(&self, backoff: Backoff) -> BoxStream<'static, Result<Event<T>>> {
        watcher::watch(Arc::clone(&self.ds), &self.kind, backoff)
            .map(|item| {
                item.and_then(|ev| {
                    Ok(match ev {
                        WatchEvent::Added(s) => Event::Added(decode(&s)?),
                        WatchEvent::Modified(s) => Event::Modified(decode(&s)?),
                        WatchEvent::Deleted(k) => Event::Deleted(k),
                        WatchEvent::Synced => Event::Synced,
                    })
                })
            })
            .boxed()
    }
}
