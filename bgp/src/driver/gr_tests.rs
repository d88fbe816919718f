//! Graceful restart end to end over loopback: B keeps A's routes while A restarts.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::*;
use crate::wire::Prefix;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

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

/// Every change that arrives within `d`.
async fn changes_within(
    rx: &mut UnboundedReceiver<Vec<RouteChange>>,
    d: Duration,
) -> Vec<RouteChange> {
    let mut v = Vec::new();
    let deadline = tokio::time::Instant::now() + d;
    while let Ok(Some(b)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        v.extend(b);
    }
    v
}

struct Pair {
    a_ip: IpAddr,
    b_ip: IpAddr,
    b: Speaker,
}

impl Pair {
    /// B listens (passive towards A); returns B.
    async fn new(last: u8) -> Pair {
        let a_ip = ip(&format!("127.0.{last}.1"));
        let b_ip = ip(&format!("127.0.{last}.2"));
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
        Pair { a_ip, b_ip, b }
    }

    /// Starts A (connecting to B) with these settings and originates `routes`.
    async fn a(&self, gr: GracefulRestart, routes: &[&str]) -> Speaker {
        let a = Speaker::start_with(
            SpeakerConfig {
                local_as: 65001,
                router_id: Ipv4Addr::new(10, 0, 0, 1),
                listen: None,
                cluster_id: None,
            },
            gr,
        )
        .await
        .unwrap();
        let mut to_b = PeerConfig::new(self.b_ip, 65002);
        to_b.port = self.b.local_addr().unwrap().port();
        to_b.local_addr = Some(self.a_ip);
        to_b.connect_retry = Duration::from_secs(1);
        a.add_peer(to_b).await.unwrap();
        for r in routes {
            a.originate(net(r), None).unwrap();
        }
        a
    }
}

fn withdrawn(c: &[RouteChange]) -> Vec<Prefix> {
    c.iter()
        .filter_map(|c| match c {
            RouteChange::Withdraw { prefix } => Some(*prefix),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_speaker_stopped_for_restart_keeps_its_routes_at_the_peer_until_its_end_of_rib() {
    let p = Pair::new(31).await;
    let mut rx = p.b.subscribe().unwrap();
    let a = p
        .a(
            GracefulRestart::default(),
            &[
                "100.64.1.0/24",
                "100.64.2.0/24",
                "fd00:64:1::/64",
                "fd00:64:2::/64",
            ],
        )
        .await;
    a.initial_routes_done().unwrap();
    let st = wait_for(&p.b, p.a_ip, |s| s.accepted == 4).await;
    assert!(st.since.is_some(), "{st:?}");
    changes_within(&mut rx, Duration::from_millis(300)).await;

    // A stops for a restart: B keeps both routes, stale, and withdraws nothing.
    a.stop_for_restart().await;
    let st = wait_for(&p.b, p.a_ip, |s| {
        s.state != State::Established && s.restarting
    })
    .await;
    assert_eq!((st.stale, st.accepted), (4, 4), "{st:?}");
    let c = changes_within(&mut rx, Duration::from_millis(500)).await;
    assert!(withdrawn(&c).is_empty(), "{c:?}");

    // A is back with the R bit and re-originates one route; until it says its routes
    // are in, B sends nothing away.
    let a = p
        .a(
            GracefulRestart {
                restarting: true,
                ..GracefulRestart::default()
            },
            &["100.64.1.0/24", "fd00:64:1::/64"],
        )
        .await;
    let st = wait_for(&p.b, p.a_ip, |s| {
        s.state == State::Established && s.stale == 2
    })
    .await;
    assert!(st.restarting, "{st:?}");
    let c = changes_within(&mut rx, Duration::from_millis(500)).await;
    assert!(withdrawn(&c).is_empty(), "no End-of-RIB yet: {c:?}");

    // End-of-RIB of each family: the routes not re-announced go, the others stay.
    a.initial_routes_done().unwrap();
    let st = wait_for(&p.b, p.a_ip, |s| !s.restarting).await;
    assert_eq!((st.stale, st.accepted), (0, 2), "{st:?}");
    let mut c = withdrawn(&changes_within(&mut rx, Duration::from_millis(300)).await);
    c.sort();
    let mut want: Vec<Prefix> = vec![net("100.64.2.0/24").into(), net("fd00:64:2::/64").into()];
    want.sort();
    assert_eq!(c, want);
    a.shutdown().await;
    p.b.shutdown().await;
}

#[tokio::test]
async fn shutdown_sends_a_hard_reset_and_the_peer_drops_the_routes_at_once() {
    let p = Pair::new(32).await;
    let mut rx = p.b.subscribe().unwrap();
    let a = p.a(GracefulRestart::default(), &["100.64.1.0/24"]).await;
    wait_for(&p.b, p.a_ip, |s| s.accepted == 1).await;
    a.shutdown().await;
    let st = wait_for(&p.b, p.a_ip, |s| s.state != State::Established).await;
    assert!(
        st.last_error
            .as_deref()
            .unwrap_or("")
            .contains("hard reset"),
        "{st:?}"
    );
    assert!(!st.restarting);
    let mut c = Vec::new();
    while c.is_empty() {
        c = withdrawn(&changes_within(&mut rx, Duration::from_secs(2)).await);
    }
    assert_eq!(c, vec![net("100.64.1.0/24").into()]);
    p.b.shutdown().await;
}

#[tokio::test]
async fn stale_routes_go_when_the_restart_time_passes_or_forwarding_was_lost() {
    // Restart time 1 s: A never comes back, B sweeps after it.
    let p = Pair::new(33).await;
    let mut rx = p.b.subscribe().unwrap();
    let a = p
        .a(
            GracefulRestart {
                restart_time: 1,
                ..GracefulRestart::default()
            },
            &["100.64.1.0/24"],
        )
        .await;
    wait_for(&p.b, p.a_ip, |s| s.accepted == 1).await;
    a.stop_for_restart().await;
    wait_for(&p.b, p.a_ip, |s| s.restarting).await;
    let st = wait_for(&p.b, p.a_ip, |s| !s.restarting && s.accepted == 0).await;
    assert_eq!(st.stale, 0);
    let c = changes_within(&mut rx, Duration::from_millis(500)).await;
    assert_eq!(withdrawn(&c), vec![net("100.64.1.0/24").into()], "{c:?}");
    p.b.shutdown().await;

    // A comes back without the F bit: its stale routes go at once, before any EoR.
    let p = Pair::new(34).await;
    let a = p.a(GracefulRestart::default(), &["100.64.1.0/24"]).await;
    wait_for(&p.b, p.a_ip, |s| s.accepted == 1).await;
    a.stop_for_restart().await;
    wait_for(&p.b, p.a_ip, |s| s.restarting).await;
    let a = p
        .a(
            GracefulRestart {
                restarting: true,
                forwarding: false,
                ..GracefulRestart::default()
            },
            &[],
        )
        .await;
    let st = wait_for(&p.b, p.a_ip, |s| {
        s.state == State::Established && !s.restarting
    })
    .await;
    assert_eq!((st.stale, st.accepted), (0, 0), "{st:?}");
    a.shutdown().await;
    p.b.shutdown().await;
}
