//! CNI ADD latency: margay-cni (with the real agent and etcd behind it) against the reference
//! `ptp` + `host-local` plugins, which keep no datastore. One ADD at a time, then 100 ADDs at
//! once followed by 100 DELs at once, on one node; p50/p99 and the ratio to the reference.
//!
//!     cargo bench -p margay-cni --bench add          # root; COUNT=100 by default
//!
//! `KEEP_LOGS=DIR` copies the plugin's log (one line per call, with each step's duration) and the
//! agent's log there.

#[path = "../tests/common/mod.rs"]
mod common;

use margay_harness::cmd::run_with_input;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use margay_harness::Netns;
use serde_json::{Value, json};

/// Runs one plugin call inside `node` with `plugin_dir` as CNI_PATH; returns its duration.
fn call(
    node: &Netns,
    binary: &Path,
    plugin_dir: &Path,
    cmd: &str,
    id: &str,
    pod: Option<&Netns>,
    conf: &Value,
) -> Duration {
    let mut c: Command = node.command(binary);
    c.env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", id)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", plugin_dir)
        .env(
            "CNI_NETNS",
            pod.map(|p| p.path().display().to_string())
                .unwrap_or_default(),
        );
    let t = Instant::now();
    let out = run_with_input(&mut c, conf.to_string().as_bytes()).expect("plugin runs");
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "{cmd} {id}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    took
}

fn pct(mut v: Vec<Duration>, p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

/// (single ADD p50, concurrent ADD p50, p99, concurrent DEL p99) in ms.
fn measure(
    node: &Netns,
    binary: &Path,
    dir: &Path,
    conf: &Value,
    n: usize,
) -> (f64, f64, f64, f64) {
    let pods: Vec<Netns> = (0..n)
        .map(|i| Netns::with_tag(&format!("bp{i}")).unwrap())
        .collect();
    let single: Vec<Duration> = (0..10)
        .map(|i| {
            let d = call(
                node,
                binary,
                dir,
                "ADD",
                &format!("s{i}"),
                Some(&pods[i]),
                conf,
            );
            call(
                node,
                binary,
                dir,
                "DEL",
                &format!("s{i}"),
                Some(&pods[i]),
                conf,
            );
            d
        })
        .collect();
    let adds: Vec<Duration> = std::thread::scope(|s| {
        let hs: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, p)| {
                s.spawn(move || call(node, binary, dir, "ADD", &format!("c{i}"), Some(p), conf))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let dels: Vec<Duration> = std::thread::scope(|s| {
        let hs: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, p)| {
                s.spawn(move || call(node, binary, dir, "DEL", &format!("c{i}"), Some(p), conf))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    (
        pct(single, 0.5),
        pct(adds.clone(), 0.5),
        pct(adds, 0.99),
        pct(dels, 0.99),
    )
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    margay_harness::leftovers::clean_up_on_signal().expect("signal handler");
    let n: usize = std::env::var("COUNT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_margay-cni"))
        .parent()
        .unwrap()
        .to_owned();

    let s = common::setup();
    let margay_conf = common::conf(&s, None);
    let m = measure(
        &s.node,
        Path::new(env!("CARGO_BIN_EXE_margay-cni")),
        &bin_dir,
        &margay_conf,
        n,
    );

    if let Ok(dir) = std::env::var("KEEP_LOGS") {
        std::fs::create_dir_all(&dir).expect("KEEP_LOGS directory");
        for f in ["cni.log", "agent.log"] {
            let _ = std::fs::copy(s.dir.path().join(f), Path::new(&dir).join(f));
        }
    }

    let reference = Netns::with_tag("bref-node").unwrap();
    let host_local = json!({
        "cniVersion": "1.0.0", "name": "bench-ref", "type": "ptp", "ipMasq": false,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "100.64.128.0/17"}]], "dataDir": s.dir.path().join("host-local")}
    });
    let r = measure(
        &reference,
        Path::new("/usr/lib/cni/ptp"),
        Path::new("/usr/lib/cni"),
        &host_local,
        n,
    );

    println!(
        "cni n={n} single_add_p50_ms margay={:.1} ref={:.1} ratio={:.2}",
        m.0,
        r.0,
        m.0 / r.0
    );
    println!(
        "cni n={n} concurrent_add_p50_ms margay={:.1} ref={:.1} ratio={:.2}",
        m.1,
        r.1,
        m.1 / r.1
    );
    println!(
        "cni n={n} concurrent_add_p99_ms margay={:.1} ref={:.1} ratio={:.2}",
        m.2,
        r.2,
        m.2 / r.2
    );
    println!(
        "cni n={n} concurrent_del_p99_ms margay={:.1} ref={:.1} ratio={:.2}",
        m.3,
        r.3,
        m.3 / r.3
    );
}
