//! Batched rtnetlink writes on a writer thread: many messages in one `send()`, one ACK per batch,
//! and the next batch is encoded while the kernel works through the last one.
//!
//! Only the last message of a batch asks for an ACK; the kernel still answers every failed
//! message with an NLMSG_ERROR carrying its sequence number, so each failure is attributed to its
//! message. This is the practical kernel limit measured by `../shared/bench/nl_routes.py`
//! (≈250k routes/s here), against ≈60k/s for one ACK per route (`ip -batch`).
//!
//! The caller fills a [`Chunk`] (the message bodies are its own: see
//! `super::routes::encode`), hands it to the [`Writer`], and collects the outcome later, in
//! submission order, as a [`Written`]. The kernel's work runs on the writer thread; the caller's
//! (deciding and encoding the next routes) on its own, so on two cores they overlap.

use netlink_packet_core::{NLM_F_ACK, NLM_F_REQUEST, NLMSG_ERROR};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// Messages per chunk (as nl_routes.py; a chunk of route messages stays well under 200 KiB).
pub const CHUNK: usize = 1024;

/// Emptied chunks kept for reuse: enough for the writer and the encoder to take turns; the
/// rest of a burst's chunks go back to the allocator.
const SPARE: usize = 2;

/// Size of a netlink message header.
const HEADER: usize = 16;

/// A batch of netlink messages for one `send()`.
#[derive(Debug, Default)]
pub struct Chunk {
    buf: Vec<u8>,
    count: u32,
    last: usize,
}

impl Chunk {
    /// Appends one message of type `kind` with `flags` (`NLM_F_REQUEST` is added); `body` writes
    /// everything after the netlink header. Its sequence number is its 1-based index in the chunk.
    pub fn push(&mut self, kind: u16, flags: u16, body: impl FnOnce(&mut Vec<u8>)) {
        let start = self.buf.len();
        self.buf.resize(start + HEADER, 0);
        body(&mut self.buf);
        // Messages are 4-byte aligned.
        self.buf.resize(self.buf.len().next_multiple_of(4), 0);
        self.count += 1;
        let len = (self.buf.len() - start) as u32;
        let h = &mut self.buf[start..start + HEADER];
        h[0..4].copy_from_slice(&len.to_ne_bytes());
        h[4..6].copy_from_slice(&kind.to_ne_bytes());
        h[6..8].copy_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        h[8..12].copy_from_slice(&self.count.to_ne_bytes());
        h[12..16].copy_from_slice(&0u32.to_ne_bytes());
        self.last = start;
    }

    /// Messages in the chunk.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether the chunk has no message.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The bytes as they will be sent (the last message without its ACK flag yet).
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Empties the chunk, keeping its buffer.
    fn clear(&mut self) {
        self.buf.clear();
        self.count = 0;
        self.last = 0;
    }
}

/// The outcome of one chunk.
#[derive(Debug)]
pub struct Written {
    /// `(index in the chunk, errno)` of every message the kernel refused (`-ESRCH`, say).
    pub errors: Vec<(usize, i32)>,
    /// The chunk could not be sent or its answer not read: none of it is known to be applied.
    pub failed: Option<std::io::Error>,
    /// Messages in the chunk.
    pub count: usize,
}

/// The writer thread's end: chunks go in, [`Written`] outcomes come back in the same order.
#[derive(Debug)]
pub struct Writer {
    jobs: std::sync::mpsc::Sender<Chunk>,
    done: tokio::sync::mpsc::UnboundedReceiver<(Written, Chunk)>,
    /// Emptied chunks back from the thread, so their buffers are reused (at most [`SPARE`]).
    spare: Vec<Chunk>,
    in_flight: usize,
}

impl Writer {
    /// Opens a netlink socket in the calling thread's network namespace (a socket stays in the
    /// namespace it was created in) and starts the thread that writes to it; the thread ends when
    /// the writer is dropped.
    pub fn new() -> std::io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        socket.set_rx_buf_sz(4 << 20)?;
        let (jobs, rx) = std::sync::mpsc::channel::<Chunk>();
        let (tx, done) = tokio::sync::mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("margay-netlink".into())
            .stack_size(256 << 10)
            .spawn(move || {
                let mut answers = Vec::with_capacity(1 << 20);
                while let Ok(mut chunk) = rx.recv() {
                    let written = send(&socket, &mut chunk, &mut answers);
                    chunk.clear();
                    if tx.send((written, chunk)).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Self {
            jobs,
            done,
            spare: Vec::new(),
            in_flight: 0,
        })
    }

    /// An empty chunk to fill (with a reused buffer when there is one).
    pub fn chunk(&mut self) -> Chunk {
        self.spare.pop().unwrap_or_default()
    }

    /// Queues a filled chunk for the kernel. Fails only if the writer thread has died (a bug),
    /// in which case the chunk was not written.
    pub fn submit(&mut self, chunk: Chunk) -> std::io::Result<()> {
        if chunk.is_empty() {
            self.keep(chunk);
            return Ok(());
        }
        self.jobs
            .send(chunk)
            .map_err(|_| std::io::Error::other("the netlink writer thread has stopped"))?;
        self.in_flight += 1;
        Ok(())
    }

    /// The next outcome if it is ready.
    pub fn try_collect(&mut self) -> Option<Written> {
        let (w, chunk) = self.done.try_recv().ok()?;
        self.in_flight -= 1;
        self.keep(chunk);
        Some(w)
    }

    /// Waits for the next outcome; `None` when nothing is in flight.
    pub async fn collect(&mut self) -> Option<Written> {
        if self.in_flight == 0 {
            return None;
        }
        let (w, chunk) = self.done.recv().await?;
        self.in_flight -= 1;
        self.keep(chunk);
        Some(w)
    }

    fn keep(&mut self, chunk: Chunk) {
        if self.spare.len() < SPARE {
            self.spare.push(chunk);
        }
    }
}

/// Sends one chunk (ACK asked on its last message) and reads until that ACK.
fn send(socket: &Socket, chunk: &mut Chunk, answers: &mut Vec<u8>) -> Written {
    let count = chunk.len();
    let mut written = Written {
        errors: Vec::new(),
        failed: None,
        count,
    };
    let flags_at = chunk.last + 6;
    let flags = u16::from_ne_bytes([chunk.buf[flags_at], chunk.buf[flags_at + 1]]) | NLM_F_ACK;
    chunk.buf[flags_at..flags_at + 2].copy_from_slice(&flags.to_ne_bytes());
    if let Err(e) = socket.send(&chunk.buf, 0) {
        written.failed = Some(e);
        return written;
    }
    let last = chunk.count;
    loop {
        answers.clear();
        if let Err(e) = socket.recv(answers, 0) {
            written.failed = Some(e);
            return written;
        }
        let mut off = 0;
        while off + HEADER <= answers.len() {
            let h = &answers[off..];
            let len = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]) as usize;
            let kind = u16::from_ne_bytes([h[4], h[5]]);
            let seq = u32::from_ne_bytes([h[8], h[9], h[10], h[11]]);
            if len < HEADER || off + len > answers.len() {
                written.failed = Some(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("truncated netlink answer ({len} bytes at offset {off})"),
                ));
                return written;
            }
            if kind == NLMSG_ERROR && len >= HEADER + 4 {
                let code = i32::from_ne_bytes([h[16], h[17], h[18], h[19]]);
                if code != 0 && (1..=last).contains(&seq) {
                    written.errors.push(((seq - 1) as usize, code));
                }
                if seq == last {
                    return written;
                }
            }
            off += len.next_multiple_of(4);
        }
    }
}
