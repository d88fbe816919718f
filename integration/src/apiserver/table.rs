//! `meta.k8s.io/v1` Table output, what `kubectl get` asks for (`Accept: application/json;as=Table…`):
//! a custom resource's printer columns, or a few columns per built-in kind, with NAME first.

use std::time::SystemTime;

use serde_json::{Value, json};

use super::registry::{Column, Resource};

/// Whether the Accept header asks for a Table.
pub fn wants_table(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.split(',').next().unwrap_or_default().contains("as=Table"))
}

/// `5s`, `4m10s`, `3h`, `2d`… as kubectl prints ages.
pub fn human_age(secs: u64) -> String {
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{m}m{}s", s % 60),
        s if s < 3 * 3600 => format!("{m}m"),
        s if s < 8 * 3600 => format!("{h}h{}m", m % 60),
        s if s < 48 * 3600 => format!("{h}h"),
        s if s < 8 * 86400 => format!("{d}d{}h", h % 24),
        _ => format!("{d}d"),
    }
}

fn age(timestamp: &Value) -> Value {
    let Some(ts) = timestamp.as_str() else {
        return Value::Null;
    };
    match humantime::parse_rfc3339(ts) {
        Ok(t) => {
            let secs = SystemTime::now()
                .duration_since(t)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            Value::String(human_age(secs))
        }
        Err(_) => Value::Null,
    }
}

/// Evaluates the simple JSONPaths printer columns use: `.a.b`, `.a[0].b`.
pub fn json_path<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let path = path.trim().trim_start_matches('{').trim_end_matches('}');
    let mut at = obj;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (field, index) = match part.split_once('[') {
            Some((f, rest)) => (f, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        if !field.is_empty() {
            at = at.get(field)?;
        }
        if let Some(i) = index {
            at = at.get(i)?;
        }
    }
    Some(at)
}

fn cell(obj: &Value, col: &Column) -> Value {
    match json_path(obj, &col.json_path) {
        None | Some(Value::Null) => Value::Null,
        Some(v) if col.type_ == "date" => age(v),
        Some(v @ (Value::String(_) | Value::Number(_) | Value::Bool(_))) => v.clone(),
        Some(v) => Value::String(v.to_string()),
    }
}

fn col(name: &str, type_: &str, path: &str) -> Column {
    Column {
        name: name.into(),
        type_: type_.into(),
        json_path: path.into(),
        priority: 0,
        description: String::new(),
    }
}

fn node_status(obj: &Value) -> Value {
    let ready = obj["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .map(|c| c["status"] == "True");
    Value::String(
        match ready {
            Some(true) => "Ready",
            Some(false) => "NotReady",
            None => "Unknown",
        }
        .into(),
    )
}

/// The columns after NAME for a resource, and how to fill the extra computed ones.
fn columns(res: &Resource) -> Vec<Column> {
    if res.custom {
        if res.columns.is_empty() {
            return vec![col("Age", "date", ".metadata.creationTimestamp")];
        }
        return res.columns.clone();
    }
    let age = col("Age", "date", ".metadata.creationTimestamp");
    match res.plural.as_str() {
        "nodes" => vec![
            col("Status", "string", "#ready"),
            age,
            col("Version", "string", ".status.nodeInfo.kubeletVersion"),
        ],
        "pods" => vec![
            col("Status", "string", ".status.phase"),
            age,
            col("IP", "string", ".status.podIP"),
            col("Node", "string", ".spec.nodeName"),
        ],
        "namespaces" => vec![col("Status", "string", ".status.phase"), age],
        _ => vec![age],
    }
}

/// One row of a Table for an object.
fn row(res: &Resource, obj: &Value) -> Value {
    let mut cells = vec![obj["metadata"]["name"].clone()];
    for c in columns(res) {
        cells.push(if c.json_path == "#ready" {
            node_status(obj)
        } else {
            cell(obj, &c)
        });
    }
    json!({
        "cells": cells,
        "object": {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj["metadata"],
        }
    })
}

/// A Table of objects, with the list's metadata (`resourceVersion`, `continue`).
pub fn table(res: &Resource, objects: &[Value], list_meta: Value) -> Value {
    let mut defs = vec![json!({"name": "Name", "type": "string", "format": "name",
        "description": "Name must be unique within a namespace.", "priority": 0})];
    for c in columns(res) {
        defs.push(json!({"name": c.name, "type": if c.type_ == "date" { "string" } else { c.type_.as_str() },
            "format": "", "description": c.description, "priority": c.priority}));
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": defs,
        "rows": objects.iter().map(|o| row(res, o)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_kubectl_prints_them() {
        assert_eq!(human_age(5), "5s");
        assert_eq!(human_age(250), "4m10s");
        assert_eq!(human_age(3600 * 5 + 120), "5h2m");
        assert_eq!(human_age(86400 * 3 + 3600), "3d1h");
    }

    #[test]
    fn printer_columns_come_from_the_crd_and_missing_fields_are_null() {
        let res = Resource {
            columns: vec![
                col("CIDR", "string", ".spec.cidr"),
                col("NAT", "boolean", ".spec.nat"),
            ],
            custom: true,
            ..crate::apiserver::registry::builtins()[0].clone()
        };
        let t = table(
            &res,
            &[json!({"metadata": {"name": "p"}, "spec": {"cidr": "10.0.0.0/8"}})],
            json!({}),
        );
        assert_eq!(t["rows"][0]["cells"], json!(["p", "10.0.0.0/8", null]));
        assert_eq!(t["columnDefinitions"][1]["name"], "CIDR");
    }

    #[test]
    fn only_the_first_accepted_type_decides_on_a_table() {
        assert!(wants_table(Some(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        )));
        assert!(!wants_table(Some("application/json")));
        assert!(!wants_table(None));
    }
}
