//! `margay-node`, Margay's node agent: Felix and the BGP daemon in one process.
//!
//! Inputs (datastore watch, local requests from the CNI plugin, BGP best paths) update a model; a
//! pure calculation gives the desired dataplane; one reconciler per driver applies the difference
//! to the kernel. See `docs/architecture.md`. This crate starts with its configuration: every
//! setting, where it comes from (file, then environment, then flags) and how it is checked.

pub mod access;
pub mod autodetect;
pub mod config;
pub mod controllers;
pub mod dataplane;
pub mod endpoints;
pub mod health;
pub mod kubenode;
pub mod localapi;
pub mod mesh;
pub mod peering;
pub mod policy;
pub mod reflector;
pub mod run;
pub mod settings;
pub mod status;

/// The route protocol number Margay's routes carry in the kernel (`ip route … proto 80`).
///
/// Everything the agent sweeps on resync is recognised by this number; routes of any other
/// protocol are never touched. 80 is unassigned in iproute2's `rt_protos` (BIRD has 12, zebra 11,
/// FRR's daemons 186–192), so `ip route show proto 80` lists exactly Margay's routes.
pub const ROUTE_PROTOCOL: u8 = 80;

/// The prefix of every host-side veth, chain and ipset the agent owns.
pub const NAME_PREFIX: &str = "mgy";
