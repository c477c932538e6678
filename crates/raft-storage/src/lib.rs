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
//! - **Recovery**: segments are replayed in order. An unfinished record at the very end is
//!   cut off with a warning; a damaged record followed by valid ones stops the open with
//!   [`OpenError::Corrupt`], naming the file and byte offset.
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
mod meta;
mod record;
mod segment;
mod store;
mod vfs;

pub use config::{StorageConfig, SyncPolicy};
pub use error::{OpenError, WriteError};
pub use meta::{LOCK_FILE, META_FILE};
pub use record::FORMAT_VERSION;
pub use segment::SEGMENT_EXT;
pub use store::{LogStorage, WAL_DIR};
pub use vfs::{StdVfs, Vfs, VfsFile};
