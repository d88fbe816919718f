//! The vertical slice: three nodes on one underlay bridge, etcd in an infra namespace, the
//! node-to-node BGP mesh, two pods per node; every pod reaches every other pod over
//! BGP-learned routes, and a removed pod's route disappears.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use margay_agent::localapi::proto::*;
use margay_api::{IPPool, IPPoolSpec};
use margay_datastore::{Datastore, Etcd, EtcdConfig, Typed};
use margay_harness::fixtures::Etcd as EtcdServer;
use margay_harness::{Bridge, Netns};

fn wait_for(
    what: &str,
    timeout: Duration,
    mut ok: impl FnMut() -> bool,
    detail: impl Fn() -> String,
) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "{what} within {timeout:?}:\n{}",
            detail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// (established, not established) sessions in node-1's NodeStatus, read through etcd from `ns`.
fn nodes_status(ns: &Netns, endpoint: String) -> Option<(u32, u32)> {
    ns.block_on(async move {
        let ds: Arc<dyn Datastore> = Arc::new(
            Etcd::connect(&EtcdConfig {
                endpoints: vec![endpoint],
                ..Default::default()
            })
            .await
            .ok()?,
        );
        let s = Typed::<margay_api::NodeStatus>::new(ds)
            .get(None, "node-1")
            .await
            .ok()?;
        let bgp = s.status?.bgp?;
        Some((bgp.number_established, bgp.number_not_established))
    })
    .ok()
    .flatten()
}

#[test]
fn pods_on_three_nodes_reach_each_other_over_bgp_learned_routes() {
    let net = |s: &str| s.parse().unwrap();
    let bridge = Bridge::new().expect("namespace (run as root)");
    let infra = Netns::with_tag("3n-infra").unwrap();
    bridge
        .attach(&infra, "eth0", &[net("198.18.0.254/24")])
        .unwrap();
    let etcd = EtcdServer::start_in(&infra, "198.18.0.254".parse().unwrap()).expect("etcd");
    let endpoint = etcd.endpoint();

    let nodes: Vec<Netns> = (1..=3)
        .map(|i| Netns::with_tag(&format!("3n-node{i}")).unwrap())
        .collect();
    for (i, n) in nodes.iter().enumerate() {
        bridge
            .attach(n, "eth0", &[net(&format!("198.18.0.{}/24", 11 + i))])
            .unwrap();
        n.exec(&["ip", "route", "add", "default", "via", "198.18.0.254"])
            .unwrap();
    }
    let ep = endpoint.clone();
    nodes[0]
        .block_on(async move {
            let ds: Arc<dyn Datastore> = Arc::new(
                Etcd::connect(&EtcdConfig {
                    endpoints: vec![ep],
                    ..Default::default()
                })
                .await
                .unwrap(),
            );
            Typed::<IPPool>::new(ds)
                .create(&IPPool::new(
                    "default-ipv4",
                    IPPoolSpec::new("100.64.0.0/16"),
                ))
                .await
                .unwrap();
        })
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut agents = Vec::new();
    let mut clients = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let config = agent_config(dir.path(), &format!("node-{}", i + 1), &endpoint);
        let a = start_agent(n, &config, 1);
        let c = client(&config);
        wait_ready(&c, &a);
        agents.push(a);
        clients.push(c);
    }

    let mut pods = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        for j in 0..2 {
            let ns = Netns::with_tag(&format!("3n-p{i}{j}")).unwrap();
            let name = format!("pod-{i}-{j}");
            let ip = wire_pod(&clients[i], n, &ns, &name, &format!("mgytest{i}{j}pod000"));
            pods.push((ns, ip, i, name));
        }
    }

    // Every node learns the other nodes' blocks over BGP.
    for (i, n) in nodes.iter().enumerate() {
        wait_for(
            &format!("node-{} learns two remote blocks", i + 1),
            Duration::from_secs(60),
            || {
                routes(n)
                    .lines()
                    .filter(|l| l.contains(" via 198.18.0."))
                    .count()
                    >= 2
            },
            || format!("{}\n{}", routes(n), agents[i].log_tail(20)),
        );
    }

    for (from, _, fi, _) in &pods {
        for (_, ip, ti, _) in &pods {
            let out = from.exec(&["ping", "-c", "1", "-W", "3", ip]);
            assert!(
                out.is_ok(),
                "pod on node-{} cannot reach {ip} on node-{}: {:?}",
                fi + 1,
                ti + 1,
                out.err()
            );
        }
    }

    // Each node's Margay routes: its two pods, its block's blackhole, the two remote blocks.
    for (i, n) in nodes.iter().enumerate() {
        let r = routes(n);
        let mine: Vec<&String> = pods.iter().filter(|p| p.2 == i).map(|p| &p.1).collect();
        for ip in &mine {
            assert!(
                r.contains(&format!("{ip} dev mgytest")),
                "node-{}: {r}",
                i + 1
            );
        }
        assert_eq!(
            r.lines().filter(|l| l.starts_with("blackhole")).count(),
            1,
            "node-{}: {r}",
            i + 1
        );
        assert_eq!(
            r.lines().count(),
            5,
            "node-{} has exactly its routes: {r}",
            i + 1
        );
    }

    // Each agent publishes its sessions in its NodeStatus (what `margayctl node status` reads).
    let established = || nodes_status(&nodes[0], endpoint.clone());
    wait_for(
        "node-1's NodeStatus shows 2 established mesh sessions",
        Duration::from_secs(40),
        || established() == Some((2, 0)),
        || format!("{:?}", established()),
    );

    // Restarting node-1's agent keeps its learned routes in place: no route of node-1 is
    // deleted or rewritten while the old agent stops and the new one converges.
    let mut monitor = margay_harness::Daemon::builder("ip-monitor", "ip")
        .args(["monitor", "route"])
        .netns(&nodes[0])
        .log_file(dir.path().join("monitor.log"))
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let before = routes(&nodes[0]);
    agents[0].stop().unwrap();
    let config = dir.path().join("node-1.toml");
    agents[0] = start_agent(&nodes[0], &config, 2);
    wait_ready(&clients[0], &agents[0]);
    wait_for(
        "node-2 learns node-1's block again",
        Duration::from_secs(60),
        || routes(&nodes[1]).contains("via 198.18.0.11"),
        || routes(&nodes[1]),
    );
    pods[2]
        .0
        .exec(&["ping", "-c", "1", "-W", "3", &pods[0].1])
        .expect("node-2's pod reaches node-1's pod after the restart");
    monitor.stop().unwrap();
    assert!(
        !monitor.log().contains("100.64."),
        "node-1's routes churned during its agent's restart:\n{}",
        monitor.log()
    );
    assert_eq!(routes(&nodes[0]), before);

    // A removed pod's route goes away, and the others still reach each other.
    let (_, gone_ip, _, gone_name) = &pods[0];
    clients[0]
        .endpoint_down(EndpointDown {
            attachment: attachment(gone_name),
        })
        .unwrap();
    clients[0].release(&format!("net.{gone_name}")).unwrap();
    assert!(
        !routes(&nodes[0]).contains(&format!("{gone_ip} dev")),
        "{}",
        routes(&nodes[0])
    );
    pods[1]
        .0
        .exec(&["ping", "-c", "1", "-W", "3", &pods[5].1])
        .expect("remaining pods still reach each other");
}
