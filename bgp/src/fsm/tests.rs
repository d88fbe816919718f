//! One test per transition, named for what happens.

use super::*;
use crate::wire::{Capability, DecodeError};

const LOCAL: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const HIGHER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 9);
const LOWER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 0);

fn cfg() -> SessionConfig {
    SessionConfig::new(64512, 64513, LOCAL)
}

fn out1() -> ConnId {
    ConnId {
        dir: Direction::Outgoing,
        n: 1,
    }
}
fn in1() -> ConnId {
    ConnId {
        dir: Direction::Incoming,
        n: 1,
    }
}

fn peer_open(id: Ipv4Addr, hold: u16) -> Open {
    Open::new(64513, hold, id, &Family::ALL)
}

fn sends(actions: &[Action]) -> Vec<(ConnId, Message)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(c, m) => Some((*c, m.clone())),
            _ => None,
        })
        .collect()
}

fn notification_sent(actions: &[Action]) -> Option<(u8, u8)> {
    sends(actions).into_iter().find_map(|(_, m)| match m {
        Message::Notification(n) => Some((n.code, n.subcode)),
        _ => None,
    })
}

fn connect_state() -> Session {
    let mut s = Session::new(cfg());
    s.handle(Event::ManualStart);
    s
}

fn open_sent() -> Session {
    let mut s = connect_state();
    s.handle(Event::TcpCrAcked(out1()));
    s
}

fn open_confirm() -> Session {
    let mut s = open_sent();
    s.handle(Event::BgpOpen(out1(), peer_open(HIGHER, 90)));
    s
}

fn established() -> Session {
    let mut s = open_confirm();
    s.handle(Event::KeepAliveMsg(out1()));
    s
}

#[test]
fn idle_goes_to_connect_on_manual_start_and_connects() {
    let mut s = Session::new(cfg());
    let a = s.handle(Event::ManualStart);
    assert_eq!(s.state(), State::Connect);
    assert!(a.contains(&Action::Connect(out1())));
    assert!(a.contains(&Action::StartTimer(
        Timer::ConnectRetry,
        Duration::from_secs(5)
    )));
}

#[test]
fn passive_peer_goes_to_active_on_manual_start_without_connecting() {
    let mut c = cfg();
    c.passive = true;
    let mut s = Session::new(c);
    let a = s.handle(Event::ManualStart);
    assert_eq!(s.state(), State::Active);
    assert!(
        !a.iter()
            .any(|x| matches!(x, Action::Connect(_) | Action::StartTimer(..)))
    );
}

#[test]
fn idle_refuses_incoming_connections() {
    let mut s = Session::new(cfg());
    let a = s.handle(Event::TcpConnectionConfirmed(in1()));
    assert_eq!(a, vec![Action::Close(in1())]);
    assert_eq!(s.state(), State::Idle);
}

#[test]
fn connect_sends_open_and_goes_to_open_sent_on_tcp_cr_acked() {
    let mut s = connect_state();
    let a = s.handle(Event::TcpCrAcked(out1()));
    assert_eq!(s.state(), State::OpenSent);
    assert!(matches!(sends(&a)[0], (c, Message::Open(_)) if c == out1()));
    assert!(a.contains(&Action::StartTimer(Timer::Hold, LARGE_HOLD)));
}

#[test]
fn connect_retries_with_a_new_connection_on_connect_retry_timer_expiry() {
    let mut s = connect_state();
    let a = s.handle(Event::ConnectRetryTimerExpires);
    assert_eq!(s.state(), State::Connect);
    assert!(a.contains(&Action::Close(out1())));
    assert!(a.contains(&Action::Connect(ConnId {
        dir: Direction::Outgoing,
        n: 2
    })));
}

#[test]
fn connect_goes_to_active_with_back_off_on_tcp_connection_failure() {
    let mut s = connect_state();
    let a = s.handle(Event::TcpConnectionFails(out1()));
    assert_eq!(s.state(), State::Active);
    assert!(a.contains(&Action::StartTimer(
        Timer::ConnectRetry,
        Duration::from_secs(10)
    )));
    s.handle(Event::ConnectRetryTimerExpires);
    let a = s.handle(Event::TcpConnectionFails(ConnId {
        dir: Direction::Outgoing,
        n: 2,
    }));
    assert!(a.contains(&Action::StartTimer(
        Timer::ConnectRetry,
        Duration::from_secs(20)
    )));
}

