//! A node's blocks: claiming one by compare-and-swap, recovering half-finished claims, and
//! giving up empty ones.
//!
//! A claim is three writes, each of which may be the last before a crash:
//!
//! 1. the affinity `NODE-CIDR` is created `pending`;
//! 2. the block is created with `affinity: host:NODE` (create fails if another node has it: the
//!    block's existence is the lock, so two nodes never own one block);
//! 3. the affinity is set `confirmed`.
//!
//! Giving a block up is the reverse: affinity `pendingDeletion`, block deleted with a CAS on the
//! revision at which it was seen empty (so an allocation in between wins), affinity deleted.
//! When a node's allocator starts, it finishes or undoes whatever it finds half done.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use ipnet::IpNet;
use margay_api::ipam::AffinityState;
use margay_api::{BlockAffinity, IPAMBlock, IPAMConfigSpec, IPPool};
use margay_datastore::Error as DsError;
use tracing::{debug, info, warn};

use crate::allocator::NodeAllocator;
use crate::errors::{Family, IpamError, Result};
use crate::store::block_net;

/// What a claim attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// The node owns this new block.
    Claimed(IpNet),
    /// The node holds `maxBlocksPerHost` blocks.
    AtMax(u32),
    /// Every block of the pools is taken.
    NoSpace,
    /// `autoAllocateBlocks` is off.
    NotAllowed,
}

/// A stable hash of a node name, to spread nodes' first blocks over a pool.
fn spread(node: &str) -> u128 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    u128::from(h)
}

/// The `index`-th block of `block_size` in `pool`.
fn nth_block(pool: &IpNet, block_size: u8, index: u128) -> Option<IpNet> {
    let shift = u32::from(pool.max_prefix_len() - block_size);
    let offset = index.checked_shl(shift)?;
    let addr = match pool.network() {
        std::net::IpAddr::V4(a) => {
            let v = u32::try_from(u128::from(u32::from(a)).checked_add(offset)?).ok()?;
            std::net::IpAddr::V4(v.into())
        }
        std::net::IpAddr::V6(a) => std::net::IpAddr::V6(u128::from(a).checked_add(offset)?.into()),
    };
    IpNet::new(addr, block_size).ok()
}

fn blocks_in(pool: &IpNet, block_size: u8) -> u128 {
    let bits = u32::from(block_size.saturating_sub(pool.prefix_len()));
    1u128.checked_shl(bits).unwrap_or(u128::MAX)
}

