//! Golden replays of recorded sessions.
//!
//! `tests/golden/*.hex` are the bytes BIRD, GoBGP and FRR sent us in real sessions
//! (recorded by `record_sessions` below, which needs root and the daemons). The
//! replay feeds them through our codec, the session FSM and the RIB, as the driver
//! would, and renders a transcript: every message received, the actions the FSM took,
//! the RIB's paths and what an iBGP peer would be sent. The transcript must equal
//! `tests/golden/*.golden`; `MARGAY_BLESS=1 cargo test -p margay-bgp --test golden`
//! rewrites the golden files after a deliberate change (review the diff), and
//! `MARGAY_RECORD=1 cargo test -p margay-bgp --test golden -- --ignored` records new
//! sessions.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use margay_bgp::fsm::{Action, ConnId, Direction, Event, Session, SessionConfig};
use margay_bgp::policy::PeerPolicy;
use margay_bgp::rib::{NextHopMode, PeerSettings, PeerUp, Rib, RibConfig};
use margay_bgp::wire::{Codec, Family, Message, MpNlri, Update, frame};

const OUR_AS: u32 = 65001;
const OUR_ID: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn summarize(m: &Message) -> String {
    match m {
        Message::Open(o) => format!(
            "OPEN as={} hold={} id={} caps={:?}",
            o.asn(),
            o.hold_time,
            o.bgp_id,
            o.capabilities
        ),
        Message::Update(u) => summarize_update(u),
        Message::Notification(n) => format!("NOTIFICATION {n}"),
        Message::Keepalive => "KEEPALIVE".into(),
        Message::RouteRefresh(r) => format!("ROUTE-REFRESH afi={} safi={}", r.afi, r.safi),
    }
}

fn summarize_update(u: &Update) -> String {
    if let Some(afi) = u.end_of_rib() {
        return format!("UPDATE End-of-RIB afi={afi}");
    }
    let mut s = String::from("UPDATE");
    if !u.withdrawn.is_empty() {
        let _ = write!(s, " withdrawn={:?}", u.withdrawn);
    }
    if let Some(a) = &u.attrs {
        let _ = write!(
            s,
            " origin={:?} as_path={:?} next_hop={:?} med={:?} local_pref={:?} communities={:?} originator={:?} cluster={:?} unknown={}",
            a.origin,
            a.as_path
                .segments
                .iter()
                .map(|x| (x.kind, x.asns.clone()))
                .collect::<Vec<_>>(),
            a.next_hop,
            a.med,
            a.local_pref,
            a.communities,
            a.originator_id,
            a.cluster_list,
            a.unknown.len()
        );
    }
    if !u.nlri.is_empty() {
        let _ = write!(s, " nlri={:?}", u.nlri);
    }
    if let Some(r) = &u.mp_reach {
        let _ = write!(s, " mp_reach(nh={:?} nlri={})", r.next_hop, nlri(&r.nlri));
    }
    if let Some(w) = &u.mp_unreach {
        let _ = write!(s, " mp_unreach({})", nlri(&w.withdrawn));
    }
    s
}

fn nlri(n: &MpNlri) -> String {
    match n {
        MpNlri::V4(v) => format!("{v:?}"),
        MpNlri::V6(v) => format!("{v:?}"),
    }
}

fn summarize_action(a: &Action) -> String {
    match a {
        Action::Send(c, m) => format!(
            "send {:?}#{} {}",
            c.dir,
            c.n,
            summarize(m).split(" caps=").next().unwrap_or("")
        ),
        Action::Established(n) => format!(
            "established hold={} keepalive={} families={:?} four_octet={} route_refresh={}",
            n.hold_time, n.keepalive, n.families, n.codec.four_octet_as, n.route_refresh
        ),
        other => format!("{other:?}"),
    }
}

fn split_messages(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut rest = bytes;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (_, len) = frame(rest)
            .expect("recorded stream frames")
            .expect("whole message");
        out.push(rest[..len].to_vec());
        rest = &rest[len..];
    }
    out
}

