//! NetworkPolicy conformance in the shape of the upstream sig-network e2e suite: namespaces x, y,
//! z with pods a, b, c each (spread over two nodes with real agents), every pod serving TCP and
//! UDP on ports 80 and 81 with named ports `serve-80-tcp` …; each scenario writes policies and
//! checks the full reachability matrix (9 × 9 pods × 2 ports × 2 protocols) against the
//! semantics of the API reference. A pod always reaches itself (loopback).

mod common;
mod policy_lab;

use std::collections::BTreeMap;
use std::time::Duration;

use policy_lab::{Lab, PORTS, Proto, named_ports};
use serde_json::json;

const NSS: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];

fn lab(tag: &str) -> Lab {
    let mut lab = Lab::new(tag, 2, "2s");
    for ns in NSS {
        lab.namespace(ns, &[("ns", ns)]);
    }
    let mut k = 0;
    for ns in NSS {
        for p in PODS {
            lab.pod(k % 2, ns, p);
            k += 1;
        }
    }
    for i in 0..lab.pods.len() {
        let name = lab.pods[i].name.clone();
        lab.label(i, &[("pod", &name)], named_ports());
    }
    lab
}

type Key = (usize, usize, u16, Proto);

/// What each direction allows; a connection passes when both do.
struct Truth {
    names: Vec<String>,
    ingress: BTreeMap<Key, bool>,
    egress: BTreeMap<Key, bool>,
}

fn all_keys(n: usize) -> Vec<Key> {
    let mut out = Vec::new();
    for f in 0..n {
        for t in 0..n {
            for port in PORTS {
                for proto in [Proto::Tcp, Proto::Udp] {
                    out.push((f, t, port, proto));
                }
            }
        }
    }
    out
}

type Pred<'a> = &'a dyn Fn(&str, &str) -> bool;
type PortPred<'a> = &'a dyn Fn(u16, Proto) -> bool;

fn any(_: &str, _: &str) -> bool {
    true
}
fn every(_: u16, _: Proto) -> bool {
    true
}

impl Truth {
    fn new(lab: &Lab) -> Truth {
        let keys = all_keys(lab.pods.len());
        Truth {
            names: lab
                .pods
                .iter()
                .map(|p| format!("{}/{}", p.namespace, p.name))
                .collect(),
            ingress: keys.iter().map(|k| (*k, true)).collect(),
            egress: keys.iter().map(|k| (*k, true)).collect(),
        }
    }

    fn ns_pod(&self, i: usize) -> (&str, &str) {
        let (ns, p) = self.names[i].split_once('/').unwrap();
        (ns, p)
    }

    /// Pods matching `to` take nothing (until allowed).
    fn isolate_ingress(&mut self, to: Pred) -> &mut Self {
        for (k, v) in self.ingress.iter_mut() {
            let (ns, p) = {
                let (a, b) = self.names[k.1].split_once('/').unwrap();
                (a.to_owned(), b.to_owned())
            };
            if to(&ns, &p) {
                *v = false;
            }
        }
        self
    }

    fn isolate_egress(&mut self, from: Pred) -> &mut Self {
        for (k, v) in self.egress.iter_mut() {
            let (a, b) = self.names[k.0].split_once('/').unwrap();
            if from(a, b) {
                *v = false;
            }
        }
        self
    }

    fn allow_ingress(&mut self, from: Pred, to: Pred, ports: PortPred) -> &mut Self {
        let keys: Vec<Key> = self.ingress.keys().copied().collect();
        for k in keys {
            let (fns, fp) = self.ns_pod(k.0);
            let (tns, tp) = self.ns_pod(k.1);
            if from(fns, fp) && to(tns, tp) && ports(k.2, k.3) {
                self.ingress.insert(k, true);
            }
        }
        self
    }

    fn allow_egress(&mut self, from: Pred, to: Pred, ports: PortPred) -> &mut Self {
        let keys: Vec<Key> = self.egress.keys().copied().collect();
        for k in keys {
            let (fns, fp) = self.ns_pod(k.0);
            let (tns, tp) = self.ns_pod(k.1);
            if from(fns, fp) && to(tns, tp) && ports(k.2, k.3) {
                self.egress.insert(k, true);
            }
        }
        self
    }

    fn expected(&self, k: &Key) -> bool {
        k.0 == k.1 || (self.ingress[k] && self.egress[k])
    }
}

