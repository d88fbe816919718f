//! Ingress: who may connect to the selected pods.

use serde_json::{Value, json};

use crate::conformance::Conformance;
use crate::truth::{Family, Proto, any, every, in_ns, is, port};

pub fn no_policy(c: &Conformance) {
    c.check(&c.truth());
}

pub fn deny_all_ingress(c: &Conformance) {
    c.apply("x", "deny", json!({"podSelector": {}}));
    c.check(c.truth().isolate_ingress(&in_ns("x")));
}

pub fn allow_all_ingress(c: &Conformance) {
    c.apply(
        "x",
        "allow-all",
        json!({"podSelector": {}, "ingress": [{}]}),
    );
    c.check(&c.truth());
}

pub fn deny_and_allow_all(c: &Conformance) {
    c.apply("x", "deny", json!({"podSelector": {}}));
    c.apply(
        "x",
        "allow-all",
        json!({"podSelector": {}, "ingress": [{}]}),
    );
    c.check(&c.truth());
    c.delete("x", "allow-all");
    c.check(c.truth().isolate_ingress(&in_ns("x")));
}

pub fn a_from(peers: Value) -> Value {
    json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": peers}]})
}

pub fn pod_selector_peer(c: &Conformance) {
    let xa = is("x", "a");
    c.apply(
        "x",
        "a-from",
        a_from(json!([{"podSelector": {"matchLabels": {"pod": "b"}}}])),
    );
    c.check(
        c.truth()
            .isolate_ingress(&xa)
            .allow_ingress(&is("x", "b"), &xa, &every),
    );
}

pub fn policy_update_in_place(c: &Conformance) {
    let xa = is("x", "a");
    c.apply(
        "x",
        "a-from",
        a_from(json!([{"podSelector": {"matchLabels": {"pod": "b"}}}])),
    );
    c.apply(
        "x",
        "a-from",
        a_from(json!([{"namespaceSelector": {"matchLabels": {"ns": "y"}}}])),
    );
    c.check(
        c.truth()
            .isolate_ingress(&xa)
            .allow_ingress(&in_ns("y"), &xa, &every),
    );
}

pub fn ns_and_pod_selector(c: &Conformance) {
    let xa = is("x", "a");
    c.apply(
        "x",
        "a-from",
        a_from(json!([{"namespaceSelector": {"matchLabels": {"ns": "y"}},
                       "podSelector": {"matchLabels": {"pod": "b"}}}])),
    );
    c.check(
        c.truth()
            .isolate_ingress(&xa)
            .allow_ingress(&is("y", "b"), &xa, &every),
    );
}

pub fn two_peers(c: &Conformance) {
    let xa = is("x", "a");
    c.apply(
        "x",
        "a-from",
        a_from(json!([{"namespaceSelector": {"matchLabels": {"ns": "y"}}},
                      {"podSelector": {"matchLabels": {"pod": "b"}}}])),
    );
    c.check(
        c.truth()
            .isolate_ingress(&xa)
            .allow_ingress(&in_ns("y"), &xa, &every)
            .allow_ingress(&is("x", "b"), &xa, &every),
    );
}

pub fn match_expressions_in_notin(c: &Conformance) {
    let xa = is("x", "a");
    c.apply(
        "x",
        "expr",
        json!({"podSelector": {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["a"]}]},
               "ingress": [{"from": [{
                   "namespaceSelector": {"matchExpressions": [{"key": "ns", "operator": "NotIn", "values": ["y"]}]},
                   "podSelector": {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["b", "c"]}]}}]}]}),
    );
    let from = |n: &str, p: &str| n != "y" && (p == "b" || p == "c");
    c.check(
        c.truth()
            .isolate_ingress(&xa)
            .allow_ingress(&from, &xa, &every),
    );
}

pub fn match_expressions_exists(c: &Conformance) {
    let xa = is("x", "a");
    // No pod lacks `pod`, so the first rule allows nothing; every namespace has `ns`.
    c.apply(
        "x",
        "expr",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
               "ingress": [{"from": [{"podSelector": {"matchExpressions": [{"key": "pod", "operator": "DoesNotExist"}]}}]},
                           {"from": [{"namespaceSelector": {"matchExpressions": [{"key": "ns", "operator": "Exists"}]},
                                      "podSelector": {"matchLabels": {"pod": "c"}}}]}]}),
    );
    c.check(c.truth().isolate_ingress(&xa).allow_ingress(
        &|_: &str, p: &str| p == "c",
        &xa,
        &every,
    ));
}

pub fn match_expressions_notin_doesnotexist(c: &Conformance) {
    // Selects x/b and x/c; takes pod a of every namespace without a `team` label.
    let xbc = |n: &str, p: &str| n == "x" && p != "a";
    c.apply(
        "x",
        "expr",
        json!({"podSelector": {"matchExpressions": [{"key": "pod", "operator": "NotIn", "values": ["a"]}]},
               "ingress": [{"from": [{
                   "namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]},
                   "podSelector": {"matchLabels": {"pod": "a"}}}]}]}),
    );
    c.check(c.truth().isolate_ingress(&xbc).allow_ingress(
        &|_: &str, p: &str| p == "a",
        &xbc,
        &every,
    ));
    // y gets a team: its pod a leaves the peer set.
    c.ns_label("y", &["team=red"]);
    c.check(c.truth().isolate_ingress(&xbc).allow_ingress(
        &|n: &str, p: &str| n != "y" && p == "a",
        &xbc,
        &every,
    ));
}

