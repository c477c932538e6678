//! The messages nodes exchange, and their versioned wire envelope.

use serde::{Deserialize, Serialize};

use crate::entry::Entry;
use crate::snapshot::SnapshotMeta;
use crate::types::{LogIndex, NodeId, Term};

/// The versioned form of a message as it crosses the network.
///
/// New protocol versions add variants; a receiver that meets a variant it does not know
/// fails to decode the frame and drops it (Raft tolerates lost messages).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Envelope {
    /// Protocol version 1.
    V1(Message),
}

impl Envelope {
    /// Unwraps the message, whatever its version.
    pub fn into_message(self) -> Message {
        match self {
            Envelope::V1(m) => m,
        }
    }
}

impl From<Message> for Envelope {
    fn from(m: Message) -> Self {
        Envelope::V1(m)
    }
}

/// A message from one node to another, stamped with the sender's term.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The sender.
    pub from: NodeId,
    /// The receiver.
    pub to: NodeId,
    /// The sender's term; for pre-votes, the term the sender would campaign in.
    pub term: Term,
    /// What the message says.
    pub body: MessageBody,
}

/// The kinds of message of the protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageBody {
    /// Asks whether the receiver would vote for the sender in `term`, without anybody
    /// changing term (pre-vote, §9.6 of the thesis).
    PreVote {
        /// Index of the sender's last entry.
        last_log_index: LogIndex,
        /// Term of the sender's last entry.
        last_log_term: Term,
    },
    /// The answer to [`MessageBody::PreVote`]. When granted, `term` echoes the asked term.
    PreVoteResponse {
        /// Whether the receiver would vote.
        granted: bool,
    },
    /// RequestVote RPC (Figure 2).
    RequestVote {
        /// Index of the candidate's last entry.
        last_log_index: LogIndex,
        /// Term of the candidate's last entry.
        last_log_term: Term,
        /// The candidate campaigns because the leader handed leadership to it
        /// ([`MessageBody::TimeoutNow`]): voters answer even while they hear from that
        /// leader (§3.10 of the thesis).
        transfer: bool,
    },
    /// The answer to [`MessageBody::RequestVote`].
    RequestVoteResponse {
        /// Whether the vote was granted.
        granted: bool,
    },
    /// AppendEntries RPC (Figure 2).
    AppendEntries {
        /// Index of the entry just before `entries`.
        prev_index: LogIndex,
        /// Term of the entry at `prev_index`.
        prev_term: Term,
        /// Entries to store, possibly none.
        entries: Vec<Entry>,
        /// The leader's commit index.
        commit: LogIndex,
    },
    /// The answer to [`MessageBody::AppendEntries`].
    AppendEntriesResponse {
        /// On success, the index of the last entry the follower now holds in agreement with
        /// the leader; on rejection, the `prev_index` that did not match.
        index: LogIndex,
        /// Set when the follower rejected the append because `prev_index`/`prev_term` did not
        /// match its log.
        reject: Option<RejectHint>,
    },
    /// A leader's heartbeat. It carries no entries, only the commit index the receiver may
    /// apply and the sequence number of the newest pending linearizable read.
    Heartbeat {
        /// `min(leader commit, what the leader knows the receiver holds)`.
        commit: LogIndex,
        /// The read sequence number this heartbeat confirms leadership for (0 = none).
        read_seq: u64,
    },
    /// The answer to [`MessageBody::Heartbeat`].
    HeartbeatResponse {
        /// Echo of the heartbeat's `read_seq`.
        read_seq: u64,
    },
    /// A leader's snapshot (InstallSnapshot, §7), in place of entries the follower needs and
    /// the leader no longer holds. Only the metadata travels here: the caller transfers the
    /// data and steps this message into the follower once the data has arrived. Answered
    /// with [`MessageBody::AppendEntriesResponse`].
    InstallSnapshot {
        /// What the snapshot covers.
        meta: SnapshotMeta,
    },
    /// The leader hands leadership to the receiver, whose log it knows to match its own:
    /// the receiver starts an election at once, without a pre-vote (§3.10 of the thesis).
    TimeoutNow,
    /// A follower asks the leader for a read index on behalf of its own linearizable read
    /// `id` (§6.4 of the thesis: reads served by followers). Appended after the variants of
    /// protocol version 4: a node that does not know it drops it, and the read times out.
    ReadIndex {
        /// The follower's identifier for the read.
        id: u64,
    },
    /// The leader's answer to [`MessageBody::ReadIndex`], once a majority confirmed its
    /// leadership: the follower may serve the read once it has applied up to `index`.
    ReadIndexResponse {
        /// Echo of the request's `id`.
        id: u64,
        /// The leader's commit index when the read arrived; `None`: refused (not the
        /// leader any more).
        index: Option<LogIndex>,
    },
}

/// A follower's hint for where its log may agree with the leader's, so the leader backs
/// up over a whole term per round trip instead of one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectHint {
    /// The largest index `i <= prev_index` whose term is `<= prev_term` in the follower's log
    /// (or its last index when its log is shorter).
    pub index: LogIndex,
    /// The term of the follower's entry at `index`.
    pub term: Term,
}

impl Message {
    /// Roughly the bytes this message takes on the wire and in queues: its entries' sizes
    /// (as [`Entry::size`] counts them) plus a fixed overhead. For byte-bounded queues.
    pub fn size_hint(&self) -> u64 {
        const OVERHEAD: u64 = 64;
        match &self.body {
            MessageBody::AppendEntries { entries, .. } => entries
                .iter()
                .fold(OVERHEAD, |n, e| n.saturating_add(e.size())),
            _ => OVERHEAD,
        }
    }
}

impl MessageBody {
    /// A short name for logs and counters.
    pub fn name(&self) -> &'static str {
        match self {
            MessageBody::PreVote { .. } => "PreVote",
            MessageBody::PreVoteResponse { .. } => "PreVoteResponse",
            MessageBody::RequestVote { .. } => "RequestVote",
            MessageBody::RequestVoteResponse { .. } => "RequestVoteResponse",
            MessageBody::AppendEntries { .. } => "AppendEntries",
            MessageBody::AppendEntriesResponse { .. } => "AppendEntriesResponse",
            MessageBody::Heartbeat { .. } => "Heartbeat",
            MessageBody::HeartbeatResponse { .. } => "HeartbeatResponse",
            MessageBody::InstallSnapshot { .. } => "InstallSnapshot",
            MessageBody::TimeoutNow => "TimeoutNow",
            MessageBody::ReadIndex { .. } => "ReadIndex",
            MessageBody::ReadIndexResponse { .. } => "ReadIndexResponse",
        }
    }
}
