//! Interop with real BIRD 2, GoBGP and FRR in network namespaces (margay-harness).
//!
//! Each test builds two namespaces joined by a veth ([`Pair`]): our speaker runs in
//! side a (198.18.0.1 / fd00:18::1) on a tokio runtime created inside the namespace,
//! the daemon in side b (198.18.0.2 / fd00:18::2). Namespaces and daemons are torn
//! down by the harness's guards, also when a test fails.
//!
//! They need root and the daemons, so they are `#[ignore]`d with that reason; run
//! them with `cargo nextest run -p margay-bgp --run-ignored ignored-only` (or
//! `cargo test -p margay-bgp -- --ignored`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use margay_bgp::fsm::State;
use margay_bgp::rib::RouteChange;
use margay_bgp::wire::{Family, Prefix};
use margay_bgp::{PeerConfig, PeerStatus, Speaker, SpeakerConfig};
use margay_harness::fixtures::{BgpConfig, BgpNeighbor, BgpSpeaker, Bird, Frr, Gobgp};
use margay_harness::{Netns, Pair};
use tokio::runtime::Runtime;
use tokio::sync::mpsc::UnboundedReceiver;

const OUR_AS: u32 = 65001;
const WAIT: Duration = Duration::from_secs(40);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bird,
    Gobgp,
    Frr,
}

