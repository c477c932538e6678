//! One run: a cluster, the workloads, the nemesis, then the checks.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cluster::{Cluster, NetworkMode};
use crate::linearizable::{self, KvOutcome, Operation, Verdict};
use crate::log_check::{self, Append};
use crate::nemesis::{self, FaultKind};
use crate::rng::Rng;
use crate::workload::{self, Refused, Shared};

/// What to run.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// The `httpraft` binary.
    pub binary: PathBuf,
    /// The seed of the fault schedule and of the clients' choices.
    pub seed: u64,
    /// How long the workloads and the nemesis run.
    pub duration: Duration,
    /// Nodes at the start.
    pub nodes: usize,
    /// Key-value clients.
    pub kv_clients: usize,
    /// Log clients.
    pub log_clients: usize,
    /// Hot keys.
    pub keys: usize,
    /// The fault kinds to draw from.
    pub faults: Vec<FaultKind>,
    /// A fault is held this long to twice as long; the quiet time after it is half that
    /// to as long.
    pub pace: Duration,
    /// A client calls an outcome unknown after this long without an answer.
    pub op_timeout: Duration,
    /// Search steps per key before the checker gives up.
    pub checker_budget: u64,
    /// Where the nodes keep their data and logs (default: a temporary directory, kept only
    /// when the run fails).
    pub dir: Option<PathBuf>,
    /// Extra arguments for every node.
    pub node_args: Vec<String>,
    /// Go on past `duration` until every kind in `faults` was injected at least once.
    pub every_kind: bool,
    /// How links fail: proxies (default) or network namespaces (root).
    pub network: NetworkMode,
    /// Instead of faults, a rolling upgrade: the cluster starts on `binary`, and each node
    /// in turn (the leader last) is stopped and started again on this binary, on the same
    /// data directory, while the workloads run.
    pub upgrade_to: Option<PathBuf>,
}

impl RunConfig {
    /// The defaults for `binary` and `seed`: 30 s, 3 nodes, every fault kind.
    pub fn new(binary: PathBuf, seed: u64) -> Self {
        RunConfig {
            binary,
            seed,
            duration: Duration::from_secs(30),
            nodes: 3,
            kv_clients: 6,
            log_clients: 3,
            keys: 3,
            faults: FaultKind::ALL.to_vec(),
            pace: Duration::from_millis(1000),
            op_timeout: Duration::from_millis(1500),
            checker_budget: 20_000_000,
            dir: None,
            node_args: Vec::new(),
            every_kind: false,
            network: NetworkMode::Proxies,
            upgrade_to: None,
        }
    }
}

/// Counts of one workload's operations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Operations with a known outcome or an unknown one (failed-for-sure ones excluded).
    pub operations: usize,
    /// Operations whose outcome the client learned.
    pub acknowledged: usize,
    /// Operations with no answer.
    pub unknown: usize,
}

/// What a run found.
#[derive(Debug)]
pub struct Report {
    /// The seed (replays the fault schedule).
    pub seed: u64,
    /// The faults injected, in order: time since the start and what was done.
    pub faults: Vec<(Duration, String)>,
    /// How many faults of each kind were injected.
    pub faults_by_kind: BTreeMap<FaultKind, usize>,
    /// The key-value workload's counts.
    pub kv: Counts,
    /// The log workload's counts.
    pub log: Counts,
    /// Appends refused for sure.
    pub log_refused: usize,
    /// The linearizability verdict on the key-value history.
    pub verdict: Verdict,
    /// The log checks' findings.
    pub log_violations: Vec<String>,
    /// Where the nodes' data and logs are (kept when the run failed).
    pub dir: PathBuf,
    /// How long the whole run took.
    pub elapsed: Duration,
    /// The longest time no key-value operation was acknowledged, from the first
    /// acknowledgement to the end of the workload.
    pub longest_outage: Duration,
    /// In a rolling upgrade: what went wrong with the cluster version (it rose before the
    /// last node was upgraded, or did not rise after).
    pub upgrade_violations: Vec<String>,
}

