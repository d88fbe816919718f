//! The one error type of `margayctl`'s commands; `main` prints it on one line and exits with 1.

use crate::check::DocProblem;
use crate::columns::ColumnError;
use crate::config::ConfigError;
use crate::docs::DocError;
use crate::kinds::UnknownKind;
use crate::store::StoreError;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// Finding or reaching the datastore.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Reading or writing an object.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading the files of `-f`.
    #[error(transparent)]
    Doc(#[from] DocError),
    /// A document that cannot be applied.
    #[error(transparent)]
    Problem(#[from] DocProblem),
    /// A kind name that is not known.
    #[error(transparent)]
    Kind(#[from] UnknownKind),
    /// A bad `-o custom-columns` or JSON path.
    #[error(transparent)]
    Column(#[from] ColumnError),
    /// IPAM.
    #[error(transparent)]
    Ipam(#[from] margay_ipam::IpamError),
    /// Anything else, already phrased for the user.
    #[error("{0}")]
    Msg(String),
}

impl CtlError {
    /// An error with this message.
    pub fn msg(m: impl Into<String>) -> Self {
        CtlError::Msg(m.into())
    }
}

/// Results of commands.
pub type Result<T, E = CtlError> = std::result::Result<T, E>;
