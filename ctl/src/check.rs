//! Checking one document before anything is written: its kind and apiVersion, unknown fields
//! (API types accept them, as Kubernetes does, so they are caught here), the schema, defaults and
//! validation. Every error is one line naming the document, the object, the field and the fix.

use std::error::Error as _;

use margay_api::validate::{FieldError, pool_overlaps};
use margay_api::{Defaults, IPPool, Resource, Validate};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::docs::Doc;
use crate::kinds::Kind;
use crate::with_type;

/// A document that cannot be applied, as one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{doc}: {message}")]
pub struct DocProblem {
    /// The document (`FILE#N`).
    pub doc: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// A checked document: its kind and the object as it will be stored (defaults filled in).
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// Where it came from.
    pub source: String,
    /// Its kind.
    pub kind: Kind,
    /// The object.
    pub value: Value,
}

impl Checked {
    /// `IPPool "p1"` or `WorkloadEndpoint "ns/name"`.
    pub fn label(&self) -> String {
        let (ns, name) = crate::store::ns_name(&self.value);
        match ns {
            Some(ns) if self.kind.namespaced() => format!("{} \"{ns}/{name}\"", self.kind),
            _ => format!("{} {name:?}", self.kind),
        }
    }
}

/// Decodes `v` as `T`, collecting the paths of fields `T` does not have.
fn decode_strict<T: DeserializeOwned>(v: Value) -> Result<(T, Vec<String>), serde_json::Error> {
    let mut unknown = Vec::new();
    let t = serde_ignored::deserialize(v, |path| {
        // `?` stands for an Option that k8s-openapi's types wrap fields in; it is no field.
        let path = path.to_string().replace(".?", "").replace("?.", "");
        // kube's derived types read the type fields themselves and skip them as unknown.
        if path != "apiVersion" && path != "kind" {
            unknown.push(path);
        }
    })?;
    Ok((t, unknown))
}

fn field_errors_line(errors: &[FieldError]) -> String {
    let joined = errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    format!("{joined} (fix the field and apply again)")
}

/// Checks one document; `namespace` is the default for namespaced kinds without one.
pub fn check_doc(doc: &Doc, namespace: &str) -> Result<Checked, DocProblem> {
    let problem = |message: String| DocProblem {
        doc: doc.source.clone(),
        message,
    };
    let mut v = doc.value.clone();
    let kind_field = v.get("kind").and_then(Value::as_str).unwrap_or_default();
    if kind_field.is_empty() {
        return Err(problem(
            "no kind: set kind to one of the Margay kinds (e.g. kind: IPPool)".to_string(),
        ));
    }
    let kind = Kind::from_kind_field(kind_field).ok_or_else(|| {
        let known: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        problem(format!(
            "kind {kind_field:?} is not a Margay resource; use one of {}",
            known.join(", ")
        ))
    })?;
    let api = v
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if api != kind.api_version() {
        return Err(problem(format!(
            "apiVersion {api:?} is wrong for {kind}: use apiVersion: {}",
            kind.api_version()
        )));
    }
    let name = v
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if name.is_empty() {
        return Err(problem(format!(
            "{kind} without metadata.name: give it a name"
        )));
    }
    if kind.namespaced() {
        if v.pointer("/metadata/namespace").is_none() {
            v["metadata"]["namespace"] = Value::String(namespace.to_string());
        }
    } else if v.pointer("/metadata/namespace").is_some() {
        return Err(problem(format!(
            "{kind} {name:?} is not namespaced: remove metadata.namespace"
        )));
    }
    let unknown = with_type!(kind, T => {
        decode_strict::<T>(v.clone())
            .map(|(_, unknown)| unknown)
            .map_err(|e| problem(format!("{kind} {name:?}: {e} (fix the field and apply again)")))?
    });
    if !unknown.is_empty() {
        return Err(problem(format!(
            "{kind} {name:?}: unknown field{} {} (remove it or fix its spelling)",
            if unknown.len() > 1 { "s" } else { "" },
            unknown.join(", ")
        )));
    }
    let value = if kind == Kind::NetworkPolicy {
        v
    } else {
        let mut r = Resource::from_value(v).map_err(|e| {
            problem(format!(
                "{e}: {}",
                e.source().map(ToString::to_string).unwrap_or_default()
            ))
        })?;
        r.apply_defaults();
        if let Err(errors) = r.validate() {
            return Err(problem(field_errors_line(&errors.0)));
        }
        serde_json::to_value(&r).map_err(|e| problem(format!("{kind} {name:?}: {e}")))?
    };
    Ok(Checked {
        source: doc.source.clone(),
        kind,
        value,
    })
}

