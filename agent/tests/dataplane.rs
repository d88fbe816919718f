//! The dataplane drivers (routes, sysctls) against a real kernel, inside throwaway network namespaces.

use std::collections::BTreeMap;

use ipnet::IpNet;
use margay_agent::dataplane::{RouteDriver, RouteTarget};
use margay_harness::Netns;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// A node namespace with an uplink (198.18.0.1/24 ↔ 198.18.0.2/24, fd00:18::1/64 ↔ ::2) and one
/// pod veth `mgypod1` whose other end is in a pod namespace.
struct Node {
    node: Netns,
    _peer: Netns,
    pod: Netns,
}

fn node() -> Node {
    let node = Netns::with_tag("rt-node").expect("namespace (run as root)");
    let peer = Netns::with_tag("rt-peer").unwrap();
    let pod = Netns::with_tag("rt-pod").unwrap();
    node.connect(
        "eth0",
        &[net("198.18.0.1/24"), net("fd00:18::1/64")],
        &peer,
        "eth0",
        &[net("198.18.0.2/24"), net("fd00:18::2/64")],
    )
    .unwrap();
    node.connect("mgypod1", &[], &pod, "eth0", &[]).unwrap();
    Node {
        node,
        _peer: peer,
        pod,
    }
}

fn desired() -> BTreeMap<IpNet, RouteTarget> {
    BTreeMap::from([
        (net("100.64.0.5/32"), RouteTarget::Device("mgypod1".into())),
        (net("100.64.0.0/26"), RouteTarget::Blackhole),
        (
            net("100.64.1.0/26"),
            RouteTarget::Via("198.18.0.2".parse().unwrap()),
        ),
        (
            net("fd00:100:64::5/128"),
            RouteTarget::Device("mgypod1".into()),
        ),
        (net("fd00:100:64::/122"), RouteTarget::Blackhole),
        (
            net("fd00:100:64::40/122"),
            RouteTarget::Via("fd00:18::2".parse().unwrap()),
        ),
    ])
}

/// A driver that has programmed [`desired`] in the calling thread's namespace.
async fn programmed() -> RouteDriver {
    let mut d = RouteDriver::new().unwrap();
    d.replace_all(desired());
    d.resync().await.unwrap();
    d
}

fn ip(ns: &Netns, args: &[&str]) -> String {
    let mut argv = vec!["ip"];
    argv.extend_from_slice(args);
    ns.exec(&argv).unwrap().stdout
}

#[test]
fn routes_are_programmed_with_our_protocol_and_read_back() {
    let n = node();
    n.node
        .block_on(async {
            let mut d = RouteDriver::new().unwrap();
            d.replace_all(desired());
            let report = d.resync().await.unwrap();
            assert_eq!(
                (report.written, report.removed, report.failed.len()),
                (6, 0, 0),
                "{report:?}"
            );
            assert_eq!(d.dump().await.unwrap(), desired());
            // Nothing to do the second time.
            assert_eq!(d.resync().await.unwrap().written, 0);
        })
        .unwrap();
    let v4 = ip(&n.node, &["-4", "route", "show", "proto", "80"]);
    assert!(v4.contains("100.64.0.5 dev mgypod1 scope link"), "{v4}");
    assert!(v4.contains("blackhole 100.64.0.0/26"), "{v4}");
    assert!(v4.contains("100.64.1.0/26 via 198.18.0.2 dev eth0"), "{v4}");
    let v6 = ip(&n.node, &["-6", "route", "show", "proto", "80"]);
    assert!(v6.contains("fd00:100:64::5 dev mgypod1"), "{v6}");
}

#[test]
fn resync_repairs_tampering_and_leaves_foreign_routes_alone() {
    let n = node();
    n.node.block_on(programmed()).unwrap();
    // Behind the agent's back: a pod route deleted, a block re-pointed, a stale route of ours,
    // and an operator's static route that is none of our business.
    ip(&n.node, &["route", "del", "100.64.0.5/32", "proto", "80"]);
    ip(
        &n.node,
        &[
            "route",
            "replace",
            "100.64.0.0/26",
            "via",
            "198.18.0.2",
            "proto",
            "80",
        ],
    );
    ip(
        &n.node,
        &["route", "add", "blackhole", "100.64.2.0/26", "proto", "80"],
    );
    ip(
        &n.node,
        &[
            "route",
            "add",
            "100.64.9.0/24",
            "via",
            "198.18.0.2",
            "proto",
            "static",
        ],
    );
    n.node
        .block_on(async {
            let mut d = RouteDriver::new().unwrap();
            d.replace_all(desired());
            let report = d.resync().await.unwrap();
            assert_eq!((report.written, report.removed), (2, 1), "{report:?}");
            assert_eq!(d.dump().await.unwrap(), desired());
        })
        .unwrap();
    let statics = ip(&n.node, &["route", "show", "proto", "static"]);
    assert!(
        statics.contains("100.64.9.0/24 via 198.18.0.2"),
        "foreign route removed: {statics}"
    );
}

#[test]
fn removed_routes_leave_the_kernel_whatever_their_type() {
    let n = node();
    n.node
        .block_on(async {
            let mut d = programmed().await;
            d.replace_all(BTreeMap::new());
            let report = d.apply().await.unwrap();
            assert_eq!((report.removed, report.failed.len()), (6, 0), "{report:?}");
            assert!(d.dump().await.unwrap().is_empty());
        })
        .unwrap();
    assert_eq!(
        ip(&n.node, &["-4", "route", "show", "proto", "80"]).trim(),
        ""
    );
    assert_eq!(
        ip(&n.node, &["-6", "route", "show", "proto", "80"]).trim(),
        ""
    );
}

