//! The compiler against the NetworkPolicy semantics: what each kind of policy produces, what an
//! update touches, and that the result does not depend on the order of inputs.

use std::collections::BTreeMap;

use margay_api::k8s::NetworkPolicySpec;
use margay_policy::names::{from_workload_chain, policy_ingress_chain, to_workload_chain};
use margay_policy::{Compiler, Endpoint, Family, NamedPort, PolicyKey, Protocol, Rule};
use proptest::prelude::*;
use serde_json::json;

fn spec(v: serde_json::Value) -> NetworkPolicySpec {
    serde_json::from_value(v).expect("a valid NetworkPolicySpec")
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn pod(
    ns: &str,
    name: &str,
    ip: &str,
    l: &[(&str, &str)],
    local: bool,
) -> ((String, String), Endpoint) {
    (
        (ns.into(), name.into()),
        Endpoint {
            namespace: ns.into(),
            labels: labels(l),
            ips: ip.split(',').map(|i| i.parse().unwrap()).collect(),
            ports: vec![],
            iface: format!("mgy{}", &margay_policy::names::hash_hex(name, 11)),
            local,
        },
    )
}

fn key(ns: &str, name: &str) -> PolicyKey {
    PolicyKey(ns.into(), name.into())
}

fn bodies(c: &Compiler, family: Family, chain: &str) -> Vec<String> {
    c.chains()
        .get(&(family, chain.to_owned()))
        .unwrap_or_else(|| panic!("no chain {chain}"))
        .iter()
        .map(|r: &Rule| r.body.clone())
        .collect()
}

fn members_of_set_in(c: &Compiler, chain_body: &str) -> Vec<String> {
    let name = chain_body
        .split("--match-set ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .expect("a set match");
    c.set(name).expect("the set exists").1.into_iter().collect()
}

#[test]
fn a_pod_no_policy_selects_is_not_isolated() {
    let mut c = Compiler::new();
    let (k, a) = pod("x", "a", "100.64.0.1", &[("pod", "a")], true);
    c.upsert_endpoint(k, a.clone());
    assert!(bodies(&c, Family::V4, &to_workload_chain(&a.iface)).is_empty());
    assert_eq!(
        bodies(&c, Family::V4, &from_workload_chain(&a.iface)),
        ["! -s 100.64.0.1/32 -j DROP"]
    );
}

#[test]
fn deny_all_ingress_isolates_selected_pods_only_for_ingress() {
    let mut c = Compiler::new();
    let (k, a) = pod("x", "a", "100.64.0.1", &[("pod", "a")], true);
    let (k2, b) = pod("y", "b", "100.64.0.2", &[("pod", "b")], true);
    c.upsert_endpoint(k, a.clone());
    c.upsert_endpoint(k2, b.clone());
    c.upsert_policy(key("x", "deny"), &spec(json!({"podSelector": {}})));
    let tw = bodies(&c, Family::V4, &to_workload_chain(&a.iface));
    assert_eq!(tw.last().unwrap(), "-j DROP");
    assert!(tw.contains(&format!("-j {}", policy_ingress_chain(&key("x", "deny")))));
    assert!(bodies(&c, Family::V4, &policy_ingress_chain(&key("x", "deny"))).is_empty());
    // Egress not isolated; another namespace's pod not isolated.
    assert_eq!(
        bodies(&c, Family::V4, &from_workload_chain(&a.iface)).len(),
        1
    );
    assert!(bodies(&c, Family::V4, &to_workload_chain(&b.iface)).is_empty());
}

#[test]
fn policy_types_default_to_ingress_plus_egress_when_egress_rules_exist() {
    let mut c = Compiler::new();
    let (k, a) = pod("x", "a", "100.64.0.1", &[], true);
    c.upsert_endpoint(k, a.clone());
    c.upsert_policy(
        key("x", "e"),
        &spec(json!({"podSelector": {}, "egress": [{}]})),
    );
    let fw = bodies(&c, Family::V4, &from_workload_chain(&a.iface));
    assert_eq!(fw.last().unwrap(), "-j DROP", "{fw:?}");
    let tw = bodies(&c, Family::V4, &to_workload_chain(&a.iface));
    assert_eq!(
        tw.last().unwrap(),
        "-j DROP",
        "ingress is isolated by default too"
    );
    // An empty egress list does not add Egress.
    c.upsert_policy(
        key("x", "e"),
        &spec(json!({"podSelector": {}, "egress": []})),
    );
    assert_eq!(
        bodies(&c, Family::V4, &from_workload_chain(&a.iface)).len(),
        1
    );
    // Egress only.
    c.upsert_policy(
        key("x", "e"),
        &spec(json!({"podSelector": {}, "policyTypes": ["Egress"]})),
    );
    assert!(bodies(&c, Family::V4, &to_workload_chain(&a.iface)).is_empty());
    assert_eq!(
        bodies(&c, Family::V4, &from_workload_chain(&a.iface))
            .last()
            .unwrap(),
        "-j DROP"
    );
}

#[test]
fn an_empty_rule_allows_everything_and_no_rule_nothing() {
    let mut c = Compiler::new();
    c.upsert_policy(
        key("x", "all"),
        &spec(json!({"podSelector": {}, "ingress": [{}]})),
    );
    assert_eq!(
        bodies(&c, Family::V4, &policy_ingress_chain(&key("x", "all"))),
        [
            "-j MARK --set-xmark 0x100000/0x100000",
            "-m mark --mark 0x100000/0x100000 -j RETURN"
        ]
    );
    c.upsert_policy(
        key("x", "none"),
        &spec(json!({"podSelector": {}, "ingress": []})),
    );
    assert!(bodies(&c, Family::V4, &policy_ingress_chain(&key("x", "none"))).is_empty());
}

#[test]
fn a_pod_selector_peer_is_a_set_of_matching_pods_of_the_policy_namespace() {
    let mut c = Compiler::new();
    for (k, e) in [
        pod("x", "a", "100.64.0.1", &[("pod", "a")], true),
        pod("x", "b", "100.64.0.2,fd00::2", &[("pod", "b")], false),
        pod("y", "b", "100.64.1.2", &[("pod", "b")], false),
    ] {
        c.upsert_endpoint(k, e);
    }
    c.upsert_policy(
        key("x", "allow-b"),
        &spec(json!({"podSelector": {"matchLabels": {"pod": "a"}},
                     "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]})),
    );
    let chain = policy_ingress_chain(&key("x", "allow-b"));
    let v4 = bodies(&c, Family::V4, &chain);
    assert_eq!(members_of_set_in(&c, &v4[0]), ["100.64.0.2"]);
    let v6 = bodies(&c, Family::V6, &chain);
    assert_eq!(members_of_set_in(&c, &v6[0]), ["fd00::2"]);
}

#[test]
fn namespace_and_pod_selectors_together_need_both() {
    let mut c = Compiler::new();
    c.upsert_namespace("y", labels(&[("ns", "y")]));
    c.upsert_namespace("z", labels(&[("ns", "z")]));
    for (k, e) in [
        pod("y", "a", "100.64.1.1", &[("pod", "a")], false),
        pod("y", "b", "100.64.1.2", &[("pod", "b")], false),
        pod("z", "b", "100.64.2.2", &[("pod", "b")], false),
        pod("x", "b", "100.64.0.2", &[("pod", "b")], false),
    ] {
        c.upsert_endpoint(k, e);
    }
    let both = json!({"podSelector": {}, "ingress": [{"from": [{
        "namespaceSelector": {"matchExpressions": [{"key": "ns", "operator": "In", "values": ["y"]}]},
        "podSelector": {"matchLabels": {"pod": "b"}}}]}]});
    c.upsert_policy(key("x", "p"), &spec(both));
    let r = bodies(&c, Family::V4, &policy_ingress_chain(&key("x", "p")));
    assert_eq!(members_of_set_in(&c, &r[0]), ["100.64.1.2"]);
    // Only a namespaceSelector: every pod of the matching namespaces; the name label is implicit.
    let ns_only = json!({"podSelector": {}, "ingress": [{"from": [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "z"}}}]}]});
    c.upsert_policy(key("x", "p"), &spec(ns_only));
    let r = bodies(&c, Family::V4, &policy_ingress_chain(&key("x", "p")));
    assert_eq!(members_of_set_in(&c, &r[0]), ["100.64.2.2"]);
    // A namespace label change moves pods in and out of the set, touching no chain.
    c.upsert_policy(
        key("x", "q"),
        &spec(json!({"podSelector": {}, "ingress": [{"from": [{
            "namespaceSelector": {"matchLabels": {"team": "blue"}}}]}]})),
    );
    c.take_dirty();
    c.upsert_namespace("y", labels(&[("ns", "y"), ("team", "blue")]));
    let d = c.take_dirty();
    assert!(d.chains.is_empty(), "{d:?}");
    assert_eq!(d.sets.len(), 1, "{d:?}");
}

#[test]
fn match_expressions_not_in_and_does_not_exist_match_pods_without_the_label() {
    let mut c = Compiler::new();
    for (k, e) in [
        pod("x", "a", "100.64.0.1", &[("pod", "a")], false),
        pod("x", "n", "100.64.0.9", &[], false),
    ] {
        c.upsert_endpoint(k, e);
    }
    c.upsert_policy(
        key("x", "p"),
        &spec(
            json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {"matchExpressions": [
            {"key": "pod", "operator": "NotIn", "values": ["a"]}]}}]},
            {"from": [{"podSelector": {"matchExpressions": [
            {"key": "pod", "operator": "DoesNotExist"}]}}]}]}),
        ),
    );
    let r = bodies(&c, Family::V4, &policy_ingress_chain(&key("x", "p")));
    assert_eq!(members_of_set_in(&c, &r[0]), ["100.64.0.9"]);
    assert_eq!(members_of_set_in(&c, &r[2]), ["100.64.0.9"]);
}