#[test]
fn back_off_is_capped_at_connect_retry_max() {
    let mut s = connect_state();
    for n in 1..20 {
        s.handle(Event::TcpConnectionFails(ConnId {
            dir: Direction::Outgoing,
            n,
        }));
        s.handle(Event::ConnectRetryTimerExpires);
    }
    assert_eq!(s.retry_delay(), Duration::from_secs(120));
}

#[test]
fn active_connects_on_connect_retry_timer_expiry() {
    let mut s = connect_state();
    s.handle(Event::TcpConnectionFails(out1()));
    let a = s.handle(Event::ConnectRetryTimerExpires);
    assert_eq!(s.state(), State::Connect);
    assert!(a.iter().any(|x| matches!(x, Action::Connect(_))));
}

#[test]
fn active_sends_open_on_tcp_connection_confirmed() {
    let mut c = cfg();
    c.passive = true;
    let mut s = Session::new(c);
    s.handle(Event::ManualStart);
    let a = s.handle(Event::TcpConnectionConfirmed(in1()));
    assert_eq!(s.state(), State::OpenSent);
    assert!(matches!(sends(&a)[0], (c, Message::Open(_)) if c == in1()));
}

#[test]
fn open_sent_goes_to_open_confirm_on_bgp_open_and_negotiates_the_lower_hold_time() {
    let mut s = open_sent();
    let a = s.handle(Event::BgpOpen(out1(), peer_open(HIGHER, 30)));
    assert_eq!(s.state(), State::OpenConfirm);
    assert_eq!(sends(&a), vec![(out1(), Message::Keepalive)]);
    assert!(a.contains(&Action::StartTimer(Timer::Hold, Duration::from_secs(30))));
    assert!(a.contains(&Action::StartTimer(
        Timer::Keepalive,
        Duration::from_secs(10)
    )));
}

#[test]
fn open_sent_accepts_hold_time_zero_and_runs_no_timers() {
    let mut s = open_sent();
    let a = s.handle(Event::BgpOpen(out1(), peer_open(HIGHER, 0)));
    assert_eq!(s.state(), State::OpenConfirm);
    assert!(
        !a.iter()
            .any(|x| matches!(x, Action::StartTimer(Timer::Keepalive | Timer::Hold, _)))
    );
}

#[test]
fn open_sent_rejects_hold_time_of_two_seconds() {
    let mut s = open_sent();
    let a = s.handle(Event::BgpOpen(out1(), peer_open(HIGHER, 2)));
    assert_eq!(notification_sent(&a), Some((2, 6)));
    assert_eq!(s.state(), State::Idle);
}

#[test]
fn open_sent_rejects_the_wrong_peer_as() {
    let mut s = open_sent();
    let a = s.handle(Event::BgpOpen(
        out1(),
        Open::new(65000, 90, HIGHER, &Family::ALL),
    ));
    assert_eq!(notification_sent(&a), Some((2, 2)));
}

#[test]
fn open_sent_rejects_our_own_bgp_identifier_on_ibgp() {
    let mut s = Session::new(SessionConfig::new(64512, 64512, LOCAL));
    s.handle(Event::ManualStart);
    s.handle(Event::TcpCrAcked(out1()));
    let a = s.handle(Event::BgpOpen(
        out1(),
        Open::new(64512, 90, LOCAL, &Family::ALL),
    ));
    assert_eq!(notification_sent(&a), Some((2, 3)));
}

#[test]
fn open_sent_goes_idle_on_hold_timer_expiry() {
    let mut s = open_sent();
    let a = s.handle(Event::HoldTimerExpires);
    assert_eq!(s.state(), State::Idle);
    assert_eq!(notification_sent(&a), Some((4, 0)));
    assert!(a.contains(&Action::Close(out1())));
    assert!(
        a.iter()
            .any(|x| matches!(x, Action::StartTimer(Timer::IdleHold, _)))
    );
}

#[test]
fn open_sent_goes_to_active_on_tcp_connection_failure() {
    let mut s = open_sent();
    s.handle(Event::TcpConnectionFails(out1()));
    assert_eq!(s.state(), State::Active);
}

#[test]
fn open_sent_answers_a_keepalive_with_an_fsm_error() {
    let mut s = open_sent();
    let a = s.handle(Event::KeepAliveMsg(out1()));
    assert_eq!(notification_sent(&a), Some((5, 1)));
    assert_eq!(s.state(), State::Idle);
}

