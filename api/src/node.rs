//! `Node` (Margay's view of a node, Rust type [`MargayNode`]) and [`NodeStatus`] (what each agent
//! publishes about itself).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Pattern of an address with an optional prefix length (`198.18.0.1/15`, `fd00::1`).
pub(crate) const ADDR_WITH_PREFIX_PATTERN: &str =
    r"^([0-9]{1,3}(\.[0-9]{1,3}){3}|[0-9a-fA-F:]*:[0-9a-fA-F:.]*)(/[0-9]{1,3})?$";

/// Margay's view of a node: the addresses and AS number its BGP speaker uses. Its labels are the
/// Kubernetes node's labels (copied into `metadata.labels`), which `nodeSelector`s match. The
/// name is the Kubernetes node name. (`kubectl get nodes` shows the core nodes; use
/// `kubectl get nodes.crd.margay.dev` or the short name `mgynode`.)
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "crd.margay.dev",
    version = "v1",
    kind = "Node",
    root = "MargayNode",
    plural = "nodes",
    singular = "node",
    shortname = "mgynode",
    shortname = "mnode",
    category = "margay",
    derive = "PartialEq",
    derive = "Default",
    crates(kube_core = "::kube_core"),
    doc = "Margay's view of a node: its BGP addresses, AS number and route-reflector role.",
    printcolumn(name = "IPv4", type_ = "string", json_path = ".spec.bgp.ipv4Address"),
    printcolumn(name = "IPv6", type_ = "string", json_path = ".spec.bgp.ipv6Address"),
    printcolumn(name = "AS", type_ = "integer", json_path = ".spec.bgp.asNumber"),
    printcolumn(
        name = "RRClusterID",
        type_ = "string",
        json_path = ".spec.bgp.routeReflectorClusterID"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct NodeSpec {
    /// BGP settings of this node; absent on a node that runs no BGP speaker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<NodeBGPSpec>,
}

/// A node's BGP settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeBGPSpec {
    /// The node's IPv4 address, with or without prefix length (`198.18.0.1/15`): the BGP router
    /// id, the session source and the next hop of the routes it announces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("pattern" = ADDR_WITH_PREFIX_PATTERN))]
    pub ipv4_address: Option<String>,
    /// The node's IPv6 address, with or without prefix length (`fd00:198::1/64`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("pattern" = ADDR_WITH_PREFIX_PATTERN))]
    pub ipv6_address: Option<String>,
    /// This node's AS number (1-4294967295); when absent, BGPConfiguration's `asNumber` (default
    /// 64512).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub as_number: Option<u32>,
    /// When set, this node's speaker is a route reflector with this cluster id (an IPv4 address,
    /// e.g. `244.0.0.1`). Who peers with it comes from BGPPeer resources.
    #[serde(
        default,
        rename = "routeReflectorClusterID",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(extend("format" = "ipv4"))]
    pub route_reflector_cluster_id: Option<String>,
}

/// Parses `1.2.3.4` or `1.2.3.4/24` to the address.
pub(crate) fn parse_addr_with_prefix(s: &str) -> Option<IpAddr> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let ip: IpAddr = addr.parse().ok()?;
    if let Some(p) = prefix {
        let p: u8 = p.parse().ok()?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        if p > max {
            return None;
        }
    }
    Some(ip)
}

impl NodeBGPSpec {
    /// The IPv4 address without prefix length, if set and valid.
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        match parse_addr_with_prefix(self.ipv4_address.as_deref()?)? {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        }
    }

    /// The IPv6 address without prefix length, if set and valid.
    pub fn ipv6(&self) -> Option<Ipv6Addr> {
        match parse_addr_with_prefix(self.ipv6_address.as_deref()?)? {
            IpAddr::V6(a) => Some(a),
            IpAddr::V4(_) => None,
        }
    }

    /// The route-reflector cluster id, if set and valid.
    pub fn route_reflector_cluster_id(&self) -> Option<Ipv4Addr> {
        self.route_reflector_cluster_id.as_deref()?.parse().ok()
    }
}

