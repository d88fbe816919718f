//! The BGP fixtures against each other: real BIRD, GoBGP and FRR peering in namespaces over
//! veths, learning and withdrawing each other's routes. Needs root.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use ipnet::IpNet;
use margay_harness::fixtures::{BgpConfig, BgpNeighbor, BgpSpeaker, Bird, Frr, Gobgp};
use margay_harness::{Bridge, Netns, Pair};

const WAIT: Duration = Duration::from_secs(30);

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn pair(tag: &str) -> (Netns, Netns) {
    let p = Pair::new(tag).unwrap();
    (p.a, p.b)
}

/// Checks that `x` and `y` exchange their originated routes, then that a route announced and
/// withdrawn at runtime by `y` comes and goes at `x`.
fn exchange(x: &mut dyn BgpSpeaker, y: &mut dyn BgpSpeaker, x_addr: IpAddr, y_addr: IpAddr) {
    x.wait_established(y_addr, WAIT).unwrap();
    y.wait_established(x_addr, WAIT).unwrap();
    for p in y.config().originate.clone() {
        let r = x.wait_route(p, WAIT).unwrap();
        assert_eq!(r.next_hop, y_addr, "{} learned {r:?}", x.kind());
        assert_eq!(r.from, Some(y_addr), "{r:?}");
        if y.config().local_as != x.config().local_as {
            assert_eq!(r.as_path, vec![y.config().local_as], "{r:?}");
        } else {
            assert!(r.as_path.is_empty(), "{r:?}");
        }
    }
    for p in x.config().originate.clone() {
        let r = y.wait_route(p, WAIT).unwrap();
        assert_eq!(r.next_hop, x_addr, "{} learned {r:?}", y.kind());
    }
    // A route refresh keeps the session and the routes.
    x.request_refresh(y_addr).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    x.wait_established(y_addr, WAIT).unwrap();
    for p in y.config().originate.clone() {
        x.wait_route(p, WAIT).unwrap();
    }
    let extra = if y.config().listen.is_ipv6() {
        net("fd00:64:200::/64")
    } else {
        net("100.64.200.0/24")
    };
    y.announce(extra).unwrap();
    x.wait_route(extra, WAIT).unwrap();
    y.withdraw(extra).unwrap();
    x.wait_no_route(extra, WAIT).unwrap();
    // Own routes are never reported as learned.
    let own = y.learned_routes().unwrap();
    assert!(!own.contains_key(&extra));
    for p in &y.config().originate {
        assert!(!own.contains_key(p), "{} reports its own {p}", y.kind());
    }
}

#[test]
fn bird_and_gobgp_exchange_routes_over_ebgp() {
    let (a, b) = pair("bg");
    let mut bird = Bird::start(
        &a,
        BgpConfig::new(v4("198.18.0.1"), 64512, ip("198.18.0.1"))
            .neighbor(BgpNeighbor::new(ip("198.18.0.2"), 64513).passive())
            .originate(net("100.64.1.0/24")),
    )
    .unwrap();
    let mut gobgp = Gobgp::start(
        &b,
        BgpConfig::new(v4("198.18.0.2"), 64513, ip("198.18.0.2"))
            .neighbor(BgpNeighbor::new(ip("198.18.0.1"), 64512))
            .originate(net("100.64.2.0/24"))
            .originate(net("100.64.2.64/26")),
    )
    .unwrap();
    exchange(&mut bird, &mut gobgp, ip("198.18.0.1"), ip("198.18.0.2"));
    exchange(&mut gobgp, &mut bird, ip("198.18.0.2"), ip("198.18.0.1"));
}

