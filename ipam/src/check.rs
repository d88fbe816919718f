//! Leak checks: what IPAM holds that nothing uses, confirmed over two looks a grace period apart.
//!
//! A single look cannot tell a leak from an allocation in flight (the CNI plugin got an address
//! and the endpoint is not written yet; a claim wrote its affinity and not yet its block). So
//! [`Ipam::check`] reports a finding as confirmed only when the same finding was also seen at
//! least a grace period earlier; the caller keeps a [`LeakTracker`] between calls. IPAM does not
//! know about pods: the caller passes what is alive ([`Live`]), e.g. the agent from its
//! workload endpoints, `margayctl` from the datastore and the API server.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use margay_datastore::{Error as DsError, Revision};
use tracing::{Instrument, info, info_span};

use crate::block::inconsistency;
use crate::errors::{IpamError, Result};
use crate::ipam::{Ipam, Released};
use crate::store::{block_net, handle_object_name};

/// What is alive, as the caller sees it.
#[derive(Debug, Clone, Default)]
pub struct Live {
    /// Handles of live workload endpoints (`ipamHandleID`).
    pub handles: HashSet<String>,
    /// The nodes that exist, if known; blocks of other nodes are reported.
    pub nodes: Option<HashSet<String>>,
}

/// One thing `check()` found.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Finding {
    /// An address held by a handle that no live endpoint has.
    LeakedAddress {
        /// The address.
        ip: IpAddr,
        /// Its handle (`None`: allocated without one; reported, never released automatically).
        handle: Option<String>,
        /// Its block.
        block: IpNet,
        /// The node that allocated it, if recorded.
        node: Option<String>,
    },
    /// A block affine to a node that does not exist.
    BlockOfDeletedNode {
        /// The block.
        block: IpNet,
        /// The node.
        node: String,
    },
    /// An affinity whose block does not exist or is not its node's.
    AffinityWithoutBlock {
        /// The affinity's name.
        name: String,
        /// Its node.
        node: String,
        /// Its CIDR.
        cidr: String,
    },
    /// A handle record while no block holds an address for the handle.
    HandleWithoutAddresses {
        /// The handle id.
        handle: String,
    },
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::LeakedAddress {
                ip,
                handle,
                block,
                node,
            } => write!(
                f,
                "leaked address {ip} in block {block} (handle {}, node {}): no live endpoint",
                handle.as_deref().unwrap_or("none"),
                node.as_deref().unwrap_or("unknown")
            ),
            Finding::BlockOfDeletedNode { block, node } => {
                write!(f, "block {block} is affine to deleted node {node}")
            }
            Finding::AffinityWithoutBlock { name, cidr, .. } => {
                write!(f, "affinity {name} has no block {cidr}")
            }
            Finding::HandleWithoutAddresses { handle } => {
                write!(f, "handle {handle} holds no address")
            }
        }
    }
}

/// When each finding was first seen, across calls of [`Ipam::check`].
#[derive(Debug, Clone)]
pub struct LeakTracker {
    grace: Duration,
    first_seen: HashMap<Finding, Instant>,
}

impl LeakTracker {
    /// A tracker that confirms a finding seen twice at least `grace` apart.
    pub fn new(grace: Duration) -> Self {
        LeakTracker {
            grace,
            first_seen: HashMap::new(),
        }
    }

    /// Records this look's findings; returns (confirmed, suspected). Findings not seen this time
    /// are forgotten.
    pub fn observe(
        &mut self,
        findings: BTreeSet<Finding>,
        now: Instant,
    ) -> (Vec<Finding>, Vec<Finding>) {
        self.first_seen.retain(|f, _| findings.contains(f));
        let (mut confirmed, mut suspected) = (Vec::new(), Vec::new());
        for f in findings {
            let first = *self.first_seen.entry(f.clone()).or_insert(now);
            if now.saturating_duration_since(first) >= self.grace && first != now {
                confirmed.push(f);
            } else {
                suspected.push(f);
            }
        }
        (confirmed, suspected)
    }
}

