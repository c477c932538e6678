//! Snapshot files in the data directory: `snapshots/<index>-<term>.snap`.
//!
//! A file is the state machine's bytes followed by a trailer that names what they cover and
//! checks them:
//!
//! ```text
//! data (any length) | postcard(Trailer { meta, data_len, data_crc }) | trailer_len: u32 LE | "RAFTSNP3"
//! ```
//!
//! Once the cluster version is past the first (0.1), the trailer also names it and the file
//! ends in `"RAFTSNP4"`, so that a node installing the snapshot learns the cluster version
//! the log it replaces had raised; before that, files end in `"RAFTSNP3"`, which release
//! 0.1.0 reads. Files ending in `"RAFTSNAP"` were written before snapshots carried the
//! configuration: their trailer names the voters only, and they are read as a configuration
//! of those voters.
//!
//! Files are written to a temporary name, synced and renamed, so a file under its final name
//! is always whole. Every file operation goes through the node's [`Vfs`] (the real file
//! system, or a simulated disk). Snapshots received from a leader arrive in `incoming-<index>-<term>.part`,
//! synced chunk by chunk, so an interrupted transfer resumes where it stopped.

use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use raft_core::{ClusterVersion, LogIndex, Membership, NodeId, SnapshotMeta, Term};
use raft_net::VersionFloor;
use raft_storage::{Vfs, VfsFile};
use serde::{Deserialize, Serialize};

/// The directory of snapshot files, inside the data directory.
pub const SNAPSHOT_DIR: &str = "snapshots";
const MAGIC: &[u8; 8] = b"RAFTSNP3";
/// The end marker of files whose trailer names the cluster version too.
const MAGIC_V4: &[u8; 8] = b"RAFTSNP4";
/// The end marker of files whose trailer names the voters only.
const MAGIC_V2: &[u8; 8] = b"RAFTSNAP";
/// Bytes of the fixed end of a file: trailer length and magic.
const END_BYTES: u64 = 12;
/// The largest trailer accepted (it holds the metadata: a few voters).
const MAX_TRAILER: u32 = 1 << 20;

#[derive(Debug, Serialize, Deserialize)]
struct Trailer {
    meta: SnapshotMeta,
    data_len: u64,
    data_crc: u32,
}

/// The trailer of files ending in [`MAGIC_V4`]: the [`Trailer`], then the cluster version.
#[derive(Debug, Serialize, Deserialize)]
struct TrailerV4 {
    trailer: Trailer,
    cluster_version: ClusterVersion,
}

/// The trailer of files ending in [`MAGIC_V2`].
#[derive(Debug, Deserialize)]
struct TrailerV2 {
    index: LogIndex,
    term: Term,
    voters: Vec<NodeId>,
    data_len: u64,
    data_crc: u32,
}

impl From<TrailerV2> for Trailer {
    fn from(old: TrailerV2) -> Self {
        Trailer {
            meta: SnapshotMeta {
                index: old.index,
                term: old.term,
                membership: Membership::new(old.voters),
            },
            data_len: old.data_len,
            data_crc: old.data_crc,
        }
    }
}

/// Reads a record of `len` bytes of a state machine's snapshot into `buf`, growing it as
/// the bytes come: a length that lies costs no more memory than the bytes that follow it.
pub(crate) fn read_record(data: &mut dyn Read, len: u32, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.clear();
    data.take(u64::from(len)).read_to_end(buf)?;
    if buf.len() != len as usize {
        return Err(invalid(format!(
            "a snapshot record of {len} bytes is cut short at {}",
            buf.len()
        )));
    }
    Ok(())
}

