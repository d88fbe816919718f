//! The agent's live settings from `AgentConfiguration` (`default`, then `node.NODE` over it).
//!
//! The drivers read the current value from a watch channel whenever they arm a timer, so a
//! changed refresh interval applies from the next tick without a restart. An object with a bad
//! value is reported and the last good settings stay in force.

use std::sync::Arc;

use futures::StreamExt;
use margay_api::{AgentConfiguration, AgentSettings};
use margay_datastore::{Backoff, Datastore, Event, Typed};
use tokio::sync::watch;
use tracing::{info, warn};

/// Current settings; `changed()` wakes on every effective change.
pub type Settings = watch::Receiver<AgentSettings>;

/// Reads the settings of `node` and keeps them current in the background.
pub async fn follow(ds: &Arc<dyn Datastore>, node: &str) -> Settings {
    let typed = Typed::<AgentConfiguration>::new(Arc::clone(ds));
    let initial = match typed.list(None).await {
        Ok((objs, _)) => resolve_or_default(&objs, node),
        Err(e) => {
            warn!(error = %e, "cannot list AgentConfigurations; built-in defaults until the watch syncs");
            builtin()
        }
    };
    let (tx, rx) = watch::channel(initial);
    let node = node.to_owned();
    tokio::spawn(async move {
        let mut objs: std::collections::BTreeMap<String, AgentConfiguration> = Default::default();
        let mut synced = false;
        let mut watch = typed.watch(Backoff::default());
        while let Some(ev) = watch.next().await {
            match ev {
                Ok(Event::Added(o) | Event::Modified(o)) => {
                    objs.insert(o.metadata.name.clone().unwrap_or_default(), o);
                }
                Ok(Event::Deleted(k)) => {
                    objs.remove(&k.name);
                }
                Ok(Event::Synced) => synced = true,
                Err(e) => {
                    warn!(error = %e, "AgentConfiguration watch");
                    continue;
                }
            }
            if !synced {
                continue;
            }
            let list: Vec<AgentConfiguration> = objs.values().cloned().collect();
            match AgentSettings::resolve(&list, &node) {
                Ok(s) => {
                    if *tx.borrow() != s {
                        info!(settings = ?s, "AgentConfiguration changed");
                        let _ = tx.send(s);
                    }
                }
                Err(e) => warn!(
                    error = %e,
                    "AgentConfiguration has an invalid value; keeping the previous settings (fix the object, e.g. `margayctl get agentconfiguration -o yaml`)"
                ),
            }
        }
    });
    rx
}

fn builtin() -> AgentSettings {
    AgentSettings::resolve([], "").expect("the built-in defaults are valid")
}

fn resolve_or_default(objs: &[AgentConfiguration], node: &str) -> AgentSettings {
    AgentSettings::resolve(objs, node).unwrap_or_else(|e| {
        warn!(error = %e, "AgentConfiguration has an invalid value; using the built-in defaults");
        builtin()
    })
}
