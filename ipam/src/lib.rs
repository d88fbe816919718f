//! Margay IPAM: IP pools cut into blocks that nodes claim, addresses allocated by handle.
//!
//! The design is Calico's — pools → blocks with a node affinity → allocations recorded by
//! handle — written over Margay's [`Datastore`](margay_datastore::Datastore) trait only, and
//! fixing Calico's two sore points: leaks (release by handle is exact and idempotent; `check()`
//! finds what nothing uses and `release_leaks()` frees it) and slow per-host locking (writes to
//! a block are batched by group commit, see `commit.rs`; no lock is held across an allocation).
//!
//! # How it is used
//!
//! ```no_run
//! # use std::{collections::BTreeMap, sync::Arc};
//! # async fn example(ds: Arc<dyn margay_datastore::Datastore>) -> margay_ipam::Result<()> {
//! let ipam = margay_ipam::Ipam::new(ds);
//! // The agent, once at start: its node's allocator.
//! let node = ipam.node("node-1", BTreeMap::from([("zone".into(), "a".into())]));
//! // CNI ADD: one IPv4 address for the pod.
//! let attrs = BTreeMap::from([("namespace".into(), "default".into()), ("pod".into(), "web-0".into())]);
//! let got = node.auto_assign("margay-pod-network.0123abcd", &attrs, 1, 0).await?;
//! // CNI DEL: exactly what ADD took, and nothing if DEL comes twice.
//! node.release_handle("margay-pod-network.0123abcd").await?;
//! // margayctl ipam show / check / release:
//! let usage = ipam.usage().await?;
//! # let _ = (got, usage); Ok(()) }
//! ```
//!
//! # Where things are
//!
//! - [`block`]: allocation on one block as pure functions (FIFO reuse, release by handle or IP).
//! - [`pools`]: pool selection and the `margay.dev/ipv4pools`, `ipv6pools`, `ipAddrs` annotations.
//! - `commit.rs`: group commit of a block's writes; `claim.rs`: claiming, recovering and giving
//!   up blocks; [`NodeAllocator`]: `auto_assign`, `assign_ip`, release; [`Ipam`]: release by
//!   handle or IP, `release_node`, `check`/`release_leaks`, `usage`.
//! - [`cidr`]: address arithmetic of pools and blocks.

pub mod block;
pub mod cidr;
pub mod pools;

mod allocator;
mod check;
mod claim;
mod commit;
mod errors;
mod ipam;
mod release;
mod store;
mod usage;

pub use allocator::{AssignArgs, Assigned, Assignment, NodeAllocator};
pub use check::{CheckReport, Finding, LeakRelease, LeakTracker, Live};
pub use errors::{Family, IpamError, Result};
pub use ipam::{Ipam, Options, Released};
pub use pools::{PodRequest, parse_annotations, select_pools};
pub use release::{NodeRelease, affinity_name};
pub use store::{Retry, handle_object_name};
pub use usage::{BlockUsage, PoolUsage, Usage, borrowed_by};
