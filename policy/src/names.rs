//! Names of what the compiler creates: every chain starts with [`CHAIN_PREFIX`], every ipset
//! with [`SET_PREFIX`], and names derived from objects carry a stable hash of them, so the same
//! model gives the same names on every node and after every restart.

use crate::model::{Family, PolicyKey};

/// The prefix of every chain Margay owns (`mgy-`).
pub const CHAIN_PREFIX: &str = "mgy-";
/// The prefix of every ipset Margay owns (`mgy`). Sets are `mgy4…`/`mgy6…` by family.
pub const SET_PREFIX: &str = "mgy";
/// The prefix of the comment on every rule Margay writes (`mgy:`).
pub const COMMENT_PREFIX: &str = "mgy:";
/// The longest chain name iptables accepts.
pub const MAX_CHAIN_LEN: usize = 28;
/// The longest ipset name the kernel accepts.
pub const MAX_SET_LEN: usize = 31;

/// The chain FORWARD jumps to.
pub const FORWARD_CHAIN: &str = "mgy-FORWARD";
/// Dispatches packets from a local pod's interface to its from-workload chain.
pub const FROM_WL_DISPATCH: &str = "mgy-from-wl-dispatch";
/// Dispatches packets to a local pod's interface to its to-workload chain.
pub const TO_WL_DISPATCH: &str = "mgy-to-wl-dispatch";
/// The interface wildcard of every pod's host-side veth.
pub const IFACE_WILDCARD: &str = "mgy+";

/// The mark bit a policy sets when it allows a packet (Calico uses 0x10000; kube-proxy 0x4000
/// and 0x8000: this one is clear of both).
pub const ACCEPT_MARK: u32 = 0x0010_0000;

/// `len` hex characters of the SHA-1 of `input`.
pub fn hash_hex(input: &str, len: usize) -> String {
    let digest = sha1_smol::Sha1::from(input).digest().to_string();
    digest[..len].to_owned()
}

/// The ingress chain of a policy: `mgy-pi-` + 16 hex characters.
pub fn policy_ingress_chain(key: &PolicyKey) -> String {
    format!("mgy-pi-{}", hash_hex(&format!("{}/{}", key.0, key.1), 16))
}

/// The egress chain of a policy: `mgy-pe-` + 16 hex characters.
pub fn policy_egress_chain(key: &PolicyKey) -> String {
    format!("mgy-pe-{}", hash_hex(&format!("{}/{}", key.0, key.1), 16))
}

/// The chain for packets to a local pod (its ingress policy).
pub fn to_workload_chain(iface: &str) -> String {
    format!("mgy-tw-{iface}")
}

/// The chain for packets from a local pod (anti-spoofing, then its egress policy).
pub fn from_workload_chain(iface: &str) -> String {
    format!("mgy-fw-{iface}")
}

/// The source check of a pod with more than one address of a family.
pub fn source_check_chain(iface: &str) -> String {
    format!("mgy-sp-{iface}")
}

/// An ipset name: `mgy4`/`mgy6`, a letter for its kind (`s` pods by selector, `b` ipBlock, `n`
/// named port) and 20 hex characters of the hash of what it holds (26 characters in all).
pub fn set_name(family: Family, kind: char, identity: &str) -> String {
    let fam = match family {
        Family::V4 => '4',
        Family::V6 => '6',
    };
    format!("{SET_PREFIX}{fam}{kind}-{}", hash_hex(identity, 20))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_kernel_limits_and_are_stable() {
        let key = PolicyKey("a-very-long-namespace-name".into(), "x".repeat(253));
        assert!(policy_ingress_chain(&key).len() <= MAX_CHAIN_LEN);
        assert_eq!(
            policy_ingress_chain(&key),
            policy_ingress_chain(&key.clone())
        );
        assert_ne!(policy_ingress_chain(&key), policy_egress_chain(&key));
        assert!(to_workload_chain("mgy0123456789a").len() <= MAX_CHAIN_LEN);
        let s = set_name(Family::V6, 's', "anything");
        assert!(s.len() <= MAX_SET_LEN && s.starts_with("mgy6s-"), "{s}");
        // A known value, so that a change of the hash (which renames everything) is deliberate.
        assert_eq!(hash_hex("x/deny-all", 8), "9b0ccdde");
    }
}
