//! The plugin binary as a runtime sees it: environment in, JSON out, exit status.

use std::process::Command;

fn plugin(command: Option<&str>) -> (bool, serde_json::Value) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_margay-cni"));
    cmd.env_clear();
    if let Some(c) = command {
        cmd.env("CNI_COMMAND", c);
    }
    let out = cmd.output().expect("margay-cni runs");
    let json = serde_json::from_slice(&out.stdout).expect("stdout is one JSON object");
    (out.status.success(), json)
}

#[test]
fn version_answers_with_the_supported_versions() {
    let (ok, json) = plugin(Some("VERSION"));
    assert!(ok);
    assert_eq!(json["cniVersion"], "1.1.0");
    assert_eq!(json["supportedVersions"].as_array().unwrap().len(), 5);
}

#[test]
fn a_missing_command_is_an_invalid_environment_error() {
    let (ok, json) = plugin(None);
    assert!(!ok);
    assert_eq!(json["code"], 4);
    assert_eq!(json["msg"], "CNI_COMMAND is not set");
}

#[test]
fn an_unknown_command_names_the_value() {
    let (ok, json) = plugin(Some("ATTACH"));
    assert!(!ok);
    assert_eq!(json["msg"], "unknown CNI_COMMAND \"ATTACH\"");
}
