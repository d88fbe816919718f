//! WorkloadEndpoints derived from Pods (Kubernetes datastore mode).
//!
//! In Kubernetes mode nothing stores one WorkloadEndpoint per pod: as Calico's libcalico-go does
//! in KDD mode (`WorkloadEndpointConverter.PodToWorkloadEndpoints`), the endpoint is computed from
//! the Pod whenever it is read. What the Pod does not say by itself, the CNI plugin's ADD (through
//! the agent) records on it as annotations, as Calico's `cni.projectcalico.org/podIP(s)` and
//! `containerID`:
//!
//! | from the Pod | WorkloadEndpoint |
//! |---|---|
//! | `spec.nodeName` | `spec.node`, and the name `NODE-k8s-POD-eth0` |
//! | [`ANNOTATION_POD_IPS`], else [`ANNOTATION_POD_IP`], else `status.podIPs`/`podIP` | `spec.ipNetworks` (/32, /128) |
//! | [`ANNOTATION_CONTAINER_ID`], [`ANNOTATION_IPAM_HANDLE_ID`] | `spec.containerID`, `spec.ipamHandleID` |
//! | namespace and name | `spec.interfaceName`: [`host_interface_name`] of `NAMESPACE.POD` |
//! | labels, `spec.serviceAccountName` | labels, plus `margay.dev/namespace`, `margay.dev/orchestrator`, `margay.dev/serviceaccount` |
//! | named container ports | `spec.ports` |
//!
//! A pod has no endpoint when it is host-networked, not scheduled, finished (`Succeeded`,
//! `Failed`), or has no address yet.

use std::collections::BTreeMap;

use crate::k8s::{Pod, pod_ips, pod_named_ports};
use crate::workload::{
    LABEL_NAMESPACE, LABEL_ORCHESTRATOR, LABEL_SERVICE_ACCOUNT, ORCHESTRATOR_K8S,
    PROFILE_NAMESPACE_PREFIX, PROFILE_SERVICE_ACCOUNT_PREFIX, WorkloadEndpoint,
    WorkloadEndpointSpec,
};

/// The pod's address (the first of [`ANNOTATION_POD_IPS`]), as Calico's `cni.projectcalico.org/podIP`.
pub const ANNOTATION_POD_IP: &str = "margay.dev/podIP";
/// Every address of the pod, comma-separated CIDRs, as Calico's `cni.projectcalico.org/podIPs`.
pub const ANNOTATION_POD_IPS: &str = "margay.dev/podIPs";
/// The sandbox the addresses belong to, as Calico's `cni.projectcalico.org/containerID`.
pub const ANNOTATION_CONTAINER_ID: &str = "margay.dev/containerID";
/// The IPAM handle the addresses were allocated under (the leak check counts it as live).
pub const ANNOTATION_IPAM_HANDLE_ID: &str = "margay.dev/ipamHandleID";

/// The prefix of every host-side veth Margay creates.
pub const HOST_INTERFACE_PREFIX: &str = "mgy";

/// The host-side interface name for an endpoint id (`NAMESPACE.POD` for a pod, as Calico's
/// `VethNameForWorkload`): the prefix and the first 11 hex characters of its SHA-1, so that it is
/// stable, fits IFNAMSIZ (15) and marks the link as Margay's.
pub fn host_interface_name(endpoint_id: &str) -> String {
    let digest = sha1_smol::Sha1::from(endpoint_id).digest().to_string();
    format!("{HOST_INTERFACE_PREFIX}{}", &digest[..11])
}

/// The endpoint id of a pod: `NAMESPACE.POD`.
pub fn pod_endpoint_id(namespace: &str, pod: &str) -> String {
    format!("{namespace}.{pod}")
}

