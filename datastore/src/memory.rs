//! The in-memory backend: etcd's semantics (one revision counter, CAS, watch history,
//! compaction) in a mutex, for fast tests of everything above the datastore.
//!
//! Tests can also make it misbehave as a real datastore does: [`Memory::compact`] throws away
//! watch history (watches from before it get `Expired`), [`Memory::drop_watches`] ends every
//! open watch as a lost connection does, and [`Memory::set_available`] makes every call fail with
//! `Unavailable`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;

use crate::error::{Error, Result};
use crate::key::{Key, Revision};
use crate::store::{Datastore, Listing, RawEvent, RawWatch, Stored};

/// How many events of history are kept for watches before the oldest are compacted.
const HISTORY: usize = 100_000;

#[derive(Debug, Default)]
struct State {
    revision: u64,
    objects: BTreeMap<Key, (Vec<u8>, u64)>,
    log: VecDeque<(u64, RawEvent)>,
    compacted: u64,
    epoch: u64,
    unavailable: bool,
}

/// An in-memory datastore. Clones share the same data.
#[derive(Debug, Clone)]
pub struct Memory {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    changed: tokio::sync::watch::Sender<()>,
    /// Microseconds every write waits before it is carried out.
    write_latency_us: AtomicU64,
}

impl Inner {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Default for Memory {
    fn default() -> Self {
        Self::new()
    }
}

fn rev(n: u64) -> Revision {
    Revision(n.to_string())
}

fn parse_rev(r: &Revision) -> Result<u64> {
    r.0.parse().map_err(|_| {
        Error::BadRequest(format!(
            "revision {:?} is not a revision of the in-memory datastore",
            r.0
        ))
    })
}

impl Memory {
    /// An empty datastore.
    pub fn new() -> Self {
        let inner = Inner {
            state: Mutex::new(State::default()),
            changed: tokio::sync::watch::channel(()).0,
            write_latency_us: AtomicU64::new(0),
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>> {
        let state = self.inner.state();
        if state.unavailable {
            return Err(Error::Unavailable {
                what: "in-memory datastore set unavailable".into(),
                source: None,
            });
        }
        Ok(state)
    }

    fn record(&self, state: &mut State, event: RawEvent) {
        let r = state.revision;
        state.log.push_back((r, event));
        while state.log.len() > HISTORY {
            if let Some((old, _)) = state.log.pop_front() {
                state.compacted = old;
            }
        }
        self.inner.changed.send_replace(());
    }

    /// Throws away watch history up to and including `revision` (as `etcdctl compact`).
    pub fn compact(&self, revision: &Revision) -> Result<()> {
        let at = parse_rev(revision)?;
        let mut state = self.inner.state();
        while state.log.front().is_some_and(|(r, _)| *r <= at) {
            state.log.pop_front();
        }
        state.compacted = state.compacted.max(at);
        drop(state);
        self.inner.changed.send_replace(());
        Ok(())
    }

    /// The current revision (what a list now would return).
    pub fn current_revision(&self) -> Revision {
        rev(self.inner.state().revision)
    }

    /// Ends every open watch with `Unavailable`, as a dropped connection would.
    pub fn drop_watches(&self) {
        self.inner.state().epoch += 1;
        self.inner.changed.send_replace(());
    }

    /// Makes every call fail with `Unavailable` (false) or work again (true).
    pub fn set_available(&self, available: bool) {
        let mut state = self.inner.state();
        state.unavailable = !available;
        if !available {
            state.epoch += 1;
        }
        drop(state);
        self.inner.changed.send_replace(());
    }

    /// Makes every create, update and delete wait `latency` before it is carried out, as a
    /// round trip to etcd would: for tests of what callers do while their writes are in flight.
    pub fn set_write_latency(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.inner.write_latency_us.store(us, Ordering::Relaxed);
    }

    async fn write_delay(&self) {
        let us = self.inner.write_latency_us.load(Ordering::Relaxed);
        if us > 0 {
            tokio::time::sleep(Duration::from_micros(us)).await;
        }
    }

    /// Stores raw bytes without any check, as a foreign writer could: for tests of bad data.
    pub fn put_raw(&self, key: &Key, value: Vec<u8>) {
        let mut state = self.inner.state();
        self.put(&mut state, key, value);
    }

    /// Stores `value` at `key` under a new revision and records the event for watches.
    fn put(&self, state: &mut State, key: &Key, value: Vec<u8>) -> Revision {
        state.revision += 1;
        let r = state.revision;
        state.objects.insert(key.clone(), (value.clone(), r));
        let stored = Stored {
            key: key.clone(),
            value,
            revision: rev(r),
        };
        self.record(state, RawEvent::Put(stored));
        rev(r)
    }
}

#[async_trait::async_trait]
impl Datastore for Memory {
    async fn get(&self, key: &Key) -> Result<Stored> {
        let state = self.lock()?;
        let (value, r) = state
            .objects
            .get(key)
            .ok_or_else(|| Error::NotFound(key.clone()))?;
        Ok(Stored {
            key: key.clone(),
            value: value.clone(),
            revision: rev(*r),
        })
    }

    async fn list(&self, kind: &str, namespace: Option<&str>) -> Result<Listing> {
        let state = self.lock()?;
        let items = state
            .objects
            .iter()
            .filter(|(k, _)| {
                k.kind == kind && (namespace.is_none() || k.namespace.as_deref() == namespace)
            })
            .map(|(k, (v, r))| Stored {
                key: k.clone(),
                value: v.clone(),
                revision: rev(*r),
            })
            .collect();
        Ok(Listing {
            items,
            revision: rev(state.revision),
        })
    }

    async fn create(&self, key: &Key, value: Vec<u8>) -> Result<Revision> {
        self.write_delay().await;
        let mut state = self.lock()?;
        if state.objects.contains_key(key) {
            return Err(Error::AlreadyExists(key.clone()));
        }
        Ok(self.put(&mut state, key, value))
    }

    async fn update(&self, key: &Key, value: Vec<u8>, expected: &Revision) -> Result<Revision> {
        self.write_delay().await;
        let want = parse_rev(expected)?;
        let mut state = self.lock()?;
        match state.objects.get(key) {
            None => return Err(Error::NotFound(key.clone())),
            Some((_, r)) if *r != want => {
                return Err(Error::Conflict {
                    key: key.clone(),
                    expected: expected.0.clone(),
                });
            }
            Some(_) => {}
        }
        Ok(self.put(&mut state, key, value))
    }

    async fn delete(&self, key: &Key, expected: Option<&Revision>) -> Result<()> {
        self.write_delay().await;
        let want = expected.map(parse_rev).transpose()?;
        let mut state = self.lock()?;
        match (state.objects.get(key), want) {
            (None, _) => return Err(Error::NotFound(key.clone())),
            (Some((_, r)), Some(w)) if *r != w => {
                return Err(Error::Conflict {
                    key: key.clone(),
                    expected: w.to_string(),
                });
            }
            _ => {}
        }
        state.objects.remove(key);
        state.revision += 1;
        let r = rev(state.revision);
        self.record(
            &mut state,
            RawEvent::Deleted {
                key: key.clone(),
                revision: r,
            },
        );
        Ok(())
    }

    async fn watch(&self, kind: &str, from: &Revision) -> Result<RawWatch> {
        let start = parse_rev(from)?;
        let epoch = {
            let state = self.lock()?;
            if start < state.compacted {
                return Err(Error::Expired {
                    kind: kind.into(),
                    revision: from.0.clone(),
                });
            }
            state.epoch
        };
        let inner = Arc::clone(&self.inner);
        let rx = inner.changed.subscribe();
        let kind = kind.to_owned();
        let stream = futures::stream::unfold(Some((inner, rx, start)), move |cursor| {
            let kind = kind.clone();
            async move {
                let (inner, mut rx, mut at) = cursor?;
                loop {
                    let next = {
                        let state = inner.state();
                        if state.epoch != epoch || state.unavailable {
                            let e = Error::Unavailable {
                                what: format!("in-memory watch of {kind} dropped"),
                                source: None,
                            };
                            return Some((Err(e), None));
                        }
                        if at < state.compacted {
                            let e = Error::Expired {
                                kind: kind.clone(),
                                revision: at.to_string(),
                            };
                            return Some((Err(e), None));
                        }
                        let first = state.log.partition_point(|(r, _)| *r <= at);
                        let found = state
                            .log
                            .range(first..)
                            .find(|(_, ev)| ev.key().kind == kind)
                            .cloned();
                        if found.is_none() {
                            // Nothing of this kind up to the newest event: start there next time.
                            at = at.max(state.log.back().map_or(at, |(r, _)| *r));
                        }
                        found
                    };
                    match next {
                        Some((r, ev)) => {
                            at = r;
                            return Some((Ok(ev), Some((inner, rx, at))));
                        }
                        None => {
                            if rx.changed().await.is_err() {
                                return None;
                            }
                        }
                    }
                }
            }
        });
        Ok(stream.boxed())
    }

    fn describe(&self) -> String {
        "in-memory datastore".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::{self, Backend};

    struct InMemory(Memory);

    #[async_trait::async_trait]
    impl Backend for InMemory {
        fn store(&self) -> Arc<dyn Datastore> {
            Arc::new(self.0.clone())
        }
        async fn put_raw(&self, key: &Key, value: Vec<u8>) {
            self.0.put_raw(key, value);
        }
        async fn compact(&self) {
            self.0.compact(&self.0.current_revision()).unwrap();
        }
        async fn interrupt(&self) {
            self.0.drop_watches();
        }
    }

    fn backend() -> InMemory {
        InMemory(Memory::new())
    }

    #[tokio::test]
    async fn conformance_crud() {
        conformance::crud(&backend()).await;
    }

    #[tokio::test]
    async fn conformance_namespaces() {
        conformance::namespaces(&backend()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conformance_no_lost_update() {
        conformance::no_lost_update(&backend()).await;
    }

    #[tokio::test]
    async fn conformance_watch_order() {
        conformance::watch_order(&backend()).await;
    }

    #[tokio::test]
    async fn conformance_watch_lists_first() {
        conformance::watch_lists_first(&backend()).await;
    }

    #[tokio::test]
    async fn conformance_watch_resumes_after_interruption() {
        conformance::watch_resumes_after_interruption(&backend()).await;
    }

    #[tokio::test]
    async fn conformance_watch_relists_after_compaction() {
        let relists = conformance::watch_relists_after_compaction(&backend()).await;
        assert_eq!(
            relists, 3,
            "every round resumed from a compacted revision and relisted"
        );
    }

    #[tokio::test]
    async fn conformance_bad_data_is_reported_with_its_key() {
        conformance::bad_data_is_reported_with_its_key(&backend()).await;
    }

    #[tokio::test]
    async fn an_unavailable_store_fails_every_call_and_recovers() {
        let m = Memory::new();
        let k = Key::cluster("things", "a").unwrap();
        m.set_available(false);
        assert!(matches!(m.get(&k).await, Err(Error::Unavailable { .. })));
        assert!(m.get(&k).await.unwrap_err().is_retryable());
        m.set_available(true);
        assert!(matches!(m.get(&k).await, Err(Error::NotFound(_))));
    }

    #[tokio::test]
    async fn a_raw_watch_from_a_compacted_revision_expires() {
        let m = Memory::new();
        let k = Key::cluster("things", "a").unwrap();
        let r = m.create(&k, b"1".to_vec()).await.unwrap();
        m.update(&k, b"2".to_vec(), &r).await.unwrap();
        m.compact(&m.current_revision()).unwrap();
        assert!(matches!(
            m.watch("things", &Revision("0".into())).await,
            Err(Error::Expired { .. })
        ));
    }

    #[tokio::test]
    async fn revisions_of_another_backend_are_refused() {
        let m = Memory::new();
        let k = Key::cluster("things", "a").unwrap();
        m.create(&k, b"1".to_vec()).await.unwrap();
        let err = m
            .update(&k, b"2".to_vec(), &Revision("abc".into()))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "bad request: revision \"abc\" is not a revision of the in-memory datastore"
        );
    }
}
