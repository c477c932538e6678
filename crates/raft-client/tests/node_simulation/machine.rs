//! The state machine of a simulated node: the key-value store httpraft uses (or, on a disk
//! that lies, the in-memory one, rebuilt from the log at every start), made slow on demand
//! (each batch applied after a drawn delay of simulated time) or stuck (no batch applied
//! until it is let go), as an application's state machine can be.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raft_client::{DurableReader, KvReader, KvResponse, SnapshotSource, StateMachine};
use raft_core::{Entry, LogIndex};

use crate::rng::Rng;

/// How slow a node's state machine is now.
pub struct Pace {
    /// Each batch takes up to this long to apply; 0: no time at all.
    pub slowest_us: AtomicU64,
    /// While true, no batch is applied.
    pub stuck: tokio::sync::watch::Sender<bool>,
    rng: Mutex<Rng>,
}

impl Pace {
    pub fn new(rng: Rng) -> Pace {
        Pace {
            slowest_us: AtomicU64::new(0),
            stuck: tokio::sync::watch::Sender::new(false),
            rng: Mutex::new(rng),
        }
    }
}

pub struct SlowStore<SM> {
    pub inner: SM,
    pub pace: Arc<Pace>,
}

/// Reads a node's map: the store's own reader.
#[derive(Clone)]
pub enum Reader {
    Durable(DurableReader),
    Memory(KvReader),
}

impl Reader {
    pub fn get(&self, key: &str) -> Result<Option<String>, String> {
        match self {
            Reader::Durable(r) => r.get(key).map_err(|e| e.to_string()),
            Reader::Memory(r) => Ok(r.get(key)),
        }
    }
}

#[async_trait::async_trait]
impl<SM: StateMachine<Response = KvResponse>> StateMachine for SlowStore<SM> {
    type Response = KvResponse;

    async fn apply(&mut self, entries: &[Entry]) -> Vec<KvResponse> {
        let mut stuck = self.pace.stuck.subscribe();
        let _ = stuck.wait_for(|stuck| !*stuck).await;
        let slowest = self.pace.slowest_us.load(Ordering::Relaxed);
        if slowest > 0 {
            let us = self.pace.rng.lock().unwrap().below(slowest + 1);
            tokio::time::sleep(Duration::from_micros(us)).await;
        }
        self.inner.apply(entries).await
    }

    fn applied_index(&self) -> LogIndex {
        self.inner.applied_index()
    }

    async fn snapshot(&mut self) -> std::io::Result<Box<dyn SnapshotSource>> {
        self.inner.snapshot().await
    }

    fn failure(&self) -> Option<String> {
        self.inner.failure()
    }

    fn restore(&mut self, index: LogIndex, data: &mut dyn Read) -> std::io::Result<()> {
        self.inner.restore(index, data)
    }
}
