//! Interop for issue 8 in network namespaces: graceful restart both ways with BIRD,
//! TCP MD5 with BIRD, RFC 7606 against a raw test speaker while BIRD stays up, and
//! Margay as a client of a BIRD route reflector.
//!
//! Same conventions as `interop.rs`: our speaker runs on a tokio runtime created in
//! its namespace, daemons in theirs, everything torn down by the harness's guards.
//! Root, namespaces and bird/frr are needed, so the tests are `#[ignore]`d; run them
//! with `cargo nextest run -p margay-bgp --run-ignored all`.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use margay_bgp::fsm::State;
use margay_bgp::rib::RouteChange;
use margay_bgp::wire::{Codec, Family, Message, Open, Prefix};
use margay_bgp::{GracefulRestart, PeerConfig, PeerStatus, Speaker, SpeakerConfig};
use margay_harness::fixtures::{BgpConfig, BgpNeighbor, BgpSpeaker, Bird, Frr};
use margay_harness::{Bridge, Netns, Pair};
use tokio::runtime::Runtime;
use tokio::sync::mpsc::UnboundedReceiver;

const OUR_AS: u32 = 65001;
const BIRD_AS: u32 = 65002;
const WAIT: Duration = Duration::from_secs(40);

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn speaker(rt: &Runtime, ip: IpAddr, gr: GracefulRestart) -> Speaker {
    rt.block_on(Speaker::start_with(
        SpeakerConfig {
            local_as: OUR_AS,
            router_id: Ipv4Addr::new(198, 18, 0, 1),
            listen: Some(SocketAddr::new(ip, 179)),
            cluster_id: None,
        },
        gr,
    ))
    .expect("speaker starts")
}

fn bird_peer(addr: IpAddr) -> PeerConfig {
    let mut p = PeerConfig::new(addr, BIRD_AS);
    p.local_addr = Some(Pair::A_V4);
    p.connect_retry = Duration::from_secs(1);
    p.families = vec![Family::Ipv4Unicast];
    p
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

/// Every change that arrives within `d`.
fn changes_within(
    rt: &Runtime,
    rx: &mut UnboundedReceiver<Vec<RouteChange>>,
    d: Duration,
) -> Vec<RouteChange> {
    rt.block_on(async {
        let mut v = Vec::new();
        let deadline = tokio::time::Instant::now() + d;
        while let Ok(Some(b)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            v.extend(b);
        }
        v
    })
}

/// Waits for a change matching `f`; every change seen on the way is returned too.
fn wait_change(
    rt: &Runtime,
    rx: &mut UnboundedReceiver<Vec<RouteChange>>,
    what: &str,
    f: impl Fn(&RouteChange) -> bool,
) -> Vec<RouteChange> {
    rt.block_on(async {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut seen = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(batch)) => {
                    let hit = batch.iter().any(&f);
                    seen.extend(batch);
                    if hit {
                        return seen;
                    }
                }
                Ok(None) => panic!("change stream ended waiting for {what}"),
                Err(_) => panic!("timed out waiting for {what}; seen {seen:?}"),
            }
        }
    })
}

fn is_add(p: IpNet) -> impl Fn(&RouteChange) -> bool {
    let p: Prefix = p.into();
    move |c| matches!(c, RouteChange::Add { prefix, .. } | RouteChange::Replace { prefix, .. } if *prefix == p)
}

fn is_withdraw(p: IpNet) -> impl Fn(&RouteChange) -> bool {
    let p: Prefix = p.into();
    move |c| matches!(c, RouteChange::Withdraw { prefix } if *prefix == p)
}

fn bird_config(gr: bool) -> BgpConfig {
    let mut c = BgpConfig::new(Ipv4Addr::new(198, 18, 0, 2), BIRD_AS, Pair::B_V4)
        .neighbor(BgpNeighbor::new(Pair::A_V4, OUR_AS).passive())
        .originate(net("100.64.2.0/24"));
    if gr {
        c = c.graceful_restart(120);
    }
    c
}

