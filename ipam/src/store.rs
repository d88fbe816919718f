//! Typed access to the IPAM objects, handle records, and the retry pacing every CAS loop uses.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ipnet::IpNet;
use margay_api::names::is_dns1123_subdomain;
use margay_api::{
    BlockAffinity, IPAMBlock, IPAMConfig, IPAMConfigSpec, IPAMHandle, IPAMHandleSpec, IPPool,
};
use margay_datastore::{Datastore, Error as DsError, Typed};

use crate::errors::{IpamError, Result};

/// How hard IPAM tries before giving up on a contended object.
#[derive(Debug, Clone)]
pub struct Retry {
    /// Compare-and-swap attempts per write (default 10).
    pub attempts: usize,
    /// The first back-off after a conflict (default 2 ms); it doubles up to `max_backoff`, each
    /// wait drawn at random between half and the whole of it.
    pub backoff: Duration,
    /// The longest back-off (default 100 ms).
    pub max_backoff: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 10,
            backoff: Duration::from_millis(2),
            max_backoff: Duration::from_millis(100),
        }
    }
}

/// The typed views of IPAM's kinds over one datastore.
#[derive(Debug)]
pub(crate) struct Store {
    pub ds: Arc<dyn Datastore>,
    pub blocks: Typed<IPAMBlock>,
    pub affinities: Typed<BlockAffinity>,
    pub handles: Typed<IPAMHandle>,
    pub configs: Typed<IPAMConfig>,
    pub pools: Typed<IPPool>,
    pub retry: Retry,
    seed: RandomState,
    counter: AtomicU64,
}

/// The object name of a handle record: the handle id when it is a valid name, else `h-` and the
/// SHA-1 of the id (the id itself is always in the spec).
pub fn handle_object_name(handle: &str) -> Result<String> {
    if handle.is_empty() {
        return Err(IpamError::BadHandle {
            handle: handle.into(),
            why: "it is empty".into(),
        });
    }
    if is_dns1123_subdomain(handle) {
        Ok(handle.to_string())
    } else {
        Ok(format!(
            "h-{}",
            sha1_smol::Sha1::from(handle.as_bytes()).digest()
        ))
    }
}

impl Store {
    pub fn new(ds: Arc<dyn Datastore>, retry: Retry) -> Self {
        Store {
            blocks: Typed::new(Arc::clone(&ds)),
            affinities: Typed::new(Arc::clone(&ds)),
            handles: Typed::new(Arc::clone(&ds)),
            configs: Typed::new(Arc::clone(&ds)),
            pools: Typed::new(Arc::clone(&ds)),
            ds,
            retry,
            seed: RandomState::new(),
            counter: AtomicU64::new(0),
        }
    }

    /// A random number, cheap and good enough for jitter.
    pub fn random(&self) -> u64 {
        let mut h = self.seed.build_hasher();
        h.write_u64(self.counter.fetch_add(1, Ordering::Relaxed));
        h.finish()
    }

    /// Waits before retry number `attempt` (0-based) after a conflict, with jitter.
    pub async fn backoff(&self, attempt: usize) {
        let base = self.retry.backoff.as_micros() as u64;
        let cap = self.retry.max_backoff.as_micros() as u64;
        let full = base.saturating_mul(1 << attempt.min(16)).min(cap).max(1);
        let wait = full / 2 + self.random() % (full / 2 + 1);
        tokio::time::sleep(Duration::from_micros(wait)).await;
    }

    /// The cluster's IPAM settings (the defaults when there is no `default` object).
    pub async fn config(&self) -> Result<IPAMConfigSpec> {
        match self
            .configs
            .get(None, margay_api::ipam::IPAM_CONFIG_NAME)
            .await
        {
            Ok(c) => Ok(c.spec),
            Err(DsError::NotFound(_)) => Ok(IPAMConfigSpec::default()),
            Err(e) => Err(IpamError::datastore("reading IPAMConfig default", e)),
        }
    }

    /// Every pool.
    pub async fn list_pools(&self) -> Result<Vec<IPPool>> {
        self.pools
            .list(None)
            .await
            .map(|(p, _)| p)
            .map_err(|e| IpamError::datastore("listing IP pools", e))
    }

    /// Every block.
    pub async fn list_blocks(&self) -> Result<Vec<IPAMBlock>> {
        self.blocks
            .list(None)
            .await
            .map(|(b, _)| b)
            .map_err(|e| IpamError::datastore("listing IPAM blocks", e))
    }

    /// Every block affinity.
    pub async fn list_affinities(&self) -> Result<Vec<BlockAffinity>> {
        self.affinities
            .list(None)
            .await
            .map(|(a, _)| a)
            .map_err(|e| IpamError::datastore("listing block affinities", e))
    }

