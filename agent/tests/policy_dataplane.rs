//! The policy dataplane (ipset + iptables drivers) against real `ipset`, `iptables-restore` and
//! `ip6tables-restore`, inside throwaway network namespaces.

use std::collections::BTreeMap;

use margay_agent::dataplane::iptables::{Mode, detect_mode};
use margay_agent::policy::PolicyDataplane;
use margay_api::k8s::NetworkPolicySpec;
use margay_harness::Netns;
use margay_policy::{Compiler, Endpoint, NamedPort, PolicyKey, Protocol};

fn model() -> Compiler {
    let mut c = Compiler::new();
    c.upsert_namespace("y", BTreeMap::from([("ns".to_owned(), "y".to_owned())]));
    for (ns, name, ip, ip6, local) in [
        ("x", "a", "100.64.0.1", "fd00:100::1", true),
        ("x", "b", "100.64.0.2", "fd00:100::2", true),
        ("y", "b", "100.64.1.2", "fd00:100:1::2", false),
    ] {
        c.upsert_endpoint(
            (ns.into(), name.into()),
            Endpoint {
                namespace: ns.into(),
                labels: BTreeMap::from([("pod".to_owned(), name.to_owned())]),
                ips: vec![ip.parse().unwrap(), ip6.parse().unwrap()],
                ports: vec![NamedPort {
                    name: "serve-80".into(),
                    protocol: Protocol::Tcp,
                    port: 80,
                }],
                iface: format!("mgy{name}{}", if local { "loc" } else { "rem" }),
                local,
            },
        );
    }
    let spec: NetworkPolicySpec = serde_json::from_value(serde_json::json!({
        "podSelector": {"matchLabels": {"pod": "a"}},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}},
                               "podSelector": {"matchLabels": {"pod": "b"}}},
                              {"ipBlock": {"cidr": "198.18.0.0/15", "except": ["198.18.0.9/32"]}}],
                     "ports": [{"port": "serve-80"}, {"protocol": "UDP", "port": 81, "endPort": 90},
                               {"protocol": "SCTP", "port": 80}]}],
        "egress": [{"to": [{"podSelector": {}}]}]
    }))
    .unwrap();
    c.upsert_policy(PolicyKey("x".into(), "p".into()), &spec);
    c
}

fn save(ns: &Netns, prog: &str) -> String {
    ns.exec(&[prog]).unwrap().stdout
}

#[test]
fn iptables_nft_is_detected_in_a_fresh_namespace() {
    let ns = Netns::with_tag("pol-detect").expect("namespace (run as root)");
    assert_eq!(ns.run(detect_mode).unwrap(), Mode::Nft);
}

#[test]
fn a_host_on_iptables_legacy_is_detected_and_programmed_with_it() {
    let ns = Netns::with_tag("pol-legacy").expect("namespace (run as root)");
    // The host's rules live in the legacy tables.
    ns.exec(&[
        "iptables-legacy",
        "-A",
        "INPUT",
        "-p",
        "tcp",
        "--dport",
        "22",
        "-j",
        "ACCEPT",
    ])
    .unwrap();
    assert_eq!(ns.run(detect_mode).unwrap(), Mode::Legacy);
    let c = model();
    let second = ns
        .block_on(async {
            let mut dp = PolicyDataplane::new(Mode::Legacy);
            dp.load_all(&c);
            dp.resync().await.expect("first programming");
            let mut again = PolicyDataplane::new(Mode::Legacy);
            again.load_all(&c);
            again.resync().await.expect("second pass")
        })
        .unwrap();
    assert!(!second.wrote(), "{second:?}");
    let legacy = save(&ns, "iptables-legacy-save");
    assert!(legacy.contains("-j mgy-FORWARD"), "{legacy}");
    let nft = save(&ns, "iptables-nft-save");
    assert!(!nft.contains("mgy"), "nothing in the nft tables: {nft}");
}

