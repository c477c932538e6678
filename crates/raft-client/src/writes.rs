//! Asynchronous storage writes: the runtime hands each `Ready`'s entries and hard state to
//! this pipeline and goes on stepping the core (receiving acknowledgements, accepting
//! proposals, sending appends) while they are written and synced.
//!
//! Writes run in the order they were queued, on a blocking thread, as batches: everything
//! queued while one batch is in progress becomes the next batch, written under one storage
//! lock and made durable with one sync taken outside the lock (so the core's reads are never
//! stuck behind an `fdatasync`). A batch completes as a whole; the runtime then acknowledges
//! each of its writes to the core in order ([`raft_core::Node::on_persisted`]) and only then
//! sends the messages that promised them (votes and append acknowledgements).

use std::collections::VecDeque;

use raft_core::{Entry, HardState, LogIndex, Message, Term};
use tokio::task::JoinHandle;

use crate::storage::SharedStorage;

/// One `Ready`'s write and what waits for it.
pub(crate) struct Write {
    pub(crate) entries: Vec<Entry>,
    pub(crate) hard_state: Option<HardState>,
    pub(crate) must_sync: bool,
    /// The last entry written, acknowledged to the core once durable.
    pub(crate) mark: Option<(LogIndex, Term)>,
    /// Messages that may leave only once this write is durable.
    pub(crate) promises: Vec<Message>,
}

/// A write's mark (its last entry) and the messages that wait for it.
pub(crate) type Ack = (Option<(LogIndex, Term)>, Vec<Message>);

/// What a completed batch hands back: its writes' marks and promises, in order.
pub(crate) struct Done {
    pub(crate) acks: Vec<Ack>,
}

struct InFlight {
    acks: Vec<Ack>,
    task: JoinHandle<Result<(), String>>,
}

/// The queue of writes not started yet and the batch in progress.
pub(crate) struct WritePipeline {
    storage: SharedStorage,
    queued: VecDeque<Write>,
    in_flight: Option<InFlight>,
    exec: crate::exec::Exec,
}

impl WritePipeline {
    pub(crate) fn new(storage: SharedStorage, exec: crate::exec::Exec) -> Self {
        WritePipeline {
            storage,
            queued: VecDeque::new(),
            in_flight: None,
            exec,
        }
    }

    /// Whether any write is queued or in progress (a promise must then wait its turn).
    pub(crate) fn busy(&self) -> bool {
        self.in_flight.is_some() || !self.queued.is_empty()
    }

    pub(crate) fn push(&mut self, w: Write) {
        self.queued.push_back(w);
    }

    /// Starts the queued writes as one batch, unless a batch is in progress already.
    pub(crate) fn start(&mut self) {
        if self.in_flight.is_some() || self.queued.is_empty() {
            return;
        }
        let batch: Vec<Write> = self.queued.drain(..).collect();
        let mut acks = Vec::with_capacity(batch.len());
        let mut work = Vec::with_capacity(batch.len());
        for w in batch {
            acks.push((w.mark, w.promises));
            if !w.entries.is_empty() || w.hard_state.is_some() {
                work.push((w.entries, w.hard_state, w.must_sync));
            }
        }
        let storage = self.storage.clone();
        let task = self.exec.blocking(move || write_batch(&storage, work));
        self.in_flight = Some(InFlight { acks, task });
    }

    /// Waits for the batch in progress, if any, ignoring its outcome (at shutdown).
    pub(crate) async fn completed_if_any(&mut self) {
        if self.in_flight.is_some() {
            let _ = self.completed().await;
        }
    }

    /// Waits for the batch in progress (forever when there is none: a `select!` branch).
    pub(crate) async fn completed(&mut self) -> Result<Done, String> {
        let Some(f) = self.in_flight.as_mut() else {
            return std::future::pending().await;
        };
        let outcome = (&mut f.task).await;
        let acks = self.in_flight.take().map(|f| f.acks).unwrap_or_default();
        match outcome {
            Ok(Ok(())) => Ok(Done { acks }),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(format!("the storage write task failed: {e}")),
        }
    }
}

/// Writes a batch under the storage lock, then makes it durable with one sync outside it.
fn write_batch(
    storage: &SharedStorage,
    work: Vec<(Vec<Entry>, Option<HardState>, bool)>,
) -> Result<(), String> {
    let mut sync = None;
    {
        let mut s = storage.write().map_err(|e| e.to_string())?;
        for (entries, hs, must_sync) in &work {
            // Each sync covers every earlier write of its segment, and a write that starts
            // a new segment syncs the one it closes: the last sync covers the batch.
            if let Some(p) = s
                .write_deferred(entries, *hs, *must_sync)
                .map_err(|e| e.to_string())?
            {
                sync = Some(p);
            }
        }
    }
    if let Some(p) = sync {
        if let Err(f) = p.sync() {
            let mut s = storage.write().map_err(|e| e.to_string())?;
            return Err(s.sync_failed(f).to_string());
        }
    }
    Ok(())
}
