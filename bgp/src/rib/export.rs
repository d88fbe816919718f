//! Update groups and the export path: which peers get which route with which
//! attributes, encoded once per group.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::table::{FxHashMap, Path, PeerId};
use super::{
    Ctx, Fam, Flush, NextHopMode, Output, PeerSettings, PeerUp, Rib, RouteChange, fib_next_hop,
};
use crate::policy::PrefixList;
use crate::wire::pack::encode_attr_block;
use crate::wire::{Codec, Family, NextHop, PathAttrs, end_of_rib_into};

/// Index of an update group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GroupId(pub usize);

/// What makes two peers receive byte-identical UPDATEs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct GroupKey {
    ibgp: bool,
    rr_client: bool,
    next_hop: NextHopMode,
    self_v4: Ipv4Addr,
    self_v6: Ipv6Addr,
    codec: Codec,
    families: Vec<Family>,
    export: Option<PrefixList>,
}

/// An update group.
#[derive(Debug)]
pub(super) struct Group {
    key: GroupKey,
    members: Vec<PeerId>,
    /// Prefixes currently advertised to the group.
    pub(super) advertised: u64,
}

impl Group {
    pub(super) fn has(&self, p: PeerId) -> bool {
        self.members.contains(&p)
    }
}

fn self_addrs(ctx: &Ctx, local: IpAddr) -> (Ipv4Addr, Ipv6Addr) {
    match local {
        IpAddr::V4(a) => (a, a.to_ipv6_mapped()),
        IpAddr::V6(a) => (a.to_ipv4_mapped().unwrap_or(ctx.cfg.router_id), a),
    }
}

pub(super) fn join_group(ctx: &mut Ctx, peer: PeerId, s: &PeerSettings, up: &PeerUp) -> GroupId {
    let (self_v4, self_v6) = self_addrs(ctx, up.local_addr);
    let key = GroupKey {
        ibgp: s.remote_as == ctx.cfg.local_as,
        rr_client: s.rr_client,
        next_hop: s.next_hop,
        self_v4,
        self_v6,
        codec: up.codec,
        families: up.families.clone(),
        export: s.policy.export.clone(),
    };
    if let Some(i) = ctx
        .groups
        .iter()
        .position(|g| g.as_ref().is_some_and(|g| g.key == key))
    {
        if let Some(g) = ctx.groups[i].as_mut()
            && !g.has(peer)
        {
            g.members.push(peer);
        }
        return GroupId(i);
    }
    let g = Group {
        key,
        members: vec![peer],
        advertised: 0,
    };
    if let Some(i) = ctx.groups.iter().position(Option::is_none) {
        ctx.groups[i] = Some(g);
        return GroupId(i);
    }
    ctx.groups.push(Some(g));
    GroupId(ctx.groups.len() - 1)
}

pub(super) fn leave_group(ctx: &mut Ctx, peer: PeerId, gid: GroupId) {
    if let Some(slot) = ctx.groups.get_mut(gid.0)
        && let Some(g) = slot
    {
        g.members.retain(|m| *m != peer);
        if g.members.is_empty() {
            *slot = None;
        }
    }
}

/// Split horizon and reflection rules (RFC 4271 §9.2, RFC 4456 §6): may a route from
/// `src` be sent to peers of this group at all?
fn may_send(ctx: &Ctx, src: PeerId, g: &GroupKey) -> bool {
    if src == PeerId::LOCAL || !ctx.is_ibgp(src) || !g.ibgp {
        return true;
    }
    // iBGP to iBGP: only a reflector, and only client→anyone or anyone→client.
    let src_client = ctx.peer(src).is_some_and(|p| p.settings.rr_client);
    ctx.reflector && (src_client || g.rr_client)
}

/// The attributes a group is sent for a path (RFC 4271 §5.1, RFC 4456 §8).
fn transform(ctx: &Ctx, path: &Path, g: &GroupKey, family: Family) -> Option<(PathAttrs, NextHop)> {
    let mut a = (*path.attrs).clone();
    let local = path.peer == PeerId::LOCAL;
    let own = match family {
        Family::Ipv4Unicast => NextHop::V4(g.self_v4),
        Family::Ipv6Unicast => NextHop::V6 {
            global: g.self_v6,
            link_local: None,
        },
    };
    if g.ibgp {
        a.local_pref = Some(a.local_pref.unwrap_or(crate::decision::DEFAULT_LOCAL_PREF));
        if !local && ctx.is_ibgp(path.peer) {
            let src_id = ctx
                .peer(path.peer)
                .and_then(|p| p.up.as_ref().map(|u| u.0.router_id))
                .unwrap_or(ctx.cfg.router_id);
            a.originator_id = Some(a.originator_id.unwrap_or(src_id));
            a.cluster_list.insert(0, ctx.cluster_id());
        }
    } else {
        a.as_path.prepend(ctx.cfg.local_as);
        a.local_pref = None;
        a.originator_id = None;
        a.cluster_list.clear();
        if !local {
            // MED learned from one neighbouring AS is not passed to another (§5.1.4).
            a.med = None;
        }
    }
    let nh = match (g.next_hop, a.next_hop) {
        (NextHopMode::Unchanged, Some(n)) => n,
        _ => own,
    };
    let fits = matches!(
        (family, nh),
        (Family::Ipv4Unicast, NextHop::V4(_)) | (Family::Ipv6Unicast, NextHop::V6 { .. })
    );
    if !fits {
        return None;
    }
    a.next_hop = Some(nh);
    Some((a, nh))
}

