//! [`Ipam`]: the entry point, shared by every node allocator of a process, and release by handle
//! or address.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use margay_api::{IPAMConfigSpec, IPPool};
use margay_datastore::Datastore;
use tracing::{Instrument, debug, info_span};

use crate::allocator::{NodeAllocator, NodeState};
use crate::block::{BlockOp, Outcome};
use crate::cidr::block_containing;
use crate::commit::{Committers, Failure};
use crate::errors::{IpamError, Result};
use crate::pools::pool_containing;
use crate::store::{Retry, Store, block_net};

/// How IPAM behaves in this process.
#[derive(Debug, Clone)]
pub struct Options {
    /// Compare-and-swap retries and back-off.
    pub retry: Retry,
    /// How long the list of pools and the IPAMConfig are reused before being read again
    /// (default 2 s). When no cached pool is usable for a request, the pools are read again.
    pub cache_ttl: Duration,
    /// How many empty blocks a node keeps per family when addresses are released, so that the
    /// next pod does not have to claim a block again (default 1).
    pub reserve_blocks: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            retry: Retry::default(),
            cache_ttl: Duration::from_secs(2),
            reserve_blocks: 1,
        }
    }
}

pub(crate) struct Inner {
    pub store: Store,
    pub committers: Committers,
    pub opts: Options,
    pools: Mutex<Option<(Instant, Arc<Vec<IPPool>>)>>,
    config: Mutex<Option<(Instant, IPAMConfigSpec)>>,
    nodes: Mutex<HashMap<String, Arc<NodeState>>>,
}

/// IPAM over one datastore. Cheap to clone; one per process, shared by its node allocators so
/// that every write of a block in the process goes through one group-commit queue.
#[derive(Clone)]
pub struct Ipam {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Ipam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ipam")
            .field("datastore", &self.inner.store.ds.describe())
            .finish_non_exhaustive()
    }
}

impl Ipam {
    /// IPAM over `ds` with default options.
    pub fn new(ds: Arc<dyn Datastore>) -> Self {
        Self::with_options(ds, Options::default())
    }

    /// IPAM over `ds`.
    pub fn with_options(ds: Arc<dyn Datastore>, opts: Options) -> Self {
        Ipam {
            inner: Arc::new(Inner {
                store: Store::new(ds, opts.retry.clone()),
                committers: Committers::default(),
                opts,
                pools: Mutex::new(None),
                config: Mutex::new(None),
                nodes: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The allocator of node `node` whose labels are `labels` (matched against pools'
    /// `nodeSelector`). Allocators of one node made from one `Ipam` share its blocks and its
    /// claim lock, so that they claim one block at a time between them.
    pub fn node(&self, node: &str, labels: BTreeMap<String, String>) -> NodeAllocator {
        let state = {
            let mut nodes = self.inner.nodes.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(nodes.entry(node.to_string()).or_default())
        };
        NodeAllocator::new(self.clone(), node, labels, state)
    }

    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The pools, from a cache younger than `cache_ttl` unless `fresh`.
    pub(crate) async fn pools(&self, fresh: bool) -> Result<Arc<Vec<IPPool>>> {
        let ttl = self.inner.opts.cache_ttl;
        if !fresh {
            let cached = self.inner.pools.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, pools)) = cached.as_ref()
                && at.elapsed() < ttl
            {
                return Ok(Arc::clone(pools));
            }
        }
        let pools = Arc::new(self.store().list_pools().await?);
        *self.inner.pools.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), Arc::clone(&pools)));
        Ok(pools)
    }

