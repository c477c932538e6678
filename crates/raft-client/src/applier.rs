//! The state machine's own task: committed entries are applied there, in order, while the
//! runtime goes on stepping the core. A slow apply delays no tick, heartbeat, vote or
//! append; callers are still answered only once their entry is applied.
//!
//! The runtime hands each `Ready`'s committed entries over with [`Applier::push`] and learns
//! the outcome from [`Applier::completed`] (entries back, one response each). A copy of the
//! state for a snapshot or a backup is asked for with [`Applier::copy`]: it goes through
//! the same queue, so it is taken by the apply task once everything handed over before it
//! is applied, and the runtime never waits for it. Installing a leader's snapshot goes
//! through the queue too ([`Applier::restore`]): the runtime takes the install only once
//! everything handed over earlier was applied (it goes on stepping the core meanwhile),
//! and the restore itself runs in the apply task. A copy asked for before a restore is
//! refused rather than copied under an index the installed state has passed. The core
//! bounds how much may wait to be applied (`max_unapplied_bytes`), so the queue cannot grow
//! without limit.

use std::sync::Arc;

use raft_core::{Entry, LogIndex};
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio_util::task::AbortOnDropHandle;

use crate::state_machine::{SnapshotSource, StateMachine};

/// A copy of the state machine's state ([`StateMachine::snapshot`]), or why there is none.
pub(crate) type Copied = std::io::Result<Box<dyn SnapshotSource>>;

/// Replaces the state machine's state with a snapshot's (reading the snapshot's file).
pub(crate) type Restore<SM> = Box<dyn FnOnce(&mut SM) -> std::io::Result<()> + Send>;

/// What the apply task is asked to do, in order.
enum Job<SM> {
    /// Apply these committed entries.
    Apply(Vec<Entry>),
    /// Copy the state as it is once everything before is applied, unless a snapshot was
    /// installed since it was asked for (the generation then differs).
    Copy(oneshot::Sender<Copied>, u64),
    /// Restore the state from the snapshot at this index.
    Restore(Restore<SM>, LogIndex),
}

/// Entries the state machine applied, with what it returned for each.
pub(crate) struct Applied<R> {
    pub(crate) entries: Vec<Entry>,
    pub(crate) responses: Vec<R>,
    /// The state machine's own failure after applying them, or why it could not restore
    /// (it stops the node).
    pub(crate) failure: Option<String>,
    /// The state was restored from the snapshot at this index (with no entries).
    pub(crate) restored: Option<LogIndex>,
}

impl<R> Applied<R> {
    /// A report that applied nothing: a restore, or a failure.
    fn without_entries(failure: Option<String>, restored: Option<LogIndex>) -> Self {
        Applied {
            entries: Vec::new(),
            responses: Vec::new(),
            failure,
            restored,
        }
    }
}

/// The handle the runtime keeps on the apply task.
pub(crate) struct Applier<SM: StateMachine> {
    sm: Arc<Mutex<SM>>,
    jobs: mpsc::UnboundedSender<Job<SM>>,
    done: mpsc::UnboundedReceiver<Applied<SM::Response>>,
    /// The last index handed over.
    handed: LogIndex,
    /// The apply task, awaited by [`Applier::close`]; aborted if the applier is dropped
    /// without closing (the node was aborted, as a crash would end it).
    task: AbortOnDropHandle<()>,
    /// Counts snapshot installs: a copy asked for before an install is refused after it
    /// (the state is then the installed one, not the one as of the copy's index).
    installs: Arc<std::sync::atomic::AtomicU64>,
}

impl<SM: StateMachine> Applier<SM> {
    /// Starts the apply task on the current runtime for `sm`, which reflects the log up to
    /// `applied`.
    pub(crate) fn spawn(sm: SM, applied: LogIndex) -> Self {
        let sm = Arc::new(Mutex::new(sm));
        let (jobs, rx) = mpsc::unbounded_channel();
        let (tx, done) = mpsc::unbounded_channel();
        let installs = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let task = AbortOnDropHandle::new(tokio::spawn(run(sm.clone(), rx, tx, installs.clone())));
        Applier {
            sm,
            jobs,
            done,
            handed: applied,
            task,
            installs,
        }
    }

