//! `IPAMBlock`: one block of addresses, its allocations and their attributes.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::schema::is_false;

/// The prefix of a block's `affinity` when a node owns it: `host:NODE`.
pub const AFFINITY_HOST_PREFIX: &str = "host:";
/// Secondary attribute: the namespace of the pod an address belongs to.
pub const ATTR_NAMESPACE: &str = "namespace";
/// Secondary attribute: the pod an address belongs to.
pub const ATTR_POD: &str = "pod";
/// Secondary attribute: the node that allocated the address.
pub const ATTR_NODE: &str = "node";
/// Secondary attribute: when the address was allocated (RFC 3339).
pub const ATTR_TIMESTAMP: &str = "timestamp";

/// The largest block [`IPAMBlockSpec::empty`] builds: 2^16 addresses (v4 /16, v6 /112).
const MAX_HOST_BITS: u8 = 16;

/// A block of addresses (one `blockSize` slice of a pool) and who holds each address.
///
/// `allocations[i]` is the allocation state of the `i`-th address of the block (its ordinal):
/// null when free, else the index in `attributes` of who holds it. `unallocated` lists the free
/// ordinals in the order they are handed out: freed addresses go to the back, so that an address
/// is not reused at once. Every write increments `sequenceNumber`; writes are compare-and-swap.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "crd.margay.dev",
    version = "v1",
    kind = "IPAMBlock",
    plural = "ipamblocks",
    singular = "ipamblock",
    shortname = "ipb",
    category = "margay",
    category = "margay-ipam",
    derive = "PartialEq",
    crates(kube_core = "::kube_core"),
    doc = "A block of pod addresses claimed by one node, with the allocation state of each address.",
    printcolumn(name = "CIDR", type_ = "string", json_path = ".spec.cidr"),
    printcolumn(name = "Affinity", type_ = "string", json_path = ".spec.affinity"),
    printcolumn(
        name = "Seq",
        type_ = "integer",
        json_path = ".spec.sequenceNumber",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct IPAMBlockSpec {
    /// The block's CIDR; one `blockSize` slice of a pool.
    #[schemars(extend("format" = "cidr"))]
    pub cidr: String,
    /// Which node the block belongs to, as `host:NODE`; absent for a block that no node owns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<String>,
    /// Copied from IPAMConfig when the block was claimed: other nodes must not borrow from it.
    #[serde(default)]
    pub strict_affinity: bool,
    /// One entry per address of the block, by ordinal: null when free, else an index into
    /// `attributes`.
    #[serde(default)]
    pub allocations: Vec<Option<usize>>,
    /// The free ordinals, in the order they are handed out (freed ones go to the back).
    #[serde(default)]
    pub unallocated: Vec<usize>,
    /// Who holds the allocated addresses: handle id and pod/namespace/node.
    #[serde(default)]
    pub attributes: Vec<AllocationAttribute>,
    /// Incremented on every write of the block.
    #[serde(default)]
    pub sequence_number: u64,
    /// The `sequenceNumber` at which each allocated ordinal (as a string) was handed out.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sequence_number_for_allocation: BTreeMap<String, u64>,
    /// Set while the block is being removed, so that no allocation lands in it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub deleted: bool,
}

/// Who holds an allocated address.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct AllocationAttribute {
    /// The allocation handle (e.g. `margay-pod-network.CONTAINER_ID`); release by handle frees
    /// every address that carries it.
    #[serde(rename = "handleID", default, skip_serializing_if = "Option::is_none")]
    pub handle_id: Option<String>,
    /// Free-form details: `namespace`, `pod`, `node`, `timestamp`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secondary: BTreeMap<String, String>,
}

impl AllocationAttribute {
    /// An attribute for a pod's address.
    pub fn for_pod(handle_id: &str, namespace: &str, pod: &str, node: &str) -> Self {
        let secondary = [
            (ATTR_NAMESPACE, namespace),
            (ATTR_POD, pod),
            (ATTR_NODE, node),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        AllocationAttribute {
            handle_id: Some(handle_id.to_string()),
            secondary,
        }
    }

    /// The pod's namespace, if recorded.
    pub fn namespace(&self) -> Option<&str> {
        self.secondary.get(ATTR_NAMESPACE).map(String::as_str)
    }

    /// The pod's name, if recorded.
    pub fn pod(&self) -> Option<&str> {
        self.secondary.get(ATTR_POD).map(String::as_str)
    }

    /// The allocating node, if recorded.
    pub fn node(&self) -> Option<&str> {
        self.secondary.get(ATTR_NODE).map(String::as_str)
    }
}

/// A block whose CIDR cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// The CIDR does not parse.
    #[error("block CIDR {cidr:?} does not parse")]
    BadCidr {
        /// The text given.
        cidr: String,
    },
    /// More than 2^16 addresses.
    #[error("block {cidr} has more than 65536 addresses")]
    TooLarge {
        /// The block's CIDR.
        cidr: IpNet,
    },
}

