//! The per-peer task: runs one [`Session`], its connections and timers, and passes
//! UPDATEs to the core task.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tracing::{debug, info, warn};

use super::conn::{Conn, ConnEvent};
use super::core::CoreMsg;
use super::{PeerConfig, PeerShared};
use crate::fsm::{
    Action, ConnId, Direction, DownReason, Event, Negotiated, Session, SessionConfig, State, Timer,
};
use crate::rib::{PeerId, PeerUp};
use crate::wire::{Codec, Family, Message, RouteRefresh, Update, codes};

/// How often a passive MD5 peer that does not connect is reported.
const MD5_HINT_EVERY: Duration = Duration::from_secs(30);

/// Commands from the core task and the listener.
#[derive(Debug)]
pub(crate) enum PeerCmd {
    /// The peer connected to us.
    Incoming(TcpStream),
    /// Ask the peer to resend its routes (ROUTE-REFRESH).
    Refresh,
    /// Stop the session (Cease) and end the task.
    Stop,
    /// The peer was removed: stop with Cease/3 and end the task.
    Remove,
    /// Close the session without NOTIFICATION (graceful restart) and end the task.
    StopForRestart,
}

pub(crate) struct PeerTask {
    pub id: PeerId,
    pub cfg: PeerConfig,
    pub session: Session,
    pub core: UnboundedSender<CoreMsg>,
    pub shared: Arc<Mutex<PeerShared>>,
    pub cmds: UnboundedReceiver<PeerCmd>,
    conns: HashMap<ConnId, Conn>,
    timers: HashMap<Timer, Instant>,
    events_tx: UnboundedSender<ConnEvent>,
    events: UnboundedReceiver<ConnEvent>,
    next_in: u32,
    /// What the current (or last) session negotiated.
    negotiated: Option<Negotiated>,
    /// Consecutive connect failures, for the MD5 hint.
    connect_failures: u32,
}

fn reason_text(r: &DownReason) -> String {
    match r {
        DownReason::Stopped => "stopped".into(),
        DownReason::Sent(n) => format!("sent NOTIFICATION: {n}"),
        DownReason::Received(n) => format!("received NOTIFICATION: {n}"),
        DownReason::ConnectionLost => "connection lost".into(),
    }
}

impl PeerTask {
    pub fn new(
        id: PeerId,
        cfg: PeerConfig,
        scfg: SessionConfig,
        core: UnboundedSender<CoreMsg>,
        shared: Arc<Mutex<PeerShared>>,
        cmds: UnboundedReceiver<PeerCmd>,
    ) -> Self {
        let (events_tx, events) = unbounded_channel();
        Self {
            id,
            cfg,
            session: Session::new(scfg),
            core,
            shared,
            cmds,
            conns: HashMap::new(),
            timers: HashMap::new(),
            events_tx,
            events,
            next_in: 0,
            negotiated: None,
            connect_failures: 0,
        }
    }

