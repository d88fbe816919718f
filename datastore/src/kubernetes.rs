//! The Kubernetes backend: objects are resources of a Kubernetes API server, reached with kube-rs.
//!
//! # Kinds
//!
//! A datastore kind (lower-case plural) names a resource: Margay's own kinds (`ippools`,
//! `ipamblocks`, `blockaffinities`, `ipamhandles`, `ipamconfigs`, `nodes`, `nodestatuses`,
//! `bgppeers`, `bgpconfigurations`, `agentconfigurations`, `workloadendpoints`) are the custom
//! resources of `crd.margay.dev/v1`; `namespaces`, `pods`, `configmaps`, `secrets`, `services`,
//! `serviceaccounts` (core v1), `networkpolicies` (networking.k8s.io/v1), `daemonsets` and
//! `deployments` (apps/v1) and `customresourcedefinitions` are Kubernetes' own. `nodes` is Margay's Node, as for the other
//! backends; the Kubernetes Node is read with a kube client, not through this trait. Any other
//! kind is taken to be a custom resource of `crd.margay.dev/v1` with that plural, whose CRD must
//! exist ([`api_resource`] says which).
//!
//! # Values and revisions
//!
//! Values are the JSON of the whole object. Writing, the backend sets `apiVersion`, `kind`,
//! `metadata.name` and `metadata.namespace` from the key, and puts the expected revision into
//! `metadata.resourceVersion` of the update itself, so the API server does the compare-and-swap
//! (`409 Conflict` → [`Error::Conflict`]). Reading, it removes `metadata.resourceVersion` from
//! the bytes and returns it as the [`Revision`], as the etcd backend does; the server's own
//! metadata (`uid`, `creationTimestamp`, `generation`) stays in the bytes.
//!
//! A value that is not a JSON object (opaque bytes, which Margay's own code never writes) is
//! kept as a string in a top-level `opaque` field, and given back as it was; only a custom
//! resource whose schema keeps unknown fields (`x-kubernetes-preserve-unknown-fields`) holds it
//! (the API server drops unknown fields of the other kinds).
//!
//! For a resource with a status subresource (`nodestatuses`), the main resource ignores
//! `status`; when the written status differs from what the server kept, the backend writes it
//! through `/status` right after, with the revision the first write returned. The two writes are
//! not one transaction: a reader may briefly see the new spec with the old status.
//!
//! # Watches
//!
//! A watch is a Kubernetes watch from the revision; a `410 Gone` (in the stream or as the
//! response) is [`Error::Expired`], after which [`crate::watch`] lists again; a broken
//! connection is [`Error::Unavailable`], after which it resumes. Bookmarks are not requested.

use std::path::PathBuf;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, Preconditions, WatchEvent, WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::key::{Key, Revision};
use crate::store::{Datastore, Listing, RawEvent, RawWatch, Stored};

/// Margay's API group and version.
pub const MARGAY_GROUP: &str = "crd.margay.dev";
const MARGAY_VERSION: &str = "v1";
/// Where a value that is not a JSON object is kept.
const OPAQUE: &str = "opaque";

/// How to reach the API server.
#[derive(Debug, Clone, Default)]
pub struct KubernetesConfig {
    /// A kubeconfig file; with neither this nor `server`, the usual inference (in-cluster
    /// service account, `$KUBECONFIG`, `~/.kube/config`).
    pub kubeconfig: Option<PathBuf>,
    /// The server URL (`http://198.18.0.254:6443`), instead of a kubeconfig.
    pub server: Option<String>,
    /// A bearer token for `server`.
    pub token: Option<String>,
    /// Timeout of each request other than watches (default 10 s).
    pub timeout: Option<Duration>,
}

/// A datastore in a Kubernetes API server.
#[derive(Clone)]
pub struct Kubernetes {
    client: kube::Client,
    server: String,
    timeout: Duration,
}

