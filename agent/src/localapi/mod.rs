//! The local API: how the CNI plugin on this node asks the agent for addresses and routes.
//!
//! A Unix socket (default `/var/run/margay/agent.sock`, mode 0600: root only) carrying
//! length-framed protobuf messages ([`proto`]). The agent is the one owner of pod routes: the
//! plugin creates the veth and addresses, then calls `endpoint_up`, and the agent answers once
//! the kernel has the route. [`server::serve`] runs the socket over a [`Handler`];
//! [`client::Client`] is the plugin's side (blocking: the plugin is a short-lived process).

pub mod client;
pub mod proto;
pub mod server;

use proto::{
    Allocate, Allocated, Applied, AppliedReply, Done, EndpointDown, EndpointUp, ErrorKind,
    ErrorReply, Gc, Release, StatusReply,
};

/// A failed request, as the agent reports it to the plugin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// What kind of failure, for the plugin's CNI error code.
    pub kind: ErrorKind,
    /// What went wrong, naming the bad value and what to do.
    pub message: String,
}

impl ApiError {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    fn to_reply(&self) -> ErrorReply {
        ErrorReply {
            kind: self.kind as i32,
            message: self.message.clone(),
        }
    }

    fn from_reply(r: &ErrorReply) -> Self {
        Self {
            kind: ErrorKind::try_from(r.kind).unwrap_or(ErrorKind::Internal),
            message: r.message.clone(),
        }
    }
}

/// What the agent does for each request. The agent implements it over IPAM and its route
/// driver; tests implement it with fakes.
#[async_trait::async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Allocates addresses and records the attachment as pending.
    async fn allocate(&self, req: Allocate) -> Result<Allocated, ApiError>;
    /// Records the endpoint and programs its route; returns once the kernel has it.
    async fn endpoint_up(&self, req: EndpointUp) -> Result<Done, ApiError>;
    /// Removes the endpoint's route and record (idempotent).
    async fn endpoint_down(&self, req: EndpointDown) -> Result<Done, ApiError>;
    /// Releases every address of a handle (idempotent).
    async fn release(&self, req: Release) -> Result<Done, ApiError>;
    /// Whether the agent is ready for ADD.
    async fn status(&self) -> StatusReply;
    /// Releases the addresses of attachments that are not in the valid list.
    async fn gc(&self, req: Gc) -> Result<Done, ApiError>;
    /// Whether an object was in the model of the last successful policy programming. An agent
    /// that does not enforce policy answers [`ErrorKind::NotReady`].
    async fn applied(&self, req: Applied) -> Result<AppliedReply, ApiError> {
        Err(ApiError::new(
            ErrorKind::NotReady,
            format!(
                "this agent does not program network policy, so it cannot say whether {} {}/{} is applied",
                req.kind, req.namespace, req.name
            ),
        ))
    }
}
