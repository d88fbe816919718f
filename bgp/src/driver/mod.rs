//! The tokio driver and the [`Speaker`] handle.
//!
//! Tasks: one listener (accepts connections and hands them to the peer with that
//! address), one task per peer (its [`crate::fsm::Session`], connections and timers,
//! in a `peer` tracing span), and one core task that owns the [`crate::rib::Rib`]. Peer
//! tasks decode and pass UPDATEs to the core in batches; the core applies everything
//! queued, runs the decision process once, and sends each update group's packed
//! output to the members' writer queues as one shared buffer.

mod conn;
mod core;
pub mod md5;
mod peer;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use ipnet::IpNet;
use tokio::net::TcpListener;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use self::core::{Core, CoreMsg};
use self::peer::PeerCmd;
use crate::fsm::State;
use crate::policy::PeerPolicy;
use crate::rib::{NextHopMode, Rib, RibConfig, RouteChange};
use crate::wire::Family;

/// Errors of the speaker handle.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A peer with that address exists.
    #[error("peer {0} is already configured")]
    DuplicatePeer(IpAddr),
    /// No peer with that address.
    #[error("no peer {0}")]
    UnknownPeer(IpAddr),
    /// The speaker's tasks have ended.
    #[error("the speaker has stopped")]
    Stopped,
    /// The peer's TCP MD5 password could not be set.
    #[error("cannot set the TCP MD5 password (PeerConfig.password) for peer {addr}")]
    Md5 {
        /// The peer.
        addr: IpAddr,
        /// Why.
        #[source]
        source: md5::Md5Error,
    },
}

/// Speaker-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpeakerConfig {
    /// Our AS.
    pub local_as: u32,
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
    /// Where to accept connections (`None`: only connect out). Port 0 picks one.
    pub listen: Option<SocketAddr>,
    /// Route-reflector cluster id (defaults to the router id if any peer is an
    /// rr-client).
    pub cluster_id: Option<Ipv4Addr>,
}

/// Graceful restart (RFC 4724) and its notification extension (RFC 8538), for the
/// whole speaker. See [`Speaker::start_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GracefulRestart {
    /// Advertise the capability and keep a restarting peer's routes (default on).
    /// Per peer it can be turned off with [`PeerConfig::graceful_restart`].
    pub enabled: bool,
    /// Restart time we advertise: how long peers keep our routes while we are gone,
    /// seconds, at most 4095 (default 120, as Calico).
    pub restart_time: u16,
    /// Set the Restart State (R) bit: this speaker has just restarted and will send
    /// End-of-RIB once its routes are in (default off; the node agent sets it when
    /// it comes back from [`Speaker::stop_for_restart`]).
    pub restarting: bool,
    /// Set the Forwarding State (F) bit for every family: the routes we installed
    /// survived the restart (default on).
    pub forwarding: bool,
    /// Advertise and honour the N bit (RFC 8538): with it negotiated, a
    /// NOTIFICATION other than Hard Reset keeps graceful restart, and
    /// [`Speaker::shutdown`]/[`Speaker::remove_peer`] send a Hard Reset (default on).
    pub notification: bool,
    /// How long a restarted peer's stale routes wait for its End-of-RIB once its
    /// session is back (default 360 s, as BIRD and FRR).
    pub stale_time: Duration,
    /// Longest wait for [`Speaker::initial_routes_done`] before End-of-RIB is sent
    /// anyway (default 120 s; zero: never hold End-of-RIB back).
    pub eor_wait: Duration,
}

impl Default for GracefulRestart {
    fn default() -> Self {
        Self {
            enabled: true,
            restart_time: 120,
            restarting: false,
            forwarding: true,
            notification: true,
            stale_time: Duration::from_secs(360),
            eor_wait: Duration::from_secs(120),
        }
    }
}

impl GracefulRestart {
    /// Graceful restart off: no capability, routes dropped when a session ends, and
    /// End-of-RIB right after each session's initial update.
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            eor_wait: Duration::ZERO,
            ..Self::default()
        }
    }
}

