//! [`DurableStore`]: the application's log and key-value map, kept on disk in an embedded
//! database (redb), so that the Raft log can be compacted without losing either.
//!
//! - Memory does not grow with history: the log and the map live in the database file;
//!   memory is its page cache ([`DurableConfig::cache_bytes`]).
//! - Applying is one database transaction per batch, made durable every
//!   [`DurableConfig::durable_every`] entries and before every snapshot; after a crash the
//!   node replays the Raft log's entries after the last durable one (the Raft log is never
//!   compacted past what a snapshot covers, and a snapshot is durable here first).
//! - Snapshots are read transactions (a consistent view while writes go on), streamed out.
//! - An optional retention policy drops the oldest log entries
//!   ([`DurableConfig::retain_entries`], [`DurableConfig::retain_bytes`]); the map is never
//!   trimmed.

use std::io::{Read, Write};
use std::path::Path;
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

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
/// The map as a build that kept no revisions stored it: moved into [`KV`] (at revision 0)
/// when such a store is opened.
const KV_UNVERSIONED: TableDefinition<&str, &str> = TableDefinition::new("kv");
/// The map: key → revision (8 bytes LE) and value.
const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv2");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The changes applied to the map, for watchers: log index → postcard `(key, value)` (a
/// `None` value: deleted). Trimmed with the log.
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("kv_events");
/// The first index from which [`EVENTS`] is complete.
const EVENTS_FROM: &str = "events_from";
const APPLIED: &str = "applied";
const LOG_BYTES: &str = "log_bytes";

/// Settings of a [`DurableStore`].
#[derive(Clone, Debug)]
pub struct DurableConfig {
    /// Keep at most this many log entries (the oldest go first). Default: all.
    pub retain_entries: Option<u64>,
    /// Keep at most this many bytes of log entries (the oldest go first). Default: all.
    pub retain_bytes: Option<u64>,
    /// Make the state durable at least every this many applied entries. Default 10,000.
    pub durable_every: u64,
    /// The database's page cache. Default 64 MiB.
    pub cache_bytes: usize,
}

impl Default for DurableConfig {
    fn default() -> Self {
        DurableConfig {
            retain_entries: None,
            retain_bytes: None,
            durable_every: 10_000,
            cache_bytes: 64 << 20,
        }
    }
}

fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("application store: {e}"))
}

