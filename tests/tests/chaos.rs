//! The fault harness (`raft-chaos`) in its short mode: real `httpraft` processes under
//! every kind of fault, their histories checked; and the harness's own test, a build broken
//! on purpose that it must catch.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use raft_chaos::linearizable::Verdict;
use raft_chaos::nemesis::FaultKind;
use raft_chaos::run::{run, RunConfig};

/// The two binaries the tests run, built once before either test starts (so that no run
/// competes with a compiler): the right one and the one broken on purpose. Each is copied
/// next to `target/release/httpraft` under its own name, since the build with the other
/// features overwrites that file.
fn binaries() -> &'static (PathBuf, PathBuf) {
    static BUILT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BUILT.get_or_init(|| {
        let copy = |bin: &Path, name: &str| {
            let to = bin.with_file_name(name);
            std::fs::copy(bin, &to).unwrap();
            to
        };
        let good = copy(&common::binary(), "httpraft-chaos-run");
        let broken = copy(
            &common::build_with("httpraft", &["stale-linearizable-reads"]),
            "httpraft-stale-reads",
        );
        // Put the right binary back for the other end-to-end tests.
        common::build_with("httpraft", &[]);
        (good, broken)
    })
}

/// The seed of the short run: `RAFT_CHAOS_SEED` to replay or explore another schedule.
fn seed() -> u64 {
    std::env::var("RAFT_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_127)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_every_kind_of_fault_the_log_and_the_key_value_history_stay_correct() {
    let mut cfg = RunConfig::new(binaries().0.clone(), seed());
    cfg.duration = Duration::from_secs(20);
    cfg.pace = Duration::from_millis(800);
    cfg.every_kind = true;
    let report = run(&cfg).await.unwrap();
    println!("{}", report.summary());
    assert!(report.ok(), "{}", report.summary());
    for kind in FaultKind::ALL {
        assert!(
            report.faults_by_kind.get(&kind).is_some_and(|&n| n > 0),
            "{kind} was never injected\n{}",
            report.summary()
        );
    }
    assert!(report.kv.acknowledged > 100 && report.log.acknowledged > 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_that_serves_linearizable_reads_from_the_local_map_is_caught() {
    let mut cfg = RunConfig::new(binaries().1.clone(), seed());
    cfg.duration = Duration::from_secs(10);
    let report = run(&cfg).await.unwrap();
    println!("{}", report.summary());
    assert!(
        matches!(report.verdict, Verdict::NotLinearizable(_)),
        "the stale reads went unnoticed:\n{}",
        report.summary()
    );
    // The evidence was kept for a person to read; this one is expected.
    let _ = std::fs::remove_dir_all(&report.dir);
}
