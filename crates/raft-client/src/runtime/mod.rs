//! The runtime task (the original's `Run`): owns the core node and drives it with ticks,
//! peer messages and client commands; sends; hands each `Ready`'s writes to the write
//! pipeline (`writes.rs`) and keeps stepping while they are made durable; hands committed
//! entries to the apply task (`applier.rs`) and keeps stepping while they are applied;
//! answers callers.
//!
//! Its parts, one job each: `mod.rs` builds the runtime and runs the loop; `clock.rs` is
//! the core's clock; `commands.rs` carries out what handles ask; `ready.rs` carries out
//! the core's output and takes back what writes and applies report; `waiters.rs` holds the
//! callers to answer later; `members.rs` follows membership, transfers and the autopilot;
//! `snapshotting.rs` takes, sends, receives and restores snapshots, and copies backups;
//! `versions.rs` raises and records the cluster version.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use raft_core::{LogIndex, Membership, Message, Node, NodeId};
use raft_net::{Inbound, NetConfig, VersionFloor};
use raft_storage::{LogStorage, StorageConfig};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::applier::{Applied, Applier};
use crate::commands::Command;
use crate::config::NodeConfig;
use crate::error::{Error, StartError};
use crate::leader::LeaderSender;
use crate::log_reader::LogReader;
use crate::membership::AddressBook;
use crate::snapshot_store::SnapshotStore;
use crate::snapshot_transfer::Transfers;
use crate::snapshots::{receive_streams, restore_at_start, Event, Snapshots};
use crate::state_machine::StateMachine;
use crate::storage::SharedStorage;
use crate::writes::{Done, WritePipeline};
use clock::TickClock;
use commands::reject;
use members::{peer_addresses, transport_peers};
use waiters::Waiters;

mod clock;
mod commands;
mod members;
mod ready;
mod snapshotting;
mod versions;
mod waiters;

/// What woke the runtime up.
enum Input<SM: StateMachine> {
    Tick,
    Message(Message),
    Command(Command<SM::Response>),
    Event(Event),
    Written(Result<Done, String>),
    Applied(Option<Applied<SM::Response>>),
}

/// Why a node stops when its state machine's task ended (it panicked).
const APPLY_TASK_GONE: &str = "the state machine's apply task stopped (it panicked)";

/// Inputs handled per turn at most before the node's output is processed.
const MAX_INPUTS_PER_TURN: usize = 4096;

pub(crate) struct Runtime<SM: StateMachine> {
    cfg: NodeConfig,
    node: Node<SharedStorage>,
    storage: SharedStorage,
    /// The state machine, in its own task.
    applier: Applier<SM>,
    transport: Arc<dyn crate::network::PeerNetwork>,
    inbound: Inbound,
    cmds: mpsc::Receiver<Command<SM::Response>>,
    leader_tx: LeaderSender,
    /// Callers to answer later.
    waiters: Waiters<SM::Response>,
    applied: LogIndex,
    /// Published `applied`: what log readers may read (see [`LogReader`]).
    readable: Arc<AtomicU64>,
    isolated: bool,
    snapshots: Snapshots,
    events: mpsc::UnboundedReceiver<Event>,
    storage_stats: Arc<raft_storage::StorageStats>,
    /// Backups asked for, taken at the end of the turn (the state machine is async).
    pending_backups: Vec<oneshot::Sender<Result<crate::Backup, Error>>>,
    /// Backups being copied (aborted with the node when it is aborted).
    backups: Vec<tokio_util::task::AbortOnDropHandle<()>>,
    /// Every member's addresses, shared with the handles.
    book: AddressBook,
    /// The configurations the transport and the address book were last set up for: the
    /// one in effect and the latest committed one.
    membership: (Membership, Option<Membership>),
    /// When each peer was last heard from.
    last_heard: BTreeMap<NodeId, std::time::Instant>,
    /// When the messages being handled arrived (taken once per batch, not per message).
    received_at: std::time::Instant,
    /// Nodes that left the configuration, reachable until the given time.
    departed: BTreeMap<NodeId, (crate::config::Peer, std::time::Instant)>,
    /// Whether this node has been a member (a joining node is not, until the log says so:
    /// the snapshot or old configurations it replays first do not name it).
    seen_as_member: bool,
    autopilot: crate::autopilot::Autopilot,
    autopilot_ran: std::time::Instant,
    /// The core's clock: ticks are delivered by the monotonic clock, so that a turn that
    /// started late (a paused process, a stalled thread) first delivers the ticks it
    /// missed; leases and election timers never run slower than real time.
    clock: TickClock,
    /// Writes handed off by the core, being made durable while the node keeps stepping.
    writes: WritePipeline,
    /// Sizes each follower's in-flight window from its measured round trip and rate.
    flow: crate::flow::FlowControl,
    /// The cluster version (shared with the transport, the snapshot files and the handle).
    cluster_version: VersionFloor,
    /// The leader's raise of the cluster version in flight.
    raising: versions::Raising,
    /// Where blocking work runs.
    exec: crate::exec::Exec,
    /// Aborts the node's unfinished in-place work when the runtime goes (stopped, or
    /// aborted as a crash would end it).
    _exec_guard: crate::exec::ExecGuard,
}

