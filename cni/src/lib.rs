//! `margay-cni`, Margay's CNI plugin.
//!
//! The plugin is a short-lived process a container runtime runs with `CNI_COMMAND` in its
//! environment and the network configuration on stdin; it answers with a JSON result or a JSON
//! error on stdout. It owns the pod's veth and addresses; the route to the pod belongs to the
//! agent (see `docs/architecture.md`). This crate starts with the protocol surface: which spec
//! versions it speaks, how errors are reported, and how host-side interfaces are named.

pub mod error;
pub mod install;
pub mod naming;
pub mod plugin;
pub mod version;
pub mod veth;
