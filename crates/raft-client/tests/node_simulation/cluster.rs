//! The simulated cluster: whole nodes (runtime, log store, the key-value store httpraft
//! uses, snapshots and their transfer) on one thread, each in its own data directory, on
//! the simulated network; crashed (aborted wherever they are) and restarted from their own
//! data.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use raft_client::{
    DurableConfig, DurableStore, Environment, KvResponse, KvStore, LogRetention, NodeConfig, Peer,
    RaftNode,
};
use raft_core::NodeId;
use tokio::time::Instant;

use crate::disk::SimDisk;
use crate::machine::{Pace, Reader, SlowStore};
use crate::network::SimNet;
use crate::rng::Rng;

/// One running incarnation of a node: its handle and a reader of its store.
#[derive(Clone)]
pub struct Running {
    pub node: RaftNode<KvResponse>,
    pub reader: Reader,
    /// Counts the node's starts: a handle of an earlier incarnation is stale.
    pub incarnation: u64,
}

struct Slot {
    running: Option<Running>,
    /// Its disk is failing: stopping is what it should do (it is restarted once healed).
    may_stop: bool,
    starts: u64,
    /// Why the node stopped, when it stopped on its own.
    stopped: Option<String>,
}

/// A node's disk: how long each piece of its blocking work (a log write and sync, a
/// snapshot file, a read) takes, drawn up to `slowest_us`.
pub struct Disk {
    pub slowest_us: std::sync::atomic::AtomicU64,
    /// Nothing it does completes before then (its process is paused).
    frozen_until: Mutex<Option<Instant>>,
    rng: Mutex<Rng>,
}

/// A healthy disk: up to 200 µs per piece of work.
pub const HEALTHY_DISK_US: u64 = 200;

pub struct SimCluster {
    disks: BTreeMap<NodeId, Arc<Disk>>,
    /// Each node's Raft log disk (it outlives the node's incarnations).
    logs: BTreeMap<NodeId, SimDisk>,
    /// The in-memory key-value store instead of the one on disk: with log disks that lie,
    /// whose state would otherwise be ahead of the log they lost.
    pub in_memory: bool,
    paces: BTreeMap<NodeId, Arc<Pace>>,
    pub ids: Vec<NodeId>,
    pub net: SimNet,
    peers: BTreeMap<NodeId, Peer>,
    root: tempfile::TempDir,
    slots: Mutex<BTreeMap<NodeId, Slot>>,
    /// What happened, with times: the faults, and anything a check should explain.
    events: Mutex<Vec<String>>,
    /// Snapshot every this many entries, keeping this many before it.
    pub snapshots: (u64, u64),
    /// The Raft log's segment size on nodes with the durable store (whose log is kept,
    /// but for whole segments past the retention).
    pub segment_bytes: u64,
    /// Each node's tick, in microseconds: 10 ms give or take up to 10 %, so that the
    /// nodes' clocks run at different rates (within the lease's 20 % margin); with lease
    /// reads off, up to 40 % (past it).
    ticks_us: BTreeMap<NodeId, u64>,
    /// Whether leaders serve linearizable reads from their lease.
    pub lease_reads: bool,
    /// Violations seen while the run went on.
    violations: Mutex<Vec<String>>,
    /// Seeds each start's election timer randomness.
    rng: Mutex<Rng>,
    pub began: Instant,
}

impl SimCluster {
    /// `lies`: the log disks acknowledge syncs they do not perform.
    pub fn new(ids: Vec<NodeId>, net: SimNet, mut rng: Rng, lies: bool) -> SimCluster {
        let logs = ids
            .iter()
            .map(|&id| (id, SimDisk::new(rng.fork(), lies)))
            .collect();
        let disks = ids
            .iter()
            .map(|&id| {
                let disk = Disk {
                    slowest_us: HEALTHY_DISK_US.into(),
                    frozen_until: Mutex::new(None),
                    rng: Mutex::new(rng.fork()),
                };
                (id, Arc::new(disk))
            })
            .collect();
        let peers = ids
            .iter()
            .map(|&id| {
                let p = Peer {
                    // Never dialled: the simulated network knows nodes by id.
                    raft: SocketAddr::from(([127, 0, 0, 1], 1)),
                    api: None,
                };
                (id, p)
            })
            .collect();
        // A memory-backed directory where there is one: the simulated nodes sync often,
        // and a sync there costs nothing.
        let shm = std::path::Path::new("/dev/shm");
        let root = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .unwrap();
        let slots = ids
            .iter()
            .map(|&id| {
                let slot = Slot {
                    running: None,
                    may_stop: false,
                    starts: 0,
                    stopped: None,
                };
                (id, slot)
            })
            .collect();
        let paces = ids
            .iter()
            .map(|&id| (id, Arc::new(Pace::new(rng.fork()))))
            .collect();
        let snapshots = (rng.between(10, 200), rng.between(0, 20));
        let mut ticks_us: BTreeMap<NodeId, u64> = ids
            .iter()
            .map(|&id| (id, rng.between(9_000, 11_000)))
            .collect();
        let lease_reads = rng.below(2) == 0;
        if !lease_reads {
            // Nothing then relies on the clocks' rates: skew them past the lease's bound,
            // up to 40 % either way.
            for tick in ticks_us.values_mut() {
                *tick = 10_000u64.saturating_add_signed((*tick as i64 - 10_000) * 4);
            }
        }
        SimCluster {
            ticks_us,
            lease_reads,
            in_memory: lies,
            logs,
            snapshots,
            segment_bytes: 16 << 10,
            disks,
            paces,
            ids,
            net,
            peers,
            root,
            slots: Mutex::new(slots),
            events: Mutex::new(Vec::new()),
            violations: Mutex::new(Vec::new()),
            rng: Mutex::new(rng),
            began: Instant::now(),
        }
    }

