//! The runtime's snapshots: taking them (the state machine's copy written out off the
//! runtime, then recorded and the log compacted), sending them to followers that need them,
//! receiving them from the leader, and restoring the state machine from one.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;

use raft_core::{LogIndex, NodeId, SnapshotMeta, SnapshotOutcome, Term};
use raft_net::PeerStream;
use tokio::sync::mpsc;

use crate::config::SnapshotConfig;
use crate::snapshot_store::SnapshotStore;
use crate::snapshot_transfer::{receive_snapshot, Received, TransferSettings, Transfers};
use crate::state_machine::StateMachine;
use crate::storage::SharedStorage;

/// What finished off the runtime and must be handled in it.
pub(crate) enum Event {
    /// A snapshot was written, recorded and the log compacted (or that failed).
    SnapshotTaken(Result<SnapshotMeta, String>),
    /// The state machine takes no snapshots: the log is kept whole.
    SnapshotsUnsupported,
    /// A snapshot was not taken: the leader's was installed before the copy was made.
    SnapshotSkipped,
    /// A transfer to a follower ended.
    TransferDone {
        to: NodeId,
        outcome: SnapshotOutcome,
    },
    /// A snapshot from the leader arrived whole.
    SnapshotReceived(Received),
}

/// The runtime's snapshot state.
pub(crate) struct Snapshots {
    /// Where the snapshot files' blocking work runs.
    pub(crate) exec: crate::exec::Exec,
    pub(crate) cfg: SnapshotConfig,
    pub(crate) store: SnapshotStore,
    /// The latest snapshot recorded in storage.
    pub(crate) last: SnapshotMeta,
    /// Storage bytes written when `last` was taken (for the WAL-size trigger).
    pub(crate) bytes_at_last: u64,
    /// The size of the latest snapshot file (0: none, or unknown).
    pub(crate) last_size: u64,
    pub(crate) taking: bool,
    /// The task taking the snapshot (awaited when the node stops; aborted with the node
    /// when it is aborted, as a crash would end it).
    pub(crate) writing: Option<tokio_util::task::AbortOnDropHandle<()>>,
    /// The state machine cannot take snapshots: never try again.
    pub(crate) unsupported: bool,
    /// Snapshots that failed in a row, and when the next may be tried: after a failure
    /// the next waits (1 s by default, doubling up to a minute): a full disk or a broken
    /// state machine would otherwise be tried again on every turn.
    failures: u32,
    retry_at: Option<std::time::Instant>,
    /// Transfers running, by follower: the file each sends (kept until it ends).
    pub(crate) sending: BTreeMap<NodeId, PathBuf>,
    /// Followers waiting for a transfer slot: (follower, term of the request, snapshot).
    pub(crate) queued: VecDeque<(NodeId, Term, SnapshotMeta)>,
    pub(crate) transfers: Transfers,
    pub(crate) events_tx: mpsc::UnboundedSender<Event>,
}

impl Snapshots {
    pub(crate) fn new(
        cfg: SnapshotConfig,
        store: SnapshotStore,
        last: SnapshotMeta,
        bytes_written: u64,
        events_tx: mpsc::UnboundedSender<Event>,
        exec: crate::exec::Exec,
    ) -> Self {
        let last_size = store.find(&last).map_or(0, |f| f.size);
        Snapshots {
            exec,
            cfg,
            store,
            last,
            last_size,
            bytes_at_last: bytes_written,
            taking: false,
            writing: None,
            unsupported: false,
            failures: 0,
            retry_at: None,
            sending: BTreeMap::new(),
            queued: VecDeque::new(),
            transfers: Transfers::default(),
            events_tx,
        }
    }

    /// Whether a snapshot is due now, with `applied` entries applied and `bytes_written`
    /// to the log: enough was applied or written since the last one, none is being taken,
    /// and a failed one's wait is over.
    pub(crate) fn due(
        &self,
        applied: LogIndex,
        bytes_written: u64,
        now: std::time::Instant,
    ) -> bool {
        if self.taking || self.unsupported || applied <= self.last.index {
            return false;
        }
        if self.retry_at.is_some_and(|at| now < at) {
            return false;
        }
        let by_entries =
            self.cfg.every_entries > 0 && applied - self.last.index >= self.cfg.every_entries;
        let written = bytes_written.saturating_sub(self.bytes_at_last);
        let by_bytes = self.cfg.every_wal_bytes > 0 && written >= self.cfg.every_wal_bytes;
        // Unless the state is larger than what was written since its last copy: copying
        // it again then would cost more than the writes it compacts.
        (by_entries || by_bytes) && !(self.cfg.scale_with_size && written < self.last_size)
    }

    /// A snapshot failed: the next waits (`SnapshotConfig::retry_after`, doubled for each
    /// failure in a row, at most `retry_max`). Returns the failures in a row.
    pub(crate) fn failed(&mut self, now: std::time::Instant) -> u32 {
        self.failures = self.failures.saturating_add(1);
        let wait = self
            .cfg
            .retry_after
            .saturating_mul(1u32 << self.failures.saturating_sub(1).min(16))
            .min(self.cfg.retry_max);
        self.retry_at = now.checked_add(wait);
        self.failures
    }

