//! The conformance suite: the same checks, run against every backend.
//!
//! Each check is a plain async function over a [`Backend`]; the in-memory backend runs them in
//! this crate's unit tests, etcd in `tests/etcd.rs` against a real etcd, and the Kubernetes
//! backend will run them against the test API server. A check panics (with what it expected and
//! what it saw) when the backend breaks the contract.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;

use crate::error::{Error, Result};
use crate::key::{Key, Revision};
use crate::store::Datastore;
use crate::watcher::{Backoff, WatchEvent, watch};

/// What the suite needs from a backend beyond the trait: ways to break it as the real world does.
#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    /// The datastore under test. Each check uses its own kind names, so one store can serve all.
    fn store(&self) -> Arc<dyn Datastore>;
    /// Writes bytes at a key without any check, as a foreign or broken writer would.
    async fn put_raw(&self, key: &Key, value: Vec<u8>);
    /// Throws away all watch history up to now.
    async fn compact(&self);
    /// Breaks every open watch connection (a dropped connection, or a server restart); returns
    /// once the datastore serves requests again.
    async fn interrupt(&self);
}

/// How long a check waits for an expected watch event.
const WAIT: Duration = Duration::from_secs(20);

fn backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(500),
    }
}

fn key(kind: &str, name: &str) -> Key {
    Key::cluster(kind, name).expect("test keys are valid")
}

async fn next_event(w: &mut BoxStream<'static, Result<WatchEvent>>) -> WatchEvent {
    loop {
        match tokio::time::timeout(WAIT, w.next()).await {
            Ok(Some(Ok(ev))) => return ev,
            Ok(Some(Err(e))) if e.is_retryable() => continue,
            Ok(Some(Err(e))) => panic!("watch yielded an error: {e}"),
            Ok(None) => panic!("watch ended"),
            Err(_) => panic!("no watch event within {WAIT:?}"),
        }
    }
}

/// Applies watch events to a map until it equals `want` (after a `Synced` when `need_synced`).
async fn converge(
    w: &mut BoxStream<'static, Result<WatchEvent>>,
    seen: &mut BTreeMap<Key, Vec<u8>>,
    want: &BTreeMap<Key, Vec<u8>>,
) -> Vec<WatchEvent> {
    let mut log = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while seen != want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "watch did not converge: have {seen:?}, want {want:?}; events {log:?}"
        );
        let ev = next_event(w).await;
        match &ev {
            WatchEvent::Added(s) => {
                assert!(
                    seen.insert(s.key.clone(), s.value.clone()).is_none(),
                    "Added for {} already seen: {log:?}",
                    s.key
                );
            }
            WatchEvent::Modified(s) => {
                assert!(
                    seen.insert(s.key.clone(), s.value.clone()).is_some(),
                    "Modified for unseen {}: {log:?}",
                    s.key
                );
            }
            WatchEvent::Deleted(k) => {
                assert!(seen.remove(k).is_some(), "Deleted for unseen {k}: {log:?}");
            }
            WatchEvent::Synced => {}
        }
        log.push(ev);
    }
    log
}

