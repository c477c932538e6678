//! Rolling upgrades: a cluster of the first release (0.1.0, built from its commit in this
//! repository's history by `scripts/build-release.sh`) moves to the current build one node
//! at a time, under a steady write, compare-and-swap and read load, without stopping.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use raft_chaos::run::{run, RunConfig};

/// `httpraft` as released at `version` (built once, then reused; the tests of this file
/// run at once, and only the first builds).
fn released(version: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, path)) = built.iter().find(|(v, _)| v == version) {
        return path.clone();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = common::run_ok(
        Command::new("bash")
            .arg(root.join("scripts/build-release.sh"))
            .arg(version)
            .current_dir(root),
    );
    let path = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    assert!(path.exists(), "{} was not built", path.display());
    built.push((version.to_string(), path.clone()));
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_of_0_1_0_upgrades_node_by_node_without_losing_a_write_or_stopping() {
    let old = released("0.1.0");
    let version = common::run_ok(Command::new(&old).arg("--version"));
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        "httpraft 0.1.0"
    );
    let new = common::binary();
    let dir = tempfile::tempdir().unwrap();

    let mut cfg = RunConfig::new(old.clone(), 20_261_207);
    cfg.upgrade_to = Some(new);
    cfg.dir = Some(dir.path().to_path_buf());
    cfg.duration = Duration::from_secs(20);
    cfg.pace = Duration::from_millis(800);
    let report = run(&cfg).await.unwrap();
    println!("{}", report.summary());

    // Linearizable, every acknowledged append in every node's log, and the cluster version
    // held at 0.1 until the last node ran the new build, then raised on every node.
    assert!(report.ok(), "{}", report.summary());
    let upgraded = report
        .faults
        .iter()
        .filter(|(_, what)| what.contains("started on the new build"))
        .count();
    assert_eq!(upgraded, 3, "{}", report.summary());
    let current = raft_core::ClusterVersion::CURRENT.to_string();
    assert!(
        report
            .faults
            .last()
            .is_some_and(|(_, what)| what.contains(&format!("→ {current} on every node"))),
        "{}",
        report.summary()
    );
    // The load never stops for longer than a leader change (the leader's own restart is
    // the one change the upgrade makes).
    assert!(
        report.longest_outage < Duration::from_secs(5),
        "{}",
        report.summary()
    );
    assert!(report.kv.acknowledged > 100 && report.log.acknowledged > 100);

    // Going back to 0.1.0 now (the cluster version is 0.2, the log holds what 0.1.0
    // cannot read) is refused with a clear message, before anything is changed.
    let meta_path = dir.path().join("data/node-0/meta.json");
    let meta_before =
        std::fs::read(&meta_path).unwrap_or_else(|e| panic!("{}: {e}", meta_path.display()));
    let mut back = Command::new(&old)
        .current_dir(dir.path())
        .args(["0", "--peers", "peers.json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while back.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            back.kill().unwrap();
            panic!("release 0.1.0 started on a directory of cluster version 0.2");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = back.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains(&format!(
            "has format version {}",
            raft_storage::FORMAT_VERSION
        )) && said.contains("upgrade the binary"),
        "{said}"
    );
    assert_eq!(std::fs::read(&meta_path).unwrap(), meta_before);
}

/// Until the cluster version rises, an upgraded node can go back: 0.1.0 opens the
/// directory the new build used (still format 3), and the node rejoins with its data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_the_cluster_version_rises_a_node_can_go_back_to_0_1_0() {
    use raft_chaos::cluster::{Cluster, NetworkMode};
    let old = released("0.1.0");
    let new = common::binary();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(&old, dir.path(), 3, &[], NetworkMode::Proxies)
        .await
        .unwrap();
    let apis = cluster.endpoints.read().unwrap().clone();
    let client = raft_http_client::Client::new(&apis).unwrap();
    client.put("before", "0.1.0").await.unwrap();

    let leader = cluster.wait_leader(Duration::from_secs(30)).await.unwrap();
    let node = (0..3).find(|&id| id != leader).unwrap();
    cluster.upgrade(node, &new).await.unwrap();
    cluster
        .wait_caught_up(node, Duration::from_secs(60))
        .await
        .unwrap();
    client.put("during", "mixed").await.unwrap();
    let status = cluster.status_of(node).await.unwrap();
    assert_eq!(status["version"]["cluster"], "0.1", "{status}");
    let meta =
        std::fs::read_to_string(dir.path().join(format!("data/node-{node}/meta.json"))).unwrap();
    assert!(meta.contains("\"format_version\": 3"), "{meta}");

    // Back to 0.1.0 on the same directory: it starts and catches up.
    cluster.upgrade(node, &old).await.unwrap();
    client.put("after", "rolled back").await.unwrap();
    cluster
        .wait_caught_up(node, Duration::from_secs(60))
        .await
        .unwrap();
    let on_node = client.via(&apis[node as usize]);
    for (k, v) in [
        ("before", "0.1.0"),
        ("during", "mixed"),
        ("after", "rolled back"),
    ] {
        let got = on_node
            .get_with(k, raft_http_client::Consistency::Local)
            .await
            .unwrap();
        assert_eq!(got.map(|g| g.value).as_deref(), Some(v), "{k}");
    }
    cluster.shutdown();
}
