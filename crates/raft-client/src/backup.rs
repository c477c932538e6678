//! Backups: a consistent copy of a node's state taken while it runs, and a new data
//! directory seeded from one (as `etcdutl snapshot restore` does for etcd).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use raft_core::{HardState, LogStore, NodeId, SnapshotMeta};
use raft_storage::{LogStorage, StorageConfig};

use crate::snapshot_store::{write_snapshot, SnapshotStore};
use crate::state_machine::SnapshotSource;

/// A point-in-time copy of a node's state machine, ready to be written out.
pub struct Backup {
    pub(crate) meta: SnapshotMeta,
    pub(crate) source: Box<dyn SnapshotSource>,
    /// The cluster version when it was taken (named in the file once past the first).
    pub(crate) cluster_version: raft_core::ClusterVersion,
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
        let Backup {
            meta,
            source,
            cluster_version,
        } = self;
        write_snapshot(out, &meta, cluster_version, |w| source.write_to(w))
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
/// backup. Returns what the backup covers. See [`restore_backup_with`].
pub fn restore_backup(
    backup: &Path,
    data_dir: &Path,
    cluster_id: &str,
    node_id: NodeId,
    voters: Vec<NodeId>,
) -> Result<SnapshotMeta, String> {
    restore_backup_with(backup, data_dir, cluster_id, node_id, voters, |_, _, _| {
        Ok(())
    })
}

/// Like [`restore_backup`], and `seed` is given the new data directory (not yet in place),
/// what the backup covers and the state machine's bytes: an application seeds its own store
/// from them there, and, by reading them, proves they are what it can restore from.
///
/// Every field of the backup is checked before it is used: the file's checksums, its
/// index and term (at most [`raft_core::TERM_LIMIT`]: a term no cluster can reach would
/// leave the nodes unable to elect past it), the voters (not empty, no duplicates, the
/// node among them). The directory is built beside `data_dir` and renamed into place only
/// once complete and durable: a restore that fails, at any step, leaves nothing behind,
/// and the next one starts clean.
pub fn restore_backup_with(
    backup: &Path,
    data_dir: &Path,
    cluster_id: &str,
    node_id: NodeId,
    voters: Vec<NodeId>,
    seed: impl FnOnce(&Path, &SnapshotMeta, &mut dyn Read) -> std::io::Result<()>,
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
    check_voters(node_id, &voters)?;
    let building = building_dir(data_dir)?;
    if building.exists() {
        // Left by a restore that was interrupted: never in use, and ours to remove.
        std::fs::remove_dir_all(&building)
            .map_err(|e| format!("cannot remove {}: {e}", building.display()))?;
    }
    let built = build(backup, &building, cluster_id, node_id, voters, seed).and_then(|meta| {
        put_in_place(&building, data_dir)?;
        Ok(meta)
    });
    if built.is_err() {
        let _ = std::fs::remove_dir_all(&building);
    }
    built
}

/// The voters of a restored cluster: some, each once, the node among them.
fn check_voters(node_id: NodeId, voters: &[NodeId]) -> Result<(), String> {
    if !voters.contains(&node_id) {
        return Err(format!("node {node_id} is not among the voters {voters:?}"));
    }
    let distinct: std::collections::BTreeSet<_> = voters.iter().collect();
    if distinct.len() != voters.len() {
        return Err(format!("the voters {voters:?} name a node twice"));
    }
    Ok(())
}

/// Whether a backup's metadata can be a cluster's state: an index and a term a cluster can
/// have reached, a term for any index past the start.
fn check_meta(meta: &SnapshotMeta) -> Result<(), String> {
    if meta.term > raft_core::TERM_LIMIT || meta.index > raft_core::TERM_LIMIT {
        return Err(format!(
            "it claims index {} and term {}: no cluster gets there (the limit is {}); the file was not written by a node",
            meta.index,
            meta.term,
            raft_core::TERM_LIMIT
        ));
    }
    if meta.index > 0 && meta.term == 0 {
        return Err(format!("it covers index {} in term 0", meta.index));
    }
    Ok(())
}

/// Where `data_dir` is built before it is renamed into place: beside it, so that the rename
/// stays on one file system.
fn building_dir(data_dir: &Path) -> Result<PathBuf, String> {
    let name = data_dir
        .file_name()
        .ok_or_else(|| format!("{} names no directory", data_dir.display()))?;
    let mut building = std::ffi::OsString::from(".");
    building.push(name);
    building.push(".restoring");
    Ok(data_dir.with_file_name(building))
}

fn build(
    backup: &Path,
    dir: &Path,
    cluster_id: &str,
    node_id: NodeId,
    voters: Vec<NodeId>,
    seed: impl FnOnce(&Path, &SnapshotMeta, &mut dyn Read) -> std::io::Result<()>,
) -> Result<SnapshotMeta, String> {
    raft_storage::private::create_dir_all(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let store = SnapshotStore::open_std(dir).map_err(|e| e.to_string())?;
    let unusable = |e: String| format!("{} is not a usable backup: {e}", backup.display());
    let file = store.verify(backup).map_err(|e| unusable(e.to_string()))?;
    check_meta(&file.meta).map_err(unusable)?;
    let meta = SnapshotMeta {
        membership: raft_core::Membership::new(voters),
        ..file.meta.clone()
    };
    let mut data = store.data(&file).map_err(|e| e.to_string())?;
    seed(dir, &meta, &mut data).map_err(|e| unusable(e.to_string()))?;
    let mut data = store.data(&file).map_err(|e| e.to_string())?;
    store
        .create(&meta, |out| std::io::copy(&mut data, out).map(drop))
        .map_err(|e| format!("cannot write the snapshot: {e}"))?;
    let mut log = LogStorage::open(StorageConfig::new(dir, cluster_id, node_id))
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

/// Renames the complete `building` directory to `data_dir` (replacing it if it is an empty
/// directory) and makes the rename durable.
fn put_in_place(building: &Path, data_dir: &Path) -> Result<(), String> {
    if data_dir.exists() {
        std::fs::remove_dir(data_dir)
            .map_err(|e| format!("cannot replace {}: {e}", data_dir.display()))?;
    }
    std::fs::rename(building, data_dir).map_err(|e| {
        format!(
            "cannot move {} to {}: {e}",
            building.display(),
            data_dir.display()
        )
    })?;
    let parent = match data_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::File::open(&parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("cannot sync {}: {e}", parent.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::snapshot_store::write_snapshot;

    /// A backup file of `data` claiming to cover `index` in `term`, with valid checksums.
    fn forged(dir: &Path, index: u64, term: u64, data: &[u8]) -> PathBuf {
        let path = dir.join(format!("forged-{index}-{term}.snap"));
        let meta = SnapshotMeta {
            index,
            term,
            membership: raft_core::Membership::new([1]),
        };
        let mut out = Vec::new();
        write_snapshot(&mut out, &meta, raft_core::ClusterVersion::INITIAL, |w| {
            w.write_all(data)
        })
        .unwrap();
        std::fs::write(&path, out).unwrap();
        path
    }

    /// Restores `backup` for node 1 of a one-voter cluster, seeding a durable store (as
    /// httpraft does).
    fn restore(backup: &Path, data_dir: &Path) -> Result<SnapshotMeta, String> {
        restore_backup_with(backup, data_dir, "c", 1, vec![1], |dir, meta, data| {
            let cfg = crate::DurableConfig::default();
            let mut store = crate::DurableStore::open(&dir.join("app.redb"), cfg)?;
            crate::StateMachine::restore(&mut store, meta.index, data)
        })
    }

    /// Nothing in `base` but the backups: no data directory, nothing half-built.
    fn nothing_left(base: &Path) -> Vec<String> {
        std::fs::read_dir(base)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| !n.starts_with("forged-"))
            .collect()
    }

    #[test]
    fn a_backup_no_cluster_could_have_written_is_refused_and_leaves_nothing_behind() {
        let base = tempfile::tempdir().unwrap();
        let data_dir = base.path().join("node-1");
        let empty_map = [0u8];
        // A term past any a cluster reaches: its nodes could never elect again.
        let high = forged(base.path(), 10, u64::MAX, &empty_map);
        let err = restore(&high, &data_dir).unwrap_err();
        assert!(err.contains("no cluster gets there"), "{err}");
        assert_eq!(nothing_left(base.path()), Vec::<String>::new());
        // A record that claims 1 GiB and holds three bytes.
        let mut lying = vec![1u8];
        lying.extend((1u32 << 30).to_le_bytes());
        lying.extend(b"abc");
        let lying = forged(base.path(), 10, 2, &lying);
        let err = restore(&lying, &data_dir).unwrap_err();
        assert!(err.contains("cut short"), "{err}");
        assert_eq!(nothing_left(base.path()), Vec::<String>::new());
        // A record of a kind no version writes.
        let unknown = forged(base.path(), 10, 2, &[9, 0, 0, 0, 0, 0]);
        let err = restore(&unknown, &data_dir).unwrap_err();
        assert!(err.contains("unknown snapshot record 9"), "{err}");
        assert_eq!(nothing_left(base.path()), Vec::<String>::new());
        // After all of that, a good backup restores at once.
        let good = forged(base.path(), 10, 2, &empty_map);
        let meta = restore(&good, &data_dir).unwrap();
        assert_eq!((meta.index, meta.term), (10, 2));
        assert_eq!(nothing_left(base.path()), vec!["node-1".to_string()]);
        let log = LogStorage::open(StorageConfig::new(&data_dir, "c", 1)).unwrap();
        assert_eq!(log.snapshot_meta().map(|m| m.index), Ok(10));
    }

    #[test]
    fn a_restore_interrupted_before_it_finished_does_not_block_the_next() {
        let base = tempfile::tempdir().unwrap();
        let data_dir = base.path().join("node-1");
        // What a restore killed half-way leaves: a directory being built.
        let building = building_dir(&data_dir).unwrap();
        std::fs::create_dir_all(building.join("wal")).unwrap();
        std::fs::write(building.join("wal/garbage"), b"x").unwrap();
        let good = forged(base.path(), 7, 3, &[0u8]);
        restore(&good, &data_dir).unwrap();
        assert!(!building.exists());
        assert!(data_dir.join("app.redb").exists());
    }

    #[test]
    fn a_backup_must_name_a_reachable_index_and_term_and_sane_voters() {
        let meta = |index, term| SnapshotMeta {
            index,
            term,
            membership: raft_core::Membership::new([1]),
        };
        assert!(check_meta(&meta(10, 2)).is_ok());
        assert!(check_meta(&meta(0, 0)).is_ok());
        assert!(check_meta(&meta(10, u64::MAX)).is_err());
        assert!(check_meta(&meta(u64::MAX, 3)).is_err());
        assert!(check_meta(&meta(5, 0)).is_err());
        assert!(check_voters(1, &[1, 2, 3]).is_ok());
        assert!(check_voters(4, &[1, 2, 3]).is_err());
        assert!(check_voters(1, &[1, 2, 2]).is_err());
        assert!(check_voters(1, &[]).is_err());
    }

    #[test]
    fn the_directory_is_built_beside_the_target() {
        assert_eq!(
            building_dir(Path::new("/d/data/node-0")).unwrap_or_default(),
            PathBuf::from("/d/data/.node-0.restoring")
        );
    }
}
