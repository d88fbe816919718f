//! The patch types kubectl and client libraries send.
//!
//! - `application/merge-patch+json`: RFC 7386, exactly.
//! - `application/strategic-merge-patch+json` (built-in kinds only): a merge patch in which lists
//!   of objects that all carry a merge key (`name`, `containerPort`, `port`, `mountPath`, `type`,
//!   `ip`) are merged element by element, `$patch: delete|replace` and
//!   `$deleteFromPrimitiveList/…` are honoured, and `$setElementOrder/…` / `$retainKeys` are
//!   dropped. Other lists are replaced, which is what the Go types say for most of them.
//! - `application/json-patch+json`: RFC 6902 (`add`, `remove`, `replace`, `move`, `copy`, `test`).
//! - `application/apply-patch+yaml` (server-side apply) is a merge of the applied configuration;
//!   field ownership is not tracked, so it never reports a conflict.

use serde_json::{Map, Value};

/// RFC 7386 JSON merge patch.
pub fn merge(target: &mut Value, patch: &Value) {
    let Some(patch_map) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Some(map) = target.as_object_mut() else {
        return;
    };
    for (k, v) in patch_map {
        if v.is_null() {
            map.remove(k);
        } else {
            merge(map.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

const MERGE_KEYS: &[&str] = &["name", "containerPort", "port", "mountPath", "type", "ip"];

fn merge_key(a: &[Value], b: &[Value]) -> Option<&'static str> {
    if a.is_empty() && b.is_empty() {
        return None;
    }
    MERGE_KEYS.iter().copied().find(|key| {
        a.iter()
            .chain(b)
            .all(|v| v.get(*key).is_some_and(|k| !k.is_null()) || v.get("$patch").is_some())
            && a.iter().chain(b).all(Value::is_object)
    })
}

/// A strategic merge patch, as far as kubectl's apply of built-in kinds needs it.
pub fn strategic(target: &mut Value, patch: &Value) {
    let Some(patch_map) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if patch_map.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replaced = patch.clone();
        if let Some(m) = replaced.as_object_mut() {
            m.remove("$patch");
        }
        *target = replaced;
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Some(map) = target.as_object_mut() else {
        return;
    };
    for (k, v) in patch_map {
        if k.starts_with("$setElementOrder/") || k == "$retainKeys" || k == "$patch" {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(list), Some(gone)) = (
                map.get_mut(field).and_then(Value::as_array_mut),
                v.as_array(),
            ) {
                list.retain(|x| !gone.contains(x));
            }
            continue;
        }
        if v.is_null() || v.get("$patch").and_then(Value::as_str) == Some("delete") {
            map.remove(k);
            continue;
        }
        let slot = map.entry(k.clone()).or_insert(Value::Null);
        if v.is_object() && slot.is_object() {
            strategic(slot, v);
            continue;
        }
        match (slot.as_array_mut(), v.as_array()) {
            (Some(current), Some(items)) => match merge_key(current, items) {
                Some(key) => merge_list(current, items, key),
                None => *slot = v.clone(),
            },
            _ => *slot = v.clone(),
        }
    }
}

fn merge_list(current: &mut Vec<Value>, items: &[Value], key: &str) {
    for item in items {
        let id = &item[key];
        let at = current.iter().position(|c| &c[key] == id);
        match (at, item.get("$patch").and_then(Value::as_str)) {
            (Some(i), Some("delete")) => {
                current.remove(i);
            }
            (None, Some("delete")) => {}
            (Some(i), _) => strategic(&mut current[i], item),
            (None, _) => {
                let mut new = Value::Null;
                strategic(&mut new, item);
                current.push(new);
            }
        }
    }
}

/// Why a JSON patch could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the JSON patch could not be applied: {0}")]
pub struct JsonPatchError(pub String);

fn pointer_parts(path: &str) -> Result<Vec<String>, JsonPatchError> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| JsonPatchError(format!("path {path:?} does not start with /")))?;
    Ok(rest
        .split('/')
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn parent<'a>(doc: &'a mut Value, parts: &[String]) -> Result<&'a mut Value, JsonPatchError> {
    let mut at = doc;
    for p in parts {
        at = match at {
            Value::Object(m) => m.get_mut(p),
            Value::Array(a) => p.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| JsonPatchError(format!("no such path element {p:?}")))?;
    }
    Ok(at)
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, JsonPatchError> {
    let parts = pointer_parts(path)?;
    let (last, parents) = parts
        .split_last()
        .ok_or_else(|| JsonPatchError("cannot remove the root".into()))?;
    match parent(doc, parents)? {
        Value::Object(m) => m.remove(last),
        Value::Array(a) => last
            .parse::<usize>()
            .ok()
            .filter(|i| *i < a.len())
            .map(|i| a.remove(i)),
        _ => None,
    }
    .ok_or_else(|| JsonPatchError(format!("nothing at {path}")))
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), JsonPatchError> {
    let parts = pointer_parts(path)?;
    let Some((last, parents)) = parts.split_last() else {
        *doc = value;
        return Ok(());
    };
    match parent(doc, parents)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
        }
        Value::Array(a) if last == "-" => a.push(value),
        Value::Array(a) => {
            let i = last
                .parse::<usize>()
                .ok()
                .filter(|i| *i <= a.len())
                .ok_or_else(|| JsonPatchError(format!("bad array index {last:?}")))?;
            a.insert(i, value);
        }
        _ => return Err(JsonPatchError(format!("cannot add under {path}"))),
    }
    Ok(())
}

