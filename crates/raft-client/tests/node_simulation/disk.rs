//! The simulated disk of a node's Raft log and key-value store: files in memory, with what
//! a sync made durable kept apart from what was only written (the store's database writes
//! anywhere in its file: a crash takes it back to its last sync). A crash keeps the durable state, plus a torn
//! prefix of each file's unsynced tail; a file created or removed since its directory was
//! last synced comes back as it was. A disk that lies (`RAFT_NODE_SIM_FSYNC_LIES=1`)
//! acknowledges syncs and does nothing. A failing disk fails writes (ENOSPC, after part of
//! the write), syncs and reads (EIO) at random.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use raft_storage::{Vfs, VfsFile};

use crate::rng::Rng;

#[derive(Default)]
struct Content {
    data: Vec<u8>,
    durable: Vec<u8>,
    /// Written anywhere (a database), not only appended to: see `SimDisk::crash`.
    random_access: bool,
}

type Obj = Arc<Mutex<Content>>;

struct State {
    /// The directory as the node sees it.
    visible: BTreeMap<PathBuf, Obj>,
    /// The directory as a crash leaves it.
    durable: BTreeMap<PathBuf, Obj>,
    lies: bool,
    /// Chance in a thousand that a write, sync or read fails (EIO, or ENOSPC for a write,
    /// after writing part of it).
    errors_per_mille: u64,
    /// Counts crashes: a database file opened before the last one belongs to a process
    /// that is gone, and can no longer write (or read) anything.
    crashes: u64,
    rng: Rng,
}

/// One node's disk; it outlives the node's incarnations.
#[derive(Clone)]
pub struct SimDisk(Arc<Mutex<State>>);

impl SimDisk {
    pub fn new(rng: Rng, lies: bool) -> SimDisk {
        SimDisk(Arc::new(Mutex::new(State {
            visible: BTreeMap::new(),
            durable: BTreeMap::new(),
            lies,
            errors_per_mille: 0,
            crashes: 0,
            rng,
        })))
    }

    /// From now on, this chance in a thousand that an operation fails.
    pub fn set_errors(&self, per_mille: u64) {
        self.0.lock().unwrap().errors_per_mille = per_mille;
    }

    /// Whether the next operation fails.
    fn fails(&self) -> bool {
        let mut st = self.0.lock().unwrap();
        let p = st.errors_per_mille;
        p > 0 && st.rng.below(1000) < p
    }

    /// The node crashed: what was not synced is lost, but for a torn prefix of each file's
    /// unsynced appends; a database file goes back to its last sync, at its length then
    /// or (half the time) at its longer length now, the space it gained zeroed. Returns how
    /// many bytes were lost.
    pub fn crash(&self) -> u64 {
        let mut st = self.0.lock().unwrap();
        st.crashes += 1;
        let mut lost = 0u64;
        let objs: Vec<Obj> = st.durable.values().cloned().collect();
        for obj in objs {
            let mut c = obj.lock().unwrap();
            let appended_only = !c.random_access && c.data.starts_with(&c.durable);
            let mut survived = c.durable.clone();
            if c.random_access && c.data.len() > survived.len() && st.rng.below(2) == 0 {
                // The file's new length reached the disk, and none of what was written
                // in the space it gained.
                survived.resize(c.data.len(), 0);
            }
            if appended_only {
                let tail = &c.data[c.durable.len()..];
                let keep = st.rng.below(tail.len() as u64 + 1) as usize;
                survived.extend_from_slice(&tail[..keep]);
            }
            lost += c.data.len().saturating_sub(survived.len()) as u64;
            c.data = survived.clone();
            c.durable = survived;
        }
        for (path, obj) in &st.visible {
            if !st.durable.contains_key(path) {
                lost += obj.lock().unwrap().data.len() as u64;
            }
        }
        st.visible = st.durable.clone();
        lost
    }
}

impl SimDisk {
    /// Bit rot or a careless operator: each snapshot file (`*.snap`) is removed or has one
    /// byte flipped, durably. Returns what was done, for the record.
    pub fn damage_snapshots(&self) -> Vec<String> {
        let mut st = self.0.lock().unwrap();
        let files: Vec<PathBuf> = st
            .visible
            .keys()
            .filter(|p| p.extension().is_some_and(|e| e == "snap"))
            .cloned()
            .collect();
        let mut done = Vec::new();
        for path in files {
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if st.rng.below(2) == 0 {
                st.visible.remove(&path);
                st.durable.remove(&path);
                done.push(format!("removed {name}"));
                continue;
            }
            let obj = st.visible[&path].clone();
            let mut c = obj.lock().unwrap();
            if c.data.is_empty() {
                continue;
            }
            let at = st.rng.below(c.data.len() as u64) as usize;
            c.data[at] ^= 0x40;
            if at < c.durable.len() {
                c.durable[at] ^= 0x40;
            }
            done.push(format!("flipped a bit of {name} at byte {at}"));
        }
        done
    }
}

/// Reads exactly `out.len()` bytes of a file at `offset`.
fn read_at(obj: &Obj, out: &mut [u8], offset: u64) -> io::Result<()> {
    let c = obj.lock().unwrap();
    let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
    let end = start
        .checked_add(out.len())
        .filter(|&e| e <= c.data.len())
        .ok_or(io::ErrorKind::UnexpectedEof)?;
    out.copy_from_slice(&c.data[start..end]);
    Ok(())
}

