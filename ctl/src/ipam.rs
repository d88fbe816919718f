//! `margayctl ipam show|check|release|configure|release-node`, on top of `margay-ipam`.
//!
//! `ipam check` looks twice, a grace period apart, and reports as confirmed only what it saw both
//! times (an address taken by a pod whose endpoint is being written is not a leak). Its report
//! (`-o report.json`) is what `ipam release --from-report` acts on; the release re-checks each
//! finding against the datastore, so that nothing changed since the check is touched.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use margay_api::ipam::IPAM_CONFIG_NAME;
use margay_api::{IPAMBlock, IPAMConfig, IPAMConfigSpec, MargayNode, WorkloadEndpoint};
use margay_datastore::{Error as DsError, Typed};
use margay_ipam::{CheckReport, Finding, Ipam, LeakTracker, Live};
use serde::{Deserialize, Serialize};

use crate::error::{CtlError, Result};
use crate::output::Table;
use crate::store::Store;

/// `ipam show`: pools (and blocks with `show_blocks`), or what holds one address.
pub async fn show(store: &Store, show_blocks: bool, ip: Option<IpAddr>) -> Result<String> {
    if let Some(ip) = ip {
        return show_ip(store, ip).await;
    }
    let usage = Ipam::new(store.datastore()).usage().await?;
    let mut t = Table::new(["grouping", "cidr", "ips total", "ips in use", "ips free"]);
    for p in &usage.pools {
        let in_use = u128::from(p.in_use);
        t.row([
            "IP Pool".to_string(),
            p.cidr.clone(),
            p.capacity.to_string(),
            in_use.to_string(),
            p.capacity.saturating_sub(in_use).to_string(),
        ]);
        if show_blocks {
            for b in usage
                .blocks
                .iter()
                .filter(|b| b.pool.as_deref() == Some(&p.name))
            {
                t.row([
                    "Block".to_string(),
                    b.cidr.to_string(),
                    b.size.to_string(),
                    b.in_use.to_string(),
                    b.size.saturating_sub(b.in_use).to_string(),
                ]);
            }
        }
    }
    if show_blocks {
        for b in usage.blocks.iter().filter(|b| b.pool.is_none()) {
            t.row([
                "Block (no pool)".to_string(),
                b.cidr.to_string(),
                b.size.to_string(),
                b.in_use.to_string(),
                b.size.saturating_sub(b.in_use).to_string(),
            ]);
        }
    }
    Ok(t.render())
}

async fn show_ip(store: &Store, ip: IpAddr) -> Result<String> {
    let (blocks, _) = Typed::<IPAMBlock>::new(store.datastore())
        .list(None)
        .await
        .map_err(|e| CtlError::msg(format!("cannot list IPAM blocks: {e}")))?;
    for b in &blocks {
        let Some(ord) = b.spec.ordinal_of(ip) else {
            continue;
        };
        let node = b.spec.affinity_node().unwrap_or("no node");
        let held = b.spec.allocations.get(ord).copied().flatten().is_some();
        if !held {
            return Ok(format!(
                "IP {ip} is not assigned (block {} of {node})\n",
                b.spec.cidr
            ));
        }
        let attr = b.spec.attribute_of(ord);
        let mut out = format!("IP {ip} is in use (block {} of {node})\n", b.spec.cidr);
        if let Some(a) = attr {
            let _ = writeln!(
                out,
                "  handle:    {}",
                a.handle_id.as_deref().unwrap_or("none")
            );
            if let (Some(ns), Some(pod)) = (a.namespace(), a.pod()) {
                let _ = writeln!(out, "  pod:       {ns}/{pod}");
            }
            if let Some(n) = a.node() {
                let _ = writeln!(out, "  node:      {n}");
            }
        }
        return Ok(out);
    }
    Ok(format!("IP {ip} is not in any IPAM block\n"))
}

/// One finding as the report file stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all_fields = "camelCase")]
pub enum ReportFinding {
    /// An address held by a handle no live endpoint has.
    LeakedAddress {
        /// The address.
        ip: IpAddr,
        /// Its handle.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        handle: Option<String>,
        /// Its block.
        block: IpNet,
        /// The node that took it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<String>,
    },
    /// A block affine to a node that is gone.
    BlockOfDeletedNode {
        /// The block.
        block: IpNet,
        /// The node.
        node: String,
    },
    /// An affinity without its block.
    AffinityWithoutBlock {
        /// The affinity's name.
        name: String,
        /// Its node.
        node: String,
        /// Its CIDR.
        cidr: String,
    },
    /// A handle record that holds nothing.
    HandleWithoutAddresses {
        /// The handle.
        handle: String,
    },
}

