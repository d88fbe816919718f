//! `margay-node` as a process in a node namespace, with real etcd in an infra namespace: a pod
//! set up through the local API is reachable, and an agent restart leaves its routes untouched.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use margay_agent::localapi::client::Client;
use margay_agent::localapi::proto::*;
use margay_api::{IPPool, IPPoolSpec};
use margay_datastore::{Datastore, Etcd, EtcdConfig, Typed};
use margay_harness::fixtures::Etcd as EtcdServer;
use margay_harness::{Daemon, Netns, Ready};

fn agent(node: &Netns, config: &Path, dir: &Path, n: u32) -> Daemon {
    Daemon::builder("margay-node", env!("CARGO_BIN_EXE_margay-node"))
        .args(["--config", config.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .netns(node)
        .log_file(dir.join(format!("agent-{n}.log")))
        .ready(Ready::File(dir.join("agent.sock")))
        .timeout(Duration::from_secs(30))
        .spawn()
        .expect("margay-node starts")
}

fn wait_ready(client: &Client, agent: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.status() {
            Ok(s) if s.ready => return,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "agent not ready in 30 s: {other:?}\n{}",
                    agent.log_tail(30)
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn routes(node: &Netns) -> String {
    node.exec(&["ip", "route", "show", "proto", "80"])
        .unwrap()
        .stdout
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
    let endpoint = etcd.endpoint();

    let ep = endpoint.clone();
    node.block_on(async move {
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
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "node_name = \"node-1\"\nsocket = \"{}\"\n[datastore]\netcd_endpoints = [\"{endpoint}\"]\n",
            dir.path().join("agent.sock").display()
        ),
    )
    .unwrap();
    let mut first = agent(&node, &config, dir.path(), 1);
    let client = Client::new(dir.path().join("agent.sock"), Duration::from_secs(20));
    wait_ready(&client, &first);

    let att = Some(Attachment {
        handle_id: "net.c1".into(),
        container_id: "c1".into(),
        namespace: "default".into(),
        pod: "web-0".into(),
        ifname: "eth0".into(),
    });
    let got = client
        .allocate(Allocate {
            attachment: att.clone(),
            num_v4: 1,
            ..Default::default()
        })
        .unwrap();
    let cidr = got.addresses[0].clone();
    let ip = cidr.trim_end_matches("/32").to_owned();
    node.connect("mgytestnode001", &[], &pod, "eth0", &[])
        .unwrap();
    pod.exec(&["ip", "addr", "add", &cidr, "dev", "eth0"])
        .unwrap();
    pod.exec(&[
        "ip",
        "route",
        "add",
        "169.254.1.1",
        "dev",
        "eth0",
        "scope",
        "link",
    ])
    .unwrap();
    pod.exec(&[
        "ip",
        "route",
        "add",
        "default",
        "via",
        "169.254.1.1",
        "dev",
        "eth0",
    ])
    .unwrap();
    client
        .endpoint_up(EndpointUp {
            attachment: att.clone(),
            host_ifname: "mgytestnode001".into(),
            addresses: vec![cidr.clone()],
            mac: String::new(),
        })
        .unwrap();
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
    let mut monitor = Daemon::builder("ip-monitor", "ip")
        .args(["monitor", "route"])
        .netns(&node)
        .log_file(dir.path().join("monitor.log"))
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    first.stop().unwrap();
    assert_eq!(
        routes(&node),
        before,
        "routes changed when the agent stopped"
    );
    let second = agent(&node, &config, dir.path(), 2);
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
        .endpoint_down(EndpointDown { attachment: att })
        .unwrap();
    client.release("net.c1").unwrap();
    assert!(
        !routes(&node).contains(&format!("{ip} dev")),
        "{}",
        routes(&node)
    );
    drop(second);
}
