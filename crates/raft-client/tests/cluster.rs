//! Three-node clusters on loopback TCP with real files in temporary directories.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use raft_client::{
    Error, KvCommand, KvStore, LeaderInfo, NodeConfig, Peer, RaftNode, ReplicatedLog,
};
use raft_core::{Entry, LogIndex, NodeId, Role};

mod common;

use common::free_addr;

const DEADLINE: Duration = Duration::from_secs(20);

/// Waits until `view` of the nodes' leader information gives an answer, re-checking each
/// time any node's view of the leader changes (no polling); fails after [`DEADLINE`].
async fn when_leaders<R: Send + 'static, T>(
    nodes: &[&RaftNode<R>],
    what: &str,
    mut view: impl FnMut(&[LeaderInfo]) -> Option<T>,
) -> T {
    let mut rxs: Vec<_> = nodes.iter().map(|n| n.watch_leader()).collect();
    let start = Instant::now();
    loop {
        let infos: Vec<LeaderInfo> = rxs.iter_mut().map(|r| *r.borrow_and_update()).collect();
        if let Some(t) = view(&infos) {
            return t;
        }
        let Some(left) = DEADLINE.checked_sub(start.elapsed()) else {
            panic!("{what}: {infos:?}");
        };
        let changes = rxs.iter_mut().map(|r| Box::pin(r.changed()));
        let _ = tokio::time::timeout(left, futures_util::future::select_all(changes)).await;
    }
}

/// The one leader all `infos` agree on, if they do.
fn agreed(infos: &[LeaderInfo]) -> Option<NodeId> {
    let first = infos.first()?;
    infos
        .iter()
        .all(|i| i == first)
        .then_some(first.leader)
        .flatten()
}

struct Cluster {
    dirs: BTreeMap<NodeId, tempfile::TempDir>,
    peers: BTreeMap<NodeId, Peer>,
    nodes: BTreeMap<NodeId, RaftNode<LogIndex>>,
    /// Applied to every node's configuration.
    tweak: fn(&mut NodeConfig),
}

impl Cluster {
    async fn start(n: u64) -> Cluster {
        Self::start_with(n, |_| {}).await
    }

    async fn start_with(n: u64, tweak: fn(&mut NodeConfig)) -> Cluster {
        let peers: BTreeMap<NodeId, Peer> = (1..=n)
            .map(|id| {
                (
                    id,
                    Peer {
                        raft: free_addr(),
                        api: Some(format!("127.0.0.1:{}", 9000 + id)),
                    },
                )
            })
            .collect();
        let dirs = (1..=n)
            .map(|id| (id, tempfile::tempdir().unwrap()))
            .collect();
        let mut c = Cluster {
            dirs,
            peers,
            nodes: BTreeMap::new(),
            tweak,
        };
        for id in 1..=n {
            c.start_node(id).await;
        }
        c
    }

    fn config(&self, id: NodeId) -> NodeConfig {
        let mut cfg = NodeConfig::new(id, "client-test", self.peers.clone(), self.dirs[&id].path());
        cfg.raft.election_ticks = 20; // 200-400 ms
        cfg.raft.heartbeat_ticks = 3;
        cfg.net.backoff_max = Duration::from_millis(200);
        (self.tweak)(&mut cfg);
        cfg
    }

    async fn start_node(&mut self, id: NodeId) {
        let node = RaftNode::start(self.config(id), ReplicatedLog::new())
            .await
            .unwrap();
        self.nodes.insert(id, node);
    }

    /// Waits until every running node agrees on one leader in one term.
    async fn leader(&self) -> NodeId {
        let nodes: Vec<_> = self.nodes.values().collect();
        when_leaders(&nodes, "no agreed leader", |infos| {
            agreed(infos).filter(|l| self.nodes.contains_key(l))
        })
        .await
    }

    /// Waits until every running node has committed at least `index`; returns their logs.
    async fn logs_through(&self, index: LogIndex) -> BTreeMap<NodeId, Vec<Entry>> {
        let start = Instant::now();
        'outer: loop {
            let mut logs = BTreeMap::new();
            for (&id, n) in &self.nodes {
                let log = retrieve_all(n).await;
                if log.last().map_or(0, |e| e.index) < index {
                    assert!(
                        start.elapsed() < DEADLINE,
                        "node {id} did not reach {index}"
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue 'outer;
                }
                logs.insert(id, log);
            }
            return logs;
        }
    }
}

