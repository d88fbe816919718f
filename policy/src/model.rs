//! The compiler's inputs: endpoints (local pods get chains; every pod's addresses feed the
//! sets), namespaces with their labels, and NetworkPolicies.

use std::collections::BTreeMap;
use std::net::IpAddr;

pub use margay_api::agentconfig::Protocol;
pub use margay_api::k8s::NetworkPolicySpec;

/// An endpoint's identity: (namespace, WorkloadEndpoint name).
pub type EndpointKey = (String, String);

/// A policy's identity: (namespace, name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyKey(pub String, pub String);

/// An IP family: each has its own iptables tables and ipsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4 (`iptables`, `family inet`).
    V4,
    /// IPv6 (`ip6tables`, `family inet6`).
    V6,
}

impl Family {
    /// Both families, IPv4 first.
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// The family of an address.
    pub fn of(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// `inet` or `inet6`, as ipset names it.
    pub fn ipset_family(self) -> &'static str {
        match self {
            Family::V4 => "inet",
            Family::V6 => "inet6",
        }
    }
}

/// A named port of a pod: (name, protocol) → number.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NamedPort {
    /// The port's name from the pod spec.
    pub name: String,
    /// Its protocol.
    pub protocol: Protocol,
    /// Its number.
    pub port: u16,
}

/// A pod interface as the compiler sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Endpoint {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's labels.
    pub labels: BTreeMap<String, String>,
    /// Its addresses.
    pub ips: Vec<IpAddr>,
    /// Its named container ports.
    pub ports: Vec<NamedPort>,
    /// The host side of its veth (`mgy…`); used for local endpoints.
    pub iface: String,
    /// Whether the pod runs on this node (gets chains) or elsewhere (only feeds sets).
    pub local: bool,
}

/// The labels a namespace is matched by: its own plus `kubernetes.io/metadata.name`, which the
/// API server sets on every namespace (so the compiler adds it also when a namespace object
/// has not been seen, or was written without it).
pub fn namespace_labels(name: &str, labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut l = labels.clone();
    l.insert(
        margay_api::k8s::LABEL_NAMESPACE_NAME.to_owned(),
        name.to_owned(),
    );
    l
}

/// `tcp`, `udp` or `sctp`, as iptables and ipset name it.
pub fn proto_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}
