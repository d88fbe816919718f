//! What each role of `margay-node` does in the Kubernetes API: the source of the ClusterRoles in
//! `manifests/margay.yaml` and `manifests/margay-etcd.yaml`.
//!
//! Every call goes through the [`Datastore`](margay_datastore::Datastore) trait (the Kubernetes
//! backend maps a datastore kind to a resource with
//! [`api_resource`](margay_datastore::kubernetes::api_resource)), except the controller's watch of
//! core Nodes (kube-runtime's watcher: list and watch), the agent's patch of its core Node's
//! status (`NetworkUnavailable`, [`crate::kubenode`]) and the merge patch of a Pod's annotations
//! ([`margay_datastore::Workloads`] in Kubernetes mode). Each trait operation is one verb:
//! `get`, `list`, `create`, `update` (and `update` of `KIND/status` for a kind with a status
//! subresource), `delete`; a watch (`margay_datastore::watch`, `Typed::watch`) is `list` then
//! `watch`; `Typed::update_with` is `get` then `update`.
//!
//! In Kubernetes mode no WorkloadEndpoint is stored: the node watches every Pod (endpoints are
//! derived from them, [`margay_datastore::Workloads`]) and patches the annotations of its own
//! pods on CNI ADD/DEL; the controller lists Pods for the leak check.
//!
//! The kinds come from the code: `integration/tests/rbac.rs` scans each role's source files
//! for the datastore kinds they use (`Typed::<T>`, `follow::<T>`, `mirror::<T>`, literal kind
//! names) and fails when one is missing here; it then checks this table against the manifests'
//! ClusterRoles in both directions (nothing missing, nothing more, no `*`), and the controller's
//! test records every datastore call the controller makes and checks each against the table.

use margay_api::k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use margay_api::k8s_openapi::api::networking::v1::NetworkPolicy;
use margay_api::{
    AgentConfiguration, BGPConfiguration, BGPPeer, BlockAffinity, IPAMBlock, IPAMConfig,
    IPAMHandle, IPPool, MargayNode, NodeStatus, WorkloadEndpoint,
};
use margay_datastore::Object;
use margay_datastore::typed::kind_of;

use crate::config::{DatastoreType, Role};

/// A Kubernetes API verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verb {
    /// Read one object.
    Get,
    /// List objects.
    List,
    /// Watch objects.
    Watch,
    /// Create an object.
    Create,
    /// Replace an object.
    Update,
    /// Delete an object.
    Delete,
    /// Patch an object (merge or strategic merge patch).
    Patch,
}

impl Verb {
    /// The verb as RBAC rules spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Delete => "delete",
            Verb::Patch => "patch",
        }
    }
}

/// One kind a role uses, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    /// The datastore kind (lower-case plural), or `kube:nodes` for the core Node, which is not a
    /// datastore kind (`nodes` is Margay's Node).
    pub kind: String,
    /// The verbs.
    pub verbs: Vec<Verb>,
    /// Only in this namespace (a Role there rather than a ClusterRole).
    pub namespace: Option<&'static str>,
    /// Also this verb on the status subresource (`update` for a replace, `patch`).
    pub status: Option<Verb>,
}

/// The core Kubernetes Node, read by the controller with kube-runtime and patched (status) by
/// the node agent (not a datastore kind).
pub const KUBE_NODES: &str = "kube:nodes";

use Verb::*;

const READ: &[Verb] = &[Get, List, Watch];
const FOLLOW: &[Verb] = &[List, Watch];
const ALL: &[Verb] = &[Get, List, Watch, Create, Update, Delete];

fn need<T: Object>(verbs: &[Verb]) -> Need {
    Need {
        kind: kind_of::<T>(),
        verbs: verbs.to_vec(),
        namespace: None,
        status: None,
    }
}

