//! IPPool validation and pool overlap checks.

use ipnet::IpNet;

use super::{Ctx, FieldError, Validate};
use crate::ippool::{BLOCK_SIZE_RANGE_V4, BLOCK_SIZE_RANGE_V6, IPPool};

/// Ranges no pool may overlap: pods would be unreachable or collide with host-local addresses
/// (169.254.1.1 is the pods' default gateway).
const RESERVED: &[(&str, &str)] = &[
    ("127.0.0.0/8", "the loopback range"),
    ("169.254.0.0/16", "the link-local range"),
    ("224.0.0.0/4", "the multicast range"),
    ("::1/128", "the loopback address"),
    ("fe80::/10", "the link-local range"),
    ("ff00::/8", "the multicast range"),
];

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

impl Validate for IPPool {
    fn field_errors(&self) -> Vec<FieldError> {
        let mut c = Ctx::new("IPPool", &self.metadata);
        c.check_meta(&self.metadata);
        let spec = &self.spec;
        let net = c.cidr("spec.cidr", &spec.cidr);
        let (range, family) = if spec.is_ipv6() {
            (BLOCK_SIZE_RANGE_V6, "IPv6")
        } else {
            (BLOCK_SIZE_RANGE_V4, "IPv4")
        };
        let bs = spec.block_size();
        if !range.contains(&bs) {
            c.err(
                "spec.blockSize",
                format!("{bs} out of range {}..={}", range.start(), range.end()),
            );
        } else if let Some(net) = net
            && bs < net.prefix_len()
        {
            c.err(
                "spec.blockSize",
                format!(
                    "{bs} is shorter than the prefix of spec.cidr {net} (a block must fit in the pool)"
                ),
            );
        }
        if let Some(net) = net {
            for (r, what) in RESERVED {
                let r: IpNet = r.parse().expect("reserved ranges are valid CIDRs");
                if overlaps(&net, &r) {
                    c.err("spec.cidr", format!("{net} overlaps {what} {r}"));
                }
            }
            if net.prefix_len() == 0 {
                c.err("spec.cidr", format!("{net} covers every {family} address"));
            }
        }
        c.selector("spec.nodeSelector", &spec.node_selector);
        if spec.allowed_uses.is_empty() {
            c.err("spec.allowedUses", "must not be empty (e.g. [Workload])");
        }
        c.into_errors()
    }
}

/// Overlaps between pools: for each overlapping pair (objects with different names; both CIDRs
/// valid), one error on the pool whose name sorts later, naming the other pool. The order of
/// `pools` does not matter; an object of the same name twice (an update) is not an overlap.
///
/// `IPPool "b": spec.cidr 10.1.0.0/16 overlaps IPPool "a" (10.0.0.0/8)`
pub fn pool_overlaps<'a>(pools: impl IntoIterator<Item = &'a IPPool>) -> Vec<FieldError> {
    let mut parsed: Vec<(&str, &IPPool, IpNet)> = pools
        .into_iter()
        .filter_map(|p| {
            let net: IpNet = p.spec.cidr.parse().ok()?;
            Some((p.metadata.name.as_deref().unwrap_or(""), p, net.trunc()))
        })
        .collect();
    parsed.sort_by(|a, b| a.0.cmp(b.0).then(a.2.cmp(&b.2)));
    let mut errors = Vec::new();
    for (i, (name_b, pool_b, net_b)) in parsed.iter().enumerate() {
        for (name_a, _, net_a) in &parsed[..i] {
            if name_a != name_b && overlaps(net_a, net_b) {
                let mut c = Ctx::new("IPPool", &pool_b.metadata);
                c.err(
                    "spec.cidr",
                    format!("{net_b} overlaps IPPool {name_a:?} ({net_a})"),
                );
                errors.extend(c.into_errors());
            }
        }
    }
    errors
}
