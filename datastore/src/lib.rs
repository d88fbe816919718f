//! Margay's datastore: one contract for where resources live.
//!
//! Margay keeps configuration and IPAM state in **etcd v3** or in **Kubernetes custom resources**
//! (`datastoreType: etcdv3 | kubernetes`, as Calico). Everything above this crate — IPAM, the
//! agent, `margayctl` — holds an `Arc<dyn Datastore>` and does not know which.
//!
//! # The contract
//!
//! - [`Datastore`] is the raw, object-safe trait over `(kind, namespace, name) → bytes + revision`:
//!   `get`, `list` (with the revision to watch from), `create` (fails if it exists), `update`
//!   (compare-and-swap on the object's revision), `delete` (optionally CAS) and `watch` (per kind,
//!   from a revision).
//! - Revisions ([`Revision`]) are **opaque and per object**: compare them for equality only. In etcd
//!   an object's revision is its `mod_revision`; in Kubernetes its `resourceVersion`.
//! - [`watch()`] turns the raw watch into one that never gives up: `Added` for what exists, then
//!   `Synced`, then changes; it resumes after a lost connection from the last revision seen, and
//!   when that revision has been compacted it lists again and reports only the difference,
//!   followed by `Synced` again.
//! - [`audit::Recorder`] wraps a datastore and records each call's verb and kind (the RBAC test
//!   checks a component's calls against its role with it).
//! - [`Workloads`] is where WorkloadEndpoints come from: stored objects (etcd), or derived from
//!   Pods (Kubernetes mode, as Calico's KDD), so that the agent, the controller and `margayctl`
//!   do not care which.
//! - [`Typed`] is the typed view for Kubernetes-style resources (the `margay-api` types and
//!   k8s-openapi's), with the revision in `metadata.resourceVersion`.
//!
//! # The etcd key layout
//!
//! ```text
//! /margay/v1/<kind>/<name>                  cluster-scoped resources (ippools, nodes, bgppeers…)
//! /margay/v1/<kind>/<namespace>/<name>      namespaced resources (workloadendpoints…)
//! /margay/ipam/v1/<kind>/<name>             IPAM state (ipamblocks, blockaffinities, ipamhandles, ipamconfigs)
//! ```
//!
//! Values are the JSON of the whole resource without `metadata.resourceVersion`.
//!
//! # Read-modify-write
//!
//! Every change to shared state is a compare-and-swap in a bounded retry loop, and a cached copy
//! is never changed before the write succeeds. [`Typed::update_with`] is that loop:
//!
//! ```no_run
//! # use margay_datastore::{Typed, Result};
//! # use k8s_openapi::api::core::v1::ConfigMap;
//! # async fn example(pools: Typed<ConfigMap>) -> Result<()> {
//! pools
//!     .update_with(Some("default"), "settings", 10, |cm| {
//!         let data = cm.data.get_or_insert_with(Default::default);
//!         data.insert("natOutgoing".into(), "true".into());
//!         Ok(true) // write it; Ok(false) leaves the object as it is
//!     })
//!     .await?;
//! # Ok(()) }
//! ```

pub mod audit;
pub mod conformance;
pub mod error;
pub mod etcd;
pub mod key;
pub mod kubernetes;
pub mod memory;
pub mod store;
pub mod typed;
pub mod watcher;
pub mod workloads;

pub use error::{Error, Result};
pub use etcd::{Etcd, EtcdConfig};
pub use key::{Key, KeyError, Revision};
pub use kubernetes::{Kubernetes, KubernetesConfig};
pub use memory::Memory;
pub use store::{Datastore, Listing, RawEvent, RawWatch, Stored};
pub use typed::{Event, Object, Typed};
pub use watcher::{Backoff, WatchEvent, watch};
pub use workloads::{EndpointId, Workloads};
