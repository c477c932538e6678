//! Backups: a consistent copy of a node's state taken while it runs, and a new data
//! directory seeded from one (as `etcdutl snapshot restore` does for etcd).

use std::io::Write;
use std::path::Path;

use raft_core::{HardState, LogStore, NodeId, SnapshotMeta};
use raft_storage::{LogStorage, StorageConfig};

use crate::snapshot_store::{write_snapshot, SnapshotStore};
use crate::state_machine::SnapshotSource;

/// A point-in-time copy of a node's state machine, ready to be written out.
pub struct Backup {
    pub(crate) meta: SnapshotMeta,
    pub(crate) source: Box<dyn SnapshotSource>,
}

impl Backup {
    /// What the backup covers: the log up to `meta().index`.
    pub fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }

    /// Writes the backup to `out`, in the snapshot file format (the state machine's bytes,
    /// then a trailer with the metadata and a checksum). Blocks: call it from a blocking
    /// thread.
    pub fn write_to(self, out: &mut dyn Write) -> std::io::Result<()> {
        let Backup { meta, source } = self;
        write_snapshot(out, &meta, |w| source.write_to(w))
    }
}

impl std::fmt::Debug for Backup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backup")
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

/// Seeds an empty `data_dir` for node `node_id` of `cluster_id` from the backup file
/// `backup`, for a cluster whose voters are `voters`: the node starts with the backup's
/// state and an empty log after it. Every node of the new cluster is seeded from the same
/// backup. Returns what the backup covers.
pub fn restore_backup(
    backup: &Path,
    data_dir: &Path,
    cluster_id: &str,
    node_id: NodeId,
    voters: Vec<NodeId>,
) -> Result<SnapshotMeta, String> {
    let occupied = std::fs::read_dir(data_dir)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if occupied {
        return Err(format!(
            "{} is not empty: restore only into a new directory",
            data_dir.display()
        ));
    }
    if !voters.contains(&node_id) {
        return Err(format!("node {node_id} is not among the voters {voters:?}"));
    }
    raft_storage::private::create_dir_all(data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let store = SnapshotStore::open(data_dir).map_err(|e| e.to_string())?;
    let file = store
        .verify(backup)
        .map_err(|e| format!("{} is not a usable backup: {e}", backup.display()))?;
    let meta = SnapshotMeta {
        membership: raft_core::Membership::new(voters),
        ..file.meta.clone()
    };
    let mut data = store.data(&file).map_err(|e| e.to_string())?;
    store
        .create(&meta, |out| std::io::copy(&mut data, out).map(drop))
        .map_err(|e| format!("cannot write the snapshot: {e}"))?;
    let mut log = LogStorage::open(StorageConfig::new(data_dir, cluster_id, node_id))
        .map_err(|e| e.to_string())?;
    log.install_snapshot(&meta).map_err(|e| e.to_string())?;
    let hs = HardState {
        term: meta.term,
        vote: None,
        commit: meta.index,
    };
    log.write(&[], Some(hs)).map_err(|e| e.to_string())?;
    debug_assert_eq!(log.snapshot_meta().map(|m| m.index), Ok(meta.index));
    Ok(meta)
}
