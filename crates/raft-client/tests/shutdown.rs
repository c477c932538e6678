//! `RaftNode::shutdown` returns only once the node let go of everything it held: the state
//! machine (and so the files of a state machine kept in a database) and a snapshot being
//! written. A restart in the same process right after finds everything free.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use raft_client::{
    DurableConfig, DurableStore, KvCommand, NodeConfig, Peer, RaftNode, ReplicatedLog,
    SnapshotSource, StateMachine,
};
use raft_core::{Entry, LogIndex};

mod common;

use common::free_addr;

const DEADLINE: Duration = Duration::from_secs(20);

/// How long the test state machine and its snapshot take to let go of what they hold, as a
/// database closing its file or a large state being written out would.
const SLOW_RELEASE: Duration = Duration::from_millis(300);

fn single_node(dir: &std::path::Path) -> NodeConfig {
    let peers: BTreeMap<u64, Peer> = [(
        1,
        Peer {
            raft: free_addr(),
            api: None,
        },
    )]
    .into();
    NodeConfig::new(1, "shutdown-test", peers, dir)
}

/// Submits `command` until it is committed (the single node first elects itself); returns
/// its index.
async fn commit<R: Send + 'static>(node: &RaftNode<R>, command: &[u8]) -> LogIndex {
    let start = Instant::now();
    loop {
        if let Ok(c) = node.submit_command(command.to_vec()).await {
            return c.index;
        }
        assert!(start.elapsed() < DEADLINE, "nothing committed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What the test state machine and its snapshots report.
#[derive(Default)]
struct Seen {
    state_machine_dropped: AtomicBool,
    snapshot_started: AtomicBool,
    snapshot_dropped: AtomicBool,
}

/// The plain log, slow to drop; says when it was dropped. Its snapshots are slow to write
/// and say when they start and when they were dropped.
struct SlowToRelease {
    log: ReplicatedLog,
    seen: Arc<Seen>,
}

impl SlowToRelease {
    fn new() -> (Self, Arc<Seen>) {
        let seen = Arc::new(Seen::default());
        let sm = SlowToRelease {
            log: ReplicatedLog::new(),
            seen: seen.clone(),
        };
        (sm, seen)
    }
}

impl Drop for SlowToRelease {
    fn drop(&mut self) {
        std::thread::sleep(SLOW_RELEASE);
        self.seen
            .state_machine_dropped
            .store(true, Ordering::SeqCst);
    }
}

struct SlowSnapshot(Arc<Seen>);

impl SnapshotSource for SlowSnapshot {
    fn write_to(self: Box<Self>, out: &mut dyn Write) -> std::io::Result<()> {
        self.0.snapshot_started.store(true, Ordering::SeqCst);
        std::thread::sleep(SLOW_RELEASE);
        out.write_all(b"state")
    }
}

impl Drop for SlowSnapshot {
    fn drop(&mut self) {
        self.0.snapshot_dropped.store(true, Ordering::SeqCst);
    }
}

#[async_trait]
impl StateMachine for SlowToRelease {
    type Response = LogIndex;

    async fn apply(&mut self, entries: &[Entry]) -> Vec<LogIndex> {
        self.log.apply(entries).await
    }

    async fn snapshot(&mut self) -> std::io::Result<Box<dyn SnapshotSource>> {
        Ok(Box::new(SlowSnapshot(self.seen.clone())))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_returns_only_once_the_state_machine_was_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = single_node(dir.path());
    cfg.snapshot.every_entries = 0;
    cfg.snapshot.every_wal_bytes = 0;
    let (sm, seen) = SlowToRelease::new();
    let node = RaftNode::start(cfg, sm).await.unwrap();
    commit(&node, b"x").await;
    node.shutdown().await;
    assert!(
        seen.state_machine_dropped.load(Ordering::SeqCst),
        "shutdown returned while the state machine was still held"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_a_snapshot_being_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = single_node(dir.path());
    cfg.snapshot.every_entries = 1;
    cfg.snapshot.scale_with_size = false;
    let (sm, seen) = SlowToRelease::new();
    let node = RaftNode::start(cfg, sm).await.unwrap();
    let start = Instant::now();
    while !seen.snapshot_started.load(Ordering::SeqCst) {
        commit(&node, b"x").await;
        assert!(start.elapsed() < DEADLINE, "no snapshot started");
    }
    node.shutdown().await;
    assert!(
        seen.snapshot_dropped.load(Ordering::SeqCst),
        "shutdown returned while a snapshot was still being written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_a_database_restarts_in_the_same_process_right_after_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("app.redb");
    let raft_dir = dir.path().join("raft");
    let mut last = 0;
    for round in 0..5 {
        let store = DurableStore::open(&store_path, DurableConfig::default())
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        let node = RaftNode::start(single_node(&raft_dir), store)
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        let put = KvCommand::Put {
            key: format!("k{round}"),
            value: "v".to_string(),
            expect: None,
        }
        .encode()
        .unwrap();
        let index = commit(&node, &put).await;
        assert!(index > last, "round {round}: the log went on");
        last = index;
        node.shutdown().await;
    }
}
