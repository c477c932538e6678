//! The binary's command line: help, and readable start-up errors (never a panic).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn httpraft() -> Command {
    Command::new(env!("CARGO_BIN_EXE_httpraft"))
}

#[test]
fn help_lists_every_option_with_its_default() {
    let out = httpraft().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for opt in [
        "--peers",
        "--api",
        "--data-dir",
        "--cluster-id",
        "--tick-ms",
        "--election-ticks",
        "--heartbeat-ticks",
        "--max-body-bytes",
        "--max-pending-submits",
        "--max-pending-bytes",
        "--max-log-entries",
        "--max-frame-bytes",
        "--sync",
        "--log-level",
        "--config",
    ] {
        assert!(text.contains(opt), "--help lacks {opt}");
    }
    assert!(text.contains("[default: peers.json]"));
    assert!(text.contains("dev"), "--help mentions the dev cluster");
}

fn start_error(dir: &std::path::Path, args: &[&str]) -> String {
    let out = httpraft().args(args).current_dir(dir).output().unwrap();
    assert!(!out.status.success(), "{args:?} must fail");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!err.contains("panicked"), "no panic: {err}");
    let last = err.lines().last().unwrap_or_default().to_string();
    assert!(
        last.starts_with("httpraft: error: "),
        "one readable line: {err}"
    );
    last
}

#[test]
fn start_up_errors_are_one_readable_line_and_a_failure_exit() {
    let dir = tempfile::tempdir().unwrap();
    assert!(start_error(dir.path(), &["0"]).contains("peers.json"));
    std::fs::write(dir.path().join("peers.json"), "{not json").unwrap();
    assert!(start_error(dir.path(), &["0"]).contains("not a valid peers file"));
    std::fs::write(
        dir.path().join("peers.json"),
        r#"{"peers": ["127.0.0.1:1"], "apis": ["127.0.0.1:2"]}"#,
    )
    .unwrap();
    assert!(start_error(dir.path(), &["5"]).contains("out of range"));
    assert!(start_error(dir.path(), &[]).contains("httpraft <id>"));
    assert!(start_error(dir.path(), &["0", "--sync", "sometimes"]).contains("--sync"));

    // The API port is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let raft = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    std::fs::write(
        dir.path().join("peers.json"),
        format!(r#"{{"peers": ["{raft}"], "apis": ["127.0.0.1:{port}"]}}"#),
    )
    .unwrap();
    assert!(start_error(dir.path(), &["0"]).contains("in use"));
}

#[test]
fn a_data_directory_held_by_another_process_is_a_readable_start_up_error() {
    let dir = tempfile::tempdir().unwrap();
    let port = |_| {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let (raft, api) = (port(0), port(1));
    std::fs::write(
        dir.path().join("peers.json"),
        format!(r#"{{"peers": ["{raft}"], "apis": ["{api}"]}}"#),
    )
    .unwrap();
    let mut first = httpraft()
        .arg("0")
        .current_dir(dir.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the first node holds its directory (its metadata is written after the lock).
    let meta = dir.path().join("data/node-0/meta.json");
    let start = std::time::Instant::now();
    while !meta.exists() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "first node never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let other_api = port(2);
    let err = start_error(dir.path(), &["0", "--api", &other_api.to_string()]);
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(err.contains("in use by another process"), "{err}");
}