/// Cuts or extends (with zeros) a file to `len` bytes.
fn set_len(obj: &Obj, len: u64) -> io::Result<()> {
    let len = usize::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
    obj.lock().unwrap().data.resize(len, 0);
    Ok(())
}

struct SimFile {
    obj: Obj,
    disk: SimDisk,
}

/// A file the key-value store's database lives in, on a simulated disk.
pub struct DbFile {
    obj: Obj,
    disk: SimDisk,
    /// The disk's crash count when it was opened.
    opened_at: u64,
}

impl DbFile {
    /// Fails if the process that opened it crashed since (its database object may be
    /// dropped later, and must not write into what the crash left), or at the disk's
    /// failure rate.
    fn check(&self) -> io::Result<()> {
        let gone = self.disk.0.lock().unwrap().crashes != self.opened_at;
        if gone || self.disk.fails() {
            return Err(io::Error::from_raw_os_error(5)); // EIO
        }
        Ok(())
    }
}

impl std::fmt::Debug for DbFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DbFile")
    }
}

impl SimDisk {
    /// The file at `path`, created empty (and durable) if there is none.
    pub fn db_file(&self, path: &Path) -> DbFile {
        let mut st = self.0.lock().unwrap();
        let obj = st.visible.entry(path.to_path_buf()).or_default().clone();
        obj.lock().unwrap().random_access = true;
        st.durable.insert(path.to_path_buf(), obj.clone());
        DbFile {
            obj,
            disk: self.clone(),
            opened_at: st.crashes,
        }
    }
}

impl redb::StorageBackend for DbFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.obj.lock().unwrap().data.len() as u64)
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.check()?;
        read_at(&self.obj, out, offset)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check()?;
        set_len(&self.obj, len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.check()?;
        if self.disk.0.lock().unwrap().lies {
            return Ok(());
        }
        let mut c = self.obj.lock().unwrap();
        c.durable = c.data.clone();
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.check()?;
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        let end = start
            .checked_add(data.len())
            .ok_or(io::ErrorKind::InvalidInput)?;
        let mut c = self.obj.lock().unwrap();
        if c.data.len() < end {
            c.data.resize(end, 0);
        }
        c.data[start..end].copy_from_slice(data);
        Ok(())
    }
}

impl VfsFile for SimFile {
    fn append(&self, buf: &[u8]) -> io::Result<()> {
        if self.disk.fails() {
            // The disk filled up part way.
            let part = buf.len() / 2;
            self.obj
                .lock()
                .unwrap()
                .data
                .extend_from_slice(&buf[..part]);
            return Err(io::Error::from_raw_os_error(28)); // ENOSPC
        }
        self.obj.lock().unwrap().data.extend_from_slice(buf);
        Ok(())
    }
    fn sync_data(&self) -> io::Result<()> {
        if self.disk.fails() {
            return Err(io::Error::from_raw_os_error(5)); // EIO
        }
        if self.disk.0.lock().unwrap().lies {
            return Ok(());
        }
        let mut c = self.obj.lock().unwrap();
        c.durable = c.data.clone();
        Ok(())
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if self.disk.fails() {
            return Err(io::Error::from_raw_os_error(5)); // EIO
        }
        read_at(&self.obj, buf, offset)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        set_len(&self.obj, len)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.obj.lock().unwrap().data.len() as u64)
    }
}

impl Vfs for SimDisk {
    fn open(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        let obj = self.0.lock().unwrap().visible.get(path).cloned();
        let obj = obj.ok_or(io::ErrorKind::NotFound)?;
        Ok(Box::new(SimFile {
            obj,
            disk: self.clone(),
        }))
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        let mut st = self.0.lock().unwrap();
        if st.visible.contains_key(path) {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        let obj = Obj::default();
        st.visible.insert(path.to_path_buf(), obj.clone());
        Ok(Box::new(SimFile {
            obj,
            disk: self.clone(),
        }))
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let obj = self.0.lock().unwrap().visible.get(path).cloned();
        let obj = obj.ok_or(io::ErrorKind::NotFound)?;
        let data = obj.lock().unwrap().data.clone();
        Ok(data)
    }
    fn write_atomic(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let mut st = self.0.lock().unwrap();
        let lies = st.lies;
        let obj = Arc::new(Mutex::new(Content {
            data: data.to_vec(),
            durable: if lies { Vec::new() } else { data.to_vec() },
            random_access: false,
        }));
        st.visible.insert(path.to_path_buf(), obj.clone());
        if !lies {
            st.durable.insert(path.to_path_buf(), obj);
        }
        Ok(())
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let st = self.0.lock().unwrap();
        Ok(st
            .visible
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .cloned()
            .collect())
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut st = self.0.lock().unwrap();
        st.visible
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| io::ErrorKind::NotFound.into())
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.0.lock().unwrap();
        let obj = st.visible.remove(from).ok_or(io::ErrorKind::NotFound)?;
        st.visible.insert(to.to_path_buf(), obj);
        Ok(())
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.0.lock().unwrap();
        if st.lies {
            return Ok(());
        }
        st.durable.retain(|p, _| p.parent() != Some(dir));
        let entries: Vec<(PathBuf, Obj)> = st
            .visible
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .map(|(p, o)| (p.clone(), o.clone()))
            .collect();
        st.durable.extend(entries);
        Ok(())
    }
    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }
}
