//! What the core hands its caller after each batch of inputs.

use crate::entry::Entry;
use crate::error::StorageError;
use crate::message::Message;
use crate::snapshot::SnapshotMeta;
use crate::types::{HardState, LogIndex, SoftState};

/// The outcome of a linearizable read started with [`crate::Node::read_index`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// The read is safe once the state machine has applied up to `index`.
    Ready {
        /// The commit index when the read was requested.
        index: LogIndex,
    },
    /// Leadership was lost before the read was confirmed; retry on the new leader.
    Aborted,
}

/// A read request's identifier (chosen by the caller) and its outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The caller's identifier for the read.
    pub id: u64,
    /// What became of it.
    pub outcome: ReadOutcome,
}

/// Everything the caller must do after feeding the core, in this order:
///
/// 1. send [`messages`](Self::messages) (they do not depend on this `Ready`'s persistence;
///    sending them while persisting is allowed);
/// 2. install [`snapshot`](Self::snapshot) if set (in storage, and restore the state
///    machine from the data received for it), then persist
///    [`hard_state`](Self::hard_state) and [`entries`](Self::entries) (an entry
///    at index `i` replaces whatever the log holds at `i` and after), and make them durable
///    (fsync) when [`must_sync`](Self::must_sync) says so — otherwise writing them is enough;
/// 3. only then send [`persisted_messages`](Self::persisted_messages) (votes and
///    acknowledgements that promise the persisted state);
/// 4. apply [`committed_entries`](Self::committed_entries) and answer
///    [`read_states`](Self::read_states) once the applied index reaches each read's index;
/// 5. call [`crate::Node::advance`].
///
/// A caller that persists asynchronously replaces step 5 by acknowledging each write with
/// [`crate::Node::on_persisted`] and each apply with [`crate::Node::on_applied`], and may
/// take further `Ready`s meanwhile (see `on_persisted` for the rules).
///
/// When [`storage_error`](Self::storage_error) is set, everything else is empty: storage
/// failed, the node stopped, and the caller must stop it too.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ready {
    /// Set when the role or the known leader changed.
    pub soft_state: Option<SoftState>,
    /// Set when the hard state changed and must be persisted.
    pub hard_state: Option<HardState>,
    /// A snapshot from the leader to install before the entries: the log is replaced by
    /// it up to its index, and the state machine restored from its data.
    pub snapshot: Option<SnapshotMeta>,
    /// Whether the write must be synced before `persisted_messages` leave: true when there
    /// are entries or a snapshot, or the term or vote changed. A change of the commit index
    /// alone needs no sync.
    pub must_sync: bool,
    /// Set when storage failed to return what the node needed (a committed entry, an entry
    /// for a follower): the node is stopped. Nothing else in this `Ready` is set.
    pub storage_error: Option<StorageError>,
    /// Entries to append durably.
    pub entries: Vec<Entry>,
    /// Messages that may leave at once.
    pub messages: Vec<Message>,
    /// Messages that may leave only after `hard_state` and `entries` are durable.
    pub persisted_messages: Vec<Message>,
    /// Entries committed and durable, to apply in order.
    pub committed_entries: Vec<Entry>,
    /// Linearizable reads that completed or failed.
    pub read_states: Vec<ReadState>,
}

impl Ready {
    /// The index and term of the last entry this `Ready` hands out for persistence: what
    /// the caller passes to [`crate::Node::on_persisted`] once the write is durable.
    pub fn persisted_mark(&self) -> Option<(LogIndex, crate::types::Term)> {
        self.entries.last().map(|e| (e.index, e.term))
    }

    /// Whether persisting this `Ready` requires a write.
    pub fn must_persist(&self) -> bool {
        self.hard_state.is_some() || !self.entries.is_empty() || self.snapshot.is_some()
    }
}
