//! Routing information bases: Adj-RIB-In per peer, the Loc-RIB with the decision
//! process, and Adj-RIB-Out per update group (RFC 4271 §3.2, §9).
//!
//! [`Rib`] is pure: the driver feeds it decoded UPDATEs and session events and sends
//! the [`Output`] buffers it returns. Design for a million routes:
//!
//! - Attributes are interned ([`intern`]): one `Arc<PathAttrs>` per distinct set.
//! - Prefixes are compact integers, one table per family ([`table`]); Adj-RIBs-In
//!   and the Loc-RIB share entries (the paths of a prefix, best first).
//! - Changes are batched: [`Rib::apply_update`] only marks prefixes dirty, recording
//!   the best path as it was; [`Rib::flush`] runs the decision process once per dirty
//!   prefix and produces the output of the whole batch.
//! - Output is per update group (module `export`): peers that would be sent the same
//!   attributes (same kind, route-reflector client flag, next-hop mode and address,
//!   policy, capabilities) share one group. Each attribute set is transformed and
//!   encoded once per group and batch, NLRI are packed behind it, and the resulting
//!   buffer is shared by all members (a reference-counted `Bytes`), not copied per
//!   peer. A member never receives its own routes back (split horizon).
//! - The Adj-RIB-Out is implicit: what a group has been sent is, by construction,
//!   the export of the Loc-RIB's best paths as of the last flush, so a withdrawal is
//!   due exactly when the previous best was exportable and the new one is not. This
//!   saves a per-group copy of the table (BIRD makes the same choice).

mod export;
pub mod intern;
pub mod table;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::decision::{Candidate, DEFAULT_LOCAL_PREF, select_best};
use crate::policy::PeerPolicy;
use crate::wire::{
    AsPath, Codec, Family, MpNlri, NextHop, Origin, PathAttrs, Prefix, Prefix4, Prefix6, Update,
};
use export::Group;
pub use export::GroupId;
use intern::Interner;
pub use table::{FamilyPrefix, Path, Paths, PeerId};
use table::{FxHashMap, Table};

/// How the next hop is set on routes sent to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NextHopMode {
    /// Our address on the session.
    #[serde(rename = "self")]
    OwnAddress,
    /// As received (third-party next hop; the usual choice towards iBGP peers and
    /// for a route reflector).
    Unchanged,
}

/// Speaker-wide settings the RIB needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RibConfig {
    /// Our AS.
    pub local_as: u32,
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
    /// Cluster id when acting as a route reflector (defaults to the router id when
    /// a peer is an rr-client).
    pub cluster_id: Option<Ipv4Addr>,
}

/// Per-peer settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSettings {
    /// The peer's address.
    pub addr: IpAddr,
    /// The peer's AS (equal to ours: iBGP).
    pub remote_as: u32,
    /// The peer is a route-reflector client (RFC 4456).
    pub rr_client: bool,
    /// Next-hop handling towards this peer.
    pub next_hop: NextHopMode,
    /// Import/export filters.
    pub policy: PeerPolicy,
}

/// What the RIB needs to know about an Established session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerUp {
    /// The peer's BGP identifier.
    pub router_id: Ipv4Addr,
    /// Our address on the session (next hop self).
    pub local_addr: IpAddr,
    /// Codec context.
    pub codec: Codec,
    /// Negotiated families.
    pub families: Vec<Family>,
}

/// Encoded messages for some peers. `data` is one or more whole BGP messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Who must be sent `data`.
    pub peers: Vec<PeerId>,
    /// The messages, shared between the peers.
    pub data: Bytes,
}

/// A change of best path, for the agent to install in its FIB. Locally originated
/// routes count as "no route" here: they are the agent's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteChange {
    /// A new route.
    Add {
        /// Destination.
        prefix: Prefix,
        /// Next hop.
        next_hop: IpAddr,
    },
    /// The route's next hop changed.
    Replace {
        /// Destination.
        prefix: Prefix,
        /// New next hop.
        next_hop: IpAddr,
    },
    /// No route any more.
    Withdraw {
        /// Destination.
        prefix: Prefix,
    },
}

