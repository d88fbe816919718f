//! Watches: a stream of `{"type": "ADDED|MODIFIED|DELETED|BOOKMARK|ERROR", "object": …}` lines.
//!
//! With no `resourceVersion` (or `0`, or `sendInitialEvents=true`) the watch starts with an
//! `ADDED` for every object; from a revision it sends the changes after it, or a single
//! `ERROR` event carrying a 410 `Expired` Status when that part of the history is gone (as the
//! apiserver does). Bookmarks (`allowWatchBookmarks=true`) come every
//! [`super::Config::bookmark_interval`], and after the initial events when asked for them.
//! A watch ends after `timeoutSeconds` (default 30 minutes) or when the client goes away.
//! Selectors filter events by the object as it is after the change: an object that stops
//! matching is not reported as `DELETED`, as a real apiserver would.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header::CONTENT_TYPE;
use axum::response::Response;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use super::App;
use super::handlers::Target;
use super::handlers::read::selectors;
use super::selector::Selector;
use super::status::{ApiError, ApiResult};
use super::store::WatchStart;
use super::table::{table, wants_table};

struct Stream {
    target: Target,
    labels: Selector,
    fields: Selector,
    table: bool,
    tx: mpsc::Sender<Bytes>,
}

impl Stream {
    fn wanted(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }

    async fn send(&self, kind: &str, obj: Value) -> bool {
        let object = if self.table && kind != "BOOKMARK" && kind != "ERROR" {
            let rv = obj["metadata"]["resourceVersion"].clone();
            table(&self.target.res, &[obj], json!({"resourceVersion": rv}))
        } else {
            obj
        };
        let mut line = json!({"type": kind, "object": object}).to_string();
        line.push('\n');
        self.tx.send(Bytes::from(line)).await.is_ok()
    }

    async fn bookmark(&self, rev: u64, initial_end: bool) -> bool {
        let mut meta = json!({"resourceVersion": rev.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let res = &self.target.res;
        let obj = json!({"kind": res.kind, "apiVersion": res.api_version(), "metadata": meta});
        self.send("BOOKMARK", obj).await
    }
}

fn flag(q: &super::handlers::Query, name: &str) -> bool {
    q.get(name).is_some_and(|v| v == "true" || v == "1")
}

/// `GET …/PLURAL?watch=true`.
pub(crate) fn serve(
    app: &Arc<App>,
    t: &Target,
    q: &super::handlers::Query,
    accept: Option<&str>,
) -> ApiResult<Response> {
    let (labels, fields) = selectors(q)?;
    let initial_events = flag(q, "sendInitialEvents");
    let bookmarks = flag(q, "allowWatchBookmarks");
    let from =
        match q.get("resourceVersion").map(String::as_str) {
            _ if initial_events => None,
            None | Some("" | "0") => None,
            Some(rv) => Some(rv.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!("resourceVersion {rv:?} is not valid"))
            })?),
        };
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let stream = Stream {
        target: t.clone(),
        labels,
        fields,
        table: wants_table(accept),
        tx,
    };
    let started = app
        .store
        .watch(&t.res.group, &t.res.plural, t.namespace.as_deref(), from);
    let interval = app.config.bookmark_interval;
    let mut stopping = app.stopping.subscribe();
    tokio::spawn(async move {
        let watch = async {
            match started {
                Err(e) => {
                    stream.send("ERROR", e.to_status()).await;
                }
                Ok((start, changes)) => {
                    let opts = (from, initial_events, bookmarks, interval, timeout);
                    run(stream, start, changes, opts).await;
                }
            }
        };
        // A stopping server ends its watches, so that their connections close.
        tokio::select! {
            _ = watch => {}
            _ = stopping.wait_for(|s| *s) => {}
        }
    });
    let body = Body::from_stream(
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) })
            .map(Ok::<_, Infallible>),
    );
    Response::builder()
        .header(CONTENT_TYPE, "application/json")
        .body(body)
        .map_err(|e| ApiError::new(500, "InternalError", e.to_string()))
}

/// Where a watch starts and how it behaves: `(from, sendInitialEvents, allowWatchBookmarks,
/// bookmark interval, timeout)`.
type RunOpts = (Option<u64>, bool, bool, Duration, Duration);

async fn run(
    s: Stream,
    start: WatchStart,
    mut changes: broadcast::Receiver<Arc<super::store::Change>>,
    (from, initial_events, bookmarks, interval, timeout): RunOpts,
) {
    let mut at = from.unwrap_or(0);
    match start {
        WatchStart::Now { objects, rev } => {
            at = rev;
            for obj in objects {
                if s.wanted(&obj) && !s.send("ADDED", obj).await {
                    return;
                }
            }
            if initial_events && bookmarks && !s.bookmark(at, true).await {
                return;
            }
        }
        WatchStart::After(history) => {
            for c in history {
                at = c.rev;
                if s.matches_change(&c) && !s.send(c.kind.as_str(), c.object.clone()).await {
                    return;
                }
            }
        }
    }
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = s.tx.closed() => return,
            _ = &mut deadline => return,
            _ = tick.tick(), if bookmarks => {
                if !s.bookmark(at, false).await {
                    return;
                }
            }
            change = changes.recv() => match change {
                Ok(c) => {
                    if c.rev <= at {
                        continue;
                    }
                    at = c.rev;
                    if s.matches_change(&c) && !s.send(c.kind.as_str(), c.object.clone()).await {
                        return;
                    }
                }
                // A watcher that fell behind the broadcast ends; the client resumes from its
                // last revision out of the history.
                Err(_) => return,
            },
        }
    }
}

impl Stream {
    fn matches_change(&self, c: &super::store::Change) -> bool {
        let res = &self.target.res;
        c.key.group == res.group
            && c.key.plural == res.plural
            && self
                .target
                .namespace
                .as_ref()
                .is_none_or(|ns| *ns == c.key.namespace)
            && self.wanted(&c.object)
    }
}
