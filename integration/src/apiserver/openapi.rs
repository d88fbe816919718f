//! OpenAPI v3: the index (`/openapi/v3`) and one document per group version.
//!
//! kubectl's default `--validate=strict` looks in the document of the object's group version
//! for a PATCH operation tagged with `x-kubernetes-group-version-kind` that takes the
//! `fieldValidation` query parameter; finding it, it leaves validation to the server. The
//! documents carry that for every resource, and the CRD's schema as the kind's component schema
//! (built-in kinds get an open object schema).

use std::hash::{Hash, Hasher};

use serde_json::{Map, Value, json};

use super::discovery::group_versions;
use super::registry::Resource;

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn schema_name(r: &Resource) -> String {
    let reversed: Vec<&str> = r.group.split('.').rev().collect();
    let group = if r.group.is_empty() {
        "io.k8s.api.core".to_owned()
    } else {
        reversed.join(".")
    };
    format!("{group}.{}.{}", r.version, r.kind)
}

fn query(name: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}})
}

fn operation(r: &Resource, id: &str, params: &[&str]) -> Value {
    let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
    let schema = json!({"$ref": format!("#/components/schemas/{}", schema_name(r))});
    json!({
        "operationId": format!("{id}{}", r.kind),
        "parameters": params.iter().map(|p| query(p)).collect::<Vec<_>>(),
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": schema}}}},
        "x-kubernetes-action": id,
        "x-kubernetes-group-version-kind": gvk,
    })
}

const WRITE: &[&str] = &["dryRun", "fieldManager", "fieldValidation"];

fn paths_of(r: &Resource, paths: &mut Map<String, Value>) {
    let prefix = r.prefix();
    let mut bases = vec![format!("{prefix}/{}", r.plural)];
    if r.namespaced {
        bases.push(format!("{prefix}/namespaces/{{namespace}}/{}", r.plural));
    }
    for base in bases {
        paths.insert(
            base.clone(),
            json!({
                "get": operation(r, "list", &["labelSelector", "fieldSelector", "limit", "continue", "resourceVersion", "watch"]),
                "post": operation(r, "create", WRITE),
            }),
        );
        let mut patch_params = WRITE.to_vec();
        patch_params.push("force");
        paths.insert(
            format!("{base}/{{name}}"),
            json!({
                "get": operation(r, "get", &[]),
                "put": operation(r, "update", WRITE),
                "patch": operation(r, "patch", &patch_params),
                "delete": operation(r, "delete", &["dryRun"]),
            }),
        );
    }
}

/// The document of one group version, or `None` if nothing is served there.
pub fn document(resources: &[Resource], group: &str, version: &str) -> Option<Value> {
    let served: Vec<&Resource> = resources
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if served.is_empty() {
        return None;
    }
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for r in served {
        paths_of(r, &mut paths);
        let mut schema = r.schema.clone().unwrap_or_else(
            || json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
        );
        schema["x-kubernetes-group-version-kind"] =
            json!([{"group": r.group, "version": r.version, "kind": r.kind}]);
        schemas.insert(schema_name(r), schema);
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v1.{}.0", super::discovery::MINOR)},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

fn hash_of(doc: &Value) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    doc.to_string().hash(&mut h);
    format!("{:016X}", h.finish())
}

/// `GET /openapi/v3`: every group version with a URL whose hash changes with its document, so
/// that kubectl's cache notices a new CRD.
pub fn index(resources: &[Resource]) -> Value {
    let mut paths = Map::new();
    for (group, version) in group_versions(resources) {
        if let Some(doc) = document(resources, &group, &version) {
            let path = gv_path(&group, &version);
            paths.insert(
                path.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={}", hash_of(&doc))}),
            );
        }
    }
    json!({"paths": paths})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::registry::builtins;

    #[test]
    fn every_patch_operation_names_its_kind_and_takes_field_validation() {
        let doc = document(&builtins(), "apps", "v1").unwrap();
        let patch =
            &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/daemonsets/{name}"]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"],
            "DaemonSet"
        );
        let params: Vec<&str> = patch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert!(params.contains(&"fieldValidation"));
    }

    #[test]
    fn the_index_points_at_each_group_version_with_a_hash() {
        let idx = index(&builtins());
        let url = idx["paths"]["api/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap();
        assert!(url.starts_with("/openapi/v3/api/v1?hash="), "{url}");
        assert!(idx["paths"]["apis/apiextensions.k8s.io/v1"].is_object());
    }
}
