//! Health and metrics endpoints: `/liveness`, `/readiness` and `/metrics` (Prometheus text).
//!
//! Readiness is the conjunction of named conditions that the agent's parts report (the
//! datastore has synced, the dataplane is programmed, BGP sessions are up); `/readiness` answers
//! 503 with the conditions that are not met, so `kubectl describe pod` shows why.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The agent's metrics.
#[derive(Debug)]
pub struct Metrics {
    /// Routes the agent holds in the kernel.
    pub routes: Gauge,
    /// Seconds per route apply (one batch).
    pub route_apply_seconds: Histogram,
    /// Route writes that failed, by reason class.
    pub route_failures: Counter,
    /// Local API requests (IPAM assignments and releases, endpoint changes) by operation and
    /// result.
    pub local_api_requests: Family<Vec<(String, String)>, Counter>,
    /// Periodic resyncs of the dataplane, by driver.
    pub resyncs: Family<Vec<(String, String)>, Counter>,
    /// Kernel state found changed behind the agent's back and repaired, by driver.
    pub repairs: Family<Vec<(String, String)>, Counter>,
    /// BGP sessions by peer and type: 1 when Established, else 0.
    pub bgp_peer_up: Family<Vec<(String, String)>, Gauge>,
    /// Prefixes per BGP peer by direction (received, accepted, advertised).
    pub bgp_peer_prefixes: Family<Vec<(String, String)>, Gauge>,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// The registry with every metric registered under the `margay_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("margay");
        let routes = Gauge::default();
        let route_apply_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        let route_failures = Counter::default();
        let local_api_requests = Family::<Vec<(String, String)>, Counter>::default();
        let resyncs = Family::<Vec<(String, String)>, Counter>::default();
        let repairs = Family::<Vec<(String, String)>, Counter>::default();
        let bgp_peer_up = Family::<Vec<(String, String)>, Gauge>::default();
        let bgp_peer_prefixes = Family::<Vec<(String, String)>, Gauge>::default();
        registry.register(
            "dataplane_resyncs",
            "Periodic re-reads of kernel state, by driver",
            resyncs.clone(),
        );
        registry.register(
            "dataplane_repairs",
            "Kernel state changed behind the agent's back and repaired, by driver",
            repairs.clone(),
        );
        registry.register(
            "bgp_peer_up",
            "1 when the BGP session with the peer is Established, else 0",
            bgp_peer_up.clone(),
        );
        registry.register(
            "bgp_peer_prefixes",
            "Prefixes per BGP peer: received, accepted (in the RIB) and advertised",
            bgp_peer_prefixes.clone(),
        );
        registry.register("routes", "Routes programmed by the agent", routes.clone());
        registry.register(
            "route_apply_seconds",
            "Time to apply one batch of route changes",
            route_apply_seconds.clone(),
        );
        registry.register(
            "route_failures",
            "Route writes the kernel refused",
            route_failures.clone(),
        );
        registry.register(
            "local_api_requests",
            "Local API requests by operation and result",
            local_api_requests.clone(),
        );
        Self {
            routes,
            route_apply_seconds,
            route_failures,
            local_api_requests,
            resyncs,
            repairs,
            bgp_peer_up,
            bgp_peer_prefixes,
            registry,
        }
    }

    /// Counts one resync of `driver` that repaired `repaired` items.
    pub fn resynced(&self, driver: &str, repaired: usize) {
        let l = vec![("driver".to_string(), driver.to_string())];
        self.resyncs.get_or_create(&l).inc();
        if repaired > 0 {
            self.repairs.get_or_create(&l).inc_by(repaired as u64);
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// The readiness conditions, by name.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    conditions: Arc<Mutex<BTreeMap<String, Result<(), String>>>>,
}

impl Readiness {
    /// Declares a condition, not met yet (`why` says what is awaited).
    pub fn declare(&self, name: &str, why: &str) {
        self.lock().insert(name.to_owned(), Err(why.to_owned()));
    }

    /// Marks a condition met.
    pub fn met(&self, name: &str) {
        self.lock().insert(name.to_owned(), Ok(()));
    }

    /// Marks a condition not met, with why.
    pub fn unmet(&self, name: &str, why: &str) {
        self.lock().insert(name.to_owned(), Err(why.to_owned()));
    }

    /// Whether the condition `name` is met (an undeclared condition is not).
    pub fn is_met(&self, name: &str) -> bool {
        matches!(self.lock().get(name), Some(Ok(())))
    }

    /// The conditions not met, as `name: why` lines; empty when ready.
    pub fn missing(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter_map(|(n, r)| r.as_ref().err().map(|why| format!("{n}: {why}")))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Result<(), String>>> {
        self.conditions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Clone)]
struct AppState {
    readiness: Readiness,
    metrics: Arc<Metrics>,
}

/// The router serving the three endpoints.
pub fn router(readiness: Readiness, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/liveness", get(|| async { "ok\n" }))
        .route("/readiness", get(ready))
        .route("/metrics", get(metrics_text))
        .with_state(AppState { readiness, metrics })
}

async fn ready(State(s): State<AppState>) -> impl IntoResponse {
    let missing = s.readiness.missing();
    if missing.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready:\n{}\n", missing.join("\n")),
        )
    }
}

async fn metrics_text(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

/// Binds the health and metrics ports of `config` (a port of 0 is off) and serves them until
/// `stop` turns true.
pub async fn serve(
    config: &crate::config::AgentConfig,
    readiness: &Readiness,
    metrics: &Arc<Metrics>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    for port in [config.health_port, config.metrics_port] {
        if port == 0 {
            continue;
        }
        let addr = std::net::SocketAddr::new(config.listen_address, port);
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let app = router(readiness.clone(), Arc::clone(metrics));
        let mut rx = stop.clone();
        tokio::spawn(async move {
            axum::serve(l, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_lists_what_is_missing_until_everything_is_met() {
        let r = Readiness::default();
        r.declare("datastore", "waiting for the initial sync");
        r.declare("bgp", "no session established");
        assert_eq!(
            r.missing(),
            [
                "bgp: no session established",
                "datastore: waiting for the initial sync"
            ]
        );
        r.met("datastore");
        assert!(r.is_met("datastore") && !r.is_met("bgp") && !r.is_met("undeclared"));
        r.met("bgp");
        assert!(r.missing().is_empty());
        r.unmet("bgp", "all sessions down");
        assert_eq!(r.missing(), ["bgp: all sessions down"]);
    }

    #[test]
    fn metrics_are_exposed_with_the_margay_prefix() {
        let m = Metrics::new();
        m.routes.set(6);
        m.local_api_requests
            .get_or_create(&vec![
                ("op".into(), "allocate".into()),
                ("result".into(), "ok".into()),
            ])
            .inc();
        let text = m.encode();
        assert!(text.contains("margay_routes 6"), "{text}");
        assert!(
            text.contains("margay_local_api_requests_total{op=\"allocate\",result=\"ok\"} 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
