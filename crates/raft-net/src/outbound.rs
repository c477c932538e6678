//! One writer task per peer: owns the persistent connection, drains its queue and flushes
//! once per batch. It connects when it has something to send: after a failure it retries
//! with backoff; after the peer closed an idle connection it reconnects at its next
//! message.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use raft_core::{Message, NodeId};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::io::{BoxIo, BoxRead, BoxWrite};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::NetConfig;
use crate::error::ConnError;
use crate::frame::{encode_message, FrameCodec, HANDSHAKE_FRAME_BYTES, LENGTH_PREFIX_BYTES};
use crate::handshake::{decode_reply, encode_hello, Hello, PeerVersion, ReplyError};
use crate::inbound::keepalive;
use crate::stats::PeerCounters;

/// Messages written per flush at most.
const MAX_BATCH: usize = 1024;

type Writer = FramedWrite<BoxWrite, FrameCodec>;
type Reader = FramedRead<BoxRead, FrameCodec>;

/// A message in a peer's queue, with the bytes it holds of the queue's byte bound.
pub(crate) struct Queued {
    pub(crate) msg: Message,
    pub(crate) bytes: u64,
}

/// Takes the next message from the queue, giving its bytes back to the bound.
async fn next(rx: &mut mpsc::Receiver<Queued>, counters: &PeerCounters) -> Option<Message> {
    let q = rx.recv().await?;
    counters.queued_bytes.fetch_sub(q.bytes, Ordering::AcqRel);
    Some(q.msg)
}

fn try_next(rx: &mut mpsc::Receiver<Queued>, counters: &PeerCounters) -> Option<Message> {
    let q = rx.try_recv().ok()?;
    counters.queued_bytes.fetch_sub(q.bytes, Ordering::AcqRel);
    Some(q.msg)
}

/// Runs until cancelled or until the transport drops the queue's sender; what is still
/// queued then is dropped and given back to the byte bound.
pub(crate) async fn run_writer(
    cfg: Arc<NetConfig>,
    peer: NodeId,
    addr: SocketAddr,
    mut rx: mpsc::Receiver<Queued>,
    counters: Arc<PeerCounters>,
    cancel: CancellationToken,
) {
    write_until_done(cfg, peer, addr, &mut rx, &counters, cancel).await;
    rx.close();
    while try_next(&mut rx, &counters).is_some() {}
}