impl MargayNode {
    /// This node's AS number: its own override, else `cluster_default` (BGPConfiguration's).
    pub fn as_number(&self, cluster_default: u32) -> u32 {
        self.spec
            .bgp
            .as_ref()
            .and_then(|b| b.as_number)
            .unwrap_or(cluster_default)
    }

    /// Whether this node's speaker is a route reflector.
    pub fn is_route_reflector(&self) -> bool {
        self.spec
            .bgp
            .as_ref()
            .is_some_and(|b| b.route_reflector_cluster_id.is_some())
    }
}

/// What one node's agent publishes about itself: BGP sessions, agent version, last dataplane
/// sync. `margayctl node status NODE` reads it. Named after the node; written by that node's agent
/// into `status`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "crd.margay.dev",
    version = "v1",
    kind = "NodeStatus",
    plural = "nodestatuses",
    singular = "nodestatus",
    shortname = "mns",
    category = "margay",
    status = "NodeStatusStatus",
    derive = "PartialEq",
    derive = "Default",
    crates(kube_core = "::kube_core"),
    doc = "The status one node's agent publishes: BGP sessions, agent version, last dataplane sync.",
    printcolumn(name = "Node", type_ = "string", json_path = ".spec.node"),
    printcolumn(name = "Version", type_ = "string", json_path = ".status.agentVersion"),
    printcolumn(
        name = "Established",
        type_ = "integer",
        json_path = ".status.bgp.numberEstablished"
    ),
    printcolumn(
        name = "LastSync",
        type_ = "date",
        json_path = ".status.lastDataplaneSync"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatusSpec {
    /// The node this status is about (the object is also named after it).
    pub node: String,
    /// How often the agent refreshes the status, in seconds (default 10; 0 stops updates).
    #[serde(default = "default_update_period")]
    pub update_period_seconds: u32,
}

fn default_update_period() -> u32 {
    10
}

/// The status an agent reports.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatusStatus {
    /// Version of the agent (`margay-node`) that wrote this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// When the agent last finished a dataplane sync (routes, iptables, ipsets) without error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_dataplane_sync: Option<Time>,
    /// When this status was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<Time>,
    /// The node's BGP speaker and its sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<BGPStatus>,
}

/// A node's BGP speaker, as the agent reports it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BGPStatus {
    /// Number of sessions in state Established.
    #[serde(default)]
    pub number_established: u32,
    /// Number of sessions in any other state.
    #[serde(default)]
    pub number_not_established: u32,
    /// One entry per configured peer.
    #[serde(default)]
    pub peers: Vec<BGPPeerStatus>,
}

/// One BGP session, as the agent reports it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BGPPeerStatus {
    /// The peer's address.
    #[serde(rename = "peerIP")]
    #[schemars(extend("pattern" = crate::schema::IP_PATTERN))]
    pub peer_ip: String,
    /// The peer's AS number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_number: Option<u32>,
    /// Why this session exists.
    #[serde(rename = "type")]
    pub peer_type: BGPPeerType,
    /// RFC 4271 session state.
    pub state: BGPSessionState,
    /// When the session entered its current state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
    /// The last error on this session (a NOTIFICATION sent or received, a connect failure...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Prefixes received from the peer.
    #[serde(default)]
    pub prefixes_received: u32,
    /// Prefixes received and accepted by import policy.
    #[serde(default)]
    pub prefixes_accepted: u32,
    /// Prefixes advertised to the peer.
    #[serde(default)]
    pub prefixes_advertised: u32,
}

/// Why a BGP session exists.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum BGPPeerType {
    /// The node-to-node full mesh.
    #[default]
    NodeMesh,
    /// A BGPPeer with no `node`/`nodeSelector` (all nodes).
    GlobalPeer,
    /// A BGPPeer that selects this node.
    NodePeer,
}

/// A BGP session state (RFC 4271 section 8.2.2).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum BGPSessionState {
    /// Not trying to connect (or backing off).
    #[default]
    Idle,
    /// Connecting.
    Connect,
    /// Listening for the peer to connect.
    Active,
    /// OPEN sent, waiting for the peer's.
    OpenSent,
    /// OPEN exchanged, waiting for KEEPALIVE.
    OpenConfirm,
    /// Up: routes are exchanged.
    Established,
}
