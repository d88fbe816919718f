//! The errors every backend reports, in one vocabulary.

use crate::key::Key;

/// What went wrong with a datastore operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object does not exist.
    #[error("{0} not found")]
    NotFound(Key),
    /// `create` of an object that exists.
    #[error("{0} already exists")]
    AlreadyExists(Key),
    /// A compare-and-swap failed: the object changed since it was read. Read it again and retry.
    #[error(
        "{key} was modified concurrently (expected revision {expected}); read it again and retry"
    )]
    Conflict {
        /// The object.
        key: Key,
        /// The revision the caller expected.
        expected: String,
    },
    /// The backend cannot be reached or timed out; the operation may be retried later.
    #[error("datastore unavailable: {what}")]
    Unavailable {
        /// What was being done and where (`etcd http://198.18.0.254:2379: get …`).
        what: String,
        /// The underlying error, when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// Stored data under Margay's prefix that cannot be decoded.
    #[error("invalid data stored at {key}: {why}")]
    Invalid {
        /// Where it is (an etcd key or a resource path).
        key: String,
        /// What is wrong with it.
        why: String,
    },
    /// A watch's start revision has been compacted away (etcd) or expired (Kubernetes `410 Gone`):
    /// list again and watch from the new revision. [`crate::watch`] does that by itself.
    #[error("watch of {kind} from revision {revision} expired: the datastore compacted it")]
    Expired {
        /// The kind being watched.
        kind: String,
        /// The revision that is no longer available.
        revision: String,
    },
    /// The caller passed something the datastore cannot take (a revision of another backend, an
    /// object without a name).
    #[error("bad request: {0}")]
    BadRequest(String),
}

impl Error {
    /// An `Unavailable` error with its source.
    pub fn unavailable(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Unavailable {
            what: what.into(),
            source: Some(Box::new(source)),
        }
    }

    /// Whether retrying the same operation later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::Conflict { .. })
    }
}

/// Results of datastore operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
