//! Log entries. Every entry carries the term in which a leader created it.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::types::{LogIndex, Term};

/// What an entry means to the layers above the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EntryKind {
    /// Application data, handed to the state machine.
    Normal,
    /// The empty entry a leader appends at the start of its term so that it can commit
    /// entries of earlier terms (§5.4.2). State machines skip it.
    Noop,
    /// A cluster configuration change. The payload is an encoded configuration; the core
    /// reserves the kind so that membership changes fit without reshaping the log.
    Config,
    /// Application data of a second kind, proposed with [`crate::Node::propose_command`]:
    /// typically commands encoded for the state machine, told apart from plain
    /// [`Normal`](Self::Normal) entries by this kind and never by their payload.
    Command,
    /// Raises the cluster version ([`crate::ClusterVersion`], encoded in the payload),
    /// proposed with [`crate::Node::propose_cluster_version`] once every member runs a
    /// release that knows it. State machines skip it; the runtime records it. Nodes before
    /// protocol version 5 cannot decode it, which is why it is only written once all
    /// members are past them.
    ClusterVersion,
}

/// One entry of the replicated log.
///
/// The payload is a [`Bytes`]: cloning an entry never copies the payload.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entry {
    /// The term of the leader that created the entry. Copies keep this term (seed defect 3).
    pub term: Term,
    /// The entry's position in the log.
    pub index: LogIndex,
    /// What the entry means.
    pub kind: EntryKind,
    /// The opaque payload.
    pub data: Bytes,
}

/// Bytes charged per entry on top of its payload when limits are counted: the
/// index, term and kind as they travel and sit on disk.
pub const ENTRY_OVERHEAD_BYTES: u64 = 24;

impl Entry {
    /// A normal entry with the given payload.
    pub fn normal(term: Term, index: LogIndex, data: impl Into<Bytes>) -> Self {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: data.into(),
        }
    }

    /// A no-op entry.
    pub fn noop(term: Term, index: LogIndex) -> Self {
        Entry {
            term,
            index,
            kind: EntryKind::Noop,
            data: Bytes::new(),
        }
    }

    /// The size this entry counts for against byte limits (payload plus a fixed overhead).
    pub fn size(&self) -> u64 {
        self.data.len() as u64 + ENTRY_OVERHEAD_BYTES
    }
}
