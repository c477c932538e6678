//! The runtime task (the original's `Run`): owns the core node and drives it with ticks,
//! peer messages and client commands; sends; hands each `Ready`'s writes to the write
//! pipeline (`writes.rs`) and keeps stepping while they are made durable; hands committed
//! entries to the apply task (`applier.rs`) and keeps stepping while they are applied;
//! answers callers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use raft_core::{
    ConfChange, ConfChangeError, Entry, EntryKind, LogIndex, Membership, Message, Node, NodeId,
    ProposeError, ReadError, ReadOutcome, Ready, Role, Term, TransferError,
};
use raft_net::{Inbound, NetConfig};
use raft_storage::{LogStorage, StorageConfig};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::applier::{Applied, Applier};
use crate::batch::take_through;
use crate::config::NodeConfig;
use crate::error::{Error, StartError};
use crate::handle::{Command, Committed};
use crate::leader::LeaderSender;
use crate::limits::Permit;
use crate::log_reader::LogReader;
use crate::membership::{encode_context, member_addresses, AddressBook, MemberInfo, MemberRole};
use crate::snapshot_store::SnapshotStore;
use crate::snapshot_transfer::Transfers;
use crate::snapshots::{receive_streams, restore_at_start, Event, Snapshots};
use crate::state_machine::StateMachine;
use crate::storage::SharedStorage;
use crate::writes::{Done, Write, WritePipeline};

/// What woke the runtime up.
enum Input<SM: StateMachine> {
    Tick,
    Message(Message),
    Command(Command<SM::Response>),
    Event(Event),
    Written(Result<Done, String>),
    Applied(Option<Applied<SM::Response>>),
}

/// The core's clock, driven by the monotonic clock: how many ticks are due since the last
/// time asked, however late the asking (at most `max_catch_up` at once: beyond a few
/// election timeouts, more ticks change nothing but the time spent delivering them).
struct TickClock {
    start: std::time::Instant,
    tick: std::time::Duration,
    delivered: u64,
    max_catch_up: u64,
}

impl TickClock {
    fn new(tick: std::time::Duration, max_catch_up: u64) -> Self {
        TickClock {
            start: crate::exec::now(),
            tick: tick.max(std::time::Duration::from_micros(1)),
            delivered: 0,
            max_catch_up,
        }
    }

    /// Ticks due now and not delivered yet; they count as delivered.
    fn due(&mut self) -> u64 {
        self.due_at(crate::exec::now())
    }

    fn due_at(&mut self, now: std::time::Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.start).as_nanos();
        let total = u64::try_from(elapsed / self.tick.as_nanos()).unwrap_or(u64::MAX);
        let missed = total.saturating_sub(self.delivered);
        self.delivered = self.delivered.max(total);
        missed.min(self.max_catch_up)
    }
}

/// Why a node stops when its state machine's task ended (it panicked).
const APPLY_TASK_GONE: &str = "the state machine's apply task stopped (it panicked)";

/// Inputs handled per turn at most before the node's output is processed.
const MAX_INPUTS_PER_TURN: usize = 4096;

struct PendingSubmit<R> {
    term: Term,
    reply: oneshot::Sender<Result<Committed<R>, Error>>,
    _permit: Permit,
}

type ReadReply = oneshot::Sender<Result<LogIndex, Error>>;
type ChangeReply = oneshot::Sender<Result<LogIndex, Error>>;
type TransferReply = oneshot::Sender<Result<NodeId, Error>>;

