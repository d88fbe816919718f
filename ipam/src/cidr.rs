//! Pure address arithmetic for pools and blocks (IPv4 and IPv6).
//!
//! A pool such as `100.64.0.0/16` with block size 26 holds 1024 blocks of 64 addresses. Blocks are
//! aligned to their size, so the block of an address is the address with its host bits cleared.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Why a pool cannot be cut into blocks, or an address has no place in a block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// The block size is shorter than the pool prefix or longer than the address.
    #[error("block size /{block_size} does not fit pool {pool}: it must be between /{} and /{}", pool.prefix_len(), pool.max_prefix_len())]
    BlockSize {
        /// The pool's CIDR.
        pool: IpNet,
        /// The requested block prefix length.
        block_size: u8,
    },
    /// The address is not inside the block.
    #[error("address {addr} is not in block {block}")]
    NotInBlock {
        /// The block's CIDR.
        block: IpNet,
        /// The address asked about.
        addr: IpAddr,
    },
    /// The ordinal is past the end of the block.
    #[error("ordinal {ordinal} is past the end of block {block} ({size} addresses)")]
    Ordinal {
        /// The block's CIDR.
        block: IpNet,
        /// The ordinal asked for.
        ordinal: u128,
        /// How many addresses the block has.
        size: u128,
    },
}

fn to_u128(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn block_len(block: &IpNet) -> u128 {
    let host_bits = u32::from(block.max_prefix_len() - block.prefix_len());
    1u128.checked_shl(host_bits).unwrap_or(0)
}

/// The blocks of `block_size` that make up `pool`, in address order.
///
/// The iterator is lazy: an IPv6 /64 pool cut into /122 blocks has 2^58 of them.
pub fn blocks_of(pool: IpNet, block_size: u8) -> Result<Blocks, BlockError> {
    let err = || BlockError::BlockSize { pool, block_size };
    if block_size < pool.prefix_len() || block_size > pool.max_prefix_len() {
        return Err(err());
    }
    match pool.trunc() {
        IpNet::V4(p) => p.subnets(block_size).map(Blocks::V4).map_err(|_| err()),
        IpNet::V6(p) => p.subnets(block_size).map(Blocks::V6).map_err(|_| err()),
    }
}

/// Iterator over the blocks of a pool of either family.
#[derive(Debug)]
pub enum Blocks {
    /// Blocks of an IPv4 pool.
    V4(ipnet::Ipv4Subnets),
    /// Blocks of an IPv6 pool.
    V6(ipnet::Ipv6Subnets),
}

impl Iterator for Blocks {
    type Item = IpNet;
    fn next(&mut self) -> Option<IpNet> {
        match self {
            Blocks::V4(it) => it.next().map(IpNet::V4),
            Blocks::V6(it) => it.next().map(IpNet::V6),
        }
    }
}

/// The block of `block_size` that holds `addr`.
pub fn block_containing(addr: IpAddr, block_size: u8) -> Result<IpNet, BlockError> {
    let net = IpNet::new(addr, block_size).map_err(|_| BlockError::BlockSize {
        pool: IpNet::from(addr),
        block_size,
    })?;
    Ok(net.trunc())
}

/// The ordinal of `addr` inside `block` (0 for the block's first address).
pub fn ordinal_of(block: IpNet, addr: IpAddr) -> Result<u128, BlockError> {
    if !block.contains(&addr) {
        return Err(BlockError::NotInBlock { block, addr });
    }
    Ok(to_u128(addr) - to_u128(block.network()))
}

/// The address at `ordinal` inside `block`.
pub fn address_at(block: IpNet, ordinal: u128) -> Result<IpAddr, BlockError> {
    let size = block_len(&block);
    if size != 0 && ordinal >= size {
        return Err(BlockError::Ordinal {
            block,
            ordinal,
            size,
        });
    }
    let base = to_u128(block.network());
    Ok(match block {
        IpNet::V4(_) => IpAddr::V4(Ipv4Addr::from((base + ordinal) as u32)),
        IpNet::V6(_) => IpAddr::V6(Ipv6Addr::from(base + ordinal)),
    })
}

/// The datastore name of a block, as Calico spells it: `100-64-0-0-26`, `fd00-1--40-122`.
pub fn block_name(block: IpNet) -> String {
    let addr = match block.network() {
        IpAddr::V4(a) => a.to_string().replace('.', "-"),
        IpAddr::V6(a) => a.to_string().replace(':', "-"),
    };
    format!("{addr}-{}", block.prefix_len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn a_slash_24_pool_holds_four_slash_26_blocks() {
        let blocks: Vec<_> = blocks_of(net("100.64.0.0/24"), 26).unwrap().collect();
        assert_eq!(
            blocks,
            [
                "100.64.0.0/26",
                "100.64.0.64/26",
                "100.64.0.128/26",
                "100.64.0.192/26"
            ]
            .map(net)
        );
    }

    #[test]
    fn ipv6_pools_are_cut_lazily() {
        let mut it = blocks_of(net("fd00:1::/64"), 122).unwrap();
        assert_eq!(it.next(), Some(net("fd00:1::/122")));
        assert_eq!(it.next(), Some(net("fd00:1::40/122")));
    }

    #[test]
    fn a_block_larger_than_the_pool_is_refused_with_the_range() {
        let err = blocks_of(net("100.64.0.0/24"), 20).err().unwrap();
        assert_eq!(
            err.to_string(),
            "block size /20 does not fit pool 100.64.0.0/24: it must be between /24 and /32"
        );
    }

    #[test]
    fn ordinals_count_from_the_block_start() {
        let b = net("100.64.0.64/26");
        assert_eq!(ordinal_of(b, "100.64.0.70".parse().unwrap()), Ok(6));
        assert_eq!(
            address_at(b, 63).unwrap(),
            "100.64.0.127".parse::<IpAddr>().unwrap()
        );
        assert!(matches!(
            address_at(b, 64),
            Err(BlockError::Ordinal { size: 64, .. })
        ));
        assert!(matches!(
            ordinal_of(b, "100.64.0.1".parse().unwrap()),
            Err(BlockError::NotInBlock { .. })
        ));
    }

    #[test]
    fn block_names_follow_calico() {
        assert_eq!(block_name(net("100.64.0.192/26")), "100-64-0-192-26");
        assert_eq!(block_name(net("fd00:1::40/122")), "fd00-1--40-122");
    }

    proptest! {
        #[test]
        fn every_v4_address_round_trips_through_its_block(a in any::<u32>(), size in 20u8..=32) {
            let addr = IpAddr::V4(Ipv4Addr::from(a));
            let block = block_containing(addr, size).unwrap();
            let ord = ordinal_of(block, addr).unwrap();
            prop_assert_eq!(address_at(block, ord).unwrap(), addr);
        }

        #[test]
        fn every_v6_address_round_trips_through_its_block(a in any::<u128>(), size in 116u8..=128) {
            let addr = IpAddr::V6(Ipv6Addr::from(a));
            let block = block_containing(addr, size).unwrap();
            let ord = ordinal_of(block, addr).unwrap();
            prop_assert_eq!(address_at(block, ord).unwrap(), addr);
        }
    }
}
