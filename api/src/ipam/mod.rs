//! IPAM resources: the cluster-wide [`IPAMConfig`], address blocks ([`IPAMBlock`]), which node a
//! block belongs to ([`BlockAffinity`]) and what each allocation handle holds ([`IPAMHandle`]).
//!
//! The allocation logic lives in `margay-ipam`; these are the stored shapes plus small pure
//! helpers (block ordinals, names).

mod block;

use std::collections::BTreeMap;

use ipnet::IpNet;
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::schema::{is_false, yes};

pub use block::{
    AFFINITY_HOST_PREFIX, ATTR_NAMESPACE, ATTR_NODE, ATTR_POD, ATTR_TIMESTAMP, AllocationAttribute,
    BlockError, IPAMBlock, IPAMBlockSpec, address_of, block_size_of, host_affinity, ordinal_of,
};

/// Pod or namespace annotation: the IPv4 pools (by name, JSON list) to allocate from,
/// e.g. `["blue-v4"]`.
pub const ANNOTATION_IPV4_POOLS: &str = "margay.dev/ipv4pools";
/// Pod or namespace annotation: the IPv6 pools (by name, JSON list) to allocate from.
pub const ANNOTATION_IPV6_POOLS: &str = "margay.dev/ipv6pools";
/// Pod annotation: the exact addresses (JSON list) the pod must get, e.g. `["100.64.0.10"]`.
pub const ANNOTATION_IP_ADDRS: &str = "margay.dev/ipAddrs";
/// The handle prefix of pod allocations: `margay-pod-network.CONTAINER_ID`.
pub const HANDLE_PREFIX_POD: &str = "margay-pod-network.";

/// The name of the one `IPAMConfig` object that is read.
pub const IPAM_CONFIG_NAME: &str = "default";

/// Cluster-wide IPAM settings. Only the object named `default` is read.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "crd.margay.dev",
    version = "v1",
    kind = "IPAMConfig",
    plural = "ipamconfigs",
    singular = "ipamconfig",
    shortname = "ipamcfg",
    category = "margay",
    derive = "PartialEq",
    crates(kube_core = "::kube_core"),
    doc = "Cluster-wide IPAM settings; only the object named `default` is read.",
    printcolumn(
        name = "StrictAffinity",
        type_ = "boolean",
        json_path = ".spec.strictAffinity"
    ),
    printcolumn(
        name = "AutoAllocateBlocks",
        type_ = "boolean",
        json_path = ".spec.autoAllocateBlocks"
    ),
    printcolumn(
        name = "MaxBlocksPerHost",
        type_ = "integer",
        json_path = ".spec.maxBlocksPerHost"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct IPAMConfigSpec {
    /// When true, a node only ever uses addresses from blocks affine to it: it never borrows
    /// single addresses from another node's block, even when the pools are full.
    #[serde(default)]
    pub strict_affinity: bool,
    /// When true (the default), a node claims a new block when its blocks are full. When false,
    /// blocks must be assigned to nodes by hand.
    #[serde(default = "yes")]
    pub auto_allocate_blocks: bool,
    /// The most blocks one node may claim; 0 (the default) means no limit.
    #[serde(default)]
    pub max_blocks_per_host: u32,
}

impl Default for IPAMConfigSpec {
    fn default() -> Self {
        IPAMConfigSpec {
            strict_affinity: false,
            auto_allocate_blocks: true,
            max_blocks_per_host: 0,
        }
    }
}

impl IPAMConfigSpec {
    /// The per-node block limit, `None` when unlimited.
    pub fn max_blocks_per_host(&self) -> Option<u32> {
        (self.max_blocks_per_host > 0).then_some(self.max_blocks_per_host)
    }
}

/// The state of a node's claim on a block.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum AffinityState {
    /// Written before the block is created; a crashed claim is recovered or cleaned up from here.
    #[default]
    Pending,
    /// The block exists and belongs to the node.
    Confirmed,
    /// The node is giving the block up; no new addresses are allocated from it.
    PendingDeletion,
}

/// A node's claim on one block: written `pending`, then the block is created, then `confirmed`.
/// Named `NODE-CIDR` (see [`BlockAffinity::name_for`]).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "crd.margay.dev",
    version = "v1",
    kind = "BlockAffinity",
    plural = "blockaffinities",
    singular = "blockaffinity",
    shortname = "baff",
    category = "margay",
    category = "margay-ipam",
    derive = "PartialEq",
    crates(kube_core = "::kube_core"),
    doc = "A node's claim on one IPAM block (pending, confirmed, pendingDeletion).",
    printcolumn(name = "Node", type_ = "string", json_path = ".spec.node"),
    printcolumn(name = "CIDR", type_ = "string", json_path = ".spec.cidr"),
    printcolumn(name = "State", type_ = "string", json_path = ".spec.state"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BlockAffinitySpec {
    /// Where the claim is in its life: `pending`, `confirmed` or `pendingDeletion`.
    #[serde(default)]
    pub state: AffinityState,
    /// The node that claims the block.
    pub node: String,
    /// The block's CIDR.
    #[schemars(extend("format" = "cidr"))]
    pub cidr: String,
    /// Set while the affinity is being removed, so that readers skip it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub deleted: bool,
}

impl BlockAffinity {
    /// The object name of `node`'s affinity to the block `cidr`, as Calico names it:
    /// `node1-10-0-0-0-26`.
    pub fn name_for(node: &str, cidr: &IpNet) -> String {
        format!("{node}-{}", crate::names::cidr_name_part(cidr))
    }

    /// A pending affinity of `node` to `cidr`, named by [`BlockAffinity::name_for`].
    pub fn pending(node: &str, cidr: &IpNet) -> Self {
        BlockAffinity::new(
            &Self::name_for(node, cidr),
            BlockAffinitySpec {
                state: AffinityState::Pending,
                node: node.to_string(),
                cidr: cidr.to_string(),
                deleted: false,
            },
        )
    }
}

/// What one allocation handle holds: for each block, how many addresses. Release by handle frees
/// exactly these. Named by the handle id.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "crd.margay.dev",
    version = "v1",
    kind = "IPAMHandle",
    plural = "ipamhandles",
    singular = "ipamhandle",
    shortname = "ipamh",
    category = "margay",
    category = "margay-ipam",
    derive = "PartialEq",
    crates(kube_core = "::kube_core"),
    doc = "The addresses one allocation handle (e.g. one pod's network) holds, by block.",
    printcolumn(name = "Handle", type_ = "string", json_path = ".spec.handleID"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct IPAMHandleSpec {
    /// The handle id, e.g. `margay-pod-network.CONTAINER_ID`. Also the object's name, when that is
    /// a valid name.
    #[serde(rename = "handleID")]
    pub handle_id: String,
    /// Number of addresses held in each block, keyed by the block's CIDR.
    #[serde(default)]
    pub block: BTreeMap<String, u32>,
    /// Set while the handle is being removed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub deleted: bool,
}

impl IPAMHandleSpec {
    /// Total number of addresses held.
    pub fn total(&self) -> u64 {
        self.block.values().map(|&n| u64::from(n)).sum()
    }
}
