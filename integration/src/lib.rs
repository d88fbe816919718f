//! Margay's integration lab: several nodes and pods in network namespaces on one Linux host.
//!
//! The namespaces, links and daemons come from [`margay_harness`]; this crate decides what a lab
//! looks like ([`plan`]) and, as the project grows, brings it up (`margay-lab`) and runs the
//! end-to-end suite against it.

pub mod apiserver;
pub mod lab;
pub mod plan;
pub mod rbac;

pub use plan::{LabPlan, NodePlan, PlanError};