/// Replays one recording and returns its transcript.
fn replay(name: &str, remote_as: u32) -> String {
    let hex = std::fs::read_to_string(dir().join(format!("{name}.hex"))).expect("recording");
    let mut bytes = Vec::new();
    for line in hex.lines().filter(|l| !l.starts_with('#')) {
        let l = line.trim();
        for i in (0..l.len()).step_by(2) {
            bytes.push(u8::from_str_radix(&l[i..i + 2], 16).expect("hex"));
        }
    }
    let mut t = String::new();
    let mut cfg = SessionConfig::new(OUR_AS, remote_as, OUR_ID);
    cfg.families = Family::ALL.to_vec();
    let mut s = Session::new(cfg);
    let conn = ConnId {
        dir: Direction::Outgoing,
        n: 1,
    };
    let mut rib = Rib::new(RibConfig {
        local_as: OUR_AS,
        router_id: OUR_ID,
        cluster_id: None,
    });
    rib.track_changes(true);
    let their = rib.add_peer(PeerSettings {
        addr: IpAddr::from([198, 18, 0, 2]),
        remote_as,
        rr_client: false,
        next_hop: NextHopMode::OwnAddress,
        policy: PeerPolicy::default(),
    });
    let ibgp = rib.add_peer(PeerSettings {
        addr: IpAddr::from([198, 18, 0, 3]),
        remote_as: OUR_AS,
        rr_client: false,
        next_hop: NextHopMode::OwnAddress,
        policy: PeerPolicy::default(),
    });
    rib.peer_up(
        ibgp,
        PeerUp {
            router_id: Ipv4Addr::new(198, 18, 0, 3),
            local_addr: IpAddr::from(OUR_ID),
            codec: Codec::default(),
            families: Family::ALL.to_vec(),
        },
    );
    let feed = |s: &mut Session, t: &mut String, ev: Event| {
        let _ = writeln!(
            t,
            "  event {}",
            format!("{ev:?}").split('(').next().unwrap_or("")
        );
        for a in s.handle(ev) {
            let _ = writeln!(t, "    {}", summarize_action(&a));
        }
    };
    feed(&mut s, &mut t, Event::ManualStart);
    feed(&mut s, &mut t, Event::TcpCrAcked(conn));
    let mut codec = Codec::default();
    let mut up = false;
    for raw in split_messages(&bytes) {
        let m = Message::decode(&raw, codec).expect("recorded message decodes");
        let _ = writeln!(t, "rx {}", summarize(&m));
        // Encoding what we decoded gives back the same message (attribute order and
        // length encodings may differ; the decoded form must not).
        let again = Message::decode(&m.to_bytes(codec), codec).expect("re-encoded message decodes");
        assert_eq!(again, m, "re-encoding changed {name}");
        match m {
            Message::Open(o) => {
                codec.four_octet_as = o.four_octet_as();
                feed(&mut s, &mut t, Event::BgpOpen(conn, o));
            }
            Message::Keepalive => feed(&mut s, &mut t, Event::KeepAliveMsg(conn)),
            Message::Notification(n) => feed(&mut s, &mut t, Event::NotifMsg(conn, n)),
            Message::Update(u) => {
                feed(&mut s, &mut t, Event::UpdateMsg(conn));
                rib.apply_update(their, &u);
            }
            Message::RouteRefresh(_) => feed(&mut s, &mut t, Event::UpdateMsg(conn)),
        }
        if !up && let Some(n) = s.negotiated() {
            up = true;
            rib.peer_up(
                their,
                PeerUp {
                    router_id: n.remote.bgp_id,
                    local_addr: IpAddr::from(OUR_ID),
                    codec: n.codec,
                    families: n.families.clone(),
                },
            );
        }
        let f = rib.flush();
        for c in f.changes {
            let _ = writeln!(t, "  fib {c:?}");
        }
        for o in f.outputs {
            for raw in split_messages(&o.data) {
                let m = Message::decode(&raw, Codec::default()).expect("our output decodes");
                let _ = writeln!(t, "  to {:?} {}", o.peers, summarize(&m));
            }
        }
    }
    t
}

fn check(name: &str, remote_as: u32) {
    let got = replay(name, remote_as);
    let path = dir().join(format!("{name}.golden"));
    if std::env::var_os("MARGAY_BLESS").is_some() {
        std::fs::write(&path, &got).expect("write golden");
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        got == want,
        "transcript of {name} differs from {} (MARGAY_BLESS=1 to accept):\n{got}",
        path.display()
    );
}

#[test]
fn bird_ebgp_ipv4_session_replays_as_recorded() {
    check("bird_ebgp_ipv4", 65002);
}

#[test]
fn bird_ebgp_ipv6_session_replays_as_recorded() {
    check("bird_ebgp_ipv6", 65002);
}

#[test]
fn gobgp_ebgp_ipv4_session_replays_as_recorded() {
    check("gobgp_ebgp_ipv4", 65002);
}

#[test]
fn gobgp_ebgp_ipv6_session_replays_as_recorded() {
    check("gobgp_ebgp_ipv6", 65002);
}

#[test]
fn frr_ebgp_ipv4_session_replays_as_recorded() {
    check("frr_ebgp_ipv4", 65002);
}

#[test]
fn frr_ebgp_ipv6_session_replays_as_recorded() {
    check("frr_ebgp_ipv6", 65002);
}