fn start(kind: Kind, ns: &Netns, cfg: BgpConfig) -> Box<dyn BgpSpeaker + Send + Sync> {
    match kind {
        Kind::Bird => Box::new(Bird::start(ns, cfg).expect("start bird")),
        Kind::Gobgp => Box::new(Gobgp::start(ns, cfg).expect("start gobgpd")),
        Kind::Frr => Box::new(Frr::start(ns, cfg).expect("start frr")),
    }
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// One test's set-up: which session, which prefixes.
struct Case {
    kind: Kind,
    ibgp: bool,
    v6: bool,
}

impl Case {
    fn our_ip(&self) -> IpAddr {
        if self.v6 { Pair::A_V6 } else { Pair::A_V4 }
    }
    fn their_ip(&self) -> IpAddr {
        if self.v6 { Pair::B_V6 } else { Pair::B_V4 }
    }
    fn their_as(&self) -> u32 {
        if self.ibgp { OUR_AS } else { 65002 }
    }
    fn our_prefix(&self) -> IpNet {
        net(if self.v6 {
            "fd00:64:1::/64"
        } else {
            "100.64.1.0/24"
        })
    }
    fn their_prefix(&self) -> IpNet {
        net(if self.v6 {
            "fd00:64:2::/64"
        } else {
            "100.64.2.0/24"
        })
    }
    fn daemon_config(&self, hold: u16) -> BgpConfig {
        let mut c = BgpConfig::new(
            Ipv4Addr::new(198, 18, 0, 2),
            self.their_as(),
            self.their_ip(),
        )
        .neighbor(BgpNeighbor::new(self.our_ip(), OUR_AS).passive())
        .originate(self.their_prefix())
        .hold_time(hold)
        .ipv6(self.v6);
        c.ipv4_unicast = !self.v6;
        c
    }
    fn peer_config(&self, hold: u16) -> PeerConfig {
        let mut p = PeerConfig::new(self.their_ip(), self.their_as());
        p.local_addr = Some(self.our_ip());
        p.hold_time = hold;
        p.connect_retry = Duration::from_secs(1);
        p.families = vec![if self.v6 {
            Family::Ipv6Unicast
        } else {
            Family::Ipv4Unicast
        }];
        p
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn speaker(rt: &Runtime, case: &Case) -> Speaker {
    rt.block_on(Speaker::start(SpeakerConfig {
        local_as: OUR_AS,
        router_id: Ipv4Addr::new(198, 18, 0, 1),
        listen: Some(SocketAddr::new(case.our_ip(), 179)),
        cluster_id: None,
    }))
    .expect("speaker starts")
}

fn wait_status(
    rt: &Runtime,
    sp: &Speaker,
    addr: IpAddr,
    what: &str,
    f: impl Fn(&PeerStatus) -> bool,
) -> PeerStatus {
    rt.block_on(async {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let st = sp.peer(addr).await.unwrap();
            if f(&st) {
                return st;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}: {st:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

fn wait_change(
    rt: &Runtime,
    rx: &mut UnboundedReceiver<Vec<RouteChange>>,
    what: &str,
    f: impl Fn(&RouteChange) -> bool,
) -> RouteChange {
    rt.block_on(async {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(batch)) => {
                    if let Some(c) = batch.into_iter().find(|c| f(c)) {
                        return c;
                    }
                }
                Ok(None) => panic!("change stream ended waiting for {what}"),
                Err(_) => panic!("timed out waiting for {what}"),
            }
        }
    })
}

fn is_add(p: IpNet, nh: IpAddr) -> impl Fn(&RouteChange) -> bool {
    let p: Prefix = p.into();
    move |c| matches!(c, RouteChange::Add { prefix, next_hop } | RouteChange::Replace { prefix, next_hop } if *prefix == p && *next_hop == nh)
}

fn is_withdraw(p: IpNet) -> impl Fn(&RouteChange) -> bool {
    let p: Prefix = p.into();
    move |c| matches!(c, RouteChange::Withdraw { prefix } if *prefix == p)
}

/// Routes both ways, withdrawals both ways, route refresh both ways and, with
/// `restart`, a restart of the daemon (session re-established, routes re-learned).
fn exchange(case: Case, restart: bool) {
    margay_harness::require_root().expect("interop tests need root");
    let pair = Pair::new("bgpi").expect("namespaces");
    let mut daemon = Some(start(case.kind, &pair.b, case.daemon_config(90)));
    pair.a
        .run(|| {
            let rt = runtime();
            let sp = speaker(&rt, &case);
            rt.block_on(sp.add_peer(case.peer_config(90))).unwrap();
            let mut rx = sp.subscribe().unwrap();
            let d = daemon.as_ref().unwrap();
            d.wait_established(case.our_ip(), WAIT).unwrap();
            wait_status(&rt, &sp, case.their_ip(), "Established", |s| {
                s.state == State::Established
            });

            // Their route reaches us, ours reaches them.
            wait_change(
                &rt,
                &mut rx,
                "their route",
                is_add(case.their_prefix(), case.their_ip()),
            );
            sp.originate(case.our_prefix(), None).unwrap();
            let r = d.wait_route(case.our_prefix(), WAIT).unwrap();
            assert_eq!(r.next_hop, case.our_ip(), "{:?} next hop", case.kind);
            assert_eq!(r.as_path, if case.ibgp { vec![] } else { vec![OUR_AS] });

            // Withdrawals both ways.
            let d = daemon.as_mut().unwrap();
            d.withdraw(case.their_prefix()).unwrap();
            wait_change(
                &rt,
                &mut rx,
                "their withdrawal",
                is_withdraw(case.their_prefix()),
            );
            sp.withdraw(case.our_prefix()).unwrap();
            d.wait_no_route(case.our_prefix(), WAIT).unwrap();

            // Back again, then route refresh both ways.
            d.announce(case.their_prefix()).unwrap();
            wait_change(
                &rt,
                &mut rx,
                "their re-announcement",
                is_add(case.their_prefix(), case.their_ip()),
            );
            sp.originate(case.our_prefix(), None).unwrap();
            d.wait_route(case.our_prefix(), WAIT).unwrap();
            let before = rt.block_on(sp.peer(case.their_ip())).unwrap().received;
            rt.block_on(sp.refresh(case.their_ip())).unwrap();
            wait_status(
                &rt,
                &sp,
                case.their_ip(),
                "routes resent after ROUTE-REFRESH",
                |s| s.received > before,
            );
            d.request_refresh(case.our_ip()).unwrap();
            std::thread::sleep(Duration::from_millis(500));
            d.wait_route(case.our_prefix(), WAIT).unwrap();
            let st = rt.block_on(sp.peer(case.their_ip())).unwrap();
            assert_eq!(
                st.state,
                State::Established,
                "still up after refreshes: {st:?}"
            );

            if restart {
                // The daemon goes away: the session drops and its routes are withdrawn.
                let cfg = case.daemon_config(90);
                drop(daemon.take());
                wait_change(
                    &rt,
                    &mut rx,
                    "withdrawal when the peer stops",
                    is_withdraw(case.their_prefix()),
                );
                wait_status(&rt, &sp, case.their_ip(), "session down", |s| {
                    s.state != State::Established
                });
                // It comes back: we reconnect and both sides re-learn.
                daemon = Some(start(case.kind, &pair.b, cfg));
                let d = daemon.as_ref().unwrap();
                d.wait_established(case.our_ip(), WAIT).unwrap();
                wait_change(
                    &rt,
                    &mut rx,
                    "their route after restart",
                    is_add(case.their_prefix(), case.their_ip()),
                );
                d.wait_route(case.our_prefix(), WAIT).unwrap();
            }
            rt.block_on(sp.shutdown());
        })
        .expect("run in namespace");
}

/// The daemon stops answering (SIGSTOP): our hold timer expires, we send
/// NOTIFICATION 4/0 and drop its routes; once it runs again the session comes back.
fn hold_timer(kind: Kind) {
    margay_harness::require_root().expect("interop tests need root");
    let case = Case {
        kind,
        ibgp: false,
        v6: false,
    };
    let pair = Pair::new("bgph").expect("namespaces");
    let daemon = start(kind, &pair.b, case.daemon_config(6));
    let pid = daemon.daemon().pid().to_string();
    pair.a
        .run(|| {
            let rt = runtime();
            let sp = speaker(&rt, &case);
            rt.block_on(sp.add_peer(case.peer_config(6))).unwrap();
            let mut rx = sp.subscribe().unwrap();
            daemon.wait_established(case.our_ip(), WAIT).unwrap();
            wait_change(
                &rt,
                &mut rx,
                "their route",
                is_add(case.their_prefix(), case.their_ip()),
            );
            let stop = std::process::Command::new("kill")
                .args(["-STOP", &pid])
                .status()
                .unwrap();
            assert!(stop.success());
            let st = wait_status(&rt, &sp, case.their_ip(), "hold timer expiry", |s| {
                s.state != State::Established
            });
            let cont = std::process::Command::new("kill")
                .args(["-CONT", &pid])
                .status()
                .unwrap();
            assert!(cont.success());
            assert!(
                st.last_error
                    .as_deref()
                    .unwrap_or("")
                    .contains("hold timer expired"),
                "{st:?}"
            );
            wait_change(
                &rt,
                &mut rx,
                "withdrawal on hold expiry",
                is_withdraw(case.their_prefix()),
            );
            wait_status(&rt, &sp, case.their_ip(), "re-established", |s| {
                s.state == State::Established
            });
            rt.block_on(sp.shutdown());
        })
        .expect("run in namespace");
}

/// Both sides connect at once: collision detection (RFC 4271 §6.8) leaves exactly one
/// session, and routes flow over it. Repeated, as the race goes either way.
fn collision(kind: Kind) {
    margay_harness::require_root().expect("interop tests need root");
    for round in 0..3 {
        let case = Case {
            kind,
            ibgp: false,
            v6: false,
        };
        let pair = Pair::new("bgpc").expect("namespaces");
        let mut cfg = case.daemon_config(90);
        cfg.neighbors[0].passive = false;
        let daemon = start(kind, &pair.b, cfg);
        pair.a
            .run(|| {
                let rt = runtime();
                let sp = speaker(&rt, &case);
                let mut p = case.peer_config(90);
                p.connect_retry = Duration::from_secs(1);
                rt.block_on(sp.add_peer(p)).unwrap();
                let mut rx = sp.subscribe().unwrap();
                daemon.wait_established(case.our_ip(), WAIT).unwrap();
                wait_status(&rt, &sp, case.their_ip(), "Established", |s| {
                    s.state == State::Established
                });
                wait_change(
                    &rt,
                    &mut rx,
                    "their route",
                    is_add(case.their_prefix(), case.their_ip()),
                );
                sp.originate(case.our_prefix(), None).unwrap();
                daemon.wait_route(case.our_prefix(), WAIT).unwrap();
                // Still one stable session a moment later.
                std::thread::sleep(Duration::from_secs(2));
                let st = rt.block_on(sp.peer(case.their_ip())).unwrap();
                assert_eq!(st.state, State::Established, "round {round}: {st:?}");
                rt.block_on(sp.shutdown());
            })
            .expect("run in namespace");
    }
}

/// Margay as a route reflector (RFC 4456) for a BIRD and an FRR client on one
/// bridge: each client learns the other's routes with the next hop unchanged, and
/// withdrawals are reflected too.
fn reflector_for_bird_and_frr_clients() {
    use margay_harness::Bridge;
    margay_harness::require_root().expect("interop tests need root");
    const AS: u32 = 64512;
    let rr_ip: IpAddr = "198.18.0.1".parse().unwrap();
    let bird_ip: IpAddr = "198.18.0.2".parse().unwrap();
    let frr_ip: IpAddr = "198.18.0.3".parse().unwrap();
    let br = Bridge::new().expect("bridge");
    let ours = Netns::with_tag("rr").unwrap();
    let nb = Netns::with_tag("rrbird").unwrap();
    let nf = Netns::with_tag("rrfrr").unwrap();
    br.attach(&ours, "eth0", &[net("198.18.0.1/24")]).unwrap();
    br.attach(&nb, "eth0", &[net("198.18.0.2/24")]).unwrap();
    br.attach(&nf, "eth0", &[net("198.18.0.3/24")]).unwrap();
    let client = |id: IpAddr, p: &str| {
        let IpAddr::V4(rid) = id else { unreachable!() };
        BgpConfig::new(rid, AS, id)
            .neighbor(BgpNeighbor::new(rr_ip, AS))
            .originate(net(p))
    };
    let mut bird = Bird::start(&nb, client(bird_ip, "100.64.2.0/24")).unwrap();
    let frr = Frr::start(&nf, client(frr_ip, "100.64.3.0/24")).unwrap();
    ours.run(|| {
        let rt = runtime();
        let sp = rt
            .block_on(Speaker::start(SpeakerConfig {
                local_as: AS,
                router_id: Ipv4Addr::new(198, 18, 0, 1),
                listen: Some(SocketAddr::new(rr_ip, 179)),
                cluster_id: Some(Ipv4Addr::new(198, 18, 0, 1)),
            }))
            .unwrap();
        for ip in [bird_ip, frr_ip] {
            let mut p = PeerConfig::new(ip, AS);
            p.passive = true;
            p.rr_client = true;
            p.families = vec![Family::Ipv4Unicast];
            rt.block_on(sp.add_peer(p)).unwrap();
        }
        bird.wait_established(rr_ip, WAIT).unwrap();
        frr.wait_established(rr_ip, WAIT).unwrap();
        let at_frr = frr.wait_route(net("100.64.2.0/24"), WAIT).unwrap();
        assert_eq!(at_frr.next_hop, bird_ip);
        let at_bird = bird.wait_route(net("100.64.3.0/24"), WAIT).unwrap();
        assert_eq!(at_bird.next_hop, frr_ip);
        let st = rt.block_on(sp.peer(frr_ip)).unwrap();
        assert_eq!((st.accepted, st.advertised), (1, 1), "{st:?}");
        bird.withdraw(net("100.64.2.0/24")).unwrap();
        frr.wait_no_route(net("100.64.2.0/24"), WAIT).unwrap();
        rt.block_on(sp.shutdown());
    })
    .expect("run in namespace");
}

macro_rules! interop {
    ($($name:ident => $body:expr;)*) => {$(
        #[test]
        #[ignore = "needs root, network namespaces and bird/gobgpd/frr: run with --ignored"]
        fn $name() {
            $body
        }
    )*};
}

interop! {
    we_reflect_routes_between_bird_and_frr_clients => reflector_for_bird_and_frr_clients();
    bird_ebgp_ipv4_routes_withdrawals_refresh_and_restart => exchange(Case { kind: Kind::Bird, ibgp: false, v6: false }, true);
    bird_ibgp_ipv4 => exchange(Case { kind: Kind::Bird, ibgp: true, v6: false }, false);
    bird_ebgp_ipv6 => exchange(Case { kind: Kind::Bird, ibgp: false, v6: true }, false);
    bird_ibgp_ipv6 => exchange(Case { kind: Kind::Bird, ibgp: true, v6: true }, false);
    bird_hold_timer_expires_when_the_peer_stops_answering => hold_timer(Kind::Bird);
    bird_and_we_both_connect_and_collision_detection_keeps_one_session => collision(Kind::Bird);
    gobgp_ebgp_ipv4_routes_withdrawals_refresh_and_restart => exchange(Case { kind: Kind::Gobgp, ibgp: false, v6: false }, true);
    gobgp_ibgp_ipv4 => exchange(Case { kind: Kind::Gobgp, ibgp: true, v6: false }, false);
    gobgp_ebgp_ipv6 => exchange(Case { kind: Kind::Gobgp, ibgp: false, v6: true }, false);
    gobgp_ibgp_ipv6 => exchange(Case { kind: Kind::Gobgp, ibgp: true, v6: true }, false);
    gobgp_hold_timer_expires_when_the_peer_stops_answering => hold_timer(Kind::Gobgp);
    frr_ebgp_ipv4_routes_withdrawals_refresh_and_restart => exchange(Case { kind: Kind::Frr, ibgp: false, v6: false }, true);
    frr_ibgp_ipv4 => exchange(Case { kind: Kind::Frr, ibgp: true, v6: false }, false);
    frr_ebgp_ipv6 => exchange(Case { kind: Kind::Frr, ibgp: false, v6: true }, false);
    frr_ibgp_ipv6 => exchange(Case { kind: Kind::Frr, ibgp: true, v6: true }, false);
    frr_hold_timer_expires_when_the_peer_stops_answering => hold_timer(Kind::Frr);
    frr_and_we_both_connect_and_collision_detection_keeps_one_session => collision(Kind::Frr);
    gobgp_and_we_both_connect_and_collision_detection_keeps_one_session => collision(Kind::Gobgp);
}