impl IPAMBlockSpec {
    /// An empty block over `cidr` (every address free, in address order), owned by `node` if given.
    pub fn empty(cidr: IpNet, node: Option<&str>) -> Result<Self, BlockError> {
        let cidr = cidr.trunc();
        let size = block_size_of(&cidr).ok_or(BlockError::TooLarge { cidr })?;
        Ok(IPAMBlockSpec {
            cidr: cidr.to_string(),
            affinity: node.map(host_affinity),
            strict_affinity: false,
            allocations: vec![None; size],
            unallocated: (0..size).collect(),
            attributes: Vec::new(),
            sequence_number: 0,
            sequence_number_for_allocation: BTreeMap::new(),
            deleted: false,
        })
    }

    /// The parsed CIDR.
    pub fn net(&self) -> Result<IpNet, BlockError> {
        self.cidr.parse().map_err(|_| BlockError::BadCidr {
            cidr: self.cidr.clone(),
        })
    }

    /// The number of addresses in the block, from its CIDR (`None` if it does not parse or is
    /// too large).
    pub fn size(&self) -> Option<usize> {
        self.net().ok().as_ref().and_then(block_size_of)
    }

    /// The node named in `affinity: host:NODE`.
    pub fn affinity_node(&self) -> Option<&str> {
        self.affinity
            .as_deref()
            .and_then(|a| a.strip_prefix(AFFINITY_HOST_PREFIX))
    }

    /// The ordinal of `ip` in the block, if the block contains it.
    pub fn ordinal_of(&self, ip: IpAddr) -> Option<usize> {
        ordinal_of(&self.net().ok()?, ip)
    }

    /// The address with ordinal `ordinal`, if the block has that many addresses.
    pub fn address_of(&self, ordinal: usize) -> Option<IpAddr> {
        address_of(&self.net().ok()?, ordinal)
    }

    /// The attribute of the address with `ordinal`, if it is allocated.
    pub fn attribute_of(&self, ordinal: usize) -> Option<&AllocationAttribute> {
        let idx = (*self.allocations.get(ordinal)?)?;
        self.attributes.get(idx)
    }

    /// The handle that holds the address with `ordinal`, if any.
    pub fn handle_of(&self, ordinal: usize) -> Option<&str> {
        self.attribute_of(ordinal)?.handle_id.as_deref()
    }

    /// Number of allocated addresses.
    pub fn in_use(&self) -> usize {
        self.allocations.iter().filter(|a| a.is_some()).count()
    }

    /// Number of free addresses (the length of `unallocated`).
    pub fn free(&self) -> usize {
        self.unallocated.len()
    }

    /// Whether no address is allocated.
    pub fn is_empty(&self) -> bool {
        self.in_use() == 0
    }

    /// The allocated addresses and who holds them, in ordinal order.
    pub fn allocated(&self) -> Vec<(usize, Option<&AllocationAttribute>)> {
        self.allocations
            .iter()
            .enumerate()
            .filter_map(|(ord, a)| a.map(|idx| (ord, self.attributes.get(idx))))
            .collect()
    }
}

impl IPAMBlock {
    /// The object name of the block over `cidr`, as Calico names it: `10-0-0-0-26`.
    pub fn name_for(cidr: &IpNet) -> String {
        crate::names::cidr_name_part(cidr)
    }

    /// An empty block object over `cidr`, named by [`IPAMBlock::name_for`].
    pub fn empty(cidr: IpNet, node: Option<&str>) -> Result<Self, BlockError> {
        let spec = IPAMBlockSpec::empty(cidr, node)?;
        Ok(IPAMBlock::new(&Self::name_for(&cidr.trunc()), spec))
    }
}

/// `host:NODE`, the affinity string of a block owned by `node`.
pub fn host_affinity(node: &str) -> String {
    format!("{AFFINITY_HOST_PREFIX}{node}")
}

/// Number of addresses in `cidr`, if at most 2^16.
pub fn block_size_of(cidr: &IpNet) -> Option<usize> {
    let host_bits = cidr.max_prefix_len() - cidr.prefix_len();
    (host_bits <= MAX_HOST_BITS).then(|| 1usize << host_bits)
}

/// The ordinal of `ip` within `cidr` (0 for the network address).
pub fn ordinal_of(cidr: &IpNet, ip: IpAddr) -> Option<usize> {
    if !cidr.contains(&ip) {
        return None;
    }
    let offset = match (cidr.network(), ip) {
        (IpAddr::V4(net), IpAddr::V4(ip)) => u128::from(u32::from(ip) - u32::from(net)),
        (IpAddr::V6(net), IpAddr::V6(ip)) => u128::from(ip) - u128::from(net),
        _ => return None,
    };
    usize::try_from(offset).ok()
}

