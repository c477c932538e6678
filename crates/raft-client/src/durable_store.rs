//! [`DurableStore`]: the key-value map of the application `httpraft` runs, kept on disk in
//! an embedded database (redb). The entries themselves have one home, the Raft log
//! (kept with [`crate::LogRetention::Keep`], read through [`crate::AppLog`]).
//!
//! - Memory does not grow with history: the map lives in the database file; memory is its
//!   page cache ([`DurableConfig::cache_bytes`]).
//! - Applying is one database transaction per batch, without a sync of its own: the state
//!   is made durable every [`DurableConfig::durable_every`] entries and before every
//!   snapshot, and after a crash the node replays the Raft log's entries after the last
//!   durable one (the log is never dropped past the latest snapshot).
//! - Besides the map, the store keeps the indexes of the commands that changed nothing (a
//!   refused conditional write, a delete of a missing key): every other command entry of
//!   the log is a change watchers see, so changes are not stored twice either.
//! - Snapshots are read transactions of the map (a consistent view while writes go on),
//!   streamed out: their size follows the map, not the history.
//! - A store of the earlier format also kept a copy of the log and of the changes: those
//!   rows stay, read-only, for the indexes before [`DurableReader::history_start`], and are
//!   served by [`crate::AppLog`]; nothing is written to them any more.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use raft_core::{Entry, EntryKind, LogIndex};
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use tokio::sync::watch;

use crate::kv::{KvCommand, KvEvent, KvResponse, Versioned};
use crate::state_machine::{SnapshotSource, StateMachine};

/// The log as the earlier format copied it (term, kind, payload by index): read-only, for
/// the indexes before [`HISTORY_START`].
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
/// The map as a build that kept no revisions stored it: moved into [`KV`] (at revision 0)
/// when such a store is opened.
const KV_UNVERSIONED: TableDefinition<&str, &str> = TableDefinition::new("kv");
/// The map: key → revision (8 bytes LE) and value.
const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv2");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The changes applied to the map as the earlier format copied them, for watchers: log
/// index → postcard `(key, value)` (a `None` value: deleted). Read-only, for the indexes
/// before [`HISTORY_START`].
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("kv_events");
/// The indexes of command entries that changed nothing (from [`HISTORY_START`] on).
const UNCHANGED: TableDefinition<u64, ()> = TableDefinition::new("kv_unchanged");
/// The first index from which [`EVENTS`] is complete.
const EVENTS_FROM: &str = "events_from";
/// The first index whose entry is in the Raft log only (this format took over there).
const HISTORY_START: &str = "history_start";
const APPLIED: &str = "applied";

/// Settings of a [`DurableStore`].
#[derive(Clone, Debug)]
pub struct DurableConfig {
    /// Make the state durable at least every this many applied entries. Default 10,000.
    pub durable_every: u64,
    /// The database's page cache. Default 64 MiB.
    pub cache_bytes: usize,
}

impl Default for DurableConfig {
    fn default() -> Self {
        DurableConfig {
            durable_every: 10_000,
            cache_bytes: 64 << 20,
        }
    }
}

fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("application store: {e}"))
}

fn kind_of(c: u8) -> Option<EntryKind> {
    Some(match c {
        0 => EntryKind::Normal,
        1 => EntryKind::Noop,
        2 => EntryKind::Config,
        3 => EntryKind::Command,
        4 => EntryKind::ClusterVersion,
        _ => return None,
    })
}

/// The largest record of a snapshot (a key with its value; a log row, in a snapshot of the
/// earlier format): larger than any entry a node accepts.
const MAX_SNAPSHOT_RECORD: u32 = 1 << 30;

fn encode_versioned(v: &Versioned) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + v.value.len());
    out.extend_from_slice(&v.revision.to_le_bytes());
    out.extend_from_slice(v.value.as_bytes());
    out
}

fn decode_versioned(key: &str, row: &[u8]) -> std::io::Result<Versioned> {
    let damaged = || io_err(format!("the map's row for key {key:?} is damaged"));
    let (rev, value) = row.split_at_checked(8).ok_or_else(damaged)?;
    let mut r = [0u8; 8];
    r.copy_from_slice(rev);
    Ok(Versioned {
        value: String::from_utf8(value.to_vec()).map_err(|_| damaged())?,
        revision: u64::from_le_bytes(r),
    })
}

/// Moves a map stored without revisions into the versioned table, each key at revision 0
/// (as every build applies the commands of that format), and drops the old table.
fn migrate_unversioned(txn: &redb::WriteTransaction) -> std::io::Result<u64> {
    let mut moved = 0u64;
    {
        let old = txn.open_table(KV_UNVERSIONED).map_err(io_err)?;
        let mut kv = txn.open_table(KV).map_err(io_err)?;
        for row in old.iter().map_err(io_err)? {
            let (k, v) = row.map_err(io_err)?;
            let row = encode_versioned(&Versioned {
                value: v.value().to_string(),
                revision: 0,
            });
            kv.insert(k.value(), row.as_slice()).map_err(io_err)?;
            moved += 1;
        }
    }
    txn.delete_table(KV_UNVERSIONED).map_err(io_err)?;
    Ok(moved)
}

