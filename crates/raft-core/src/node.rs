//! The node: its state, its inputs (`tick`, `step`, `propose`, `read_index`) and its output
//! (`ready` / `advance`). Elections, replication and reads live in their own files.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::config::Config;
use crate::entry::{Entry, EntryKind};
use crate::error::{ConfigError, ProposeError, StorageError};
use crate::log::RaftLog;
use crate::membership::{ConfigLog, Membership};
use crate::message::{Message, MessageBody};
use crate::progress::{Progress, ProgressState};
use crate::read_index::ReadQueue;
use crate::ready::Ready;
use crate::rng::Rng;
use crate::storage::LogStore;
use crate::transfer::Transfer;
use crate::types::{plausible_term, HardState, LogIndex, NodeId, Role, SoftState, Term};

/// One Raft node as a deterministic state machine. It performs no I/O: the caller feeds it
/// ticks, messages, proposals and read requests, then takes a [`Ready`] and carries it out.
pub struct Node<S: LogStore> {
    pub(crate) cfg: Config,
    pub(crate) id: NodeId,
    pub(crate) term: Term,
    pub(crate) vote: Option<NodeId>,
    pub(crate) role: Role,
    pub(crate) leader: Option<NodeId>,
    pub(crate) log: RaftLog<S>,
    /// The configurations the log holds; the latest is in effect.
    pub(crate) configs: ConfigLog,
    /// Leader only: the leadership transfer in progress.
    pub(crate) transfer: Option<Transfer>,
    /// Leader only: one entry per other member, voter or learner.
    pub(crate) progress: BTreeMap<NodeId, Progress>,
    /// (Pre-)candidate only: the answers received so far.
    pub(crate) votes: BTreeMap<NodeId, bool>,
    pub(crate) election_elapsed: u32,
    pub(crate) heartbeat_elapsed: u32,
    pub(crate) randomized_election_timeout: u32,
    pub(crate) rng: Rng,
    msgs: Vec<Message>,
    msgs_after_persist: Vec<Message>,
    /// Leader only: bytes proposed in this term and not yet handed out as committed.
    pub(crate) uncommitted_bytes: u64,
    /// Leader only: new entries or a new commit index await sending at the next `ready`.
    pub(crate) pending_broadcast: bool,
    pub(crate) commit_broadcast: bool,
    pub(crate) reads: ReadQueue,
    /// The leader lease for lease reads (`lease.rs`); its clock counts every tick.
    pub(crate) lease: crate::lease::Lease,
    prev_hard_state: HardState,
    prev_soft_state: SoftState,
    /// The persistence point of the last `Ready` handed out and not yet advanced.
    pending_stable: Option<(LogIndex, Term)>,
    /// Set when storage failed to give the node something it needs: the node is stopped.
    failure: Option<StorageError>,
    /// Whether `failure` was handed out in a `Ready` already.
    failure_reported: bool,
    /// Messages dropped because they could not be valid (see [`Status::rejected_messages`]).
    pub(crate) rejected_messages: u64,
    /// A leader that won its term on its own vote (it is the only voter) sent no vote
    /// request, so nothing made its new term durable before it led: until its first entry
    /// of the term (at this index) is durable, and with it the term, every message waits
    /// for persistence. Otherwise a crash could lose the term after followers heard it, and
    /// the restarted node could vote for another leader in that same term.
    pub(crate) hold_until_durable: Option<LogIndex>,
}

