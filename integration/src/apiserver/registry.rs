//! What the server serves: the built-in kinds (stored, never run) and the custom resources that
//! registered CustomResourceDefinitions add.

use serde_json::Value;

/// A printer column of a CRD version (`additionalPrinterColumns`).
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// Column header.
    pub name: String,
    /// `string`, `integer`, `number`, `boolean` or `date`.
    pub type_: String,
    /// Simple JSONPath into the object (`.spec.cidr`).
    pub json_path: String,
    /// 0 is shown always, higher only with `-o wide`.
    pub priority: i64,
    /// Shown by `kubectl explain`-like tools.
    pub description: String,
}

/// One served resource of one group version.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// API group, empty for the core group.
    pub group: String,
    /// Version (`v1`).
    pub version: String,
    /// Lower-case plural, the path segment (`ippools`).
    pub plural: String,
    /// Lower-case singular (`ippool`).
    pub singular: String,
    /// Kind (`IPPool`).
    pub kind: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Short names for kubectl (`ipp`).
    pub short_names: Vec<String>,
    /// Categories (`all`, `margay`).
    pub categories: Vec<String>,
    /// Whether `status` is a subresource (then the main resource ignores status changes).
    pub status_subresource: bool,
    /// The CRD's `openAPIV3Schema`; built-in kinds have none and are stored as sent.
    pub schema: Option<Value>,
    /// The CRD's printer columns.
    pub columns: Vec<Column>,
    /// Whether this is a custom resource (merge patch only, no strategic merge).
    pub custom: bool,
}

