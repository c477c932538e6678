//! `raft-slow-follower`: what a leader does to a follower behind a thin link, with adaptive
//! flow control and with the static in-flight limit, in one run.
//!
//! For each mode it starts three `httpraft` processes behind the harness's proxies, makes
//! the link from the leader to one follower slow (a rate limit and a delay: a follower in
//! another region, or on a slow disk), and has clients append batches through the leader
//! for a while: the leader and the other follower commit them, the slow follower falls
//! behind. Meanwhile it samples the leader's view of the slow follower (bytes in flight,
//! window, lag) and the leader's memory. Then the fast follower is killed, the load still
//! running: the leader now needs the slow follower for every quorum. A linearizable read
//! needs only a heartbeat round, not the follower's catching up (writes do: they wait
//! until the follower holds the whole log, which takes as long in both modes), but the
//! heartbeat waits behind whatever the leader queued in front of the follower. The table
//! compares the reads' latency, and the rest, in the two modes.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use raft_chaos::cluster::{Cluster, NetworkMode};
use raft_chaos::proxy::LinkFault;
use raft_http_client::{Client, ClientConfig};
use serde_json::Value;

/// Compares adaptive flow control with the static in-flight limit on a follower behind a
/// slow link. Prints one table row per mode.
#[derive(Debug, Parser)]
#[command(name = "raft-slow-follower", version)]
struct Cli {
    /// The httpraft binary [default: httpraft next to this program].
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Bytes per second the leader's link to the slow follower carries.
    #[arg(long, default_value_t = 2_000_000)]
    rate: u64,
    /// Milliseconds added to that link.
    #[arg(long, default_value_t = 20)]
    delay_ms: u64,
    /// Concurrent writing clients.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Entries per batched append.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Bytes per entry.
    #[arg(long, default_value_t = 200)]
    value_bytes: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 15)]
    secs: u64,
    /// Modes to run, comma-separated: adaptive, static.
    #[arg(long, value_delimiter = ',', default_value = "adaptive,static")]
    modes: Vec<String>,
}

/// What one mode measured.
#[derive(Debug, Default)]
struct Row {
    mode: String,
    entries_per_sec: f64,
    write_p50_ms: f64,
    write_p99_ms: f64,
    inflight_median: u64,
    inflight_max: u64,
    window_median: Option<u64>,
    lag_max: u64,
    states: [u32; 3],
    leader_rss_max: u64,
    first_read_after_failover_ms: Option<f64>,
    failed_reads: u32,
    reads_after_p50_ms: f64,
    leader_kept: bool,
}

