//! Validation of custom resources against their CRD's `openAPIV3Schema`, with the apiserver's
//! semantics for the subset CRDs use: `type`, `properties`, `required`, `enum`, `minimum` /
//! `maximum` (and exclusive), `minLength` / `maxLength`, `minItems` / `maxItems`, `pattern`, the
//! formats `ipv4`, `ipv6`, `cidr` and `uuid`, `nullable` (non-nullable `null`s are dropped),
//! `default`s filled in, `items`, `additionalProperties` as a map's value schema,
//! `x-kubernetes-int-or-string`, `x-kubernetes-preserve-unknown-fields` and
//! `x-kubernetes-list-type: set`.
//!
//! Unknown fields are pruned and reported, so that the caller can fail them
//! (`fieldValidation=Strict`), warn (`Warn`, the default) or say nothing (`Ignore`).
//! Not evaluated: CEL rules (`x-kubernetes-validations`), `allOf`/`anyOf`/`oneOf`/`not`,
//! `x-kubernetes-list-type: map` keys.

use serde_json::{Map, Value};

use super::status::FieldError;

/// What validation found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Checked {
    /// Schema violations (a 422).
    pub errors: Vec<FieldError>,
    /// Paths of fields the schema does not declare (already pruned from the object).
    pub unknown: Vec<String>,
}

const OBJECT_META: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

/// Whether `name` is a DNS-1123 subdomain (what most object names must be).
pub fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Checks the fields of `metadata` every object has: unknown keys are reported (and pruned).
pub fn check_metadata(obj: &mut Value, out: &mut Checked) {
    if let Some(meta) = obj["metadata"].as_object_mut() {
        let unknown: Vec<String> = meta
            .keys()
            .filter(|k| !OBJECT_META.contains(&k.as_str()))
            .cloned()
            .collect();
        for k in unknown {
            meta.remove(&k);
            out.unknown.push(format!("metadata.{k}"));
        }
    }
}

