//! Batched rtnetlink writes: many route messages in one `send()`, one ACK per batch.
//!
//! Only the last message of a batch asks for an ACK; the kernel still answers every failed
//! message with an NLMSG_ERROR carrying its sequence number, so each failure is attributed to its
//! route. This is the practical kernel limit measured by `../shared/bench/nl_routes.py`
//! (≈250k routes/s here), against ≈60k/s for one ACK per route (`ip -batch`).

use std::collections::HashMap;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::route::RouteMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// Messages per batch (as nl_routes.py; a batch of route messages stays well under 200 KiB).
const BATCH: usize = 1024;

/// One write.
#[derive(Debug, Clone)]
pub enum RouteOp {
    /// Add or replace (`NLM_F_CREATE | NLM_F_REPLACE`).
    Replace(RouteMessage),
    /// Delete.
    Delete(RouteMessage),
}

/// A blocking rtnetlink socket bound to the network namespace it was opened in.
#[derive(Debug)]
pub struct Batcher {
    socket: Socket,
    seq: u32,
    /// The send and receive buffers, kept between batches: a fresh megabyte per batch is what
    /// made the allocator's per-thread arenas grow and keep freed memory.
    tx: Vec<u8>,
    rx: Vec<u8>,
}

impl Batcher {
    /// Opens the socket in the calling thread's network namespace. Later calls may come from any
    /// thread: a socket stays in the namespace it was created in.
    pub fn new() -> std::io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        socket.set_rx_buf_sz(4 << 20)?;
        Ok(Self {
            socket,
            seq: 0,
            tx: Vec::new(),
            rx: Vec::new(),
        })
    }

    /// Runs every op, in batches; returns one result per op, in order (`Err(errno)` as the kernel
    /// reported it, e.g. `-ESRCH` for a delete of a missing route).
    pub fn run(&mut self, ops: &[RouteOp]) -> std::io::Result<Vec<Result<(), i32>>> {
        let mut results = vec![Ok(()); ops.len()];
        for (chunk_no, chunk) in ops.chunks(BATCH).enumerate() {
            let base = chunk_no * BATCH;
            let mut buf = std::mem::take(&mut self.tx);
            buf.clear();
            let mut index_of_seq = HashMap::with_capacity(chunk.len());
            let mut last_seq = 0;
            for (i, op) in chunk.iter().enumerate() {
                self.seq = self.seq.wrapping_add(1);
                let last = i + 1 == chunk.len();
                let (payload, extra) = match op {
                    RouteOp::Replace(m) => (
                        RouteNetlinkMessage::NewRoute(m.clone()),
                        NLM_F_CREATE | NLM_F_REPLACE,
                    ),
                    RouteOp::Delete(m) => (RouteNetlinkMessage::DelRoute(m.clone()), 0),
                };
                let mut header = NetlinkHeader::default();
                header.flags = NLM_F_REQUEST | extra | if last { NLM_F_ACK } else { 0 };
                header.sequence_number = self.seq;
                let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(payload));
                msg.finalize();
                let start = buf.len();
                buf.resize(start + msg.buffer_len(), 0);
                msg.serialize(&mut buf[start..]);
                index_of_seq.insert(self.seq, base + i);
                last_seq = self.seq;
            }
            let sent = self.socket.send(&buf, 0);
            self.tx = buf;
            sent?;
            self.read_until_ack(last_seq, &index_of_seq, &mut results)?;
        }
        Ok(results)
    }

    fn read_until_ack(
        &mut self,
        last_seq: u32,
        index_of_seq: &HashMap<u32, usize>,
        results: &mut [Result<(), i32>],
    ) -> std::io::Result<()> {
        if self.rx.capacity() == 0 {
            self.rx.reserve_exact(1 << 20);
        }
        let rx = &mut self.rx;
        loop {
            rx.clear();
            self.socket.recv(rx, 0)?;
            let mut off = 0;
            while off + 16 <= rx.len() {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rx[off..]).map_err(
                    |e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
                )?;
                let len = msg.header.length as usize;
                if len == 0 {
                    break;
                }
                off += (len + 3) & !3;
                let seq = msg.header.sequence_number;
                if let NetlinkPayload::Error(e) = &msg.payload {
                    if let (Some(code), Some(&i)) = (e.code, index_of_seq.get(&seq)) {
                        results[i] = Err(code.get());
                    }
                    if seq == last_seq {
                        return Ok(());
                    }
                }
            }
        }
    }
}