/// One peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// The peer's address.
    pub addr: IpAddr,
    /// The peer's port for our connections (179).
    pub port: u16,
    /// Local address to connect from (else the kernel chooses).
    pub local_addr: Option<IpAddr>,
    /// The peer's AS.
    pub remote_as: u32,
    /// Only accept the peer's connections.
    pub passive: bool,
    /// The peer is a route-reflector client.
    pub rr_client: bool,
    /// Next-hop handling (default: unchanged for iBGP, self for eBGP).
    pub next_hop: Option<NextHopMode>,
    /// Hold time we propose.
    pub hold_time: u16,
    /// First connect-retry interval.
    pub connect_retry: Duration,
    /// Families to negotiate (empty: IPv4 and IPv6 unicast).
    pub families: Vec<Family>,
    /// Import and export filters.
    pub policy: PeerPolicy,
    /// TCP MD5 signature password (RFC 2385), at most 80 octets. Set on the
    /// listening socket for this peer's address and on our connecting sockets; a
    /// mismatch means no session (the kernel drops the segments silently).
    pub password: Option<String>,
    /// Graceful restart with this peer when it is enabled speaker-wide (default on).
    pub graceful_restart: bool,
}

impl PeerConfig {
    /// A peer with defaults: port 179, active, hold 90 s, retry 5 s, both families.
    pub fn new(addr: IpAddr, remote_as: u32) -> Self {
        Self {
            addr,
            port: 179,
            local_addr: None,
            remote_as,
            passive: false,
            rr_client: false,
            next_hop: None,
            hold_time: 90,
            connect_retry: Duration::from_secs(5),
            families: Vec::new(),
            policy: PeerPolicy::default(),
            password: None,
            graceful_restart: true,
        }
    }

    pub(crate) fn next_hop_mode(&self, local_as: u32) -> NextHopMode {
        self.next_hop.unwrap_or(if self.remote_as == local_as {
            NextHopMode::Unchanged
        } else {
            NextHopMode::OwnAddress
        })
    }
}

/// What the peer task shares with status queries.
#[derive(Debug, Clone)]
pub(crate) struct PeerShared {
    pub state: State,
    pub established_at: Option<Instant>,
    pub established_wall: Option<SystemTime>,
    pub remote_id: Option<Ipv4Addr>,
    pub hold_time: Option<u16>,
    pub families: Vec<Family>,
    pub last_error: Option<String>,
}

impl Default for PeerShared {
    fn default() -> Self {
        Self {
            state: State::Idle,
            established_at: None,
            established_wall: None,
            remote_id: None,
            hold_time: None,
            families: Vec::new(),
            last_error: None,
        }
    }
}

/// A peer as seen from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// Address.
    pub addr: IpAddr,
    /// AS.
    pub remote_as: u32,
    /// FSM state.
    pub state: State,
    /// Time since the session was Established.
    pub uptime: Option<Duration>,
    /// When the session was Established (wall clock).
    pub since: Option<SystemTime>,
    /// The peer's BGP identifier (last session).
    pub remote_id: Option<Ipv4Addr>,
    /// Negotiated hold time.
    pub hold_time: Option<u16>,
    /// Negotiated families.
    pub families: Vec<Family>,
    /// Prefixes announced by the peer (cumulative).
    pub received: u64,
    /// Paths from the peer in the RIB (after import policy).
    pub accepted: u64,
    /// Prefixes advertised to the peer.
    pub advertised: u64,
    /// Of `accepted`, paths kept stale while the peer restarts (RFC 4724).
    pub stale: u64,
    /// The peer's session went down gracefully and its routes are kept until it is
    /// back and sends End-of-RIB, or the restart or stale timer expires.
    pub restarting: bool,
    /// The last error (NOTIFICATION sent or received, connection failure).
    pub last_error: Option<String>,
}