#[test]
fn open_sent_relays_an_open_message_error_as_notification() {
    let mut s = open_sent();
    let e = DecodeError::new(2, 4, "x");
    let a = s.handle(Event::BgpOpenMsgErr(out1(), e));
    assert_eq!(notification_sent(&a), Some((2, 4)));
}

#[test]
fn open_sent_goes_idle_without_answering_on_notification() {
    let mut s = open_sent();
    let a = s.handle(Event::NotifMsg(out1(), Notification::cease(2)));
    assert_eq!(s.state(), State::Idle);
    assert_eq!(notification_sent(&a), None);
    assert_eq!(
        s.last_error(),
        Some(&DownReason::Received(Notification::cease(2)))
    );
}

#[test]
fn open_confirm_goes_established_on_keepalive() {
    let mut s = open_confirm();
    let a = s.handle(Event::KeepAliveMsg(out1()));
    assert_eq!(s.state(), State::Established);
    let neg = a.iter().find_map(|x| match x {
        Action::Established(n) => Some(n.clone()),
        _ => None,
    });
    let neg = neg.unwrap();
    assert_eq!(neg.hold_time, 90);
    assert_eq!(neg.families, Family::ALL.to_vec());
    assert!(neg.route_refresh);
    assert!(neg.codec.four_octet_as);
}

#[test]
fn open_confirm_sends_keepalive_on_keepalive_timer_expiry() {
    let mut s = open_confirm();
    let a = s.handle(Event::KeepaliveTimerExpires);
    assert_eq!(sends(&a), vec![(out1(), Message::Keepalive)]);
    assert!(a.contains(&Action::StartTimer(
        Timer::Keepalive,
        Duration::from_secs(30)
    )));
}

#[test]
fn open_confirm_goes_idle_on_hold_timer_expiry() {
    let mut s = open_confirm();
    let a = s.handle(Event::HoldTimerExpires);
    assert_eq!(notification_sent(&a), Some((4, 0)));
    assert_eq!(s.state(), State::Idle);
}

#[test]
fn open_confirm_answers_an_update_with_an_fsm_error() {
    let mut s = open_confirm();
    let a = s.handle(Event::UpdateMsg(out1()));
    assert_eq!(notification_sent(&a), Some((5, 2)));
}

#[test]
fn open_confirm_goes_idle_on_tcp_connection_failure() {
    let mut s = open_confirm();
    s.handle(Event::TcpConnectionFails(out1()));
    assert_eq!(s.state(), State::Idle);
}

#[test]
fn established_restarts_the_hold_timer_on_keepalive_and_update() {
    let mut s = established();
    let a = s.handle(Event::KeepAliveMsg(out1()));
    assert_eq!(
        a,
        vec![Action::StartTimer(Timer::Hold, Duration::from_secs(90))]
    );
    let a = s.handle(Event::UpdateMsg(out1()));
    assert_eq!(
        a,
        vec![Action::StartTimer(Timer::Hold, Duration::from_secs(90))]
    );
}

#[test]
fn established_goes_down_on_hold_timer_expiry() {
    let mut s = established();
    let a = s.handle(Event::HoldTimerExpires);
    assert_eq!(s.state(), State::Idle);
    assert_eq!(notification_sent(&a), Some((4, 0)));
    assert!(a.contains(&Action::Down(DownReason::Sent(Notification::new(4, 0)))));
}

#[test]
fn established_goes_down_on_notification() {
    let mut s = established();
    let a = s.handle(Event::NotifMsg(out1(), Notification::cease(4)));
    assert!(a.contains(&Action::Down(DownReason::Received(Notification::cease(4)))));
}

#[test]
fn established_goes_down_with_the_decode_error_on_update_message_error() {
    let mut s = established();
    let a = s.handle(Event::UpdateMsgErr(
        out1(),
        DecodeError::new(3, 11, "as path"),
    ));
    assert_eq!(notification_sent(&a), Some((3, 11)));
    assert!(a.iter().any(|x| matches!(x, Action::Down(_))));
}