/// A complete, verified snapshot file.
#[derive(Clone, Debug)]
pub(crate) struct SnapshotFile {
    pub(crate) path: PathBuf,
    pub(crate) meta: SnapshotMeta,
    /// The whole file's length (what a transfer sends).
    pub(crate) size: u64,
    pub(crate) data_len: u64,
    /// The cluster version when it was written.
    pub(crate) cluster_version: ClusterVersion,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn file_name(index: LogIndex, term: Term) -> String {
    format!("{index:020}-{term:020}.snap")
}

fn part_name(index: LogIndex, term: Term) -> String {
    format!("incoming-{index:020}-{term:020}.part")
}

/// A writer that checksums and counts what goes through it.
struct Checked<W> {
    inner: W,
    crc: u32,
    len: u64,
}

impl<W: Write> Write for Checked<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Bytes a snapshot file is written between syncs. Writing a large snapshot in one go
/// leaves gigabytes of dirty pages that the kernel flushes in a burst; on common file
/// systems the log's own `fdatasync` then waits behind that burst for seconds, long enough
/// for heartbeats to stop and elections to start. Syncing as it goes keeps the burst small.
pub(crate) const SYNC_EVERY_BYTES: u64 = 16 << 20;

/// A writer appending to a file, syncing what went through it every `every` bytes.
struct SyncEvery {
    file: Box<dyn VfsFile>,
    every: u64,
    unsynced: u64,
}

impl Write for SyncEvery {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.append(buf)?;
        self.unsynced += buf.len() as u64;
        if self.unsynced >= self.every {
            self.file.sync_data()?;
            self.unsynced = 0;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A reader of a file from `at`, up to `end`.
struct FileReader {
    file: Box<dyn VfsFile>,
    at: u64,
    end: u64,
}

impl Read for FileReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end.saturating_sub(self.at);
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        if n == 0 {
            return Ok(0);
        }
        self.file.read_exact_at(&mut buf[..n], self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// The snapshot files of one data directory.
#[derive(Clone)]
pub(crate) struct SnapshotStore {
    dir: PathBuf,
    vfs: Arc<dyn Vfs>,
    /// The cluster version new files name (the node's, shared).
    cluster_version: VersionFloor,
}

impl std::fmt::Debug for SnapshotStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl SnapshotStore {
    /// The snapshot files of `data_dir`, through `vfs`.
    pub(crate) fn open(data_dir: &Path, vfs: Arc<dyn Vfs>) -> io::Result<Self> {
        let dir = data_dir.join(SNAPSHOT_DIR);
        vfs.create_dir_all(&dir)?;
        Ok(SnapshotStore {
            dir,
            vfs,
            cluster_version: VersionFloor::default(),
        })
    }

    /// The same store, naming in new files the cluster version `cell` holds at the time.
    pub(crate) fn with_cluster_version(self, cell: VersionFloor) -> Self {
        SnapshotStore {
            cluster_version: cell,
            ..self
        }
    }

    /// The snapshot files of `data_dir` on the real file system.
    pub(crate) fn open_std(data_dir: &Path) -> io::Result<Self> {
        Self::open(data_dir, Arc::new(raft_storage::StdVfs))
    }

    /// Opens a file of the store to read it.
    pub(crate) fn open_file(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        self.vfs.open(path)
    }

    /// Removes a file of the store.
    pub(crate) fn remove(&self, path: &Path) -> io::Result<()> {
        self.vfs.remove(path)
    }

    pub(crate) fn path(&self, index: LogIndex, term: Term) -> PathBuf {
        self.dir.join(file_name(index, term))
    }

    /// Writes a snapshot: `write` produces the data; the file appears under its final name
    /// only once whole and durable.
    pub(crate) fn create(
        &self,
        meta: &SnapshotMeta,
        write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<SnapshotFile> {
        let final_path = self.path(meta.index, meta.term);
        let tmp = self
            .dir
            .join(format!("tmp-{}", file_name(meta.index, meta.term)));
        // A temporary file left by a crash is started again.
        match self.vfs.remove(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let file = SyncEvery {
            file: self.vfs.create(&tmp)?,
            every: SYNC_EVERY_BYTES,
            unsynced: 0,
        };
        let mut w = BufWriter::with_capacity(1 << 20, file);
        write_snapshot(&mut w, meta, self.cluster_version.get(), write)?;
        let file = w.into_inner().map_err(|e| e.into_error())?.file;
        file.sync_data()?;
        drop(file);
        self.vfs.rename(&tmp, &final_path)?;
        self.vfs.sync_dir(&self.dir)?;
        self.verify(&final_path)
    }

    /// Reads a file's trailer and checks its data against it.
    pub(crate) fn verify(&self, path: &Path) -> io::Result<SnapshotFile> {
        let (f, size, trailer, cluster_version) = self.open_with_trailer(path)?;
        let mut crc = 0u32;
        let mut at = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        while at < trailer.data_len {
            let n = (trailer.data_len - at).min(buf.len() as u64) as usize;
            f.read_exact_at(&mut buf[..n], at)?;
            crc = crc32c::crc32c_append(crc, &buf[..n]);
            at += n as u64;
        }
        if crc != trailer.data_crc {
            return Err(invalid(format!(
                "snapshot {} fails its checksum",
                path.display()
            )));
        }
        Ok(SnapshotFile {
            path: path.to_path_buf(),
            meta: trailer.meta,
            size,
            data_len: trailer.data_len,
            cluster_version,
        })
    }

    /// Opens a file and reads its trailer: the file, its size, the trailer and the cluster
    /// version it names.
    fn open_with_trailer(
        &self,
        path: &Path,
    ) -> io::Result<(Box<dyn VfsFile>, u64, Trailer, ClusterVersion)> {
        let f = self.vfs.open(path)?;
        let size = f.size()?;
        let (trailer, cluster_version) = read_trailer(&*f, size)?;
        Ok((f, size, trailer, cluster_version))
    }

    /// The cluster version named by the file covering `meta` (its trailer only is read).
    pub(crate) fn cluster_version_of(&self, meta: &SnapshotMeta) -> Option<ClusterVersion> {
        let (_, _, trailer, v) = self
            .open_with_trailer(&self.path(meta.index, meta.term))
            .ok()?;
        (trailer.meta == *meta).then_some(v)
    }

    /// The snapshot file covering `meta`, if it is there and whole.
    pub(crate) fn find(&self, meta: &SnapshotMeta) -> Option<SnapshotFile> {
        let f = self.verify(&self.path(meta.index, meta.term)).ok()?;
        (f.meta == *meta).then_some(f)
    }

    /// A reader of the state machine's bytes of a snapshot file.
    pub(crate) fn data(&self, file: &SnapshotFile) -> io::Result<impl Read> {
        let reader = FileReader {
            file: self.vfs.open(&file.path)?,
            at: 0,
            end: file.data_len,
        };
        Ok(io::BufReader::with_capacity(1 << 20, reader))
    }

    /// Removes the snapshot files `keep` supersedes: those of an index up to its own (but
    /// `keep` itself and those in `busy`, being sent), and temporary files of such an index
    /// left by a crash. A file of a newer index is left alone: it is a snapshot received
    /// from the leader that storage is about to install, or one being written.
    pub(crate) fn remove_others(&self, keep: &SnapshotMeta, busy: &[PathBuf]) {
        let keep_name = file_name(keep.index, keep.term);
        let Ok(list) = self.vfs.list(&self.dir) else {
            return;
        };
        for path in list {
            let name = file_name_of(&path);
            let bare = name.strip_prefix("tmp-").unwrap_or(&name);
            if !bare.ends_with(".snap") || name == keep_name || busy.contains(&path) {
                continue;
            }
            // `<index:020>-<term:020>.snap`; a name that does not parse is not ours.
            let index = bare.get(..20).and_then(|d| d.parse::<LogIndex>().ok());
            if index.is_some_and(|i| i <= keep.index) {
                let _ = self.vfs.remove(&path);
            }
        }
    }

    // ----- receiving -----

    /// Where a snapshot being received is kept, and how much of it is there already (a
    /// part of another snapshot is removed: only one is received at a time).
    pub(crate) fn incoming(&self, meta: &SnapshotMeta) -> io::Result<(PathBuf, u64)> {
        let path = self.dir.join(part_name(meta.index, meta.term));
        if let Ok(list) = self.vfs.list(&self.dir) {
            for other in list {
                if file_name_of(&other).starts_with("incoming-") && other != path {
                    let _ = self.vfs.remove(&other);
                }
            }
        }
        let have = match self.vfs.open(&path) {
            Ok(f) => f.size()?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        Ok((path, have))
    }

    /// Appends a chunk at `offset` of a part (cutting anything past it), and syncs the part
    /// when `sync` is set. What survives a crash is whatever the part's length says (a
    /// resumed transfer starts there; the checksum at the end catches anything else).
    pub(crate) fn write_part(
        &self,
        path: &Path,
        offset: u64,
        data: &[u8],
        sync: bool,
    ) -> io::Result<()> {
        let f = match self.vfs.open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let f = self.vfs.create(path)?;
                // The part's name must survive a crash for a transfer to resume.
                self.vfs.sync_dir(&self.dir)?;
                f
            }
            Err(e) => return Err(e),
        };
        f.set_len(offset)?;
        f.append(data)?;
        if sync {
            f.sync_data()?;
        }
        Ok(())
    }

    /// A complete part: checked against what the leader said it was, then made a snapshot
    /// file.
    pub(crate) fn finish_part(
        &self,
        path: &Path,
        meta: &SnapshotMeta,
        size: u64,
    ) -> io::Result<SnapshotFile> {
        let f = self.vfs.open(path)?;
        f.sync_data()?;
        let have = f.size()?;
        drop(f);
        if have != size {
            return Err(invalid(format!(
                "received {have} bytes of a {size}-byte snapshot"
            )));
        }
        let f = self.verify(path)?;
        if f.meta != *meta {
            return Err(invalid(
                "the snapshot received is not the one offered".into(),
            ));
        }
        let final_path = self.path(meta.index, meta.term);
        self.vfs.rename(path, &final_path)?;
        self.vfs.sync_dir(&self.dir)?;
        Ok(SnapshotFile {
            path: final_path,
            ..f
        })
    }
}

/// Writes a whole snapshot file's bytes to `out`: the data `write` produces, then the
/// trailer naming `meta` (and `cluster_version`, once past the first) and checking the
/// data. The same bytes make a backup.
pub(crate) fn write_snapshot(
    out: &mut dyn Write,
    meta: &SnapshotMeta,
    cluster_version: ClusterVersion,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let mut checked = Checked {
        inner: out,
        crc: 0,
        len: 0,
    };
    write(&mut checked)?;
    let (data_len, data_crc) = (checked.len, checked.crc);
    let w = checked.inner;
    let trailer = Trailer {
        meta: meta.clone(),
        data_len,
        data_crc,
    };
    let (trailer, magic) = if cluster_version > ClusterVersion::INITIAL {
        let t = TrailerV4 {
            trailer,
            cluster_version,
        };
        (postcard::to_allocvec(&t), MAGIC_V4)
    } else {
        (postcard::to_allocvec(&trailer), MAGIC)
    };
    let trailer = trailer.map_err(|e| invalid(e.to_string()))?;
    w.write_all(&trailer)?;
    w.write_all(&(trailer.len() as u32).to_le_bytes())?;
    w.write_all(magic)?;
    w.flush()
}

/// The last component of `path`, as text.
fn file_name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default()
}

/// A file's trailer, and the cluster version it names.
fn read_trailer(f: &dyn VfsFile, size: u64) -> io::Result<(Trailer, ClusterVersion)> {
    if size < END_BYTES {
        return Err(invalid("not a snapshot file: too short".into()));
    }
    let mut end = [0u8; END_BYTES as usize];
    f.read_exact_at(&mut end, size - END_BYTES)?;
    let v2 = &end[4..] == MAGIC_V2;
    let v4 = &end[4..] == MAGIC_V4;
    if &end[4..] != MAGIC && !v2 && !v4 {
        return Err(invalid("not a snapshot file: no end marker".into()));
    }
    let mut len = [0u8; 4];
    len.copy_from_slice(&end[..4]);
    let len = u32::from_le_bytes(len);
    if len > MAX_TRAILER || u64::from(len) + END_BYTES > size {
        return Err(invalid("not a snapshot file: bad trailer length".into()));
    }
    let at = size - END_BYTES - u64::from(len);
    let mut buf = vec![0u8; len as usize];
    f.read_exact_at(&mut buf, at)?;
    let bad = |e: postcard::Error| invalid(format!("bad trailer: {e}"));
    let (trailer, cluster_version): (Trailer, _) = if v2 {
        let t = postcard::from_bytes::<TrailerV2>(&buf).map_err(bad)?;
        (t.into(), ClusterVersion::INITIAL)
    } else if v4 {
        let t = postcard::from_bytes::<TrailerV4>(&buf).map_err(bad)?;
        (t.trailer, t.cluster_version)
    } else {
        (
            postcard::from_bytes(&buf).map_err(bad)?,
            ClusterVersion::INITIAL,
        )
    };
    if trailer.data_len != at {
        return Err(invalid("not a snapshot file: data length mismatch".into()));
    }
    Ok((trailer, cluster_version))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::fs;
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn a_record_whose_length_lies_fails_without_taking_that_much_memory() {
        let mut buf = Vec::new();
        let err = read_record(&mut &b"abc"[..], 1 << 30, &mut buf).unwrap_err();
        assert!(err.to_string().contains("cut short at 3"), "{err}");
        assert!(buf.capacity() < 1 << 20, "{} bytes taken", buf.capacity());
        read_record(&mut &b"abcdef"[..], 4, &mut buf).unwrap();
        assert_eq!(buf, b"abcd");
    }

    fn meta(index: u64) -> SnapshotMeta {
        SnapshotMeta {
            index,
            term: 2,
            membership: raft_core::Membership::new([1, 2, 3]),
        }
    }

    #[test]
    fn cleaning_up_after_a_snapshot_keeps_newer_ones_received_for_installing() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open_std(dir.path()).unwrap();
        let write = |m: &SnapshotMeta| store.create(m, |w| w.write_all(b"state")).unwrap();
        let (old, kept, received) = (write(&meta(10)), write(&meta(63)), write(&meta(128)));
        // A crash left the temporary file of an older snapshot, and one of a newer one is
        // being written.
        let stale_tmp = store.dir.join(format!("tmp-{}", file_name(20, 2)));
        let writing_tmp = store.dir.join(format!("tmp-{}", file_name(140, 2)));
        fs::write(&stale_tmp, b"x").unwrap();
        fs::write(&writing_tmp, b"x").unwrap();
        // Snapshot 63 was installed (or taken) while 128 was received and not yet installed.
        store.remove_others(&meta(63), &[]);
        assert!(!old.path.exists(), "a superseded snapshot stays");
        assert!(!stale_tmp.exists(), "an older temporary file stays");
        assert!(kept.path.exists());
        assert!(received.path.exists(), "the received snapshot was removed");
        assert!(writing_tmp.exists(), "a snapshot being written was removed");
        assert!(store.find(&meta(128)).is_some());
    }

    /// Records appends and syncs.
    #[derive(Default)]
    struct Recorder {
        written: Mutex<u64>,
        synced_at: Mutex<Vec<u64>>,
    }

    struct RecordedFile(Arc<Recorder>);

    impl VfsFile for RecordedFile {
        fn append(&self, buf: &[u8]) -> io::Result<()> {
            *self.0.written.lock().unwrap() += buf.len() as u64;
            Ok(())
        }
        fn sync_data(&self) -> io::Result<()> {
            let written = *self.0.written.lock().unwrap();
            self.0.synced_at.lock().unwrap().push(written);
            Ok(())
        }
        fn read_exact_at(&self, _: &mut [u8], _: u64) -> io::Result<()> {
            Err(io::ErrorKind::Unsupported.into())
        }
        fn set_len(&self, _: u64) -> io::Result<()> {
            Err(io::ErrorKind::Unsupported.into())
        }
        fn size(&self) -> io::Result<u64> {
            Ok(*self.0.written.lock().unwrap())
        }
    }

    #[test]
    fn a_large_snapshot_is_synced_as_it_is_written() {
        let recorder = Arc::new(Recorder::default());
        let mut w = SyncEvery {
            file: Box::new(RecordedFile(recorder.clone())),
            every: 100,
            unsynced: 0,
        };
        for _ in 0..25 {
            w.write_all(&[7u8; 30]).unwrap();
        }
        // 750 bytes: a sync once at least 100 unsynced bytes were written, each time.
        assert_eq!(
            *recorder.synced_at.lock().unwrap(),
            vec![120, 240, 360, 480, 600, 720]
        );
    }

    #[test]
    fn a_snapshot_names_the_cluster_version_once_past_the_first_and_keeps_0_1_0s_format_before() {
        let dir = tempfile::tempdir().unwrap();
        let cell = VersionFloor::default();
        let store = SnapshotStore::open_std(dir.path())
            .unwrap()
            .with_cluster_version(cell.clone());
        let ends_with =
            |f: &SnapshotFile| fs::read(&f.path).unwrap()[f.size as usize - 8..].to_vec();

        let before = store.create(&meta(10), |w| w.write_all(b"state")).unwrap();
        assert_eq!(
            ends_with(&before),
            MAGIC.to_vec(),
            "what release 0.1.0 reads"
        );
        assert_eq!(before.cluster_version, ClusterVersion::INITIAL);

        let next = ClusterVersion { major: 0, minor: 7 };
        cell.raise(next);
        let after = store.create(&meta(20), |w| w.write_all(b"state")).unwrap();
        assert_eq!(ends_with(&after), MAGIC_V4.to_vec());
        assert_eq!(after.cluster_version, next);
        assert_eq!(store.cluster_version_of(&meta(20)), Some(next));
        assert_eq!(
            store.cluster_version_of(&meta(10)),
            Some(ClusterVersion::INITIAL)
        );
        assert_eq!(store.cluster_version_of(&meta(30)), None);
        let mut data = Vec::new();
        store.data(&after).unwrap().read_to_end(&mut data).unwrap();
        assert_eq!(data, b"state");
    }

    #[test]
    fn a_written_snapshot_reads_back_and_damage_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open_std(dir.path()).unwrap();
        let f = store
            .create(&meta(10), |w| w.write_all(&[7u8; 300_000]))
            .unwrap();
        assert_eq!(f.data_len, 300_000);
        let mut data = Vec::new();
        store.data(&f).unwrap().read_to_end(&mut data).unwrap();
        assert_eq!(data, vec![7u8; 300_000]);
        assert!(store.find(&meta(10)).is_some());
        assert!(store.find(&meta(11)).is_none());
        let mut bytes = fs::read(&f.path).unwrap();
        bytes[1234] ^= 1;
        fs::write(&f.path, bytes).unwrap();
        assert!(store.verify(&f.path).is_err());
        assert!(store.find(&meta(10)).is_none());
    }

    #[test]
    fn a_file_from_before_configurations_reads_as_a_configuration_of_its_voters() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open_std(dir.path()).unwrap();
        let data = vec![5u8; 1000];
        let trailer = postcard::to_allocvec(&(
            9u64,
            2u64,
            vec![1u64, 2, 3],
            data.len() as u64,
            crc32c::crc32c(&data),
        ))
        .unwrap();
        let mut bytes = data.clone();
        bytes.extend_from_slice(&trailer);
        bytes.extend_from_slice(&(trailer.len() as u32).to_le_bytes());
        bytes.extend_from_slice(MAGIC_V2);
        let path = dir.path().join("old.snap");
        fs::write(&path, bytes).unwrap();
        let f = store.verify(&path).unwrap();
        assert_eq!(
            f.meta,
            SnapshotMeta {
                index: 9,
                term: 2,
                membership: raft_core::Membership::new([1, 2, 3]),
            }
        );
        assert_eq!(f.data_len, 1000);
    }

