//! Egress: where the selected pods may connect, and both directions together.

use serde_json::{Value, json};

use crate::PODS;
use crate::conformance::Conformance;
use crate::truth::{Family, Proto, any, every, in_ns, is, port};

pub fn a_egress(to: Value) -> Value {
    json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"], "egress": to})
}

pub fn egress_deny(c: &Conformance) {
    c.apply(
        "x",
        "eg",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"]}),
    );
    // Replies to what others open to x/a still pass (conntrack): the truth table says so.
    c.check(c.truth().isolate_egress(&is("x", "a")));
}

pub fn egress_deny_namespace(c: &Conformance) {
    c.apply(
        "x",
        "eg",
        json!({"podSelector": {}, "policyTypes": ["Egress"]}),
    );
    c.check(c.truth().isolate_egress(&in_ns("x")));
}

pub fn egress_allow_all(c: &Conformance) {
    c.apply(
        "x",
        "eg",
        json!({"podSelector": {}, "policyTypes": ["Egress"]}),
    );
    c.apply(
        "x",
        "eg-all",
        json!({"podSelector": {"matchLabels": {"pod": "b"}}, "policyTypes": ["Egress"], "egress": [{}]}),
    );
    c.check(
        c.truth()
            .isolate_egress(&in_ns("x"))
            .allow_egress(&is("x", "b"), &any, &every),
    );
}

pub fn egress_to_namespace(c: &Conformance) {
    let xa = is("x", "a");
    c.apply(
        "x",
        "eg",
        a_egress(json!([{"to": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}])),
    );
    c.check(
        c.truth()
            .isolate_egress(&xa)
            .allow_egress(&xa, &in_ns("y"), &every),
    );
}

pub fn egress_ns_and_pod(c: &Conformance) {
    let xa = is("x", "a");
    c.apply(
        "x",
        "eg",
        a_egress(
            json!([{"to": [{"namespaceSelector": {"matchLabels": {"ns": "y"}},
                                 "podSelector": {"matchLabels": {"pod": "c"}}}],
                         "ports": [{"protocol": "TCP", "port": 80}]}]),
        ),
    );
    c.check(
        c.truth()
            .isolate_egress(&xa)
            .allow_egress(&xa, &is("y", "c"), &port(80, Proto::Tcp)),
    );
}

pub fn egress_named_port(c: &Conformance) {
    let xa = is("x", "a");
    c.apply(
        "x",
        "eg",
        a_egress(json!([{"ports": [{"protocol": "UDP", "port": "serve-81-udp"}]}])),
    );
    c.check(
        c.truth()
            .isolate_egress(&xa)
            .allow_egress(&xa, &any, &port(81, Proto::Udp)),
    );
}

pub fn egress_end_port_udp(c: &Conformance) {
    let xa = is("x", "a");
    c.apply(
        "x",
        "eg",
        a_egress(json!([{"to": [{"namespaceSelector": {}}],
                         "ports": [{"protocol": "UDP", "port": 79, "endPort": 80}]}])),
    );
    c.check(
        c.truth()
            .isolate_egress(&xa)
            .allow_egress(&xa, &any, &port(80, Proto::Udp)),
    );
}

pub fn egress_ip_block(c: &Conformance) {
    let xa = is("x", "a");
    let zs: Vec<String> = PODS
        .iter()
        .map(|p| format!("{}/32", c.ip(&format!("z/{p}"), Family::V4)))
        .collect();
    c.apply(
        "x",
        "eg",
        a_egress(json!([{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": zs}}]}])),
    );
    c.check_family(
        Family::V4,
        c.truth()
            .isolate_egress(&xa)
            .allow_egress(&xa, &|n: &str, _: &str| n != "z", &every),
    );
    c.check_family(Family::V6, c.truth().isolate_egress(&xa));
}

pub fn egress_and_ingress_both_needed(c: &Conformance) {
    // x/a may send to x/b only; x/b takes only from y: x/a → x/b is allowed by one side only.
    let (xa, xb) = (is("x", "a"), is("x", "b"));
    c.apply(
        "x",
        "eg",
        a_egress(json!([{"to": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}])),
    );
    c.apply(
        "x",
        "b-in",
        json!({"podSelector": {"matchLabels": {"pod": "b"}},
               "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
    );
    c.check(
        c.truth()
            .isolate_egress(&xa)
            .allow_egress(&xa, &xb, &every)
            .isolate_ingress(&xb)
            .allow_ingress(&in_ns("y"), &xb, &every),
    );
}

pub fn isolated_namespace(c: &Conformance) {
    c.apply(
        "x",
        "x-only",
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
               "ingress": [{"from": [{"podSelector": {}}]}],
               "egress": [{"to": [{"podSelector": {}}]}]}),
    );
    c.check(
        c.truth()
            .isolate_ingress(&in_ns("x"))
            .isolate_egress(&in_ns("x"))
            .allow_ingress(&in_ns("x"), &in_ns("x"), &every)
            .allow_egress(&in_ns("x"), &in_ns("x"), &every),
    );
}

pub fn multiple_policies(c: &Conformance) {
    let xa = is("x", "a");
    c.apply(
        "x",
        "p1",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}], "ports": [{"port": 80}]}]}),
    );
    c.apply(
        "x",
        "p2",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
               "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}], "ports": [{"port": 81, "protocol": "UDP"}]}]}),
    );
    c.apply("y", "deny-y", json!({"podSelector": {}}));
    c.check(
        c.truth()
            .isolate_ingress(&xa)
            .allow_ingress(&is("x", "b"), &xa, &port(80, Proto::Tcp))
            .allow_ingress(&in_ns("z"), &xa, &port(81, Proto::Udp))
            .isolate_ingress(&in_ns("y")),
    );
}
