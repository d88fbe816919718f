//! BGP resources: [`BGPConfiguration`] (cluster-wide settings) and [`BGPPeer`] (extra peerings).

use std::net::{IpAddr, SocketAddr};

use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Defaults;
use crate::schema::is_false;
use crate::selector::{Labels, Selector, SelectorError};

/// The AS number used when neither BGPConfiguration nor the Node sets one.
pub const DEFAULT_AS_NUMBER: u32 = 64512;
/// The BGP port.
pub const DEFAULT_LISTEN_PORT: u16 = 179;
/// The name of the cluster-wide BGPConfiguration.
pub const BGP_CONFIGURATION_DEFAULT: &str = "default";

/// Log levels shared by BGPConfiguration and AgentConfiguration.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    JsonSchema,
)]
#[schemars(transform = crate::schema::drop_description)]
pub enum LogSeverity {
    /// Everything.
    Debug,
    /// Normal operation.
    #[default]
    Info,
    /// Only problems.
    Warning,
    /// Only errors.
    Error,
}

/// Cluster-wide BGP settings: the object named `default` applies to all nodes; an object named
/// `node.NAME` overrides `logSeverityScreen` and `listenPort` for one node.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "crd.margay.dev",
    version = "v1",
    kind = "BGPConfiguration",
    plural = "bgpconfigurations",
    singular = "bgpconfiguration",
    shortname = "bgpconfig",
    shortname = "bgpconfigs",
    category = "margay",
    derive = "PartialEq",
    derive = "Default",
    crates(kube_core = "::kube_core"),
    doc = "Cluster-wide BGP settings (object `default`), with per-node overrides (`node.NAME`).",
    printcolumn(name = "AS", type_ = "integer", json_path = ".spec.asNumber"),
    printcolumn(
        name = "Mesh",
        type_ = "boolean",
        json_path = ".spec.nodeToNodeMeshEnabled"
    ),
    printcolumn(name = "Port", type_ = "integer", json_path = ".spec.listenPort"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BGPConfigurationSpec {
    /// The AS number of every node that does not set its own (1-4294967295). Default 64512.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1), extend("default" = 64512))]
    pub as_number: Option<u32>,
    /// Whether every node peers with every other node (the full mesh). Default true; turn it off
    /// when route reflectors are configured with BGPPeer resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = true))]
    pub node_to_node_mesh_enabled: Option<bool>,
    /// The TCP port the speaker listens on and connects to. Default 179.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1), extend("default" = 179))]
    pub listen_port: Option<u16>,
    /// Log level of the BGP speaker: Debug, Info, Warning or Error. Default Info.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_severity_screen: Option<LogSeverity>,
    /// Service cluster IP ranges to advertise from every node (e.g. `10.96.0.0/12`).
    #[serde(
        rename = "serviceClusterIPs",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub service_cluster_ips: Vec<ServiceIPBlock>,
    /// Service external IP ranges to advertise from every node.
    #[serde(
        rename = "serviceExternalIPs",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub service_external_ips: Vec<ServiceIPBlock>,
    /// Service LoadBalancer IP ranges to advertise from every node.
    #[serde(
        rename = "serviceLoadBalancerIPs",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub service_load_balancer_ips: Vec<ServiceIPBlock>,
    /// How long mesh peers keep this node's routes while it restarts (graceful restart), e.g.
    /// `120s`. Default 120s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("pattern" = crate::duration::DURATION_PATTERN))]
    pub node_mesh_max_restart_time: Option<String>,
    /// TCP MD5 password of the mesh sessions, from a Secret in the agent's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_mesh_password: Option<BGPPassword>,
}

/// One CIDR of Service addresses to advertise.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ServiceIPBlock {
    /// The range, e.g. `10.96.0.0/12`.
    #[schemars(extend("format" = "cidr"))]
    pub cidr: String,
}

/// A BGP (TCP MD5) password, read from a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BGPPassword {
    /// The Secret key that holds the password; the Secret is in the agent's namespace.
    pub secret_key_ref: SecretKeyRef,
}

