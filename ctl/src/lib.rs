//! `margayctl`, Margay's command-line tool, in calicoctl's and kubectl's habits.
//!
//! - [`config`]: where the datastore is (flags, environment, config file), as calicoctl.
//! - [`kinds`]: the kinds, their command-line names and aliases, and dispatch to their types.
//! - [`store`]: objects of any kind as JSON, read and written through the datastore's typed view;
//!   every write is a compare-and-swap on `metadata.resourceVersion`.
//! - [`docs`] reads the documents of `-f FILE|DIR|-`; [`check`] checks each (kind, apiVersion,
//!   unknown fields, schema, defaults, validation, pool overlaps) into one-line errors naming the
//!   document (`FILE#N`), the field and the fix.
//! - [`get`], [`apply`], [`node_status`], [`version`], [`ipam`]: the commands; `main.rs` only
//!   parses arguments and dispatches.
//! - [`output`] and [`columns`]: kubectl-style tables, `-o wide`, `-o json|yaml`,
//!   `-o custom-columns=`.
//!
//! Exit codes: 0 ok, 1 error (one line per problem on standard error), 2 usage.

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
