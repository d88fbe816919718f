//! The plugin's side: one blocking request/response over the agent's socket.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use prost::Message;

use super::ApiError;
use super::proto::{
    Allocate, Allocated, Applied, AppliedReply, Done, EndpointDown, EndpointUp, Gc, MAX_FRAME,
    PROTOCOL_VERSION, Release, Request, Response, Status, StatusReply, request, response,
};
use super::server::frame;

/// Why a request got no answer from the agent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket: the agent is not running (yet).
    #[error("cannot reach the Margay agent at {path}; is margay-node running on this node?")]
    Unreachable {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The connection broke or timed out mid-request.
    #[error("the Margay agent at {path} did not answer")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The answer could not be decoded, or was not the kind of answer the request expects.
    #[error("the Margay agent at {path} answered something unexpected: {why}")]
    Protocol {
        /// The socket path.
        path: PathBuf,
        /// What was wrong.
        why: String,
    },
    /// The agent answered with an error.
    #[error(transparent)]
    Agent(#[from] ApiError),
}

/// A client of the agent's local API.
#[derive(Debug, Clone)]
pub struct Client {
    path: PathBuf,
    timeout: Duration,
}

impl Client {
    /// A client of the socket at `path`; each request may take up to `timeout`.
    pub fn new(path: impl Into<PathBuf>, timeout: Duration) -> Self {
        Self {
            path: path.into(),
            timeout,
        }
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn call(&self, body: request::Body) -> Result<response::Body, ClientError> {
        let path = &self.path;
        let io = |source| ClientError::Io {
            path: path.clone(),
            source,
        };
        let mut s = UnixStream::connect(path).map_err(|source| ClientError::Unreachable {
            path: path.clone(),
            source,
        })?;
        s.set_read_timeout(Some(self.timeout)).map_err(io)?;
        s.set_write_timeout(Some(self.timeout)).map_err(io)?;
        s.write_all(&frame(&Request {
            version: PROTOCOL_VERSION,
            body: Some(body),
        }))
        .map_err(io)?;
        let mut len = [0u8; 4];
        s.read_exact(&mut len).map_err(io)?;
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_FRAME {
            return Err(ClientError::Protocol {
                path: path.clone(),
                why: format!("a frame of {len} bytes"),
            });
        }
        let mut buf = vec![0; len];
        s.read_exact(&mut buf).map_err(io)?;
        let resp = Response::decode(buf.as_slice()).map_err(|e| ClientError::Protocol {
            path: path.clone(),
            why: e.to_string(),
        })?;
        match resp.body {
            Some(response::Body::Error(e)) => Err(ClientError::Agent(ApiError::from_reply(&e))),
            Some(b) => Ok(b),
            None => Err(ClientError::Protocol {
                path: path.clone(),
                why: "an empty response".into(),
            }),
        }
    }

    fn unexpected(&self, what: &str) -> ClientError {
        ClientError::Protocol {
            path: self.path.clone(),
            why: format!("not {what}"),
        }
    }

    fn done(&self, body: request::Body) -> Result<Done, ClientError> {
        match self.call(body)? {
            response::Body::Done(d) => Ok(d),
            _ => Err(self.unexpected("a completion")),
        }
    }

    /// Asks for addresses.
    pub fn allocate(&self, req: Allocate) -> Result<Allocated, ClientError> {
        match self.call(request::Body::Allocate(req))? {
            response::Body::Allocated(a) => Ok(a),
            _ => Err(self.unexpected("an allocation")),
        }
    }

    /// Tells the agent the pod's side is wired; returns once its route is in the kernel.
    pub fn endpoint_up(&self, req: EndpointUp) -> Result<Done, ClientError> {
        self.done(request::Body::EndpointUp(req))
    }

    /// Tells the agent the attachment is going away.
    pub fn endpoint_down(&self, req: EndpointDown) -> Result<Done, ClientError> {
        self.done(request::Body::EndpointDown(req))
    }

    /// Releases a handle's addresses.
    pub fn release(&self, handle_id: &str) -> Result<Done, ClientError> {
        self.done(request::Body::Release(Release {
            handle_id: handle_id.into(),
        }))
    }

    /// Releases the addresses of attachments not in `valid_handles`.
    pub fn gc(&self, req: Gc) -> Result<Done, ClientError> {
        self.done(request::Body::Gc(req))
    }

    /// Asks whether the agent is ready.
    pub fn status(&self) -> Result<StatusReply, ClientError> {
        match self.call(request::Body::Status(Status {}))? {
            response::Body::Status(s) => Ok(s),
            _ => Err(self.unexpected("a status")),
        }
    }

    /// Asks whether `kind` (`namespaces`, `networkpolicies`, `workloadendpoints`)
    /// `namespace`/`name` was in the model of the agent's last successful policy programming,
    /// and at which revision. Before the first programming the agent answers
    /// [`ErrorKind::NotReady`](super::proto::ErrorKind::NotReady): ask again.
    pub fn applied(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<AppliedReply, ClientError> {
        match self.call(request::Body::Applied(Applied {
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
        }))? {
            response::Body::Applied(a) => Ok(a),
            _ => Err(self.unexpected("an applied answer")),
        }
    }
}
