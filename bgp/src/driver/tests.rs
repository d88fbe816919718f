//! The driver over loopback: two speakers, and a silent peer for the hold timer.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::wire::{Codec, Message, Open};

async fn wait_for<F: Fn(&PeerStatus) -> bool>(s: &Speaker, addr: IpAddr, f: F) -> PeerStatus {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let st = s.peer(addr).await.unwrap();
        if f(&st) {
            return st;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {st:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn next_changes(rx: &mut UnboundedReceiver<Vec<RouteChange>>) -> Vec<RouteChange> {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("no change in time")
        .unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn two_speakers_establish_exchange_and_withdraw_routes() {
    let a_ip = ip("127.0.0.11");
    let b_ip = ip("127.0.0.12");
    let a = Speaker::start(SpeakerConfig {
        local_as: 65001,
        router_id: Ipv4Addr::new(10, 0, 0, 1),
        listen: Some(SocketAddr::new(a_ip, 0)),
        cluster_id: None,
    })
    .await
    .unwrap();
    let b = Speaker::start(SpeakerConfig {
        local_as: 65002,
        router_id: Ipv4Addr::new(10, 0, 0, 2),
        listen: Some(SocketAddr::new(b_ip, 0)),
        cluster_id: None,
    })
    .await
    .unwrap();
    let mut to_a = PeerConfig::new(a_ip, 65001);
    to_a.passive = true;
    b.add_peer(to_a).await.unwrap();
    let mut to_b = PeerConfig::new(b_ip, 65002);
    to_b.port = b.local_addr().unwrap().port();
    to_b.local_addr = Some(a_ip);
    a.add_peer(to_b).await.unwrap();
    let mut rx = b.subscribe().unwrap();
    assert_eq!(next_changes(&mut rx).await, vec![]);

    let st = wait_for(&a, b_ip, |s| s.state == State::Established).await;
    assert_eq!(st.remote_id, Some(Ipv4Addr::new(10, 0, 0, 2)));
    assert_eq!(st.families, Family::ALL.to_vec());

    a.originate("100.64.1.0/24".parse().unwrap(), None).unwrap();
    a.originate("fd00:64::/64".parse().unwrap(), Some(ip("fd00::11")))
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        got.extend(next_changes(&mut rx).await);
    }
    assert!(got.contains(&RouteChange::Add {
        prefix: "100.64.1.0/24".parse::<IpNet>().unwrap().into(),
        next_hop: a_ip
    }));
    assert!(
        got.contains(&RouteChange::Add {
            prefix: "fd00:64::/64".parse::<IpNet>().unwrap().into(),
            next_hop: ip("::ffff:127.0.0.11")
        }),
        "eBGP next hop self, IPv4-mapped: {got:?}"
    );
    let st = wait_for(&b, a_ip, |s| s.accepted == 2).await;
    assert_eq!(st.received, 2);
    wait_for(&a, b_ip, |s| s.advertised == 2).await;

    a.withdraw("100.64.1.0/24".parse().unwrap()).unwrap();
    assert_eq!(
        next_changes(&mut rx).await,
        vec![RouteChange::Withdraw {
            prefix: "100.64.1.0/24".parse::<IpNet>().unwrap().into()
        }]
    );

    // Route refresh: B asks A to resend; A answers with its table (nothing changes).
    b.refresh(a_ip).await.unwrap();

    // A new import filter on B hides A's IPv6 route once A resends (B asks).
    let v4_only = PeerPolicy {
        import: Some(crate::policy::PrefixList::new(vec![
            crate::policy::PrefixListEntry::permit("0.0.0.0/0".parse().unwrap(), Some(0), Some(32)),
        ])),
        export: None,
    };
    b.set_policy(a_ip, v4_only).await.unwrap();
    assert_eq!(
        next_changes(&mut rx).await,
        vec![RouteChange::Withdraw {
            prefix: "fd00:64::/64".parse::<IpNet>().unwrap().into()
        }]
    );
    b.set_policy(a_ip, PeerPolicy::default()).await.unwrap();
    let back = next_changes(&mut rx).await;
    assert!(
        matches!(back.as_slice(), [RouteChange::Add { .. }]),
        "{back:?}"
    );

    // A removes B: B sees a Cease (a Hard Reset: both speakers set the N bit) and
    // loses A's routes.
    a.remove_peer(b_ip).await.unwrap();
    assert_eq!(
        next_changes(&mut rx).await,
        vec![RouteChange::Withdraw {
            prefix: "fd00:64::/64".parse::<IpNet>().unwrap().into()
        }]
    );
    let st = wait_for(&b, a_ip, |s| s.state != State::Established).await;
    let e = st.last_error.unwrap();
    assert!(
        e.contains("hard reset for cease: peer de-configured"),
        "{e}"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_silent_peer_is_dropped_when_the_hold_timer_expires() {
    let peer_ip = ip("127.0.0.21");
    let me_ip = ip("127.0.0.22");
    let silent = TcpListener::bind(SocketAddr::new(peer_ip, 0))
        .await
        .unwrap();
    let port = silent.local_addr().unwrap().port();
    // The silent peer: OPEN (hold 3 s) and one KEEPALIVE, then nothing.
    let server = tokio::spawn(async move {
        let (mut s, _) = silent.accept().await.unwrap();
        let open = Message::Open(Open::new(
            65009,
            3,
            Ipv4Addr::new(10, 0, 0, 9),
            &[Family::Ipv4Unicast],
        ));
        s.write_all(&open.to_bytes(Codec::default())).await.unwrap();
        s.write_all(&Message::Keepalive.to_bytes(Codec::default()))
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        // Read until the speaker closes (its NOTIFICATION arrives first).
        while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(15), s.read(&mut buf)).await
        {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        got
    });
    let sp = Speaker::start(SpeakerConfig {
        local_as: 65001,
        router_id: Ipv4Addr::new(10, 0, 0, 1),
        listen: None,
        cluster_id: None,
    })
    .await
    .unwrap();
    let mut cfg = PeerConfig::new(peer_ip, 65009);
    cfg.port = port;
    cfg.local_addr = Some(me_ip);
    cfg.hold_time = 3;
    sp.add_peer(cfg).await.unwrap();
    wait_for(&sp, peer_ip, |s| s.state == State::Established).await;
    let st = wait_for(&sp, peer_ip, |s| s.state != State::Established).await;
    assert!(
        st.last_error.unwrap().contains("hold timer expired"),
        "{:?}",
        sp.peer(peer_ip).await
    );
    let bytes = server.await.unwrap();
    // OPEN, KEEPALIVE, (KEEPALIVE...), then NOTIFICATION 4/0 as the last message.
    let tail = &bytes[bytes.len() - 21..];
    assert_eq!((tail[18], tail[19], tail[20]), (3, 4, 0));
    sp.shutdown().await;
}

#[tokio::test]
async fn two_active_speakers_settle_on_one_session_after_a_collision() {
    let a_ip = ip("127.0.0.31");
    let b_ip = ip("127.0.0.32");
    let start = |ip: IpAddr, asn: u32, id: u8| {
        Speaker::start(SpeakerConfig {
            local_as: asn,
            router_id: Ipv4Addr::new(10, 0, 0, id),
            listen: Some(SocketAddr::new(ip, 0)),
            cluster_id: None,
        })
    };
    let a = start(a_ip, 65001, 1).await.unwrap();
    let b = start(b_ip, 65002, 2).await.unwrap();
    let mut to_b = PeerConfig::new(b_ip, 65002);
    to_b.port = b.local_addr().unwrap().port();
    to_b.local_addr = Some(a_ip);
    to_b.connect_retry = Duration::from_secs(1);
    let mut to_a = PeerConfig::new(a_ip, 65001);
    to_a.port = a.local_addr().unwrap().port();
    to_a.local_addr = Some(b_ip);
    to_a.connect_retry = Duration::from_secs(1);
    // Both connect at once.
    let (ra, rb) = tokio::join!(a.add_peer(to_b), b.add_peer(to_a));
    ra.unwrap();
    rb.unwrap();
    wait_for(&a, b_ip, |s| s.state == State::Established).await;
    wait_for(&b, a_ip, |s| s.state == State::Established).await;
    a.originate("100.64.9.0/24".parse().unwrap(), None).unwrap();
    wait_for(&b, a_ip, |s| s.accepted == 1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(a.peer(b_ip).await.unwrap().state, State::Established);
    assert_eq!(b.peer(a_ip).await.unwrap().state, State::Established);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_peer_announcing_the_wrong_as_is_refused_and_the_error_is_reported() {
    let a_ip = ip("127.0.0.51");
    let b_ip = ip("127.0.0.52");
    let start = |ip: IpAddr, asn: u32, id: u8| {
        Speaker::start(SpeakerConfig {
            local_as: asn,
            router_id: Ipv4Addr::new(10, 0, 0, id),
            listen: Some(SocketAddr::new(ip, 0)),
            cluster_id: None,
        })
    };
    let a = start(a_ip, 65001, 1).await.unwrap();
    let b = start(b_ip, 65002, 2).await.unwrap();
    let mut to_a = PeerConfig::new(a_ip, 65001);
    to_a.passive = true;
    b.add_peer(to_a).await.unwrap();
    // A expects the wrong AS for B.
    let mut to_b = PeerConfig::new(b_ip, 65099);
    to_b.port = b.local_addr().unwrap().port();
    to_b.local_addr = Some(a_ip);
    a.add_peer(to_b).await.unwrap();
    let st = wait_for(&a, b_ip, |s| s.last_error.is_some()).await;
    assert!(
        st.last_error.as_deref().unwrap().contains("bad peer AS"),
        "{st:?}"
    );
    let st = wait_for(&b, a_ip, |s| s.last_error.is_some()).await;
    assert!(
        st.last_error
            .as_deref()
            .unwrap()
            .contains("received NOTIFICATION"),
        "{st:?}"
    );
    a.shutdown().await;
    b.shutdown().await;
}