/// Handle on a running speaker. Cheap to clone; the sessions run until
/// [`Speaker::shutdown`] (dropping every handle stops only the listener).
#[derive(Debug, Clone)]
pub struct Speaker {
    tx: UnboundedSender<CoreMsg>,
    local_addr: Option<SocketAddr>,
    _listener: Arc<ListenerGuard>,
}

#[derive(Debug)]
struct ListenerGuard(Mutex<Option<tokio::task::JoinHandle<()>>>);

impl ListenerGuard {
    /// Stops the accept task and waits until it (and so the listening socket) is gone.
    async fn stop(&self) {
        let h = self.0.lock().ok().and_then(|mut h| h.take());
        if let Some(h) = h {
            h.abort();
            let _ = h.await;
        }
    }
}

impl Drop for ListenerGuard {
    fn drop(&mut self) {
        if let Ok(h) = self.0.lock()
            && let Some(h) = h.as_ref()
        {
            h.abort();
        }
    }
}

impl Speaker {
    /// Binds the listener (if any) and starts the core task, with graceful restart
    /// as [`GracefulRestart::default`].
    pub async fn start(cfg: SpeakerConfig) -> Result<Speaker, Error> {
        Self::start_with(cfg, GracefulRestart::default()).await
    }

    /// [`Speaker::start`] with these graceful-restart settings.
    pub async fn start_with(cfg: SpeakerConfig, gr: GracefulRestart) -> Result<Speaker, Error> {
        let (tx, rx) = unbounded_channel();
        let mut listen_fd: Option<(OwnedFd, bool)> = None;
        let by_addr: Arc<Mutex<HashMap<IpAddr, UnboundedSender<PeerCmd>>>> = Arc::default();
        let (listener, local_addr) = match cfg.listen {
            Some(addr) => {
                let l = TcpListener::bind(addr)
                    .await
                    .map_err(|source| Error::Listen { addr, source })?;
                let local = l
                    .local_addr()
                    .map_err(|source| Error::Listen { addr, source })?;
                // A second descriptor of the listening socket, for TCP MD5 keys.
                let fd = std::os::fd::AsFd::as_fd(&l)
                    .try_clone_to_owned()
                    .map_err(|source| Error::Listen { addr, source })?;
                listen_fd = Some((fd, local.is_ipv6()));
                info!(addr = %local, "listening");
                (
                    Some(tokio::spawn(accept_loop(l, by_addr.clone()))),
                    Some(local),
                )
            }
            None => (None, None),
        };
        let rib = Rib::new(RibConfig {
            local_as: cfg.local_as,
            router_id: cfg.router_id,
            cluster_id: cfg.cluster_id,
        });
        tokio::spawn(Core::new(rib, tx.clone(), rx, by_addr, gr, listen_fd).run());
        Ok(Speaker {
            tx,
            local_addr,
            _listener: Arc::new(ListenerGuard(Mutex::new(listener))),
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    async fn ask<T>(&self, m: impl FnOnce(oneshot::Sender<T>) -> CoreMsg) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(m(tx)).map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)
    }

    /// Adds a peer and starts its session.
    pub async fn add_peer(&self, cfg: PeerConfig) -> Result<(), Error> {
        self.ask(|tx| CoreMsg::AddPeer(cfg, tx)).await?
    }

    /// Stops a peer's session (Cease) and withdraws its routes.
    pub async fn remove_peer(&self, addr: IpAddr) -> Result<(), Error> {
        self.ask(|tx| CoreMsg::RemovePeer(addr, tx)).await?
    }

    /// Originates a prefix (next hop: given, or our address on each session).
    pub fn originate(&self, prefix: IpNet, next_hop: Option<IpAddr>) -> Result<(), Error> {
        self.tx
            .send(CoreMsg::Originate(prefix.into(), next_hop))
            .map_err(|_| Error::Stopped)
    }

    /// Withdraws an originated prefix.
    pub fn withdraw(&self, prefix: IpNet) -> Result<(), Error> {
        self.tx
            .send(CoreMsg::Withdraw(prefix.into()))
            .map_err(|_| Error::Stopped)
    }

    /// Best-path changes of learned routes, in batches; the first batch is the
    /// current table (all `Add`).
    pub fn subscribe(&self) -> Result<UnboundedReceiver<Vec<RouteChange>>, Error> {
        let (tx, rx) = unbounded_channel();
        self.tx
            .send(CoreMsg::Subscribe(tx))
            .map_err(|_| Error::Stopped)?;
        Ok(rx)
    }

    /// Every peer's status, by address.
    pub async fn peers(&self) -> Result<Vec<PeerStatus>, Error> {
        self.ask(CoreMsg::Status).await
    }

    /// One peer's status.
    pub async fn peer(&self, addr: IpAddr) -> Result<PeerStatus, Error> {
        self.peers()
            .await?
            .into_iter()
            .find(|p| p.addr == addr)
            .ok_or(Error::UnknownPeer(addr))
    }

    /// Asks the peer to resend its routes (ROUTE-REFRESH, RFC 2918).
    pub async fn refresh(&self, addr: IpAddr) -> Result<(), Error> {
        self.ask(|tx| CoreMsg::Refresh(addr, tx)).await?
    }

    /// Replaces a peer's import and export filters without resetting its session: a
    /// new export filter is applied at once (withdrawals and announcements follow), a
    /// new import filter re-filters the peer's routes after a ROUTE-REFRESH that this
    /// sends (a peer without route refresh must be reset to re-filter old routes).
    pub async fn set_policy(&self, addr: IpAddr, policy: PeerPolicy) -> Result<(), Error> {
        self.ask(|tx| CoreMsg::SetPolicy(addr, policy, tx)).await?
    }

    /// Stops every session with a Cease (a Hard Reset with peers that negotiated
    /// RFC 8538, so that they drop our routes) and ends the speaker.
    pub async fn shutdown(self) {
        let _ = self.ask(CoreMsg::Shutdown).await;
        self._listener.stop().await;
    }

    /// Stops for a graceful restart (RFC 4724 §4.1): closes every session's TCP
    /// connection without a NOTIFICATION, so that graceful-restart peers keep our
    /// routes for the restart time, and ends the speaker (listener included). Start
    /// the next speaker with [`GracefulRestart::restarting`] set, originate the
    /// routes, then call [`Speaker::initial_routes_done`].
    pub async fn stop_for_restart(self) {
        let _ = self.ask(CoreMsg::StopForRestart).await;
        self._listener.stop().await;
    }

    /// Says that the application's initial routes are originated. Until then (or
    /// until [`GracefulRestart::eor_wait`] has passed since start) sessions get
    /// their updates but no End-of-RIB, so that a peer holding our stale routes
    /// from before a restart does not sweep those not yet re-announced. Then every
    /// Established session is sent End-of-RIB, and later sessions get it right
    /// after their initial updates. Calling it again does nothing.
    pub fn initial_routes_done(&self) -> Result<(), Error> {
        self.tx
            .send(CoreMsg::InitialRoutesDone)
            .map_err(|_| Error::Stopped)
    }
}

async fn accept_loop(
    l: TcpListener,
    by_addr: Arc<Mutex<HashMap<IpAddr, UnboundedSender<PeerCmd>>>>,
) {
    loop {
        match l.accept().await {
            Ok((s, from)) => {
                let ip = match from.ip() {
                    IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
                    v4 => v4,
                };
                // A peer may be added just after its connection arrives (at start-up,
                // or by the agent): give it a second before refusing.
                let by_addr = by_addr.clone();
                tokio::spawn(async move {
                    for _ in 0..20 {
                        let target = by_addr.lock().ok().and_then(|m| m.get(&ip).cloned());
                        if let Some(t) = target {
                            debug!(%from, "incoming connection");
                            let _ = t.send(PeerCmd::Incoming(s));
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    info!(%from, "connection from an unknown address refused");
                });
            }
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[cfg(test)]
mod gr_tests;
#[cfg(test)]
mod tests;
