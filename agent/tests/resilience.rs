//! What the agent does when the world misbehaves: the datastore goes away for 30 s (the
//! dataplane keeps its state, no route churns, no ping is lost, the agent reconnects), and
//! someone tampers with its routes and veth sysctls (repaired within the refresh interval, which
//! AgentConfiguration changes live; the repairs are counted in /metrics).

mod common;

use std::time::Duration;

use common::cluster::*;
use common::*;
use margay_api::{AgentConfiguration, AgentConfigurationSpec};
use margay_datastore::Typed;
use margay_harness::{Daemon, Netns};

fn monitor(ns: &Netns, dir: &std::path::Path, name: &str) -> Daemon {
    let m = Daemon::builder("ip-monitor", "ip")
        .args(["monitor", "route"])
        .netns(ns)
        .log_file(dir.join(format!("{name}.monitor.log")))
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    m
}

#[test]
fn a_datastore_outage_of_30_s_churns_no_route_and_loses_no_ping() {
    let mut c = Cluster::new("out", 2, default_pool(), None);
    let pods = c.pods("out", 2);
    wait_for(
        "node-1 learns node-2's block",
        Duration::from_secs(60),
        || routes(&c.nodes[0]).contains("via 198.18.0.12"),
        || routes(&c.nodes[0]),
    );
    let dir = c.dir.path().to_owned();
    let mut monitors: Vec<Daemon> = c
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| monitor(n, &dir, &format!("node-{i}")))
        .collect();
    let before: Vec<String> = c.nodes.iter().map(routes).collect();

    wait_answered(&pods[0].0, &pods[1].1);
    // Pings every 200 ms for the whole outage, from a thread.
    let target = pods[1].1.clone();
    let pinger = pods[0].0.clone();
    let pings = std::thread::spawn(move || {
        pinger.exec(&["ping", "-i", "0.2", "-c", "200", "-W", "1", &target])
    });
    std::thread::sleep(Duration::from_secs(3));
    c.etcd
        .restart_after(Duration::from_secs(30))
        .expect("etcd comes back");
    let out = pings
        .join()
        .unwrap()
        .expect("every ping is answered through the outage");
    assert!(out.stdout.contains(" 0% packet loss"), "{}", out.stdout);

    for (i, m) in monitors.iter_mut().enumerate() {
        m.stop().unwrap();
        assert!(
            !m.log().contains("100.64."),
            "node-{}'s routes churned during the outage:\n{}",
            i + 1,
            m.log()
        );
        assert_eq!(routes(&c.nodes[i]), before[i]);
    }
    // The agents reconnected: a new pod gets an address and is reachable from the other node.
    let late = Netns::with_tag("out-late").unwrap();
    let ip = wire_pod(
        &c.clients[0],
        &c.nodes[0],
        &late,
        "pod-late",
        "mgytestoutlate0",
    );
    pods[1]
        .0
        .exec(&["ping", "-c", "1", "-W", "3", &ip])
        .expect("a pod created after the outage is reachable from node-2");
}

