//! # raft-storage
//!
//! A durable Raft log in a data directory, implementing [`raft_core::LogStore`].
//!
//! - **Layout**: `meta.json` (format version, cluster id, node id), `LOCK` (held with
//!   `flock` while open), and `wal/NNNNNNNNNNNNNNNNNNNN.wal` segments rolled at
//!   [`StorageConfig::segment_bytes`].
//! - **Records**: `len | crc32c | postcard payload`. Entries, hard-state updates,
//!   truncations and purge points are all records of the log, so one write and one
//!   `fdatasync` make a whole `Ready` durable (group commit).
//! - **Recovery**: segments are replayed in order. An unfinished write at the very end (the
//!   last record runs past the end of the file, or one of its 512-byte sectors reads as
//!   zeros) is cut off with a warning: a crash interrupted it, so it was never synced nor
//!   acknowledged. A last record that is complete but fails its checksum, or a damaged
//!   record followed by valid ones, stops the open with [`OpenError::Corrupt`], naming the
//!   file and byte offset: that is damage to data that may have been acknowledged.
//! - **Syncs**: entries, term and vote are synced before a write returns; a commit index
//!   alone is written without a sync ([`LogStorage::persist`] follows
//!   [`raft_core::Ready::must_sync`]). [`LogStorage::stats`] counts writes and syncs.
//! - **Failures**: after any I/O error the store refuses every further write; it never
//!   reports a write done that is not durable.
//!
//! ```
//! use raft_core::{Entry, HardState, LogStore};
//! use raft_storage::{LogStorage, StorageConfig};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let mut log = LogStorage::open(StorageConfig::new(dir.path(), "demo", 1)).unwrap();
//! let hs = HardState { term: 1, vote: Some(1), commit: 0 };
//! log.write(&[Entry::normal(1, 1, &b"a"[..])], Some(hs)).unwrap();
//! drop(log);
//! let log = LogStorage::open(StorageConfig::new(dir.path(), "demo", 1)).unwrap();
//! assert_eq!(log.last_index(), 1);
//! assert_eq!(log.hard_state().unwrap(), hs);
//! ```

#![forbid(unsafe_code)]

mod cache;
mod config;
mod error;
mod index;
mod meta;
pub mod private;
mod reader;
mod record;
mod segment;
mod stats;
mod store;
mod summary;
mod vfs;

pub use config::{StorageConfig, SyncPolicy};
pub use error::{OpenError, WriteError};
pub use meta::{LOCK_FILE, META_FILE};
pub use reader::{ReadPlan, SegmentReader};
pub use record::{BASE_FORMAT_VERSION, FORMAT_VERSION, OLDEST_FORMAT_VERSION};
pub use segment::SEGMENT_EXT;
pub use stats::{StatsSnapshot, StorageStats, SYNC_BUCKETS};
pub use store::{LogStorage, PendingSync, SyncFailure, WAL_DIR};
pub use vfs::{StdVfs, Vfs, VfsFile};
