//! Route programming benchmark: the agent's route driver against the kernel's practical limit
//! (`../shared/bench/nl_routes.py`, raw batched rtnetlink) measured in the same run.
//!
//!     cargo bench -p margay-agent --bench routes            # N = 10000 100000
//!     MARGAY_BENCH_ROUTES="1000000" cargo bench -p margay-agent --bench routes
//!
//! Each measurement runs in fresh network namespaces (root needed); the routes are
//! `100.64.x.y/32 dev v0 scope link`, the shape of per-pod routes. Prints one line per N with
//! seconds and the ratio to the anchor (≤ 1.0 means as fast as raw batched netlink).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use ipnet::IpNet;
use margay_agent::dataplane::{RouteDriver, RouteTarget};
use margay_harness::Netns;

fn veth_ns() -> (Netns, Netns) {
    let a = Netns::with_tag("rtb-a").expect("namespace (run as root)");
    let b = Netns::with_tag("rtb-b").expect("namespace");
    a.connect("v0", &[], &b, "v0", &[]).expect("veth");
    (a, b)
}

fn routes(n: u32) -> BTreeMap<IpNet, RouteTarget> {
    let base = u32::from(Ipv4Addr::new(100, 64, 0, 0));
    (0..n)
        .map(|i| {
            let ip = IpAddr::V4(Ipv4Addr::from(base + i));
            (
                IpNet::new(ip, 32).expect("/32"),
                RouteTarget::Device("v0".into()),
            )
        })
        .collect()
}

fn margay(n: u32) -> (f64, f64) {
    let (a, _b) = veth_ns();
    a.block_on(async {
        let mut d = RouteDriver::new().expect("netlink");
        d.replace_all(routes(n));
        let t = Instant::now();
        let r = d.apply().await.expect("apply");
        let add = t.elapsed().as_secs_f64();
        assert!(
            r.failed.is_empty() && r.written == n as usize,
            "{} failed",
            r.failed.len()
        );
        d.replace_all(BTreeMap::new());
        let t = Instant::now();
        let r = d.apply().await.expect("apply");
        let del = t.elapsed().as_secs_f64();
        assert!(
            r.failed.is_empty() && r.removed == n as usize,
            "{} failed",
            r.failed.len()
        );
        (add, del)
    })
    .expect("runs in the namespace")
}

fn anchor(script: &str, n: u32) -> (f64, f64) {
    let (a, _b) = veth_ns();
    let run = |op: &str| -> f64 {
        let out = a
            .exec(&[
                "python3",
                script,
                op,
                "v0",
                &n.to_string(),
                "--base",
                "100.64.0.0",
            ])
            .expect("nl_routes.py runs");
        let secs = out
            .stdout
            .split_whitespace()
            .find_map(|w| w.strip_prefix("secs="))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no secs= in {:?}", out.stdout));
        assert!(
            out.stdout.contains("errors=0"),
            "anchor had errors: {}",
            out.stdout
        );
        secs
    };
    (run("add"), run("del"))
}

fn main() {
    // `cargo bench` passes --bench. Test runners that list or run every target (nextest's
    // `--list`, `cargo test --all-targets`) get no tests from this binary, so the benchmark
    // never runs inside the test suite.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    margay_harness::leftovers::clean_up_on_signal().expect("signal handler");
    let shared = std::env::var("MARGAY_SHARED")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared").into());
    let script = format!("{shared}/bench/nl_routes.py");
    assert!(
        std::path::Path::new(&script).exists(),
        "{script} not found: set MARGAY_SHARED to the shared/ checkout"
    );
    let ns: Vec<u32> = std::env::var("MARGAY_BENCH_ROUTES")
        .unwrap_or_else(|_| "10000 100000".into())
        .split_whitespace()
        .map(|s| s.parse().expect("MARGAY_BENCH_ROUTES: numbers"))
        .collect();
    for n in ns {
        let (nl_add, nl_del) = anchor(&script, n);
        let (m_add, m_del) = margay(n);
        println!(
            "routes n={n} margay_add_s={m_add:.3} nl_add_s={nl_add:.3} add_ratio={:.2} margay_del_s={m_del:.3} nl_del_s={nl_del:.3} del_ratio={:.2}",
            m_add / nl_add,
            m_del / nl_del
        );
    }
}