fn decode_row(index: u64, row: &[u8]) -> std::io::Result<Entry> {
    if row.len() < 9 {
        return Err(io_err(format!("log row {index} is damaged")));
    }
    let mut term = [0u8; 8];
    term.copy_from_slice(&row[..8]);
    let kind = kind_of(row[8]).ok_or_else(|| io_err(format!("log row {index} has no kind")))?;
    Ok(Entry {
        term: u64::from_le_bytes(term),
        index,
        kind,
        data: Bytes::copy_from_slice(&row[9..]),
    })
}

/// The database settings of a store: its cache, and a warning (once) when it was not closed
/// cleanly and is being repaired.
fn builder(cfg: &DurableConfig, shown: String) -> redb::Builder {
    let logged = std::cell::Cell::new(false);
    let mut b = Database::builder();
    b.set_cache_size(cfg.cache_bytes)
        .set_repair_callback(move |session| {
            if !logged.replace(true) {
                tracing::warn!(
                    store = %shown,
                    progress = session.progress(),
                    "the application store was not closed cleanly: repairing it"
                );
            }
        });
    b
}

/// The application's key-value map on disk: the state machine `httpraft` runs. Command
/// entries change the map; every entry stays in the Raft log.
pub struct DurableStore {
    db: Arc<Database>,
    cfg: DurableConfig,
    /// What the database reflects (durably or not); watchers are told when it moves.
    applied: Arc<watch::Sender<LogIndex>>,
    /// [`HISTORY_START`] as the database holds it (set at open, moved by a restore): read
    /// on every log read, so kept here instead of in a read transaction each time.
    history_start: Arc<AtomicU64>,
    /// What is durable at open: the runtime replays from after it.
    durable_at_open: LogIndex,
    /// Entries applied since the last durable commit.
    since_durable: u64,
    /// Set when the database failed: nothing is applied any more.
    failed: Option<String>,
}

/// A read handle on a [`DurableStore`]: the map and the applied index. Cheap to
/// clone; reads are database read transactions (each a consistent view) and may block
/// briefly on disk, so call them from a blocking thread when reading much.
#[derive(Clone)]
pub struct DurableReader {
    db: Arc<Database>,
    applied: Arc<watch::Sender<LogIndex>>,
    history_start: Arc<AtomicU64>,
}