pub fn a_ports(ports: Value) -> Value {
    json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"ports": ports}]})
}

pub fn port_only(c: &Conformance) {
    let xa = is("x", "a");
    c.apply("x", "ports", a_ports(json!([{"port": 80}])));
    c.check(
        c.truth()
            .isolate_ingress(&xa)
            .allow_ingress(&any, &xa, &port(80, Proto::Tcp)),
    );
}

pub fn named_port(c: &Conformance) {
    let xa = is("x", "a");
    c.apply("x", "ports", a_ports(json!([{"port": "serve-81-tcp"}])));
    c.check(
        c.truth()
            .isolate_ingress(&xa)
            .allow_ingress(&any, &xa, &port(81, Proto::Tcp)),
    );
}

pub fn named_udp_port(c: &Conformance) {
    let xa = is("x", "a");
    c.apply(
        "x",
        "ports",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
               "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
                            "ports": [{"protocol": "UDP", "port": "serve-80-udp"}]}]}),
    );
    c.check(
        c.truth()
            .isolate_ingress(&xa)
            .allow_ingress(&in_ns("y"), &xa, &port(80, Proto::Udp)),
    );
}

pub fn named_port_per_pod(c: &Conformance) {
    // x/c names its ports the other way round: serve-80-tcp is its port 81.
    c.recreate_pod("x/c", &|n| if n == 80 { 81 } else { 80 });
    let xc = is("x", "c");
    let not_xc = |n: &str, p: &str| !(n == "x" && p == "c");
    c.apply(
        "x",
        "ports",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": "serve-80-tcp"}]}]}),
    );
    c.check(
        c.truth()
            .isolate_ingress(&in_ns("x"))
            .allow_ingress(
                &any,
                &|n: &str, p: &str| n == "x" && p != "c",
                &port(80, Proto::Tcp),
            )
            .allow_ingress(&any, &xc, &port(81, Proto::Tcp)),
    );
    c.delete("x", "ports");
    let ya = is("y", "a");
    c.apply(
        "y",
        "eg",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
               "egress": [{"ports": [{"port": "serve-80-tcp"}]}]}),
    );
    c.check(
        c.truth()
            .isolate_egress(&ya)
            .allow_egress(&ya, &not_xc, &port(80, Proto::Tcp))
            .allow_egress(&ya, &xc, &port(81, Proto::Tcp)),
    );
}

pub fn end_port(c: &Conformance) {
    let xa = is("x", "a");
    c.apply(
        "x",
        "ports",
        a_ports(json!([{"port": 80, "endPort": 81}, {"protocol": "SCTP", "port": 80}])),
    );
    c.check(
        c.truth()
            .isolate_ingress(&xa)
            .allow_ingress(&any, &xa, &|_, q| q == Proto::Tcp),
    );
}

pub fn unknown_named_port(c: &Conformance) {
    c.apply("x", "ports", a_ports(json!([{"port": "serve-99-tcp"}])));
    c.check(c.truth().isolate_ingress(&is("x", "a")));
}

pub fn empty_from(c: &Conformance) {
    let xa = is("x", "a");
    c.apply(
        "x",
        "ports",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
               "ingress": [{"from": [], "ports": [{"protocol": "UDP", "port": 81}]}]}),
    );
    c.check(
        c.truth()
            .isolate_ingress(&xa)
            .allow_ingress(&any, &xa, &port(81, Proto::Udp)),
    );
}

pub fn ip_block_except(c: &Conformance) {
    let xa = is("x", "a");
    let yb = c.ip("y/b", Family::V4);
    c.apply(
        "x",
        "block",
        a_from(json!([{"ipBlock": {"cidr": "100.64.0.0/16", "except": [format!("{yb}/32")]}}])),
    );
    c.check_family(
        Family::V4,
        c.truth().isolate_ingress(&xa).allow_ingress(
            &|n: &str, p: &str| !(n == "y" && p == "b"),
            &xa,
            &every,
        ),
    );
    // An IPv4 block matches no IPv6 source.
    c.check_family(Family::V6, c.truth().isolate_ingress(&xa));
}

pub fn ip_block_v6(c: &Conformance) {
    let xa = is("x", "a");
    let yb = c.ip("y/b", Family::V6);
    c.apply(
        "x",
        "block",
        a_from(
            json!([{"ipBlock": {"cidr": "fd00:100:64::/112", "except": [format!("{yb}/128")]}}]),
        ),
    );
    c.check_family(
        Family::V6,
        c.truth().isolate_ingress(&xa).allow_ingress(
            &|n: &str, p: &str| !(n == "y" && p == "b"),
            &xa,
            &every,
        ),
    );
    c.check_family(Family::V4, c.truth().isolate_ingress(&xa));
}
