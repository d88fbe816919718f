//! Allocation benchmark against a real etcd (loopback, data on tmpfs): allocations per second
//! with 1 and with 8 concurrent allocators on one node, and the p50/p99 latency of one
//! allocation. Not a test: `cargo bench -p margay-ipam --bench alloc` prints the figures.
//!
//! `ALLOCS` (default 4000) sets how many allocations each run makes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use margay_api::{IPPool, IPPoolSpec};
use margay_datastore::{Datastore, Etcd, EtcdConfig, Key, Typed};
use margay_harness::fixtures::Etcd as EtcdServer;
use margay_ipam::Ipam;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// One `ipam op=… tasks=… n=… per_s=… p50_ms=… p99_ms=…` line (integration/bench/report.py reads it).
fn report(op: &str, tasks: usize, n: usize, elapsed: Duration, mut lat: Vec<Duration>) {
    lat.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "ipam op={op} tasks={tasks} n={n} elapsed_s={:.2} per_s={:.0} p50_ms={:.2} p99_ms={:.2}",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99)),
    );
}

/// Raw datastore creates, for scale: what one etcd round trip costs here.
async fn raw_creates(ds: &Arc<dyn Datastore>, tasks: usize, total: usize) {
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let ds = Arc::clone(ds);
            tokio::spawn(async move {
                let mut lat = Vec::new();
                for i in 0..total / tasks {
                    let key = Key::cluster("benchkeys", &format!("k{tasks}-{t}-{i}")).unwrap();
                    let s = Instant::now();
                    ds.create(&key, b"{}".to_vec()).await.expect("create");
                    lat.push(s.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut lat = Vec::new();
    for h in handles {
        lat.extend(h.await.unwrap());
    }
    report("raw_etcd_create", tasks, total, started.elapsed(), lat);
}

async fn allocations(ipam: &Ipam, node: &str, tasks: usize, total: usize) {
    let node = ipam.node(node, BTreeMap::new());
    let before = ipam.group_commit_stats();
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let node = node.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut held = Vec::new();
                for i in 0..total / tasks {
                    let h = format!("margay-pod-network.{tasks}-{t}-{i}");
                    let s = Instant::now();
                    node.auto_assign(&h, &BTreeMap::new(), 1, 0)
                        .await
                        .expect("allocation");
                    lat.push(s.elapsed());
                    held.push(h);
                }
                (lat, held)
            })
        })
        .collect();
    let mut lat = Vec::new();
    let mut held = Vec::new();
    for h in handles {
        let (l, hs) = h.await.unwrap();
        lat.extend(l);
        held.extend(hs);
    }
    let elapsed = started.elapsed();
    let after = ipam.group_commit_stats();
    report("auto_assign", tasks, total, elapsed, lat);
    println!(
        "ipam op=group_commit tasks={tasks} block_requests={} block_writes={}",
        after.1 - before.1,
        after.0 - before.0
    );
    // Release (not timed with the allocations, reported on its own).
    let started = Instant::now();
    let chunks: Vec<Vec<String>> = held.chunks(total / tasks).map(|c| c.to_vec()).collect();
    let handles: Vec<_> = chunks
        .into_iter()
        .map(|c| {
            let node = node.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                for h in c {
                    let s = Instant::now();
                    node.release_handle(&h).await.expect("release");
                    lat.push(s.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut lat = Vec::new();
    for h in handles {
        lat.extend(h.await.unwrap());
    }
    report("release_handle", tasks, total, started.elapsed(), lat);
}

fn main() {
    // `cargo bench` passes --bench. Test runners that list or run every target (nextest's
    // `--list`, `cargo test --all-targets`) get no tests from this binary, so the benchmark
    // never runs inside the test suite.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    margay_harness::leftovers::clean_up_on_signal().expect("signal handler");
    let total: usize = std::env::var("ALLOCS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let run = async {
        let server = tokio::task::spawn_blocking(EtcdServer::start_on_loopback)
            .await
            .unwrap()
            .expect("etcd starts (is etcd-server installed? scripts/install-deps.sh)");
        let config = EtcdConfig {
            endpoints: vec![server.endpoint()],
            ..Default::default()
        };
        let ds: Arc<dyn Datastore> = Arc::new(Etcd::connect(&config).await.expect("connect"));
        let mut spec = IPPoolSpec::new("100.64.0.0/14");
        spec.block_size = Some(26);
        Typed::<IPPool>::new(Arc::clone(&ds))
            .create(&IPPool::new("bench", spec))
            .await
            .expect("pool");
        println!("etcd on loopback, data on tmpfs; {total} allocations per run");
        raw_creates(&ds, 1, total / 4).await;
        raw_creates(&ds, 8, total).await;
        let ipam = Ipam::new(Arc::clone(&ds));
        allocations(&ipam, "bench-1", 1, total / 4).await;
        allocations(&ipam, "bench-8", 8, total).await;
        drop(server);
    };
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(600), run)
            .await
            .expect("the benchmark finishes within 10 minutes")
    });
}
