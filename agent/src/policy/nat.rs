//! natOutgoing, as Felix: traffic from a pool with `natOutgoing` to a destination outside every
//! pool is MASQUERADEd to the node's address, so pods reach networks that do not route pod
//! addresses back (the "internet"); pod-to-pod traffic never is.
//!
//! Two ipsets per family: every enabled pool (`mgy4-all-pools`), and those with natOutgoing
//! (`mgy4-masq-pools`); one chain in the nat table, hooked into POSTROUTING:
//!
//! ```text
//! -A mgy-nat-outgoing -m set --match-set mgy4-masq-pools src
//!                     -m set ! --match-set mgy4-all-pools dst -j MASQUERADE
//! ```
//!
//! Pure: pools in, sets and chains out; the policy dataplane's drivers write them together with
//! the policy's (one ipset owner, so no driver removes the other's sets).

use std::collections::BTreeSet;

use ipnet::IpNet;
use margay_api::IPPool;
use margay_policy::{Family, Rule, SetDesc, SetType};

/// The table the chain lives in.
pub const TABLE: &str = "nat";
/// The chain.
pub const CHAIN: &str = "mgy-nat-outgoing";
/// The hooks' owner name.
pub const OWNER: &str = "nat-outgoing";

/// The set of every enabled pool of `family`.
pub fn all_pools_set(family: Family) -> &'static str {
    match family {
        Family::V4 => "mgy4-all-pools",
        Family::V6 => "mgy6-all-pools",
    }
}

/// The set of the natOutgoing pools of `family`.
pub fn masq_pools_set(family: Family) -> &'static str {
    match family {
        Family::V4 => "mgy4-masq-pools",
        Family::V6 => "mgy6-masq-pools",
    }
}

/// What natOutgoing wants for one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatState {
    /// The family.
    pub family: Family,
    /// Members of the all-pools set.
    pub all: BTreeSet<String>,
    /// Members of the natOutgoing set.
    pub masq: BTreeSet<String>,
    /// The chain's rules (empty when no pool has natOutgoing: then the chain and its hook go).
    pub rules: Vec<Rule>,
}

impl NatState {
    /// The sets as the ipset driver takes them.
    pub fn sets(&self) -> [(&'static str, (SetDesc, BTreeSet<String>)); 2] {
        let desc = SetDesc {
            family: self.family,
            kind: SetType::Net,
        };
        [
            (all_pools_set(self.family), (desc, self.all.clone())),
            (masq_pools_set(self.family), (desc, self.masq.clone())),
        ]
    }

    /// The POSTROUTING hook (none when the chain is not wanted).
    pub fn hooks(&self) -> Vec<Rule> {
        if self.rules.is_empty() {
            Vec::new()
        } else {
            vec![Rule::new(format!("-j {CHAIN}"), "hook nat-outgoing")]
        }
    }
}

/// A pool's CIDR as an ipset member (`hash:net` prints host routes bare).
fn member(net: IpNet) -> String {
    margay_policy::rules::net_member(net)
}

/// The natOutgoing state of both families from the pools (disabled pools are left out of both
/// sets, as Felix does: their addresses are no longer pod addresses).
pub fn nat_state(pools: &[IPPool]) -> [NatState; 2] {
    Family::ALL.map(|family| {
        let (mut all, mut masq) = (BTreeSet::new(), BTreeSet::new());
        for p in pools.iter().filter(|p| !p.spec.disabled) {
            let Ok(net) = p.spec.cidr.parse::<IpNet>() else {
                continue;
            };
            if net.addr().is_ipv4() != (family == Family::V4) {
                continue;
            }
            all.insert(member(net.trunc()));
            if p.spec.nat_outgoing {
                masq.insert(member(net.trunc()));
            }
        }
        let rules = if masq.is_empty() {
            Vec::new()
        } else {
            vec![Rule::new(
                format!(
                    "-m set --match-set {} src -m set ! --match-set {} dst -j MASQUERADE",
                    masq_pools_set(family),
                    all_pools_set(family)
                ),
                "nat-outgoing: pool to outside every pool",
            )]
        };
        NatState {
            family,
            all,
            masq,
            rules,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use margay_api::IPPoolSpec;

    fn pool(name: &str, cidr: &str, nat: bool, disabled: bool) -> IPPool {
        let mut s = IPPoolSpec::new(cidr);
        s.nat_outgoing = nat;
        s.disabled = disabled;
        IPPool::new(name, s)
    }

    #[test]
    fn natoutgoing_pools_masquerade_to_outside_every_enabled_pool() {
        let [v4, v6] = nat_state(&[
            pool("a", "100.64.0.0/16", true, false),
            pool("b", "100.65.0.0/16", false, false),
            pool("off", "100.66.0.0/16", true, true),
            pool("v6", "fd00:100::/64", false, false),
        ]);
        assert_eq!(
            v4.all,
            ["100.64.0.0/16", "100.65.0.0/16"].map(String::from).into()
        );
        assert_eq!(v4.masq, ["100.64.0.0/16"].map(String::from).into());
        assert_eq!(v4.rules.len(), 1);
        assert!(v4.rules[0].body.contains("--match-set mgy4-masq-pools src"));
        assert!(
            v4.rules[0]
                .body
                .contains("! --match-set mgy4-all-pools dst -j MASQUERADE")
        );
        assert_eq!(v4.hooks().len(), 1);
        // No IPv6 pool has natOutgoing: no chain and no hook, but the set of pools is kept.
        assert!(v6.rules.is_empty() && v6.hooks().is_empty());
        assert_eq!(v6.all, ["fd00:100::/64"].map(String::from).into());
    }

    #[test]
    fn with_no_pools_nothing_is_wanted() {
        let [v4, v6] = nat_state(&[]);
        for s in [v4, v6] {
            assert!(s.rules.is_empty() && s.all.is_empty() && s.masq.is_empty());
        }
    }
}
