//! A node's files are its own: directories are made `0700` and files `0600`, whatever the
//! process's umask (a umask of `000` would otherwise leave the log, the map and the keys
//! readable and writable by every user of the machine).
//!
//! Everything this crate and `raft-client` create goes through these helpers;
//! [`tighten`] fixes a data directory written with looser modes (by an older version, or
//! copied by hand).

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The mode of every directory a node makes.
pub const DIR_MODE: u32 = 0o700;
/// The mode of every file a node makes.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` and its missing parents, each `0700`.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Options that create files `0600` (add what to do: read, write, create, ...).
pub fn file_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(FILE_MODE);
    o
}

/// Creates (or truncates) `path` for writing, `0600`, like [`File::create`].
pub fn create_file(path: &Path) -> io::Result<File> {
    file_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
}

/// Makes `dir` and everything under it private: directories `0700`, files `0600`, where
/// they are looser. Symbolic links are left alone (not followed).
pub fn tighten(dir: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(dir)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let (want, is_dir) = if meta.is_dir() {
        (DIR_MODE, true)
    } else {
        (FILE_MODE, false)
    };
    if meta.permissions().mode() & 0o777 & !want != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(want))?;
    }
    if is_dir {
        for entry in std::fs::read_dir(dir)? {
            tighten(&entry?.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn what_is_made_here_is_private_and_tighten_fixes_what_is_not() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("a/b");
        create_dir_all(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&base.path().join("a")), 0o700);
        let f = dir.join("f");
        drop(create_file(&f).unwrap());
        assert_eq!(mode(&f), 0o600);
        // Loose modes, as an older version under umask 000 left them.
        let loose = base.path().join("old");
        std::fs::create_dir(&loose).unwrap();
        std::fs::write(loose.join("seg"), b"x").unwrap();
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::set_permissions(loose.join("seg"), std::fs::Permissions::from_mode(0o666))
            .unwrap();
        // A stricter mode is kept as it is.
        std::fs::write(loose.join("ro"), b"x").unwrap();
        std::fs::set_permissions(loose.join("ro"), std::fs::Permissions::from_mode(0o400)).unwrap();
        tighten(&loose).unwrap();
        assert_eq!(mode(&loose), 0o700);
        assert_eq!(mode(&loose.join("seg")), 0o600);
        assert_eq!(mode(&loose.join("ro")), 0o400);
    }
}