/// Per-peer route counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Prefixes announced by the peer (NLRI seen, cumulative).
    pub received: u64,
    /// Prefixes withdrawn by the peer (cumulative).
    pub withdrawn: u64,
    /// Paths from the peer currently in the RIB (accepted by import policy).
    pub accepted: u64,
    /// Prefixes for which the peer's path is the best.
    pub best: u64,
    /// Prefixes currently advertised to the peer.
    pub advertised: u64,
    /// Paths from the peer kept stale across its restart (RFC 4724), included in
    /// `accepted`.
    pub stale: u64,
}

#[derive(Debug)]
struct PeerEntry {
    settings: PeerSettings,
    up: Option<(PeerUp, GroupId)>,
    counters: Counters,
}

/// One family's table and the prefixes changed since the last flush, each with its
/// best path as of that flush.
#[derive(Debug)]
struct FamilyState<P> {
    table: Table<P>,
    dirty: FxHashMap<P, Option<Path>>,
}

impl<P: FamilyPrefix> Default for FamilyState<P> {
    fn default() -> Self {
        Self {
            table: Table::default(),
            dirty: FxHashMap::default(),
        }
    }
}

/// Everything but the tables, so that a family's table and the context can be
/// borrowed at once.
#[derive(Debug)]
struct Ctx {
    cfg: RibConfig,
    peers: Vec<Option<PeerEntry>>,
    groups: Vec<Option<Group>>,
    interner: Interner,
    track_changes: bool,
    /// A cluster id is configured or some peer is an rr-client.
    reflector: bool,
}

/// The RIB. See the module documentation.
#[derive(Debug)]
pub struct Rib {
    ctx: Ctx,
    v4: FamilyState<Prefix4>,
    v6: FamilyState<Prefix6>,
    /// Best-path changes found by a flush that only its messages were wanted from (a peer
    /// coming up, a policy change): handed out by the next [`Rib::flush`].
    held_changes: Vec<RouteChange>,
}

/// Result of a flush.
#[derive(Debug, Default)]
pub struct Flush {
    /// Messages to send.
    pub outputs: Vec<Output>,
    /// Best-path changes (only when [`Rib::track_changes`] is on).
    pub changes: Vec<RouteChange>,
}

/// Family dispatch: which table a prefix type lives in and how it is packed.
trait Fam: FamilyPrefix {
    const FAMILY: Family;
    fn state(rib: &mut Rib) -> (&mut Ctx, &mut FamilyState<Self>);
    fn pack(out: &mut Vec<u8>, block: &[u8], nh: &NextHop, ps: &[Self]);
    fn pack_withdraw(out: &mut Vec<u8>, ps: &[Self]);
}

impl Fam for Prefix4 {
    const FAMILY: Family = Family::Ipv4Unicast;
    fn state(rib: &mut Rib) -> (&mut Ctx, &mut FamilyState<Self>) {
        (&mut rib.ctx, &mut rib.v4)
    }
    fn pack(out: &mut Vec<u8>, block: &[u8], _nh: &NextHop, ps: &[Self]) {
        crate::wire::pack::announce4(out, block, ps);
    }
    fn pack_withdraw(out: &mut Vec<u8>, ps: &[Self]) {
        crate::wire::pack::withdraw4(out, ps);
    }
}

impl Fam for Prefix6 {
    const FAMILY: Family = Family::Ipv6Unicast;
    fn state(rib: &mut Rib) -> (&mut Ctx, &mut FamilyState<Self>) {
        (&mut rib.ctx, &mut rib.v6)
    }
    fn pack(out: &mut Vec<u8>, block: &[u8], nh: &NextHop, ps: &[Self]) {
        crate::wire::pack::announce6(out, block, nh, ps);
    }
    fn pack_withdraw(out: &mut Vec<u8>, ps: &[Self]) {
        crate::wire::pack::withdraw6(out, ps);
    }
}

impl Ctx {
    fn peer(&self, id: PeerId) -> Option<&PeerEntry> {
        self.peers.get(id.0 as usize).and_then(Option::as_ref)
    }
    fn peer_mut(&mut self, id: PeerId) -> Option<&mut PeerEntry> {
        self.peers.get_mut(id.0 as usize).and_then(Option::as_mut)
    }
    fn cluster_id(&self) -> Ipv4Addr {
        self.cfg.cluster_id.unwrap_or(self.cfg.router_id)
    }
    fn is_ibgp(&self, id: PeerId) -> bool {
        self.peer(id)
            .is_some_and(|p| p.settings.remote_as == self.cfg.local_as)
    }