/// Records the sessions replayed above (with `MARGAY_RECORD=1`, then bless the
/// transcripts): connects to each daemon from a namespace,
/// sends our OPEN and KEEPALIVE, keeps everything the daemon sends while it
/// announces three prefixes and then withdraws one, and writes it as hex.
#[test]
#[ignore = "records new golden inputs: needs root, network namespaces and the daemons"]
fn record_sessions() {
    use margay_harness::Pair;
    use margay_harness::fixtures::{BgpConfig, BgpNeighbor, BgpSpeaker, Bird, Frr, Gobgp};
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};

    // Running the ignored set must not silently replace the recordings.
    if std::env::var_os("MARGAY_RECORD").is_none() {
        eprintln!("record_sessions: set MARGAY_RECORD=1 to re-record tests/golden/*.hex");
        return;
    }
    margay_harness::require_root().expect("root");
    for kind in ["bird", "gobgp", "frr"] {
        for v6 in [false, true] {
            let pair = Pair::new("bgprec").expect("namespaces");
            let (ours, theirs) = if v6 {
                (Pair::A_V6, Pair::B_V6)
            } else {
                (Pair::A_V4, Pair::B_V4)
            };
            let prefixes: Vec<ipnet::IpNet> = if v6 {
                vec![
                    "fd00:64:2::/64".parse().unwrap(),
                    "fd00:64:3::/48".parse().unwrap(),
                    "fd00:64:4::1/128".parse().unwrap(),
                ]
            } else {
                vec![
                    "100.64.2.0/24".parse().unwrap(),
                    "100.64.3.0/26".parse().unwrap(),
                    "100.64.4.1/32".parse().unwrap(),
                ]
            };
            let mut cfg = BgpConfig::new(Ipv4Addr::new(198, 18, 0, 2), 65002, theirs)
                .neighbor(BgpNeighbor::new(ours, OUR_AS).passive())
                .ipv6(v6);
            cfg.ipv4_unicast = !v6;
            for p in &prefixes {
                cfg = cfg.originate(*p);
            }
            let mut d: Box<dyn BgpSpeaker + Send + Sync> = match kind {
                "bird" => Box::new(Bird::start(&pair.b, cfg).unwrap()),
                "gobgp" => Box::new(Gobgp::start(&pair.b, cfg).unwrap()),
                _ => Box::new(Frr::start(&pair.b, cfg).unwrap()),
            };
            // A daemon that has just started may refuse the first connection (FRR
            // answers an FSM error until the neighbour is set up): retry a few times.
            let mut attempt = 0;
            let bytes = loop {
                attempt += 1;
                let bytes = pair
                    .a
                    .run(|| {
                        let mut sock = std::net::TcpStream::connect_timeout(
                            &(theirs, 179).into(),
                            Duration::from_secs(10),
                        )
                        .unwrap();
                        sock.set_read_timeout(Some(Duration::from_millis(200)))
                            .unwrap();
                        let fams = if v6 {
                            vec![Family::Ipv6Unicast]
                        } else {
                            vec![Family::Ipv4Unicast]
                        };
                        let open =
                            Message::Open(margay_bgp::wire::Open::new(OUR_AS, 90, OUR_ID, &fams));
                        sock.write_all(&open.to_bytes(Codec::default())).unwrap();
                        let mut got = Vec::new();
                        let mut buf = [0u8; 65536];
                        let mut read_for =
                            |sock: &mut std::net::TcpStream, got: &mut Vec<u8>, dur: Duration| {
                                let end = Instant::now() + dur;
                                while Instant::now() < end {
                                    match sock.read(&mut buf) {
                                        Ok(0) => break,
                                        Ok(n) => got.extend_from_slice(&buf[..n]),
                                        Err(_) => {}
                                    }
                                }
                            };
                        read_for(&mut sock, &mut got, Duration::from_secs(1));
                        if got.get(18) == Some(&3) {
                            return got;
                        }
                        let _ = sock.write_all(&Message::Keepalive.to_bytes(Codec::default()));
                        read_for(&mut sock, &mut got, Duration::from_secs(4));
                        d.withdraw(prefixes[2]).unwrap();
                        read_for(&mut sock, &mut got, Duration::from_secs(4));
                        let bye = Message::Notification(margay_bgp::wire::Notification::cease(2));
                        let _ = sock.write_all(&bye.to_bytes(Codec::default()));
                        got
                    })
                    .unwrap();
                let refused = bytes.get(18) == Some(&3);
                if !refused || attempt == 5 {
                    break bytes;
                }
                std::thread::sleep(Duration::from_secs(2));
            };
            let mut hex = format!(
                "# {kind} eBGP session over IPv{}: every byte the daemon sent\n",
                if v6 { 6 } else { 4 }
            );
            for m in split_messages(&bytes) {
                hex.push_str(&m.iter().map(|b| format!("{b:02x}")).collect::<String>());
                hex.push('\n');
            }
            let name = format!("{kind}_ebgp_ipv{}", if v6 { 6 } else { 4 });
            std::fs::write(dir().join(format!("{name}.hex")), hex).unwrap();
        }
    }
}