/// Validates a custom resource against its schema, pruning unknown fields and filling defaults.
pub fn check(schema: &Value, obj: &mut Value) -> Checked {
    let mut out = Checked::default();
    check_metadata(obj, &mut out);
    if let Some(map) = obj.as_object_mut() {
        // apiVersion, kind and metadata are the server's, whatever the schema says of them.
        let mut rest: Map<String, Value> = map
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "apiVersion" | "kind" | "metadata"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        object(schema, &mut rest, "", &mut out);
        map.retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "metadata"));
        map.extend(rest);
    }
    out
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn show(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn invalid(out: &mut Checked, path: &str, v: &Value, what: String) {
    out.errors.push(FieldError {
        reason: "FieldValueInvalid",
        field: path.to_owned(),
        message: format!("Invalid value: {}: {path} in body {what}", show(v)),
    });
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_integer(v: &Value) -> bool {
    v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0)
}

fn wrong_type(out: &mut Checked, path: &str, v: &Value, want: &str) {
    out.errors.push(FieldError {
        reason: "FieldValueTypeInvalid",
        field: path.to_owned(),
        message: format!(
            "Invalid value: {}: {path} in body must be of type {want}: {:?}",
            show(v),
            type_name(v)
        ),
    });
}

fn walk(schema: &Value, v: &mut Value, path: &str, out: &mut Checked) {
    if v.is_null() {
        if schema["nullable"] != Value::Bool(true) {
            wrong_type(out, path, v, schema["type"].as_str().unwrap_or("object"));
        }
        return;
    }
    if schema["x-kubernetes-int-or-string"] == Value::Bool(true) {
        if !(is_integer(v) || v.is_string()) {
            wrong_type(out, path, v, "integer-or-string");
        }
        return;
    }
    let preserve = schema["x-kubernetes-preserve-unknown-fields"] == Value::Bool(true);
    match schema["type"].as_str() {
        Some("object") => match v.as_object_mut() {
            Some(map) => object(schema, map, path, out),
            None => return wrong_type(out, path, v, "object"),
        },
        Some("array") => match v.as_array_mut() {
            Some(items) => array(schema, items, path, out),
            None => return wrong_type(out, path, v, "array"),
        },
        Some("string") if !v.is_string() => return wrong_type(out, path, v, "string"),
        Some("string") => string(schema, v, path, out),
        Some("integer") if !is_integer(v) => return wrong_type(out, path, v, "integer"),
        Some("number") if !v.is_number() => return wrong_type(out, path, v, "number"),
        Some("boolean") if !v.is_boolean() => return wrong_type(out, path, v, "boolean"),
        Some(_) => {}
        None if preserve => {}
        None => {
            if let Some(map) = v.as_object_mut() {
                object(schema, map, path, out);
            }
        }
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(v)
    {
        let list: Vec<String> = allowed.iter().map(show).collect();
        out.errors.push(FieldError {
            reason: "FieldValueNotSupported",
            field: path.to_owned(),
            message: format!(
                "Unsupported value: {}: supported values: {}",
                show(v),
                list.join(", ")
            ),
        });
    }
    if let Some(n) = v.as_f64() {
        bounds(schema, v, n, path, out);
    }
}

fn bounds(schema: &Value, v: &Value, n: f64, path: &str, out: &mut Checked) {
    if let Some(min) = schema["minimum"].as_f64() {
        if schema["exclusiveMinimum"] == Value::Bool(true) && n <= min {
            invalid(out, path, v, format!("should be greater than {min}"));
        } else if n < min {
            invalid(
                out,
                path,
                v,
                format!("should be greater than or equal to {min}"),
            );
        }
    }
    if let Some(max) = schema["maximum"].as_f64() {
        if schema["exclusiveMaximum"] == Value::Bool(true) && n >= max {
            invalid(out, path, v, format!("should be less than {max}"));
        } else if n > max {
            invalid(
                out,
                path,
                v,
                format!("should be less than or equal to {max}"),
            );
        }
    }
}

fn object(schema: &Value, map: &mut Map<String, Value>, path: &str, out: &mut Checked) {
    let props = schema["properties"].as_object();
    let additional = &schema["additionalProperties"];
    let preserve = schema["x-kubernetes-preserve-unknown-fields"] == Value::Bool(true);
    let keys: Vec<String> = map.keys().cloned().collect();
    for key in keys {
        let child = props
            .and_then(|p| p.get(&key))
            .or_else(|| additional.is_object().then_some(additional));
        let here = join(path, &key);
        let Some(child) = child else {
            if !(preserve || *additional == Value::Bool(true)) {
                map.remove(&key);
                out.unknown.push(here);
            }
            continue;
        };
        if map[&key].is_null() && child["nullable"] != Value::Bool(true) {
            // The apiserver drops a null it may not store, then defaults the field.
            map.remove(&key);
            continue;
        }
        if let Some(value) = map.get_mut(&key) {
            walk(child, value, &here, out);
        }
    }
    if let Some(props) = props {
        for (key, child) in props {
            if !map.contains_key(key)
                && let Some(default) = child.get("default")
            {
                map.insert(key.clone(), default.clone());
            }
        }
    }
    for required in schema["required"].as_array().into_iter().flatten() {
        if let Some(r) = required.as_str()
            && !map.contains_key(r)
        {
            out.errors.push(FieldError {
                reason: "FieldValueRequired",
                field: join(path, r),
                message: "Required value".into(),
            });
        }
    }
}

fn array(schema: &Value, items: &mut [Value], path: &str, out: &mut Checked) {
    if let Some(min) = schema["minItems"].as_u64()
        && (items.len() as u64) < min
    {
        out.errors.push(FieldError {
            reason: "FieldValueInvalid",
            field: path.to_owned(),
            message: format!(
                "Invalid value: {}: {path} in body should have at least {min} items",
                items.len()
            ),
        });
    }
    if let Some(max) = schema["maxItems"].as_u64()
        && (items.len() as u64) > max
    {
        out.errors.push(FieldError {
            reason: "FieldValueTooMany",
            field: path.to_owned(),
            message: format!("Too many: {}: must have at most {max} items", items.len()),
        });
    }
    if schema["x-kubernetes-list-type"].as_str() == Some("set") {
        for (i, item) in items.iter().enumerate() {
            if items[..i].contains(item) {
                out.errors.push(FieldError {
                    reason: "FieldValueDuplicate",
                    field: format!("{path}[{i}]"),
                    message: format!("Duplicate value: {}", show(item)),
                });
            }
        }
    }
    let item_schema = &schema["items"];
    if item_schema.is_object() {
        for (i, item) in items.iter_mut().enumerate() {
            walk(item_schema, item, &format!("{path}[{i}]"), out);
        }
    }
}

fn valid_format(format: &str, s: &str) -> bool {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    match format {
        "ipv4" => s.parse::<Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<Ipv6Addr>().is_ok(),
        "cidr" => s.split_once('/').is_some_and(|(ip, len)| {
            let max = match ip.parse::<IpAddr>() {
                Ok(IpAddr::V4(_)) => 32,
                Ok(IpAddr::V6(_)) => 128,
                Err(_) => return false,
            };
            len.parse::<u8>().is_ok_and(|l| l <= max)
        }),
        "uuid" => {
            let parts: Vec<&str> = s.split('-').collect();
            parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
                && parts
                    .iter()
                    .all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
        }
        _ => true,
    }
}

fn string(schema: &Value, v: &Value, path: &str, out: &mut Checked) {
    let Some(s) = v.as_str() else { return };
    let len = s.chars().count() as u64;
    if let Some(min) = schema["minLength"].as_u64()
        && len < min
    {
        invalid(out, path, v, format!("should be at least {min} chars long"));
    }
    if let Some(max) = schema["maxLength"].as_u64()
        && len > max
    {
        invalid(out, path, v, format!("may not be longer than {max}"));
    }
    if let Some(pattern) = schema["pattern"].as_str() {
        match regex::Regex::new(pattern) {
            Ok(re) if !re.is_match(s) => {
                invalid(out, path, v, format!("should match '{pattern}'"));
            }
            _ => {}
        }
    }
    if let Some(format) = schema["format"].as_str()
        && !valid_format(format, s)
    {
        invalid(
            out,
            path,
            v,
            format!("must be of type {format}: {}", show(v)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pool_schema() -> Value {
        json!({"type": "object", "required": ["spec"], "properties": {"spec": {
            "type": "object", "required": ["cidr"], "properties": {
                "cidr": {"type": "string", "format": "cidr"},
                "blockSize": {"type": "integer", "minimum": 20, "maximum": 32, "nullable": true},
                "ipipMode": {"type": "string", "enum": ["Never", "Always"]},
                "natOutgoing": {"type": "boolean", "default": false},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "port": {"x-kubernetes-int-or-string": true}}}}})
    }

    #[test]
    fn a_good_pool_passes_and_gets_its_defaults() {
        let mut obj = json!({"apiVersion": "crd.margay.dev/v1", "kind": "IPPool",
            "metadata": {"name": "p"}, "spec": {"cidr": "100.64.0.0/16", "blockSize": 26,
            "labels": {"a": "b"}, "status": {"anything": [1]}, "port": "http"}});
        let out = check(&pool_schema(), &mut obj);
        assert_eq!(out, Checked::default());
        assert_eq!(obj["spec"]["natOutgoing"], json!(false));
    }

    #[test]
    fn bounds_enums_formats_and_required_fields_are_each_reported() {
        let mut obj =
            json!({"spec": {"cidr": "not-a-cidr", "blockSize": 40, "ipipMode": "Sometimes"}});
        let out = check(&pool_schema(), &mut obj);
        let fields: Vec<&str> = out.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["spec.blockSize", "spec.cidr", "spec.ipipMode"]);
        assert!(
            out.errors[0].message.contains("less than or equal to 32"),
            "{:?}",
            out.errors
        );
        let mut empty = json!({"spec": {}});
        assert_eq!(
            check(&pool_schema(), &mut empty).errors[0].field,
            "spec.cidr"
        );
    }

    #[test]
    fn unknown_fields_are_pruned_and_named() {
        let mut obj = json!({"metadata": {"name": "p", "labelz": {}},
            "spec": {"cidr": "10.0.0.0/8", "natOutgoin": true}});
        let out = check(&pool_schema(), &mut obj);
        assert_eq!(out.unknown, ["metadata.labelz", "spec.natOutgoin"]);
        assert!(obj["spec"].get("natOutgoin").is_none());
    }

    #[test]
    fn a_null_for_a_non_nullable_field_is_dropped_and_defaulted() {
        let mut obj =
            json!({"spec": {"cidr": "10.0.0.0/8", "natOutgoing": null, "blockSize": null}});
        let out = check(&pool_schema(), &mut obj);
        assert!(out.errors.is_empty(), "{out:?}");
        assert_eq!(obj["spec"]["natOutgoing"], json!(false));
        assert_eq!(obj["spec"]["blockSize"], Value::Null);
    }

    #[test]
    fn wrong_types_say_what_was_expected() {
        let mut obj = json!({"spec": {"cidr": 5, "port": true}});
        let out = check(&pool_schema(), &mut obj);
        assert_eq!(out.errors.len(), 2);
        assert!(out.errors[0].message.contains("must be of type string"));
    }

    #[test]
    fn dns_subdomains_are_lower_case_labels_joined_by_dots() {
        assert!(is_dns_subdomain("default-ipv4.x"));
        assert!(!is_dns_subdomain("Default"));
        assert!(!is_dns_subdomain("-a"));
        assert!(!is_dns_subdomain("a..b"));
    }
}