/// How long the benchmark waits for a read to succeed after the failover.
const FAILOVER_PATIENCE: Duration = Duration::from_secs(120);

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn median_u64(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// Resident memory of a process, from `/proc` (Linux).
fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The leader's progress entry for `follower` in its status.
fn progress_of(status: &Value, follower: u64) -> Option<&Value> {
    status["progress"]
        .as_array()?
        .iter()
        .find(|p| p["id"].as_u64() == Some(follower))
}

async fn run_mode(cli: &Cli, binary: &std::path::Path, mode: &str) -> Result<Row, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let args = vec![
        "--flow-control".to_string(),
        mode.to_string(),
        "--log-level".to_string(),
        "warn".to_string(),
        // No snapshot during the run: the slow follower is fed entries, through its
        // window, the whole time (with the default interval it would soon be sent
        // snapshots instead, which no window governs).
        "--snapshot-entries".to_string(),
        "1000000000".to_string(),
    ];
    let mut cluster = Cluster::start(binary, dir.path(), 3, &args, NetworkMode::Proxies).await?;
    let leader = cluster.wait_leader(Duration::from_secs(30)).await?;
    let others: Vec<u64> = cluster.ids().into_iter().filter(|&i| i != leader).collect();
    let (slow, fast) = match others.as_slice() {
        [a, b] => (*a, *b),
        _ => return Err("expected two followers".into()),
    };
    cluster.set_link(
        leader,
        slow,
        LinkFault {
            delay: Duration::from_millis(cli.delay_ms),
            rate: cli.rate,
            ..LinkFault::default()
        },
    )?;
    let api_of = |id: u64| {
        cluster
            .nodes
            .get(&id)
            .map(|n| n.api.clone())
            .ok_or("no address")
    };
    let (leader_api, slow_api) = (api_of(leader)?, api_of(slow)?);
    let client = Client::with_config(
        [leader_api.as_str()],
        ClientConfig {
            timeout: Duration::from_secs(120),
            retries: 0,
            ..ClientConfig::default()
        },
    )
    .map_err(|e| e.to_string())?;

    // The load: batched appends through the leader.
    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::<f64>::new()));
    let value = "v".repeat(cli.value_bytes);
    let mut writers = Vec::new();
    for _ in 0..cli.clients {
        let (client, stop, committed, latencies) = (
            client.clone(),
            stop.clone(),
            committed.clone(),
            latencies.clone(),
        );
        let batch: Vec<String> = vec![value.clone(); cli.batch];
        writers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                if let Ok(a) = client.append_batch(batch.clone()).await {
                    committed.fetch_add(a.indexes.len() as u64, Ordering::Relaxed);
                    if let Ok(mut l) = latencies.lock() {
                        l.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                }
            }
        }));
    }

    // The sampler: the leader's view of the slow follower, and its memory.
    let (mut inflight, mut windows, mut lag_max, mut rss_max) = (Vec::new(), Vec::new(), 0, 0);
    // Samples of the slow follower in replicate, probe and snapshot state.
    let mut states = [0u32; 3];
    let started = Instant::now();
    let load = Duration::from_secs(cli.secs);
    while started.elapsed() < load {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(s) = client.status(Some(&leader_api)).await {
            if let Some(p) = progress_of(&s, slow) {
                inflight.push(p["inflight_bytes"].as_u64().unwrap_or(0));
                if let Some(w) = p["flow_window"].as_u64() {
                    windows.push(w);
                }
                lag_max = lag_max.max(p["lag"].as_u64().unwrap_or(0));
                match p["state"].as_str() {
                    Some("replicate") => states[0] += 1,
                    Some("probe") => states[1] += 1,
                    _ => states[2] += 1,
                }
            }
        }
        if let Some(r) = cluster.pid(leader).and_then(rss_bytes) {
            rss_max = rss_max.max(r);
        }
    }
    // What the load did with both followers.
    let elapsed = started.elapsed().as_secs_f64();
    let entries = committed.load(Ordering::Relaxed);
    let mut lat = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    lat.sort_by(f64::total_cmp);

    // Failover to the slow follower, the load still running: every quorum needs it now.
    cluster.kill(fast);
    // The first read that succeeds (through whichever node leads by then), and the
    // failed tries before it; then ten more.
    let readers = Client::with_config(
        [leader_api.as_str(), slow_api.as_str()],
        ClientConfig {
            timeout: Duration::from_secs(60),
            retries: 0,
            ..ClientConfig::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let killed = Instant::now();
    let mut failed_reads = 0u32;
    let mut first_read_ms = None;
    while killed.elapsed() < FAILOVER_PATIENCE {
        if readers.get("flow-probe").await.is_ok() {
            first_read_ms = Some(killed.elapsed().as_secs_f64() * 1e3);
            break;
        }
        failed_reads += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut reads = Vec::new();
    if first_read_ms.is_some() {
        for _ in 0..10 {
            let t = Instant::now();
            if readers.get("flow-probe").await.is_ok() {
                reads.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    reads.sort_by(f64::total_cmp);
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.abort();
    }
    let leader_kept = cluster.leader().await == Some(leader);
    cluster.shutdown();
    Ok(Row {
        mode: mode.to_string(),
        entries_per_sec: entries as f64 / elapsed,
        write_p50_ms: percentile(&lat, 0.5),
        write_p99_ms: percentile(&lat, 0.99),
        inflight_median: median_u64(inflight.clone()),
        inflight_max: inflight.iter().copied().max().unwrap_or(0),
        window_median: (!windows.is_empty()).then(|| median_u64(windows)),
        lag_max,
        states,
        leader_rss_max: rss_max,
        first_read_after_failover_ms: first_read_ms,
        failed_reads,
        reads_after_p50_ms: percentile(&reads, 0.5),
        leader_kept,
    })
}

fn mib(b: u64) -> String {
    format!("{:.2}", b as f64 / (1u64 << 20) as f64)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let binary = match &cli.binary {
        Some(b) => b.clone(),
        None => match std::env::current_exe() {
            Ok(p) => p.with_file_name("httpraft"),
            Err(e) => {
                eprintln!("raft-slow-follower: {e}");
                return ExitCode::from(2);
            }
        },
    };
    println!(
        "slow link: {} bytes/s, +{} ms; {} clients × {} entries of {} B; {} s of load",
        cli.rate, cli.delay_ms, cli.clients, cli.batch, cli.value_bytes, cli.secs
    );
    println!(
        "| flow control | entries/s | write p50 ms | write p99 ms | in flight to slow follower, median / max MiB | its window, median MiB | its lag, max entries | its samples in replicate / probe / snapshot | leader RSS max MiB | first linearizable read after failover ms (failed tries) | next reads p50 ms | leader kept |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|");
    let mut failed = false;
    for mode in &cli.modes {
        match run_mode(&cli, &binary, mode).await {
            Ok(r) => println!(
                "| {} | {:.0} | {:.1} | {:.1} | {} / {} | {} | {} | {} / {} / {} | {} | {} ({}) | {:.1} | {} |",
                r.mode,
                r.entries_per_sec,
                r.write_p50_ms,
                r.write_p99_ms,
                mib(r.inflight_median),
                mib(r.inflight_max),
                r.window_median.map_or("-".to_string(), mib),
                r.lag_max,
                r.states[0],
                r.states[1],
                r.states[2],
                mib(r.leader_rss_max),
                r.first_read_after_failover_ms.map_or(
                    format!("none in {} s", FAILOVER_PATIENCE.as_secs()),
                    |ms| format!("{ms:.1}")
                ),
                r.failed_reads,
                r.reads_after_p50_ms,
                if r.leader_kept { "yes" } else { "no" },
            ),
            Err(e) => {
                eprintln!("raft-slow-follower: {mode}: {e}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
