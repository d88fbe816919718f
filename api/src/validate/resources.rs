//! Validation of nodes, BGP, agent configuration and workload endpoints.

use std::net::IpAddr;

use super::{Ctx, FieldError, Validate};
use crate::agentconfig::{
    AGENT_CONFIGURATION_DEFAULT, AGENT_CONFIGURATION_NODE_PREFIX, AgentConfiguration,
};
use crate::bgp::{BGPConfiguration, BGPPassword, BGPPeer, parse_peer_ip};
use crate::node::{MargayNode, NodeStatus, parse_addr_with_prefix};
use crate::workload::WorkloadEndpoint;

/// Names of the form `default` or `node.NAME`.
fn check_default_or_node_name(c: &mut Ctx, name: Option<&str>) {
    let Some(n) = name else { return };
    if n == AGENT_CONFIGURATION_DEFAULT {
        return;
    }
    match n.strip_prefix(AGENT_CONFIGURATION_NODE_PREFIX) {
        Some(node) if crate::names::is_dns1123_subdomain(node) => {}
        _ => c.err(
            "metadata.name",
            format!("{n:?} must be \"default\" or \"node.NODENAME\""),
        ),
    }
}

fn check_password(c: &mut Ctx, field: &str, p: &Option<BGPPassword>) {
    if let Some(p) = p {
        c.dns_name(
            &format!("{field}.secretKeyRef.name"),
            &p.secret_key_ref.name,
        );
        if p.secret_key_ref.key.is_empty() {
            c.err(&format!("{field}.secretKeyRef.key"), "must not be empty");
        }
    }
}

fn check_addr(c: &mut Ctx, field: &str, value: Option<&str>, want_v6: bool) {
    let Some(v) = value else { return };
    match parse_addr_with_prefix(v) {
        None => c.err(
            field,
            format!("{v:?} is not a valid IP address (with optional /prefix)"),
        ),
        Some(ip) if ip.is_ipv6() != want_v6 => c.err(
            field,
            format!(
                "{v} is not an {} address",
                if want_v6 { "IPv6" } else { "IPv4" }
            ),
        ),
        Some(_) => {}
    }
}

impl Validate for MargayNode {
    fn field_errors(&self) -> Vec<FieldError> {
        let mut c = Ctx::new("Node", &self.metadata);
        c.check_meta(&self.metadata);
        if let Some(b) = &self.spec.bgp {
            check_addr(
                &mut c,
                "spec.bgp.ipv4Address",
                b.ipv4_address.as_deref(),
                false,
            );
            check_addr(
                &mut c,
                "spec.bgp.ipv6Address",
                b.ipv6_address.as_deref(),
                true,
            );
            if let Some(asn) = b.as_number {
                c.asn("spec.bgp.asNumber", asn);
            }
            if let Some(id) = b.route_reflector_cluster_id.as_deref()
                && let Some(IpAddr::V6(_)) = c.ip("spec.bgp.routeReflectorClusterID", id)
            {
                c.err(
                    "spec.bgp.routeReflectorClusterID",
                    format!("{id} is not an IPv4 address"),
                );
            }
        }
        c.into_errors()
    }
}

impl Validate for NodeStatus {
    fn field_errors(&self) -> Vec<FieldError> {
        let mut c = Ctx::new("NodeStatus", &self.metadata);
        c.check_meta(&self.metadata);
        c.dns_name("spec.node", &self.spec.node);
        let peers = self
            .status
            .iter()
            .flat_map(|s| s.bgp.iter())
            .flat_map(|b| &b.peers);
        for (i, p) in peers.enumerate() {
            c.ip(&format!("status.bgp.peers[{i}].peerIP"), &p.peer_ip);
        }
        c.into_errors()
    }
}

impl Validate for BGPConfiguration {
    fn field_errors(&self) -> Vec<FieldError> {
        let mut c = Ctx::new("BGPConfiguration", &self.metadata);
        c.check_meta(&self.metadata);
        check_default_or_node_name(&mut c, self.metadata.name.as_deref());
        let s = &self.spec;
        if let Some(asn) = s.as_number {
            c.asn("spec.asNumber", asn);
        }
        if s.listen_port == Some(0) {
            c.err("spec.listenPort", "0 out of range 1..=65535");
        }
        for (field, list) in [
            ("spec.serviceClusterIPs", &s.service_cluster_ips),
            ("spec.serviceExternalIPs", &s.service_external_ips),
            ("spec.serviceLoadBalancerIPs", &s.service_load_balancer_ips),
        ] {
            for (i, b) in list.iter().enumerate() {
                c.cidr(&format!("{field}[{i}].cidr"), &b.cidr);
            }
        }
        c.duration(
            "spec.nodeMeshMaxRestartTime",
            s.node_mesh_max_restart_time.as_deref(),
        );
        check_password(&mut c, "spec.nodeMeshPassword", &s.node_mesh_password);
        c.into_errors()
    }
}

