//! Node removal: the blocks and affinities of a deleted node.

use std::collections::BTreeSet;

use ipnet::IpNet;
use margay_api::BlockAffinity;
use margay_datastore::{Error as DsError, Revision};
use tracing::{Instrument, info, info_span};

use crate::errors::{IpamError, Result};
use crate::ipam::Ipam;
use crate::store::block_net;

/// What [`Ipam::release_node`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeRelease {
    /// Empty blocks deleted.
    pub released_blocks: Vec<IpNet>,
    /// Blocks kept because addresses in them are still allocated, with how many. Release those
    /// (they are leaks once the node is gone: `check()` reports them) and call again.
    pub blocks_in_use: Vec<(IpNet, usize)>,
    /// Affinities deleted.
    pub affinities_deleted: usize,
}

impl Ipam {
    /// Frees the blocks and affinities of a deleted node, once none of its addresses is in use.
    /// Blocks that still hold addresses are kept and listed. Idempotent. The Kubernetes-mode
    /// controller calls this when a Node is deleted, as does `margayctl ipam release --node`.
    pub async fn release_node(&self, node: &str) -> Result<NodeRelease> {
        let span = info_span!("release_node", node);
        async {
            let store = self.store();
            let mut out = NodeRelease::default();
            let mut kept = BTreeSet::new();
            for b in store.list_blocks().await? {
                if b.spec.affinity_node() != Some(node) {
                    continue;
                }
                let net = block_net(&b)?;
                let c = self.inner.committers.get(net);
                if c.delete_if_empty(store, Some(node)).await? {
                    info!(block = %net, "deleted empty block of removed node");
                    out.released_blocks.push(net);
                } else {
                    out.blocks_in_use.push((net, b.spec.in_use()));
                    kept.insert(net);
                }
            }
            for a in store.list_affinities().await? {
                if a.spec.node != node {
                    continue;
                }
                if a.spec
                    .cidr
                    .parse::<IpNet>()
                    .is_ok_and(|n| kept.contains(&n))
                {
                    continue;
                }
                let name = a.metadata.name.clone().unwrap_or_default();
                let rev = a.metadata.resource_version.clone().map(Revision);
                match store.affinities.delete(None, &name, rev.as_ref()).await {
                    Ok(()) => out.affinities_deleted += 1,
                    Err(DsError::NotFound(_) | DsError::Conflict { .. }) => {}
                    Err(e) => {
                        return Err(IpamError::datastore(
                            format!("deleting affinity {name} of removed node"),
                            e,
                        ));
                    }
                }
            }
            Ok(out)
        }
        .instrument(span)
        .await
    }

    /// Deletes one affinity if it still is as it was seen (`revision`) and its block is not its
    /// node's; returns whether it did.
    pub(crate) async fn delete_orphan_affinity(&self, name: &str) -> Result<bool> {
        let store = self.store();
        let a = match store.affinities.get(None, name).await {
            Ok(a) => a,
            Err(DsError::NotFound(_)) => return Ok(false),
            Err(e) => return Err(IpamError::datastore(format!("reading affinity {name}"), e)),
        };
        if let Ok(net) = a.spec.cidr.parse::<IpNet>() {
            let block_name = margay_api::IPAMBlock::name_for(&net);
            match store.blocks.get(None, &block_name).await {
                Ok(b) if b.spec.affinity_node() == Some(a.spec.node.as_str()) => return Ok(false),
                Ok(_) | Err(DsError::NotFound(_)) => {}
                Err(e) => return Err(IpamError::datastore(format!("reading block {net}"), e)),
            }
        }
        let rev = a.metadata.resource_version.clone().map(Revision);
        match store.affinities.delete(None, name, rev.as_ref()).await {
            Ok(()) => Ok(true),
            Err(DsError::NotFound(_) | DsError::Conflict { .. }) => Ok(false),
            Err(e) => Err(IpamError::datastore(format!("deleting affinity {name}"), e)),
        }
    }
}

/// The name of `node`'s affinity to `block` (re-exported for `margayctl`).
pub fn affinity_name(node: &str, block: &IpNet) -> String {
    BlockAffinity::name_for(node, block)
}
