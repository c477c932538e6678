//! The network between members as the runtime sees it: `raft-net`'s TCP (and TLS)
//! transport, or another one given in an [`Environment`](crate::Environment) (the node
//! simulator's in-memory network).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use raft_core::{Message, NodeId};
use raft_net::{Inbound, ListenerStats, NetConfig, NetError, PeerStats, PeerStream, Transport};
use tokio::sync::mpsc;

/// What the runtime needs of a transport: messages to peers (never blocking, lossy), the
/// peer set as the membership changes, bulk streams for snapshots, and counters.
#[async_trait::async_trait]
pub trait PeerNetwork: Send + Sync + 'static {
    /// Queues `msg` for `msg.to`; false if it was dropped (unknown peer, queue full).
    fn send(&self, msg: Message) -> bool;
    /// The peers to reach, and where.
    fn set_peers(&self, peers: &BTreeMap<NodeId, SocketAddr>);
    /// The peers and their addresses.
    fn peers(&self) -> BTreeMap<NodeId, SocketAddr>;
    /// Counters per peer.
    fn stats(&self) -> BTreeMap<NodeId, PeerStats>;
    /// The listener's counters.
    fn listener_stats(&self) -> ListenerStats;
    /// A two-way stream of frames to `peer`, for a bulk transfer.
    async fn open_stream(&self, peer: NodeId) -> std::io::Result<PeerStream>;
    /// The streams peers open to this node, once: the first call gets the receiver.
    fn take_streams(&self) -> Option<mpsc::Receiver<PeerStream>>;
    /// Stops everything and waits for it.
    async fn shutdown(&self);
}

/// Connects a starting node to its peers: its network, and the queue of what it receives.
#[async_trait::async_trait]
pub trait Connect: Send + Sync + 'static {
    /// The network of the node `cfg` describes (its id, listen address and peers).
    async fn connect(&self, cfg: NetConfig) -> Result<(Arc<dyn PeerNetwork>, Inbound), NetError>;
}

/// `raft-net`'s transport: framed TCP, or mutual TLS.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tcp;

#[async_trait::async_trait]
impl Connect for Tcp {
    async fn connect(&self, cfg: NetConfig) -> Result<(Arc<dyn PeerNetwork>, Inbound), NetError> {
        let (t, inbound) = Transport::start(cfg).await?;
        Ok((Arc::new(t), inbound))
    }
}

#[async_trait::async_trait]
impl PeerNetwork for Transport {
    fn send(&self, msg: Message) -> bool {
        Transport::send(self, msg)
    }
    fn set_peers(&self, peers: &BTreeMap<NodeId, SocketAddr>) {
        Transport::set_peers(self, peers);
    }
    fn peers(&self) -> BTreeMap<NodeId, SocketAddr> {
        Transport::peers(self)
    }
    fn stats(&self) -> BTreeMap<NodeId, PeerStats> {
        Transport::stats(self)
    }
    fn listener_stats(&self) -> ListenerStats {
        Transport::listener_stats(self)
    }
    async fn open_stream(&self, peer: NodeId) -> std::io::Result<PeerStream> {
        Transport::open_stream(self, peer).await
    }
    fn take_streams(&self) -> Option<mpsc::Receiver<PeerStream>> {
        Transport::take_streams(self)
    }
    async fn shutdown(&self) {
        Transport::shutdown(self).await;
    }
}
