//! The monitoring files in `docs/monitoring` (alert rules, Grafana dashboard) name only
//! metrics that a node exports.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use common::Cluster;

/// Every `raft_*` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("raft_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
            end += 1;
        }
        let before = start.checked_sub(1).map(|b| bytes[b]);
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_') {
            out.insert(text[start..end].to_string());
        }
        i = end.max(start + 1);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alert_rules_and_the_dashboard_name_only_exported_metrics() {
    let c = Cluster::start(3).await;
    let l = c.leader().await;
    let (ok, _) = c.post_entry(c.apis[l].clone(), "measured").await;
    assert!(ok);
    let text = c.metrics_text(l).await;
    // Names with samples, and declared ones (some have samples only while something
    // happens, e.g. a snapshot transfer); histograms export _bucket, _sum and _count.
    let mut exported = BTreeSet::new();
    for line in text.lines() {
        let name = match line.strip_prefix("# TYPE ") {
            Some(rest) => rest.split(' ').next().unwrap_or(""),
            None if line.starts_with('#') => continue,
            None => line.split(['{', ' ']).next().unwrap_or(""),
        };
        for suffix in ["", "_bucket", "_sum", "_count"] {
            exported.insert(format!("{name}{suffix}"));
        }
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/monitoring");
    for file in ["alerts.yml", "grafana-dashboard.json"] {
        let doc = std::fs::read_to_string(dir.join(file)).unwrap();
        let named = metric_names(&doc);
        assert!(named.len() > 10, "{file} names {named:?}");
        let missing: Vec<&String> = named.iter().filter(|n| !exported.contains(*n)).collect();
        assert!(
            missing.is_empty(),
            "{file} names metrics no node exports: {missing:?}"
        );
    }
    // What operators of etcd alert on besides: a leader known, and the process itself.
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} is not exported:\n{text}"))
    };
    assert_eq!(value("raft_has_leader"), 1.0);
    assert_eq!(value("raft_http_streams_open"), 0.0);
    assert!(value("raft_leader_changes_seen_total") >= 1.0);
    assert_eq!(value("raft_proposals_pending"), 0.0);
    // Requests by the route that matched, method and status; the write above was one.
    assert!(
        value("raft_http_requests_total{route=\"/request\",method=\"POST\",code=\"200\"}") >= 1.0
    );
    assert!(
        text.contains(
            "raft_http_request_seconds_bucket{le=\"0.001\",route=\"/request\",method=\"POST\"}"
        ) || text.contains(
            "raft_http_request_seconds_bucket{route=\"/request\",method=\"POST\",le=\"0.001\"}"
        ),
        "no latency histogram for POST /request:\n{text}"
    );
    assert!(
        text.ends_with("# EOF\n"),
        "an OpenMetrics exposition ends with # EOF"
    );
    if cfg!(target_os = "linux") {
        assert!(value("process_resident_memory_bytes") > 1e6);
        assert!(value("process_open_fds") >= 4.0);
        assert!(value("process_max_fds") >= value("process_open_fds"));
        // /proc counts CPU time in ticks of 10 ms, and a fresh node on a fast machine may
        // not have used one yet: keep it working until the first tick shows, or give up.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let now = c.metrics_text(l).await;
            let cpu = now
                .lines()
                .find_map(|l| l.strip_prefix("process_cpu_seconds_total "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .expect("process_cpu_seconds_total is exported");
            if cpu > 0.0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "process_cpu_seconds_total stayed 0 while the node worked"
            );
            for _ in 0..50 {
                let (ok, _) = c.post_entry(c.apis[l].clone(), "work").await;
                assert!(ok);
            }
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let started = value("process_start_time_seconds");
        assert!(
            started <= now + 1.0 && now - started < 600.0,
            "{started} vs {now}"
        );
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("grafana-dashboard.json")).unwrap())
            .unwrap();
    assert!(dashboard["panels"].as_array().unwrap().len() >= 10);
}
