//! The address plan of a lab: which node gets which underlay address, where etcd lives, which
//! pool the pods draw from. Pure, so that every lab and test agrees on it.
//!
//! ```text
//! underlay bridge   198.18.0.0/24    (RFC 2544 benchmarking range, never routed outside)
//!   infra (etcd…)   198.18.0.254
//!   node-N          198.18.0.(10+N)  fd00:198:18::(10+N) with --ipv6
//! pod pool          100.64.0.0/16    fd00:100:64::/112 with --ipv6
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// The most nodes one lab can have on its /24 underlay (addresses .11 to .250).
pub const MAX_NODES: usize = 240;

/// One node of the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlan {
    /// Node name, `node-1` …
    pub name: String,
    /// Its IPv4 underlay address.
    pub ipv4: Ipv4Addr,
    /// Its IPv6 underlay address, with `--ipv6`.
    pub ipv6: Option<Ipv6Addr>,
    /// How many pods it gets.
    pub pods: usize,
}

/// The whole lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabPlan {
    /// The underlay network every node and the infra namespace sit on.
    pub underlay: IpNet,
    /// The infra namespace's address (etcd, the test API server).
    pub infra: Ipv4Addr,
    /// The IPv4 pod pool.
    pub pool_v4: IpNet,
    /// The IPv6 pod pool, with `--ipv6`.
    pub pool_v6: Option<IpNet>,
    /// The nodes.
    pub nodes: Vec<NodePlan>,
}

/// A lab that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// Zero nodes, or more than the underlay holds.
    #[error("--nodes {0}: a lab has 1 to {MAX_NODES} nodes")]
    Nodes(usize),
}

impl LabPlan {
    /// The plan for `nodes` nodes with `pods_per_node` pods each, IPv4 or dual stack.
    pub fn new(nodes: usize, pods_per_node: usize, ipv6: bool) -> Result<Self, PlanError> {
        if nodes == 0 || nodes > MAX_NODES {
            return Err(PlanError::Nodes(nodes));
        }
        let nodes = (1..=nodes)
            .map(|i| {
                let host = 10 + i as u8;
                NodePlan {
                    name: format!("node-{i}"),
                    ipv4: Ipv4Addr::new(198, 18, 0, host),
                    ipv6: ipv6
                        .then(|| Ipv6Addr::new(0xfd00, 0x198, 0x18, 0, 0, 0, 0, u16::from(host))),
                    pods: pods_per_node,
                }
            })
            .collect();
        Ok(Self {
            underlay: "198.18.0.0/24".parse().expect("literal"),
            infra: Ipv4Addr::new(198, 18, 0, 254),
            pool_v4: "100.64.0.0/16".parse().expect("literal"),
            pool_v6: ipv6.then(|| "fd00:100:64::/112".parse().expect("literal")),
            nodes,
        })
    }

    /// Every address the plan hands out, for checks that nothing collides.
    pub fn addresses(&self) -> Vec<IpAddr> {
        let mut out = vec![IpAddr::V4(self.infra)];
        for n in &self.nodes {
            out.push(IpAddr::V4(n.ipv4));
            out.extend(n.ipv6.map(IpAddr::V6));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_nodes_get_consecutive_underlay_addresses() {
        let p = LabPlan::new(3, 2, false).unwrap();
        let addrs: Vec<_> = p.nodes.iter().map(|n| n.ipv4.to_string()).collect();
        assert_eq!(addrs, ["198.18.0.11", "198.18.0.12", "198.18.0.13"]);
        assert_eq!(p.nodes[2].name, "node-3");
        assert!(p.pool_v6.is_none());
    }

    #[test]
    fn every_address_is_inside_the_test_ranges_and_unique() {
        let p = LabPlan::new(MAX_NODES, 0, true).unwrap();
        let test_v4: IpNet = "198.18.0.0/15".parse().unwrap();
        let ula: IpNet = "fd00::/8".parse().unwrap();
        let mut addrs = p.addresses();
        for a in &addrs {
            assert!(
                test_v4.contains(a) || ula.contains(a),
                "{a} outside the test ranges"
            );
        }
        assert!(
            p.underlay
                .contains(&IpAddr::V4(p.nodes.last().unwrap().ipv4))
        );
        let n = addrs.len();
        addrs.sort();
        addrs.dedup();
        assert_eq!(addrs.len(), n, "duplicate address in the plan");
        assert!(
            "100.64.0.0/10"
                .parse::<IpNet>()
                .unwrap()
                .contains(&p.pool_v4)
        );
    }

    #[test]
    fn too_many_or_no_nodes_is_an_error_with_the_range() {
        assert_eq!(
            LabPlan::new(0, 1, false).unwrap_err().to_string(),
            "--nodes 0: a lab has 1 to 240 nodes"
        );
        assert!(LabPlan::new(MAX_NODES + 1, 1, false).is_err());
    }
}
