//! RBAC as the API server's authorizer sees it, for checking the manifests' roles: which
//! ServiceAccount may do which verb on which resource, from the ClusterRoles, Roles and their
//! bindings in a manifest file.

use serde_json::Value;

/// One permission asked for or granted: API group (empty for core), resource (`pods`,
/// `nodestatuses/status`), verb, and the namespace it is limited to (`None`: cluster-wide).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Permission {
    /// API group, empty for the core group.
    pub group: String,
    /// Resource, with `/subresource` when it is one.
    pub resource: String,
    /// Verb.
    pub verb: String,
    /// Namespace of a Role's grant (`None` for a ClusterRole bound cluster-wide).
    pub namespace: Option<String>,
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(f, "{} {}/{}", self.verb, g, self.resource)?;
        if let Some(ns) = &self.namespace {
            write!(f, " in {ns}")?;
        }
        Ok(())
    }
}

/// The objects of a multi-document YAML file (empty and comment-only documents skipped).
pub fn documents(text: &str) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for (i, doc) in text.split("\n---").enumerate() {
        let v: Value = serde_saphyr::from_str(doc).map_err(|e| format!("document {i}: {e}"))?;
        if v.is_object() {
            out.push(v);
        }
    }
    Ok(out)
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

fn name_of(o: &Value) -> &str {
    o["metadata"]["name"].as_str().unwrap_or("")
}

/// Every rule string that is a wildcard (`*`), named by role, for the "no `*`" check.
pub fn wildcards(docs: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    for d in docs
        .iter()
        .filter(|d| matches!(d["kind"].as_str(), Some("ClusterRole" | "Role")))
    {
        for rule in d["rules"].as_array().into_iter().flatten() {
            for field in ["apiGroups", "resources", "verbs", "nonResourceURLs"] {
                if strings(&rule[field]).iter().any(|s| s.contains('*')) {
                    out.push(format!("{} {}: {field} has *", d["kind"], name_of(d)));
                }
            }
        }
    }
    out
}

/// Every permission the ServiceAccount `namespace/name` gets from the bindings in `docs`, one per
/// (group, resource, verb) of each rule.
pub fn granted(docs: &[Value], namespace: &str, name: &str) -> Vec<Permission> {
    let mut out = Vec::new();
    for b in docs.iter().filter(|d| {
        matches!(
            d["kind"].as_str(),
            Some("ClusterRoleBinding" | "RoleBinding")
        )
    }) {
        let binds_sa = b["subjects"].as_array().into_iter().flatten().any(|s| {
            s["kind"] == "ServiceAccount" && s["name"] == name && s["namespace"] == namespace
        });
        if !binds_sa {
            continue;
        }
        let scope = match b["kind"].as_str() {
            Some("RoleBinding") => b["metadata"]["namespace"].as_str().map(str::to_owned),
            _ => None,
        };
        let role_kind = b["roleRef"]["kind"].as_str().unwrap_or("");
        let role_name = b["roleRef"]["name"].as_str().unwrap_or("");
        let role = docs.iter().find(|d| {
            d["kind"] == role_kind
                && name_of(d) == role_name
                && (role_kind == "ClusterRole"
                    || d["metadata"]["namespace"].as_str() == scope.as_deref())
        });
        for rule in role
            .map(|r| r["rules"].as_array().cloned().unwrap_or_default())
            .unwrap_or_default()
        {
            for group in strings(&rule["apiGroups"]) {
                for resource in strings(&rule["resources"]) {
                    for verb in strings(&rule["verbs"]) {
                        out.push(Permission {
                            group: group.clone(),
                            resource: resource.clone(),
                            verb,
                            namespace: scope.clone(),
                        });
                    }
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Whether `grants` allow `want`: a cluster-wide grant allows it anywhere, a namespaced one only
/// in its namespace.
pub fn allows(grants: &[Permission], want: &Permission) -> bool {
    grants.iter().any(|g| {
        g.group == want.group
            && g.resource == want.resource
            && g.verb == want.verb
            && (g.namespace.is_none() || g.namespace == want.namespace)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RBAC: &str = "kind: ClusterRole\napiVersion: rbac.authorization.k8s.io/v1\nmetadata: {name: r}\n\
        rules:\n- apiGroups: ['']\n  resources: [pods]\n  verbs: [get, list]\n---\n\
        kind: Role\napiVersion: rbac.authorization.k8s.io/v1\nmetadata: {name: s, namespace: sys}\n\
        rules:\n- apiGroups: ['']\n  resources: [secrets]\n  verbs: ['*']\n---\n\
        kind: ClusterRoleBinding\napiVersion: rbac.authorization.k8s.io/v1\nmetadata: {name: r}\n\
        roleRef: {kind: ClusterRole, name: r, apiGroup: rbac.authorization.k8s.io}\n\
        subjects: [{kind: ServiceAccount, name: a, namespace: sys}]\n---\n\
        kind: RoleBinding\napiVersion: rbac.authorization.k8s.io/v1\nmetadata: {name: s, namespace: sys}\n\
        roleRef: {kind: Role, name: s, apiGroup: rbac.authorization.k8s.io}\n\
        subjects: [{kind: ServiceAccount, name: a, namespace: sys}]\n";

    fn p(resource: &str, verb: &str, ns: Option<&str>) -> Permission {
        Permission {
            group: String::new(),
            resource: resource.into(),
            verb: verb.into(),
            namespace: ns.map(str::to_owned),
        }
    }

    #[test]
    fn a_role_grants_only_in_its_namespace_and_wildcards_are_found() {
        let docs = documents(RBAC).unwrap();
        let g = granted(&docs, "sys", "a");
        assert!(allows(&g, &p("pods", "list", None)));
        assert!(allows(&g, &p("pods", "get", Some("x"))));
        assert!(!allows(&g, &p("pods", "watch", None)));
        assert!(allows(&g, &p("secrets", "*", Some("sys"))));
        assert!(!allows(&g, &p("secrets", "*", Some("other"))));
        assert!(!allows(&g, &p("secrets", "*", None)));
        assert!(granted(&docs, "sys", "b").is_empty());
        assert_eq!(wildcards(&docs), ["\"Role\" s: verbs has *"]);
    }
}
