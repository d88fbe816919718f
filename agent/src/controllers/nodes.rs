//! Deleted nodes: their WorkloadEndpoints, IPAM handles, blocks and affinities are released.
//!
//! A node is gone when its Margay `Node` is deleted, and in Kubernetes mode also when its core
//! Kubernetes `Node` is deleted (then the Margay `Node` is deleted too, as Calico's node
//! controller does). What is gone is decided from what the watches saw (a deletion, or after
//! both initial lists a Margay Node without a core Node), never from a lone IPAM record: a block
//! whose node was never seen is left to the leak check, which waits a grace period first, so
//! that a node that claims a block just before its registration reaches the watch keeps it.

use std::collections::BTreeSet;
use std::sync::Arc;

use margay_api::MargayNode;
use margay_datastore::{Datastore, EndpointId, Error as DsError, Typed, Workloads};
use margay_ipam::Ipam;
use tracing::{Instrument, info, info_span, warn};

/// What the node watches have seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeState {
    /// Margay Nodes that exist.
    pub margay: BTreeSet<String>,
    /// Whether the Margay Node watch has listed everything once.
    pub margay_synced: bool,
    /// Core Kubernetes Nodes that exist (Kubernetes mode only).
    pub kube: Option<BTreeSet<String>>,
    /// Whether the core Node watch has listed everything once (true when there is none).
    pub kube_synced: bool,
    /// Nodes seen deleted whose clean-up has not succeeded yet.
    pub pending: BTreeSet<String>,
}

/// One change seen by a node watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    /// A Margay Node exists (added or changed).
    MargayUp(String),
    /// A Margay Node was deleted.
    MargayGone(String),
    /// The Margay Node watch holds the complete state.
    MargaySynced,
    /// A core Node exists.
    KubeUp(String),
    /// A core Node was deleted.
    KubeGone(String),
    /// The core Node watch (re)listed: these are all that exist.
    KubeListed(BTreeSet<String>),
}

impl NodeState {
    /// A state for one mode: `kubernetes` watches core Nodes too.
    pub fn new(kubernetes: bool) -> Self {
        NodeState {
            kube: kubernetes.then(BTreeSet::new),
            kube_synced: !kubernetes,
            ..Default::default()
        }
    }

    /// Applies one event.
    pub fn apply(&mut self, ev: NodeEvent) {
        match ev {
            NodeEvent::MargayUp(n) => {
                self.margay.insert(n);
            }
            NodeEvent::MargayGone(n) => {
                self.margay.remove(&n);
                self.pending.insert(n);
            }
            NodeEvent::MargaySynced => self.margay_synced = true,
            NodeEvent::KubeUp(n) => {
                if let Some(k) = &mut self.kube {
                    k.insert(n);
                }
            }
            NodeEvent::KubeGone(n) => {
                if let Some(k) = &mut self.kube {
                    k.remove(&n);
                    self.pending.insert(n);
                }
            }
            NodeEvent::KubeListed(all) => {
                if self.kube.is_some() {
                    self.kube = Some(all);
                    self.kube_synced = true;
                }
            }
        }
    }

    /// The nodes to clean up now: those seen deleted, and (Kubernetes mode, once both watches
    /// have listed) Margay Nodes without a core Node. With no core Node at all the API server
    /// is taken to show none (a test server, a client without the right to list them), and no
    /// Margay Node is called orphaned for that alone.
    pub fn gone(&self) -> BTreeSet<String> {
        if !(self.margay_synced && self.kube_synced) {
            return BTreeSet::new();
        }
        let mut out: BTreeSet<String> = self
            .pending
            .iter()
            .filter(|n| !self.exists(n))
            .cloned()
            .collect();
        if let Some(kube) = self.kube.as_ref().filter(|k| !k.is_empty()) {
            out.extend(self.margay.iter().filter(|n| !kube.contains(*n)).cloned());
        }
        out
    }

    /// Whether a node exists by every watch this mode has.
    pub fn exists(&self, node: &str) -> bool {
        self.margay.contains(node) && self.kube.as_ref().is_none_or(|k| k.contains(node))
    }

    /// Forgets a pending node: cleaned up, or back.
    pub fn done(&mut self, node: &str) {
        self.pending.remove(node);
    }
}

/// What cleaning up one node did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cleanup {
    /// Whether the Margay Node was deleted here (its core Node was gone).
    pub node_deleted: bool,
    /// WorkloadEndpoints deleted.
    pub endpoints_deleted: usize,
    /// Addresses freed by handle.
    pub addresses_released: usize,
    /// Empty blocks freed.
    pub blocks_released: usize,
    /// Blocks kept because addresses without an endpoint are still allocated in them (the leak
    /// check frees those after its grace period, and then the block).
    pub blocks_in_use: usize,
}