async fn retrieve_all(n: &RaftNode<LogIndex>) -> Vec<Entry> {
    let mut out = Vec::new();
    loop {
        let next = out.last().map_or(1, |e: &Entry| e.index + 1);
        let batch = n.retrieve(next, 10_000).await.unwrap();
        if batch.is_empty() {
            return out;
        }
        out.extend(batch);
    }
}

/// Submits until success, following leader changes; returns the committed index.
async fn submit_somewhere(c: &Cluster, data: Vec<u8>) -> LogIndex {
    let start = Instant::now();
    loop {
        let l = c.leader().await;
        match c.nodes[&l].submit(data.clone()).await {
            Ok(done) => return done.index,
            Err(e) => {
                assert!(start.elapsed() < DEADLINE, "submit keeps failing: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

fn assert_identical(logs: &BTreeMap<NodeId, Vec<Entry>>, through: LogIndex) {
    let mut iter = logs.iter();
    let (first_id, first) = iter.next().unwrap();
    for (id, log) in iter {
        let a: Vec<_> = first.iter().take_while(|e| e.index <= through).collect();
        let b: Vec<_> = log.iter().take_while(|e| e.index <= through).collect();
        assert_eq!(a, b, "logs of {first_id} and {id} differ");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_tasks_submit_ten_thousand_entries_and_every_node_agrees() {
    let c = Cluster::start(3).await;
    let leader = c.leader().await;
    let node = c.nodes[&leader].clone();
    let mut tasks = Vec::new();
    for t in 0..64u64 {
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let count = 10_000 / 64 + u64::from(t < 10_000 % 64);
            for k in 0..count {
                let data = format!("task-{t}-entry-{k}").into_bytes();
                loop {
                    match node.submit(data.clone()).await {
                        Ok(done) => {
                            acked.push((done.index, data));
                            break;
                        }
                        Err(Error::Busy) => tokio::task::yield_now().await,
                        Err(e) => panic!("task {t}: unexpected {e}"),
                    }
                }
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    assert_eq!(acked.len(), 10_000);
    let distinct: BTreeSet<_> = acked.iter().map(|(i, _)| *i).collect();
    assert_eq!(distinct.len(), 10_000, "every submit got its own index");
    let max = *distinct.iter().next_back().unwrap();
    let logs = c.logs_through(max).await;
    assert_identical(&logs, max);
    for log in logs.values() {
        let by_index: BTreeMap<LogIndex, &Entry> = log.iter().map(|e| (e.index, e)).collect();
        for (index, data) in &acked {
            assert_eq!(by_index[index].data.as_ref(), data.as_slice());
        }
    }
}

/// Submits batches on the leader until every follower's progress satisfies `done`, or
/// fails after the deadline; returns that progress.
async fn progress_once(
    c: &Cluster,
    done: impl Fn(&raft_core::PeerProgress) -> bool,
) -> Vec<raft_core::PeerProgress> {
    let leader = c.leader().await;
    let node = &c.nodes[&leader];
    let start = Instant::now();
    loop {
        node.submit_batch(vec![bytes::Bytes::from(vec![1u8; 512]); 64])
            .await
            .unwrap();
        let progress = node.status().await.unwrap().progress;
        if progress.len() == 2 && progress.iter().all(&done) {
            return progress;
        }
        assert!(start.elapsed() < DEADLINE, "never reached: {progress:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_sizes_each_followers_window_from_what_it_measured() {
    let c = Cluster::start(3).await;
    let min = raft_client::FlowConfig::default().min_window_bytes;
    let max = raft_core::Config::new(1, [1]).max_inflight_bytes;
    let progress = progress_once(&c, |p| p.flow_window.is_some()).await;
    for p in progress {
        let w = p.flow_window.unwrap();
        assert!((min..max).contains(&w), "follower {}: window {w}", p.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_static_flow_control_no_window_is_set() {
    let c = Cluster::start_with(3, |cfg| cfg.flow.adaptive = false).await;
    // Both followers acknowledged entries after the first batches: with adaptive flow
    // control a window would be set by then.
    let progress = progress_once(&c, |p| p.match_index > 200).await;
    assert!(
        progress.iter().all(|p| p.flow_window.is_none()),
        "{progress:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_from_many_tasks_commit_whole_at_consecutive_indexes_with_a_response_each() {
    let c = Cluster::start(3).await;
    let leader = c.leader().await;
    let node = c.nodes[&leader].clone();
    let mut tasks = Vec::new();
    for t in 0..16u64 {
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for b in 0..20u64 {
                let batch: Vec<bytes::Bytes> = (0..1 + (t + b) % 50)
                    .map(|k| format!("task-{t}-batch-{b}-entry-{k}").into())
                    .collect();
                let done = loop {
                    match node.submit_batch(batch.clone()).await {
                        Ok(done) => break done,
                        Err(Error::Busy) => tokio::task::yield_now().await,
                        Err(e) => panic!("task {t}: unexpected {e}"),
                    }
                };
                assert_eq!(done.responses.len(), batch.len());
                for (i, data) in batch.into_iter().enumerate() {
                    let index = done.first + i as u64;
                    // ReplicatedLog answers each entry with its index.
                    assert_eq!(done.responses[i], index);
                    acked.push((index, data));
                }
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    let distinct: BTreeSet<_> = acked.iter().map(|(i, _)| *i).collect();
    assert_eq!(distinct.len(), acked.len(), "every entry got its own index");
    let max = *distinct.iter().next_back().unwrap();
    let logs = c.logs_through(max).await;
    assert_identical(&logs, max);
    let by_index: BTreeMap<LogIndex, &Entry> = logs[&leader].iter().map(|e| (e.index, e)).collect();
    for (index, data) in &acked {
        assert_eq!(by_index[index].data, *data, "entry {index}");
    }
    // An empty batch commits nothing and is answered at once; an oversized entry refuses
    // the whole batch.
    let empty = node.submit_batch(Vec::new()).await.unwrap();
    assert!(empty.responses.is_empty());
    let big = bytes::Bytes::from(vec![0u8; 64 << 20]);
    assert!(matches!(
        node.submit_batch(vec!["small".into(), big]).await,
        Err(Error::TooLarge { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitting_to_a_follower_names_the_leader_and_its_address() {
    let c = Cluster::start(3).await;
    let leader = c.leader().await;
    let follower = *c.nodes.keys().find(|&&id| id != leader).unwrap();
    match c.nodes[&follower].submit(&b"x"[..]).await {
        Err(Error::NotLeader {
            leader: Some(l),
            address,
        }) => {
            assert_eq!(l, leader);
            assert_eq!(address, c.peers[&leader].api);
        }
        other => panic!("expected NotLeader, got {other:?}"),
    }
    // Reads, unlike writes, are served by followers: the leader only gives the index.
    let read = c.nodes[&follower].read_barrier().await;
    assert!(read.is_ok(), "a follower's read barrier failed: {read:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_leader_is_replaced_and_catches_up_after_restart() {
    let mut c = Cluster::start(3).await;
    let mut acked = Vec::new();
    for k in 0..50 {
        acked.push((
            submit_somewhere(&c, format!("before-{k}").into_bytes()).await,
            format!("before-{k}"),
        ));
    }
    let old = c.leader().await;
    c.nodes.remove(&old).unwrap().abort().await;
    let new = c.leader().await;
    assert_ne!(new, old);
    for k in 0..50 {
        acked.push((
            submit_somewhere(&c, format!("after-{k}").into_bytes()).await,
            format!("after-{k}"),
        ));
    }
    c.start_node(old).await;
    let max = acked.iter().map(|(i, _)| *i).max().unwrap();
    let logs = c.logs_through(max).await;
    assert_eq!(logs.len(), 3);
    assert_identical(&logs, max);
    for log in logs.values() {
        let by_index: BTreeMap<LogIndex, &Entry> = log.iter().map(|e| (e.index, e)).collect();
        for (index, data) in &acked {
            assert_eq!(
                by_index[index].data.as_ref(),
                data.as_bytes(),
                "acknowledged entry {index}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_restart_keeps_the_committed_log() {
    let mut c = Cluster::start(3).await;
    let mut max = 0;
    for k in 0..100 {
        max = submit_somewhere(&c, format!("entry-{k}").into_bytes()).await;
    }
    let before = c.logs_through(max).await;
    for (_, n) in std::mem::take(&mut c.nodes) {
        n.shutdown().await;
    }
    for id in 1..=3 {
        c.start_node(id).await;
    }
    c.leader().await;
    let after = c.logs_through(max).await;
    for id in 1..=3 {
        let a: Vec<_> = before[&id].iter().filter(|e| e.index <= max).collect();
        let b: Vec<_> = after[&id].iter().filter(|e| e.index <= max).collect();
        assert_eq!(a, b, "node {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_steps_down_and_its_callers_never_hang() {
    let c = Cluster::start(3).await;
    submit_somewhere(&c, b"warm-up".to_vec()).await;
    let old = c.leader().await;
    let node = c.nodes[&old].clone();
    node.set_isolated(true).await.unwrap();
    let waiting = tokio::spawn(async move { node.submit(&b"in-the-dark"[..]).await });
    let outcome = tokio::time::timeout(DEADLINE, waiting)
        .await
        .expect("the caller is answered")
        .unwrap();
    assert!(
        matches!(
            outcome,
            Err(Error::LeadershipLost) | Err(Error::NotLeader { .. })
        ),
        "got {outcome:?}"
    );
    // The other side elects a leader of its own.
    let others: Vec<_> = c
        .nodes
        .iter()
        .filter(|(&id, _)| id != old)
        .map(|(_, n)| n)
        .collect();
    when_leaders(&others, "no new leader", |infos| {
        agreed(infos).filter(|&l| l != old)
    })
    .await;
    assert_ne!(c.nodes[&old].status().await.unwrap().role, Role::Leader);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flooding_submits_gets_busy_and_in_flight_work_stays_bounded() {
    let peers: BTreeMap<NodeId, Peer> = BTreeMap::from([(
        1,
        Peer {
            raft: free_addr(),
            api: None,
        },
    )]);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = NodeConfig::new(1, "flood", peers, dir.path());
    cfg.max_pending_submits = 100;
    cfg.request_queue = 50;
    let node = RaftNode::start(cfg, ReplicatedLog::new()).await.unwrap();
    when_leaders(&[&node], "the single node never led", |i| {
        (i[0].leader == Some(1)).then_some(())
    })
    .await;
    // Fire 20,000 submits without waiting for any: most must be refused at once.
    let mut handles = Vec::new();
    let mut busy = 0;
    for k in 0..20_000u32 {
        let n = node.clone();
        let h = tokio::spawn(async move { n.submit(k.to_le_bytes().to_vec()).await });
        handles.push(h);
        assert!(
            node.pending_submits() <= 100,
            "in-flight submits stay under the limit"
        );
    }
    let mut ok = 0;
    for h in handles {
        match h.await.unwrap() {
            Ok(_) => ok += 1,
            Err(Error::Busy) => busy += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(busy > 0, "overload is refused with Busy");
    assert!(ok > 0, "some work still gets done");
    assert_eq!(node.pending_submits(), 0);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linearizable_reads_see_every_write_acknowledged_before_them() {
    reads_see_every_acknowledged_write(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_reads_see_every_write_acknowledged_before_them_and_skip_the_heartbeat_round() {
    reads_see_every_acknowledged_write(true).await;
}

/// 200 writes on the leader, each followed by a linearizable read on the leader and one on
/// a follower, which must see it; with `lease`, the leader serves reads from its lease.
async fn reads_see_every_acknowledged_write(lease: bool) {
    let peers: BTreeMap<NodeId, Peer> = (1..=3)
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
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = BTreeMap::new();
    let mut readers = BTreeMap::new();
    for id in 1..=3u64 {
        let mut cfg = NodeConfig::new(id, "kv", peers.clone(), dirs[id as usize - 1].path());
        cfg.raft.election_ticks = 20;
        cfg.raft.lease_reads = lease;
        let kv = KvStore::new();
        readers.insert(id, kv.reader());
        nodes.insert(id, RaftNode::start(cfg, kv).await.unwrap());
    }
    let all: Vec<_> = nodes.values().collect();
    let leader = when_leaders(&all, "no agreed leader", agreed).await;
    let node = &nodes[&leader];
    for k in 0..200 {
        let cmd = KvCommand::put(format!("k{}", k % 7), format!("v{k}"));
        let done = node.submit_command(cmd.encode().unwrap()).await.unwrap();
        let index = node.read_barrier().await.unwrap();
        assert!(
            index >= done.index,
            "read at {index} misses write {}",
            done.index
        );
        assert_eq!(
            readers[&leader].get(&format!("k{}", k % 7)),
            Some(format!("v{k}"))
        );
        // Through a follower: the leader gives the index, the follower waits to apply it.
        let f = 1 + (leader + k as u64) % 3;
        let f = if f == leader { 1 + f % 3 } else { f };
        let index = nodes[&f].read_barrier().await.unwrap();
        assert!(
            index >= done.index,
            "follower {f} read at {index} misses {}",
            done.index
        );
        assert_eq!(
            readers[&f].get(&format!("k{}", k % 7)),
            Some(format!("v{k}")),
            "follower {f} served a stale value"
        );
    }
    let served = node.status().await.unwrap().lease_reads;
    if lease {
        assert!(served > 0, "no read was served from the lease");
    } else {
        assert_eq!(served, 0);
    }
    for n in nodes.values() {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_that_could_never_cross_the_network_are_refused() {
    let peers: BTreeMap<NodeId, Peer> = BTreeMap::from([(
        1,
        Peer {
            raft: free_addr(),
            api: None,
        },
    )]);
    let dir = tempfile::tempdir().unwrap();
    // A frame limit too small for a batch plus the largest entry is refused at start.
    let mut cfg = NodeConfig::new(1, "sizes", peers.clone(), dir.path());
    cfg.net.max_frame_bytes = 1 << 20;
    match RaftNode::start(cfg, ReplicatedLog::new()).await {
        Err(raft_client::StartError::Config(msg)) => {
            assert!(msg.contains("max_frame_bytes"), "{msg}")
        }
        Err(e) => panic!("expected a configuration error, got {e}"),
        Ok(_) => panic!("expected a configuration error"),
    }
    let mut cfg = NodeConfig::new(1, "sizes", peers, dir.path());
    cfg.max_entry_bytes = 1000;
    let node = RaftNode::start(cfg, ReplicatedLog::new()).await.unwrap();
    match node.submit(vec![0u8; 1001]).await {
        Err(Error::TooLarge {
            size: 1001,
            max: 1000,
        }) => {}
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(node.pending_submits(), 0);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_concurrent_shutdown_returns_only_once_the_directory_is_released() {
    let peers: BTreeMap<NodeId, Peer> = BTreeMap::from([(
        1,
        Peer {
            raft: free_addr(),
            api: None,
        },
    )]);
    let dir = tempfile::tempdir().unwrap();
    let node = RaftNode::start(
        NodeConfig::new(1, "stop", peers, dir.path()),
        ReplicatedLog::new(),
    )
    .await
    .unwrap();
    let (a, b) = (node.clone(), node.clone());
    let mut first = tokio::spawn(async move { a.shutdown().await });
    let mut second = tokio::spawn(async move { b.shutdown().await });
    // Whichever returns first, the node must already be fully stopped at that moment.
    let reopen = || {
        raft_storage::LogStorage::open(raft_storage::StorageConfig::new(dir.path(), "stop", 1))
            .map(drop)
    };
    tokio::select! {
        r = &mut first => {
            r.unwrap();
            assert!(reopen().is_ok(), "a shutdown returned while the directory was held");
            second.await.unwrap();
        }
        r = &mut second => {
            r.unwrap();
            assert!(reopen().is_ok(), "a shutdown returned while the directory was held");
            first.await.unwrap();
        }
    }
    assert!(matches!(
        node.submit(&b"late"[..]).await,
        Err(Error::Shutdown)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_knows_who_is_a_member_and_forgets_a_removed_one() {
    let c = Cluster::start(3).await;
    let leader = c.leader().await;
    let removed = *c.nodes.keys().find(|&&id| id != leader).unwrap();
    for n in c.nodes.values() {
        assert!((1..=3).all(|id| n.is_member(id)));
        assert!(!n.is_member(9), "never added");
    }
    let mut changes = c.nodes[&leader].watch_members();
    changes.borrow_and_update();
    // A new leader changes the membership once it has committed an entry of its term.
    let start = Instant::now();
    while let Err(e) = c.nodes[&leader].remove_member(removed).await {
        assert!(start.elapsed() < DEADLINE, "cannot remove {removed}: {e:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::timeout(DEADLINE, changes.changed())
        .await
        .expect("the leader saw no membership change")
        .unwrap();
    assert!(!c.nodes[&leader].is_member(removed));
    let stayed = *c
        .nodes
        .keys()
        .find(|&&id| id != leader && id != removed)
        .unwrap();
    let start = Instant::now();
    while c.nodes[&stayed].is_member(removed) {
        assert!(
            start.elapsed() < DEADLINE,
            "node {stayed} still names {removed} a member"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(c.nodes[&stayed].is_member(leader) && c.nodes[&stayed].is_member(stayed));
}
