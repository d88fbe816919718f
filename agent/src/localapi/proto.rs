//! The local API's messages: protobuf (prost), versioned, framed with a 4-byte big-endian length.
//!
//! The CNI plugin and the agent come from the same release but are upgraded at different times
//! (the plugin binary on the host, the agent in its DaemonSet), so every request carries
//! [`PROTOCOL_VERSION`]; an agent answers a request of another major version with an error that
//! says which versions each side speaks, rather than misreading it. New fields get new tags, so
//! an older peer ignores them.

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest frame either side accepts (a request is a few hundred bytes).
pub const MAX_FRAME: usize = 1 << 20;

/// A request from the plugin (or `margayctl`) to the agent.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Request {
    /// [`PROTOCOL_VERSION`] of the sender.
    #[prost(uint32, tag = "1")]
    pub version: u32,
    /// What is asked.
    #[prost(oneof = "request::Body", tags = "2, 3, 4, 5, 6, 7, 8")]
    pub body: Option<request::Body>,
}

/// The bodies of a [`Request`].
pub mod request {
    /// One operation.
    #[derive(Clone, PartialEq, ::prost::Oneof)]
    pub enum Body {
        /// Allocate addresses for a new attachment.
        #[prost(message, tag = "2")]
        Allocate(super::Allocate),
        /// The pod's veth is wired: program its route.
        #[prost(message, tag = "3")]
        EndpointUp(super::EndpointUp),
        /// The pod's veth is going away: remove its route and endpoint.
        #[prost(message, tag = "4")]
        EndpointDown(super::EndpointDown),
        /// Release every address of a handle.
        #[prost(message, tag = "5")]
        Release(super::Release),
        /// Is the agent ready to set up pods?
        #[prost(message, tag = "6")]
        Status(super::Status),
        /// Release the addresses of every attachment not in a list (CNI GC).
        #[prost(message, tag = "7")]
        Gc(super::Gc),
        /// Is an object in the dataplane as of the last policy programming?
        #[prost(message, tag = "8")]
        Applied(super::Applied),
    }
}

/// Who an attachment belongs to.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Attachment {
    /// The IPAM handle: network name + container id; release frees exactly what it holds.
    #[prost(string, tag = "1")]
    pub handle_id: String,
    /// The container id the runtime gave.
    #[prost(string, tag = "2")]
    pub container_id: String,
    /// The pod's namespace (`K8S_POD_NAMESPACE`), empty outside Kubernetes.
    #[prost(string, tag = "3")]
    pub namespace: String,
    /// The pod's name (`K8S_POD_NAME`), empty outside Kubernetes.
    #[prost(string, tag = "4")]
    pub pod: String,
    /// The interface name inside the pod (`CNI_IFNAME`, usually `eth0`).
    #[prost(string, tag = "5")]
    pub ifname: String,
}

/// Allocate addresses for an attachment.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Allocate {
    /// Who.
    #[prost(message, optional, tag = "1")]
    pub attachment: Option<Attachment>,
    /// How many IPv4 addresses (0 or 1).
    #[prost(uint32, tag = "2")]
    pub num_v4: u32,
    /// How many IPv6 addresses (0 or 1).
    #[prost(uint32, tag = "3")]
    pub num_v6: u32,
    /// IPv4 pools to draw from (names or CIDRs); empty: every pool the node may use.
    #[prost(string, repeated, tag = "4")]
    pub ipv4_pools: Vec<String>,
    /// IPv6 pools to draw from.
    #[prost(string, repeated, tag = "5")]
    pub ipv6_pools: Vec<String>,
    /// Specific addresses asked for (`margay.dev/ipAddrs`).
    #[prost(string, repeated, tag = "6")]
    pub ip_addrs: Vec<String>,
}

/// The pod's side is wired; program the route to it.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct EndpointUp {
    /// Who.
    #[prost(message, optional, tag = "1")]
    pub attachment: Option<Attachment>,
    /// The host-side veth (`mgy…`).
    #[prost(string, tag = "2")]
    pub host_ifname: String,
    /// The pod's addresses, as CIDRs (`100.64.0.5/32`).
    #[prost(string, repeated, tag = "3")]
    pub addresses: Vec<String>,
    /// The pod side's MAC address.
    #[prost(string, tag = "4")]
    pub mac: String,
}

