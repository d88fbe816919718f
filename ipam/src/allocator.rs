//! [`NodeAllocator`]: a node's allocations — `auto_assign`, `assign_ip` and release.
//!
//! An allocation first tries the node's own blocks, then claims a new block (one claim at a time
//! per node, so that 100 pods arriving on a full node claim one block, not 100), then, unless
//! strict affinity forbids it, borrows single addresses from other nodes' blocks. The handle
//! record is written before the block, so it always lists every block where the handle holds an
//! address and release by handle is exact; it may over-count after a failure, which is harmless
//! and reported by `check()`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ipnet::IpNet;
use margay_api::IPPool;
use margay_api::ipam::{ATTR_NODE, AllocationAttribute};
use margay_api::ippool::AllowedUse;
use tracing::{Instrument, debug, info_span, warn};

use crate::block::{BlockOp, OpError, Outcome, Use};
use crate::cidr::block_containing;
use crate::claim::Claim;
use crate::commit::Failure;
use crate::errors::{Family, IpamError, Result};
use crate::ipam::{Ipam, Released};
use crate::pools::{PodRequest, describe, pool_containing, select_pools};
use crate::store::{block_net, handle_object_name};

/// One address handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Assigned {
    /// The address.
    pub ip: IpAddr,
    /// The block it came from.
    pub block: IpNet,
    /// Whether it was borrowed from a block that is not the node's: the agent exports it as a
    /// /32 (/128) route, since the block's route points at its owner.
    pub borrowed: bool,
}

/// The addresses one `auto_assign` handed out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assignment {
    /// IPv4 addresses.
    pub v4: Vec<Assigned>,
    /// IPv6 addresses.
    pub v6: Vec<Assigned>,
}

impl Assignment {
    /// Every address, IPv4 first.
    pub fn ips(&self) -> Vec<IpAddr> {
        self.v4.iter().chain(&self.v6).map(|a| a.ip).collect()
    }
}

/// What to allocate, for [`NodeAllocator::auto_assign_with`].
#[derive(Debug, Clone, Default)]
pub struct AssignArgs {
    /// The handle the addresses are recorded under (e.g. `margay-pod-network.CONTAINER_ID`).
    pub handle: String,
    /// Secondary attributes: `namespace`, `pod` (the node is added).
    pub attrs: BTreeMap<String, String>,
    /// How many IPv4 addresses.
    pub num_v4: usize,
    /// How many IPv6 addresses.
    pub num_v6: usize,
    /// Pools or exact addresses the pod asked for ([`crate::parse_annotations`]). Exact
    /// addresses replace `num_v4`/`num_v6`.
    pub request: PodRequest,
}

/// How [`NodeAllocator::fill_from_own`] reads a block's free-address hint.
#[derive(Debug, Clone, Copy)]
enum Hint {
    /// Skip a block whose free addresses are all asked for by requests in flight: concurrent
    /// allocations spread over the blocks instead of queueing on one.
    Spread,
    /// Ask every block not known to be full. The in-flight count also holds writes that are done
    /// but whose callers have not resumed yet, so it may call a block full that is not; before a
    /// new block is claimed, the block itself decides.
    AskUnlessFull,
}

#[derive(Debug, Default)]
pub(crate) struct NodeState {
    /// The node's confirmed blocks; `None` until read (and recovered) from the datastore.
    pub affine: Mutex<Option<BTreeSet<IpNet>>>,
    /// Held while claiming or giving up a block.
    pub claim: tokio::sync::Mutex<()>,
    /// Blocks claimed so far: a request that waited for the claim lock looks at the node's
    /// blocks again if this moved.
    pub claims: AtomicU64,
}

/// The allocator of one node. Cheap to clone; the agent keeps one for its node.
#[derive(Debug, Clone)]
pub struct NodeAllocator {
    pub(crate) ipam: Ipam,
    pub(crate) node: String,
    labels: BTreeMap<String, String>,
    pub(crate) state: Arc<NodeState>,
}

impl NodeAllocator {
    pub(crate) fn new(
        ipam: Ipam,
        node: &str,
        labels: BTreeMap<String, String>,
        state: Arc<NodeState>,
    ) -> Self {
        NodeAllocator {
            ipam,
            node: node.to_string(),
            labels,
            state,
        }
    }

    /// The node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The IPAM this allocator belongs to.
    pub fn ipam(&self) -> &Ipam {
        &self.ipam
    }

