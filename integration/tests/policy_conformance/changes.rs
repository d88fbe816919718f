//! Changes while a policy is in force: pod and namespace labels, the policy itself (also while
//! traffic flows), deletion, and the dataplane behind the agent's back (tamper repair); and the
//! node's own traffic.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::conformance::Conformance;
use crate::ingress::a_from;
use crate::truth::{Family, Proto, every, in_ns, is, port};
use crate::{MATRIX_TIMEOUT, PODS};

// ---- label changes ----

pub fn p1(c: &Conformance) {
    c.apply(
        "x",
        "p1",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}], "ports": [{"port": 80}]}]}),
    );
}

pub fn pod_label_enters_peers(c: &Conformance) {
    let xa = is("x", "a");
    p1(c);
    // x/c relabelled pod=b enters p1's peers (x's pods labelled pod=b).
    c.pod_label("x/c", &["pod=b"]);
    c.check(c.truth().isolate_ingress(&xa).allow_ingress(
        &|n: &str, p: &str| n == "x" && (p == "b" || p == "c"),
        &xa,
        &port(80, Proto::Tcp),
    ));
}

pub fn pod_label_enters_selector(c: &Conformance) {
    p1(c);
    // x/b relabelled pod=a is selected by p1, and no pod is labelled pod=b any more.
    c.pod_label("x/b", &["pod=a"]);
    c.check(
        c.truth()
            .isolate_ingress(&|n: &str, p: &str| n == "x" && (p == "a" || p == "b")),
    );
}

pub fn pod_label_added_and_removed(c: &Conformance) {
    let xa = is("x", "a");
    c.apply(
        "x",
        "clients",
        a_from(
            json!([{"namespaceSelector": {}, "podSelector": {"matchLabels": {"role": "client"}}}]),
        ),
    );
    c.check(c.truth().isolate_ingress(&xa));
    c.pod_label("z/b", &["role=client"]);
    c.check(
        c.truth()
            .isolate_ingress(&xa)
            .allow_ingress(&is("z", "b"), &xa, &every),
    );
    c.pod_label("z/b", &["role-"]);
    c.check(c.truth().isolate_ingress(&xa));
}

pub fn namespace_label_change(c: &Conformance) {
    let xa = is("x", "a");
    c.apply(
        "x",
        "team",
        a_from(json!([{"namespaceSelector": {"matchLabels": {"team": "blue"}}}])),
    );
    c.check(c.truth().isolate_ingress(&xa));
    c.ns_label("z", &["team=blue"]);
    c.check(
        c.truth()
            .isolate_ingress(&xa)
            .allow_ingress(&in_ns("z"), &xa, &every),
    );
}

pub fn namespace_name_label(c: &Conformance) {
    let xa = is("x", "a");
    c.apply(
        "x",
        "by-name",
        a_from(
            json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "y"}}}]),
        ),
    );
    c.check(
        c.truth()
            .isolate_ingress(&xa)
            .allow_ingress(&in_ns("y"), &xa, &every),
    );
}

// ---- both directions, updates, deletion ----