/// The attachment is going away.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct EndpointDown {
    /// Who.
    #[prost(message, optional, tag = "1")]
    pub attachment: Option<Attachment>,
}

/// Release every address of a handle (idempotent).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Release {
    /// The handle.
    #[prost(string, tag = "1")]
    pub handle_id: String,
}

/// Readiness query.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Status {}

/// Release the addresses of attachments of `network` that are not in `valid_handles`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Gc {
    /// The network name (handles start with it).
    #[prost(string, tag = "1")]
    pub network: String,
    /// The handles still in use.
    #[prost(string, repeated, tag = "2")]
    pub valid_handles: Vec<String>,
}

/// Whether, as of the agent's last successful policy programming, an object was part of the
/// model the dataplane was programmed from, and at which revision. A lab or test writes an
/// object, then asks every node until each reports the object (or its absence) at least at the
/// revision written, so it knows the dataplane reflects the write.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Applied {
    /// The resource kind, plural and lower case: `namespaces`, `networkpolicies` or
    /// `workloadendpoints`.
    #[prost(string, tag = "1")]
    pub kind: String,
    /// The object's namespace; empty for `namespaces`.
    #[prost(string, tag = "2")]
    pub namespace: String,
    /// The object's name.
    #[prost(string, tag = "3")]
    pub name: String,
}

/// The answer to [`Applied`].
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct AppliedReply {
    /// The object was in the model of the last successful programming.
    #[prost(bool, tag = "1")]
    pub present: bool,
    /// Its `metadata.resourceVersion` then (empty when not present).
    #[prost(string, tag = "2")]
    pub revision: String,
}

/// The agent's answer.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Response {
    /// [`PROTOCOL_VERSION`] of the agent.
    #[prost(uint32, tag = "1")]
    pub version: u32,
    /// The result.
    #[prost(oneof = "response::Body", tags = "2, 3, 4, 5, 6")]
    pub body: Option<response::Body>,
}

/// The bodies of a [`Response`].
pub mod response {
    /// One result.
    #[derive(Clone, PartialEq, ::prost::Oneof)]
    pub enum Body {
        /// The request failed.
        #[prost(message, tag = "2")]
        Error(super::ErrorReply),
        /// Addresses allocated.
        #[prost(message, tag = "3")]
        Allocated(super::Allocated),
        /// Done, nothing to report (endpoint up/down, release, gc).
        #[prost(message, tag = "4")]
        Done(super::Done),
        /// Readiness.
        #[prost(message, tag = "5")]
        Status(super::StatusReply),
        /// Whether an object is in the programmed policy dataplane.
        #[prost(message, tag = "6")]
        Applied(super::AppliedReply),
    }
}

/// Addresses for an attachment.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Allocated {
    /// The addresses as CIDRs (`100.64.0.5/32`, `fd00:100:64::5/128`).
    #[prost(string, repeated, tag = "1")]
    pub addresses: Vec<String>,
}

/// A request that succeeded with nothing to return.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Done {
    /// What was done, for the plugin's log (`released 2 addresses`).
    #[prost(string, tag = "1")]
    pub detail: String,
}

/// Whether the agent can set up pods.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct StatusReply {
    /// Ready for ADD.
    #[prost(bool, tag = "1")]
    pub ready: bool,
    /// Why not, when not.
    #[prost(string, tag = "2")]
    pub reason: String,
    /// The agent's version.
    #[prost(string, tag = "3")]
    pub agent_version: String,
}

/// Kinds of failure, so that the plugin maps them to CNI error codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, ::prost::Enumeration)]
#[repr(i32)]
pub enum ErrorKind {
    /// Something unexpected inside the agent.
    Internal = 0,
    /// The request is malformed or names something impossible (a bad CIDR, an unknown pool).
    Invalid = 1,
    /// No address is left in the pools that may be used.
    Exhausted = 2,
    /// The agent is not ready yet (datastore not synced): try again later.
    NotReady = 3,
    /// The protocol versions do not match.
    Version = 4,
    /// The thing asked about does not exist.
    NotFound = 5,
}

/// A failure, with what to do about it.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ErrorReply {
    /// The kind.
    #[prost(enumeration = "ErrorKind", tag = "1")]
    pub kind: i32,
    /// What went wrong, naming the bad value.
    #[prost(string, tag = "2")]
    pub message: String,
}
