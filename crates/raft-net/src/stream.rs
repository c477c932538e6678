//! Two-way streams of frames with a peer, beside the Raft message connections: for bulk
//! transfers (snapshots), so that they never hold up heartbeats and appends.

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use raft_core::NodeId;
use tokio_util::codec::Framed;

use crate::frame::FrameCodec;
use crate::io::BoxIo;

/// A connection with one peer, authenticated by the same handshake as message
/// connections, carrying frames both ways (up to the transport's frame limit).
pub struct PeerStream {
    peer: NodeId,
    framed: Framed<BoxIo, FrameCodec>,
}

impl PeerStream {
    pub(crate) fn new(peer: NodeId, framed: Framed<BoxIo, FrameCodec>) -> Self {
        PeerStream { peer, framed }
    }

    /// A stream with `peer` over any two-way byte stream (already authenticated): for
    /// transports other than this crate's, such as a simulated network's in-memory pipes.
    /// Frames are limited to `max_frame_bytes`.
    pub fn over<T>(peer: NodeId, io: T, max_frame_bytes: usize) -> Self
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let io: BoxIo = Box::new(io);
        PeerStream {
            peer,
            framed: Framed::new(io, FrameCodec::new(max_frame_bytes)),
        }
    }

    /// The peer at the other end.
    pub fn peer(&self) -> NodeId {
        self.peer
    }

    /// Sends one frame (and flushes it).
    pub async fn send(&mut self, frame: Bytes) -> std::io::Result<()> {
        self.framed.send(frame).await
    }

    /// The next frame; `None` when the peer closed the stream.
    pub async fn recv(&mut self) -> Option<std::io::Result<BytesMut>> {
        self.framed.next().await
    }
}

impl std::fmt::Debug for PeerStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerStream")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}