#[test]
fn an_ip_block_with_except_is_a_net_set_with_nomatch_entries_in_its_family_only() {
    let mut c = Compiler::new();
    c.upsert_policy(
        key("x", "b"),
        &spec(
            json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [
            {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["100.64.0.0/24"]}}]}]}),
        ),
    );
    let chain = margay_policy::names::policy_egress_chain(&key("x", "b"));
    let v4 = bodies(&c, Family::V4, &chain);
    assert!(
        v4[0].ends_with(" dst -j MARK --set-xmark 0x100000/0x100000"),
        "{v4:?}"
    );
    assert_eq!(
        members_of_set_in(&c, &v4[0]),
        ["0.0.0.0/1", "100.64.0.0/24 nomatch", "128.0.0.0/1"]
    );
    // The rule has peers, none of them IPv6: it allows nothing over IPv6.
    assert!(bodies(&c, Family::V6, &chain).is_empty());
}

#[test]
fn ports_numeric_ranges_protocols_and_named_ports() {
    let mut c = Compiler::new();
    let (k, mut a) = pod("x", "a", "100.64.0.1,fd00::1", &[("pod", "a")], true);
    a.ports = vec![
        NamedPort {
            name: "serve-80".into(),
            protocol: Protocol::Tcp,
            port: 80,
        },
        NamedPort {
            name: "serve-81-udp".into(),
            protocol: Protocol::Udp,
            port: 81,
        },
    ];
    c.upsert_endpoint(k, a);
    let (k, mut b) = pod("x", "b", "100.64.0.2", &[("pod", "b")], false);
    b.ports = vec![NamedPort {
        name: "serve-80".into(),
        protocol: Protocol::Tcp,
        port: 8080,
    }];
    c.upsert_endpoint(k, b);
    c.upsert_policy(
        key("x", "ports"),
        &spec(json!({"podSelector": {}, "ingress": [{"ports": [
            {"port": 80},
            {"protocol": "UDP", "port": 81, "endPort": 90},
            {"protocol": "SCTP"},
            {"port": "serve-80"}
        ]}]})),
    );
    let r = bodies(&c, Family::V4, &policy_ingress_chain(&key("x", "ports")));
    assert_eq!(
        r[0],
        "-p tcp -m tcp --dport 80 -j MARK --set-xmark 0x100000/0x100000"
    );
    assert_eq!(
        r[1],
        "-p udp -m udp --dport 81:90 -j MARK --set-xmark 0x100000/0x100000"
    );
    assert_eq!(r[2], "-p sctp -j MARK --set-xmark 0x100000/0x100000");
    assert!(r[3].starts_with("-p tcp -m set --match-set mgy4n-") && r[3].contains(" dst,dst "));
    // Resolved per pod: each pod's own number for the name.
    assert_eq!(
        members_of_set_in(&c, &r[3]),
        ["100.64.0.1,tcp:80", "100.64.0.2,tcp:8080"]
    );
    let r6 = bodies(&c, Family::V6, &policy_ingress_chain(&key("x", "ports")));
    assert_eq!(members_of_set_in(&c, &r6[3]), ["fd00::1,tcp:80"]);
}

