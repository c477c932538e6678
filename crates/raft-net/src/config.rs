//! Settings of a transport.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use raft_core::NodeId;

use crate::handshake::{Authenticator, NoAuth};

/// Settings of a [`crate::Transport`].
#[derive(Clone)]
pub struct NetConfig {
    /// This node's id.
    pub id: NodeId,
    /// The cluster's id; peers of another cluster are refused.
    pub cluster_id: String,
    /// The address to listen on for peers.
    pub listen: SocketAddr,
    /// Every other node and the address it listens on. Connections from nodes not listed
    /// here are refused.
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// The largest frame accepted or sent. A larger length prefix closes the connection
    /// before anything is allocated for it. Default 16 MiB.
    pub max_frame_bytes: usize,
    /// Messages queued per peer; when full, further messages to it are dropped and counted.
    /// Default 4096.
    pub send_queue: usize,
    /// Bytes of messages queued per peer (as [`raft_core::Message::size_hint`] counts them);
    /// past it, further messages to the peer are dropped and counted (one message is always
    /// accepted into an empty queue). Default 64 MiB.
    pub send_queue_bytes: u64,
    /// Messages queued from all peers toward the node. Default 8192.
    pub recv_queue: usize,
    /// Frame bytes queued from all peers toward the node; past it, readers stop reading
    /// until the node catches up (TCP pushes back on the peers). At least
    /// `max_frame_bytes`. Default 64 MiB.
    pub recv_queue_bytes: usize,
    /// The first reconnect delay; it doubles per failure, with jitter. Default 10 ms.
    pub backoff_initial: Duration,
    /// The longest reconnect delay. Default 1 s.
    pub backoff_max: Duration,
    /// Time allowed to connect and complete the handshake. Default 3 s.
    pub handshake_timeout: Duration,
    /// Time allowed to write and flush one batch to a peer; past it the connection is
    /// considered dead (a peer that stopped reading) and is replaced. Default 10 s.
    pub write_timeout: Duration,
    /// Inbound connections still in their handshake at most, from addresses other than the
    /// peers'; past it, new connections are closed at once (and counted). Connections from
    /// a peer's IP address have their own slots (twice the number of peers, at least 8), so
    /// that strangers cannot crowd the peers out. A peer's accepted connection does not
    /// count against either (each peer has one live inbound connection: a new one replaces
    /// the old). Default 64.
    pub max_pending_handshakes: usize,
    /// Inbound connections in their handshake at once from one IP address that is not a
    /// peer's. Default 8.
    pub max_handshakes_per_ip: usize,
    /// An inbound connection on which nothing arrives for this long is closed (the peer
    /// reconnects when it next has something to send). Default 60 s.
    pub idle_timeout: Duration,
    /// TCP keepalive probes start after this much silence, and repeat at this interval,
    /// so that a peer that vanished is noticed. Default 10 s.
    pub keepalive: Duration,
    /// Adds and checks credentials in the handshake. Default: none.
    pub authenticator: Arc<dyn Authenticator>,
    /// Mutual TLS under every connection ([`crate::tls`]); `None` (the default): plain TCP,
    /// which anyone who can reach the port can use to speak as any member.
    pub tls: Option<Arc<crate::tls::PeerTls>>,
    /// The cluster version: peers of an older release line are refused, either way.
    /// Shared with the node, which raises it. Default: the initial version (any release).
    pub version_floor: crate::VersionFloor,
}

impl NetConfig {
    /// Defaults for node `id` of `cluster_id`, listening on `listen`.
    pub fn new(
        id: NodeId,
        cluster_id: impl Into<String>,
        listen: SocketAddr,
        peers: BTreeMap<NodeId, SocketAddr>,
    ) -> Self {
        NetConfig {
            id,
            cluster_id: cluster_id.into(),
            listen,
            peers,
            max_frame_bytes: 16 << 20,
            send_queue: 4096,
            send_queue_bytes: 64 << 20,
            recv_queue: 8192,
            recv_queue_bytes: 64 << 20,
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(3),
            write_timeout: Duration::from_secs(10),
            max_pending_handshakes: 64,
            max_handshakes_per_ip: 8,
            idle_timeout: Duration::from_secs(60),
            keepalive: Duration::from_secs(10),
            authenticator: Arc::new(NoAuth),
            tls: None,
            version_floor: crate::VersionFloor::default(),
        }
    }
}

impl std::fmt::Debug for NetConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetConfig")
            .field("id", &self.id)
            .field("cluster_id", &self.cluster_id)
            .field("listen", &self.listen)
            .field("peers", &self.peers)
            .field("max_frame_bytes", &self.max_frame_bytes)
            .field("send_queue", &self.send_queue)
            .field("recv_queue", &self.recv_queue)
            .field("recv_queue_bytes", &self.recv_queue_bytes)
            .field("send_queue_bytes", &self.send_queue_bytes)
            .field("max_pending_handshakes", &self.max_pending_handshakes)
            .field("idle_timeout", &self.idle_timeout)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}