impl NodeAllocator {
    /// The node's confirmed blocks. Read from the datastore the first time (finishing or
    /// undoing half-done claims), then kept up to date by this allocator.
    pub(crate) async fn affine_blocks(&self) -> Result<Vec<IpNet>> {
        if let Some(set) = self
            .state
            .affine
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            return Ok(set.iter().copied().collect());
        }
        let set = self.recover().await?;
        let mut cache = self.state.affine.lock().unwrap_or_else(|p| p.into_inner());
        let set = cache.get_or_insert(set);
        Ok(set.iter().copied().collect())
    }

    /// Forgets the node's blocks, so that the next allocation reads them (and recovers) again.
    pub fn refresh(&self) {
        *self.state.affine.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    pub(crate) fn forget(&self, block: IpNet) {
        if let Some(set) = self
            .state
            .affine
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            set.remove(&block);
        }
    }

    fn remember(&self, block: IpNet) {
        if let Some(set) = self
            .state
            .affine
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            set.insert(block);
        }
    }

    async fn set_affinity(&self, block: IpNet, state: AffinityState) -> Result<()> {
        let store = self.ipam.store();
        let name = BlockAffinity::name_for(&self.node, &block);
        let r = store
            .affinities
            .update_with(None, &name, store.retry.attempts, |a| {
                let change = a.spec.state != state;
                a.spec.state = state;
                Ok(change)
            })
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(DsError::NotFound(_)) => {
                let mut a = BlockAffinity::pending(&self.node, &block);
                a.spec.state = state;
                match store.affinities.create(&a).await {
                    Ok(_) | Err(DsError::AlreadyExists(_)) => Ok(()),
                    Err(e) => Err(IpamError::datastore(format!("creating affinity {name}"), e)),
                }
            }
            Err(e) => Err(IpamError::datastore(
                format!("setting affinity {name} {state:?}"),
                e,
            )),
        }
    }

    async fn delete_affinity(&self, block: IpNet) -> Result<()> {
        let name = BlockAffinity::name_for(&self.node, &block);
        match self.ipam.store().affinities.delete(None, &name, None).await {
            Ok(()) | Err(DsError::NotFound(_)) => Ok(()),
            Err(e) => Err(IpamError::datastore(format!("deleting affinity {name}"), e)),
        }
    }

    /// Reads the node's affinities and blocks, and finishes or undoes half-done claims and
    /// releases. Returns the node's blocks.
    async fn recover(&self) -> Result<BTreeSet<IpNet>> {
        let store = self.ipam.store();
        let blocks: BTreeMap<IpNet, IPAMBlock> = store
            .list_blocks()
            .await?
            .into_iter()
            .filter_map(|b| Some((block_net(&b).ok()?, b)))
            .collect();
        let mut mine = BTreeSet::new();
        let mut seen = HashSet::new();
        for aff in store.list_affinities().await? {
            if aff.spec.node != self.node {
                continue;
            }
            let Ok(net) = aff.spec.cidr.parse::<IpNet>() else {
                warn!(affinity = ?aff.metadata.name, "affinity with a bad CIDR; check() reports it");
                continue;
            };
            seen.insert(net);
            let owned = blocks
                .get(&net)
                .filter(|b| b.spec.affinity_node() == Some(self.node.as_str()));
            match (aff.spec.state, owned) {
                (AffinityState::Confirmed, Some(_)) => {
                    mine.insert(net);
                }
                (AffinityState::Pending, Some(_)) => {
                    info!(block = %net, "finishing a claim interrupted after the block was created");
                    self.set_affinity(net, AffinityState::Confirmed).await?;
                    mine.insert(net);
                }
                (AffinityState::PendingDeletion, Some(b)) => {
                    let c = self.ipam.inner.committers.get(net);
                    if b.spec.is_empty() && c.delete_if_empty(store, Some(&self.node)).await? {
                        info!(block = %net, "finishing an interrupted release of an empty block");
                        self.delete_affinity(net).await?;
                    } else {
                        self.set_affinity(net, AffinityState::Confirmed).await?;
                        mine.insert(net);
                    }
                }
                (_, None) => {
                    info!(block = %net, state = ?aff.spec.state, "removing an affinity whose block is not the node's");
                    self.delete_affinity(net).await?;
                }
            }
        }
        for (net, b) in &blocks {
            if b.spec.affinity_node() == Some(self.node.as_str()) && !seen.contains(net) {
                info!(block = %net, "restoring the missing affinity of the node's block");
                self.set_affinity(*net, AffinityState::Confirmed).await?;
                mine.insert(*net);
            }
        }
        debug!(blocks = mine.len(), "node blocks loaded");
        Ok(mine)
    }

    /// Claims a free block from `pools`, honouring `autoAllocateBlocks` and `maxBlocksPerHost`.
    /// The caller holds the node's claim lock.
    pub(crate) async fn claim_block(
        &self,
        pools: &[IPPool],
        config: &IPAMConfigSpec,
    ) -> Result<Claim> {
        if !config.auto_allocate_blocks {
            return Ok(Claim::NotAllowed);
        }
        let store = self.ipam.store();
        let affinities = store.list_affinities().await?;
        if let Some(max) = config.max_blocks_per_host() {
            let held = affinities
                .iter()
                .filter(|a| a.spec.node == self.node && !a.spec.deleted)
                .count();
            if held >= max as usize {
                return Ok(Claim::AtMax(max));
            }
        }
        // Every block a node claims has an affinity (written first), and affinities are small:
        // they say which blocks are taken without reading the blocks themselves. A block
        // without one (an orphan) is found by the create below failing.
        let taken: HashSet<IpNet> = affinities
            .iter()
            .filter_map(|a| a.spec.cidr.parse::<IpNet>().ok())
            .collect();
        for pool in pools {
            let Some(net) = pool.spec.net() else { continue };
            let size = pool.spec.block_size();
            if size < net.prefix_len() || size > net.max_prefix_len() {
                continue;
            }
            let total = blocks_in(&net, size);
            let in_pool = taken.iter().filter(|b| net.contains(*b)).count() as u128;
            let start = spread(&self.node) % total;
            for i in 0..total.min(in_pool + 64) {
                let Some(candidate) = nth_block(&net, size, (start + i) % total) else {
                    continue;
                };
                if taken.contains(&candidate) {
                    continue;
                }
                if self.try_claim(candidate, config).await? {
                    return Ok(Claim::Claimed(candidate));
                }
            }
        }
        Ok(Claim::NoSpace)
    }

    /// Claims `block` for the node; `false` if another node has it. The caller holds the node's
    /// claim lock.
    pub(crate) async fn try_claim(&self, block: IpNet, config: &IPAMConfigSpec) -> Result<bool> {
        let store = self.ipam.store();
        let name = BlockAffinity::name_for(&self.node, &block);
        match store
            .affinities
            .create(&BlockAffinity::pending(&self.node, &block))
            .await
        {
            Ok(_) | Err(DsError::AlreadyExists(_)) => {}
            Err(e) => return Err(IpamError::datastore(format!("creating affinity {name}"), e)),
        }
        let mut new =
            IPAMBlock::empty(block, Some(&self.node)).map_err(|e| IpamError::Invalid {
                what: format!("block {block}"),
                why: e.to_string(),
            })?;
        new.spec.strict_affinity = config.strict_affinity;
        match store.blocks.create(&new).await {
            Ok(_) => {}
            Err(DsError::AlreadyExists(_)) => {
                let owner = match store.blocks.get(None, &IPAMBlock::name_for(&block)).await {
                    Ok(b) => b.spec.affinity_node().map(str::to_string),
                    Err(DsError::NotFound(_)) => None,
                    Err(e) => {
                        return Err(IpamError::datastore(format!("reading block {block}"), e));
                    }
                };
                if owner.as_deref() != Some(self.node.as_str()) {
                    debug!(%block, ?owner, "block taken by another node");
                    self.delete_affinity(block).await?;
                    return Ok(false);
                }
            }
            Err(e) => return Err(IpamError::datastore(format!("creating block {block}"), e)),
        }
        self.set_affinity(block, AffinityState::Confirmed).await?;
        info!(%block, "claimed block");
        self.remember(block);
        Ok(true)
    }

    /// Gives up the node's blocks among `blocks` that are empty, keeping `reserve_blocks` empty
    /// ones per family. Errors are logged: a block kept is only a block kept.
    pub(crate) async fn give_up_empty_blocks(&self, blocks: &BTreeSet<IpNet>) {
        let reserve = self.ipam.inner.opts.reserve_blocks;
        for &net in blocks {
            let Ok(own) = self.affine_blocks().await else {
                return;
            };
            if !own.contains(&net) {
                continue;
            }
            let empty = |b: &IpNet| {
                let size = margay_api::ipam::block_size_of(b);
                size.is_some() && self.ipam.inner.committers.get(*b).free_hint() == size
            };
            if !empty(&net) {
                continue;
            }
            let family = Family::of_net(&net);
            let empties = own
                .iter()
                .filter(|b| Family::of_net(b) == family && empty(b))
                .count();
            if empties <= reserve {
                continue;
            }
            let _claiming = self.state.claim.lock().await;
            // Another release may have given it up while this one waited.
            let still_own = self
                .state
                .affine
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .is_some_and(|s| s.contains(&net));
            if !still_own {
                continue;
            }
            if let Err(e) = self.release_block(net).await {
                warn!(block = %net, error = %e, "could not give up an empty block");
            }
        }
    }

    /// Gives up one of the node's blocks if it is empty; returns whether it did.
    pub(crate) async fn release_block(&self, block: IpNet) -> Result<bool> {
        self.forget(block);
        if let Err(e) = self
            .set_affinity(block, AffinityState::PendingDeletion)
            .await
        {
            self.remember(block);
            return Err(e);
        }
        let c = self.ipam.inner.committers.get(block);
        let deleted = c
            .delete_if_empty(self.ipam.store(), Some(&self.node))
            .await
            .inspect_err(|_| self.remember(block))?;
        if deleted {
            self.delete_affinity(block).await?;
            info!(%block, "gave up empty block");
            Ok(true)
        } else {
            self.set_affinity(block, AffinityState::Confirmed).await?;
            self.remember(block);
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn the_nth_block_of_a_pool_is_computed_directly() {
        let pool = net("100.64.0.0/16");
        assert_eq!(nth_block(&pool, 26, 0), Some(net("100.64.0.0/26")));
        assert_eq!(nth_block(&pool, 26, 5), Some(net("100.64.1.64/26")));
        assert_eq!(nth_block(&pool, 26, 1023), Some(net("100.64.255.192/26")));
        assert_eq!(blocks_in(&pool, 26), 1024);
        let v6 = net("fd00:1::/64");
        assert_eq!(nth_block(&v6, 122, 1), Some(net("fd00:1::40/122")));
        assert_eq!(blocks_in(&v6, 122), 1 << 58);
    }

    #[test]
    fn nodes_start_their_search_at_different_blocks() {
        assert_ne!(spread("node-1") % 1024, spread("node-2") % 1024);
        assert_eq!(spread("node-1"), spread("node-1"));
    }
}