/// Encoded attribute blocks of one batch, by (attributes, source peer, group).
#[derive(Default)]
struct Blocks {
    index: FxHashMap<(usize, PeerId, usize), Option<usize>>,
    blocks: Vec<(Vec<u8>, NextHop)>,
}

impl Blocks {
    fn get(
        &mut self,
        ctx: &Ctx,
        path: &Path,
        gi: usize,
        g: &GroupKey,
        family: Family,
    ) -> Option<usize> {
        let key = (std::sync::Arc::as_ptr(&path.attrs) as usize, path.peer, gi);
        if let Some(b) = self.index.get(&key) {
            return *b;
        }
        let b = transform(ctx, path, g, family).map(|(a, nh)| {
            let mut block = Vec::with_capacity(64);
            encode_attr_block(&a, g.codec, family, &mut block);
            self.blocks.push((block, nh));
            self.blocks.len() - 1
        });
        self.index.insert(key, b);
        b
    }
}

fn exported(ctx: &Ctx, path: &Path, g: &GroupKey, prefix: crate::wire::Prefix) -> bool {
    g.families.contains(&prefix_family(prefix))
        && may_send(ctx, path.peer, g)
        && g.export.as_ref().is_none_or(|l| l.permits(prefix))
}

fn prefix_family(p: crate::wire::Prefix) -> Family {
    match p {
        crate::wire::Prefix::V4(_) => Family::Ipv4Unicast,
        crate::wire::Prefix::V6(_) => Family::Ipv6Unicast,
    }
}

/// Who receives a buffer within a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Target {
    All,
    AllBut(PeerId),
    Only(PeerId),
}

pub(super) fn flush_family<P: Fam>(rib: &mut Rib, f: &mut Flush) {
    let (ctx, fam) = P::state(rib);
    if fam.dirty.is_empty() {
        return;
    }
    let mut blocks = Blocks::default();
    // Per group: announcements by (block, target), and withdrawals by target.
    let ngroups = ctx.groups.len();
    let mut ann: Vec<FxHashMap<(usize, Target), Vec<P>>> =
        (0..ngroups).map(|_| FxHashMap::default()).collect();
    let mut wd: Vec<FxHashMap<Target, Vec<P>>> =
        (0..ngroups).map(|_| FxHashMap::default()).collect();
    let mut adv_delta = vec![0i64; ngroups];
    let mut best_delta: FxHashMap<PeerId, i64> = FxHashMap::default();
    for (p, old) in fam.dirty.drain() {
        let new = fam.table.get(&p).and_then(|ps| ps.best().cloned());
        let unchanged = match (&old, &new) {
            (Some(o), Some(n)) => o.same(n),
            (None, None) => true,
            _ => false,
        };
        if unchanged {
            continue;
        }
        if let Some(o) = &old {
            *best_delta.entry(o.peer).or_default() -= 1;
        }
        if let Some(n) = &new {
            *best_delta.entry(n.peer).or_default() += 1;
        }
        let prefix: crate::wire::Prefix = p.into();
        if ctx.track_changes {
            match (fib_next_hop(old.as_ref()), fib_next_hop(new.as_ref())) {
                (None, Some(next_hop)) => f.changes.push(RouteChange::Add { prefix, next_hop }),
                (Some(a), Some(b)) if a != b => f.changes.push(RouteChange::Replace {
                    prefix,
                    next_hop: b,
                }),
                (Some(_), None) => f.changes.push(RouteChange::Withdraw { prefix }),
                _ => {}
            }
        }
        for gi in 0..ngroups {
            let Some(g) = ctx.groups[gi].as_ref() else {
                continue;
            };
            let was = old
                .as_ref()
                .is_some_and(|o| exported(ctx, o, &g.key, prefix));
            let now = match &new {
                Some(n) if exported(ctx, n, &g.key, prefix) => blocks
                    .get(ctx, n, gi, &g.key, P::FAMILY)
                    .map(|b| (b, n.peer)),
                _ => None,
            };
            match now {
                Some((b, src)) => {
                    let target = if g.has(src) {
                        Target::AllBut(src)
                    } else {
                        Target::All
                    };
                    ann[gi].entry((b, target)).or_default().push(p);
                    if !was {
                        adv_delta[gi] += 1;
                    }
                    // The new source had the old route from us: take it back.
                    if was && g.has(src) && old.as_ref().is_some_and(|o| o.peer != src) {
                        wd[gi].entry(Target::Only(src)).or_default().push(p);
                    }
                }
                None if was => {
                    // The old best's source never got it from us (split horizon).
                    let target = match &old {
                        Some(o) if g.has(o.peer) => Target::AllBut(o.peer),
                        _ => Target::All,
                    };
                    wd[gi].entry(target).or_default().push(p);
                    adv_delta[gi] -= 1;
                }
                None => {}
            }
        }
    }
    for (peer, d) in best_delta {
        if let Some(e) = ctx.peer_mut(peer) {
            e.counters.best = (e.counters.best as i64 + d).max(0) as u64;
        }
    }
    for gi in 0..ngroups {
        let Some(g) = ctx.groups[gi].as_mut() else {
            continue;
        };
        g.advertised = (g.advertised as i64 + adv_delta[gi]).max(0) as u64;
        let mut by_target: FxHashMap<Target, Vec<u8>> = FxHashMap::default();
        for (t, mut ps) in std::mem::take(&mut wd[gi]) {
            ps.sort_unstable();
            P::pack_withdraw(by_target.entry(t).or_default(), &ps);
        }
        let mut anns: Vec<((usize, Target), Vec<P>)> =
            std::mem::take(&mut ann[gi]).into_iter().collect();
        anns.sort_unstable_by_key(|((b, _), _)| *b);
        for ((b, t), mut ps) in anns {
            ps.sort_unstable();
            let (block, nh) = &blocks.blocks[b];
            P::pack(by_target.entry(t).or_default(), block, nh, &ps);
        }
        for (t, data) in by_target {
            if data.is_empty() {
                continue;
            }
            let peers: Vec<PeerId> = match t {
                Target::All => g.members.clone(),
                Target::AllBut(x) => g.members.iter().copied().filter(|m| *m != x).collect(),
                Target::Only(x) => vec![x],
            };
            if !peers.is_empty() {
                f.outputs.push(Output {
                    peers,
                    data: data.into(),
                });
            }
        }
    }
}

