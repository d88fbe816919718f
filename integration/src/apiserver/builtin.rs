//! Built-in kinds are decoded as the apiserver decodes them into its Go types: here into
//! k8s-openapi's types for 1.37. A value of the wrong type fails the request (400), and fields
//! the type does not have are reported and dropped, so that `fieldValidation=Strict` catches
//! a misspelt `imagePullPolicyy` in a DaemonSet as a real server does.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Event, Namespace, Node, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::de::DeserializeOwned;
use serde_ignored::Path;
use serde_json::Value;

use super::schema::Checked;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

fn segments(path: &Path) -> Vec<Seg> {
    match path {
        Path::Root => Vec::new(),
        Path::Seq { parent, index } => {
            let mut v = segments(parent);
            v.push(Seg::Index(*index));
            v
        }
        Path::Map { parent, key } => {
            let mut v = segments(parent);
            v.push(Seg::Key(key.clone()));
            v
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => segments(parent),
    }
}

/// `spec.template.spec.containers[0].imagePullPolicyy`, as the apiserver names fields.
fn display(segs: &[Seg]) -> String {
    let mut out = String::new();
    for s in segs {
        match s {
            Seg::Key(k) if out.is_empty() => out.push_str(k),
            Seg::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn remove(obj: &mut Value, segs: &[Seg]) {
    let Some((last, parents)) = segs.split_last() else {
        return;
    };
    let mut at = obj;
    for s in parents {
        let next = match s {
            Seg::Key(k) => at.get_mut(k.as_str()),
            Seg::Index(i) => at.get_mut(*i),
        };
        match next {
            Some(n) => at = n,
            None => return,
        }
    }
    match (last, at) {
        (Seg::Key(k), Value::Object(m)) => {
            m.remove(k);
        }
        (Seg::Index(i), Value::Array(a)) if *i < a.len() => {
            a.remove(*i);
        }
        _ => {}
    }
}

fn decode<T: DeserializeOwned>(obj: &Value) -> Result<Vec<Vec<Seg>>, String> {
    let mut unknown = Vec::new();
    let decoded: Result<T, serde_json::Error> =
        serde_ignored::deserialize(obj, |p| unknown.push(segments(&p)));
    decoded.map(|_| unknown).map_err(|e| e.to_string())
}

/// Checks a built-in object of `kind`; unknown fields go to `out.unknown` and are removed.
/// `Err` is why the object cannot be decoded at all. Kinds without a type here pass unchecked.
pub fn check(kind: &str, obj: &mut Value, out: &mut Checked) -> Result<(), String> {
    let unknown = match kind {
        "Namespace" => decode::<Namespace>(obj)?,
        "Node" => decode::<Node>(obj)?,
        "Pod" => decode::<Pod>(obj)?,
        "Secret" => decode::<Secret>(obj)?,
        "ConfigMap" => decode::<ConfigMap>(obj)?,
        "ServiceAccount" => decode::<ServiceAccount>(obj)?,
        "Service" => decode::<Service>(obj)?,
        "Endpoints" => decode::<Endpoints>(obj)?,
        "Event" => decode::<Event>(obj)?,
        "DaemonSet" => decode::<DaemonSet>(obj)?,
        "Deployment" => decode::<Deployment>(obj)?,
        "PodDisruptionBudget" => decode::<PodDisruptionBudget>(obj)?,
        "ClusterRole" => decode::<ClusterRole>(obj)?,
        "ClusterRoleBinding" => decode::<ClusterRoleBinding>(obj)?,
        "Role" => decode::<Role>(obj)?,
        "RoleBinding" => decode::<RoleBinding>(obj)?,
        "NetworkPolicy" => decode::<NetworkPolicy>(obj)?,
        "Lease" => decode::<Lease>(obj)?,
        "CustomResourceDefinition" => decode::<CustomResourceDefinition>(obj)?,
        _ => Vec::new(),
    };
    for path in unknown {
        remove(obj, &path);
        out.unknown.push(display(&path));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_misspelt_field_deep_in_a_daemonset_is_named_and_dropped() {
        let mut ds = json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "d", "labelz": {}},
            "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"spec": {
                "containers": [{"name": "c", "image": "i", "imagePullPolicyy": "Always"}]}}}});
        let mut out = Checked::default();
        check("DaemonSet", &mut ds, &mut out).unwrap();
        assert_eq!(
            out.unknown,
            [
                "metadata.labelz",
                "spec.template.spec.containers[0].imagePullPolicyy"
            ]
        );
        assert!(
            ds["spec"]["template"]["spec"]["containers"][0]
                .get("imagePullPolicyy")
                .is_none()
        );
    }

    #[test]
    fn a_value_of_the_wrong_type_cannot_be_decoded() {
        let mut cm =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": 5});
        let err = check("ConfigMap", &mut cm, &mut Checked::default()).unwrap_err();
        assert!(err.contains("invalid type"), "{err}");
    }

    #[test]
    fn a_good_network_policy_has_nothing_unknown() {
        let mut np = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "n", "namespace": "default"},
            "spec": {"podSelector": {}, "ingress": [{"ports": [{"port": 80, "protocol": "TCP"}]}]}});
        let mut out = Checked::default();
        check("NetworkPolicy", &mut np, &mut out).unwrap();
        assert!(out.unknown.is_empty(), "{out:?}");
    }
}