/// RFC 6902 JSON patch.
pub fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), JsonPatchError> {
    let ops = ops
        .as_array()
        .ok_or_else(|| JsonPatchError("a JSON patch is a list of operations".into()))?;
    for op in ops {
        let path = op["path"].as_str().unwrap_or_default();
        let from = op["from"].as_str().unwrap_or_default();
        match op["op"].as_str().unwrap_or_default() {
            "add" => add(doc, path, op["value"].clone())?,
            "remove" => {
                remove(doc, path)?;
            }
            "replace" => {
                remove(doc, path)?;
                add(doc, path, op["value"].clone())?;
            }
            "move" => {
                let v = remove(doc, from)?;
                add(doc, path, v)?;
            }
            "copy" => {
                let v = doc
                    .pointer(from)
                    .cloned()
                    .ok_or_else(|| JsonPatchError(format!("nothing at {from}")))?;
                add(doc, path, v)?;
            }
            "test" => {
                if doc.pointer(path) != Some(&op["value"]) {
                    return Err(JsonPatchError(format!("test of {path} failed")));
                }
            }
            other => return Err(JsonPatchError(format!("unknown operation {other:?}"))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_merge_patch_sets_replaces_and_removes_with_null() {
        let mut doc = json!({"a": 1, "b": {"c": 2, "d": 3}, "l": [1, 2]});
        merge(&mut doc, &json!({"a": null, "b": {"c": 5}, "l": [3]}));
        assert_eq!(doc, json!({"b": {"c": 5, "d": 3}, "l": [3]}));
    }

    #[test]
    fn a_strategic_patch_merges_containers_by_name() {
        let mut ds = json!({"spec": {"containers": [
            {"name": "a", "image": "a:1", "args": ["x"]}, {"name": "b", "image": "b:1"}]}});
        strategic(
            &mut ds,
            &json!({"spec": {"$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
                "containers": [{"name": "b", "image": "b:2"}, {"name": "a", "$patch": "delete"}]}}),
        );
        assert_eq!(
            ds,
            json!({"spec": {"containers": [{"name": "b", "image": "b:2"}]}})
        );
    }

    #[test]
    fn a_strategic_patch_replaces_lists_without_a_merge_key() {
        let mut np = json!({"spec": {"ingress": [{"from": [{"podSelector": {}}]}]}});
        strategic(
            &mut np,
            &json!({"spec": {"ingress": [{"ports": [{"protocol": "TCP"}]}]}}),
        );
        assert_eq!(
            np,
            json!({"spec": {"ingress": [{"ports": [{"protocol": "TCP"}]}]}})
        );
    }

    #[test]
    fn a_json_patch_runs_its_operations_in_order() {
        let mut doc = json!({"a": [1, 2], "b": "x"});
        json_patch(
            &mut doc,
            &json!([{"op": "add", "path": "/a/-", "value": 3}, {"op": "remove", "path": "/b"},
                {"op": "test", "path": "/a/2", "value": 3}, {"op": "copy", "from": "/a", "path": "/c"}]),
        )
        .unwrap();
        assert_eq!(doc, json!({"a": [1, 2, 3], "c": [1, 2, 3]}));
        assert!(
            json_patch(
                &mut doc,
                &json!([{"op": "test", "path": "/a/0", "value": 9}])
            )
            .is_err()
        );
    }
}
