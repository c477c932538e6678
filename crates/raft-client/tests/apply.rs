//! The state machine applies in its own task: while the leader's state machine is stuck on
//! an entry, the leader goes on accepting, replicating and committing entries and keeps
//! its followers from electing another leader; its callers are answered once the state
//! machine catches up.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use raft_client::{NodeConfig, Peer, RaftNode, ReplicatedLog, StateMachine};
use raft_core::{Entry, LogIndex, NodeId};
use tokio::sync::Notify;

mod common;

use common::free_addr;

const DEADLINE: Duration = Duration::from_secs(20);

/// A gate a state machine waits at while it is closed.
#[derive(Clone, Default)]
struct Gate {
    closed: Arc<AtomicBool>,
    /// Set once an apply waits at the closed gate.
    waiting: Arc<AtomicBool>,
    opened: Arc<Notify>,
}

impl Gate {
    fn open(&self) {
        self.closed.store(false, Ordering::SeqCst);
        self.opened.notify_waiters();
    }

    async fn pass(&self) {
        while self.closed.load(Ordering::SeqCst) {
            let opened = self.opened.notified();
            self.waiting.store(true, Ordering::SeqCst);
            if !self.closed.load(Ordering::SeqCst) {
                break;
            }
            opened.await;
        }
    }
}

/// The plain log, stopping at its gate before applying anything.
struct Gated {
    log: ReplicatedLog,
    gate: Gate,
}

#[async_trait]
impl StateMachine for Gated {
    type Response = LogIndex;

    async fn apply(&mut self, entries: &[Entry]) -> Vec<LogIndex> {
        self.gate.pass().await;
        self.log.apply(entries).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_state_machine_on_the_leader_delays_neither_replication_nor_heartbeats() {
    let peers: BTreeMap<NodeId, Peer> = (1..=3)
        .map(|id| {
            let peer = Peer {
                raft: free_addr(),
                api: None,
            };
            (id, peer)
        })
        .collect();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = BTreeMap::new();
    let mut gates = BTreeMap::new();
    for id in 1..=3u64 {
        let mut cfg = NodeConfig::new(
            id,
            "apply-test",
            peers.clone(),
            dirs[id as usize - 1].path(),
        );
        cfg.raft.election_ticks = 20; // 200-400 ms
        cfg.raft.heartbeat_ticks = 3;
        let gate = Gate::default();
        let sm = Gated {
            log: ReplicatedLog::new(),
            gate: gate.clone(),
        };
        nodes.insert(id, Arc::new(RaftNode::start(cfg, sm).await.unwrap()));
        gates.insert(id, gate);
    }
    // A leader with its first entry applied.
    let start = Instant::now();
    let (leader, first) = loop {
        assert!(start.elapsed() < DEADLINE, "no leader");
        if let Some(l) = nodes[&1].leader().leader {
            if let Ok(c) = nodes[&l].submit(b"first".to_vec()).await {
                break (l, c.index);
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let term = nodes[&leader].leader().term;

    // The leader's state machine gets stuck on the next entry.
    gates[&leader].closed.store(true, Ordering::SeqCst);
    let stuck = {
        let n = nodes[&leader].clone();
        tokio::spawn(async move { n.submit(b"stuck".to_vec()).await })
    };
    let start = Instant::now();
    while !gates[&leader].waiting.load(Ordering::SeqCst) {
        assert!(
            start.elapsed() < DEADLINE,
            "the apply never reached the gate"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // For three of the longest election timeouts, the leader keeps taking entries and the
    // followers keep committing them.
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let mut waiting = Vec::new();
    let stuck_since = Instant::now();
    let mut committed_on_follower = first;
    while stuck_since.elapsed() < Duration::from_millis(1200) {
        let n = nodes[&leader].clone();
        waiting.push(tokio::spawn(
            async move { n.submit(b"more".to_vec()).await },
        ));
        let target = first + 1 + waiting.len() as u64;
        let start = Instant::now();
        while nodes[&follower].status().await.unwrap().applied < target {
            assert!(
                start.elapsed() < DEADLINE,
                "entry {target} never committed on node {follower} while the leader's state machine was stuck"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        committed_on_follower = target;
    }
    for id in 1..=3 {
        let info = nodes[&id].leader();
        assert_eq!(
            (info.leader, info.term),
            (Some(leader), term),
            "node {id} saw an election while the leader's state machine was stuck"
        );
    }
    assert!(!stuck.is_finished(), "answered before it was applied");

    // Once the state machine goes on, every caller hears its entry committed.
    gates[&leader].open();
    let stuck = stuck.await.unwrap().unwrap();
    assert_eq!(stuck.index, first + 1);
    let mut indexes = Vec::new();
    for w in waiting {
        indexes.push(w.await.unwrap().unwrap().index);
    }
    indexes.sort_unstable();
    // Each caller got its own entry: the plain entries after the stuck one, in order (the
    // leader may have added one of its own meanwhile: the raise of the cluster version).
    let last = *indexes.last().unwrap();
    let expected: Vec<LogIndex> = nodes[&leader]
        .retrieve(first + 2, (last - first) as usize)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == raft_core::EntryKind::Normal && e.index <= last)
        .map(|e| e.index)
        .collect();
    assert_eq!(indexes, expected);
    assert!(last <= committed_on_follower + 1);
}
