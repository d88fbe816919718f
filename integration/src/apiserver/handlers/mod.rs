//! Resource requests: `/api/v1/…` and `/apis/G/V/…`, parsed by hand because a namespace, a
//! name and a subresource can all follow a group version.

pub(crate) mod read;
mod write;

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::App;
use super::discovery;
use super::registry::Resource;
use super::status::{ApiError, ApiResult};
use super::store::{ObjKey, Write};

/// What a request addresses.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) res: Resource,
    pub(crate) namespace: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) sub: Option<String>,
}

impl Target {
    fn key(&self, name: &str) -> ObjKey {
        ObjKey {
            group: self.res.group.clone(),
            plural: self.res.plural.clone(),
            namespace: self.namespace.clone().unwrap_or_default(),
            name: name.to_owned(),
        }
    }
}

/// A request's query parameters.
pub(crate) type Query = HashMap<String, String>;

/// The namespaces every cluster has.
pub(crate) fn seed(app: &App) {
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let key = ObjKey {
            group: String::new(),
            plural: "namespaces".into(),
            namespace: String::new(),
            name: ns.into(),
        };
        let obj = json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "uid": app.uid(), "creationTimestamp": now(),
                "labels": {"kubernetes.io/metadata.name": ns}},
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        });
        let _ = app.store.write(&key, |_| Ok((Write::Put(obj), ())));
    }
}

/// Now, as `creationTimestamp` wants it.
pub(crate) fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

enum Parsed {
    Discovery(String, String),
    Resource(Box<Target>),
}

fn parse(resources: &[Resource], path: &str) -> ApiResult<Parsed> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(ApiError::no_such_path()),
    };
    if rest.is_empty() {
        return Ok(Parsed::Discovery(group.into(), version.into()));
    }
    let scoped = rest[0] == "namespaces"
        && rest.len() >= 3
        && !(rest.len() == 3 && matches!(rest[2], "status" | "finalize"));
    let (namespace, rest) = if scoped {
        (Some(rest[1].to_owned()), &rest[2..])
    } else {
        (None, rest)
    };
    let (plural, name, sub) = match rest {
        [p] => (*p, None, None),
        [p, n] => (*p, Some(n.to_string()), None),
        [p, n, s] => (*p, Some(n.to_string()), Some(s.to_string())),
        _ => return Err(ApiError::no_such_path()),
    };
    let res = resources
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
        .ok_or_else(ApiError::no_such_path)?;
    if namespace.is_some() && !res.namespaced {
        return Err(ApiError::no_such_path());
    }
    if sub
        .as_deref()
        .is_some_and(|s| s != "status" || !res.status_subresource)
    {
        return Err(ApiError::no_such_path());
    }
    Ok(Parsed::Resource(Box::new(Target {
        res: res.clone(),
        namespace,
        name,
        sub,
    })))
}

/// The handler of every path not routed elsewhere.
pub(crate) async fn resource(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match handle(&app, &method, &uri, &headers, &body).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%method, %uri, code = e.code, reason = e.reason, "request failed");
            e.into_response()
        }
    }
}

async fn handle(
    app: &Arc<App>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> ApiResult<Response> {
    let resources = app.resources();
    let target = match parse(&resources, uri.path())? {
        Parsed::Discovery(g, v) if *method == Method::GET => {
            return discovery::resource_list(&resources, &g, &v)
                .map(|l| axum::Json(l).into_response())
                .ok_or_else(ApiError::no_such_path);
        }
        Parsed::Discovery(..) => {
            return Err(ApiError::method_not_allowed("discovery is read-only"));
        }
        Parsed::Resource(t) => *t,
    };
    let query: Query = axum::extract::Query::<Query>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| ApiError::bad_request(format!("bad query: {e}")))?;
    let accept = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    let watching = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    match (method.as_str(), target.name.is_some()) {
        ("GET", false) if watching => super::watch::serve(app, &target, &query, accept),
        ("GET", false) => read::list(app, &target, &query, accept),
        ("GET", true) => read::get(app, &target, accept),
        ("POST", false) => write::create(app, &target, &query, body),
        ("PUT", true) => write::update(app, &target, &query, body),
        ("PATCH", true) => write::patch(app, &target, &query, &content_type, body),
        ("DELETE", true) => write::delete(app, &target, &query, body),
        ("DELETE", false) => write::delete_collection(app, &target, &query),
        _ => Err(ApiError::method_not_allowed(format!(
            "{method} is not supported on {}",
            uri.path()
        ))),
    }
}

/// Parses a request body as JSON (or YAML for `apply-patch+yaml` and `application/yaml`).
pub(crate) fn body_value(body: &[u8], content_type: &str) -> ApiResult<Value> {
    if content_type.contains("yaml") {
        let text = std::str::from_utf8(body)
            .map_err(|_| ApiError::bad_request("the body is not UTF-8"))?;
        if let Ok(v) = serde_json::from_str(text) {
            return Ok(v);
        }
        return serde_saphyr::from_str(text)
            .map_err(|e| ApiError::bad_request(format!("the body is not valid YAML: {e}")));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::registry::builtins;

    fn target(path: &str) -> Target {
        match parse(&builtins(), path) {
            Ok(Parsed::Resource(t)) => *t,
            Ok(Parsed::Discovery(..)) => panic!("{path}: discovery"),
            Err(e) => panic!("{path}: {e}"),
        }
    }

    #[test]
    fn paths_name_namespace_object_and_subresource() {
        let t = target("/api/v1/namespaces/kube-system/pods/p/status");
        assert_eq!(
            (
                t.res.plural.as_str(),
                t.namespace.as_deref(),
                t.name.as_deref(),
                t.sub.as_deref()
            ),
            ("pods", Some("kube-system"), Some("p"), Some("status"))
        );
        let t = target("/api/v1/namespaces/default");
        assert_eq!(
            (t.res.plural.as_str(), t.name.as_deref()),
            ("namespaces", Some("default"))
        );
        let t = target("/api/v1/namespaces/default/status");
        assert_eq!(t.sub.as_deref(), Some("status"));
        let t = target("/apis/apps/v1/daemonsets");
        assert_eq!((t.namespace, t.name), (None, None));
    }

    #[test]
    fn unknown_resources_and_bad_scopes_are_not_found() {
        for p in [
            "/apis/x/v1/things",
            "/api/v1/namespaces/a/nodes/n",
            "/api/v1/configmaps/c/status",
        ] {
            assert!(parse(&builtins(), p).is_err(), "{p}");
        }
    }
}