fn kind_code(k: EntryKind) -> u8 {
    match k {
        EntryKind::Normal => 0,
        EntryKind::Noop => 1,
        EntryKind::Config => 2,
        EntryKind::Command => 3,
        EntryKind::ClusterVersion => 4,
    }
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

/// The largest record of a snapshot (a log row, a key with its value): larger than any
/// entry a node accepts.
const MAX_SNAPSHOT_RECORD: u32 = 1 << 30;

/// A log row: term (8 bytes LE), kind (1 byte), payload.
fn encode_row(e: &Entry) -> Vec<u8> {
    let mut v = Vec::with_capacity(9 + e.data.len());
    v.extend_from_slice(&e.term.to_le_bytes());
    v.push(kind_code(e.kind));
    v.extend_from_slice(&e.data);
    v
}

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

/// The application's log and key-value map on disk: the state machine `httpraft` runs.
/// Plain entries go to the log; command entries go to the log and change the map.
pub struct DurableStore {
    db: Arc<Database>,
    cfg: DurableConfig,
    /// What the database reflects (durably or not); watchers are told when it moves.
    applied: Arc<watch::Sender<LogIndex>>,
    /// What is durable at open: the runtime replays from after it.
    durable_at_open: LogIndex,
    /// Entries applied since the last durable commit.
    since_durable: u64,
    /// Set when the database failed: nothing is applied any more.
    failed: Option<String>,
}

/// A read handle on a [`DurableStore`]: the map, the log, the applied index. Cheap to
/// clone; reads are database read transactions (each a consistent view) and may block
/// briefly on disk, so call them from a blocking thread when reading much.
#[derive(Clone)]
pub struct DurableReader {
    db: Arc<Database>,
    applied: Arc<watch::Sender<LogIndex>>,
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
            let mut meta = txn.open_table(META).map_err(io_err)?;
            if meta.get(EVENTS_FROM).map_err(io_err)?.is_none() {
                // A new store, or one of a build that kept no events: complete from here.
                let applied = meta.get(APPLIED).map_err(io_err)?.map_or(0, |v| v.value());
                meta.insert(EVENTS_FROM, applied + 1).map_err(io_err)?;
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
        let applied = {
            let r = db.begin_read().map_err(io_err)?;
            let meta = r.open_table(META).map_err(io_err)?;
            let v = meta.get(APPLIED).map_err(io_err)?.map(|v| v.value());
            v.unwrap_or(0)
        };
        Ok(DurableStore {
            db: Arc::new(db),
            cfg,
            applied: Arc::new(watch::Sender::new(applied)),
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
            let mut log = txn.open_table(LOG).map_err(io_err)?;
            let mut kv = txn.open_table(KV).map_err(io_err)?;
            let mut events = txn.open_table(EVENTS).map_err(io_err)?;
            let mut meta = txn.open_table(META).map_err(io_err)?;
            let mut bytes = meta
                .get(LOG_BYTES)
                .map_err(io_err)?
                .map_or(0, |v| v.value());
            for e in entries {
                let row = encode_row(e);
                bytes += row.len() as u64;
                log.insert(e.index, row.as_slice()).map_err(io_err)?;
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
                                Some(Some(new.value))
                            }
                            Some(None) if current.is_some() => {
                                kv.remove(key).map_err(io_err)?;
                                Some(None)
                            }
                            Some(None) | None => None,
                        };
                        if let Some(value) = changed {
                            let row = postcard::to_allocvec(&(key, value)).map_err(io_err)?;
                            events.insert(e.index, row.as_slice()).map_err(io_err)?;
                        }
                        outcome.response
                    }
                    None => KvResponse::NotACommand,
                };
                out.push(response);
            }
            let before = bytes;
            bytes = trim_log(&mut log, bytes, &self.cfg)?;
            if bytes < before {
                // Only when the log lost rows: the events go with them.
                trim_events(&log, &mut events, &mut meta)?;
            }
            meta.insert(LOG_BYTES, bytes).map_err(io_err)?;
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

/// Drops the oldest log rows past the retention policy; the log's new size in bytes.
fn trim_log(
    log: &mut redb::Table<'_, u64, &[u8]>,
    mut bytes: u64,
    cfg: &DurableConfig,
) -> std::io::Result<u64> {
    if let Some(keep) = cfg.retain_entries {
        let len = log.len().map_err(io_err)?;
        for _ in keep..len {
            match log.pop_first().map_err(io_err)? {
                Some((_, row)) => bytes = bytes.saturating_sub(row.value().len() as u64),
                None => break,
            }
        }
    }
    if let Some(max) = cfg.retain_bytes {
        while bytes > max {
            match log.pop_first().map_err(io_err)? {
                Some((_, row)) => bytes = bytes.saturating_sub(row.value().len() as u64),
                None => break,
            }
        }
    }
    Ok(bytes)
}

/// Drops the events older than the log's first kept entry (the retention policy applies to
/// both), moving [`EVENTS_FROM`] up accordingly.
fn trim_events(
    log: &redb::Table<'_, u64, &[u8]>,
    events: &mut redb::Table<'_, u64, &[u8]>,
    meta: &mut redb::Table<'_, &str, u64>,
) -> std::io::Result<()> {
    let Some(first) = log.first().map_err(io_err)?.map(|(k, _)| k.value()) else {
        return Ok(());
    };
    let from = meta
        .get(EVENTS_FROM)
        .map_err(io_err)?
        .map_or(1, |v| v.value());
    if first <= from {
        return Ok(());
    }
    loop {
        let oldest = {
            let row = events.first().map_err(io_err)?;
            row.map(|(k, _)| k.value())
        };
        match oldest {
            Some(k) if k < first => {
                events.pop_first().map_err(io_err)?;
            }
            _ => break,
        }
    }
    meta.insert(EVENTS_FROM, first).map_err(io_err)?;
    Ok(())
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
        {
            let mut log = txn.open_table(LOG).map_err(io_err)?;
            let mut kv = txn.open_table(KV).map_err(io_err)?;
            let mut events = txn.open_table(EVENTS).map_err(io_err)?;
            let mut meta = txn.open_table(META).map_err(io_err)?;
            // A snapshot without events (from an earlier build) has no history to watch.
            let mut events_from = index + 1;
            let mut bytes = 0u64;
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
                            let (index, row): (u64, &[u8]) =
                                postcard::from_bytes(&buf).map_err(io_err)?;
                            bytes += row.len() as u64;
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
            meta.insert(LOG_BYTES, bytes).map_err(io_err)?;
            meta.insert(APPLIED, index).map_err(io_err)?;
            meta.insert(EVENTS_FROM, events_from).map_err(io_err)?;
        }
        txn.commit().map_err(io_err)?;
        self.applied.send_replace(index);
        self.since_durable = 0;
        Ok(())
    }
}

