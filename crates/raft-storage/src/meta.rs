//! The directory's identity (`meta.json`: format version, cluster id, node id) and its lock.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};

use raft_core::{ClusterVersion, NodeId};
use serde::{Deserialize, Serialize};

use crate::error::OpenError;
use crate::record::{BASE_FORMAT_VERSION, FORMAT_VERSION, OLDEST_FORMAT_VERSION};
use crate::vfs::Vfs;

/// The name of the metadata file.
pub const META_FILE: &str = "meta.json";
/// The name of the lock file.
pub const LOCK_FILE: &str = "LOCK";

#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    format_version: u32,
    cluster_id: String,
    node_id: NodeId,
    /// The cluster version this node has applied (`major.minor`); absent: the initial one.
    /// Release 0.1.0 ignores the field (and refuses the directory by its format first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cluster_version: Option<String>,
}

/// What `meta.json` says of a directory this build opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DirInfo {
    /// The directory's on-disk format.
    pub(crate) format: u32,
    /// The cluster version recorded in it.
    pub(crate) cluster_version: ClusterVersion,
}

/// Records the directory's identity with `info`, atomically.
pub(crate) fn write(
    vfs: &dyn Vfs,
    dir: &Path,
    cluster_id: &str,
    node_id: NodeId,
    info: DirInfo,
) -> std::io::Result<()> {
    let meta = Meta {
        format_version: info.format,
        cluster_id: cluster_id.to_string(),
        node_id,
        cluster_version: (info.cluster_version > ClusterVersion::INITIAL)
            .then(|| info.cluster_version.to_string()),
    };
    let data = serde_json::to_vec_pretty(&meta).map_err(std::io::Error::other)?;
    vfs.write_atomic(&dir.join(META_FILE), &data)
}

/// Holds the directory's `flock` for as long as it lives.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

/// Takes the directory's lock, failing at once if another process holds it.
pub(crate) fn lock(dir: &Path) -> Result<DirLock, OpenError> {
    let path = dir.join(LOCK_FILE);
    let file = crate::private::file_options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| OpenError::Io {
            op: "open lock file",
            path: path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(DirLock { _file: file }),
        Err(TryLockError::WouldBlock) => Err(OpenError::Locked(dir.to_path_buf())),
        Err(TryLockError::Error(source)) => Err(OpenError::Io {
            op: "lock",
            path,
            source,
        }),
    }
}

/// Checks the directory's identity, or records it if the directory is new; what it says.
///
/// A new directory gets [`BASE_FORMAT_VERSION`], the newest format an older release still
/// reads; the store raises it when it first writes what that release cannot read.
pub(crate) fn check_or_create(
    vfs: &dyn Vfs,
    dir: &Path,
    cluster_id: &str,
    node_id: NodeId,
    is_empty: bool,
) -> Result<DirInfo, OpenError> {
    let path: PathBuf = dir.join(META_FILE);
    let bytes = match vfs.read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && is_empty => {
            let info = DirInfo {
                format: BASE_FORMAT_VERSION,
                cluster_version: ClusterVersion::INITIAL,
            };
            write(vfs, dir, cluster_id, node_id, info).map_err(|source| OpenError::Io {
                op: "write",
                path,
                source,
            })?;
            return Ok(info);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(OpenError::BadMetadata {
                path,
                reason: "missing, but the directory holds log segments".into(),
            })
        }
        Err(source) => {
            return Err(OpenError::Io {
                op: "read",
                path,
                source,
            })
        }
    };
    let meta: Meta = serde_json::from_slice(&bytes).map_err(|e| OpenError::BadMetadata {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    if meta.format_version > FORMAT_VERSION {
        return Err(OpenError::NewerFormat {
            dir: dir.to_path_buf(),
            found: meta.format_version,
            supported: FORMAT_VERSION,
        });
    }
    if meta.format_version < OLDEST_FORMAT_VERSION {
        return Err(OpenError::OldFormat {
            dir: dir.to_path_buf(),
            found: meta.format_version,
            oldest: OLDEST_FORMAT_VERSION,
        });
    }
    if meta.cluster_id != cluster_id {
        return Err(OpenError::WrongCluster {
            dir: dir.to_path_buf(),
            found: meta.cluster_id,
            expected: cluster_id.to_string(),
        });
    }
    if meta.node_id != node_id {
        return Err(OpenError::WrongNode {
            dir: dir.to_path_buf(),
            found: meta.node_id,
            expected: node_id,
        });
    }
    let cluster_version = match &meta.cluster_version {
        None => ClusterVersion::INITIAL,
        Some(v) => ClusterVersion::parse(v).ok_or_else(|| OpenError::BadMetadata {
            path: path.clone(),
            reason: format!("cluster_version {v:?} is not major.minor"),
        })?,
    };
    let mut info = DirInfo {
        format: meta.format_version,
        cluster_version,
    };
    if info.format < BASE_FORMAT_VERSION {
        // This build reads the older format and writes the base one from now on: record
        // that, so that an older build refuses the directory instead of misreading new
        // records.
        info.format = BASE_FORMAT_VERSION;
        write(vfs, dir, cluster_id, node_id, info).map_err(|source| OpenError::Io {
            op: "write",
            path,
            source,
        })?;
    }
    Ok(info)
}