impl From<&Finding> for ReportFinding {
    fn from(f: &Finding) -> Self {
        match f.clone() {
            Finding::LeakedAddress {
                ip,
                handle,
                block,
                node,
            } => ReportFinding::LeakedAddress {
                ip,
                handle,
                block,
                node,
            },
            Finding::BlockOfDeletedNode { block, node } => {
                ReportFinding::BlockOfDeletedNode { block, node }
            }
            Finding::AffinityWithoutBlock { name, node, cidr } => {
                ReportFinding::AffinityWithoutBlock { name, node, cidr }
            }
            Finding::HandleWithoutAddresses { handle } => {
                ReportFinding::HandleWithoutAddresses { handle }
            }
        }
    }
}

impl From<ReportFinding> for Finding {
    fn from(f: ReportFinding) -> Self {
        match f {
            ReportFinding::LeakedAddress {
                ip,
                handle,
                block,
                node,
            } => Finding::LeakedAddress {
                ip,
                handle,
                block,
                node,
            },
            ReportFinding::BlockOfDeletedNode { block, node } => {
                Finding::BlockOfDeletedNode { block, node }
            }
            ReportFinding::AffinityWithoutBlock { name, node, cidr } => {
                Finding::AffinityWithoutBlock { name, node, cidr }
            }
            ReportFinding::HandleWithoutAddresses { handle } => {
                Finding::HandleWithoutAddresses { handle }
            }
        }
    }
}

/// The report file of `ipam check -o FILE`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Seen at both looks: `release --from-report` frees these.
    pub confirmed: Vec<ReportFinding>,
    /// Seen at the second look only.
    #[serde(default)]
    pub suspected: Vec<ReportFinding>,
    /// Inconsistencies that need a person.
    #[serde(default)]
    pub problems: Vec<String>,
}

/// What is alive: the handles of every workload endpoint, and the nodes (if there are any).
async fn live(store: &Store) -> Result<Live> {
    let ds = store.datastore();
    let (weps, _) = Typed::<WorkloadEndpoint>::new(ds.clone())
        .list(None)
        .await
        .map_err(|e| CtlError::msg(format!("cannot list workload endpoints: {e}")))?;
    let (nodes, _) = Typed::<MargayNode>::new(ds)
        .list(None)
        .await
        .map_err(|e| CtlError::msg(format!("cannot list nodes: {e}")))?;
    let nodes: HashSet<String> = nodes.into_iter().filter_map(|n| n.metadata.name).collect();
    Ok(Live {
        handles: weps
            .into_iter()
            .filter_map(|w| w.spec.ipam_handle_id)
            .collect(),
        // Without any Node objects (nodes not registered in this datastore), do not call every
        // block orphaned.
        nodes: (!nodes.is_empty()).then_some(nodes),
    })
}

/// `ipam check`: looks twice, `grace` apart; returns the report and its text.
pub async fn check(store: &Store, grace: Duration) -> Result<(Report, String)> {
    let ipam = Ipam::new(store.datastore());
    let mut tracker = LeakTracker::new(grace);
    let first = Instant::now();
    let live1 = live(store).await?;
    ipam.check(&live1, &mut tracker, first).await?;
    tokio::time::sleep(grace).await;
    let live2 = live(store).await?;
    // The second look is at least a nanosecond after the first, even with no grace period.
    let second = Instant::now().max(first + Duration::from_nanos(1));
    let r: CheckReport = ipam.check(&live2, &mut tracker, second).await?;
    let report = Report {
        confirmed: r.confirmed.iter().map(ReportFinding::from).collect(),
        suspected: r.suspected.iter().map(ReportFinding::from).collect(),
        problems: r.problems.clone(),
    };
    let mut text = String::new();
    for f in &r.confirmed {
        let _ = writeln!(text, "confirmed: {f}");
    }
    for f in &r.suspected {
        let _ = writeln!(text, "suspected: {f}");
    }
    for p in &r.problems {
        let _ = writeln!(text, "problem: {p}");
    }
    let _ = writeln!(
        text,
        "{} confirmed, {} suspected, {} problems",
        r.confirmed.len(),
        r.suspected.len(),
        r.problems.len()
    );
    Ok((report, text))
}

