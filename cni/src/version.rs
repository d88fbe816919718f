//! CNI spec versions: what the plugin speaks and the VERSION command's answer.

use serde::Serialize;

/// The spec version the plugin implements.
pub const CURRENT: &str = "1.1.0";

/// Every spec version the plugin can answer in, oldest first.
pub const SUPPORTED: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The VERSION command's result.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    /// The version this result is written in.
    pub cni_version: &'static str,
    /// The versions the plugin supports.
    pub supported_versions: &'static [&'static str],
}

/// The answer to VERSION.
pub fn version_info() -> VersionInfo {
    VersionInfo {
        cni_version: CURRENT,
        supported_versions: SUPPORTED,
    }
}

/// Whether the plugin can answer a request in `version`.
pub fn is_supported(version: &str) -> bool {
    SUPPORTED.contains(&version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_lists_every_supported_release() {
        let json = serde_json::to_value(version_info()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"cniVersion": "1.1.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
        );
    }

    #[test]
    fn pre_0_3_versions_are_not_supported() {
        assert!(is_supported("1.0.0"));
        assert!(!is_supported("0.2.0"));
        assert!(!is_supported("2.0.0"));
    }
}
