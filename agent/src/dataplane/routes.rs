//! The route driver: per-pod host routes, a blackhole per affine block, routes to remote blocks.
//!
//! Every route it writes carries protocol [`crate::ROUTE_PROTOCOL`] in the main table; a dump
//! reads back only those, so routes of the kernel, of BIRD or of an operator are never seen, let
//! alone removed. Writes are `NLM_F_REPLACE`, so a route that exists with another target is
//! corrected in place, and they go out in batches with one ACK each ([`super::nlbatch`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;

use futures::TryStreamExt;
use ipnet::IpNet;
use libc::{
    RT_SCOPE_LINK, RT_SCOPE_NOWHERE, RT_SCOPE_UNIVERSE, RTA_DST, RTA_GATEWAY, RTA_OIF,
    RTA_PRIORITY, RTM_DELROUTE, RTM_NEWROUTE, RTN_BLACKHOLE, RTN_UNICAST, RTN_UNSPEC,
};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteType,
};
use rtnetlink::{Handle, RouteMessageBuilder};
use tracing::{debug, warn};

use super::nlbatch::{CHUNK, Chunk, Writer, Written};
use super::tracker::DeltaTracker;
use crate::ROUTE_PROTOCOL;

/// The metric of routes learned over BGP (as BIRD's kernel protocol): a route an operator or
/// DHCP installed for the same prefix at metric 0 is neither replaced nor displaced by one a
/// peer sends (a top-of-rack's default route, say); pod and block routes keep metric 0.
pub const LEARNED_METRIC: u32 = 32;

/// The kernel's answer to a delete of a route that is not there (`-ESRCH`).
const NO_SUCH_ROUTE: i32 = -libc::ESRCH;

/// Where a route sends packets.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteTarget {
    /// Out of a local interface, scope link: a pod's /32 (/128) on its host-side veth.
    Device(String),
    /// Dropped: an affine block, so that unallocated addresses of it are not forwarded on.
    Blackhole,
    /// Through a next hop: a remote node's block learned over BGP.
    Via(IpAddr),
}

/// What went wrong talking to the kernel.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The netlink socket could not be opened.
    #[error("cannot open a netlink socket")]
    Socket(#[source] std::io::Error),
    /// Sending a batch of route changes failed as a whole.
    #[error("cannot send route changes to the kernel")]
    Write(#[source] std::io::Error),
    /// A dump of routes or links failed.
    #[error("cannot read {what} from the kernel")]
    Dump {
        /// Routes or links.
        what: &'static str,
        /// The netlink error.
        #[source]
        source: rtnetlink::Error,
    },
}

/// The outcome of one apply: what changed and what could not be written.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    /// Routes written (added or corrected).
    pub written: usize,
    /// Routes removed.
    pub removed: usize,
    /// Routes that failed, with the kernel's reason; retried on the next apply.
    pub failed: Vec<(IpNet, String)>,
}

fn family(a: IpAddr) -> u8 {
    (if a.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    }) as u8
}