/// A snapshot of a node's state for display and monitoring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The node's id.
    pub id: NodeId,
    /// Its role.
    pub role: Role,
    /// Its current term.
    pub term: Term,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// Its commit index.
    pub commit: LogIndex,
    /// The highest index the caller has applied (acknowledged through `advance`).
    pub applied: LogIndex,
    /// The index of its last entry.
    pub last_index: LogIndex,
    /// The last index that is durable.
    pub persisted_index: LogIndex,
    /// The first index the log holds (entries before it are compacted).
    pub first_index: LogIndex,
    /// The index the latest snapshot in storage covers (0: none).
    pub snapshot_index: LogIndex,
    /// Leader only: for each other member, (id, match index, next index, replicating?).
    pub progress: Vec<PeerProgress>,
    /// The configuration in effect.
    pub membership: Membership,
    /// The index of the entry that holds it (0: the initial configuration).
    pub membership_index: LogIndex,
    /// Leader only: the node leadership is being transferred to.
    pub transfer_to: Option<NodeId>,
    /// Messages dropped since start because no correct peer could have sent them (a term
    /// that is not [`plausible`](crate::plausible_term), entries misnumbered,
    /// acknowledgements of entries never sent, reads never asked about).
    pub rejected_messages: u64,
    /// Linearizable reads this node served from its leader lease since start (see
    /// [`Config::lease_reads`]).
    pub lease_reads: u64,
    /// The storage failure that stopped the node, if any.
    pub failure: Option<StorageError>,
}

/// A leader's view of one follower, as reported by [`Node::status`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerProgress {
    /// The follower.
    pub id: NodeId,
    /// The highest index known to match.
    pub match_index: LogIndex,
    /// The next index to send.
    pub next_index: LogIndex,
    /// Whether the leader streams to it (replicate) or probes it.
    pub replicating: bool,
    /// The index of the snapshot being sent to it, if one is.
    pub pending_snapshot: Option<LogIndex>,
    /// Entry bytes sent to it and not acknowledged.
    pub inflight_bytes: u64,
    /// The flow-control window the caller set for it ([`Node::set_flow_window`]); `None`:
    /// only [`Config::max_inflight_bytes`] applies.
    pub flow_window: Option<u64>,
}

impl<S: LogStore> Node<S> {
    /// Starts a node from its configuration and whatever `store` holds (empty for a new
    /// node, the persisted state for a restarted one). The node starts as a follower.
    pub fn new(cfg: Config, store: S) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let hs = store.hard_state()?;
        let snap = store.snapshot_meta()?;
        if cfg.applied.saturating_add(1) < store.first_index() {
            return Err(ConfigError::StateMachineBehind {
                applied: cfg.applied,
                first_index: store.first_index(),
            });
        }
        if cfg.applied > store.last_index() {
            return Err(ConfigError::LogBehindStateMachine {
                applied: cfg.applied,
                last_index: store.last_index(),
            });
        }
        let mut rng = Rng::new(cfg.seed ^ cfg.id.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let randomized = rng.range(cfg.election_ticks, cfg.election_ticks * 2);
        // Entries the application applied were committed, whether or not the commit index
        // that said so reached the disk (commit-only changes are written without a sync).
        let log = RaftLog::new(
            store,
            hs.commit.max(cfg.applied).max(snap.index),
            cfg.applied,
        );
        let configs = initial_configs(&cfg, &log.store, &snap)?;
        let commit = log.committed;
        Ok(Node {
            id: cfg.id,
            configs,
            transfer: None,
            cfg,
            term: hs.term,
            vote: hs.vote,
            role: Role::Follower,
            leader: None,
            log,
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: randomized,
            rng,
            msgs: Vec::new(),
            msgs_after_persist: Vec::new(),
            uncommitted_bytes: 0,
            pending_broadcast: false,
            commit_broadcast: false,
            reads: ReadQueue::default(),
            lease: crate::lease::Lease::default(),
            prev_hard_state: HardState {
                term: hs.term,
                vote: hs.vote,
                commit,
            },
            prev_soft_state: SoftState {
                role: Role::Follower,
                leader: None,
            },
            pending_stable: None,
            failure: None,
            failure_reported: false,
            rejected_messages: 0,
            hold_until_durable: None,
        })
    }