pub fn both(policy_types: Option<&[&str]>) -> Value {
    let mut spec = json!({"podSelector": {"matchLabels": {"pod": "a"}},
           "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}],
           "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}]}]});
    if let Some(t) = policy_types {
        spec["policyTypes"] = json!(t);
    }
    spec
}

pub fn ingress_and_egress(c: &Conformance) {
    let xa = is("x", "a");
    c.apply("x", "both", both(None));
    c.check(
        c.truth()
            .isolate_ingress(&xa)
            .isolate_egress(&xa)
            .allow_ingress(&in_ns("y"), &xa, &every)
            .allow_egress(&xa, &in_ns("z"), &every),
    );
}

pub fn policy_types_ingress_only(c: &Conformance) {
    let xa = is("x", "a");
    c.apply("x", "both", both(None));
    c.apply("x", "both", both(Some(&["Ingress"])));
    c.check(
        c.truth()
            .isolate_ingress(&xa)
            .allow_ingress(&in_ns("y"), &xa, &every),
    );
}

/// Probes `from → to` on `port` in a loop until `stop`; returns how many connected and how
/// many were blocked.
pub fn probe_loop(
    c: &Conformance,
    from: &str,
    to: &str,
    port: &str,
    stop: &AtomicBool,
) -> (u32, u32) {
    let (mut connected, mut blocked) = (0, 0);
    while !stop.load(Ordering::SeqCst) {
        if c.probe(from, to, port, &["--timeout", "1"]) {
            connected += 1;
        } else {
            blocked += 1;
        }
    }
    (connected, blocked)
}

pub fn updates_while_traffic_flows(c: &Conformance) {
    let xa = is("x", "a");
    let from = |peers: Value| a_from(peers);
    let b = json!({"podSelector": {"matchLabels": {"pod": "b"}}});
    c.apply("x", "flow", from(json!([b])));
    // Through every update x/b may reach x/a (any port and protocol, so ping too) and z/c may
    // not; what else is allowed changes.
    let updates: Vec<Box<dyn Fn() + '_>> = vec![
        Box::new(|| {
            c.apply(
                "x",
                "flow",
                from(json!([b, {"namespaceSelector": {"matchLabels": {"ns": "y"}}}])),
            )
        }),
        Box::new(|| {
            c.apply("x", "flow2", from(json!([{"namespaceSelector": {"matchLabels": {"ns": "z"}}, "podSelector": {"matchLabels": {"pod": "a"}}}])))
        }),
        Box::new(|| {
            c.apply("x", "flow", from(json!([{"podSelector": {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["b", "c"]}]}}])))
        }),
        Box::new(|| c.delete("x", "flow2")),
        Box::new(|| c.pod_label("y/a", &["tier=web"])),
        Box::new(|| {
            c.apply("x", "flow", from(json!([b, {"namespaceSelector": {"matchLabels": {"ns": "y"}}, "podSelector": {"matchLabels": {"pod": "c"}}}])))
        }),
    ];
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let (tcp, udp, denied, ping, updated) = std::thread::scope(|s| {
        let tcp = s.spawn(|| probe_loop(c, "x/b", "x/a", "80/tcp", &stop));
        let udp = s.spawn(|| probe_loop(c, "x/b", "x/a", "81/udp", &stop));
        let denied = s.spawn(|| probe_loop(c, "z/c", "x/a", "80/tcp", &stop));
        // A continuous flow too: 25 pings, 0.2 s apart.
        let ping = s.spawn(|| c.lab.run(&["ping", "x/b", "x/a", "-c", "25"]));
        std::thread::sleep(Duration::from_millis(500));
        let mut updated = 0;
        for u in &updates {
            u();
            updated += 1;
            std::thread::sleep(Duration::from_millis(300));
        }
        let ping = ping.join().unwrap();
        stop.store(true, Ordering::SeqCst);
        (
            tcp.join().unwrap(),
            udp.join().unwrap(),
            denied.join().unwrap(),
            ping,
            updated,
        )
    });
    eprintln!(
        "  {updated} updates in {:.1} s; x/b → x/a TCP {tcp:?}, UDP {udp:?} (connected, blocked); z/c → x/a {denied:?}",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(tcp.1, 0, "x/b → x/a 80/tcp was interrupted: {tcp:?}");
    assert_eq!(udp.1, 0, "x/b → x/a 81/udp was interrupted: {udp:?}");
    assert_eq!(denied.0, 0, "z/c → x/a 80/tcp got through: {denied:?}");
    assert!(
        tcp.0 >= 3 && udp.0 >= 3 && denied.1 >= 3,
        "too few probes ran during the updates to tell: {tcp:?} {udp:?} {denied:?}"
    );
    let out = String::from_utf8_lossy(&ping.stdout);
    assert!(
        ping.status.success() && out.contains(" 0% packet loss"),
        "pings x/b → x/a were lost during the updates:\n{out}{}",
        String::from_utf8_lossy(&ping.stderr)
    );
    c.check(
        c.truth()
            .isolate_ingress(&xa)
            .allow_ingress(&is("x", "b"), &xa, &every)
            .allow_ingress(&is("y", "c"), &xa, &every),
    );
}

pub fn all_deleted(c: &Conformance) {
    c.apply("x", "deny", json!({"podSelector": {}}));
    c.apply(
        "y",
        "eg",
        json!({"podSelector": {}, "policyTypes": ["Egress"]}),
    );
    p1(c);
    c.check(
        c.truth()
            .isolate_ingress(&in_ns("x"))
            .isolate_egress(&in_ns("y"))
            .allow_ingress(&is("x", "b"), &is("x", "a"), &port(80, Proto::Tcp)),
    );
    c.delete("x", "deny");
    c.delete("y", "eg");
    c.delete("x", "p1");
    c.check(&c.truth());
}

