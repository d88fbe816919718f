//! create, update (and the status subresource), patch, delete and deletecollection.
//!
//! Every change is decided under the store's lock on the current object (see
//! [`crate::apiserver::store::Store::write`]), so `resourceVersion` preconditions are exact.

use axum::Json;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::super::App;
use super::super::builtin;
use super::super::patch;
use super::super::registry;
use super::super::schema::{self, Checked};
use super::super::status::{ApiError, ApiResult, FieldError};
use super::super::store::Write;
use super::{Query, Target, body_value, now};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Validation {
    Strict,
    Warn,
    Ignore,
}

#[derive(Debug, Clone, Copy)]
struct Opts {
    validation: Validation,
    dry_run: bool,
}

fn opts(q: &Query) -> ApiResult<Opts> {
    let validation = match q.get("fieldValidation").map(String::as_str) {
        None | Some("" | "Warn") => Validation::Warn,
        Some("Strict") => Validation::Strict,
        Some("Ignore") => Validation::Ignore,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "fieldValidation must be one of \"Ignore\", \"Warn\", \"Strict\", not {other:?}"
            )));
        }
    };
    Ok(Opts {
        validation,
        dry_run: q.get("dryRun").is_some_and(|d| d == "All"),
    })
}

fn respond(code: StatusCode, obj: Value, warnings: &[String]) -> Response {
    let mut resp = (code, Json(obj)).into_response();
    for w in warnings {
        let text = format!("299 - {}", serde_json::to_string(w).unwrap_or_default());
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut().append("Warning", v);
        }
    }
    resp
}

const CRD_GROUP: &str = "apiextensions.k8s.io";

fn is_crd(t: &Target) -> bool {
    t.res.group == CRD_GROUP && t.res.plural == "customresourcedefinitions"
}

/// Checks and normalises an object about to be stored: its kind and apiVersion, namespace,
/// schema (custom resources) and, for a CRD, that it can be served. Returns the warnings.
fn admit(t: &Target, obj: &mut Value, name: &str, o: Opts) -> ApiResult<Vec<String>> {
    let res = &t.res;
    if !obj.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    for (field, want) in [
        ("kind", res.kind.clone()),
        ("apiVersion", res.api_version()),
    ] {
        match obj[field].as_str() {
            Some(sent) if sent != want => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({}) does not match the expected API version ({}) or the kind ({}) does not match {}",
                    obj["apiVersion"].as_str().unwrap_or_default(),
                    res.api_version(),
                    obj["kind"].as_str().unwrap_or_default(),
                    res.kind
                )));
            }
            _ => obj[field] = Value::String(want),
        }
    }
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    obj["metadata"]["name"] = Value::String(name.to_owned());
    match (&t.namespace, obj["metadata"]["namespace"].as_str()) {
        (Some(path), Some(body)) if path != body => {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        (Some(path), _) => obj["metadata"]["namespace"] = Value::String(path.clone()),
        (None, _) => {
            if let Some(m) = obj["metadata"].as_object_mut() {
                m.remove("namespace");
            }
        }
    }
    let mut checked = Checked::default();
    match &res.schema {
        Some(s) => checked = schema::check(s, obj),
        None => builtin::check(&res.kind, obj, &mut checked).map_err(|why| {
            ApiError::bad_request(format!(
                "{} in version \"{}\" cannot be handled as a {}: {why}",
                res.kind, res.version, res.kind
            ))
        })?,
    }
    if !checked.errors.is_empty() {
        return Err(ApiError::invalid(res, name, &checked.errors));
    }
    let warnings: Vec<String> = checked
        .unknown
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    if o.validation == Validation::Strict && !warnings.is_empty() {
        return Err(ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
            res.kind,
            res.version,
            res.kind,
            warnings.join(", ")
        )));
    }
    if is_crd(t)
        && let Err(why) = registry::from_crd(obj)
    {
        let (field, message) = why.split_once(": ").unwrap_or(("spec", why.as_str()));
        let cause = FieldError {
            reason: "FieldValueInvalid",
            field: field.to_owned(),
            message: message.to_owned(),
        };
        return Err(ApiError::invalid(res, name, &[cause]));
    }
    Ok(if o.validation == Validation::Warn {
        warnings
    } else {
        Vec::new()
    })
}

/// Server-set fields of a new object.
fn prepare_new(app: &App, t: &Target, obj: &mut Value) {
    let meta = &mut obj["metadata"];
    meta["uid"] = json!(app.uid());
    meta["creationTimestamp"] = json!(now());
    meta["generation"] = json!(1);
    if let Some(m) = meta.as_object_mut() {
        m.remove("resourceVersion");
        m.remove("deletionTimestamp");
    }
    if t.res.custom
        && t.res.status_subresource
        && let Some(m) = obj.as_object_mut()
    {
        m.remove("status");
    }
    if is_crd(t) {
        let storage: Vec<Value> = obj["spec"]["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| v["storage"] == Value::Bool(true))
            .map(|v| v["name"].clone())
            .collect();
        let at = now();
        obj["status"] = json!({
            "acceptedNames": obj["spec"]["names"],
            "storedVersions": storage,
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                 "message": "no conflicts found", "lastTransitionTime": at},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                 "message": "the initial names have been accepted", "lastTransitionTime": at},
            ],
        });
    }
}

