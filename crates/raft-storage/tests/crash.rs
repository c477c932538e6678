//! Crash simulation: a child process appends with sync and reports each acknowledged
//! index; the parent kills it with SIGKILL at random moments and checks, after reopening,
//! that every acknowledged index is present with its data.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use raft_core::{Entry, LogStore};
use raft_storage::{LogStorage, StorageConfig};

const CHILD_ENV: &str = "RAFT_STORAGE_CRASH_CHILD";
const KILLS: u64 = 25;

fn cfg(dir: &Path) -> StorageConfig {
    let mut c = StorageConfig::new(dir, "crash", 1);
    c.segment_bytes = 16 << 10; // roll often, so kills also land around segment creation
    c
}

fn data(i: u64) -> Vec<u8> {
    format!("entry-{i}-{}", "y".repeat((i % 97) as usize)).into_bytes()
}

/// The child: appends batches forever (bounded), printing `ack N` after each durable write.
fn child(dir: &str) {
    let mut log = LogStorage::open(cfg(Path::new(dir))).expect("child opens the log");
    let mut out = std::io::stdout().lock();
    let mut next = log.last_index() + 1;
    for round in 0..20_000u64 {
        let n = 1 + (round * 7 + next) % 16;
        let batch: Vec<Entry> = (next..next + n)
            .map(|i| Entry::normal(1, i, data(i)))
            .collect();
        log.write(&batch, None).expect("child write");
        next += n;
        writeln!(out, "ack {}", next - 1).expect("stdout");
        out.flush().expect("stdout");
    }
}

#[test]
fn acknowledged_appends_survive_sigkill_at_random_moments() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(&dir);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = 0x5eed_u64;
    let mut highest_acked = 0;
    for kill in 0..KILLS {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let acks_before_kill = 1 + rng % 40;
        let mut proc = Command::new(&exe)
            .args([
                "--exact",
                "acknowledged_appends_survive_sigkill_at_random_moments",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = proc.stdout.take().unwrap();
        let mut seen = 0;
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some(n) = line.strip_prefix("ack ") {
                highest_acked = highest_acked.max(n.parse::<u64>().unwrap());
                seen += 1;
                if seen == acks_before_kill {
                    break;
                }
            }
        }
        proc.kill().unwrap(); // SIGKILL, possibly in the middle of a write
        proc.wait().unwrap();
        assert!(seen > 0, "kill {kill}: the child acknowledged nothing");
        let log = LogStorage::open(cfg(dir.path())).unwrap();
        assert!(
            log.last_index() >= highest_acked,
            "kill {kill}: acknowledged {highest_acked} but the log ends at {}",
            log.last_index()
        );
        for e in log.entries(1, highest_acked + 1, u64::MAX).unwrap() {
            assert_eq!(
                e.data,
                data(e.index),
                "kill {kill}: entry {} damaged",
                e.index
            );
        }
    }
    assert!(highest_acked > KILLS, "the children made progress");
}