#[test]
fn programming_is_accepted_by_the_kernel_and_a_second_pass_writes_nothing() {
    let ns = Netns::with_tag("pol-dp").expect("namespace (run as root)");
    let c = model();
    let (first, second) = ns
        .block_on(async {
            let mut dp = PolicyDataplane::new(Mode::Nft);
            dp.load_all(&c);
            let first = dp.resync().await.expect("first programming");
            // A fresh driver reading back what the kernel holds finds nothing to do: the
            // rules' hashes and the sets' members read back exactly as written.
            let mut again = PolicyDataplane::new(Mode::Nft);
            again.load_all(&c);
            let second = again.resync().await.expect("second pass");
            (first, second)
        })
        .unwrap();
    assert!(
        first.v4.restores == 1 && first.v6.restores == 1,
        "{first:?}"
    );
    assert!(!second.wrote(), "{second:?}");
    let v4 = save(&ns, "iptables-save");
    assert!(
        v4.contains("-A FORWARD -m comment --comment \"mgy:"),
        "{v4}"
    );
    assert!(v4.contains("-j mgy-FORWARD"), "{v4}");
    assert!(v4.contains("-m sctp --dport 80"), "{v4}");
    assert!(v4.contains("--dport 81:90"), "{v4}");
    assert!(v4.contains("! -s 100.64.0.1/32 -m comment"), "{v4}");
    let v6 = save(&ns, "ip6tables-save");
    assert!(v6.contains("! -s fd00:100::1/128"), "{v6}");
    let sets = ns.exec(&["ipset", "save"]).unwrap().stdout;
    assert!(sets.contains("100.64.1.2\n"), "{sets}");
    assert!(sets.contains("198.18.0.9 nomatch"), "{sets}");
    assert!(sets.contains("fd00:100::1,tcp:80"), "{sets}");
    assert!(
        !sets.contains("mgy6b-"),
        "no IPv6 set for an IPv4 block: {sets}"
    );
}

#[test]
fn golden_restore_input_of_a_first_write() {
    use margay_agent::dataplane::iptables::IptablesDriver;
    use margay_policy::Family;
    let c = model();
    let mut d = IptablesDriver::new(Family::V4, Mode::Nft);
    for ((f, name), rules) in c.chains() {
        if *f == Family::V4 {
            d.set_chain("filter", name, Some(rules.clone()));
        }
    }
    for (base, rule) in Compiler::hooks() {
        d.set_hooks("filter", &base, "policy", vec![rule]);
    }
    let (input, _) = d.plan(&BTreeMap::new());
    insta::assert_snapshot!(input);
    // And the kernel takes it as it is.
    let ns = Netns::with_tag("pol-golden").expect("namespace (run as root)");
    let ipsets = ns
        .block_on(async {
            let mut dp = PolicyDataplane::new(Mode::Nft);
            dp.load_all(&c);
            dp.resync().await.map(|_| ())
        })
        .unwrap();
    ipsets.unwrap();
}