    /// Hands committed entries over (in log order, after every earlier batch).
    pub(crate) fn push(&mut self, entries: Vec<Entry>) {
        let Some(last) = entries.last() else {
            return;
        };
        self.handed = last.index;
        // A closed channel means the task is gone; `completed` reports that.
        let _ = self.jobs.send(Job::Apply(entries));
    }

    /// Asks for a copy of the state as of the last index handed over (returned with the
    /// answer's receiver): the apply task takes it once everything before is applied, and
    /// nobody waits here. The receiver fails if the apply task is gone.
    pub(crate) fn copy(&mut self) -> (LogIndex, oneshot::Receiver<Copied>) {
        let (tx, rx) = oneshot::channel();
        let generation = self.installs.load(std::sync::atomic::Ordering::Acquire);
        let _ = self.jobs.send(Job::Copy(tx, generation));
        (self.handed, rx)
    }

    /// Restores the state machine from the snapshot at `index` after everything handed
    /// over before (an [`Applied`] with `restored` reports it); what is handed over next
    /// follows the snapshot. A copy asked for before is refused from now on
    /// (`ErrorKind::Interrupted`).
    pub(crate) fn restore(&mut self, index: LogIndex, restore: Restore<SM>) {
        self.installs
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.handed = self.handed.max(index);
        let _ = self.jobs.send(Job::Restore(restore, index));
    }

