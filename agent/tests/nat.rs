//! natOutgoing and anti-spoofing with the real agent and real iptables: a pod of a natOutgoing
//! pool reaches an "internet" namespace (198.19.0.0/24) from the node's address, from its own
//! once natOutgoing is turned off; a packet with a forged source never leaves the node.

mod common;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use common::cluster::*;
use common::*;
use margay_api::{IPPool, IPPoolSpec};
use margay_datastore::Typed;
use margay_harness::Netns;

const INTERNET: &str = "198.19.0.1";

/// Sends one datagram from `pod` (from `src` if given) to the internet namespace and returns the
/// source address it arrived with, if it arrived within a second.
fn source_seen(internet: &Netns, pod: &Netns, src: Option<IpAddr>) -> Option<IpAddr> {
    let (tx, rx) = std::sync::mpsc::channel();
    let inet = internet.clone();
    let receiver = std::thread::spawn(move || {
        inet.run(move || {
            let s = UdpSocket::bind((INTERNET, 9000)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
            tx.send(()).unwrap();
            let mut buf = [0u8; 16];
            s.recv_from(&mut buf).ok().map(|(_, from)| from.ip())
        })
        .unwrap()
    });
    rx.recv().unwrap();
    pod.run(move || {
        let bind: SocketAddr = match src {
            Some(a) => SocketAddr::new(a, 0),
            None => "0.0.0.0:0".parse().unwrap(),
        };
        let s = UdpSocket::bind(bind).unwrap();
        s.send_to(b"hello", (INTERNET, 9000)).unwrap();
    })
    .unwrap();
    receiver.join().unwrap()
}

#[test]
fn natoutgoing_masquerades_to_the_internet_and_forged_sources_are_dropped() {
    let setup: Setup = Box::new(|ds| {
        Box::pin(async move {
            let mut spec = IPPoolSpec::new("100.64.0.0/16");
            spec.nat_outgoing = true;
            Typed::<IPPool>::new(ds)
                .create(&IPPool::new("default-ipv4", spec))
                .await
                .unwrap();
        })
    });
    let c = Cluster::start("nat", &[NodeRole::Node], setup);
    let node = &c.nodes[0];
    let internet = Netns::with_tag("nat-inet").unwrap();
    c.bridge
        .attach(
            &internet,
            "eth0",
            &[
                "198.18.0.200/24".parse().unwrap(),
                "198.19.0.1/24".parse().unwrap(),
            ],
        )
        .unwrap();
    node.exec(&["ip", "route", "add", "198.19.0.0/24", "via", "198.18.0.200"])
        .unwrap();
    let pod = Netns::with_tag("nat-pod").unwrap();
    let ip: IpAddr = wire_pod(&c.clients[0], node, &pod, "pod-0", "mgytestnatpod00")
        .parse()
        .unwrap();
    let node_ip: IpAddr = "198.18.0.11".parse().unwrap();

    wait_for(
        "the internet sees the node's address",
        Duration::from_secs(30),
        || source_seen(&internet, &pod, None) == Some(node_ip),
        || {
            format!(
                "{:?}\n{}\n{}",
                source_seen(&internet, &pod, None),
                node.exec(&["iptables", "-t", "nat", "-S"])
                    .map(|o| o.stdout)
                    .unwrap_or_default(),
                c.agents[0].log_tail(20)
            )
        },
    );

    // A second address the pod was never given: its packets are dropped on the node.
    pod.exec(&["ip", "addr", "add", "100.64.250.250/32", "dev", "eth0"])
        .unwrap();
    let forged: IpAddr = "100.64.250.250".parse().unwrap();
    for _ in 0..3 {
        assert_eq!(
            source_seen(&internet, &pod, Some(forged)),
            None,
            "a packet from a forged source left the node"
        );
    }

    // natOutgoing off: the internet sees the pod's own address.
    with_datastore(node, &c.endpoint, |ds| {
        Box::pin(async move {
            Typed::<IPPool>::new(ds)
                .update_with(None, "default-ipv4", 5, |p| {
                    p.spec.nat_outgoing = false;
                    Ok(true)
                })
                .await
                .unwrap();
        })
    });
    wait_for(
        "the internet sees the pod's address",
        Duration::from_secs(30),
        || source_seen(&internet, &pod, None) == Some(ip),
        || {
            node.exec(&["iptables", "-t", "nat", "-S"])
                .map(|o| o.stdout)
                .unwrap_or_default()
        },
    );
    // The pool set is emptied (ipset, first) a moment before the chain and its hook go
    // (iptables, next): the address above can show before the chain is gone.
    let nat_rules = || {
        node.exec(&["iptables", "-t", "nat", "-S"])
            .map(|o| o.stdout)
            .unwrap_or_default()
    };
    wait_for(
        "the chain goes with the last natOutgoing pool",
        Duration::from_secs(10),
        || !nat_rules().contains("mgy-nat-outgoing"),
        nat_rules,
    );
}