#[test]
fn frr_and_bird_exchange_routes_over_ibgp() {
    let (a, b) = pair("fb");
    let mut bird = Bird::start(
        &a,
        BgpConfig::new(v4("198.18.0.1"), 64512, ip("198.18.0.1"))
            .neighbor(BgpNeighbor::new(ip("198.18.0.2"), 64512).passive())
            .originate(net("100.64.1.0/26")),
    )
    .unwrap();
    let mut frr = Frr::start(
        &b,
        BgpConfig::new(v4("198.18.0.2"), 64512, ip("198.18.0.2"))
            .neighbor(BgpNeighbor::new(ip("198.18.0.1"), 64512))
            .originate(net("100.64.2.0/26")),
    )
    .unwrap();
    exchange(&mut bird, &mut frr, ip("198.18.0.1"), ip("198.18.0.2"));
    exchange(&mut frr, &mut bird, ip("198.18.0.2"), ip("198.18.0.1"));
}

#[test]
fn gobgp_and_frr_exchange_ipv6_routes_over_an_ipv6_session() {
    let (a, b) = pair("gf");
    let gobgp = Gobgp::start(
        &a,
        BgpConfig::new(v4("198.18.0.1"), 64512, ip("fd00:18::1"))
            .neighbor(BgpNeighbor::new(ip("fd00:18::2"), 64514).passive())
            .ipv6(true)
            .originate(net("fd00:64:1::/64")),
    )
    .unwrap();
    let mut frr = Frr::start(
        &b,
        BgpConfig::new(v4("198.18.0.2"), 64514, ip("fd00:18::2"))
            .neighbor(BgpNeighbor::new(ip("fd00:18::1"), 64512))
            .ipv6(true)
            .originate(net("fd00:64:2::/64")),
    )
    .unwrap();
    gobgp.wait_established(ip("fd00:18::2"), WAIT).unwrap();
    let r = gobgp.wait_route(net("fd00:64:2::/64"), WAIT).unwrap();
    assert_eq!(r.next_hop, ip("fd00:18::2"), "{r:?}");
    let r = frr.wait_route(net("fd00:64:1::/64"), WAIT).unwrap();
    assert_eq!(r.next_hop, ip("fd00:18::1"), "{r:?}");
    assert_eq!(r.as_path, vec![64512]);
    frr.announce(net("fd00:64:3::/64")).unwrap();
    gobgp.wait_route(net("fd00:64:3::/64"), WAIT).unwrap();
    frr.withdraw(net("fd00:64:3::/64")).unwrap();
    gobgp.wait_no_route(net("fd00:64:3::/64"), WAIT).unwrap();
}

#[test]
fn each_speaker_starts_alone_and_answers_queries() {
    let ns = Netns::with_tag("alone").unwrap();
    ns.add_veth("eth0", &ns, "eth1").unwrap();
    ns.add_addr("eth0", net("198.18.0.1/24")).unwrap();
    ns.add_addr("eth1", net("198.18.0.2/24")).unwrap();
    ns.link_up("eth0").unwrap();
    ns.link_up("eth1").unwrap();
    // Every option the config offers, so that each daemon is shown to accept what we generate.
    let cfg = |rid: &str| {
        let mut c = BgpConfig::new(v4(rid), 64512, ip(rid))
            .neighbor(
                BgpNeighbor::new(ip("198.18.0.9"), 64512)
                    .passive()
                    .rr_client(),
            )
            .neighbor(BgpNeighbor::new(ip("198.18.0.10"), 64513))
            .neighbor(BgpNeighbor::new(ip("fd00:18::9"), 64512).passive())
            .originate(net("100.64.0.0/26"))
            .originate(net("fd00:64::/64"))
            .ipv6(true)
            .hold_time(9)
            .graceful_restart(120);
        c.route_refresh = false;
        c.cluster_id = Some(v4("198.18.0.100"));
        c
    };
    // One at a time: they all want port 179 of this namespace.
    let speakers: Vec<Box<dyn Fn() -> Box<dyn BgpSpeaker>>> = vec![
        Box::new(|| Box::new(Bird::start(&ns, cfg("198.18.0.1")).unwrap())),
        Box::new(|| Box::new(Gobgp::start(&ns, cfg("198.18.0.1")).unwrap())),
        Box::new(|| Box::new(Frr::start(&ns, cfg("198.18.0.1")).unwrap())),
    ];
    for start in speakers {
        let s = start();
        let n = s.neighbors().unwrap();
        let mut addrs: Vec<IpAddr> = n.iter().map(|n| n.address).collect();
        addrs.sort();
        assert_eq!(
            addrs,
            vec![ip("198.18.0.9"), ip("198.18.0.10"), ip("fd00:18::9")],
            "{}: {n:?}",
            s.kind()
        );
        assert!(s.learned_routes().unwrap().is_empty(), "{}", s.kind());
        let pid = s.daemon().pid();
        drop(s);
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }
    assert!(ns.pids().unwrap().is_empty());
}

