//! The Kubernetes objects the lab writes. In etcd mode it stands in for Calico's
//! kube-controllers: Namespaces (with `kubernetes.io/metadata.name`), the pods' labels and named
//! ports on their WorkloadEndpoints, and NetworkPolicies. With the Kubernetes datastore
//! Namespaces and NetworkPolicies live in the test API server and each pod's labels and ports on
//! its core Pod object; no WorkloadEndpoint is stored there (the agents derive endpoints from the
//! Pods, see `margay_api::pod`).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::{Container, ContainerPort, Pod, PodSpec as K8sPodSpec};
use margay_api::WorkloadEndpoint;
use margay_api::k8s::{LABEL_NAMESPACE_NAME, Namespace, NetworkPolicy, ObjectMeta};
use margay_api::workload::EndpointPort;
use margay_datastore::{Datastore, EndpointId, Error as DsError, Typed, Workloads};
use std::sync::Arc;

use super::ds::{with_ds, with_workloads};
use super::state::{DatastoreKind, PodState, State};

/// Label keys the agent owns on a stored WorkloadEndpoint; pod label edits keep them.
pub const AGENT_LABEL_PREFIX: &str = "margay.dev/";
/// How long a pod's endpoint may take to appear after CNI ADD.
const WEP_TIMEOUT: Duration = Duration::from_secs(10);

/// What a write to the datastore returned: the object and its new revision (empty: deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// `Namespace`, `WorkloadEndpoint` or `NetworkPolicy`.
    pub kind: &'static str,
    /// The object's namespace (empty for a Namespace).
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its `metadata.resourceVersion` after the write; `None` after a delete.
    pub revision: Option<String>,
}