#[test]
fn tampered_routes_and_sysctls_are_repaired_at_the_interval_set_live_in_agent_configuration() {
    let c = Cluster::new("tmp", 1, default_pool(), None);
    let pod = Netns::with_tag("tmp-pod").unwrap();
    let veth = "mgytesttmppod00";
    let ip = wire_pod(&c.clients[0], &c.nodes[0], &pod, "pod-0", veth);
    let node = &c.nodes[0];
    let proxy_arp = format!("/proc/sys/net/ipv4/conf/{veth}/proxy_arp");
    let read_proxy_arp = || {
        node.run(|| std::fs::read_to_string(&proxy_arp))
            .unwrap()
            .unwrap()
    };
    assert_eq!(read_proxy_arp().trim(), "1");

    // The built-in refresh interval is 90 s; make it 1 s while the agent runs.
    with_datastore(node, &c.endpoint, |ds| {
        Box::pin(async move {
            let spec = AgentConfigurationSpec {
                route_refresh_interval: Some("1s".into()),
                ..Default::default()
            };
            Typed::<AgentConfiguration>::new(ds)
                .create(&AgentConfiguration::new("default", spec))
                .await
                .unwrap();
        })
    });
    node.exec(&["ip", "route", "del", &format!("{ip}/32")])
        .unwrap();
    node.run(|| std::fs::write(&proxy_arp, "0\n"))
        .unwrap()
        .unwrap();
    wait_for(
        "the pod's route and its veth's proxy_arp are repaired",
        Duration::from_secs(15),
        || routes(node).contains(&format!("{ip} dev {veth}")) && read_proxy_arp().trim() == "1",
        || format!("{}\n{}", routes(node), c.agents[0].log_tail(20)),
    );
    let metrics = node
        .exec(&["curl", "-sf", "http://127.0.0.1:9091/metrics"])
        .expect("metrics are served")
        .stdout;
    for want in [
        "margay_dataplane_repairs_total{driver=\"routes\"}",
        "margay_dataplane_repairs_total{driver=\"sysctls\"}",
        "margay_routes ",
    ] {
        assert!(metrics.contains(want), "no {want} in:\n{metrics}");
    }
    // A foreign route is never touched.
    node.exec(&[
        "ip",
        "route",
        "add",
        "100.64.200.0/24",
        "dev",
        "lo",
        "proto",
        "static",
    ])
    .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        node.exec(&["ip", "route", "show", "100.64.200.0/24"])
            .unwrap()
            .stdout
            .contains("100.64.200.0/24")
    );
}

/// Waits until `from` gets an answer from `to`: a new pod's endpoint is programmed (its
/// policy chains too) a moment after its route, and the loss counted below is the restart's or
/// the outage's, not the pod's first moments.
fn wait_answered(from: &Netns, to: &str) {
    wait_for(
        &format!("{to} answers a ping"),
        Duration::from_secs(30),
        || from.exec(&["ping", "-c", "1", "-W", "1", to]).is_ok(),
        || routes(from),
    );
}

#[test]
fn restarting_an_agent_loses_no_ping_in_either_direction() {
    let mut c = Cluster::new("gr", 2, default_pool(), None);
    let pods = c.pods("gr", 2);
    for (i, other) in [(0, "198.18.0.12"), (1, "198.18.0.11")] {
        wait_for(
            &format!("node-{} learns the other node's block", i + 1),
            Duration::from_secs(60),
            || routes(&c.nodes[i]).contains(&format!("via {other}")),
            || routes(&c.nodes[i]),
        );
    }
    wait_answered(&pods[1].0, &pods[0].1);
    wait_answered(&pods[0].0, &pods[1].1);
    // Pings every 200 ms both ways while node-1's agent stops (SIGTERM) and starts again.
    let ping = |from: &Netns, to: &str| {
        let (from, to) = (from.clone(), to.to_owned());
        std::thread::spawn(move || from.exec(&["ping", "-i", "0.2", "-c", "75", "-W", "1", &to]))
    };
    let towards = ping(&pods[1].0, &pods[0].1);
    let from = ping(&pods[0].0, &pods[1].1);
    std::thread::sleep(Duration::from_secs(2));
    c.agents[0].stop().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let config = c.dir.path().join("node-1.toml");
    c.agents[0] = start_agent(&c.nodes[0], &config, 2);
    wait_ready(&c.clients[0], &c.agents[0]);
    for (what, t) in [("node-2 -> node-1", towards), ("node-1 -> node-2", from)] {
        let out = t
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("{what}: pings lost: {e}"));
        assert!(
            out.stdout.contains(" 0% packet loss"),
            "{what}: {}",
            out.stdout
        );
    }
    // The restarted agent announced its block again and sent End-of-RIB: node-2 still routes to
    // it after node-2's stale timer would have run out of patience had End-of-RIB not come.
    assert!(
        c.agents[0].log().contains("End-of-RIB sent"),
        "{}",
        c.agents[0].log_tail(30)
    );
    assert!(
        routes(&c.nodes[1]).contains("via 198.18.0.11"),
        "{}",
        routes(&c.nodes[1])
    );
}
