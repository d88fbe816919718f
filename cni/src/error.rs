//! CNI errors: the spec's well-known codes and the JSON a runtime reads from stdout.

use serde::Serialize;

/// The error codes of CNI spec 1.1 §"Error".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Code {
    /// The runtime asked for a spec version the plugin does not speak.
    IncompatibleVersion = 1,
    /// A field of the network configuration is not supported.
    UnsupportedField = 2,
    /// The container is unknown or does not exist.
    UnknownContainer = 3,
    /// A required environment variable is missing or invalid.
    InvalidEnvironment = 4,
    /// An I/O failure (reading stdin, writing the result).
    Io = 5,
    /// The configuration could not be decoded.
    Decode = 6,
    /// The network configuration is invalid.
    InvalidConfig = 7,
    /// A transient condition (the agent is not reachable yet): try again later.
    TryAgainLater = 11,
    /// STATUS: the plugin cannot set up any new attachment right now.
    Unavailable = 50,
    /// STATUS: the plugin has no addresses left.
    NoAddresses = 51,
    /// A plugin-specific failure.
    Plugin = 100,
}

/// The error object a plugin prints on stdout, exiting non-zero.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(rename_all = "camelCase")]
#[error("{msg}{}", details.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
pub struct CniError {
    /// The spec version of this answer.
    pub cni_version: String,
    /// The numeric code.
    pub code: u32,
    /// A short message: what went wrong.
    pub msg: String,
    /// Longer details: the bad value and what to do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

impl CniError {
    /// An error with `code`, a message and optional details.
    pub fn new(code: Code, msg: impl Into<String>, details: Option<String>) -> Self {
        Self {
            cni_version: crate::version::CURRENT.into(),
            code: code as u32,
            msg: msg.into(),
            details,
        }
    }

    /// The error in the version the runtime asked for, when the plugin speaks it.
    pub fn in_version(mut self, version: &str) -> Self {
        if crate::version::is_supported(version) {
            self.cni_version = version.into();
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_serialise_as_the_spec_says() {
        let e = CniError::new(
            Code::InvalidEnvironment,
            "CNI_COMMAND is not set",
            Some("set CNI_COMMAND to ADD, DEL, CHECK, GC, STATUS or VERSION".into()),
        );
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!({"cniVersion": "1.1.0", "code": 4, "msg": "CNI_COMMAND is not set",
                               "details": "set CNI_COMMAND to ADD, DEL, CHECK, GC, STATUS or VERSION"})
        );
    }

    #[test]
    fn details_are_left_out_when_empty_and_the_version_follows_the_request() {
        let e = CniError::new(Code::TryAgainLater, "agent not reachable", None).in_version("0.4.0");
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!({"cniVersion": "0.4.0", "code": 11, "msg": "agent not reachable"})
        );
        assert_eq!(e.to_string(), "agent not reachable");
    }
}