async fn write_until_done(
    cfg: Arc<NetConfig>,
    peer: NodeId,
    addr: SocketAddr,
    rx: &mut mpsc::Receiver<Queued>,
    counters: &PeerCounters,
    cancel: CancellationToken,
) {
    let mut backoff = Backoff::new(
        cfg.backoff_initial,
        cfg.backoff_max,
        cfg.id.wrapping_mul(0x9E37_79B9) ^ peer.wrapping_mul(0x85EB_CA6B) ^ u64::from(addr.port()),
    );
    // The message that made the writer (re)connect, sent first once connected.
    let mut carried: Option<Message> = None;
    loop {
        if carried.is_none() {
            // Connect only when there is something to send: an idle link costs nothing.
            carried = tokio::select! {
                _ = cancel.cancelled() => return,
                m = next(rx, counters) => match m {
                    Some(m) => Some(m),
                    None => return,
                },
            };
        }
        let connected = tokio::select! {
            _ = cancel.cancelled() => return,
            r = tokio::time::timeout(cfg.handshake_timeout, connect(&cfg, peer, addr)) => {
                r.unwrap_or(Err(ConnError::Timeout))
            }
        };
        let outcome = match connected {
            Ok((writer, reader, version)) => {
                backoff.reset();
                PeerCounters::add(&counters.connects, 1);
                counters.set_version(version);
                tracing::info!(peer, %addr, protocol = version.protocol, release = %version.release, "connected to peer");
                match write_loop(&cfg, writer, reader, rx, carried.take(), counters, &cancel).await
                {
                    Ok(()) => return, // cancelled or transport gone
                    Err(ConnError::Closed) => {
                        // The peer closed the connection (idle, or restarting): connect again
                        // at the next message, without waiting.
                        tracing::debug!(peer, %addr, "peer closed the connection");
                        continue;
                    }
                    Err(e) => e,
                }
            }
            Err(e) => e,
        };
        PeerCounters::add(&counters.connect_failures, 1);
        match &outcome {
            ConnError::Refused(reason) => {
                tracing::warn!(peer, %addr, %reason, "peer refused the connection")
            }
            e => tracing::debug!(peer, %addr, error = %e, "connection to peer failed"),
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Dials `peer` for a stream and completes the handshake.
pub(crate) async fn connect_stream(
    cfg: &NetConfig,
    peer: NodeId,
    addr: SocketAddr,
) -> std::io::Result<crate::stream::PeerStream> {
    let refused = |why: String| std::io::Error::new(std::io::ErrorKind::ConnectionRefused, why);
    let stream = dial(cfg, peer, addr).await.map_err(|e| match e {
        ConnError::Io(e) => e,
        e => refused(e.to_string()),
    })?;
    let mut framed = tokio_util::codec::Framed::new(stream, FrameCodec::new(HANDSHAKE_FRAME_BYTES));
    let mut hello = Hello::new(&cfg.cluster_id, cfg.id, peer).for_stream();
    hello.credentials = cfg.authenticator.credentials(&hello);
    let bytes = encode_hello(&hello).map_err(|e| refused(e.to_string()))?;
    framed.send(bytes::Bytes::from(bytes)).await?;
    let reply = framed
        .next()
        .await
        .ok_or_else(|| refused("the peer closed the connection".into()))??;
    match decode_reply(&reply, &cfg.version_floor) {
        Ok(_) => {
            framed.codec_mut().set_max_frame_bytes(cfg.max_frame_bytes);
            Ok(crate::stream::PeerStream::new(peer, framed))
        }
        Err(ReplyError::Refused(reason) | ReplyError::Malformed(reason)) => Err(refused(reason)),
    }
}

/// Connects to `peer` at `addr`: TCP, then TLS when configured (which must find the
/// peer's certificate naming it).
async fn dial(cfg: &NetConfig, peer: NodeId, addr: SocketAddr) -> Result<BoxIo, ConnError> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    keepalive(&stream, cfg.keepalive)?;
    match &cfg.tls {
        None => Ok(Box::new(stream)),
        Some(tls) => match tls.connect(peer, stream).await {
            Ok(s) => Ok(Box::new(s)),
            Err(e) => Err(ConnError::Refused(format!("TLS: {e}"))),
        },
    }
}

async fn connect(
    cfg: &NetConfig,
    peer: NodeId,
    addr: SocketAddr,
) -> Result<(Writer, Reader, PeerVersion), ConnError> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    keepalive(&stream, cfg.keepalive)?;
    // Plain TCP splits without a lock; TLS through tokio's split.
    let (r, w): (BoxRead, BoxWrite) = match &cfg.tls {
        None => {
            let (r, w) = stream.into_split();
            (Box::new(r), Box::new(w))
        }
        Some(tls) => match tls.connect(peer, stream).await {
            Ok(s) => {
                let (r, w) = tokio::io::split(s);
                (Box::new(r), Box::new(w))
            }
            Err(e) => return Err(ConnError::Refused(format!("TLS: {e}"))),
        },
    };
    let mut writer = FramedWrite::new(w, FrameCodec::new(cfg.max_frame_bytes));
    let mut reader = FramedRead::new(r, FrameCodec::new(HANDSHAKE_FRAME_BYTES));
    let mut hello = Hello::new(&cfg.cluster_id, cfg.id, peer);
    hello.credentials = cfg.authenticator.credentials(&hello);
    let bytes = encode_hello(&hello).map_err(|e| ConnError::Malformed(e.to_string()))?;
    writer.send(bytes::Bytes::from(bytes)).await?;
    let reply = reader.next().await.ok_or(ConnError::Closed)??;
    match decode_reply(&reply, &cfg.version_floor) {
        Ok(version) => Ok((writer, reader, version)),
        Err(ReplyError::Refused(reason)) => Err(ConnError::Refused(reason)),
        Err(ReplyError::Malformed(reason)) => Err(ConnError::Malformed(reason)),
    }
}

/// Sends `first`, then queued messages, until cancelled (`Ok`) or the connection fails or
/// is closed by the peer (`Err`).
async fn write_loop(
    cfg: &NetConfig,
    mut writer: Writer,
    reader: Reader,
    rx: &mut mpsc::Receiver<Queued>,
    mut first: Option<Message>,
    counters: &PeerCounters,
    cancel: &CancellationToken,
) -> Result<(), ConnError> {
    // The acceptor never writes after its welcome: any read completing means the
    // connection is gone (the peer closed or restarted), so reconnect at once.
    let mut raw = reader.into_inner();
    let mut probe = [0u8; 1];
    let mut batch: Vec<Message> = Vec::with_capacity(MAX_BATCH);
    loop {
        let head = match first.take() {
            Some(m) => m,
            None => tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = raw.read(&mut probe) => return Err(ConnError::Closed),
                m = next(rx, counters) => match m {
                    Some(m) => m,
                    None => return Ok(()),
                },
            },
        };
        batch.push(head);
        while batch.len() < MAX_BATCH {
            match try_next(rx, counters) {
                Some(m) => batch.push(m),
                None => break,
            }
        }
        let n = batch.len() as u64;
        let mut too_big = 0u64;
        let mut fed = 0u64;
        let write = async {
            for m in batch.drain(..) {
                let frame = match encode_message(m) {
                    Ok(f) if f.len() <= cfg.max_frame_bytes => f,
                    _ => {
                        // Counted at once, before any later message is written.
                        PeerCounters::add(&counters.msgs_dropped, 1);
                        too_big += 1;
                        continue;
                    }
                };
                let len = (frame.len() + LENGTH_PREFIX_BYTES) as u64;
                writer.feed(frame).await?;
                fed += 1;
                PeerCounters::add(&counters.msgs_sent, 1);
                PeerCounters::add(&counters.bytes_sent, len);
            }
            SinkExt::<bytes::Bytes>::flush(&mut writer).await
        };
        // A peer that stops reading must not hold this task (and shutdown) forever.
        let result = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            r = tokio::time::timeout(cfg.write_timeout, write) => r.unwrap_or_else(|_| {
                Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "write to peer timed out"))
            }),
        };
        if too_big > 0 {
            tracing::warn!(
                count = too_big,
                limit = cfg.max_frame_bytes,
                "dropped messages larger than the frame limit"
            );
        }
        if let Err(e) = result {
            batch.clear();
            // Messages never handed to the connection are lost; those handed to it may or
            // may not have arrived (they stay counted as sent).
            PeerCounters::add(&counters.msgs_dropped, n - too_big - fed);
            return Err(ConnError::Io(e));
        }
    }
}
