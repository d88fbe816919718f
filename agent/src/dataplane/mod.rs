//! The dataplane drivers: each holds a desired state, reads what the kernel has, applies the
//! difference in one batch, and repairs drift on resync. Only what is Margay's is ever touched.

pub mod ipsets;
pub mod iptables;
pub mod nlbatch;
pub mod routes;
pub mod sysctls;
pub mod tracker;

pub use routes::{RouteDriver, RouteTarget};
pub use sysctls::SysctlDriver;
pub use tracker::DeltaTracker;
