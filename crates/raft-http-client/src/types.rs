//! What the API answers, typed.

use serde::{Deserialize, Serialize};

/// A value and the revision (log index) of the write that set it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned {
    /// The value.
    pub value: String,
    /// The log index of the write that set it (0: written before revisions were kept).
    pub revision: u64,
}

/// The original API's answer to `POST /request`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginalAnswer {
    /// Whether the entry was committed by the node asked.
    pub success: bool,
    /// The leader's API address (`host:port`; empty when unknown): where to send it when
    /// `success` is false.
    pub leader: String,
}

/// Where an appended entry was committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appended {
    /// Its log index.
    pub index: u64,
    /// The term it was committed in.
    pub term: u64,
}

/// Where the entries of a batch were committed: at consecutive indexes, in one term.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendedBatch {
    /// The index of each entry, in order.
    pub indexes: Vec<u64>,
    /// The term they were committed in.
    pub term: u64,
}

/// A committed write to a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Written {
    /// The key.
    pub key: String,
    /// The write's log index: the key's new revision, for a put.
    pub index: u64,
    /// The term it was committed in.
    pub term: u64,
    /// The value before (`None`: the key was absent).
    pub previous: Option<String>,
    /// The revision before (`None`: the key was absent).
    pub previous_revision: Option<u64>,
}

/// A key read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kv {
    /// The key.
    pub key: String,
    /// Its value.
    pub value: String,
    /// The log index of the write that set it.
    pub revision: u64,
}

/// One entry of the log, as the API shows it (`kind`: `entry`, `noop`, `config`, `kv`,
/// `bytes`; the other fields depend on it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Its index.
    pub index: u64,
    /// Its term.
    pub term: u64,
    /// What it holds.
    pub kind: String,
    /// The text of a posted entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
    /// A key-value command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<serde_json::Value>,
    /// A payload that is not UTF-8, in hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hex: Option<String>,
}

/// A page of the log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogPage {
    /// The entries.
    pub entries: Vec<LogEntry>,
    /// The index to ask for next.
    pub next: u64,
    /// The first index kept (under the retention policy).
    pub first: u64,
}

/// A page of keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvPage {
    /// The keys, in order.
    pub kvs: Vec<Kv>,
    /// Whether more keys follow.
    pub more: bool,
    /// The index the node had applied when it read them.
    pub applied: u64,
}

/// A member of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its id.
    pub id: u64,
    /// Its Raft address.
    pub raft: Option<String>,
    /// Its API address.
    pub api: Option<String>,
    /// `voter` or `learner`.
    pub role: String,
    /// How far its log matches the leader's (known on the leader).
    #[serde(default)]
    pub match_index: Option<u64>,
    /// Entries behind the leader (known on the leader).
    #[serde(default)]
    pub lag: Option<u64>,
    /// Heard from within an election timeout (known on the leader).
    #[serde(default)]
    pub reachable: Option<bool>,
}

/// A change seen by a watch or a log stream.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A committed entry (`GET /v1/log/stream`).
    Entry(LogEntry),
    /// A key was set.
    Put(Kv),
    /// A key was deleted, at `revision`.
    Delete {
        /// The key.
        key: String,
        /// The log index of the delete.
        revision: u64,
    },
    /// What the stream had not read yet was trimmed; the first index still kept. The
    /// stream ends.
    Compacted {
        /// The first index kept.
        first: u64,
    },
}

impl Event {
    /// The event's log index (its `id`), if it has one.
    pub fn index(&self) -> Option<u64> {
        match self {
            Event::Entry(e) => Some(e.index),
            Event::Put(kv) => Some(kv.revision),
            Event::Delete { revision, .. } => Some(*revision),
            Event::Compacted { .. } => None,
        }
    }
}