    fn candidate(&self, p: &Path) -> Candidate {
        let a = &p.attrs;
        let peer = self.peer(p.peer);
        let local = p.peer == PeerId::LOCAL;
        Candidate {
            local,
            local_pref: a.local_pref.unwrap_or(DEFAULT_LOCAL_PREF),
            as_path_len: a.as_path.len(),
            origin: a.origin,
            med: a.med.unwrap_or(0),
            neighbour_as: a.as_path.neighbour_as(),
            ebgp: peer.is_some_and(|e| e.settings.remote_as != self.cfg.local_as),
            router_id: u32::from(a.originator_id.unwrap_or_else(|| {
                peer.and_then(|e| e.up.as_ref().map(|u| u.0.router_id))
                    .unwrap_or(self.cfg.router_id)
            })),
            cluster_len: a.cluster_list.len(),
            peer_addr: peer.map_or(IpAddr::from([0, 0, 0, 0]), |e| e.settings.addr),
            peer: p.peer.0,
        }
    }

    /// Runs the decision process on `paths` and moves the winner to the front.
    fn decide(&self, paths: &mut Paths) {
        if let Paths::Many(v) = paths {
            let cands: Vec<Candidate> = v.iter().map(|p| self.candidate(p)).collect();
            if let Some(i) = select_best(&cands) {
                paths.make_best(i);
            }
        }
    }

    /// Import checks and transformations of RFC 4271 §9.1.1 and RFC 4456 §8; `None`
    /// if the route must be ignored (AS loop, reflection loop).
    fn import_attrs(&self, peer: PeerId, mut a: PathAttrs) -> Option<PathAttrs> {
        if self.is_ibgp(peer) {
            if a.originator_id == Some(self.cfg.router_id)
                || a.cluster_list.contains(&self.cluster_id())
            {
                return None;
            }
        } else {
            if a.as_path.contains(self.cfg.local_as) {
                return None;
            }
            // RFC 7606 §7.2: confederation segments from an external peer (we are
            // in no confederation) make the route treat-as-withdraw.
            if a.as_path.segments.iter().any(|s| {
                matches!(
                    s.kind,
                    crate::wire::SegmentType::ConfedSequence | crate::wire::SegmentType::ConfedSet
                )
            }) {
                return None;
            }
            // LOCAL_PREF, ORIGINATOR_ID and CLUSTER_LIST are not to be taken from
            // external peers (RFC 4271 §5.1.5, RFC 7606 §7.5, §7.9, §7.10: discard).
            a.local_pref = None;
            a.originator_id = None;
            a.cluster_list.clear();
        }
        Some(a)
    }
}

fn is_stale(ps: &Paths, peer: PeerId) -> bool {
    ps.of(peer).is_some_and(|p| p.stale)
}

fn fib_next_hop(p: Option<&Path>) -> Option<IpAddr> {
    let p = p?;
    if p.peer == PeerId::LOCAL {
        return None;
    }
    match p.attrs.next_hop? {
        NextHop::V4(a) => Some(IpAddr::V4(a)),
        NextHop::V6 { global, .. } => Some(IpAddr::V6(global)),
    }
}