pub(super) fn dump_family<P: Fam>(rib: &mut Rib, peer: PeerId, eor: bool) -> Vec<u8> {
    let (ctx, fam) = P::state(rib);
    let mut out = Vec::new();
    let Some((_, gid)) = ctx.peer(peer).and_then(|e| e.up.clone()) else {
        return out;
    };
    let Some(g) = ctx.groups.get(gid.0).and_then(Option::as_ref) else {
        return out;
    };
    let first_member = g.members.len() == 1;
    let mut blocks = Blocks::default();
    let mut by_block: FxHashMap<usize, Vec<P>> = FxHashMap::default();
    let mut count = 0u64;
    for (p, ps) in fam.table.iter() {
        let Some(best) = ps.best() else { continue };
        if !exported(ctx, best, &g.key, (*p).into()) {
            continue;
        }
        if let Some(b) = blocks.get(ctx, best, gid.0, &g.key, P::FAMILY) {
            count += 1;
            if best.peer != peer {
                by_block.entry(b).or_default().push(*p);
            }
        }
    }
    for (b, mut ps) in by_block {
        ps.sort_unstable();
        let (block, nh) = &blocks.blocks[b];
        P::pack(&mut out, block, nh, &ps);
    }
    if eor {
        end_of_rib_into(&mut out, P::FAMILY);
    }
    if first_member && let Some(g) = ctx.groups.get_mut(gid.0).and_then(Option::as_mut) {
        g.advertised += count;
    }
    out
}

pub(super) fn group_key(ctx: &Ctx, gid: GroupId) -> Option<GroupKey> {
    ctx.groups
        .get(gid.0)
        .and_then(Option::as_ref)
        .map(|g| g.key.clone())
}

/// Withdrawals for the prefixes a peer was sent under `old` that its current group's
/// policy no longer exports.
pub(super) fn hidden_by_policy<P: Fam>(rib: &mut Rib, peer: PeerId, old: &GroupKey) -> Vec<u8> {
    let (ctx, fam) = P::state(rib);
    let mut out = Vec::new();
    let Some((_, gid)) = ctx.peer(peer).and_then(|e| e.up.clone()) else {
        return out;
    };
    let Some(g) = ctx.groups.get(gid.0).and_then(Option::as_ref) else {
        return out;
    };
    let mut hidden: Vec<P> = fam
        .table
        .iter()
        .filter_map(|(p, ps)| {
            let best = ps.best()?;
            let prefix = (*p).into();
            (best.peer != peer
                && exported(ctx, best, old, prefix)
                && !exported(ctx, best, &g.key, prefix))
            .then_some(*p)
        })
        .collect();
    hidden.sort_unstable();
    P::pack_withdraw(&mut out, &hidden);
    out
}
