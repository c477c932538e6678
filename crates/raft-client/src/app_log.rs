//! [`AppLog`]: the application log `httpraft` serves (`/log`, `/v1/log`, the log stream)
//! and the changes its watchers follow, read from the one copy of every entry: the Raft
//! log, kept under [`crate::LogRetention::Keep`]. The key-value store
//! ([`crate::DurableStore`]) holds only the map and the indexes of commands that changed
//! nothing; a change a watcher sees is a command entry of the log that is not among them.
//!
//! A store written by an earlier format kept its own copy of the log and of the changes:
//! those rows, up to the index where this format took over
//! ([`DurableReader::history_start`]), are still served from it (read-only), so no history
//! is lost by the conversion.

use std::io;

use raft_core::{Entry, LogIndex};

use crate::durable_store::DurableReader;
use crate::handle::RaftNode;
use crate::kv::{KvCommand, KvEvent};
use crate::log_reader::LogReader;

/// Bytes of entries one event read looks at, at most.
const EVENT_READ_BYTES: u64 = 4 << 20;

/// The application log and its changes, read without the runtime: every call reads on the
/// caller's thread (call it from a blocking thread). Cheap to clone.
#[derive(Clone)]
pub struct AppLog {
    log: LogReader,
    store: DurableReader,
}

fn io_err(e: crate::Error) -> io::Error {
    io::Error::other(format!("the Raft log: {e}"))
}

impl AppLog {
    /// The log of `node`, whose state machine is the store `store` reads.
    pub fn new<R: Send + 'static>(node: &RaftNode<R>, store: DurableReader) -> Self {
        AppLog {
            log: node.log_reader(),
            store,
        }
    }

    /// The first index held: the oldest row an earlier format kept, or the Raft log's first
    /// entry (the next index to come when nothing is held).
    pub fn first_index(&self) -> io::Result<LogIndex> {
        let start = self.store.history_start();
        if let Some(first) = self.store.legacy_first()? {
            if first < start {
                return Ok(first);
            }
        }
        Ok(self.log.first_index().map_err(io_err)?.max(start))
    }

    /// Applied entries from `from` on (from the first held, if `from` is older), at most
    /// `limit` and `max_bytes` (at least one).
    pub fn read(&self, from: LogIndex, limit: usize, max_bytes: u64) -> io::Result<Vec<Entry>> {
        let start = self.store.history_start();
        if from < start {
            let rows = self.store.legacy_log(from, start, limit, max_bytes)?;
            if !rows.is_empty() {
                return Ok(rows);
            }
        }
        let applied = self.store.applied();
        self.log
            .read_upto(from.max(start), applied, limit as u64, max_bytes)
            .map_err(io_err)
    }

    /// The first revision from which every change can be read: changes need the log
    /// entries they come from.
    pub fn events_from(&self) -> io::Result<LogIndex> {
        let start = self.store.history_start();
        let first = self.log.first_index().map_err(io_err)?;
        if first > start {
            return Ok(first);
        }
        Ok(self.store.legacy_events_from()?.min(start))
    }

    /// The changes to keys starting with `prefix` at revisions `from..`, in order: at most
    /// `limit` of them, looking at no more than `scan` entries; and the revision to go on
    /// from.
    pub fn events(
        &self,
        from: LogIndex,
        prefix: &str,
        limit: usize,
        scan: usize,
    ) -> io::Result<(Vec<KvEvent>, LogIndex)> {
        let start = self.store.history_start();
        if from < start {
            let (events, next) = self.store.legacy_events(from, start, prefix, limit, scan)?;
            if !events.is_empty() || next < start {
                return Ok((events, next));
            }
        }
        let from = from.max(start);
        let applied = self.store.applied();
        let entries = self
            .log
            .read_upto(from, applied, scan.max(1) as u64, EVENT_READ_BYTES)
            .map_err(io_err)?;
        let (Some(lo), Some(hi)) = (entries.first(), entries.last()) else {
            return Ok((Vec::new(), from));
        };
        let unchanged = self.store.unchanged(lo.index, hi.index)?;
        let mut out = Vec::new();
        let mut next = from;
        for e in &entries {
            next = e.index + 1;
            let Some(cmd) = KvCommand::from_entry(e) else {
                continue;
            };
            if !cmd.key().starts_with(prefix) || unchanged.contains(&e.index) {
                continue;
            }
            out.push(KvEvent {
                revision: e.index,
                key: cmd.key().to_string(),
                value: cmd.new_value().map(str::to_string),
            });
            if out.len() >= limit {
                break;
            }
        }
        Ok((out, next))
    }
}

impl std::fmt::Debug for AppLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppLog")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}
