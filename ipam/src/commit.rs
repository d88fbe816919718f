//! Group commit: the writes of one block, batched.
//!
//! Every change to a block goes through that block's [`Committer`]. A caller queues its
//! [`BlockOp`] and waits for the block's write lock; whoever gets the lock first takes *every*
//! queued operation and writes them with one compare-and-swap, then hands each caller its
//! outcome. While that write is in flight, new requests queue up and the next lock holder writes
//! them all at once. With 100 pods starting on a node, a block sees a handful of writes instead
//! of 100 serialised ones, and no lock is held across a whole allocation — only per block,
//! across one write.
//!
//! The committer caches the block as last read or written (with its revision) to save a read
//! per write. The cache is replaced only by what a successful write stored or a fresh read
//! returned; a conflict empties it, and the batch is applied again to the block as read anew.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use ipnet::IpNet;
use margay_api::IPAMBlock;
use margay_datastore::{Error as DsError, Revision};
use tokio::sync::oneshot;

use crate::block::{BlockOp, OpError, Outcome, apply};
use crate::errors::{IpamError, Result};
use crate::store::Store;

/// What one queued operation got: its outcome on the block, or why the batch failed.
pub(crate) type Reply = Result<Result<Outcome, OpError>, Failure>;

/// Why a batch could not be written.
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    /// The block does not exist (any more).
    Gone,
    /// The datastore failed, or kept conflicting.
    Error(IpamError),
}

struct Queued {
    op: BlockOp,
    reply: oneshot::Sender<Reply>,
}

/// Unknown free count.
const UNKNOWN: usize = usize::MAX;

/// The serialisation point of one block's writes.
pub(crate) struct Committer {
    pub cidr: IpNet,
    name: String,
    queue: std::sync::Mutex<Vec<Queued>>,
    cache: tokio::sync::Mutex<Option<IPAMBlock>>,
    free: AtomicUsize,
    inflight: AtomicUsize,
    writes: AtomicU64,
    ops: AtomicU64,
}

impl std::fmt::Debug for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committer")
            .field("cidr", &self.cidr)
            .finish_non_exhaustive()
    }
}

impl Committer {
    fn new(cidr: IpNet) -> Self {
        Committer {
            cidr,
            name: IPAMBlock::name_for(&cidr),
            queue: std::sync::Mutex::new(Vec::new()),
            cache: tokio::sync::Mutex::new(None),
            free: AtomicUsize::new(UNKNOWN),
            inflight: AtomicUsize::new(0),
            writes: AtomicU64::new(0),
            ops: AtomicU64::new(0),
        }
    }

    /// The number of free addresses as last seen, `None` if the block has not been read.
    pub fn free_hint(&self) -> Option<usize> {
        match self.free.load(Ordering::Relaxed) {
            UNKNOWN => None,
            n => Some(n),
        }
    }

    /// How many of `want` addresses to ask this block for, given what it had free when last
    /// seen and what other requests are already asking for (0: look elsewhere). A hint: the
    /// block write decides. Pair with [`Committer::unreserve`].
    pub fn reserve(&self, want: usize) -> usize {
        let ask = match self.free_hint() {
            None => want,
            Some(free) => want.min(free.saturating_sub(self.inflight.load(Ordering::Relaxed))),
        };
        self.inflight.fetch_add(ask, Ordering::Relaxed);
        ask
    }

    /// Like [`Committer::reserve`], but asks for all of `want` unless the block was full when
    /// last seen, whatever other requests are asking for.
    pub fn reserve_unless_full(&self, want: usize) -> usize {
        let ask = if self.free_hint() == Some(0) { 0 } else { want };
        self.inflight.fetch_add(ask, Ordering::Relaxed);
        ask
    }

    /// Ends a [`Committer::reserve`].
    pub fn unreserve(&self, n: usize) {
        self.inflight.fetch_sub(n, Ordering::Relaxed);
    }

    fn note(&self, block: Option<&IPAMBlock>) {
        let free = block.map_or(0, |b| b.spec.free());
        self.free.store(free, Ordering::Relaxed);
    }

