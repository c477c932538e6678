//! The runtime's side of snapshots (`crate::snapshots` holds their state and files):
//! taking one when enough was applied or written, sending one to a follower that needs
//! it, handing one received from the leader to the core, restoring the state machine from
//! an installed one, and copying the state for a backup. None of it waits in the loop.

use raft_core::{Message, MessageBody, NodeId, SnapshotMeta, SnapshotOutcome, Term};
use tokio::sync::oneshot;

use super::Runtime;
use crate::error::Error;
use crate::snapshot_store::SnapshotFile;
use crate::snapshot_transfer::send_snapshot;
use crate::snapshots::{take_snapshot, Event, Keep};
use crate::state_machine::StateMachine;

impl<SM: StateMachine> Runtime<SM> {
    /// After applying: takes a snapshot when enough was applied or written since the last.
    /// The snapshot covers every committed entry handed to the apply task: the apply task
    /// copies the state once it has applied them, and the loop does not wait for it.
    pub(super) fn maybe_take_snapshot(&mut self, bytes_written: u64) {
        if self
            .snapshots
            .due(self.applied, bytes_written, crate::exec::now())
        {
            self.take_snapshot_now(bytes_written);
        }
    }

    /// Starts a snapshot of the state machine as of the last entry handed to the apply
    /// task: the apply task copies the state once it has applied it, then the copy is
    /// written out (on the executor) and the log compacted; [`Event::SnapshotTaken`] says
    /// how it went. Nothing here waits.
    pub(super) fn take_snapshot_now(&mut self, bytes_written: u64) {
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
        let keep = match self.snapshots.cfg.retention {
            crate::config::LogRetention::AfterSnapshot => Keep::Tail(tail),
            crate::config::LogRetention::Keep { entries, bytes } => Keep::Newest {
                entries,
                bytes,
                tail,
            },
        };
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
                    let result = take_snapshot(&store, &storage, &meta, source, keep);
                    let _ = events.send(Event::SnapshotTaken(result));
                });
                let _ = tokio_util::task::AbortOnDropHandle::new(writing).await;
            },
        )));
    }

    /// Waits for the snapshot being written, if any, to be finished (the node is stopping).
    pub(super) async fn wait_snapshot_taken(&mut self) {
        if let Some(task) = self.snapshots.writing.take() {
            // A panic in the state machine's snapshot code ends the task all the same.
            let _ = task.await;
        }
    }

    pub(super) fn on_event(&mut self, ev: Event) -> Result<(), Error> {
        match ev {
            Event::SnapshotTaken(Ok(meta)) => {
                tracing::info!(
                    id = self.cfg.id,
                    index = meta.index,
                    "snapshot taken, log compacted"
                );
                self.snapshots.transfers.count(|c| c.taken += 1);
                self.snapshots.set_taking(false);
                self.snapshots.succeeded();
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
                let failures = self.snapshots.failed(crate::exec::now());
                tracing::error!(id = self.cfg.id, error = %e, failures, "taking a snapshot failed; trying again later");
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
    pub(super) fn send_snapshot_to(&mut self, to: NodeId, term: Term, meta: SnapshotMeta) {
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

    pub(super) fn start_queued_transfers(&mut self) {
        while self.snapshots.sending.len() < self.snapshots.cfg.max_transfers.max(1) {
            let Some((to, term, meta)) = self.snapshots.queued.pop_front() else {
                return;
            };
            if term == self.node.term() && self.node.role() == raft_core::Role::Leader {
                self.start_transfer(to, term, meta);
            }
        }
    }

    pub(super) fn start_transfer(&mut self, to: NodeId, term: Term, meta: SnapshotMeta) {
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
                let finder = store.clone();
                let file: SnapshotFile = exec
                    .blocking(move || finder.find(&meta))
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("the snapshot file is gone")?;
                let mut stream = transport.open_stream(to).await.map_err(|e| e.to_string())?;
                let resumed = send_snapshot(&mut stream, &store, term, &file, settings, &transfers)
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
    pub(super) fn restore_installed(&mut self, meta: &SnapshotMeta) -> Result<(), Error> {
        let Some(file) = self.snapshots.store.find(meta) else {
            return Err(Error::Storage(format!(
                "the snapshot file for index {} is missing or damaged",
                meta.index
            )));
        };
        self.adopt_cluster_version(file.cluster_version)?;
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

    /// Starts a backup: a copy of the state machine as of the last committed entry handed
    /// to the apply task, which takes it once it has applied that entry; `reply` gets it
    /// then. The loop does not wait.
    pub(super) fn start_backup(&mut self, reply: oneshot::Sender<Result<crate::Backup, Error>>) {
        let index = self.applier.handed();
        let Some(term) = self.node.entry_term(index) else {
            let why = format!("the term of entry {index} is unknown");
            let _ = reply.send(Err(Error::Storage(why)));
            return;
        };
        let Some(membership) = self.node.membership_at(index).cloned() else {
            let why = format!("the configuration at entry {index} is unknown");
            let _ = reply.send(Err(Error::Storage(why)));
            return;
        };
        let meta = raft_core::SnapshotMeta {
            index,
            term,
            membership,
        };
        let (_, copied) = self.applier.copy();
        let cluster_version = self.cluster_version.get();
        self.backups.retain(|b| !b.is_finished());
        let task = tokio::spawn(async move {
            let backup = match copied.await {
                Ok(Ok(source)) => Ok(crate::Backup {
                    meta,
                    source,
                    cluster_version,
                }),
                // A snapshot from the leader replaced the state first: ask again.
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => Err(Error::Busy),
                Ok(Err(e)) => Err(Error::Storage(format!(
                    "the state machine cannot be copied: {e}"
                ))),
                Err(_) => Err(Error::Shutdown),
            };
            let _ = reply.send(backup);
        });
        self.backups
            .push(tokio_util::task::AbortOnDropHandle::new(task));
    }
}