/// The address at `ordinal` within `cidr`, if `cidr` has that many addresses.
pub fn address_of(cidr: &IpNet, ordinal: usize) -> Option<IpAddr> {
    let host_bits = u32::from(cidr.max_prefix_len() - cidr.prefix_len());
    let ord = u128::try_from(ordinal).ok()?;
    if host_bits < 128 && ord >> host_bits != 0 {
        return None;
    }
    match cidr.network() {
        IpAddr::V4(net) => {
            let v = u32::try_from(u128::from(u32::from(net)) + ord).ok()?;
            Some(IpAddr::V4(v.into()))
        }
        IpAddr::V6(net) => Some(IpAddr::V6(u128::from(net).checked_add(ord)?.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn an_empty_block_has_every_ordinal_free_in_address_order() {
        let b = IPAMBlockSpec::empty(net("10.0.0.64/26"), Some("n1")).unwrap();
        assert_eq!(b.allocations.len(), 64);
        assert_eq!(b.unallocated, (0..64).collect::<Vec<_>>());
        assert_eq!(b.affinity.as_deref(), Some("host:n1"));
        assert_eq!(b.affinity_node(), Some("n1"));
        assert!(b.is_empty());
        assert_eq!(b.size(), Some(64));
    }

    #[test]
    fn ordinals_and_addresses_map_both_ways() {
        let b = IPAMBlockSpec::empty(net("10.0.0.64/26"), None).unwrap();
        assert_eq!(b.address_of(0), Some("10.0.0.64".parse().unwrap()));
        assert_eq!(b.address_of(63), Some("10.0.0.127".parse().unwrap()));
        assert_eq!(b.address_of(64), None);
        assert_eq!(b.ordinal_of("10.0.0.100".parse().unwrap()), Some(36));
        assert_eq!(b.ordinal_of("10.0.0.128".parse().unwrap()), None);
        let v6 = IPAMBlockSpec::empty(net("fd00::40/122"), None).unwrap();
        assert_eq!(v6.address_of(1), Some("fd00::41".parse().unwrap()));
        assert_eq!(v6.ordinal_of("fd00::7f".parse().unwrap()), Some(63));
        assert_eq!(v6.ordinal_of("10.0.0.1".parse().unwrap()), None);
    }

    #[test]
    fn a_host_route_block_has_one_address() {
        let b = IPAMBlockSpec::empty(net("10.0.0.7/32"), None).unwrap();
        assert_eq!(b.address_of(0), Some("10.0.0.7".parse().unwrap()));
        assert_eq!(b.address_of(1), None);
    }

    #[test]
    fn blocks_larger_than_65536_addresses_are_refused() {
        assert!(matches!(
            IPAMBlockSpec::empty(net("10.0.0.0/8"), None),
            Err(BlockError::TooLarge { .. })
        ));
    }

    #[test]
    fn handles_are_found_through_attributes() {
        let mut b = IPAMBlockSpec::empty(net("10.0.0.0/30"), Some("n1")).unwrap();
        b.attributes
            .push(AllocationAttribute::for_pod("h1", "ns", "p", "n1"));
        b.allocations[2] = Some(0);
        b.unallocated.retain(|&o| o != 2);
        assert_eq!(b.handle_of(2), Some("h1"));
        assert_eq!(b.handle_of(1), None);
        assert_eq!(b.attribute_of(2).and_then(|a| a.pod()), Some("p"));
        assert_eq!(b.in_use(), 1);
        assert_eq!(b.free(), 3);
        assert_eq!(b.allocated().len(), 1);
    }

    proptest::proptest! {
        #[test]
        fn ordinals_and_addresses_are_inverse(
            v4 in proptest::prelude::any::<u32>(), v6 in proptest::prelude::any::<u128>(),
            host_bits in 0u8..=16, ord in 0usize..70_000,
        ) {
            let nets = [
                IpNet::new(IpAddr::V4(v4.into()), 32 - host_bits).unwrap().trunc(),
                IpNet::new(IpAddr::V6(v6.into()), 128 - host_bits).unwrap().trunc(),
            ];
            for net in nets {
                let size = block_size_of(&net).unwrap();
                match address_of(&net, ord) {
                    Some(ip) => {
                        proptest::prop_assert!(ord < size);
                        proptest::prop_assert!(net.contains(&ip));
                        proptest::prop_assert_eq!(ordinal_of(&net, ip), Some(ord));
                    }
                    None => proptest::prop_assert!(ord >= size),
                }
            }
        }
    }

    #[test]
    fn object_names_follow_calico() {
        assert_eq!(IPAMBlock::name_for(&net("10.0.0.64/26")), "10-0-0-64-26");
        assert_eq!(
            crate::BlockAffinity::name_for("node-1", &net("fd00::40/122")),
            "node-1-fd00--40-122"
        );
    }
}