/// The annotations the agent writes on a pod when its network is up.
pub fn annotations_for(
    addresses: &[ipnet::IpNet],
    container_id: &str,
    handle_id: &str,
) -> BTreeMap<String, String> {
    let ips: Vec<String> = addresses.iter().map(ToString::to_string).collect();
    BTreeMap::from([
        (
            ANNOTATION_POD_IP.to_owned(),
            ips.first().cloned().unwrap_or_default(),
        ),
        (ANNOTATION_POD_IPS.to_owned(), ips.join(",")),
        (ANNOTATION_CONTAINER_ID.to_owned(), container_id.to_owned()),
        (ANNOTATION_IPAM_HANDLE_ID.to_owned(), handle_id.to_owned()),
    ])
}

/// The names of the annotations [`annotations_for`] writes (to remove them).
pub const POD_ANNOTATIONS: [&str; 4] = [
    ANNOTATION_POD_IP,
    ANNOTATION_POD_IPS,
    ANNOTATION_CONTAINER_ID,
    ANNOTATION_IPAM_HANDLE_ID,
];

/// `100.64.0.5` or `100.64.0.5/32` as a host network; anything else is skipped.
fn host_net(s: &str) -> Option<ipnet::IpNet> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
        .map(|n| ipnet::IpNet::from(n.addr()))
}

/// The pod's addresses: the annotations the agent wrote, else the pod's status.
fn addresses(pod: &Pod) -> Vec<ipnet::IpNet> {
    let ann = pod.metadata.annotations.as_ref();
    let from = |key: &str| -> Vec<ipnet::IpNet> {
        ann.and_then(|a| a.get(key))
            .map(|v| v.split(',').filter_map(host_net).collect())
            .unwrap_or_default()
    };
    let mut out = from(ANNOTATION_POD_IPS);
    if out.is_empty() {
        out = from(ANNOTATION_POD_IP);
    }
    if out.is_empty() {
        out = pod_ips(pod).into_iter().map(ipnet::IpNet::from).collect();
    }
    let mut seen = std::collections::BTreeSet::new();
    out.retain(|n| seen.insert(*n));
    out
}