/// Probes the matrix and compares it with `truth`; mismatches are probed once more, slowly,
/// before they count.
fn check(lab: &Lab, scenario: &str, truth: &Truth) {
    let got = lab.matrix();
    let mut wrong = Vec::new();
    for (k, v) in &got {
        let want = truth.expected(k);
        if *v != want {
            let again = lab.probe(k.0, k.1, k.2, k.3, Duration::from_secs(2));
            if again != want {
                wrong.push(format!(
                    "  {} → {} {:?}/{}: got {}, want {}",
                    truth.names[k.0],
                    truth.names[k.1],
                    k.3,
                    k.2,
                    if again { "connected" } else { "blocked" },
                    if want { "connected" } else { "blocked" }
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "scenario {scenario:?}: {} of {} probes differ:\n{}\n{}",
        wrong.len(),
        got.len(),
        wrong.join("\n"),
        lab.logs()
    );
}

fn is(ns: &'static str, pod: &'static str) -> impl Fn(&str, &str) -> bool {
    move |n, p| n == ns && p == pod
}
fn in_ns(ns: &'static str) -> impl Fn(&str, &str) -> bool {
    move |n, _| n == ns
}
fn port(n: u16, proto: Proto) -> impl Fn(u16, Proto) -> bool {
    move |p, q| p == n && q == proto
}

#[test]
fn ingress_scenarios() {
    let lab = lab("pcin");
    let xa = is("x", "a");

    // 1. No policy: everything connects.
    check(&lab, "no policy", &Truth::new(&lab));

    // 2. Deny all ingress in x.
    lab.apply("x", "deny", json!({"podSelector": {}}));
    check(
        &lab,
        "deny all ingress in x",
        Truth::new(&lab).isolate_ingress(&in_ns("x")),
    );

    // 3. Plus an allow-all ingress policy: the union allows everything again.
    lab.apply(
        "x",
        "allow-all",
        json!({"podSelector": {}, "ingress": [{}]}),
    );
    check(&lab, "deny + allow all (union)", &Truth::new(&lab));
    lab.delete("x", "allow-all");
    lab.delete("x", "deny");

    // 4. x/a takes only x/b (podSelector peer, own namespace only).
    lab.apply(
        "x",
        "a-from-b",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
    );
    check(
        &lab,
        "podSelector peer",
        Truth::new(&lab)
            .isolate_ingress(&xa)
            .allow_ingress(&is("x", "b"), &xa, &every),
    );

    // 5. Updated in place: from namespace y (namespaceSelector only).
    lab.apply(
        "x",
        "a-from-b",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
               "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
    );
    check(
        &lab,
        "namespaceSelector peer (policy update)",
        Truth::new(&lab)
            .isolate_ingress(&xa)
            .allow_ingress(&in_ns("y"), &xa, &every),
    );

    // 6. Both selectors in one peer: y/b only.
    lab.apply(
        "x",
        "a-from-b",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
               "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}},
                                      "podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
    );
    check(
        &lab,
        "namespaceSelector AND podSelector",
        Truth::new(&lab)
            .isolate_ingress(&xa)
            .allow_ingress(&is("y", "b"), &xa, &every),
    );

    // 7. Two peers: namespace y OR pod b of x.
    lab.apply(
        "x",
        "a-from-b",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
               "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}},
                                     {"podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
    );
    check(
        &lab,
        "two peers (OR)",
        Truth::new(&lab)
            .isolate_ingress(&xa)
            .allow_ingress(&in_ns("y"), &xa, &every)
            .allow_ingress(&is("x", "b"), &xa, &every),
    );
    lab.delete("x", "a-from-b");

    // 8. matchExpressions: namespaces NotIn [y], pods In [b, c].
    lab.apply(
        "x",
        "expr",
        json!({"podSelector": {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["a"]}]},
               "ingress": [{"from": [{
                   "namespaceSelector": {"matchExpressions": [{"key": "ns", "operator": "NotIn", "values": ["y"]}]},
                   "podSelector": {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["b", "c"]}]}}]}]}),
    );
    let from = |n: &str, p: &str| n != "y" && (p == "b" || p == "c");
    check(
        &lab,
        "matchExpressions In / NotIn",
        Truth::new(&lab)
            .isolate_ingress(&xa)
            .allow_ingress(&from, &xa, &every),
    );
    // 9. DoesNotExist on pods: no pod lacks the label, so only isolation remains; Exists on
    // namespaces: every namespace.
    lab.apply(
        "x",
        "expr",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
               "ingress": [{"from": [{"podSelector": {"matchExpressions": [{"key": "pod", "operator": "DoesNotExist"}]}}]},
                           {"from": [{"namespaceSelector": {"matchExpressions": [{"key": "ns", "operator": "Exists"}]},
                                      "podSelector": {"matchLabels": {"pod": "c"}}}]}]}),
    );
    check(
        &lab,
        "DoesNotExist / Exists",
        Truth::new(&lab).isolate_ingress(&xa).allow_ingress(
            &|_: &str, p: &str| p == "c",
            &xa,
            &every,
        ),
    );
    lab.delete("x", "expr");

    // 10. Ports only, any source: TCP 80.
    lab.apply(
        "x",
        "ports",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
               "ingress": [{"ports": [{"port": 80}]}]}),
    );
    check(
        &lab,
        "port 80 (TCP by default) from anywhere",
        Truth::new(&lab)
            .isolate_ingress(&xa)
            .allow_ingress(&any, &xa, &port(80, Proto::Tcp)),
    );

    // 11. Named port serve-81-tcp.
    lab.apply(
        "x",
        "ports",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
               "ingress": [{"ports": [{"port": "serve-81-tcp"}]}]}),
    );
    check(
        &lab,
        "named port serve-81-tcp",
        Truth::new(&lab)
            .isolate_ingress(&xa)
            .allow_ingress(&any, &xa, &port(81, Proto::Tcp)),
    );

    // 12. Named UDP port from y only.
    lab.apply(
        "x",
        "ports",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
               "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
                            "ports": [{"protocol": "UDP", "port": "serve-80-udp"}]}]}),
    );
    check(
        &lab,
        "named UDP port from namespace y",
        Truth::new(&lab).isolate_ingress(&xa).allow_ingress(
            &in_ns("y"),
            &xa,
            &port(80, Proto::Udp),
        ),
    );

    // 13. endPort: TCP 80-81; SCTP 80 (compiled, not probed: no SCTP here) allows no TCP/UDP.
    lab.apply(
        "x",
        "ports",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
               "ingress": [{"ports": [{"port": 80, "endPort": 81}, {"protocol": "SCTP", "port": 80}]}]}),
    );
    check(
        &lab,
        "endPort range",
        Truth::new(&lab)
            .isolate_ingress(&xa)
            .allow_ingress(&any, &xa, &|_, q| q == Proto::Tcp),
    );

    // 14. A named port no pod has allows nothing.
    lab.apply(
        "x",
        "ports",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
               "ingress": [{"ports": [{"port": "serve-99-tcp"}]}]}),
    );
    check(
        &lab,
        "unknown named port",
        Truth::new(&lab).isolate_ingress(&xa),
    );
    lab.delete("x", "ports");

    // 15. ipBlock with except, on pod addresses: all pod addresses but y/b's.
    let yb = lab.pods[lab.find("y", "b")].ip.clone();
    lab.apply(
        "x",
        "block",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
               "ingress": [{"from": [{"ipBlock": {"cidr": "100.64.0.0/16", "except": [format!("{yb}/32")]}}]}]}),
    );
    check(
        &lab,
        "ipBlock with except",
        Truth::new(&lab).isolate_ingress(&xa).allow_ingress(
            &|n: &str, p: &str| !(n == "y" && p == "b"),
            &xa,
            &every,
        ),
    );
    lab.delete("x", "block");

    // 16. Deleting every policy restores the full matrix.
    check(&lab, "all policies deleted", &Truth::new(&lab));
}

