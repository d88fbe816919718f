//! IPAM over the in-memory datastore: behaviour, then interleavings with faults (proptest).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use margay_api::ipam::AffinityState;
use margay_api::{BlockAffinity, IPAMBlock, IPAMConfigSpec};
use margay_datastore::{Datastore, Typed};
use margay_ipam::{
    AssignArgs, Finding, Ipam, IpamError, LeakTracker, Live, NodeAllocator, PodRequest,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn node(ds: &Arc<dyn Datastore>, name: &str) -> NodeAllocator {
    Ipam::new(Arc::clone(ds)).node(name, BTreeMap::new())
}

#[tokio::test]
async fn addresses_come_from_the_nodes_own_block_and_release_by_handle_is_exact_and_idempotent() {
    let ds = memory();
    add_pool(&ds, "p", "100.64.0.0/24", 28).await;
    let n1 = node(&ds, "n1");
    let a = n1.auto_assign("h-a", &attrs("a"), 2, 0).await.unwrap();
    let b = n1.auto_assign("h-b", &attrs("b"), 1, 0).await.unwrap();
    assert_eq!(a.v4.len(), 2);
    assert_eq!(a.v4[0].block, b.v4[0].block, "one block for the node");
    assert!(!a.v4[0].borrowed);
    let all: HashSet<IpAddr> = a.ips().into_iter().chain(b.ips()).collect();
    assert_eq!(all.len(), 3);
    let freed = n1.release_handle("h-a").await.unwrap();
    assert_eq!(
        freed.iter().collect::<BTreeSet<_>>(),
        a.ips().iter().collect()
    );
    assert!(n1.release_handle("h-a").await.unwrap().is_empty());
    assert_eq!(holders(&ds).await.len(), 1);
    assert_eq!(handles(&ds).await.len(), 1);
}

#[tokio::test]
async fn a_freed_address_is_reused_last() {
    let ds = memory();
    add_pool(&ds, "p", "100.64.0.0/24", 29).await;
    let n1 = node(&ds, "n1");
    let first = n1.auto_assign("h1", &attrs("a"), 1, 0).await.unwrap().v4[0].ip;
    n1.release_handle("h1").await.unwrap();
    for i in 0..7 {
        let got = n1
            .auto_assign(&format!("h{}", i + 2), &attrs("b"), 1, 0)
            .await
            .unwrap();
        assert_ne!(
            got.v4[0].ip, first,
            "allocation {i} reused the freed address"
        );
    }
    let last = n1.auto_assign("h9", &attrs("c"), 1, 0).await.unwrap();
    assert_eq!(last.v4[0].ip, first);
}

#[tokio::test]
async fn dual_stack_pods_get_one_address_of_each_family() {
    let ds = memory();
    add_pool(&ds, "v4", "100.64.0.0/24", 26).await;
    add_pool(&ds, "v6", "fd00:1::/120", 122).await;
    let got = node(&ds, "n1")
        .auto_assign("h", &attrs("a"), 1, 1)
        .await
        .unwrap();
    assert!(got.v4[0].ip.is_ipv4() && got.v6[0].ip.is_ipv6());
}

#[tokio::test]
async fn a_full_node_claims_another_block_then_borrows_when_the_pool_is_full() {
    let ds = memory();
    add_pool(&ds, "p", "100.64.0.0/28", 30).await; // 4 blocks of 4
    let keep_blocks = margay_ipam::Options {
        reserve_blocks: 4,
        ..Default::default()
    };
    let n1 = Ipam::with_options(Arc::clone(&ds), keep_blocks).node("n1", BTreeMap::new());
    let n2 = node(&ds, "n2");
    n1.auto_assign("n1-a", &attrs("a"), 12, 0).await.unwrap();
    let b = n2.auto_assign("n2-a", &attrs("b"), 2, 0).await.unwrap();
    assert!(
        b.v4.iter().all(|a| !a.borrowed),
        "n2 claimed the last block"
    );
    let c = n2.auto_assign("n2-b", &attrs("c"), 2, 0).await.unwrap();
    assert_eq!(c.v4.len(), 2);
    let d = n2.auto_assign("n2-c", &attrs("d"), 1, 0).await;
    assert!(
        matches!(d, Err(IpamError::PoolsExhausted { .. })),
        "the pool is full: {d:?}"
    );
    n1.release_handle("n1-a").await.unwrap();
    let e = n2.auto_assign("n2-c", &attrs("d"), 1, 0).await.unwrap();
    assert!(e.v4[0].borrowed, "borrowed from n1's block");
    let err = n2
        .auto_assign("big", &attrs("x"), 100, 0)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("p (100.64.0.0/28)"),
        "the error names the pool tried: {err}"
    );
    assert_eq!(
        holders(&ds).await.len(),
        5,
        "the failed allocation gave back what it took"
    );
}