/// Releases everything of a deleted node: deletes its Margay Node if still there, frees the
/// addresses of its WorkloadEndpoints and deletes the stored ones (in Kubernetes mode the
/// endpoints are the node's Pods, which Kubernetes' pod garbage collector removes), then frees
/// its empty blocks and its affinities. Idempotent: a second call finds nothing to do.
pub async fn clean_up(
    workloads: &Workloads,
    ds: &Arc<dyn Datastore>,
    ipam: &Ipam,
    node: &str,
) -> anyhow::Result<Cleanup> {
    let span = info_span!("node_cleanup", node);
    async {
        let mut out = Cleanup::default();
        let nodes = Typed::<MargayNode>::new(Arc::clone(ds));
        match nodes.delete(None, node, None).await {
            Ok(()) => out.node_deleted = true,
            Err(DsError::NotFound(_)) => {}
            Err(e) => return Err(anyhow::anyhow!("cannot delete Node {node}: {e}")),
        }
        let all = workloads
            .list()
            .await
            .map_err(|e| anyhow::anyhow!("cannot list the workload endpoints: {e}"))?;
        for w in all.into_iter().filter(|w| w.spec.node == node) {
            if let Some(h) = &w.spec.ipam_handle_id {
                let freed = ipam
                    .release_handle(h)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot release handle {h}: {e}"))?;
                out.addresses_released += freed.len();
            }
            if workloads.is_derived() {
                continue;
            }
            let id = EndpointId {
                namespace: w.metadata.namespace.clone().unwrap_or_default(),
                name: w.metadata.name.clone().unwrap_or_default(),
                pod: w.spec.pod.clone(),
                container_id: w.spec.container_id.clone(),
            };
            workloads.remove(&id).await.map_err(|e| {
                anyhow::anyhow!("cannot remove endpoint {}/{}: {e}", id.namespace, id.name)
            })?;
            out.endpoints_deleted += 1;
        }
        let r = ipam
            .release_node(node)
            .await
            .map_err(|e| anyhow::anyhow!("cannot release the blocks of {node}: {e}"))?;
        out.blocks_released = r.released_blocks.len();
        out.blocks_in_use = r.blocks_in_use.len();
        info!(
            node_deleted = out.node_deleted,
            endpoints = out.endpoints_deleted,
            addresses = out.addresses_released,
            blocks = out.blocks_released,
            blocks_in_use = out.blocks_in_use,
            "released the IPAM of a deleted node"
        );
        Ok(out)
    }
    .instrument(span)
    .await
}

/// Cleans up every node [`NodeState::gone`] names; those that fail stay pending.
pub async fn clean_up_gone(
    workloads: &Workloads,
    ds: &Arc<dyn Datastore>,
    ipam: &Ipam,
    state: &mut NodeState,
) {
    for node in state.gone() {
        match clean_up(workloads, ds, ipam, &node).await {
            Ok(_) => state.done(&node),
            Err(e) => {
                warn!(node = %node, error = %e, "node clean-up failed; retrying later");
                state.pending.insert(node);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn nothing_is_gone_before_the_watches_have_listed() {
        let mut s = NodeState::new(true);
        s.apply(NodeEvent::MargayGone("a".into()));
        assert!(s.gone().is_empty());
        s.apply(NodeEvent::MargaySynced);
        assert!(s.gone().is_empty(), "the core Node list is still missing");
        s.apply(NodeEvent::KubeListed(names(&["b"])));
        assert_eq!(s.gone(), names(&["a"]));
    }

    #[test]
    fn a_deleted_margay_node_is_gone_in_etcd_mode() {
        let mut s = NodeState::new(false);
        for ev in [
            NodeEvent::MargayUp("a".into()),
            NodeEvent::MargayUp("b".into()),
            NodeEvent::MargaySynced,
        ] {
            s.apply(ev);
        }
        assert!(s.gone().is_empty());
        s.apply(NodeEvent::MargayGone("a".into()));
        assert_eq!(s.gone(), names(&["a"]));
        s.done("a");
        assert!(s.gone().is_empty());
    }

    #[test]
    fn a_node_that_came_back_is_not_gone() {
        let mut s = NodeState::new(false);
        s.apply(NodeEvent::MargaySynced);
        s.apply(NodeEvent::MargayGone("a".into()));
        s.apply(NodeEvent::MargayUp("a".into()));
        assert!(s.gone().is_empty());
    }

    #[test]
    fn a_margay_node_without_a_core_node_is_gone_in_kubernetes_mode() {
        let mut s = NodeState::new(true);
        s.apply(NodeEvent::MargayUp("a".into()));
        s.apply(NodeEvent::MargayUp("b".into()));
        s.apply(NodeEvent::MargaySynced);
        s.apply(NodeEvent::KubeListed(names(&["a", "b"])));
        assert!(s.gone().is_empty());
        s.apply(NodeEvent::KubeGone("b".into()));
        assert_eq!(s.gone(), names(&["b"]));
        // Still gone after a relist that no longer has it, and while its Margay Node is there.
        s.apply(NodeEvent::KubeListed(names(&["a"])));
        assert_eq!(s.gone(), names(&["b"]));
    }

    #[test]
    fn no_core_nodes_at_all_orphans_nothing() {
        let mut s = NodeState::new(true);
        s.apply(NodeEvent::MargayUp("a".into()));
        s.apply(NodeEvent::MargaySynced);
        s.apply(NodeEvent::KubeListed(BTreeSet::new()));
        assert!(s.gone().is_empty());
    }

    #[test]
    fn core_node_events_are_ignored_in_etcd_mode() {
        let mut s = NodeState::new(false);
        s.apply(NodeEvent::MargayUp("a".into()));
        s.apply(NodeEvent::MargaySynced);
        s.apply(NodeEvent::KubeGone("a".into()));
        assert!(s.gone().is_empty());
    }
}
