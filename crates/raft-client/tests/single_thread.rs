//! `NodeConfig::single_thread`: a node's tasks run on the caller's runtime, and its
//! blocking work in place, instead of on a runtime of its own. (Alone in its test binary:
//! it counts the process's threads.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use raft_client::{NodeConfig, Peer, RaftNode, ReplicatedLog};
use raft_core::{LogIndex, NodeId};

mod common;

/// The process's threads named like a node's own runtime (`raft-node-<id>`).
fn node_runtime_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("raft-node-"))
        .count()
}

async fn cluster(
    n: u64,
    single_thread: bool,
) -> (Vec<tempfile::TempDir>, BTreeMap<NodeId, RaftNode<LogIndex>>) {
    let peers: BTreeMap<NodeId, Peer> = (1..=n)
        .map(|id| {
            let p = Peer {
                raft: common::free_addr(),
                api: None,
            };
            (id, p)
        })
        .collect();
    let mut dirs = Vec::new();
    let mut nodes = BTreeMap::new();
    for id in 1..=n {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = NodeConfig::new(id, "single", peers.clone(), dir.path());
        cfg.raft.election_ticks = 20;
        cfg.raft.heartbeat_ticks = 3;
        cfg.single_thread = single_thread;
        nodes.insert(
            id,
            RaftNode::start(cfg, ReplicatedLog::new()).await.unwrap(),
        );
        dirs.push(dir);
    }
    (dirs, nodes)
}

/// Submits `data` until some node takes it as leader and commits it.
async fn commit_somewhere(nodes: &BTreeMap<NodeId, RaftNode<LogIndex>>, data: u8) -> LogIndex {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for n in nodes.values() {
            if let Ok(c) = n.submit(vec![data]).await {
                return c.index;
            }
        }
        assert!(Instant::now() < deadline, "nothing committed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn single_thread_nodes_make_no_runtime_of_their_own_and_still_elect_and_commit() {
    let (_dirs, nodes) = cluster(3, true).await;
    let mut last = 0;
    for i in 0..20u8 {
        last = commit_somewhere(&nodes, i).await;
    }
    assert!(last >= 20);
    assert_eq!(node_runtime_threads(), 0);
    for n in nodes.values() {
        n.shutdown().await;
    }
    // The control: a node as usual has its own runtime.
    let (_dirs, nodes) = cluster(1, false).await;
    commit_somewhere(&nodes, 1).await;
    assert!(node_runtime_threads() >= 1);
}