    // ----- accessors -----

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }
    /// The current term.
    pub fn term(&self) -> Term {
        self.term
    }
    /// The current role.
    pub fn role(&self) -> Role {
        self.role
    }
    /// The leader known in the current term.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }
    /// The commit index.
    pub fn commit_index(&self) -> LogIndex {
        self.log.committed
    }
    /// The index of the last entry, durable or not.
    pub fn last_index(&self) -> LogIndex {
        self.log.last_index()
    }
    /// The term of the entry at `index`, if the log holds it.
    pub fn entry_term(&self, index: LogIndex) -> Option<Term> {
        self.log.term(index).ok()
    }
    /// The voters of the configuration in effect (while joint, incoming and outgoing).
    pub fn voters(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.configs.latest().all_voters().into_iter()
    }
    /// The configuration in effect: the latest one in the log, committed or not.
    pub fn membership(&self) -> &Membership {
        self.configs.latest()
    }
    /// The configuration in effect at `index`, for a snapshot up to `index`; known for any
    /// index from the applied one on.
    pub fn membership_at(&self, index: LogIndex) -> Option<&Membership> {
        self.configs.at(index)
    }
    /// The hard state as it stands now (persisted or about to be).
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed,
        }
    }
    /// The storage the node reads its persisted log from.
    pub fn storage(&self) -> &S {
        &self.log.store
    }
    /// The storage, for the caller to persist a [`Ready`] into.
    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.log.store
    }
    /// The node's configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// A snapshot of the node's state.
    pub fn status(&self) -> Status {
        Status {
            id: self.id,
            role: self.role,
            term: self.term,
            leader: self.leader,
            commit: self.log.committed,
            applied: self.log.applied,
            last_index: self.log.last_index(),
            persisted_index: self.log.persisted_index(),
            first_index: self.log.first_index(),
            snapshot_index: self.log.store.snapshot_meta().map_or(0, |m| m.index),
            progress: self
                .progress
                .iter()
                .map(|(&id, p)| PeerProgress {
                    id,
                    match_index: p.match_index,
                    next_index: p.next_index,
                    replicating: p.state == ProgressState::Replicate,
                    pending_snapshot: p.pending_snapshot(),
                    inflight_bytes: p.inflight_bytes(),
                    flow_window: p.flow_window(),
                })
                .collect(),
            membership: self.configs.latest().clone(),
            membership_index: self.configs.latest_index(),
            transfer_to: self.transfer.as_ref().map(|t| t.to),
            lease_reads: self.lease.served,
            rejected_messages: self.rejected_messages,
            failure: self.failure.clone(),
        }
    }

    /// The storage failure that stopped this node, if any. A stopped node ignores every
    /// input and hands out nothing but the failure; restart it once storage is repaired.
    pub fn failure(&self) -> Option<&StorageError> {
        self.failure.as_ref()
    }

    /// Records a storage failure: from now on the node is stopped. Errors that only mean
    /// "not here" (compacted, past the end) are not failures.
    pub(crate) fn storage_failed(&mut self, e: StorageError) {
        if self.failure.is_none() {
            self.failure = Some(e);
        }
    }

    // ----- inputs -----

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        if self.failure.is_some() {
            return;
        }
        self.lease.now = self.lease.now.saturating_add(1);
        match self.role {
            Role::Leader => self.tick_leader(),
            _ => self.tick_election(),
        }
        self.expire_forwarded_reads();
    }

    /// Proposes `data` as a new entry. On the leader it returns the index and term the
    /// entry will have: the proposal succeeded once that index is committed with that term;
    /// if another entry is committed there, it failed. Elsewhere it fails at once.
    pub fn propose(&mut self, data: impl Into<Bytes>) -> Result<(LogIndex, Term), ProposeError> {
        self.propose_entry(EntryKind::Normal, data.into())
    }

    /// Like [`propose`](Self::propose), for an entry of kind [`EntryKind::Command`]: data
    /// the application encoded for its state machine, told apart from plain entries by the
    /// entry's kind rather than by its payload.
    pub fn propose_command(
        &mut self,
        data: impl Into<Bytes>,
    ) -> Result<(LogIndex, Term), ProposeError> {
        self.propose_entry(EntryKind::Command, data.into())
    }

    /// Proposes raising the cluster version to `version` (an entry of kind
    /// [`EntryKind::ClusterVersion`]). The caller checks first that every member runs a
    /// release that knows `version`; the core only orders the entry like any other.
    pub fn propose_cluster_version(
        &mut self,
        version: crate::ClusterVersion,
    ) -> Result<(LogIndex, Term), ProposeError> {
        self.propose_entry(EntryKind::ClusterVersion, version.encode().into())
    }

    /// Proposes several entries of `kind` at once, all or none: on the leader they get
    /// consecutive indexes from the returned one on, in the returned term, and each
    /// succeeded once its index is committed with that term. The batch is refused as a whole
    /// (nothing proposed) for every reason [`propose`](Self::propose) refuses one entry, and
    /// with [`ProposeError::Busy`] when it does not fit the uncommitted-bytes limit (as one
    /// entry, a batch alone over the limit is admitted when nothing is uncommitted). An
    /// empty batch proposes nothing and returns the index the next entry would get.
    pub fn propose_batch(
        &mut self,
        kind: EntryKind,
        data: Vec<Bytes>,
    ) -> Result<(LogIndex, Term), ProposeError> {
        self.check_proposal(kind)?;
        let first = self.log.last_index() + 1;
        let size = data.iter().fold(0u64, |sum, d| {
            sum.saturating_add(d.len() as u64)
                .saturating_add(crate::entry::ENTRY_OVERHEAD_BYTES)
        });
        if data.is_empty() {
            return Ok((first, self.term));
        }
        if self.uncommitted_bytes > 0
            && self.uncommitted_bytes.saturating_add(size) > self.cfg.max_uncommitted_bytes
        {
            return Err(ProposeError::Busy);
        }
        self.uncommitted_bytes = self.uncommitted_bytes.saturating_add(size);
        for (i, data) in (0u64..).zip(data) {
            self.log.append(Entry {
                term: self.term,
                index: first + i,
                kind,
                data,
            });
        }
        self.pending_broadcast = true;
        Ok((first, self.term))
    }

    /// Why a proposal of `kind` cannot be taken now, if it cannot.
    fn check_proposal(&self, kind: EntryKind) -> Result<(), ProposeError> {
        if let Some(e) = &self.failure {
            return Err(ProposeError::Stopped(e.clone()));
        }
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if !matches!(
            kind,
            EntryKind::Normal | EntryKind::Command | EntryKind::ClusterVersion
        ) {
            return Err(ProposeError::UnsupportedKind);
        }
        if let Some(t) = &self.transfer {
            return Err(ProposeError::TransferInProgress { to: t.to });
        }
        Ok(())
    }

    pub(crate) fn propose_entry(
        &mut self,
        kind: EntryKind,
        data: Bytes,
    ) -> Result<(LogIndex, Term), ProposeError> {
        self.check_proposal(kind)?;
        let entry = Entry {
            term: self.term,
            index: self.log.last_index() + 1,
            kind,
            data,
        };
        let size = entry.size();
        if self.uncommitted_bytes > 0
            && self.uncommitted_bytes.saturating_add(size) > self.cfg.max_uncommitted_bytes
        {
            return Err(ProposeError::Busy);
        }
        self.uncommitted_bytes = self.uncommitted_bytes.saturating_add(size);
        let at = (entry.index, entry.term);
        self.log.append(entry);
        self.pending_broadcast = true;
        Ok(at)
    }

    /// Feeds a message received from a peer. Messages for another node, or that are stale,
    /// are ignored (Raft tolerates their loss). So are messages from a node that is not a
    /// member of the configuration in effect, except a leader's (a node behind on
    /// configurations may not know its leader yet) and a candidate's whose log is strictly
    /// ahead of this node's (this node is then behind on configurations too, and may be a
    /// vote the cluster needs): a removed member cannot disrupt the cluster. (A node that is
    /// itself campaigning still learns such a candidate's newer term, without voting.) Messages no
    /// correct peer could send (a term that is not [`plausible`](crate::plausible_term), for
    /// one) are dropped and counted in [`Status::rejected_messages`].
    pub fn step(&mut self, m: Message) {
        if self.failure.is_some() {
            return;
        }
        if m.to != self.id || m.from == self.id {
            return;
        }
        let from_leader = matches!(
            m.body,
            MessageBody::AppendEntries { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. }
                | MessageBody::TimeoutNow
        );
        if !from_leader && !self.configs.latest().contains(m.from) {
            let ahead = match m.body {
                MessageBody::PreVote {
                    last_log_index,
                    last_log_term,
                }
                | MessageBody::RequestVote {
                    last_log_index,
                    last_log_term,
                    ..
                } => self.log.is_behind(last_log_index, last_log_term),
                _ => false,
            };
            if !ahead {
                self.learn_term_while_campaigning(&m);
                return;
            }
        }
        if !plausible_term(self.term, m.term) {
            self.rejected_messages += 1;
            return;
        }
        if m.term > self.term {
            let is_vote = matches!(
                m.body,
                MessageBody::PreVote { .. } | MessageBody::RequestVote { .. }
            );
            let transfer = matches!(m.body, MessageBody::RequestVote { transfer: true, .. });
            if is_vote && !transfer && self.in_lease() {
                // A live leader exists: ignore the disruptive candidate (check-quorum).
                return;
            }
            match m.body {
                MessageBody::PreVote { .. } => {}
                MessageBody::PreVoteResponse { granted: true } => {}
                _ if from_leader => {
                    self.become_follower(m.term, Some(m.from));
                }
                MessageBody::RequestVote { .. } => {
                    // The newer term is adopted, but the election clock runs on: only a
                    // vote granted resets it (Figure 2). Otherwise a candidate that cannot
                    // win (its log is behind), campaigning again and again, would keep
                    // resetting the one voter that could, and no leader would ever be
                    // elected (found by the simulator with clocks running at different
                    // rates: the slowest clock never got to its timeout).
                    let clock = (self.election_elapsed, self.randomized_election_timeout);
                    self.become_follower(m.term, None);
                    (self.election_elapsed, self.randomized_election_timeout) = clock;
                }
                _ => self.become_follower(m.term, None),
            }
        } else if m.term < self.term {
            match m.body {
                MessageBody::AppendEntries { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. } => {
                    // Tell the stale leader about the newer term so that it steps down. (etcd
                    // leaves this, without pre-vote and check-quorum, to the voter's own
                    // campaigns; but a learner never campaigns, a voter's campaigns may go
                    // only to members that no longer run, and those of a voter whose
                    // configuration omits the stale leader never reach it.)
                    self.send(
                        m.from,
                        MessageBody::AppendEntriesResponse {
                            index: 0,
                            reject: None,
                        },
                    );
                }
                MessageBody::PreVote { .. } => {
                    self.send(m.from, MessageBody::PreVoteResponse { granted: false });
                }
                _ => {}
            }
            return;
        }

        match m.body {
            MessageBody::PreVote {
                last_log_index,
                last_log_term,
            } => self.handle_vote_request(m.from, m.term, last_log_index, last_log_term, true),
            MessageBody::RequestVote {
                last_log_index,
                last_log_term,
                ..
            } => self.handle_vote_request(m.from, m.term, last_log_index, last_log_term, false),
            MessageBody::PreVoteResponse { granted } => {
                self.handle_vote_response(m.from, m.term, granted, true)
            }
            MessageBody::RequestVoteResponse { granted } => {
                self.handle_vote_response(m.from, m.term, granted, false)
            }
            MessageBody::AppendEntries {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                if self.accept_leader(m.from) {
                    self.handle_append(m.from, prev_index, prev_term, &entries, commit);
                }
            }
            MessageBody::Heartbeat { commit, read_seq } => {
                if self.accept_leader(m.from) {
                    self.handle_heartbeat(m.from, commit, read_seq);
                }
            }
            MessageBody::AppendEntriesResponse { index, reject } => {
                if self.role == Role::Leader {
                    self.handle_append_response(m.from, index, reject);
                }
            }
            MessageBody::HeartbeatResponse { read_seq } => {
                if self.role == Role::Leader {
                    self.handle_heartbeat_response(m.from, read_seq);
                }
            }
            MessageBody::ReadIndex { id } => self.handle_forwarded_read(m.from, id),
            MessageBody::ReadIndexResponse { id, index } => self.handle_read_answer(id, index),
            MessageBody::InstallSnapshot { meta } => {
                if self.accept_leader(m.from) {
                    self.handle_snapshot(m.from, meta);
                }
            }
            MessageBody::TimeoutNow => {
                if self.accept_leader(m.from) {
                    self.handle_timeout_now();
                }
            }
        }
    }

    /// A message from the leader of the current term: a candidate or pre-candidate steps
    /// down (§5.2; seed defect 2). Returns false if the message must be ignored.
    fn accept_leader(&mut self, from: NodeId) -> bool {
        match self.role {
            Role::Leader => false, // two leaders in one term cannot happen; ignore
            Role::Candidate | Role::PreCandidate => {
                self.become_follower(self.term, Some(from));
                true
            }
            Role::Follower => {
                if self.leader.is_none() {
                    self.leader = Some(from);
                }
                self.leader == Some(from)
            }
        }
    }

    // ----- output -----

    /// Whether the next [`ready`](Self::ready) hands out a snapshot to install. A caller
    /// that writes and applies asynchronously lets its earlier writes and applies finish
    /// before it takes that `Ready` (which it must carry out after them), and keeps
    /// stepping and ticking the node meanwhile instead of waiting for them.
    pub fn has_snapshot_to_install(&self) -> bool {
        self.failure.is_none() && self.log.has_snapshot_to_hand_out()
    }

    /// Whether [`ready`](Self::ready) has anything for the caller.
    pub fn has_ready(&self) -> bool {
        if self.failure.is_some() {
            return !self.failure_reported;
        }
        !self.msgs.is_empty()
            || !self.msgs_after_persist.is_empty()
            || self.log.has_snapshot_to_hand_out()
            || self.log.has_unsent()
            || self.hard_state() != self.prev_hard_state
            || self.soft_state() != self.prev_soft_state
            || self
                .log
                .has_committed_to_apply(self.cfg.max_unapplied_bytes)
            || self.reads.has_output()
            || (self.role == Role::Leader && (self.pending_broadcast || self.commit_broadcast))
            || self.reads.broadcast_needed
    }

    /// Takes what the caller must now persist, send and apply (see [`Ready`] for the order).
    /// Call [`advance`](Self::advance) once it is all done; `advance` acknowledges every
    /// `Ready` taken before it.
    ///
    /// If storage failed to give the node what it needed, the `Ready` holds only
    /// [`Ready::storage_error`]: the node is stopped and the caller must stop using it.
    pub fn ready(&mut self) -> Ready {
        if self.failure.is_none() && self.role == Role::Leader {
            self.flush_broadcasts();
        }
        let committed_entries = if self.failure.is_none() {
            match self.log.take_committed(
                self.cfg.max_committed_bytes_per_ready,
                self.cfg.max_unapplied_bytes,
            ) {
                Ok(c) => c,
                Err(e) => {
                    self.storage_failed(e);
                    Vec::new()
                }
            }
        } else {
            Vec::new()
        };
        if let Some(e) = &self.failure {
            // Nothing else leaves a stopped node: none of it could be relied on.
            self.failure_reported = true;
            return Ready {
                storage_error: Some(e.clone()),
                ..Ready::default()
            };
        }
        let hs = self.hard_state();
        let ss = self.soft_state();
        let snapshot = self.log.take_snapshot();
        let entries = self.log.take_unsent();
        if let Some(last) = entries.last() {
            self.pending_stable = Some((last.index, last.term));
        }
        if self.role == Role::Leader && !committed_entries.is_empty() {
            let bytes: u64 = committed_entries
                .iter()
                .filter(|e| e.term == self.term)
                .map(Entry::size)
                .sum();
            self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(bytes);
        }
        // Only what a vote or an acknowledgement promises must reach the disk before they
        // leave: new entries, the term and the vote. A commit index alone is recoverable
        // (from the leader, or from the applied index) and is written without a sync.
        let must_sync = !entries.is_empty()
            || snapshot.is_some()
            || hs.term != self.prev_hard_state.term
            || hs.vote != self.prev_hard_state.vote;
        let rd = Ready {
            soft_state: (ss != self.prev_soft_state).then_some(ss),
            hard_state: (hs != self.prev_hard_state).then_some(hs),
            snapshot,
            must_sync,
            storage_error: None,
            entries,
            messages: std::mem::take(&mut self.msgs),
            persisted_messages: std::mem::take(&mut self.msgs_after_persist),
            committed_entries,
            read_states: self.reads.take_output(),
        };
        self.prev_hard_state = hs;
        self.prev_soft_state = ss;
        rd
    }

    /// Acknowledges that every `Ready` taken so far was carried out: its state is durable
    /// and its committed entries applied.
    pub fn advance(&mut self) {
        self.log.snapshot_installed();
        if let Some((index, term)) = self.pending_stable.take() {
            self.log.stable_to(index, term);
            if self.role == Role::Leader && self.maybe_commit() {
                self.commit_broadcast = true;
            }
        }
        let applying = self.log.applying();
        self.log.applied_to(applying);
        self.configs.compact(self.log.applied);
    }

    /// Acknowledges that the entries handed out in `Ready`s up to `index` (whose term was
    /// `term`, see [`Ready::persisted_mark`]) are durable, without acknowledging anything
    /// else: the caller persists `Ready`s asynchronously, and keeps stepping the node and
    /// taking further `Ready`s while earlier ones are being written.
    ///
    /// The caller must write `Ready`s in the order it took them, send each one's
    /// `persisted_messages` only once its write (and every earlier one) is durable, and
    /// carry out a `Ready` holding a snapshot only after every earlier write completed,
    /// with [`advance`](Self::advance). A mark whose entries were replaced since they were
    /// handed out (a later `Ready` rewrites them) acknowledges nothing.
    pub fn on_persisted(&mut self, index: LogIndex, term: Term) {
        self.log.stable_to(index, term);
        if self.failure.is_none() && self.role == Role::Leader && self.maybe_commit() {
            self.commit_broadcast = true;
        }
    }

    /// Acknowledges that the committed entries handed out so far were applied up to
    /// `index` (the companion of [`on_persisted`](Self::on_persisted) for a caller that
    /// applies asynchronously). Indexes not handed out yet are not acknowledged.
    pub fn on_applied(&mut self, index: LogIndex) {
        self.log.applied_to(index);
        self.configs.compact(self.log.applied);
    }

    fn soft_state(&self) -> SoftState {
        SoftState {
            role: self.role,
            leader: self.leader,
        }
    }

    /// Queues a message stamped with the current term. Leader appends and heartbeats may
    /// leave at once; everything else promises persisted state and waits for it.
    pub(crate) fn send(&mut self, to: NodeId, body: MessageBody) {
        let m = Message {
            from: self.id,
            to,
            term: self.term,
            body,
        };
        self.push_message(m);
    }

    pub(crate) fn push_message(&mut self, m: Message) {
        if let Some(index) = self.hold_until_durable {
            if self.log.persisted_index() < index {
                self.msgs_after_persist.push(m);
                return;
            }
            self.hold_until_durable = None;
        }
        match m.body {
            MessageBody::AppendEntries { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. }
            | MessageBody::TimeoutNow
            // Reads promise nothing about this node's disk.
            | MessageBody::ReadIndex { .. }
            | MessageBody::ReadIndexResponse { .. } => self.msgs.push(m),
            _ => self.msgs_after_persist.push(m),
        }
    }

    /// A candidate (or pre-candidate) ignores a vote request from a node its configuration
    /// omits, but learns its newer term: there is no leader here to disrupt, and a voter that
    /// is behind on configurations may still count that node a member and move to its terms,
    /// so a candidate that never learned them would always campaign a term too late for it.
    fn learn_term_while_campaigning(&mut self, m: &Message) {
        if matches!(self.role, Role::Candidate | Role::PreCandidate)
            && matches!(m.body, MessageBody::RequestVote { .. })
            && m.term > self.term
            && plausible_term(self.term, m.term)
        {
            self.become_follower(m.term, None);
        }
    }

    // ----- role changes -----

    pub(crate) fn reset(&mut self, term: Term) {
        if term != self.term {
            self.term = term;
            self.vote = None;
        }
        self.leader = None;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.randomized_election_timeout = self
            .rng
            .range(self.cfg.election_ticks, self.cfg.election_ticks * 2);
        self.votes.clear();
        self.progress.clear();
        self.transfer = None;
        self.pending_broadcast = false;
        self.commit_broadcast = false;
        self.uncommitted_bytes = 0;
        self.reads.abort_all();
        self.lease.reset();
        self.hold_until_durable = None;
    }

    pub(crate) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        self.reset(term);
        self.role = Role::Follower;
        self.leader = leader;
    }

    pub(crate) fn become_leader(&mut self) {
        self.reset(self.term); // the vote for ourselves in this term is kept (seed defect 1)
        self.role = Role::Leader;
        self.leader = Some(self.id);
        let next = self.log.last_index() + 1;
        for peer in self.configs.latest().members() {
            if peer != self.id {
                self.progress.insert(peer, Progress::new(next));
            }
        }
        // §5.4.2: commit entries of earlier terms by committing one of this term.
        let noop = Entry::noop(self.term, next);
        self.uncommitted_bytes = self.uncommitted_bytes.saturating_add(noop.size());
        self.log.append(noop);
        self.pending_broadcast = true;
    }
}

