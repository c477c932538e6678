//! Log replication (§5.3) and commitment (§5.4.2): the leader's side and the follower's.

use crate::entry::Entry;
use crate::error::StorageError;
use crate::log::AppendOutcome;
use crate::message::{MessageBody, RejectHint};
use crate::node::Node;
use crate::progress::ProgressState;
use crate::storage::LogStore;
use crate::types::{LogIndex, NodeId, Term};

impl<S: LogStore> Node<S> {
    /// Sends what is pending to every follower: new entries (pipelined up to the in-flight
    /// limits) and a new commit index. Called once per `ready`, so that everything proposed
    /// since the last one travels together.
    pub(crate) fn flush_broadcasts(&mut self) {
        if self.pending_broadcast || self.commit_broadcast {
            let with_commit = self.commit_broadcast;
            self.pending_broadcast = false;
            self.commit_broadcast = false;
            let peers: Vec<NodeId> = self.progress.keys().copied().collect();
            for to in peers {
                self.send_appends(to, with_commit);
            }
        }
        if self.reads.broadcast_needed {
            self.reads.broadcast_needed = false;
            self.broadcast_heartbeat();
        }
    }

    /// Sets the flow-control window for follower `to`: the entry bytes the leader may have
    /// unacknowledged with it, below [`Config::max_inflight_bytes`](crate::Config), which
    /// applies alone again with `None`. A window of 0 counts as 1 (one append may always
    /// be in flight). Meant for a caller that measures each follower's round-trip time and
    /// acknowledgement rate; it changes how fast entries flow, never what is committed.
    /// Entries held back by a smaller window go out as soon as a larger one allows it.
    /// Ignored on anything but a leader and for anyone but its followers; the window lasts
    /// until the leader's term ends.
    pub fn set_flow_window(&mut self, to: NodeId, window: Option<u64>) {
        let Some(pr) = self.progress.get_mut(&to) else {
            return;
        };
        pr.set_flow_window(window.map(|w| w.max(1)));
        self.send_appends(to, false);
    }

    /// Sends appends to `to` while it is not paused and has entries to receive; if nothing
    /// was sent and `even_if_empty`, sends one empty append to carry the commit index.
    pub(crate) fn send_appends(&mut self, to: NodeId, even_if_empty: bool) {
        let mut sent_any = false;
        loop {
            let Some(pr) = self.progress.get(&to) else {
                return;
            };
            let has_entries = pr.next_index <= self.log.last_index();
            let probe = pr.state == ProgressState::Probe;
            if pr.is_paused(self.cfg.max_inflight_msgs, self.cfg.max_inflight_bytes) {
                return;
            }
            if !has_entries && (sent_any || !(even_if_empty || probe)) {
                return;
            }
            if !self.send_append(to) {
                return;
            }
            sent_any = true;
            if probe {
                return;
            }
        }
    }

    /// Sends one AppendEntries to `to` from its `next_index`, or the latest snapshot when
    /// those entries are compacted. Returns false if nothing was sent: no snapshot covers
    /// the gap, or storage failed to read the entries, which stops the node (a follower must
    /// never silently stop receiving).
    fn send_append(&mut self, to: NodeId) -> bool {
        let Some(pr) = self.progress.get(&to) else {
            return false;
        };
        let next = pr.next_index;
        let prev_index = next.saturating_sub(1);
        let prev_term = match self.log.term(prev_index) {
            Ok(t) => t,
            Err(e) => return self.append_unreadable(to, e),
        };
        let hi = next.saturating_add(self.cfg.max_entries_per_msg as u64);
        let max_bytes = pr.message_bytes(self.cfg.max_bytes_per_msg);
        let entries = match self.log.entries(next, hi, max_bytes) {
            Ok(e) => e,
            Err(e) => return self.append_unreadable(to, e),
        };
        let last = entries.last().map_or(prev_index, |e| e.index);
        let bytes: u64 = entries.iter().map(Entry::size).sum();
        let carried = !entries.is_empty();
        let commit = self.log.committed;
        if let Some(pr) = self.progress.get_mut(&to) {
            pr.sent(last, bytes, carried);
        }
        self.send(
            to,
            MessageBody::AppendEntries {
                prev_index,
                prev_term,
                entries,
                commit,
            },
        );
        true
    }

    /// What to do when the entries for an append cannot be read: a compacted prefix is not a
    /// failure (a snapshot is sent instead); anything else is, and stops the node.
    fn append_unreadable(&mut self, to: NodeId, e: StorageError) -> bool {
        if matches!(e, StorageError::Compacted(_)) {
            return self.send_snapshot(to);
        }
        self.storage_failed(e);
        false
    }

    pub(crate) fn broadcast_heartbeat(&mut self) {
        let read_seq = if self.cfg.lease_reads {
            // Each round is numbered, so that its acknowledgement renews the lease from
            // when it was sent.
            let seq = self.reads.new_round();
            self.lease.round_sent(seq);
            seq
        } else {
            self.reads.last_seq()
        };
        let commit = self.log.committed;
        let targets: Vec<(NodeId, LogIndex)> = self
            .progress
            .iter()
            .map(|(&id, p)| (id, p.match_index.min(commit)))
            .collect();
        for (to, commit) in targets {
            self.send(to, MessageBody::Heartbeat { commit, read_seq });
        }
    }