fn put_attr(buf: &mut Vec<u8>, kind: u16, value: &[u8]) {
    buf.extend_from_slice(&(4 + value.len() as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(value);
    buf.resize(buf.len().next_multiple_of(4), 0);
}

fn put_addr(buf: &mut Vec<u8>, kind: u16, a: IpAddr) {
    match a {
        IpAddr::V4(a) => put_attr(buf, kind, &a.octets()),
        IpAddr::V6(a) => put_attr(buf, kind, &a.octets()),
    }
}

/// Appends the netlink message that writes the route to `dst` (`Some(target)`: add or replace)
/// or deletes it (`None`: by destination, protocol and table, whatever its type and scope, as
/// `ip route del` does; the interface may be gone). Built by hand, straight into the batch:
/// this runs once per route, 100k times for a full table. `ifindex` resolves device names; a
/// route that cannot be expressed is refused with the reason and nothing is appended.
fn encode(
    chunk: &mut Chunk,
    dst: IpNet,
    target: Option<&RouteTarget>,
    ifindex: &HashMap<String, u32>,
) -> Result<(), String> {
    /// What follows RTA_DST.
    enum Next {
        Nothing,
        Oif(u32),
        Gateway(IpAddr),
    }
    let (scope, kind, next) = match target {
        None => (RT_SCOPE_NOWHERE, RTN_UNSPEC, Next::Nothing),
        Some(RouteTarget::Blackhole) => (RT_SCOPE_UNIVERSE, RTN_BLACKHOLE, Next::Nothing),
        Some(RouteTarget::Device(name)) => {
            let idx = ifindex
                .get(name)
                .ok_or_else(|| format!("interface {name} does not exist (yet)"))?;
            (RT_SCOPE_LINK, RTN_UNICAST, Next::Oif(*idx))
        }
        Some(RouteTarget::Via(gw)) => {
            if gw.is_ipv4() != dst.addr().is_ipv4() {
                return Err(format!("next hop {gw} is not of the family of {dst}"));
            }
            (RT_SCOPE_UNIVERSE, RTN_UNICAST, Next::Gateway(*gw))
        }
    };
    let (msg_type, flags) = match target {
        Some(_) => (RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE),
        None => (RTM_DELROUTE, 0),
    };
    chunk.push(msg_type, flags, |buf| {
        // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags (u32)
        buf.extend_from_slice(&[
            family(dst.addr()),
            dst.prefix_len(),
            0,
            0,
            RouteHeader::RT_TABLE_MAIN,
            ROUTE_PROTOCOL,
            scope,
            kind,
            0,
            0,
            0,
            0,
        ]);
        put_addr(buf, RTA_DST, dst.addr());
        match next {
            Next::Nothing => {}
            Next::Oif(idx) => put_attr(buf, RTA_OIF, &idx.to_ne_bytes()),
            Next::Gateway(gw) => {
                put_addr(buf, RTA_GATEWAY, gw);
                put_attr(buf, RTA_PRIORITY, &LEARNED_METRIC.to_ne_bytes());
            }
        }
    });
    Ok(())
}

/// Reads one kernel route back, if it is one of ours in the main table.
fn parse(msg: &RouteMessage, ifname: &HashMap<u32, String>) -> Option<(IpNet, RouteTarget)> {
    let h = &msg.header;
    if h.protocol != RouteProtocol::Other(ROUTE_PROTOCOL) {
        return None;
    }
    let mut table = u32::from(h.table);
    let (mut dst, mut oif, mut gw) = (None, None, None);
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(RouteAddress::Inet(a)) => dst = Some(IpAddr::V4(*a)),
            RouteAttribute::Destination(RouteAddress::Inet6(a)) => dst = Some(IpAddr::V6(*a)),
            RouteAttribute::Gateway(RouteAddress::Inet(a)) => gw = Some(IpAddr::V4(*a)),
            RouteAttribute::Gateway(RouteAddress::Inet6(a)) => gw = Some(IpAddr::V6(*a)),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Table(t) => table = *t,
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    let dst = match (dst, h.address_family) {
        (Some(a), _) => a,
        (None, AddressFamily::Inet) => IpAddr::from([0u8; 4]),
        (None, AddressFamily::Inet6) => IpAddr::from([0u16; 8]),
        (None, _) => return None,
    };
    let net = IpNet::new(dst, h.destination_prefix_length).ok()?;
    let target = if h.kind == RouteType::BlackHole {
        RouteTarget::Blackhole
    } else if let Some(gw) = gw {
        RouteTarget::Via(gw)
    } else {
        // A device route whose interface vanished between dumps reads as an unknown index;
        // keep it under a name no desired route has, so that it is removed.
        let idx = oif?;
        RouteTarget::Device(
            ifname
                .get(&idx)
                .cloned()
                .unwrap_or_else(|| format!("#{idx}")),
        )
    };
    Some((net, target))
}

/// One route write on its way to the kernel, recorded as already done (the tracker is updated
/// when a write is queued, so the next routes are decided while the kernel works); a refusal
/// undoes it.
#[derive(Debug)]
enum Planned {
    /// Written with this target.
    Write(IpNet, RouteTarget),
    /// Deleted; it had this target.
    Delete(IpNet, RouteTarget),
}

/// The route reconciler of one network namespace (the node's).
#[derive(Debug)]
pub struct RouteDriver {
    handle: Handle,
    writer: Writer,
    /// What each chunk in flight carries, in submission order.
    in_flight: VecDeque<Vec<Planned>>,
    /// Outcomes collected since the last [`RouteDriver::apply`] returned.
    report: ApplyReport,
    /// The first chunk that could not be written as a whole since then.
    write_error: Option<std::io::Error>,
    /// Routes refused since the last [`RouteDriver::apply`] began: `submit` leaves them for the
    /// next `apply`, so a route the kernel keeps refusing is not rewritten with every batch.
    refused: std::collections::HashSet<IpNet>,
    tracker: DeltaTracker<IpNet, RouteTarget>,
    /// Routes found in the kernel at start that nothing desires yet: never removed until the
    /// first [`RouteDriver::resync`] (called once the datastore has synced) allows the sweep.
    protected: std::collections::BTreeSet<IpNet>,
}

impl RouteDriver {
    /// Opens two netlink sockets in the calling thread's network namespace: one for dumps and
    /// queries, whose task runs on the current tokio runtime (the driver lives as long as that
    /// runtime), and the batch writer's, on its own thread.
    pub fn new() -> Result<Self, RouteError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(RouteError::Socket)?;
        tokio::spawn(conn);
        Ok(Self {
            handle,
            writer: Writer::new().map_err(RouteError::Socket)?,
            in_flight: VecDeque::new(),
            report: ApplyReport::default(),
            write_error: None,
            refused: Default::default(),
            tracker: DeltaTracker::new(),
            protected: Default::default(),
        })
    }

    /// Wants a route to `dst`.
    pub fn set(&mut self, dst: IpNet, target: RouteTarget) {
        self.tracker.set_desired(dst.trunc(), target);
    }

    /// No longer wants a route to `dst`.
    pub fn remove(&mut self, dst: &IpNet) {
        self.tracker.remove_desired(&dst.trunc());
        self.protected.remove(&dst.trunc());
    }

    /// Replaces every desired route.
    pub fn replace_all(&mut self, routes: BTreeMap<IpNet, RouteTarget>) {
        self.tracker
            .replace_desired(routes.into_iter().map(|(k, v)| (k.trunc(), v)).collect());
    }

    /// What the kernel is known to hold for `dst` (after this driver's writes and dumps).
    pub fn applied(&self, dst: &IpNet) -> Option<&RouteTarget> {
        self.tracker.actual().get(&dst.trunc())
    }

    /// The desired routes.
    pub fn desired(&self) -> &BTreeMap<IpNet, RouteTarget> {
        self.tracker.desired()
    }

    async fn links(&self) -> Result<HashMap<String, u32>, RouteError> {
        let mut out = HashMap::new();
        let mut links = self.handle.link().get().execute();
        while let Some(link) = links.try_next().await.map_err(|source| RouteError::Dump {
            what: "links",
            source,
        })? {
            for attr in &link.attributes {
                if let LinkAttribute::IfName(name) = attr {
                    out.insert(name.clone(), link.header.index);
                }
            }
        }
        Ok(out)
    }

    /// The indexes of interfaces `names`: asked one by one when they are few (a pod coming up
    /// is one), from a full link dump otherwise. A name with no interface is left out.
    async fn indexes(
        &self,
        names: &std::collections::BTreeSet<&str>,
    ) -> Result<HashMap<String, u32>, RouteError> {
        const ONE_BY_ONE: usize = 16;
        if names.len() > ONE_BY_ONE {
            return self.links().await;
        }
        let mut out = HashMap::new();
        for name in names {
            let mut links = self
                .handle
                .link()
                .get()
                .match_name((*name).to_owned())
                .execute();
            // An interface that does not exist (yet) answers ENODEV: the route fails alone.
            if let Ok(Some(link)) = links.try_next().await {
                out.insert((*name).to_owned(), link.header.index);
            }
        }
        Ok(out)
    }

    /// Reads Margay's routes (both families) from the kernel.
    pub async fn dump(&self) -> Result<BTreeMap<IpNet, RouteTarget>, RouteError> {
        let names: HashMap<u32, String> = self
            .links()
            .await?
            .into_iter()
            .map(|(n, i)| (i, n))
            .collect();
        let mut out = BTreeMap::new();
        for family in [
            RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
            RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
        ] {
            let mut routes = self.handle.route().get(family).execute();
            while let Some(msg) = routes.try_next().await.map_err(|source| RouteError::Dump {
                what: "routes",
                source,
            })? {
                if let Some((dst, target)) = parse(&msg, &names) {
                    out.insert(dst, target);
                }
            }
        }
        Ok(out)
    }

    /// Where packets for next hop `nh` go: `nh` itself when it is on a connected subnet, else
    /// the gateway the kernel's own route to `nh` uses (a recursive next hop, as BIRD's
    /// `gateway recursive`): a peer may send a next hop that is not on this node's link.
    pub async fn resolve_next_hop(&self, nh: IpAddr) -> Result<IpAddr, String> {
        let prefix = if nh.is_ipv4() { 32 } else { 128 };
        let msg = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(nh, prefix)
            .map_err(|e| e.to_string())?
            .build();
        let mut answers = self.handle.route().get(msg).execute();
        let route = answers
            .try_next()
            .await
            .map_err(|e| format!("no route to next hop {nh}: {e}"))?
            .ok_or_else(|| format!("no route to next hop {nh}"))?;
        if route.header.kind == RouteType::Unreachable
            || route.header.kind == RouteType::BlackHole
            || route.header.kind == RouteType::Prohibit
        {
            return Err(format!("next hop {nh} is unreachable"));
        }
        Ok(route
            .attributes
            .iter()
            .find_map(|a| match a {
                RouteAttribute::Gateway(RouteAddress::Inet(g)) => Some(IpAddr::V4(*g)),
                RouteAttribute::Gateway(RouteAddress::Inet6(g)) => Some(IpAddr::V6(*g)),
                _ => None,
            })
            .unwrap_or(nh))
    }

    /// Reads what the kernel has at start. Margay routes matching `keep` that are not desired
    /// become desired as they are, and are returned: after a restart, routes learned over BGP by
    /// the previous run stay in place until the speaker has learned them again (the caller drops
    /// the ones it did not re-learn). Every other route not desired yet is protected from
    /// removal until the first [`RouteDriver::resync`]. So a restart never interrupts
    /// forwarding, and identical routes are not rewritten.
    pub async fn adopt(
        &mut self,
        keep: impl Fn(&RouteTarget) -> bool,
    ) -> Result<Vec<(IpNet, RouteTarget)>, RouteError> {
        self.settle().await;
        let actual = self.dump().await?;
        let adopted: Vec<(IpNet, RouteTarget)> = actual
            .iter()
            .filter(|(dst, t)| keep(t) && !self.tracker.desired().contains_key(*dst))
            .map(|(d, t)| (*d, t.clone()))
            .collect();
        for (dst, t) in &adopted {
            self.tracker.set_desired(*dst, t.clone());
        }
        self.protected = actual
            .keys()
            .filter(|d| !self.tracker.desired().contains_key(*d))
            .copied()
            .collect();
        self.tracker.replace_actual(actual);
        Ok(adopted)
    }

    /// Reads the kernel, then makes it match the desired routes: the periodic repair of anything
    /// changed behind the agent's back, and the first sync after start (call it only once the
    /// datastore has synced, or routes of pods not yet known would be swept).
    pub async fn resync(&mut self) -> Result<ApplyReport, RouteError> {
        self.settle().await;
        self.protected.clear();
        let actual = self.dump().await?;
        self.tracker.replace_actual(actual);
        self.apply().await
    }

    /// Writes the difference between desired and what the kernel is known to hold, without
    /// reading the kernel first, in batches with one ACK each, and waits until the kernel has
    /// answered for all of them (and for any queued by [`RouteDriver::submit`] before). The
    /// report counts every write answered since the last `apply` and names the routes that still
    /// failed in this one; those stay pending and are retried by the next `apply`.
    pub async fn apply(&mut self) -> Result<ApplyReport, RouteError> {
        self.settle().await;
        // Earlier refusals are tried once more now; their outcome replaces the old one.
        self.refused.clear();
        self.report.failed.clear();
        self.submit().await?;
        self.flush().await
    }

    /// Waits for the kernel's answers to everything queued and reports them (the routes that
    /// failed since the last `apply`), without writing anything new: refused routes wait for the
    /// next [`RouteDriver::apply`]. Cancel-safe: dropped before the end, nothing is lost (the
    /// answers collected so far are kept for the next report).
    pub async fn flush(&mut self) -> Result<ApplyReport, RouteError> {
        self.settle().await;
        let report = std::mem::take(&mut self.report);
        if let Some(e) = self.write_error.take() {
            return Err(RouteError::Write(e));
        }
        debug!(
            written = report.written,
            removed = report.removed,
            failed = report.failed.len(),
            "routes applied"
        );
        Ok(report)
    }

    /// Queues the difference for the kernel and returns without waiting for it: the caller goes
    /// on deciding the next routes while the writer thread writes these (a full table from a
    /// peer). Outcomes are collected by later calls; [`RouteDriver::apply`] waits for them.
    pub async fn submit(&mut self) -> Result<(), RouteError> {
        while let Some(w) = self.writer.try_collect() {
            self.fold(w);
        }
        let mut updates = self.tracker.pending_updates();
        let mut deletes = self.tracker.pending_deletes();
        updates.retain(|(dst, _)| !self.refused.contains(dst));
        deletes.retain(|(dst, _)| !self.protected.contains(dst) && !self.refused.contains(dst));
        if updates.is_empty() && deletes.is_empty() {
            return Ok(());
        }
        let names: std::collections::BTreeSet<&str> = updates
            .iter()
            .filter_map(|(_, t)| match t {
                RouteTarget::Device(n) => Some(n.as_str()),
                _ => None,
            })
            .collect();
        let ifindex = self.indexes(&names).await?;
        let ops = updates
            .into_iter()
            .map(|(dst, t)| Planned::Write(dst, t))
            .chain(deletes.into_iter().map(|(dst, t)| Planned::Delete(dst, t)));
        let mut chunk = self.writer.chunk();
        let mut planned = Vec::with_capacity(CHUNK);
        for op in ops {
            let (dst, target) = match &op {
                Planned::Write(dst, t) => (*dst, Some(t)),
                Planned::Delete(dst, _) => (*dst, None),
            };
            // A route that cannot be expressed (no such interface yet) fails on its own and the
            // rest go ahead.
            if let Err(e) = encode(&mut chunk, dst, target, &ifindex) {
                self.refused.insert(dst);
                self.report.failed.push((dst, e));
                continue;
            }
            match &op {
                Planned::Write(dst, t) => self.tracker.applied(*dst, t.clone()),
                Planned::Delete(dst, _) => self.tracker.removed(dst),
            }
            planned.push(op);
            if chunk.len() == CHUNK {
                let next = self.writer.chunk();
                self.send(
                    std::mem::replace(&mut chunk, next),
                    std::mem::take(&mut planned),
                );
                planned.reserve(CHUNK);
            }
        }
        self.send(chunk, planned);
        Ok(())
    }

    fn send(&mut self, chunk: Chunk, planned: Vec<Planned>) {
        if chunk.is_empty() {
            return;
        }
        match self.writer.submit(chunk) {
            Ok(()) => self.in_flight.push_back(planned),
            Err(e) => self.undo(planned, &e),
        }
    }

    /// Waits for every chunk in flight and records its outcome.
    async fn settle(&mut self) {
        while let Some(w) = self.writer.collect().await {
            self.fold(w);
        }
    }

    /// Records one chunk's outcome: refused writes are undone in the tracker (so they are
    /// retried), the rest counted.
    fn fold(&mut self, w: Written) {
        let Some(planned) = self.in_flight.pop_front() else {
            return;
        };
        debug_assert_eq!(planned.len(), w.count);
        if let Some(e) = w.failed {
            self.undo(planned, &e);
            return;
        }
        let mut errors = w.errors.into_iter().peekable();
        for (i, p) in planned.into_iter().enumerate() {
            let errno = match errors.peek() {
                Some(&(at, errno)) if at == i => {
                    errors.next();
                    Some(errno)
                }
                _ => None,
            };
            match (p, errno) {
                (Planned::Write(..), None) => self.report.written += 1,
                // Already gone is what a delete wanted.
                (Planned::Delete(..), None | Some(NO_SUCH_ROUTE)) => self.report.removed += 1,
                (p, Some(errno)) => {
                    let e = std::io::Error::from_raw_os_error(-errno).to_string();
                    self.undo_one(p, e);
                }
            }
        }
    }

    /// Undoes a chunk that never reached the kernel (or whose answer was lost).
    fn undo(&mut self, planned: Vec<Planned>, e: &std::io::Error) {
        warn!(routes = planned.len(), error = %e, "cannot send route changes to the kernel; will retry");
        let why = format!("cannot send route changes to the kernel: {e}");
        for p in planned {
            self.undo_one(p, why.clone());
        }
        if self.write_error.is_none() {
            self.write_error = Some(std::io::Error::new(e.kind(), e.to_string()));
        }
    }

    fn undo_one(&mut self, p: Planned, why: String) {
        let dst = match p {
            Planned::Write(dst, target) => {
                // Unless a later write of the same route is queued, the kernel's state is not
                // known: forget it, so the route is written again.
                if self.tracker.actual().get(&dst) == Some(&target) {
                    self.tracker.removed(&dst);
                }
                warn!(%dst, ?target, error = %why, "cannot write route; will retry");
                dst
            }
            Planned::Delete(dst, was) => {
                if !self.tracker.actual().contains_key(&dst) {
                    self.tracker.applied(dst, was.clone());
                }
                warn!(%dst, target = ?was, error = %why, "cannot delete route; will retry");
                dst
            }
        };
        self.refused.insert(dst);
        self.report.failed.push((dst, why));
    }
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::{NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
    use netlink_packet_route::RouteNetlinkMessage;
    use netlink_packet_route::route::RouteScope;

    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ifindex() -> HashMap<String, u32> {
        HashMap::from([("mgy0123456789a".to_string(), 7)])
    }

    fn samples() -> Vec<(IpNet, RouteTarget)> {
        vec![
            (
                net("100.64.0.5/32"),
                RouteTarget::Device("mgy0123456789a".into()),
            ),
            (net("100.64.0.0/26"), RouteTarget::Blackhole),
            (
                net("100.64.1.0/26"),
                RouteTarget::Via("198.18.0.12".parse().unwrap()),
            ),
            (
                net("0.0.0.0/0"),
                RouteTarget::Via("198.18.0.254".parse().unwrap()),
            ),
            (
                net("fd00:100:64::5/128"),
                RouteTarget::Device("mgy0123456789a".into()),
            ),
            (net("fd00:100:64::/122"), RouteTarget::Blackhole),
            (
                net("fd00:100:64::40/122"),
                RouteTarget::Via("fd00:198:18::12".parse().unwrap()),
            ),
        ]
    }

    /// The same route as the `rtnetlink` crate builds it (the oracle for the hand-built bytes).
    fn built(dst: IpNet, target: Option<&RouteTarget>) -> RouteMessage {
        let b = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(dst.network(), dst.prefix_len())
            .unwrap()
            .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
            .table_id(u32::from(RouteHeader::RT_TABLE_MAIN));
        let mut m = match target {
            Some(RouteTarget::Device(name)) => b
                .output_interface(ifindex()[name])
                .scope(RouteScope::Link)
                .build(),
            Some(RouteTarget::Blackhole) => b.kind(RouteType::BlackHole).build(),
            Some(RouteTarget::Via(gw)) => b.gateway(*gw).unwrap().priority(LEARNED_METRIC).build(),
            None => b.build(),
        };
        if target.is_none() {
            m.header.kind = RouteType::Unspec;
            m.header.scope = RouteScope::NoWhere;
        }
        m
    }

    fn one(dst: IpNet, target: Option<&RouteTarget>) -> Vec<u8> {
        let mut chunk = Chunk::default();
        encode(&mut chunk, dst, target, &ifindex()).unwrap();
        chunk.bytes().to_vec()
    }

    #[test]
    fn hand_built_messages_are_the_bytes_rtnetlink_builds() {
        for (dst, target) in samples() {
            for target in [Some(&target), None] {
                let (payload, flags) = match target {
                    Some(_) => (
                        RouteNetlinkMessage::NewRoute(built(dst, target)),
                        NLM_F_CREATE | NLM_F_REPLACE,
                    ),
                    None => (RouteNetlinkMessage::DelRoute(built(dst, None)), 0),
                };
                let mut header = NetlinkHeader::default();
                header.flags = NLM_F_REQUEST | flags;
                header.sequence_number = 1;
                let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(payload));
                msg.finalize();
                let mut want = vec![0; msg.buffer_len()];
                msg.serialize(&mut want);
                assert_eq!(one(dst, target), want, "{dst} {target:?}");
            }
        }
    }

    #[test]
    fn messages_round_trip_through_the_parser() {
        let names: HashMap<u32, String> = ifindex().iter().map(|(n, i)| (*i, n.clone())).collect();
        for (dst, target) in samples() {
            let bytes = one(dst, Some(&target));
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes).unwrap();
            let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(m)) = msg.payload else {
                panic!("not a new route: {msg:?}");
            };
            assert_eq!(parse(&m, &names), Some((dst, target)));
        }
    }

    #[test]
    fn a_chunk_numbers_its_messages_and_keeps_them_aligned() {
        let mut chunk = Chunk::default();
        for (dst, target) in samples() {
            encode(&mut chunk, dst, Some(&target), &ifindex()).unwrap();
        }
        assert_eq!(chunk.len(), samples().len());
        let (mut off, mut seq) = (0, 0);
        while off < chunk.bytes().len() {
            let msg =
                NetlinkMessage::<RouteNetlinkMessage>::deserialize(&chunk.bytes()[off..]).unwrap();
            seq += 1;
            assert_eq!(msg.header.sequence_number, seq);
            assert_eq!(msg.header.length % 4, 0);
            off += msg.header.length as usize;
        }
        assert_eq!(seq, samples().len() as u32);
    }

    #[test]
    fn routes_of_other_protocols_are_not_ours() {
        let mut msg = built(net("100.64.0.0/26"), Some(&RouteTarget::Blackhole));
        msg.header.protocol = RouteProtocol::Bird;
        assert_eq!(parse(&msg, &HashMap::new()), None);
    }

    #[test]
    fn a_device_route_to_a_missing_interface_is_refused_with_its_name() {
        let mut chunk = Chunk::default();
        let err = encode(
            &mut chunk,
            net("100.64.0.5/32"),
            Some(&RouteTarget::Device("mgyabc".into())),
            &HashMap::new(),
        )
        .unwrap_err();
        assert_eq!(err, "interface mgyabc does not exist (yet)");
        assert!(chunk.is_empty(), "nothing appended for a refused route");
    }

    #[test]
    fn a_next_hop_of_the_other_family_is_refused() {
        let mut chunk = Chunk::default();
        let err = encode(
            &mut chunk,
            net("100.64.1.0/26"),
            Some(&RouteTarget::Via("fd00::1".parse().unwrap())),
            &HashMap::new(),
        )
        .unwrap_err();
        assert!(err.contains("not of the family"), "{err}");
        assert!(chunk.is_empty());
    }
}
