//! etcd mode: what policy needs from the Kubernetes API, copied into etcd (as Calico's
//! kube-controllers): Namespaces (their labels), NetworkPolicies, and each Pod's labels and named
//! ports onto the WorkloadEndpoints of that pod.
//!
//! Each copy follows a watch of the Kubernetes API; after the initial list (and every relist and
//! on a timer) it reconciles etcd against the whole list, so that what changed while the
//! controller was down is repaired too. The WorkloadEndpoints themselves belong to the agents
//! (written when the CNI plugin sets a pod up); the controller changes only their labels (keeping
//! the agent's `margay.dev/*` ones) and `spec.ports`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use margay_api::WorkloadEndpoint;
use margay_api::agentconfig::Protocol;
use margay_api::k8s_openapi::api::core::v1::{Namespace, Pod};
use margay_api::k8s_openapi::api::networking::v1::NetworkPolicy;
use margay_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use margay_api::workload::EndpointPort;
use margay_datastore::{Backoff, Datastore, Error as DsError, Event, Object, Typed};
use tracing::{debug, info, warn};

use crate::health::Readiness;

/// The label prefix that marks the agent's own labels on a WorkloadEndpoint.
const OWN_LABEL_PREFIX: &str = "margay.dev/";

/// What etcd keeps of a Namespace: its name and labels.
pub fn clean_namespace(ns: Namespace) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: ns.metadata.name,
            labels: ns.metadata.labels.filter(|l| !l.is_empty()),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// What etcd keeps of a NetworkPolicy: its name, namespace, labels and spec.
pub fn clean_policy(p: NetworkPolicy) -> NetworkPolicy {
    NetworkPolicy {
        metadata: ObjectMeta {
            name: p.metadata.name,
            namespace: p.metadata.namespace,
            labels: p.metadata.labels.filter(|l| !l.is_empty()),
            ..Default::default()
        },
        spec: p.spec,
    }
}

type ObjKey = (Option<String>, String);

fn obj_key<T: Object>(o: &T) -> ObjKey {
    let m = o.meta();
    (m.namespace.clone(), m.name.clone().unwrap_or_default())
}

fn without_revision<T: Object>(mut o: T) -> T {
    o.meta_mut().resource_version = None;
    o
}