/// `ipam release --from-report FILE`: frees the confirmed findings that still hold.
pub async fn release_report(store: &Store, report: &Report) -> Result<String> {
    let ipam = Ipam::new(store.datastore());
    let r = CheckReport {
        confirmed: report
            .confirmed
            .iter()
            .cloned()
            .map(Finding::from)
            .collect(),
        ..Default::default()
    };
    let done = ipam.release_leaks(&r).await?;
    let mut out = String::new();
    for x in &done.released {
        let _ = writeln!(
            out,
            "released {} (handle {}, block {})",
            x.ip,
            x.handle.as_deref().unwrap_or("none"),
            x.block
        );
    }
    let _ = writeln!(
        out,
        "{} addresses released, {} handles deleted, {} affinities deleted, {} blocks released",
        done.released.len(),
        done.handles_deleted,
        done.affinities_deleted,
        done.blocks_released
    );
    Ok(out)
}

/// `ipam release --ip ADDR...`.
pub async fn release_ips(store: &Store, ips: &[IpAddr]) -> Result<String> {
    let released = Ipam::new(store.datastore()).release_ips(ips).await?;
    let mut out = String::new();
    for x in &released {
        let _ = writeln!(
            out,
            "released {} (handle {}, block {})",
            x.ip,
            x.handle.as_deref().unwrap_or("none"),
            x.block
        );
    }
    for ip in ips {
        if !released.iter().any(|r| r.ip == *ip) {
            let _ = writeln!(out, "{ip} was not assigned");
        }
    }
    Ok(out)
}

/// `ipam release-node NODE`.
pub async fn release_node(store: &Store, node: &str) -> Result<String> {
    let r = Ipam::new(store.datastore()).release_node(node).await?;
    let mut out = String::new();
    for b in &r.released_blocks {
        let _ = writeln!(out, "released block {b}");
    }
    for (b, n) in &r.blocks_in_use {
        let _ = writeln!(out, "kept block {b}: {n} addresses still in use");
    }
    let _ = writeln!(
        out,
        "{} blocks released, {} kept, {} affinities deleted",
        r.released_blocks.len(),
        r.blocks_in_use.len(),
        r.affinities_deleted
    );
    Ok(out)
}

/// `ipam configure`: changes the IPAM config (creating it if needed), as a compare-and-swap.
pub async fn configure(
    store: &Store,
    strict_affinity: Option<bool>,
    max_blocks_per_host: Option<u32>,
) -> Result<String> {
    let typed = Typed::<IPAMConfig>::new(store.datastore());
    let change = |spec: &mut IPAMConfigSpec| {
        if let Some(s) = strict_affinity {
            spec.strict_affinity = s;
        }
        if let Some(m) = max_blocks_per_host {
            spec.max_blocks_per_host = m;
        }
    };
    let stored = match typed
        .update_with(None, IPAM_CONFIG_NAME, 5, |c| {
            change(&mut c.spec);
            Ok(true)
        })
        .await
    {
        Ok(c) => c,
        Err(DsError::NotFound(_)) => {
            let mut spec = IPAMConfigSpec::default();
            change(&mut spec);
            let c = IPAMConfig::new(IPAM_CONFIG_NAME, spec);
            typed
                .create(&c)
                .await
                .map_err(|e| CtlError::msg(format!("cannot create the IPAM config: {e}")))?
        }
        Err(e) => return Err(CtlError::msg(format!("cannot update the IPAM config: {e}"))),
    };
    Ok(format!(
        "IPAM config: strictAffinity {}, maxBlocksPerHost {}\n",
        stored.spec.strict_affinity, stored.spec.max_blocks_per_host
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_findings_round_trip_through_json() {
        let f = Finding::LeakedAddress {
            ip: "100.64.0.5".parse().unwrap(),
            handle: Some("h1".into()),
            block: "100.64.0.0/26".parse().unwrap(),
            node: Some("n1".into()),
        };
        let r = Report {
            confirmed: vec![ReportFinding::from(&f)],
            ..Default::default()
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains("\"type\":\"LeakedAddress\""), "{text}");
        let back: Report = serde_json::from_str(&text).unwrap();
        assert_eq!(Finding::from(back.confirmed[0].clone()), f);
    }
}
