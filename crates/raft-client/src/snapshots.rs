//! The runtime's snapshots: taking them (the state machine's copy written out off the
//! runtime, then recorded and the log compacted), sending them to followers that need them,
//! receiving them from the leader, and restoring the state machine from one.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;

use raft_core::{LogIndex, Message, MessageBody, NodeId, SnapshotMeta, SnapshotOutcome, Term};
use raft_net::PeerStream;
use tokio::sync::mpsc;

use crate::config::SnapshotConfig;
use crate::error::Error;
use crate::runtime::Runtime;
use crate::snapshot_store::{SnapshotFile, SnapshotStore};
use crate::snapshot_transfer::{
    receive_snapshot, send_snapshot, Received, TransferSettings, Transfers,
};
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
    bytes_at_last: u64,
    /// The size of the latest snapshot file (0: none, or unknown).
    last_size: u64,
    taking: bool,
    /// The task taking the snapshot (awaited when the node stops; aborted with the node
    /// when it is aborted, as a crash would end it).
    writing: Option<tokio_util::task::AbortOnDropHandle<()>>,
    /// The state machine cannot take snapshots: never try again.
    unsupported: bool,
    /// Transfers running, by follower: the file each sends (kept until it ends).
    sending: BTreeMap<NodeId, PathBuf>,
    /// Followers waiting for a transfer slot: (follower, term of the request, snapshot).
    queued: VecDeque<(NodeId, Term, SnapshotMeta)>,
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
            sending: BTreeMap::new(),
            queued: VecDeque::new(),
            transfers: Transfers::default(),
            events_tx,
        }
    }

    /// Whether a snapshot is being taken, kept here (checked every turn) and in the
    /// shared counters (read by status and metrics).
    fn set_taking(&mut self, on: bool) {
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

    fn busy(&self) -> Vec<PathBuf> {
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

impl<SM: StateMachine> Runtime<SM> {
    /// After applying: takes a snapshot when enough was applied or written since the last.
    /// The snapshot covers every committed entry handed to the apply task: the apply task
    /// copies the state once it has applied them, and the loop does not wait for it.
    pub(crate) fn maybe_take_snapshot(&mut self, bytes_written: u64) {
        if self.snapshot_due(bytes_written) {
            self.take_snapshot_now(bytes_written);
        }
    }

    /// Whether enough was applied or written since the last snapshot to take one.
    fn snapshot_due(&self, bytes_written: u64) -> bool {
        let s = &self.snapshots;
        if s.taking || s.unsupported || self.applied <= s.last.index {
            return false;
        }
        let by_entries =
            s.cfg.every_entries > 0 && self.applied - s.last.index >= s.cfg.every_entries;
        let by_bytes = s.cfg.every_wal_bytes > 0
            && bytes_written.saturating_sub(s.bytes_at_last) >= s.cfg.every_wal_bytes;
        // Unless the state is larger than what was written since its last copy: copying
        // it again then would cost more than the writes it compacts.
        (by_entries || by_bytes)
            && !(s.cfg.scale_with_size
                && bytes_written.saturating_sub(s.bytes_at_last) < s.last_size)
    }

    /// Starts a snapshot of the state machine as of the last entry handed to the apply
    /// task: the apply task copies the state once it has applied it, then the copy is
    /// written out (on the executor) and the log compacted; [`Event::SnapshotTaken`] says
    /// how it went. Nothing here waits.
    fn take_snapshot_now(&mut self, bytes_written: u64) {
        let index = self.applier.handed();
        let Some(term) = self.node.entry_term(index) else {
            return;
        };
        let Some(membership) = self.node.membership_at(index).cloned() else {
            tracing::warn!(
                id = self.cfg.id,
                index,
                "the configuration at the snapshot's index is unknown; no snapshot taken"
            );
            return;
        };
        let meta = SnapshotMeta {
            index,
            term,
            membership,
        };
        let (_, copied) = self.applier.copy();
        self.snapshots.set_taking(true);
        self.snapshots.bytes_at_last = bytes_written;
        let store = self.snapshots.store.clone();
        let storage = self.storage.clone();
        let tail = self.snapshots.cfg.tail_entries;
        let events = self.snapshots.events_tx.clone();
        let exec = self.snapshots.exec.clone();
        self.snapshots.writing = Some(tokio_util::task::AbortOnDropHandle::new(tokio::spawn(
            async move {
                let source = match copied.await {
                    Ok(Ok(source)) => source,
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::Unsupported => {
                        let _ = events.send(Event::SnapshotsUnsupported);
                        return;
                    }
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {
                        let _ = events.send(Event::SnapshotSkipped);
                        return;
                    }
                    Ok(Err(e)) => {
                        let why = format!("the state machine could not start a snapshot: {e}");
                        let _ = events.send(Event::SnapshotTaken(Err(why)));
                        return;
                    }
                    // The apply task is gone: the runtime finds out and stops.
                    Err(_) => return,
                };
                let writing = exec.blocking(move || {
                    let result = take_snapshot(&store, &storage, &meta, source, tail);
                    let _ = events.send(Event::SnapshotTaken(result));
                });
                let _ = tokio_util::task::AbortOnDropHandle::new(writing).await;
            },
        )));
    }

    /// Waits for the snapshot being written, if any, to be finished (the node is stopping).
    pub(crate) async fn wait_snapshot_taken(&mut self) {
        if let Some(task) = self.snapshots.writing.take() {
            // A panic in the state machine's snapshot code ends the task all the same.
            let _ = task.await;
        }
    }

    pub(crate) fn on_event(&mut self, ev: Event) -> Result<(), Error> {
        match ev {
            Event::SnapshotTaken(Ok(meta)) => {
                tracing::info!(
                    id = self.cfg.id,
                    index = meta.index,
                    "snapshot taken, log compacted"
                );
                self.snapshots.transfers.count(|c| c.taken += 1);
                self.snapshots.set_taking(false);
                // A newer snapshot may have been installed from the leader meanwhile.
                if meta.index > self.snapshots.last.index {
                    self.snapshots.last_size =
                        self.snapshots.store.find(&meta).map_or(0, |f| f.size);
                    self.snapshots.last = meta;
                }
                let busy = self.snapshots.busy();
                self.snapshots
                    .store
                    .remove_others(&self.snapshots.last, &busy);
            }
            Event::SnapshotsUnsupported => {
                tracing::info!(
                    id = self.cfg.id,
                    "the state machine takes no snapshots: the log is kept whole"
                );
                self.snapshots.set_taking(false);
                self.snapshots.unsupported = true;
            }
            Event::SnapshotSkipped => {
                tracing::debug!(
                    id = self.cfg.id,
                    "snapshot skipped: the leader's was installed first"
                );
                self.snapshots.set_taking(false);
            }
            Event::SnapshotTaken(Err(e)) => {
                self.snapshots.set_taking(false);
                tracing::error!(id = self.cfg.id, error = %e, "taking a snapshot failed");
                if e.starts_with("storage:") {
                    return Err(Error::Storage(e));
                }
            }
            Event::TransferDone { to, outcome } => {
                self.snapshots.sending.remove(&to);
                self.node.report_snapshot(to, outcome);
                self.start_queued_transfers();
            }
            Event::SnapshotReceived(r) => {
                // The data is here: the core may now see the leader's offer.
                self.node.step(Message {
                    from: r.from,
                    to: self.cfg.id,
                    term: r.term,
                    body: MessageBody::InstallSnapshot {
                        meta: r.file.meta.clone(),
                    },
                });
            }
        }
        Ok(())
    }

    /// The core asks to send `to` its snapshot `meta`.
    pub(crate) fn send_snapshot_to(&mut self, to: NodeId, term: Term, meta: SnapshotMeta) {
        if self.snapshots.sending.contains_key(&to)
            || self.snapshots.queued.iter().any(|(p, _, _)| *p == to)
        {
            return; // already on its way (its outcome will be reported)
        }
        if self.snapshots.sending.len() >= self.snapshots.cfg.max_transfers.max(1) {
            self.snapshots.queued.push_back((to, term, meta));
            return;
        }
        self.start_transfer(to, term, meta);
    }

    fn start_queued_transfers(&mut self) {
        while self.snapshots.sending.len() < self.snapshots.cfg.max_transfers.max(1) {
            let Some((to, term, meta)) = self.snapshots.queued.pop_front() else {
                return;
            };
            if term == self.node.term() && self.node.role() == raft_core::Role::Leader {
                self.start_transfer(to, term, meta);
            }
        }
    }

    fn start_transfer(&mut self, to: NodeId, term: Term, meta: SnapshotMeta) {
        let path = self.snapshots.store.path(meta.index, meta.term);
        self.snapshots.sending.insert(to, path);
        let store = self.snapshots.store.clone();
        let transport = self.transport.clone();
        let settings = self.snapshots.settings();
        let transfers = self.snapshots.transfers.clone();
        let transfers_for_count = transfers.clone();
        let events = self.snapshots.events_tx.clone();
        let id = self.cfg.id;
        let exec = self.snapshots.exec.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let outcome = async {
                let file: SnapshotFile = exec
                    .blocking(move || store.find(&meta))
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("the snapshot file is gone")?;
                let mut stream = transport.open_stream(to).await.map_err(|e| e.to_string())?;
                let resumed = send_snapshot(&mut stream, term, &file, settings, &transfers)
                    .await
                    .map_err(|e| e.to_string())?;
                tracing::info!(
                    id,
                    to,
                    index = file.meta.index,
                    bytes = file.size,
                    resumed,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "snapshot sent"
                );
                transfers.count(|c| {
                    c.sent += 1;
                    c.sent_bytes += file.size - resumed;
                    c.resumed_bytes += resumed;
                });
                Ok::<(), String>(())
            }
            .await;
            let outcome = match outcome {
                Ok(()) => SnapshotOutcome::Delivered,
                Err(e) => {
                    tracing::warn!(id, to, error = %e, "snapshot transfer out failed");
                    transfers_for_count.count(|c| c.send_failures += 1);
                    SnapshotOutcome::Failed
                }
            };
            let _ = events.send(Event::TransferDone { to, outcome });
        });
    }

    /// A `Ready` installed `meta` in storage: the state machine restores from its file in
    /// the apply task, after everything handed over before (the runtime learns it is done
    /// from the apply task, and does not wait for it).
    pub(crate) fn restore_installed(&mut self, meta: &SnapshotMeta) -> Result<(), Error> {
        let Some(file) = self.snapshots.store.find(meta) else {
            return Err(Error::Storage(format!(
                "the snapshot file for index {} is missing or damaged",
                meta.index
            )));
        };
        let store = self.snapshots.store.clone();
        let size = file.size;
        self.applier.restore(
            meta.index,
            Box::new(move |sm: &mut SM| {
                let mut data = store.data(&file)?;
                sm.restore(file.meta.index, &mut data)
            }),
        );
        self.snapshots.last = meta.clone();
        self.snapshots.last_size = size;
        // The file being restored from is `meta`'s, which stays.
        let busy = self.snapshots.busy();
        self.snapshots.store.remove_others(meta, &busy);
        tracing::info!(
            id = self.cfg.id,
            index = meta.index,
            "snapshot installed in storage; the state machine restores from it next"
        );
        Ok(())
    }
}

/// Writes the state machine's copy to a file, records it in storage and compacts the log,
/// keeping `tail` entries before it. Errors from storage start with `storage:` (they stop the
/// node).
fn take_snapshot(
    store: &SnapshotStore,
    storage: &SharedStorage,
    meta: &SnapshotMeta,
    source: Box<dyn crate::state_machine::SnapshotSource>,
    tail: u64,
) -> Result<SnapshotMeta, String> {
    store
        .create(meta, |out| source.write_to(out))
        .map_err(|e| format!("writing the snapshot file: {e}"))?;
    let mut log = storage.write().map_err(|e| format!("storage: {e}"))?;
    log.record_snapshot(meta)
        .map_err(|e| format!("storage: {e}"))?;
    let purge_to = meta.index.saturating_sub(tail);
    if purge_to > 0 {
        log.purge_to(purge_to)
            .map_err(|e| format!("storage: {e}"))?;
    }
    Ok(meta.clone())
}