#[test]
fn resync_repairs_tampering_and_leaves_foreign_chains_and_sets_alone() {
    let ns = Netns::with_tag("pol-tamper").expect("namespace (run as root)");
    let c = model();
    ns.block_on(async {
        let mut dp = PolicyDataplane::new(Mode::Nft);
        dp.load_all(&c);
        dp.resync().await.unwrap();
    })
    .unwrap();
    let clean_v4 = save(&ns, "iptables-save");
    let clean_sets = ns.exec(&["ipset", "save"]).unwrap().stdout;
    let member_set = clean_sets
        .lines()
        .find(|l| l.starts_with("add mgy4s-") && l.ends_with(" 100.64.1.2"))
        .expect("the pod set holds y/b")
        .split(' ')
        .nth(1)
        .unwrap()
        .to_owned();
    // Behind the agent's back: a chain flushed, a set member deleted, the hook deleted, a stale
    // chain and set of ours, and someone else's chain and set.
    let pol = c
        .chains()
        .keys()
        .find(|(_, n)| n.starts_with("mgy-pi-"))
        .unwrap()
        .1
        .clone();
    for argv in [
        vec!["iptables", "-F", pol.as_str()],
        vec!["ipset", "del", member_set.as_str(), "100.64.1.2"],
        vec!["iptables", "-D", "FORWARD", "1"],
        vec!["iptables", "-N", "mgy-stale"],
        vec!["iptables", "-N", "OTHER"],
        vec!["iptables", "-A", "FORWARD", "-j", "OTHER"],
        vec!["ipset", "create", "mgy4s-stale", "hash:net"],
        vec!["ipset", "create", "other", "hash:net"],
    ] {
        ns.exec(&argv).unwrap();
    }
    let report = ns
        .block_on(async {
            let mut dp = PolicyDataplane::new(Mode::Nft);
            dp.load_all(&c);
            dp.resync().await.unwrap()
        })
        .unwrap();
    assert_eq!(report.v4.chains_written, 1, "{report:?}");
    assert_eq!(report.v4.chains_removed, 1, "{report:?}");
    assert_eq!(report.v4.hooks_written, 1, "{report:?}");
    assert_eq!(
        (report.sets.added, report.sets.destroyed),
        (1, 1),
        "{report:?}"
    );
    let v4 = save(&ns, "iptables-save");
    assert!(!v4.contains("mgy-stale"), "{v4}");
    assert!(
        v4.contains(":OTHER") && v4.contains("-A FORWARD -j OTHER"),
        "{v4}"
    );
    let ours = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| l.contains("mgy") && !l.starts_with('#'))
            .map(str::to_owned)
            .collect()
    };
    let mut a = ours(&v4);
    let mut b = ours(&clean_v4);
    a.sort();
    b.sort();
    assert_eq!(a, b, "every rule of ours is back");
    let sets = ns.exec(&["ipset", "save"]).unwrap().stdout;
    assert!(
        sets.contains(&format!("add {member_set} 100.64.1.2")),
        "{sets}"
    );
    assert!(
        sets.contains("create other ") && !sets.contains("mgy4s-stale"),
        "{sets}"
    );
}

#[test]
fn a_removed_policy_takes_its_chains_and_sets_with_it() {
    let ns = Netns::with_tag("pol-rm").expect("namespace (run as root)");
    let mut c = model();
    ns.block_on(async {
        let mut dp = PolicyDataplane::new(Mode::Nft);
        dp.load_all(&c);
        dp.resync().await.unwrap();
        c.take_dirty();
        c.remove_policy(&PolicyKey("x".into(), "p".into()));
        let dirty = c.take_dirty();
        dp.load_dirty(&c, &dirty);
        let r = dp.program().await.unwrap();
        assert!(r.v4.chains_removed >= 2, "{r:?}");
        assert!(r.sets.destroyed >= 5, "{r:?}");
    })
    .unwrap();
    let v4 = save(&ns, "iptables-save");
    assert!(!v4.contains("mgy-pi-") && !v4.contains("mgy-pe-"), "{v4}");
    let sets = ns.exec(&["ipset", "save"]).unwrap().stdout;
    assert!(!sets.contains("create mgy"), "{sets}");
}

#[test]
fn a_pod_entering_a_selector_is_one_ipset_add_and_no_iptables_write() {
    let ns = Netns::with_tag("pol-inc").expect("namespace (run as root)");
    let mut c = model();
    let report = ns
        .block_on(async {
            let mut dp = PolicyDataplane::new(Mode::Nft);
            dp.load_all(&c);
            dp.resync().await.unwrap();
            c.take_dirty();
            // A new remote pod in y labelled pod=b: it enters the policy's peer set.
            c.upsert_endpoint(
                ("y".into(), "new".into()),
                Endpoint {
                    namespace: "y".into(),
                    labels: BTreeMap::from([("pod".to_owned(), "b".to_owned())]),
                    ips: vec!["100.64.1.77".parse().unwrap()],
                    ports: vec![],
                    iface: "mgyremote".into(),
                    local: false,
                },
            );
            let dirty = c.take_dirty();
            assert!(dirty.chains.is_empty(), "{dirty:?}");
            dp.load_dirty(&c, &dirty);
            dp.program().await.unwrap()
        })
        .unwrap();
    assert_eq!(
        (report.v4.restores, report.v6.restores),
        (0, 0),
        "{report:?}"
    );
    assert_eq!(report.sets.added, 1, "{report:?}");
    let sets = ns.exec(&["ipset", "save"]).unwrap().stdout;
    assert!(sets.contains(" 100.64.1.77\n"), "{sets}");
}