/// What `role` needs from the Kubernetes API in `mode`. In etcd mode the node and the reflector
/// need nothing (everything they read is in etcd); the controller reads what it copies.
pub fn needs(role: Role, mode: DatastoreType) -> Vec<Need> {
    let secrets = Need {
        namespace: Some(crate::mesh::SECRETS_NAMESPACE),
        ..need::<Secret>(&[Get])
    };
    let node_status = Need {
        status: Some(Update),
        ..need::<NodeStatus>(&[Get, Create, Update])
    };
    let kube_nodes = Need {
        kind: KUBE_NODES.into(),
        verbs: FOLLOW.to_vec(),
        namespace: None,
        status: None,
    };
    // NetworkUnavailable=False on the node's own core Node.
    let kube_node_status = Need {
        kind: KUBE_NODES.into(),
        verbs: Vec::new(),
        namespace: None,
        status: Some(Patch),
    };
    match (role, mode) {
        (Role::Node, DatastoreType::Kubernetes) => vec![
            need::<AgentConfiguration>(FOLLOW),
            need::<BGPConfiguration>(READ),
            need::<BGPPeer>(FOLLOW),
            need::<IPPool>(FOLLOW),
            need::<IPAMConfig>(&[Get]),
            need::<MargayNode>(&[Get, List, Watch, Create, Update]),
            node_status,
            need::<IPAMBlock>(&[Get, List, Create, Update, Delete]),
            need::<BlockAffinity>(ALL),
            need::<IPAMHandle>(&[Get, List, Create, Update, Delete]),
            // Every pod (endpoints, policy selectors, named ports); its own pods' annotations.
            need::<Pod>(&[Get, List, Watch, Patch]),
            kube_node_status,
            need::<Namespace>(FOLLOW),
            need::<NetworkPolicy>(FOLLOW),
            secrets,
        ],
        (Role::RouteReflector, DatastoreType::Kubernetes) => vec![
            need::<BGPConfiguration>(READ),
            need::<BGPPeer>(FOLLOW),
            need::<MargayNode>(&[Get, List, Watch, Create, Update]),
            node_status,
            secrets,
        ],
        (Role::Controllers, DatastoreType::Kubernetes) => vec![
            kube_nodes,
            need::<MargayNode>(&[List, Watch, Delete]),
            // The live IPAM handles: endpoints derived from Pods.
            need::<Pod>(&[List]),
            need::<IPPool>(&[List]),
            need::<IPAMConfig>(&[Get]),
            need::<IPAMBlock>(&[Get, List, Update, Delete]),
            need::<BlockAffinity>(&[Get, List, Delete]),
            need::<IPAMHandle>(&[Get, List, Update, Delete]),
        ],
        (Role::Controllers, DatastoreType::EtcdV3) => vec![
            kube_nodes,
            need::<Namespace>(FOLLOW),
            need::<NetworkPolicy>(FOLLOW),
            need::<Pod>(FOLLOW),
        ],
        (Role::Node | Role::RouteReflector, DatastoreType::EtcdV3) => Vec::new(),
    }
}

/// The datastore kinds of the types a role's code may name, for the source scan: the Rust type
/// name and its kind (from the type itself).
pub fn kinds_by_type_name() -> Vec<(&'static str, String)> {
    vec![
        ("AgentConfiguration", kind_of::<AgentConfiguration>()),
        ("BGPConfiguration", kind_of::<BGPConfiguration>()),
        ("BGPPeer", kind_of::<BGPPeer>()),
        ("IPPool", kind_of::<IPPool>()),
        ("IPAMConfig", kind_of::<IPAMConfig>()),
        ("IPAMBlock", kind_of::<IPAMBlock>()),
        ("BlockAffinity", kind_of::<BlockAffinity>()),
        ("IPAMHandle", kind_of::<IPAMHandle>()),
        ("MargayNode", kind_of::<MargayNode>()),
        ("NodeStatus", kind_of::<NodeStatus>()),
        ("WorkloadEndpoint", kind_of::<WorkloadEndpoint>()),
        ("Namespace", kind_of::<Namespace>()),
        ("NetworkPolicy", kind_of::<NetworkPolicy>()),
        ("Pod", kind_of::<Pod>()),
        ("Secret", kind_of::<Secret>()),
        ("KubeNode", KUBE_NODES.to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_the_types_plurals() {
        let n = needs(Role::Node, DatastoreType::Kubernetes);
        assert!(n.iter().any(|n| n.kind == "ipamblocks"));
        assert!(
            n.iter()
                .any(|n| n.kind == "nodestatuses" && n.status == Some(Update))
        );
        assert!(
            n.iter().all(|n| n.kind != "workloadendpoints"),
            "Kubernetes mode stores no WorkloadEndpoints"
        );
        assert!(
            needs(Role::Node, DatastoreType::EtcdV3).is_empty(),
            "etcd mode: the node reads nothing from Kubernetes"
        );
    }
}