fn name_of(app: &App, obj: &Value) -> ApiResult<String> {
    if let Some(n) = obj["metadata"]["name"].as_str().filter(|n| !n.is_empty()) {
        return Ok(n.to_owned());
    }
    match obj["metadata"]["generateName"].as_str() {
        Some(prefix) => Ok(format!("{prefix}{}", &app.uid()[..5])),
        None => Err(ApiError::new(
            422,
            "Invalid",
            "metadata.name: Required value: name or generateName is required",
        )),
    }
}

fn check_name(t: &Target, name: &str) -> ApiResult<()> {
    if schema::is_dns_subdomain(name) {
        return Ok(());
    }
    let cause = FieldError {
        reason: "FieldValueInvalid",
        field: "metadata.name".into(),
        message: format!(
            "Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
        ),
    };
    Err(ApiError::invalid(&t.res, name, &[cause]))
}

/// `POST …/PLURAL`.
pub(super) fn create(app: &App, t: &Target, q: &Query, body: &[u8]) -> ApiResult<Response> {
    let o = opts(q)?;
    if t.res.namespaced && t.namespace.is_none() {
        return Err(ApiError::method_not_allowed(format!(
            "{} are namespaced: POST to …/namespaces/NS/{}",
            t.res.plural, t.res.plural
        )));
    }
    let mut obj = body_value(body, "application/json")?;
    let name = name_of(app, &obj)?;
    check_name(t, &name)?;
    let warnings = admit(t, &mut obj, &name, o)?;
    prepare_new(app, t, &mut obj);
    let (stored, ()) = app.store.write(&t.key(&name), |cur| {
        if cur.is_some() {
            return Err(ApiError::already_exists(&t.res, &name));
        }
        Ok((
            if o.dry_run {
                Write::Keep
            } else {
                Write::Put(obj.clone())
            },
            (),
        ))
    })?;
    if is_crd(t) {
        app.refresh();
    }
    Ok(respond(
        StatusCode::CREATED,
        stored.unwrap_or(obj),
        &warnings,
    ))
}

fn without_rv(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    v
}

fn body_part(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    v
}

/// The object to store when `new` replaces `cur` through the main resource or `status`.
fn successor(t: &Target, cur: &Value, new: Value) -> Value {
    if t.sub.as_deref() == Some("status") {
        let mut out = cur.clone();
        match new.get("status") {
            Some(s) => out["status"] = s.clone(),
            None => {
                if let Some(m) = out.as_object_mut() {
                    m.remove("status");
                }
            }
        }
        return out;
    }
    let mut out = new;
    for field in ["uid", "creationTimestamp"] {
        out["metadata"][field] = cur["metadata"][field].clone();
    }
    if t.res.status_subresource {
        match cur.get("status") {
            Some(s) => out["status"] = s.clone(),
            None => {
                if let Some(m) = out.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    let generation = cur["metadata"]["generation"].as_i64().unwrap_or(1);
    let changed = body_part(cur) != body_part(&out);
    out["metadata"]["generation"] = json!(generation + i64::from(changed));
    out
}

fn decide(t: &Target, cur: &Value, new: Value, o: Opts) -> (Write, Value) {
    let next = successor(t, cur, new);
    if o.dry_run || without_rv(&next) == without_rv(cur) {
        (Write::Keep, next)
    } else {
        (Write::Put(next.clone()), next)
    }
}

fn stale(cur: &Value, sent: &Value) -> bool {
    sent.as_str()
        .is_some_and(|rv| Some(rv) != cur["metadata"]["resourceVersion"].as_str())
}

/// `PUT …/NAME` and `PUT …/NAME/status`.
pub(super) fn update(app: &App, t: &Target, q: &Query, body: &[u8]) -> ApiResult<Response> {
    let o = opts(q)?;
    let name = t.name.clone().unwrap_or_default();
    let mut obj = body_value(body, "application/json")?;
    if let Some(sent) = obj["metadata"]["name"].as_str()
        && sent != name
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({sent}) does not match the name on the URL ({name})"
        )));
    }
    let warnings = admit(t, &mut obj, &name, o)?;
    let (stored, next) = app.store.write(&t.key(&name), |cur| {
        let cur = cur.ok_or_else(|| ApiError::not_found(&t.res, &name))?;
        if stale(cur, &obj["metadata"]["resourceVersion"]) {
            return Err(ApiError::conflict(&t.res, &name));
        }
        Ok(decide(t, cur, obj.clone(), o))
    })?;
    if is_crd(t) {
        app.refresh();
    }
    let out = if o.dry_run {
        next
    } else {
        stored.unwrap_or(next)
    };
    Ok(respond(StatusCode::OK, out, &warnings))
}

