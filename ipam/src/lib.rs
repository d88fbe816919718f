//! Margay IPAM: IP pools cut into blocks that nodes claim, addresses allocated by handle.
//!
//! The design is Calico's (pools → blocks with a node affinity → allocations recorded by
//! handle), written over Margay's `Datastore` trait only. This first module is the address
//! arithmetic every other part stands on: how a pool is cut into blocks, which block holds an
//! address, and the ordinal of an address inside its block.

pub mod cidr;

pub use cidr::{
    BlockError, Blocks, address_at, block_containing, block_name, blocks_of, ordinal_of,
};
