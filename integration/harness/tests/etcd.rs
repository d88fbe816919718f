//! The etcd fixture: on the host's loopback, and in an infra namespace reached from a node
//! namespace over the underlay. Needs root (namespaces); the loopback one runs as any user.

use std::net::IpAddr;

use ipnet::IpNet;
use margay_harness::Netns;
use margay_harness::fixtures::Etcd;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

#[test]
fn etcd_on_loopback_stores_and_returns_a_key() {
    let etcd = Etcd::start_on_loopback().unwrap();
    assert!(
        etcd.endpoint().starts_with("http://127.0.0.1:"),
        "{}",
        etcd.endpoint()
    );
    assert!(etcd.dir().path().starts_with("/dev/shm"));
    etcd.etcdctl(&["put", "/margay/test", "hello"]).unwrap();
    let out = etcd
        .etcdctl(&["get", "--print-value-only", "/margay/test"])
        .unwrap();
    assert_eq!(out.stdout.trim(), "hello", "log:\n{}", etcd.daemon().log());
}

#[test]
fn etcd_in_an_infra_namespace_is_reachable_from_a_node_namespace() {
    let infra = Netns::with_tag("infra").unwrap();
    let node = Netns::with_tag("node").unwrap();
    infra
        .connect(
            "eth0",
            &[net("198.18.0.254/24")],
            &node,
            "eth0",
            &[net("198.18.0.1/24")],
        )
        .unwrap();
    let addr: IpAddr = "198.18.0.254".parse().unwrap();
    let etcd = Etcd::start_in(&infra, addr).unwrap();
    assert_eq!(etcd.endpoint(), "http://198.18.0.254:2379");
    etcd.etcdctl(&["put", "k", "v"]).unwrap();
    let out = node
        .exec(&[
            "env",
            "ETCDCTL_API=3",
            "etcdctl",
            "--endpoints=http://198.18.0.254:2379",
            "get",
            "--print-value-only",
            "k",
        ])
        .unwrap();
    assert_eq!(out.stdout.trim(), "v");
}