/// A consistent view of the store, streamed as records: `5` the index from which events
/// are kept, `1` log rows, `3` map entries (key, value, revision), `4` events (index,
/// (key, value)), `0` the end. (`2`, map pairs without revisions, is read from snapshots
/// of earlier builds.)
struct DurableSnapshot {
    txn: redb::ReadTransaction,
}

impl SnapshotSource for DurableSnapshot {
    fn write_to(self: Box<Self>, out: &mut dyn Write) -> std::io::Result<()> {
        let mut buf = Vec::new();
        let record = |out: &mut dyn Write, tag: u8, body: &[u8]| -> std::io::Result<()> {
            out.write_all(&[tag])?;
            out.write_all(&(body.len() as u32).to_le_bytes())?;
            out.write_all(body)
        };
        let meta = self.txn.open_table(META).map_err(io_err)?;
        let events_from = meta
            .get(EVENTS_FROM)
            .map_err(io_err)?
            .map_or(1, |v| v.value());
        record(
            out,
            5,
            &postcard::to_allocvec(&events_from).map_err(io_err)?,
        )?;
        let log = self.txn.open_table(LOG).map_err(io_err)?;
        for row in log.iter().map_err(io_err)? {
            let (k, v) = row.map_err(io_err)?;
            buf.clear();
            buf = postcard::to_extend(&(k.value(), v.value()), std::mem::take(&mut buf))
                .map_err(io_err)?;
            record(out, 1, &buf)?;
        }
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
            record(out, 3, &buf)?;
        }
        let events = self.txn.open_table(EVENTS).map_err(io_err)?;
        for row in events.iter().map_err(io_err)? {
            let (k, v) = row.map_err(io_err)?;
            buf.clear();
            buf = postcard::to_extend(&(k.value(), v.value()), std::mem::take(&mut buf))
                .map_err(io_err)?;
            record(out, 4, &buf)?;
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

    /// The first revision from which every change is kept for watchers (older ones were
    /// trimmed with the log, or predate this store's events).
    pub fn events_from(&self) -> std::io::Result<LogIndex> {
        let r = self.db.begin_read().map_err(io_err)?;
        let meta = r.open_table(META).map_err(io_err)?;
        let v = meta
            .get(EVENTS_FROM)
            .map_err(io_err)?
            .map_or(1, |v| v.value());
        Ok(v)
    }

    /// The changes to keys starting with `prefix` at revisions `from..`, in order: at most
    /// `limit` of them, looking at no more than `scan` changes; and the revision to go on
    /// from.
    pub fn events(
        &self,
        from: LogIndex,
        prefix: &str,
        limit: usize,
        scan: usize,
    ) -> std::io::Result<(Vec<KvEvent>, LogIndex)> {
        let r = self.db.begin_read().map_err(io_err)?;
        let events = r.open_table(EVENTS).map_err(io_err)?;
        let mut out = Vec::new();
        let mut next = from;
        for row in events.range(from..).map_err(io_err)?.take(scan.max(1)) {
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
                    break;
                }
            }
        }
        Ok((out, next))
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

    /// The first log index still kept (after the retention policy), or the next index to
    /// come when the log is empty.
    pub fn first_index(&self) -> std::io::Result<LogIndex> {
        let r = self.db.begin_read().map_err(io_err)?;
        let log = r.open_table(LOG).map_err(io_err)?;
        let first = log.first().map_err(io_err)?.map(|(k, _)| k.value());
        Ok(first.unwrap_or_else(|| self.applied() + 1))
    }

