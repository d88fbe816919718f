//! How full pools and blocks are (`margayctl ipam show`), and which addresses a node borrowed.

use std::net::IpAddr;

use ipnet::IpNet;
use margay_api::IPAMBlock;

use crate::errors::Result;
use crate::ipam::Ipam;
use crate::store::block_net;

/// One pool's usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolUsage {
    /// The pool's name.
    pub name: String,
    /// Its CIDR.
    pub cidr: String,
    /// Its block size.
    pub block_size: u8,
    /// Addresses in the pool.
    pub capacity: u128,
    /// Blocks claimed (existing).
    pub blocks: usize,
    /// Addresses in claimed blocks.
    pub in_blocks: u64,
    /// Addresses allocated.
    pub in_use: u64,
}

/// One block's usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockUsage {
    /// The block.
    pub cidr: IpNet,
    /// The pool it is in (`None`: its pool was deleted).
    pub pool: Option<String>,
    /// The node it is affine to.
    pub node: Option<String>,
    /// Addresses in the block.
    pub size: usize,
    /// Addresses allocated.
    pub in_use: usize,
    /// Of those, allocated by other nodes (borrowed).
    pub borrowed: usize,
}

/// Usage of every pool and block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// Per pool.
    pub pools: Vec<PoolUsage>,
    /// Per block, in address order.
    pub blocks: Vec<BlockUsage>,
}

/// The addresses node `node` allocated in blocks that are not its own: the agent exports these
/// as /32 (/128) routes.
pub fn borrowed_by(node: &str, blocks: &[IPAMBlock]) -> Vec<IpAddr> {
    blocks
        .iter()
        .filter(|b| b.spec.affinity_node() != Some(node))
        .flat_map(|b| {
            b.spec
                .allocated()
                .into_iter()
                .filter(|(_, a)| a.and_then(|a| a.node()) == Some(node))
                .filter_map(|(o, _)| b.spec.address_of(o))
        })
        .collect()
}

fn block_usage(b: &IPAMBlock, net: IpNet, pool: Option<String>) -> BlockUsage {
    let owner = b.spec.affinity_node();
    let allocated = b.spec.allocated();
    let borrowed = allocated
        .iter()
        .filter(|(_, a)| {
            let by = a.and_then(|a| a.node());
            by.is_some() && by != owner
        })
        .count();
    BlockUsage {
        cidr: net,
        pool,
        node: owner.map(str::to_string),
        size: b.spec.allocations.len(),
        in_use: allocated.len(),
        borrowed,
    }
}

impl Ipam {
    /// Usage per pool and per block.
    pub async fn usage(&self) -> Result<Usage> {
        let pools = self.store().list_pools().await?;
        let mut blocks = self.store().list_blocks().await?;
        blocks.sort_by_key(|b| block_net(b).ok());
        let mut out = Usage::default();
        for p in &pools {
            let Some(net) = p.spec.net() else { continue };
            let host_bits = u32::from(net.max_prefix_len() - net.prefix_len());
            out.pools.push(PoolUsage {
                name: p.metadata.name.clone().unwrap_or_default(),
                cidr: p.spec.cidr.clone(),
                block_size: p.spec.block_size(),
                capacity: 1u128.checked_shl(host_bits).unwrap_or(u128::MAX),
                blocks: 0,
                in_blocks: 0,
                in_use: 0,
            });
        }
        for b in &blocks {
            let net = block_net(b)?;
            let pool = pools
                .iter()
                .zip(0..)
                .find(|(p, _)| p.spec.net().is_some_and(|n| n.contains(&net)));
            let u = block_usage(b, net, pool.and_then(|(p, _)| p.metadata.name.clone()));
            if let Some((p, _)) = pool
                && let Some(pu) = out.pools.iter_mut().find(|pu| pu.cidr == p.spec.cidr)
            {
                pu.blocks += 1;
                pu.in_blocks += u.size as u64;
                pu.in_use += u.in_use as u64;
            }
            out.blocks.push(u);
        }
        Ok(out)
    }
}
