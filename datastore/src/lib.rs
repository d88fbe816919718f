//! Margay's datastore: one contract for where resources live.
//!
//! Margay keeps configuration and IPAM state in etcd v3 or in Kubernetes custom resources
//! (`datastoreType: etcdv3 | kubernetes`, as Calico does). Everything above this crate speaks one
//! trait and does not know which backend it has. This first module fixes the vocabulary the trait
//! is written in: what names an object ([`Key`]), where it lives in etcd ([`key::etcd_key`]), and
//! the opaque per-object [`Revision`] that compare-and-swap updates carry.

pub mod key;

pub use key::{Key, KeyError, Revision};
