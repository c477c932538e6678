//! Errors of the store, each saying what happened and what to do.

use std::io;
use std::path::PathBuf;

use raft_core::{LogIndex, NodeId};
use thiserror::Error;

/// Why a data directory could not be opened.
#[derive(Debug, Error)]
pub enum OpenError {
    /// A file operation failed.
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Another process holds the directory.
    #[error("data directory {0} is in use by another process (lock held on its LOCK file)")]
    Locked(PathBuf),
    /// The directory belongs to another node.
    #[error("data directory {dir} belongs to node {found}, not node {expected}; use that node's own directory")]
    WrongNode {
        /// The directory.
        dir: PathBuf,
        /// The node recorded in it.
        found: NodeId,
        /// The node that tried to open it.
        expected: NodeId,
    },
    /// The directory belongs to another cluster.
    #[error("data directory {dir} belongs to cluster {found:?}, not {expected:?}; use a directory of this cluster")]
    WrongCluster {
        /// The directory.
        dir: PathBuf,
        /// The cluster recorded in it.
        found: String,
        /// The cluster that tried to open it.
        expected: String,
    },
    /// The directory was written by a newer version of this software.
    #[error("data directory {dir} has format version {found}; this build reads up to {supported}; upgrade the binary")]
    NewerFormat {
        /// The directory.
        dir: PathBuf,
        /// The version recorded in it.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// The directory was written by an older release whose entries this build cannot
    /// interpret safely.
    #[error("data directory {dir} has format version {found}, written by an earlier release; this build opens format {oldest} and later (key-value commands changed encoding): export the data with the earlier release (GET /log, GET /v1/kv/...) and start this release from an empty directory")]
    OldFormat {
        /// The directory.
        dir: PathBuf,
        /// The version recorded in it.
        found: u32,
        /// The oldest version this build opens.
        oldest: u32,
    },
    /// Data that may have been acknowledged is damaged.
    #[error("corrupt log: {file} at byte {offset}: {reason}. The node must not start with this log; keep it stopped and see the section on corruption in docs/operations.md (do not wipe it and rejoin under the same id)")]
    Corrupt {
        /// The damaged file.
        file: PathBuf,
        /// The byte offset of the damaged record.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The metadata file is unreadable.
    #[error("metadata file {path} is unreadable: {reason}")]
    BadMetadata {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Why a write failed. After any I/O failure the store refuses every further write
/// (`Failed`): the node must stop acknowledging and be restarted, which re-reads the disk.
#[derive(Debug, Error)]
pub enum WriteError {
    /// A file operation failed; nothing of this write may be considered durable.
    #[error("cannot {op} {path}: {source}; the store is now stopped")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// An earlier I/O failure stopped the store; restart the node.
    #[error("the store stopped after an earlier I/O failure; restart the node")]
    Failed,
    /// The entries do not continue the log.
    #[error("entries must continue the log: expected index at most {expected}, got {got}")]
    Gap {
        /// The highest index the next entry may have.
        expected: LogIndex,
        /// The index it had.
        got: LogIndex,
    },
    /// The entries would overwrite purged entries.
    #[error("cannot overwrite index {0}: it was purged")]
    Purged(LogIndex),
    /// A snapshot was recorded for an index the log does not hold with that term.
    #[error(
        "the log does not hold entry {index} with term {term}: a snapshot of it cannot be recorded"
    )]
    SnapshotMismatch {
        /// The snapshot's index.
        index: LogIndex,
        /// The snapshot's term.
        term: raft_core::Term,
    },
    /// An entry's record would exceed the configured maximum record size; nothing was
    /// written.
    #[error("entry {index} would make a {size}-byte record; the maximum is {max}")]
    TooLarge {
        /// The entry's index.
        index: LogIndex,
        /// The record's size.
        size: usize,
        /// The maximum record size.
        max: u64,
    },
    /// A record could not be encoded.
    #[error("cannot encode a record: {0}")]
    Encode(String),
}