#[test]
fn invalid_parts_allow_nothing_and_are_reported() {
    let mut c = Compiler::new();
    c.upsert_policy(
        key("x", "bad"),
        &spec(json!({"podSelector": {}, "ingress": [
            {"from": [{"ipBlock": {"cidr": "not-a-cidr"}}]},
            {"ports": [{"protocol": "ICMP"}]},
            {"from": [{"podSelector": {"matchExpressions": [{"key": "a", "operator": "Gt"}]}}]}
        ]})),
    );
    assert!(bodies(&c, Family::V4, &policy_ingress_chain(&key("x", "bad"))).is_empty());
    let w = c.warnings();
    assert_eq!(w.len(), 3, "{w:?}");
    assert!(
        w[0].1.contains("spec.ingress[0].from[0].ipBlock.cidr"),
        "{w:?}"
    );
}

#[test]
fn a_pod_entering_a_selector_changes_one_set_and_no_chain() {
    let mut c = Compiler::new();
    let (ka, a) = pod("x", "a", "100.64.0.1", &[("pod", "a")], true);
    let (kb, b) = pod("x", "b", "100.64.0.2", &[("pod", "b")], false);
    c.upsert_endpoint(ka, a);
    c.upsert_endpoint(kb.clone(), b.clone());
    c.upsert_policy(
        key("x", "p"),
        &spec(json!({"podSelector": {"matchLabels": {"pod": "a"}},
                     "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}]}]})),
    );
    c.take_dirty();
    let mut b2 = b.clone();
    b2.labels.insert("role".into(), "client".into());
    c.upsert_endpoint(kb.clone(), b2.clone());
    let d = c.take_dirty();
    assert!(d.chains.is_empty(), "{d:?}");
    assert_eq!(d.sets.len(), 1, "only the IPv4 set gains a member: {d:?}");
    // The same update again changes nothing.
    c.upsert_endpoint(kb, b2);
    assert!(c.take_dirty().is_empty());
}

#[test]
fn removing_everything_leaves_only_the_fixed_chains() {
    let mut c = Compiler::new();
    let empty = c.snapshot();
    let (k, a) = pod("x", "a", "100.64.0.1", &[("pod", "a")], true);
    c.upsert_endpoint(k.clone(), a);
    c.upsert_policy(
        key("x", "p"),
        &spec(json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]})),
    );
    c.remove_policy(&key("x", "p"));
    c.remove_endpoint(&k);
    assert_eq!(c.snapshot(), empty);
}