/// Overlaps of the pools being written with each other and with the stored pools (a pool of the
/// same name as a stored one replaces it), attributed to the documents of the new pools.
pub fn check_pool_overlaps(new: &[Checked], stored: &[IPPool]) -> Vec<DocProblem> {
    let pools: Vec<(String, IPPool)> = new
        .iter()
        .filter(|c| c.kind == Kind::IPPool)
        .filter_map(|c| {
            Some((
                c.source.clone(),
                serde_json::from_value(c.value.clone()).ok()?,
            ))
        })
        .collect();
    if pools.is_empty() {
        return Vec::new();
    }
    let new_names: Vec<&str> = pools
        .iter()
        .map(|(_, p)| p.metadata.name.as_deref().unwrap_or_default())
        .collect();
    let all: Vec<&IPPool> = stored
        .iter()
        .filter(|p| !new_names.contains(&p.metadata.name.as_deref().unwrap_or_default()))
        .chain(pools.iter().map(|(_, p)| p))
        .collect();
    let mut out: Vec<DocProblem> = Vec::new();
    for e in pool_overlaps(all) {
        // An overlap names the pool whose name sorts later; attribute it to a new pool's document
        // (the later one if both are new, else whichever of the two is new).
        let other = e.message.split('"').nth(1).unwrap_or_default().to_string();
        let src = pools
            .iter()
            .find(|(_, p)| p.metadata.name.as_deref() == Some(&e.name))
            .or_else(|| {
                pools
                    .iter()
                    .find(|(_, p)| p.metadata.name.as_deref() == Some(other.as_str()))
            });
        if let Some((source, _)) = src {
            out.push(DocProblem {
                doc: source.clone(),
                message: format!(
                    "{e} (pools must not overlap: change spec.cidr or delete the other pool first)"
                ),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(v: Value) -> Doc {
        Doc {
            source: "f.yaml#1".into(),
            value: v,
        }
    }

    fn pool(name: &str, cidr: &str) -> Value {
        json!({"apiVersion": "crd.margay.dev/v1", "kind": "IPPool",
               "metadata": {"name": name}, "spec": {"cidr": cidr}})
    }

    #[test]
    fn a_good_pool_gets_its_defaults() {
        let c = check_doc(&doc(pool("p1", "100.64.0.0/16")), "default").unwrap();
        assert_eq!(c.value["spec"]["blockSize"], 26);
    }

    #[test]
    fn an_unknown_field_is_named_with_its_path() {
        let mut v = pool("p1", "100.64.0.0/16");
        v["spec"]["natOutgoin"] = json!(true);
        let e = check_doc(&doc(v), "default").unwrap_err().to_string();
        assert_eq!(
            e,
            "f.yaml#1: IPPool \"p1\": unknown field spec.natOutgoin (remove it or fix its spelling)"
        );
    }

    #[test]
    fn a_wrong_kind_lists_the_right_ones() {
        let mut v = pool("p1", "100.64.0.0/16");
        v["kind"] = json!("IpPool");
        let e = check_doc(&doc(v), "default").unwrap_err().to_string();
        assert!(
            e.starts_with("f.yaml#1: kind \"IpPool\" is not a Margay resource; use one of IPPool"),
            "{e}"
        );
    }

    #[test]
    fn a_bad_cidr_names_the_field() {
        let e = check_doc(&doc(pool("p1", "100.64.0.300/16")), "default")
            .unwrap_err()
            .to_string();
        assert!(e.contains("spec.cidr"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn unknown_fields_are_found_inside_kubernetes_types_too() {
        let v = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                       "metadata": {"name": "deny", "labelz": {}}, "spec": {"podSelector": {}, "ingres": []}});
        let e = check_doc(&doc(v), "default").unwrap_err().to_string();
        assert!(
            e.contains("unknown fields metadata.labelz, spec.ingres"),
            "{e}"
        );
    }

    #[test]
    fn namespaced_kinds_get_the_default_namespace() {
        let v = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                       "metadata": {"name": "deny"}, "spec": {"podSelector": {}}});
        let c = check_doc(&doc(v), "team-a").unwrap();
        assert_eq!(c.value["metadata"]["namespace"], "team-a");
    }

    #[test]
    fn overlapping_new_and_stored_pools_are_reported_on_the_new_document() {
        let new = check_doc(&doc(pool("b", "100.64.1.0/24")), "default").unwrap();
        let stored: IPPool = serde_json::from_value(pool("a", "100.64.0.0/16")).unwrap();
        let problems = check_pool_overlaps(std::slice::from_ref(&new), &[stored]);
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].to_string().starts_with(
                "f.yaml#1: IPPool \"b\": spec.cidr 100.64.1.0/24 overlaps IPPool \"a\""
            ),
            "{}",
            problems[0]
        );
        // Replacing a stored pool by one of the same name is not an overlap.
        let same: IPPool = serde_json::from_value(pool("b", "100.64.0.0/16")).unwrap();
        assert!(check_pool_overlaps(&[new], &[same]).is_empty());
    }
}
