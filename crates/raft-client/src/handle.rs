//! [`RaftNode`]: the handle applications use. Cheap to clone; every clone talks to the same
//! runtime task.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use raft_core::{Entry, EntryKind, LogIndex, NodeId, Status};
use raft_storage::{StatsSnapshot, StorageStats, SyncPolicy};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::batch::CommittedBatch;
use crate::commands::{Command, Committed};
use crate::config::NodeConfig;
use crate::error::{Error, StartError};
use crate::leader::{LeaderInfo, LeaderView};
use crate::limits::Limits;
use crate::log_reader::LogReader;
use crate::runtime;
use crate::state_machine::StateMachine;

struct Shared {
    id: NodeId,
    limits: Arc<Limits>,
    leader: LeaderView,
    election_timeout: std::time::Duration,
    book: crate::membership::AddressBook,
    cancel: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
    /// Aborts the runtime task itself (for `abort`).
    runtime_abort: tokio::task::AbortHandle,
    /// The node's own runtime (kept for as long as a handle exists).
    _runtime: runtime::NodeRuntime,
    /// Cancelled once the runtime has fully stopped (or was aborted).
    stopped: CancellationToken,
    max_retrieve: usize,
    max_entry: usize,
    reader: LogReader,
    storage_stats: Arc<StorageStats>,
    sync: SyncPolicy,
    transfers: crate::snapshot_transfer::Transfers,
    cluster_version: raft_net::VersionFloor,
}

/// A running Raft node: the original's `New` + `Run` in one call, and its `Submit`,
/// `Retrieve` and `Leader`, safe to use from many tasks at once.
pub struct RaftNode<R> {
    tx: mpsc::Sender<Command<R>>,
    shared: Arc<Shared>,
}