// ---- golden files ----

fn lab() -> Compiler {
    let mut c = Compiler::new();
    for ns in ["x", "y", "z"] {
        c.upsert_namespace(ns, labels(&[("ns", ns)]));
    }
    let mut n = 0;
    for ns in ["x", "y", "z"] {
        for p in ["a", "b", "c"] {
            n += 1;
            let (k, mut e) = pod(
                ns,
                p,
                &format!("100.64.0.{n},fd00::{n}"),
                &[("pod", p)],
                ns == "x",
            );
            e.ports = vec![
                NamedPort {
                    name: "serve-80-tcp".into(),
                    protocol: Protocol::Tcp,
                    port: 80,
                },
                NamedPort {
                    name: "serve-81-udp".into(),
                    protocol: Protocol::Udp,
                    port: 81,
                },
            ];
            c.upsert_endpoint(k, e);
        }
    }
    c
}

#[test]
fn golden_deny_all_ingress_and_egress() {
    let mut c = lab();
    c.upsert_policy(
        key("x", "deny-all"),
        &spec(json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})),
    );
    insta::assert_snapshot!(c.snapshot().render());
}

#[test]
fn golden_allow_from_namespace_and_pod_on_named_port() {
    let mut c = lab();
    c.upsert_policy(
        key("x", "allow-y-b"),
        &spec(
            json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{
            "from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}},
                      "podSelector": {"matchLabels": {"pod": "b"}}}],
            "ports": [{"port": "serve-80-tcp"}]}]}),
        ),
    );
    insta::assert_snapshot!(c.snapshot().render());
}

