//! Snapshots (§7): a leader whose log no longer holds the entries a follower needs sends it
//! its latest snapshot instead; a follower installs one in place of its log's prefix.
//!
//! The core moves no snapshot data: the leader emits [`MessageBody::InstallSnapshot`] with
//! the snapshot's metadata, the caller streams the data to the follower however it likes
//! and tells the core the outcome ([`Node::report_snapshot`]); on the follower, the caller
//! steps that message into the core once the data has arrived, and the core answers with
//! [`crate::Ready::snapshot`]: install it (storage and state machine) before anything else
//! in that `Ready`.

use serde::{Deserialize, Serialize};

use crate::membership::Membership;
use crate::message::MessageBody;
use crate::node::Node;
use crate::progress::ProgressState;
use crate::storage::LogStore;
use crate::types::{LogIndex, NodeId, Role, Term};

/// What a snapshot covers: the log up to `index` (whose entry had `term`), and the cluster's
/// configuration at that point.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// The last index the snapshot includes (0: no snapshot).
    pub index: LogIndex,
    /// The term of the entry at `index`.
    pub term: Term,
    /// The configuration in effect at `index`.
    pub membership: Membership,
}

/// How a snapshot transfer to a follower ended, as the caller reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotOutcome {
    /// The follower received the whole snapshot; its answer will follow once installed.
    Delivered,
    /// The transfer failed (the follower is unreachable, refused it, or it timed out): the
    /// leader probes the follower again, which asks for a snapshot again if still needed.
    Failed,
}

impl<S: LogStore> Node<S> {
    /// Leader: sends `to` the latest snapshot, because the entries it needs are compacted.
    /// Returns whether one was sent.
    pub(crate) fn send_snapshot(&mut self, to: NodeId) -> bool {
        let meta = match self.log.store.snapshot_meta() {
            Ok(m) => m,
            Err(e) => {
                self.storage_failed(e);
                return false;
            }
        };
        // A snapshot is useful only if it reaches the entries the log still holds.
        if meta.index == 0 || meta.index.saturating_add(1) < self.log.first_index() {
            return false;
        }
        let Some(pr) = self.progress.get_mut(&to) else {
            return false;
        };
        pr.become_snapshot(meta.index);
        self.send(to, MessageBody::InstallSnapshot { meta });
        true
    }

    /// Leader: how the transfer of a snapshot to `to` ended. After `Delivered` the leader
    /// waits for the follower's acknowledgement; after `Failed` it probes the follower again.
    pub fn report_snapshot(&mut self, to: NodeId, outcome: SnapshotOutcome) {
        if self.role != Role::Leader || self.failure().is_some() {
            return;
        }
        let Some(pr) = self.progress.get_mut(&to) else {
            return;
        };
        let ProgressState::Snapshot { pending } = pr.state else {
            return;
        };
        match outcome {
            SnapshotOutcome::Delivered => pr.snapshot_delivered(pending),
            SnapshotOutcome::Failed => pr.become_probe(),
        }
    }

    /// Follower: the leader's snapshot, whose data the caller has received.
    pub(crate) fn handle_snapshot(&mut self, from: NodeId, meta: SnapshotMeta) {
        self.election_elapsed = 0;
        let malformed = meta.term > self.term || meta.index == 0 || !meta.membership.is_valid();
        if malformed {
            self.rejected_messages += 1;
            return;
        }
        let committed = self.log.committed;
        if meta.index <= committed {
            // Nothing new: what is committed here already covers it.
            self.send(
                from,
                MessageBody::AppendEntriesResponse {
                    index: committed,
                    reject: None,
                },
            );
            return;
        }
        if self.log.match_term(meta.index, meta.term) {
            // The log already holds the snapshot's last entry: commit up to it instead.
            self.log.commit_to(meta.index);
            self.send(
                from,
                MessageBody::AppendEntriesResponse {
                    index: meta.index,
                    reject: None,
                },
            );
            return;
        }
        let index = meta.index;
        self.configs
            .reset(meta.index, meta.term, meta.membership.clone());
        self.log.restore(meta);
        // Sent once the snapshot is installed (a persisted message).
        self.send(
            from,
            MessageBody::AppendEntriesResponse {
                index,
                reject: None,
            },
        );
    }
}