impl Report {
    /// No violation found, and the checker reached a verdict.
    pub fn ok(&self) -> bool {
        self.verdict == Verdict::Linearizable
            && self.log_violations.is_empty()
            && self.upgrade_violations.is_empty()
    }

    /// A violation was found.
    pub fn violated(&self) -> bool {
        matches!(self.verdict, Verdict::NotLinearizable(_))
            || !self.log_violations.is_empty()
            || !self.upgrade_violations.is_empty()
    }

    /// The summary a person reads: the seed, the counts, the faults, and the findings.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "seed {} ({:.1} s): key-value {} operations ({} acknowledged, {} unknown); log {} appends ({} acknowledged, {} unknown, {} refused)",
            self.seed,
            self.elapsed.as_secs_f64(),
            self.kv.operations,
            self.kv.acknowledged,
            self.kv.unknown,
            self.log.operations,
            self.log.acknowledged,
            self.log.unknown,
            self.log_refused,
        );
        let kinds: Vec<String> = self
            .faults_by_kind
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let _ = writeln!(s, "faults: {} ({})", self.faults.len(), kinds.join(", "));
        let _ = writeln!(
            s,
            "longest time without an acknowledged key-value operation: {:.2} s",
            self.longest_outage.as_secs_f64()
        );
        let violations = usize::from(matches!(self.verdict, Verdict::NotLinearizable(_)))
            + self.log_violations.len()
            + self.upgrade_violations.len();
        let _ = writeln!(
            s,
            "violations: {violations}; key-value history: {}",
            match &self.verdict {
                Verdict::Linearizable => "linearizable".to_string(),
                Verdict::NotLinearizable(_) => "NOT linearizable".to_string(),
                Verdict::Unknown(why) => format!("unknown ({why})"),
            }
        );
        let _ = writeln!(s, "faults injected:");
        for (t, what) in &self.faults {
            let _ = writeln!(s, "  {:>7.3}s  {what}", t.as_secs_f64());
        }
        if !self.ok() {
            if let Verdict::NotLinearizable(ex) = &self.verdict {
                let _ = write!(s, "{ex}");
            }
            for v in self.log_violations.iter().take(20) {
                let _ = writeln!(s, "log: {v}");
            }
            for v in &self.upgrade_violations {
                let _ = writeln!(s, "upgrade: {v}");
            }
            let _ = writeln!(
                s,
                "nodes' data and logs: {} (replay with --seed {})",
                self.dir.display(),
                self.seed
            );
        }
        s
    }
}

/// The longest stretch without an acknowledged operation, from the first one to `end`
/// (nanoseconds since the start).
fn longest_outage(history: &[Operation], end: u64) -> Duration {
    let mut done: Vec<u64> = history
        .iter()
        .filter(|o| o.outcome != KvOutcome::Unknown)
        .filter_map(|o| o.complete)
        .collect();
    done.sort_unstable();
    let Some(&first) = done.first() else {
        return Duration::ZERO;
    };
    let mut longest = 0;
    let mut last = first;
    for t in done.into_iter().chain([end]) {
        longest = longest.max(t.saturating_sub(last));
        last = last.max(t);
    }
    Duration::from_nanos(longest)
}

/// The cluster version node `id` reports (`0.1` for a node that does not say: release
/// 0.1.0 had none).
async fn cluster_version_of(cluster: &Cluster, id: crate::proxy::NodeId) -> Option<String> {
    let s = cluster.status_of(id).await?;
    Some(
        s["version"]["cluster"]
            .as_str()
            .unwrap_or("0.1")
            .to_string(),
    )
}