pub(crate) struct Runtime<SM: StateMachine> {
    pub(crate) cfg: NodeConfig,
    pub(crate) node: Node<SharedStorage>,
    pub(crate) storage: SharedStorage,
    /// The state machine, in its own task.
    pub(crate) applier: Applier<SM>,
    pub(crate) transport: Arc<dyn crate::network::PeerNetwork>,
    inbound: Inbound,
    cmds: mpsc::Receiver<Command<SM::Response>>,
    leader_tx: LeaderSender,
    /// Submits on this leader awaiting their entry's commit, by index.
    pending: BTreeMap<LogIndex, PendingSubmit<SM::Response>>,
    /// Batches on this leader awaiting their entries' commit.
    batches: crate::batch::Batches<SM::Response>,
    /// Reads awaiting leadership confirmation, by read id.
    reads: BTreeMap<u64, ReadReply>,
    /// Confirmed reads awaiting the state machine to reach their index.
    parked_reads: Vec<(LogIndex, ReadReply)>,
    next_read_id: u64,
    pub(crate) applied: LogIndex,
    /// Published `applied`: what log readers may read (see [`LogReader`]).
    readable: Arc<AtomicU64>,
    isolated: bool,
    pub(crate) snapshots: Snapshots,
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
    /// Membership changes on this leader awaiting their entry's commit, by index.
    pending_changes: BTreeMap<LogIndex, (Term, ChangeReply)>,
    /// A leadership transfer awaiting its outcome.
    pending_transfer: Option<(NodeId, TransferReply)>,
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
    Ok(Spawned {
        task: on.spawn(rt.run(cancel)),
        runtime: NodeRuntime(match home {
            Home::Own(own) => Some(own),
            Home::Caller(_) => None,
        }),
        reader,
        storage_stats,
        transfers,
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
    let vfs = env.log_vfs.clone();
    let log = exec
        .blocking(move || match vfs {
            Some(vfs) => LogStorage::open_with(scfg, vfs),
            None => LogStorage::open(scfg),
        })
        .await
        .map_err(|e| StartError::Config(format!("storage open task failed: {e}")))??;
    let segments = log.reader();
    let storage_stats = log.stats();
    let last_snapshot = log.snapshot().clone();
    let storage = SharedStorage::new(log);
    let store = SnapshotStore::open(&cfg.data_dir).map_err(|e| {
        StartError::Config(format!(
            "cannot open the snapshot directory in {}: {e}",
            cfg.data_dir.display()
        ))
    })?;
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
    let rt = Runtime {
        cfg,
        node,
        storage: storage.clone(),
        applier: Applier::spawn(sm, applied),
        transport,
        inbound,
        cmds,
        leader_tx,
        pending: BTreeMap::new(),
        batches: crate::batch::Batches::new(),
        reads: BTreeMap::new(),
        parked_reads: Vec::new(),
        next_read_id: 0,
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
        pending_changes: BTreeMap::new(),
        pending_transfer: None,
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
    };
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
            Input::Tick => {}
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
        for (_, p) in std::mem::take(&mut self.pending) {
            let _ = p.reply.send(Err(why.clone()));
        }
        self.batches.fail_all(&why);
        for (_, r) in std::mem::take(&mut self.reads) {
            let _ = r.send(Err(why.clone()));
        }
        for (_, r) in std::mem::take(&mut self.parked_reads) {
            let _ = r.send(Err(why.clone()));
        }
        for (_, (_, r)) in std::mem::take(&mut self.pending_changes) {
            let _ = r.send(Err(why.clone()));
        }
        if let Some((_, r)) = self.pending_transfer.take() {
            let _ = r.send(Err(why.clone()));
        }
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

    fn not_leader(&self, leader: Option<raft_core::NodeId>) -> Error {
        let address = leader.and_then(|l| self.book.get(l)).and_then(|p| p.api);
        Error::NotLeader { leader, address }
    }

    /// What a refused proposal tells its submitter.
    fn refused(&self, e: ProposeError) -> Error {
        match e {
            ProposeError::NotLeader { leader } => self.not_leader(leader),
            ProposeError::Busy | ProposeError::UnsupportedKind => Error::Busy,
            ProposeError::TransferInProgress { to } => Error::TransferInProgress { to },
            ProposeError::Stopped(e) => Error::Storage(e.to_string()),
        }
    }

    fn on_command(&mut self, cmd: Command<SM::Response>) {
        match cmd {
            Command::Submit {
                kind,
                data,
                reply,
                permit,
            } => match propose(&mut self.node, kind, data) {
                Ok((index, term)) => {
                    self.pending.insert(
                        index,
                        PendingSubmit {
                            term,
                            reply,
                            _permit: permit,
                        },
                    );
                }
                Err(e) => {
                    let _ = reply.send(Err(self.refused(e)));
                }
            },
            Command::SubmitBatch {
                kind,
                data,
                reply,
                permit,
            } => {
                let count = data.len();
                match self.node.propose_batch(kind, data) {
                    Ok((first, term)) if count == 0 => {
                        let _ = reply.send(Ok(crate::CommittedBatch {
                            first,
                            term,
                            responses: Vec::new(),
                        }));
                    }
                    Ok((first, term)) => self.batches.insert(first, count, term, reply, permit),
                    Err(e) => {
                        let _ = reply.send(Err(self.refused(e)));
                    }
                }
            }
            Command::Read { reply } => {
                self.next_read_id += 1;
                let id = self.next_read_id;
                match self.node.read_index(id) {
                    Ok(()) => {
                        self.reads.insert(id, reply);
                    }
                    Err(ReadError::NotLeader { leader }) => {
                        let _ = reply.send(Err(self.not_leader(leader)));
                    }
                    Err(ReadError::Stopped(e)) => {
                        let _ = reply.send(Err(Error::Storage(e.to_string())));
                    }
                }
            }
            Command::Status { reply } => {
                let _ = reply.send(self.node.status());
            }
            Command::NetStats { reply } => {
                let _ = reply.send(self.transport.stats());
            }
            Command::ListenerStats { reply } => {
                let _ = reply.send(self.transport.listener_stats());
            }
            Command::Backup { reply } => {
                self.pending_backups.push(reply);
            }
            Command::ChangeMembership { changes, reply } => self.change_membership(changes, reply),
            Command::TransferLeadership { to, reply } => self.transfer_leadership(to, reply),
            Command::Members { reply } => {
                let _ = reply.send(self.members());
            }
            Command::Autopilot { reply } => {
                let _ = reply.send(self.autopilot.decisions.iter().cloned().collect());
            }
            Command::Campaign { reply } => {
                let _ = reply.send(self.node.campaign());
            }
            Command::Isolate(on) => self.isolated = on,
        }
    }

    /// Carries out everything the core has for us, in the order the core requires: messages
    /// leave at once, writes go to the pipeline (their promises wait for them), committed
    /// entries are applied. A `Ready` holding a snapshot is carried out whole, after every
    /// earlier write.
    async fn process_ready(&mut self) -> Result<(), Error> {
        while self.node.has_ready() {
            if self.cfg.pipeline_writes
                && self.node.has_snapshot_to_install()
                && (self.writes.busy() || self.applied < self.applier.handed())
            {
                // The install comes after every earlier write and apply: they finish in
                // their own time (each wakes this loop), while ticks, messages and commands
                // go on being handled.
                break;
            }
            let mut rd = self.node.ready();
            if let Some(e) = rd.storage_error.take() {
                tracing::error!(id = self.cfg.id, error = %e, "storage failed; stopping the node");
                return Err(Error::Storage(e.to_string()));
            }
            if let Some(ss) = rd.soft_state {
                self.on_soft_state(ss.role, ss.leader);
            }
            self.send_all(std::mem::take(&mut rd.messages));
            if rd.snapshot.is_some() || !self.cfg.pipeline_writes {
                self.flush_writes().await?;
                self.process_ready_in_place(rd).await?;
                continue;
            }
            if rd.must_persist() || (self.writes.busy() && !rd.persisted_messages.is_empty()) {
                self.writes.push(Write {
                    mark: rd.persisted_mark(),
                    entries: std::mem::take(&mut rd.entries),
                    hard_state: rd.hard_state,
                    must_sync: rd.must_sync,
                    promises: std::mem::take(&mut rd.persisted_messages),
                });
            } else {
                self.send_all(std::mem::take(&mut rd.persisted_messages));
            }
            self.applier.push(std::mem::take(&mut rd.committed_entries));
            self.finish_ready(rd);
        }
        self.writes.start();
        self.follow_membership();
        self.check_transfer();
        self.run_autopilot();
        let written = self.storage_stats.snapshot().bytes_written;
        self.maybe_take_snapshot(written);
        for reply in std::mem::take(&mut self.pending_backups) {
            self.start_backup(reply);
        }
        Ok(())
    }

    /// Carries out a `Ready` whole before going on (a snapshot to install, or writes not
    /// pipelined): persist, promise, apply, advance.
    async fn process_ready_in_place(&mut self, rd: raft_core::Ready) -> Result<(), Error> {
        self.wait_applied().await?;
        let mut rd = self.persist(rd).await?;
        if let Some(meta) = &rd.snapshot {
            // Storage holds the snapshot now; the state machine follows it in the apply
            // task, before the entries handed over next.
            self.restore_installed(meta)?;
            self.fail_covered_by_snapshot(meta.index);
        }
        self.send_all(std::mem::take(&mut rd.persisted_messages));
        self.applier.push(std::mem::take(&mut rd.committed_entries));
        if !self.cfg.pipeline_writes {
            self.wait_applied().await?;
        }
        self.finish_ready(rd);
        self.node.advance();
        Ok(())
    }

    /// What follows handing a `Ready`'s committed entries over: a step-down fails the
    /// submits waiting here, reads are parked until applied (or answered).
    fn finish_ready(&mut self, rd: raft_core::Ready) {
        if rd.soft_state.is_some_and(|ss| ss.role != Role::Leader) {
            self.fail_pending_submits();
        }
        for rs in rd.read_states {
            let Some(reply) = self.reads.remove(&rs.id) else {
                continue;
            };
            match rs.outcome {
                ReadOutcome::Ready { index } => self.parked_reads.push((index, reply)),
                ReadOutcome::Aborted => {
                    let _ = reply.send(Err(Error::LeadershipLost));
                }
            }
        }
        self.release_reads();
    }

    /// Handles every batch the apply task has already finished, without waiting.
    fn take_applied(&mut self) -> Result<(), Error> {
        while let Some(applied) = self.applier.try_completed() {
            self.on_applied(Some(applied))?;
        }
        Ok(())
    }

    /// Waits until every committed entry handed to the apply task is applied and its
    /// callers answered.
    pub(crate) async fn wait_applied(&mut self) -> Result<(), Error> {
        while self.applied < self.applier.handed() {
            let applied = self.applier.completed().await;
            self.on_applied(applied)?;
        }
        Ok(())
    }

    /// The apply task applied a batch: its callers are answered, the core learns it, reads
    /// waiting for it are released; a failed state machine stops the node.
    fn on_applied(&mut self, applied: Option<Applied<SM::Response>>) -> Result<(), Error> {
        let Some(Applied {
            entries,
            responses,
            failure,
            restored,
        }) = applied
        else {
            tracing::error!(id = self.cfg.id, "{APPLY_TASK_GONE}");
            return Err(Error::Storage(APPLY_TASK_GONE.into()));
        };
        if let Some(index) = restored.filter(|_| failure.is_none()) {
            self.applied = self.applied.max(index);
            self.readable.store(self.applied, Ordering::Release);
            self.node.on_applied(index);
            self.snapshots.transfers.count(|c| c.installed += 1);
            tracing::info!(
                id = self.cfg.id,
                index,
                "state machine restored from the snapshot"
            );
        }
        self.answer_applied(&entries, responses);
        if let Some(last) = entries.last() {
            self.applied = last.index;
            self.readable.store(last.index, Ordering::Release);
            self.node.on_applied(last.index);
        }
        if let Some(e) = failure {
            return Err(Error::Storage(format!("the state machine failed: {e}")));
        }
        self.release_reads();
        Ok(())
    }

    /// A batch of writes is durable: the core learns it, write by write, and each write's
    /// promises leave.
    fn on_written(&mut self, done: Result<Done, String>) -> Result<(), Error> {
        let done = done.map_err(|e| {
            tracing::error!(id = self.cfg.id, error = %e, "storage failed; stopping the node");
            Error::Storage(e)
        })?;
        for (mark, promises) in done.acks {
            if let Some((index, term)) = mark {
                self.node.on_persisted(index, term);
            }
            self.send_all(promises);
        }
        Ok(())
    }

    /// Waits until every write handed to the pipeline is durable and acknowledged.
    pub(crate) async fn flush_writes(&mut self) -> Result<(), Error> {
        while self.writes.busy() {
            self.writes.start();
            let done = self.writes.completed().await;
            self.on_written(done)?;
        }
        Ok(())
    }

    /// Starts a backup: a copy of the state machine as of the last committed entry handed
    /// to the apply task, which takes it once it has applied that entry; `reply` gets it
    /// then. The loop does not wait.
    fn start_backup(&mut self, reply: oneshot::Sender<Result<crate::Backup, Error>>) {
        let index = self.applier.handed();
        let Some(term) = self.node.entry_term(index) else {
            let why = format!("the term of entry {index} is unknown");
            let _ = reply.send(Err(Error::Storage(why)));
            return;
        };
        let Some(membership) = self.node.membership_at(index).cloned() else {
            let why = format!("the configuration at entry {index} is unknown");
            let _ = reply.send(Err(Error::Storage(why)));
            return;
        };
        let meta = raft_core::SnapshotMeta {
            index,
            term,
            membership,
        };
        let (_, copied) = self.applier.copy();
        self.backups.retain(|b| !b.is_finished());
        let task = tokio::spawn(async move {
            let backup = match copied.await {
                Ok(Ok(source)) => Ok(crate::Backup { meta, source }),
                // A snapshot from the leader replaced the state first: ask again.
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => Err(Error::Busy),
                Ok(Err(e)) => Err(Error::Storage(format!(
                    "the state machine cannot be copied: {e}"
                ))),
                Err(_) => Err(Error::Shutdown),
            };
            let _ = reply.send(backup);
        });
        self.backups
            .push(tokio_util::task::AbortOnDropHandle::new(task));
    }

    /// At most every 100 ms on the leader, with no change under way: the autopilot's
    /// decision, if any, is proposed.
    fn run_autopilot(&mut self) {
        let now = crate::exec::now();
        if now.duration_since(self.autopilot_ran) < std::time::Duration::from_millis(100) {
            return;
        }
        self.autopilot_ran = now;
        if self.node.role() != Role::Leader
            || self.node.conf_change_in_progress()
            || self.node.transfer_target().is_some()
            || !self.pending_changes.is_empty()
        {
            return;
        }
        let members = self.members();
        if let Some(change) = self.autopilot.decide(self.cfg.id, &members, now) {
            let (reply, _) = oneshot::channel();
            self.change_membership(vec![change], reply);
        }
    }

    fn on_soft_state(&mut self, role: Role, leader: Option<raft_core::NodeId>) {
        self.autopilot.reset();
        self.flow.reset();
        let term = self.node.term();
        self.leader_tx.set(leader, term);
        tracing::info!(id = self.cfg.id, ?role, ?leader, term, "role changed");
    }

    /// Leadership ended: submits still waiting whose entries this node does not know to be
    /// committed may commit under the next leader, or not. The outcome is unknown, and
    /// waiting for it could take forever: say so now. Those at or below the commit index
    /// are committed, whether or not they were handed to the apply task yet (the followers
    /// may commit an entry before the leader's own write of it ends): they are answered
    /// when applied, here, as a follower. A batch that straddles the line is answered, with
    /// this error, once its committed part is applied.
    fn fail_pending_submits(&mut self) {
        let after = self
            .applier
            .handed()
            .max(self.node.commit_index())
            .saturating_add(1);
        for (_, p) in self.pending.split_off(&after) {
            let _ = p.reply.send(Err(Error::LeadershipLost));
        }
        self.batches.fail_from(after, &Error::LeadershipLost);
        for (_, (_, r)) in self.pending_changes.split_off(&after) {
            let _ = r.send(Err(Error::LeadershipLost));
        }
    }

    /// A snapshot up to `index` was installed: callers still waiting for entries it covers
    /// (left waiting when this node stepped down with them committed but not yet applied)
    /// will never see them applied here, so their responses are lost. They are told the
    /// outcome is unknown to this node; the entries did commit, which a read shows.
    fn fail_covered_by_snapshot(&mut self, index: LogIndex) {
        for (_, p) in take_through(&mut self.pending, index) {
            let _ = p.reply.send(Err(Error::LeadershipLost));
        }
        self.batches.fail_through(index, &Error::LeadershipLost);
        for (_, (_, r)) in take_through(&mut self.pending_changes, index) {
            let _ = r.send(Err(Error::LeadershipLost));
        }
    }

    /// Proposes a membership change, first recording the addresses of members the
    /// configuration names without them (the bootstrap members), so that the cluster's
    /// configuration holds every member's addresses from then on.
    fn change_membership(&mut self, changes: Vec<ConfChange>, reply: ChangeReply) {
        let current = self.node.membership();
        let mut all: Vec<ConfChange> = current
            .members()
            .into_iter()
            .filter(|id| !current.context.contains_key(id))
            .filter_map(|id| {
                let peer = self.book.get(id)?;
                Some(ConfChange::SetContext {
                    id,
                    context: encode_context(&peer),
                })
            })
            .collect();
        all.extend(changes);
        match self.node.propose_conf_change(&all) {
            Ok((index, term)) => {
                tracing::info!(id = self.cfg.id, index, changes = ?all, "membership change proposed");
                self.pending_changes.insert(index, (term, reply));
            }
            Err(ConfChangeError::NotLeader { leader }) => {
                let _ = reply.send(Err(self.not_leader(leader)));
            }
            Err(ConfChangeError::TransferInProgress { to }) => {
                let _ = reply.send(Err(Error::TransferInProgress { to }));
            }
            Err(ConfChangeError::Stopped(e)) => {
                let _ = reply.send(Err(Error::Storage(e.to_string())));
            }
            Err(e) => {
                let _ = reply.send(Err(Error::Membership(e)));
            }
        }
    }

    /// Starts handing leadership to `to`, or to the most caught-up voter.
    fn transfer_leadership(&mut self, to: Option<NodeId>, reply: TransferReply) {
        let Some(to) = to.or_else(|| self.node.transfer_candidate()) else {
            let e = match self.node.role() {
                Role::Leader => Error::Transfer(TransferError::NoCandidate),
                _ => self.not_leader(self.node.leader()),
            };
            let _ = reply.send(Err(e));
            return;
        };
        match self.node.transfer_leadership(to) {
            Ok(()) if to == self.cfg.id => {
                let _ = reply.send(Ok(to));
            }
            Ok(()) => {
                tracing::info!(id = self.cfg.id, to, "transferring leadership");
                if let Some((_, older)) = self.pending_transfer.replace((to, reply)) {
                    let _ = older.send(Err(Error::TransferFailed { to }));
                }
            }
            Err(TransferError::NotLeader { leader }) => {
                let _ = reply.send(Err(self.not_leader(leader)));
            }
            Err(TransferError::Stopped(e)) => {
                let _ = reply.send(Err(Error::Storage(e.to_string())));
            }
            Err(e) => {
                let _ = reply.send(Err(Error::Transfer(e)));
            }
        }
    }

    /// Answers a transfer once leadership has moved (to whichever node now leads), or once
    /// the leader has abandoned it.
    fn check_transfer(&mut self) {
        let Some((to, _)) = &self.pending_transfer else {
            return;
        };
        let to = *to;
        let outcome = match (self.node.role(), self.node.leader()) {
            (Role::Leader, _) if self.node.transfer_target() == Some(to) => return,
            (Role::Leader, _) => Err(Error::TransferFailed { to }),
            (_, Some(leader)) => Ok(leader),
            (_, None) => return,
        };
        if let Some((_, reply)) = self.pending_transfer.take() {
            let _ = reply.send(outcome);
        }
    }

    /// Points the transport and the address book at the members of the configuration in
    /// effect and of the latest committed one, when either changed: a member being removed
    /// stays reachable until its removal commits (it may be the leader that must commit
    /// it).
    ///
    /// A node that leaves both stays reachable for two more election timeouts: a removed
    /// leader's last messages (the `TimeoutNow` that hands leadership over) may arrive just
    /// after the commit that removed it.
    fn follow_membership(&mut self) {
        let now = crate::exec::now();
        let current = (
            self.node.membership(),
            self.node.membership_at(self.node.commit_index()),
        );
        let same = current.0 == &self.membership.0 && current.1 == self.membership.1.as_ref();
        let expired = self.departed.values().any(|(_, until)| *until <= now);
        if same && !expired {
            return;
        }
        let changed = current.0 != &self.membership.0;
        if !same {
            self.membership = (current.0.clone(), current.1.cloned());
            let addresses = peer_addresses(&self.membership, &self.cfg.peers);
            let grace = self
                .cfg
                .tick
                .saturating_mul(self.cfg.raft.election_ticks)
                .saturating_mul(2);
            for (id, peer) in self.book.all() {
                if !addresses.contains_key(&id) {
                    self.departed.entry(id).or_insert((peer, now + grace));
                }
            }
            self.departed.retain(|id, _| !addresses.contains_key(id));
            self.book.set(addresses);
            self.book.set_members(self.membership.0.members());
        }
        self.departed.retain(|_, (_, until)| *until > now);
        let peers = transport_peers(self.cfg.id, &self.book.all(), &self.departed);
        self.transport.set_peers(&peers);
        if !changed {
            return;
        }
        let m = &self.membership.0;
        tracing::info!(
            id = self.cfg.id,
            voters = ?m.voters,
            outgoing = ?m.outgoing,
            learners = ?m.learners,
            "membership changed"
        );
        if m.contains(self.cfg.id) {
            self.seen_as_member = true;
        } else if self.seen_as_member {
            tracing::warn!(
                id = self.cfg.id,
                "this node is no longer a member of the cluster; it will not campaign and can be shut down"
            );
        }
    }

    /// Every member, with the leader's view of its progress when this node leads.
    fn members(&self) -> Vec<MemberInfo> {
        let status = self.node.status();
        let leading = status.role == Role::Leader;
        let last = status.last_index;
        let timeout = self.cfg.tick.saturating_mul(self.cfg.raft.election_ticks);
        let m = &status.membership;
        m.members()
            .into_iter()
            .map(|id| {
                let peer = self.book.get(id);
                let progress = status.progress.iter().find(|p| p.id == id);
                let match_index = match (leading, id == self.cfg.id) {
                    (false, _) => None,
                    (true, true) => Some(last),
                    (true, false) => Some(progress.map_or(0, |p| p.match_index)),
                };
                let reachable = leading.then(|| {
                    id == self.cfg.id
                        || self.last_heard.get(&id).is_some_and(|t| {
                            crate::exec::now().saturating_duration_since(*t) < timeout
                        })
                });
                MemberInfo {
                    id,
                    raft: peer.as_ref().map(|p| p.raft),
                    api: peer.and_then(|p| p.api),
                    role: if m.is_voter(id) {
                        MemberRole::Voter
                    } else {
                        MemberRole::Learner
                    },
                    match_index,
                    lag: match_index.map(|i| last.saturating_sub(i)),
                    reachable,
                }
            })
            .collect()
    }

    /// A follower's acknowledgement to this leader: a sample for its flow-control window,
    /// set before the core hears it (so what it frees goes out under the new window).
    fn measure_ack(&mut self, msg: &Message) {
        let raft_core::MessageBody::AppendEntriesResponse { index, reject } = msg.body else {
            return;
        };
        if !self.flow.adaptive() || msg.term != self.node.term() || self.node.role() != Role::Leader
        {
            return;
        }
        if reject.is_some() {
            self.flow.rewind(msg.from);
        } else if let Some(window) = self.flow.on_ack(msg.from, index, self.received_at) {
            self.node.set_flow_window(msg.from, Some(window));
        }
    }

    /// Hands the messages to the transport (moved, not copied: this is the hot path).
    fn send_all(&mut self, msgs: Vec<Message>) {
        if self.isolated {
            return;
        }
        let mut now = None;
        for m in msgs {
            if let raft_core::MessageBody::AppendEntries { entries, .. } = &m.body {
                if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
                    if self.flow.adaptive() {
                        let at = *now.get_or_insert_with(crate::exec::now);
                        let bytes = entries.iter().map(Entry::size).sum();
                        self.flow.on_send(m.to, first.index, last.index, bytes, at);
                    }
                }
            }
            if let raft_core::MessageBody::InstallSnapshot { meta } = m.body {
                // The data travels on a stream of its own; the core hears how it went.
                self.send_snapshot_to(m.to, m.term, meta);
                continue;
            }
            self.transport.send(m);
        }
    }

    /// Makes the `Ready`'s hard state and entries durable on a blocking thread.
    async fn persist(&mut self, rd: Ready) -> Result<Ready, Error> {
        if !rd.must_persist() {
            return Ok(rd);
        }
        let storage = self.storage.clone();
        let joined = self
            .exec
            .blocking(move || {
                let result = match storage.write() {
                    Ok(mut s) => s.persist(&rd).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                (rd, result)
            })
            .await;
        match joined {
            Ok((rd, Ok(()))) => Ok(rd),
            Ok((_, Err(e))) => {
                tracing::error!(id = self.cfg.id, error = %e, "storage failed; stopping the node");
                Err(Error::Storage(e))
            }
            Err(e) => Err(Error::Storage(format!("persist task failed: {e}"))),
        }
    }

    /// Answers the callers waiting for `entries`, just applied with `responses`.
    fn answer_applied(&mut self, entries: &[Entry], responses: Vec<SM::Response>) {
        let mut responses = responses.into_iter();
        for e in entries {
            let response = responses.next();
            if let Some((term, reply)) = self.pending_changes.remove(&e.index) {
                let outcome = if term == e.term {
                    Ok(e.index)
                } else {
                    Err(Error::Overwritten)
                };
                let _ = reply.send(outcome);
            }
            let Some(p) = self.pending.remove(&e.index) else {
                if !self.batches.is_empty() {
                    self.batches.applied(e, response);
                }
                continue;
            };
            let outcome = match response {
                Some(response) if p.term == e.term => Ok(Committed {
                    index: e.index,
                    term: e.term,
                    response,
                }),
                Some(_) => Err(Error::Overwritten),
                None => Err(Error::Storage(
                    "the state machine returned fewer responses than entries".into(),
                )),
            };
            let _ = p.reply.send(outcome);
        }
    }

    fn release_reads(&mut self) {
        let applied = self.applied;
        let mut i = 0;
        while i < self.parked_reads.len() {
            if self.parked_reads[i].0 <= applied {
                let (index, reply) = self.parked_reads.swap_remove(i);
                let _ = reply.send(Ok(index));
            } else {
                i += 1;
            }
        }
    }
}

/// The Raft addresses the transport connects to: the members' and the departed nodes',
/// this node's left out.
fn transport_peers(
    me: NodeId,
    members: &BTreeMap<NodeId, crate::config::Peer>,
    departed: &BTreeMap<NodeId, (crate::config::Peer, std::time::Instant)>,
) -> BTreeMap<NodeId, std::net::SocketAddr> {
    members
        .iter()
        .chain(departed.iter().map(|(id, (p, _))| (id, p)))
        .filter(|(&id, _)| id != me)
        .map(|(&id, p)| (id, p.raft))
        .collect()
}

/// The addresses of every member of the configuration in effect and of the latest
/// committed one.
fn peer_addresses(
    (current, committed): &(Membership, Option<Membership>),
    bootstrap: &BTreeMap<NodeId, crate::config::Peer>,
) -> BTreeMap<NodeId, crate::config::Peer> {
    let mut all = committed
        .as_ref()
        .map(|m| member_addresses(m, bootstrap))
        .unwrap_or_default();
    all.extend(member_addresses(current, bootstrap));
    all
}

/// Proposes an entry of the submit's kind.
fn propose(
    node: &mut Node<SharedStorage>,
    kind: EntryKind,
    data: bytes::Bytes,
) -> Result<(LogIndex, Term), ProposeError> {
    match kind {
        EntryKind::Command => node.propose_command(data),
        _ => node.propose(data),
    }
}

fn reject<R>(cmd: Command<R>, why: Error) {
    match cmd {
        Command::Submit { reply, .. } => {
            let _ = reply.send(Err(why));
        }
        Command::SubmitBatch { reply, .. } => {
            let _ = reply.send(Err(why));
        }
        Command::Read { reply } => {
            let _ = reply.send(Err(why));
        }
        Command::ChangeMembership { reply, .. } => {
            let _ = reply.send(Err(why));
        }
        Command::TransferLeadership { reply, .. } => {
            let _ = reply.send(Err(why));
        }
        Command::Members { .. }
        | Command::Autopilot { .. }
        | Command::Status { .. }
        | Command::NetStats { .. }
        | Command::ListenerStats { .. }
        | Command::Backup { .. }
        | Command::Campaign { .. }
        | Command::Isolate(_) => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::BTreeMap;

    use raft_core::{MessageBody, Role};

    use super::*;
    use crate::config::Peer;
    use crate::limits::Limits;
    use crate::state_machine::ReplicatedLog;

    #[test]
    fn the_tick_clock_delivers_every_tick_due_however_late_it_is_asked_up_to_a_cap() {
        let ms = std::time::Duration::from_millis;
        let mut c = TickClock::new(ms(10), 40);
        let t0 = c.start;
        assert_eq!(c.due_at(t0 + ms(9)), 0);
        assert_eq!(c.due_at(t0 + ms(35)), 3);
        assert_eq!(c.due_at(t0 + ms(39)), 0, "delivered once");
        assert_eq!(c.due_at(t0 + ms(40)), 1);
        // A pause of a second: the missed ticks come at once, at most 40 of them...
        assert_eq!(c.due_at(t0 + ms(1040)), 40);
        // ...and the clock then goes on from real time, not from the capped count.
        assert_eq!(c.due_at(t0 + ms(1050)), 1);
        assert_eq!(c.due_at(t0), 0, "time never runs backwards");
    }

    fn unused_addr() -> std::net::SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    /// Node 1 of {1, 2, 3}, built but not running: the test steps it by hand, as the
    /// runtime loop would, with peers that never answer on their own.
    async fn runtime(dir: &std::path::Path) -> Runtime<ReplicatedLog> {
        runtime_with(dir, |_| {}).await
    }

    async fn runtime_with(
        dir: &std::path::Path,
        tweak: impl FnOnce(&mut NodeConfig),
    ) -> Runtime<ReplicatedLog> {
        let peers: BTreeMap<u64, Peer> = (1..=3)
            .map(|id| {
                let p = Peer {
                    raft: unused_addr(),
                    api: None,
                };
                (id, p)
            })
            .collect();
        let mut cfg = NodeConfig::new(1, "t", peers, dir);
        tweak(&mut cfg);
        let (_tx, rx) = mpsc::channel(16);
        let (leader_tx, _) = crate::leader::channel();
        let (rt, _, _) = build(
            cfg,
            ReplicatedLog::new(),
            rx,
            leader_tx,
            AddressBook::default(),
            crate::Environment::real(),
        )
        .await
        .unwrap();
        rt
    }

    fn msg(from: u64, term: Term, body: MessageBody) -> Message {
        Message {
            from,
            to: 1,
            term,
            body,
        }
    }

    #[tokio::test]
    async fn a_joining_node_is_not_told_it_was_removed_by_configurations_from_before_it_joined() {
        let dir = tempfile::tempdir().unwrap();
        let mut rt = runtime_with(dir.path(), |c| {
            c.learners.insert(1);
        })
        .await;
        assert!(!rt.seen_as_member);
        // The log replays a configuration from before node 1 joined, then the one adding it.
        let before = raft_core::Membership::new([2, 3]);
        let mut with_1 = before.clone();
        with_1.learners.insert(1);
        let entries = [
            Entry {
                term: 1,
                index: 1,
                kind: EntryKind::Config,
                data: before.encode(),
            },
            Entry {
                term: 1,
                index: 2,
                kind: EntryKind::Config,
                data: with_1.encode(),
            },
        ];
        rt.on_message(msg(
            2,
            1,
            MessageBody::AppendEntries {
                prev_index: 0,
                prev_term: 0,
                entries: entries[..1].to_vec(),
                commit: 1,
            },
        ));
        rt.process_ready().await.unwrap();
        assert_eq!(rt.node.membership(), &before);
        assert!(
            !rt.seen_as_member,
            "not a member yet, so not removed either"
        );
        rt.on_message(msg(
            2,
            1,
            MessageBody::AppendEntries {
                prev_index: 1,
                prev_term: 1,
                entries: entries[1..].to_vec(),
                commit: 2,
            },
        ));
        rt.process_ready().await.unwrap();
        assert!(rt.seen_as_member);
    }

    #[tokio::test]
    async fn a_node_whose_removal_commits_stays_reachable_for_its_last_messages() {
        let dir = tempfile::tempdir().unwrap();
        let mut rt = runtime(dir.path()).await;
        // Leader 2 removes itself; the entry arrives committed.
        let without_2 = raft_core::Membership::new([1, 3]);
        let entry = Entry {
            term: 1,
            index: 1,
            kind: EntryKind::Config,
            data: without_2.encode(),
        };
        rt.on_message(msg(
            2,
            1,
            MessageBody::AppendEntries {
                prev_index: 0,
                prev_term: 0,
                entries: vec![entry],
                commit: 1,
            },
        ));
        rt.process_ready().await.unwrap();
        assert_eq!(
            (rt.node.membership(), rt.node.commit_index()),
            (&without_2, 1)
        );
        // Its TimeoutNow handing leadership over may still be on its way.
        let peers = rt.transport.peers();
        assert!(
            peers.contains_key(&2),
            "the removed leader is cut off too soon"
        );
        assert!(peers.contains_key(&3));
        assert_eq!(
            rt.members().len(),
            2,
            "but it is no longer listed as a member"
        );
    }

    /// Node 1 made leader of term `t` by node 2's votes, with one submitted entry proposed
    /// (its write handed to the write pipeline, not acknowledged to the core); returns the
    /// term, the entry's index and the submit's outcome.
    async fn leader_with_one_submit(
        rt: &mut Runtime<ReplicatedLog>,
    ) -> (
        Term,
        LogIndex,
        oneshot::Receiver<Result<Committed<LogIndex>, Error>>,
    ) {
        rt.node.campaign();
        rt.process_ready().await.unwrap();
        let t = rt.node.term() + 1;
        rt.on_message(msg(2, t, MessageBody::PreVoteResponse { granted: true }));
        rt.process_ready().await.unwrap();
        rt.on_message(msg(
            2,
            t,
            MessageBody::RequestVoteResponse { granted: true },
        ));
        rt.process_ready().await.unwrap();
        assert_eq!(rt.node.role(), Role::Leader);
        let noop = rt.node.last_index();

        let limits = Limits::new(10, 1 << 20);
        let (reply, outcome) = oneshot::channel();
        rt.on_command(Command::Submit {
            kind: EntryKind::Normal,
            data: bytes::Bytes::from_static(b"x"),
            reply,
            permit: limits.try_acquire(1).unwrap(),
        });
        rt.process_ready().await.unwrap();
        let index = rt.node.last_index();
        assert_eq!(index, noop + 1);
        (t, index, outcome)
    }

    fn ack(from: u64, t: Term, index: LogIndex) -> Message {
        msg(
            from,
            t,
            MessageBody::AppendEntriesResponse {
                index,
                reject: None,
            },
        )
    }

    #[tokio::test]
    async fn an_entry_committed_in_the_same_turn_as_a_step_down_is_reported_committed() {
        let dir = tempfile::tempdir().unwrap();
        let mut rt = runtime(dir.path()).await;
        let (t, index, outcome) = leader_with_one_submit(&mut rt).await;
        // The leader's own write of the entry is durable before the acknowledgement comes.
        rt.flush_writes().await.unwrap();

        // One turn: node 2 acknowledges the entry (it commits), then node 3 speaks from a
        // newer term (the leader steps down). Both arrive before the Ready is processed.
        rt.on_message(ack(2, t, index));
        rt.on_message(ack(3, t + 1, 0));
        assert_ne!(rt.node.role(), Role::Leader);
        rt.process_ready().await.unwrap();
        // (The entry was handed to the apply task before the step-down: it is answered
        // once applied.)
        rt.wait_applied().await.unwrap();
        match outcome.await.unwrap() {
            Ok(c) => assert_eq!(c.index, index),
            Err(e) => panic!("the entry committed, yet the submit was told: {e}"),
        }
    }

    #[tokio::test]
    async fn an_entry_the_followers_committed_before_the_leaders_own_write_ended_is_reported_committed(
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut rt = runtime(dir.path()).await;
        let (t, index, outcome) = leader_with_one_submit(&mut rt).await;
        // Both followers acknowledge the entry while the leader's own write of it is still
        // under way: it is committed, but not yet durable here, so it cannot be handed to
        // the apply task. Then the leader steps down, in the same turn.
        rt.on_message(ack(2, t, index));
        rt.on_message(ack(3, t, index));
        assert_eq!(rt.node.commit_index(), index);
        rt.on_message(ack(3, t + 1, 0));
        assert_ne!(rt.node.role(), Role::Leader);
        rt.process_ready().await.unwrap();
        assert!(
            rt.applier.handed() < index,
            "the test needs the entry not handed over"
        );
        // The write ends, the entry is applied: the submit learns it committed.
        rt.flush_writes().await.unwrap();
        while rt.node.has_ready() {
            rt.process_ready().await.unwrap();
        }
        rt.wait_applied().await.unwrap();
        match outcome.await.unwrap() {
            Ok(c) => assert_eq!(c.index, index),
            Err(e) => panic!("the entry committed, yet the submit was told: {e}"),
        }
    }
}