impl DurableStore {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path, cfg: DurableConfig) -> std::io::Result<Self> {
        // An empty file, private whatever the umask, which redb then initialises.
        match raft_storage::private::file_options()
            .write(true)
            .create_new(true)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let db = builder(&cfg, path.display().to_string())
            .create(path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    format!(
                        "application store {} is in use by another process",
                        path.display()
                    ),
                ),
                e => io_err(e),
            })?;
        Self::on(db, cfg)
    }

    /// Opens (or creates) the store on `backend`, any storage redb can use in place of a
    /// file (the node simulator's disk, which loses what was not synced when it crashes).
    pub fn open_on(
        backend: impl redb::StorageBackend,
        cfg: DurableConfig,
    ) -> std::io::Result<Self> {
        let db = builder(&cfg, "the store's backend".into())
            .create_with_backend(backend)
            .map_err(io_err)?;
        Self::on(db, cfg)
    }

    /// Sets up the tables of a database just opened, and takes it over.
    fn on(db: Database, cfg: DurableConfig) -> std::io::Result<Self> {
        let mut txn = db.begin_write().map_err(io_err)?;
        // Every durable commit saves the allocator state (quick repair), this one included:
        // the last durable commit decides how long the next start after a crash takes.
        txn.set_quick_repair(true);
        {
            txn.open_table(LOG).map_err(io_err)?;
            txn.open_table(KV).map_err(io_err)?;
            txn.open_table(EVENTS).map_err(io_err)?;
            txn.open_table(UNCHANGED).map_err(io_err)?;
            let mut meta = txn.open_table(META).map_err(io_err)?;
            let applied = meta.get(APPLIED).map_err(io_err)?.map_or(0, |v| v.value());
            if meta.get(EVENTS_FROM).map_err(io_err)?.is_none() {
                // A new store, or one of a build that kept no events: complete from here.
                meta.insert(EVENTS_FROM, applied + 1).map_err(io_err)?;
            }
            if meta.get(HISTORY_START).map_err(io_err)?.is_none() {
                // A new store, or the first start of this format on an earlier one: the
                // entries after what it holds are in the Raft log only (the node replays
                // them from there), the rows it copied before stay where they are. One
                // transaction: an interrupted conversion is no conversion, and runs again.
                meta.insert(HISTORY_START, applied + 1).map_err(io_err)?;
                if applied > 0 {
                    tracing::info!(
                        from = applied + 1,
                        "the application store keeps no copy of the log from here on: the Raft log is its only copy"
                    );
                }
            }
        }
        let moved = migrate_unversioned(&txn)?;
        txn.commit().map_err(io_err)?;
        if moved > 0 {
            tracing::info!(
                keys = moved,
                "the application store kept no revisions: its keys are now at revision 0"
            );
        }
        let (applied, history_start) = {
            let r = db.begin_read().map_err(io_err)?;
            let meta = r.open_table(META).map_err(io_err)?;
            let get = |key| -> std::io::Result<Option<u64>> {
                Ok(meta.get(key).map_err(io_err)?.map(|v| v.value()))
            };
            (get(APPLIED)?.unwrap_or(0), get(HISTORY_START)?.unwrap_or(1))
        };
        Ok(DurableStore {
            db: Arc::new(db),
            cfg,
            applied: Arc::new(watch::Sender::new(applied)),
            history_start: Arc::new(AtomicU64::new(history_start)),
            durable_at_open: applied,
            since_durable: 0,
            failed: None,
        })
    }

    /// A handle to read the map and the log.
    pub fn reader(&self) -> DurableReader {
        DurableReader {
            db: self.db.clone(),
            applied: self.applied.clone(),
            history_start: self.history_start.clone(),
        }
    }

    /// Applies `entries` in one transaction, durable when due; the responses.
    fn apply_blocking(&mut self, entries: &[Entry]) -> std::io::Result<Vec<KvResponse>> {
        let mut txn = self.db.begin_write().map_err(io_err)?;
        self.since_durable += entries.len() as u64;
        let durable = self.since_durable >= self.cfg.durable_every.max(1);
        txn.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        })
        .map_err(io_err)?;
        // Durable commits record the allocator state, so opening the store after a crash
        // takes milliseconds instead of a walk over the whole file (which grows with the
        // history kept).
        txn.set_quick_repair(durable);
        let mut out = Vec::with_capacity(entries.len());
        {
            let mut kv = txn.open_table(KV).map_err(io_err)?;
            let mut unchanged = txn.open_table(UNCHANGED).map_err(io_err)?;
            let mut meta = txn.open_table(META).map_err(io_err)?;
            for e in entries {
                let response = match KvCommand::from_entry(e) {
                    Some(cmd) => {
                        let key = cmd.key();
                        let current = match kv.get(key).map_err(io_err)? {
                            Some(row) => Some(decode_versioned(key, row.value())?),
                            None => None,
                        };
                        let outcome = cmd.decide(e.index, current.as_ref());
                        let changed = match outcome.write {
                            Some(Some(new)) => {
                                kv.insert(key, encode_versioned(&new).as_slice())
                                    .map_err(io_err)?;
                                true
                            }
                            Some(None) if current.is_some() => {
                                kv.remove(key).map_err(io_err)?;
                                true
                            }
                            Some(None) | None => false,
                        };
                        if !changed {
                            // Watchers skip it; every other command is a change.
                            unchanged.insert(e.index, ()).map_err(io_err)?;
                        }
                        outcome.response
                    }
                    None => KvResponse::NotACommand,
                };
                out.push(response);
            }
            if let Some(last) = entries.last() {
                meta.insert(APPLIED, last.index).map_err(io_err)?;
            }
        }
        txn.commit().map_err(io_err)?;
        if durable {
            self.since_durable = 0;
        }
        if let Some(last) = entries.last() {
            self.applied.send_replace(last.index);
        }
        Ok(out)
    }

    /// Makes everything applied so far durable.
    fn make_durable(&mut self) -> std::io::Result<()> {
        let mut txn = self.db.begin_write().map_err(io_err)?;
        txn.set_durability(Durability::Immediate).map_err(io_err)?;
        txn.set_quick_repair(true);
        txn.commit().map_err(io_err)?;
        self.since_durable = 0;
        Ok(())
    }
}

#[async_trait]
impl StateMachine for DurableStore {
    type Response = KvResponse;

    async fn apply(&mut self, entries: &[Entry]) -> Vec<KvResponse> {
        if self.failed.is_some() {
            return Vec::new();
        }
        match crate::exec::block_in_place(|| self.apply_blocking(entries)) {
            Ok(out) => out,
            Err(e) => {
                // Nothing can be applied any more: the node stops (see `failure`).
                tracing::error!(error = %e, "the application store failed");
                self.failed = Some(e.to_string());
                Vec::new()
            }
        }
    }

    fn failure(&self) -> Option<String> {
        self.failed.clone()
    }

    fn applied_index(&self) -> LogIndex {
        self.durable_at_open
    }

    async fn snapshot(&mut self) -> std::io::Result<Box<dyn SnapshotSource>> {
        if let Some(why) = &self.failed {
            return Err(std::io::Error::other(why.clone()));
        }
        let copied = crate::exec::block_in_place(|| self.make_durable())
            .and_then(|()| self.db.begin_read().map_err(io_err));
        match copied {
            Ok(txn) => Ok(Box::new(DurableSnapshot { txn })),
            Err(e) => {
                // The database failed to commit or read: as with a failed apply, nothing
                // more can be trusted to it, and the node stops (see `failure`).
                tracing::error!(error = %e, "the application store failed");
                self.failed = Some(e.to_string());
                Err(e)
            }
        }
    }