/// `PATCH …/NAME` and `PATCH …/NAME/status`.
pub(super) fn patch(
    app: &App,
    t: &Target,
    q: &Query,
    content_type: &str,
    body: &[u8],
) -> ApiResult<Response> {
    let o = opts(q)?;
    let name = t.name.clone().unwrap_or_default();
    let p = body_value(body, content_type)?;
    let kind = match content_type {
        "application/merge-patch+json" | "application/json-patch+json" => content_type,
        "application/apply-patch+yaml" | "application/apply-patch+cbor" => "apply",
        "application/strategic-merge-patch+json" if !t.res.custom => content_type,
        other => return Err(ApiError::unsupported_media_type(other)),
    };
    let mut warnings = Vec::new();
    let (stored, (created, next)) = app.store.write(&t.key(&name), |cur| {
        let Some(cur) = cur else {
            if kind != "apply" {
                return Err(ApiError::not_found(&t.res, &name));
            }
            check_name(t, &name)?;
            let mut obj = p.clone();
            warnings = admit(t, &mut obj, &name, o)?;
            prepare_new(app, t, &mut obj);
            let w = if o.dry_run {
                Write::Keep
            } else {
                Write::Put(obj.clone())
            };
            return Ok((w, (true, obj)));
        };
        let mut patched = cur.clone();
        match kind {
            "application/json-patch+json" => {
                patch::json_patch(&mut patched, &p)
                    .map_err(|e| ApiError::new(422, "Invalid", e.to_string()))?;
                if stale(cur, &patched["metadata"]["resourceVersion"]) {
                    return Err(ApiError::conflict(&t.res, &name));
                }
            }
            _ => {
                if stale(cur, &p["metadata"]["resourceVersion"]) {
                    return Err(ApiError::conflict(&t.res, &name));
                }
                if kind == "application/strategic-merge-patch+json" {
                    patch::strategic(&mut patched, &p);
                } else {
                    patch::merge(&mut patched, &p);
                }
            }
        }
        warnings = admit(t, &mut patched, &name, o)?;
        let (w, next) = decide(t, cur, patched, o);
        Ok((w, (false, next)))
    })?;
    if is_crd(t) {
        app.refresh();
    }
    let out = if o.dry_run {
        next
    } else {
        stored.unwrap_or(next)
    };
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(respond(code, out, &warnings))
}

fn crd_resource(crd: &Value) -> Option<(String, String)> {
    Some((
        crd["spec"]["group"].as_str()?.to_owned(),
        crd["spec"]["names"]["plural"].as_str()?.to_owned(),
    ))
}

/// `DELETE …/NAME`, with an optional `DeleteOptions` body (preconditions, propagation policy).
pub(super) fn delete(app: &App, t: &Target, q: &Query, body: &[u8]) -> ApiResult<Response> {
    let o = opts(q)?;
    let name = t.name.clone().unwrap_or_default();
    let options = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        body_value(body, "application/json")?
    };
    let dry_run = o.dry_run
        || options["dryRun"]
            .as_array()
            .is_some_and(|d| d.contains(&json!("All")));
    let pre = &options["preconditions"];
    let (gone, ()) = app.store.write(&t.key(&name), |cur| {
        let cur = cur.ok_or_else(|| ApiError::not_found(&t.res, &name))?;
        if stale(cur, &pre["resourceVersion"])
            || pre["uid"]
                .as_str()
                .is_some_and(|u| Some(u) != cur["metadata"]["uid"].as_str())
        {
            return Err(ApiError::conflict(&t.res, &name));
        }
        Ok((if dry_run { Write::Keep } else { Write::Delete }, ()))
    })?;
    let gone = gone.ok_or_else(|| ApiError::not_found(&t.res, &name))?;
    if is_crd(t) && !dry_run {
        if let Some((group, plural)) = crd_resource(&gone) {
            app.store.delete_all(&group, &plural);
        }
        app.refresh();
    }
    Ok(respond(StatusCode::OK, gone, &[]))
}

/// `DELETE …/PLURAL`: deletes what the selectors match.
pub(super) fn delete_collection(app: &App, t: &Target, q: &Query) -> ApiResult<Response> {
    let (labels, fields) = super::read::selectors(q)?;
    let (objects, _) = app
        .store
        .list(&t.res.group, &t.res.plural, t.namespace.as_deref());
    let mut deleted = Vec::new();
    for obj in objects
        .iter()
        .filter(|o| labels.matches(o) && fields.matches(o))
    {
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        let mut key = t.key(name);
        key.namespace = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if let (Some(gone), ()) = app.store.write(&key, |_| Ok((Write::Delete, ())))? {
            if is_crd(t)
                && let Some((group, plural)) = crd_resource(&gone)
            {
                app.store.delete_all(&group, &plural);
            }
            deleted.push(gone);
        }
    }
    if is_crd(t) {
        app.refresh();
    }
    Ok(respond(
        StatusCode::OK,
        json!({"kind": format!("{}List", t.res.kind), "apiVersion": t.res.api_version(),
            "metadata": {"resourceVersion": app.store.revision().to_string()}, "items": deleted}),
        &[],
    ))
}
