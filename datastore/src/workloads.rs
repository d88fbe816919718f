//! Where WorkloadEndpoints come from, whichever the datastore.
//!
//! - **etcd** ([`Workloads::Stored`]): one stored `WorkloadEndpoint` per pod interface, written by
//!   the agent when the CNI plugin sets the pod up and deleted when it tears it down.
//! - **Kubernetes** ([`Workloads::Pods`]): nothing is stored per pod. As Calico's libcalico-go in
//!   KDD mode, the endpoint is derived from the Pod ([`margay_api::pod::endpoint_of_pod`]); what
//!   the Pod does not say by itself (the addresses IPAM gave, the sandbox, the IPAM handle) the
//!   agent records on it as annotations with a merge patch, and clears them again on teardown.
//!
//! The agent (routes, policy, CNI garbage collection), the controller (leak check, deleted
//! nodes) and `margayctl get workloadendpoints` read through this type, so they see the same
//! endpoints in both modes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::StreamExt;
use futures::stream::BoxStream;
use margay_api::WorkloadEndpoint;
use margay_api::k8s::Pod;
use margay_api::pod::{
    ANNOTATION_CONTAINER_ID, POD_ANNOTATIONS, annotations_for, endpoint_of_pod,
    host_interface_name, pod_endpoint_id,
};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::key::Key;
use crate::kubernetes::Kubernetes;
use crate::store::Datastore;
use crate::typed::{Event, Typed, key_of};
use crate::watcher::Backoff;

/// How often a read-modify-write of an endpoint is tried before a conflict is reported.
const ATTEMPTS: usize = 10;

/// Names one pod interface, for reading or removing its endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointId {
    /// The pod's namespace.
    pub namespace: String,
    /// The WorkloadEndpoint's name (`NODE-k8s-POD-eth0`).
    pub name: String,
    /// The pod's name.
    pub pod: String,
    /// The sandbox; when given, a Pod whose annotations name another sandbox is left alone.
    pub container_id: Option<String>,
}

/// The source of WorkloadEndpoints: stored objects, or derived from Pods.
#[derive(Debug, Clone)]
pub enum Workloads {
    /// Stored WorkloadEndpoint objects (etcd mode).
    Stored(Typed<WorkloadEndpoint>),
    /// Derived from Pods (Kubernetes mode); `kube` writes the annotations.
    Pods {
        /// The Pods, through the datastore (so a recording wrapper sees the reads).
        pods: Typed<Pod>,
        /// The API server, for merge patches of a Pod's annotations.
        kube: Kubernetes,
    },
}

impl Workloads {
    /// Stored WorkloadEndpoints in `ds`.
    pub fn stored(ds: Arc<dyn Datastore>) -> Self {
        Workloads::Stored(Typed::new(ds))
    }

    /// Endpoints derived from the Pods of `ds` (a Kubernetes datastore, or one wrapping it),
    /// annotations written through `kube`.
    pub fn from_pods(ds: Arc<dyn Datastore>, kube: Kubernetes) -> Self {
        Workloads::Pods {
            pods: Typed::new(ds),
            kube,
        }
    }

    /// The source for a datastore: derived from Pods when `kube` (Kubernetes mode) is given.
    pub fn for_datastore(ds: Arc<dyn Datastore>, kube: Option<Kubernetes>) -> Self {
        match kube {
            Some(kube) => Self::from_pods(ds, kube),
            None => Self::stored(ds),
        }
    }

    /// Whether the endpoints are derived from Pods.
    pub fn is_derived(&self) -> bool {
        matches!(self, Workloads::Pods { .. })
    }

    /// Every endpoint.
    pub async fn list(&self) -> Result<Vec<WorkloadEndpoint>> {
        match self {
            Workloads::Stored(weps) => Ok(weps.list(None).await?.0),
            Workloads::Pods { pods, .. } => Ok(pods
                .list(None)
                .await?
                .0
                .iter()
                .filter_map(endpoint_of_pod)
                .collect()),
        }
    }