    /// Leader: the quorum's match index, if it is of this term, becomes the commit index.
    /// Entries of earlier terms are committed only through it (§5.4.2, Figure 8).
    pub(crate) fn maybe_commit(&mut self) -> bool {
        let me = self.id;
        let persisted = self.log.persisted_index();
        let progress = &self.progress;
        let index = self.configs.latest().committed(|id| {
            if id == me {
                persisted
            } else {
                progress.get(&id).map_or(0, |p| p.match_index)
            }
        });
        if index <= self.log.committed || self.log.term(index) != Ok(self.term) {
            return false;
        }
        let was_committed_in_term = self.committed_in_current_term();
        self.log.commit_to(index);
        if !was_committed_in_term {
            self.on_first_commit_in_term();
        }
        self.on_leader_commit();
        true
    }

    pub(crate) fn committed_in_current_term(&self) -> bool {
        self.log.term(self.log.committed) == Ok(self.term)
    }

    /// Leader: a follower's answer to an append.
    pub(crate) fn handle_append_response(
        &mut self,
        from: NodeId,
        index: LogIndex,
        reject: Option<RejectHint>,
    ) {
        if reject.is_none() && index > self.log.last_index() {
            // Acknowledges entries this leader never sent: malformed, dropped.
            self.rejected_messages += 1;
            return;
        }
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        match reject {
            Some(hint) => {
                let probe_from = if hint.term > 0 {
                    self.log.find_conflict_by_term(hint.index, hint.term).0
                } else {
                    hint.index
                };
                let Some(pr) = self.progress.get_mut(&from) else {
                    return;
                };
                if pr.maybe_decrease_to(index, probe_from) {
                    if pr.state == ProgressState::Replicate {
                        pr.become_probe();
                    }
                    self.send_appends(from, false);
                }
            }
            None => {
                let first = self.log.first_index();
                let Some(pr) = self.progress.get_mut(&from) else {
                    return;
                };
                if !pr.maybe_update(index) {
                    return; // stale or duplicate answer (seed defect 6)
                }
                match pr.state {
                    ProgressState::Probe => pr.become_replicate(),
                    ProgressState::Replicate => pr.free_inflights_to(index),
                    // The snapshot is installed (or the follower caught up otherwise): stream
                    // from there if the log still holds what follows.
                    ProgressState::Snapshot { .. } => {
                        if pr.match_index.saturating_add(1) >= first {
                            pr.become_replicate();
                        }
                    }
                }
                if self.maybe_commit() {
                    self.commit_broadcast = true;
                }
                self.send_appends(from, false);
                self.maybe_send_timeout_now(from);
            }
        }
    }

    /// Follower: AppendEntries from the leader of the current term (Figure 2).
    pub(crate) fn handle_append(
        &mut self,
        from: NodeId,
        prev_index: LogIndex,
        prev_term: Term,
        entries: &[Entry],
        commit: LogIndex,
    ) {
        self.election_elapsed = 0;
        // A leader's log holds no term above its own, and terms never decrease along a log:
        // entries that say otherwise were not sent by the leader of this term.
        let terms_valid = prev_term <= self.term
            && entries.iter().all(|e| e.term <= self.term)
            && entries.windows(2).all(|w| w[0].term <= w[1].term);
        if !terms_valid {
            self.rejected_messages += 1;
            return;
        }
        if prev_index < self.log.committed {
            // Everything up to our commit index is known to match the leader's log.
            let index = self.log.committed;
            self.send(
                from,
                MessageBody::AppendEntriesResponse {
                    index,
                    reject: None,
                },
            );
            return;
        }
        match self
            .log
            .maybe_append(prev_index, prev_term, commit, entries)
        {
            AppendOutcome::Matched(index) => {
                if !entries.is_empty() {
                    self.on_entries_appended(entries);
                }
                self.send(
                    from,
                    MessageBody::AppendEntriesResponse {
                        index,
                        reject: None,
                    },
                );
            }
            AppendOutcome::Mismatch => {
                let (index, term) = self
                    .log
                    .find_conflict_by_term(prev_index.min(self.log.last_index()), prev_term);
                self.send(
                    from,
                    MessageBody::AppendEntriesResponse {
                        index: prev_index,
                        reject: Some(RejectHint { index, term }),
                    },
                );
            }
            AppendOutcome::WouldOverwriteCommitted => {}
            AppendOutcome::Malformed => self.rejected_messages += 1,
        }
    }

    /// Follower: a heartbeat from the leader of the current term.
    pub(crate) fn handle_heartbeat(&mut self, from: NodeId, commit: LogIndex, read_seq: u64) {
        self.election_elapsed = 0;
        self.log.commit_to(commit);
        self.send(from, MessageBody::HeartbeatResponse { read_seq });
    }

    /// Leader: a follower's answer to a heartbeat.
    pub(crate) fn handle_heartbeat_response(&mut self, from: NodeId, read_seq: u64) {
        if read_seq > self.reads.last_seq() {
            // Confirms a read this leader never asked about: malformed, dropped (counting it
            // could confirm reads that no majority has seen).
            self.rejected_messages += 1;
            return;
        }
        let last = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        pr.probe_sent = false;
        pr.read_seq_acked = pr.read_seq_acked.max(read_seq);
        let lagging = pr.match_index < last;
        if lagging {
            self.send_appends(from, false);
        }
        if read_seq > 0 {
            self.confirm_reads();
        }
        self.maybe_send_timeout_now(from);
    }
}