#[test]
fn established_goes_down_on_tcp_connection_failure_and_restarts_after_idle_hold() {
    let mut s = established();
    let a = s.handle(Event::TcpConnectionFails(out1()));
    assert!(a.contains(&Action::Down(DownReason::ConnectionLost)));
    assert!(
        a.iter()
            .any(|x| matches!(x, Action::StartTimer(Timer::IdleHold, _)))
    );
    let a = s.handle(Event::IdleHoldTimerExpires);
    assert_eq!(s.state(), State::Connect);
    assert!(a.iter().any(|x| matches!(x, Action::Connect(_))));
}

#[test]
fn established_answers_a_second_open_with_an_fsm_error() {
    let mut s = established();
    let a = s.handle(Event::BgpOpen(out1(), peer_open(HIGHER, 90)));
    assert_eq!(notification_sent(&a), Some((5, 3)));
}

#[test]
fn established_refuses_a_new_connection_with_cease_collision() {
    let mut s = established();
    let a = s.handle(Event::TcpConnectionConfirmed(in1()));
    assert_eq!(s.state(), State::Established);
    assert_eq!(notification_sent(&a), Some((6, 7)));
    assert!(a.contains(&Action::Close(in1())));
}

#[test]
fn manual_stop_sends_cease_and_does_not_restart() {
    let mut s = established();
    let a = s.handle(Event::ManualStop);
    assert_eq!(notification_sent(&a), Some((6, 2)));
    assert!(a.contains(&Action::Down(DownReason::Stopped)));
    assert!(
        !a.iter()
            .any(|x| matches!(x, Action::StartTimer(Timer::IdleHold, _)))
    );
    assert_eq!(s.state(), State::Idle);
}

#[test]
fn passive_peer_returns_to_active_after_an_error() {
    let mut c = cfg();
    c.passive = true;
    let mut s = Session::new(c);
    s.handle(Event::ManualStart);
    s.handle(Event::TcpConnectionConfirmed(in1()));
    s.handle(Event::HoldTimerExpires);
    assert_eq!(s.state(), State::Active);
}

#[test]
fn collision_keeps_the_peers_connection_when_its_identifier_is_higher() {
    // We connect (out1) and the peer connects to us (in1) at the same time.
    let mut s = open_sent();
    let a = s.handle(Event::TcpConnectionConfirmed(in1()));
    assert!(matches!(sends(&a)[0], (c, Message::Open(_)) if c == in1()));
    // The OPEN arrives on our connection first: the peer (higher id) initiated in1,
    // so out1 is dumped with Cease/7 and in1 carries on.
    let a = s.handle(Event::BgpOpen(out1(), peer_open(HIGHER, 90)));
    assert_eq!(notification_sent(&a), Some((6, 7)));
    assert!(a.contains(&Action::Close(out1())));
    assert_eq!(s.connection(), Some(in1()));
    assert_eq!(s.state(), State::OpenSent);
    s.handle(Event::BgpOpen(in1(), peer_open(HIGHER, 90)));
    s.handle(Event::KeepAliveMsg(in1()));
    assert_eq!(s.state(), State::Established);
}

#[test]
fn collision_keeps_our_connection_when_our_identifier_is_higher() {
    let mut s = open_sent();
    s.handle(Event::TcpConnectionConfirmed(in1()));
    let a = s.handle(Event::BgpOpen(in1(), peer_open(LOWER, 90)));
    assert!(a.contains(&Action::Close(in1())));
    assert_eq!(s.connection(), Some(out1()));
    s.handle(Event::BgpOpen(out1(), peer_open(LOWER, 90)));
    s.handle(Event::KeepAliveMsg(out1()));
    assert_eq!(s.state(), State::Established);
}

#[test]
fn collision_in_open_confirm_switches_to_the_winning_connection() {
    let mut s = open_confirm(); // OPEN from HIGHER on out1
    s.handle(Event::TcpConnectionConfirmed(in1()));
    let a = s.handle(Event::BgpOpen(in1(), peer_open(HIGHER, 90)));
    assert!(a.contains(&Action::Close(out1())));
    assert_eq!(s.state(), State::OpenConfirm);
    s.handle(Event::KeepAliveMsg(in1()));
    assert_eq!(s.state(), State::Established);
    assert_eq!(s.connection(), Some(in1()));
}

#[test]
fn incoming_connection_while_connecting_keeps_our_attempt_as_the_candidate() {
    let mut s = connect_state();
    s.handle(Event::TcpConnectionConfirmed(in1()));
    assert_eq!(s.state(), State::OpenSent);
    // Our attempt completes later: it gets an OPEN too.
    let a = s.handle(Event::TcpCrAcked(out1()));
    assert!(matches!(sends(&a)[0], (c, Message::Open(_)) if c == out1()));
}