    /// Carries out `op` on the block, batched with whatever else is queued.
    pub async fn submit(&self, store: &Store, op: BlockOp) -> Reply {
        let (tx, mut rx) = oneshot::channel();
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Queued { op, reply: tx });
        let mut cache = self.cache.lock().await;
        match rx.try_recv() {
            // An earlier lock holder wrote it with its batch.
            Ok(reply) => return reply,
            Err(oneshot::error::TryRecvError::Closed) => return Err(cancelled(&self.cidr)),
            Err(oneshot::error::TryRecvError::Empty) => {}
        }
        let batch = std::mem::take(&mut *self.queue.lock().unwrap_or_else(|p| p.into_inner()));
        self.run(store, &mut cache, batch).await;
        drop(cache);
        rx.await.unwrap_or_else(|_| Err(cancelled(&self.cidr)))
    }

    async fn run(&self, store: &Store, cache: &mut Option<IPAMBlock>, batch: Vec<Queued>) {
        let ops: Vec<BlockOp> = batch.iter().map(|q| q.op.clone()).collect();
        let replies: Vec<oneshot::Sender<Reply>> = batch.into_iter().map(|q| q.reply).collect();
        let fail = |replies: Vec<oneshot::Sender<Reply>>, f: Failure| {
            for r in replies {
                let _ = r.send(Err(f.clone()));
            }
        };
        let what = || format!("writing IPAM block {}", self.cidr);
        let attempts = store.retry.attempts.max(1);
        let mut attempt = 0;
        while attempt < attempts {
            let (current, fresh) = match cache.take() {
                Some(b) => (b, false),
                None => match store.blocks.get(None, &self.name).await {
                    Ok(b) => (b, true),
                    Err(DsError::NotFound(_)) => {
                        self.note(None);
                        return fail(replies, Failure::Gone);
                    }
                    Err(e) => {
                        return fail(replies, Failure::Error(IpamError::datastore(what(), e)));
                    }
                },
            };
            let (spec, changed, results) = apply(&current.spec, &ops);
            if !changed && !fresh {
                // Nothing to write by the cached copy, which may be stale (another process
                // allocated or freed since): only a fresh read may say "nothing to do".
                continue;
            }
            if !changed {
                self.note(Some(&current));
                *cache = Some(current);
                return send(replies, results);
            }
            let mut next = current.clone();
            next.spec = spec;
            match store.blocks.update(&next).await {
                Ok(stored) => {
                    self.writes.fetch_add(1, Ordering::Relaxed);
                    self.ops.fetch_add(ops.len() as u64, Ordering::Relaxed);
                    self.note(Some(&stored));
                    *cache = Some(stored);
                    return send(replies, results);
                }
                Err(DsError::Conflict { .. }) => {
                    // A stale cache is expected (another node borrowed, margayctl released):
                    // read again at once. A conflict on a fresh read is contention: back off.
                    if fresh {
                        store.backoff(attempt).await;
                        attempt += 1;
                    }
                }
                Err(DsError::NotFound(_)) => {
                    self.note(None);
                    return fail(replies, Failure::Gone);
                }
                Err(e) => return fail(replies, Failure::Error(IpamError::datastore(what(), e))),
            }
        }
        fail(
            replies,
            Failure::Error(IpamError::TooManyConflicts {
                what: what(),
                attempts,
            }),
        )
    }

    /// Deletes the block if no address in it is allocated and it is still affine to `node`;
    /// returns whether it did. Serialised with the block's writes.
    pub async fn delete_if_empty(&self, store: &Store, node: Option<&str>) -> Result<bool> {
        let mut cache = self.cache.lock().await;
        *cache = None;
        let what = || format!("deleting empty IPAM block {}", self.cidr);
        let block = match store.blocks.get(None, &self.name).await {
            Ok(b) => b,
            Err(DsError::NotFound(_)) => {
                self.note(None);
                return Ok(true);
            }
            Err(e) => return Err(IpamError::datastore(what(), e)),
        };
        if !block.spec.is_empty() || node.is_some_and(|n| block.spec.affinity_node() != Some(n)) {
            self.note(Some(&block));
            *cache = Some(block);
            return Ok(false);
        }
        let rev = block.metadata.resource_version.clone().map(Revision);
        match store.blocks.delete(None, &self.name, rev.as_ref()).await {
            Ok(()) | Err(DsError::NotFound(_)) => {
                self.note(None);
                Ok(true)
            }
            Err(DsError::Conflict { .. }) => Ok(false),
            Err(e) => Err(IpamError::datastore(what(), e)),
        }
    }

    /// Writes and operations carried so far (operations per write is the batching factor).
    pub fn stats(&self) -> (u64, u64) {
        (
            self.writes.load(Ordering::Relaxed),
            self.ops.load(Ordering::Relaxed),
        )
    }
}

fn send(replies: Vec<oneshot::Sender<Reply>>, results: Vec<Result<Outcome, OpError>>) {
    for (r, res) in replies.into_iter().zip(results) {
        let _ = r.send(Ok(res));
    }
}

fn cancelled(cidr: &IpNet) -> Failure {
    Failure::Error(IpamError::Invalid {
        what: format!("IPAM block {cidr}"),
        why: "the write carrying this request was cancelled; its outcome is unknown".into(),
    })
}

/// The committers of every block this process writes, by CIDR.
#[derive(Debug, Default)]
pub(crate) struct Committers {
    map: std::sync::Mutex<HashMap<IpNet, Arc<Committer>>>,
}

impl Committers {
    /// The committer of `cidr`.
    pub fn get(&self, cidr: IpNet) -> Arc<Committer> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(
            map.entry(cidr)
                .or_insert_with(|| Arc::new(Committer::new(cidr))),
        )
    }

    /// Total writes and operations over every block.
    pub fn stats(&self) -> (u64, u64) {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.values()
            .map(|c| c.stats())
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    }
}
