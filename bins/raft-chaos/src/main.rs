//! `raft-chaos`: runs `httpraft` under faults and checks what clients saw.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use raft_chaos::cluster::NetworkMode;
use raft_chaos::nemesis::FaultKind;
use raft_chaos::run::{run, RunConfig};

/// Runs a cluster of real `httpraft` processes behind fault-injecting proxies, drives a
/// log workload and a key-value workload (writes, compare-and-swaps, linearizable reads)
/// while injecting faults on a seeded schedule, then checks the histories. Exit status: 0
/// no violation, 1 a violation, 2 the checker gave up, 3 the run could not be carried out.
#[derive(Debug, Parser)]
#[command(name = "raft-chaos", version)]
struct Cli {
    /// The httpraft binary [default: httpraft next to this program].
    #[arg(long)]
    binary: Option<PathBuf>,
    /// The seed: the same seed replays the same fault schedule [default: from the clock].
    #[arg(long)]
    seed: Option<u64>,
    /// Seconds of workload and faults per run.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Run again with the next seed until this many seconds have passed in all (the long
    /// mode); 0 runs once.
    #[arg(long, default_value_t = 0)]
    total: u64,
    /// Nodes at the start.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Key-value clients.
    #[arg(long, default_value_t = 6)]
    kv_clients: usize,
    /// Log clients.
    #[arg(long, default_value_t = 3)]
    log_clients: usize,
    /// Hot keys.
    #[arg(long, default_value_t = 3)]
    keys: usize,
    /// Fault kinds, comma-separated (kill, kill-leader, pause, pause-leader, isolate,
    /// isolate-leader, split, one-way, latency, transfer, replace) [default: all].
    #[arg(long, value_delimiter = ',')]
    faults: Vec<String>,
    /// Milliseconds a fault is held (up to twice this).
    #[arg(long, default_value_t = 1000)]
    pace_ms: u64,
    /// How links fail: `proxies` (a fault-injecting proxy per member, no root needed) or
    /// `namespaces` (a network namespace per member, cuts and latency on real interfaces;
    /// root and iproute2 needed, and the kernel's netem for latency).
    #[arg(long, default_value = "proxies")]
    network: String,
    /// Go on past --duration until every fault kind was injected at least once.
    #[arg(long)]
    every_kind: bool,
    /// Where to keep the nodes' data and logs [default: a temporary directory, kept only if
    /// the run fails].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// A rolling upgrade instead of faults: the cluster starts on --binary (an older
    /// release, e.g. built by scripts/build-release.sh), and each node in turn, the leader
    /// last, is stopped and started on this binary while the workloads run; the cluster
    /// version must rise only once the last node runs it.
    #[arg(long)]
    upgrade_to: Option<PathBuf>,
}

fn config(cli: &Cli, seed: u64) -> Result<RunConfig, String> {
    // The nodes run in their own directories: a relative path is taken from here.
    let absolute = |p: &PathBuf| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
    let binary = match &cli.binary {
        Some(b) => absolute(b),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("httpraft"),
    };
    let mut cfg = RunConfig::new(binary, seed);
    cfg.duration = Duration::from_secs(cli.duration);
    cfg.nodes = cli.nodes;
    cfg.kv_clients = cli.kv_clients;
    cfg.log_clients = cli.log_clients;
    cfg.keys = cli.keys.max(1);
    cfg.pace = Duration::from_millis(cli.pace_ms.max(10));
    cfg.dir = cli.dir.clone();
    cfg.every_kind = cli.every_kind;
    cfg.upgrade_to = cli.upgrade_to.as_ref().map(absolute);
    cfg.network = match cli.network.as_str() {
        "proxies" => NetworkMode::Proxies,
        "namespaces" => NetworkMode::Namespaces,
        other => {
            return Err(format!(
                "--network must be proxies or namespaces, got {other:?}"
            ))
        }
    };
    if !cli.faults.is_empty() {
        cfg.faults = cli
            .faults
            .iter()
            .map(|f| FaultKind::parse(f).ok_or_else(|| format!("unknown fault kind {f:?}")))
            .collect::<Result<_, _>>()?;
    }
    Ok(cfg)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut seed = cli.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let started = std::time::Instant::now();
    let mut runs = 0u64;
    let mut totals = (0usize, 0usize, 0usize, 0usize);
    let mut kinds: std::collections::BTreeMap<FaultKind, usize> = Default::default();
    loop {
        let cfg = match config(&cli, seed) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("raft-chaos: {e}");
                return ExitCode::from(3);
            }
        };
        let report = match run(&cfg).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("raft-chaos: seed {seed}: the run could not be carried out: {e}");
                return ExitCode::from(3);
            }
        };
        print!("{}", report.summary());
        runs += 1;
        totals.0 += report.kv.operations + report.log.operations;
        totals.1 += report.kv.acknowledged + report.log.acknowledged;
        totals.2 += report.kv.unknown + report.log.unknown;
        totals.3 += report.faults.len();
        for (k, n) in &report.faults_by_kind {
            *kinds.entry(*k).or_default() += n;
        }
        if report.violated() {
            return ExitCode::from(1);
        }
        if !report.ok() {
            return ExitCode::from(2);
        }
        if started.elapsed().as_secs() >= cli.total {
            break;
        }
        seed = seed.wrapping_add(1);
    }
    if runs > 1 {
        let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
        println!(
            "total: {runs} runs in {:.0} s: {} operations, {} acknowledged, {} unknown; {} faults ({}); violations: 0",
            started.elapsed().as_secs_f64(),
            totals.0,
            totals.1,
            totals.2,
            totals.3,
            kinds.join(", ")
        );
    }
    ExitCode::SUCCESS
}