#[test]
fn a_route_to_an_interface_not_there_yet_is_retried_once_it_appears() {
    let n = node();
    let dst = net("100.64.0.9/32");
    n.node
        .block_on(async {
            let mut d = RouteDriver::new().unwrap();
            d.set(dst, RouteTarget::Device("mgypod2".into()));
            let report = d.resync().await.unwrap();
            assert_eq!(report.failed.len(), 1);
            assert!(report.failed[0].1.contains("mgypod2"), "{report:?}");
            // The CNI plugin creates the veth; the next apply writes the route.
            n.node.connect("mgypod2", &[], &n.pod, "eth1", &[]).unwrap();
            let report = d.apply().await.unwrap();
            assert_eq!((report.written, report.failed.len()), (1, 0), "{report:?}");
        })
        .unwrap();
    assert!(ip(&n.node, &["route", "show", "proto", "80"]).contains("100.64.0.9 dev mgypod2"));
}

#[test]
fn a_failing_route_in_a_batch_fails_alone_and_is_named() {
    let n = node();
    n.node
        .block_on(async {
            let mut d = RouteDriver::new().unwrap();
            let mut routes = desired();
            // No interface reaches this next hop: the kernel refuses this one route.
            let bad = net("100.64.3.0/26");
            routes.insert(bad, RouteTarget::Via("198.18.5.1".parse().unwrap()));
            d.replace_all(routes);
            let report = d.resync().await.unwrap();
            assert_eq!(report.written, 6, "{report:?}");
            assert_eq!(report.failed.len(), 1, "{report:?}");
            assert_eq!(report.failed[0].0, bad);
            assert!(report.failed[0].1.contains("unreachable"), "{report:?}");
            assert_eq!(d.dump().await.unwrap(), desired());
        })
        .unwrap();
}

#[test]
fn queued_chunks_are_answered_in_order_and_refused_routes_are_retried() {
    let n = node();
    n.node
        .block_on(async {
            let mut d = RouteDriver::new().unwrap();
            // 5000 learned routes (five chunks), decided and queued in two goes as the learned-
            // route task does; one in each 1000 goes through a next hop nothing reaches yet.
            let via = |i: u32| {
                let gw = if i % 1000 == 7 {
                    "198.18.5.1"
                } else {
                    "198.18.0.2"
                };
                RouteTarget::Via(gw.parse().unwrap())
            };
            let dst =
                |i: u32| IpNet::new(std::net::Ipv4Addr::from(0x6440_0000 + i).into(), 32).unwrap();
            for i in 0..2500 {
                d.set(dst(i), via(i));
            }
            d.submit().await.unwrap();
            // flush waits for the answers and writes nothing new.
            let first = d.flush().await.unwrap();
            assert_eq!(first.written, 2497, "{:?}", first.failed);
            let mut bad: Vec<IpNet> = first.failed.iter().map(|(d, _)| *d).collect();
            bad.sort();
            assert_eq!(bad, vec![dst(7), dst(1007), dst(2007)]);
            for i in 2500..5000 {
                d.set(dst(i), via(i));
            }
            // apply retries the refused ones (refused again) along with the new ones.
            let report = d.apply().await.unwrap();
            assert_eq!(report.written, 2498, "{:?}", report.failed);
            let mut bad: Vec<IpNet> = report.failed.iter().map(|(d, _)| *d).collect();
            bad.sort();
            assert_eq!(bad, (0..5).map(|k| dst(k * 1000 + 7)).collect::<Vec<_>>());
            assert!(
                report.failed.iter().all(|(_, e)| e.contains("unreachable")),
                "{report:?}"
            );
            // Refused means not applied: the next apply tries them again.
            assert_eq!(d.applied(&bad[0]), None);
            assert_eq!(d.apply().await.unwrap().failed.len(), 5);
            ip(&n.node, &["addr", "add", "198.18.5.2/24", "dev", "eth0"]);
            let report = d.apply().await.unwrap();
            assert_eq!((report.written, report.failed.len()), (5, 0), "{report:?}");
            assert_eq!(d.dump().await.unwrap().len(), 5000);
            // And all of them leave again.
            d.replace_all(BTreeMap::new());
            let report = d.apply().await.unwrap();
            assert_eq!(
                (report.removed, report.failed.len()),
                (5000, 0),
                "{report:?}"
            );
            assert!(d.dump().await.unwrap().is_empty());
        })
        .unwrap();
}

#[test]
fn sysctls_are_set_inside_the_node_namespace_only() {
    use margay_agent::dataplane::SysctlDriver;
    use margay_agent::dataplane::sysctls::{interface_sysctls, node_sysctls};
    let n = node();
    let host_forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let failures = n
        .node
        .run(|| {
            let mut d = SysctlDriver::new();
            d.set(node_sysctls(true));
            d.set(interface_sysctls("mgypod1", true, true));
            d.resync()
        })
        .unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    let read = |k: &str| {
        n.node
            .exec(&["sysctl", "-n", k])
            .unwrap()
            .stdout
            .trim()
            .to_owned()
    };
    assert_eq!(read("net.ipv4.ip_forward"), "1");
    assert_eq!(read("net.ipv4.conf.mgypod1.proxy_arp"), "1");
    assert_eq!(read("net.ipv4.neigh.mgypod1.proxy_delay"), "0");
    assert_eq!(read("net.ipv6.conf.mgypod1.proxy_ndp"), "1");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        host_forward,
        "the host's own setting changed"
    );
}
