//! A framed, multiplexed TCP protocol between nodes: one connection per peer carries every
//! shard's Raft RPCs, forwarded appends and status calls, each a request frame answered by a
//! response frame with the same id, in any order. It replaces one HTTP request per RPC, whose
//! parsing and connection bookkeeping cost more than the RPCs themselves.
//!
//! Frames: `len: u32 LE` (of what follows) ‖ `id: u64 LE` ‖ then, for a request, `channel_len:
//! u16 LE` ‖ channel ‖ body; for a response, `status: u8` (0 ok, 1 refused before handling,
//! 2 failed) ‖ body.
//!
//! Invariant: a call fails as unreachable only when its request was certainly not handled (no
//! connection, or refused before handling); a connection lost after the request was written is a
//! timeout (outcome unknown).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use themis_log::seam::{NodeId, Transport, TransportError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::peer::PeerState;

/// Largest frame accepted (a Raft append carries up to 256 entries; a snapshot much more).
const FRAME_BYTES_MAX: usize = 1 << 30;

const OK: u8 = 0;
const REFUSED: u8 = 1;
const FAILED: u8 = 2;

type Pending = Arc<Mutex<BTreeMap<u64, oneshot::Sender<(u8, Bytes)>>>>;

/// One live connection to a peer.
#[derive(Debug, Clone)]
struct Connection {
    frames: mpsc::UnboundedSender<Bytes>,
    pending: Pending,
    next_id: Arc<std::sync::atomic::AtomicU64>,
    /// Set when either direction failed: the peer closed the connection (it exited, or restarts)
    /// and can no longer read what is sent on it.
    dead: Arc<std::sync::atomic::AtomicBool>,
}

impl Connection {
    fn is_dead(&self) -> bool {
        self.dead.load(std::sync::atomic::Ordering::Acquire) || self.frames.is_closed()
    }
}

/// The client side: a connection per peer, opened on first use and again after it breaks.
#[derive(Debug, Default)]
pub struct TcpTransport {
    peers: Mutex<BTreeMap<NodeId, String>>,
    connections: tokio::sync::Mutex<BTreeMap<NodeId, Connection>>,
}

impl TcpTransport {
    /// Learns the peer addresses.
    pub fn set_peers(&self, peers: BTreeMap<NodeId, String>) {
        *self.peers.lock().expect("peers lock") = peers;
    }

    async fn connection(&self, to: NodeId) -> Result<Connection, TransportError> {
        let mut connections = self.connections.lock().await;
        if let Some(c) = connections.get(&to)
            && !c.is_dead()
        {
            return Ok(c.clone());
        }
        let address = self.peers.lock().expect("peers lock").get(&to).cloned();
        let address = address.ok_or_else(|| {
            TransportError::Unreachable(to, "no address is known for this node".into())
        })?;
        let stream = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(&address))
            .await
            .map_err(|_| {
                TransportError::Unreachable(to, format!("connect to {address} timed out"))
            })?
            .map_err(|e| TransportError::Unreachable(to, format!("connect to {address}: {e}")))?;
        let _ = stream.set_nodelay(true);
        let (reader, mut writer) = stream.into_split();
        let mut reader = tokio::io::BufReader::with_capacity(64 << 10, reader);
        let (frames, mut outgoing) = mpsc::unbounded_channel::<Bytes>();
        let pending: Pending = Arc::default();
        let dead = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let write_dead = dead.clone();
        tokio::spawn(async move {
            let _ = write_frames(&mut writer, &mut outgoing).await;
            write_dead.store(true, std::sync::atomic::Ordering::Release);
        });
        let answers = pending.clone();
        let read_dead = dead.clone();
        tokio::spawn(async move {
            loop {
                let Ok(frame) = read_frame(&mut reader).await else {
                    break;
                };
                let mut frame = frame;
                if frame.len() < 9 {
                    break;
                }
                let id = frame.get_u64_le();
                let status = frame.get_u8();
                let waiter = answers.lock().expect("pending lock").remove(&id);
                if let Some(waiter) = waiter {
                    let _ = waiter.send((status, frame.freeze()));
                }
            }
            // The connection is gone: mark it before failing the calls still waiting (their
            // outcome is unknown), so a call that registers after this sees it.
            read_dead.store(true, std::sync::atomic::Ordering::Release);
            answers.lock().expect("pending lock").clear();
        });
        let connection = Connection {
            frames,
            pending,
            next_id: Arc::default(),
            dead,
        };
        connections.insert(to, connection.clone());
        Ok(connection)
    }
}