/// What [`Ipam::check`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Findings seen twice at least a grace period apart: [`Ipam::release_leaks`] acts on these.
    pub confirmed: Vec<Finding>,
    /// Findings seen for the first time or too recently: look again later.
    pub suspected: Vec<Finding>,
    /// Bookkeeping errors that need a person: inconsistent blocks, handle records that do not
    /// list a block where the handle holds an address.
    pub problems: Vec<String>,
}

impl CheckReport {
    /// Whether nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.confirmed.is_empty() && self.suspected.is_empty() && self.problems.is_empty()
    }
}

/// What [`Ipam::release_leaks`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeakRelease {
    /// Addresses freed.
    pub released: Vec<Released>,
    /// Handle records deleted.
    pub handles_deleted: usize,
    /// Affinities deleted.
    pub affinities_deleted: usize,
    /// Blocks of deleted nodes freed.
    pub blocks_released: usize,
}

impl Ipam {
    /// Looks for leaks and orphans; see the module docs. `now` is passed in so that tests and
    /// callers control the clock.
    pub async fn check(
        &self,
        live: &Live,
        tracker: &mut LeakTracker,
        now: Instant,
    ) -> Result<CheckReport> {
        async {
            let store = self.store();
            let blocks = store.list_blocks().await?;
            let affinities = store.list_affinities().await?;
            let handles = store.list_handles().await?;
            let mut findings = BTreeSet::new();
            let mut problems = Vec::new();
            let mut held_in: HashMap<String, BTreeSet<IpNet>> = HashMap::new();
            let mut owned: HashMap<IpNet, String> = HashMap::new();
            for b in &blocks {
                let net = block_net(b)?;
                if let Some(why) = inconsistency(&b.spec) {
                    problems.push(why);
                }
                if let Some(node) = b.spec.affinity_node() {
                    owned.insert(net, node.to_string());
                    if live.nodes.as_ref().is_some_and(|n| !n.contains(node)) {
                        findings.insert(Finding::BlockOfDeletedNode {
                            block: net,
                            node: node.to_string(),
                        });
                    }
                }
                for (ord, attr) in b.spec.allocated() {
                    let handle = attr.and_then(|a| a.handle_id.clone());
                    if let Some(h) = &handle {
                        held_in.entry(h.clone()).or_default().insert(net);
                        if live.handles.contains(h) {
                            continue;
                        }
                    }
                    if let Some(ip) = b.spec.address_of(ord) {
                        findings.insert(Finding::LeakedAddress {
                            ip,
                            handle,
                            block: net,
                            node: attr.and_then(|a| a.node()).map(str::to_string),
                        });
                    }
                }
            }
            for a in &affinities {
                let ok = a
                    .spec
                    .cidr
                    .parse::<IpNet>()
                    .is_ok_and(|n| owned.get(&n) == Some(&a.spec.node));
                if !ok {
                    findings.insert(Finding::AffinityWithoutBlock {
                        name: a.metadata.name.clone().unwrap_or_default(),
                        node: a.spec.node.clone(),
                        cidr: a.spec.cidr.clone(),
                    });
                }
            }
            let mut recorded = HashSet::new();
            for h in &handles {
                let id = &h.spec.handle_id;
                recorded.insert(id.clone());
                match held_in.get(id) {
                    None => {
                        findings.insert(Finding::HandleWithoutAddresses { handle: id.clone() });
                    }
                    Some(blocks) => {
                        for b in blocks {
                            if !h.spec.block.contains_key(&b.to_string()) {
                                problems.push(format!(
                                    "handle {id} holds addresses in block {b} but its record does not list it"
                                ));
                            }
                        }
                    }
                }
            }
            for id in held_in.keys() {
                if !recorded.contains(id) {
                    problems.push(format!("handle {id} holds addresses but has no record"));
                }
            }
            let (confirmed, suspected) = tracker.observe(findings, now);
            Ok(CheckReport {
                confirmed,
                suspected,
                problems,
            })
        }
        .instrument(info_span!("ipam_check"))
        .await
    }