/// A key of a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct SecretKeyRef {
    /// The Secret's name.
    pub name: String,
    /// The key within the Secret.
    pub key: String,
}

impl BGPConfigurationSpec {
    /// The cluster AS number (default 64512).
    pub fn as_number(&self) -> u32 {
        self.as_number.unwrap_or(DEFAULT_AS_NUMBER)
    }

    /// Whether the node-to-node mesh is on (default true).
    pub fn node_to_node_mesh_enabled(&self) -> bool {
        self.node_to_node_mesh_enabled.unwrap_or(true)
    }

    /// The BGP port (default 179).
    pub fn listen_port(&self) -> u16 {
        self.listen_port.unwrap_or(DEFAULT_LISTEN_PORT)
    }

    /// The speaker's log level (default Info).
    pub fn log_severity_screen(&self) -> LogSeverity {
        self.log_severity_screen.unwrap_or_default()
    }

    /// The mesh graceful-restart time (default 120 s; an unparsable value also gives 120 s —
    /// [`crate::Validate`] reports it).
    pub fn node_mesh_max_restart_time(&self) -> std::time::Duration {
        self.node_mesh_max_restart_time
            .as_deref()
            .and_then(|s| crate::duration::parse_duration(s).ok())
            .unwrap_or(std::time::Duration::from_secs(120))
    }

    /// This object's settings over `base` (a `node.NAME` object over `default`): each field set
    /// here wins.
    pub fn merged_over(&self, base: &BGPConfigurationSpec) -> BGPConfigurationSpec {
        fn pick<T: Clone>(a: &Option<T>, b: &Option<T>) -> Option<T> {
            a.clone().or_else(|| b.clone())
        }
        fn pick_vec<T: Clone>(a: &[T], b: &[T]) -> Vec<T> {
            if a.is_empty() { b.to_vec() } else { a.to_vec() }
        }
        BGPConfigurationSpec {
            as_number: pick(&self.as_number, &base.as_number),
            node_to_node_mesh_enabled: pick(
                &self.node_to_node_mesh_enabled,
                &base.node_to_node_mesh_enabled,
            ),
            listen_port: pick(&self.listen_port, &base.listen_port),
            log_severity_screen: pick(&self.log_severity_screen, &base.log_severity_screen),
            service_cluster_ips: pick_vec(&self.service_cluster_ips, &base.service_cluster_ips),
            service_external_ips: pick_vec(&self.service_external_ips, &base.service_external_ips),
            service_load_balancer_ips: pick_vec(
                &self.service_load_balancer_ips,
                &base.service_load_balancer_ips,
            ),
            node_mesh_max_restart_time: pick(
                &self.node_mesh_max_restart_time,
                &base.node_mesh_max_restart_time,
            ),
            node_mesh_password: pick(&self.node_mesh_password, &base.node_mesh_password),
        }
    }
}

impl Defaults for BGPConfigurationSpec {
    fn apply_defaults(&mut self) {
        self.as_number.get_or_insert(DEFAULT_AS_NUMBER);
        self.node_to_node_mesh_enabled.get_or_insert(true);
        self.listen_port.get_or_insert(DEFAULT_LISTEN_PORT);
        self.log_severity_screen.get_or_insert_default();
        self.node_mesh_max_restart_time
            .get_or_insert_with(|| "120s".to_string());
    }
}

impl Defaults for BGPConfiguration {
    fn apply_defaults(&mut self) {
        self.spec.apply_defaults();
    }
}

