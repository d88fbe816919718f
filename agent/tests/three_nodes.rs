//! The vertical slice: three nodes on one underlay bridge, etcd in an infra namespace, the
//! node-to-node BGP mesh, two pods per node; every pod reaches every other pod over
//! BGP-learned routes, and a removed pod's route disappears.

mod common;

use std::time::Duration;

use common::cluster::*;
use common::*;
use margay_agent::localapi::proto::*;
use margay_api::{IPAMConfig, IPAMConfigSpec, IPPool, IPPoolSpec};
use margay_harness::Netns;

#[test]
fn pods_on_three_nodes_reach_each_other_over_bgp_learned_routes() {
    let mut c = Cluster::new(
        "3n",
        3,
        IPPool::new("default-ipv4", IPPoolSpec::new("100.64.0.0/16")),
        None,
    );
    // The bridge, infra namespace and etcd live as long as `c`.
    let (nodes, clients, dir, endpoint) = (
        std::mem::take(&mut c.nodes),
        std::mem::take(&mut c.clients),
        c.dir.path().to_owned(),
        c.endpoint.clone(),
    );
    let mut agents = std::mem::take(&mut c.agents);

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

    // ... and its /readiness says ready once every mesh session is up.
    wait_for(
        "node-1's /readiness answers 200",
        Duration::from_secs(30),
        || {
            nodes[0]
                .exec(&["curl", "-sf", "http://127.0.0.1:9099/readiness"])
                .is_ok()
        },
        || {
            format!(
                "{:?}",
                nodes[0].exec(&["curl", "-s", "http://127.0.0.1:9099/readiness"])
            )
        },
    );

    // Restarting node-1's agent keeps its learned routes in place: no route of node-1 is
    // deleted or rewritten while the old agent stops and the new one converges.
    let mut monitor = margay_harness::Daemon::builder("ip-monitor", "ip")
        .args(["monitor", "route"])
        .netns(&nodes[0])
        .log_file(dir.join("monitor.log"))
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let before = routes(&nodes[0]);
    agents[0].stop().unwrap();
    let config = dir.join("node-1.toml");
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

#[test]
fn a_borrowed_address_is_announced_as_a_host_route_and_withdrawn_with_its_pod() {
    // A /29 pool of two /30 blocks, one block per node: node-1's fifth pod borrows from node-2.
    let mut spec = IPPoolSpec::new("100.64.5.0/29");
    spec.block_size = Some(30);
    let config = IPAMConfig::new(
        margay_api::ipam::IPAM_CONFIG_NAME,
        IPAMConfigSpec {
            strict_affinity: false,
            auto_allocate_blocks: true,
            max_blocks_per_host: 1,
        },
    );
    let c = Cluster::new("bw", 2, IPPool::new("tiny", spec), Some(config));
    // node-2 claims its block first.
    let p2 = Netns::with_tag("bw-p2").unwrap();
    let ip2 = wire_pod(&c.clients[1], &c.nodes[1], &p2, "pod-2", "mgytestbw2pod00");
    let mut pods = Vec::new();
    for j in 0..5 {
        let ns = Netns::with_tag(&format!("bw-p1{j}")).unwrap();
        let ip = wire_pod(
            &c.clients[0],
            &c.nodes[0],
            &ns,
            &format!("pod-1-{j}"),
            &format!("mgytestbw1pod{j}0"),
        );
        pods.push((ns, ip));
    }
    let block2 = routes(&c.nodes[1])
        .lines()
        .find(|l| l.starts_with("blackhole"))
        .map(str::to_owned)
        .expect("node-2's block");
    let block2 = block2.split_whitespace().nth(1).unwrap().to_owned();
    let b2: ipnet::IpNet = block2.parse().unwrap();
    let (borrower_ns, borrowed) = pods
        .iter()
        .find(|(_, ip)| b2.contains(&ip.parse::<std::net::IpAddr>().unwrap()))
        .expect("one of node-1's pods has an address of node-2's block");
    wait_for(
        "node-2 learns the borrowed /32 from node-1",
        Duration::from_secs(60),
        || routes(&c.nodes[1]).contains(&format!("{borrowed} via 198.18.0.11")),
        || {
            format!(
                "{}\nnode-1:\n{}",
                routes(&c.nodes[1]),
                c.agents[0].log_tail(40)
            )
        },
    );
    borrower_ns
        .exec(&["ping", "-c", "1", "-W", "3", &ip2])
        .expect("the borrowed pod reaches node-2's pod");
    p2.exec(&["ping", "-c", "1", "-W", "3", borrowed])
        .expect("node-2's pod reaches the borrowed pod");

    let name = pods
        .iter()
        .position(|(_, ip)| ip == borrowed)
        .map(|j| format!("pod-1-{j}"))
        .unwrap();
    c.clients[0]
        .endpoint_down(EndpointDown {
            attachment: attachment(&name),
        })
        .unwrap();
    c.clients[0].release(&format!("net.{name}")).unwrap();
    wait_for(
        "the borrowed /32 disappears from node-2",
        Duration::from_secs(60),
        || !routes(&c.nodes[1]).contains(&format!("{borrowed} via")),
        || routes(&c.nodes[1]),
    );
}