/// create, get, list, update, delete and their errors.
pub async fn crud(b: &dyn Backend) {
    let ds = b.store();
    let k = key("conf-crud", "a");
    let r1 = ds.create(&k, b"1".to_vec()).await.expect("create");
    assert!(
        matches!(
            ds.create(&k, b"x".to_vec()).await,
            Err(Error::AlreadyExists(_))
        ),
        "second create must fail"
    );
    let got = ds.get(&k).await.expect("get");
    assert_eq!((got.value.as_slice(), &got.revision), (&b"1"[..], &r1));

    let r2 = ds
        .update(&k, b"2".to_vec(), &r1)
        .await
        .expect("update at the read revision");
    assert_ne!(r1, r2, "an update gives a new revision");
    match ds.update(&k, b"3".to_vec(), &r1).await {
        Err(Error::Conflict { key, .. }) => assert_eq!(key, k),
        other => panic!("update at a stale revision must conflict, got {other:?}"),
    }
    assert!(
        matches!(ds.delete(&k, Some(&r1)).await, Err(Error::Conflict { .. })),
        "delete at a stale revision"
    );

    ds.create(&key("conf-crud", "b"), b"b".to_vec())
        .await
        .expect("create b");
    let listing = ds.list("conf-crud", None).await.expect("list");
    let names: Vec<_> = listing.items.iter().map(|s| s.key.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert!(
        ds.list("conf-crud-empty", None)
            .await
            .expect("list empty")
            .items
            .is_empty()
    );

    ds.delete(&k, Some(&r2))
        .await
        .expect("delete at the current revision");
    assert!(matches!(ds.get(&k).await, Err(Error::NotFound(_))));
    assert!(
        matches!(ds.delete(&k, None).await, Err(Error::NotFound(_))),
        "delete of a missing object"
    );
    assert!(
        matches!(
            ds.update(&k, b"x".to_vec(), &r2).await,
            Err(Error::NotFound(_))
        ),
        "update of a missing object"
    );
    ds.delete(&key("conf-crud", "b"), None)
        .await
        .expect("unconditional delete");
}

/// Namespaced objects are listed per namespace and across namespaces.
pub async fn namespaces(b: &dyn Backend) {
    let ds = b.store();
    for (ns, name) in [("x", "a"), ("x", "b"), ("y", "a")] {
        ds.create(
            &Key::namespaced("conf-ns", ns, name).unwrap(),
            name.as_bytes().to_vec(),
        )
        .await
        .expect("create");
    }
    assert_eq!(ds.list("conf-ns", Some("x")).await.unwrap().items.len(), 2);
    assert_eq!(ds.list("conf-ns", Some("y")).await.unwrap().items.len(), 1);
    assert_eq!(ds.list("conf-ns", None).await.unwrap().items.len(), 3);
}

/// Concurrent read-modify-CAS writers lose no update.
pub async fn no_lost_update(b: &dyn Backend) {
    let ds = b.store();
    let k = key("conf-cas", "counter");
    ds.create(&k, b"0".to_vec()).await.expect("create");
    let (writers, each) = (4, 25);
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let ds = Arc::clone(&ds);
        let k = k.clone();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0u32;
            for _ in 0..each {
                loop {
                    let cur = ds.get(&k).await.expect("get");
                    let n: u64 = std::str::from_utf8(&cur.value).unwrap().parse().unwrap();
                    match ds
                        .update(&k, (n + 1).to_string().into_bytes(), &cur.revision)
                        .await
                    {
                        Ok(_) => break,
                        Err(Error::Conflict { .. }) => conflicts += 1,
                        Err(e) => panic!("update: {e}"),
                    }
                }
            }
            conflicts
        }));
    }
    for t in tasks {
        t.await.expect("writer task");
    }
    let v = ds.get(&k).await.unwrap().value;
    assert_eq!(
        String::from_utf8(v).unwrap(),
        (writers * each).to_string(),
        "every increment counted once"
    );
}

/// A watch sees every change of one object in order: Added, Modified…, Deleted.
pub async fn watch_order(b: &dyn Backend) {
    let ds = b.store();
    let kind = "conf-order";
    let mut w = watch(Arc::clone(&ds), kind, backoff());
    assert_eq!(next_event(&mut w).await, WatchEvent::Synced);
    let k = key(kind, "o");
    let mut r = ds.create(&k, b"0".to_vec()).await.unwrap();
    for i in 1..=5 {
        r = ds.update(&k, i.to_string().into_bytes(), &r).await.unwrap();
    }
    ds.delete(&k, None).await.unwrap();
    let mut values = Vec::new();
    match next_event(&mut w).await {
        WatchEvent::Added(s) => values.push(s.value),
        other => panic!("expected Added, got {other:?}"),
    }
    for _ in 1..=5 {
        match next_event(&mut w).await {
            WatchEvent::Modified(s) => values.push(s.value),
            other => panic!("expected Modified, got {other:?}"),
        }
    }
    assert_eq!(next_event(&mut w).await, WatchEvent::Deleted(k));
    let want: Vec<Vec<u8>> = (0..=5).map(|i: i32| i.to_string().into_bytes()).collect();
    assert_eq!(values, want, "modifications in write order");
}

