//! The checked-in `manifests/crds.yaml` is what the code generates, and the schemas keep to
//! Kubernetes' structural rules.

use margay_api::crd;
use serde_json::Value;

const CHECKED_IN: &str = include_str!("../../manifests/crds.yaml");

#[test]
fn checked_in_crds_are_up_to_date() {
    let generated = crd::to_yaml().expect("CRDs serialize");
    if generated != CHECKED_IN {
        let line = generated
            .lines()
            .zip(CHECKED_IN.lines())
            .position(|(a, b)| a != b)
            .map_or(
                generated.lines().count().min(CHECKED_IN.lines().count()),
                |i| i,
            );
        panic!(
            "manifests/crds.yaml is out of date (first difference at line {}).\nRegenerate it from the workspace root with:\n\n    {}\n",
            line + 1,
            crd::REGENERATE_COMMAND
        );
    }
}

#[test]
fn checked_in_crds_parse_back_to_the_generated_ones() {
    let docs: Vec<Value> = serde_saphyr::from_multiple(CHECKED_IN).expect("crds.yaml parses");
    let generated: Vec<Value> = crd::all()
        .into_iter()
        .map(|c| serde_json::to_value(c).unwrap())
        .collect();
    assert_eq!(docs, generated);
}

fn walk(v: &Value, path: &str, found: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let p = format!("{path}.{k}");
                if k == "additionalProperties" && child == &Value::Bool(false) {
                    found.push(p.clone());
                }
                if ["$ref", "uniqueItems"].contains(&k.as_str()) {
                    found.push(p.clone());
                }
                walk(child, &p, found);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                walk(child, &format!("{path}[{i}]"), found);
            }
        }
        _ => {}
    }
}

#[test]
fn no_schema_forbids_unknown_fields_or_uses_refs() {
    for c in crd::all() {
        let v = serde_json::to_value(&c).unwrap();
        let mut found = Vec::new();
        walk(&v, "", &mut found);
        assert!(found.is_empty(), "{:?}: {found:?}", c.metadata.name);
    }
}

#[test]
fn every_crd_is_in_our_group_with_short_names_and_the_margay_category() {
    let crds = crd::all();
    assert_eq!(crds.len(), margay_api::resource::KINDS.len());
    for c in &crds {
        let s = &c.spec;
        assert_eq!(s.group, margay_api::GROUP);
        assert_eq!(
            c.metadata.name.as_deref(),
            Some(format!("{}.{}", s.names.plural, s.group).as_str())
        );
        assert!(
            s.names.short_names.as_ref().is_some_and(|n| !n.is_empty()),
            "{}",
            s.names.kind
        );
        assert!(
            s.names
                .categories
                .as_ref()
                .is_some_and(|c| c.contains(&"margay".to_string()))
        );
        let v = &s.versions[0];
        assert_eq!((v.name.as_str(), v.served, v.storage), ("v1", true, true));
        let cols = v
            .additional_printer_columns
            .as_ref()
            .expect("printer columns");
        assert!(cols.iter().any(|c| c.name == "Age"), "{}", s.names.kind);
    }
}

#[test]
fn only_node_status_has_a_status_subresource() {
    for c in crd::all() {
        let v = &c.spec.versions[0];
        let has_status_field = v
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .and_then(|s| s.properties.as_ref())
            .is_some_and(|p| p.contains_key("status"));
        let has_subresource = v.subresources.as_ref().is_some_and(|s| s.status.is_some());
        assert_eq!(has_status_field, has_subresource, "{}", c.spec.names.kind);
        assert_eq!(has_subresource, c.spec.names.kind == "NodeStatus");
    }
}

#[test]
fn ip_and_cidr_fields_carry_a_format_or_pattern() {
    let yaml = CHECKED_IN;
    // Spot checks of the fields IPAM and BGP rely on.
    for (crd_name, field) in [
        ("ippools", "cidr"),
        ("ipamblocks", "cidr"),
        ("blockaffinities", "cidr"),
        ("bgppeers", "peerIP"),
        ("nodes", "ipv4Address"),
        ("nodes", "ipv6Address"),
        ("nodes", "routeReflectorClusterID"),
        ("workloadendpoints", "ipNetworks"),
    ] {
        let c = crd::all()
            .into_iter()
            .find(|c| c.spec.names.plural == crd_name)
            .unwrap();
        let v = serde_json::to_value(&c.spec.versions[0].schema).unwrap();
        let mut hits = Vec::new();
        find_field(&v, field, &mut hits);
        assert!(!hits.is_empty(), "{crd_name}.{field} not found");
        for h in hits {
            let s = if h.get("type") == Some(&Value::String("array".into())) {
                h["items"].clone()
            } else {
                h
            };
            assert!(
                s.get("format").is_some() || s.get("pattern").is_some(),
                "{crd_name}.{field}: {s}"
            );
        }
    }
    assert!(yaml.contains("format: cidr"));
}

fn find_field(v: &Value, field: &str, out: &mut Vec<Value>) {
    if let Value::Object(m) = v {
        if let Some(Value::Object(props)) = m.get("properties")
            && let Some(f) = props.get(field)
        {
            out.push(f.clone());
        }
        for child in m.values() {
            find_field(child, field, out);
        }
    }
}