    fn attribute(&self, handle: &str, attrs: &BTreeMap<String, String>) -> AllocationAttribute {
        let mut secondary = attrs.clone();
        secondary
            .entry(ATTR_NODE.to_string())
            .or_insert_with(|| self.node.clone());
        AllocationAttribute {
            handle_id: Some(handle.to_string()),
            secondary,
        }
    }

    /// Allocates `num_v4` IPv4 and `num_v6` IPv6 addresses for `handle` from the pools usable
    /// on this node. All or nothing: on failure what was taken is given back.
    pub async fn auto_assign(
        &self,
        handle: &str,
        attrs: &BTreeMap<String, String>,
        num_v4: usize,
        num_v6: usize,
    ) -> Result<Assignment> {
        self.auto_assign_with(&AssignArgs {
            handle: handle.to_string(),
            attrs: attrs.clone(),
            num_v4,
            num_v6,
            request: PodRequest::default(),
        })
        .await
    }

    /// Allocates as [`NodeAllocator::auto_assign`] does, honouring the pools or addresses the pod
    /// asked for.
    pub async fn auto_assign_with(&self, args: &AssignArgs) -> Result<Assignment> {
        handle_object_name(&args.handle)?;
        let span = info_span!("auto_assign", node = %self.node, handle = %args.handle);
        async {
            let attr = self.attribute(&args.handle, &args.attrs);
            let mut out = Assignment::default();
            let result = self.assign_all(args, &attr, &mut out).await;
            if let Err(e) = result {
                let ips = out.ips();
                if !ips.is_empty()
                    && let Err(undo) = self
                        .ipam
                        .release_ips_held_by(&ips, Some(&args.handle))
                        .await
                {
                    warn!(error = %undo, "could not give back the addresses of a failed allocation; release the handle");
                }
                return Err(e);
            }
            debug!(ips = ?out.ips(), "assigned");
            Ok(out)
        }
        .instrument(span)
        .await
    }

    async fn assign_all(
        &self,
        args: &AssignArgs,
        attr: &AllocationAttribute,
        out: &mut Assignment,
    ) -> Result<()> {
        if let Some(ips) = &args.request.ip_addrs {
            for ip in ips {
                let a = self.assign_one(*ip, &args.handle, attr).await?;
                match Family::of(ip) {
                    Family::V4 => out.v4.push(a),
                    Family::V6 => out.v6.push(a),
                }
            }
            return Ok(());
        }
        let req = args.request.pools(Family::V4);
        self.assign_family(Family::V4, args.num_v4, attr, req, &mut out.v4)
            .await?;
        let req = args.request.pools(Family::V6);
        self.assign_family(Family::V6, args.num_v6, attr, req, &mut out.v6)
            .await
    }

    async fn usable_pools(
        &self,
        family: Family,
        requested: Option<&[String]>,
    ) -> Result<Vec<IPPool>> {
        let pick = |pools: &[IPPool]| {
            select_pools(
                pools,
                family,
                &self.node,
                &self.labels,
                requested,
                AllowedUse::Workload,
            )
            .map(|v| v.into_iter().cloned().collect::<Vec<_>>())
        };
        match pick(&self.ipam.pools(false).await?) {
            Ok(p) => Ok(p),
            Err(_) => pick(&self.ipam.pools(true).await?),
        }
    }

