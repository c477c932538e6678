//! What can go wrong for a caller, and what to do about it.

use raft_core::NodeId;
use thiserror::Error;

/// Why a submit or a read did not succeed.
///
/// Whether a refused submit may still take effect: `NotLeader`, `Busy`, `TooLarge`,
/// `TransferInProgress` and `Membership`/`Transfer` mean nothing was appended; `Overwritten`
/// means it was appended and will never commit. `LeadershipLost`, `Shutdown` and `Storage`
/// leave the outcome **unknown**: the entry may have been appended (even committed, and
/// applied by the other members) before the node lost leadership, was stopped, or its
/// storage failed. Read the log or the key (or retry an idempotent command) to find out.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum Error {
    /// This node is not the leader: nothing was appended. Retry on the leader.
    #[error("not the leader; retry on node {leader:?} at {address:?}")]
    NotLeader {
        /// The leader this node knows of.
        leader: Option<NodeId>,
        /// That leader's client address, if configured.
        address: Option<String>,
    },
    /// Leadership was lost while the entry was in flight: it may still commit or not.
    /// Read the log (or retry idempotently) to find out.
    #[error("leadership lost before the outcome was known; the entry may or may not commit")]
    LeadershipLost,
    /// Another leader's entry was committed at this entry's index: it will never commit.
    /// Retry.
    #[error("the entry was replaced by another leader's entry and will never commit; retry")]
    Overwritten,
    /// Of a batch of entries submitted together, the first `committed` (from index
    /// `first`) committed, and another leader's entries replaced the rest, which will never
    /// commit: resubmit those.
    #[error("the first {committed} entries of the batch committed from index {first}; another leader's entries replaced the rest, which will never commit: resubmit them")]
    PartlyCommitted {
        /// The batch's first index.
        first: raft_core::LogIndex,
        /// How many of its entries committed.
        committed: usize,
    },
    /// Too much is in flight; retry after a moment.
    #[error("too many requests in flight; retry later")]
    Busy,
    /// The membership change was refused; nothing changed. The error says why (another
    /// change in progress, an unknown member, ...).
    #[error("membership change refused: {0}")]
    Membership(raft_core::ConfChangeError),
    /// The leadership transfer could not start.
    #[error("leadership transfer refused: {0}")]
    Transfer(raft_core::TransferError),
    /// Leadership did not move within an election timeout; the leader takes writes again.
    #[error("leadership did not move to node {to} within an election timeout; retry")]
    TransferFailed {
        /// The node it was to move to.
        to: NodeId,
    },
    /// Leadership is being handed to node `to`: nothing was appended. Retry on it shortly.
    #[error("leadership is being transferred to node {to}; retry on it shortly")]
    TransferInProgress {
        /// The node that is about to lead.
        to: NodeId,
    },
    /// Too many log reads run at once; retry after a moment.
    #[error(
        "{limit} log reads are already running (the limit, max_concurrent_reads); retry later"
    )]
    TooManyReads {
        /// The limit.
        limit: usize,
    },
    /// The entry is larger than the configured maximum; nothing was appended.
    #[error("the entry is {size} bytes; the maximum is {max}")]
    TooLarge {
        /// The entry's size.
        size: usize,
        /// The maximum entry size.
        max: usize,
    },
    /// The node is shutting down or has stopped. A submit's outcome is unknown: the entry
    /// may have been appended, and may commit.
    #[error("the node is shut down")]
    Shutdown,
    /// The node's storage failed; it stopped acknowledging anything. Restart it. A
    /// submit's outcome is unknown: the entry may have been appended, and may commit.
    #[error("storage failure, the node stopped: {0}")]
    Storage(String),
}

/// Why a node could not start.
#[derive(Debug, Error)]
pub enum StartError {
    /// The configuration is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The data directory could not be opened.
    #[error(transparent)]
    Storage(#[from] raft_storage::OpenError),
    /// The network could not start.
    #[error(transparent)]
    Net(#[from] raft_net::NetError),
    /// The core refused the configuration.
    #[error(transparent)]
    Core(#[from] raft_core::ConfigError),
}
