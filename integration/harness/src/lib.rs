//! Margay's network-namespace test harness.
//!
//! Tests build their own topology out of throwaway network namespaces and never touch the host's
//! namespace:
//!
//! - [`Netns`]: a uniquely named namespace (`mgyt-<pid>-<n>[-tag]`) deleted on drop, also when
//!   the test panics; [`Netns::run`] / [`Netns::block_on`] run code inside it on a dedicated
//!   thread, [`Netns::exec`] / [`Netns::command`] run programs inside it. A lab whose namespaces
//!   outlive the command that made them uses [`Netns::persistent`] / [`Netns::adopt`] (guards
//!   that never delete) and [`delete_netns`].
//! - Links ([`Netns::connect`], [`Netns::add_veth`], [`Bridge`]), addresses restricted to the
//!   test ranges ([`addr::ALLOWED_RANGES`]), and per-namespace sysctls ([`Netns::sysctl`]).
//! - [`Daemon`]: a background process with a log file and readiness conditions ([`Ready`]),
//!   stopped by PID on drop.
//! - [`fixtures`]: real etcd, BIRD 2, GoBGP and FRR started from generated configuration, with
//!   typed queries of what they learned.
//!
//! Everything needs root; [`require_root`] fails with a clear message otherwise.
//!
//! An interop test of an in-process speaker against BIRD looks like this:
//!
//! ```no_run
//! use std::time::Duration;
//! use margay_harness::Netns;
//! use margay_harness::fixtures::{BgpConfig, BgpNeighbor, BgpSpeaker, Bird};
//!
//! let (ours, peer) = (Netns::with_tag("ours")?, Netns::with_tag("bird")?);
//! ours.connect("eth0", &["198.18.0.1/24".parse()?], &peer, "eth0", &["198.18.0.2/24".parse()?])?;
//! let bird = Bird::start(
//!     &peer,
//!     BgpConfig::new("198.18.0.2".parse()?, 64512, "198.18.0.2".parse()?)
//!         .neighbor(BgpNeighbor::new("198.18.0.1".parse()?, 64512).passive())
//!         .originate("100.64.1.0/26".parse()?),
//! )?;
//! // Run our speaker inside `ours` (sockets opened there belong to that namespace)...
//! let speaker = ours.spawn(|| { /* tokio runtime + speaker connecting to 198.18.0.2:179 */ })?;
//! // ...and ask BIRD what it learned from us.
//! let route = bird.wait_route("100.64.9.0/26".parse()?, Duration::from_secs(30))?;
//! assert_eq!(route.next_hop, "198.18.0.1".parse::<std::net::IpAddr>()?);
//! speaker.join().expect("speaker thread")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod addr;
pub mod cmd;
mod daemon;
mod error;
pub mod fixtures;
pub mod leftovers;
mod link;
mod netns;
pub mod proxy;

pub use cmd::Output;
pub use daemon::{Daemon, DaemonBuilder, Ready};
pub use error::{Error, Result};
pub use link::{Bridge, Pair, Underlay};
pub use netns::{
    NETNS_PREFIX, Netns, delete as delete_netns, list_all, list_ours, list_this_process,
    require_root, sweep_stale,
};

/// Polls `ok` every 100 ms until it holds; panics with `what` and `detail()` after `timeout`.
/// (The test-side face of [`fixtures::wait_for`].)
pub fn wait_for(
    what: &str,
    timeout: std::time::Duration,
    mut ok: impl FnMut() -> bool,
    detail: impl Fn() -> String,
) {
    if let Err(e) = fixtures::wait_for(what, timeout, || Ok(ok().then_some(()))) {
        panic!("{e}:\n{}", detail());
    }
}