/// Writes `want` into `dst` unless it is already there as it is.
async fn upsert<T: Object + PartialEq>(dst: &Typed<T>, want: &T) -> margay_datastore::Result<()> {
    let (ns, name) = obj_key(want);
    match dst.get(ns.as_deref(), &name).await {
        Ok(cur) => {
            let rev = cur.meta().resource_version.clone();
            if without_revision(cur) == *want {
                return Ok(());
            }
            let mut next = want.clone();
            next.meta_mut().resource_version = rev;
            dst.update(&next).await.map(drop)
        }
        Err(DsError::NotFound(_)) => match dst.create(want).await {
            Ok(_) | Err(DsError::AlreadyExists(_)) => Ok(()),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    }
}

/// Makes `dst` hold exactly `desired`; returns how many objects were written or deleted.
async fn reconcile<T: Object + PartialEq>(
    dst: &Typed<T>,
    desired: &BTreeMap<ObjKey, T>,
) -> margay_datastore::Result<usize> {
    let (have, _) = dst.list(None).await?;
    let mut changed = 0;
    let mut current: BTreeMap<ObjKey, T> = BTreeMap::new();
    for cur in have {
        let key = obj_key(&cur);
        if desired.contains_key(&key) {
            current.insert(key, without_revision(cur));
            continue;
        }
        let rev = cur
            .meta()
            .resource_version
            .clone()
            .map(margay_datastore::Revision);
        match dst.delete(key.0.as_deref(), &key.1, rev.as_ref()).await {
            Ok(()) | Err(DsError::NotFound(_)) => changed += 1,
            Err(e) => return Err(e),
        }
    }
    for (key, want) in desired {
        if current.get(key) != Some(want) {
            upsert(dst, want).await?;
            changed += 1;
        }
    }
    Ok(changed)
}

/// Copies every object of `T` from `source` (the Kubernetes API) into `target` (etcd), cleaned
/// by `clean`, for as long as it runs. Marks the readiness condition `ready` once the first full
/// reconcile has succeeded.
pub async fn mirror<T: Object + PartialEq>(
    source: Arc<dyn Datastore>,
    target: Arc<dyn Datastore>,
    clean: fn(T) -> T,
    resync: Duration,
    readiness: Readiness,
    ready: &'static str,
) {
    let kind = margay_datastore::typed::kind_of::<T>();
    let dst = Typed::<T>::new(target);
    let mut watch = Typed::<T>::new(source).watch(Backoff::default());
    let mut desired: BTreeMap<ObjKey, T> = BTreeMap::new();
    let mut synced = false;
    let mut dirty = false;
    let mut tick = tokio::time::interval(resync);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            ev = watch.next() => {
                let Some(ev) = ev else { return };
                match ev {
                    Ok(Event::Added(o) | Event::Modified(o)) => {
                        let o = without_revision(clean(o));
                        desired.insert(obj_key(&o), o.clone());
                        if synced && let Err(e) = upsert(&dst, &o).await {
                            warn!(%kind, object = ?obj_key(&o), error = %e, "copy into etcd failed; repaired at the next resync");
                            dirty = true;
                        }
                    }
                    Ok(Event::Deleted(k)) => {
                        desired.remove(&(k.namespace.clone(), k.name.clone()));
                        if synced {
                            match dst.delete(k.namespace.as_deref(), &k.name, None).await {
                                Ok(()) | Err(DsError::NotFound(_)) => {}
                                Err(e) => {
                                    warn!(%kind, object = %k, error = %e, "delete in etcd failed; repaired at the next resync");
                                    dirty = true;
                                }
                            }
                        }
                    }
                    Ok(Event::Synced) => {
                        synced = true;
                        dirty = true;
                    }
                    Err(e) => warn!(%kind, error = %e, "Kubernetes watch"),
                }
            }
            _ = tick.tick() => dirty |= synced,
        }
        if dirty {
            match reconcile(&dst, &desired).await {
                Ok(n) => {
                    dirty = false;
                    if n > 0 {
                        info!(%kind, changed = n, "etcd reconciled with the Kubernetes API");
                    }
                    readiness.met(ready);
                }
                Err(e) => warn!(%kind, error = %e, "reconcile of etcd failed; retrying"),
            }
        }
    }
}

/// What a WorkloadEndpoint takes from its pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodInfo {
    /// The pod's labels.
    pub labels: BTreeMap<String, String>,
    /// Its containers' named ports, sorted.
    pub ports: Vec<EndpointPort>,
}

impl PodInfo {
    /// Reads a pod: labels, and every container port that has a name.
    pub fn of(pod: &Pod) -> Self {
        let mut ports: Vec<EndpointPort> = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                let name = p.name.clone().filter(|n| !n.is_empty())?;
                let protocol = match p.protocol.as_deref() {
                    None | Some("TCP") => Protocol::Tcp,
                    Some("UDP") => Protocol::Udp,
                    Some("SCTP") => Protocol::Sctp,
                    Some(_) => return None,
                };
                let port = u16::try_from(p.container_port).ok().filter(|p| *p > 0)?;
                Some(EndpointPort {
                    name,
                    protocol,
                    port,
                })
            })
            .collect();
        ports.sort();
        ports.dedup();
        PodInfo {
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            ports,
        }
    }
}

