//! A small Kubernetes API server for Margay's tests: no kube-apiserver can be installed here, so
//! the project carries one that real clients (kubectl 1.33, the Python `kubernetes` client,
//! kube-rs) accept.
//!
//! It serves discovery (`/version` as 1.37, `/api`, `/apis`, resource lists), OpenAPI v3 (the
//! index and a document per group version, enough for kubectl's `--validate=strict`),
//! CustomResourceDefinitions (which make their resources served, with the `openAPIV3Schema`
//! enforced: see [`schema`]), and a fixed set of built-in kinds ([`registry::builtins`]) that
//! are stored and never run, decoded as the 1.37 types so that unknown fields and wrong types
//! are caught (see [`builtin`]). Objects live in memory ([`store`]) under one revision counter.
//!
//! Per resource: get, list (`limit` + `continue`, label and field selectors, Table output with
//! the CRD's printer columns), watch (streamed, from a `resourceVersion`, bookmarks,
//! `sendInitialEvents`, an `ERROR` event with 410 Gone when the history is gone), create,
//! update (409 on a stale `resourceVersion`), the status subresource, patch (merge, strategic,
//! JSON patch, server-side apply: see [`patch`]), delete (with `DeleteOptions` preconditions)
//! and deletecollection. Errors are `metav1.Status` objects.
//!
//! Not done: admission, namespace lifecycle (objects may be created in a namespace that does
//! not exist; deleting a namespace leaves its objects), garbage collection, field ownership for
//! server-side apply, CEL validation rules, protobuf, client certificates.
//!
//! HTTPS is optional ([`Config::tls`], PEM files); kubectl sends a bearer token only over it.
//!
//! Tests start it in-process with [`ApiServer::start`]; the `margay-test-apiserver` binary runs
//! it alone. [`ApiServer::compact`] (or `POST /margay-test/compact`) throws away the watch
//! history, so that a watch from an older revision gets 410 Gone.

pub mod builtin;
pub mod discovery;
mod handlers;
pub mod openapi;
pub mod patch;
pub mod registry;
pub mod schema;
pub mod selector;
pub mod status;
pub mod store;
pub mod table;
pub mod tls;
mod watch;

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;
use tokio::task::JoinHandle;

use registry::Resource;
use status::ApiError;
use store::Store;

/// How to run the server.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// When set, every request but `/version` and the health checks needs
    /// `Authorization: Bearer TOKEN`.
    pub token: Option<String>,
    /// How many changes the watch history keeps.
    pub max_history: usize,
    /// How often a watch that allows bookmarks gets one.
    pub bookmark_interval: Duration,
    /// Serve HTTPS with this certificate and key (plain HTTP without).
    pub tls: Option<tls::TlsFiles>,
    /// Append one line per request to this file: `PEER METHOD PATH?QUERY` (what a test needs to
    /// check each client's calls against its RBAC role).
    pub access_log: Option<std::path::PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            token: None,
            max_history: 100_000,
            bookmark_interval: Duration::from_secs(5),
            tls: None,
            access_log: None,
        }
    }
}

/// What the handlers share.
#[derive(Debug)]
pub(crate) struct App {
    store: Store,
    resources: RwLock<Arc<Vec<Resource>>>,
    config: Config,
    addr: SocketAddr,
    counter: AtomicU64,
    hasher: RandomState,
    /// Set when the server stops: watches end, connections close.
    stopping: tokio::sync::watch::Sender<bool>,
}

impl App {
    /// The resources served now.
    fn resources(&self) -> Arc<Vec<Resource>> {
        Arc::clone(&self.resources.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Recomputes the served resources from the stored CRDs.
    fn refresh(&self) {
        let (crds, _) = self
            .store
            .list("apiextensions.k8s.io", "customresourcedefinitions", None);
        let mut all = registry::builtins();
        for crd in &crds {
            if let Ok(rs) = registry::from_crd(crd) {
                all.extend(rs);
            }
        }
        *self.resources.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(all);
    }

    /// A fresh random-looking UID.
    fn uid(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let word = |salt: u64| self.hasher.hash_one((n, salt));
        let (a, b) = (word(1), word(2));
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            b >> 52,
            b & 0xffff_ffff_ffff
        )
    }
}

/// A running server; stops when dropped.
#[derive(Debug)]
pub struct ApiServer {
    app: Arc<App>,
    task: JoinHandle<()>,
}

/// The server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Binding the address failed.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TLS files are not usable.
    #[error("cannot set up TLS")]
    Tls(#[from] tls::TlsError),
}

async fn auth(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if let Some(path) = &app.config.access_log {
        let peer = req
            .extensions()
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map(|c| c.0.to_string())
            .unwrap_or_else(|| "-".into());
        let line = format!(
            "{peer} {} {}\n",
            req.method(),
            req.uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/")
        );
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the access log");
        }
    }
    let open = matches!(
        req.uri().path(),
        "/version" | "/healthz" | "/livez" | "/readyz"
    );
    if let (Some(token), false) = (&app.config.token, open) {
        let sent = req
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if sent != Some(token.as_str()) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(req).await
}

fn json(v: Value) -> Response {
    axum::Json(v).into_response()
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/version", get(|| async { json(discovery::version()) }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route(
            "/api",
            get(|State(app): State<Arc<App>>| async move {
                json(discovery::core_versions(&app.addr.to_string()))
            }),
        )
        .route(
            "/apis",
            get(|State(app): State<Arc<App>>| async move {
                json(discovery::groups(&app.resources()))
            }),
        )
        .route(
            "/openapi/v3",
            get(|State(app): State<Arc<App>>| async move {
                json(openapi::index(&app.resources()))
            }),
        )
        .route("/openapi/v3/{*path}", get(openapi_doc))
        .route(
            "/margay-test/compact",
            post(|State(app): State<Arc<App>>| async move {
                app.store.compact();
                json(serde_json::json!({"compactedAt": app.store.revision()}))
            }),
        )
        .fallback(handlers::resource)
        .layer(middleware::from_fn_with_state(Arc::clone(&app), auth))
        .with_state(app)
}

