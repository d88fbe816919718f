//! Validation of the Kubernetes objects Margay stores itself when it runs on etcd (there is no API
//! server to check them then): NetworkPolicy and Namespace.

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Ctx, FieldError, Validate};
use crate::selector::selector_from_label_selector;

fn label_selector(c: &mut Ctx, field: &str, sel: &LabelSelector) {
    if let Err(e) = selector_from_label_selector(sel) {
        c.err(&format!("{field}.{}", e.field()), e.reason());
    }
}

fn peer(c: &mut Ctx, field: &str, p: &NetworkPolicyPeer) {
    if let Some(s) = &p.pod_selector {
        label_selector(c, &format!("{field}.podSelector"), s);
    }
    if let Some(s) = &p.namespace_selector {
        label_selector(c, &format!("{field}.namespaceSelector"), s);
    }
    if let Some(b) = &p.ip_block {
        if p.pod_selector.is_some() || p.namespace_selector.is_some() {
            c.err(
                &format!("{field}.ipBlock"),
                "must not be set together with podSelector or namespaceSelector",
            );
        }
        if let Some(net) = c.cidr_loose(&format!("{field}.ipBlock.cidr"), &b.cidr) {
            for (i, ex) in b.except.iter().flatten().enumerate() {
                let f = format!("{field}.ipBlock.except[{i}]");
                if let Some(e) = c.cidr_loose(&f, ex)
                    && !(net.contains(&e.network()) && e.prefix_len() >= net.prefix_len())
                {
                    c.err(&f, format!("{ex} is not within ipBlock.cidr {net}"));
                }
            }
        }
    }
}

fn port(c: &mut Ctx, field: &str, p: &NetworkPolicyPort) {
    if let Some(proto) = p.protocol.as_deref()
        && !["TCP", "UDP", "SCTP"].contains(&proto)
    {
        c.err(
            &format!("{field}.protocol"),
            format!("{proto:?} is not one of TCP, UDP, SCTP"),
        );
    }
    match &p.port {
        Some(IntOrString::Int(n)) if !(1..=65535).contains(n) => {
            c.err(
                &format!("{field}.port"),
                format!("{n} out of range 1..=65535"),
            );
        }
        Some(IntOrString::String(s)) if s.is_empty() || s.len() > 15 => {
            c.err(
                &format!("{field}.port"),
                format!("{s:?} is not a port name (1-15 characters)"),
            );
        }
        _ => {}
    }
    if let Some(end) = p.end_port {
        match &p.port {
            Some(IntOrString::Int(start)) if end >= *start && end <= 65535 => {}
            Some(IntOrString::Int(start)) => c.err(
                &format!("{field}.endPort"),
                format!("{end} out of range {start}..=65535"),
            ),
            _ => c.err(&format!("{field}.endPort"), "requires a numeric port"),
        }
    }
}

impl Validate for NetworkPolicy {
    fn field_errors(&self) -> Vec<FieldError> {
        let mut c = Ctx::new("NetworkPolicy", &self.metadata);
        c.check_meta(&self.metadata);
        if self.metadata.namespace.is_none() {
            c.err("metadata.namespace", "is required");
        }
        let Some(spec) = &self.spec else {
            return c.into_errors();
        };
        label_selector(
            &mut c,
            "spec.podSelector",
            &spec.pod_selector.clone().unwrap_or_default(),
        );
        for t in spec.policy_types.iter().flatten() {
            if t != "Ingress" && t != "Egress" {
                c.err(
                    "spec.policyTypes",
                    format!("{t:?} is not one of Ingress, Egress"),
                );
            }
        }
        for (i, rule) in spec.ingress.iter().flatten().enumerate() {
            for (j, p) in rule.from.iter().flatten().enumerate() {
                peer(&mut c, &format!("spec.ingress[{i}].from[{j}]"), p);
            }
            for (j, p) in rule.ports.iter().flatten().enumerate() {
                port(&mut c, &format!("spec.ingress[{i}].ports[{j}]"), p);
            }
        }
        for (i, rule) in spec.egress.iter().flatten().enumerate() {
            for (j, p) in rule.to.iter().flatten().enumerate() {
                peer(&mut c, &format!("spec.egress[{i}].to[{j}]"), p);
            }
            for (j, p) in rule.ports.iter().flatten().enumerate() {
                port(&mut c, &format!("spec.egress[{i}].ports[{j}]"), p);
            }
        }
        c.into_errors()
    }
}

impl Validate for Namespace {
    fn field_errors(&self) -> Vec<FieldError> {
        let mut c = Ctx::new("Namespace", &self.metadata);
        match self.metadata.name.as_deref() {
            None => c.err("metadata.name", "is required"),
            Some(n) => {
                if let Some(why) = crate::names::dns1123_label_error(n) {
                    c.err(
                        "metadata.name",
                        format!("{n:?} is not a valid DNS-1123 label: {why}"),
                    );
                }
            }
        }
        c.into_errors()
    }
}
