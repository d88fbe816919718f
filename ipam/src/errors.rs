//! What can go wrong in IPAM, said so that an operator knows what to do next.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(ip: &IpAddr) -> Self {
        if ip.is_ipv4() { Family::V4 } else { Family::V6 }
    }

    /// The family of a network.
    pub fn of_net(net: &IpNet) -> Self {
        Self::of(&net.network())
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// An IPAM error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IpamError {
    /// No enabled pool of the family matches the node (or the pools the pod asked for).
    #[error("no usable {family} pool for node {node:?}: {why}")]
    NoPool {
        /// The family asked for.
        family: Family,
        /// The node allocating.
        node: String,
        /// Why none fits (which pools exist and why each was skipped).
        why: String,
    },
    /// Every pool that could be used is full (and borrowing was not possible or not allowed).
    #[error(
        "{family} pools exhausted on node {node:?}: tried {}; wanted {wanted}, got {got}{}{}",
        pools.join(", "),
        match at_max { Some(m) => format!("; the node holds maxBlocksPerHost ({m}) blocks"), None => String::new() },
        if *strict { " (strictAffinity forbids borrowing from other nodes' blocks)" } else { "" }
    )]
    PoolsExhausted {
        /// The family asked for.
        family: Family,
        /// The node allocating.
        node: String,
        /// The pools tried (name and CIDR).
        pools: Vec<String>,
        /// How many addresses were asked for.
        wanted: usize,
        /// How many could be found (they were given back).
        got: usize,
        /// Whether strictAffinity stopped borrowing.
        strict: bool,
        /// The node's `maxBlocksPerHost`, when it stopped the node from claiming another block.
        at_max: Option<u32>,
    },
    /// The node holds `maxBlocksPerHost` blocks, they are full, and it may not borrow.
    #[error(
        "node {node:?} is at maxBlocksPerHost ({max}) with every block full, and strictAffinity forbids borrowing"
    )]
    NodeAtMaxBlocks {
        /// The node.
        node: String,
        /// The configured limit.
        max: u32,
    },
    /// An address asked for is in no pool.
    #[error("address {ip} is not in any IP pool")]
    NotInAnyPool {
        /// The address.
        ip: IpAddr,
    },
    /// An address asked for is held already.
    #[error("address {ip} is already in use by handle {handle:?}")]
    AddressInUse {
        /// The address.
        ip: IpAddr,
        /// The handle that holds it.
        handle: String,
    },
    /// The address's block is owned by another node with strict affinity.
    #[error("address {ip} is in block {block} of node {owner:?}, which forbids borrowing")]
    StrictBlock {
        /// The address.
        ip: IpAddr,
        /// Its block.
        block: IpNet,
        /// The node that owns the block.
        owner: String,
    },
    /// A pool or address annotation cannot be read.
    #[error("annotation {name} is invalid: {why}")]
    BadAnnotation {
        /// The annotation.
        name: String,
        /// What is wrong with it.
        why: String,
    },
    /// A handle id cannot be stored.
    #[error("handle id {handle:?} is invalid: {why}")]
    BadHandle {
        /// The handle id.
        handle: String,
        /// What is wrong with it.
        why: String,
    },
    /// Stored IPAM data that cannot be used (a block whose CIDR does not parse).
    #[error("invalid IPAM data in {what}: {why}")]
    Invalid {
        /// The object.
        what: String,
        /// What is wrong with it.
        why: String,
    },
    /// A compare-and-swap kept failing: others changed the object every time.
    #[error("{what}: still conflicting after {attempts} attempts; retry later")]
    TooManyConflicts {
        /// What was being written.
        what: String,
        /// How many times it was tried.
        attempts: usize,
    },
    /// The datastore failed.
    #[error("{what}")]
    Datastore {
        /// What was being done.
        what: String,
        /// The datastore's error.
        #[source]
        source: Arc<margay_datastore::Error>,
    },
}

impl IpamError {
    /// A datastore error with what was being done.
    pub fn datastore(what: impl Into<String>, source: margay_datastore::Error) -> Self {
        IpamError::Datastore {
            what: what.into(),
            source: Arc::new(source),
        }
    }

    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            IpamError::TooManyConflicts { .. } => true,
            IpamError::Datastore { source, .. } => source.is_retryable(),
            _ => false,
        }
    }
}

/// IPAM results.
pub type Result<T, E = IpamError> = std::result::Result<T, E>;
