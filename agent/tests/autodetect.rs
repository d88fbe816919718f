//! Address autodetection inside a namespace with real interfaces.

use margay_agent::autodetect::{Method, detect};
use margay_harness::Netns;

#[test]
fn every_method_finds_the_underlay_address_of_a_node_namespace() {
    let node = Netns::with_tag("ad-node").expect("namespace (run as root)");
    let peer = Netns::with_tag("ad-peer").unwrap();
    let pod = Netns::with_tag("ad-pod").unwrap();
    let net = |s: &str| s.parse().unwrap();
    node.connect(
        "eth0",
        &[net("198.18.0.11/24"), net("fd00:198:18::11/64")],
        &peer,
        "eth0",
        &[net("198.18.0.254/24"), net("fd00:198:18::fe/64")],
    )
    .unwrap();
    node.connect("mgypod1", &[], &pod, "eth0", &[]).unwrap();
    let found = node
        .run(|| {
            [
                "first-found",
                "interface=eth.*",
                "skip-interface=nothing",
                "can-reach=198.18.0.254",
                "cidr=198.18.0.0/24",
            ]
            .map(|m| {
                detect(&m.parse::<Method>().unwrap(), false, m)
                    .map(|n| n.to_string())
                    .unwrap()
            })
            .to_vec()
            .into_iter()
            .chain(std::iter::once(
                detect(&Method::FirstFound, true, "first-found")
                    .unwrap()
                    .to_string(),
            ))
            .collect::<Vec<_>>()
        })
        .unwrap();
    assert_eq!(
        found,
        [
            "198.18.0.11/24",
            "198.18.0.11/24",
            "198.18.0.11/24",
            "198.18.0.11/24",
            "198.18.0.11/24",
            "fd00:198:18::11/64"
        ]
    );
    let err = node
        .run(|| {
            detect(
                &"cidr=100.64.0.0/10".parse().unwrap(),
                false,
                "cidr=100.64.0.0/10",
            )
            .unwrap_err()
        })
        .unwrap();
    assert_eq!(
        err.to_string(),
        "no IPv4 address found by cidr=100.64.0.0/10; set the node's address explicitly or choose another method"
    );
}