/// A node's own tokio runtime: one worker thread (plus its blocking pool) that nothing but
/// this node's protocol work runs on, so that no load elsewhere in the process (HTTP
/// clients, reads, the application) can delay its ticks, heartbeats or elections. Shut down
/// in the background when dropped (dropping a runtime may not block inside another one).
pub(crate) struct NodeRuntime(Option<tokio::runtime::Runtime>);

/// Where a node's tasks run: a runtime of its own, or (`single_thread`) the caller's.
enum Home {
    Own(tokio::runtime::Runtime),
    Caller(tokio::runtime::Handle),
}

impl Home {
    fn handle(&self) -> tokio::runtime::Handle {
        match self {
            Home::Own(rt) => rt.handle().clone(),
            Home::Caller(h) => h.clone(),
        }
    }
}

impl Drop for NodeRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// What `spawn` hands back: the runtime task and what the handle reads without it.
pub(crate) struct Spawned {
    pub(crate) task: JoinHandle<()>,
    pub(crate) runtime: NodeRuntime,
    pub(crate) reader: LogReader,
    pub(crate) storage_stats: Arc<raft_storage::StorageStats>,
    pub(crate) transfers: Transfers,
    pub(crate) cluster_version: VersionFloor,
}

/// Opens storage and network, builds the core node, and spawns the runtime.
pub(crate) async fn spawn<SM: StateMachine>(
    cfg: NodeConfig,
    sm: SM,
    cmds: mpsc::Receiver<Command<SM::Response>>,
    leader_tx: LeaderSender,
    cancel: CancellationToken,
    book: AddressBook,
    env: crate::Environment,
) -> Result<Spawned, StartError> {
    let home = if cfg.single_thread {
        Home::Caller(tokio::runtime::Handle::current())
    } else {
        Home::Own(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name(format!("raft-node-{}", cfg.id))
                .enable_all()
                .build()
                .map_err(|e| StartError::Config(format!("cannot start the node's runtime: {e}")))?,
        )
    };
    let on = home.handle();
    // Storage, transport and every task of the node live on its own runtime (or, single
    // threaded, on the caller's).
    let built = on
        .spawn(build(cfg, sm, cmds, leader_tx, book, env))
        .await
        .map_err(|e| StartError::Config(format!("the node's start-up task failed: {e}")))
        .and_then(|r| r);
    let (rt, reader, storage_stats) = match built {
        Ok(b) => b,
        Err(e) => {
            // Dropping a runtime blocks, which is not allowed here: let it wind down on its
            // own (nothing of the node is left running on it).
            if let Home::Own(own) = home {
                own.shutdown_background();
            }
            return Err(e);
        }
    };
    let transfers = rt.snapshots.transfers.clone();
    let cluster_version = rt.cluster_version.clone();
    Ok(Spawned {
        task: on.spawn(rt.run(cancel)),
        runtime: NodeRuntime(match home {
            Home::Own(own) => Some(own),
            Home::Caller(_) => None,
        }),
        reader,
        storage_stats,
        transfers,
        cluster_version,
    })
}

