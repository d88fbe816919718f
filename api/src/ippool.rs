//! `IPPool`: a range of pod addresses, cut into blocks that nodes claim.

use std::collections::BTreeMap;

use ipnet::IpNet;
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Defaults;
use crate::schema::is_false;
use crate::selector::Selector;

/// Default block prefix length of an IPv4 pool (64 addresses).
pub const DEFAULT_BLOCK_SIZE_V4: u8 = 26;
/// Default block prefix length of an IPv6 pool (64 addresses).
pub const DEFAULT_BLOCK_SIZE_V6: u8 = 122;
/// Allowed block sizes of an IPv4 pool.
pub const BLOCK_SIZE_RANGE_V4: std::ops::RangeInclusive<u8> = 20..=32;
/// Allowed block sizes of an IPv6 pool.
pub const BLOCK_SIZE_RANGE_V6: std::ops::RangeInclusive<u8> = 116..=128;

/// An IP pool: a CIDR that pod addresses are allocated from. Each node claims blocks of
/// `blockSize` out of it and announces them over BGP.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "crd.margay.dev",
    version = "v1",
    kind = "IPPool",
    plural = "ippools",
    singular = "ippool",
    shortname = "ipp",
    category = "margay",
    derive = "PartialEq",
    crates(kube_core = "::kube_core"),
    doc = "An IP pool: a CIDR that pod addresses are allocated from, in blocks claimed by nodes.",
    printcolumn(name = "CIDR", type_ = "string", json_path = ".spec.cidr"),
    printcolumn(name = "Block", type_ = "integer", json_path = ".spec.blockSize"),
    printcolumn(name = "NAT", type_ = "boolean", json_path = ".spec.natOutgoing"),
    printcolumn(name = "Disabled", type_ = "boolean", json_path = ".spec.disabled"),
    printcolumn(
        name = "Selector",
        type_ = "string",
        json_path = ".spec.nodeSelector",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.blockSize) || (self.cidr.contains(':') ? (self.blockSize >= 116 && self.blockSize <= 128) : (self.blockSize >= 20 && self.blockSize <= 32))",
    "message": "blockSize must be 20-32 for an IPv4 pool and 116-128 for an IPv6 pool"
}]))]
pub struct IPPoolSpec {
    /// The pool's address range in CIDR notation (e.g. `100.64.0.0/16` or `fd00:100::/48`), with
    /// no host bits set. Pools must not overlap.
    #[schemars(extend("format" = "cidr"))]
    pub cidr: String,
    /// Prefix length of the blocks that nodes claim from this pool: 20-32 for IPv4 (default 26,
    /// 64 addresses), 116-128 for IPv6 (default 122). Must not be shorter than the pool's own
    /// prefix. Do not change it while blocks exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 20, max = 128))]
    pub block_size: Option<u8>,
    /// Masquerade traffic from pods in this pool to destinations outside all pools.
    #[serde(default)]
    pub nat_outgoing: bool,
    /// When true, no new addresses are allocated from this pool; existing ones stay.
    #[serde(default)]
    pub disabled: bool,
    /// When true, blocks of this pool are not advertised over BGP.
    #[serde(default, rename = "disableBGPExport", skip_serializing_if = "is_false")]
    pub disable_bgp_export: bool,
    /// Selector (Margay selector language) of the nodes that may allocate from this pool, e.g.
    /// `zone == 'a'`. Default `all()`.
    #[serde(default = "default_node_selector")]
    pub node_selector: String,
    /// What addresses from this pool may be used for. Default `[Workload]`.
    #[serde(default = "default_allowed_uses")]
    pub allowed_uses: Vec<AllowedUse>,
    /// `Automatic`: used for any pod whose node matches `nodeSelector`. `Manual`: used only when a
    /// pod or namespace asks for this pool by name (annotation `margay.dev/ipv4pools`).
    #[serde(default)]
    pub assignment_mode: AssignmentMode,
}

/// What addresses of a pool may be used for.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub enum AllowedUse {
    /// Pod (workload) addresses.
    Workload,
    /// Addresses for LoadBalancer Services.
    LoadBalancer,
}

/// How a pool is chosen for a pod.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum AssignmentMode {
    /// Chosen automatically for pods on matching nodes.
    #[default]
    Automatic,
    /// Chosen only when requested by name.
    Manual,
}

fn default_node_selector() -> String {
    "all()".to_string()
}

fn default_allowed_uses() -> Vec<AllowedUse> {
    vec![AllowedUse::Workload]
}

impl IPPoolSpec {
    /// A pool over `cidr` with every other field at its default.
    pub fn new(cidr: impl Into<String>) -> Self {
        IPPoolSpec {
            cidr: cidr.into(),
            block_size: None,
            nat_outgoing: false,
            disabled: false,
            disable_bgp_export: false,
            node_selector: default_node_selector(),
            allowed_uses: default_allowed_uses(),
            assignment_mode: AssignmentMode::Automatic,
        }
    }

    /// The parsed CIDR (`None` if it does not parse; [`crate::Validate`] reports that).
    pub fn net(&self) -> Option<IpNet> {
        self.cidr.parse().ok()
    }

    /// Whether this is an IPv6 pool (judged by the CIDR's text, so that it works on invalid ones).
    pub fn is_ipv6(&self) -> bool {
        self.cidr.contains(':')
    }

    /// The block size, or the family's default when unset.
    pub fn block_size(&self) -> u8 {
        self.block_size.unwrap_or(if self.is_ipv6() {
            DEFAULT_BLOCK_SIZE_V6
        } else {
            DEFAULT_BLOCK_SIZE_V4
        })
    }

    /// The parsed node selector (an empty string is `all()`).
    pub fn node_selector(&self) -> Result<Selector, crate::selector::SelectorError> {
        Selector::parse(&self.node_selector)
    }

    /// Whether the pool is enabled and its node selector matches a node with `labels`.
    pub fn usable_by_node(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.disabled && self.node_selector().is_ok_and(|s| s.matches(labels))
    }

    /// Whether pod addresses may come from this pool.
    pub fn allows_workloads(&self) -> bool {
        self.allowed_uses.contains(&AllowedUse::Workload)
    }
}

impl Defaults for IPPoolSpec {
    fn apply_defaults(&mut self) {
        if self.block_size.is_none() {
            self.block_size = Some(self.block_size());
        }
        if self.node_selector.trim().is_empty() {
            self.node_selector = default_node_selector();
        }
        if self.allowed_uses.is_empty() {
            self.allowed_uses = default_allowed_uses();
        }
    }
}

impl Defaults for IPPool {
    fn apply_defaults(&mut self) {
        self.spec.apply_defaults();
    }
}
