//! The core task: owns the [`Rib`], applies UPDATEs in batches, and hands the packed
//! output to the peers' writers.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::sync::oneshot;
use tracing::{Instrument, debug, info, info_span, warn};

use super::peer::{PeerCmd, PeerTask, families};
use super::{Error, GracefulRestart, PeerConfig, PeerShared, PeerStatus, md5};
use crate::fsm::SessionConfig;
use crate::rib::{PeerId, PeerSettings, PeerUp, Rib, RouteChange};
use crate::wire::{Capability, Family, GracefulRestartCap, Prefix, Update};

/// Prefixes changed before the core flushes even if more input is queued: bounds the
/// batch's memory and keeps output flowing while a large table arrives.
///
/// The dirty map has 25 octets per bucket (IPv4); 2^15 buckets hold 28,672 entries
/// (7/8), and one UPDATE adds at most ~4,000 prefixes after the check, so 24 Ki keeps
/// the map at 2^15 buckets (0.8 MiB) where 32 Ki made it double to 2^16 (1.6 MiB at
/// the peak, measured with heaptrack).
const MAX_PENDING: usize = 24 * 1024;

/// Messages to the core task.
#[derive(Debug)]
pub(crate) enum CoreMsg {
    AddPeer(PeerConfig, oneshot::Sender<Result<(), Error>>),
    RemovePeer(IpAddr, oneshot::Sender<Result<(), Error>>),
    Originate(Prefix, Option<IpAddr>),
    Withdraw(Prefix),
    Subscribe(UnboundedSender<Vec<RouteChange>>),
    Status(oneshot::Sender<Vec<PeerStatus>>),
    Refresh(IpAddr, oneshot::Sender<Result<(), Error>>),
    SetPolicy(
        IpAddr,
        crate::policy::PeerPolicy,
        oneshot::Sender<Result<(), Error>>,
    ),
    Shutdown(oneshot::Sender<()>),
    StopForRestart(oneshot::Sender<()>),
    InitialRoutesDone,
    Up {
        id: PeerId,
        up: PeerUp,
        tx: UnboundedSender<Bytes>,
        /// The peer's graceful restart capability, if negotiated.
        gr: Option<GracefulRestartCap>,
    },
    Down {
        id: PeerId,
        /// Families whose routes are kept stale (empty: withdraw them all).
        keep: Vec<Family>,
        /// The peer's restart time, seconds.
        restart_time: u16,
    },
    /// A restart or stale timer of a peer; acted on if `epoch` is still current.
    GrTimer {
        id: PeerId,
        epoch: u64,
    },
    Updates {
        id: PeerId,
        updates: Vec<Update>,
    },
    RefreshRequest {
        id: PeerId,
    },
}

struct PeerHandle {
    cfg: PeerConfig,
    cmd: UnboundedSender<PeerCmd>,
    shared: Arc<Mutex<PeerShared>>,
    task: tokio::task::JoinHandle<()>,
}

pub(crate) struct Core {
    pub rib: Rib,
    pub local_as: u32,
    pub router_id: std::net::Ipv4Addr,
    pub tx: UnboundedSender<CoreMsg>,
    pub rx: UnboundedReceiver<CoreMsg>,
    /// Shared with the listener: where to hand incoming connections.
    pub by_addr: Arc<Mutex<HashMap<IpAddr, UnboundedSender<PeerCmd>>>>,
    peers: HashMap<PeerId, PeerHandle>,
    writers: HashMap<PeerId, UnboundedSender<Bytes>>,
    subscribers: Vec<UnboundedSender<Vec<RouteChange>>>,
    gr: GracefulRestart,
    /// The listening socket (and whether it is IPv6), for TCP MD5 keys.
    listen_fd: Option<(OwnedFd, bool)>,
    /// End-of-RIB may be sent (the application's routes are in, or the wait ended).
    initial_done: bool,
    /// Established peers still owed an End-of-RIB.
    eor_pending: HashSet<PeerId>,
    /// Peers whose routes are kept stale while they restart.
    restarts: HashMap<PeerId, Restart>,
    next_epoch: u64,
}