    /// The IPAM config, from a cache younger than `cache_ttl` unless `fresh`.
    pub(crate) async fn config(&self, fresh: bool) -> Result<IPAMConfigSpec> {
        let ttl = self.inner.opts.cache_ttl;
        if !fresh {
            let cached = self.inner.config.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, c)) = cached.as_ref()
                && at.elapsed() < ttl
            {
                return Ok(c.clone());
            }
        }
        let c = self.store().config().await?;
        *self.inner.config.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), c.clone()));
        Ok(c)
    }

    /// Writes and operations carried by group commit so far in this process: operations per
    /// write is how many requests one block write carried on average.
    pub fn group_commit_stats(&self) -> (u64, u64) {
        self.inner.committers.stats()
    }

    /// The block that holds `ip`: from its pool's block size, or, for an address outside every
    /// pool (the pool was deleted), by searching the blocks.
    pub(crate) async fn block_of(&self, ip: IpAddr) -> Result<Option<IpNet>> {
        let pools = self.pools(false).await?;
        if let Some(p) = pool_containing(&pools, ip)
            && let Ok(b) = block_containing(ip, p.spec.block_size())
        {
            return Ok(Some(b));
        }
        for b in self.store().list_blocks().await? {
            let net = block_net(&b)?;
            if net.contains(&ip) {
                return Ok(Some(net));
            }
        }
        Ok(None)
    }

    /// The addresses `handle` holds (CNI CHECK, `margayctl ipam show --handle`).
    pub async fn addresses_of(&self, handle: &str) -> Result<Vec<IpAddr>> {
        let Some(record) = self.store().get_handle(handle).await? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for cidr in record.spec.block.keys() {
            let Ok(net) = cidr.parse::<IpNet>() else {
                continue;
            };
            let name = margay_api::IPAMBlock::name_for(&net);
            match self.store().blocks.get(None, &name).await {
                Ok(b) => out.extend(crate::block::addresses_of_handle(&b.spec, handle)),
                Err(margay_datastore::Error::NotFound(_)) => {}
                Err(e) => return Err(IpamError::datastore(format!("reading block {net}"), e)),
            }
        }
        Ok(out)
    }

    /// Frees every address `handle` holds and deletes its record. Exact (only what the handle
    /// holds) and idempotent (a handle already released frees nothing). Returns the freed
    /// addresses and the blocks they were in.
    pub async fn release_handle(&self, handle: &str) -> Result<Vec<(IpAddr, IpNet)>> {
        let span = info_span!("release_handle", handle);
        async {
            let Some(record) = self.store().get_handle(handle).await? else {
                debug!("no such handle: nothing to release");
                return Ok(Vec::new());
            };
            let mut freed = Vec::new();
            let mut done = Vec::new();
            for cidr in record.spec.block.keys() {
                let net: IpNet = cidr.parse().map_err(|_| IpamError::Invalid {
                    what: format!("IPAM handle {handle:?}"),
                    why: format!("block {cidr:?} is not a CIDR"),
                })?;
                let op = BlockOp::ReleaseHandle {
                    handle: handle.to_string(),
                };
                match self
                    .inner
                    .committers
                    .get(net)
                    .submit(self.store(), op)
                    .await
                {
                    Ok(Ok(Outcome::Released(ips))) => {
                        freed.extend(ips.into_iter().map(|(ip, _)| (ip, net)));
                    }
                    Ok(_) | Err(Failure::Gone) => {}
                    Err(Failure::Error(e)) => return Err(e),
                }
                done.push((net, None));
            }
            // Delete the record as read, if no allocation came in since; else subtract.
            let rev = record
                .metadata
                .resource_version
                .clone()
                .map(margay_datastore::Revision);
            let name = crate::store::handle_object_name(handle)?;
            match self.store().handles.delete(None, &name, rev.as_ref()).await {
                Ok(()) | Err(margay_datastore::Error::NotFound(_)) => {}
                Err(margay_datastore::Error::Conflict { .. }) => {
                    self.store().handle_sub(handle, &done).await?;
                }
                Err(e) => {
                    return Err(IpamError::datastore(
                        format!("deleting IPAM handle {handle:?}"),
                        e,
                    ));
                }
            }
            debug!(freed = freed.len(), "released");
            Ok(freed)
        }
        .instrument(span)
        .await
    }

    /// Frees the given addresses, whoever holds them, and updates their handles' records.
    /// Addresses that are not allocated are skipped. Returns what was freed, with the handle
    /// that held it and its block.
    pub async fn release_ips(&self, ips: &[IpAddr]) -> Result<Vec<Released>> {
        self.release_ips_held_by(ips, None).await
    }

    /// Frees the given addresses only where `handle` (when given) still holds them.
    pub(crate) async fn release_ips_held_by(
        &self,
        ips: &[IpAddr],
        handle: Option<&str>,
    ) -> Result<Vec<Released>> {
        let mut by_block: BTreeMap<IpNet, Vec<IpAddr>> = BTreeMap::new();
        for ip in ips {
            if let Some(b) = self.block_of(*ip).await? {
                by_block.entry(b).or_default().push(*ip);
            }
        }
        let mut out = Vec::new();
        for (net, ips) in by_block {
            let op = BlockOp::ReleaseIps {
                ips,
                handle: handle.map(str::to_string),
            };
            let freed = match self
                .inner
                .committers
                .get(net)
                .submit(self.store(), op)
                .await
            {
                Ok(Ok(Outcome::Released(f))) => f,
                Ok(_) | Err(Failure::Gone) => continue,
                Err(Failure::Error(e)) => return Err(e),
            };
            let mut per_handle: HashMap<String, u32> = HashMap::new();
            for (ip, h) in freed {
                if let Some(h) = &h {
                    *per_handle.entry(h.clone()).or_default() += 1;
                }
                out.push(Released {
                    ip,
                    handle: h,
                    block: net,
                });
            }
            for (h, n) in per_handle {
                // Best effort: an over-counted record is harmless (release by handle reads
                // the blocks) and check() reports a record left with no addresses.
                if let Err(e) = self.store().handle_sub(&h, &[(net, Some(n))]).await {
                    tracing::warn!(handle = h, error = %e, "could not update handle record");
                }
            }
        }
        Ok(out)
    }
}

/// One freed address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    /// The address.
    pub ip: IpAddr,
    /// The handle that held it.
    pub handle: Option<String>,
    /// Its block.
    pub block: IpNet,
}