    /// Every handle record.
    pub async fn list_handles(&self) -> Result<Vec<IPAMHandle>> {
        self.handles
            .list(None)
            .await
            .map(|(h, _)| h)
            .map_err(|e| IpamError::datastore("listing IPAM handles", e))
    }

    /// Reads a handle record; `None` when there is none.
    pub async fn get_handle(&self, handle: &str) -> Result<Option<IPAMHandle>> {
        let name = handle_object_name(handle)?;
        match self.handles.get(None, &name).await {
            Ok(h) => Ok(Some(h)),
            Err(DsError::NotFound(_)) => Ok(None),
            Err(e) => Err(IpamError::datastore(
                format!("reading IPAM handle {handle:?}"),
                e,
            )),
        }
    }

    /// Records that `handle` holds `n` more addresses in `block` (written before the block, so
    /// that a handle record always lists every block where its handle holds an address).
    pub async fn handle_add(&self, handle: &str, block: &IpNet, n: u32) -> Result<()> {
        let name = handle_object_name(handle)?;
        let what = || format!("recording {n} address(es) of {block} in IPAM handle {handle:?}");
        // A pod's handle is new almost always: try to create it first (one round trip).
        let mut create = true;
        for attempt in 0..self.retry.attempts.max(1) {
            if create {
                let spec = IPAMHandleSpec {
                    handle_id: handle.to_string(),
                    block: [(block.to_string(), n)].into(),
                    deleted: false,
                };
                match self.handles.create(&IPAMHandle::new(&name, spec)).await {
                    Ok(_) => return Ok(()),
                    Err(DsError::AlreadyExists(_)) => create = false,
                    Err(e) => return Err(IpamError::datastore(what(), e)),
                }
            }
            let result = match self.handles.get(None, &name).await {
                Err(DsError::NotFound(_)) => {
                    create = true;
                    continue;
                }
                Err(e) => return Err(IpamError::datastore(what(), e)),
                Ok(mut h) => {
                    *h.spec.block.entry(block.to_string()).or_default() += n;
                    self.handles.update(&h).await.map(drop)
                }
            };
            match result {
                Ok(()) => return Ok(()),
                Err(DsError::NotFound(_)) => create = true,
                Err(DsError::Conflict { .. }) => self.backoff(attempt).await,
                Err(e) => return Err(IpamError::datastore(what(), e)),
            }
        }
        Err(IpamError::TooManyConflicts {
            what: what(),
            attempts: self.retry.attempts,
        })
    }

    /// Records that `handle` holds `n` fewer addresses in each listed block (`None`: none at
    /// all); deletes the record when it holds nothing. Missing records are fine.
    pub async fn handle_sub(&self, handle: &str, blocks: &[(IpNet, Option<u32>)]) -> Result<()> {
        if blocks.is_empty() {
            return Ok(());
        }
        let name = handle_object_name(handle)?;
        let what = || format!("removing addresses from IPAM handle {handle:?}");
        for attempt in 0..self.retry.attempts.max(1) {
            let mut h = match self.handles.get(None, &name).await {
                Err(DsError::NotFound(_)) => return Ok(()),
                Err(e) => return Err(IpamError::datastore(what(), e)),
                Ok(h) => h,
            };
            for (block, n) in blocks {
                let key = block.to_string();
                let left = match (h.spec.block.get(&key), n) {
                    (None, _) => continue,
                    (Some(_), None) => 0,
                    (Some(have), Some(n)) => have.saturating_sub(*n),
                };
                if left == 0 {
                    h.spec.block.remove(&key);
                } else {
                    h.spec.block.insert(key, left);
                }
            }
            let result = if h.spec.block.is_empty() {
                let rev = h
                    .metadata
                    .resource_version
                    .clone()
                    .map(margay_datastore::Revision);
                self.handles.delete(None, &name, rev.as_ref()).await
            } else {
                self.handles.update(&h).await.map(drop)
            };
            match result {
                Ok(()) | Err(DsError::NotFound(_)) => return Ok(()),
                Err(DsError::Conflict { .. }) => self.backoff(attempt).await,
                Err(e) => return Err(IpamError::datastore(what(), e)),
            }
        }
        Err(IpamError::TooManyConflicts {
            what: what(),
            attempts: self.retry.attempts,
        })
    }
}

/// The CIDR of a stored block.
pub(crate) fn block_net(b: &IPAMBlock) -> Result<IpNet> {
    b.spec.net().map_err(|e| IpamError::Invalid {
        what: format!("IPAM block {}", b.metadata.name.as_deref().unwrap_or("?")),
        why: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handle_ids_that_are_valid_names_name_their_record() {
        assert_eq!(
            handle_object_name("margay-pod-network.0123abcd").unwrap(),
            "margay-pod-network.0123abcd"
        );
        let odd = handle_object_name("k8s-pod-network.Pod_1/x").unwrap();
        assert!(odd.starts_with("h-") && odd.len() == 42, "{odd}");
        assert!(handle_object_name("").is_err());
    }
}
