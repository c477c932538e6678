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

/// How a node runs blocking work (disk writes and reads, snapshot files).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Exec {
    /// On tokio's blocking pool, beside the node's tasks.
    #[default]
    Threads,
    /// As a task of the current runtime, run when it is first polled: on a current-thread
    /// runtime, in a deterministic order with everything else.
    InPlace,
}

impl Exec {
    /// The mode `single_thread` asks for.
    pub(crate) fn new(single_thread: bool) -> Exec {
        if single_thread {
            Exec::InPlace
        } else {
            Exec::Threads
        }
    }

    /// Runs `f` as blocking work.
    pub(crate) fn blocking<F, R>(self, f: F) -> JoinHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        match self {
            Exec::Threads => tokio::task::spawn_blocking(f),
            Exec::InPlace => tokio::spawn(async move { f() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn in_place_work_runs_on_the_calling_thread_and_threads_work_elsewhere() {
        let here = std::thread::current().id();
        let there = Exec::InPlace
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