// ---- the node, tampering ----

pub fn node_reaches_local_pods(c: &Conformance) {
    c.apply("x", "deny", json!({"podSelector": {}}));
    for p in PODS {
        let id = format!("x/{p}");
        let node = c.node_of(&id);
        let other = if node == "node-1" { "node-2" } else { "node-1" };
        for v6 in [&[][..], &["--ipv6"][..]] {
            assert!(c.probe(&node, &id, "80/tcp", v6), "{node} → {id} {v6:?}");
            let blocked = [v6, &["--timeout", MATRIX_TIMEOUT]].concat();
            assert!(
                !c.probe(other, &id, "80/tcp", &blocked),
                "{other} → {id} {v6:?}"
            );
        }
    }
    c.check(c.truth().isolate_ingress(&in_ns("x")));
}

/// Runs `tamper` until `visible()` sees its effect (the agent's resync may undo it before the
/// first look: then again, at most three times), then waits up to three resync intervals for
/// `visible()` to be false again.
pub fn tamper_and_repair(what: &str, tamper: impl Fn(), visible: impl Fn() -> bool) {
    let mut seen = false;
    for _ in 0..3 {
        tamper();
        if visible() {
            seen = true;
            break;
        }
    }
    assert!(seen, "{what}: the tampering never had an effect");
    let t = Instant::now();
    margay_integration::lab::wait_for(
        &format!("{what} repaired"),
        Duration::from_secs(10),
        || (!visible()).then_some(()),
        String::new,
    )
    .unwrap();
    eprintln!("  {what}: repaired in {:.1} s", t.elapsed().as_secs_f64());
}

pub fn exec(c: &Conformance, node: &str, cmd: &[&str]) -> String {
    let mut args = vec!["exec", node, "--"];
    args.extend(cmd);
    c.lab.ok(&args)
}

pub fn tamper_chain(c: &Conformance) {
    c.apply("x", "deny", json!({"podSelector": {}}));
    let node = c.node_of("x/b");
    let flush = || {
        let rules = exec(c, &node, &["iptables-save", "-t", "filter"]);
        let chains: Vec<&str> = rules
            .lines()
            .filter_map(|l| l.strip_prefix(":mgy-tw-"))
            .filter_map(|l| l.split(' ').next())
            .collect();
        assert!(
            !chains.is_empty(),
            "no to-workload chains on {node}:\n{rules}"
        );
        for ch in chains {
            exec(c, &node, &["iptables", "-F", &format!("mgy-tw-{ch}")]);
        }
    };
    tamper_and_repair(
        &format!("the to-workload chains flushed on {node}"),
        flush,
        || c.probe("y/a", "x/b", "80/tcp", &["--timeout", "0.5"]),
    );
    c.check(c.truth().isolate_ingress(&in_ns("x")));
}

pub fn tamper_ipset(c: &Conformance) {
    let xa = is("x", "a");
    c.apply(
        "x",
        "a-from",
        a_from(json!([{"namespaceSelector": {"matchLabels": {"ns": "y"}}}])),
    );
    let node = c.node_of("x/a");
    let yb = c.ip("y/b", Family::V4);
    let remove = || {
        let sets = exec(c, &node, &["ipset", "save"]);
        let set = sets
            .lines()
            .find(|l| l.starts_with("add mgy4s-") && l.ends_with(&format!(" {yb}")))
            .and_then(|l| l.split(' ').nth(1))
            .unwrap_or_else(|| panic!("no set on {node} holds y/b ({yb}):\n{sets}"))
            .to_owned();
        exec(c, &node, &["ipset", "del", &set, &yb]);
    };
    tamper_and_repair(
        &format!("y/b's address deleted from a set on {node}"),
        remove,
        || !c.probe("y/b", "x/a", "80/tcp", &["--timeout", "0.5"]),
    );
    c.check(
        c.truth()
            .isolate_ingress(&xa)
            .allow_ingress(&in_ns("y"), &xa, &every),
    );
}
