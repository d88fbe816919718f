//! The agent's side: a Unix socket, one task per connection, requests answered in order.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tracing::{Instrument, debug, info_span, warn};

use super::proto::{MAX_FRAME, PROTOCOL_VERSION, Request, Response, request, response};
use super::{ApiError, Handler};
use crate::localapi::proto::ErrorKind;

/// How long a connection may take to send a request before the agent hangs up.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the socket could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The socket's directory or file could not be prepared.
    #[error("cannot prepare the local API socket {path}")]
    Prepare {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Something that is not a socket is in the way.
    #[error("{0} exists and is not a socket; remove it or set another socket path")]
    NotASocket(PathBuf),
}

/// Binds the socket at `path` (replacing a stale socket, never another kind of file), mode 0600.
pub fn bind(path: &Path) -> Result<UnixListener, ServeError> {
    let prepare = |source| ServeError::Prepare {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(prepare)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path).map_err(prepare)?,
        Ok(_) => return Err(ServeError::NotASocket(path.to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(prepare(e)),
    }
    let listener = UnixListener::bind(path).map_err(prepare)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(prepare)?;
    Ok(listener)
}

/// Serves requests on `listener` until `shutdown` completes.
pub async fn serve(
    listener: UnixListener,
    handler: Arc<dyn Handler>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut next_id: u64 = 0;
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    next_id += 1;
                    let h = Arc::clone(&handler);
                    tokio::spawn(connection(stream, h).instrument(info_span!("localapi", conn = next_id)));
                }
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

async fn read_frame(stream: &mut UnixStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is larger than the {MAX_FRAME} allowed"),
        ));
    }
    let mut buf = vec![0; len];
    stream.read_exact(&mut buf).await?;
    Ok(Some(buf))
}

/// Encodes a message with its length prefix.
pub(crate) fn frame(msg: &impl Message) -> Vec<u8> {
    let body = msg.encode_to_vec();
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

async fn connection(mut stream: UnixStream, handler: Arc<dyn Handler>) {
    loop {
        let buf = match tokio::time::timeout(READ_TIMEOUT, read_frame(&mut stream)).await {
            Ok(Ok(Some(buf))) => buf,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                debug!(error = %e, "bad frame; closing");
                return;
            }
            Err(_) => {
                debug!("no request within {READ_TIMEOUT:?}; closing");
                return;
            }
        };
        let body = match Request::decode(buf.as_slice()) {
            Ok(req) => dispatch(req, handler.as_ref()).await,
            Err(e) => error(ApiError::new(
                ErrorKind::Invalid,
                format!("cannot decode the request: {e}"),
            )),
        };
        let resp = Response {
            version: PROTOCOL_VERSION,
            body: Some(body),
        };
        if let Err(e) = stream.write_all(&frame(&resp)).await {
            debug!(error = %e, "cannot answer; closing");
            return;
        }
    }
}

fn error(e: ApiError) -> response::Body {
    response::Body::Error(e.to_reply())
}

async fn dispatch(req: Request, h: &dyn Handler) -> response::Body {
    if req.version != PROTOCOL_VERSION {
        return error(ApiError::new(
            ErrorKind::Version,
            format!(
                "the plugin speaks local API version {} and this agent version {PROTOCOL_VERSION}; \
                 install the margay-cni binary of the agent's release (margay-cni install)",
                req.version
            ),
        ));
    }
    let result = match req.body {
        None => Err(ApiError::new(
            ErrorKind::Invalid,
            "empty request: no operation given",
        )),
        Some(request::Body::Allocate(r)) => h.allocate(r).await.map(response::Body::Allocated),
        Some(request::Body::EndpointUp(r)) => h.endpoint_up(r).await.map(response::Body::Done),
        Some(request::Body::EndpointDown(r)) => h.endpoint_down(r).await.map(response::Body::Done),
        Some(request::Body::Release(r)) => h.release(r).await.map(response::Body::Done),
        Some(request::Body::Gc(r)) => h.gc(r).await.map(response::Body::Done),
        Some(request::Body::Status(_)) => Ok(response::Body::Status(h.status().await)),
        Some(request::Body::Applied(r)) => h.applied(r).await.map(response::Body::Applied),
    };
    result.unwrap_or_else(error)
}
