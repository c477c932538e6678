//! The accept loop and one reader task per connection.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use raft_core::{Message, NodeId};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::NetConfig;
use crate::error::ConnError;
use crate::frame::{decode_message, length_codec, HANDSHAKE_FRAME_BYTES, LENGTH_PREFIX_BYTES};
use crate::handshake::{Hello, HelloReply};
use crate::stats::PeerCounters;
use crate::transport::Counters;

pub(crate) async fn run_acceptor(
    cfg: Arc<NetConfig>,
    listener: TcpListener,
    inbound: mpsc::Sender<(NodeId, Message)>,
    counters: Counters,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(cfg.max_inbound_connections.max(1)));
    loop {
        let permit = tokio::select! {
            _ = cancel.cancelled() => return,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (stream, addr) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let cfg = cfg.clone();
        let inbound = inbound.clone();
        let counters = counters.clone();
        let cancel = cancel.clone();
        tracker.spawn(async move {
            let _permit = permit;
            match serve(&cfg, stream, &inbound, &counters, &cancel).await {
                Ok(()) => {}
                Err(ConnError::Closed) => tracing::debug!(%addr, "peer closed its connection"),
                Err(e) => tracing::warn!(%addr, reason = %e, "closed inbound connection"),
            }
        });
    }
}

/// Handshake, then read messages until the connection ends or is found bad.
async fn serve(
    cfg: &NetConfig,
    stream: TcpStream,
    inbound: &mpsc::Sender<(NodeId, Message)>,
    counters: &Counters,
    cancel: &CancellationToken,
) -> Result<(), ConnError> {
    stream.set_nodelay(true)?;
    let mut framed = Framed::new(stream, length_codec(HANDSHAKE_FRAME_BYTES));
    let first = tokio::select! {
        _ = cancel.cancelled() => return Ok(()),
        f = tokio::time::timeout(cfg.handshake_timeout, framed.next()) => f,
    };
    let first = first
        .map_err(|_| ConnError::Timeout)?
        .ok_or(ConnError::Closed)??;
    let hello: Hello = match postcard::from_bytes(&first) {
        Ok(h) => h,
        Err(e) => return Err(ConnError::Malformed(format!("not a hello: {e}"))),
    };
    let known = |id: NodeId| counters.contains_key(&id);
    if let Err(reason) = hello.check(&cfg.cluster_id, cfg.id, known, &*cfg.authenticator) {
        let reply = postcard::to_allocvec(&HelloReply::Refused(reason.clone()))
            .map_err(|e| ConnError::Malformed(e.to_string()))?;
        // Best effort: the dialer logs the reason; the connection closes either way.
        let _ = framed.send(bytes::Bytes::from(reply)).await;
        return Err(ConnError::Refused(reason));
    }
    let welcome = postcard::to_allocvec(&HelloReply::Welcome)
        .map_err(|e| ConnError::Malformed(e.to_string()))?;
    framed.send(bytes::Bytes::from(welcome)).await?;
    // Authenticated: from now on, frames up to the configured limit.
    framed.codec_mut().set_max_frame_length(cfg.max_frame_bytes);
    let from = hello.from;
    let Some(peer_counters) = counters.get(&from) else {
        return Err(ConnError::Refused(format!(
            "node {from} is not a known peer"
        )));
    };
    tracing::debug!(peer = from, "accepted connection from peer");
    loop {
        let frame = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            f = framed.next() => match f {
                None => return Err(ConnError::Closed),
                Some(Err(e)) => return Err(ConnError::Malformed(e.to_string())),
                Some(Ok(f)) => f,
            },
        };
        let size = (frame.len() + LENGTH_PREFIX_BYTES) as u64;
        let msg = decode_message(&frame).map_err(|e| ConnError::Malformed(e.to_string()))?;
        if msg.from != from || msg.to != cfg.id {
            return Err(ConnError::Malformed(format!(
                "message from {} to {} on the connection of node {from} to node {}",
                msg.from, msg.to, cfg.id
            )));
        }
        PeerCounters::add(&peer_counters.msgs_received, 1);
        PeerCounters::add(&peer_counters.bytes_received, size);
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            r = inbound.send((from, msg)) => if r.is_err() { return Ok(()) },
        }
    }
}