#[test]
fn golden_egress_ip_block_except_and_port_range_sctp() {
    let mut c = lab();
    c.upsert_policy(
        key("x", "egress"),
        &spec(json!({"podSelector": {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["b", "c"]}]},
            "policyTypes": ["Egress"],
            "egress": [
                {"to": [{"ipBlock": {"cidr": "100.64.0.0/16", "except": ["100.64.0.5/32"]}},
                        {"ipBlock": {"cidr": "fd00::/64"}}],
                 "ports": [{"port": 80, "endPort": 81}, {"protocol": "SCTP", "port": 80}]},
                {"to": [{"namespaceSelector": {}}], "ports": [{"protocol": "UDP", "port": 53}]}
            ]})),
    );
    insta::assert_snapshot!(c.snapshot().render());
}

// ---- properties ----

#[derive(Debug, Clone)]
enum Op {
    Ns(&'static str, &'static str),
    Ep(usize, &'static str, &'static str),
    DelEp(usize),
    Pol(usize, usize),
    DelPol(usize),
}

const NSS: [&str; 2] = ["x", "y"];
const VALS: [&str; 3] = ["a", "b", "c"];

fn policy_spec(i: usize) -> NetworkPolicySpec {
    let v = VALS[i % 3];
    spec(match i % 4 {
        0 => json!({"podSelector": {"matchLabels": {"k": v}}}),
        1 => {
            json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"k": v}}}],
                     "ports": [{"port": "p"}]}]})
        }
        2 => json!({"podSelector": {"matchLabels": {"k": v}}, "egress": [{"to": [
                     {"namespaceSelector": {"matchLabels": {"l": v}}}]}]}),
        _ => json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "100.64.0.0/16",
                     "except": ["100.64.0.0/24"]}}]}]}),
    })
}

fn apply(c: &mut Compiler, op: &Op) {
    match op {
        Op::Ns(ns, l) => c.upsert_namespace(ns, labels(&[("l", l)])),
        Op::DelEp(i) => c.remove_endpoint(&(NSS[i % 2].into(), format!("p{i}"))),
        Op::Ep(i, l, port) => {
            let (k, mut e) = pod(
                NSS[i % 2],
                &format!("p{i}"),
                &format!("100.64.0.{i},fd00::{i}"),
                &[("k", l)],
                i % 3 == 0,
            );
            e.ports = vec![NamedPort {
                name: "p".into(),
                protocol: Protocol::Tcp,
                port: if *port == "a" { 80 } else { 81 },
            }];
            c.upsert_endpoint(k, e);
        }
        Op::Pol(i, s) => c.upsert_policy(
            PolicyKey(NSS[i % 2].into(), format!("n{i}")),
            &policy_spec(*s),
        ),
        Op::DelPol(i) => c.remove_policy(&PolicyKey(NSS[i % 2].into(), format!("n{i}"))),
    }
}

