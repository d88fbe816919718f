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
/// The most dedicated route reflectors (addresses .2 to .9).
pub const MAX_REFLECTORS: usize = 8;
/// The external (top-of-rack) router's underlay address.
pub const ROUTER_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The external router's IPv6 underlay address (dual stack).
pub const ROUTER_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x198, 0x18, 0, 0, 0, 0, 1);
/// The external router's AS number (eBGP with every node).
pub const ROUTER_AS: u32 = 65001;
/// The "internet" side: a network behind the infra namespace that only node addresses are
/// routed back from, so that pods reach it only through natOutgoing.
pub const INTERNET_NET: &str = "198.19.0.0/24";
/// The infra namespace's address on the internet side (its gateway).
pub const INTERNET_GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 254);
/// The internet host's address.
pub const INTERNET_HOST: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);

/// Host `host` of the underlay: 198.18.0.HOST and, dual stack, fd00:198:18::HOST (as a number).
fn underlay_host(host: u8, ipv6: bool) -> (Ipv4Addr, Option<Ipv6Addr>) {
    (
        Ipv4Addr::new(198, 18, 0, host),
        ipv6.then(|| Ipv6Addr::new(0xfd00, 0x198, 0x18, 0, 0, 0, 0, u16::from(host))),
    )
}

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

/// One dedicated route reflector (`margay-node --role route-reflector`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReflectorPlan {
    /// Its node name, `rr-1` …
    pub name: String,
    /// Its IPv4 underlay address.
    pub ipv4: Ipv4Addr,
    /// Its IPv6 underlay address, with `--ipv6`.
    pub ipv6: Option<Ipv6Addr>,
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
    /// The dedicated route reflectors (none: the node-to-node mesh).
    pub reflectors: Vec<ReflectorPlan>,
}

/// A lab that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// Zero nodes, or more than the underlay holds.
    #[error("--nodes {0}: a lab has 1 to {MAX_NODES} nodes")]
    Nodes(usize),
    /// More reflectors than their address range holds.
    #[error("--route-reflectors {0}: a lab has 0 to {MAX_REFLECTORS} route reflectors")]
    Reflectors(usize),
}

impl LabPlan {
    /// The plan for `nodes` nodes with `pods_per_node` pods each, IPv4 or dual stack.
    pub fn new(nodes: usize, pods_per_node: usize, ipv6: bool) -> Result<Self, PlanError> {
        if nodes == 0 || nodes > MAX_NODES {
            return Err(PlanError::Nodes(nodes));
        }
        let nodes = (1..=nodes)
            .map(|i| {
                let (ipv4, ipv6) = underlay_host(10 + i as u8, ipv6);
                NodePlan {
                    name: format!("node-{i}"),
                    ipv4,
                    ipv6,
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
            reflectors: Vec::new(),
        })
    }

    /// Adds `n` dedicated route reflectors `rr-1`… at 198.18.0.2… (fd00:198:18::2… dual stack).
    pub fn with_reflectors(mut self, n: usize) -> Result<Self, PlanError> {
        if n > MAX_REFLECTORS {
            return Err(PlanError::Reflectors(n));
        }
        let ipv6 = self.pool_v6.is_some();
        self.reflectors = (1..=n)
            .map(|i| {
                let (ipv4, ipv6) = underlay_host(1 + i as u8, ipv6);
                ReflectorPlan {
                    name: format!("rr-{i}"),
                    ipv4,
                    ipv6,
                }
            })
            .collect();
        Ok(self)
    }

    /// Every address the plan hands out, for checks that nothing collides.
    pub fn addresses(&self) -> Vec<IpAddr> {
        let mut out = vec![
            IpAddr::V4(self.infra),
            IpAddr::V4(ROUTER_V4),
            IpAddr::V6(ROUTER_V6),
        ];
        for n in &self.nodes {
            out.push(IpAddr::V4(n.ipv4));
            out.extend(n.ipv6.map(IpAddr::V6));
        }
        for r in &self.reflectors {
            out.push(IpAddr::V4(r.ipv4));
            out.extend(r.ipv6.map(IpAddr::V6));
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
        let p = LabPlan::new(MAX_NODES, 0, true)
            .unwrap()
            .with_reflectors(MAX_REFLECTORS)
            .unwrap();
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
        assert_eq!(
            LabPlan::new(3, 1, false)
                .unwrap()
                .with_reflectors(MAX_REFLECTORS + 1)
                .unwrap_err()
                .to_string(),
            "--route-reflectors 9: a lab has 0 to 8 route reflectors"
        );
    }

    #[test]
    fn reflectors_sit_below_the_nodes_and_above_the_router() {
        let p = LabPlan::new(2, 0, true)
            .unwrap()
            .with_reflectors(2)
            .unwrap();
        let rr: Vec<_> = p
            .reflectors
            .iter()
            .map(|r| (r.name.as_str(), r.ipv4.to_string()))
            .collect();
        assert_eq!(
            rr,
            [
                ("rr-1", "198.18.0.2".to_owned()),
                ("rr-2", "198.18.0.3".to_owned())
            ]
        );
        assert_eq!(p.reflectors[1].ipv6.unwrap().to_string(), "fd00:198:18::3");
        assert!(p.underlay.contains(&IpAddr::V4(ROUTER_V4)));
    }
}
