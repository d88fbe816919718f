//! Margay's network-namespace test harness.
//!
//! Tests build their own topology out of throwaway network namespaces and never touch the host's
//! namespace:
//!
//! - [`Netns`]: a uniquely named namespace (`mgyt-<pid>-<n>[-tag]`) deleted on drop, also when
//!   the test panics; [`Netns::run`] / [`Netns::block_on`] run code inside it on a dedicated
//!   thread, [`Netns::exec`] / [`Netns::command`] run programs inside it.
//! - Links ([`Netns::connect`], [`Netns::add_veth`], [`Bridge`]), addresses restricted to the
//!   test ranges ([`addr::ALLOWED_RANGES`]), and per-namespace sysctls ([`Netns::sysctl`]).
//! - [`Daemon`]: a background process with a log file and readiness conditions ([`Ready`]),
//!   stopped by PID on drop.
//! - [`fixtures`]: real etcd, BIRD 2, GoBGP and FRR started from generated configuration, with
//!   typed queries of what they learned.
//!
//! Everything needs root; [`require_root`] fails with a clear message otherwise.

pub mod addr;
pub mod cmd;
mod daemon;
mod error;
pub mod fixtures;
mod link;
mod netns;

pub use cmd::Output;
pub use daemon::{Daemon, DaemonBuilder, Ready};
pub use error::{Error, Result};
pub use link::Bridge;
pub use netns::{NETNS_PREFIX, Netns, list_ours, list_this_process, require_root};
