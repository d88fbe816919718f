//! Kubernetes `networking.k8s.io/v1` NetworkPolicy compiled to ipsets and iptables chains, as
//! Felix does, with no I/O: the agent feeds the model (endpoints, namespaces, policies) and a
//! driver writes the result.
//!
//! The filter table of each family gets:
//!
//! - `FORWARD` → `mgy-FORWARD`: replies (conntrack `ESTABLISHED,RELATED`) to and from pods pass;
//!   packets from a pod (`-i mgy+`) go through `mgy-from-wl-dispatch`, packets to a pod
//!   (`-o mgy+`) through `mgy-to-wl-dispatch`; what comes back from both is accepted. Traffic
//!   between the node and its own pods does not cross FORWARD and passes, as in Calico.
//! - the dispatch chains go (`-g`) to each local pod's `mgy-fw-IFACE` (anti-spoofing: only the
//!   pod's own source addresses; then its egress policies) and `mgy-tw-IFACE` (its ingress
//!   policies). A pod selected by no policy of a direction has no jumps there and is allowed; one
//!   selected by at least one is allowed only if one of them marks the packet (union), else
//!   dropped.
//! - each policy has `mgy-pi-HASH` (ingress) and `mgy-pe-HASH` (egress) chains whose rules set
//!   the accept mark for each allowed peer × port; peers are ipsets: pods by selector
//!   (`mgy4s-…`), ipBlocks with their exceptions as `nomatch` entries (`mgy4b-…`), and named
//!   ports resolved per pod as `address,proto:port` sets (`mgy4n-…`) matched on `dst,dst`.
//!
//! [`Compiler`] is incremental: a pod that enters a selector changes only that selector's sets
//! ([`Compiler::take_dirty`] names them), never a chain.

pub mod compiler;
pub mod model;
pub mod names;
pub mod policy;
pub mod rules;

pub use compiler::{ChainKey, Compiler, Dirty, Snapshot};
pub use model::{Endpoint, EndpointKey, Family, NamedPort, PolicyKey, Protocol};
pub use rules::{Rule, SetDesc, SetType};
