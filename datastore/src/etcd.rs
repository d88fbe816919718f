//! The etcd v3 backend.
//!
//! Layout: see [`crate::key`]. Revisions are the keys' `mod_revision`s, and a list's revision is
//! the store revision of the read, so a watch from it misses nothing. Compare-and-swap is one
//! transaction comparing `mod_revision` (or `create_revision == 0` for create); its else branch
//! reads the key so that a failure says whether the object is gone or changed. A watch from a
//! compacted revision ends with [`Error::Expired`]; [`crate::watch`] then lists again.
//!
//! The client reconnects by itself (the gRPC channel redials); calls made while etcd is down
//! fail with [`Error::Unavailable`] after `timeout`, and callers retry with back-off.

use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, KeyValue, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};
use futures::StreamExt;

use crate::error::{Error, Result};
use crate::key::{self, Key, Revision};
use crate::store::{Datastore, Listing, RawEvent, RawWatch, Stored};

/// How to reach etcd.
#[derive(Debug, Clone, Default)]
pub struct EtcdConfig {
    /// Client URLs, `http://HOST:2379` or `https://…`.
    pub endpoints: Vec<String>,
    /// CA bundle that signed etcd's certificate (TLS).
    pub ca_file: Option<PathBuf>,
    /// Client certificate (mutual TLS), with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// Client key (mutual TLS), with `cert_file`.
    pub key_file: Option<PathBuf>,
    /// User name and password (etcd's auth).
    pub user: Option<(String, String)>,
    /// Timeout of each request (default 5 s).
    pub timeout: Option<Duration>,
}

/// A datastore in etcd v3.
#[derive(Clone)]
pub struct Etcd {
    client: Client,
    endpoints: String,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

fn read(path: &PathBuf, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| Error::BadRequest(format!("cannot read etcd {what} {}: {e}", path.display())))
}

fn parse_rev(r: &Revision) -> Result<i64> {
    r.0.parse()
        .map_err(|_| Error::BadRequest(format!("revision {:?} is not an etcd revision", r.0)))
}

fn rev(n: i64) -> Revision {
    Revision(n.to_string())
}

impl Etcd {
    /// Connects to etcd. Fails with `Unavailable` if no endpoint answers within the timeout.
    pub async fn connect(config: &EtcdConfig) -> Result<Self> {
        if config.endpoints.is_empty() {
            return Err(Error::BadRequest(
                "no etcd endpoints given; set ETCD_ENDPOINTS=http://HOST:2379".into(),
            ));
        }
        let timeout = config.timeout.unwrap_or(Duration::from_secs(5));
        let mut options = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_timeout(timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        if let Some((user, password)) = &config.user {
            options = options.with_user(user.clone(), password.clone());
        }
        if config.ca_file.is_some() || config.cert_file.is_some() {
            let mut tls = etcd_client::TlsOptions::new();
            if let Some(ca) = &config.ca_file {
                tls = tls.ca_certificate(etcd_client::Certificate::from_pem(read(ca, "CA file")?));
            }
            match (&config.cert_file, &config.key_file) {
                (Some(cert), Some(key)) => {
                    tls = tls.identity(etcd_client::Identity::from_pem(
                        read(cert, "cert file")?,
                        read(key, "key file")?,
                    ));
                }
                (None, None) => {}
                _ => {
                    return Err(Error::BadRequest(
                        "etcd cert file and key file go together; set both or neither".into(),
                    ));
                }
            }
            options = options.with_tls(tls);
        }
        let endpoints = config.endpoints.join(",");
        let client = Client::connect(&config.endpoints, Some(options))
            .await
            .map_err(|e| Error::unavailable(format!("etcd {endpoints}: connect"), e))?;
        Ok(Self { client, endpoints })
    }

    fn err(&self, what: &str, key: &str, e: etcd_client::Error) -> Error {
        Error::unavailable(format!("etcd {}: {what} {key}", self.endpoints), e)
    }

    /// Compacts etcd's history up to `revision` (for tests and operators).
    pub async fn compact(&self, revision: &Revision) -> Result<()> {
        let r = parse_rev(revision)?;
        self.client
            .clone()
            .compact(r, None)
            .await
            .map_err(|e| self.err("compact", &r.to_string(), e))?;
        Ok(())
    }

    /// The current store revision.
    pub async fn current_revision(&self) -> Result<Revision> {
        let resp = self
            .client
            .clone()
            .get("/margay/", None)
            .await
            .map_err(|e| self.err("get", "/margay/", e))?;
        Ok(rev(resp.header().map_or(0, |h| h.revision())))
    }

    /// Writes raw bytes at a key without any check (for tests of bad data and for repairs).
    pub async fn put_raw(&self, key: &Key, value: Vec<u8>) -> Result<()> {
        let k = key::etcd_key(key);
        self.client
            .clone()
            .put(k.clone(), value, None)
            .await
            .map_err(|e| self.err("put", &k, e))?;
        Ok(())
    }
}

fn stored(kv: &KeyValue) -> Result<Stored> {
    let raw = String::from_utf8_lossy(kv.key());
    let key = key::parse_etcd_key(&raw).map_err(|e| Error::Invalid {
        key: raw.to_string(),
        why: e.to_string(),
    })?;
    Ok(Stored {
        key,
        value: kv.value().to_vec(),
        revision: rev(kv.mod_revision()),
    })
}

#[async_trait::async_trait]
impl Datastore for Etcd {
    async fn get(&self, key: &Key) -> Result<Stored> {
        let k = key::etcd_key(key);
        let resp = self
            .client
            .clone()
            .get(k.clone(), None)
            .await
            .map_err(|e| self.err("get", &k, e))?;
        match resp.kvs().first() {
            Some(kv) => stored(kv),
            None => Err(Error::NotFound(key.clone())),
        }
    }

