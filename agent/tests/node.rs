//! `margay-node` as a process in a node namespace, with real etcd in an infra namespace: a pod
//! set up through the local API is reachable, and an agent restart leaves its routes untouched.

mod common;

use std::time::{Duration, Instant};

use common::*;
use margay_agent::localapi::proto::*;
use margay_api::{IPPool, IPPoolSpec};
use margay_datastore::Typed;
use margay_harness::fixtures::Etcd as EtcdServer;
use margay_harness::{Daemon, Netns};

/// Creates the pool `cidr` through etcd, from inside `ns` (which reaches etcd).
pub fn create_pool(ns: &Netns, endpoint: &str, cidr: &str) {
    let (ep, cidr) = (endpoint.to_owned(), cidr.to_owned());
    ns.block_on(async move {
        Typed::<IPPool>::new(connect(ep).await.unwrap())
            .create(&IPPool::new("default-ipv4", IPPoolSpec::new(cidr)))
            .await
            .unwrap();
    })
    .unwrap();
}

#[test]
fn a_pod_is_reachable_through_the_agent_and_survives_an_agent_restart() {
    let infra = Netns::with_tag("nd-infra").expect("namespace (run as root)");
    let node = Netns::with_tag("nd-node").unwrap();
    let pod = Netns::with_tag("nd-pod").unwrap();
    let net = |s: &str| s.parse().unwrap();
    infra
        .connect(
            "eth0",
            &[net("198.18.0.254/24")],
            &node,
            "eth0",
            &[net("198.18.0.11/24")],
        )
        .unwrap();
    node.exec(&["ip", "route", "add", "default", "via", "198.18.0.254"])
        .unwrap();
    let etcd = EtcdServer::start_in(&infra, "198.18.0.254".parse().unwrap())
        .expect("etcd in the infra namespace");
    create_pool(&node, &etcd.endpoint(), "100.64.0.0/16");

    let dir = tempfile::tempdir().unwrap();
    let config = agent_config(dir.path(), "node-1", &etcd.endpoint());
    let mut first = start_agent(&node, &config, 1);
    let client = client(&config);
    wait_ready(&client, &first);

    let ip = wire_pod(&client, &node, &pod, "web-0", "mgytestnode001");
    // Reachable as soon as endpoint_up returned: no waiting.
    node.exec(&["ping", "-c", "1", "-W", "2", &ip])
        .expect("node pings the pod right after endpoint_up");
    infra
        .exec(&["ip", "route", "add", "100.64.0.0/16", "via", "198.18.0.11"])
        .unwrap();
    infra
        .exec(&["ping", "-c", "1", "-W", "2", &ip])
        .expect("a host beyond the node reaches the pod");

    // The block's blackhole arrives from the affinity watch.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !routes(&node).contains("blackhole 100.64.") {
        assert!(
            Instant::now() < deadline,
            "no blackhole for the node's block: {}\n{}",
            routes(&node),
            first.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = routes(&node);
    assert!(
        before.contains(&format!("{ip} dev mgytestnode001")),
        "{before}"
    );

    // Restart: routes stay while the agent is down, and the new agent changes nothing.
    let dirp = dir.path();
    let mut monitor = Daemon::builder("ip-monitor", "ip")
        .args(["monitor", "route"])
        .netns(&node)
        .log_file(dirp.join("monitor.log"))
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    first.stop().unwrap();
    assert_eq!(
        routes(&node),
        before,
        "routes changed when the agent stopped"
    );
    let second = start_agent(&node, &config, 2);
    wait_ready(&client, &second);
    std::thread::sleep(Duration::from_millis(500));
    // Prove the monitor sees changes: one of our own, outside the pod range.
    node.exec(&["ip", "route", "add", "blackhole", "198.18.200.0/24"])
        .unwrap();
    node.exec(&["ip", "route", "del", "blackhole", "198.18.200.0/24"])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !monitor.log().contains("198.18.200.0/24") {
        assert!(
            Instant::now() < deadline,
            "ip monitor saw nothing: {}",
            monitor.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    monitor.stop().unwrap();
    let churn = monitor.log();
    assert!(
        !churn.contains("100.64."),
        "the restarted agent touched pod or block routes:\n{churn}"
    );
    assert_eq!(routes(&node), before);
    node.exec(&["ping", "-c", "1", "-W", "2", &ip])
        .expect("still reachable after the restart");

    // DEL through the restarted agent, which knows the endpoint from the datastore only.
    client
        .endpoint_down(EndpointDown {
            attachment: attachment("web-0"),
        })
        .unwrap();
    client.release("net.web-0").unwrap();
    assert!(
        !routes(&node).contains(&format!("{ip} dev")),
        "{}",
        routes(&node)
    );
    drop(second);
}