impl std::fmt::Debug for Kubernetes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kubernetes")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// The Kubernetes resource that holds a datastore kind (see the module docs).
pub fn api_resource(kind: &str) -> ApiResource {
    let core = |group: &str, version: &str, k: &str| {
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, k), kind)
    };
    let margay = |k: &str| core(MARGAY_GROUP, MARGAY_VERSION, k);
    match kind {
        "ippools" => margay("IPPool"),
        "ipamblocks" => margay("IPAMBlock"),
        "blockaffinities" => margay("BlockAffinity"),
        "ipamhandles" => margay("IPAMHandle"),
        "ipamconfigs" => margay("IPAMConfig"),
        "nodes" => margay("Node"),
        "nodestatuses" => margay("NodeStatus"),
        "bgppeers" => margay("BGPPeer"),
        "bgpconfigurations" => margay("BGPConfiguration"),
        "agentconfigurations" => margay("AgentConfiguration"),
        "workloadendpoints" => margay("WorkloadEndpoint"),
        "namespaces" => core("", "v1", "Namespace"),
        "pods" => core("", "v1", "Pod"),
        "configmaps" => core("", "v1", "ConfigMap"),
        "secrets" => core("", "v1", "Secret"),
        "services" => core("", "v1", "Service"),
        "serviceaccounts" => core("", "v1", "ServiceAccount"),
        "networkpolicies" => core("networking.k8s.io", "v1", "NetworkPolicy"),
        "daemonsets" => core("apps", "v1", "DaemonSet"),
        "deployments" => core("apps", "v1", "Deployment"),
        "customresourcedefinitions" => {
            core("apiextensions.k8s.io", "v1", "CustomResourceDefinition")
        }
        other => margay(&camel_case(other)),
    }
}

/// `conf-crud` → `ConfCrud`: the kind of a custom resource known only by its plural.
fn camel_case(plural: &str) -> String {
    plural
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

fn status_of(e: &kube::Error) -> Option<(u16, &str)> {
    match e {
        kube::Error::Api(s) => Some((s.code, s.reason.as_str())),
        _ => None,
    }
}

/// Names the revision a failed compare-and-swap expected.
fn with_expected(e: Error, expected: Option<&Revision>) -> Error {
    match e {
        Error::Conflict { key, .. } => Error::Conflict {
            key,
            expected: expected.map(|r| r.0.clone()).unwrap_or_default(),
        },
        e => e,
    }
}

/// Turns stored bytes into the object to send.
fn to_object(ar: &ApiResource, key: &Key, value: &[u8], rv: Option<&Revision>) -> Result<Value> {
    let mut obj = match serde_json::from_slice::<Value>(value) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            let text = std::str::from_utf8(value).map_err(|_| {
                Error::BadRequest(format!(
                    "{key}: the Kubernetes backend stores JSON objects or UTF-8 text, not other bytes"
                ))
            })?;
            serde_json::json!({ OPAQUE: text })
        }
    };
    obj["apiVersion"] = Value::String(ar.api_version.clone());
    obj["kind"] = Value::String(ar.kind.clone());
    if !obj["metadata"].is_object() {
        obj["metadata"] = serde_json::json!({});
    }
    let meta = &mut obj["metadata"];
    meta["name"] = Value::String(key.name.clone());
    match (&key.namespace, meta.as_object_mut()) {
        (Some(ns), _) => meta["namespace"] = Value::String(ns.clone()),
        (None, Some(m)) => {
            m.remove("namespace");
        }
        (None, None) => {}
    }
    match (rv, meta.as_object_mut()) {
        (Some(rv), _) => meta["resourceVersion"] = Value::String(rv.0.clone()),
        (None, Some(m)) => {
            m.remove("resourceVersion");
        }
        (None, None) => {}
    }
    Ok(obj)
}

fn dynamic(key: &Key, obj: Value) -> Result<DynamicObject> {
    serde_json::from_value(obj).map_err(|e| Error::BadRequest(format!("{key}: {e}")))
}

