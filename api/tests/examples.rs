//! Every Margay object under `manifests/examples/` is a valid resource that round-trips, and every
//! kind has an example. Kubernetes objects there (the Secret of BGP passwords) are left to
//! `validate-manifests.sh manifests`, which checks everything against the Kubernetes and CRD
//! schemas.

use std::collections::BTreeSet;
use std::path::PathBuf;

use margay_api::resource::{KINDS, Resource};
use margay_api::{Defaults, Validate};
use serde_json::Value;

fn examples() -> Vec<(String, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("manifests/examples exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let docs: Vec<Value> =
            serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for (i, d) in docs.into_iter().enumerate() {
            if d["apiVersion"].as_str() != Some("crd.margay.dev/v1") {
                continue;
            }
            out.push((
                format!("{}#{}", f.file_name().unwrap().to_string_lossy(), i + 1),
                d,
            ));
        }
    }
    out
}

#[test]
fn every_example_is_valid() {
    for (at, v) in examples() {
        let r = Resource::from_value(v).unwrap_or_else(|e| panic!("{at}: {e}"));
        if let Err(e) = r.validate() {
            panic!("{at}:\n{e}");
        }
    }
}

#[test]
fn every_kind_has_an_example() {
    let seen: BTreeSet<String> = examples()
        .into_iter()
        .map(|(_, v)| v["kind"].as_str().unwrap().to_string())
        .collect();
    let all: BTreeSet<String> = KINDS.iter().map(|k| k.to_string()).collect();
    assert_eq!(seen, all);
}

#[test]
fn examples_round_trip_through_yaml_and_json() {
    for (at, v) in examples() {
        let r = Resource::from_value(v).unwrap();
        let yaml = serde_saphyr::to_string(&r).unwrap();
        let back: Value = serde_saphyr::from_str(&yaml).unwrap();
        assert_eq!(
            Resource::from_value(back).unwrap(),
            r,
            "{at} via YAML:\n{yaml}"
        );
        let json = serde_json::to_string(&r).unwrap();
        let back: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(Resource::from_value(back).unwrap(), r, "{at} via JSON");
    }
}

#[test]
fn examples_stay_valid_after_defaults() {
    for (at, v) in examples() {
        let mut r = Resource::from_value(v).unwrap();
        r.apply_defaults();
        let once = r.clone();
        r.apply_defaults();
        assert_eq!(r, once, "{at}: apply_defaults is idempotent");
        assert!(r.validate().is_ok(), "{at}");
    }
}

#[test]
fn unknown_kinds_and_versions_are_refused() {
    let e =
        Resource::from_value(serde_json::json!({"apiVersion": "crd.margay.dev/v1", "kind": "Pod"}));
    assert_eq!(
        e.unwrap_err().to_string(),
        r#"kind "Pod" is not a Margay resource"#
    );
    let e = Resource::from_value(
        serde_json::json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool"}),
    );
    assert_eq!(
        e.unwrap_err().to_string(),
        r#"apiVersion "crd.projectcalico.org/v1" is not crd.margay.dev/v1"#
    );
    let e = Resource::from_value(serde_json::json!({
        "apiVersion": "crd.margay.dev/v1", "kind": "IPPool", "metadata": {"name": "p"}, "spec": {}
    }));
    assert_eq!(
        e.unwrap_err().to_string(),
        r#"IPPool "p" does not match its schema"#
    );
}