#[test]
fn an_open_on_the_peers_connection_while_our_winning_attempt_is_pending_waits_for_ours() {
    // We (higher id than LOWER) are connecting (out1) when the peer's connection (in1)
    // arrives and its OPEN comes before our TCP handshake is reported. Our attempt is the
    // survivor (§6.8: the higher identifier's connection), as the peer decides too: giving
    // it up for in1 would leave each side on the connection the other dumped.
    let mut s = connect_state();
    s.handle(Event::TcpConnectionConfirmed(in1()));
    let a = s.handle(Event::BgpOpen(in1(), peer_open(LOWER, 90)));
    assert_eq!(notification_sent(&a), Some((6, 7)));
    assert!(a.contains(&Action::Close(in1())));
    assert_eq!(s.connection(), Some(out1()));
    assert_eq!(s.state(), State::Connect);
    let a = s.handle(Event::TcpCrAcked(out1()));
    assert!(matches!(sends(&a)[0], (c, Message::Open(_)) if c == out1()));
    s.handle(Event::BgpOpen(out1(), peer_open(LOWER, 90)));
    s.handle(Event::KeepAliveMsg(out1()));
    assert_eq!(s.state(), State::Established);
}

#[test]
fn an_open_on_the_peers_connection_while_our_losing_attempt_is_pending_drops_ours() {
    let mut s = connect_state();
    s.handle(Event::TcpConnectionConfirmed(in1()));
    let a = s.handle(Event::BgpOpen(in1(), peer_open(HIGHER, 90)));
    assert!(a.contains(&Action::Close(out1())));
    assert_eq!(s.connection(), Some(in1()));
    assert_eq!(s.state(), State::OpenConfirm);
}

#[test]
fn events_on_a_dropped_connection_only_close_it() {
    let mut s = established();
    let stale = ConnId {
        dir: Direction::Incoming,
        n: 7,
    };
    let a = s.handle(Event::KeepAliveMsg(stale));
    assert_eq!(a, vec![Action::Close(stale)]);
    assert_eq!(s.state(), State::Established);
}

#[test]
fn families_are_the_intersection_of_both_opens() {
    let mut s = open_sent();
    let mut o = peer_open(HIGHER, 90);
    o.capabilities
        .retain(|c| *c != Capability::Multiprotocol(2, 1));
    s.handle(Event::BgpOpen(out1(), o));
    let a = s.handle(Event::KeepAliveMsg(out1()));
    let Some(Action::Established(n)) = a.iter().find(|x| matches!(x, Action::Established(_)))
    else {
        panic!()
    };
    assert_eq!(n.families, vec![Family::Ipv4Unicast]);
}

#[test]
fn idle_after_an_error_accepts_the_peers_connection_instead_of_waiting_for_idle_hold() {
    let mut s = established();
    s.handle(Event::TcpConnectionFails(out1()));
    assert_eq!(s.state(), State::Idle);
    let a = s.handle(Event::TcpConnectionConfirmed(in1()));
    assert_eq!(s.state(), State::OpenSent);
    assert!(a.contains(&Action::StopTimer(Timer::IdleHold)));
    assert!(matches!(sends(&a)[0], (c, Message::Open(_)) if c == in1()));
}

// ---- Graceful restart (RFC 4724) and RFC 8538 --------------------------------

fn gr_cap(n: bool) -> GracefulRestartCap {
    GracefulRestartCap::new(120, false, n, &Family::ALL, true)
}

/// Established with both sides advertising graceful restart (N bit as given).
fn established_gr(ours_n: bool, theirs_n: bool) -> Session {
    let mut c = cfg();
    c.extra_capabilities
        .push(Capability::GracefulRestart(gr_cap(ours_n)));
    let mut s = Session::new(c);
    s.handle(Event::ManualStart);
    s.handle(Event::TcpCrAcked(out1()));
    let mut o = peer_open(HIGHER, 90);
    o.capabilities
        .push(Capability::GracefulRestart(gr_cap(theirs_n)));
    s.handle(Event::BgpOpen(out1(), o));
    s.handle(Event::KeepAliveMsg(out1()));
    assert_eq!(s.state(), State::Established);
    s
}