/// An extra BGP peering: with a router outside the cluster (`peerIP` + `asNumber`) or with
/// the nodes that `peerSelector` selects (e.g. route reflectors), from the nodes that `node` or
/// `nodeSelector` select (all nodes when neither is set).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "crd.margay.dev",
    version = "v1",
    kind = "BGPPeer",
    plural = "bgppeers",
    singular = "bgppeer",
    shortname = "bgpp",
    category = "margay",
    derive = "PartialEq",
    derive = "Default",
    crates(kube_core = "::kube_core"),
    doc = "An extra BGP peering: with an external router (peerIP) or with selected nodes (peerSelector).",
    printcolumn(name = "PeerIP", type_ = "string", json_path = ".spec.peerIP"),
    printcolumn(name = "AS", type_ = "integer", json_path = ".spec.asNumber"),
    printcolumn(name = "Node", type_ = "string", json_path = ".spec.node"),
    printcolumn(
        name = "NodeSelector",
        type_ = "string",
        json_path = ".spec.nodeSelector"
    ),
    printcolumn(
        name = "PeerSelector",
        type_ = "string",
        json_path = ".spec.peerSelector"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.peerIP) != has(self.peerSelector)", "message": "set exactly one of peerIP and peerSelector"},
    {"rule": "!has(self.peerIP) || has(self.asNumber)", "message": "asNumber is required with peerIP"},
    {"rule": "!(has(self.node) && has(self.nodeSelector))", "message": "set at most one of node and nodeSelector"}
]))]
pub struct BGPPeerSpec {
    /// The one node that peers (by name). Leave empty and use `nodeSelector` for several nodes;
    /// with neither, every node peers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Selector of the nodes that peer, e.g. `rack == 'r1'`. Not with `node`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<String>,
    /// The peer's address, optionally with a port: `192.0.2.1`, `192.0.2.1:1179`, `[2001:db8::1]:1179`.
    /// Requires `asNumber`; not with `peerSelector`.
    #[serde(rename = "peerIP", default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("pattern" = PEER_IP_PATTERN))]
    pub peer_ip: Option<String>,
    /// The peer's AS number (1-4294967295). Required with `peerIP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub as_number: Option<u32>,
    /// Selector of the Margay nodes to peer with (by their Node labels), e.g.
    /// `has(route-reflector)`. Their addresses and AS numbers come from their Node objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_selector: Option<String>,
    /// TCP MD5 password of these sessions, from a Secret in the agent's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<BGPPassword>,
    /// Keep the original next hop of routes sent to this (eBGP) peer instead of this node's
    /// address.
    #[serde(default, skip_serializing_if = "is_false")]
    pub keep_original_next_hop: bool,
    /// How long the peer keeps this node's routes while it restarts (graceful restart), e.g.
    /// `120s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("pattern" = crate::duration::DURATION_PATTERN))]
    pub max_restart_time: Option<String>,
}

/// `IP`, `IPv4:PORT` or `[IPv6]:PORT` (loosely; the validator parses it properly).
const PEER_IP_PATTERN: &str =
    r"^([0-9.]+(:[0-9]+)?|[0-9a-fA-F:.]*:[0-9a-fA-F:.]*|\[[0-9a-fA-F:.]+\]:[0-9]+)$";

/// Parses a `peerIP` value into an address and optional port.
pub fn parse_peer_ip(s: &str) -> Option<(IpAddr, Option<u16>)> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some((ip, None));
    }
    let sa: SocketAddr = s.parse().ok()?;
    Some((sa.ip(), Some(sa.port())))
}

impl BGPPeerSpec {
    /// Whether node `name` (with `labels`) takes part in this peering: `node` names it, else
    /// `nodeSelector` matches it, else (neither set) every node does. An unparsable selector
    /// matches nothing.
    pub fn applies_to_node<L: Labels + ?Sized>(&self, name: &str, labels: &L) -> bool {
        match (&self.node, &self.node_selector) {
            (Some(n), _) => n == name,
            (None, Some(sel)) => Selector::parse(sel).is_ok_and(|s| s.matches(labels)),
            (None, None) => true,
        }
    }

    /// The parsed `peerSelector`, if set.
    pub fn peer_selector(&self) -> Option<Result<Selector, SelectorError>> {
        self.peer_selector.as_deref().map(Selector::parse)
    }

    /// The peer's address and port (default `default_port`), if `peerIP` is set and valid.
    pub fn peer_addr(&self, default_port: u16) -> Option<SocketAddr> {
        let (ip, port) = parse_peer_ip(self.peer_ip.as_deref()?)?;
        Some(SocketAddr::new(ip, port.unwrap_or(default_port)))
    }
}