    /// A snapshot was taken: the next may come as soon as it is due.
    pub(crate) fn succeeded(&mut self) {
        self.failures = 0;
        self.retry_at = None;
    }

    /// Whether a snapshot is being taken, kept here (checked every turn) and in the
    /// shared counters (read by status and metrics).
    pub(crate) fn set_taking(&mut self, on: bool) {
        self.taking = on;
        self.transfers.count(|c| c.taking = on);
    }

    pub(crate) fn settings(&self) -> TransferSettings {
        TransferSettings {
            chunk_bytes: self.cfg.chunk_bytes,
            window: self.cfg.window,
            idle_timeout: self.cfg.transfer_idle_timeout,
            max_bytes: self.cfg.max_bytes,
            exec: self.exec.clone(),
        }
    }

    pub(crate) fn busy(&self) -> Vec<PathBuf> {
        self.sending.values().cloned().collect()
    }
}

/// Restores `sm` from the latest snapshot in storage if it is behind it (a state machine
/// kept in memory always is, at start). Returns the index the state machine is at.
pub(crate) async fn restore_at_start<SM: StateMachine>(
    sm: SM,
    store: &SnapshotStore,
    last: &SnapshotMeta,
    exec: crate::exec::Exec,
) -> Result<(SM, LogIndex), String> {
    let applied = sm.applied_index();
    if last.index <= applied {
        return Ok((sm, applied));
    }
    let Some(file) = store.find(last) else {
        return Err(format!(
            "the log was compacted up to {} but its snapshot file is missing or damaged in {}; restore the node from a backup",
            last.index,
            store.path(last.index, last.term).display()
        ));
    };
    let store = store.clone();
    exec.blocking(move || {
        let mut sm = sm;
        let mut data = store.data(&file).map_err(|e| e.to_string())?;
        sm.restore(file.meta.index, &mut data)
            .map_err(|e| format!("cannot restore the state machine from its snapshot: {e}"))?;
        Ok((sm, file.meta.index))
    })
    .await
    .map_err(|e| format!("the restore task failed: {e}"))?
}

/// Takes the snapshots peers stream to this node, one at a time, into `store`; each
/// complete one becomes an [`Event::SnapshotReceived`].
pub(crate) async fn receive_streams(
    mut streams: mpsc::Receiver<PeerStream>,
    store: SnapshotStore,
    settings: TransferSettings,
    transfers: Transfers,
    events: mpsc::UnboundedSender<Event>,
) {
    while let Some(mut stream) = streams.recv().await {
        // One at a time: a second leader's offer waits behind the first (or is dropped
        // with its connection if too many wait, and retried).
        match receive_snapshot(&mut stream, &store, settings.clone(), &transfers).await {
            Ok(received) => {
                transfers.count(|c| c.received += 1);
                tracing::info!(
                    from = received.from,
                    index = received.file.meta.index,
                    bytes = received.file.size,
                    "snapshot received"
                );
                if events.send(Event::SnapshotReceived(received)).is_err() {
                    return;
                }
            }
            Err(e) => {
                transfers.count(|c| c.receive_failures += 1);
                tracing::warn!(from = stream.peer(), error = %e, "snapshot transfer in failed")
            }
        }
    }
}

/// What to drop from the Raft log once a snapshot is recorded.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Keep {
    /// Everything the snapshot covers but this many entries before it.
    Tail(u64),
    /// The oldest whole segments past these limits, up to `tail` entries before the
    /// snapshot at most.
    Newest {
        entries: Option<u64>,
        bytes: Option<u64>,
        tail: u64,
    },
}

/// Writes the state machine's copy to a file, records it in storage and drops what `keep`
/// lets go of the log. Errors from storage start with `storage:` (they stop the node).
pub(crate) fn take_snapshot(
    store: &SnapshotStore,
    storage: &SharedStorage,
    meta: &SnapshotMeta,
    source: Box<dyn crate::state_machine::SnapshotSource>,
    keep: Keep,
) -> Result<SnapshotMeta, String> {
    store
        .create(meta, |out| source.write_to(out))
        .map_err(|e| format!("writing the snapshot file: {e}"))?;
    let mut log = storage.write().map_err(|e| format!("storage: {e}"))?;
    log.record_snapshot(meta)
        .map_err(|e| format!("storage: {e}"))?;
    let purge_to = match keep {
        Keep::Tail(tail) => meta.index.saturating_sub(tail),
        Keep::Newest {
            entries,
            bytes,
            tail,
        } => log.retention_point(entries, bytes, meta.index.saturating_sub(tail)),
    };
    if purge_to > 0 {
        log.purge_to(purge_to)
            .map_err(|e| format!("storage: {e}"))?;
    }
    Ok(meta.clone())
}
