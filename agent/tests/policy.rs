//! NetworkPolicy end to end on two nodes with real agents, etcd, real iptables and ipsets: the
//! basics, the node's own traffic, and repair of tampering within the resync interval (2 s).

mod common;
mod policy_lab;

use std::net::SocketAddr;
use std::time::Duration;

use margay_api::agentconfig::Protocol;
use margay_api::workload::EndpointPort;
use policy_lab::{Lab, Proto, probe_here, wait_for};
use serde_json::json;

fn http(port: u16) -> Vec<EndpointPort> {
    vec![EndpointPort {
        name: "serve-http".into(),
        protocol: Protocol::Tcp,
        port,
    }]
}

fn tcp(lab: &Lab, from: usize, to: usize, port: u16) -> bool {
    lab.probe(from, to, port, Proto::Tcp, Duration::from_secs(1))
}

#[test]
fn network_policy_across_two_nodes_with_real_agents() {
    let mut lab = Lab::new("pol", 2, "2s");
    lab.namespace("x", &[("ns", "x")]);
    lab.namespace("y", &[("ns", "y")]);
    lab.pod(0, "x", "a");
    lab.pod(1, "x", "b");
    lab.pod(0, "y", "c");
    let (a, b, c) = (0, 1, 2);
    lab.label(a, &[("pod", "a")], vec![]);
    lab.label(b, &[("pod", "b")], http(80));
    lab.label(c, &[("pod", "c")], vec![]);

    // No policy: everything passes, across nodes and within one.
    assert!(
        tcp(&lab, a, b, 80) && tcp(&lab, b, a, 80) && tcp(&lab, c, b, 81) && tcp(&lab, c, a, 80)
    );

    // Deny all ingress in x: x's pods take nothing; y's pod still does.
    lab.apply("x", "deny-all", json!({"podSelector": {}}));
    assert!(!tcp(&lab, a, b, 80), "a → b across nodes is blocked");
    assert!(!tcp(&lab, b, a, 80) && !tcp(&lab, c, a, 80));
    assert!(tcp(&lab, a, c, 80));
    // The node still reaches its own pods.
    let to_b = SocketAddr::new(lab.pods[b].ip.parse().unwrap(), 80);
    assert!(
        lab.nodes[1]
            .run(move || probe_here(to_b, Proto::Tcp, Duration::from_secs(1)))
            .unwrap()
    );

    // Tamper: flush b's to-workload chain on node-2; the resync puts it back.
    let tw = format!("mgy-tw-{}", lab.pods[b].host_if);
    lab.nodes[1].exec(&["iptables", "-F", &tw]).unwrap();
    assert!(tcp(&lab, a, b, 80), "the flush opened b");
    wait_for(
        "the flushed chain is repaired",
        Duration::from_secs(10),
        || !tcp(&lab, a, b, 80),
        || lab.nodes[1].exec(&["iptables-save"]).unwrap().stdout,
    );

    // Removing the policy restores traffic.
    lab.delete("x", "deny-all");
    assert!(tcp(&lab, a, b, 80) && tcp(&lab, b, a, 80));

    // b takes only a, on its named port (80 here), from its own namespace.
    lab.apply(
        "x",
        "allow-a",
        json!({"podSelector": {"matchLabels": {"pod": "b"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "a"}}}],
                         "ports": [{"port": "serve-http"}]}]}),
    );
    assert!(tcp(&lab, a, b, 80) && !tcp(&lab, a, b, 81) && !tcp(&lab, c, b, 80));
    assert!(tcp(&lab, b, a, 80));

    // The named port follows the pod: now it is 81.
    lab.label(b, &[("pod", "b")], http(81));
    assert!(tcp(&lab, a, b, 81) && !tcp(&lab, a, b, 80));

    // c enters by a namespace selector: y's pods, any port.
    lab.apply(
        "x",
        "allow-y",
        json!({"podSelector": {"matchLabels": {"pod": "b"}},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
    );
    assert!(tcp(&lab, c, b, 80) && tcp(&lab, c, b, 81) && !tcp(&lab, a, b, 80));

    // Tamper: delete c's address from the namespace set on node-2; the resync adds it back.
    let sets = lab.nodes[1].exec(&["ipset", "save"]).unwrap().stdout;
    let set = sets
        .lines()
        .find(|l| l.starts_with("add mgy4s-") && l.ends_with(&format!(" {}", lab.pods[c].ip)))
        .and_then(|l| l.split(' ').nth(1))
        .expect("a set holds c")
        .to_owned();
    lab.nodes[1]
        .exec(&["ipset", "del", &set, &lab.pods[c].ip])
        .unwrap();
    assert!(!tcp(&lab, c, b, 80), "the deletion closed b to c");
    wait_for(
        "the deleted member is repaired",
        Duration::from_secs(10),
        || tcp(&lab, c, b, 80),
        || lab.nodes[1].exec(&["ipset", "save"]).unwrap().stdout,
    );

    // a's label change moves it out of allow-a's set and back.
    lab.label(a, &[("pod", "other")], vec![]);
    assert!(!tcp(&lab, a, b, 81));
    lab.label(a, &[("pod", "a")], vec![]);
    assert!(tcp(&lab, a, b, 81));

    // Egress: a may only talk to y; replies to connections others open to a still pass.
    lab.apply(
        "x",
        "a-egress",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
            "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
    );
    assert!(tcp(&lab, a, c, 80) && !tcp(&lab, a, b, 81));
    assert!(
        tcp(&lab, b, a, 80),
        "b → a: the reply from a rides conntrack"
    );
}

#[test]
fn ipv6_is_enforced_with_ip6tables_and_inet6_sets() {
    let mut lab = Lab::new("pol6", 1, "2s");
    lab.namespace("x", &[("ns", "x")]);
    lab.pod_dual(0, "x", "a");
    lab.pod_dual(0, "x", "b");
    lab.pod_dual(0, "x", "c");
    let (a, b, c) = (0, 1, 2);
    for (i, name) in [(a, "a"), (b, "b"), (c, "c")] {
        lab.label(i, &[("pod", name)], vec![]);
    }
    let tcp6 =
        |lab: &Lab, f: usize, t: usize| lab.probe6(f, t, 80, Proto::Tcp, Duration::from_secs(1));
    wait_for(
        "pods reach each other over IPv6",
        Duration::from_secs(15),
        || tcp6(&lab, a, b) && tcp6(&lab, c, b),
        || lab.nodes[0].exec(&["ip", "-6", "route"]).unwrap().stdout,
    );

    // b takes only a, over both families.
    lab.apply(
        "x",
        "b-from-a",
        json!({"podSelector": {"matchLabels": {"pod": "b"}},
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "a"}}}]}]}),
    );
    assert!(tcp6(&lab, a, b) && !tcp6(&lab, c, b));
    assert!(tcp(&lab, a, b, 80) && !tcp(&lab, c, b, 80));

    // An IPv6 ipBlock: c's /128 allowed, by address; no IPv4 block, so no IPv4 from c.
    let c6 = lab.pods[c].ip6.clone().unwrap();
    lab.apply(
        "x",
        "b-from-a",
        json!({"podSelector": {"matchLabels": {"pod": "b"}},
               "ingress": [{"from": [{"ipBlock": {"cidr": "fd00:100:64::/112", "except": [format!("{}/128", lab.pods[a].ip6.clone().unwrap())]}}]}]}),
    );
    assert!(tcp6(&lab, c, b) && !tcp6(&lab, a, b), "{c6}");
    assert!(!tcp(&lab, c, b, 80) && !tcp(&lab, a, b, 80));
    let v6 = lab.nodes[0].exec(&["ip6tables-save"]).unwrap().stdout;
    assert!(v6.contains("-j mgy-FORWARD"), "{v6}");
}
