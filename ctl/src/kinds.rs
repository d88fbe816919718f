//! The kinds `margayctl` knows, their command-line names and aliases, and dispatch from a kind to
//! its Rust type ([`crate::with_type!`]).

use std::fmt;

/// A resource kind, as `get`, `delete` and the documents of `apply` name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `IPPool`.
    IPPool,
    /// `Node` (Margay's node resource, not the Kubernetes one).
    Node,
    /// `NodeStatus`, published by each agent.
    NodeStatus,
    /// `BGPPeer`.
    BGPPeer,
    /// `BGPConfiguration`.
    BGPConfiguration,
    /// `WorkloadEndpoint` (namespaced).
    WorkloadEndpoint,
    /// Kubernetes `NetworkPolicy` (namespaced, `networking.k8s.io/v1`).
    NetworkPolicy,
    /// `IPAMBlock`.
    IPAMBlock,
    /// `BlockAffinity`.
    BlockAffinity,
    /// `IPAMHandle`.
    IPAMHandle,
    /// `IPAMConfig`.
    IPAMConfig,
    /// `AgentConfiguration`.
    AgentConfiguration,
}

/// A kind name that `margayctl` does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown resource type {0:?}; one of: {list}", list = Kind::ALL.iter().map(|k| k.cli_name()).collect::<Vec<_>>().join(", "))]
pub struct UnknownKind(pub String);

impl Kind {
    /// Every kind, in the order `margayctl` lists them.
    pub const ALL: &'static [Kind] = &[
        Kind::IPPool,
        Kind::Node,
        Kind::NodeStatus,
        Kind::BGPPeer,
        Kind::BGPConfiguration,
        Kind::WorkloadEndpoint,
        Kind::NetworkPolicy,
        Kind::IPAMBlock,
        Kind::BlockAffinity,
        Kind::IPAMHandle,
        Kind::IPAMConfig,
        Kind::AgentConfiguration,
    ];

    /// The `kind` field of its objects.
    pub fn name(self) -> &'static str {
        match self {
            Kind::IPPool => "IPPool",
            Kind::Node => "Node",
            Kind::NodeStatus => "NodeStatus",
            Kind::BGPPeer => "BGPPeer",
            Kind::BGPConfiguration => "BGPConfiguration",
            Kind::WorkloadEndpoint => "WorkloadEndpoint",
            Kind::NetworkPolicy => "NetworkPolicy",
            Kind::IPAMBlock => "IPAMBlock",
            Kind::BlockAffinity => "BlockAffinity",
            Kind::IPAMHandle => "IPAMHandle",
            Kind::IPAMConfig => "IPAMConfig",
            Kind::AgentConfiguration => "AgentConfiguration",
        }
    }

    /// The name used on the command line (lower case, singular).
    pub fn cli_name(self) -> String {
        self.name().to_lowercase()
    }

    /// The `apiVersion` of its objects.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::NetworkPolicy => "networking.k8s.io/v1",
            _ => margay_api::API_VERSION,
        }
    }

    /// Whether its objects live in a namespace.
    pub fn namespaced(self) -> bool {
        matches!(self, Kind::WorkloadEndpoint | Kind::NetworkPolicy)
    }

    /// The kind a command-line name stands for: the kind, its plural or a short alias, in any case
    /// (`ippool`, `IPPools`, `ipp`, `wep`, `netpol`).
    pub fn parse(s: &str) -> Result<Kind, UnknownKind> {
        let l = s.to_lowercase();
        let k = match l.as_str() {
            "ippool" | "ippools" | "ipp" | "pool" | "pools" => Kind::IPPool,
            "node" | "nodes" | "no" => Kind::Node,
            "nodestatus" | "nodestatuses" => Kind::NodeStatus,
            "bgppeer" | "bgppeers" | "bgpp" => Kind::BGPPeer,
            "bgpconfiguration" | "bgpconfigurations" | "bgpconfig" | "bgpconfigs" => {
                Kind::BGPConfiguration
            }
            "workloadendpoint" | "workloadendpoints" | "wep" | "weps" => Kind::WorkloadEndpoint,
            "networkpolicy" | "networkpolicies" | "netpol" | "netpols" | "policy" | "policies" => {
                Kind::NetworkPolicy
            }
            "ipamblock" | "ipamblocks" => Kind::IPAMBlock,
            "blockaffinity" | "blockaffinities" => Kind::BlockAffinity,
            "ipamhandle" | "ipamhandles" => Kind::IPAMHandle,
            "ipamconfig" | "ipamconfigs" | "ipamconfiguration" | "ipamconfigurations" => {
                Kind::IPAMConfig
            }
            "agentconfiguration" | "agentconfigurations" | "agentconfig" => {
                Kind::AgentConfiguration
            }
            _ => return Err(UnknownKind(s.to_string())),
        };
        Ok(k)
    }

    /// The kind of a document's `kind` field (exact spelling, as Kubernetes).
    pub fn from_kind_field(kind: &str) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| k.name() == kind)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Runs `$body` with `$t` bound to the Rust type of `$kind`.
#[macro_export]
macro_rules! with_type {
    ($kind:expr, $t:ident => $body:expr) => {{
        use $crate::kinds::Kind;
        match $kind {
            Kind::IPPool => {
                type $t = margay_api::IPPool;
                $body
            }
            Kind::Node => {
                type $t = margay_api::MargayNode;
                $body
            }
            Kind::NodeStatus => {
                type $t = margay_api::NodeStatus;
                $body
            }
            Kind::BGPPeer => {
                type $t = margay_api::BGPPeer;
                $body
            }
            Kind::BGPConfiguration => {
                type $t = margay_api::BGPConfiguration;
                $body
            }
            Kind::WorkloadEndpoint => {
                type $t = margay_api::WorkloadEndpoint;
                $body
            }
            Kind::NetworkPolicy => {
                type $t = margay_api::k8s::NetworkPolicy;
                $body
            }
            Kind::IPAMBlock => {
                type $t = margay_api::IPAMBlock;
                $body
            }
            Kind::BlockAffinity => {
                type $t = margay_api::BlockAffinity;
                $body
            }
            Kind::IPAMHandle => {
                type $t = margay_api::IPAMHandle;
                $body
            }
            Kind::IPAMConfig => {
                type $t = margay_api::IPAMConfig;
                $body
            }
            Kind::AgentConfiguration => {
                type $t = margay_api::AgentConfiguration;
                $body
            }
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_name_the_same_kind() {
        for s in ["ippool", "IPPools", "ipp"] {
            assert_eq!(Kind::parse(s).unwrap(), Kind::IPPool);
        }
        assert_eq!(Kind::parse("wep").unwrap(), Kind::WorkloadEndpoint);
        assert_eq!(
            Kind::parse("bgpconfigurations").unwrap(),
            Kind::BGPConfiguration
        );
        assert_eq!(Kind::parse("networkpolicies").unwrap(), Kind::NetworkPolicy);
    }

    #[test]
    fn an_unknown_kind_lists_the_known_ones() {
        let e = Kind::parse("pods").unwrap_err().to_string();
        assert!(
            e.starts_with("unknown resource type \"pods\"; one of: ippool, node"),
            "{e}"
        );
    }

    #[test]
    fn every_kind_reads_back_from_its_kind_field() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_kind_field(k.name()), Some(*k));
        }
    }
}
