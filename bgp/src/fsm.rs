//! The BGP session finite state machine of RFC 4271 §8, sans-I/O.
//!
//! [`Session::handle`] takes one [`Event`] and returns the [`Action`]s the driver must
//! carry out, in order: send a message, open or close a TCP connection, start or stop
//! a timer, report the session up or down. Nothing here blocks, reads a clock or
//! touches a socket, so every transition is a unit test.
//!
//! Events are named for the RFC's (§8.1): `ConnectRetryTimerExpires` is
//! `ConnectRetryTimer_Expires` (event 9), `BgpOpen` is `BGPOpen` (event 19), and so on.
//! Optional events this speaker does not implement (DelayOpen, passive TCP
//! establishment's variants, damping) are left out.
//!
//! Deliberate choices where the RFC leaves room or is impractical:
//! - A failed connect in Connect goes to Active (not Idle) and retries when the
//!   ConnectRetryTimer fires, with exponential back-off (`connect_retry` doubling up to
//!   `connect_retry_max`, reset when the session is Established), while staying ready
//!   to accept the peer's own connection.
//! - After an error the session restarts automatically: an active peer after an
//!   IdleHoldTimer of the same back-off, a passive peer at once (it only listens).
//!   While the IdleHoldTimer runs, a connection from the peer is accepted (the RFC's
//!   Idle refuses it): a restarted peer is back without waiting for our back-off.
//! - Collision detection (§6.8) covers two connections at a time: the current one
//!   and one more (ours pending or theirs accepted). When an OPEN arrives and the other
//!   connection has sent its OPEN, the connection initiated by the speaker with the
//!   higher BGP identifier survives; the other gets Cease/7 (also when the survivor is
//!   our own attempt whose TCP handshake is not reported yet: we wait for it, as the
//!   peer keeps it too). A connection that arrives
//!   while Established is refused with Cease/7.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::wire::{
    Capability, Codec, DecodeError, Family, GracefulRestartCap, Message, Notification, Open, codes,
};

/// Hold time used while waiting for the peer's OPEN (RFC 4271 suggests 4 minutes).
pub const LARGE_HOLD: Duration = Duration::from_secs(240);

/// Who opened a TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// We connected to the peer.
    Outgoing,
    /// The peer connected to us.
    Incoming,
}

/// A TCP connection as the session knows it. Outgoing ids are allocated by the
/// session (in [`Action::Connect`]), incoming ids by the driver; the direction keeps
/// them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId {
    /// Who opened it.
    pub dir: Direction,
    /// Sequence number within that direction.
    pub n: u32,
}

/// RFC 4271 §8.2.2 states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Idle.
    Idle,
    /// Connect: our TCP connection attempt is in progress.
    Connect,
    /// Active: waiting for the peer to connect (or for the retry timer).
    Active,
    /// OpenSent: our OPEN is sent, waiting for theirs.
    OpenSent,
    /// OpenConfirm: OPENs exchanged, waiting for a KEEPALIVE.
    OpenConfirm,
    /// Established.
    Established,
}

/// Session timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// ConnectRetryTimer.
    ConnectRetry,
    /// HoldTimer.
    Hold,
    /// KeepaliveTimer.
    Keepalive,
    /// IdleHoldTimer (automatic restart after an error, with back-off).
    IdleHold,
}

/// Static configuration of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Our AS.
    pub local_as: u32,
    /// The AS the peer must announce.
    pub remote_as: u32,
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
    /// Hold time we propose (0 or at least 3 seconds).
    pub hold_time: u16,
    /// Only accept connections, never initiate them.
    pub passive: bool,
    /// First connect-retry interval; doubles per failure.
    pub connect_retry: Duration,
    /// Cap of the connect-retry back-off.
    pub connect_retry_max: Duration,
    /// Address families we advertise.
    pub families: Vec<Family>,
    /// Further capabilities to advertise (graceful restart, issue 8).
    pub extra_capabilities: Vec<Capability>,
}

impl SessionConfig {
    /// Defaults for a peer: hold 90 s, retry 5 s doubling to 120 s, both families.
    pub fn new(local_as: u32, remote_as: u32, router_id: Ipv4Addr) -> Self {
        Self {
            local_as,
            remote_as,
            router_id,
            hold_time: 90,
            passive: false,
            connect_retry: Duration::from_secs(5),
            connect_retry_max: Duration::from_secs(120),
            families: Family::ALL.to_vec(),
            extra_capabilities: Vec::new(),
        }
    }
}