/// Opens storage and network and builds the runtime, without starting it.
async fn build<SM: StateMachine>(
    cfg: NodeConfig,
    sm: SM,
    cmds: mpsc::Receiver<Command<SM::Response>>,
    leader_tx: LeaderSender,
    book: AddressBook,
    env: crate::Environment,
) -> Result<(Runtime<SM>, LogReader, Arc<raft_storage::StorageStats>), StartError> {
    let exec = crate::exec::Exec::new(cfg.single_thread, env.disk_delay.clone());
    let mut scfg = StorageConfig::new(&cfg.data_dir, cfg.cluster_id.clone(), cfg.id);
    scfg.sync = cfg.sync;
    scfg.segment_bytes = cfg.segment_bytes;
    scfg.cache_bytes = cfg.log_cache_bytes;
    let vfs: Arc<dyn raft_storage::Vfs> = env
        .vfs
        .clone()
        .unwrap_or_else(|| Arc::new(raft_storage::StdVfs));
    let snapshot_vfs = vfs.clone();
    let log = exec
        .blocking(move || LogStorage::open_with(scfg, vfs))
        .await
        .map_err(|e| StartError::Config(format!("storage open task failed: {e}")))??;
    let segments = log.reader();
    let storage_stats = log.stats();
    let cluster_version = VersionFloor::new(log.cluster_version());
    let last_snapshot = log.snapshot().clone();
    let storage = SharedStorage::new(log);
    let store = SnapshotStore::open(&cfg.data_dir, snapshot_vfs)
        .map_err(|e| {
            StartError::Config(format!(
                "cannot open the snapshot directory in {}: {e}",
                cfg.data_dir.display()
            ))
        })?
        .with_cluster_version(cluster_version.clone());
    // A state machine behind the compacted log restores from the latest snapshot first.
    let (sm, sm_applied) = restore_at_start(sm, &store, &last_snapshot, exec.clone())
        .await
        .map_err(StartError::Config)?;

    let mut rcfg = cfg.raft.clone();
    rcfg.id = cfg.id;
    rcfg.voters = cfg
        .peers
        .keys()
        .copied()
        .filter(|id| !cfg.learners.contains(id))
        .collect();
    rcfg.learners = cfg.learners.iter().copied().collect();
    rcfg.applied = sm_applied;
    if rcfg.seed == 0 {
        rcfg.seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
    }
    let applied = rcfg.applied;
    let cfg_tick = cfg.tick;
    // Catching up more than four election timeouts at once changes nothing more.
    let max_catch_up = u64::from(rcfg.election_ticks).saturating_mul(4).max(1);
    let node = Node::new(rcfg, storage.clone())?;
    let readable = Arc::new(AtomicU64::new(applied));
    let reader = LogReader::new(
        storage.clone(),
        segments,
        readable.clone(),
        cfg.max_concurrent_reads,
        cfg.max_retrieve_bytes,
        exec.clone(),
    );
    if cfg.sync == raft_storage::SyncPolicy::Never {
        tracing::warn!(
            id = cfg.id,
            "sync is off (--sync never): a crash of the machine can lose acknowledged writes and votes; use it only for tests"
        );
    }

    let me = &cfg.peers[&cfg.id];
    // The members the log names (or the bootstrap configuration), reached at the addresses
    // the configuration records, else at those of the peer list.
    let membership = (
        node.membership().clone(),
        node.membership_at(node.commit_index()).cloned(),
    );
    book.set(peer_addresses(&membership, &cfg.peers));
    book.set_members(membership.0.members());
    let peers = transport_peers(cfg.id, &book.all(), &BTreeMap::new());
    let listen = cfg.raft_listen.unwrap_or(me.raft);
    let mut ncfg = NetConfig::new(cfg.id, cfg.cluster_id.clone(), listen, peers);
    ncfg.max_frame_bytes = cfg.net.max_frame_bytes;
    ncfg.send_queue = cfg.net.send_queue;
    ncfg.send_queue_bytes = cfg.net.send_queue_bytes;
    ncfg.recv_queue = cfg.net.recv_queue;
    ncfg.recv_queue_bytes = cfg.net.recv_queue_bytes;
    ncfg.backoff_max = cfg.net.backoff_max;
    ncfg.max_pending_handshakes = cfg.net.max_pending_handshakes;
    ncfg.handshake_timeout = cfg.net.handshake_timeout;
    ncfg.idle_timeout = cfg.net.idle_timeout;
    ncfg.keepalive = cfg.net.keepalive;
    ncfg.tls = cfg.net.tls.clone();
    ncfg.version_floor = cluster_version.clone();
    let (transport, inbound) = env.network.connect(ncfg).await?;
    let (events_tx, events) = mpsc::unbounded_channel();
    let snapshots = Snapshots::new(
        cfg.snapshot.clone(),
        store.clone(),
        last_snapshot,
        storage_stats.snapshot().bytes_written,
        events_tx.clone(),
        exec.clone(),
    );
    if let Some(streams) = transport.take_streams() {
        tokio::spawn(receive_streams(
            streams,
            store,
            snapshots.settings(),
            snapshots.transfers.clone(),
            events_tx,
        ));
    }

    tracing::info!(
        id = cfg.id,
        cluster = %cfg.cluster_id,
        raft_addr = %me.raft,
        data_dir = %cfg.data_dir.display(),
        term = node.term(),
        last_index = node.last_index(),
        "raft node started"
    );
    let cfg_autopilot = cfg.autopilot.clone();
    let flow = crate::flow::FlowControl::new(cfg.flow.clone());
    // A joining node: a learner by its own configuration, with nothing from the log yet.
    let joining = cfg.learners.contains(&cfg.id) && node.status().membership_index == 0;
    let mut rt = Runtime {
        cfg,
        node,
        storage: storage.clone(),
        applier: Applier::spawn(sm, applied),
        transport,
        inbound,
        cmds,
        leader_tx,
        waiters: Waiters::new(),
        applied,
        readable,
        isolated: false,
        snapshots,
        events,
        storage_stats: storage_stats.clone(),
        pending_backups: Vec::new(),
        backups: Vec::new(),
        book,
        membership,
        last_heard: BTreeMap::new(),
        received_at: crate::exec::now(),
        departed: BTreeMap::new(),
        seen_as_member: !joining,
        autopilot: crate::autopilot::Autopilot::new(cfg_autopilot),
        autopilot_ran: crate::exec::now(),
        clock: TickClock::new(cfg_tick, max_catch_up),
        writes: WritePipeline::new(storage, exec.clone()),
        _exec_guard: exec.guard(),
        exec,
        flow,
        cluster_version,
        raising: versions::Raising::default(),
    };
    // A snapshot installed just before a crash may name a cluster version not recorded yet.
    if let Some(v) = rt.snapshots.store.cluster_version_of(&rt.snapshots.last) {
        rt.adopt_cluster_version(v)
            .map_err(|e| StartError::Config(e.to_string()))?;
    }
    Ok((rt, reader, storage_stats))
}