/// Bytes of queued frames written with one call at the most.
const WRITE_BATCH_BYTES: usize = 1 << 20;

/// Writes queued frames until the queue closes or a write fails; frames queued together (many
/// shards' RPCs, many answers) go out in one write.
async fn write_frames(
    writer: &mut (impl AsyncWriteExt + Unpin),
    outgoing: &mut mpsc::UnboundedReceiver<Bytes>,
) -> std::io::Result<()> {
    let mut batch = BytesMut::new();
    while let Some(frame) = outgoing.recv().await {
        batch.clear();
        batch.extend_from_slice(&frame);
        while batch.len() < WRITE_BATCH_BYTES {
            match outgoing.try_recv() {
                Ok(frame) => batch.extend_from_slice(&frame),
                Err(_) => break,
            }
        }
        writer.write_all(&batch).await?;
    }
    Ok(())
}

async fn read_frame(reader: &mut (impl AsyncReadExt + Unpin)) -> std::io::Result<BytesMut> {
    let len = reader.read_u32_le().await? as usize;
    if len > FRAME_BYTES_MAX {
        return Err(std::io::Error::other(format!("frame of {len} bytes")));
    }
    let mut frame = BytesMut::zeroed(len);
    reader.read_exact(&mut frame).await?;
    Ok(frame)
}

#[async_trait]
impl Transport for TcpTransport {
    async fn call(
        &self,
        to: NodeId,
        channel: &str,
        request: Bytes,
        deadline: Duration,
    ) -> Result<Bytes, TransportError> {
        let connection = self.connection(to).await?;
        let id = connection
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (answer, wait) = oneshot::channel();
        connection
            .pending
            .lock()
            .expect("pending lock")
            .insert(id, answer);
        let mut frame = BytesMut::with_capacity(4 + 8 + 2 + channel.len() + request.len());
        frame.put_u32_le((8 + 2 + channel.len() + request.len()) as u32);
        frame.put_u64_le(id);
        frame.put_u16_le(channel.len() as u16);
        frame.put_slice(channel.as_bytes());
        frame.put_slice(&request);
        // The peer closed the connection before this call was sent: it cannot read it.
        if connection.is_dead() || connection.frames.send(frame.freeze()).is_err() {
            connection.pending.lock().expect("pending lock").remove(&id);
            return Err(TransportError::Unreachable(
                to,
                "the connection closed".into(),
            ));
        }
        match tokio::time::timeout(deadline, wait).await {
            Ok(Ok((OK, body))) => Ok(body),
            Ok(Ok((REFUSED, body))) => Err(TransportError::Unreachable(
                to,
                String::from_utf8_lossy(&body).into_owned(),
            )),
            Ok(Ok(_)) | Ok(Err(_)) => Err(TransportError::Timeout(to, deadline)),
            Err(_) => {
                connection.pending.lock().expect("pending lock").remove(&id);
                Err(TransportError::Timeout(to, deadline))
            }
        }
    }
}

/// Serves peer connections on `listener` with `state`'s log until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, state: PeerState) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let (reader, mut writer) = stream.into_split();
            let mut reader = tokio::io::BufReader::with_capacity(64 << 10, reader);
            let (frames, mut outgoing) = mpsc::unbounded_channel::<Bytes>();
            tokio::spawn(async move {
                let _ = write_frames(&mut writer, &mut outgoing).await;
            });
            while let Ok(mut frame) = read_frame(&mut reader).await {
                if frame.len() < 10 {
                    break;
                }
                let id = frame.get_u64_le();
                let channel_len = frame.get_u16_le() as usize;
                if frame.len() < channel_len {
                    break;
                }
                let channel = frame.split_to(channel_len);
                let body = frame.freeze();
                let (state, frames) = (state.clone(), frames.clone());
                tokio::spawn(async move {
                    let channel = String::from_utf8_lossy(&channel).into_owned();
                    let (status, answer) = match state.handle(&channel, body).await {
                        Ok(answer) => (OK, answer),
                        Err((refused, e)) => {
                            (if refused { REFUSED } else { FAILED }, Bytes::from(e))
                        }
                    };
                    let mut out = BytesMut::with_capacity(4 + 9 + answer.len());
                    out.put_u32_le((9 + answer.len()) as u32);
                    out.put_u64_le(id);
                    out.put_u8(status);
                    out.put_slice(&answer);
                    let _ = frames.send(out.freeze());
                });
            }
        });
    }
}