impl Resource {
    /// `v1` or `GROUP/VERSION`: the `apiVersion` of objects and the discovery group version.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural` or `plural.group`, as messages name resources.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The path prefix of this group version (`/api/v1`, `/apis/G/V`).
    pub fn prefix(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn builtin(
    group: &str,
    plural: &str,
    singular: &str,
    kind: &str,
    namespaced: bool,
    short: &[&str],
    status: bool,
) -> Resource {
    let (group, version) = match group.split_once('/') {
        Some((g, v)) => (g.to_owned(), v.to_owned()),
        None => (String::new(), group.to_owned()),
    };
    Resource {
        group,
        version,
        plural: plural.into(),
        singular: singular.into(),
        kind: kind.into(),
        namespaced,
        short_names: short.iter().map(|s| s.to_string()).collect(),
        categories: Vec::new(),
        status_subresource: status,
        schema: None,
        columns: Vec::new(),
        custom: false,
    }
}

/// The built-in kinds the server stores.
#[rustfmt::skip]
pub fn builtins() -> Vec<Resource> {
    vec![
        builtin("v1", "namespaces", "namespace", "Namespace", false, &["ns"], true),
        builtin("v1", "nodes", "node", "Node", false, &["no"], true),
        builtin("v1", "pods", "pod", "Pod", true, &["po"], true),
        builtin("v1", "secrets", "secret", "Secret", true, &[], false),
        builtin("v1", "configmaps", "configmap", "ConfigMap", true, &["cm"], false),
        builtin("v1", "serviceaccounts", "serviceaccount", "ServiceAccount", true, &["sa"], false),
        builtin("v1", "services", "service", "Service", true, &["svc"], true),
        builtin("v1", "endpoints", "endpoints", "Endpoints", true, &["ep"], false),
        builtin("v1", "events", "event", "Event", true, &["ev"], false),
        builtin("apps/v1", "daemonsets", "daemonset", "DaemonSet", true, &["ds"], true),
        builtin("apps/v1", "deployments", "deployment", "Deployment", true, &["deploy"], true),
        builtin("policy/v1", "poddisruptionbudgets", "poddisruptionbudget", "PodDisruptionBudget", true, &["pdb"], true),
        builtin("rbac.authorization.k8s.io/v1", "clusterroles", "clusterrole", "ClusterRole", false, &[], false),
        builtin("rbac.authorization.k8s.io/v1", "clusterrolebindings", "clusterrolebinding", "ClusterRoleBinding", false, &[], false),
        builtin("rbac.authorization.k8s.io/v1", "roles", "role", "Role", true, &[], false),
        builtin("rbac.authorization.k8s.io/v1", "rolebindings", "rolebinding", "RoleBinding", true, &[], false),
        builtin("networking.k8s.io/v1", "networkpolicies", "networkpolicy", "NetworkPolicy", true, &["netpol"], false),
        builtin("coordination.k8s.io/v1", "leases", "lease", "Lease", true, &[], false),
        builtin("apiextensions.k8s.io/v1", "customresourcedefinitions", "customresourcedefinition", "CustomResourceDefinition", false, &["crd", "crds"], true),
    ]
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn text(v: &Value, field: &str) -> String {
    v[field].as_str().unwrap_or_default().to_owned()
}

/// The resources a CRD object serves (one per served version), or why it is not acceptable.
pub fn from_crd(crd: &Value) -> Result<Vec<Resource>, String> {
    let spec = &crd["spec"];
    let group = text(spec, "group");
    let names = &spec["names"];
    let plural = text(names, "plural");
    let kind = text(names, "kind");
    if group.is_empty() || !group.contains('.') {
        return Err(format!(
            "spec.group: Invalid value: {group:?}: should be a domain with at least one dot"
        ));
    }
    if plural.is_empty() || kind.is_empty() {
        return Err("spec.names: Required value: plural and kind must be set".into());
    }
    let expected = format!("{plural}.{group}");
    if crd["metadata"]["name"].as_str() != Some(expected.as_str()) {
        return Err(format!(
            "metadata.name: Invalid value: {:?}: must be spec.names.plural+\".\"+spec.group",
            crd["metadata"]["name"]
        ));
    }
    let namespaced = match spec["scope"].as_str() {
        Some("Namespaced") => true,
        Some("Cluster") => false,
        other => {
            return Err(format!(
                "spec.scope: Unsupported value: {other:?}: supported values: \"Cluster\", \"Namespaced\""
            ));
        }
    };
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    if versions.is_empty() {
        return Err(
            "spec.versions: Invalid value: must have exactly one version marked as storage version"
                .into(),
        );
    }
    let mut out = Vec::new();
    for v in versions
        .iter()
        .filter(|v| v["served"].as_bool() != Some(false))
    {
        let columns = v["additionalPrinterColumns"]
            .as_array()
            .map(|cols| {
                cols.iter()
                    .map(|c| Column {
                        name: text(c, "name"),
                        type_: text(c, "type"),
                        json_path: text(c, "jsonPath"),
                        priority: c["priority"].as_i64().unwrap_or(0),
                        description: text(c, "description"),
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(Resource {
            group: group.clone(),
            version: text(v, "name"),
            plural: plural.clone(),
            singular: names["singular"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| kind.to_lowercase()),
            kind: kind.clone(),
            namespaced,
            short_names: strings(&names["shortNames"]),
            categories: strings(&names["categories"]),
            status_subresource: v["subresources"]["status"].is_object(),
            schema: v["schema"]["openAPIV3Schema"]
                .is_object()
                .then(|| v["schema"]["openAPIV3Schema"].clone()),
            columns,
            custom: true,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_crd_serves_each_served_version_with_its_columns() {
        let crd = json!({
            "metadata": {"name": "ippools.crd.margay.dev"},
            "spec": {"group": "crd.margay.dev", "scope": "Cluster",
                "names": {"plural": "ippools", "kind": "IPPool", "shortNames": ["ipp"]},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "additionalPrinterColumns": [{"name": "CIDR", "type": "string", "jsonPath": ".spec.cidr"}],
                    "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": {"type": "object"}}}]}
        });
        let res = from_crd(&crd).unwrap();
        assert_eq!(res.len(), 1);
        assert_eq!(res[0].api_version(), "crd.margay.dev/v1");
        assert_eq!(res[0].singular, "ippool");
        assert_eq!(res[0].columns[0].json_path, ".spec.cidr");
        assert!(res[0].status_subresource && res[0].custom && !res[0].namespaced);
    }

    #[test]
    fn a_crd_whose_name_does_not_match_is_refused() {
        let crd = json!({"metadata": {"name": "pools.crd.margay.dev"},
            "spec": {"group": "crd.margay.dev", "scope": "Cluster",
                "names": {"plural": "ippools", "kind": "IPPool"}, "versions": [{"name": "v1"}]}});
        assert!(from_crd(&crd).unwrap_err().starts_with("metadata.name"));
    }
}