    fn restore(&mut self, index: LogIndex, data: &mut dyn Read) -> std::io::Result<()> {
        let mut txn = self.db.begin_write().map_err(io_err)?;
        txn.set_durability(Durability::Immediate).map_err(io_err)?;
        txn.set_quick_repair(true);
        txn.delete_table(LOG).map_err(io_err)?;
        txn.delete_table(KV).map_err(io_err)?;
        txn.delete_table(EVENTS).map_err(io_err)?;
        txn.delete_table(UNCHANGED).map_err(io_err)?;
        {
            let mut log = txn.open_table(LOG).map_err(io_err)?;
            let mut kv = txn.open_table(KV).map_err(io_err)?;
            let mut events = txn.open_table(EVENTS).map_err(io_err)?;
            txn.open_table(UNCHANGED).map_err(io_err)?;
            let mut meta = txn.open_table(META).map_err(io_err)?;
            // A snapshot without events (from an earlier build) has no history to watch.
            let mut events_from = index + 1;
            let mut buf = Vec::new();
            loop {
                let mut tag = [0u8; 1];
                data.read_exact(&mut tag)?;
                match tag[0] {
                    0 => break,
                    1..=5 => {
                        let mut len = [0u8; 4];
                        data.read_exact(&mut len)?;
                        let len = u32::from_le_bytes(len);
                        if len > MAX_SNAPSHOT_RECORD {
                            return Err(io_err(format!(
                                "a snapshot record of {len} bytes (at most {MAX_SNAPSHOT_RECORD})"
                            )));
                        }
                        crate::snapshot_store::read_record(data, len, &mut buf)?;
                        if tag[0] == 1 {
                            // The earlier format's copy of the log: kept as it kept it.
                            let (index, row): (u64, &[u8]) =
                                postcard::from_bytes(&buf).map_err(io_err)?;
                            log.insert(index, row).map_err(io_err)?;
                        } else if tag[0] == 4 {
                            let (index, row): (u64, &[u8]) =
                                postcard::from_bytes(&buf).map_err(io_err)?;
                            events.insert(index, row).map_err(io_err)?;
                        } else if tag[0] == 5 {
                            events_from = postcard::from_bytes(&buf).map_err(io_err)?;
                        } else {
                            // 2: a pair from a build that kept no revisions; 3: versioned.
                            let (k, value, revision): (&str, &str, u64) = if tag[0] == 2 {
                                let (k, v) = postcard::from_bytes(&buf).map_err(io_err)?;
                                (k, v, 0)
                            } else {
                                postcard::from_bytes(&buf).map_err(io_err)?
                            };
                            let row = encode_versioned(&Versioned {
                                value: value.to_string(),
                                revision,
                            });
                            kv.insert(k, row.as_slice()).map_err(io_err)?;
                        }
                    }
                    t => return Err(io_err(format!("unknown snapshot record {t}"))),
                }
            }
            meta.insert(APPLIED, index).map_err(io_err)?;
            meta.insert(EVENTS_FROM, events_from).map_err(io_err)?;
            // The node's Raft log resumes after the snapshot.
            meta.insert(HISTORY_START, index + 1).map_err(io_err)?;
        }
        txn.commit().map_err(io_err)?;
        self.history_start.store(index + 1, Ordering::Release);
        self.applied.send_replace(index);
        self.since_durable = 0;
        Ok(())
    }
}

/// A consistent view of the map, streamed as records: `3` map entries (key, value,
/// revision), `0` the end. (Snapshots of the earlier format also held `5` the index from
/// which events are kept, `1` log rows and `4` events; `2`, map pairs without revisions, is
/// from a build before that: all are read by [`DurableStore::restore`].)
struct DurableSnapshot {
    txn: redb::ReadTransaction,
}

impl SnapshotSource for DurableSnapshot {
    fn write_to(self: Box<Self>, out: &mut dyn Write) -> std::io::Result<()> {
        let mut buf = Vec::new();
        let kv = self.txn.open_table(KV).map_err(io_err)?;
        for row in kv.iter().map_err(io_err)? {
            let (k, v) = row.map_err(io_err)?;
            let v = decode_versioned(k.value(), v.value())?;
            buf.clear();
            buf = postcard::to_extend(
                &(k.value(), v.value.as_str(), v.revision),
                std::mem::take(&mut buf),
            )
            .map_err(io_err)?;
            out.write_all(&[3])?;
            out.write_all(&(buf.len() as u32).to_le_bytes())?;
            out.write_all(&buf)?;
        }
        out.write_all(&[0])
    }
}

impl DurableReader {
    /// The value of `key` as of the applied index.
    pub fn get(&self, key: &str) -> std::io::Result<Option<String>> {
        Ok(self.get_versioned(key)?.map(|v| v.value))
    }

    /// The value of `key` and its revision, as of the applied index.
    pub fn get_versioned(&self, key: &str) -> std::io::Result<Option<Versioned>> {
        let r = self.db.begin_read().map_err(io_err)?;
        let kv = r.open_table(KV).map_err(io_err)?;
        let v = kv.get(key).map_err(io_err)?;
        v.map(|v| decode_versioned(key, v.value())).transpose()
    }

    /// The keys starting with `prefix`, in order, with their values and revisions: at
    /// most `limit`, and whether more follow.
    pub fn list(
        &self,
        prefix: &str,
        limit: usize,
    ) -> std::io::Result<(Vec<(String, Versioned)>, bool)> {
        self.list_from(prefix, None, limit)
    }