    pub async fn run(mut self) {
        self.feed(Event::ManualStart);
        // A passive peer with TCP MD5 that never connects may be using another
        // password (the kernel drops its SYNs silently): say so now and then.
        let md5_passive = self.cfg.passive && self.cfg.password.is_some();
        let mut md5_hint =
            tokio::time::interval_at(tokio::time::Instant::now() + MD5_HINT_EVERY, MD5_HINT_EVERY);
        loop {
            let next = self.timers.values().min().copied();
            let sleep = async move {
                match next {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = self.cmds.recv() => match cmd {
                    None | Some(PeerCmd::Stop) => {
                        self.feed(Event::ManualStop);
                        break;
                    }
                    Some(PeerCmd::Remove) => {
                        self.feed(Event::Deconfigured);
                        break;
                    }
                    Some(PeerCmd::StopForRestart) => {
                        self.feed(Event::StopForRestart);
                        break;
                    }
                    Some(PeerCmd::Incoming(s)) => self.incoming(s),
                    Some(PeerCmd::Refresh) => self.send_refresh(),
                },
                Some(ev) = self.events.recv() => self.on_conn_event(ev),
                () = sleep => self.fire_timers(),
                _ = md5_hint.tick(), if md5_passive => {
                    if self.session.state() != State::Established && self.conns.is_empty() {
                        warn!(waited = ?MD5_HINT_EVERY,
                            "no connection from the peer, and TCP MD5 is configured for it: \
                             if the peer is up, check that both sides use the same password");
                        self.set_error(
                            "no connection from the peer (TCP MD5 is configured: a password \
                             mismatch looks like this)"
                                .into(),
                        );
                    }
                }
            }
        }
        for (_, c) in self.conns.drain() {
            c.close();
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        let due: Vec<Timer> = self
            .timers
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(k, _)| *k)
            .collect();
        for t in due {
            self.timers.remove(&t);
            self.feed(match t {
                Timer::ConnectRetry => Event::ConnectRetryTimerExpires,
                Timer::Hold => Event::HoldTimerExpires,
                Timer::Keepalive => Event::KeepaliveTimerExpires,
                Timer::IdleHold => Event::IdleHoldTimerExpires,
            });
        }
    }

    fn incoming(&mut self, s: TcpStream) {
        self.next_in = self.next_in.wrapping_add(1);
        let id = ConnId {
            dir: Direction::Incoming,
            n: self.next_in,
        };
        match Conn::start(id, s, self.events_tx.clone()) {
            Ok(c) => {
                debug!(conn = ?id, "accepted connection");
                self.conns.insert(id, c);
                self.feed(Event::TcpConnectionConfirmed(id));
            }
            Err(e) => warn!(error = %e, "accepted connection failed"),
        }
    }

    fn send_refresh(&mut self) {
        let Some(neg) = self.session.negotiated() else {
            return;
        };
        if !neg.route_refresh {
            return;
        }
        let Some(c) = self.conns.get(&neg.conn) else {
            return;
        };
        for f in &neg.families {
            let (afi, safi) = f.afi_safi();
            let m = Message::RouteRefresh(RouteRefresh {
                afi,
                subtype: 0,
                safi,
            });
            let _ = c.tx.send(Bytes::from(m.to_bytes(neg.codec)));
        }
    }

    fn on_conn_event(&mut self, ev: ConnEvent) {
        match ev {
            ConnEvent::Connected(id, s) => match Conn::start(id, s, self.events_tx.clone()) {
                Ok(c) => {
                    debug!(conn = ?id, "connected");
                    self.conns.insert(id, c);
                    self.feed(Event::TcpCrAcked(id));
                }
                Err(e) => {
                    self.set_error(format!("connect: {e}"));
                    self.feed(Event::TcpConnectionFails(id));
                }
            },
            ConnEvent::ConnectFailed(id, e) => {
                debug!(conn = ?id, error = %e, "connect failed");
                self.connect_failures = self.connect_failures.saturating_add(1);
                if self.cfg.password.is_some() && e.kind() == std::io::ErrorKind::TimedOut {
                    // With TCP MD5 the kernel drops segments with a wrong or missing
                    // signature without a word: a timeout is the only symptom.
                    warn!(error = %e, failures = self.connect_failures,
                        "cannot connect to the peer, and TCP MD5 is configured for it: \
                         if the peer is up, check that both sides use the same password");
                    self.set_error(format!(
                        "connect: {e} (TCP MD5 is configured: a password mismatch looks like this)"
                    ));
                } else {
                    self.set_error(format!("connect: {e}"));
                }
                self.feed(Event::TcpConnectionFails(id));
            }
            ConnEvent::Closed(id, e) => {
                if self.conns.contains_key(&id) {
                    let reason = e.map_or_else(|| "closed by peer".to_string(), |e| e.to_string());
                    debug!(conn = ?id, %reason, "connection closed");
                    self.feed(Event::TcpConnectionFails(id));
                }
            }
            ConnEvent::DecodeError(id, e) => {
                warn!(conn = ?id, error = %e, "malformed message");
                self.feed(match e.code {
                    codes::HEADER => Event::BgpHeaderErr(id, e),
                    codes::OPEN => Event::BgpOpenMsgErr(id, e),
                    _ => Event::UpdateMsgErr(id, e),
                });
            }
            ConnEvent::Messages(id, msgs) => self.on_messages(id, msgs),
        }
    }

    fn on_messages(&mut self, id: ConnId, msgs: Vec<Message>) {
        let mut updates: Vec<Update> = Vec::new();
        let mut refresh = false;
        for m in msgs {
            let established =
                self.session.state() == State::Established && self.session.connection() == Some(id);
            match m {
                Message::Update(u) if established => {
                    if !u.errors.is_empty() {
                        // RFC 7606: contained; this session and the others go on.
                        for e in &u.errors {
                            warn!(action = ?e.action, error = %e.error,
                                withdrawn = u.treat_as_withdraw().then_some(u.nlri.len() + u.mp_reach.as_ref().map_or(0, |m| m.nlri.len())),
                                "malformed UPDATE attribute handled per RFC 7606");
                        }
                    }
                    updates.push(u)
                }
                Message::RouteRefresh(_) if established => refresh = true,
                m => {
                    // Hand over the UPDATEs so far before a state change.
                    self.flush_updates(&mut updates);
                    match m {
                        Message::Open(o) => self.feed(Event::BgpOpen(id, o)),
                        Message::Keepalive => self.feed(Event::KeepAliveMsg(id)),
                        Message::Notification(n) => {
                            info!(notification = %n, "received NOTIFICATION");
                            self.feed(Event::NotifMsg(id, n))
                        }
                        Message::Update(_) | Message::RouteRefresh(_) => {
                            self.feed(Event::UpdateMsg(id))
                        }
                    }
                }
            }
        }
        if !updates.is_empty() || refresh {
            // One hold-timer restart for the whole batch.
            self.feed(Event::UpdateMsg(id));
        }
        self.flush_updates(&mut updates);
        if refresh {
            let _ = self.core.send(CoreMsg::RefreshRequest { id: self.id });
        }
    }

    fn flush_updates(&mut self, updates: &mut Vec<Update>) {
        if !updates.is_empty() {
            let _ = self.core.send(CoreMsg::Updates {
                id: self.id,
                updates: std::mem::take(updates),
            });
        }
    }

    fn set_error(&self, e: String) {
        if let Ok(mut s) = self.shared.lock() {
            s.last_error = Some(e);
        }
    }

    fn feed(&mut self, ev: Event) {
        let before = self.session.state();
        let error_before = self.session.last_error().cloned();
        let actions = self.session.handle(ev);
        for a in actions {
            self.act(a);
        }
        let after = self.session.state();
        if before != after {
            debug!(from = ?before, to = ?after, "state change");
        }
        let error = self
            .session
            .last_error()
            .filter(|e| Some(*e) != error_before.as_ref());
        if let Ok(mut s) = self.shared.lock() {
            s.state = after;
            // A new error of the session (e.g. an OPEN refused before Established).
            if let Some(e) = error {
                s.last_error = Some(reason_text(e));
            }
        }
    }

    fn act(&mut self, a: Action) {
        match a {
            Action::Connect(id) => self.connect(id),
            Action::Send(id, m) => {
                if let Message::Notification(n) = &m {
                    info!(notification = %n, "sending NOTIFICATION");
                }
                let codec = self
                    .session
                    .negotiated()
                    .map_or(Codec::default(), |n| n.codec);
                if let Some(c) = self.conns.get(&id) {
                    let _ = c.tx.send(Bytes::from(m.to_bytes(codec)));
                }
            }
            Action::Close(id) => {
                if let Some(c) = self.conns.remove(&id) {
                    c.close();
                }
            }
            Action::StartTimer(t, d) => {
                self.timers.insert(t, Instant::now() + d);
            }
            Action::StopTimer(t) => {
                self.timers.remove(&t);
            }
            Action::Established(neg) => {
                let Some(c) = self.conns.get(&neg.conn) else {
                    return;
                };
                info!(remote_id = %neg.remote.bgp_id, hold = neg.hold_time, families = ?neg.families,
                    graceful_restart = neg.graceful_restart.is_some(), "session established");
                self.connect_failures = 0;
                self.negotiated = Some((*neg).clone());
                if let Ok(mut s) = self.shared.lock() {
                    s.established_at = Some(Instant::now());
                    s.established_wall = Some(SystemTime::now());
                    s.remote_id = Some(neg.remote.bgp_id);
                    s.hold_time = Some(neg.hold_time);
                    s.families = neg.families.clone();
                }
                let up = PeerUp {
                    router_id: neg.remote.bgp_id,
                    local_addr: c.local.ip(),
                    codec: neg.codec,
                    families: neg.families.clone(),
                };
                let _ = self.core.send(CoreMsg::Up {
                    id: self.id,
                    up,
                    tx: c.tx.clone(),
                    gr: neg.graceful_restart.clone(),
                });
            }
            Action::Down(reason) => {
                let text = reason_text(&reason);
                info!(reason = %text, "session down");
                if let Ok(mut s) = self.shared.lock() {
                    s.established_at = None;
                    s.established_wall = None;
                    s.families.clear();
                    if reason != DownReason::Stopped {
                        s.last_error = Some(text);
                    }
                }
                // Graceful restart: which families' routes the peer's restart keeps.
                let (keep, restart_time) = match self.negotiated.take() {
                    Some(neg) if neg.keeps_routes_after(&reason) => {
                        let cap = neg.graceful_restart.unwrap_or_else(|| {
                            crate::wire::GracefulRestartCap {
                                flags: 0,
                                restart_time: 0,
                                families: Vec::new(),
                            }
                        });
                        let keep: Vec<Family> = neg
                            .families
                            .iter()
                            .copied()
                            .filter(|f| cap.forwarding(*f).is_some())
                            .collect();
                        (keep, cap.restart_time)
                    }
                    _ => (Vec::new(), 0),
                };
                let _ = self.core.send(CoreMsg::Down {
                    id: self.id,
                    keep,
                    restart_time,
                });
            }
        }
    }

    fn connect(&mut self, id: ConnId) {
        let remote = SocketAddr::new(self.cfg.addr, self.cfg.port);
        let local = self.cfg.local_addr;
        let timeout = self.cfg.connect_retry.max(Duration::from_secs(1));
        let tx = self.events_tx.clone();
        let password = self.cfg.password.clone();
        tokio::spawn(async move {
            let r = tokio::time::timeout(timeout, connect(remote, local, password)).await;
            let ev = match r {
                Ok(Ok(s)) => ConnEvent::Connected(id, s),
                Ok(Err(e)) => ConnEvent::ConnectFailed(id, e),
                Err(_) => ConnEvent::ConnectFailed(
                    id,
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
                ),
            };
            let _ = tx.send(ev);
        });
    }
}

async fn connect(
    remote: SocketAddr,
    local: Option<IpAddr>,
    password: Option<String>,
) -> std::io::Result<TcpStream> {
    let sock = if remote.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(pw) = &password {
        super::md5::set_key(
            sock.as_fd(),
            remote.is_ipv6(),
            remote.ip(),
            Some(pw.as_bytes()),
        )
        .map_err(std::io::Error::other)?;
    }
    if let Some(l) = local {
        sock.bind(SocketAddr::new(l, 0))?;
    }
    sock.connect(remote).await
}

/// Families this session config advertises.
pub(crate) fn families(cfg: &PeerConfig) -> Vec<Family> {
    if cfg.families.is_empty() {
        Family::ALL.to_vec()
    } else {
        cfg.families.clone()
    }
}