    /// Log entries from `from` on (from the first kept one if `from` is older), at most
    /// `limit` and `max_bytes` (at least one).
    pub fn log(&self, from: LogIndex, limit: usize, max_bytes: u64) -> std::io::Result<Vec<Entry>> {
        let r = self.db.begin_read().map_err(io_err)?;
        let log = r.open_table(LOG).map_err(io_err)?;
        let mut out = Vec::new();
        let mut size = 0u64;
        for row in log.range(from..).map_err(io_err)? {
            if out.len() >= limit {
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

    /// A database file in memory whose writes and syncs start failing on demand.
    #[derive(Debug, Default)]
    struct Failing {
        data: std::sync::Mutex<Vec<u8>>,
        failing: std::sync::atomic::AtomicBool,
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
            self.check()?;
            self.0.data.lock().unwrap().resize(len as usize, 0);
            Ok(())
        }
        fn sync_data(&self) -> std::io::Result<()> {
            self.check()
        }
        fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
            self.check()?;
            let mut d = self.0.data.lock().unwrap();
            let end = offset as usize + data.len();
            if d.len() < end {
                d.resize(end, 0);
            }
            d[offset as usize..end].copy_from_slice(data);
            Ok(())
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
        let log = r.log(1, 10, u64::MAX).unwrap();
        assert_eq!(log[1], Entry::normal(1, 2, &b"text"[..]));
        assert!(r.get("a").unwrap().is_some());
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
    async fn a_snapshot_restores_log_and_map_and_retention_drops_the_oldest_entries() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = DurableConfig {
            retain_entries: Some(5),
            ..DurableConfig::default()
        };
        let mut s = DurableStore::open(&dir.path().join("a.redb"), cfg).unwrap();
        let entries: Vec<Entry> = (1..=10).map(|i| put(i, &format!("k{i}"), "v")).collect();
        s.apply(&entries).await;
        let r = s.reader();
        assert_eq!(r.first_index().unwrap(), 6, "five entries kept");
        assert_eq!(r.log(1, 100, u64::MAX).unwrap().len(), 5);
        assert_eq!(r.len().unwrap(), 10, "the map is never trimmed");
        let snap = s.snapshot().await.unwrap();
        let logged = r.log(1, 100, u64::MAX).unwrap();
        s.apply(&[put(11, "late", "x")]).await;
        let mut bytes = Vec::new();
        snap.write_to(&mut bytes).unwrap();
        let mut t =
            DurableStore::open(&dir.path().join("b.redb"), DurableConfig::default()).unwrap();
        t.apply(&[put(1, "stale", "y")]).await;
        t.restore(10, &mut &bytes[..]).unwrap();
        let tr = t.reader();
        assert_eq!(tr.applied(), 10);
        assert_eq!(
            tr.get("stale").unwrap(),
            None,
            "the restore replaced everything"
        );
        assert_eq!(tr.get("late").unwrap(), None, "as of the snapshot");
        assert_eq!(tr.len().unwrap(), 10);
        assert_eq!(tr.get_versioned("k4").unwrap().map(|v| v.revision), Some(4));
        assert_eq!(tr.log(1, 100, u64::MAX).unwrap(), logged);
        assert!(t.restore(3, &mut &bytes[..7]).is_err(), "a cut snapshot");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn applied_changes_are_kept_for_watchers_and_listed_by_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = DurableConfig {
            retain_entries: Some(6),
            ..DurableConfig::default()
        };
        let mut s = DurableStore::open(&dir.path().join("a.redb"), cfg).unwrap();
        let r = s.reader();
        let mut applied = r.watch_applied();
        assert_eq!(
            r.events_from().unwrap(),
            1,
            "a new store keeps every change"
        );
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
        ])
        .await;
        assert_eq!(*applied.borrow_and_update(), 6, "watchers are told");
        let (events, next) = r.events(1, "app/", 100, 1000).unwrap();
        let seen: Vec<(u64, &str, Option<&str>)> = events
            .iter()
            .map(|e| (e.revision, e.key.as_str(), e.value.as_deref()))
            .collect();
        assert_eq!(
            seen,
            vec![
                (1, "app/a", Some("1")),
                (5, "app/b", Some("2")),
                (6, "app/a", None)
            ],
            "a refused swap and a delete of nothing change nothing"
        );
        assert_eq!(next, 7);
        let (one, next) = r.events(2, "app/", 1, 1000).unwrap();
        assert_eq!(
            (one[0].revision, next),
            (5, 6),
            "limited, and where to go on"
        );
        let (keys, more) = r.list("app/", 10).unwrap();
        assert_eq!(
            keys.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["app/b"]
        );
        assert!(!more);
        let (keys, more) = r.list("", 1).unwrap();
        assert_eq!((keys.len(), more), (1, true));

        // The retention policy trims the changes with the log.
        let more_puts: Vec<Entry> = (7..=10).map(|i| put(i, "app/c", "v")).collect();
        s.apply(&more_puts).await;
        assert_eq!(r.events_from().unwrap(), 5, "six entries kept: 5 to 10");
        assert_eq!(r.events(1, "", 100, 1000).unwrap().0[0].revision, 5);

        // A snapshot carries them.
        let snap = s.snapshot().await.unwrap();
        let mut bytes = Vec::new();
        snap.write_to(&mut bytes).unwrap();
        let mut t =
            DurableStore::open(&dir.path().join("b.redb"), DurableConfig::default()).unwrap();
        t.restore(10, &mut &bytes[..]).unwrap();
        let tr = t.reader();
        assert_eq!(tr.events_from().unwrap(), 5);
        assert_eq!(
            tr.events(1, "", 100, 1000).unwrap(),
            r.events(1, "", 100, 1000).unwrap()
        );
    }
}
