//! Carrying out the core's output in the order it requires: messages leave at once, writes
//! go to the write pipeline (their promises wait for them), committed entries go to the
//! apply task; a snapshot to install is taken only after every earlier write and apply.
//! Writes and applies report back here when done.

use std::sync::atomic::Ordering;

use raft_core::{Entry, LogIndex, Message, Ready, Role};

use super::{Runtime, APPLY_TASK_GONE};
use crate::applier::Applied;
use crate::error::Error;
use crate::state_machine::StateMachine;
use crate::writes::{Done, Write};

impl<SM: StateMachine> Runtime<SM> {
    /// Carries out everything the core has for us, in the order the core requires: messages
    /// leave at once, writes go to the pipeline (their promises wait for them), committed
    /// entries are applied. A `Ready` holding a snapshot is carried out whole, after every
    /// earlier write.
    pub(super) async fn process_ready(&mut self) -> Result<(), Error> {
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
            self.hand_over_committed(std::mem::take(&mut rd.committed_entries))?;
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
    pub(super) async fn process_ready_in_place(
        &mut self,
        rd: raft_core::Ready,
    ) -> Result<(), Error> {
        self.wait_applied().await?;
        let mut rd = self.persist(rd).await?;
        if let Some(meta) = &rd.snapshot {
            // Storage holds the snapshot now; the state machine follows it in the apply
            // task, before the entries handed over next.
            self.restore_installed(meta)?;
            self.fail_covered_by_snapshot(meta.index);
        }
        self.send_all(std::mem::take(&mut rd.persisted_messages));
        self.hand_over_committed(std::mem::take(&mut rd.committed_entries))?;
        if !self.cfg.pipeline_writes {
            self.wait_applied().await?;
        }
        self.finish_ready(rd);
        self.node.advance();
        Ok(())
    }

    /// What follows handing a `Ready`'s committed entries over: a step-down fails the
    /// submits waiting here, reads are parked until applied (or answered).
    pub(super) fn finish_ready(&mut self, rd: raft_core::Ready) {
        if rd.soft_state.is_some_and(|ss| ss.role != Role::Leader) {
            self.fail_pending_submits();
        }
        for rs in rd.read_states {
            self.waiters.read_confirmed(rs.id, rs.outcome);
        }
        self.waiters.release_reads(self.applied);
    }

    /// Handles every batch the apply task has already finished, without waiting.
    pub(super) fn take_applied(&mut self) -> Result<(), Error> {
        while let Some(applied) = self.applier.try_completed() {
            self.on_applied(Some(applied))?;
        }
        Ok(())
    }

    /// Waits until every committed entry handed to the apply task is applied and its
    /// callers answered.
    pub(super) async fn wait_applied(&mut self) -> Result<(), Error> {
        while self.applied < self.applier.handed() {
            let applied = self.applier.completed().await;
            self.on_applied(applied)?;
        }
        Ok(())
    }

    /// The apply task applied a batch: its callers are answered, the core learns it, reads
    /// waiting for it are released; a failed state machine stops the node.
    pub(super) fn on_applied(
        &mut self,
        applied: Option<Applied<SM::Response>>,
    ) -> Result<(), Error> {
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
        let restored = restored.filter(|_| failure.is_none());
        if let Some(index) = restored {
            self.snapshots.transfers.count(|c| c.installed += 1);
            tracing::info!(
                id = self.cfg.id,
                index,
                "state machine restored from the snapshot"
            );
        }
        self.waiters.answer_applied(&entries, responses);
        if let Some(index) = entries.last().map(|e| e.index).or(restored) {
            self.applied = self.applied.max(index);
            self.readable.store(self.applied, Ordering::Release);
            self.node.on_applied(index);
        }
        if let Some(e) = failure {
            return Err(Error::Storage(format!("the state machine failed: {e}")));
        }
        self.waiters.release_reads(self.applied);
        Ok(())
    }

    /// A batch of writes is durable: the core learns it, write by write, and each write's
    /// promises leave.
    pub(super) fn on_written(&mut self, done: Result<Done, String>) -> Result<(), Error> {
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
    pub(super) async fn flush_writes(&mut self) -> Result<(), Error> {
        while self.writes.busy() {
            self.writes.start();
            let done = self.writes.completed().await;
            self.on_written(done)?;
        }
        Ok(())
    }

    /// Makes the `Ready`'s hard state and entries durable on a blocking thread.
    pub(super) async fn persist(&mut self, rd: Ready) -> Result<Ready, Error> {
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

    /// Hands the messages to the transport (moved, not copied: this is the hot path).
    pub(super) fn send_all(&mut self, msgs: Vec<Message>) {
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

    /// A follower's acknowledgement to this leader: a sample for its flow-control window,
    /// set before the core hears it (so what it frees goes out under the new window).
    pub(super) fn measure_ack(&mut self, msg: &Message) {
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

    pub(super) fn on_soft_state(&mut self, role: Role, leader: Option<raft_core::NodeId>) {
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
    pub(super) fn fail_pending_submits(&mut self) {
        let after = self
            .applier
            .handed()
            .max(self.node.commit_index())
            .saturating_add(1);
        self.waiters.fail_from(after);
    }

    /// A snapshot up to `index` was installed: callers still waiting for entries it covers
    /// (left waiting when this node stepped down with them committed but not yet applied)
    /// will never see them applied here, so their responses are lost. They are told the
    /// outcome is unknown to this node; the entries did commit, which a read shows.
    pub(super) fn fail_covered_by_snapshot(&mut self, index: LogIndex) {
        self.waiters.fail_through(index);
    }
}
