//! The route driver: per-pod host routes, a blackhole per affine block, routes to remote blocks.
//!
//! Every route it writes carries protocol [`crate::ROUTE_PROTOCOL`] in the main table; a dump
//! reads back only those, so routes of the kernel, of BIRD or of an operator are never seen, let
//! alone removed. Writes are `NLM_F_REPLACE`, so a route that exists with another target is
//! corrected in place, and they go out in batches with one ACK each ([`super::nlbatch`]).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::{Handle, RouteMessageBuilder};
use tracing::{debug, warn};

use super::nlbatch::{Batcher, RouteOp};
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

/// Builds the netlink message for one route; `ifindex` resolves device names.
fn message(
    dst: IpNet,
    target: &RouteTarget,
    ifindex: &HashMap<String, u32>,
) -> Result<RouteMessage, String> {
    let mut b = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(dst.network(), dst.prefix_len())
        .map_err(|e| e.to_string())?;
    b = b
        .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
        .table_id(u32::from(RouteHeader::RT_TABLE_MAIN));
    let b = match target {
        RouteTarget::Device(name) => {
            let idx = ifindex
                .get(name)
                .ok_or_else(|| format!("interface {name} does not exist (yet)"))?;
            b.output_interface(*idx).scope(RouteScope::Link)
        }
        RouteTarget::Blackhole => b.kind(RouteType::BlackHole),
        RouteTarget::Via(gw) => {
            if gw.is_ipv4() != dst.addr().is_ipv4() {
                return Err(format!("next hop {gw} is not of the family of {dst}"));
            }
            b.gateway(*gw)
                .map_err(|e| e.to_string())?
                .priority(LEARNED_METRIC)
        }
    };
    Ok(b.build())
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

/// The route reconciler of one network namespace (the node's).
#[derive(Debug)]
pub struct RouteDriver {
    handle: Handle,
    batcher: Arc<Mutex<Batcher>>,
    tracker: DeltaTracker<IpNet, RouteTarget>,
    /// Routes found in the kernel at start that nothing desires yet: never removed until the
    /// first [`RouteDriver::resync`] (called once the datastore has synced) allows the sweep.
    protected: std::collections::BTreeSet<IpNet>,
}

impl RouteDriver {
    /// Opens a netlink socket in the calling thread's network namespace. The socket's task runs
    /// on the current tokio runtime: the driver lives as long as that runtime.
    pub fn new() -> Result<Self, RouteError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(RouteError::Socket)?;
        tokio::spawn(conn);
        let batcher = Arc::new(Mutex::new(Batcher::new().map_err(RouteError::Socket)?));
        Ok(Self {
            handle,
            batcher,
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

    /// Reads what the kernel has at start. Margay routes matching `keep` that are not desired
    /// become desired as they are, and are returned: after a restart, routes learned over BGP by
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

    /// the previous run stay in place until the speaker has learned them again (the caller drops
    /// the ones it did not re-learn). Every other route not desired yet is protected from
    /// removal until the first [`RouteDriver::resync`]. So a restart never interrupts
    /// forwarding, and identical routes are not rewritten.
    pub async fn adopt(
        &mut self,
        keep: impl Fn(&RouteTarget) -> bool,
    ) -> Result<Vec<(IpNet, RouteTarget)>, RouteError> {
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
        self.protected.clear();
        let actual = self.dump().await?;
        self.tracker.replace_actual(actual);
        self.apply().await
    }

    /// Writes the difference between desired and what the kernel is known to hold, without
    /// reading the kernel first, in batches with one ACK each. Routes that fail stay pending and
    /// are retried next time.
    pub async fn apply(&mut self) -> Result<ApplyReport, RouteError> {
        let updates = self.tracker.pending_updates();
        let mut deletes = self.tracker.pending_deletes();
        deletes.retain(|(dst, _)| !self.protected.contains(dst));
        let mut report = ApplyReport::default();
        if updates.is_empty() && deletes.is_empty() {
            return Ok(report);
        }
        let names: std::collections::BTreeSet<&str> = updates
            .iter()
            .filter_map(|(_, t)| match t {
                RouteTarget::Device(n) => Some(n.as_str()),
                _ => None,
            })
            .collect();
        let ifindex = self.indexes(&names).await?;
        // Build every message first; a route that cannot be expressed (no such interface yet)
        // fails on its own and the rest go ahead.
        let mut ops = Vec::with_capacity(updates.len() + deletes.len());
        let mut planned = Vec::with_capacity(ops.capacity());
        for (dst, target) in updates {
            match message(dst, &target, &ifindex) {
                Ok(m) => {
                    ops.push(RouteOp::Replace(m));
                    planned.push((dst, Some(target)));
                }
                Err(e) => report.failed.push((dst, e)),
            }
        }
        let empty = HashMap::new();
        for (dst, _) in deletes {
            // Delete by destination, protocol and table, whatever the type and scope (as `ip route
            // del` does: type unspec, scope "nowhere" match any); the interface may be gone.
            match message(dst, &RouteTarget::Blackhole, &empty) {
                Ok(mut m) => {
                    m.header.kind = RouteType::Unspec;
                    m.header.scope = RouteScope::NoWhere;
                    ops.push(RouteOp::Delete(m));
                    planned.push((dst, None));
                }
                Err(e) => report.failed.push((dst, e)),
            }
        }
        let batcher = Arc::clone(&self.batcher);
        let results = tokio::task::spawn_blocking(move || {
            let mut b = batcher.lock().unwrap_or_else(|p| p.into_inner());
            b.run(&ops)
        })
        .await
        .map_err(|e| RouteError::Write(std::io::Error::other(e.to_string())))?
        .map_err(RouteError::Write)?;
        for ((dst, target), res) in planned.into_iter().zip(results) {
            match (target, res) {
                (Some(target), Ok(())) => {
                    report.written += 1;
                    self.tracker.applied(dst, target);
                }
                // Already gone is what a delete wanted.
                (None, Ok(()) | Err(NO_SUCH_ROUTE)) => {
                    report.removed += 1;
                    self.tracker.removed(&dst);
                }
                (target, Err(errno)) => {
                    let e = std::io::Error::from_raw_os_error(-errno).to_string();
                    warn!(%dst, ?target, error = %e, "cannot write route; will retry");
                    report.failed.push((dst, e));
                }
            }
        }
        debug!(
            written = report.written,
            removed = report.removed,
            failed = report.failed.len(),
            "routes applied"
        );
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn messages_round_trip_through_the_parser() {
        let ifindex = HashMap::from([("mgy0123456789a".to_string(), 7)]);
        let names: HashMap<u32, String> = ifindex.iter().map(|(n, i)| (*i, n.clone())).collect();
        for (dst, target) in [
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
                net("fd00:100:64::5/128"),
                RouteTarget::Device("mgy0123456789a".into()),
            ),
            (net("fd00:100:64::/122"), RouteTarget::Blackhole),
            (
                net("fd00:100:64::40/122"),
                RouteTarget::Via("fd00:198:18::12".parse().unwrap()),
            ),
        ] {
            let msg = message(dst, &target, &ifindex).unwrap();
            assert_eq!(parse(&msg, &names), Some((dst, target)));
        }
    }

    #[test]
    fn routes_of_other_protocols_are_not_ours() {
        let mut msg = message(
            net("100.64.0.0/26"),
            &RouteTarget::Blackhole,
            &HashMap::new(),
        )
        .unwrap();
        msg.header.protocol = RouteProtocol::Bird;
        assert_eq!(parse(&msg, &HashMap::new()), None);
    }

    #[test]
    fn a_device_route_to_a_missing_interface_is_refused_with_its_name() {
        let err = message(
            net("100.64.0.5/32"),
            &RouteTarget::Device("mgyabc".into()),
            &HashMap::new(),
        )
        .unwrap_err();
        assert_eq!(err, "interface mgyabc does not exist (yet)");
    }

    #[test]
    fn a_next_hop_of_the_other_family_is_refused() {
        let err = message(
            net("100.64.1.0/26"),
            &RouteTarget::Via("fd00::1".parse().unwrap()),
            &HashMap::new(),
        )
        .unwrap_err();
        assert!(err.contains("not of the family"), "{err}");
    }
}