#[tokio::test]
async fn strict_affinity_and_max_blocks_per_host_stop_a_node_with_a_clear_error() {
    let ds = memory();
    add_pool(&ds, "p", "100.64.0.0/24", 30).await;
    set_config(
        &ds,
        IPAMConfigSpec {
            strict_affinity: true,
            auto_allocate_blocks: true,
            max_blocks_per_host: 1,
        },
    )
    .await;
    let n1 = node(&ds, "n1");
    n1.auto_assign("a", &attrs("a"), 4, 0).await.unwrap();
    let err = n1.auto_assign("b", &attrs("b"), 1, 0).await.unwrap_err();
    assert!(
        matches!(err, IpamError::NodeAtMaxBlocks { max: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("\"n1\""), "{err}");
    // Without strict affinity the node may borrow, but there is nothing to borrow from.
    set_config(
        &ds,
        IPAMConfigSpec {
            strict_affinity: false,
            auto_allocate_blocks: true,
            max_blocks_per_host: 1,
        },
    )
    .await;
    let err = node(&ds, "n1")
        .auto_assign("c", &attrs("c"), 1, 0)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("maxBlocksPerHost (1)"),
        "the error says why no block was claimed: {err}"
    );
}

#[tokio::test]
async fn assigning_a_given_address_names_the_holder_and_refuses_addresses_outside_pools() {
    let ds = memory();
    add_pool(&ds, "p", "100.64.0.0/24", 26).await;
    let n1 = node(&ds, "n1");
    let a = n1
        .assign_ip(ip("100.64.0.77"), "h1", &attrs("a"))
        .await
        .unwrap();
    assert_eq!(a.block, "100.64.0.64/26".parse().unwrap());
    assert!(!a.borrowed, "the block was claimed for the node");
    let err = n1
        .assign_ip(ip("100.64.0.77"), "h2", &attrs("b"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "address 100.64.0.77 is already in use by handle \"h1\""
    );
    let err = n1
        .assign_ip(ip("100.99.0.1"), "h3", &attrs("c"))
        .await
        .unwrap_err();
    assert!(matches!(err, IpamError::NotInAnyPool { .. }), "{err}");
    // The annotation path: exact addresses.
    let got = n1
        .auto_assign_with(&AssignArgs {
            handle: "h4".into(),
            attrs: attrs("d"),
            request: PodRequest {
                ip_addrs: Some(vec![ip("100.64.0.200")]),
                ..Default::default()
            },
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(got.ips(), [ip("100.64.0.200")]);
    assert_eq!(handles(&ds).await.len(), 2, "h2 and h3 left no record");
}

#[tokio::test]
async fn release_by_ip_frees_the_address_and_updates_its_handle() {
    let ds = memory();
    add_pool(&ds, "p", "100.64.0.0/24", 26).await;
    let n1 = node(&ds, "n1");
    let got = n1.auto_assign("h", &attrs("a"), 2, 0).await.unwrap();
    let freed = n1.release_ips(&[got.v4[0].ip]).await.unwrap();
    assert_eq!(freed[0].handle.as_deref(), Some("h"));
    let rec = &handles(&ds).await[0];
    assert_eq!(rec.spec.total(), 1);
    n1.release_ips(&[got.v4[1].ip]).await.unwrap();
    assert!(handles(&ds).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_pods_starting_together_share_block_writes() {
    // Writes take a round trip, as to etcd: while one is in flight the next requests queue up.
    // (Instant writes could let each request find the block free and write alone.)
    let store = margay_datastore::Memory::new();
    store.set_write_latency(Duration::from_millis(2));
    let ds: Arc<dyn Datastore> = Arc::new(store);
    add_pool(&ds, "p", "100.64.0.0/20", 26).await;
    let n1 = node(&ds, "n1");
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let n1 = n1.clone();
            tokio::spawn(async move {
                n1.auto_assign(&format!("pod-{i}"), &attrs("p"), 1, 0)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut ips = HashSet::new();
    for t in tasks {
        assert!(ips.insert(t.await.unwrap().v4[0].ip));
    }
    assert_eq!(ips.len(), 100);
    let (writes, ops) = n1.ipam().group_commit_stats();
    assert!(ops >= 100, "every allocation went through group commit");
    assert!(
        writes < 50,
        "{writes} block writes carried {ops} requests: group commit should batch"
    );
    assert_eq!(
        blocks(&ds).await.len(),
        2,
        "100 pods need two /26 blocks, no more"
    );
}

#[tokio::test]
async fn a_restarted_node_finishes_or_undoes_half_done_claims() {
    let ds = memory();
    add_pool(&ds, "p", "100.64.0.0/24", 26).await;
    let affs = Typed::<BlockAffinity>::new(Arc::clone(&ds));
    let blocks_t = Typed::<IPAMBlock>::new(Arc::clone(&ds));
    // Crashed after the block was created: finished.
    let done: ipnet::IpNet = "100.64.0.0/26".parse().unwrap();
    affs.create(&BlockAffinity::pending("n1", &done))
        .await
        .unwrap();
    blocks_t
        .create(&IPAMBlock::empty(done, Some("n1")).unwrap())
        .await
        .unwrap();
    // Crashed before the block was created: undone.
    let half: ipnet::IpNet = "100.64.0.64/26".parse().unwrap();
    affs.create(&BlockAffinity::pending("n1", &half))
        .await
        .unwrap();
    let n1 = node(&ds, "n1");
    let got = n1.auto_assign("h", &attrs("a"), 1, 0).await.unwrap();
    assert_eq!(got.v4[0].block, done);
    let (all, _) = affs.list(None).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].spec.state, AffinityState::Confirmed);
}

#[tokio::test]
async fn empty_blocks_are_given_up_beyond_a_reserve_of_one() {
    let ds = memory();
    add_pool(&ds, "p", "100.64.0.0/24", 29).await;
    let n1 = node(&ds, "n1");
    n1.auto_assign("a", &attrs("a"), 8, 0).await.unwrap();
    n1.auto_assign("b", &attrs("b"), 8, 0).await.unwrap();
    n1.auto_assign("c", &attrs("c"), 8, 0).await.unwrap();
    assert_eq!(blocks(&ds).await.len(), 3);
    for h in ["a", "b", "c"] {
        n1.release_handle(h).await.unwrap();
    }
    assert_eq!(
        blocks(&ds).await.len(),
        1,
        "one empty block kept in reserve"
    );
    let affs = Typed::<BlockAffinity>::new(Arc::clone(&ds));
    assert_eq!(affs.list(None).await.unwrap().0.len(), 1);
}

#[tokio::test]
async fn release_node_frees_empty_blocks_and_keeps_those_in_use() {
    let ds = memory();
    add_pool(&ds, "p", "100.64.0.0/24", 29).await;
    let ipam = Ipam::with_options(
        Arc::clone(&ds),
        margay_ipam::Options {
            reserve_blocks: 8,
            ..Default::default()
        },
    );
    let n1 = ipam.node("n1", BTreeMap::new());
    n1.auto_assign("a", &attrs("a"), 8, 0).await.unwrap();
    n1.auto_assign("b", &attrs("b"), 1, 0).await.unwrap();
    n1.release_handle("a").await.unwrap();
    let r = ipam.release_node("n1").await.unwrap();
    assert_eq!(r.released_blocks.len(), 1);
    assert_eq!(r.blocks_in_use.len(), 1);
    assert_eq!(r.blocks_in_use[0].1, 1);
    n1.release_handle("b").await.unwrap();
    let r = ipam.release_node("n1").await.unwrap();
    assert_eq!(r.released_blocks.len(), 1);
    assert!(blocks(&ds).await.is_empty());
    assert!(ipam.release_node("n1").await.unwrap() == Default::default());
}

#[tokio::test]
async fn leaks_are_confirmed_after_a_grace_period_and_released() {
    let ds = memory();
    add_pool(&ds, "p", "100.64.0.0/24", 26).await;
    let ipam = Ipam::new(Arc::clone(&ds));
    let n1 = ipam.node("n1", BTreeMap::new());
    let live = n1.auto_assign("live", &attrs("a"), 1, 0).await.unwrap();
    let dead = n1.auto_assign("dead", &attrs("b"), 1, 0).await.unwrap();
    let alive = Live {
        handles: ["live".to_string()].into(),
        nodes: Some(["n1".to_string()].into()),
    };
    let mut tracker = LeakTracker::new(Duration::from_secs(60));
    let t0 = Instant::now();
    let r = ipam.check(&alive, &mut tracker, t0).await.unwrap();
    assert!(r.confirmed.is_empty());
    assert_eq!(r.suspected.len(), 1);
    let r = ipam
        .check(&alive, &mut tracker, t0 + Duration::from_secs(61))
        .await
        .unwrap();
    assert_eq!(r.problems, Vec::<String>::new());
    assert!(matches!(
        &r.confirmed[..],
        [Finding::LeakedAddress { ip, handle: Some(h), .. }] if *ip == dead.v4[0].ip && h == "dead"
    ));
    let out = ipam.release_leaks(&r).await.unwrap();
    assert_eq!(out.released.len(), 1);
    let left = holders(&ds).await;
    assert_eq!(left.keys().copied().collect::<Vec<_>>(), live.ips());
    assert_eq!(handles(&ds).await.len(), 1);
    let r = ipam
        .check(&alive, &mut tracker, t0 + Duration::from_secs(62))
        .await
        .unwrap();
    assert!(r.is_clean(), "{r:?}");
}

#[tokio::test]
async fn usage_counts_pools_blocks_and_borrowed_addresses() {
    let ds = memory();
    add_pool(&ds, "p", "100.64.0.0/29", 30).await;
    let ipam = Ipam::new(Arc::clone(&ds));
    let n1 = ipam.node("n1", BTreeMap::new());
    let n2 = ipam.node("n2", BTreeMap::new());
    n1.auto_assign("a", &attrs("a"), 3, 0).await.unwrap();
    n2.auto_assign("b", &attrs("b"), 4, 0).await.unwrap();
    let got = n2.auto_assign("c", &attrs("c"), 1, 0).await.unwrap();
    assert!(got.v4[0].borrowed);
    let u = ipam.usage().await.unwrap();
    assert_eq!(u.pools.len(), 1);
    assert_eq!(u.pools[0].capacity, 8);
    assert_eq!(u.pools[0].blocks, 2);
    assert_eq!(u.pools[0].in_use, 8);
    assert_eq!(u.blocks.iter().map(|b| b.borrowed).sum::<usize>(), 1);
    let borrowed = margay_ipam::borrowed_by("n2", &blocks(&ds).await);
    assert_eq!(borrowed, got.ips());
}

mod interleavings {
    //! Any interleaving of claims, allocations and releases by several nodes, with injected CAS
    //! conflicts and crashes between steps, never gives one address to two handles; after all
    //! releases and a check/release_leaks, nothing is leaked.

    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Action {
        Alloc {
            node: usize,
            v4: usize,
            v6: usize,
        },
        Assign {
            node: usize,
            ordinal: u8,
        },
        Release {
            pick: usize,
            via: usize,
        },
        ReleaseIp {
            pick: usize,
            via: usize,
        },
        Restart {
            node: usize,
        },
        /// A leak check and release, after the round's other actions, with faults on: it must
        /// never free an address a live handle holds.
        CheckLeaks,
    }

    const NODES: usize = 3;

    fn action() -> impl Strategy<Value = Action> {
        prop_oneof![
            4 => (0..NODES, 0usize..3, 0usize..2).prop_map(|(node, v4, v6)| Action::Alloc { node, v4, v6 }),
            1 => (0..NODES, any::<u8>()).prop_map(|(node, ordinal)| Action::Assign { node, ordinal }),
            3 => (any::<usize>(), 0..NODES).prop_map(|(pick, via)| Action::Release { pick, via }),
            1 => (any::<usize>(), 0..NODES).prop_map(|(pick, via)| Action::ReleaseIp { pick, via }),
            1 => (0..NODES).prop_map(|node| Action::Restart { node }),
            1 => Just(Action::CheckLeaks),
        ]
    }

    #[derive(Debug, Clone)]
    struct Case {
        rounds: Vec<Vec<Action>>,
        conflict_every: u64,
        crash_every: u64,
        strict: bool,
        max_blocks: u32,
        seed: u64,
    }

    fn case() -> impl Strategy<Value = Case> {
        (
            proptest::collection::vec(proptest::collection::vec(action(), 1..5), 1..25),
            prop_oneof![Just(0u64), Just(3), Just(5), Just(7)],
            prop_oneof![Just(0u64), Just(4), Just(9), Just(13)],
            any::<bool>(),
            0u32..3,
            any::<u64>(),
        )
            .prop_map(
                |(rounds, conflict_every, crash_every, strict, max_blocks, seed)| Case {
                    rounds,
                    conflict_every,
                    crash_every,
                    strict,
                    max_blocks,
                    seed,
                },
            )
    }

    fn allocator(ds: &Arc<Faulty>, node: usize) -> NodeAllocator {
        let ds: Arc<dyn Datastore> = Arc::clone(ds) as Arc<dyn Datastore>;
        let opts = margay_ipam::Options {
            retry: margay_ipam::Retry {
                attempts: 6,
                backoff: Duration::from_micros(10),
                max_backoff: Duration::from_micros(100),
            },
            cache_ttl: Duration::from_secs(3600),
            reserve_blocks: 1,
        };
        Ipam::with_options(ds, opts).node(&format!("n{node}"), BTreeMap::new())
    }

    enum Done {
        Alloc(String, Result<Vec<IpAddr>, IpamError>),
        Release(String, bool),
        ReleaseIp(String, IpAddr, bool),
        Nothing,
    }

    async fn run(case: Case) -> Result<(), TestCaseError> {
        let mem = memory();
        add_pool(&mem, "v4", "100.64.0.0/27", 29).await; // 4 blocks of 8
        add_pool(&mem, "v6", "fd00:1::/123", 125).await; // 4 blocks of 8
        set_config(
            &mem,
            IPAMConfigSpec {
                strict_affinity: case.strict,
                auto_allocate_blocks: true,
                max_blocks_per_host: case.max_blocks,
            },
        )
        .await;
        let ds = Arc::new(Faulty::new(Arc::clone(&mem), case.seed));
        let mut nodes: Vec<NodeAllocator> = (0..NODES).map(|n| allocator(&ds, n)).collect();
        // The model: what each handle was told it holds, and handles whose state is unknown
        // (a failed allocation or release: the CNI plugin would call DEL again).
        let mut held: BTreeMap<String, BTreeSet<IpAddr>> = BTreeMap::new();
        let mut dirty: BTreeSet<String> = BTreeSet::new();
        let mut next_handle = 0;
        ds.set_faults(case.conflict_every, case.crash_every);
        for round in &case.rounds {
            let mut futs: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = Done>>>> =
                Vec::new();
            let mut taken_this_round = BTreeSet::new();
            for a in round {
                match a.clone() {
                    Action::Alloc { node, v4, v6 } => {
                        next_handle += 1;
                        let h = format!("h{next_handle}");
                        let n = nodes[node].clone();
                        futs.push(Box::pin(async move {
                            let r = n.auto_assign(&h, &attrs(&h), v4, v6).await;
                            Done::Alloc(h, r.map(|a| a.ips()))
                        }));
                    }
                    Action::Assign { node, ordinal } => {
                        next_handle += 1;
                        let h = format!("h{next_handle}");
                        let n = nodes[node].clone();
                        let ip = IpAddr::V4(std::net::Ipv4Addr::new(100, 64, 0, ordinal % 32));
                        futs.push(Box::pin(async move {
                            let r = n.assign_ip(ip, &h, &attrs(&h)).await;
                            Done::Alloc(h, r.map(|a| vec![a.ip]))
                        }));
                    }
                    Action::Release { pick, via } => {
                        let all: Vec<String> = held.keys().chain(&dirty).cloned().collect();
                        if all.is_empty() {
                            continue;
                        }
                        let h = all[pick % all.len()].clone();
                        if !taken_this_round.insert(h.clone()) {
                            continue;
                        }
                        let n = nodes[via].clone();
                        futs.push(Box::pin(async move {
                            let ok = n.release_handle(&h).await.is_ok();
                            Done::Release(h, ok)
                        }));
                    }
                    Action::ReleaseIp { pick, via } => {
                        let all: Vec<(String, IpAddr)> = held
                            .iter()
                            .flat_map(|(h, ips)| ips.iter().map(move |ip| (h.clone(), *ip)))
                            .collect();
                        if all.is_empty() {
                            continue;
                        }
                        let (h, ip) = all[pick % all.len()].clone();
                        if !taken_this_round.insert(h.clone()) {
                            continue;
                        }
                        let n = nodes[via].clone();
                        futs.push(Box::pin(async move {
                            let ok = n.release_ips(&[ip]).await.is_ok();
                            Done::ReleaseIp(h, ip, ok)
                        }));
                    }
                    Action::Restart { node } => {
                        nodes[node] = allocator(&ds, node);
                        futs.push(Box::pin(async { Done::Nothing }));
                    }
                    Action::CheckLeaks => {}
                }
            }
            let results = futures::future::join_all(futs).await;
            // Releases first: an address freed in this round may be handed out in it too.
            for r in &results {
                match r {
                    Done::Release(h, ok) => {
                        held.remove(h);
                        if *ok {
                            dirty.remove(h);
                        } else {
                            dirty.insert(h.clone());
                        }
                    }
                    Done::ReleaseIp(h, ip, ok) => {
                        if *ok {
                            if let Some(ips) = held.get_mut(h) {
                                ips.remove(ip);
                            }
                        } else {
                            held.remove(h);
                            dirty.insert(h.clone());
                        }
                    }
                    _ => {}
                }
            }
            for r in results {
                if let Done::Alloc(h, res) = r {
                    match res {
                        Ok(ips) => {
                            for ip in &ips {
                                for (other, theirs) in &held {
                                    prop_assert!(
                                        !theirs.contains(ip),
                                        "{ip} given to {h} while {other} holds it"
                                    );
                                }
                            }
                            held.insert(h, ips.into_iter().collect());
                        }
                        Err(_) => {
                            dirty.insert(h);
                        }
                    }
                }
            }
            if round.iter().any(|a| matches!(a, Action::CheckLeaks)) {
                // Handles whose fate is unknown are not live: the leak check may free them.
                let live = Live {
                    handles: held.keys().cloned().collect(),
                    nodes: Some((0..NODES).map(|n| format!("n{n}")).collect()),
                };
                let ipam = nodes[0].ipam().clone();
                let mut tracker = LeakTracker::new(Duration::ZERO);
                let t0 = Instant::now();
                if ipam.check(&live, &mut tracker, t0).await.is_ok()
                    && let Ok(report) = ipam
                        .check(&live, &mut tracker, t0 + Duration::from_millis(1))
                        .await
                {
                    let _ = ipam.release_leaks(&report).await;
                }
            }
            // The store agrees with what every handle was told.
            let holders = holders(&mem).await;
            for (h, ips) in &held {
                for ip in ips {
                    prop_assert_eq!(holders.get(ip), Some(h), "{} of {}", ip, h);
                }
                let stored = holders.values().filter(|x| *x == h).count();
                prop_assert_eq!(stored, ips.len(), "{} holds more than it was told", h);
            }
            for b in blocks(&mem).await {
                prop_assert_eq!(margay_ipam::block::inconsistency(&b.spec), None);
            }
            assert_handle_records_complete(&mem).await;
        }
        // Everything is released, as the CNI plugin and a leak check would.
        ds.set_faults(0, 0);
        for h in held.keys().chain(&dirty) {
            let freed = nodes[0].release_handle(h).await;
            prop_assert!(freed.is_ok(), "{:?}", freed);
        }
        let ipam = Ipam::new(Arc::clone(&mem));
        let live = Live {
            handles: HashSet::new(),
            nodes: Some((0..NODES).map(|n| format!("n{n}")).collect()),
        };
        let mut tracker = LeakTracker::new(Duration::ZERO);
        let t0 = Instant::now();
        ipam.check(&live, &mut tracker, t0).await.unwrap();
        let report = ipam
            .check(&live, &mut tracker, t0 + Duration::from_millis(1))
            .await
            .unwrap();
        prop_assert!(report.problems.is_empty(), "{:?}", report.problems);
        let leaked: Vec<_> = report
            .confirmed
            .iter()
            .filter(|f| matches!(f, Finding::LeakedAddress { .. }))
            .collect();
        prop_assert!(leaked.is_empty(), "release by handle left {:?}", leaked);
        ipam.release_leaks(&report).await.unwrap();
        prop_assert!(holders(&mem).await.is_empty());
        prop_assert!(handles(&mem).await.is_empty());
        let after = ipam
            .check(&live, &mut LeakTracker::new(Duration::ZERO), t0)
            .await
            .unwrap();
        prop_assert!(after.is_clean(), "{:?}", after);
        Ok(())
    }

    /// Found by the property test: a release through a process whose cached copy of the block
    /// was stale (another node had borrowed since) found nothing to free and deleted the record.
    #[test]
    fn a_release_through_a_stale_cached_block_still_frees_the_address() {
        let case = Case {
            rounds: vec![
                vec![
                    Action::Alloc {
                        node: 0,
                        v4: 0,
                        v6: 1,
                    },
                    Action::Alloc {
                        node: 1,
                        v4: 1,
                        v6: 0,
                    },
                ],
                vec![Action::Release { pick: 0, via: 0 }],
                vec![Action::Alloc {
                    node: 1,
                    v4: 0,
                    v6: 1,
                }],
            ],
            conflict_every: 0,
            crash_every: 0,
            strict: false,
            max_blocks: 1,
            seed: 0,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(run(case)).unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        #[test]
        fn no_address_is_given_twice_and_nothing_leaks(case in case()) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(run(case))?;
        }
    }
}