    /// Like [`list`](Self::list), starting after the key `after` (to page through).
    pub fn list_from(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> std::io::Result<(Vec<(String, Versioned)>, bool)> {
        let r = self.db.begin_read().map_err(io_err)?;
        let kv = r.open_table(KV).map_err(io_err)?;
        let mut out = Vec::new();
        let start = match after {
            Some(a) if a >= prefix => a,
            _ => prefix,
        };
        for row in kv.range(start..).map_err(io_err)? {
            let (k, v) = row.map_err(io_err)?;
            let key = k.value();
            if Some(key) == after {
                continue;
            }
            if !key.starts_with(prefix) {
                break;
            }
            if out.len() >= limit {
                return Ok((out, true));
            }
            out.push((key.to_string(), decode_versioned(key, v.value())?));
        }
        Ok((out, false))
    }

    /// The first index whose entry this store never copied: from there on, the Raft log
    /// is the only copy (before it, the rows of the earlier format, if any).
    pub fn history_start(&self) -> LogIndex {
        self.history_start.load(Ordering::Acquire)
    }

    /// The first index from which the earlier format's changes are complete.
    pub(crate) fn legacy_events_from(&self) -> std::io::Result<LogIndex> {
        let r = self.db.begin_read().map_err(io_err)?;
        let meta = r.open_table(META).map_err(io_err)?;
        let v = meta
            .get(EVENTS_FROM)
            .map_err(io_err)?
            .map_or(1, |v| v.value());
        Ok(v)
    }

    /// The oldest log row of the earlier format, if any is kept.
    pub(crate) fn legacy_first(&self) -> std::io::Result<Option<LogIndex>> {
        let r = self.db.begin_read().map_err(io_err)?;
        let log = r.open_table(LOG).map_err(io_err)?;
        let first = log.first().map_err(io_err)?.map(|(k, _)| k.value());
        Ok(first)
    }

    /// The earlier format's log rows in `from..to`, at most `limit` and `max_bytes` (at
    /// least one).
    pub(crate) fn legacy_log(
        &self,
        from: LogIndex,
        to: LogIndex,
        limit: usize,
        max_bytes: u64,
    ) -> std::io::Result<Vec<Entry>> {
        let r = self.db.begin_read().map_err(io_err)?;
        let log = r.open_table(LOG).map_err(io_err)?;
        let mut out = Vec::new();
        let mut size = 0u64;
        for row in log.range(from..to).map_err(io_err)? {
            if out.len() >= limit.max(1) {
                break;
            }
            let (k, v) = row.map_err(io_err)?;
            let e = decode_row(k.value(), v.value())?;
            size += e.size();
            if size > max_bytes && !out.is_empty() {
                break;
            }
            out.push(e);
        }
        Ok(out)
    }

    /// The earlier format's changes to keys starting with `prefix` at revisions
    /// `from..to`: at most `limit`, looking at no more than `scan` rows; and the revision
    /// to go on from.
    pub(crate) fn legacy_events(
        &self,
        from: LogIndex,
        to: LogIndex,
        prefix: &str,
        limit: usize,
        scan: usize,
    ) -> std::io::Result<(Vec<KvEvent>, LogIndex)> {
        let r = self.db.begin_read().map_err(io_err)?;
        let events = r.open_table(EVENTS).map_err(io_err)?;
        let mut out = Vec::new();
        let mut next = from;
        for (seen, row) in events.range(from..to).map_err(io_err)?.enumerate() {
            if seen >= scan.max(1) {
                return Ok((out, next));
            }
            let (k, v) = row.map_err(io_err)?;
            let revision = k.value();
            let (key, value): (String, Option<String>) =
                postcard::from_bytes(v.value()).map_err(io_err)?;
            next = revision + 1;
            if key.starts_with(prefix) {
                out.push(KvEvent {
                    revision,
                    key,
                    value,
                });
                if out.len() >= limit {
                    return Ok((out, next));
                }
            }
        }
        // Every row before `to` was seen.
        Ok((out, to))
    }

    /// The indexes in `lo..=hi` of command entries that changed nothing.
    pub(crate) fn unchanged(
        &self,
        lo: LogIndex,
        hi: LogIndex,
    ) -> std::io::Result<std::collections::BTreeSet<LogIndex>> {
        let r = self.db.begin_read().map_err(io_err)?;
        let t = r.open_table(UNCHANGED).map_err(io_err)?;
        let mut out = std::collections::BTreeSet::new();
        for row in t.range(lo..=hi).map_err(io_err)? {
            out.insert(row.map_err(io_err)?.0.value());
        }
        Ok(out)
    }

    /// A receiver told each time the applied index moves.
    pub fn watch_applied(&self) -> tokio::sync::watch::Receiver<LogIndex> {
        self.applied.subscribe()
    }

    /// The number of keys.
    pub fn len(&self) -> std::io::Result<u64> {
        let r = self.db.begin_read().map_err(io_err)?;
        let kv = r.open_table(KV).map_err(io_err)?;
        kv.len().map_err(io_err)
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> std::io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// The highest index applied.
    pub fn applied(&self) -> LogIndex {
        *self.applied.borrow()
    }
}

impl std::fmt::Debug for DurableStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableStore")
            .field("applied", &*self.applied.borrow())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for DurableReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableReader")
            .field("applied", &*self.applied.borrow())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn cmd(index: u64, c: &KvCommand) -> Entry {
        Entry {
            term: 1,
            index,
            kind: EntryKind::Command,
            data: c.encode().unwrap(),
        }
    }

    fn put(index: u64, k: &str, v: &str) -> Entry {
        cmd(index, &KvCommand::put(k, v))
    }

    /// A database file in memory whose writes and syncs start failing on demand, and
    /// which records every write and length change, so that a test can rebuild the file as
    /// a crash after any of them left it.
    #[derive(Debug, Default)]
    struct Failing {
        data: std::sync::Mutex<Vec<u8>>,
        failing: std::sync::atomic::AtomicBool,
        /// A write at the offset, or (no bytes) a change of length to it.
        ops: std::sync::Mutex<Vec<(u64, Option<Vec<u8>>)>>,
    }

    impl Failing {
        /// A disk holding `data`.
        fn holding(data: Vec<u8>) -> Arc<Self> {
            Arc::new(Failing {
                data: std::sync::Mutex::new(data),
                ..Failing::default()
            })
        }
    }

    #[derive(Debug)]
    struct FailingFile(Arc<Failing>);

    impl FailingFile {
        fn check(&self) -> std::io::Result<()> {
            if self.0.failing.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(std::io::Error::from_raw_os_error(5)); // EIO
            }
            Ok(())
        }

        fn record(&self, at: u64, bytes: Option<&[u8]>) -> std::io::Result<()> {
            self.check()?;
            self.0
                .ops
                .lock()
                .unwrap()
                .push((at, bytes.map(<[u8]>::to_vec)));
            apply_op(&mut self.0.data.lock().unwrap(), at, bytes);
            Ok(())
        }
    }