    /// The last index handed over.
    pub(crate) fn handed(&self) -> LogIndex {
        self.handed
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

    /// The state machine, for a test to look at once everything handed over was applied.
    #[cfg(test)]
    pub(crate) async fn lock(&self) -> tokio::sync::MutexGuard<'_, SM> {
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

/// The apply task: batches are applied in the order they came, several queued ones at once;
/// a copy asked for between batches is taken between them.
async fn run<SM: StateMachine>(
    sm: Arc<Mutex<SM>>,
    mut jobs: mpsc::UnboundedReceiver<Job<SM>>,
    done: mpsc::UnboundedSender<Applied<SM::Response>>,
    installs: Arc<std::sync::atomic::AtomicU64>,
) {
    let mut next = None;
    loop {
        let job = match next.take() {
            Some(job) => job,
            None => match jobs.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let mut entries = match job {
            Job::Copy(reply, generation) => {
                let mut guard = sm.lock().await;
                let copied = if installs.load(std::sync::atomic::Ordering::Acquire) == generation {
                    guard.snapshot().await
                } else {
                    Err(std::io::Error::new(
                        std::io::ErrorKind::Interrupted,
                        "a snapshot from the leader was installed meanwhile",
                    ))
                };
                // A state machine that failed while copying stops the node, as if it had
                // failed applying.
                let failure = guard.failure();
                drop(guard);
                let _ = reply.send(copied);
                if let Some(failure) = failure {
                    let _ = done.send(Applied::without_entries(Some(failure), None));
                    return;
                }
                continue;
            }
            Job::Restore(restore, index) => {
                let mut guard = sm.lock().await;
                let sm = &mut *guard;
                let result = crate::exec::block_in_place(move || restore(sm));
                let failure = match result {
                    Ok(()) => guard.failure(),
                    Err(e) => Some(format!(
                        "cannot restore the state machine from the snapshot at {index}: {e}"
                    )),
                };
                drop(guard);
                let failed = failure.is_some();
                let restored = Applied::without_entries(failure, Some(index));
                // After a failure nothing more is applied: the task ends, and the runtime,
                // stopping, sees it gone rather than waiting for the rest.
                if done.send(restored).is_err() || failed {
                    return;
                }
                continue;
            }
            Job::Apply(entries) => entries,
        };
        while let Ok(more) = jobs.try_recv() {
            match more {
                Job::Apply(more) => entries.extend(more),
                other => {
                    next = Some(other);
                    break;
                }
            }
        }
        let mut guard = sm.lock().await;
        let responses = guard.apply(&entries).await;
        let failure = guard.failure();
        drop(guard);
        let failed = failure.is_some();
        let applied = Applied {
            entries,
            responses,
            failure,
            restored: None,
        };
        if done.send(applied).is_err() || failed {
            return; // the runtime stopped, or will now
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

    /// A state machine whose copy is the index it had applied.
    #[derive(Default)]
    struct Counter(LogIndex);

    struct Copy(LogIndex);

    impl SnapshotSource for Copy {
        fn write_to(self: Box<Self>, out: &mut dyn std::io::Write) -> std::io::Result<()> {
            out.write_all(&self.0.to_le_bytes())
        }
    }

    #[async_trait::async_trait]
    impl StateMachine for Counter {
        type Response = ();
        async fn apply(&mut self, entries: &[Entry]) -> Vec<()> {
            // Slow: the copy below is asked for long before this is done.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            self.0 = entries.last().map_or(self.0, |e| e.index);
            vec![(); entries.len()]
        }
        async fn snapshot(&mut self) -> std::io::Result<Box<dyn SnapshotSource>> {
            Ok(Box::new(Copy(self.0)))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_copy_is_taken_after_everything_handed_before_it_and_before_what_follows() {
        let mut a = Applier::spawn(Counter::default(), 0);
        a.push(entries(1, 3));
        a.push(entries(4, 6));
        let (index, copied) = a.copy();
        a.push(entries(7, 9));
        assert_eq!(index, 6);
        let mut bytes = Vec::new();
        copied.await.unwrap().unwrap().write_to(&mut bytes).unwrap();
        assert_eq!(bytes, 6u64.to_le_bytes());
        let mut last = 0;
        while last < 9 {
            last = a.completed().await.unwrap().entries.last().unwrap().index;
        }
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_copy_asked_for_before_a_restore_is_refused_and_one_after_sees_the_snapshot() {
        let mut a = Applier::spawn(Counter::default(), 0);
        a.push(entries(1, 3));
        let (_, before) = a.copy();
        a.restore(
            100,
            Box::new(|sm: &mut Counter| {
                sm.0 = 100;
                Ok(())
            }),
        );
        let (index, after) = a.copy();
        assert_eq!(index, 100, "what is handed over next follows the snapshot");
        let err = before.await.unwrap().err().unwrap();
        assert_eq!(err.kind(), std::io::ErrorKind::Interrupted);
        let mut bytes = Vec::new();
        after.await.unwrap().unwrap().write_to(&mut bytes).unwrap();
        assert_eq!(bytes, 100u64.to_le_bytes());
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_restore_is_reported_in_order_after_the_batches_before_it() {
        let mut a = Applier::spawn(Counter::default(), 0);
        a.push(entries(1, 3));
        a.restore(
            10,
            Box::new(|sm: &mut Counter| {
                sm.0 = 10;
                Ok(())
            }),
        );
        a.push(entries(11, 12));
        let first = a.completed().await.unwrap();
        assert_eq!(first.entries.last().map(|e| e.index), Some(3));
        assert_eq!(first.restored, None);
        let restored = a.completed().await.unwrap();
        assert!(restored.entries.is_empty());
        assert_eq!(restored.restored, Some(10));
        assert!(restored.failure.is_none());
        let last = a.completed().await.unwrap();
        assert_eq!(last.entries.last().map(|e| e.index), Some(12));
        assert_eq!(a.lock().await.0, 12);
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_restore_that_fails_is_reported_as_a_failure() {
        let mut a = Applier::spawn(Counter::default(), 0);
        a.restore(
            7,
            Box::new(|_: &mut Counter| Err(std::io::Error::other("damaged"))),
        );
        a.push(entries(8, 9));
        let done = a.completed().await.unwrap();
        let why = done.failure.unwrap();
        assert!(
            why.contains("snapshot at 7") && why.contains("damaged"),
            "{why}"
        );
        // Nothing more is applied, and whoever waits for the rest learns the task ended
        // (a stopping runtime would otherwise wait forever).
        let rest = tokio::time::timeout(std::time::Duration::from_secs(60), a.completed()).await;
        assert!(
            matches!(rest, Ok(None)),
            "the apply task went on after failing"
        );
    }

    #[tokio::test]
    async fn a_restore_moves_the_handed_index_forward_only() {
        let mut a = Applier::spawn(ReplicatedLog::new(), 3);
        a.restore(10, Box::new(|_: &mut ReplicatedLog| Ok(())));
        assert_eq!(a.handed(), 10);
        a.restore(4, Box::new(|_: &mut ReplicatedLog| Ok(())));
        assert_eq!(a.handed(), 10);
    }
}
