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
    /// Messages queued from all peers toward the node. Default 8192.
    pub recv_queue: usize,
    /// The first reconnect delay; it doubles per failure, with jitter. Default 10 ms.
    pub backoff_initial: Duration,
    /// The longest reconnect delay. Default 1 s.
    pub backoff_max: Duration,
    /// Time allowed to connect and complete the handshake. Default 3 s.
    pub handshake_timeout: Duration,
    /// Time allowed to write and flush one batch to a peer; past it the connection is
    /// considered dead (a peer that stopped reading) and is replaced. Default 10 s.
    pub write_timeout: Duration,
    /// Inbound connections open at once at most (further ones wait). Default 256.
    pub max_inbound_connections: usize,
    /// Adds and checks credentials in the handshake. Default: none.
    pub authenticator: Arc<dyn Authenticator>,
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
            recv_queue: 8192,
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(3),
            write_timeout: Duration::from_secs(10),
            max_inbound_connections: 256,
            authenticator: Arc::new(NoAuth),
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
            .finish_non_exhaustive()
    }
}