    /// A write at `at`, or (no bytes) a change of length to `at`.
    fn apply_op(d: &mut Vec<u8>, at: u64, bytes: Option<&[u8]>) {
        match bytes {
            None => d.resize(at as usize, 0),
            Some(b) => {
                let end = at as usize + b.len();
                if d.len() < end {
                    d.resize(end, 0);
                }
                d[at as usize..end].copy_from_slice(b);
            }
        }
    }

    impl redb::StorageBackend for FailingFile {
        fn len(&self) -> std::io::Result<u64> {
            Ok(self.0.data.lock().unwrap().len() as u64)
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
            let d = self.0.data.lock().unwrap();
            let at = offset as usize;
            let bytes = d
                .get(at..at + out.len())
                .ok_or(std::io::ErrorKind::UnexpectedEof)?;
            out.copy_from_slice(bytes);
            Ok(())
        }
        fn set_len(&self, len: u64) -> std::io::Result<()> {
            self.record(len, None)
        }
        fn sync_data(&self) -> std::io::Result<()> {
            self.check()
        }
        fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
            self.record(offset, Some(data))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_store_whose_disk_fails_while_copying_a_snapshot_fails_for_good() {
        let disk = Arc::new(Failing::default());
        let mut s =
            DurableStore::open_on(FailingFile(disk.clone()), DurableConfig::default()).unwrap();
        s.apply(&[put(1, "a", "1")]).await;
        assert_eq!(s.failure(), None);
        disk.failing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(
            s.snapshot().await.is_err(),
            "the copy needs a durable commit"
        );
        let why = s
            .failure()
            .expect("the store is failed, and the node will stop");
        assert!(why.contains("application store"), "{why}");
        // The disk recovering does not bring this database object back.
        disk.failing
            .store(false, std::sync::atomic::Ordering::SeqCst);
        assert!(s.snapshot().await.is_err());
        assert!(s.apply(&[put(2, "b", "2")]).await.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn entries_and_the_map_survive_reopening_from_the_last_durable_point() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.redb");
        let cfg = DurableConfig {
            durable_every: 2,
            ..DurableConfig::default()
        };
        {
            let mut s = DurableStore::open(&path, cfg.clone()).unwrap();
            let r = s
                .apply(&[put(1, "a", "1"), Entry::normal(1, 2, &b"text"[..])])
                .await;
            assert_eq!(
                r[0],
                KvResponse::Applied {
                    previous: None,
                    revision: 1
                }
            );
            assert_eq!(r[1], KvResponse::NotACommand);
            s.apply(&[put(3, "a", "2")]).await;
        }
        let s = DurableStore::open(&path, cfg).unwrap();
        // The batch of 2 was made durable; whatever came after may or may not be.
        assert!(s.applied_index() >= 2);
        let r = s.reader();
        assert!(r.get("a").unwrap().is_some());
        assert_eq!(r.history_start(), 1, "a new store never copied the log");
        assert_eq!(r.legacy_first().unwrap(), None, "nor does it now");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_store_without_revisions_is_migrated_with_its_keys_at_revision_zero() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.redb");
        {
            // The layout of a build that kept no revisions.
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut kv = txn.open_table(KV_UNVERSIONED).unwrap();
                kv.insert("old", "value").unwrap();
                let mut meta = txn.open_table(META).unwrap();
                meta.insert(APPLIED, 5).unwrap();
            }
            txn.commit().unwrap();
        }
        let durable = DurableConfig {
            durable_every: 1,
            ..DurableConfig::default()
        };
        let mut s = DurableStore::open(&path, durable.clone()).unwrap();
        let r = s.reader();
        assert_eq!(
            r.get_versioned("old").unwrap(),
            Some(Versioned {
                value: "value".into(),
                revision: 0
            })
        );
        let cas = KvCommand::Put {
            key: "old".into(),
            value: "new".into(),
            expect: Some(crate::kv::Expect::value("value")),
        };
        s.apply(&[cmd(6, &cas)]).await;
        assert_eq!(r.get_versioned("old").unwrap().map(|v| v.revision), Some(6));
        drop((s, r));
        let r = DurableStore::open(&path, durable).unwrap().reader();
        assert_eq!(r.get("old").unwrap(), Some("new".into()), "migrated once");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snapshot_holds_the_map_not_the_history() {
        let dir = tempfile::tempdir().unwrap();
        let mut s =
            DurableStore::open(&dir.path().join("a.redb"), DurableConfig::default()).unwrap();
        // 2,000 writes to 10 keys.
        let entries: Vec<Entry> = (1..=2_000)
            .map(|i| put(i, &format!("k{}", i % 10), &format!("value {i}")))
            .collect();
        s.apply(&entries).await;
        let r = s.reader();
        assert_eq!(r.len().unwrap(), 10);
        let snap = s.snapshot().await.unwrap();
        s.apply(&[put(2_001, "late", "x")]).await;
        let mut bytes = Vec::new();
        snap.write_to(&mut bytes).unwrap();
        assert!(bytes.len() < 500, "10 keys: {} bytes", bytes.len());
        let mut t =
            DurableStore::open(&dir.path().join("b.redb"), DurableConfig::default()).unwrap();
        t.apply(&[put(1, "stale", "y")]).await;
        t.restore(2_000, &mut &bytes[..]).unwrap();
        let tr = t.reader();
        assert_eq!(tr.applied(), 2_000);
        assert_eq!(
            tr.get("stale").unwrap(),
            None,
            "the restore replaced everything"
        );
        assert_eq!(tr.get("late").unwrap(), None, "as of the snapshot");
        assert_eq!(tr.len().unwrap(), 10);
        assert_eq!(
            tr.get_versioned("k4").unwrap(),
            Some(Versioned {
                value: "value 1994".into(),
                revision: 1994
            })
        );
        assert_eq!(
            tr.history_start(),
            2_001,
            "the node's Raft log resumes after the snapshot"
        );
        assert!(t.restore(3, &mut &bytes[..7]).is_err(), "a cut snapshot");
    }

    /// An earlier format's log row: term (8 bytes LE), kind (1 byte), payload.
    fn legacy_row(e: &Entry) -> Vec<u8> {
        let mut v = e.term.to_le_bytes().to_vec();
        v.push(match e.kind {
            EntryKind::Normal => 0,
            EntryKind::Command => 3,
            _ => 1,
        });
        v.extend_from_slice(&e.data);
        v
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_store_of_the_earlier_format_keeps_its_copies_readable_and_makes_no_more() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.redb");
        let old: Vec<Entry> = vec![
            put(1, "a", "1"),
            Entry::normal(1, 2, &b"text"[..]),
            put(3, "b", "2"),
        ];
        {
            // The earlier layout: the log and the changes copied, no history start.
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut log = txn.open_table(LOG).unwrap();
                for e in &old {
                    log.insert(e.index, legacy_row(e).as_slice()).unwrap();
                }
                let mut kv = txn.open_table(KV).unwrap();
                for (k, v, rev) in [("a", "1", 1), ("b", "2", 3)] {
                    let row = encode_versioned(&Versioned {
                        value: v.into(),
                        revision: rev,
                    });
                    kv.insert(k, row.as_slice()).unwrap();
                }
                let mut events = txn.open_table(EVENTS).unwrap();
                for (i, k, v) in [(1u64, "a", "1"), (3, "b", "2")] {
                    let row = postcard::to_allocvec(&(k, Some(v))).unwrap();
                    events.insert(i, row.as_slice()).unwrap();
                }
                let mut meta = txn.open_table(META).unwrap();
                meta.insert(APPLIED, 3).unwrap();
                meta.insert(EVENTS_FROM, 1).unwrap();
            }
            txn.commit().unwrap();
        }
        let durable = DurableConfig {
            durable_every: 1,
            ..DurableConfig::default()
        };
        let mut s = DurableStore::open(&path, durable.clone()).unwrap();
        let r = s.reader();
        assert_eq!(r.history_start(), 4, "converted where it stood");
        assert_eq!(r.legacy_log(1, 4, 10, u64::MAX).unwrap(), old);
        s.apply(&[put(4, "a", "3"), cmd(5, &KvCommand::delete("none"))])
            .await;
        assert_eq!(
            r.legacy_log(1, 100, 10, u64::MAX).unwrap().len(),
            3,
            "nothing more is copied"
        );
        let (events, next) = r.legacy_events(1, 4, "", 10, 100).unwrap();
        assert_eq!(
            events.iter().map(|e| e.revision).collect::<Vec<_>>(),
            [1, 3]
        );
        assert_eq!(next, 4);
        assert_eq!(
            r.unchanged(4, 5).unwrap().into_iter().collect::<Vec<_>>(),
            [5]
        );
        drop((s, r));
        let r = DurableStore::open(&path, durable).unwrap().reader();
        assert_eq!(r.history_start(), 4, "converted once");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_conversion_cut_short_by_a_crash_at_any_write_is_done_again_on_the_next_open() {
        // The earlier layout on a recorded disk: copies of the log and the changes.
        let disk = Arc::new(Failing::default());
        {
            let db = Database::builder()
                .create_with_backend(FailingFile(disk.clone()))
                .unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut log = txn.open_table(LOG).unwrap();
                let mut kv = txn.open_table(KV).unwrap();
                let mut events = txn.open_table(EVENTS).unwrap();
                for i in 1..=50u64 {
                    let e = put(i, &format!("k{i}"), "v");
                    log.insert(i, legacy_row(&e).as_slice()).unwrap();
                    let row = encode_versioned(&Versioned {
                        value: "v".into(),
                        revision: i,
                    });
                    kv.insert(format!("k{i}").as_str(), row.as_slice()).unwrap();
                    let change = postcard::to_allocvec(&(format!("k{i}"), Some("v"))).unwrap();
                    events.insert(i, change.as_slice()).unwrap();
                }
                let mut meta = txn.open_table(META).unwrap();
                meta.insert(APPLIED, 50).unwrap();
                meta.insert(EVENTS_FROM, 1).unwrap();
            }
            txn.commit().unwrap();
        }
        let before = disk.data.lock().unwrap().clone();
        disk.ops.lock().unwrap().clear();
        // The conversion, recorded.
        drop(DurableStore::open_on(FailingFile(disk.clone()), DurableConfig::default()).unwrap());
        let ops = disk.ops.lock().unwrap().clone();
        assert!(!ops.is_empty(), "the conversion writes");
        // A crash after each of its writes: the next open converts, and loses nothing.
        for cut in 0..=ops.len() {
            let mut image = before.clone();
            for (at, bytes) in &ops[..cut] {
                apply_op(&mut image, *at, bytes.as_deref());
            }
            let crashed = Failing::holding(image);
            let store = DurableStore::open_on(FailingFile(crashed), DurableConfig::default())
                .unwrap_or_else(|e| panic!("after a crash at write {cut}: {e}"));
            let r = store.reader();
            assert_eq!(r.history_start(), 51, "crash at write {cut}");
            assert_eq!(r.applied(), 50);
            assert_eq!(r.len().unwrap(), 50);
            assert_eq!(r.legacy_log(1, 51, 100, u64::MAX).unwrap().len(), 50);
            assert_eq!(r.legacy_events(1, 51, "", 100, 100).unwrap().0.len(), 50);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snapshot_of_the_earlier_format_restores_its_copies_as_history() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = Vec::new();
        let record = |out: &mut Vec<u8>, tag: u8, body: Vec<u8>| {
            out.push(tag);
            out.extend_from_slice(&(body.len() as u32).to_le_bytes());
            out.extend_from_slice(&body);
        };
        let e = put(7, "k", "v");
        record(&mut bytes, 5, postcard::to_allocvec(&6u64).unwrap());
        record(
            &mut bytes,
            1,
            postcard::to_allocvec(&(7u64, legacy_row(&e).as_slice())).unwrap(),
        );
        record(
            &mut bytes,
            3,
            postcard::to_allocvec(&("k", "v", 7u64)).unwrap(),
        );
        record(
            &mut bytes,
            4,
            postcard::to_allocvec(&(
                7u64,
                postcard::to_allocvec(&("k", Some("v"))).unwrap().as_slice(),
            ))
            .unwrap(),
        );
        bytes.push(0);
        let mut t =
            DurableStore::open(&dir.path().join("b.redb"), DurableConfig::default()).unwrap();
        t.restore(7, &mut &bytes[..]).unwrap();
        let r = t.reader();
        assert_eq!(r.get("k").unwrap(), Some("v".into()));
        assert_eq!(r.history_start(), 8);
        assert_eq!(r.legacy_log(1, 8, 10, u64::MAX).unwrap(), vec![e]);
        assert_eq!(r.legacy_events_from().unwrap(), 6);
        assert_eq!(r.legacy_events(1, 8, "", 10, 100).unwrap().0.len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commands_that_change_nothing_are_noted_and_keys_are_listed_by_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let mut s =
            DurableStore::open(&dir.path().join("a.redb"), DurableConfig::default()).unwrap();
        let r = s.reader();
        let mut applied = r.watch_applied();
        let refused = KvCommand::Put {
            key: "app/a".into(),
            value: "x".into(),
            expect: Some(crate::kv::Expect::value("nope")),
        };
        s.apply(&[
            put(1, "app/a", "1"),
            put(2, "other", "1"),
            cmd(3, &refused),
            cmd(4, &KvCommand::delete("app/missing")),
            put(5, "app/b", "2"),
            cmd(6, &KvCommand::delete("app/a")),
            Entry::normal(1, 7, &b"text"[..]),
        ])
        .await;
        assert_eq!(*applied.borrow_and_update(), 7, "watchers are told");
        assert_eq!(
            r.unchanged(1, 7).unwrap().into_iter().collect::<Vec<_>>(),
            [3, 4],
            "a refused swap and a delete of nothing change nothing"
        );
        assert!(r.unchanged(5, 7).unwrap().is_empty());
        let (keys, more) = r.list("app/", 10).unwrap();
        assert_eq!(
            keys.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["app/b"]
        );
        assert!(!more);
        let (keys, more) = r.list("", 1).unwrap();
        assert_eq!((keys.len(), more), (1, true));
    }
}
