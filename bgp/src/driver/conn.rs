//! One TCP connection: a reader task that frames and decodes messages, and a writer
//! task that drains a queue of encoded buffers.

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::task::JoinHandle;

use crate::fsm::ConnId;
use crate::wire::{Codec, DecodeError, Message, frame};

/// What a connection reports to its peer task.
#[derive(Debug)]
pub(crate) enum ConnEvent {
    /// Our connect succeeded.
    Connected(ConnId, TcpStream),
    /// Our connect failed.
    ConnectFailed(ConnId, std::io::Error),
    /// Decoded messages, in order.
    Messages(ConnId, Vec<Message>),
    /// A message could not be decoded; reading stopped.
    DecodeError(ConnId, DecodeError),
    /// The peer closed the connection or it failed.
    Closed(ConnId, Option<std::io::Error>),
}

/// The peer task's handle on a connection.
#[derive(Debug)]
pub(crate) struct Conn {
    pub tx: UnboundedSender<Bytes>,
    pub local: std::net::SocketAddr,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl Conn {
    /// Splits `stream` and starts its reader and writer.
    pub fn start(
        id: ConnId,
        stream: TcpStream,
        events: UnboundedSender<ConnEvent>,
    ) -> std::io::Result<Conn> {
        stream.set_nodelay(true)?;
        let local = stream.local_addr()?;
        let (rd, wr) = stream.into_split();
        let (tx, rx) = unbounded_channel();
        let reader = tokio::spawn(read_loop(id, rd, events));
        let writer = tokio::spawn(write_loop(wr, rx));
        Ok(Conn {
            tx,
            local,
            reader,
            writer,
        })
    }

    /// Stops reading at once; lets queued writes (a NOTIFICATION) go out for up to
    /// five seconds, then closes.
    pub fn close(self) {
        self.reader.abort();
        drop(self.tx);
        let mut writer = self.writer;
        tokio::spawn(async move {
            if tokio::time::timeout(std::time::Duration::from_secs(5), &mut writer)
                .await
                .is_err()
            {
                writer.abort();
            }
        });
    }
}

async fn read_loop(id: ConnId, mut rd: OwnedReadHalf, events: UnboundedSender<ConnEvent>) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    // We always offer 4-octet AS, so the peer's OPEN decides the UPDATE format.
    let mut codec = Codec::default();
    loop {
        if buf.capacity() - buf.len() < 8192 {
            buf.reserve(64 * 1024);
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) => {
                let _ = events.send(ConnEvent::Closed(id, None));
                return;
            }
            Err(e) => {
                let _ = events.send(ConnEvent::Closed(id, Some(e)));
                return;
            }
            Ok(_) => {}
        }
        let mut msgs = Vec::new();
        let mut error = None;
        loop {
            match frame(&buf) {
                Ok(None) => break,
                Ok(Some((_, len))) => {
                    let m = Message::decode(&buf[..len], codec);
                    buf.advance(len);
                    match m {
                        Ok(m) => {
                            if let Message::Open(o) = &m {
                                codec.four_octet_as = o.four_octet_as();
                            }
                            msgs.push(m);
                        }
                        Err(e) => {
                            error = Some(e);
                            break;
                        }
                    }
                }
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        if !msgs.is_empty() {
            let _ = events.send(ConnEvent::Messages(id, msgs));
        }
        if let Some(e) = error {
            let _ = events.send(ConnEvent::DecodeError(id, e));
            return;
        }
    }
}

async fn write_loop(mut wr: OwnedWriteHalf, mut rx: UnboundedReceiver<Bytes>) {
    while let Some(b) = rx.recv().await {
        if wr.write_all(&b).await.is_err() {
            return;
        }
    }
    let _ = wr.shutdown().await;
}