    #[test]
    fn a_part_received_in_chunks_becomes_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open_std(dir.path()).unwrap();
        let src = store
            .create(&meta(5), |w| w.write_all(b"hello, snapshot"))
            .unwrap();
        let bytes = fs::read(&src.path).unwrap();
        let other = tempfile::tempdir().unwrap();
        let rx = SnapshotStore::open_std(other.path()).unwrap();
        let (part, have) = rx.incoming(&meta(5)).unwrap();
        assert_eq!(have, 0);
        rx.write_part(&part, 0, &bytes[..10], true).unwrap();
        // An interrupted transfer resumes where the part ends.
        let (part, have) = rx.incoming(&meta(5)).unwrap();
        assert_eq!(have, 10);
        rx.write_part(&part, have, &bytes[10..], false).unwrap();
        let done = rx.finish_part(&part, &meta(5), bytes.len() as u64).unwrap();
        assert_eq!(fs::read(&done.path).unwrap(), bytes);
        assert!(rx.find(&meta(5)).is_some());
        // A part of another snapshot is dropped when a new one starts.
        let (p6, _) = rx.incoming(&meta(6)).unwrap();
        rx.write_part(&p6, 0, b"xx", true).unwrap();
        let (_, have) = rx.incoming(&meta(7)).unwrap();
        assert_eq!(have, 0);
        assert!(!p6.exists());
    }
}
