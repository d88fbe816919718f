//! Margay's BGP-4 speaker library.
//!
//! Layers, from the wire up (each pure except the driver):
//! - [`wire`]: the message codec and UPDATE packing;
//! - [`fsm`]: the RFC 4271 §8 session state machine, sans-I/O;
//! - [`rib`]: interned attributes, Adj-RIB-In / Loc-RIB, the decision process and
//!   per-update-group output;
//! - [`policy`]: prefix-list import/export filters;
//! - [`driver`]: the tokio driver and the [`Speaker`] handle;
//! - [`config`] and [`standalone`]: the TOML config and the route-reflector entry point.

pub mod config;
pub mod decision;
pub mod driver;
pub mod fsm;
pub mod policy;
pub mod rib;
pub mod standalone;
pub mod wire;

pub use driver::{Error, GracefulRestart, PeerConfig, PeerStatus, Speaker, SpeakerConfig};
