//! The cluster version as the runtime keeps it: raised through the log by the leader once
//! every member's handshake names a release that knows a higher one, recorded durably when
//! the raise is committed (or arrives in a snapshot), and enforced by the transport, which
//! refuses peers of an older release line from then on.

use std::time::Duration;

use raft_core::{ClusterVersion, Entry, EntryKind, LogIndex, Role, Term};

use super::Runtime;
use crate::error::Error;
use crate::state_machine::StateMachine;

/// How often the leader looks at its members' releases.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The leader's raise in flight, if any.
#[derive(Debug, Default)]
pub(super) struct Raising {
    /// Where the proposed entry sits, and in which term.
    proposed: Option<(LogIndex, Term)>,
    checked: Option<std::time::Instant>,
}

impl<SM: StateMachine> Runtime<SM> {
    /// On a tick, at most once a second, on the leader, with no membership change or
    /// transfer under way: proposes raising the cluster version to the highest release line every member
    /// runs, when that is above the current one. A member not heard from in a handshake
    /// yet holds the raise back.
    pub(super) fn raise_cluster_version(&mut self) {
        let now = crate::exec::now();
        if self
            .raising
            .checked
            .is_some_and(|t| now.duration_since(t) < CHECK_EVERY)
        {
            return;
        }
        self.raising.checked = Some(now);
        if let Some((index, term)) = self.raising.proposed {
            if self.node.term() == term && self.node.commit_index() < index {
                return; // still in flight
            }
            self.raising.proposed = None;
        }
        let current = self.cluster_version.get();
        if self.node.role() != Role::Leader
            || current >= ClusterVersion::CURRENT
            || self.node.conf_change_in_progress()
            || self.node.transfer_target().is_some()
        {
            return;
        }
        let Some(target) = self.members_release_line() else {
            return;
        };
        if target <= current {
            return;
        }
        match self.node.propose_cluster_version(target) {
            Ok((index, term)) => {
                tracing::info!(id = self.cfg.id, index, from = %current, to = %target, "every member runs a release that knows it: raising the cluster version");
                self.raising.proposed = Some((index, term));
            }
            Err(e) => {
                tracing::debug!(id = self.cfg.id, error = %e, "cannot raise the cluster version now")
            }
        }
    }

    /// The highest release line every member runs (this node's own included), as their
    /// latest handshakes told; `None` while some member has not told.
    fn members_release_line(&self) -> Option<ClusterVersion> {
        let stats = self.transport.stats();
        let mut line = ClusterVersion::CURRENT;
        for id in self.node.membership().members() {
            if id == self.cfg.id {
                continue;
            }
            let peer = stats.get(&id).and_then(|s| s.version)?;
            line = line.min(peer.release.line());
        }
        Some(line)
    }

    /// Hands committed entries to the apply task; a raise among them is recorded first
    /// (durably, before it is applied), so that a restart never forgets it.
    pub(super) fn hand_over_committed(&mut self, committed: Vec<Entry>) -> Result<(), Error> {
        for e in &committed {
            if e.kind != EntryKind::ClusterVersion {
                continue;
            }
            match ClusterVersion::decode(&e.data) {
                Some(v) => self.adopt_cluster_version(v)?,
                None => tracing::warn!(
                    id = self.cfg.id,
                    index = e.index,
                    "a cluster version entry this build cannot read; ignored"
                ),
            }
        }
        self.applier.push(committed);
        Ok(())
    }

    /// Takes the cluster version to `v` (from a committed raise or an installed snapshot):
    /// recorded in the data directory, then enforced. A version above this build's stops
    /// the node: the cluster writes what it cannot read.
    pub(super) fn adopt_cluster_version(&mut self, v: ClusterVersion) -> Result<(), Error> {
        if v <= self.cluster_version.get() {
            return Ok(());
        }
        if v > ClusterVersion::CURRENT {
            tracing::error!(id = self.cfg.id, cluster_version = %v, release = %raft_core::Release::CURRENT, "the cluster version is past this build's release; stopping");
            return Err(Error::Storage(format!(
                "the cluster version is {v}, past this build's release {}: run a newer build on this node",
                raft_core::Release::CURRENT
            )));
        }
        self.storage
            .write()
            .map_err(|e| Error::Storage(e.to_string()))?
            .record_cluster_version(v)
            .map_err(|e| Error::Storage(format!("cannot record the cluster version: {e}")))?;
        self.cluster_version.raise(v);
        tracing::info!(id = self.cfg.id, cluster_version = %v, "cluster version raised");
        Ok(())
    }
}
