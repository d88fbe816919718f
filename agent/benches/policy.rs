//! NetworkPolicy programming benchmark: Margay's compiler and drivers against a plain
//! `ipset restore` + `iptables-restore` + `ip6tables-restore` of the very same ruleset (taken
//! from what Margay programmed), measured in the same run, each in a fresh network namespace.
//!
//!     cargo bench -p margay-agent --bench policy          # 1000 policies, 10000 endpoints
//!     MARGAY_BENCH_POLICY="100 1000" cargo bench -p margay-agent --bench policy
//!
//! The model: endpoints spread over 100 namespaces (`team` labels on namespaces, `app` and
//! `role` labels and a named port on pods), 50 of them local to the node; policies spread over
//! the namespaces, each selecting an `app` and allowing ingress from a `role` in its namespace on
//! the named port, from a `team` of namespaces on 8000-8100, and egress to an ipBlock with an
//! exception. Prints one line per size: full programming (compile, write) against the plain
//! restore and their ratio; then one pod label change (a remote pod entering a peer set: ipset
//! only) and one local pod label change (leaving its policies: its chains too), each compile +
//! write; the local one five times each way (the median counts, the IPv4 and IPv6 restores'
//! own times shown beside it).

use std::collections::BTreeMap;
use std::time::Instant;

use margay_agent::dataplane::iptables::Mode;
use margay_agent::policy::{PolicyDataplane, ProgramReport};
use margay_api::k8s::NetworkPolicySpec;
use margay_harness::Netns;
use margay_policy::{Compiler, Endpoint, NamedPort, PolicyKey, Protocol};

const NAMESPACES: usize = 100;
const LOCAL: usize = 50;

fn endpoint(i: usize, role: &str) -> ((String, String), Endpoint) {
    let ns = format!("ns{}", i % NAMESPACES);
    let name = format!("pod{i}");
    let ip = format!("100.64.{}.{}", i / 250, i % 250 + 1);
    let ip6 = format!("fd00:100::{i:x}");
    (
        (ns.clone(), name),
        Endpoint {
            namespace: ns,
            labels: BTreeMap::from([
                ("app".to_owned(), format!("app{}", (i / NAMESPACES) % 10)),
                ("role".to_owned(), role.to_owned()),
            ]),
            ips: vec![ip.parse().unwrap(), ip6.parse().unwrap()],
            ports: vec![NamedPort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 8080,
            }],
            iface: format!("mgy{i:011x}"),
            local: i < LOCAL,
        },
    )
}

fn role(i: usize) -> String {
    format!("role{}", i % 7)
}

fn policy(j: usize) -> (PolicyKey, NetworkPolicySpec) {
    let spec = serde_json::from_value(serde_json::json!({
        "podSelector": {"matchLabels": {"app": format!("app{}", j % 10)}},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [
            {"from": [{"podSelector": {"matchLabels": {"role": format!("role{}", j % 7)}}}],
             "ports": [{"port": "http"}]},
            {"from": [{"namespaceSelector": {"matchLabels": {"team": format!("t{}", j % 5)}}}],
             "ports": [{"port": 8000, "endPort": 8100}]}
        ],
        "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": [format!("10.{}.0.0/16", j % 200)]}}]}]
    }))
    .unwrap();
    (
        PolicyKey(format!("ns{}", j % NAMESPACES), format!("pol{j}")),
        spec,
    )
}

/// The inputs, built before any timing (as the agent has them decoded from its watches).
struct Inputs {
    endpoints: Vec<((String, String), Endpoint)>,
    policies: Vec<(PolicyKey, NetworkPolicySpec)>,
}

fn inputs(policies: usize, endpoints: usize) -> Inputs {
    Inputs {
        endpoints: (0..endpoints).map(|i| endpoint(i, &role(i))).collect(),
        policies: (0..policies).map(policy).collect(),
    }
}

fn model(inputs: Inputs) -> Compiler {
    let mut c = Compiler::new();
    for n in 0..NAMESPACES {
        c.upsert_namespace(
            &format!("ns{n}"),
            BTreeMap::from([("team".to_owned(), format!("t{}", n % 5))]),
        );
    }
    for (k, e) in inputs.endpoints {
        c.upsert_endpoint(k, e);
    }
    for (k, s) in &inputs.policies {
        c.upsert_policy(k.clone(), s);
    }
    c
}

fn time<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let out = f();
    (out, t.elapsed().as_secs_f64())
}

/// Margay from nothing to programmed in a fresh namespace: (compiler, drivers, namespace,
/// compile seconds, write seconds).
fn margay(policies: usize, endpoints: usize) -> (Compiler, PolicyDataplane, Netns, f64, f64) {
    let a = Netns::with_tag("polb-a").expect("namespace (run as root)");
    let inputs = inputs(policies, endpoints);
    let (mut c, compile_s) = time(|| model(inputs));
    let (dp, write_s) = a
        .block_on(async {
            let mut dp = PolicyDataplane::new(Mode::Nft);
            dp.load_all(&c);
            c.take_dirty();
            let t = Instant::now();
            dp.resync().await.expect("programming");
            (dp, t.elapsed().as_secs_f64())
        })
        .unwrap();
    (c, dp, a, compile_s, write_s)
}

