//! A watch that never gives up: list, `Synced`, then changes; on a lost connection it resumes from
//! the last revision it saw, and when that revision has been compacted it lists again and reports
//! only what changed meanwhile. Written once here for every backend.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use tracing::{debug, warn};

use crate::error::{Error, Result};
use crate::key::{Key, Revision};
use crate::store::{Datastore, RawEvent, Stored};

/// What a consumer of [`watch`] sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// An object the consumer has not seen (from the initial list, a relist, or a create).
    Added(Stored),
    /// A new revision of an object the consumer has seen.
    Modified(Stored),
    /// An object the consumer has seen is gone.
    Deleted(Key),
    /// The consumer now holds the complete state of the kind: after the initial list and after
    /// every relist. A dataplane may sweep what is not desired only after this.
    Synced,
}

/// Back-off between retries when the datastore is unavailable.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// The first delay.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

/// Watches every object of `kind` for as long as the returned stream is held.
///
/// Yields `Added` for each existing object, then `Synced`, then changes. Errors that do not stop
/// the watch (bad data, an unavailable datastore) are yielded as `Err` items, and the watch goes
/// on by itself. Needs a tokio runtime.
pub fn watch(
    ds: Arc<dyn Datastore>,
    kind: &str,
    backoff: Backoff,
) -> BoxStream<'static, Result<WatchEvent>> {
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let kind = kind.to_owned();
    tokio::spawn(async move {
        let mut w = Watcher {
            ds,
            kind,
            known: HashMap::new(),
            tx,
            backoff,
            delay: backoff.initial,
        };
        w.run().await;
    });
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .boxed()
}

struct Watcher {
    ds: Arc<dyn Datastore>,
    kind: String,
    known: HashMap<Key, Revision>,
    tx: tokio::sync::mpsc::Sender<Result<WatchEvent>>,
    backoff: Backoff,
    delay: Duration,
}

/// The consumer went away: stop.
struct Closed;

impl Watcher {
    async fn emit(&self, item: Result<WatchEvent>) -> Result<(), Closed> {
        self.tx.send(item).await.map_err(|_| Closed)
    }

    async fn pause(&mut self) {
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(self.backoff.max);
    }

    async fn run(&mut self) {
        let mut from: Option<Revision> = None;
        loop {
            if self.tx.is_closed() {
                return;
            }
            let start = match from.take() {
                Some(r) => r,
                None => match self.relist().await {
                    Ok(Ok(r)) => r,
                    Ok(Err(e)) => {
                        warn!(kind = %self.kind, error = %e, "list failed; retrying");
                        if self.emit(Err(e)).await.is_err() {
                            return;
                        }
                        self.pause().await;
                        continue;
                    }
                    Err(Closed) => return,
                },
            };
            match self.follow(start).await {
                Ok(next) => from = next,
                Err(Closed) => return,
            }
        }
    }

    /// Lists the kind, reports the difference from what the consumer holds, then `Synced`.
    async fn relist(&mut self) -> Result<Result<Revision>, Closed> {
        let listing = match self.ds.list(&self.kind, None).await {
            Ok(l) => l,
            Err(e) => return Ok(Err(e)),
        };
        let mut gone: HashMap<Key, Revision> = std::mem::take(&mut self.known);
        for item in listing.items {
            let event = match gone.remove(&item.key) {
                None => Some(WatchEvent::Added(item.clone())),
                Some(old) if old != item.revision => Some(WatchEvent::Modified(item.clone())),
                Some(_) => None,
            };
            self.known.insert(item.key.clone(), item.revision.clone());
            if let Some(ev) = event {
                self.emit(Ok(ev)).await?;
            }
        }
        let mut gone: Vec<Key> = gone.into_keys().collect();
        gone.sort();
        for key in gone {
            self.emit(Ok(WatchEvent::Deleted(key))).await?;
        }
        self.emit(Ok(WatchEvent::Synced)).await?;
        self.delay = self.backoff.initial;
        debug!(kind = %self.kind, revision = %listing.revision, objects = self.known.len(), "synced");
        Ok(Ok(listing.revision))
    }

    /// Follows the raw watch from `start`; returns where to resume (`None`: relist).
    async fn follow(&mut self, start: Revision) -> Result<Option<Revision>, Closed> {
        let mut raw = match self.ds.watch(&self.kind, &start).await {
            Ok(w) => w,
            Err(e) => return self.interrupted(e, start).await,
        };
        let mut at = start;
        while let Some(item) = raw.next().await {
            match item {
                Ok(RawEvent::Put(stored)) => {
                    at = stored.revision.clone();
                    let previous = self
                        .known
                        .insert(stored.key.clone(), stored.revision.clone());
                    let ev = match previous {
                        None => WatchEvent::Added(stored),
                        Some(_) => WatchEvent::Modified(stored),
                    };
                    self.emit(Ok(ev)).await?;
                    self.delay = self.backoff.initial;
                }
                Ok(RawEvent::Deleted { key, revision }) => {
                    at = revision;
                    if self.known.remove(&key).is_some() {
                        self.emit(Ok(WatchEvent::Deleted(key))).await?;
                    }
                }
                Err(e) => return self.interrupted(e, at).await,
            }
        }
        debug!(kind = %self.kind, "watch stream ended; resuming");
        self.pause().await;
        Ok(Some(at))
    }

    async fn interrupted(&mut self, e: Error, at: Revision) -> Result<Option<Revision>, Closed> {
        match e {
            Error::Expired { .. } => {
                debug!(kind = %self.kind, revision = %at, "watch revision compacted; listing again");
                Ok(None)
            }
            e => {
                warn!(kind = %self.kind, error = %e, "watch interrupted; resuming");
                let retry = e.is_retryable();
                self.emit(Err(e)).await?;
                self.pause().await;
                Ok(if retry { Some(at) } else { None })
            }
        }
    }
}
