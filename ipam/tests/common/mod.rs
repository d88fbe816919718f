//! Test helpers: a datastore decorator that injects faults, pools, config.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use margay_api::ipam::IPAM_CONFIG_NAME;
use margay_api::{IPAMBlock, IPAMConfig, IPAMConfigSpec, IPAMHandle, IPPool, IPPoolSpec};
use margay_datastore::{
    Datastore, Error, Key, Listing, Memory, RawWatch, Result, Revision, Stored, Typed,
};

/// Wraps a datastore and misbehaves on purpose: every `conflict_every`-th update fails with
/// `Conflict` without writing; every `crash_every`-th write (create, update, delete) is carried
/// out and then reported as `Unavailable`, as a process that dies (or a connection that drops)
/// right after its write does. Every call may yield to the scheduler first, so that concurrent
/// tasks interleave at each datastore call.
#[derive(Debug)]
pub struct Faulty {
    pub inner: Arc<dyn Datastore>,
    writes: AtomicU64,
    updates: AtomicU64,
    pub conflict_every: AtomicU64,
    pub crash_every: AtomicU64,
    rng: Mutex<u64>,
}

impl Faulty {
    pub fn new(inner: Arc<dyn Datastore>, seed: u64) -> Self {
        Faulty {
            inner,
            writes: AtomicU64::new(0),
            updates: AtomicU64::new(0),
            conflict_every: AtomicU64::new(0),
            crash_every: AtomicU64::new(0),
            rng: Mutex::new(seed | 1),
        }
    }

    pub fn set_faults(&self, conflict_every: u64, crash_every: u64) {
        self.conflict_every.store(conflict_every, Ordering::SeqCst);
        self.crash_every.store(crash_every, Ordering::SeqCst);
    }

    async fn jitter(&self) {
        let n = {
            let mut x = self.rng.lock().unwrap();
            *x ^= *x << 13;
            *x ^= *x >> 7;
            *x ^= *x << 17;
            *x % 3
        };
        for _ in 0..n {
            tokio::task::yield_now().await;
        }
    }

    fn crash_now(&self) -> bool {
        let every = self.crash_every.load(Ordering::SeqCst);
        let n = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        every > 0 && n.is_multiple_of(every)
    }

    fn crashed(key: &Key) -> Error {
        Error::Unavailable {
            what: format!("injected crash after writing {key}"),
            source: None,
        }
    }
}

#[async_trait::async_trait]
impl Datastore for Faulty {
    async fn get(&self, key: &Key) -> Result<Stored> {
        self.jitter().await;
        self.inner.get(key).await
    }

    async fn list(&self, kind: &str, namespace: Option<&str>) -> Result<Listing> {
        self.jitter().await;
        self.inner.list(kind, namespace).await
    }

    async fn create(&self, key: &Key, value: Vec<u8>) -> Result<Revision> {
        self.jitter().await;
        let crash = self.crash_now();
        let r = self.inner.create(key, value).await?;
        if crash {
            return Err(Self::crashed(key));
        }
        Ok(r)
    }

    async fn update(&self, key: &Key, value: Vec<u8>, expected: &Revision) -> Result<Revision> {
        self.jitter().await;
        let every = self.conflict_every.load(Ordering::SeqCst);
        let n = self.updates.fetch_add(1, Ordering::SeqCst) + 1;
        if every > 0 && n.is_multiple_of(every) {
            return Err(Error::Conflict {
                key: key.clone(),
                expected: expected.0.clone(),
            });
        }
        let crash = self.crash_now();
        let r = self.inner.update(key, value, expected).await?;
        if crash {
            return Err(Self::crashed(key));
        }
        Ok(r)
    }

    async fn delete(&self, key: &Key, expected: Option<&Revision>) -> Result<()> {
        self.jitter().await;
        let crash = self.crash_now();
        self.inner.delete(key, expected).await?;
        if crash {
            return Err(Self::crashed(key));
        }
        Ok(())
    }

    async fn watch(&self, kind: &str, from: &Revision) -> Result<RawWatch> {
        self.inner.watch(kind, from).await
    }

    fn describe(&self) -> String {
        format!("faulty {}", self.inner.describe())
    }
}

pub fn memory() -> Arc<dyn Datastore> {
    Arc::new(Memory::new())
}

pub async fn add_pool(ds: &Arc<dyn Datastore>, name: &str, cidr: &str, block_size: u8) {
    let mut spec = IPPoolSpec::new(cidr);
    spec.block_size = Some(block_size);
    Typed::<IPPool>::new(Arc::clone(ds))
        .create(&IPPool::new(name, spec))
        .await
        .expect("create pool");
}

pub async fn set_config(ds: &Arc<dyn Datastore>, spec: IPAMConfigSpec) {
    let t = Typed::<IPAMConfig>::new(Arc::clone(ds));
    match t.get(None, IPAM_CONFIG_NAME).await {
        Ok(mut c) => {
            c.spec = spec;
            t.update(&c).await.expect("update config");
        }
        Err(_) => {
            t.create(&IPAMConfig::new(IPAM_CONFIG_NAME, spec))
                .await
                .expect("create config");
        }
    }
}

pub async fn blocks(ds: &Arc<dyn Datastore>) -> Vec<IPAMBlock> {
    Typed::<IPAMBlock>::new(Arc::clone(ds))
        .list(None)
        .await
        .expect("list blocks")
        .0
}

pub async fn handles(ds: &Arc<dyn Datastore>) -> Vec<IPAMHandle> {
    Typed::<IPAMHandle>::new(Arc::clone(ds))
        .list(None)
        .await
        .expect("list handles")
        .0
}

/// Who holds each allocated address, from the datastore.
pub async fn holders(ds: &Arc<dyn Datastore>) -> BTreeMap<IpAddr, String> {
    let mut out = BTreeMap::new();
    for b in blocks(ds).await {
        for (ord, attr) in b.spec.allocated() {
            let h = attr.and_then(|a| a.handle_id.clone()).unwrap_or_default();
            let ip = b.spec.address_of(ord).unwrap();
            assert!(out.insert(ip, h).is_none(), "{ip} twice in the store");
        }
    }
    out
}

/// Every block where a handle holds an address is listed in its handle record.
pub async fn assert_handle_records_complete(ds: &Arc<dyn Datastore>) {
    let records: BTreeMap<String, BTreeSet<String>> = handles(ds)
        .await
        .into_iter()
        .map(|h| (h.spec.handle_id, h.spec.block.into_keys().collect()))
        .collect();
    for b in blocks(ds).await {
        for (_, attr) in b.spec.allocated() {
            let h = attr.and_then(|a| a.handle_id.clone()).unwrap_or_default();
            let listed = records.get(&h).is_some_and(|bs| bs.contains(&b.spec.cidr));
            assert!(
                listed,
                "handle {h} holds an address in {} but its record does not list it",
                b.spec.cidr
            );
        }
    }
}

pub fn attrs(pod: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("namespace".to_string(), "default".to_string()),
        ("pod".to_string(), pod.to_string()),
    ])
}