/// The WorkloadEndpoint a Pod stands for, or `None` when it has none (see the module docs).
/// Its `resourceVersion` is the Pod's.
pub fn endpoint_of_pod(pod: &Pod) -> Option<WorkloadEndpoint> {
    let spec = pod.spec.as_ref()?;
    let node = spec.node_name.as_deref().filter(|n| !n.is_empty())?;
    if spec.host_network == Some(true) {
        return None;
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return None;
    }
    let name = pod.metadata.name.as_deref()?;
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let nets = addresses(pod);
    if nets.is_empty() {
        return None;
    }
    let ann = pod.metadata.annotations.clone().unwrap_or_default();
    let sa = spec.service_account_name.clone().filter(|s| !s.is_empty());
    let mut labels: BTreeMap<String, String> = pod
        .metadata
        .labels
        .iter()
        .flatten()
        .filter(|(k, _)| !k.starts_with("margay.dev/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(LABEL_NAMESPACE.into(), namespace.into());
    labels.insert(LABEL_ORCHESTRATOR.into(), ORCHESTRATOR_K8S.into());
    let mut profiles = vec![format!("{PROFILE_NAMESPACE_PREFIX}{namespace}")];
    if let Some(sa) = &sa {
        labels.insert(LABEL_SERVICE_ACCOUNT.into(), sa.clone());
        profiles.push(format!("{PROFILE_SERVICE_ACCOUNT_PREFIX}{namespace}.{sa}"));
    }
    let mut ports = pod_named_ports(pod);
    ports.sort();
    ports.dedup();
    let mut wep = WorkloadEndpoint::new(
        &WorkloadEndpoint::name_for(node, name, "eth0"),
        WorkloadEndpointSpec {
            orchestrator: ORCHESTRATOR_K8S.into(),
            node: node.into(),
            pod: name.into(),
            container_id: ann.get(ANNOTATION_CONTAINER_ID).cloned(),
            endpoint: "eth0".into(),
            interface_name: host_interface_name(&pod_endpoint_id(namespace, name)),
            mac: None,
            ip_networks: nets.iter().map(ToString::to_string).collect(),
            ipam_handle_id: ann.get(ANNOTATION_IPAM_HANDLE_ID).cloned(),
            profiles,
            service_account_name: sa,
            ports,
        },
    );
    wep.metadata.namespace = Some(namespace.into());
    wep.metadata.labels = Some(labels);
    wep.metadata.resource_version = pod.metadata.resource_version.clone();
    wep.metadata.creation_timestamp = pod.metadata.creation_timestamp.clone();
    wep.metadata.uid = pod.metadata.uid.clone();
    Some(wep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_interface_name_is_the_prefix_and_eleven_hex_chars_of_sha1() {
        // `printf default.nginx | sha1sum` = c440f455693b69cdd48a37aa5ecd78038f50413d
        assert_eq!(host_interface_name("default.nginx"), "mgyc440f455693");
        assert_eq!(
            host_interface_name(&pod_endpoint_id("default", "nginx")),
            "mgyc440f455693"
        );
    }

    #[test]
    fn a_running_pod_with_annotations_becomes_an_endpoint() {
        let p = pod(json!({
            "metadata": {"name": "web-1", "namespace": "shop", "resourceVersion": "42",
                         "labels": {"app": "web", "margay.dev/namespace": "forged"},
                         "annotations": {"margay.dev/podIPs": "100.64.0.5/32,fd00::5/128",
                                         "margay.dev/podIP": "100.64.0.5/32",
                                         "margay.dev/containerID": "abc",
                                         "margay.dev/ipamHandleID": "k8s-pod-network.abc"}},
            "spec": {"nodeName": "node-1", "serviceAccountName": "shopper", "containers": [
                {"name": "c", "ports": [{"name": "http", "containerPort": 8080},
                                         {"containerPort": 9000}]}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1"}
        }));
        let w = endpoint_of_pod(&p).unwrap();
        assert_eq!(w.metadata.name.as_deref(), Some("node--1-k8s-web--1-eth0"));
        assert_eq!(w.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(w.metadata.resource_version.as_deref(), Some("42"));
        assert_eq!(w.spec.node, "node-1");
        assert_eq!(w.spec.ip_networks, vec!["100.64.0.5/32", "fd00::5/128"]);
        assert_eq!(w.spec.container_id.as_deref(), Some("abc"));
        assert_eq!(
            w.spec.ipam_handle_id.as_deref(),
            Some("k8s-pod-network.abc")
        );
        assert_eq!(w.spec.interface_name, host_interface_name("shop.web-1"));
        assert_eq!(w.spec.profiles, vec!["kns.shop", "ksa.shop.shopper"]);
        assert_eq!(w.spec.ports.len(), 1);
        assert_eq!(w.spec.ports[0].name, "http");
        let labels = w.metadata.labels.unwrap();
        assert_eq!(labels["app"], "web");
        assert_eq!(
            labels[LABEL_NAMESPACE], "shop",
            "a pod cannot forge its namespace"
        );
        assert_eq!(labels[LABEL_ORCHESTRATOR], "k8s");
        assert_eq!(labels[LABEL_SERVICE_ACCOUNT], "shopper");
    }

    #[test]
    fn without_annotations_the_status_addresses_are_used() {
        let p = pod(json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"nodeName": "n", "containers": []},
            "status": {"podIPs": [{"ip": "100.64.0.9"}]}
        }));
        assert_eq!(
            endpoint_of_pod(&p).unwrap().spec.ip_networks,
            vec!["100.64.0.9/32"]
        );
    }

    #[test]
    fn pods_without_an_endpoint() {
        let cases = [
            (
                "unscheduled",
                json!({"containers": []}),
                json!({"podIP": "100.64.0.1"}),
            ),
            (
                "host network",
                json!({"nodeName": "n", "hostNetwork": true, "containers": []}),
                json!({"podIP": "198.18.0.11"}),
            ),
            (
                "finished",
                json!({"nodeName": "n", "containers": []}),
                json!({"phase": "Succeeded", "podIP": "100.64.0.1"}),
            ),
            (
                "failed",
                json!({"nodeName": "n", "containers": []}),
                json!({"phase": "Failed", "podIP": "100.64.0.1"}),
            ),
            (
                "no address",
                json!({"nodeName": "n", "containers": []}),
                json!({"phase": "Pending"}),
            ),
        ];
        for (what, spec, status) in cases {
            let p = pod(json!({"metadata": {"name": "p", "namespace": "ns"},
                               "spec": spec, "status": status}));
            assert!(endpoint_of_pod(&p).is_none(), "{what}");
        }
    }

    #[test]
    fn annotations_round_trip_through_the_pod() {
        let nets: Vec<ipnet::IpNet> = vec!["100.64.0.7/32".parse().unwrap()];
        let ann = annotations_for(&nets, "cid", "net.cid");
        assert_eq!(ann.len(), POD_ANNOTATIONS.len());
        let mut p = pod(json!({"metadata": {"name": "p", "namespace": "ns"},
                               "spec": {"nodeName": "n", "containers": []}}));
        p.metadata.annotations = Some(ann);
        let w = endpoint_of_pod(&p).unwrap();
        assert_eq!(w.spec.ip_networks, vec!["100.64.0.7/32"]);
        assert_eq!(w.spec.ipam_handle_id.as_deref(), Some("net.cid"));
    }

    fn arb_pod() -> impl Strategy<Value = Pod> {
        (
            "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?",
            "[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?",
            prop::sample::select(vec!["node-1", "node-2", "a-very-long-node-name.example"]),
            prop::option::of(prop::collection::vec((0u8..=255, 0u8..=255), 0..3)),
            prop::option::of(prop::sample::select(vec![
                "Pending",
                "Running",
                "Succeeded",
            ])),
            any::<bool>(),
        )
            .prop_map(|(name, ns, node, ips, phase, annotated)| {
                let ips: Vec<String> = ips
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(a, b)| format!("100.64.{a}.{b}"))
                    .collect();
                let mut v = json!({"metadata": {"name": name, "namespace": ns},
                                   "spec": {"nodeName": node, "containers": []},
                                   "status": {}});
                if let Some(phase) = phase {
                    v["status"]["phase"] = json!(phase);
                }
                if annotated {
                    v["metadata"]["annotations"] = json!({ANNOTATION_POD_IPS: ips.join(",")});
                } else {
                    v["status"]["podIPs"] =
                        json!(ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>());
                }
                pod(v)
            })
    }

    proptest! {
        #[test]
        fn every_pod_with_an_address_on_a_node_is_exactly_one_endpoint_there(
            pods in prop::collection::vec(arb_pod(), 0..20)
        ) {
            // Pods are unique by namespace and name, as in the API.
            let mut by_id = BTreeMap::new();
            for p in pods {
                by_id.insert((p.metadata.namespace.clone(), p.metadata.name.clone()), p);
            }
            for node in ["node-1", "node-2"] {
                let mut names = std::collections::BTreeSet::new();
                for p in by_id.values() {
                    let on_node = p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node);
                    let live = !matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded"));
                    let has_ip = !addresses(p).is_empty();
                    let w = endpoint_of_pod(p).filter(|w| w.spec.node == node);
                    prop_assert_eq!(w.is_some(), on_node && live && has_ip);
                    if let Some(w) = w {
                        prop_assert!(names.insert((w.metadata.namespace.clone(), w.metadata.name.clone())),
                            "two pods map to one endpoint");
                        let iface = &w.spec.interface_name;
                        prop_assert!(iface.len() <= 15 && iface.starts_with(HOST_INTERFACE_PREFIX));
                        prop_assert_eq!(iface, &endpoint_of_pod(p).unwrap().spec.interface_name);
                    }
                }
            }
        }
    }
}
