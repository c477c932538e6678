//! A node runs on any network given in its `Environment`, not only TCP: here, three nodes on
//! one thread talk over the node simulator's in-memory network (channels for messages,
//! pipes for snapshot streams), with a member cut off and caught up through a snapshot once
//! it is back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use raft_client::{Environment, KvCommand, KvResponse, KvStore, NodeConfig, Peer, RaftNode};
use raft_core::{LogIndex, NodeId};

// The node simulator's network (calm here: nothing lost, a millisecond or two per message).
#[allow(dead_code)]
#[path = "node_simulation/network.rs"]
mod network;
#[allow(dead_code)]
#[path = "node_simulation/rng.rs"]
mod rng;

use network::SimNet;

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
    let net = SimNet::new(rng::Rng::new(1));
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
    net.isolate(away, &[1, 2, 3]);
    let others: BTreeMap<NodeId, RaftNode<KvResponse>> = nodes
        .iter()
        .filter(|(&id, _)| id != away)
        .map(|(&id, n)| (id, n.clone()))
        .collect();
    let mut last = 0;
    for i in 0..200u32 {
        last = put_anywhere(&others, &format!("k{i}")).await;
    }
    net.heal();
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