/// Turns an object from the server into bytes, a key and a revision.
fn to_stored(ar: &ApiResource, obj: &DynamicObject) -> Result<Stored> {
    let mut v = serde_json::to_value(obj).map_err(|e| Error::Invalid {
        key: ar.plural.clone(),
        why: e.to_string(),
    })?;
    let name = obj.metadata.name.clone().unwrap_or_default();
    let key = match &obj.metadata.namespace {
        Some(ns) => Key::namespaced(&ar.plural, ns, &name),
        None => Key::cluster(&ar.plural, &name),
    }
    .map_err(|e| Error::Invalid {
        key: format!("{}/{name}", ar.plural),
        why: e.to_string(),
    })?;
    let revision = obj
        .metadata
        .resource_version
        .clone()
        .map(Revision)
        .ok_or_else(|| Error::Invalid {
            key: key.to_string(),
            why: "the server sent no metadata.resourceVersion".into(),
        })?;
    if let Some(m) = v["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    let opaque = v.as_object().and_then(|m| {
        let rest: Vec<&String> = m
            .keys()
            .filter(|k| !matches!(k.as_str(), "apiVersion" | "kind" | "metadata"))
            .collect();
        (rest == [OPAQUE]).then(|| m[OPAQUE].as_str()).flatten()
    });
    let value = match opaque {
        Some(text) => text.as_bytes().to_vec(),
        None => {
            if v.get("apiVersion").is_none() {
                v["apiVersion"] = Value::String(ar.api_version.clone());
                v["kind"] = Value::String(ar.kind.clone());
            }
            serde_json::to_vec(&v).map_err(|e| Error::Invalid {
                key: key.to_string(),
                why: e.to_string(),
            })?
        }
    };
    Ok(Stored {
        key,
        value,
        revision,
    })
}

impl Kubernetes {
    /// Connects (builds a client; the first request is what reaches the server).
    pub async fn connect(config: &KubernetesConfig) -> Result<Self> {
        let bad = |e: &dyn std::fmt::Display| Error::BadRequest(format!("kubeconfig: {e}"));
        let options = KubeConfigOptions::default();
        let mut kc = if let Some(server) = &config.server {
            let user = match &config.token {
                Some(t) => format!("  user:\n    token: {t}\n"),
                None => "  user: {}\n".into(),
            };
            let text = format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n\
                 contexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\n\
                 users:\n- name: u\n{user}"
            );
            let file = Kubeconfig::from_yaml(&text).map_err(|e| bad(&e))?;
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|e| bad(&e))?
        } else if let Some(path) = &config.kubeconfig {
            let file = Kubeconfig::read_from(path).map_err(|e| bad(&e))?;
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|e| bad(&e))?
        } else {
            kube::Config::infer().await.map_err(|e| bad(&e))?
        };
        let timeout = config.timeout.unwrap_or(Duration::from_secs(10));
        kc.connect_timeout = Some(timeout);
        let server = kc.cluster_url.to_string().trim_end_matches('/').to_owned();
        let client = kube::Client::try_from(kc)
            .map_err(|e| Error::unavailable(format!("kubernetes {server}: client"), e))?;
        Ok(Self {
            client,
            server,
            timeout,
        })
    }

    /// The kube client, for what is not a datastore kind (the core Kubernetes Node).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// Applies a JSON merge patch (RFC 7386) to one object and returns its new revision: how a
    /// few fields (a pod's annotations) are changed without replacing what others own. A
    /// `metadata.resourceVersion` in the patch makes it a compare-and-swap (`Conflict`).
    pub async fn merge_patch(&self, key: &Key, patch: &Value) -> Result<Revision> {
        let ar = api_resource(&key.kind);
        let api = self.api(&ar, key.namespace.as_deref());
        let obj = self
            .timed(
                "patch",
                key,
                api.patch(&key.name, &PatchParams::default(), &Patch::Merge(patch)),
            )
            .await?;
        Ok(to_stored(&ar, &obj)?.revision)
    }

    fn api(&self, ar: &ApiResource, namespace: Option<&str>) -> Api<DynamicObject> {
        match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, ar),
            None => Api::all_with(self.client.clone(), ar),
        }
    }

    fn fail(&self, what: &str, key: &Key, e: kube::Error) -> Error {
        match status_of(&e) {
            Some((404, _)) => Error::NotFound(key.clone()),
            Some((409, "AlreadyExists")) => Error::AlreadyExists(key.clone()),
            Some((409, _)) => Error::Conflict {
                key: key.clone(),
                expected: String::new(),
            },
            Some((400 | 401 | 403 | 405 | 415 | 422, _)) => {
                Error::BadRequest(format!("{key}: {e}"))
            }
            _ => Error::unavailable(format!("kubernetes {}: {what} {key}", self.server), e),
        }
    }

    async fn timed<T>(
        &self,
        what: &str,
        key: &Key,
        call: impl Future<Output = kube::Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.fail(what, key, e)),
            Err(_) => Err(Error::Unavailable {
                what: format!(
                    "kubernetes {}: {what} {key}: no answer within {:?}",
                    self.server, self.timeout
                ),
                source: None,
            }),
        }
    }

    /// Writes the status through `/status` when the main resource did not keep it.
    async fn sync_status(
        &self,
        ar: &ApiResource,
        key: &Key,
        sent: &Value,
        stored: DynamicObject,
    ) -> Result<DynamicObject> {
        let Some(status) = sent.get("status") else {
            return Ok(stored);
        };
        if stored.data.get("status") == Some(status) {
            return Ok(stored);
        }
        let mut obj = stored;
        obj.data["status"] = status.clone();
        let api = self.api(ar, key.namespace.as_deref());
        match self
            .timed(
                "status",
                key,
                api.replace_status(&key.name, &PostParams::default(), &obj),
            )
            .await
        {
            Ok(o) => Ok(o),
            // No status subresource: the main write kept the status already.
            Err(Error::NotFound(_)) => Ok(obj),
            Err(e) => Err(e),
        }
    }
}