#[test]
fn graceful_restart_is_negotiated_only_when_both_sides_advertise_it() {
    let s = established_gr(true, true);
    let n = s.negotiated().unwrap();
    assert_eq!(n.graceful_restart, Some(gr_cap(true)));
    assert!(n.graceful_notification);
    let s = established_gr(true, false);
    assert!(!s.negotiated().unwrap().graceful_notification);
    // The peer advertises it, we do not.
    let mut s = open_sent();
    let mut o = peer_open(HIGHER, 90);
    o.capabilities
        .push(Capability::GracefulRestart(gr_cap(true)));
    s.handle(Event::BgpOpen(out1(), o));
    s.handle(Event::KeepAliveMsg(out1()));
    assert_eq!(s.negotiated().unwrap().graceful_restart, None);
}

#[test]
fn stop_for_restart_closes_without_notification() {
    let mut s = established_gr(true, true);
    let a = s.handle(Event::StopForRestart);
    assert_eq!(notification_sent(&a), None);
    assert!(a.contains(&Action::Close(out1())));
    assert!(a.contains(&Action::Down(DownReason::Stopped)));
    assert_eq!(s.state(), State::Idle);
}

#[test]
fn manual_stop_sends_a_hard_reset_when_the_n_bit_is_negotiated() {
    let mut s = established_gr(true, true);
    let a = s.handle(Event::ManualStop);
    let n = sends(&a)
        .into_iter()
        .find_map(|(_, m)| match m {
            Message::Notification(n) => Some(n),
            _ => None,
        })
        .unwrap();
    assert!(n.is_hard_reset());
    assert_eq!(n.data, vec![codes::CEASE, codes::CEASE_ADMIN_SHUTDOWN]);
    // A removed peer: Hard Reset for "peer de-configured".
    let mut s = established_gr(true, true);
    let a = s.handle(Event::Deconfigured);
    let n = sends(&a)
        .into_iter()
        .find_map(|(_, m)| match m {
            Message::Notification(n) => Some(n),
            _ => None,
        })
        .unwrap();
    assert_eq!(n.data, vec![codes::CEASE, codes::CEASE_PEER_DECONFIGURED]);
    // Without the N bit on both sides: a plain Cease.
    let mut s = established_gr(true, false);
    let a = s.handle(Event::ManualStop);
    assert_eq!(
        notification_sent(&a),
        Some((codes::CEASE, codes::CEASE_ADMIN_SHUTDOWN))
    );
}

#[test]
fn which_session_ends_keep_the_peers_routes() {
    let cease = Notification::cease(codes::CEASE_ADMIN_RESET);
    let hold = Notification::new(codes::HOLD_TIMER_EXPIRED, 0);
    let hard = Notification::hard_reset(&cease);
    let with_n = established_gr(true, true).negotiated().unwrap().clone();
    let without_n = established_gr(true, false).negotiated().unwrap().clone();
    let no_gr = established().negotiated().unwrap().clone();
    for (neg, why, keeps) in [
        (&with_n, DownReason::ConnectionLost, true),
        (&with_n, DownReason::Sent(hold.clone()), true),
        (&with_n, DownReason::Received(cease.clone()), true),
        (&with_n, DownReason::Received(hard.clone()), false),
        (&with_n, DownReason::Stopped, false),
        (&without_n, DownReason::ConnectionLost, true),
        (&without_n, DownReason::Sent(hold.clone()), true),
        (&without_n, DownReason::Received(cease.clone()), false),
        (&no_gr, DownReason::ConnectionLost, false),
    ] {
        assert_eq!(neg.keeps_routes_after(&why), keeps, "{why:?}");
    }
}

#[test]
fn a_graceful_restart_peer_connecting_while_established_replaces_the_old_session() {
    let mut s = established_gr(true, true);
    let a = s.handle(Event::TcpConnectionConfirmed(in1()));
    // The old session ends as a lost connection (its routes kept by the driver)...
    assert!(a.contains(&Action::Down(DownReason::ConnectionLost)));
    assert!(a.contains(&Action::Close(out1())));
    assert_eq!(notification_sent(&a), None);
    // ...and the new connection is answered with our OPEN.
    assert!(
        sends(&a)
            .iter()
            .any(|(c, m)| *c == in1() && matches!(m, Message::Open(_)))
    );
    assert_eq!(s.state(), State::OpenSent);
}
