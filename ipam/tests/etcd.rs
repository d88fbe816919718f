//! IPAM against a real etcd (on the host's loopback, data on tmpfs, stopped by PID when the
//! guard drops). Needs the `etcd` binary (scripts/install-deps.sh); fails, never skips, without it.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use margay_datastore::{Datastore, Etcd, EtcdConfig};
use margay_harness::fixtures::Etcd as EtcdServer;
use margay_ipam::{Ipam, LeakTracker, Live};

const ALLOCATORS: usize = 8;
const NODES: usize = 2;
const ALLOCATIONS: usize = 10_000;

async fn start() -> (EtcdServer, Arc<dyn Datastore>) {
    let server = tokio::task::spawn_blocking(EtcdServer::start_on_loopback)
        .await
        .unwrap()
        .expect("etcd starts (is etcd-server installed? scripts/install-deps.sh)");
    let config = EtcdConfig {
        endpoints: vec![server.endpoint()],
        ..Default::default()
    };
    let store = Etcd::connect(&config).await.expect("connect to etcd");
    (server, Arc::new(store))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_allocators_make_and_release_ten_thousand_allocations_without_duplicates_or_leaks() {
    let deadline = Duration::from_secs(240);
    tokio::time::timeout(deadline, run())
        .await
        .expect("the test finishes in time");
}

async fn run() {
    let (_server, ds) = start().await;
    add_pool(&ds, "pool", "100.64.0.0/16", 26).await;
    // Two nodes, each its own process (its own Ipam), four allocating tasks on each.
    let ipams: Vec<Ipam> = (0..NODES).map(|_| Ipam::new(Arc::clone(&ds))).collect();
    let started = Instant::now();
    let tasks: Vec<_> = (0..ALLOCATORS)
        .map(|t| {
            let node = ipams[t % NODES].node(&format!("node-{}", t % NODES), BTreeMap::new());
            tokio::spawn(async move {
                let mut got = Vec::new();
                for i in 0..ALLOCATIONS / ALLOCATORS {
                    let handle = format!("margay-pod-network.t{t}-{i}");
                    let a = node
                        .auto_assign(&handle, &attrs(&handle), 1, 0)
                        .await
                        .unwrap_or_else(|e| panic!("allocation {handle}: {e}"));
                    assert_eq!(a.v4.len(), 1);
                    got.push((handle, a.v4[0].ip));
                }
                (node, got)
            })
        })
        .collect();
    let mut per_task = Vec::new();
    let mut seen: HashSet<IpAddr> = HashSet::new();
    for t in tasks {
        let (node, got) = t.await.unwrap();
        for (_, ip) in &got {
            assert!(seen.insert(*ip), "{ip} handed out twice");
        }
        per_task.push((node, got));
    }
    let allocated = started.elapsed();
    assert_eq!(seen.len(), ALLOCATIONS, "0 duplicates");
    let stored = holders(&ds).await;
    assert_eq!(stored.len(), ALLOCATIONS);
    for (_, got) in &per_task {
        for (h, ip) in got {
            assert_eq!(stored.get(ip), Some(h), "the store agrees on {ip}");
        }
    }
    assert_handle_records_complete(&ds).await;
    let (writes, ops) = ipams
        .iter()
        .map(|i| i.group_commit_stats())
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    eprintln!(
        "{ALLOCATIONS} allocations by {ALLOCATORS} allocators on {NODES} nodes in {allocated:?}; \
         {ops} block requests in {writes} block writes"
    );

    let started = Instant::now();
    let releases: Vec<_> = per_task
        .into_iter()
        .map(|(node, got)| {
            tokio::spawn(async move {
                for (i, (h, ip)) in got.into_iter().enumerate() {
                    let freed = node
                        .release_handle(&h)
                        .await
                        .unwrap_or_else(|e| panic!("release {h}: {e}"));
                    assert_eq!(freed, [ip], "release of {h} is exact");
                    if i % 10 == 0 {
                        let again = node.release_handle(&h).await.unwrap();
                        assert!(again.is_empty(), "release of {h} is idempotent");
                    }
                }
            })
        })
        .collect();
    for r in releases {
        r.await.unwrap();
    }
    eprintln!("released in {:?}", started.elapsed());
    assert!(holders(&ds).await.is_empty(), "0 addresses left");
    assert!(handles(&ds).await.is_empty(), "0 handle records left");
    let ipam = Ipam::new(Arc::clone(&ds));
    let live = Live {
        handles: HashSet::new(),
        nodes: Some((0..NODES).map(|n| format!("node-{n}")).collect()),
    };
    let mut tracker = LeakTracker::new(Duration::ZERO);
    let t0 = Instant::now();
    ipam.check(&live, &mut tracker, t0).await.unwrap();
    let report = ipam
        .check(&live, &mut tracker, t0 + Duration::from_millis(1))
        .await
        .unwrap();
    assert!(report.is_clean(), "0 leaks: {report:?}");
    let blocks_left: BTreeSet<(String, Option<String>, usize)> = blocks(&ds)
        .await
        .into_iter()
        .map(|b| {
            (
                b.spec.cidr.clone(),
                b.spec.affinity.clone(),
                b.spec.in_use(),
            )
        })
        .collect();
    assert!(
        blocks_left.len() <= NODES,
        "each node keeps at most its one reserve block: {blocks_left:?}"
    );
}