#[async_trait::async_trait]
impl Datastore for Kubernetes {
    async fn get(&self, key: &Key) -> Result<Stored> {
        let ar = api_resource(&key.kind);
        let api = self.api(&ar, key.namespace.as_deref());
        let obj = self.timed("get", key, api.get(&key.name)).await?;
        to_stored(&ar, &obj)
    }

    async fn list(&self, kind: &str, namespace: Option<&str>) -> Result<Listing> {
        let ar = api_resource(kind);
        let api = self.api(&ar, namespace);
        let what = Key {
            kind: kind.to_owned(),
            namespace: namespace.map(str::to_owned),
            name: "*".into(),
        };
        let mut items = Vec::new();
        let mut revision = None;
        let mut token: Option<String> = None;
        loop {
            let mut lp = ListParams::default().limit(500);
            if let Some(t) = &token {
                lp = lp.continue_token(t);
            }
            let page = match self.timed("list", &what, api.list(&lp)).await {
                Ok(page) => page,
                // A kind whose CRD is not there has no objects.
                Err(Error::NotFound(_)) => {
                    return Err(Error::BadRequest(format!(
                        "kind {kind} is not served ({}/{}): is its CRD installed?",
                        ar.api_version, ar.plural
                    )));
                }
                Err(e) => return Err(e),
            };
            revision.get_or_insert(page.metadata.resource_version.clone().unwrap_or_default());
            for obj in &page.items {
                items.push(to_stored(&ar, obj)?);
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        items.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Listing {
            items,
            revision: Revision(revision.unwrap_or_default()),
        })
    }

    async fn create(&self, key: &Key, value: Vec<u8>) -> Result<Revision> {
        let ar = api_resource(&key.kind);
        let api = self.api(&ar, key.namespace.as_deref());
        let sent = to_object(&ar, key, &value, None)?;
        let obj = dynamic(key, sent.clone())?;
        let stored = self
            .timed("create", key, api.create(&PostParams::default(), &obj))
            .await?;
        let stored = self.sync_status(&ar, key, &sent, stored).await?;
        Ok(to_stored(&ar, &stored)?.revision)
    }

    async fn update(&self, key: &Key, value: Vec<u8>, expected: &Revision) -> Result<Revision> {
        let ar = api_resource(&key.kind);
        let api = self.api(&ar, key.namespace.as_deref());
        let sent = to_object(&ar, key, &value, Some(expected))?;
        let obj = dynamic(key, sent.clone())?;
        let stored = self
            .timed(
                "update",
                key,
                api.replace(&key.name, &PostParams::default(), &obj),
            )
            .await
            .map_err(|e| with_expected(e, Some(expected)))?;
        let stored = self.sync_status(&ar, key, &sent, stored).await?;
        Ok(to_stored(&ar, &stored)?.revision)
    }

    async fn delete(&self, key: &Key, expected: Option<&Revision>) -> Result<()> {
        let ar = api_resource(&key.kind);
        let api = self.api(&ar, key.namespace.as_deref());
        let dp = DeleteParams {
            preconditions: expected.map(|r| Preconditions {
                resource_version: Some(r.0.clone()),
                uid: None,
            }),
            ..DeleteParams::background()
        };
        self.timed("delete", key, api.delete(&key.name, &dp))
            .await
            .map(|_| ())
            .map_err(|e| with_expected(e, expected))
    }

    async fn watch(&self, kind: &str, from: &Revision) -> Result<RawWatch> {
        let ar = api_resource(kind);
        let api = self.api(&ar, None);
        let expired = {
            let (kind, revision) = (kind.to_owned(), from.0.clone());
            move || Error::Expired {
                kind: kind.clone(),
                revision: revision.clone(),
            }
        };
        let stream = match api.watch(&WatchParams::default(), &from.0).await {
            Ok(s) => s,
            Err(e) if status_of(&e).is_some_and(|(code, _)| code == 410) => return Err(expired()),
            Err(e) => {
                return Err(Error::unavailable(
                    format!("kubernetes {}: watch {kind} from {from}", self.server),
                    e,
                ));
            }
        };
        let server = self.server.clone();
        let kind = kind.to_owned();
        let events = stream
            .map_err(move |e| Error::unavailable(format!("kubernetes {server}: watch {kind}"), e))
            .filter_map(move |item| {
                let ar = ar.clone();
                let expired = expired.clone();
                async move {
                    match item {
                        Ok(WatchEvent::Added(o) | WatchEvent::Modified(o)) => {
                            Some(to_stored(&ar, &o).map(RawEvent::Put))
                        }
                        Ok(WatchEvent::Deleted(o)) => {
                            Some(to_stored(&ar, &o).map(|s| RawEvent::Deleted {
                                key: s.key,
                                revision: s.revision,
                            }))
                        }
                        Ok(WatchEvent::Bookmark(_)) => None,
                        Ok(WatchEvent::Error(s)) if s.code == 410 => Some(Err(expired())),
                        Ok(WatchEvent::Error(s)) => Some(Err(Error::Unavailable {
                            what: format!("watch {}: {} {}", ar.plural, s.code, s.message),
                            source: None,
                        })),
                        Err(e) => Some(Err(e)),
                    }
                }
            });
        Ok(events.boxed())
    }

    fn describe(&self) -> String {
        format!("kubernetes {}", self.server)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margay_kinds_are_custom_resources_and_core_kinds_are_kubernetes_own() {
        let pools = api_resource("ippools");
        assert_eq!(
            (pools.api_version.as_str(), pools.kind.as_str()),
            ("crd.margay.dev/v1", "IPPool")
        );
        let np = api_resource("networkpolicies");
        assert_eq!(np.api_version, "networking.k8s.io/v1");
        assert_eq!(api_resource("configmaps").api_version, "v1");
        assert_eq!(api_resource("conf-crud").kind, "ConfCrud");
    }

    #[test]
    fn opaque_values_round_trip_through_an_object() {
        let ar = api_resource("conf-crud");
        let key = Key::cluster("conf-crud", "a").unwrap();
        let mut obj = to_object(&ar, &key, b"{not json", None).unwrap();
        obj["metadata"]["resourceVersion"] = "7".into();
        let stored = to_stored(&ar, &dynamic(&key, obj).unwrap()).unwrap();
        assert_eq!(stored.value, b"{not json");
        assert_eq!(stored.revision, Revision("7".into()));
    }

    #[test]
    fn an_update_carries_the_expected_revision_and_reads_strip_it() {
        let ar = api_resource("ippools");
        let key = Key::cluster("ippools", "p").unwrap();
        let obj = to_object(
            &ar,
            &key,
            br#"{"spec":{"cidr":"10.0.0.0/8"}}"#,
            Some(&Revision("5".into())),
        )
        .unwrap();
        assert_eq!(obj["metadata"]["resourceVersion"], "5");
        assert_eq!(obj["kind"], "IPPool");
        let stored = to_stored(&ar, &dynamic(&key, obj).unwrap()).unwrap();
        let back: Value = serde_json::from_slice(&stored.value).unwrap();
        assert!(back["metadata"].get("resourceVersion").is_none());
        assert_eq!(back["spec"]["cidr"], "10.0.0.0/8");
    }
}