/// What both sides agreed on when the session came up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The connection that carries the session.
    pub conn: ConnId,
    /// The peer's OPEN.
    pub remote: Open,
    /// Negotiated hold time in seconds (0: no keepalives, no hold timer).
    pub hold_time: u16,
    /// Keepalive interval in seconds (hold / 3).
    pub keepalive: u16,
    /// Codec context for UPDATEs on this session.
    pub codec: Codec,
    /// Families both sides advertised.
    pub families: Vec<Family>,
    /// The peer supports route refresh.
    pub route_refresh: bool,
    /// The peer's graceful restart capability (RFC 4724), if both sides advertised
    /// one.
    pub graceful_restart: Option<GracefulRestartCap>,
    /// Both sides set the N bit (RFC 8538): NOTIFICATIONs other than Hard Reset
    /// keep graceful restart, and we stop sessions with a Hard Reset.
    pub graceful_notification: bool,
}

impl Negotiated {
    /// Whether the session's end (`why`) lets the peer's routes be kept as stale
    /// (RFC 4724 §4.2, RFC 8538 §3): the peer advertised graceful restart and the
    /// session ended by TCP failure or hold-timer expiry, or, with the N bit on both
    /// sides, by any NOTIFICATION but a Hard Reset. Never after we stopped it.
    pub fn keeps_routes_after(&self, why: &DownReason) -> bool {
        if self.graceful_restart.is_none() {
            return false;
        }
        match why {
            DownReason::Stopped => false,
            DownReason::ConnectionLost => true,
            DownReason::Sent(n) | DownReason::Received(n) => {
                n.code == codes::HOLD_TIMER_EXPIRED
                    || (self.graceful_notification && !n.is_hard_reset())
            }
        }
    }
}

/// Inputs of the state machine (RFC 4271 §8.1, by event number).
// Events are consumed at once; boxing the OPEN would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// 1 ManualStart (also 4, with passive TCP establishment, when configured passive).
    ManualStart,
    /// 2 ManualStop.
    ManualStop,
    /// ManualStop because the peer was removed from the configuration: Cease/3
    /// (peer de-configured) instead of Cease/2.
    Deconfigured,
    /// ManualStop for a graceful restart of this speaker (RFC 4724 §4.1): every
    /// connection is closed without a NOTIFICATION, so that the peer keeps our
    /// routes.
    StopForRestart,
    /// 3 AutomaticStart (also 5 for passive peers).
    AutomaticStart,
    /// 9 ConnectRetryTimer_Expires.
    ConnectRetryTimerExpires,
    /// 10 HoldTimer_Expires.
    HoldTimerExpires,
    /// 11 KeepaliveTimer_Expires.
    KeepaliveTimerExpires,
    /// 13 IdleHoldTimer_Expires.
    IdleHoldTimerExpires,
    /// 16 Tcp_CR_Acked: our connection attempt succeeded.
    TcpCrAcked(ConnId),
    /// 17 TcpConnectionConfirmed: the peer's connection was accepted.
    TcpConnectionConfirmed(ConnId),
    /// 18 TcpConnectionFails (connect failed, reset, or closed by the peer).
    TcpConnectionFails(ConnId),
    /// 19 BGPOpen.
    BgpOpen(ConnId, Open),
    /// 21 BGPHeaderErr.
    BgpHeaderErr(ConnId, DecodeError),
    /// 22 BGPOpenMsgErr.
    BgpOpenMsgErr(ConnId, DecodeError),
    /// 24/25 NotifMsgVerErr / NotifMsg.
    NotifMsg(ConnId, Notification),
    /// 26 KeepAliveMsg.
    KeepAliveMsg(ConnId),
    /// 27 UpdateMsg (the UPDATE itself goes to the RIB; the FSM only restarts the
    /// hold timer). ROUTE-REFRESH messages are reported with this event too.
    UpdateMsg(ConnId),
    /// 28 UpdateMsgErr.
    UpdateMsgErr(ConnId, DecodeError),
}

/// Why an Established session went down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownReason {
    /// We stopped it (ManualStop).
    Stopped,
    /// We sent this NOTIFICATION.
    Sent(Notification),
    /// The peer sent this NOTIFICATION.
    Received(Notification),
    /// The TCP connection failed or was closed.
    ConnectionLost,
}

