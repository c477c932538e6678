//! Snapshots on real nodes: compaction, restarts that restore from a snapshot, and a
//! follower that was away catching up through one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::free_addr;
use raft_client::{Error, KvCommand, KvReader, KvResponse, KvStore, NodeConfig, Peer, RaftNode};
use raft_core::NodeId;

const DEADLINE: Duration = Duration::from_secs(30);

struct KvCluster {
    dirs: BTreeMap<NodeId, tempfile::TempDir>,
    peers: BTreeMap<NodeId, Peer>,
    nodes: BTreeMap<NodeId, (RaftNode<KvResponse>, KvReader)>,
}

impl KvCluster {
    async fn start(n: u64) -> Self {
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .try_init();
        }
        let peers = (1..=n)
            .map(|id| {
                (
                    id,
                    Peer {
                        raft: free_addr(),
                        api: None,
                    },
                )
            })
            .collect();
        let dirs = (1..=n)
            .map(|id| (id, tempfile::tempdir().unwrap()))
            .collect();
        let mut c = KvCluster {
            dirs,
            peers,
            nodes: BTreeMap::new(),
        };
        for id in 1..=n {
            c.start_node(id).await;
        }
        c
    }

    fn config(&self, id: NodeId) -> NodeConfig {
        let mut cfg = NodeConfig::new(id, "snap-test", self.peers.clone(), self.dirs[&id].path());
        cfg.raft.election_ticks = 20;
        cfg.raft.heartbeat_ticks = 3;
        cfg.net.backoff_max = Duration::from_millis(200);
        cfg.segment_bytes = 16 << 10; // small segments, so that compaction deletes some
        cfg.snapshot.every_entries = 100;
        cfg.snapshot.tail_entries = 20;
        cfg.snapshot.chunk_bytes = 4 << 10; // many chunks even for a small map
        cfg
    }

    async fn start_node(&mut self, id: NodeId) {
        let kv = KvStore::new();
        let reader = kv.reader();
        let node = RaftNode::start(self.config(id), kv).await.unwrap();
        self.nodes.insert(id, (node, reader));
    }

    async fn stop_node(&mut self, id: NodeId) {
        if let Some((n, _)) = self.nodes.remove(&id) {
            n.shutdown().await;
        }
    }

    /// Puts `key = value` through whichever node leads, retrying until it commits.
    async fn put(&self, key: &str, value: &str) {
        let cmd = KvCommand::put(key, value).encode().unwrap();
        let start = Instant::now();
        loop {
            for (n, _) in self.nodes.values() {
                match n.submit_command(cmd.clone()).await {
                    Ok(_) => return,
                    Err(Error::NotLeader { .. }) | Err(Error::LeadershipLost) => {}
                    Err(e) => panic!("put {key}: {e}"),
                }
            }
            assert!(start.elapsed() < DEADLINE, "no leader took put {key}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until node `id`'s map has `len` keys.
    async fn wait_len(&self, id: NodeId, len: usize) {
        let start = Instant::now();
        while self.nodes[&id].1.len() < len {
            assert!(
                start.elapsed() < DEADLINE,
                "node {id} has {} keys, expected {len}",
                self.nodes[&id].1.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn snapshot_files(&self, id: NodeId) -> Vec<String> {
        std::fs::read_dir(self.dirs[&id].path().join("snapshots"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .filter(|n| n.ends_with(".snap"))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_compact_their_logs_and_a_restart_restores_from_the_snapshot() {
    let mut c = KvCluster::start(3).await;
    for i in 0..450 {
        c.put(&format!("k{i}"), &format!("v{i}")).await;
    }
    for id in 1..=3 {
        c.wait_len(id, 450).await;
    }
    // Every node snapshotted and compacted: its log starts after the first snapshots.
    for id in 1..=3 {
        let s = c.nodes[&id].0.status().await.unwrap();
        assert!(s.snapshot_index >= 300, "node {id}: {s:?}");
        assert!(s.first_index > 200, "node {id} kept its whole log: {s:?}");
        assert_eq!(
            c.snapshot_files(id).len(),
            1,
            "older snapshot files are removed"
        );
    }
    // A restart rebuilds the map from the snapshot and the log's tail.
    for id in 1..=3 {
        c.stop_node(id).await;
    }
    for id in 1..=3 {
        c.start_node(id).await;
    }
    for id in 1..=3 {
        c.wait_len(id, 450).await;
        assert_eq!(c.nodes[&id].1.get("k0"), Some("v0".into()));
        assert_eq!(c.nodes[&id].1.get("k449"), Some("v449".into()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_was_away_catches_up_through_a_snapshot() {
    let mut c = KvCluster::start(3).await;
    c.put("first", "1").await;
    // Stop a follower (any node but the one that leads).
    let leader = {
        let (n, _) = &c.nodes[&1];
        n.leader().leader.unwrap()
    };
    let away = (1..=3).find(|&id| id != leader).unwrap();
    c.stop_node(away).await;
    for i in 0..600 {
        c.put(&format!("k{i}"), &format!("{i}")).await;
    }
    let s = c.nodes[&leader].0.status().await.unwrap();
    assert!(
        s.first_index > 10,
        "the leader no longer holds what the follower lacks: {s:?}"
    );
    c.start_node(away).await;
    c.wait_len(away, 601).await;
    let s = c.nodes[&away].0.status().await.unwrap();
    assert!(
        s.snapshot_index > 100,
        "node {away} caught up without a snapshot: {s:?}"
    );
    assert_eq!(c.nodes[&away].1.get("k599"), Some("599".into()));
    assert_eq!(c.nodes[&away].1.get("first"), Some("1".into()));
    // It keeps following afterwards.
    c.put("after", "yes").await;
    c.wait_len(away, 602).await;
}

/// How many snapshots one node takes while it receives 60 large values (a 480 KiB state),
/// then 500 small writes, snapshotting every 50 entries.
/// The configuration of a one-node cluster in `dir`.
fn lone_node(dir: &std::path::Path) -> NodeConfig {
    let peers: BTreeMap<NodeId, Peer> = [(
        1,
        Peer {
            raft: free_addr(),
            api: None,
        },
    )]
    .into();
    NodeConfig::new(1, "snap-test", peers, dir)
}

async fn snapshots_taken(scale_with_size: bool) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = lone_node(dir.path());
    cfg.raft.election_ticks = 10;
    cfg.snapshot.every_entries = 50;
    cfg.snapshot.tail_entries = 10;
    cfg.snapshot.scale_with_size = scale_with_size;
    let node = RaftNode::start(cfg, KvStore::new()).await.unwrap();
    let start = Instant::now();
    while node.leader().leader != Some(1) {
        assert!(start.elapsed() < DEADLINE, "the single node did not lead");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let big = "x".repeat(8 << 10);
    for i in 0..60 {
        let cmd = KvCommand::put(format!("big{i}"), big.clone())
            .encode()
            .unwrap();
        node.submit_command(cmd).await.unwrap();
    }
    for i in 0..500 {
        let cmd = KvCommand::put("small", format!("{i}")).encode().unwrap();
        node.submit_command(cmd).await.unwrap();
    }
    // Let a snapshot in progress finish before counting.
    let start = Instant::now();
    while node.status().await.unwrap().snapshot_index == 0 {
        assert!(start.elapsed() < DEADLINE, "no snapshot at all");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let taken = node.snapshot_stats().taken;
    node.shutdown().await;
    taken
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_state_is_snapshotted_again_only_once_the_log_outgrew_its_last_snapshot() {
    let fixed = snapshots_taken(false).await;
    let scaled = snapshots_taken(true).await;
    assert!(
        fixed >= 8,
        "every 50 entries without scaling: {fixed} snapshots"
    );
    assert!(
        scaled <= 2,
        "500 small writes are far less than the 480 KiB state: {scaled} snapshots"
    );
}

/// A key-value store whose snapshots always fail (a full disk, a broken copy), counting
/// how often it is asked for one.
struct NoSnapshots {
    inner: KvStore,
    asked: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

#[async_trait::async_trait]
impl raft_client::StateMachine for NoSnapshots {
    type Response = KvResponse;
    async fn apply(&mut self, entries: &[raft_core::Entry]) -> Vec<KvResponse> {
        self.inner.apply(entries).await
    }
    async fn snapshot(&mut self) -> std::io::Result<Box<dyn raft_client::SnapshotSource>> {
        self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Err(std::io::Error::other("no space left for a copy"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_that_fails_is_tried_again_after_a_pause_not_on_every_turn() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = lone_node(dir.path());
    cfg.snapshot.every_entries = 1;
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sm = NoSnapshots {
        inner: KvStore::new(),
        asked: asked.clone(),
    };
    let node = RaftNode::start(cfg, sm).await.unwrap();
    let start = Instant::now();
    let mut written = 0;
    while written < 300 {
        assert!(start.elapsed() < DEADLINE, "the node does not take writes");
        let cmd = KvCommand::put("k", format!("{written}")).encode().unwrap();
        if node.submit_command(cmd).await.is_ok() {
            written += 1;
        }
    }
    let asked = asked.load(std::sync::atomic::Ordering::SeqCst);
    // A snapshot is due after every entry; after each failure the next waits 1 s, then
    // 2 s, 4 s...: within the 30 s these writes may take, at most 5 tries.
    assert!(
        (1..=5).contains(&asked),
        "{asked} snapshots tried for 300 writes in {:?}",
        start.elapsed()
    );
    node.shutdown().await;
}
