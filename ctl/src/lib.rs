//! `margayctl`, Margay's command-line tool, in calicoctl's and kubectl's habits.
//!
//! Output for people is a plain table (upper-case headers, columns padded with three spaces, as
//! kubectl prints); output for scripts is `-o json` or `-o yaml`. This first module is that output
//! layer, which every command goes through.

pub mod apply;
pub mod check;
pub mod columns;
pub mod config;
pub mod docs;
pub mod error;
pub mod get;
pub mod ipam;
pub mod kinds;
pub mod node_status;
pub mod output;
pub mod store;
pub mod version;