/// Outputs the driver carries out, in order.
// Actions are carried out at once; see `Event`.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a TCP connection to the peer, identified by this id.
    Connect(ConnId),
    /// Send a message on a connection.
    Send(ConnId, Message),
    /// Close (or abandon, if still connecting) a connection.
    Close(ConnId),
    /// (Re)start a timer.
    StartTimer(Timer, Duration),
    /// Stop a timer.
    StopTimer(Timer),
    /// The session is Established: start exchanging routes.
    Established(Box<Negotiated>),
    /// The session left Established: the peer's routes must be withdrawn.
    Down(DownReason),
}

#[derive(Debug, Clone, Copy)]
struct Conn {
    id: ConnId,
    /// Our connect is still in progress (outgoing only).
    pending: bool,
    /// Our OPEN has been sent on it.
    open_sent: bool,
}

/// One peer's session.
#[derive(Debug)]
pub struct Session {
    cfg: SessionConfig,
    state: State,
    conn: Option<Conn>,
    other: Option<Conn>,
    remote_open: Option<Open>,
    negotiated: Option<Negotiated>,
    connect_retry_counter: u32,
    next_out: u32,
    /// Whether an automatic restart follows an error (false after ManualStop).
    auto: bool,
    last_error: Option<DownReason>,
}

impl Session {
    /// A session in Idle.
    pub fn new(cfg: SessionConfig) -> Self {
        Self {
            cfg,
            state: State::Idle,
            conn: None,
            other: None,
            remote_open: None,
            negotiated: None,
            connect_retry_counter: 0,
            next_out: 0,
            auto: false,
            last_error: None,
        }
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.cfg
    }