/// The labels and ports `wep` should have for `pod`, or `None` if it has them: the pod's labels
/// plus the endpoint's own `margay.dev/*` labels (which the pod cannot override), and the pod's
/// named ports.
pub fn endpoint_update(
    pod: &PodInfo,
    wep: &WorkloadEndpoint,
) -> Option<(BTreeMap<String, String>, Vec<EndpointPort>)> {
    let current = wep.metadata.labels.clone().unwrap_or_default();
    let mut labels: BTreeMap<String, String> = pod
        .labels
        .iter()
        .filter(|(k, _)| !k.starts_with(OWN_LABEL_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.extend(
        current
            .iter()
            .filter(|(k, _)| k.starts_with(OWN_LABEL_PREFIX))
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    (labels != current || pod.ports != wep.spec.ports).then(|| (labels, pod.ports.clone()))
}

/// Keeps the labels and named ports of every WorkloadEndpoint in `target` equal to its pod's in
/// `source`. A WorkloadEndpoint whose pod is not (or no longer) in the API is left alone: the
/// CNI plugin's DEL removes it.
pub async fn pod_endpoints(
    source: Arc<dyn Datastore>,
    target: Arc<dyn Datastore>,
    resync: Duration,
    readiness: Readiness,
    ready: &'static str,
) {
    let weps_dst = Typed::<WorkloadEndpoint>::new(Arc::clone(&target));
    let mut pods_watch = Typed::<Pod>::new(source).watch(Backoff::default());
    let mut weps_watch = Typed::<WorkloadEndpoint>::new(target).watch(Backoff::default());
    let mut pods: BTreeMap<(String, String), PodInfo> = BTreeMap::new();
    // (namespace, wep name) -> pod name, from the endpoints seen.
    let mut weps: BTreeMap<(String, String), WorkloadEndpoint> = BTreeMap::new();
    let (mut pods_synced, mut weps_synced) = (false, false);
    let mut tick = tokio::time::interval(resync);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Which endpoints to look at after this event (None: all of them).
        let mut check: Option<BTreeSet<(String, String)>> = Some(BTreeSet::new());
        tokio::select! {
            ev = pods_watch.next() => {
                let Some(ev) = ev else { return };
                match ev {
                    Ok(Event::Added(p) | Event::Modified(p)) => {
                        let ns = p.metadata.namespace.clone().unwrap_or_default();
                        let name = p.metadata.name.clone().unwrap_or_default();
                        let info = PodInfo::of(&p);
                        if pods.get(&(ns.clone(), name.clone())) != Some(&info) {
                            pods.insert((ns.clone(), name.clone()), info);
                            check = Some(endpoints_of(&weps, &ns, &name));
                        }
                    }
                    Ok(Event::Deleted(k)) => {
                        pods.remove(&(k.namespace.clone().unwrap_or_default(), k.name.clone()));
                    }
                    Ok(Event::Synced) => {
                        pods_synced = true;
                        check = None;
                    }
                    Err(e) => warn!(error = %e, "Kubernetes pod watch"),
                }
            }
            ev = weps_watch.next() => {
                let Some(ev) = ev else { return };
                match ev {
                    Ok(Event::Added(w) | Event::Modified(w)) => {
                        let key = (
                            w.metadata.namespace.clone().unwrap_or_default(),
                            w.metadata.name.clone().unwrap_or_default(),
                        );
                        weps.insert(key.clone(), w);
                        check = Some(BTreeSet::from([key]));
                    }
                    Ok(Event::Deleted(k)) => {
                        weps.remove(&(k.namespace.clone().unwrap_or_default(), k.name.clone()));
                    }
                    Ok(Event::Synced) => {
                        weps_synced = true;
                        check = None;
                    }
                    Err(e) => warn!(error = %e, "WorkloadEndpoint watch"),
                }
            }
            _ = tick.tick() => check = None,
        }
        if !(pods_synced && weps_synced) {
            continue;
        }
        let keys: Vec<(String, String)> = match check {
            Some(k) => k.into_iter().collect(),
            None => weps.keys().cloned().collect(),
        };
        let mut ok = true;
        for key in keys {
            let Some(w) = weps.get(&key) else { continue };
            let Some(pod) = pods.get(&(key.0.clone(), w.spec.pod.clone())) else {
                continue;
            };
            if endpoint_update(pod, w).is_none() {
                continue;
            }
            let result = weps_dst
                .update_with(Some(&key.0), &key.1, 10, |w| {
                    Ok(match endpoint_update(pod, w) {
                        Some((labels, ports)) => {
                            w.metadata.labels = Some(labels);
                            w.spec.ports = ports;
                            true
                        }
                        None => false,
                    })
                })
                .await;
            match result {
                Ok(_) => {
                    debug!(endpoint = %format!("{}/{}", key.0, key.1), "labels and ports from the pod")
                }
                Err(DsError::NotFound(_)) => {}
                Err(e) => {
                    ok = false;
                    warn!(endpoint = %format!("{}/{}", key.0, key.1), error = %e, "cannot update the WorkloadEndpoint; retrying at the next resync");
                }
            }
        }
        if ok {
            readiness.met(ready);
        }
    }
}

fn endpoints_of(
    weps: &BTreeMap<(String, String), WorkloadEndpoint>,
    ns: &str,
    pod: &str,
) -> BTreeSet<(String, String)> {
    weps.iter()
        .filter(|((n, _), w)| n == ns && w.spec.pod == pod)
        .map(|(k, _)| k.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use margay_api::WorkloadEndpointSpec;
    use serde_json::json;

    fn pod(labels: serde_json::Value, ports: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns1", "labels": labels},
            "spec": {"containers": [{"name": "c", "ports": ports}]}
        }))
        .unwrap()
    }

    fn wep(labels: &[(&str, &str)], ports: Vec<EndpointPort>) -> WorkloadEndpoint {
        let mut w = WorkloadEndpoint::new(
            "node--1-k8s-web-eth0",
            WorkloadEndpointSpec {
                pod: "web".into(),
                ports,
                ..Default::default()
            },
        );
        w.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        w
    }

    #[test]
    fn only_named_container_ports_are_taken() {
        let p = pod(
            json!({"app": "web"}),
            json!([
                {"containerPort": 8080, "name": "http"},
                {"containerPort": 53, "name": "dns", "protocol": "UDP"},
                {"containerPort": 9000}
            ]),
        );
        let info = PodInfo::of(&p);
        assert_eq!(
            info.ports,
            vec![
                EndpointPort {
                    name: "dns".into(),
                    protocol: Protocol::Udp,
                    port: 53
                },
                EndpointPort {
                    name: "http".into(),
                    protocol: Protocol::Tcp,
                    port: 8080
                },
            ]
        );
    }

    #[test]
    fn pod_labels_replace_the_endpoints_but_the_agents_own_labels_stay() {
        let info = PodInfo::of(&pod(
            json!({"app": "web", "margay.dev/namespace": "forged"}),
            json!([]),
        ));
        let w = wep(&[("margay.dev/namespace", "ns1"), ("old", "x")], Vec::new());
        let (labels, ports) = endpoint_update(&info, &w).unwrap();
        assert_eq!(
            labels,
            BTreeMap::from([
                ("app".to_string(), "web".to_string()),
                ("margay.dev/namespace".to_string(), "ns1".to_string()),
            ])
        );
        assert!(ports.is_empty());
    }

    #[test]
    fn an_endpoint_that_matches_its_pod_needs_no_update() {
        let info = PodInfo::of(&pod(
            json!({"app": "web"}),
            json!([{"containerPort": 80, "name": "http"}]),
        ));
        let w = wep(
            &[("app", "web"), ("margay.dev/orchestrator", "k8s")],
            info.ports.clone(),
        );
        assert_eq!(endpoint_update(&info, &w), None);
    }

    #[test]
    fn cleaned_objects_keep_only_what_policy_reads() {
        let ns: Namespace = serde_json::from_value(json!({
            "metadata": {"name": "a", "uid": "u", "resourceVersion": "5", "labels": {"team": "x"},
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "status": {"phase": "Active"}
        }))
        .unwrap();
        let c = clean_namespace(ns);
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a", "labels": {"team": "x"}}})
        );
        let np: NetworkPolicy = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "a", "uid": "u"},
            "spec": {"podSelector": {}}
        }))
        .unwrap();
        assert_eq!(
            serde_json::to_value(clean_policy(np)).unwrap(),
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                   "metadata": {"name": "p", "namespace": "a"}, "spec": {"podSelector": {}}})
        );
    }
}