    /// The run's drawn settings, for the record.
    pub fn describe(&self) -> String {
        let (every, tail) = self.snapshots;
        format!(
            "lease reads {}; ticks (µs) {:?}; a snapshot every {every} entries keeping {tail}",
            if self.lease_reads { "on" } else { "off" },
            self.ticks_us,
        )
    }

    /// Seconds since the run began, for the record.
    pub fn at(&self) -> String {
        format!("{:.3}s", self.began.elapsed().as_secs_f64())
    }

    /// Notes what happened, with the time.
    pub fn record(&self, what: impl std::fmt::Display) {
        let line = format!("{} {what}", self.at());
        self.events.lock().unwrap().push(line);
    }

    pub fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }

    fn dir(&self, id: NodeId) -> PathBuf {
        self.root.path().join(format!("node-{id}"))
    }

    /// Starts `id` from its data directory (empty the first time).
    pub async fn start(&self, id: NodeId) -> Result<(), String> {
        let dir = self.dir(id);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let mut cfg = NodeConfig::new(id, "sim", self.peers.clone(), &dir);
        cfg.single_thread = true;
        cfg.raft.seed = self.rng.lock().unwrap().next_u64() | 1;
        cfg.tick = std::time::Duration::from_micros(self.ticks_us[&id]);
        cfg.raft.lease_reads = self.lease_reads;
        // The autopilot promotes a re-added member once it has caught up.
        cfg.autopilot.enabled = true;
        cfg.autopilot.promote_after = std::time::Duration::from_millis(500);
        let (every, tail) = self.snapshots;
        cfg.snapshot.every_entries = every;
        cfg.snapshot.tail_entries = tail;
        cfg.snapshot.chunk_bytes = 512;
        let disk = self.disks[&id].clone();
        let env = Environment::real()
            .with_network(Arc::new(self.net.clone()))
            .with_vfs(Arc::new(self.logs[&id].clone()))
            .with_disk_delay(Arc::new(move || {
                let slowest = disk.slowest_us.load(std::sync::atomic::Ordering::Relaxed);
                let us = disk.rng.lock().unwrap().below(slowest + 1);
                let frozen = disk
                    .frozen_until
                    .lock()
                    .unwrap()
                    .map_or(std::time::Duration::ZERO, |until| {
                        until.saturating_duration_since(Instant::now())
                    });
                std::time::Duration::from_micros(us).max(frozen)
            }));
        let pace = self.paces[&id].clone();
        let (node, reader) = if self.in_memory {
            let store = KvStore::new();
            let reader = Reader::Memory(store.reader());
            let store = SlowStore { inner: store, pace };
            (RaftNode::start_in(cfg, store, env).await, reader)
        } else {
            // As httpraft runs it: the Raft log is the application's log, kept but for
            // whole segments past the retention (small segments, so that they go).
            cfg.snapshot.retention = LogRetention::Keep {
                entries: Some(tail),
                bytes: None,
            };
            cfg.segment_bytes = self.segment_bytes;
            // On the node's simulated disk: a crash loses what the store did not sync.
            let file = self.logs[&id].db_file(&dir.join("app.redb"));
            let store = DurableStore::open_on(file, DurableConfig::default())
                .map_err(|e| format!("node {id}: cannot open its store: {e}"))?;
            let reader = Reader::Durable(store.reader());
            let store = SlowStore { inner: store, pace };
            (RaftNode::start_in(cfg, store, env).await, reader)
        };
        let node = node.map_err(|e| format!("node {id} cannot start from its own data: {e}"))?;
        let mut slots = self.slots.lock().unwrap();
        let slot = slots.get_mut(&id).unwrap();
        slot.starts += 1;
        slot.running = Some(Running {
            node,
            reader,
            incarnation: slot.starts,
        });
        Ok(())
    }

    /// Takes `id`'s running incarnation out of its slot (it is being stopped).
    fn take_running(&self, id: NodeId) -> Option<Running> {
        self.slots.lock().unwrap().get_mut(&id)?.running.take()
    }

    /// Crashes `id`: its tasks are aborted wherever they are; what it synced stays.
    pub async fn crash(&self, id: NodeId) {
        let running = self.take_running(id);
        if let Some(r) = running {
            r.node.abort().await;
            let lost = self.logs[&id].crash();
            self.record(format!(
                "node {id} crashed; {lost} unsynced bytes of its log lost"
            ));
        }
    }

    /// Makes `id`'s disk take up to `slowest_us` per piece of work.
    pub fn set_disk(&self, id: NodeId, slowest_us: u64) {
        self.disks[&id]
            .slowest_us
            .store(slowest_us, std::sync::atomic::Ordering::Relaxed);
    }

    /// Makes `id`'s state machine take up to `slowest_us` per batch.
    pub fn set_pace(&self, id: NodeId, slowest_us: u64) {
        self.paces[&id]
            .slowest_us
            .store(slowest_us, std::sync::atomic::Ordering::Relaxed);
    }

    /// Pauses `id` for `hold`, as its peers and its disk see it: its messages in and out are
    /// held, its snapshot streams refused, its disk work completes no sooner than the end
    /// (its timers still run).
    pub fn freeze(&self, id: NodeId, hold: std::time::Duration) {
        let until = Instant::now() + hold;
        self.net.freeze(id, until);
        *self.disks[&id].frozen_until.lock().unwrap() = Some(until);
    }

    /// Damages `id`'s snapshot files (see `SimDisk::damage_snapshots`).
    pub fn damage_snapshots(&self, id: NodeId) -> Vec<String> {
        self.logs[&id].damage_snapshots()
    }

    /// Node `id`'s address, as its peers know it.
    pub fn peer(&self, id: NodeId) -> Peer {
        self.peers[&id].clone()
    }

    /// Makes `id`'s state machine apply nothing (`true`) until it is let go (`false`).
    pub fn set_stuck(&self, id: NodeId, stuck: bool) {
        self.paces[&id].stuck.send_replace(stuck);
    }

    /// Every disk and state machine healthy again.
    pub fn heal_disks(&self) {
        for id in self.ids.clone() {
            self.set_disk(id, HEALTHY_DISK_US);
            *self.disks[&id].frozen_until.lock().unwrap() = None;
            self.set_pace(id, 0);
            self.set_stuck(id, false);
        }
    }

    pub fn running(&self, id: NodeId) -> Option<Running> {
        self.slots.lock().unwrap().get(&id)?.running.clone()
    }

    pub fn all_running(&self) -> Vec<(NodeId, Running)> {
        let slots = self.slots.lock().unwrap();
        slots
            .iter()
            .filter_map(|(&id, s)| Some((id, s.running.clone()?)))
            .collect()
    }

    pub fn down(&self) -> Vec<NodeId> {
        let slots = self.slots.lock().unwrap();
        slots
            .iter()
            .filter(|(_, s)| s.running.is_none())
            .map(|(&id, _)| id)
            .collect()
    }

    /// Records that the incarnation `r` of `id` stopped although nobody stopped it.
    pub fn stopped_on_its_own(&self, id: NodeId, r: &Running, why: String) {
        let mut slots = self.slots.lock().unwrap();
        let slot = slots.get_mut(&id).unwrap();
        let current = slot.running.as_ref().map(|c| c.incarnation);
        if current == Some(r.incarnation) && slot.stopped.is_none() && !slot.may_stop {
            slot.stopped = Some(why);
        }
    }

    /// Makes `id`'s log disk fail this chance in a thousand of its operations; a node whose
    /// disk fails may stop (0: healthy again).
    pub fn set_disk_errors(&self, id: NodeId, per_mille: u64) {
        self.logs[&id].set_errors(per_mille);
        if per_mille > 0 {
            self.slots.lock().unwrap().get_mut(&id).unwrap().may_stop = true;
        }
    }

    /// The nodes whose disk failed (they may have stopped, as they should).
    pub fn may_have_stopped(&self) -> Vec<NodeId> {
        let slots = self.slots.lock().unwrap();
        slots
            .iter()
            .filter(|(_, s)| s.may_stop)
            .map(|(&id, _)| id)
            .collect()
    }

    /// `id` was restarted after its disk failed: stopping is unexpected again.
    pub fn expect_running(&self, id: NodeId) {
        self.slots.lock().unwrap().get_mut(&id).unwrap().may_stop = false;
    }

    /// Records a violation seen while the run goes on.
    pub fn violation(&self, what: String) {
        self.record(format!("VIOLATION: {what}"));
        self.violations.lock().unwrap().push(what);
    }

    pub fn violations(&self) -> Vec<String> {
        self.violations.lock().unwrap().clone()
    }

    /// Records that `id` could not start again from its own data.
    pub fn failed_restart(&self, id: NodeId, why: String) {
        let mut slots = self.slots.lock().unwrap();
        let slot = slots.get_mut(&id).unwrap();
        slot.stopped.get_or_insert(why);
    }

    /// The nodes that stopped on their own or could not restart, and why.
    pub fn stopped(&self) -> Vec<(NodeId, String)> {
        let slots = self.slots.lock().unwrap();
        slots
            .iter()
            .filter_map(|(&id, s)| Some((id, s.stopped.clone()?)))
            .collect()
    }

    /// Stops every node (the end of a run).
    pub async fn stop_all(&self) {
        for id in self.ids.clone() {
            let running = self.take_running(id);
            if let Some(r) = running {
                r.node.shutdown().await;
            }
        }
    }
}
