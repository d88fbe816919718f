//! Talking to the lab's etcd: it listens on the underlay inside the infra namespace, so every
//! datastore call runs on a thread that entered that namespace.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use margay_datastore::{Datastore, Etcd, EtcdConfig};
use margay_harness::Netns;

use super::state::State;

/// Runs `f` with a datastore connected to the lab's etcd, inside the infra namespace.
pub fn with_ds<F, Fut, T>(state: &State, f: F) -> anyhow::Result<T>
where
    F: FnOnce(Arc<dyn Datastore>) -> Fut + Send,
    Fut: Future<Output = anyhow::Result<T>> + Send,
    T: Send,
{
    let ns = Netns::adopt(&state.infra)
        .with_context(|| format!("the lab's infra namespace {} is gone", state.infra))?;
    let endpoint = state.etcd_endpoint.clone();
    ns.block_on(async move {
        let ds = Etcd::connect(&EtcdConfig {
            endpoints: vec![endpoint.clone()],
            timeout: Some(Duration::from_secs(5)),
            ..Default::default()
        })
        .await
        .with_context(|| format!("cannot reach the lab's etcd at {endpoint}"))?;
        f(Arc::new(ds)).await
    })?
}
