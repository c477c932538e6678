//! Errors the core reports, each saying what the caller should do.

use thiserror::Error;

use crate::types::{LogIndex, NodeId};

/// A configuration that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// The node is neither a voter nor a learner of its initial configuration.
    #[error("node {0} is neither a voter nor a learner of the initial configuration; add it or fix the id")]
    NotAMember(NodeId),
    /// Two settings contradict each other.
    #[error("invalid configuration: {0}")]
    Invalid(&'static str),
    /// The stored state could not be read at start-up.
    #[error("cannot read the initial state from storage: {0}")]
    Storage(#[from] StorageError),
    /// The state machine has applied less than the log still holds: the entries in between
    /// were compacted. Restore the state machine from the latest snapshot first.
    #[error("the state machine has applied up to {applied} but the log starts at {first_index}: restore the state machine from the latest snapshot before starting the node")]
    StateMachineBehind {
        /// What the state machine has applied.
        applied: LogIndex,
        /// The first index the log holds.
        first_index: LogIndex,
    },
    /// The state machine has applied entries the log no longer holds. Only entries durable
    /// in the log are ever applied, so the log lost writes it had synced: the disk or
    /// filesystem does not honour syncs, or the log was replaced. Nothing on this node can be
    /// trusted to vote or to serve: rebuild it (remove its data and add it again, or restore
    /// it from a backup) and check the disk's write cache.
    #[error("the state machine has applied up to {applied} but the log ends at {last_index}: the log lost writes it had synced (a disk or filesystem that ignores syncs?); rebuild this node from a backup or from its peers, and check the disk")]
    LogBehindStateMachine {
        /// What the state machine has applied.
        applied: LogIndex,
        /// The last index the log holds.
        last_index: LogIndex,
    },
}

/// Why a proposal was not accepted. None of these appended anything.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ProposeError {
    /// This node is not the leader; retry on `leader` if known, or later.
    #[error("not the leader (leader hint: {leader:?}); send the proposal to the leader")]
    NotLeader {
        /// The leader this node knows of, if any.
        leader: Option<NodeId>,
    },
    /// Too many bytes are proposed but not yet committed; retry after some commit.
    #[error("too many uncommitted bytes; retry later")]
    Busy,
    /// Entries of this kind cannot be proposed through `propose`.
    #[error("entries of this kind cannot be proposed directly")]
    UnsupportedKind,
    /// Leadership is being handed to `to`: proposals wait until it is done (or has timed
    /// out). Retry on the new leader.
    #[error("leadership is being transferred to node {to}; retry on the new leader")]
    TransferInProgress {
        /// The node leadership is being handed to.
        to: NodeId,
    },
    /// The node stopped after a storage failure; restart it once storage is repaired.
    #[error("the node stopped after a storage failure ({0}); restart it once storage is repaired")]
    Stopped(StorageError),
}

/// Why a membership change was refused. None of these changed anything.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ConfChangeError {
    /// This node is not the leader; send the change to `leader`.
    #[error("not the leader (leader hint: {leader:?}); send the change to the leader")]
    NotLeader {
        /// The leader this node knows of, if any.
        leader: Option<NodeId>,
    },
    /// Another change is not yet committed (or the joint configuration it entered not yet
    /// left); retry once it is.
    #[error("another membership change is in progress; retry once it is committed")]
    InProgress,
    /// The leader has not yet committed an entry of its own term, so it may not know the
    /// latest configuration; retry shortly.
    #[error("the leader has not yet committed an entry of its term; retry shortly")]
    LeaderNotReady,
    /// Leadership is being transferred; retry on the new leader.
    #[error("leadership is being transferred to node {to}; retry on the new leader")]
    TransferInProgress {
        /// The node leadership is being handed to.
        to: NodeId,
    },
    /// The change names no step.
    #[error("the change is empty")]
    Empty,
    /// The node to add is already a member.
    #[error("node {0} is already a member")]
    AlreadyMember(NodeId),
    /// The node to change or remove is not a member.
    #[error("node {0} is not a member")]
    UnknownMember(NodeId),
    /// Only a learner can be promoted.
    #[error("node {0} is not a learner, so it cannot be promoted")]
    NotALearner(NodeId),
    /// Only a voter can be demoted.
    #[error("node {0} is not a voter, so it cannot be demoted")]
    NotAVoter(NodeId),
    /// The change would leave the cluster without voters.
    #[error("the change would leave no voter")]
    NoVoters,
    /// The node stopped after a storage failure; restart it once storage is repaired.
    #[error("the node stopped after a storage failure ({0}); restart it once storage is repaired")]
    Stopped(StorageError),
}

/// Why a leadership transfer could not start.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum TransferError {
    /// This node is not the leader; send the request to `leader`.
    #[error("not the leader (leader hint: {leader:?}); send the transfer to the leader")]
    NotLeader {
        /// The leader this node knows of, if any.
        leader: Option<NodeId>,
    },
    /// Only a voter can become leader.
    #[error("node {0} is not a voter of the current configuration, so it cannot lead")]
    NotAVoter(NodeId),
    /// No voter other than the leader can take over.
    #[error("no other voter can take over")]
    NoCandidate,
    /// The node stopped after a storage failure; restart it once storage is repaired.
    #[error("the node stopped after a storage failure ({0}); restart it once storage is repaired")]
    Stopped(StorageError),
}

/// Why a linearizable read could not start.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ReadError {
    /// This node is not the leader; send the read to `leader`.
    #[error("not the leader (leader hint: {leader:?}); send the read to the leader")]
    NotLeader {
        /// The leader this node knows of, if any.
        leader: Option<NodeId>,
    },
    /// The node stopped after a storage failure; restart it once storage is repaired.
    #[error("the node stopped after a storage failure ({0}); restart it once storage is repaired")]
    Stopped(StorageError),
}

/// Errors of the log-reading interface that storage implements.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum StorageError {
    /// The index lies below the first index still held (compacted away).
    #[error("index {0} was compacted away")]
    Compacted(LogIndex),
    /// The index lies past the last index held.
    #[error("index {0} is not in the log")]
    Unavailable(LogIndex),
    /// The storage failed; the node must stop acknowledging anything.
    #[error("storage failure: {0}")]
    Io(String),
}
