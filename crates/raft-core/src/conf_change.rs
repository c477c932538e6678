//! Membership changes as the node lives them: the leader proposes one, leaves a joint
//! configuration once it is committed and steps down once its own removal is committed;
//! every node keeps the configuration in effect in step with its log.

use crate::entry::{Entry, EntryKind};
use crate::error::{ConfChangeError, StorageError};
use crate::membership::{ConfChange, Membership};
use crate::message::MessageBody;
use crate::node::Node;
use crate::progress::Progress;
use crate::storage::LogStore;
use crate::types::{LogIndex, Role, Term};

impl<S: LogStore> Node<S> {
    /// Proposes a membership change: one step or several, applied together. A change of at
    /// most one voter takes effect directly; a larger one enters a joint configuration that
    /// the leader leaves on its own once it is committed. The change is in effect on each
    /// node as soon as its entry is in that node's log; it succeeded once the returned index
    /// is committed with the returned term.
    ///
    /// Refused while another change is not yet committed (or its joint configuration not
    /// yet left), before the leader has committed an entry of its own term, and during a
    /// leadership transfer.
    pub fn propose_conf_change(
        &mut self,
        changes: &[ConfChange],
    ) -> Result<(LogIndex, Term), ConfChangeError> {
        if let Some(e) = self.failure() {
            return Err(ConfChangeError::Stopped(e.clone()));
        }
        if self.role != Role::Leader {
            return Err(ConfChangeError::NotLeader {
                leader: self.leader,
            });
        }
        if let Some(t) = &self.transfer {
            return Err(ConfChangeError::TransferInProgress { to: t.to });
        }
        if !self.committed_in_current_term() {
            return Err(ConfChangeError::LeaderNotReady);
        }
        if self.conf_change_in_progress() {
            return Err(ConfChangeError::InProgress);
        }
        let next = self.configs.latest().apply_changes(changes)?;
        Ok(self.append_config(next))
    }

    /// Whether a membership change is under way: its entry is not committed, or the joint
    /// configuration it entered is not yet left.
    pub fn conf_change_in_progress(&self) -> bool {
        self.configs.latest_index() > self.log.committed || self.configs.latest().is_joint()
    }

    /// Leader: appends a configuration entry, which takes effect at once.
    fn append_config(&mut self, membership: Membership) -> (LogIndex, Term) {
        let entry = Entry {
            term: self.term,
            index: self.log.last_index() + 1,
            kind: EntryKind::Config,
            data: membership.encode(),
        };
        self.uncommitted_bytes = self.uncommitted_bytes.saturating_add(entry.size());
        let at = (entry.index, entry.term);
        self.log.append(entry);
        self.configs.push(at.0, at.1, membership);
        self.pending_broadcast = true;
        self.sync_progress();
        at
    }

    /// Leader: one progress per member but itself, new members probed from the end of the
    /// log; a transfer to a node that no longer votes is abandoned; reads are confirmed
    /// again under the new configuration.
    fn sync_progress(&mut self) {
        let members = self.configs.latest().members();
        self.progress.retain(|id, _| members.contains(id));
        let next = self.log.last_index() + 1;
        for id in members {
            if id != self.id {
                self.progress
                    .entry(id)
                    .or_insert_with(|| Progress::new(next));
            }
        }
        let to = self.transfer.as_ref().map(|t| t.to);
        if to.is_some_and(|to| !self.configs.latest().is_voter(to)) {
            self.transfer = None;
        }
        // Reads waiting for acknowledgements may need fewer under the new configuration.
        self.confirm_reads();
    }

    /// Leader: the commit index moved. A committed joint configuration is left; a
    /// committed configuration without this node as voter makes it step down.
    pub(crate) fn on_leader_commit(&mut self) {
        if self.configs.latest_index() > self.log.committed {
            return;
        }
        let current = self.configs.latest();
        if current.is_joint() {
            let next = current.leave_joint();
            self.append_config(next);
        } else if !current.is_voter(self.id) {
            self.step_down_removed();
        }
    }

    /// Leader: its removal is committed. It tells everyone the commit index and hands
    /// leadership to the most caught-up voter, so that the cluster does not wait an election
    /// timeout: at once if that voter holds its whole log, else through a transfer (no
    /// proposals meanwhile) that ends in its stepping down either way. It never campaigns
    /// again.
    fn step_down_removed(&mut self) {
        let peers: Vec<_> = self.progress.keys().copied().collect();
        for to in &peers {
            self.send_appends(*to, true);
        }
        let Some(to) = self.transfer_candidate() else {
            self.become_follower(self.term, None);
            return;
        };
        if self.holds_whole_log(to) {
            self.send(to, MessageBody::TimeoutNow);
            self.become_follower(self.term, None);
        } else if self.transfer.is_none() {
            // Cannot fail: this node leads and `to` votes.
            let _ = self.transfer_leadership(to);
        }
    }

    /// Follower: `entries` were appended to the log, possibly replacing others. The
    /// configurations of replaced entries no longer count; new ones take effect.
    pub(crate) fn on_entries_appended(&mut self, entries: &[Entry]) {
        let log = &self.log;
        self.configs
            .forget_overwritten(|index, term| match log.term(index) {
                Ok(t) => t == term,
                // Compacted entries were applied, hence committed: never replaced.
                Err(StorageError::Compacted(_)) => true,
                Err(_) => false,
            });
        let after = self.configs.latest_index();
        for e in entries {
            if e.kind != EntryKind::Config || e.index <= after {
                continue;
            }
            match Membership::decode(&e.data) {
                Some(m) => self.configs.push(e.index, e.term, m),
                // No leader writes such an entry; it changes nothing.
                None => self.rejected_messages += 1,
            }
        }
    }
}
