//! Talking to the lab's datastore — etcd, or the test Kubernetes API server — which listens on
//! the underlay inside the infra namespace, so every datastore call runs on a thread that
//! entered that namespace.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use margay_datastore::{Datastore, Etcd, EtcdConfig, Kubernetes, KubernetesConfig, Workloads};
use margay_harness::Netns;

use super::state::{DatastoreKind, State};

/// Runs `f` with a datastore connected to the lab's etcd or API server, inside the infra
/// namespace.
pub fn with_ds<F, Fut, T>(state: &State, f: F) -> anyhow::Result<T>
where
    F: FnOnce(Arc<dyn Datastore>) -> Fut + Send,
    Fut: Future<Output = anyhow::Result<T>> + Send,
    T: Send,
{
    with_workloads(state, |ds, _| f(ds))
}

/// As [`with_ds`], also with the lab's WorkloadEndpoints as the agents see them: stored ones in
/// etcd mode, derived from the Pods with the Kubernetes datastore.
pub fn with_workloads<F, Fut, T>(state: &State, f: F) -> anyhow::Result<T>
where
    F: FnOnce(Arc<dyn Datastore>, Workloads) -> Fut + Send,
    Fut: Future<Output = anyhow::Result<T>> + Send,
    T: Send,
{
    let ns = Netns::adopt(&state.infra)
        .with_context(|| format!("the lab's infra namespace {} is gone", state.infra))?;
    let endpoint = state.etcd_endpoint.clone();
    let kind = state.datastore;
    let kubeconfig = state.kubeconfig.clone();
    ns.block_on(async move {
        let (ds, kube): (Arc<dyn Datastore>, Option<Kubernetes>) = match kind {
            DatastoreKind::Etcdv3 => (
                Arc::new(
                    Etcd::connect(&EtcdConfig {
                        endpoints: vec![endpoint.clone()],
                        timeout: Some(Duration::from_secs(5)),
                        ..Default::default()
                    })
                    .await
                    .with_context(|| format!("cannot reach the lab's etcd at {endpoint}"))?,
                ),
                None,
            ),
            DatastoreKind::Kubernetes => {
                let kube = Kubernetes::connect(&KubernetesConfig {
                    kubeconfig,
                    timeout: Some(Duration::from_secs(5)),
                    ..Default::default()
                })
                .await
                .with_context(|| format!("cannot reach the lab's API server at {endpoint}"))?;
                (Arc::new(kube.clone()), Some(kube))
            }
        };
        let workloads = Workloads::for_datastore(Arc::clone(&ds), kube);
        f(ds, workloads).await
    })?
}