    /// One endpoint, or `None` when there is none.
    pub async fn get(&self, id: &EndpointId) -> Result<Option<WorkloadEndpoint>> {
        let found = match self {
            Workloads::Stored(weps) => weps.get(Some(&id.namespace), &id.name).await.map(Some),
            Workloads::Pods { pods, .. } => pods
                .get(Some(&id.namespace), &id.pod)
                .await
                .map(|p| endpoint_of_pod(&p).filter(|w| w.metadata.name == Some(id.name.clone()))),
        };
        match found {
            Ok(Some(w)) => Ok(Some(w)),
            Ok(None) | Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Watches every endpoint: `Added` for what exists, `Synced`, then changes; after a relist
    /// only the difference, then `Synced` again (see [`crate::watch`]).
    pub fn watch(&self, backoff: Backoff) -> BoxStream<'static, Result<Event<WorkloadEndpoint>>> {
        match self {
            Workloads::Stored(weps) => weps.watch(backoff),
            Workloads::Pods { pods, .. } => {
                let mut known = HashMap::new();
                pods.watch(backoff)
                    .flat_map(move |ev| futures::stream::iter(derive(&mut known, ev)))
                    .boxed()
            }
        }
    }

    /// Records a pod interface that is up. Stored: creates the WorkloadEndpoint, or updates it
    /// keeping the pod's labels and named ports (which others write). Derived: writes the
    /// addresses, sandbox and handle onto the Pod as annotations; the Pod must exist and the
    /// host interface must be the one derived from it.
    pub async fn record(&self, wep: &WorkloadEndpoint) -> Result<()> {
        let namespace = wep.metadata.namespace.clone().unwrap_or_default();
        let name = wep.metadata.name.clone().unwrap_or_default();
        match self {
            Workloads::Stored(weps) => match weps.create(wep).await {
                Ok(_) => Ok(()),
                Err(Error::AlreadyExists(_)) => weps
                    .update_with(Some(&namespace), &name, ATTEMPTS, |w| {
                        let mut want = wep.spec.clone();
                        want.ports = w.spec.ports.clone();
                        let mut labels = w.metadata.labels.clone().unwrap_or_default();
                        labels.extend(wep.metadata.labels.clone().unwrap_or_default());
                        let changed = w.spec != want || w.metadata.labels.as_ref() != Some(&labels);
                        w.spec = want;
                        w.metadata.labels = Some(labels);
                        Ok(changed)
                    })
                    .await
                    .map(|_| ()),
                Err(e) => Err(e),
            },
            Workloads::Pods { kube, .. } => {
                let pod = &wep.spec.pod;
                if pod.is_empty() {
                    return Err(Error::BadRequest(format!(
                        "{namespace}/{name}: the runtime named no pod (K8S_POD_NAME in CNI_ARGS); \
                         in Kubernetes mode endpoints are derived from Pods"
                    )));
                }
                let derived = host_interface_name(&pod_endpoint_id(&namespace, pod));
                if wep.spec.interface_name != derived {
                    return Err(Error::BadRequest(format!(
                        "pod {namespace}/{pod}: host interface {:?} is not the one derived from \
                         the pod ({derived:?}); the CNI plugin and the agent must be the same version",
                        wep.spec.interface_name
                    )));
                }
                let nets: Vec<ipnet::IpNet> = wep
                    .spec
                    .ip_networks
                    .iter()
                    .filter_map(|s| s.parse().ok())
                    .collect();
                let annotations = annotations_for(
                    &nets,
                    wep.spec.container_id.as_deref().unwrap_or_default(),
                    wep.spec.ipam_handle_id.as_deref().unwrap_or_default(),
                );
                let key = pod_key(&namespace, pod)?;
                kube.merge_patch(&key, &json!({"metadata": {"annotations": annotations}}))
                    .await
                    .map(|_| ())
            }
        }
    }

    /// Removes a pod interface's endpoint; idempotent. Stored: deletes the WorkloadEndpoint.
    /// Derived: clears the Pod's annotations, unless they belong to another sandbox by now.
    pub async fn remove(&self, id: &EndpointId) -> Result<()> {
        match self {
            Workloads::Stored(weps) => match weps.delete(Some(&id.namespace), &id.name, None).await
            {
                Ok(()) | Err(Error::NotFound(_)) => Ok(()),
                Err(e) => Err(e),
            },
            Workloads::Pods { pods, kube } => {
                let key = pod_key(&id.namespace, &id.pod)?;
                let mut last = None;
                for _ in 0..ATTEMPTS {
                    let pod = match pods.get(Some(&id.namespace), &id.pod).await {
                        Ok(p) => p,
                        Err(Error::NotFound(_)) => return Ok(()),
                        Err(e) => return Err(e),
                    };
                    let Some(patch) = clearing_patch(&pod, id.container_id.as_deref()) else {
                        return Ok(());
                    };
                    match kube.merge_patch(&key, &patch).await {
                        Ok(_) | Err(Error::NotFound(_)) => return Ok(()),
                        Err(e @ Error::Conflict { .. }) => last = Some(e),
                        Err(e) => return Err(e),
                    }
                }
                Err(last.expect("at least one attempt was made"))
            }
        }
    }
}

fn pod_key(namespace: &str, pod: &str) -> Result<Key> {
    Key::namespaced("pods", namespace, pod).map_err(|e| Error::BadRequest(e.to_string()))
}

/// The merge patch that clears the agent's annotations from `pod`, as a compare-and-swap on the
/// revision read; `None` when there is nothing to clear or they name another sandbox than
/// `container_id`.
pub fn clearing_patch(pod: &Pod, container_id: Option<&str>) -> Option<Value> {
    let ann = pod.metadata.annotations.clone().unwrap_or_default();
    if !POD_ANNOTATIONS.iter().any(|k| ann.contains_key(*k)) {
        return None;
    }
    if let (Some(ours), Some(theirs)) = (container_id, ann.get(ANNOTATION_CONTAINER_ID))
        && !ours.is_empty()
        && ours != theirs
    {
        return None;
    }
    let nulls: BTreeMap<&str, Value> = POD_ANNOTATIONS.iter().map(|k| (*k, Value::Null)).collect();
    Some(json!({"metadata": {
        "resourceVersion": pod.metadata.resource_version,
        "annotations": nulls,
    }}))
}

/// One Pod event as endpoint events; `known` maps each Pod to the endpoint the consumer holds.
fn derive(
    known: &mut HashMap<Key, Key>,
    ev: Result<Event<Pod>>,
) -> Vec<Result<Event<WorkloadEndpoint>>> {
    let pod = match ev {
        Err(e) => return vec![Err(e)],
        Ok(Event::Synced) => return vec![Ok(Event::Synced)],
        Ok(Event::Deleted(k)) => {
            return known
                .remove(&k)
                .map(|w| Ok(Event::Deleted(w)))
                .into_iter()
                .collect();
        }
        Ok(Event::Added(p) | Event::Modified(p)) => p,
    };
    let pod_key = match key_of(&pod) {
        Ok(k) => k,
        Err(e) => return vec![Err(e)],
    };
    let Some(wep) = endpoint_of_pod(&pod) else {
        return known
            .remove(&pod_key)
            .map(|w| Ok(Event::Deleted(w)))
            .into_iter()
            .collect();
    };
    let wep_key = match key_of(&wep) {
        Ok(k) => k,
        Err(e) => return vec![Err(e)],
    };
    match known.insert(pod_key, wep_key.clone()) {
        None => vec![Ok(Event::Added(wep))],
        Some(old) if old == wep_key => vec![Ok(Event::Modified(wep))],
        Some(old) => vec![Ok(Event::Deleted(old)), Ok(Event::Added(wep))],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ip: Option<&str>, phase: &str) -> Pod {
        let mut v = json!({"metadata": {"name": name, "namespace": "ns", "resourceVersion": "1"},
                           "spec": {"nodeName": "n1", "containers": []},
                           "status": {"phase": phase}});
        if let Some(ip) = ip {
            v["status"]["podIP"] = json!(ip);
        }
        serde_json::from_value(v).unwrap()
    }

    fn kinds(evs: &[Result<Event<WorkloadEndpoint>>]) -> Vec<String> {
        evs.iter()
            .map(|e| match e {
                Ok(Event::Added(w)) => format!("added {}", w.metadata.name.clone().unwrap()),
                Ok(Event::Modified(w)) => format!("modified {}", w.metadata.name.clone().unwrap()),
                Ok(Event::Deleted(k)) => format!("deleted {}", k.name),
                Ok(Event::Synced) => "synced".into(),
                Err(e) => format!("error {e}"),
            })
            .collect()
    }

    #[test]
    fn a_pod_becomes_an_endpoint_when_it_gets_an_address_and_stops_being_one_when_it_ends() {
        let mut known = HashMap::new();
        let mut run = |ev| kinds(&derive(&mut known, Ok(ev)));
        assert!(run(Event::Added(pod("a", None, "Pending"))).is_empty());
        assert_eq!(run(Event::Synced), ["synced"]);
        assert_eq!(
            run(Event::Modified(pod("a", Some("100.64.0.1"), "Running"))),
            ["added n1-k8s-a-eth0"]
        );
        assert_eq!(
            run(Event::Modified(pod("a", Some("100.64.0.1"), "Running"))),
            ["modified n1-k8s-a-eth0"]
        );
        assert_eq!(
            run(Event::Modified(pod("a", Some("100.64.0.1"), "Succeeded"))),
            ["deleted n1-k8s-a-eth0"]
        );
        assert!(run(Event::Deleted(Key::namespaced("pods", "ns", "a").unwrap())).is_empty());
    }

    #[test]
    fn a_deleted_pod_deletes_its_endpoint_once() {
        let mut known = HashMap::new();
        derive(
            &mut known,
            Ok(Event::Added(pod("b", Some("100.64.0.2"), "Running"))),
        );
        let k = Key::namespaced("pods", "ns", "b").unwrap();
        let out = kinds(&derive(&mut known, Ok(Event::Deleted(k.clone()))));
        assert_eq!(out, ["deleted n1-k8s-b-eth0"]);
        assert!(derive(&mut known, Ok(Event::Deleted(k))).is_empty());
    }

    #[test]
    fn clearing_leaves_another_sandboxs_annotations_alone() {
        let mut p = pod("c", None, "Running");
        assert!(clearing_patch(&p, Some("x")).is_none(), "nothing to clear");
        let nets = ["100.64.0.3/32".parse().unwrap()];
        p.metadata.annotations = Some(annotations_for(&nets, "new", "net.new"));
        assert!(clearing_patch(&p, Some("old")).is_none());
        let patch = clearing_patch(&p, Some("new")).unwrap();
        assert_eq!(patch["metadata"]["resourceVersion"], "1");
        for k in POD_ANNOTATIONS {
            assert!(patch["metadata"]["annotations"][k].is_null());
            assert!(patch["metadata"]["annotations"].get(k).is_some());
        }
        assert!(
            clearing_patch(&p, None).is_some(),
            "no sandbox named: clear"
        );
    }
}
