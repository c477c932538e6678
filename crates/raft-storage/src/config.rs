//! Settings of a store.

use std::path::PathBuf;

use raft_core::NodeId;

/// When appends are made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPolicy {
    /// `fdatasync` after every write batch, before it is reported done. The default, and
    /// the only setting under which Raft's guarantees hold across power loss.
    Always,
    /// Never sync. Only for tests and benchmarks that say so: a crash of the machine can
    /// lose acknowledged entries and votes.
    Never,
}

/// Settings of a [`crate::LogStorage`].
#[derive(Clone, Debug)]
pub struct StorageConfig {
    /// The data directory; created if missing.
    pub dir: PathBuf,
    /// The cluster this directory belongs to. Opening it for another cluster fails.
    pub cluster_id: String,
    /// The node this directory belongs to. Opening it for another node fails.
    pub node_id: NodeId,
    /// A segment is closed and a new one started once it reaches this size. Default 64 MiB.
    pub segment_bytes: u64,
    /// When writes are made durable. Default [`SyncPolicy::Always`].
    pub sync: SyncPolicy,
    /// Bytes of recent entries kept in memory to serve reads without disk I/O.
    /// Default 64 MiB.
    pub cache_bytes: u64,
    /// The largest record accepted when reading (a larger declared length is damage).
    /// Default 64 MiB.
    pub max_record_bytes: u64,
    /// The store remembers where one entry starts in every this many bytes of a segment
    /// (and nothing for the others): a read of an entry not in the cache reads forward at
    /// most about this far. Memory for the index is about 24 bytes per interval of log.
    /// Default 8 KiB.
    pub index_interval_bytes: u64,
}

impl StorageConfig {
    /// Defaults for `node_id` of `cluster_id`, storing in `dir`.
    pub fn new(dir: impl Into<PathBuf>, cluster_id: impl Into<String>, node_id: NodeId) -> Self {
        StorageConfig {
            dir: dir.into(),
            cluster_id: cluster_id.into(),
            node_id,
            segment_bytes: 64 << 20,
            sync: SyncPolicy::Always,
            cache_bytes: 64 << 20,
            max_record_bytes: 64 << 20,
            index_interval_bytes: 8 << 10,
        }
    }
}