    /// Acts on a report's confirmed findings, re-checking each against the datastore first so
    /// that nothing changed since the check is touched: leaked addresses are freed only if the
    /// same handle still holds them, handle records deleted only if still empty, affinities only
    /// if still without their block, and blocks of deleted nodes only once empty.
    pub async fn release_leaks(&self, report: &CheckReport) -> Result<LeakRelease> {
        async {
            let mut out = LeakRelease::default();
            let mut by_handle: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
            let mut nodes = BTreeSet::new();
            for f in &report.confirmed {
                match f {
                    Finding::LeakedAddress {
                        ip,
                        handle: Some(h),
                        ..
                    } => by_handle.entry(h.clone()).or_default().push(*ip),
                    Finding::LeakedAddress { handle: None, .. } => {}
                    Finding::BlockOfDeletedNode { node, .. } => {
                        nodes.insert(node.clone());
                    }
                    Finding::AffinityWithoutBlock { name, .. } => {
                        if self.delete_orphan_affinity(name).await? {
                            out.affinities_deleted += 1;
                        }
                    }
                    Finding::HandleWithoutAddresses { handle } => {
                        if self.delete_empty_handle(handle).await? {
                            out.handles_deleted += 1;
                        }
                    }
                }
            }
            for (handle, ips) in by_handle {
                let freed = self.release_ips_held_by(&ips, Some(&handle)).await?;
                out.released.extend(freed);
            }
            for node in nodes {
                out.blocks_released += self.release_node(&node).await?.released_blocks.len();
            }
            info!(
                released = out.released.len(),
                handles = out.handles_deleted,
                affinities = out.affinities_deleted,
                blocks = out.blocks_released,
                "released leaks"
            );
            Ok(out)
        }
        .instrument(info_span!("release_leaks"))
        .await
    }

    /// Deletes a handle record if no block it lists holds an address for it.
    async fn delete_empty_handle(&self, handle: &str) -> Result<bool> {
        let store = self.store();
        let Some(record) = store.get_handle(handle).await? else {
            return Ok(false);
        };
        for cidr in record.spec.block.keys() {
            let Ok(net) = cidr.parse::<IpNet>() else {
                continue;
            };
            let name = margay_api::IPAMBlock::name_for(&net);
            match store.blocks.get(None, &name).await {
                Ok(b) if !crate::block::addresses_of_handle(&b.spec, handle).is_empty() => {
                    return Ok(false);
                }
                Ok(_) | Err(DsError::NotFound(_)) => {}
                Err(e) => return Err(IpamError::datastore(format!("reading block {net}"), e)),
            }
        }
        let name = handle_object_name(handle)?;
        let rev = record.metadata.resource_version.clone().map(Revision);
        match store.handles.delete(None, &name, rev.as_ref()).await {
            Ok(()) => Ok(true),
            Err(DsError::NotFound(_) | DsError::Conflict { .. }) => Ok(false),
            Err(e) => Err(IpamError::datastore(format!("deleting handle {handle}"), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leak(h: &str) -> Finding {
        Finding::HandleWithoutAddresses { handle: h.into() }
    }

    #[test]
    fn a_finding_is_confirmed_only_when_seen_twice_a_grace_period_apart() {
        let mut t = LeakTracker::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let (c, s) = t.observe([leak("a")].into(), t0);
        assert!(c.is_empty());
        assert_eq!(s, [leak("a")]);
        let (c, _) = t.observe([leak("a")].into(), t0 + Duration::from_secs(30));
        assert!(c.is_empty(), "too soon");
        let (c, _) = t.observe([leak("a"), leak("b")].into(), t0 + Duration::from_secs(61));
        assert_eq!(c, [leak("a")]);
    }

    #[test]
    fn a_finding_that_goes_away_starts_over() {
        let mut t = LeakTracker::new(Duration::from_secs(60));
        let t0 = Instant::now();
        t.observe([leak("a")].into(), t0);
        t.observe(BTreeSet::new(), t0 + Duration::from_secs(10));
        let (c, s) = t.observe([leak("a")].into(), t0 + Duration::from_secs(100));
        assert!(c.is_empty());
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn with_no_grace_a_second_look_confirms() {
        let mut t = LeakTracker::new(Duration::ZERO);
        let t0 = Instant::now();
        let (c, _) = t.observe([leak("a")].into(), t0);
        assert!(c.is_empty(), "one look is never enough");
        let (c, _) = t.observe([leak("a")].into(), t0 + Duration::from_millis(1));
        assert_eq!(c.len(), 1);
    }
}
