//! Recovery against damaged logs: a segment mutated at random (bytes overwritten, cut,
//! garbage appended) never makes the open panic; it either recovers a prefix of what was
//! written, exactly, or refuses with an error.
//!
//! `RAFT_FUZZ_CASES=<n>` runs more cases: the long mode, see docs/testing.md (Fuzzing).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use raft_core::{Entry, LogStore};
use raft_storage::{LogStorage, StorageConfig, SyncPolicy, WAL_DIR};

fn cases() -> u32 {
    std::env::var("RAFT_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

fn cfg(dir: &Path) -> StorageConfig {
    let mut c = StorageConfig::new(dir, "fuzz", 1);
    c.sync = SyncPolicy::Never;
    c
}

fn entry(index: u64) -> Entry {
    Entry::normal(1, index, vec![index as u8; (index % 40) as usize])
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut s: Vec<PathBuf> = fs::read_dir(dir.join(WAL_DIR))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    s.sort();
    s
}

/// One change to a segment's bytes.
#[derive(Clone, Debug)]
enum Damage {
    /// Overwrite the byte at this fraction of the file.
    Overwrite(f64, u8),
    /// Cut the file at this fraction.
    Truncate(f64),
    /// Append these bytes.
    Append(Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (0.0..1.0f64, any::<u8>()).prop_map(|(f, b)| Damage::Overwrite(f, b)),
        (0.0..1.0f64).prop_map(Damage::Truncate),
        proptest::collection::vec(any::<u8>(), 1..64).prop_map(Damage::Append),
    ]
}

fn apply(path: &Path, d: &Damage) {
    let mut bytes = fs::read(path).unwrap();
    match d {
        Damage::Overwrite(f, b) if !bytes.is_empty() => {
            let i = ((bytes.len() as f64 * f) as usize).min(bytes.len() - 1);
            bytes[i] = *b;
        }
        Damage::Overwrite(..) => {}
        Damage::Truncate(f) => bytes.truncate((bytes.len() as f64 * f) as usize),
        Damage::Append(more) => bytes.extend_from_slice(more),
    }
    fs::write(path, bytes).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn a_damaged_segment_recovers_a_prefix_exactly_or_is_refused(
        n in 1u64..60,
        damages in proptest::collection::vec(damage(), 1..4),
    ) {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = LogStorage::open(cfg(dir.path())).unwrap();
            for i in 1..=n {
                log.write(&[entry(i)], None).unwrap();
            }
        }
        let seg = segments(dir.path()).pop().unwrap();
        for d in &damages {
            apply(&seg, d);
        }
        match LogStorage::open(cfg(dir.path())) {
            Ok(log) => {
                let last = log.last_index();
                prop_assert!(last <= n, "recovered {last} entries of {n}");
                if last > 0 {
                    let got = log.entries(1, last + 1, u64::MAX).unwrap();
                    let want: Vec<Entry> = (1..=last).map(entry).collect();
                    prop_assert_eq!(got, want);
                }
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
}