    async fn list(&self, kind: &str, namespace: Option<&str>) -> Result<Listing> {
        let mut prefix = key::etcd_kind_prefix(kind);
        if let Some(ns) = namespace {
            prefix.push_str(ns);
            prefix.push('/');
        }
        let resp = self
            .client
            .clone()
            .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(|e| self.err("list", &prefix, e))?;
        let revision = rev(resp.header().map_or(0, |h| h.revision()));
        let mut items = Vec::with_capacity(resp.kvs().len());
        for kv in resp.kvs() {
            let item = stored(kv)?;
            // A namespaced prefix also matches `<kind>/<ns>/…` only; a cluster list of a
            // namespaced kind gets every namespace, which is what callers want.
            items.push(item);
        }
        Ok(Listing { items, revision })
    }

    async fn create(&self, key: &Key, value: Vec<u8>) -> Result<Revision> {
        let k = key::etcd_key(key);
        let txn = Txn::new()
            .when([Compare::create_revision(k.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(k.clone(), value, None)]);
        let resp = self
            .client
            .clone()
            .txn(txn)
            .await
            .map_err(|e| self.err("create", &k, e))?;
        if !resp.succeeded() {
            return Err(Error::AlreadyExists(key.clone()));
        }
        Ok(rev(resp.header().map_or(0, |h| h.revision())))
    }

    async fn update(&self, key: &Key, value: Vec<u8>, expected: &Revision) -> Result<Revision> {
        let want = parse_rev(expected)?;
        let k = key::etcd_key(key);
        let txn = Txn::new()
            .when([Compare::mod_revision(k.clone(), CompareOp::Equal, want)])
            .and_then([TxnOp::put(k.clone(), value, None)])
            .or_else([TxnOp::get(k.clone(), None)]);
        let resp = self
            .client
            .clone()
            .txn(txn)
            .await
            .map_err(|e| self.err("update", &k, e))?;
        if resp.succeeded() {
            return Ok(rev(resp.header().map_or(0, |h| h.revision())));
        }
        Err(missing_or_conflict(key, expected, &resp.op_responses()))
    }

    async fn delete(&self, key: &Key, expected: Option<&Revision>) -> Result<()> {
        let k = key::etcd_key(key);
        let compare = match expected {
            Some(r) => Compare::mod_revision(k.clone(), CompareOp::Equal, parse_rev(r)?),
            None => Compare::create_revision(k.clone(), CompareOp::Greater, 0),
        };
        let txn = Txn::new()
            .when([compare])
            .and_then([TxnOp::delete(k.clone(), None)])
            .or_else([TxnOp::get(k.clone(), None)]);
        let resp = self
            .client
            .clone()
            .txn(txn)
            .await
            .map_err(|e| self.err("delete", &k, e))?;
        if resp.succeeded() {
            return Ok(());
        }
        let expected = expected.cloned().unwrap_or(Revision(String::new()));
        Err(missing_or_conflict(key, &expected, &resp.op_responses()))
    }

    async fn watch(&self, kind: &str, from: &Revision) -> Result<RawWatch> {
        let start = parse_rev(from)?;
        let prefix = key::etcd_kind_prefix(kind);
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(start + 1);
        let mut stream = self
            .client
            .clone()
            .watch(prefix.clone(), Some(options))
            .await
            .map_err(|e| self.err("watch", &prefix, e))?;
        let kind = kind.to_owned();
        let what = format!("etcd {}: watch {prefix}", self.endpoints);
        let events = async_stream(move |tx| async move {
            // `_stream` keeps the request side (and so the watch) alive while we read.
            while let Some(msg) = stream.next().await {
                let resp = match msg {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = tx.send(Err(Error::unavailable(what.clone(), e))).await;
                        return;
                    }
                };
                if resp.compact_revision() > 0
                    || (resp.canceled() && resp.cancel_reason().contains("compact"))
                {
                    let _ = tx
                        .send(Err(Error::Expired {
                            kind: kind.clone(),
                            revision: start.to_string(),
                        }))
                        .await;
                    return;
                }
                if resp.canceled() {
                    let why = format!("{what}: canceled by etcd: {}", resp.cancel_reason());
                    let _ = tx
                        .send(Err(Error::Unavailable {
                            what: why,
                            source: None,
                        }))
                        .await;
                    return;
                }
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    let item = stored(kv).map(|s| match ev.event_type() {
                        EventType::Put => RawEvent::Put(s),
                        EventType::Delete => RawEvent::Deleted {
                            key: s.key,
                            revision: s.revision,
                        },
                    });
                    if tx.send(item).await.is_err() {
                        return;
                    }
                }
            }
            let _ = tx
                .send(Err(Error::Unavailable {
                    what: format!("{what}: stream closed"),
                    source: None,
                }))
                .await;
        });
        Ok(events)
    }

    fn describe(&self) -> String {
        format!("etcdv3 {}", self.endpoints)
    }
}

fn missing_or_conflict(key: &Key, expected: &Revision, responses: &[TxnOpResponse]) -> Error {
    let exists = responses
        .iter()
        .any(|r| matches!(r, TxnOpResponse::Get(g) if !g.kvs().is_empty()));
    if exists {
        Error::Conflict {
            key: key.clone(),
            expected: expected.0.clone(),
        }
    } else {
        Error::NotFound(key.clone())
    }
}

/// Runs `body` as a task feeding a channel, and returns the channel as a stream; the task stops
/// when the stream is dropped (its next send fails).
fn async_stream<F, Fut>(body: F) -> RawWatch
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<RawEvent>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    tokio::spawn(body(tx));
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .boxed()
}