impl<SM: StateMachine> Runtime<SM> {
    async fn run(mut self, cancel: CancellationToken) {
        let mut ticker = tokio::time::interval(self.cfg.tick);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let outcome = loop {
            let input = tokio::select! {
                _ = cancel.cancelled() => break Error::Shutdown,
                _ = ticker.tick() => Input::Tick,
                m = self.inbound.recv() => match m {
                    Some((_, msg)) => Input::Message(msg),
                    None => break Error::Shutdown,
                },
                c = self.cmds.recv() => match c {
                    Some(cmd) => Input::Command(cmd),
                    None => break Error::Shutdown, // every handle is gone
                },
                ev = self.events.recv() => match ev {
                    Some(ev) => Input::Event(ev),
                    None => Input::Tick,
                },
                done = self.writes.completed() => Input::Written(done),
                applied = self.applier.completed() => Input::Applied(applied),
            };
            // Ticks first: whatever comes next sees the core's clock at real time.
            for _ in 0..self.clock.due() {
                self.node.tick();
            }
            if let Err(e) = self.handle(input) {
                break e;
            }
            // Applies already back join this turn (under load they would otherwise each
            // cost a turn of their own).
            if let Err(e) = self.take_applied() {
                break e;
            }
            if let Err(e) = self.process_ready().await {
                break e;
            }
        };
        self.stop(outcome).await;
    }

