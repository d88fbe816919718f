//! Margay's resource API: the types every other crate speaks, their defaults and validation, the
//! selector languages, and the generated CustomResourceDefinitions.
//!
//! Everything here is pure (no I/O, no clock, no async): datastore backends, IPAM, the agent and
//! `margayctl` build on it.
//!
//! - Resources live under the API group [`GROUP`] (`crd.margay.dev`), version [`VERSION`] (`v1`):
//!   [`IPPool`], [`IPAMConfig`], [`IPAMBlock`], [`BlockAffinity`], [`IPAMHandle`], [`MargayNode`]
//!   (kind `Node`), [`NodeStatus`], [`BGPConfiguration`], [`BGPPeer`], [`AgentConfiguration`] and the
//!   namespaced [`WorkloadEndpoint`].
//! - The Kubernetes objects the agent reads (Namespace, Pod, NetworkPolicy) are re-exported from
//!   k8s-openapi in [`k8s`].
//! - [`selector::Selector`] parses and matches Calico's selector language;
//!   [`selector::label_selector_matches`] matches a Kubernetes `LabelSelector`.
//! - [`Validate`] checks one object and names every bad field; [`validate::pool_overlaps`] checks a
//!   set of pools against each other.
//! - [`Defaults::apply_defaults`] fills in defaults that depend on other fields (e.g. the block size
//!   of an IPv6 pool); context-free defaults are serde defaults and appear in the CRD schema.
//! - [`crd::all`] and [`crd::to_yaml`] produce `manifests/crds.yaml`
//!   (`cargo run -p margay-api --example gen-crds > manifests/crds.yaml`).
//!
//! ```
//! use margay_api::{Defaults, IPPool, Selector, Validate};
//! use std::collections::BTreeMap;
//!
//! let mut pool: IPPool = serde_saphyr::from_str(
//!     "apiVersion: crd.margay.dev/v1\n\
//!      kind: IPPool\n\
//!      metadata: {name: p1}\n\
//!      spec: {cidr: fd00:100::/112, nodeSelector: \"zone in {'a', 'b'}\"}\n",
//! )?;
//! pool.apply_defaults();
//! assert_eq!(pool.spec.block_size, Some(122));
//! pool.validate()?;
//!
//! let labels = BTreeMap::from([("zone".to_string(), "a".to_string())]);
//! assert!(pool.spec.usable_by_node(&labels));
//!
//! let err = Selector::parse("role = x").unwrap_err();
//! assert_eq!(err.to_string(), r#"selector "role = x": column 6: expected ==, !=, in or not in"#);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

// kube's `#[kube(printcolumn(name = .., type_ = ..), printcolumn(..))]` repeats keys on purpose.
#![allow(clippy::duplicated_attributes)]
#![warn(missing_docs)]

pub mod agentconfig;
pub mod bgp;
pub mod crd;
pub mod duration;
pub mod ipam;
pub mod ippool;
pub mod k8s;
pub mod names;
pub mod node;
pub mod pod;
pub mod resource;
mod schema;
pub mod selector;
pub mod validate;
pub mod workload;

pub use agentconfig::{AgentConfiguration, AgentConfigurationSpec, AgentSettings};
pub use bgp::{BGPConfiguration, BGPConfigurationSpec, BGPPeer, BGPPeerSpec};
pub use ipam::{
    AllocationAttribute, BlockAffinity, BlockAffinitySpec, IPAMBlock, IPAMBlockSpec, IPAMConfig,
    IPAMConfigSpec, IPAMHandle, IPAMHandleSpec,
};
pub use ippool::{IPPool, IPPoolSpec};
pub use node::{MargayNode, NodeSpec, NodeStatus, NodeStatusSpec, NodeStatusStatus};
pub use resource::Resource;
pub use selector::Selector;
pub use validate::{FieldError, Validate, ValidationErrors};
pub use workload::{WorkloadEndpoint, WorkloadEndpointSpec};

pub use k8s_openapi;
pub use kube_core;

/// The API group of every Margay resource.
pub const GROUP: &str = "crd.margay.dev";
/// The version of every Margay resource.
pub const VERSION: &str = "v1";
/// `GROUP/VERSION`, the `apiVersion` of every Margay object.
pub const API_VERSION: &str = "crd.margay.dev/v1";

/// Fills in the defaults that a CRD schema cannot express because they depend on other fields.
///
/// Context-free defaults (`natOutgoing: false`, `asNumber: 64512`, ...) are serde defaults and
/// are already present after deserialising; `apply_defaults` is idempotent.
pub trait Defaults {
    /// Fills every unset field that has a default.
    fn apply_defaults(&mut self);
}
