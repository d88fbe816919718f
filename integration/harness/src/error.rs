//! The harness's error type.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// Everything that can go wrong while building a test topology or running a daemon.
///
/// Messages carry what a failing test needs to explain itself: the command line, its exit status
/// and stderr, or the tail of a daemon's log. `Debug` prints the same message and its causes, so
/// that `.unwrap()` in a test shows it readably.
#[derive(thiserror::Error)]
pub enum Error {
    /// The harness needs root (network namespaces, veths, daemons binding :179).
    #[error(
        "the netns harness must run as root (effective uid is {uid}); run the tests with sudo or as root in CI"
    )]
    NotRoot {
        /// The effective uid we had.
        uid: u32,
    },

    /// A program could not be started at all (missing binary, bad path).
    #[error("could not start `{command}`")]
    Spawn {
        /// The command line.
        command: String,
        /// Why the spawn failed.
        #[source]
        source: std::io::Error,
    },

    /// A program ran and exited unsuccessfully.
    #[error("`{command}` failed with {status}: {stderr}{}", if stdout.trim().is_empty() { String::new() } else { format!(" (stdout: {})", stdout.trim()) })]
    CommandFailed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: ExitStatus,
        /// Its standard error, trimmed.
        stderr: String,
        /// Its standard output, trimmed.
        stdout: String,
    },

    /// A file-system or other I/O operation failed.
    #[error("{context}")]
    Io {
        /// What we were doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// Entering a namespace with setns failed.
    #[error("cannot enter network namespace {ns}")]
    Setns {
        /// The namespace name.
        ns: String,
        /// The errno.
        #[source]
        source: nix::Error,
    },

    /// A signal could not be sent to a daemon.
    #[error("cannot signal {name} (pid {pid})")]
    Signal {
        /// The daemon's name.
        name: String,
        /// Its PID.
        pid: u32,
        /// The errno.
        #[source]
        source: nix::Error,
    },

    /// An address outside the ranges tests may use (198.18.0.0/15, 100.64.0.0/10, fd00::/8, loopback).
    #[error(
        "address {addr} is outside the test ranges (198.18.0.0/15, 100.64.0.0/10, fd00::/8, loopback); refusing to use it"
    )]
    AddressNotAllowed {
        /// The refused address or prefix.
        addr: String,
    },

    /// An argument the harness refuses (bad interface name, empty config, ...).
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// Which argument.
        what: String,
        /// Why it is refused.
        reason: String,
    },

    /// A daemon did not become ready within its timeout.
    #[error(
        "{name} (pid {pid}) not ready after {waited:?}: {reason}\n--- last lines of {log} ---\n{log_tail}"
    )]
    NotReady {
        /// The daemon's name.
        name: String,
        /// Its PID.
        pid: u32,
        /// How long we waited.
        waited: Duration,
        /// What we were waiting for.
        reason: String,
        /// Where the full log is.
        log: PathBuf,
        /// The last lines of its log.
        log_tail: String,
    },

    /// A daemon exited while we waited for it to become ready.
    #[error(
        "{name} (pid {pid}) exited with {status} before it was ready\n--- last lines of {log} ---\n{log_tail}"
    )]
    Exited {
        /// The daemon's name.
        name: String,
        /// Its PID.
        pid: u32,
        /// Its exit status.
        status: ExitStatus,
        /// Where the full log is.
        log: PathBuf,
        /// The last lines of its log.
        log_tail: String,
    },

    /// A condition a test waited for did not happen in time.
    #[error("timed out after {waited:?} waiting for {what}{}", if last.is_empty() { String::new() } else { format!(" (last seen: {last})") })]
    Timeout {
        /// What we waited for.
        what: String,
        /// How long.
        waited: Duration,
        /// The last observed state, to explain the failure.
        last: String,
    },

    /// A daemon's answer could not be understood.
    #[error("cannot parse {what}: {reason}")]
    Parse {
        /// What was parsed (e.g. `birdc show route`).
        what: String,
        /// What was wrong.
        reason: String,
    },

    /// The closure given to [`crate::Netns::run`] could not be run on its thread.
    #[error("thread for network namespace {ns} failed: {reason}")]
    Thread {
        /// The namespace name.
        ns: String,
        /// Why.
        reason: String,
    },
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")?;
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            write!(f, "\n  caused by: {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

/// The harness's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Invalid {
            what: what.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn parse(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Parse {
            what: what.into(),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_is_the_message_with_its_causes() {
        let e = Error::io(
            "cannot write /x",
            std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied"),
        );
        assert_eq!(format!("{e:?}"), "cannot write /x\n  caused by: denied");
        let e = Error::NotRoot { uid: 1000 };
        assert!(format!("{e:?}").contains("must run as root"));
    }
}
