//! The raw contract: objects as bytes with opaque per-object revisions.

use std::fmt::Debug;

use futures::stream::BoxStream;

use crate::error::Result;
use crate::key::{Key, Revision};

/// One stored object: its key, its bytes (JSON) and the revision it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Which object.
    pub key: Key,
    /// Its serialised form (JSON of the whole resource).
    pub value: Vec<u8>,
    /// The revision to pass to [`Datastore::update`] or [`Datastore::delete`] for a
    /// compare-and-swap.
    pub revision: Revision,
}

/// The result of [`Datastore::list`]: every object of a kind, and the revision to watch from so
/// that no change between the list and the watch is missed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The objects, in key order.
    pub items: Vec<Stored>,
    /// Where a [`Datastore::watch`] continues from.
    pub revision: Revision,
}

/// One change seen by a raw watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawEvent {
    /// The object was created or changed (backends cannot always tell which: etcd's watch can,
    /// a relist cannot; [`crate::watch`] tells them apart by what it has seen).
    Put(Stored),
    /// The object was deleted at `revision`.
    Deleted {
        /// Which object.
        key: Key,
        /// The revision of the deletion; watching on from it continues after the delete.
        revision: Revision,
    },
}

impl RawEvent {
    /// The revision to resume a watch from after this event.
    pub fn revision(&self) -> &Revision {
        match self {
            RawEvent::Put(s) => &s.revision,
            RawEvent::Deleted { revision, .. } => revision,
        }
    }

    /// The object the event is about.
    pub fn key(&self) -> &Key {
        match self {
            RawEvent::Put(s) => &s.key,
            RawEvent::Deleted { key, .. } => key,
        }
    }
}

/// A stream of raw watch events. It ends, or yields [`crate::Error::Expired`] or
/// [`crate::Error::Unavailable`], when the backend can no longer continue; [`crate::watch`]
/// turns that into a watch that never gives up.
pub type RawWatch = BoxStream<'static, Result<RawEvent>>;

/// Where Margay's resources live. Object safe: hold it as `Arc<dyn Datastore>`.
///
/// Revisions are opaque and per object: compare them for equality, never order them. A watch is
/// per kind and starts from a [`Listing`]'s revision.
///
/// A read-modify-write is a compare-and-swap loop, bounded; [`crate::cas::update_with`] is that
/// loop:
///
/// ```text
/// loop (at most N times):
///     let stored = ds.get(&key)?;                 // bytes + revision
///     let new = change(decode(stored.value))?;    // pure
///     match ds.update(&key, encode(new), &stored.revision) {
///         Ok(rev) => return Ok(rev),
///         Err(Conflict) => continue,              // someone else won: read again
///         Err(e) => return Err(e),
///     }
/// ```
#[async_trait::async_trait]
pub trait Datastore: Send + Sync + Debug {
    /// Reads one object.
    async fn get(&self, key: &Key) -> Result<Stored>;

    /// Lists every object of `kind` (in `namespace` when given), with the revision to watch from.
    async fn list(&self, kind: &str, namespace: Option<&str>) -> Result<Listing>;

    /// Creates an object; fails with `AlreadyExists` if it is there.
    async fn create(&self, key: &Key, value: Vec<u8>) -> Result<Revision>;

    /// Replaces an object if its revision is still `expected`; `Conflict` otherwise, `NotFound`
    /// if it is gone.
    async fn update(&self, key: &Key, value: Vec<u8>, expected: &Revision) -> Result<Revision>;

    /// Deletes an object, only if its revision is still `expected` when given.
    async fn delete(&self, key: &Key, expected: Option<&Revision>) -> Result<()>;

    /// Watches every object of `kind` for changes after `from` (a [`Listing`]'s revision or the
    /// revision of the last event seen).
    async fn watch(&self, kind: &str, from: &Revision) -> Result<RawWatch>;

    /// A short description for logs and errors (`etcdv3 http://198.18.0.254:2379`).
    fn describe(&self) -> String;
}
