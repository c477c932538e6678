//! `raftctl` against a real cluster: every command, its output and its exit status.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Output, Stdio};

use common::Cluster;
use serde_json::Value;

fn raftctl() -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| common::build_with("raftctl", &[]))
        .clone()
}

/// Runs `raftctl --endpoints <all> args...` to completion.
fn ctl(c: &Cluster, args: &[&str]) -> Output {
    Command::new(raftctl())
        .arg("--endpoints")
        .arg(c.apis.join(","))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raftctl_drives_a_cluster_with_script_friendly_output_and_exit_codes() {
    let c = Cluster::start(3).await;
    c.leader().await;

    // Keys: put, get, a missing key, compare-and-swap both ways, delete, list.
    let o = ctl(&c, &["put", "app/db", "db1"]);
    assert_eq!(code(&o), 0, "{o:?}");
    assert_eq!(stdout(&ctl(&c, &["get", "app/db"])).trim(), "db1");
    let o = ctl(&c, &["get", "app/nothing"]);
    assert_eq!(code(&o), 3, "a missing key: {o:?}");
    let o = ctl(&c, &["cas", "app/db", "db2", "--expect", "wrong"]);
    assert_eq!(code(&o), 4, "{o:?}");
    assert!(stdout(&o).contains("holds \"db1\""), "{}", stdout(&o));
    let o = ctl(&c, &["--json", "cas", "app/db", "db2", "--expect", "db1"]);
    assert_eq!(code(&o), 0, "{o:?}");
    let w: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(w["previous"], "db1");
    let o = ctl(&c, &["cas", "app/db", "db3"]);
    assert_eq!(code(&o), 2, "a cas without a condition is a usage error");
    let o = ctl(&c, &["cas", "app/new", "x", "--absent"]);
    assert_eq!(code(&o), 0, "{o:?}");
    let o = ctl(&c, &["--json", "get", "app/db"]);
    let kv: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        (&kv["value"], kv["revision"].as_u64()),
        (&Value::from("db2"), w["index"].as_u64())
    );
    let o = ctl(&c, &["ls", "app/"]);
    let listed = stdout(&o);
    let keys: Vec<&str> = listed
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(keys, ["app/db", "app/new"]);
    assert_eq!(code(&ctl(&c, &["del", "app/new"])), 0);
    assert_eq!(code(&ctl(&c, &["get", "app/new"])), 3);

    // The log: append, then read it back as JSON lines.
    let o = ctl(&c, &["append", "hello from raftctl"]);
    assert_eq!(code(&o), 0, "{o:?}");
    let index: u64 = stdout(&o).trim().parse().unwrap();
    let o = ctl(&c, &["--json", "log", "--from", "1"]);
    let entries: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(entries
        .iter()
        .any(|e| e["index"].as_u64() == Some(index) && e["entry"] == "hello from raftctl"));

    // A watch and a follow from after the append see what is written next (from a
    // revision, so it does not matter when they connect).
    let watch = Command::new(raftctl())
        .args([
            "--endpoints",
            &c.apis.join(","),
            "--json",
            "watch",
            "app/",
            "--from-revision",
            &(index + 1).to_string(),
            "--count",
            "2",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let follow = Command::new(raftctl())
        .args([
            "--endpoints",
            &c.apis.join(","),
            "log",
            "--follow",
            "--from",
            &(index + 1).to_string(),
            "--count",
            "2",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(code(&ctl(&c, &["put", "app/w", "1"])), 0);
    assert_eq!(code(&ctl(&c, &["del", "app/w"])), 0);
    let watched = tokio::task::spawn_blocking(move || watch.wait_with_output().unwrap())
        .await
        .unwrap();
    let events: Vec<Value> = stdout(&watched)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events[0]["type"], "put");
    assert_eq!(events[1]["type"], "delete");
    let followed = tokio::task::spawn_blocking(move || follow.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(stdout(&followed).lines().count(), 2, "{followed:?}");

    // Cluster commands.
    let o = ctl(&c, &["status"]);
    assert_eq!(
        stdout(&o).lines().count(),
        4,
        "a header and one line per endpoint"
    );
    let o = ctl(&c, &["--json", "members"]);
    let members: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(members.as_array().unwrap().len(), 3);
    let leader = c.leader().await as u64;
    let to = (leader + 1) % 3;
    let o = ctl(&c, &["transfer-leader", &to.to_string()]);
    assert_eq!(code(&o), 0, "{o:?}");
    assert_eq!(stdout(&o).trim(), format!("node {to} leads"));
    let file = c.dir.path().join("backup.snap");
    let o = ctl(&c, &["snapshot", "save", file.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{o:?}");
    assert!(std::fs::metadata(&file).unwrap().len() > 0);

    // Nothing reachable: exit status 5.
    let o = Command::new(raftctl())
        .args(["--endpoints", "127.0.0.1:1", "--timeout", "1", "get", "k"])
        .env("RAFTCTL_ENDPOINTS", "")
        .output()
        .unwrap();
    assert_eq!(code(&o), 5, "{o:?}");
}