#[test]
fn egress_and_change_scenarios() {
    let lab = lab("pceg");
    let xa = is("x", "a");

    // 17. Egress deny all from x/a (policyTypes Egress, no rules).
    lab.apply(
        "x",
        "eg",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"]}),
    );
    check(&lab, "egress deny", Truth::new(&lab).isolate_egress(&xa));

    // 18. Egress to namespace y only.
    lab.apply(
        "x",
        "eg",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
               "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
    );
    check(
        &lab,
        "egress to namespace y",
        Truth::new(&lab)
            .isolate_egress(&xa)
            .allow_egress(&xa, &in_ns("y"), &every),
    );

    // 19. Egress to y/c on TCP 80 only (namespace AND pod selector, port).
    lab.apply(
        "x",
        "eg",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
               "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "y"}},
                                   "podSelector": {"matchLabels": {"pod": "c"}}}],
                           "ports": [{"protocol": "TCP", "port": 80}]}]}),
    );
    check(
        &lab,
        "egress to y/c TCP 80",
        Truth::new(&lab).isolate_egress(&xa).allow_egress(
            &xa,
            &is("y", "c"),
            &port(80, Proto::Tcp),
        ),
    );

    // 20. Egress with a named port resolved on the destination pods.
    lab.apply(
        "x",
        "eg",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
               "egress": [{"ports": [{"protocol": "UDP", "port": "serve-81-udp"}]}]}),
    );
    check(
        &lab,
        "egress named port",
        Truth::new(&lab)
            .isolate_egress(&xa)
            .allow_egress(&xa, &any, &port(81, Proto::Udp)),
    );

    // 21. Egress ipBlock with except: everything but namespace z's pods... by address.
    let zs: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|p| format!("{}/32", lab.pods[lab.find("z", p)].ip))
        .collect();
    lab.apply(
        "x",
        "eg",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
               "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": zs}}]}]}),
    );
    check(
        &lab,
        "egress ipBlock 0.0.0.0/0 except z",
        Truth::new(&lab).isolate_egress(&xa).allow_egress(
            &xa,
            &|n: &str, _: &str| n != "z",
            &every,
        ),
    );
    lab.delete("x", "eg");

    // 22. Ingress and egress isolation of all of x, with x allowed to itself both ways.
    lab.apply(
        "x",
        "x-only",
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
               "ingress": [{"from": [{"podSelector": {}}]}],
               "egress": [{"to": [{"podSelector": {}}]}]}),
    );
    check(
        &lab,
        "x isolated to itself both ways",
        Truth::new(&lab)
            .isolate_ingress(&in_ns("x"))
            .isolate_egress(&in_ns("x"))
            .allow_ingress(&in_ns("x"), &in_ns("x"), &every)
            .allow_egress(&in_ns("x"), &in_ns("x"), &every),
    );
    lab.delete("x", "x-only");

    // 23. Policies in two namespaces and their union on one pod.
    lab.apply(
        "x",
        "p1",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}], "ports": [{"port": 80}]}]}),
    );
    lab.apply(
        "x",
        "p2",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
               "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}], "ports": [{"port": 81, "protocol": "UDP"}]}]}),
    );
    lab.apply("y", "deny-y", json!({"podSelector": {}}));
    check(
        &lab,
        "union of two policies; another namespace's policy",
        Truth::new(&lab)
            .isolate_ingress(&xa)
            .allow_ingress(&is("x", "b"), &xa, &port(80, Proto::Tcp))
            .allow_ingress(&in_ns("z"), &xa, &port(81, Proto::Udp))
            .isolate_ingress(&in_ns("y")),
    );
    lab.delete("y", "deny-y");
    lab.delete("x", "p2");

    // 24. A pod label change moves z/c into p1's peer set? No: p1's peer is x's pods only.
    // x/c relabelled pod=b enters it.
    let xc = lab.find("x", "c");
    lab.label(xc, &[("pod", "b")], named_ports());
    check(
        &lab,
        "pod label change enters a peer set",
        Truth::new(&lab).isolate_ingress(&xa).allow_ingress(
            &|n: &str, p: &str| n == "x" && (p == "b" || p == "c"),
            &xa,
            &port(80, Proto::Tcp),
        ),
    );
    lab.label(xc, &[("pod", "c")], named_ports());

    // 25. A label change that makes a pod selected: x/b relabelled pod=a is isolated by p1.
    let xb = lab.find("x", "b");
    lab.label(xb, &[("pod", "a")], named_ports());
    check(
        &lab,
        "pod label change enters a policy's podSelector",
        Truth::new(&lab).isolate_ingress(&|n: &str, p: &str| n == "x" && (p == "a" || p == "b")),
    );
    lab.label(xb, &[("pod", "b")], named_ports());
    lab.delete("x", "p1");

    // 26. A namespace label change moves its pods into a namespaceSelector.
    lab.apply(
        "x",
        "team",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
               "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "blue"}}}]}]}),
    );
    check(
        &lab,
        "namespaceSelector matching nothing",
        Truth::new(&lab).isolate_ingress(&xa),
    );
    lab.namespace("z", &[("ns", "z"), ("team", "blue")]);
    check(
        &lab,
        "namespace label change",
        Truth::new(&lab)
            .isolate_ingress(&xa)
            .allow_ingress(&in_ns("z"), &xa, &every),
    );
    lab.namespace("z", &[("ns", "z")]);
    lab.delete("x", "team");

    // 27. The implicit kubernetes.io/metadata.name label of every namespace.
    lab.apply(
        "x",
        "by-name",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
               "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "y"}}}]}]}),
    );
    check(
        &lab,
        "namespace by its name label",
        Truth::new(&lab)
            .isolate_ingress(&xa)
            .allow_ingress(&in_ns("y"), &xa, &every),
    );
    lab.delete("x", "by-name");

    // 28. Ingress and egress together on one pod: x/a takes from y, sends to z.
    lab.apply(
        "x",
        "both",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
               "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}],
               "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}]}]}),
    );
    check(
        &lab,
        "ingress and egress on one pod (default policyTypes)",
        Truth::new(&lab)
            .isolate_ingress(&xa)
            .isolate_egress(&xa)
            .allow_ingress(&in_ns("y"), &xa, &every)
            .allow_egress(&xa, &in_ns("z"), &every),
    );

    // 29. Switched to policyTypes [Ingress]: its egress rules no longer isolate.
    lab.apply(
        "x",
        "both",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Ingress"],
               "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}],
               "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}]}]}),
    );
    check(
        &lab,
        "explicit policyTypes Ingress ignores egress rules",
        Truth::new(&lab)
            .isolate_ingress(&xa)
            .allow_ingress(&in_ns("y"), &xa, &every),
    );
    lab.delete("x", "both");

    // 30. Everything deleted: the full matrix again.
    check(&lab, "all policies deleted", &Truth::new(&lab));
}