fn run(policies: usize, endpoints: usize) {
    // The machine is shared: each side runs three times, alternating, and the fastest counts.
    let mut best: Option<(Compiler, PolicyDataplane, Netns, f64, f64)> = None;
    let mut plain_s = f64::MAX;
    let dir = tempfile::tempdir().unwrap();
    let (sets, v4, v6) = (
        dir.path().join("sets"),
        dir.path().join("v4"),
        dir.path().join("v6"),
    );
    for _ in 0..3 {
        let m = margay(policies, endpoints);
        // The same ruleset, restored plainly into a fresh namespace.
        for (argv, path) in [
            (&["ipset", "save"][..], &sets),
            (&["iptables-save"][..], &v4),
            (&["ip6tables-save"][..], &v6),
        ] {
            std::fs::write(path, m.2.exec(argv).unwrap().stdout).unwrap();
        }
        let b = Netns::with_tag("polb-b").expect("namespace");
        let sh = |cmd: String| b.exec(&["sh", "-c", &cmd]).expect("plain restore");
        let (_, p) = time(|| {
            sh(format!("ipset restore < {}", sets.display()));
            sh(format!("iptables-nft-restore < {}", v4.display()));
            sh(format!("ip6tables-nft-restore < {}", v6.display()));
        });
        plain_s = plain_s.min(p);
        if best.as_ref().is_none_or(|b| m.3 + m.4 < b.3 + b.4) {
            best = Some(m);
        }
    }
    let (mut c, mut dp, a, compile_s, write_s) = best.expect("three runs");
    let margay_s = compile_s + write_s;
    let count = |p: &std::path::Path| {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("-A"))
            .count()
    };
    let rules = count(&v4) + count(&v6);

    // One remote pod's label change that moves it into other peer sets: ipset only.
    // (The policy numbered like the pod's namespace allows its role from that namespace.)
    let i = endpoints - 1;
    let (k, e) = endpoint(i, &role(i % NAMESPACES));
    assert_ne!(role(i), role(i % NAMESPACES));
    let (report, label_s) = a
        .block_on(async {
            let t = Instant::now();
            c.upsert_endpoint(k, e);
            let d = c.take_dirty();
            dp.load_dirty(&c, &d);
            let r = dp.program().await.expect("label change");
            (r, t.elapsed().as_secs_f64())
        })
        .unwrap();
    assert_eq!(report.v4.restores + report.v6.restores, 0, "{report:?}");

    // One local pod's label change that moves it out from under its policies (its chains lose
    // their rules), then back (they get them again); five of each, the medians count. Each:
    // compile (the compiler and the drivers' bookkeeping) + write.
    let mut leave = Vec::new();
    let mut back = Vec::new();
    for round in 0..2 * FLIPS {
        let (k, mut e) = endpoint(0, &role(0));
        if round % 2 == 0 {
            e.labels.insert("app".into(), "app9".into());
        }
        let flip = a
            .block_on(async {
                let t = Instant::now();
                c.upsert_endpoint(k, e);
                let d = c.take_dirty();
                dp.load_dirty(&c, &d);
                let compile_s = t.elapsed().as_secs_f64();
                let r = dp.program().await.expect("local label change");
                Flip {
                    total_s: t.elapsed().as_secs_f64(),
                    compile_s,
                    report: r,
                }
            })
            .unwrap();
        assert_eq!(flip.report.v4.chains_written, 2, "{:?}", flip.report);
        if round % 2 == 0 {
            leave.push(flip);
        } else {
            back.push(flip);
        }
    }
    let (leave, back) = (median(leave), median(back));
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    let local_s = leave.total_s;

    println!(
        "policies={policies} endpoints={endpoints} rules={rules} sets={} \
         margay_s={margay_s:.3} (compile {compile_s:.3} + write {write_s:.3}) plain_restore_s={plain_s:.3} \
         ratio={:.2} | remote_label_change_ms={:.1} (sets +{} -{}, restores 0) \
         local_label_change_ms={:.1} (chains written {}, sets +{} -{}; compile {:.1} ms, \
         IPv4 {:.1} ms, IPv6 {:.1} ms; back under the policies {:.1} ms; medians of {FLIPS})",
        std::fs::read_to_string(&sets)
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("create"))
            .count(),
        margay_s / plain_s,
        label_s * 1000.0,
        report.sets.added,
        report.sets.removed,
        local_s * 1000.0,
        leave.report.v4.chains_written + leave.report.v6.chains_written,
        leave.report.sets.added,
        leave.report.sets.removed,
        leave.compile_s * 1000.0,
        ms(leave.report.v4.took),
        ms(leave.report.v6.took),
        back.total_s * 1000.0,
    );
}

/// How many times the local pod's label change is made each way.
const FLIPS: usize = 5;

/// One local label change: its whole time, the compile part, and what was written.
struct Flip {
    total_s: f64,
    compile_s: f64,
    report: ProgramReport,
}

/// The flip of median total time.
fn median(mut flips: Vec<Flip>) -> Flip {
    flips.sort_by(|a, b| a.total_s.total_cmp(&b.total_s));
    flips.swap_remove(flips.len() / 2)
}

fn main() {
    // `cargo bench` passes --bench; nextest's listing passes --list: only run under cargo bench.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    margay_harness::leftovers::clean_up_on_signal().expect("signal handler");
    let sizes = std::env::var("MARGAY_BENCH_POLICY").unwrap_or_else(|_| "1000".into());
    for p in sizes.split_whitespace() {
        let policies: usize = p.parse().expect("MARGAY_BENCH_POLICY: numbers of policies");
        run(policies, 10_000);
    }
}