    /// One input, and everything else of its kind already queued (up to
    /// [`MAX_INPUTS_PER_TURN`]): this is where batching happens.
    fn handle(&mut self, input: Input<SM>) -> Result<(), Error> {
        match input {
            // Looked at on ticks only: not a clock read on every turn of a busy loop.
            Input::Tick => self.raise_cluster_version(),
            Input::Message(msg) => {
                self.received_at = crate::exec::now();
                self.on_message(msg);
                for _ in 0..MAX_INPUTS_PER_TURN {
                    match self.inbound.try_recv() {
                        Ok((_, msg)) => self.on_message(msg),
                        Err(_) => break,
                    }
                }
            }
            Input::Command(cmd) => {
                self.on_command(cmd);
                for _ in 0..MAX_INPUTS_PER_TURN {
                    match self.cmds.try_recv() {
                        Ok(cmd) => self.on_command(cmd),
                        Err(_) => break,
                    }
                }
            }
            Input::Event(ev) => self.on_event(ev)?,
            Input::Written(done) => self.on_written(done)?,
            Input::Applied(applied) => self.on_applied(applied)?,
        }
        Ok(())
    }

    async fn stop(mut self, why: Error) {
        // A write in progress finishes before the store closes (its outcome no longer
        // matters: nothing it promised will be sent), and so does every apply.
        let _ = self.writes.completed_if_any().await;
        let _ = self.wait_applied().await;
        self.waiters.fail_all(&why);
        self.cmds.close();
        while let Ok(cmd) = self.cmds.try_recv() {
            reject(cmd, why.clone());
        }
        self.transport.shutdown().await;
        // What holds the node's files finishes before the node reports it stopped, so that
        // a restart in the same process finds them free: a snapshot being written (it holds
        // the log and the state machine's copy), then the apply task and the state machine.
        self.wait_snapshot_taken().await;
        let id = self.cfg.id;
        self.applier.close().await;
        tracing::info!(id, reason = %why, "raft node stopped");
    }

    fn on_message(&mut self, msg: Message) {
        if self.isolated {
            return;
        }
        if let raft_core::MessageBody::InstallSnapshot { .. } = msg.body {
            // A snapshot's metadata reaches the core only once its data has arrived on a
            // stream (see `snapshots.rs`); one on the message connection is dropped.
            tracing::debug!(
                id = self.cfg.id,
                from = msg.from,
                "dropped a snapshot offer without its data"
            );
            return;
        }
        self.leader_tx.heard(msg.from, msg.term);
        self.last_heard.insert(msg.from, self.received_at);
        self.measure_ack(&msg);
        self.node.step(msg);
    }
}

#[cfg(test)]
mod tests;
