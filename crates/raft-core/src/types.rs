//! Basic identifiers and the durable hard state.

use serde::{Deserialize, Serialize};

/// Identifies a node of the cluster. Ids are chosen by the operator and never reused.
pub type NodeId = u64;

/// A Raft term: a logical clock that increases with every election.
pub type Term = u64;

/// A node accepts any term up to this one plus [`MAX_TERM_JUMP`]. A cluster electing a
/// leader every millisecond would need over a hundred million years to get here; a node
/// pushed here by a faulty or forged message still has room for billions of billions of
/// elections, and every node accepts the terms that bring it along.
pub const TERM_LIMIT: Term = 1 << 62;

/// How far past [`TERM_LIMIT`], or past its own term when that is higher, a node accepts a
/// term.
pub const MAX_TERM_JUMP: Term = 1 << 32;

/// Whether a node at term `own` accepts a message of term `term`: at most
/// `max(own, TERM_LIMIT) + MAX_TERM_JUMP`. Anything higher could only come from a faulty or
/// forged peer, and adopting it could leave the node at a term it can never campaign past
/// (`u64::MAX`).
pub fn plausible_term(own: Term, term: Term) -> bool {
    term <= own.max(TERM_LIMIT).saturating_add(MAX_TERM_JUMP)
}

/// The 1-based position of an entry in the log. Index 0 means "before the first entry".
pub type LogIndex = u64;

/// State that must be durable before the node sends anything that depends on it
/// (Figure 2, "persistent state on all servers"; `commit` is kept too so that a restarted
/// node does not re-deliver entries it already knows to be committed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: Term,
    /// The candidate this node voted for in `term`, if any.
    pub vote: Option<NodeId>,
    /// The highest index this node knows to be committed.
    pub commit: LogIndex,
}

/// The role a node plays in its current term.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Follows a leader, or waits for one to appear.
    Follower,
    /// Asks for pre-votes without changing its term (§9.6 of the Raft thesis).
    PreCandidate,
    /// Asks for votes in a new term.
    Candidate,
    /// Replicates its log to the others.
    Leader,
}

/// Volatile state a caller may want to display or react to; it is never persisted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    /// The node's role.
    pub role: Role,
    /// The leader this node knows of in its current term.
    pub leader: Option<NodeId>,
}