/// A peer in graceful restart, as the receiving speaker.
#[derive(Debug)]
struct Restart {
    /// Identifies the timer that may end it.
    epoch: u64,
    /// Families with stale routes.
    families: Vec<Family>,
}

impl Core {
    pub fn new(
        rib: Rib,
        tx: UnboundedSender<CoreMsg>,
        rx: UnboundedReceiver<CoreMsg>,
        by_addr: Arc<Mutex<HashMap<IpAddr, UnboundedSender<PeerCmd>>>>,
        gr: GracefulRestart,
        listen_fd: Option<(OwnedFd, bool)>,
    ) -> Self {
        let local_as = rib.config().local_as;
        let router_id = rib.config().router_id;
        let initial_done = gr.eor_wait.is_zero();
        if !initial_done {
            let tx = tx.clone();
            let wait = gr.eor_wait;
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                let _ = tx.send(CoreMsg::InitialRoutesDone);
            });
        }
        Self {
            gr,
            listen_fd,
            initial_done,
            eor_pending: HashSet::new(),
            restarts: HashMap::new(),
            next_epoch: 0,
            rib,
            local_as,
            router_id,
            tx,
            rx,
            by_addr,
            peers: HashMap::new(),
            writers: HashMap::new(),
            subscribers: Vec::new(),
        }
    }

    pub async fn run(mut self) {
        while let Some(m) = self.rx.recv().await {
            let m = match m {
                CoreMsg::Shutdown(done) => return self.stop(done, false).await,
                CoreMsg::StopForRestart(done) => return self.stop(done, true).await,
                m => m,
            };
            self.handle(m);
            // Take whatever else is queued before running the decision process.
            while let Ok(m) = self.rx.try_recv() {
                let m = match m {
                    CoreMsg::Shutdown(done) => {
                        self.flush();
                        return self.stop(done, false).await;
                    }
                    CoreMsg::StopForRestart(done) => {
                        self.flush();
                        return self.stop(done, true).await;
                    }
                    m => m,
                };
                self.handle(m);
                if self.rib.pending() >= MAX_PENDING {
                    self.flush();
                }
            }
            self.flush();
        }
    }

    async fn stop(mut self, done: oneshot::Sender<()>, for_restart: bool) {
        self.shutdown(for_restart).await;
        // The listening socket closes with the accept task and this descriptor.
        drop(self.listen_fd.take());
        let _ = done.send(());
    }

    async fn shutdown(&mut self, for_restart: bool) {
        // Stop every session at once, then give them two seconds in all to send
        // their Cease (or, for a restart, just to close).
        let cmd = if for_restart {
            info!("stopping for a graceful restart: closing sessions without NOTIFICATION");
            || PeerCmd::StopForRestart
        } else {
            || PeerCmd::Stop
        };
        let tasks: Vec<_> = self
            .peers
            .drain()
            .map(|(_, p)| {
                let _ = p.cmd.send(cmd());
                p.task
            })
            .collect();
        let _ = tokio::time::timeout(Duration::from_secs(2), join_all(tasks)).await;
    }

    fn timer(&self, id: PeerId, epoch: u64, after: Duration) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = tx.send(CoreMsg::GrTimer { id, epoch });
        });
    }

    fn addr_of(&self, id: PeerId) -> Option<IpAddr> {
        self.peers.get(&id).map(|p| p.cfg.addr)
    }

    /// Sets or deletes a peer's MD5 key on the listening socket.
    fn listener_key(&self, addr: IpAddr, key: Option<&str>) -> Result<(), md5::Md5Error> {
        match &self.listen_fd {
            Some((fd, v6)) => md5::set_key(fd.as_fd(), *v6, addr, key.map(str::as_bytes)),
            None => Ok(()),
        }
    }

    fn on_down(&mut self, id: PeerId, keep: Vec<Family>, restart_time: u16) {
        self.writers.remove(&id);
        self.eor_pending.remove(&id);
        if keep.is_empty() {
            self.restarts.remove(&id);
            self.rib.peer_down(id);
            return;
        }
        let stale = self.rib.peer_down_graceful(id, &keep);
        self.next_epoch += 1;
        let epoch = self.next_epoch;
        info!(peer = ?self.addr_of(id), stale, restart_time, families = ?keep,
            "peer may be restarting: its routes are kept as stale");
        self.restarts.insert(
            id,
            Restart {
                epoch,
                families: keep,
            },
        );
        self.timer(id, epoch, Duration::from_secs(u64::from(restart_time)));
    }

    fn on_up(
        &mut self,
        id: PeerId,
        up: PeerUp,
        tx: UnboundedSender<Bytes>,
        gr: Option<GracefulRestartCap>,
    ) {
        if let Some(r) = self.restarts.get_mut(&id) {
            // Back: stale routes of families whose forwarding state the peer did not
            // keep (or no longer negotiates) go at once, the others wait for its
            // End-of-RIB or the stale timer (RFC 4724 §4.2).
            self.next_epoch += 1;
            r.epoch = self.next_epoch;
            let (keep, flush): (Vec<Family>, Vec<Family>) =
                std::mem::take(&mut r.families).into_iter().partition(|f| {
                    up.families.contains(f)
                        && gr.as_ref().and_then(|g| g.forwarding(*f)) == Some(true)
                });
            r.families = keep.clone();
            let epoch = r.epoch;
            for f in flush {
                let n = self.rib.sweep_stale(id, f);
                info!(peer = ?self.addr_of(id), family = ?f, withdrawn = n,
                    "restarted peer kept no forwarding state: stale routes withdrawn");
            }
            if keep.is_empty() {
                self.restarts.remove(&id);
            } else {
                self.timer(id, epoch, self.gr.stale_time);
            }
        }
        self.writers.insert(id, tx);
        let out = self.rib.peer_up_eor(id, up, self.initial_done);
        if !self.initial_done {
            self.eor_pending.insert(id);
        }
        self.send(out);
    }

    /// The peer's End-of-RIB for `f`: its stale routes not refreshed go.
    fn on_end_of_rib(&mut self, id: PeerId, f: Family) {
        let Some(r) = self.restarts.get_mut(&id) else {
            return;
        };
        if !r.families.contains(&f) {
            return;
        }
        r.families.retain(|x| *x != f);
        if r.families.is_empty() {
            self.restarts.remove(&id);
        }
        let n = self.rib.sweep_stale(id, f);
        info!(peer = ?self.addr_of(id), family = ?f, withdrawn = n,
            "End-of-RIB from the restarted peer: stale routes swept");
    }

    fn on_gr_timer(&mut self, id: PeerId, epoch: u64) {
        if self.restarts.get(&id).is_none_or(|r| r.epoch != epoch) {
            return;
        }
        let Some(r) = self.restarts.remove(&id) else {
            return;
        };
        let up = self.writers.contains_key(&id);
        for f in r.families {
            let n = self.rib.sweep_stale(id, f);
            warn!(peer = ?self.addr_of(id), family = ?f, withdrawn = n,
                "{} timer expired: stale routes withdrawn",
                if up { "stale" } else { "restart" });
        }
    }

    fn on_initial_routes_done(&mut self) {
        if self.initial_done {
            return;
        }
        self.initial_done = true;
        // Everything originated so far goes out before the End-of-RIB.
        self.flush();
        let mut out = Vec::new();
        for id in self.eor_pending.drain() {
            out.extend(self.rib.end_of_rib(id));
        }
        debug!(peers = out.len(), "initial routes done: End-of-RIB sent");
        self.send(out);
    }

    fn send(&mut self, outputs: Vec<crate::rib::Output>) {
        for o in outputs {
            for p in &o.peers {
                if let Some(w) = self.writers.get(p) {
                    let _ = w.send(o.data.clone());
                }
            }
        }
    }

    fn flush(&mut self) {
        let f = self.rib.flush();
        self.send(f.outputs);
        if !f.changes.is_empty() {
            self.subscribers
                .retain(|s| s.send(f.changes.clone()).is_ok());
            if self.subscribers.is_empty() {
                self.rib.track_changes(false);
            }
        }
    }

    fn find(&self, addr: IpAddr) -> Option<PeerId> {
        self.peers
            .iter()
            .find(|(_, p)| p.cfg.addr == addr)
            .map(|(id, _)| *id)
    }

    fn status(&self) -> Vec<PeerStatus> {
        let mut v: Vec<PeerStatus> = self
            .peers
            .iter()
            .map(|(id, p)| {
                let s = p.shared.lock().map(|s| s.clone()).unwrap_or_default();
                let c = self.rib.counters(*id);
                PeerStatus {
                    addr: p.cfg.addr,
                    remote_as: p.cfg.remote_as,
                    state: s.state,
                    uptime: s.established_at.map(|t| t.elapsed()),
                    since: s.established_wall,
                    stale: c.stale,
                    restarting: self.restarts.contains_key(id),
                    remote_id: s.remote_id,
                    hold_time: s.hold_time,
                    families: s.families.clone(),
                    received: c.received,
                    accepted: c.accepted,
                    advertised: c.advertised,
                    last_error: s.last_error.clone(),
                }
            })
            .collect();
        v.sort_by_key(|s| s.addr);
        v
    }

    fn add_peer(&mut self, cfg: PeerConfig) -> Result<(), Error> {
        if self.find(cfg.addr).is_some() {
            return Err(Error::DuplicatePeer(cfg.addr));
        }
        if let Some(pw) = &cfg.password {
            self.listener_key(cfg.addr, Some(pw))
                .map_err(|source| Error::Md5 {
                    addr: cfg.addr,
                    source,
                })?;
            info!(peer = %cfg.addr, "TCP MD5 signatures (RFC 2385) configured for this peer");
        }
        let id = self.rib.add_peer(PeerSettings {
            addr: cfg.addr,
            remote_as: cfg.remote_as,
            rr_client: cfg.rr_client,
            next_hop: cfg.next_hop_mode(self.local_as),
            policy: cfg.policy.clone(),
        });
        let mut scfg = SessionConfig::new(self.local_as, cfg.remote_as, self.router_id);
        scfg.hold_time = cfg.hold_time;
        scfg.passive = cfg.passive;
        scfg.connect_retry = cfg.connect_retry;
        scfg.families = families(&cfg);
        if self.gr.enabled && cfg.graceful_restart {
            scfg.extra_capabilities
                .push(Capability::GracefulRestart(GracefulRestartCap::new(
                    self.gr.restart_time,
                    self.gr.restarting,
                    self.gr.notification,
                    &scfg.families,
                    self.gr.forwarding,
                )));
        }
        let (cmd, cmds) = unbounded_channel();
        let shared = Arc::new(Mutex::new(PeerShared::default()));
        let span = info_span!("peer", addr = %cfg.addr, asn = cfg.remote_as);
        let task = PeerTask::new(id, cfg.clone(), scfg, self.tx.clone(), shared.clone(), cmds);
        let task = tokio::spawn(task.run().instrument(span));
        if let Ok(mut m) = self.by_addr.lock() {
            m.insert(cfg.addr, cmd.clone());
        }
        self.peers.insert(
            id,
            PeerHandle {
                cfg,
                cmd,
                shared,
                task,
            },
        );
        Ok(())
    }

    fn handle(&mut self, m: CoreMsg) {
        match m {
            CoreMsg::AddPeer(cfg, done) => {
                let _ = done.send(self.add_peer(cfg));
            }
            CoreMsg::RemovePeer(addr, done) => {
                let r = match self.find(addr) {
                    None => Err(Error::UnknownPeer(addr)),
                    Some(id) => {
                        if let Some(p) = self.peers.remove(&id) {
                            let _ = p.cmd.send(PeerCmd::Remove);
                            if p.cfg.password.is_some()
                                && let Err(e) = self.listener_key(addr, None)
                            {
                                warn!(peer = %addr, error = %e, "cannot remove the TCP MD5 key");
                            }
                        }
                        self.restarts.remove(&id);
                        self.eor_pending.remove(&id);
                        if let Ok(mut m) = self.by_addr.lock() {
                            m.remove(&addr);
                        }
                        self.writers.remove(&id);
                        self.rib.remove_peer(id);
                        Ok(())
                    }
                };
                let _ = done.send(r);
            }
            CoreMsg::Originate(p, nh) => self.rib.originate(p, nh),
            CoreMsg::Withdraw(p) => self.rib.withdraw_local(p),
            CoreMsg::Subscribe(s) => {
                self.flush();
                self.rib.track_changes(true);
                let snapshot = self.rib.best_routes();
                if s.send(snapshot).is_ok() {
                    self.subscribers.push(s);
                }
            }
            CoreMsg::Status(done) => {
                let _ = done.send(self.status());
            }
            CoreMsg::Refresh(addr, done) => {
                let r = match self.find(addr).and_then(|id| self.peers.get(&id)) {
                    None => Err(Error::UnknownPeer(addr)),
                    Some(p) => {
                        let _ = p.cmd.send(PeerCmd::Refresh);
                        Ok(())
                    }
                };
                let _ = done.send(r);
            }
            CoreMsg::SetPolicy(addr, policy, done) => {
                let r = match self.find(addr) {
                    None => Err(Error::UnknownPeer(addr)),
                    Some(id) => {
                        let import_changed = self
                            .peers
                            .get(&id)
                            .is_some_and(|p| p.cfg.policy.import != policy.import);
                        if let Some(p) = self.peers.get_mut(&id) {
                            p.cfg.policy = policy.clone();
                        }
                        let out = self.rib.set_policy(id, policy);
                        self.send(out);
                        // Old routes are re-filtered when the peer sends them again.
                        if import_changed && let Some(p) = self.peers.get(&id) {
                            let _ = p.cmd.send(PeerCmd::Refresh);
                        }
                        Ok(())
                    }
                };
                let _ = done.send(r);
            }
            CoreMsg::Shutdown(_) | CoreMsg::StopForRestart(_) => {}
            CoreMsg::InitialRoutesDone => self.on_initial_routes_done(),
            CoreMsg::Up { id, up, tx, gr } => {
                if !self.peers.contains_key(&id) {
                    return;
                }
                self.on_up(id, up, tx, gr);
            }
            CoreMsg::Down {
                id,
                keep,
                restart_time,
            } => {
                if !self.peers.contains_key(&id) {
                    return;
                }
                self.on_down(id, keep, restart_time);
            }
            CoreMsg::GrTimer { id, epoch } => self.on_gr_timer(id, epoch),
            CoreMsg::Updates { id, updates } => {
                if !self.writers.contains_key(&id) {
                    return;
                }
                for u in &updates {
                    if let Some(afi) = u.end_of_rib() {
                        let f = if afi == 1 {
                            Family::Ipv4Unicast
                        } else {
                            Family::Ipv6Unicast
                        };
                        self.on_end_of_rib(id, f);
                        continue;
                    }
                    self.rib.apply_update(id, u);
                    if self.rib.pending() >= MAX_PENDING {
                        self.flush();
                    }
                }
            }
            CoreMsg::RefreshRequest { id } => {
                debug!(peer = ?id, "route refresh requested");
                // No End-of-RIB while it is held back: a peer keeping our stale
                // routes would sweep those not yet re-originated.
                let out = self.rib.dump_eor(id, self.initial_done);
                self.send(out);
            }
        }
    }
}

async fn join_all(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}
