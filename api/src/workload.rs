//! `WorkloadEndpoint`: one pod network interface on one node (namespaced, like the pod).

use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::agentconfig::Protocol;

/// The orchestrator name written in `orchestrator` for pods.
pub const ORCHESTRATOR_K8S: &str = "k8s";
/// Label the agent adds to a WorkloadEndpoint: the pod's namespace (so selectors can match it).
pub const LABEL_NAMESPACE: &str = "margay.dev/namespace";
/// Label the agent adds to a WorkloadEndpoint: its orchestrator (`k8s`).
pub const LABEL_ORCHESTRATOR: &str = "margay.dev/orchestrator";
/// Label the agent adds to a WorkloadEndpoint: the pod's service account.
pub const LABEL_SERVICE_ACCOUNT: &str = "margay.dev/serviceaccount";
/// Prefix of the profile that carries a namespace's labels: `kns.NAMESPACE`.
pub const PROFILE_NAMESPACE_PREFIX: &str = "kns.";
/// Prefix of the profile that carries a service account's labels: `ksa.NAMESPACE.NAME`.
pub const PROFILE_SERVICE_ACCOUNT_PREFIX: &str = "ksa.";

/// One pod interface: its addresses, the host-side interface, its labels (the pod's, plus
/// `margay.dev/namespace` and `margay.dev/orchestrator`) and named ports. Written by the agent
/// when the CNI plugin sets the pod up; read by policy and by IPAM leak checks.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "crd.margay.dev",
    version = "v1",
    kind = "WorkloadEndpoint",
    plural = "workloadendpoints",
    singular = "workloadendpoint",
    shortname = "wep",
    shortname = "weps",
    namespaced,
    category = "margay",
    derive = "PartialEq",
    derive = "Default",
    crates(kube_core = "::kube_core"),
    doc = "One pod network interface on one node: addresses, host interface, named ports.",
    printcolumn(name = "Pod", type_ = "string", json_path = ".spec.pod"),
    printcolumn(name = "Node", type_ = "string", json_path = ".spec.node"),
    printcolumn(
        name = "Interface",
        type_ = "string",
        json_path = ".spec.interfaceName"
    ),
    printcolumn(name = "IPs", type_ = "string", json_path = ".spec.ipNetworks"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadEndpointSpec {
    /// Who created the workload: `k8s` for pods.
    #[serde(default = "default_orchestrator")]
    pub orchestrator: String,
    /// The node the pod runs on.
    pub node: String,
    /// The pod's name (its namespace is this object's namespace).
    pub pod: String,
    /// The container runtime's id of the pod sandbox.
    #[serde(
        rename = "containerID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub container_id: Option<String>,
    /// The interface name inside the pod, usually `eth0`.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// The host side of the pod's veth: `mgy` + 11 hex characters.
    pub interface_name: String,
    /// MAC address of the pod-side interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "mac"))]
    pub mac: Option<String>,
    /// The pod's addresses as /32 or /128 CIDRs, e.g. `100.64.0.5/32`.
    #[serde(rename = "ipNetworks", default)]
    #[schemars(schema_with = "crate::schema::cidr_list")]
    pub ip_networks: Vec<String>,
    /// The IPAM handle the addresses were allocated under; release by this handle frees them.
    #[serde(
        rename = "ipamHandleID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ipam_handle_id: Option<String>,
    /// Profiles whose rules apply, e.g. `kns.NAMESPACE` and `ksa.NAMESPACE.SERVICEACCOUNT`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
    /// The pod's service account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// The pod's named container ports, which policy rules may refer to by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<EndpointPort>,
}

/// A named port of a workload.
#[derive(
    Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPort {
    /// The port's name (an IANA service name, as in the pod spec).
    pub name: String,
    /// TCP, UDP or SCTP.
    pub protocol: Protocol,
    /// The port number.
    #[schemars(range(min = 1))]
    pub port: u16,
}

fn default_orchestrator() -> String {
    ORCHESTRATOR_K8S.to_string()
}

fn default_endpoint() -> String {
    "eth0".to_string()
}

impl WorkloadEndpoint {
    /// The object name Calico gives a pod interface: `NODE-k8s-POD-ENDPOINT`, with each `-` in
    /// the parts doubled so that the name is unambiguous.
    pub fn name_for(node: &str, pod: &str, endpoint: &str) -> String {
        let esc = |s: &str| s.replace('-', "--");
        format!("{}-k8s-{}-{}", esc(node), esc(pod), esc(endpoint))
    }

    /// The pod's addresses (the `ipNetworks` that parse, without prefix length).
    pub fn ips(&self) -> Vec<std::net::IpAddr> {
        self.spec
            .ip_networks
            .iter()
            .filter_map(|n| n.parse::<ipnet::IpNet>().ok())
            .map(|n| n.addr())
            .collect()
    }
}