/// Asserts, for `d`, every 100 ms, that BIRD has learned each of `prefixes`.
fn bird_keeps(bird: &Bird, prefixes: &[IpNet], d: Duration, when: &str) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        let routes = bird.learned_routes().unwrap();
        for p in prefixes {
            assert!(routes.contains_key(p), "{when}: BIRD lost {p}: {routes:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Margay restarts (stop_for_restart, then a new speaker with the R bit): BIRD keeps
/// our routes all along, stale; only the route we did not re-announce goes, at our
/// End-of-RIB. A watcher polls BIRD's table every 100 ms from the stop to the end and
/// fails the test if the re-announced route is ever missing.
fn we_restart_and_bird_keeps_our_routes() {
    use std::sync::atomic::{AtomicBool, Ordering};
    margay_harness::require_root().expect("interop tests need root");
    let pair = Pair::new("grus").expect("namespaces");
    let bird = Bird::start(&pair.b, bird_config(true)).expect("start bird");
    let (kept, dropped) = (net("100.64.1.0/24"), net("100.64.9.0/24"));
    pair.a
        .run(|| {
            let rt = runtime();
            let sp = speaker(&rt, Pair::A_V4, GracefulRestart::default());
            rt.block_on(sp.add_peer(bird_peer(Pair::B_V4))).unwrap();
            sp.originate(kept, None).unwrap();
            sp.originate(dropped, None).unwrap();
            sp.initial_routes_done().unwrap();
            bird.wait_established(Pair::A_V4, WAIT).unwrap();
            bird.wait_route(kept, WAIT).unwrap();
            bird.wait_route(dropped, WAIT).unwrap();
            let st = rt.block_on(sp.peer(Pair::B_V4)).unwrap();
            assert!(st.since.is_some(), "{st:?}");

            let done = AtomicBool::new(false);
            std::thread::scope(|scope| {
                let watcher = scope.spawn(|| {
                    let mut polls = 0u32;
                    while !done.load(Ordering::Relaxed) {
                        let routes = bird.learned_routes().unwrap();
                        assert!(
                            routes.contains_key(&kept),
                            "BIRD lost {kept} during our restart: {routes:?}"
                        );
                        polls += 1;
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    polls
                });

                // Stop for a restart: no Cease, so BIRD keeps both routes.
                rt.block_on(sp.stop_for_restart());
                bird_keeps(
                    &bird,
                    &[kept, dropped],
                    Duration::from_secs(3),
                    "while we are down",
                );

                // Back, with the R bit; one route re-announced, End-of-RIB held back.
                let sp = speaker(
                    &rt,
                    Pair::A_V4,
                    GracefulRestart {
                        restarting: true,
                        ..GracefulRestart::default()
                    },
                );
                rt.block_on(sp.add_peer(bird_peer(Pair::B_V4))).unwrap();
                sp.originate(kept, None).unwrap();
                wait_status(&rt, &sp, Pair::B_V4, "re-established", |s| {
                    s.state == State::Established
                });
                bird.wait_established(Pair::A_V4, WAIT).unwrap();
                bird_keeps(
                    &bird,
                    &[kept, dropped],
                    Duration::from_secs(2),
                    "before our End-of-RIB",
                );

                // End-of-RIB: BIRD sweeps the stale route we did not re-announce.
                sp.initial_routes_done().unwrap();
                bird.wait_no_route(dropped, WAIT).unwrap();
                bird_keeps(&bird, &[kept], Duration::from_secs(1), "after End-of-RIB");
                done.store(true, Ordering::Relaxed);
                let polls = watcher.join().expect("watcher");
                assert!(polls > 20, "the watcher polled {polls} times");
                rt.block_on(sp.shutdown());
            });
        })
        .expect("run in namespace");
}

/// BIRD is killed (no NOTIFICATION) and restarted with `-R`: we keep its route as
/// stale, emit no withdrawal, and it is fresh again after BIRD's End-of-RIB.
fn bird_restarts_and_we_keep_its_routes() {
    margay_harness::require_root().expect("interop tests need root");
    let pair = Pair::new("grbird").expect("namespaces");
    let mut bird = Bird::start(&pair.b, bird_config(true)).expect("start bird");
    let theirs = net("100.64.2.0/24");
    pair.a
        .run(|| {
            let rt = runtime();
            let sp = speaker(&rt, Pair::A_V4, GracefulRestart::default());
            rt.block_on(sp.add_peer(bird_peer(Pair::B_V4))).unwrap();
            sp.initial_routes_done().unwrap();
            let mut rx = sp.subscribe().unwrap();
            wait_change(&rt, &mut rx, "BIRD's route", is_add(theirs));

            bird.kill().unwrap();
            let st = wait_status(&rt, &sp, Pair::B_V4, "BIRD's session gone", |s| {
                s.state != State::Established
            });
            let st = if st.restarting {
                st
            } else {
                wait_status(&rt, &sp, Pair::B_V4, "restart mode", |s| s.restarting)
            };
            assert_eq!((st.stale, st.accepted), (1, 1), "{st:?}");
            let c = changes_within(&rt, &mut rx, Duration::from_secs(2));
            assert!(!c.iter().any(is_withdraw(theirs)), "{c:?}");

            let bird = Bird::start_recovering(&pair.b, bird_config(true)).expect("restart bird");
            bird.wait_established(Pair::A_V4, WAIT).unwrap();
            let st = wait_status(&rt, &sp, Pair::B_V4, "BIRD's End-of-RIB", |s| {
                s.state == State::Established && !s.restarting
            });
            assert_eq!((st.stale, st.accepted), (0, 1), "{st:?}");
            let c = changes_within(&rt, &mut rx, Duration::from_secs(1));
            assert!(!c.iter().any(is_withdraw(theirs)), "{c:?}");
            rt.block_on(sp.shutdown());
            drop(bird);
        })
        .expect("run in namespace");
}

/// TCP MD5: the same password on both sides gives a session; a different one none,
/// and the peer's status says why it may be failing, whether we connect (timeouts)
/// or wait for BIRD to connect (nothing arrives).
fn md5_with_bird() {
    margay_harness::require_root().expect("interop tests need root");
    for (ours, established, we_passive) in [
        ("margay-md5", true, false),
        ("wrong", false, false),
        ("wrong", false, true),
    ] {
        let pair = Pair::new("md5").expect("namespaces");
        let mut cfg = bird_config(false);
        cfg.neighbors[0] = cfg.neighbors[0].clone().password("margay-md5");
        cfg.neighbors[0].passive = !we_passive;
        let bird = Bird::start(&pair.b, cfg).expect("start bird");
        pair.a
            .run(|| {
                let rt = runtime();
                let sp = speaker(&rt, Pair::A_V4, GracefulRestart::default());
                let mut p = bird_peer(Pair::B_V4);
                p.password = Some(ours.to_owned());
                p.passive = we_passive;
                rt.block_on(sp.add_peer(p)).unwrap();
                if established {
                    bird.wait_established(Pair::A_V4, WAIT).unwrap();
                    // Routes flow over the signed session.
                    wait_status(&rt, &sp, Pair::B_V4, "BIRD's route", |s| {
                        s.state == State::Established && s.accepted == 1
                    });
                } else {
                    let st = wait_status(&rt, &sp, Pair::B_V4, "MD5 hint", |s| {
                        s.last_error.as_deref().unwrap_or("").contains("MD5")
                    });
                    assert_ne!(st.state, State::Established, "{st:?}");
                    assert!(
                        bird.wait_established(Pair::A_V4, Duration::from_secs(1))
                            .is_err()
                    );
                }
                rt.block_on(sp.shutdown());
            })
            .expect("run in namespace");
    }
}

// ---- A raw test speaker for RFC 7606 ----------------------------------------------

/// A BGP speaker written by hand: OPEN and KEEPALIVE, then whatever bytes a test
/// sends. Hold time 0, so that it never has to send keepalives.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
}

const RAW_AS: u32 = 65003;

impl Raw {
    fn connect(s: TcpStream) -> Raw {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut r = Raw { s, buf: Vec::new() };
        let open = Open::new(
            RAW_AS,
            0,
            Ipv4Addr::new(198, 18, 0, 3),
            &[Family::Ipv4Unicast],
        );
        r.send(&Message::Open(open).to_bytes(Codec::default()));
        assert!(matches!(r.read(), Message::Open(_)));
        r.send(&Message::Keepalive.to_bytes(Codec::default()));
        assert_eq!(r.read(), Message::Keepalive);
        r
    }
    fn send(&mut self, b: &[u8]) {
        self.s.write_all(b).unwrap();
    }
    /// The next message (KEEPALIVEs included).
    fn read(&mut self) -> Message {
        loop {
            if let Ok(Some((_, len))) = margay_bgp::wire::frame(&self.buf) {
                let m = Message::decode(&self.buf[..len], Codec::default()).unwrap();
                self.buf.drain(..len);
                return m;
            }
            let mut chunk = [0u8; 4096];
            let n = self.s.read(&mut chunk).expect("read from our speaker");
            assert!(n > 0, "our speaker closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// An UPDATE with these raw path attributes and one IPv4 prefix /24 `a.b.c.0`.
fn update(attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut body = vec![0, 0];
    body.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    body.extend_from_slice(attrs);
    body.extend_from_slice(nlri);
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    m.push(2);
    m.extend_from_slice(&body);
    m
}

/// ORIGIN IGP, AS_PATH 65003 (4-octet), NEXT_HOP 198.18.0.3.
fn good() -> Vec<u8> {
    vec![
        0x40, 1, 1, 0, // ORIGIN
        0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xeb, // AS_PATH: AS_SEQUENCE (65003)
        0x40, 3, 4, 198, 18, 0, 3, // NEXT_HOP
    ]
}

fn nlri24(c: u8) -> Vec<u8> {
    vec![24, 100, 64, c]
}

/// A raw speaker sends malformed UPDATEs: treat-as-withdraw, attribute discard and,
/// for an unparseable NLRI, a session reset of that session only, while the BIRD
/// peer's session and routes stay.
fn malformed_updates_are_contained() {
    margay_harness::require_root().expect("interop tests need root");
    let ours_ip: IpAddr = "198.18.0.1".parse().unwrap();
    let bird_ip: IpAddr = "198.18.0.2".parse().unwrap();
    let raw_ip: IpAddr = "198.18.0.3".parse().unwrap();
    let br = Bridge::new().expect("bridge");
    let ours = Netns::with_tag("r7606").unwrap();
    let nb = Netns::with_tag("r7606b").unwrap();
    let nr = Netns::with_tag("r7606r").unwrap();
    br.attach(&ours, "eth0", &[net("198.18.0.1/24")]).unwrap();
    br.attach(&nb, "eth0", &[net("198.18.0.2/24")]).unwrap();
    br.attach(&nr, "eth0", &[net("198.18.0.3/24")]).unwrap();
    let bird = Bird::start(&nb, bird_config(false)).expect("start bird");
    let bird_route = net("100.64.2.0/24");
    ours.run(|| {
        let rt = runtime();
        let sp = speaker(&rt, ours_ip, GracefulRestart::default());
        rt.block_on(sp.add_peer(bird_peer(bird_ip))).unwrap();
        let mut raw_peer = PeerConfig::new(raw_ip, RAW_AS);
        raw_peer.passive = true;
        raw_peer.families = vec![Family::Ipv4Unicast];
        rt.block_on(sp.add_peer(raw_peer)).unwrap();
        sp.originate(net("100.64.1.0/24"), None).unwrap();
        sp.initial_routes_done().unwrap();
        let mut rx = sp.subscribe().unwrap();
        bird.wait_established(ours_ip, WAIT).unwrap();
        bird.wait_route(net("100.64.1.0/24"), WAIT).unwrap();
        let mut seen = wait_change(&rt, &mut rx, "BIRD's route", is_add(bird_route));

        let stream = nr
            .run(|| TcpStream::connect(SocketAddr::new(ours_ip, 179)))
            .unwrap()
            .expect("raw speaker connects");
        let mut raw = Raw::connect(stream);
        wait_status(&rt, &sp, raw_ip, "raw session Established", |s| {
            s.state == State::Established
        });

        // 1. A good route.
        raw.send(&update(&good(), &nlri24(30)));
        seen.extend(wait_change(
            &rt,
            &mut rx,
            "good route",
            is_add(net("100.64.30.0/24")),
        ));

        // 2. The same route with a MED of 3 octets: treat-as-withdraw.
        let mut bad_len = good();
        bad_len.extend_from_slice(&[0x80, 4, 3, 0, 0, 1]);
        raw.send(&update(&bad_len, &nlri24(30)));
        seen.extend(wait_change(
            &rt,
            &mut rx,
            "treat-as-withdraw of a bad attribute length",
            is_withdraw(net("100.64.30.0/24")),
        ));

        // 3. An unknown well-known attribute (type 99, not optional): not installed.
        let mut unknown = good();
        unknown.extend_from_slice(&[0x40, 99, 2, 1, 2]);
        raw.send(&update(&unknown, &nlri24(31)));
        // 4. A malformed ATOMIC_AGGREGATE (1 octet): discarded, route used.
        let mut atomic = good();
        atomic.extend_from_slice(&[0x40, 6, 1, 0]);
        raw.send(&update(&atomic, &nlri24(32)));
        seen.extend(wait_change(
            &rt,
            &mut rx,
            "route with a discarded attribute",
            is_add(net("100.64.32.0/24")),
        ));
        let st = rt.block_on(sp.peer(raw_ip)).unwrap();
        assert_eq!(st.state, State::Established, "{st:?}");
        assert_eq!(st.accepted, 1, "only 100.64.32.0/24: {st:?}");
        assert!(!seen.iter().any(is_add(net("100.64.31.0/24"))), "{seen:?}");

        // 5. An NLRI that cannot be parsed (prefix length 33): session reset, with
        // NOTIFICATION 3/10 to the raw speaker, its routes withdrawn.
        raw.send(&update(&good(), &[33, 100, 64, 33, 0, 0]));
        let n = loop {
            if let Message::Notification(n) = raw.read() {
                break n;
            }
        };
        assert_eq!((n.code, n.subcode), (3, 10), "{n}");
        wait_change(
            &rt,
            &mut rx,
            "raw speaker's routes withdrawn",
            is_withdraw(net("100.64.32.0/24")),
        );

        // BIRD's session and routes were never disturbed.
        let st = rt.block_on(sp.peer(bird_ip)).unwrap();
        assert_eq!(st.state, State::Established, "{st:?}");
        assert_eq!(st.accepted, 1, "{st:?}");
        bird.wait_established(ours_ip, Duration::from_secs(1))
            .unwrap();
        bird.wait_route(net("100.64.1.0/24"), Duration::from_secs(1))
            .unwrap();
        let c = changes_within(&rt, &mut rx, Duration::from_millis(500));
        assert!(
            !seen.iter().chain(&c).any(is_withdraw(bird_route)),
            "{seen:?} {c:?}"
        );
        rt.block_on(sp.shutdown());
    })
    .expect("run in namespace");
}

/// Margay as a route-reflector client of BIRD, next to an FRR client: each client
/// learns the other's route through BIRD with the next hop unchanged.
fn we_are_a_client_of_a_bird_reflector() {
    margay_harness::require_root().expect("interop tests need root");
    const AS: u32 = 64512;
    let ours_ip: IpAddr = "198.18.0.1".parse().unwrap();
    let rr_ip: IpAddr = "198.18.0.2".parse().unwrap();
    let frr_ip: IpAddr = "198.18.0.3".parse().unwrap();
    let br = Bridge::new().expect("bridge");
    let ours = Netns::with_tag("rrc").unwrap();
    let nb = Netns::with_tag("rrcbird").unwrap();
    let nf = Netns::with_tag("rrcfrr").unwrap();
    br.attach(&ours, "eth0", &[net("198.18.0.1/24")]).unwrap();
    br.attach(&nb, "eth0", &[net("198.18.0.2/24")]).unwrap();
    br.attach(&nf, "eth0", &[net("198.18.0.3/24")]).unwrap();
    let rr = BgpConfig::new(Ipv4Addr::new(198, 18, 0, 2), AS, rr_ip)
        .neighbor(BgpNeighbor::new(ours_ip, AS).passive().rr_client())
        .neighbor(BgpNeighbor::new(frr_ip, AS).passive().rr_client());
    let bird = Bird::start(&nb, rr).expect("start bird");
    let frr = Frr::start(
        &nf,
        BgpConfig::new(Ipv4Addr::new(198, 18, 0, 3), AS, frr_ip)
            .neighbor(BgpNeighbor::new(rr_ip, AS))
            .originate(net("100.64.3.0/24")),
    )
    .expect("start frr");
    ours.run(|| {
        let rt = runtime();
        let sp = rt
            .block_on(Speaker::start(SpeakerConfig {
                local_as: AS,
                router_id: Ipv4Addr::new(198, 18, 0, 1),
                listen: Some(SocketAddr::new(ours_ip, 179)),
                cluster_id: None,
            }))
            .unwrap();
        let mut p = PeerConfig::new(rr_ip, AS);
        p.local_addr = Some(ours_ip);
        p.connect_retry = Duration::from_secs(1);
        p.families = vec![Family::Ipv4Unicast];
        rt.block_on(sp.add_peer(p)).unwrap();
        let mut rx = sp.subscribe().unwrap();
        sp.originate(net("100.64.1.0/24"), None).unwrap();
        bird.wait_established(ours_ip, WAIT).unwrap();
        frr.wait_established(rr_ip, WAIT).unwrap();
        let seen = wait_change(
            &rt,
            &mut rx,
            "FRR's route via BIRD",
            is_add(net("100.64.3.0/24")),
        );
        assert!(
            seen.contains(&RouteChange::Add {
                prefix: net("100.64.3.0/24").into(),
                next_hop: frr_ip
            }),
            "next hop unchanged: {seen:?}"
        );
        let at_frr = frr.wait_route(net("100.64.1.0/24"), WAIT).unwrap();
        assert_eq!(at_frr.next_hop, ours_ip);
        sp.withdraw(net("100.64.1.0/24")).unwrap();
        frr.wait_no_route(net("100.64.1.0/24"), WAIT).unwrap();
        rt.block_on(sp.shutdown());
    })
    .expect("run in namespace");
}

macro_rules! interop {
    ($($name:ident => $body:expr;)*) => {$(
        #[test]
        #[ignore = "needs root, network namespaces and bird/frr: run with --run-ignored all"]
        fn $name() {
            $body
        }
    )*};
}

interop! {
    graceful_restart_we_restart_and_bird_keeps_our_routes => we_restart_and_bird_keeps_our_routes();
    graceful_restart_bird_restarts_and_we_keep_its_routes => bird_restarts_and_we_keep_its_routes();
    md5_right_password_up_wrong_password_no_session => md5_with_bird();
    rfc7606_malformed_updates_from_a_raw_speaker_are_contained => malformed_updates_are_contained();
    we_are_a_route_reflector_client_of_bird => we_are_a_client_of_a_bird_reflector();
}