/// The configurations a starting node knows: the snapshot's (or, without one, the initial
/// configuration of `cfg`), then every configuration entry the log holds after the
/// snapshot, found by reading those entries (as hashicorp/raft does at start).
fn initial_configs<S: LogStore>(
    cfg: &Config,
    store: &S,
    snap: &crate::snapshot::SnapshotMeta,
) -> Result<ConfigLog, StorageError> {
    let initial = if snap.index > 0 && snap.membership.is_valid() {
        snap.membership.clone()
    } else {
        Membership {
            voters: cfg.voters.iter().copied().collect(),
            learners: cfg.learners.iter().copied().collect(),
            ..Membership::default()
        }
    };
    let mut configs = ConfigLog::new(snap.index, snap.term, initial);
    let last = store.last_index();
    let mut lo = snap.index.saturating_add(1).max(store.first_index());
    while lo <= last {
        let batch = store.entries(lo, last.saturating_add(1), 4 << 20)?;
        let Some(end) = batch.last().map(|e| e.index) else {
            break;
        };
        for e in batch.iter().filter(|e| e.kind == EntryKind::Config) {
            if let Some(m) = Membership::decode(&e.data) {
                configs.push(e.index, e.term, m);
            }
        }
        lo = end.saturating_add(1);
    }
    Ok(configs)
}
