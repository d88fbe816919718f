//! get and list (with selectors, `limit` + `continue`, and Table output).

use axum::Json;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::super::App;
use super::super::selector::Selector;
use super::super::status::{ApiError, ApiResult};
use super::super::table::{table, wants_table};
use super::{Query, Target};

/// `GET …/NAME` (and `…/NAME/status`).
pub(super) fn get(app: &App, t: &Target, accept: Option<&str>) -> ApiResult<Response> {
    let name = t.name.as_deref().unwrap_or_default();
    let obj = app
        .store
        .get(&t.key(name))
        .ok_or_else(|| ApiError::not_found(&t.res, name))?;
    if wants_table(accept) {
        let rv = obj["metadata"]["resourceVersion"].clone();
        return Ok(Json(table(&t.res, &[obj], json!({"resourceVersion": rv}))).into_response());
    }
    Ok(Json(obj).into_response())
}

/// The label and field selectors of a request.
pub(crate) fn selectors(q: &Query) -> ApiResult<(Selector, Selector)> {
    let labels = Selector::labels(q.get("labelSelector").map_or("", String::as_str))?;
    let fields = Selector::fields(q.get("fieldSelector").map_or("", String::as_str))?;
    Ok((labels, fields))
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

fn position(obj: &Value) -> String {
    let m = &obj["metadata"];
    format!(
        "{}/{}",
        m["namespace"].as_str().unwrap_or_default(),
        m["name"].as_str().unwrap_or_default()
    )
}

/// `GET …/PLURAL`: a `KindList`, or a Table.
///
/// `continue` tokens name the last object returned; a continued list is read from the current
/// state (not a snapshot), so an object changed between pages is seen as it is now.
pub(super) fn list(app: &App, t: &Target, q: &Query, accept: Option<&str>) -> ApiResult<Response> {
    let (labels, fields) = selectors(q)?;
    let (objects, rev) = app
        .store
        .list(&t.res.group, &t.res.plural, t.namespace.as_deref());
    let after = match q.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            Some(unhex(token).ok_or_else(|| ApiError::bad_request("continue token is not valid"))?)
        }
        None => None,
    };
    let mut matching: Vec<Value> = objects
        .into_iter()
        .filter(|o| after.as_ref().is_none_or(|a| position(o) > *a))
        .filter(|o| labels.matches(o) && fields.matches(o))
        .collect();
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let mut meta = json!({"resourceVersion": rev.to_string()});
    if let Some(limit) = limit
        && matching.len() > limit
    {
        let remaining = matching.len() - limit;
        matching.truncate(limit);
        if let Some(last) = matching.last() {
            meta["continue"] = json!(hex(&position(last)));
            meta["remainingItemCount"] = json!(remaining);
        }
    }
    if wants_table(accept) {
        return Ok(Json(table(&t.res, &matching, meta)).into_response());
    }
    Ok(Json(json!({
        "kind": format!("{}List", t.res.kind),
        "apiVersion": t.res.api_version(),
        "metadata": meta,
        "items": matching,
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip() {
        assert_eq!(
            unhex(&hex("kube-system/coredns")).as_deref(),
            Some("kube-system/coredns")
        );
        assert_eq!(unhex("zz"), None);
    }
}
