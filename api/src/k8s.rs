//! The Kubernetes objects the agent reads when Margay runs on etcd (and from the API server in
//! Kubernetes mode), re-exported from k8s-openapi rather than copied, plus small pure helpers.

use std::collections::BTreeMap;

pub use k8s_openapi::api::core::v1::{
    Container, ContainerPort, Namespace, NamespaceSpec, Pod, PodSpec, PodStatus,
};
pub use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta, Time,
};
pub use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::agentconfig::Protocol;
use crate::workload::EndpointPort;

/// The label every Kubernetes namespace carries with its own name.
pub const LABEL_NAMESPACE_NAME: &str = "kubernetes.io/metadata.name";

/// The labels of an object (empty when it has none).
pub fn labels(meta: &ObjectMeta) -> BTreeMap<String, String> {
    meta.labels.clone().unwrap_or_default()
}

/// A pod's named container ports (ports without a name are skipped), in container order.
/// An unknown protocol is skipped too; absent means TCP.
pub fn pod_named_ports(pod: &Pod) -> Vec<EndpointPort> {
    let containers = pod.spec.iter().flat_map(|s| s.containers.iter());
    containers
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let name = p.name.clone().filter(|n| !n.is_empty())?;
            let protocol = match p.protocol.as_deref().unwrap_or("TCP") {
                "TCP" => Protocol::Tcp,
                "UDP" => Protocol::Udp,
                "SCTP" => Protocol::Sctp,
                _ => return None,
            };
            let port = u16::try_from(p.container_port).ok().filter(|p| *p > 0)?;
            Some(EndpointPort {
                name,
                protocol,
                port,
            })
        })
        .collect()
}

/// A pod's IP addresses from its status (`podIPs`, else `podIP`) that parse.
pub fn pod_ips(pod: &Pod) -> Vec<std::net::IpAddr> {
    let Some(status) = &pod.status else {
        return Vec::new();
    };
    let from_list: Vec<_> = status
        .pod_ips
        .iter()
        .flatten()
        .filter_map(|p| p.ip.parse().ok())
        .collect();
    if !from_list.is_empty() {
        return from_list;
    }
    status
        .pod_ip
        .iter()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_ports_come_from_every_container() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [
                {"name": "a", "ports": [{"name": "http", "containerPort": 8080},
                                         {"containerPort": 9000}]},
                {"name": "b", "ports": [{"name": "dns", "containerPort": 53, "protocol": "UDP"}]}
            ]},
            "status": {"podIPs": [{"ip": "100.64.0.5"}, {"ip": "fd00::5"}]}
        }))
        .unwrap();
        let ports = pod_named_ports(&pod);
        assert_eq!(
            ports,
            vec![
                EndpointPort {
                    name: "http".into(),
                    protocol: Protocol::Tcp,
                    port: 8080
                },
                EndpointPort {
                    name: "dns".into(),
                    protocol: Protocol::Udp,
                    port: 53
                },
            ]
        );
        assert_eq!(pod_ips(&pod).len(), 2);
    }
}
