//! A node runs on any network given in its `Environment`, not only TCP: here, three nodes on
//! one thread talk over in-memory channels (messages) and pipes (snapshot streams), with a
//! member cut off and caught up through a snapshot once it is back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raft_client::{
    Connect, Environment, KvCommand, KvResponse, KvStore, NodeConfig, Peer, PeerNetwork, RaftNode,
};
use raft_core::{LogIndex, Message, NodeId};
use raft_net::{Inbound, ListenerStats, NetConfig, NetError, PeerStats, PeerStream};
use tokio::sync::mpsc;

const FRAME: usize = 16 << 20;

/// Every node's inbox and stream queue, and the links that are cut.
#[derive(Default)]
struct Hub {
    inboxes: BTreeMap<NodeId, mpsc::Sender<(NodeId, Message)>>,
    streams: BTreeMap<NodeId, mpsc::Sender<PeerStream>>,
    cut: BTreeSet<NodeId>,
}

#[derive(Clone, Default)]
struct MemNet(Arc<Mutex<Hub>>);

struct MemPeer {
    id: NodeId,
    hub: MemNet,
    peers: Mutex<BTreeMap<NodeId, SocketAddr>>,
    streams: Mutex<Option<mpsc::Receiver<PeerStream>>>,
}

#[async_trait::async_trait]
impl Connect for MemNet {
    async fn connect(&self, cfg: NetConfig) -> Result<(Arc<dyn PeerNetwork>, Inbound), NetError> {
        let (tx, inbound) = Inbound::channel(4096);
        let (stx, srx) = mpsc::channel(8);
        {
            let mut hub = self.0.lock().unwrap();
            hub.inboxes.insert(cfg.id, tx);
            hub.streams.insert(cfg.id, stx);
        }
        let peer = MemPeer {
            id: cfg.id,
            hub: self.clone(),
            peers: Mutex::new(cfg.peers.clone()),
            streams: Mutex::new(Some(srx)),
        };
        Ok((Arc::new(peer), inbound))
    }
}

#[async_trait::async_trait]
impl PeerNetwork for MemPeer {
    fn send(&self, msg: Message) -> bool {
        let hub = self.hub.0.lock().unwrap();
        if hub.cut.contains(&self.id) || hub.cut.contains(&msg.to) {
            return false;
        }
        match hub.inboxes.get(&msg.to) {
            Some(tx) => tx.try_send((self.id, msg)).is_ok(),
            None => false,
        }
    }
    fn set_peers(&self, peers: &BTreeMap<NodeId, SocketAddr>) {
        *self.peers.lock().unwrap() = peers.clone();
    }
    fn peers(&self) -> BTreeMap<NodeId, SocketAddr> {
        self.peers.lock().unwrap().clone()
    }
    fn stats(&self) -> BTreeMap<NodeId, PeerStats> {
        BTreeMap::new()
    }
    fn listener_stats(&self) -> ListenerStats {
        ListenerStats::default()
    }
    async fn open_stream(&self, peer: NodeId) -> std::io::Result<PeerStream> {
        let to = {
            let hub = self.hub.0.lock().unwrap();
            if hub.cut.contains(&self.id) || hub.cut.contains(&peer) {
                return Err(std::io::ErrorKind::ConnectionRefused.into());
            }
            hub.streams.get(&peer).cloned()
        };
        let to = to.ok_or(std::io::ErrorKind::NotFound)?;
        let (mine, theirs) = tokio::io::duplex(1 << 16);
        to.send(PeerStream::over(self.id, theirs, FRAME))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        Ok(PeerStream::over(peer, mine, FRAME))
    }
    fn take_streams(&self) -> Option<mpsc::Receiver<PeerStream>> {
        self.streams.lock().unwrap().take()
    }
    async fn shutdown(&self) {}
}

async fn put_anywhere(nodes: &BTreeMap<NodeId, RaftNode<KvResponse>>, key: &str) -> LogIndex {
    let cmd = KvCommand::put(key, "v").encode().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for n in nodes.values() {
            if let Ok(c) = n.submit_command(cmd.clone()).await {
                return c.index;
            }
        }
        assert!(Instant::now() < deadline, "nothing committed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_cluster_on_an_in_memory_network_commits_and_catches_a_member_up_by_snapshot() {
    let net = MemNet::default();
    let peers: BTreeMap<NodeId, Peer> = (1..=3)
        .map(|id| {
            let p = Peer {
                // Never dialled: the in-memory network knows nodes by id.
                raft: SocketAddr::from(([127, 0, 0, 1], 1)),
                api: None,
            };
            (id, p)
        })
        .collect();
    let env = Environment::real().with_network(Arc::new(net.clone()));
    let mut dirs = Vec::new();
    let mut nodes = BTreeMap::new();
    for id in 1..=3 {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = NodeConfig::new(id, "mem", peers.clone(), dir.path());
        cfg.raft.election_ticks = 20;
        cfg.raft.heartbeat_ticks = 3;
        cfg.single_thread = true;
        cfg.snapshot.every_entries = 50;
        cfg.snapshot.tail_entries = 5;
        cfg.snapshot.chunk_bytes = 256;
        let node = RaftNode::start_in(cfg, KvStore::new(), env.clone())
            .await
            .unwrap();
        nodes.insert(id, node);
        dirs.push(dir);
    }
    put_anywhere(&nodes, "first").await;
    // Node 3 is cut off while the others commit enough for a snapshot or two.
    let away = 3;
    net.0.lock().unwrap().cut.insert(away);
    let others: BTreeMap<NodeId, RaftNode<KvResponse>> = nodes
        .iter()
        .filter(|(&id, _)| id != away)
        .map(|(&id, n)| (id, n.clone()))
        .collect();
    let mut last = 0;
    for i in 0..200u32 {
        last = put_anywhere(&others, &format!("k{i}")).await;
    }
    net.0.lock().unwrap().cut.clear();
    // Back, it catches up past the compacted log: through a snapshot stream.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = nodes[&away].status().await.unwrap();
        if s.applied >= last {
            assert!(s.snapshot_index > 0, "caught up without a snapshot: {s:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node {away} never caught up: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for n in nodes.values() {
        n.shutdown().await;
    }
}