#[test]
fn bird_reflects_routes_between_gobgp_and_frr_clients_on_a_bridge() {
    let br = Bridge::new().unwrap();
    let rr_ns = Netns::with_tag("rr").unwrap();
    let g_ns = Netns::with_tag("rr-gobgp").unwrap();
    let f_ns = Netns::with_tag("rr-frr").unwrap();
    br.attach(&rr_ns, "eth0", &[net("198.18.0.1/24")]).unwrap();
    br.attach(&g_ns, "eth0", &[net("198.18.0.11/24")]).unwrap();
    br.attach(&f_ns, "eth0", &[net("198.18.0.12/24")]).unwrap();
    let _rr = Bird::start(
        &rr_ns,
        BgpConfig::new(v4("198.18.0.1"), 64512, ip("198.18.0.1"))
            .neighbor(
                BgpNeighbor::new(ip("198.18.0.11"), 64512)
                    .passive()
                    .rr_client(),
            )
            .neighbor(
                BgpNeighbor::new(ip("198.18.0.12"), 64512)
                    .passive()
                    .rr_client(),
            ),
    )
    .unwrap();
    let gobgp = Gobgp::start(
        &g_ns,
        BgpConfig::new(v4("198.18.0.11"), 64512, ip("198.18.0.11"))
            .neighbor(BgpNeighbor::new(ip("198.18.0.1"), 64512))
            .originate(net("100.64.11.0/26")),
    )
    .unwrap();
    let frr = Frr::start(
        &f_ns,
        BgpConfig::new(v4("198.18.0.12"), 64512, ip("198.18.0.12"))
            .neighbor(BgpNeighbor::new(ip("198.18.0.1"), 64512))
            .originate(net("100.64.12.0/26")),
    )
    .unwrap();
    // Reflected routes keep their originator's next hop and come from the reflector.
    let r = gobgp.wait_route(net("100.64.12.0/26"), WAIT).unwrap();
    assert_eq!(
        (r.next_hop, r.from),
        (ip("198.18.0.12"), Some(ip("198.18.0.1")))
    );
    let r = frr.wait_route(net("100.64.11.0/26"), WAIT).unwrap();
    assert_eq!(
        (r.next_hop, r.from),
        (ip("198.18.0.11"), Some(ip("198.18.0.1")))
    );
}

#[test]
fn bird_and_frr_exchange_ipv6_routes_with_global_next_hops() {
    let (a, b) = pair("bf6");
    let mut bird = Bird::start(
        &a,
        BgpConfig::new(v4("198.18.0.1"), 64512, Pair::A_V6)
            .neighbor(BgpNeighbor::new(Pair::B_V6, 64514).passive())
            .ipv6(true)
            .originate(net("fd00:64:1::/64")),
    )
    .unwrap();
    let mut frr = Frr::start(
        &b,
        BgpConfig::new(v4("198.18.0.2"), 64514, Pair::B_V6)
            .neighbor(BgpNeighbor::new(Pair::A_V6, 64512))
            .ipv6(true)
            .originate(net("fd00:64:2::/64")),
    )
    .unwrap();
    exchange(&mut bird, &mut frr, Pair::A_V6, Pair::B_V6);
}