impl<R> Clone for RaftNode<R> {
    fn clone(&self) -> Self {
        RaftNode {
            tx: self.tx.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<R: Send + 'static> RaftNode<R> {
    /// Opens the data directory, starts the transport and the runtime task, and returns the
    /// handle. Must be called within a multi-threaded tokio runtime.
    pub async fn start<SM>(cfg: NodeConfig, state_machine: SM) -> Result<Self, StartError>
    where
        SM: StateMachine<Response = R>,
    {
        Self::start_in(cfg, state_machine, crate::Environment::real()).await
    }

    /// Like [`start`](Self::start), in `env` (another network than TCP: the node
    /// simulator's).
    pub async fn start_in<SM>(
        cfg: NodeConfig,
        state_machine: SM,
        env: crate::Environment,
    ) -> Result<Self, StartError>
    where
        SM: StateMachine<Response = R>,
    {
        cfg.validate().map_err(StartError::Config)?;
        let (tx, rx) = mpsc::channel(cfg.request_queue);
        let (leader_tx, leader_rx) = crate::leader::channel();
        let cancel = CancellationToken::new();
        let limits = Limits::new(cfg.max_pending_submits, cfg.max_pending_bytes);
        let book = crate::membership::AddressBook::new(cfg.peers.clone());
        let max_retrieve = cfg.max_retrieve_entries;
        let election_timeout = cfg.tick.saturating_mul(cfg.raft.election_ticks);
        let max_entry = cfg.max_entry_bytes;
        let id = cfg.id;
        let sync = cfg.sync;
        let spawned = runtime::spawn(
            cfg,
            state_machine,
            rx,
            leader_tx,
            cancel.clone(),
            book.clone(),
            env,
        )
        .await?;
        let runtime = spawned.task;
        let runtime_abort = runtime.abort_handle();
        let node_runtime = spawned.runtime;
        let stopped = CancellationToken::new();
        let done = stopped.clone();
        let task = tokio::spawn(async move {
            let _ = runtime.await;
            done.cancel();
        });
        Ok(RaftNode {
            tx,
            shared: Arc::new(Shared {
                id,
                limits,
                leader: leader_rx,
                election_timeout,
                book,
                cancel,
                task: Mutex::new(Some(task)),
                runtime_abort,
                _runtime: node_runtime,
                stopped,
                max_retrieve,
                max_entry,
                reader: spawned.reader,
                storage_stats: spawned.storage_stats,
                sync,
                transfers: spawned.transfers,
                cluster_version: spawned.cluster_version,
            }),
        })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.shared.id
    }

    /// Appends `entry` to the replicated log and waits until it is committed and applied.
    /// Errors say what happened and what to do (see [`Error`]).
    pub async fn submit(&self, entry: impl Into<Bytes>) -> Result<Committed<R>, Error> {
        self.submit_kind(EntryKind::Normal, entry.into()).await
    }

    /// Like [`submit`](Self::submit), for a command encoded for the state machine: the
    /// entry gets the kind [`EntryKind::Command`], so that the state machine tells commands
    /// from plain entries by the entry's kind, never by its payload (a plain entry can hold
    /// any bytes). [`crate::KvStore`] applies only commands.
    pub async fn submit_command(&self, command: impl Into<Bytes>) -> Result<Committed<R>, Error> {
        self.submit_kind(EntryKind::Command, command.into()).await
    }

    /// Appends `entries` together, all or none, at consecutive indexes in one term, and
    /// waits until the last one is committed and applied; one answer, with a response per
    /// entry. Far cheaper per entry than as many `submit`s: one command to the runtime and
    /// one answer. A batch counts as one submit, with all its bytes, against the limits on
    /// submits in flight; each entry is bound by the entry size limit. Refused as a whole
    /// (nothing appended) for the reasons one entry is, and `Busy` when it does not fit
    /// the leader's uncommitted-bytes limit. When leadership is lost meanwhile, the answer
    /// is [`Error::LeadershipLost`] (some or all may still commit); when another leader's
    /// entries replaced some of it, [`Error::PartlyCommitted`] says how many committed.
    pub async fn submit_batch(&self, entries: Vec<Bytes>) -> Result<CommittedBatch<R>, Error> {
        self.submit_batch_kind(EntryKind::Normal, entries).await
    }

    /// Like [`submit_batch`](Self::submit_batch), for commands encoded for the state
    /// machine (see [`submit_command`](Self::submit_command)).
    pub async fn submit_command_batch(
        &self,
        commands: Vec<Bytes>,
    ) -> Result<CommittedBatch<R>, Error> {
        self.submit_batch_kind(EntryKind::Command, commands).await
    }

    async fn submit_batch_kind(
        &self,
        kind: EntryKind,
        data: Vec<Bytes>,
    ) -> Result<CommittedBatch<R>, Error> {
        let max = self.shared.max_entry;
        if let Some(big) = data.iter().find(|d| d.len() > max) {
            return Err(Error::TooLarge {
                size: big.len(),
                max,
            });
        }
        let bytes = data
            .iter()
            .fold(0u64, |sum, d| sum.saturating_add(d.len() as u64));
        let permit = self.shared.limits.try_acquire(bytes).ok_or(Error::Busy)?;
        let (reply, rx) = oneshot::channel();
        self.offer(Command::SubmitBatch {
            kind,
            data,
            reply,
            permit,
        })?;
        rx.await.unwrap_or(Err(Error::Shutdown))
    }

    async fn submit_kind(&self, kind: EntryKind, data: Bytes) -> Result<Committed<R>, Error> {
        if data.len() > self.shared.max_entry {
            return Err(Error::TooLarge {
                size: data.len(),
                max: self.shared.max_entry,
            });
        }
        let permit = self
            .shared
            .limits
            .try_acquire(data.len() as u64)
            .ok_or(Error::Busy)?;
        let (reply, rx) = oneshot::channel();
        self.offer(Command::Submit {
            kind,
            data,
            reply,
            permit,
        })?;
        rx.await.unwrap_or(Err(Error::Shutdown))
    }

    /// Committed entries from `from` on (1-based), in order, at most `limit` (and at most
    /// the configured maximum) per call. No-op entries appear with their kind.
    ///
    /// Served without the runtime (the read runs on the blocking pool), so read load never
    /// delays the protocol; entries appear once they are committed and applied here. At
    /// most [`crate::NodeConfig::max_concurrent_reads`] run at once: past it, the answer is
    /// [`Error::TooManyReads`] at once.
    pub async fn retrieve(&self, from: LogIndex, limit: usize) -> Result<Vec<Entry>, Error> {
        self.retrieve_with(from, limit, |entries| entries).await
    }

    /// Like [`retrieve`](Self::retrieve), and passes the entries through `f` on the same
    /// blocking thread, under the same read slot: to turn them into a response (JSON, say)
    /// without loading the async threads.
    pub async fn retrieve_with<T: Send + 'static>(
        &self,
        from: LogIndex,
        limit: usize,
        f: impl FnOnce(Vec<Entry>) -> T + Send + 'static,
    ) -> Result<T, Error> {
        let limit = limit.clamp(1, self.shared.max_retrieve);
        self.shared.reader.retrieve(from, limit, f).await
    }

    /// The reader of this node's committed log (for [`crate::AppLog`]).
    pub(crate) fn log_reader(&self) -> LogReader {
        self.shared.reader.clone()
    }

    /// The storage's write and sync counters (no round trip to the runtime).
    pub fn storage_stats(&self) -> StatsSnapshot {
        self.shared.storage_stats.snapshot()
    }

    /// The snapshot transfers running now, in and out, with their progress.
    pub fn snapshot_transfers(&self) -> Vec<crate::TransferStatus> {
        self.shared.transfers.list()
    }

    /// What this node did with snapshots since it started.
    pub fn snapshot_stats(&self) -> crate::SnapshotStats {
        self.shared.transfers.stats()
    }

    /// The cluster version this node has applied: the release line every member runs at
    /// least, raised through the log by the leader once they all do (see
    /// [`raft_core::ClusterVersion`]). Features that change what other nodes must read
    /// activate only once it is high enough.
    pub fn cluster_version(&self) -> raft_core::ClusterVersion {
        self.shared.cluster_version.get()
    }

    /// When this node syncs its log.
    pub fn sync_policy(&self) -> SyncPolicy {
        self.shared.sync
    }

    /// A linearizable read barrier (ReadIndex): once it returns `Ok(index)`, the state
    /// machine has applied at least every write acknowledged before the call, so reading
    /// it now is linearizable. On a follower (or learner) the read index comes from the
    /// leader (one round trip) and the barrier waits until this node has applied up to it;
    /// with no leader known the answer is [`Error::NotLeader`], and a request the leader
    /// does not answer within an election timeout is [`Error::LeadershipLost`] (retry).
    pub async fn read_barrier(&self) -> Result<LogIndex, Error> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Read { reply }).await?;
        rx.await.unwrap_or(Err(Error::Shutdown))
    }

    /// The leader this node knows of, and its term (no round trip to the runtime).
    pub fn leader(&self) -> LeaderInfo {
        self.shared.leader.get()
    }

    /// How many leaders this node has learned of since it started (a new leader, or the
    /// same one in a new term, count once each): the `leader changes` operators alert on.
    pub fn leader_changes(&self) -> u64 {
        self.shared.leader.changes()
    }

    /// The latest leaders this node learned of (at most [`crate::LEADER_HISTORY`]), oldest
    /// first.
    pub fn leader_history(&self) -> Vec<crate::LeaderChange> {
        self.shared.leader.history()
    }

    /// A receiver that sees every leader change.
    pub fn watch_leader(&self) -> watch::Receiver<LeaderInfo> {
        self.shared.leader.watch()
    }

    /// How long ago this node last heard from the leader it names (a message of the
    /// leader's term), or `None` while no leader has been known. On the leader itself the
    /// value means nothing.
    pub fn since_leader_contact(&self) -> Option<std::time::Duration> {
        self.shared.leader.since_contact()
    }

    /// The election timeout's base (tick × election ticks): a follower that has not heard
    /// from its leader for this long will soon start an election.
    pub fn election_timeout(&self) -> std::time::Duration {
        self.shared.election_timeout
    }

    /// The client address configured for `node`, if any.
    pub fn api_address(&self, node: NodeId) -> Option<String> {
        self.shared.book.get(node).and_then(|p| p.api)
    }

    /// Whether `node` is a voter or a learner of the configuration in effect on this node
    /// (no round trip to the runtime). A node that was removed, or never added, is not.
    pub fn is_member(&self, node: NodeId) -> bool {
        self.shared.book.is_member(node)
    }

    /// A receiver that sees every change of who is a member (its value is a counter; read
    /// [`RaftNode::is_member`] again when it changes).
    pub fn watch_members(&self) -> watch::Receiver<u64> {
        self.shared.book.watch_members()
    }

    /// The node's id, role, term, leader, commit and applied index, last index and, on the
    /// leader, every follower's progress.
    pub async fn status(&self) -> Result<Status, Error> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Status { reply }).await?;
        rx.await.map_err(|_| Error::Shutdown)
    }

    /// The transport's counters for every peer (messages and bytes sent, received and
    /// dropped; connects and failures).
    pub async fn net_stats(&self) -> Result<BTreeMap<NodeId, raft_net::PeerStats>, Error> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::NetStats { reply }).await?;
        rx.await.map_err(|_| Error::Shutdown)
    }

    /// The transport listener's counters (handshakes accepted and refused, connections
    /// over the handshake limit, replaced or closed idle).
    pub async fn listener_stats(&self) -> Result<raft_net::ListenerStats, Error> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::ListenerStats { reply }).await?;
        rx.await.map_err(|_| Error::Shutdown)
    }

    /// A consistent copy of this node's state as of its applied index, to write out as a
    /// backup ([`crate::Backup::write_to`]) and restore with [`crate::restore_backup`].
    /// The state machine must support snapshots.
    pub async fn backup(&self) -> Result<crate::Backup, Error> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Backup { reply }).await?;
        rx.await.unwrap_or(Err(Error::Shutdown))
    }

    /// Every member of the cluster with its addresses and role; on the leader, also how far
    /// each has replicated and whether it was heard from within an election timeout.
    pub async fn members(&self) -> Result<Vec<crate::MemberInfo>, Error> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Members { reply }).await?;
        rx.await.map_err(|_| Error::Shutdown)
    }

    /// The autopilot's latest decisions on this node (while it led), oldest first.
    pub async fn autopilot_decisions(&self) -> Result<Vec<crate::AutopilotDecision>, Error> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Autopilot { reply }).await?;
        rx.await.map_err(|_| Error::Shutdown)
    }

    /// Changes the membership (on the leader): the steps are applied together, through a
    /// joint configuration when they change more than one voter. Returns the index of the
    /// configuration entry once it is committed. Refused while another change is in
    /// progress ([`Error::Membership`]).
    pub async fn change_membership(
        &self,
        changes: Vec<raft_core::ConfChange>,
    ) -> Result<LogIndex, Error> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::ChangeMembership { changes, reply })
            .await?;
        rx.await.unwrap_or(Err(Error::Shutdown))
    }

    /// Adds node `id`, reachable at `peer`, as a learner: it receives the log, and can be
    /// promoted once it has caught up.
    pub async fn add_learner(&self, id: NodeId, peer: crate::Peer) -> Result<LogIndex, Error> {
        let context = crate::membership::encode_context(&peer);
        self.change_membership(vec![raft_core::ConfChange::AddLearner { id, context }])
            .await
    }

    /// Makes the learner `id` a voter.
    pub async fn promote(&self, id: NodeId) -> Result<LogIndex, Error> {
        self.change_membership(vec![raft_core::ConfChange::Promote { id }])
            .await
    }

    /// Removes the member `id`, voter or learner (the leader included: it steps down once
    /// the change is committed, handing leadership to a caught-up voter).
    pub async fn remove_member(&self, id: NodeId) -> Result<LogIndex, Error> {
        self.change_membership(vec![raft_core::ConfChange::Remove { id }])
            .await
    }

    /// Hands leadership (on the leader) to voter `to`, or to the most caught-up voter;
    /// returns the new leader once it leads. Writes are refused meanwhile
    /// ([`Error::TransferInProgress`]); after an election timeout without success the leader
    /// takes them again and this returns [`Error::TransferFailed`].
    pub async fn transfer_leadership(&self, to: Option<NodeId>) -> Result<NodeId, Error> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::TransferLeadership { to, reply }).await?;
        rx.await.unwrap_or(Err(Error::Shutdown))
    }

    /// Starts an election now (for tests and drills); whether one started. With
    /// check-quorum (the default), a node that heard from its leader within an election
    /// timeout refuses: it backs that leader, which may be serving reads from its lease.
    /// To move leadership, use [`transfer_leadership`](Self::transfer_leadership).
    pub async fn campaign(&self) -> Result<bool, Error> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Campaign { reply }).await?;
        rx.await.map_err(|_| Error::Shutdown)
    }

    /// Fault injection for tests and drills: while isolated, the node drops every message
    /// it would send and every message it receives, as if its network were cut.
    pub async fn set_isolated(&self, isolated: bool) -> Result<(), Error> {
        self.send(Command::Isolate(isolated)).await
    }

    /// Submits waiting for their outcome now.
    pub fn pending_submits(&self) -> usize {
        self.shared.limits.in_flight()
    }

    /// Stops the node gracefully: callers still waiting get [`Error::Shutdown`], the
    /// transport closes, the log is left durable and the data directory released.
    pub async fn shutdown(&self) {
        self.shared.cancel.cancel();
        // Every caller, not just the first, returns only once the node has stopped.
        self.shared.stopped.cancelled().await;
    }

    /// Stops the node abruptly, as a crash would: the runtime task is aborted wherever it
    /// is. What was synced stays durable; nothing else is flushed.
    pub async fn abort(&self) {
        self.shared.runtime_abort.abort();
        let task = self.shared.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
        self.shared.stopped.cancelled().await;
    }

    async fn send(&self, cmd: Command<R>) -> Result<(), Error> {
        self.tx.send(cmd).await.map_err(|_| Error::Shutdown)
    }

    /// Queues a submit without waiting: a full queue is `Busy` (admission control).
    fn offer(&self, cmd: Command<R>) -> Result<(), Error> {
        self.tx.try_send(cmd).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Error::Busy,
            mpsc::error::TrySendError::Closed(_) => Error::Shutdown,
        })
    }
}