async fn openapi_doc(
    State(app): State<Arc<App>>,
    axum::extract::Path(path): axum::extract::Path<String>,
) -> Response {
    let parts: Vec<&str> = path.split('/').collect();
    let doc = match parts.as_slice() {
        ["api", v] => openapi::document(&app.resources(), "", v),
        ["apis", g, v] => openapi::document(&app.resources(), g, v),
        _ => None,
    };
    match doc {
        Some(d) => json(d),
        None => ApiError::no_such_path().into_response(),
    }
}

impl ApiServer {
    /// Binds and starts serving in the background (needs a tokio runtime).
    pub async fn start(config: Config) -> Result<Self, StartError> {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| StartError::Listen {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })?;
        let acceptor = config.tls.as_ref().map(tls::acceptor).transpose()?;
        let app = Arc::new(App {
            store: Store::new(config.max_history),
            resources: RwLock::new(Arc::new(registry::builtins())),
            config,
            addr,
            counter: AtomicU64::new(0),
            hasher: RandomState::new(),
            stopping: tokio::sync::watch::Sender::new(false),
        });
        handlers::seed(&app);
        let service = router(Arc::clone(&app));
        let mut stopping = app.stopping.subscribe();
        let stopped = async move {
            let _ = stopping.wait_for(|s| *s).await;
        };
        let task = tokio::spawn(async move {
            let served = match acceptor {
                Some(acceptor) => {
                    let tls = tls::TlsListener {
                        tcp: listener,
                        acceptor,
                    };
                    // (No peer address over TLS: the access log says `-`.)
                    axum::serve(tls, service)
                        .with_graceful_shutdown(stopped)
                        .await
                }
                None => {
                    axum::serve(
                        listener,
                        service.into_make_service_with_connect_info::<SocketAddr>(),
                    )
                    .with_graceful_shutdown(stopped)
                    .await
                }
            };
            if let Err(e) = served {
                tracing::error!(error = %e, "test apiserver stopped");
            }
        });
        tracing::info!(%addr, "test apiserver listening");
        Ok(Self { app, task })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.app.addr
    }

    /// `http://ADDR`, or `https://ADDR` with TLS.
    pub fn url(&self) -> String {
        let scheme = if self.app.config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.app.addr)
    }

    /// Throws away the watch history: a watch from any earlier revision gets 410 Gone.
    pub fn compact(&self) {
        self.app.store.compact();
    }

    /// Stores an object as it is, with no validation, as a writer behind the server's back
    /// would (a test of how clients take bad data). `group` is empty for the core group.
    pub fn put_unchecked(
        &self,
        group: &str,
        plural: &str,
        namespace: Option<&str>,
        name: &str,
        object: Value,
    ) {
        let key = store::ObjKey {
            group: group.into(),
            plural: plural.into(),
            namespace: namespace.unwrap_or_default().into(),
            name: name.into(),
        };
        let _ = self
            .app
            .store
            .write(&key, |_| Ok((store::Write::Put(object), ())));
    }

    /// The current store revision.
    pub fn revision(&self) -> u64 {
        self.app.store.revision()
    }

    /// A kubeconfig that points at this server (with the bearer token, if one is set, and the
    /// CA with TLS).
    pub fn kubeconfig(&self) -> String {
        let ca = match &self.app.config.tls {
            Some(t) => format!(
                "    certificate-authority: {}\n",
                t.ca.as_ref().unwrap_or(&t.cert).display()
            ),
            None => String::new(),
        };
        let user = match &self.app.config.token {
            Some(t) => format!("  user:\n    token: {t}\n"),
            None => "  user: {}\n".to_owned(),
        };
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: margay-test\n  cluster:\n    server: {}\n{ca}\
             contexts:\n- name: margay-test\n  context:\n    cluster: margay-test\n    user: margay-test\n\
             current-context: margay-test\nusers:\n- name: margay-test\n{user}",
            self.url()
        )
    }

    /// Stops serving: watches end and every connection closes, as when a real server goes
    /// away. Returns once it has stopped (at most a few seconds).
    pub async fn stop(mut self) {
        self.app.stopping.send_replace(true);
        // Drop aborts what has not finished by then.
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.app.stopping.send_replace(true);
        self.task.abort();
    }
}