/// A watch lists what exists first (Added…, Synced), then follows.
pub async fn watch_lists_first(b: &dyn Backend) {
    let ds = b.store();
    let kind = "conf-initial";
    for n in ["a", "b", "c"] {
        ds.create(&key(kind, n), n.as_bytes().to_vec())
            .await
            .unwrap();
    }
    let mut w = watch(Arc::clone(&ds), kind, backoff());
    let mut added = Vec::new();
    loop {
        match next_event(&mut w).await {
            WatchEvent::Added(s) => added.push(s.key.name),
            WatchEvent::Synced => break,
            other => panic!("before Synced only Added, got {other:?}"),
        }
    }
    added.sort();
    assert_eq!(added, ["a", "b", "c"]);
    ds.create(&key(kind, "d"), b"d".to_vec()).await.unwrap();
    assert!(matches!(next_event(&mut w).await, WatchEvent::Added(s) if s.key.name == "d"));
}

/// Retries `op` while the datastore is briefly unavailable (right after an interruption, a
/// backend under load may still fail the first call). `done_if` accepts an error that means a
/// previous, unanswered attempt went through (AlreadyExists after a create, NotFound after a
/// delete).
async fn persist<T, F, Fut>(what: &str, mut op: F, done_if: fn(&Error) -> bool) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut retried = false;
    for _ in 0..100 {
        match op().await {
            Ok(v) => return Some(v),
            Err(e) if retried && done_if(&e) => return None,
            Err(e) if e.is_retryable() => {
                retried = true;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
    panic!("{what}: still failing after 100 attempts");
}

async fn churn(ds: &Arc<dyn Datastore>, kind: &str, want: &mut BTreeMap<Key, Vec<u8>>, round: u32) {
    // One create, one update and one delete per round, so a consumer must see all three kinds.
    let created = key(kind, &format!("r{round}"));
    let value = format!("c{round}").into_bytes();
    persist(
        "create",
        || ds.create(&created, value.clone()),
        |e| matches!(e, Error::AlreadyExists(_)),
    )
    .await;
    want.insert(created, value);
    let upd = key(kind, "stable");
    let value = format!("u{round}").into_bytes();
    persist(
        "update",
        || async {
            let cur = ds.get(&upd).await?;
            if cur.value == value {
                return Ok(());
            }
            ds.update(&upd, value.clone(), &cur.revision)
                .await
                .map(|_| ())
        },
        |_| false,
    )
    .await;
    want.insert(upd, value);
    if round > 0 {
        let gone = key(kind, &format!("r{}", round - 1));
        persist(
            "delete",
            || ds.delete(&gone, None),
            |e| matches!(e, Error::NotFound(_)),
        )
        .await;
        want.remove(&gone);
    }
}

async fn seed(ds: &Arc<dyn Datastore>, kind: &str) -> BTreeMap<Key, Vec<u8>> {
    let stable = key(kind, "stable");
    ds.create(&stable, b"s".to_vec()).await.unwrap();
    BTreeMap::from([(stable, b"s".to_vec())])
}

/// After the connection drops, the watch resumes and ends with exactly the stored state.
pub async fn watch_resumes_after_interruption(b: &dyn Backend) {
    let ds = b.store();
    let kind = "conf-resume";
    let mut want = seed(&ds, kind).await;
    let mut w = watch(Arc::clone(&ds), kind, backoff());
    let mut seen = BTreeMap::new();
    converge(&mut w, &mut seen, &want).await;
    for round in 0..3 {
        b.interrupt().await;
        churn(&ds, kind, &mut want, round).await;
        converge(&mut w, &mut seen, &want).await;
    }
}

/// When the revision to resume from has been compacted, the watch lists again and reports only
/// the difference: no lost and no duplicated state (checked by [`converge`]).
///
/// Returns in how many of the 3 rounds the watch relisted (a `Synced` after the interruption):
/// the watcher waits 300 ms before resuming, so normally all 3; a slow backend may resume
/// before the compaction, which is correct too but does not exercise the relist.
pub async fn watch_relists_after_compaction(b: &dyn Backend) -> usize {
    let ds = b.store();
    let kind = "conf-compact";
    let mut want = seed(&ds, kind).await;
    let slow = Backoff {
        initial: Duration::from_millis(300),
        max: Duration::from_secs(1),
    };
    let mut w = watch(Arc::clone(&ds), kind, slow);
    let mut seen = BTreeMap::new();
    converge(&mut w, &mut seen, &want).await;
    let mut relists = 0;
    for round in 0..3 {
        b.interrupt().await;
        churn(&ds, kind, &mut want, round).await;
        b.compact().await;
        let log = converge(&mut w, &mut seen, &want).await;
        relists += usize::from(log.contains(&WatchEvent::Synced));
    }
    // A raw watch from before the compaction must say so, never silently skip history.
    let old = Revision("1".into());
    match ds.watch(kind, &old).await {
        Err(Error::Expired { .. }) => {}
        Ok(mut raw) => match tokio::time::timeout(WAIT, raw.next()).await {
            Ok(Some(Err(Error::Expired { .. }))) => {}
            other => panic!("a watch from compacted revision 1 must expire, got {other:?}"),
        },
        Err(e) => panic!("a watch from a compacted revision must expire, got {e}"),
    }
    relists
}

/// Bad bytes under our prefix give an error naming the key, never a panic, and the typed watch
/// reports them and goes on.
pub async fn bad_data_is_reported_with_its_key(b: &dyn Backend) {
    use k8s_openapi::api::core::v1::ConfigMap;
    let ds = b.store();
    let typed = crate::Typed::<ConfigMap>::new(Arc::clone(&ds));
    let bad = Key::namespaced("configmaps", "conf-bad", "garbage").unwrap();
    b.put_raw(&bad, b"{not json".to_vec()).await;
    match typed.get(Some("conf-bad"), "garbage").await {
        Err(Error::Invalid { key, why }) => {
            assert_eq!(key, "configmaps/conf-bad/garbage");
            assert!(why.contains("not a valid ConfigMap"), "{why}");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    let mut w = typed.watch(backoff());
    let first = tokio::time::timeout(WAIT, w.next())
        .await
        .expect("an item")
        .expect("not ended");
    assert!(
        matches!(first, Err(Error::Invalid { .. })),
        "bad object reported: {first:?}"
    );
    let mut good = ConfigMap::default();
    good.metadata.name = Some("fine".into());
    good.metadata.namespace = Some("conf-bad".into());
    typed.create(&good).await.expect("create good");
    loop {
        match tokio::time::timeout(WAIT, w.next())
            .await
            .expect("an item")
            .expect("not ended")
        {
            Ok(crate::Event::Added(cm)) if cm.metadata.name.as_deref() == Some("fine") => break,
            Ok(_) | Err(_) => continue,
        }
    }
}

/// Runs every check (each on its own kinds) against one backend.
pub async fn run_all(b: &dyn Backend) {
    crud(b).await;
    namespaces(b).await;
    no_lost_update(b).await;
    watch_order(b).await;
    watch_lists_first(b).await;
    watch_resumes_after_interruption(b).await;
    watch_relists_after_compaction(b).await;
    bad_data_is_reported_with_its_key(b).await;
}
