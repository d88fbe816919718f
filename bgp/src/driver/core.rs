//! The core task: owns the [`Rib`], applies UPDATEs in batches, and hands the packed
//! output to the peers' writers.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::sync::oneshot;
use tracing::{Instrument, debug, info_span};

use super::peer::{PeerCmd, PeerTask, families};
use super::{Error, PeerConfig, PeerShared, PeerStatus};
use crate::fsm::SessionConfig;
use crate::rib::{PeerId, PeerSettings, PeerUp, Rib, RouteChange};
use crate::wire::{Prefix, Update};

/// Prefixes changed before the core flushes even if more input is queued: bounds the
/// batch's memory and keeps output flowing while a large table arrives.
const MAX_PENDING: usize = 32 * 1024;

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
    Up {
        id: PeerId,
        up: PeerUp,
        tx: UnboundedSender<Bytes>,
    },
    Down {
        id: PeerId,
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
}

impl Core {
    pub fn new(
        rib: Rib,
        tx: UnboundedSender<CoreMsg>,
        rx: UnboundedReceiver<CoreMsg>,
        by_addr: Arc<Mutex<HashMap<IpAddr, UnboundedSender<PeerCmd>>>>,
    ) -> Self {
        let local_as = rib.config().local_as;
        let router_id = rib.config().router_id;
        Self {
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
            if let CoreMsg::Shutdown(done) = m {
                self.shutdown().await;
                let _ = done.send(());
                return;
            }
            self.handle(m);
            // Take whatever else is queued before running the decision process.
            while let Ok(m) = self.rx.try_recv() {
                if let CoreMsg::Shutdown(done) = m {
                    self.flush();
                    self.shutdown().await;
                    let _ = done.send(());
                    return;
                }
                self.handle(m);
                if self.rib.pending() >= MAX_PENDING {
                    self.flush();
                }
            }
            self.flush();
        }
    }

    async fn shutdown(&mut self) {
        // Stop every session at once, then give them two seconds in all to send
        // their Cease.
        let tasks: Vec<_> = self
            .peers
            .drain()
            .map(|(_, p)| {
                let _ = p.cmd.send(PeerCmd::Stop);
                p.task
            })
            .collect();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), join_all(tasks)).await;
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
                            let _ = p.cmd.send(PeerCmd::Stop);
                        }
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
            CoreMsg::Shutdown(_) => {}
            CoreMsg::Up { id, up, tx } => {
                if !self.peers.contains_key(&id) {
                    return;
                }
                self.writers.insert(id, tx);
                let out = self.rib.peer_up(id, up);
                self.send(out);
            }
            CoreMsg::Down { id } => {
                self.writers.remove(&id);
                self.rib.peer_down(id);
            }
            CoreMsg::Updates { id, updates } => {
                if !self.writers.contains_key(&id) {
                    return;
                }
                for u in &updates {
                    self.rib.apply_update(id, u);
                    if self.rib.pending() >= MAX_PENDING {
                        self.flush();
                    }
                }
            }
            CoreMsg::RefreshRequest { id } => {
                debug!(peer = ?id, "route refresh requested");
                let out = self.rib.dump(id);
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