impl Validate for BGPPeer {
    fn field_errors(&self) -> Vec<FieldError> {
        let mut c = Ctx::new("BGPPeer", &self.metadata);
        c.check_meta(&self.metadata);
        let s = &self.spec;
        if let Some(n) = s.node.as_deref() {
            c.dns_name("spec.node", n);
            if s.node_selector.is_some() {
                c.err(
                    "spec.nodeSelector",
                    "must not be set together with spec.node",
                );
            }
        }
        if let Some(sel) = s.node_selector.as_deref() {
            c.selector("spec.nodeSelector", sel);
        }
        match (s.peer_ip.as_deref(), s.peer_selector.as_deref()) {
            (Some(_), Some(_)) => c.err(
                "spec.peerSelector",
                "must not be set together with spec.peerIP",
            ),
            (None, None) => c.err(
                "spec",
                "one of peerIP (with asNumber) or peerSelector is required",
            ),
            (Some(ip), None) => {
                if parse_peer_ip(ip).is_none() {
                    c.err(
                        "spec.peerIP",
                        format!("{ip:?} is not an IP address or IP:port (e.g. 192.0.2.1, [2001:db8::1]:179)"),
                    );
                }
                if s.as_number.is_none() {
                    c.err("spec.asNumber", "is required with spec.peerIP");
                }
            }
            (None, Some(sel)) => {
                c.selector("spec.peerSelector", sel);
                if s.as_number.is_some() {
                    c.err(
                        "spec.asNumber",
                        "must not be set with spec.peerSelector (the selected nodes' AS numbers are used)",
                    );
                }
            }
        }
        if let Some(asn) = s.as_number {
            c.asn("spec.asNumber", asn);
        }
        c.duration("spec.maxRestartTime", s.max_restart_time.as_deref());
        check_password(&mut c, "spec.password", &s.password);
        c.into_errors()
    }
}

impl Validate for AgentConfiguration {
    fn field_errors(&self) -> Vec<FieldError> {
        let mut c = Ctx::new("AgentConfiguration", &self.metadata);
        c.check_meta(&self.metadata);
        check_default_or_node_name(&mut c, self.metadata.name.as_deref());
        let s = &self.spec;
        for (field, v) in [
            ("spec.routeRefreshInterval", &s.route_refresh_interval),
            ("spec.iptablesRefreshInterval", &s.iptables_refresh_interval),
            ("spec.ipsetsRefreshInterval", &s.ipsets_refresh_interval),
            ("spec.datastoreResyncInterval", &s.datastore_resync_interval),
            ("spec.reportingInterval", &s.reporting_interval),
        ] {
            c.duration(field, v.as_deref());
        }
        for (field, v) in [
            ("spec.healthPort", s.health_port),
            ("spec.prometheusMetricsPort", s.prometheus_metrics_port),
        ] {
            if v == Some(0) {
                c.err(field, "0 out of range 1..=65535");
            }
        }
        for (field, list) in [
            (
                "spec.failsafeInboundHostPorts",
                &s.failsafe_inbound_host_ports,
            ),
            (
                "spec.failsafeOutboundHostPorts",
                &s.failsafe_outbound_host_ports,
            ),
        ] {
            for (i, p) in list.iter().flatten().enumerate() {
                if p.port == 0 {
                    c.err(&format!("{field}[{i}].port"), "0 out of range 1..=65535");
                }
            }
        }
        c.into_errors()
    }
}

/// The longest Linux interface name (IFNAMSIZ - 1).
const MAX_IFNAME: usize = 15;

impl Validate for WorkloadEndpoint {
    fn field_errors(&self) -> Vec<FieldError> {
        let mut c = Ctx::new("WorkloadEndpoint", &self.metadata);
        c.check_meta(&self.metadata);
        if self.metadata.namespace.is_none() {
            c.err(
                "metadata.namespace",
                "is required (a WorkloadEndpoint lives in its pod's namespace)",
            );
        }
        let s = &self.spec;
        c.dns_name("spec.node", &s.node);
        c.dns_name("spec.pod", &s.pod);
        let ifname = &s.interface_name;
        if ifname.is_empty() || ifname.len() > MAX_IFNAME || ifname.contains(['/', ' ']) {
            c.err(
                "spec.interfaceName",
                format!(
                    "{ifname:?} is not a valid interface name (1-15 characters, no '/' or spaces)"
                ),
            );
        }
        for (i, n) in s.ip_networks.iter().enumerate() {
            c.cidr(&format!("spec.ipNetworks[{i}]"), n);
        }
        if let Some(mac) = s.mac.as_deref() {
            let ok = mac.split(':').count() == 6
                && mac
                    .split(':')
                    .all(|b| b.len() == 2 && u8::from_str_radix(b, 16).is_ok());
            if !ok {
                c.err(
                    "spec.mac",
                    format!("{mac:?} is not a MAC address (e.g. ee:ee:ee:ee:ee:ee)"),
                );
            }
        }
        for (i, p) in s.ports.iter().enumerate() {
            if p.name.is_empty() {
                c.err(&format!("spec.ports[{i}].name"), "must not be empty");
            }
            if p.port == 0 {
                c.err(&format!("spec.ports[{i}].port"), "0 out of range 1..=65535");
            }
        }
        c.into_errors()
    }
}