/// The rolling upgrade: followers first, the leader last, one at a time; each upgraded
/// node must catch up before the next is stopped. The cluster version must not move
/// before the last node runs the new build, and must rise once it does. Returns what was
/// done and what went wrong.
async fn rolling_upgrade(
    cluster: &mut Cluster,
    to: &std::path::Path,
    t0: Instant,
    pace: Duration,
) -> Result<(Vec<(Duration, String)>, Vec<String>), String> {
    let mut done = Vec::new();
    let mut violations = Vec::new();
    let leader = cluster.wait_leader(Duration::from_secs(30)).await?;
    let mut order: Vec<_> = cluster
        .ids()
        .into_iter()
        .filter(|&id| id != leader)
        .collect();
    order.push(leader);
    let before = cluster_version_of(cluster, leader)
        .await
        .unwrap_or_else(|| "0.1".into());
    for (i, &id) in order.iter().enumerate() {
        let at = t0.elapsed();
        cluster.upgrade(id, to).await?;
        done.push((
            at,
            format!("node {id} stopped and started on the new build"),
        ));
        cluster.wait_converged(Duration::from_secs(60)).await?;
        if i + 1 < order.len() {
            for &other in &order {
                if let Some(v) = cluster_version_of(cluster, other).await {
                    if v != before {
                        violations.push(format!(
                            "node {other} reports cluster version {v} with {} of {} nodes upgraded",
                            i + 1,
                            order.len()
                        ));
                    }
                }
            }
        }
        tokio::time::sleep(pace).await;
    }
    // Every node runs the new build: the cluster version rises, on every node.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut seen = Vec::new();
        for &id in &order {
            seen.push(cluster_version_of(cluster, id).await);
        }
        let current = raft_core::ClusterVersion::CURRENT.to_string();
        if seen.iter().all(|v| v.as_deref() == Some(current.as_str())) {
            done.push((
                t0.elapsed(),
                format!("cluster version {before} → {current} on every node"),
            ));
            break;
        }
        if Instant::now() > deadline {
            violations.push(format!(
                "the cluster version did not rise to {current} within 30 s of the last upgrade: {seen:?}"
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((done, violations))
}

fn count_kv(history: &[Operation]) -> Counts {
    let unknown = history
        .iter()
        .filter(|o| o.outcome == KvOutcome::Unknown)
        .count();
    Counts {
        operations: history.len(),
        acknowledged: history.len() - unknown,
        unknown,
    }
}

/// Runs `cfg`: starts the cluster, runs the workloads under the nemesis, heals, checks.
pub async fn run(cfg: &RunConfig) -> Result<Report, String> {
    let t0 = Instant::now();
    let temp;
    let dir = match &cfg.dir {
        Some(d) => {
            std::fs::create_dir_all(d)
                .map_err(|e| format!("cannot create {}: {e}", d.display()))?;
            d.clone()
        }
        None => {
            temp = tempfile::Builder::new()
                .prefix("raft-chaos-")
                .tempdir()
                .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
            temp.path().to_path_buf()
        }
    };
    let mut cluster =
        Cluster::start(&cfg.binary, &dir, cfg.nodes, &cfg.node_args, cfg.network).await?;
    let mut rng = Rng::new(cfg.seed);
    let schedule_rng = rng.next_u64();
    let shared = Shared {
        endpoints: cluster.endpoints.clone(),
        start: t0,
        stop: Arc::new(AtomicBool::new(false)),
        timeout: cfg.op_timeout,
    };
    let keys: Vec<String> = (0..cfg.keys).map(|k| format!("k{k}")).collect();
    let kv: Vec<_> = (0..cfg.kv_clients)
        .map(|c| {
            tokio::spawn(workload::kv_client(
                shared.clone(),
                c,
                keys.clone(),
                rng.fork(),
            ))
        })
        .collect();
    let logs: Vec<_> = (0..cfg.log_clients)
        .map(|c| tokio::spawn(workload::log_client(shared.clone(), c, rng.fork())))
        .collect();

    // The nemesis: one fault at a time until the time is up (none in a rolling upgrade).
    let steps = match cfg.upgrade_to {
        Some(_) => Vec::new(),
        None => nemesis::schedule(schedule_rng, &cfg.faults, 10_000, cfg.pace),
    };
    let end = Instant::now() + cfg.duration;
    let mut faults = Vec::new();
    let mut by_kind: BTreeMap<FaultKind, usize> = BTreeMap::new();
    let mut upgrade_violations = Vec::new();
    tokio::time::sleep(cfg.pace / 2).await;
    if let Some(to) = &cfg.upgrade_to {
        let (done, violations) = rolling_upgrade(&mut cluster, to, t0, cfg.pace).await?;
        faults.extend(done);
        upgrade_violations = violations;
        // The workloads go on, on the upgraded cluster, until the time is up.
        tokio::time::sleep(end.saturating_duration_since(Instant::now())).await;
    }
    for step in &steps {
        let all_seen = !cfg.every_kind || cfg.faults.iter().all(|k| by_kind.contains_key(k));
        // Waiting for every kind ends at twice the duration (a kind this machine cannot
        // inject would otherwise keep the run going forever).
        let overtime = Instant::now() >= end + cfg.duration;
        if Instant::now() >= end && (all_seen || overtime) {
            break;
        }
        let at = t0.elapsed();
        let what = match nemesis::inject(&mut cluster, step).await {
            Ok(w) => {
                *by_kind.entry(step.kind).or_default() += 1;
                w
            }
            // Not counted: the kind still has to happen (see `every_kind`).
            Err(e) => format!("{} could not be injected: {e}", step.kind),
        };
        faults.push((at, what));
        tokio::time::sleep(step.hold).await;
        cluster.heal()?;
        tokio::time::sleep(step.gap).await;
    }
    cluster.heal()?;
    shared
        .stop
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let workload_end = t0.elapsed().as_nanos() as u64;

    let mut history = Vec::new();
    for h in kv {
        history.extend(h.await.map_err(|e| format!("a client failed: {e}"))?);
    }
    let mut appends: Vec<Append> = Vec::new();
    let mut refused: Vec<Refused> = Vec::new();
    for h in logs {
        let (a, r) = h.await.map_err(|e| format!("a client failed: {e}"))?;
        appends.extend(a);
        refused.extend(r);
    }

    // Healed: every member must come to hold the same log (a cluster that does not is a
    // violation too: it did not recover).
    let mut log_violations = Vec::new();
    let mut node_logs = BTreeMap::new();
    match cluster.wait_converged(Duration::from_secs(60)).await {
        Ok(_) => {
            for id in cluster.ids() {
                node_logs.insert(id, cluster.plain_log(id).await?);
            }
            log_violations = log_check::check(&appends, &node_logs);
        }
        Err(e) => log_violations.push(format!("after healing: {e}")),
    }
    let in_log: std::collections::HashSet<&str> = node_logs
        .values()
        .flat_map(|l| l.iter().map(|(_, t)| t.as_str()))
        .collect();
    for r in &refused {
        if in_log.contains(r.text.as_str()) {
            log_violations.push(format!(
                "entry {:?} was refused ({}) yet is in the log",
                r.text, r.code
            ));
        }
    }
    let verdict = linearizable::check(&history, cfg.checker_budget);
    cluster.shutdown();
    let acknowledged = appends.iter().filter(|a| a.acked.is_some()).count();
    let sent = appends.len() - refused.len();
    let log_counts = Counts {
        operations: sent,
        acknowledged,
        unknown: sent - acknowledged,
    };
    let report = Report {
        seed: cfg.seed,
        faults,
        faults_by_kind: by_kind,
        kv: count_kv(&history),
        log: log_counts,
        log_refused: refused.len(),
        verdict,
        log_violations,
        dir: dir.clone(),
        elapsed: t0.elapsed(),
        longest_outage: longest_outage(&history, workload_end),
        upgrade_violations,
    };
    if !report.ok() && cfg.dir.is_none() {
        // Keep the evidence.
        let kept = dir.with_file_name(format!(
            "raft-chaos-failed-seed-{}-{}",
            cfg.seed,
            std::process::id()
        ));
        if std::fs::rename(&dir, &kept).is_ok() {
            return Ok(Report {
                dir: kept,
                ..report
            });
        }
    }
    Ok(report)
}