    /// What was agreed when the session came up (while Established).
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated
            .as_ref()
            .filter(|_| self.state == State::Established)
    }

    /// The connection carrying the session, if any.
    pub fn connection(&self) -> Option<ConnId> {
        self.conn.map(|c| c.id)
    }

    /// The last error that took the session down or kept it from coming up.
    pub fn last_error(&self) -> Option<&DownReason> {
        self.last_error.as_ref()
    }

    /// ConnectRetryCounter: consecutive failures since the last Established.
    pub fn connect_retry_counter(&self) -> u32 {
        self.connect_retry_counter
    }

    /// The back-off delay for the current ConnectRetryCounter.
    pub fn retry_delay(&self) -> Duration {
        let shift = self.connect_retry_counter.min(16);
        self.cfg
            .connect_retry
            .saturating_mul(1 << shift)
            .min(self.cfg.connect_retry_max)
    }

    fn open(&self) -> Open {
        let mut o = Open::new(
            self.cfg.local_as,
            self.cfg.hold_time,
            self.cfg.router_id,
            &self.cfg.families,
        );
        o.capabilities
            .extend(self.cfg.extra_capabilities.iter().cloned());
        o
    }

    fn new_outgoing(&mut self, out: &mut Vec<Action>) -> Conn {
        self.next_out = self.next_out.wrapping_add(1);
        let id = ConnId {
            dir: Direction::Outgoing,
            n: self.next_out,
        };
        out.push(Action::Connect(id));
        Conn {
            id,
            pending: true,
            open_sent: false,
        }
    }

    /// Idle → Connect (active) or Active (passive): the start common to events 1, 3, 13.
    fn start(&mut self, out: &mut Vec<Action>) {
        self.auto = true;
        if self.cfg.passive {
            self.state = State::Active;
            return;
        }
        out.push(Action::StartTimer(Timer::ConnectRetry, self.retry_delay()));
        let c = self.new_outgoing(out);
        self.conn = Some(c);
        self.state = State::Connect;
    }

    fn is_current(&self, id: ConnId) -> bool {
        self.conn.is_some_and(|c| c.id == id)
    }

    fn is_other(&self, id: ConnId) -> bool {
        self.other.is_some_and(|c| c.id == id)
    }

    fn send_open(&mut self, c: &mut Conn, out: &mut Vec<Action>) {
        out.push(Action::Send(c.id, Message::Open(self.open())));
        c.pending = false;
        c.open_sent = true;
    }

    /// Drops every connection and timer and goes to Idle; with automatic restart,
    /// schedules it (active peers after the back-off, passive peers at once).
    fn go_idle(&mut self, notify: Option<Notification>, reason: DownReason, out: &mut Vec<Action>) {
        let was_established = self.state == State::Established;
        for c in [self.conn.take(), self.other.take()].into_iter().flatten() {
            if let Some(n) = &notify
                && c.open_sent
            {
                out.push(Action::Send(c.id, Message::Notification(n.clone())));
            }
            out.push(Action::Close(c.id));
        }
        for t in [Timer::ConnectRetry, Timer::Hold, Timer::Keepalive] {
            out.push(Action::StopTimer(t));
        }
        if was_established {
            out.push(Action::Down(reason.clone()));
        }
        if reason != DownReason::Stopped {
            self.last_error = Some(reason);
        }
        self.remote_open = None;
        self.negotiated = None;
        self.state = State::Idle;
        if self.auto {
            self.connect_retry_counter = self.connect_retry_counter.saturating_add(1);
            if self.cfg.passive {
                self.state = State::Active;
            } else {
                out.push(Action::StartTimer(Timer::IdleHold, self.retry_delay()));
            }
        } else {
            self.connect_retry_counter = 0;
            out.push(Action::StopTimer(Timer::IdleHold));
        }
    }

    fn fail(&mut self, n: Notification, out: &mut Vec<Action>) {
        self.go_idle(Some(n.clone()), DownReason::Sent(n), out);
    }

    fn fsm_error(&mut self, out: &mut Vec<Action>) {
        let sub = match self.state {
            State::OpenSent => codes::FSM_UNEXPECTED_IN_OPEN_SENT,
            State::OpenConfirm => codes::FSM_UNEXPECTED_IN_OPEN_CONFIRM,
            State::Established => codes::FSM_UNEXPECTED_IN_ESTABLISHED,
            _ => 0,
        };
        self.fail(Notification::new(codes::FSM, sub), out);
    }

    /// Checks the peer's OPEN (RFC 4271 §6.2).
    fn check_open(&self, o: &Open) -> Result<(), Notification> {
        if o.asn() != self.cfg.remote_as {
            let mut n = Notification::new(codes::OPEN, codes::OPEN_BAD_PEER_AS);
            n.data = o.my_as.to_be_bytes().to_vec();
            return Err(n);
        }
        let ibgp = self.cfg.remote_as == self.cfg.local_as;
        if o.bgp_id.is_unspecified() || (ibgp && o.bgp_id == self.cfg.router_id) {
            let mut n = Notification::new(codes::OPEN, codes::OPEN_BAD_BGP_ID);
            n.data = o.bgp_id.octets().to_vec();
            return Err(n);
        }
        if o.hold_time == 1 || o.hold_time == 2 {
            return Err(Notification::new(
                codes::OPEN,
                codes::OPEN_UNACCEPTABLE_HOLD,
            ));
        }
        Ok(())
    }

    /// §6.8: which of two connections survives, given the peer's BGP identifier.
    fn survivor(&self, remote_id: Ipv4Addr) -> Direction {
        if u32::from(self.cfg.router_id) < u32::from(remote_id) {
            Direction::Incoming
        } else {
            Direction::Outgoing
        }
    }

    fn dump(&mut self, c: Conn, out: &mut Vec<Action>) {
        if c.open_sent {
            out.push(Action::Send(
                c.id,
                Message::Notification(Notification::cease(codes::CEASE_COLLISION)),
            ));
        }
        out.push(Action::Close(c.id));
    }

    /// Handles one event and returns what to do.
    pub fn handle(&mut self, ev: Event) -> Vec<Action> {
        let mut out = Vec::new();
        self.step(ev, &mut out);
        out
    }

    fn step(&mut self, ev: Event, out: &mut Vec<Action>) {
        use Event::*;
        use State::*;

        // Events on the second connection of a possible collision.
        match &ev {
            TcpCrAcked(id)
            | TcpConnectionFails(id)
            | BgpOpen(id, _)
            | BgpHeaderErr(id, _)
            | BgpOpenMsgErr(id, _)
            | NotifMsg(id, _)
            | KeepAliveMsg(id)
            | UpdateMsg(id)
            | UpdateMsgErr(id, _)
                if self.is_other(*id) =>
            {
                return self.on_other(ev, out);
            }
            TcpCrAcked(id)
            | TcpConnectionFails(id)
            | BgpOpen(id, _)
            | BgpHeaderErr(id, _)
            | BgpOpenMsgErr(id, _)
            | NotifMsg(id, _)
            | KeepAliveMsg(id)
            | UpdateMsg(id)
            | UpdateMsgErr(id, _)
                if !self.is_current(*id) =>
            {
                // A connection we already dropped: make sure it is closed.
                if !matches!(ev, TcpConnectionFails(_)) {
                    out.push(Action::Close(*id));
                }
                return;
            }
            _ => {}
        }

        let ev_is_deconfigured = ev == Deconfigured;
        match (self.state, ev) {
            // ---- Idle -------------------------------------------------------------
            (Idle, ManualStart) => {
                self.connect_retry_counter = 0;
                out.push(Action::StopTimer(Timer::IdleHold));
                self.start(out);
            }
            (Idle, AutomaticStart) | (Idle, IdleHoldTimerExpires) => self.start(out),
            // Waiting out the back-off after an error, the peer's own connection is
            // taken rather than refused: it is back sooner than our retry would be.
            (Idle, TcpConnectionConfirmed(id)) if self.auto => {
                out.push(Action::StopTimer(Timer::IdleHold));
                let mut c = Conn {
                    id,
                    pending: false,
                    open_sent: false,
                };
                self.send_open(&mut c, out);
                self.conn = Some(c);
                out.push(Action::StartTimer(Timer::Hold, LARGE_HOLD));
                self.state = OpenSent;
            }
            (Idle, TcpConnectionConfirmed(id)) => out.push(Action::Close(id)),
            (Idle, _) => {}

            // ---- ManualStop, any other state ---------------------------------------
            (_, ManualStop) | (_, Deconfigured) => {
                self.auto = false;
                let cease = Notification::cease(if ev_is_deconfigured {
                    codes::CEASE_PEER_DECONFIGURED
                } else {
                    codes::CEASE_ADMIN_SHUTDOWN
                });
                // RFC 8538 §5: an administrative shutdown is a Hard Reset, so that
                // the peer really drops our routes.
                let n = if self
                    .negotiated
                    .as_ref()
                    .is_some_and(|n| n.graceful_notification)
                {
                    Notification::hard_reset(&cease)
                } else {
                    cease
                };
                self.go_idle(Some(n), DownReason::Stopped, out);
            }
            (_, StopForRestart) => {
                self.auto = false;
                self.go_idle(None, DownReason::Stopped, out);
            }
            (_, ManualStart) | (_, AutomaticStart) | (_, IdleHoldTimerExpires) => {}

            // ---- Connect ----------------------------------------------------------
            (Connect, ConnectRetryTimerExpires) => {
                if let Some(c) = self.conn.take() {
                    out.push(Action::Close(c.id));
                }
                out.push(Action::StartTimer(Timer::ConnectRetry, self.retry_delay()));
                let c = self.new_outgoing(out);
                self.conn = Some(c);
            }
            (Connect, TcpCrAcked(_)) => {
                out.push(Action::StopTimer(Timer::ConnectRetry));
                let mut c = self.conn.take().unwrap_or(Conn {
                    id: ConnId {
                        dir: Direction::Outgoing,
                        n: 0,
                    },
                    pending: false,
                    open_sent: false,
                });
                self.send_open(&mut c, out);
                self.conn = Some(c);
                out.push(Action::StartTimer(Timer::Hold, LARGE_HOLD));
                self.state = OpenSent;
            }
            (Connect, TcpConnectionConfirmed(id)) | (Active, TcpConnectionConfirmed(id)) => {
                out.push(Action::StopTimer(Timer::ConnectRetry));
                // Our own attempt, if any, stays as the collision candidate.
                self.other = self.conn.take();
                let mut c = Conn {
                    id,
                    pending: false,
                    open_sent: false,
                };
                self.send_open(&mut c, out);
                self.conn = Some(c);
                out.push(Action::StartTimer(Timer::Hold, LARGE_HOLD));
                self.state = OpenSent;
            }
            (Connect, TcpConnectionFails(id)) => {
                out.push(Action::Close(id));
                self.conn = None;
                self.connect_retry_counter = self.connect_retry_counter.saturating_add(1);
                out.push(Action::StartTimer(Timer::ConnectRetry, self.retry_delay()));
                self.state = Active;
            }

            // ---- Active -----------------------------------------------------------
            (Active, ConnectRetryTimerExpires) => {
                out.push(Action::StartTimer(Timer::ConnectRetry, self.retry_delay()));
                let c = self.new_outgoing(out);
                self.conn = Some(c);
                self.state = Connect;
            }

            // ---- OpenSent ---------------------------------------------------------
            (OpenSent, BgpOpen(id, o)) => self.on_open(id, o, out),
            (OpenSent, TcpConnectionFails(id)) => {
                out.push(Action::Close(id));
                self.conn = None;
                out.push(Action::StopTimer(Timer::Hold));
                self.connect_retry_counter = self.connect_retry_counter.saturating_add(1);
                self.last_error = Some(DownReason::ConnectionLost);
                if self.cfg.passive {
                    self.state = Active;
                } else {
                    out.push(Action::StartTimer(Timer::ConnectRetry, self.retry_delay()));
                    self.state = Active;
                }
            }

            // ---- OpenConfirm ------------------------------------------------------
            (OpenConfirm, KeepAliveMsg(_)) => {
                let Some(neg) = self.negotiated.clone() else {
                    return self.fsm_error(out);
                };
                if neg.hold_time > 0 {
                    out.push(Action::StartTimer(Timer::Hold, secs(neg.hold_time)));
                }
                // A connection that comes in while Established is refused anyway.
                if let Some(c) = self.other.take() {
                    self.dump(c, out);
                }
                self.connect_retry_counter = 0;
                self.state = Established;
                out.push(Action::Established(Box::new(neg)));
            }

            // ---- OpenConfirm and Established --------------------------------------
            (OpenConfirm | Established, KeepaliveTimerExpires) => {
                if let (Some(c), Some(neg)) = (self.conn, &self.negotiated) {
                    out.push(Action::Send(c.id, Message::Keepalive));
                    if neg.keepalive > 0 {
                        out.push(Action::StartTimer(Timer::Keepalive, secs(neg.keepalive)));
                    }
                }
            }
            (Established, KeepAliveMsg(_)) | (Established, UpdateMsg(_)) => {
                if let Some(neg) = &self.negotiated
                    && neg.hold_time > 0
                {
                    out.push(Action::StartTimer(Timer::Hold, secs(neg.hold_time)));
                }
            }
            (Established, UpdateMsgErr(_, e)) => self.fail(e.notification(), out),

            // ---- Connections arriving while a session is under way ----------------
            (OpenSent | OpenConfirm, TcpConnectionConfirmed(id)) => {
                if self.other.is_some_and(|c| !c.pending) {
                    out.push(Action::Close(id));
                } else {
                    if let Some(c) = self.other.take() {
                        out.push(Action::Close(c.id));
                    }
                    let mut c = Conn {
                        id,
                        pending: false,
                        open_sent: false,
                    };
                    self.send_open(&mut c, out);
                    self.other = Some(c);
                }
            }
            // RFC 4724 §4.2: a graceful-restart peer that connects again while we
            // still hold its old session has restarted; the old session ends (its
            // routes kept stale) and the new connection is taken.
            (Established, TcpConnectionConfirmed(id))
                if self
                    .negotiated
                    .as_ref()
                    .is_some_and(|n| n.graceful_restart.is_some()) =>
            {
                self.go_idle(None, DownReason::ConnectionLost, out);
                // Idle with automatic restart, or Active: either takes it.
                self.step(TcpConnectionConfirmed(id), out);
            }
            (Established, TcpConnectionConfirmed(id)) => {
                let c = Conn {
                    id,
                    pending: false,
                    open_sent: true,
                };
                out.push(Action::Send(id, Message::Open(self.open())));
                self.dump(c, out);
            }

            // ---- Errors common to OpenSent, OpenConfirm, Established --------------
            (OpenSent | OpenConfirm | Established, HoldTimerExpires) => {
                self.fail(Notification::new(codes::HOLD_TIMER_EXPIRED, 0), out)
            }
            (OpenSent | OpenConfirm | Established, BgpHeaderErr(_, e))
            | (OpenSent | OpenConfirm | Established, BgpOpenMsgErr(_, e)) => {
                self.fail(e.notification(), out)
            }
            (OpenSent | OpenConfirm | Established, NotifMsg(_, n)) => {
                self.go_idle(None, DownReason::Received(n), out)
            }
            (OpenConfirm | Established, TcpConnectionFails(_)) => {
                self.go_idle(None, DownReason::ConnectionLost, out)
            }
            // A timer the driver had not yet cancelled when it fired: nothing to do.
            (_, ConnectRetryTimerExpires | KeepaliveTimerExpires) => {}
            (Connect | Active, HoldTimerExpires) => {}
            // Anything else is an FSM error (§8.2.2: Event 8, 10-28 in the wrong state).
            (_, _) => self.fsm_error(out),
        }
    }

    /// BGPOpen on the current connection in OpenSent: collision check, validation,
    /// hold-time negotiation, KEEPALIVE, → OpenConfirm.
    fn on_open(&mut self, id: ConnId, o: Open, out: &mut Vec<Action>) {
        if let Err(n) = self.check_open(&o) {
            return self.fail(n, out);
        }
        if let Some(other) = self.other {
            if self.survivor(o.bgp_id) == other.id.dir {
                // The other connection wins: this one is dumped (OpenCollisionDump). The
                // peer decides the same way, so the other one is kept even while it is
                // still being set up (our connect not yet acknowledged): then we wait for
                // it in Connect, where its TcpCrAcked sends our OPEN.
                let mine = self.conn.take();
                self.conn = self.other.take();
                if let Some(c) = mine {
                    self.dump(c, out);
                }
                if !other.open_sent {
                    out.push(Action::StopTimer(Timer::Hold));
                    // Should the handshake hang, the retry starts a fresh connection.
                    out.push(Action::StartTimer(Timer::ConnectRetry, self.retry_delay()));
                    self.state = State::Connect;
                }
                return;
            }
            self.other = None;
            self.dump(other, out);
        }
        out.push(Action::StopTimer(Timer::ConnectRetry));
        let hold = self.cfg.hold_time.min(o.hold_time);
        let keepalive = hold / 3;
        let families: Vec<Family> = o
            .families()
            .into_iter()
            .filter(|f| self.cfg.families.contains(f))
            .collect();
        let ours = self.cfg.extra_capabilities.iter().find_map(|c| match c {
            Capability::GracefulRestart(g) => Some(g),
            _ => None,
        });
        let graceful_restart = ours.and(o.graceful_restart().cloned());
        let graceful_notification = ours.is_some_and(GracefulRestartCap::notification)
            && graceful_restart
                .as_ref()
                .is_some_and(GracefulRestartCap::notification);
        let neg = Negotiated {
            graceful_restart,
            graceful_notification,
            conn: id,
            hold_time: hold,
            keepalive,
            codec: Codec {
                four_octet_as: o.four_octet_as(),
            },
            families,
            route_refresh: o.route_refresh(),
            remote: o.clone(),
        };
        out.push(Action::Send(id, Message::Keepalive));
        if hold > 0 {
            out.push(Action::StartTimer(Timer::Keepalive, secs(keepalive)));
            out.push(Action::StartTimer(Timer::Hold, secs(hold)));
        } else {
            out.push(Action::StopTimer(Timer::Hold));
        }
        self.remote_open = Some(o);
        self.negotiated = Some(neg);
        self.state = State::OpenConfirm;
    }

    /// Events on the second connection during a collision.
    fn on_other(&mut self, ev: Event, out: &mut Vec<Action>) {
        let Some(mut other) = self.other else { return };
        match ev {
            Event::TcpCrAcked(_) => {
                self.send_open(&mut other, out);
                self.other = Some(other);
            }
            Event::BgpOpen(id, o) => {
                let current_open = self.conn.is_some_and(|c| c.open_sent);
                if current_open && self.survivor(o.bgp_id) == self.conn.map_or(id.dir, |c| c.id.dir)
                {
                    self.other = None;
                    self.dump(other, out);
                    return;
                }
                // The second connection wins: it becomes the session's connection and
                // the OPEN is processed as in OpenSent.
                if let Some(c) = self.conn.take() {
                    self.dump(c, out);
                }
                self.other = None;
                self.conn = Some(other);
                self.negotiated = None;
                out.push(Action::StopTimer(Timer::Keepalive));
                self.state = State::OpenSent;
                self.on_open(id, o, out);
            }
            Event::TcpConnectionFails(id) => {
                out.push(Action::Close(id));
                self.other = None;
            }
            _ => {
                self.other = None;
                self.dump(other, out);
            }
        }
    }
}

fn secs(s: u16) -> Duration {
    Duration::from_secs(u64::from(s))
}

#[cfg(test)]
mod tests;
