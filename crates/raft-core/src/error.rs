//! Errors the core reports, each saying what the caller should do.

use thiserror::Error;

use crate::types::{LogIndex, NodeId};

/// A configuration that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// The node is not in its own voter list.
    #[error("node {0} is not in the voter list; add it or fix the id")]
    NotAVoter(NodeId),
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
