//! Pure address arithmetic for pools and blocks (IPv4 and IPv6).
//!
//! A pool such as `100.64.0.0/16` with block size 26 holds 1024 blocks of 64 addresses. Blocks are
//! aligned to their size, so the block of an address is the address with its host bits cleared.
//! Ordinals inside a block and block names are `margay_api::ipam`'s (`ordinal_of`, `address_of`,
//! `IPAMBlock::name_for`).

use std::net::IpAddr;

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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

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

    proptest! {
        #[test]
        fn every_v4_address_round_trips_through_its_block(a in any::<u32>(), size in 20u8..=32) {
            let addr = IpAddr::V4(Ipv4Addr::from(a));
            let block = block_containing(addr, size).unwrap();
            let ord = margay_api::ipam::ordinal_of(&block, addr).unwrap();
            prop_assert_eq!(margay_api::ipam::address_of(&block, ord), Some(addr));
        }

        #[test]
        fn every_v6_address_round_trips_through_its_block(a in any::<u128>(), size in 116u8..=128) {
            let addr = IpAddr::V6(Ipv6Addr::from(a));
            let block = block_containing(addr, size).unwrap();
            let ord = margay_api::ipam::ordinal_of(&block, addr).unwrap();
            prop_assert_eq!(margay_api::ipam::address_of(&block, ord), Some(addr));
        }
    }
}