fn op() -> impl Strategy<Value = Op> {
    let v = prop::sample::select(VALS.to_vec());
    prop_oneof![
        (prop::sample::select(NSS.to_vec()), v.clone()).prop_map(|(n, l)| Op::Ns(n, l)),
        (0usize..6, v.clone(), v.clone()).prop_map(|(i, l, p)| Op::Ep(i, l, p)),
        (0usize..6).prop_map(Op::DelEp),
        (0usize..4, 0usize..8).prop_map(|(i, s)| Op::Pol(i, s)),
        (0usize..4).prop_map(Op::DelPol),
    ]
}

/// The final state an op sequence describes: the last write of each object wins.
fn final_state(ops: &[Op]) -> Vec<Op> {
    let mut last: BTreeMap<String, Op> = BTreeMap::new();
    for o in ops {
        let k = match o {
            Op::Ns(n, _) => format!("ns {n}"),
            Op::Ep(i, ..) | Op::DelEp(i) => format!("ep {i}"),
            Op::Pol(i, _) | Op::DelPol(i) => format!("pol {i}"),
        };
        last.insert(k, o.clone());
    }
    last.into_values().collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn the_result_depends_only_on_the_final_model(
        ops in prop::collection::vec(op(), 0..40),
        seed in any::<u64>(),
    ) {
        let mut incremental = Compiler::new();
        for o in &ops {
            apply(&mut incremental, o);
        }
        // The final model, in a shuffled order, each object written twice.
        let mut fin = final_state(&ops);
        let mut s = seed;
        for i in (1..fin.len()).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            fin.swap(i, (s >> 33) as usize % (i + 1));
        }
        let mut fresh = Compiler::new();
        for o in fin.iter().chain(fin.iter()) {
            apply(&mut fresh, o);
        }
        prop_assert_eq!(incremental.snapshot(), fresh.snapshot());
    }

    #[test]
    fn dirty_keys_name_every_difference(ops in prop::collection::vec(op(), 1..30), split in 0usize..30) {
        let split = split.min(ops.len());
        let mut c = Compiler::new();
        for o in &ops[..split] {
            apply(&mut c, o);
        }
        let before = c.snapshot();
        c.take_dirty();
        for o in &ops[split..] {
            apply(&mut c, o);
        }
        let after = c.snapshot();
        let d = c.take_dirty();
        for (k, v) in &after.chains {
            if before.chains.get(k) != Some(v) {
                prop_assert!(d.chains.contains(k), "chain {:?} changed but is not dirty", k);
            }
        }
        for k in before.chains.keys() {
            if !after.chains.contains_key(k) {
                prop_assert!(d.chains.contains(k));
            }
        }
        for (k, v) in &after.sets {
            if before.sets.get(k) != Some(v) {
                prop_assert!(d.sets.contains(k), "set {} changed but is not dirty", k);
            }
        }
        for k in before.sets.keys() {
            if !after.sets.contains_key(k) {
                prop_assert!(d.sets.contains(k));
            }
        }
    }
}

#[test]
fn a_pod_with_two_addresses_of_a_family_gets_a_source_check_chain() {
    let mut c = Compiler::new();
    let (k, a) = pod("x", "a", "100.64.0.1,100.64.0.2", &[], true);
    c.upsert_endpoint(k, a.clone());
    let sp = margay_policy::names::source_check_chain(&a.iface);
    assert_eq!(
        bodies(&c, Family::V4, &from_workload_chain(&a.iface)),
        [format!("-j {sp}")]
    );
    assert_eq!(
        bodies(&c, Family::V4, &sp),
        [
            "-s 100.64.0.1/32 -j RETURN",
            "-s 100.64.0.2/32 -j RETURN",
            "-j DROP"
        ]
    );
    // No IPv6 address: nothing from it over IPv6.
    assert_eq!(
        bodies(&c, Family::V6, &from_workload_chain(&a.iface)),
        ["-j DROP"]
    );
}
