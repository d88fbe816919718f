//! Kubernetes NetworkPolicy on this node: watches namespaces, policies and every workload
//! endpoint, compiles them with `margay-policy` and programs ipsets and iptables.

pub mod applied;

pub use applied::AppliedIndex;
