//! The state machine's own task: committed entries are applied there, in order, while the
//! runtime goes on stepping the core. A slow apply delays no tick, heartbeat, vote or
//! append; callers are still answered only once their entry is applied.
//!
//! The runtime hands each `Ready`'s committed entries over with [`Applier::push`] and learns
//! the outcome from [`Applier::completed`] (entries back, one response each). Work that
//! needs the state machine at a known index (a snapshot, a backup, installing a leader's
//! snapshot) first waits until everything handed over is applied, then takes the state
//! machine with [`Applier::lock`]. The core bounds how much may wait to be applied
//! (`max_unapplied_bytes`), so the queue cannot grow without limit.

use std::sync::Arc;

use raft_core::{Entry, LogIndex};
use tokio::sync::{mpsc, Mutex, MutexGuard};
use tokio::task::JoinHandle;

use crate::state_machine::StateMachine;

/// Entries the state machine applied, with what it returned for each.
pub(crate) struct Applied<R> {
    pub(crate) entries: Vec<Entry>,
    pub(crate) responses: Vec<R>,
    /// The state machine's own failure after applying them (it stops the node).
    pub(crate) failure: Option<String>,
}

/// The handle the runtime keeps on the apply task.
pub(crate) struct Applier<SM: StateMachine> {
    sm: Arc<Mutex<SM>>,
    jobs: mpsc::UnboundedSender<Vec<Entry>>,
    done: mpsc::UnboundedReceiver<Applied<SM::Response>>,
    /// The last index handed over.
    handed: LogIndex,
    /// The apply task, awaited by [`Applier::close`].
    task: JoinHandle<()>,
}

impl<SM: StateMachine> Applier<SM> {
    /// Starts the apply task on the current runtime for `sm`, which reflects the log up to
    /// `applied`.
    pub(crate) fn spawn(sm: SM, applied: LogIndex) -> Self {
        let sm = Arc::new(Mutex::new(sm));
        let (jobs, rx) = mpsc::unbounded_channel();
        let (tx, done) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(sm.clone(), rx, tx));
        Applier {
            sm,
            jobs,
            done,
            handed: applied,
            task,
        }
    }

    /// Hands committed entries over (in log order, after every earlier batch).
    pub(crate) fn push(&mut self, entries: Vec<Entry>) {
        let Some(last) = entries.last() else {
            return;
        };
        self.handed = last.index;
        // A closed channel means the task is gone; `completed` reports that.
        let _ = self.jobs.send(entries);
    }

    /// The last index handed over.
    pub(crate) fn handed(&self) -> LogIndex {
        self.handed
    }

    /// The state machine was replaced by a snapshot's state up to `index` (every batch
    /// handed over earlier was applied first).
    pub(crate) fn restored_to(&mut self, index: LogIndex) {
        self.handed = self.handed.max(index);
    }

    /// The next batch applied, in order; `None` once the apply task is gone (the state
    /// machine panicked). Waits forever while nothing was handed over.
    pub(crate) async fn completed(&mut self) -> Option<Applied<SM::Response>> {
        self.done.recv().await
    }

    /// The next batch applied, if one is already back (never waits).
    pub(crate) fn try_completed(&mut self) -> Option<Applied<SM::Response>> {
        self.done.try_recv().ok()
    }

    /// The state machine, for work that needs it as of the last applied index: call only
    /// once everything handed over was applied.
    pub(crate) async fn lock(&self) -> MutexGuard<'_, SM> {
        self.sm.lock().await
    }

    /// Ends the apply task and drops the state machine, returning once both are done: a
    /// state machine holding files (a database) has released them when this returns.
    pub(crate) async fn close(self) {
        let Applier { sm, jobs, task, .. } = self;
        drop(jobs);
        // The task ends once it sees the queue closed (or it is already gone, panicked).
        let _ = task.await;
        drop(sm);
    }
}

/// The apply task: batches are applied in the order they came, several queued ones at once.
async fn run<SM: StateMachine>(
    sm: Arc<Mutex<SM>>,
    mut jobs: mpsc::UnboundedReceiver<Vec<Entry>>,
    done: mpsc::UnboundedSender<Applied<SM::Response>>,
) {
    while let Some(mut entries) = jobs.recv().await {
        while let Ok(more) = jobs.try_recv() {
            entries.extend(more);
        }
        let mut guard = sm.lock().await;
        let responses = guard.apply(&entries).await;
        let failure = guard.failure();
        drop(guard);
        let applied = Applied {
            entries,
            responses,
            failure,
        };
        if done.send(applied).is_err() {
            return; // the runtime stopped
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state_machine::ReplicatedLog;

    fn entries(from: LogIndex, to: LogIndex) -> Vec<Entry> {
        (from..=to)
            .map(|i| Entry::normal(1, i, b"x".to_vec()))
            .collect()
    }

    #[tokio::test]
    async fn batches_are_applied_in_order_with_a_response_each() {
        let mut a = Applier::spawn(ReplicatedLog::new(), 0);
        a.push(entries(1, 2));
        a.push(entries(3, 5));
        a.push(Vec::new());
        assert_eq!(a.handed(), 5);
        let mut seen = Vec::new();
        while seen.last() != Some(&5) {
            let done = a.completed().await.unwrap();
            assert_eq!(done.entries.len(), done.responses.len());
            assert!(done.failure.is_none());
            seen.extend(done.entries.iter().map(|e| e.index));
        }
        assert_eq!(seen, vec![1, 2, 3, 4, 5]);
        assert_eq!(a.lock().await.applied(), 5);
    }

    #[tokio::test]
    async fn a_restored_state_moves_the_handed_index_forward_only() {
        let mut a = Applier::spawn(ReplicatedLog::new(), 3);
        a.restored_to(10);
        assert_eq!(a.handed(), 10);
        a.restored_to(4);
        assert_eq!(a.handed(), 10);
    }
}
