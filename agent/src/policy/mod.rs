//! Kubernetes NetworkPolicy on this node: watches namespaces, policies and every workload
//! endpoint (remote pods' addresses fill the selectors' sets), compiles them with
//! `margay-policy` and programs ipsets and iptables.
//!
//! Watch events update the compiler at once (no I/O) and request a programming through a
//! one-slot channel, so a burst of events is one write. Nothing is programmed before every watch
//! has delivered its initial list; the first programming (and every resync) reads the kernel and
//! sweeps our chains and sets that are not wanted. Readiness condition `policy` is met after the
//! first programming; [`AppliedIndex`] then answers the local API's `Applied` requests.
//!
//! The same drivers carry natOutgoing ([`nat`]): its sets and nat-table chain follow the IP pools.

pub mod applied;
mod dataplane;
pub mod nat;
mod task;

pub use applied::AppliedIndex;
pub use dataplane::{PolicyDataplane, ProgramReport};
pub use task::{endpoint_of, spawn};