    async fn assign_family(
        &self,
        family: Family,
        n: usize,
        attr: &AllocationAttribute,
        requested: Option<&[String]>,
        got: &mut Vec<Assigned>,
    ) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let pools = self.usable_pools(family, requested).await?;
        let nets: Vec<IpNet> = pools.iter().filter_map(|p| p.spec.net()).collect();
        let config = self.ipam.config(false).await?;
        let mut at_max = None;
        let mut hint = Hint::Spread;
        loop {
            let claims_seen = self.state.claims.load(Ordering::Acquire);
            self.fill_from_own(&nets, n, attr, got, hint).await?;
            if got.len() >= n {
                break;
            }
            // One claim at a time per node; the lock is held for the decision and the claim,
            // never for an allocation in a block already held, so waiting requests do not queue
            // behind each other's writes.
            let _claiming = self.state.claim.lock().await;
            if self.state.claims.load(Ordering::Acquire) != claims_seen {
                // Another allocation claimed a block while this one waited: try it first.
                hint = Hint::Spread;
                continue;
            }
            if matches!(hint, Hint::Spread) {
                // The in-flight hint may have called the blocks full; let the blocks themselves
                // say so (those known to be full are not asked).
                hint = Hint::AskUnlessFull;
                continue;
            }
            let claim = self.claim_block(&pools, &config).await.inspect_err(|_| {
                // A claim cut short leaves a half-done claim: read and recover next time.
                self.refresh();
            })?;
            match claim {
                Claim::Claimed(net) => {
                    self.state.claims.fetch_add(1, Ordering::AcqRel);
                    self.take(net, n - got.len(), Use::Affine, attr, got)
                        .await?;
                    hint = Hint::Spread;
                }
                Claim::AtMax(max) => {
                    at_max = Some(max);
                    break;
                }
                Claim::NoSpace | Claim::NotAllowed => break,
            }
        }
        if got.len() < n && !config.strict_affinity {
            self.borrow(&nets, n, attr, got).await?;
        }
        if got.len() < n {
            if let (Some(max), true) = (at_max, config.strict_affinity) {
                return Err(IpamError::NodeAtMaxBlocks {
                    node: self.node.clone(),
                    max,
                });
            }
            return Err(IpamError::PoolsExhausted {
                family,
                node: self.node.clone(),
                pools: pools.iter().map(describe).collect(),
                wanted: n,
                got: got.len(),
                strict: config.strict_affinity,
                at_max,
            });
        }
        Ok(())
    }

    async fn fill_from_own(
        &self,
        nets: &[IpNet],
        n: usize,
        attr: &AllocationAttribute,
        got: &mut Vec<Assigned>,
        hint: Hint,
    ) -> Result<()> {
        for block in self.affine_blocks().await? {
            if got.len() >= n {
                break;
            }
            if !nets.iter().any(|p| p.contains(&block)) {
                continue;
            }
            let c = self.ipam.inner.committers.get(block);
            let ask = match hint {
                Hint::Spread => c.reserve(n - got.len()),
                Hint::AskUnlessFull => c.reserve_unless_full(n - got.len()),
            };
            if ask == 0 {
                continue;
            }
            let r = self.take(block, ask, Use::Affine, attr, got).await;
            c.unreserve(ask);
            r?;
        }
        Ok(())
    }

    async fn borrow(
        &self,
        nets: &[IpNet],
        n: usize,
        attr: &AllocationAttribute,
        got: &mut Vec<Assigned>,
    ) -> Result<()> {
        for b in self.ipam.store().list_blocks().await? {
            if got.len() >= n {
                break;
            }
            let net = block_net(&b)?;
            let mine = b.spec.affinity_node() == Some(self.node.as_str());
            if mine || b.spec.deleted || b.spec.strict_affinity || b.spec.free() == 0 {
                continue;
            }
            if nets.iter().any(|p| p.contains(&net)) {
                self.take(net, n - got.len(), Use::Borrow, attr, got)
                    .await?;
            }
        }
        Ok(())
    }

    /// Takes up to `want` addresses from `block`: handle record first, then the block.
    async fn take(
        &self,
        block: IpNet,
        want: usize,
        mode: Use,
        attr: &AllocationAttribute,
        got: &mut Vec<Assigned>,
    ) -> Result<()> {
        let handle = attr.handle_id.as_deref().unwrap_or_default();
        let store = self.ipam.store();
        let want32 = u32::try_from(want).unwrap_or(u32::MAX);
        store.handle_add(handle, &block, want32).await?;
        let op = BlockOp::Allocate {
            n: want,
            attr: attr.clone(),
            node: self.node.clone(),
            mode,
        };
        let reply = self
            .ipam
            .inner
            .committers
            .get(block)
            .submit(store, op)
            .await;
        let taken = match reply {
            Ok(Ok(Outcome::Allocated(ips))) => ips,
            Ok(Ok(Outcome::Released(_))) => Vec::new(),
            Ok(Err(e)) => {
                debug!(%block, why = %e, "block refused the allocation");
                if matches!(e, OpError::NotAffine { .. } | OpError::Deleted { .. }) {
                    self.forget(block);
                }
                Vec::new()
            }
            Err(Failure::Gone) => {
                self.forget(block);
                Vec::new()
            }
            // The write may or may not have happened: keep the handle record as it is, so
            // that release by handle finds the block either way.
            Err(Failure::Error(e)) => return Err(e),
        };
        if taken.len() < want {
            let extra = u32::try_from(want - taken.len()).unwrap_or(u32::MAX);
            if let Err(e) = store.handle_sub(handle, &[(block, Some(extra))]).await {
                warn!(error = %e, %block, "could not correct the handle record");
            }
        }
        got.extend(taken.into_iter().map(|ip| Assigned {
            ip,
            block,
            borrowed: mode == Use::Borrow,
        }));
        Ok(())
    }

    /// Allocates the given address to `handle` (the `margay.dev/ipAddrs` annotation, or
    /// `margayctl ipam assign`). If its block does not exist it is claimed for this node.
    pub async fn assign_ip(
        &self,
        ip: IpAddr,
        handle: &str,
        attrs: &BTreeMap<String, String>,
    ) -> Result<Assigned> {
        handle_object_name(handle)?;
        let span = info_span!("assign_ip", node = %self.node, handle, %ip);
        let attr = self.attribute(handle, attrs);
        self.assign_one(ip, handle, &attr).instrument(span).await
    }

    async fn assign_one(
        &self,
        ip: IpAddr,
        handle: &str,
        attr: &AllocationAttribute,
    ) -> Result<Assigned> {
        let pool = match pool_containing(&self.ipam.pools(false).await?, ip) {
            Some(p) => p.clone(),
            None => pool_containing(&self.ipam.pools(true).await?, ip)
                .cloned()
                .ok_or(IpamError::NotInAnyPool { ip })?,
        };
        let block =
            block_containing(ip, pool.spec.block_size()).map_err(|e| IpamError::Invalid {
                what: describe(&pool),
                why: e.to_string(),
            })?;
        // Load (and recover) the node's blocks before a claim can start.
        self.affine_blocks().await?;
        let store = self.ipam.store();
        store.handle_add(handle, &block, 1).await?;
        let undo = || async {
            if let Err(e) = store.handle_sub(handle, &[(block, Some(1))]).await {
                warn!(error = %e, "could not correct the handle record");
            }
        };
        for _ in 0..3 {
            let op = BlockOp::Assign {
                ip,
                attr: attr.clone(),
                node: self.node.clone(),
            };
            match self
                .ipam
                .inner
                .committers
                .get(block)
                .submit(store, op)
                .await
            {
                Ok(Ok(_)) => {
                    let own = self.affine_blocks().await?.contains(&block);
                    return Ok(Assigned {
                        ip,
                        block,
                        borrowed: !own,
                    });
                }
                Ok(Err(OpError::InUse { handle: h, .. })) => {
                    undo().await;
                    return Err(IpamError::AddressInUse { ip, handle: h });
                }
                Ok(Err(OpError::Strict { owner, .. })) => {
                    undo().await;
                    return Err(IpamError::StrictBlock { ip, block, owner });
                }
                Ok(Err(e)) => {
                    undo().await;
                    return Err(IpamError::Invalid {
                        what: format!("IPAM block {block}"),
                        why: e.to_string(),
                    });
                }
                Err(Failure::Gone) => {
                    let config = self.ipam.config(false).await?;
                    let _claiming = self.state.claim.lock().await;
                    self.try_claim(block, &config).await?;
                }
                Err(Failure::Error(e)) => return Err(e),
            }
        }
        undo().await;
        Err(IpamError::TooManyConflicts {
            what: format!("assigning {ip} in block {block}"),
            attempts: 3,
        })
    }

    /// Frees every address `handle` holds (CNI DEL); exact and idempotent. Blocks of this node
    /// left empty are given up, beyond a small reserve.
    pub async fn release_handle(&self, handle: &str) -> Result<Vec<IpAddr>> {
        let freed = self.ipam.release_handle(handle).await?;
        let blocks: BTreeSet<IpNet> = freed.iter().map(|(_, b)| *b).collect();
        self.give_up_empty_blocks(&blocks).await;
        Ok(freed.into_iter().map(|(ip, _)| ip).collect())
    }

    /// Frees the given addresses, whoever holds them.
    pub async fn release_ips(&self, ips: &[IpAddr]) -> Result<Vec<Released>> {
        let freed = self.ipam.release_ips(ips).await?;
        let blocks: BTreeSet<IpNet> = freed.iter().map(|r| r.block).collect();
        self.give_up_empty_blocks(&blocks).await;
        Ok(freed)
    }
}