/// Whether the Namespace `name` exists.
pub fn namespace_exists(st: &State, name: &str) -> anyhow::Result<bool> {
    let name = name.to_owned();
    with_ds(st, |ds| async move {
        match Typed::<Namespace>::new(ds).get(None, &name).await {
            Ok(_) => Ok(true),
            Err(DsError::NotFound(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    })
}

/// The Namespaces and their labels.
pub fn namespaces(st: &State) -> anyhow::Result<BTreeMap<String, BTreeMap<String, String>>> {
    with_ds(st, |ds| async move {
        let (all, _) = Typed::<Namespace>::new(ds).list(None).await?;
        Ok(all
            .into_iter()
            .filter_map(|n| {
                let labels = n.metadata.labels.clone().unwrap_or_default();
                Some((n.metadata.name?, labels))
            })
            .collect())
    })
}

/// Every NetworkPolicy as `NS/NAME`.
pub fn policies(st: &State) -> anyhow::Result<Vec<String>> {
    with_ds(st, |ds| async move {
        let (all, _) = Typed::<NetworkPolicy>::new(ds).list(None).await?;
        Ok(all
            .into_iter()
            .map(|p| {
                format!(
                    "{}/{}",
                    p.metadata.namespace.unwrap_or_default(),
                    p.metadata.name.unwrap_or_default()
                )
            })
            .collect())
    })
}

/// `ns create NAME --label k=v...`.
pub fn create_namespace(
    st: &State,
    name: &str,
    labels: BTreeMap<String, String>,
) -> anyhow::Result<Written> {
    if let Some(why) = margay_api::names::dns1123_label_error(name) {
        anyhow::bail!("namespace {name:?} {why}");
    }
    let mut labels = labels;
    labels.insert(LABEL_NAMESPACE_NAME.to_owned(), name.to_owned());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(labels),
            ..Default::default()
        },
        ..Default::default()
    };
    let name = name.to_owned();
    with_ds(st, |ds| async move {
        match Typed::<Namespace>::new(ds).create(&ns).await {
            Ok(stored) => Ok(Written {
                kind: "Namespace",
                namespace: String::new(),
                name: name.clone(),
                revision: stored.metadata.resource_version,
            }),
            Err(DsError::AlreadyExists(_)) => {
                anyhow::bail!(
                    "namespace {name:?} already exists (change its labels with `margay-lab ns label`)"
                )
            }
            Err(e) => Err(e.into()),
        }
    })
}

/// `ns label NAME k=v|k-...`: the edits, keeping `kubernetes.io/metadata.name`.
pub fn label_namespace(st: &State, name: &str, edits: &[String]) -> anyhow::Result<Written> {
    let name = name.to_owned();
    let edits = edits.to_vec();
    with_ds(st, |ds| async move {
        let stored = Typed::<Namespace>::new(ds)
            .update_with(None, &name, 10, |ns| {
                let mut labels = ns.metadata.labels.clone().unwrap_or_default();
                super::pods::edit_labels(&mut labels, &edits)
                    .map_err(|e| DsError::BadRequest(e.to_string()))?;
                labels.insert(LABEL_NAMESPACE_NAME.to_owned(), name.clone());
                let changed = ns.metadata.labels.as_ref() != Some(&labels);
                ns.metadata.labels = Some(labels);
                Ok(changed)
            })
            .await
            .map_err(|e| match e {
                DsError::NotFound(_) => anyhow::anyhow!("namespace {name:?} does not exist"),
                e => e.into(),
            })?;
        Ok(Written {
            kind: "Namespace",
            namespace: String::new(),
            name: name.clone(),
            revision: stored.metadata.resource_version,
        })
    })
}

/// Deletes the NetworkPolicies of namespace `name` and the Namespace itself (its pods are
/// deleted by the caller first). Returns what was deleted.
pub fn delete_namespace(st: &State, name: &str) -> anyhow::Result<Vec<Written>> {
    let name = name.to_owned();
    with_ds(st, |ds| async move {
        let mut out = Vec::new();
        let policies = Typed::<NetworkPolicy>::new(ds.clone());
        let (all, _) = policies.list(Some(&name)).await?;
        for p in all {
            let pname = p.metadata.name.clone().unwrap_or_default();
            match policies.delete(Some(&name), &pname, None).await {
                Ok(()) | Err(DsError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
            out.push(Written {
                kind: "NetworkPolicy",
                namespace: name.clone(),
                name: pname,
                revision: None,
            });
        }
        match Typed::<Namespace>::new(ds).delete(None, &name, None).await {
            Ok(()) => {}
            Err(DsError::NotFound(_)) => anyhow::bail!("namespace {name:?} does not exist"),
            Err(e) => return Err(e.into()),
        }
        out.push(Written {
            kind: "Namespace",
            namespace: String::new(),
            name: name.clone(),
            revision: None,
        });
        Ok(out)
    })
}

fn protocol(p: &str) -> margay_api::agentconfig::Protocol {
    use margay_api::agentconfig::Protocol;
    match p {
        "UDP" => Protocol::Udp,
        "SCTP" => Protocol::Sctp,
        _ => Protocol::Tcp,
    }
}

/// The id of a lab pod's endpoint (`NODE-k8s-POD-eth0`, as the agent names it for CNI ADD).
fn endpoint_id(pod: &PodState) -> EndpointId {
    EndpointId {
        namespace: pod.namespace.clone(),
        name: WorkloadEndpoint::name_for(&pod.node, &pod.name, "eth0"),
        pod: pod.name.clone(),
        container_id: Some(pod.container_id.clone()),
    }
}

/// Waits until the agents can see the pod's endpoint — the one the agent stored for CNI ADD
/// (etcd), or the one derived from the Pod once ADD annotated it (Kubernetes) — and returns it.
async fn wait_endpoint(workloads: &Workloads, pod: &PodState) -> anyhow::Result<WorkloadEndpoint> {
    let id = endpoint_id(pod);
    let deadline = tokio::time::Instant::now() + WEP_TIMEOUT;
    loop {
        if let Some(w) = workloads.get(&id).await? {
            return Ok(w);
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!(
                "the endpoint {} of pod {} did not appear within {} s of CNI ADD{}",
                id.name,
                pod.id(),
                WEP_TIMEOUT.as_secs(),
                if workloads.is_derived() {
                    " (the agent annotates the Pod with its addresses)"
                } else {
                    " (the agent stores its WorkloadEndpoint)"
                }
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writes a pod's labels and named ports where the agents read them and returns the write of
/// its endpoint, for [`super::sync::confirm`]. In etcd mode that is its WorkloadEndpoint
/// (compare-and-swap, keeping the agent's `margay.dev/*` labels), once the agent has stored it.
/// With the Kubernetes datastore it is the Pod object (no WorkloadEndpoint is stored there: the
/// agents derive it from the Pod), and the endpoint's revision is the Pod's once CNI ADD has
/// annotated it.
pub fn write_pod(st: &State, pod: &PodState) -> anyhow::Result<Written> {
    if st.datastore == DatastoreKind::Kubernetes {
        put_pod_object(st, pod)?;
    }
    let pod = pod.clone();
    with_workloads(st, |ds, workloads| async move {
        let found = wait_endpoint(&workloads, &pod).await?;
        let wep_name = found.metadata.name.clone().unwrap_or_default();
        let stored = match &workloads {
            Workloads::Pods { .. } => found,
            Workloads::Stored(_) => write_endpoint_labels(ds, &pod, &wep_name)
                .await
                .with_context(|| format!("cannot write the labels of pod {}", pod.id()))?,
        };
        Ok(Written {
            kind: "WorkloadEndpoint",
            namespace: pod.namespace.clone(),
            name: wep_name,
            revision: stored.metadata.resource_version,
        })
    })
}

/// The pod's labels and named ports onto its stored WorkloadEndpoint `wep_name` (etcd mode).
async fn write_endpoint_labels(
    ds: Arc<dyn Datastore>,
    pod: &PodState,
    wep_name: &str,
) -> anyhow::Result<WorkloadEndpoint> {
    let ports: Vec<EndpointPort> = pod
        .ports
        .iter()
        .map(|(name, port, proto)| EndpointPort {
            name: name.clone(),
            protocol: protocol(proto),
            port: *port,
        })
        .collect();
    Ok(Typed::<WorkloadEndpoint>::new(ds)
        .update_with(Some(&pod.namespace), wep_name, 10, |w| {
            let mut labels: BTreeMap<String, String> = w
                .metadata
                .labels
                .clone()
                .unwrap_or_default()
                .into_iter()
                .filter(|(k, _)| k.starts_with(AGENT_LABEL_PREFIX))
                .collect();
            labels.extend(pod.labels.clone());
            let changed =
                w.metadata.labels.clone().unwrap_or_default() != labels || w.spec.ports != ports;
            w.metadata.labels = Some(labels);
            w.spec.ports = ports.clone();
            Ok(changed)
        })
        .await?)
}

/// The deletion of a pod's endpoint that its CNI DEL brings (the agent deletes the stored
/// WorkloadEndpoint, or clears the Pod's annotations so that none is derived), for
/// [`super::sync::confirm`]; `None` when the pod has none.
pub fn pod_wep_deletion(st: &State, pod: &PodState) -> anyhow::Result<Option<Written>> {
    let pod = pod.clone();
    with_workloads(st, |_, workloads| async move {
        Ok(workloads
            .get(&endpoint_id(&pod))
            .await?
            .and_then(|w| w.metadata.name)
            .map(|name| Written {
                kind: "WorkloadEndpoint",
                namespace: pod.namespace.clone(),
                name,
                revision: None,
            }))
    })
}

/// The core Pod of a lab pod (Kubernetes datastore): its labels, its node and its declared ports,
/// as a scheduler would have written it before the runtime calls the CNI plugin.
fn pod_object(pod: &PodState) -> Pod {
    let ports: Vec<ContainerPort> = pod
        .ports
        .iter()
        .map(|(name, port, proto)| ContainerPort {
            name: Some(name.clone()),
            container_port: i32::from(*port),
            protocol: Some(proto.clone()),
            ..Default::default()
        })
        .collect();
    Pod {
        metadata: ObjectMeta {
            name: Some(pod.name.clone()),
            namespace: Some(pod.namespace.clone()),
            labels: Some(pod.labels.clone()),
            ..Default::default()
        },
        spec: Some(K8sPodSpec {
            node_name: Some(pod.node.clone()),
            containers: vec![Container {
                name: "server".into(),
                image: Some("margay-lab-pod-server".into()),
                ports: (!ports.is_empty()).then_some(ports),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Creates or updates a pod's core Pod object — its labels, node and declared ports — keeping
/// the annotations the agent wrote (Kubernetes datastore).
pub fn put_pod_object(st: &State, pod: &PodState) -> anyhow::Result<()> {
    let want = pod_object(pod);
    let id = pod.id();
    with_ds(st, |ds| async move {
        let pods = Typed::<Pod>::new(ds);
        let ns = want.metadata.namespace.clone();
        let name = want.metadata.name.clone().unwrap_or_default();
        match pods.create(&want).await {
            Ok(_) => Ok(()),
            Err(DsError::AlreadyExists(_)) => {
                // The agent's annotations stay; an unchanged Pod is not written again.
                pods.update_with(ns.as_deref(), &name, 10, |p| {
                    let changed = p.metadata.labels != want.metadata.labels || p.spec != want.spec;
                    p.metadata.labels = want.metadata.labels.clone();
                    p.spec = want.spec.clone();
                    Ok(changed)
                })
                .await?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    })
    .with_context(|| format!("cannot write the Pod object of {id}"))
}

/// Deletes a pod's core Pod object, if there is one (Kubernetes datastore).
pub async fn delete_pod_object(ds: &Arc<dyn Datastore>, pod: &PodState) -> anyhow::Result<()> {
    match Typed::<Pod>::new(Arc::clone(ds))
        .delete(Some(&pod.namespace), &pod.name, None)
        .await
    {
        Ok(()) | Err(DsError::NotFound(_)) => Ok(()),
        Err(e) => Err(anyhow::anyhow!(
            "cannot delete the Pod object of {}: {e}",
            pod.id()
        )),
    }
}

/// Parses a NetworkPolicy from YAML or JSON; the namespace defaults to `default`.
pub fn parse_policy(text: &str, source: &str) -> anyhow::Result<NetworkPolicy> {
    let value: serde_json::Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).with_context(|| format!("{source} is not valid JSON"))?
    } else {
        serde_saphyr::from_str(text).with_context(|| format!("{source} is not valid YAML"))?
    };
    let kind = value["kind"].as_str().unwrap_or("");
    let api = value["apiVersion"].as_str().unwrap_or("");
    if kind != "NetworkPolicy" || api != "networking.k8s.io/v1" {
        anyhow::bail!(
            "{source}: kind {kind:?}, apiVersion {api:?}: expected a Kubernetes NetworkPolicy (apiVersion: networking.k8s.io/v1, kind: NetworkPolicy)"
        );
    }
    let mut p: NetworkPolicy = serde_json::from_value(value)
        .with_context(|| format!("{source} is not a valid NetworkPolicy"))?;
    match p.metadata.name.as_deref() {
        Some(n) if margay_api::names::dns1123_subdomain_error(n).is_none() => {}
        Some(n) => anyhow::bail!(
            "{source}: metadata.name {n:?} {}",
            margay_api::names::dns1123_subdomain_error(n).unwrap_or_default()
        ),
        None => anyhow::bail!("{source}: metadata.name is missing"),
    }
    p.metadata.namespace.get_or_insert_with(|| "default".into());
    p.metadata.resource_version = None;
    Ok(p)
}

/// Stores a NetworkPolicy: creates it, or replaces the one of the same name.
pub fn apply_policy(st: &State, policy: NetworkPolicy) -> anyhow::Result<Written> {
    let ns = policy.metadata.namespace.clone().unwrap_or_default();
    let name = policy.metadata.name.clone().unwrap_or_default();
    if !namespace_exists(st, &ns)? {
        anyhow::bail!(
            "namespace {ns:?} of NetworkPolicy {name} does not exist: `margay-lab ns create {ns}` first"
        );
    }
    with_ds(st, |ds| async move {
        let policies = Typed::<NetworkPolicy>::new(ds);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let result = match policies.get(Some(&ns), &name).await {
                Ok(old) => {
                    let mut p = policy.clone();
                    p.metadata.resource_version = old.metadata.resource_version;
                    policies.update(&p).await
                }
                Err(DsError::NotFound(_)) => policies.create(&policy).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(stored) => {
                    return Ok(Written {
                        kind: "NetworkPolicy",
                        namespace: ns.clone(),
                        name: name.clone(),
                        revision: stored.metadata.resource_version,
                    });
                }
                Err(DsError::Conflict { .. } | DsError::AlreadyExists(_)) if attempts < 10 => {}
                Err(e) => return Err(e.into()),
            }
        }
    })
}

/// Deletes NetworkPolicy `ns/name`.
pub fn delete_policy(st: &State, ns: &str, name: &str) -> anyhow::Result<Written> {
    let (ns, name) = (ns.to_owned(), name.to_owned());
    with_ds(st, |ds| async move {
        match Typed::<NetworkPolicy>::new(ds)
            .delete(Some(&ns), &name, None)
            .await
        {
            Ok(()) => Ok(Written {
                kind: "NetworkPolicy",
                namespace: ns,
                name,
                revision: None,
            }),
            Err(DsError::NotFound(_)) => {
                anyhow::bail!("NetworkPolicy {ns}/{name} does not exist")
            }
            Err(e) => Err(e.into()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_yaml_policy_gets_the_default_namespace() {
        let p = parse_policy(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: deny\nspec:\n  podSelector: {}\n  policyTypes: [Ingress]\n",
            "deny.yaml",
        )
        .unwrap();
        assert_eq!(p.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(p.metadata.name.as_deref(), Some("deny"));
    }

    #[test]
    fn other_kinds_and_nameless_policies_are_refused() {
        let e = parse_policy(
            "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"x\"}}",
            "pod.json",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("expected a Kubernetes NetworkPolicy"),
            "{e}"
        );
        let e = parse_policy(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {}\nspec: {}\n",
            "p.yaml",
        )
        .unwrap_err();
        assert!(e.to_string().contains("metadata.name"), "{e}");
    }
}
