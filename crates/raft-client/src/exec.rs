//! Where a node's blocking work runs: on tokio's blocking pool (a real node), or in place
//! on the node's one thread ([`NodeConfig::single_thread`](crate::NodeConfig::single_thread):
//! the node simulator, where a current-thread runtime with paused time makes every run of a
//! seed the same).

use tokio::task::JoinHandle;

/// The time now, as the node counts it: the monotonic clock, or, under a runtime with
/// paused time (the node simulator), the runtime's clock. Every duration the node measures
/// (ticks, contact with the leader, the autopilot's delays, flow control's round trips)
/// comes from here.
pub(crate) fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// How long a piece of a simulated node's blocking work takes, drawn for each piece: the
/// node simulator's slow disk.
pub type DiskDelay = std::sync::Arc<dyn Fn() -> std::time::Duration + Send + Sync>;

/// How a node runs blocking work (disk writes and reads, snapshot files).
#[derive(Clone, Default)]
pub(crate) enum Exec {
    /// On tokio's blocking pool, beside the node's tasks.
    #[default]
    Threads,
    /// As a task of the current runtime, run when it is first polled: on a current-thread
    /// runtime, in a deterministic order with everything else. With a delay, each piece of
    /// work is done once that much (simulated) time has passed, as on a slow disk.
    InPlace(Option<DiskDelay>, InPlaceTasks),
}

/// The in-place tasks of a node not yet finished: aborted with the node ([`ExecGuard`]), so
/// that no write of a crashed node reaches its disk afterwards.
#[derive(Clone, Default)]
pub(crate) struct InPlaceTasks(std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>);

impl InPlaceTasks {
    fn add(&self, task: tokio::task::AbortHandle) {
        if let Ok(mut tasks) = self.0.lock() {
            if tasks.len() >= 64 {
                tasks.retain(|t| !t.is_finished());
            }
            tasks.push(task);
        }
    }
}

/// Aborts a node's unfinished in-place work when dropped (the runtime holds it: it is
/// dropped when the node stops or is aborted).
pub(crate) struct ExecGuard(Option<InPlaceTasks>);

impl Drop for ExecGuard {
    fn drop(&mut self) {
        let Some(tasks) = &self.0 else { return };
        if let Ok(mut tasks) = tasks.0.lock() {
            for t in tasks.drain(..) {
                t.abort();
            }
        }
    }
}

impl std::fmt::Debug for Exec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exec::Threads => f.write_str("Threads"),
            Exec::InPlace(d, _) => write!(f, "InPlace(delayed: {})", d.is_some()),
        }
    }
}

impl Exec {
    /// The mode `single_thread` asks for, with the environment's disk delay, if any.
    pub(crate) fn new(single_thread: bool, delay: Option<DiskDelay>) -> Exec {
        if single_thread {
            Exec::InPlace(delay, InPlaceTasks::default())
        } else {
            Exec::Threads
        }
    }

    /// What aborts this executor's unfinished in-place work when dropped.
    pub(crate) fn guard(&self) -> ExecGuard {
        match self {
            Exec::Threads => ExecGuard(None),
            Exec::InPlace(_, tasks) => ExecGuard(Some(tasks.clone())),
        }
    }

    /// Runs `f` as blocking work.
    pub(crate) fn blocking<F, R>(&self, f: F) -> JoinHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        match self {
            Exec::Threads => tokio::task::spawn_blocking(f),
            Exec::InPlace(delay, tasks) => {
                let wait = delay.as_ref().map(|d| d());
                let task = tokio::spawn(async move {
                    if let Some(wait) = wait {
                        tokio::time::sleep(wait).await;
                    }
                    f()
                });
                tasks.add(task.abort_handle());
                task
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn in_place_work_runs_on_the_calling_thread_and_threads_work_elsewhere() {
        let here = std::thread::current().id();
        let there = Exec::InPlace(None, InPlaceTasks::default())
            .blocking(|| std::thread::current().id())
            .await
            .unwrap_or(here);
        assert_eq!(there, here);
        let pool = Exec::Threads
            .blocking(|| std::thread::current().id())
            .await
            .unwrap_or(here);
        assert_ne!(pool, here);
    }
}

#[cfg(test)]
mod delay_tests {
    use super::*;

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn delayed_in_place_work_is_done_once_its_delay_has_passed() {
        let delay: DiskDelay = std::sync::Arc::new(|| std::time::Duration::from_millis(30));
        let start = tokio::time::Instant::now();
        let done_at = Exec::InPlace(Some(delay), InPlaceTasks::default())
            .blocking(tokio::time::Instant::now)
            .await
            .unwrap_or(start);
        assert_eq!(done_at - start, std::time::Duration::from_millis(30));
    }
}

/// Runs `f`, which may block, from async code without a task of its own: on a multi-thread
/// runtime the worker thread is handed over to the others meanwhile; elsewhere (a
/// single-thread runtime, the simulator's, or no runtime) it runs in place.
pub(crate) fn block_in_place<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}