impl Rib {
    /// An empty RIB.
    pub fn new(cfg: RibConfig) -> Self {
        let reflector = cfg.cluster_id.is_some();
        Self {
            ctx: Ctx {
                cfg,
                // Slot 0 is PeerId::LOCAL.
                peers: vec![None],
                groups: Vec::new(),
                interner: Interner::default(),
                track_changes: false,
                reflector,
            },
            v4: FamilyState::default(),
            v6: FamilyState::default(),
            held_changes: Vec::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RibConfig {
        &self.ctx.cfg
    }

    /// Report best-path changes from [`Rib::flush`] (off by default: a pure route
    /// reflector has no FIB to feed).
    pub fn track_changes(&mut self, on: bool) {
        self.ctx.track_changes = on;
    }

    /// Registers a peer (its session is not up yet).
    pub fn add_peer(&mut self, settings: PeerSettings) -> PeerId {
        self.ctx.reflector |= settings.rr_client;
        let entry = PeerEntry {
            settings,
            up: None,
            counters: Counters::default(),
        };
        if let Some(i) = self.ctx.peers.iter().skip(1).position(Option::is_none) {
            self.ctx.peers[i + 1] = Some(entry);
            return PeerId(i as u32 + 1);
        }
        self.ctx.peers.push(Some(entry));
        PeerId(self.ctx.peers.len() as u32 - 1)
    }

    /// Forgets a peer, withdrawing its routes first.
    pub fn remove_peer(&mut self, id: PeerId) {
        self.peer_down(id);
        if id != PeerId::LOCAL
            && let Some(slot) = self.ctx.peers.get_mut(id.0 as usize)
        {
            *slot = None;
        }
        self.ctx.reflector = self.ctx.cfg.cluster_id.is_some()
            || self
                .ctx
                .peers
                .iter()
                .flatten()
                .any(|p| p.settings.rr_client);
    }

    /// A peer's settings.
    pub fn peer_settings(&self, id: PeerId) -> Option<&PeerSettings> {
        self.ctx.peer(id).map(|p| &p.settings)
    }

    /// A peer's counters.
    pub fn counters(&self, id: PeerId) -> Counters {
        let Some(p) = self.ctx.peer(id) else {
            return Counters::default();
        };
        let mut c = p.counters;
        c.advertised =
            p.up.as_ref()
                .and_then(|(_, g)| self.ctx.groups.get(g.0).and_then(Option::as_ref))
                .map_or(0, |g| {
                    g.advertised
                        .saturating_sub(if g.has(id) { c.best } else { 0 })
                });
        c
    }

    /// Number of prefixes with at least one path, per family.
    pub fn len(&self) -> (usize, usize) {
        (self.v4.table.len(), self.v6.table.len())
    }

    /// Whether both tables are empty.
    pub fn is_empty(&self) -> bool {
        self.v4.table.is_empty() && self.v6.table.is_empty()
    }

    /// Prefixes changed since the last flush.
    pub fn pending(&self) -> usize {
        self.v4.dirty.len() + self.v6.dirty.len()
    }

    /// The paths of a prefix, best first.
    pub fn paths(&self, p: Prefix) -> Vec<Path> {
        match p {
            Prefix::V4(p) => self.v4.table.get(&p).map(|x| x.as_slice().to_vec()),
            Prefix::V6(p) => self.v6.table.get(&p).map(|x| x.as_slice().to_vec()),
        }
        .unwrap_or_default()
    }

    /// Current best next hops of learned routes (what a new FIB subscriber starts from).
    pub fn best_routes(&self) -> Vec<RouteChange> {
        let v4 = self.v4.table.iter().filter_map(|(p, ps)| {
            fib_next_hop(ps.best()).map(|next_hop| RouteChange::Add {
                prefix: (*p).into(),
                next_hop,
            })
        });
        let v6 = self.v6.table.iter().filter_map(|(p, ps)| {
            fib_next_hop(ps.best()).map(|next_hop| RouteChange::Add {
                prefix: (*p).into(),
                next_hop,
            })
        });
        v4.chain(v6).collect()
    }

    fn upsert<P: Fam>(&mut self, p: P, path: Path) {
        let (ctx, fam) = P::state(self);
        let peer = path.peer;
        let entry = fam.table.entry(p);
        let old_best;
        let changed = match entry {
            std::collections::hash_map::Entry::Vacant(v) => {
                old_best = None;
                v.insert(Paths::One(path));
                if let Some(e) = ctx.peer_mut(peer) {
                    e.counters.accepted += 1;
                }
                true
            }
            std::collections::hash_map::Entry::Occupied(mut o) => {
                let ps = o.get_mut();
                old_best = ps.best().cloned();
                let had = ps.of(peer).map(|p| p.stale);
                let had_stale = had == Some(true);
                let had = had.is_some();
                let changed = ps.upsert(path);
                if had_stale && let Some(e) = ctx.peer_mut(peer) {
                    e.counters.stale = e.counters.stale.saturating_sub(1);
                }
                if changed {
                    if !had && let Some(e) = ctx.peer_mut(peer) {
                        e.counters.accepted += 1;
                    }
                    ctx.decide(ps);
                }
                changed
            }
        };
        if changed {
            fam.dirty.entry(p).or_insert(old_best);
        }
    }

    fn remove<P: Fam>(&mut self, p: P, peer: PeerId) {
        let (ctx, fam) = P::state(self);
        let std::collections::hash_map::Entry::Occupied(mut o) = fam.table.entry(p) else {
            return;
        };
        let old_best = o.get().best().cloned();
        let was_stale = o.get().of(peer).is_some_and(|p| p.stale);
        match o.get_mut().remove(peer) {
            None => {
                o.remove();
            }
            Some(false) => return,
            Some(true) => ctx.decide(o.get_mut()),
        }
        if let Some(e) = ctx.peer_mut(peer) {
            e.counters.accepted = e.counters.accepted.saturating_sub(1);
            if was_stale {
                e.counters.stale = e.counters.stale.saturating_sub(1);
            }
        }
        fam.dirty.entry(p).or_insert(old_best);
    }

    fn announce<P: Fam>(&mut self, peer: PeerId, attrs: &Option<Arc<PathAttrs>>, ps: &[P]) {
        let policy_ok = |rib: &Rib, p: P| {
            rib.ctx
                .peer(peer)
                .is_some_and(|e| e.settings.policy.imports(p.into()))
        };
        for &p in ps {
            match attrs {
                Some(a) if policy_ok(self, p) => self.upsert(p, Path::new(a.clone(), peer)),
                // Rejected by policy or a loop: an implicit withdrawal of any older path.
                _ => self.remove(p, peer),
            }
        }
    }

    /// Applies one UPDATE received from `peer` (marks prefixes dirty; see [`Rib::flush`]).
    ///
    /// An UPDATE to be treated as withdraw (RFC 7606) withdraws the routes it lists
    /// as withdrawn and those it announces.
    pub fn apply_update(&mut self, peer: PeerId, u: &Update) {
        let mut received = u.nlri.len() as u64;
        let mut withdrawn = u.withdrawn.len() as u64;
        if u.treat_as_withdraw() {
            for &p in &u.nlri {
                self.remove(p, peer);
            }
            if let Some(r) = &u.mp_reach {
                match &r.nlri {
                    MpNlri::V4(v) => v.iter().for_each(|&p| self.remove(p, peer)),
                    MpNlri::V6(v) => v.iter().for_each(|&p| self.remove(p, peer)),
                }
            }
        }
        for &p in &u.withdrawn {
            self.remove(p, peer);
        }
        if let Some(w) = &u.mp_unreach {
            withdrawn += w.withdrawn.len() as u64;
            match &w.withdrawn {
                MpNlri::V4(v) => v.iter().for_each(|&p| self.remove(p, peer)),
                MpNlri::V6(v) => v.iter().for_each(|&p| self.remove(p, peer)),
            }
        }
        if let Some(a) = &u.attrs {
            let imported = self.ctx.import_attrs(peer, a.clone());
            if !u.nlri.is_empty() {
                let arc = imported.clone().map(|a| self.ctx.interner.intern(a));
                self.announce(peer, &arc, &u.nlri);
            }
            if let Some(r) = &u.mp_reach {
                received += r.nlri.len() as u64;
                let arc = imported.map(|mut a| {
                    a.next_hop = Some(r.next_hop);
                    self.ctx.interner.intern(a)
                });
                match &r.nlri {
                    MpNlri::V4(v) => self.announce(peer, &arc, v),
                    MpNlri::V6(v) => self.announce(peer, &arc, v),
                }
            }
        }
        if let Some(e) = self.ctx.peer_mut(peer) {
            e.counters.received += received;
            e.counters.withdrawn += withdrawn;
        }
    }

    /// Originates `prefix` from this speaker. Without a next hop, peers are given our
    /// session address.
    pub fn originate(&mut self, prefix: Prefix, next_hop: Option<IpAddr>) {
        let next_hop = next_hop.and_then(|n| match (prefix, n) {
            (Prefix::V4(_), IpAddr::V4(a)) => Some(NextHop::V4(a)),
            (Prefix::V6(_), IpAddr::V6(global)) => Some(NextHop::V6 {
                global,
                link_local: None,
            }),
            _ => None,
        });
        let attrs = self.ctx.interner.intern(PathAttrs {
            origin: Origin::Igp,
            as_path: AsPath::default(),
            next_hop,
            ..PathAttrs::default()
        });
        let path = Path::new(attrs, PeerId::LOCAL);
        match prefix {
            Prefix::V4(p) => self.upsert(p, path),
            Prefix::V6(p) => self.upsert(p, path),
        }
    }

    /// Stops originating `prefix`.
    pub fn withdraw_local(&mut self, prefix: Prefix) {
        match prefix {
            Prefix::V4(p) => self.remove(p, PeerId::LOCAL),
            Prefix::V6(p) => self.remove(p, PeerId::LOCAL),
        }
    }

    /// The session with `peer` is Established: joins its update group and returns
    /// pending output, then the initial table dump and End-of-RIB for that peer.
    pub fn peer_up(&mut self, peer: PeerId, up: PeerUp) -> Vec<Output> {
        self.peer_up_eor(peer, up, true)
    }

    /// [`Rib::peer_up`], with End-of-RIB only if `eor`: a restarting speaker holds
    /// it back until its own routes are in (RFC 4724 §4.1), then sends
    /// [`Rib::end_of_rib`].
    pub fn peer_up_eor(&mut self, peer: PeerId, up: PeerUp, eor: bool) -> Vec<Output> {
        let mut outputs = self.flush_holding_changes();
        let Some(settings) = self.ctx.peer(peer).map(|e| e.settings.clone()) else {
            return outputs;
        };
        let gid = export::join_group(&mut self.ctx, peer, &settings, &up);
        if let Some(e) = self.ctx.peer_mut(peer) {
            e.up = Some((up, gid));
        }
        outputs.extend(self.dump_eor(peer, eor));
        outputs
    }

    /// End-of-RIB markers for every family negotiated with `peer` (nothing if its
    /// session is not up).
    pub fn end_of_rib(&self, peer: PeerId) -> Option<Output> {
        let fams = self.ctx.peer(peer)?.up.as_ref()?.0.families.clone();
        let mut data = Vec::new();
        for f in fams {
            crate::wire::end_of_rib_into(&mut data, f);
        }
        Some(Output {
            peers: vec![peer],
            data: Bytes::from(data),
        })
    }

    /// Replaces a peer's import and export filters. A changed export filter takes
    /// effect at once: the peer moves to the update group of its new policy, is sent
    /// withdrawals for what the new filter hides and the table as it now sees it.
    /// A changed import filter applies to routes received from now on; the caller
    /// asks the peer to resend its routes (ROUTE-REFRESH) to re-filter the old ones.
    pub fn set_policy(&mut self, peer: PeerId, policy: PeerPolicy) -> Vec<Output> {
        let mut out = self.flush_holding_changes();
        let Some(e) = self.ctx.peer_mut(peer) else {
            return out;
        };
        let export_changed = e.settings.policy.export != policy.export;
        e.settings.policy = policy;
        let settings = e.settings.clone();
        let Some((up, old_gid)) = e.up.clone() else {
            return out;
        };
        if !export_changed {
            return out;
        }
        let Some(old_key) = export::group_key(&self.ctx, old_gid) else {
            return out;
        };
        export::leave_group(&mut self.ctx, peer, old_gid);
        let gid = export::join_group(&mut self.ctx, peer, &settings, &up);
        if let Some(e) = self.ctx.peer_mut(peer) {
            e.up = Some((up.clone(), gid));
        }
        for f in &up.families {
            let data = match f {
                Family::Ipv4Unicast => export::hidden_by_policy::<Prefix4>(self, peer, &old_key),
                Family::Ipv6Unicast => export::hidden_by_policy::<Prefix6>(self, peer, &old_key),
            };
            if !data.is_empty() {
                out.push(Output {
                    peers: vec![peer],
                    data: Bytes::from(data),
                });
            }
        }
        out.extend(self.dump(peer));
        out
    }

    /// The whole table as this peer should see it, then End-of-RIB (initial
    /// advertisement and answers to ROUTE-REFRESH).
    pub fn dump(&mut self, peer: PeerId) -> Vec<Output> {
        self.dump_eor(peer, true)
    }

    /// [`Rib::dump`], with End-of-RIB only if `eor` (held back, see
    /// [`Rib::peer_up_eor`]).
    pub fn dump_eor(&mut self, peer: PeerId, eor: bool) -> Vec<Output> {
        let mut out = Vec::new();
        let fams = self
            .ctx
            .peer(peer)
            .and_then(|e| e.up.as_ref())
            .map(|u| u.0.families.clone())
            .unwrap_or_default();
        for f in fams {
            let data = match f {
                Family::Ipv4Unicast => export::dump_family::<Prefix4>(self, peer, eor),
                Family::Ipv6Unicast => export::dump_family::<Prefix6>(self, peer, eor),
            };
            if data.is_empty() {
                continue;
            }
            out.push(Output {
                peers: vec![peer],
                data: Bytes::from(data),
            });
        }
        out
    }

    /// The session with `peer` went down: its routes are withdrawn (at the next flush)
    /// and it leaves its update group.
    pub fn peer_down(&mut self, peer: PeerId) {
        if let Some(e) = self.ctx.peer_mut(peer)
            && let Some((_, gid)) = e.up.take()
        {
            export::leave_group(&mut self.ctx, peer, gid);
        }
        let v4: Vec<Prefix4> = self
            .v4
            .table
            .iter()
            .filter(|(_, ps)| ps.of(peer).is_some())
            .map(|(p, _)| *p)
            .collect();
        for p in v4 {
            self.remove(p, peer);
        }
        let v6: Vec<Prefix6> = self
            .v6
            .table
            .iter()
            .filter(|(_, ps)| ps.of(peer).is_some())
            .map(|(p, _)| *p)
            .collect();
        for p in v6 {
            self.remove(p, peer);
        }
    }

    /// The session with `peer` went down and the peer may be restarting (RFC 4724):
    /// it leaves its update group, its paths of the families in `keep` stay in use
    /// marked stale (no best-path change, nothing sent), the others are withdrawn.
    /// Returns how many paths were marked.
    pub fn peer_down_graceful(&mut self, peer: PeerId, keep: &[Family]) -> u64 {
        if let Some(e) = self.ctx.peer_mut(peer)
            && let Some((_, gid)) = e.up.take()
        {
            export::leave_group(&mut self.ctx, peer, gid);
        }
        let mut marked = 0;
        for f in Family::ALL {
            if keep.contains(&f) {
                marked += match f {
                    Family::Ipv4Unicast => self.v4.table.mark_stale(peer),
                    Family::Ipv6Unicast => self.v6.table.mark_stale(peer),
                };
            } else {
                self.sweep(peer, f, false);
            }
        }
        if let Some(e) = self.ctx.peer_mut(peer) {
            e.counters.stale += marked;
        }
        marked
    }

    /// Withdraws `peer`'s paths of `family` that are still stale (its End-of-RIB
    /// arrived, or the restart or stale timer expired). Returns how many.
    pub fn sweep_stale(&mut self, peer: PeerId, family: Family) -> u64 {
        self.sweep(peer, family, true)
    }

    /// Whether `peer` has stale paths of `family`.
    pub fn has_stale(&self, peer: PeerId, family: Family) -> bool {
        match family {
            Family::Ipv4Unicast => self.v4.table.iter().any(|(_, ps)| is_stale(ps, peer)),
            Family::Ipv6Unicast => self.v6.table.iter().any(|(_, ps)| is_stale(ps, peer)),
        }
    }

    fn sweep(&mut self, peer: PeerId, family: Family, only_stale: bool) -> u64 {
        let pick = |ps: &Paths| ps.of(peer).is_some_and(|p| p.stale || !only_stale);
        match family {
            Family::Ipv4Unicast => {
                let v: Vec<Prefix4> = self
                    .v4
                    .table
                    .iter()
                    .filter(|(_, ps)| pick(ps))
                    .map(|(p, _)| *p)
                    .collect();
                v.iter().for_each(|&p| self.remove(p, peer));
                v.len() as u64
            }
            Family::Ipv6Unicast => {
                let v: Vec<Prefix6> = self
                    .v6
                    .table
                    .iter()
                    .filter(|(_, ps)| pick(ps))
                    .map(|(p, _)| *p)
                    .collect();
                v.iter().for_each(|&p| self.remove(p, peer));
                v.len() as u64
            }
        }
    }

    /// Runs the decision results of everything applied since the last flush through
    /// every update group and returns the messages and best-path changes.
    pub fn flush(&mut self) -> Flush {
        let mut f = Flush {
            changes: std::mem::take(&mut self.held_changes),
            ..Flush::default()
        };
        export::flush_family::<Prefix4>(self, &mut f);
        export::flush_family::<Prefix6>(self, &mut f);
        f
    }

    /// A flush whose messages are wanted now; its best-path changes are kept for the next
    /// [`Rib::flush`] (dropping them lost routes: an UPDATE and another peer's session coming
    /// up in the same batch left the first one's route out of the kernel).
    fn flush_holding_changes(&mut self) -> Vec<Output> {
        let f = self.flush();
        self.held_changes = f.changes;
        f.outputs
    }

    /// Distinct interned attribute sets (for memory diagnostics).
    pub fn attribute_sets(&self) -> usize {
        self.ctx.interner.len()
    }
}

#[cfg(test)]
mod tests;
