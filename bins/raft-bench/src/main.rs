//! `raft-bench`: drives httpraft (or etcd's JSON gateway) with a fixed number of keep-alive
//! HTTP/1.1 clients and reports throughput, latency percentiles and errors by kind.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use clap::{Parser, ValueEnum};
use serde_json::{json, Value};

/// The operation each client repeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Op {
    /// POST /v1/log {"entry": value} (httpraft); with --batch N > 1,
    /// {"entries": [value; N]}.
    Append,
    /// POST /request {"entry": value}, the original API, following leader hints (httpraft).
    Request,
    /// PUT /v1/kv/<key> {"value": value} (httpraft).
    KvPut,
    /// GET /v1/kv/<key>, linearizable (httpraft; keys are written first).
    KvGet,
    /// POST /v3/kv/put {"key", "value"} through etcd's JSON gateway.
    EtcdPut,
    /// POST /v3/kv/range {"key"} through etcd's JSON gateway: a linearizable read (etcd's
    /// default; keys are written first).
    EtcdGet,
}

impl std::fmt::Display for Op {
    /// The name given on the command line (`kv-put`, not `KvPut`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.to_possible_value() {
            Some(v) => f.write_str(v.get_name()),
            None => write!(f, "{self:?}"),
        }
    }
}

/// HTTP load generator for httpraft and etcd.
#[derive(Debug, Parser)]
#[command(name = "raft-bench", version)]
struct Args {
    /// Base URL of an endpoint, e.g. http://127.0.0.1:9000 (repeat for several).
    #[arg(long = "target", required = true)]
    targets: Vec<String>,
    /// What each request does.
    #[arg(long, value_enum, default_value = "append")]
    op: Op,
    /// Concurrent clients, each with its own keep-alive connection.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// How long to run, in seconds (ignored when --requests is given).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many successful requests instead of after --duration.
    #[arg(long)]
    requests: Option<u64>,
    /// Bytes of each written value.
    #[arg(long, default_value_t = 64)]
    value_size: usize,
    /// Entries per request for --op append (one POST /v1/log {"entries": [...]}); the
    /// report then also gives entries per second.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    batch: u64,
    /// Send only to the leader (found through /v1/status, or etcd's maintenance status)
    /// instead of spreading clients over the targets and following hints.
    #[arg(long)]
    leader_only: bool,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
    /// HTTPS (httpraft): the cluster's CA certificate (PEM); targets given without a
    /// scheme are reached over https.
    #[arg(long, value_name = "PEM")]
    cacert: Option<std::path::PathBuf>,
    /// A bearer token for an httpraft started with --tokens.
    #[arg(long)]
    token: Option<String>,
    /// Speak HTTP/2 to httpraft (h2c with prior knowledge, or ALPN over HTTPS): one
    /// connection per endpoint carries every client's requests.
    #[arg(long)]
    http2: bool,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
}

#[derive(Default)]
struct WorkerResult {
    latencies_us: Vec<u32>,
    errors: BTreeMap<String, u64>,
    redirects: u64,
}

fn b64(s: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// The clients: httpraft through `raft-http-client`; etcd's JSON gateway, which speaks
/// etcd's API and not ours, through plain HTTP.
#[derive(Clone)]
struct Clients {
    raft: raft_http_client::Client,
    etcd: reqwest::Client,
}

/// Finds the leader's base URL among the targets.
async fn find_leader(c: &Clients, args: &Args) -> Result<String, String> {
    for t in &args.targets {
        if matches!(args.op, Op::EtcdPut | Op::EtcdGet) {
            let r = c
                .etcd
                .post(format!("{t}/v3/maintenance/status"))
                .json(&json!({}))
                .send()
                .await;
            let Ok(r) = r else { continue };
            let Ok(v) = r.json::<Value>().await else {
                continue;
            };
            let member = v["header"]["member_id"].as_str().map(String::from);
            let leader = v["leader"].as_str().map(String::from);
            if member.is_some() && member == leader {
                return Ok(t.clone());
            }
        } else if let Ok(v) = c.raft.status(Some(t)).await {
            if let Some(api) = v["leader_api"].as_str() {
                return Ok(format!("{}://{api}", scheme_of(t, args.cacert.is_some())));
            }
        }
    }
    Err("no leader found among the targets".into())
}

/// The scheme `target` is reached by (an address without one: https when a CA is given).
fn scheme_of(target: &str, ca: bool) -> &'static str {
    if target.starts_with("https://") || (!target.contains("://") && ca) {
        "https"
    } else {
        "http"
    }
}

/// An error's kind, as counted in the report.
fn kind(e: &raft_http_client::Error) -> String {
    use raft_http_client::Error;
    match e {
        Error::Api { status, .. } => format!("http-{status}"),
        Error::NotFound => "http-404".into(),
        Error::PreconditionFailed { .. } => "http-412".into(),
        Error::Unavailable { .. } => "connect".into(),
        Error::Unknown { message, .. } if message.contains("timed out") => "timeout".into(),
        Error::Unknown { .. } => "transport".into(),
        Error::Decode { .. } => "bad-body".into(),
        Error::Config(_) => "config".into(),
    }
}

/// What one request does: the operation, on which key, with which value, how many
/// entries at once (appends).
struct Work<'a> {
    op: Op,
    key: &'a str,
    value: &'a str,
    batch: u64,
}

/// One request. `via` is the httpraft client aimed at this worker's target (it follows
/// redirects to the leader itself); the original API gives hints instead, followed here by
/// changing `target`.
async fn one_request(
    c: &Clients,
    via: &raft_http_client::Client,
    work: &Work<'_>,
    target: &mut String,
    redirects: &mut u64,
) -> Result<(), String> {
    let Work {
        op,
        key,
        value,
        batch,
    } = *work;
    match op {
        Op::Append if batch > 1 => via
            .append_batch(vec![value.to_string(); batch as usize])
            .await
            .map(drop)
            .map_err(|e| kind(&e)),
        Op::Append => via.append(value).await.map(drop).map_err(|e| kind(&e)),
        Op::KvPut => via.put(key, value).await.map(drop).map_err(|e| kind(&e)),
        Op::KvGet => match via.get(key).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err("http-404".into()),
            Err(e) => Err(kind(&e)),
        },
        Op::Request => {
            for _ in 0..10 {
                let a = c
                    .raft
                    .original_request(value, Some(target))
                    .await
                    .map_err(|e| kind(&e))?;
                if a.success {
                    return Ok(());
                }
                let hint = format!("{}://{}", scheme_of(target, false), a.leader);
                if a.leader.is_empty() || hint == *target {
                    return Err("not-committed".into());
                }
                *target = hint;
                *redirects += 1;
            }
            Err("too-many-redirects".into())
        }
        Op::EtcdPut | Op::EtcdGet => {
            let (path, body) = if op == Op::EtcdPut {
                (
                    "put",
                    json!({"key": b64(key.as_bytes()), "value": b64(value.as_bytes())}),
                )
            } else {
                ("range", json!({"key": b64(key.as_bytes())}))
            };
            let r = c
                .etcd
                .post(format!("{target}/v3/kv/{path}"))
                .json(&body)
                .send()
                .await
                .map_err(|e| {
                    if e.is_timeout() {
                        "timeout".to_string()
                    } else if e.is_connect() {
                        "connect".to_string()
                    } else {
                        "transport".to_string()
                    }
                })?;
            let status = r.status().as_u16();
            // Parsed, as the client parses httpraft's answers, so both sides do the same work.
            let v: Value = r.json().await.map_err(|_| "bad-body".to_string())?;
            match status {
                200..=299 if op == Op::EtcdGet && v["kvs"].as_array().is_none_or(Vec::is_empty) => {
                    Err("http-404".into())
                }
                200..=299 => Ok(()),
                s => Err(format!("http-{s}")),
            }
        }
    }
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

async fn run(args: Args) -> Result<(), String> {
    let timeout = Duration::from_secs_f64(args.timeout);
    let client = Clients {
        raft: raft_http_client::Client::with_config(&args.targets, {
            let cfg = raft_http_client::ClientConfig {
                timeout,
                // Every failure is counted, none hidden by a retry.
                retries: 0,
                token: args.token.clone(),
                http2: args.http2,
                ..Default::default()
            };
            match &args.cacert {
                Some(ca) => cfg.with_tls_files(ca, None).map_err(|e| e.to_string())?,
                None => cfg,
            }
        })
        .map_err(|e| e.to_string())?,
        etcd: reqwest::Client::builder()
            .pool_max_idle_per_host(args.clients.max(1))
            .timeout(timeout)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| e.to_string())?,
    };
    let leader = if args.leader_only {
        Some(find_leader(&client, &args).await?)
    } else {
        None
    };
    let value = "v".repeat(args.value_size);
    if matches!(args.op, Op::KvGet | Op::EtcdGet) {
        // Keys to read, written once through the leader.
        let t = match &leader {
            Some(l) => l.clone(),
            None => find_leader(&client, &args).await?,
        };
        for w in 0..args.clients {
            let mut target = t.clone();
            let mut r = 0;
            let via = client.raft.via(&target);
            let key = format!("bench-{w}");
            let work = Work {
                op: if args.op == Op::EtcdGet {
                    Op::EtcdPut
                } else {
                    Op::KvPut
                },
                key: &key,
                value: &value,
                batch: 1,
            };
            one_request(&client, &via, &work, &mut target, &mut r).await?;
        }
    }
    let done = Arc::new(AtomicBool::new(false));
    let ok_count = Arc::new(AtomicU64::new(0));
    let err_count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for w in 0..args.clients {
        let client = client.clone();
        let mut target = leader
            .clone()
            .unwrap_or_else(|| args.targets[w % args.targets.len()].clone());
        let (done, ok_count, err_count) = (done.clone(), ok_count.clone(), err_count.clone());
        let value = value.clone();
        let op = args.op;
        let batch = args.batch;
        workers.push(tokio::spawn(async move {
            let mut res = WorkerResult::default();
            let via = client.raft.via(&target);
            let mut n = 0u64;
            while !done.load(Ordering::Relaxed) {
                let key = if matches!(op, Op::KvGet | Op::EtcdGet) {
                    format!("bench-{w}")
                } else {
                    format!("bench-{w}-{n}")
                };
                n += 1;
                let t0 = Instant::now();
                let work = Work {
                    op,
                    key: &key,
                    value: &value,
                    batch,
                };
                match one_request(&client, &via, &work, &mut target, &mut res.redirects).await {
                    Ok(()) => {
                        res.latencies_us
                            .push(t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                        ok_count.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(kind) => {
                        *res.errors.entry(kind).or_default() += 1;
                        err_count.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
            res
        }));
    }
    // Progress, and the stop condition.
    let deadline = start + Duration::from_secs_f64(args.duration);
    let mut last_report = start;
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let ok = ok_count.load(Ordering::Relaxed);
        let finished = match args.requests {
            Some(n) => ok >= n,
            None => Instant::now() >= deadline,
        };
        if !args.quiet && last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            let secs = start.elapsed().as_secs_f64();
            eprint!(
                "\r{secs:6.1}s  ok {ok:>9}  errors {:>6}  {:>9.0} req/s   ",
                err_count.load(Ordering::Relaxed),
                ok as f64 / secs
            );
        }
        if finished {
            break;
        }
    }
    done.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    let mut all = WorkerResult::default();
    for w in workers {
        let r = w.await.map_err(|e| e.to_string())?;
        all.latencies_us.extend(r.latencies_us);
        all.redirects += r.redirects;
        for (k, v) in r.errors {
            *all.errors.entry(k).or_default() += v;
        }
    }
    if !args.quiet {
        eprintln!();
    }
    all.latencies_us.sort_unstable();
    let l = &all.latencies_us;
    let ok = l.len() as u64;
    let errors: u64 = all.errors.values().sum();
    let throughput = ok as f64 / elapsed;
    let entries_per_sec = if args.op == Op::Append {
        throughput * args.batch as f64
    } else {
        throughput
    };
    let (p50, p90, p99, p999) = (pct(l, 0.5), pct(l, 0.9), pct(l, 0.99), pct(l, 0.999));
    let max = l.last().map_or(0.0, |m| f64::from(*m) / 1000.0);
    if args.json {
        let out = json!({
            "op": args.op.to_string(),
            "targets": args.targets,
            "clients": args.clients,
            "value_size": args.value_size,
            "seconds": elapsed,
            "ok": ok,
            "errors": errors,
            "errors_by_kind": all.errors,
            "redirects": all.redirects,
            "throughput": throughput,
            "batch": args.batch,
            "entries_per_sec": entries_per_sec,
            "latency_ms": {"p50": p50, "p90": p90, "p99": p99, "p99_9": p999, "max": max},
        });
        println!("{out}");
    } else {
        println!(
            "op {}, {} clients, {}-byte values, {elapsed:.1} s, targets {:?}",
            args.op, args.clients, args.value_size, args.targets
        );
        println!(
            "ok {ok}, errors {errors} {:?}, redirects followed {}",
            all.errors, all.redirects
        );
        println!("throughput {throughput:.1} req/s");
        if args.batch > 1 {
            println!(
                "entries {entries_per_sec:.1} /s ({} per request)",
                args.batch
            );
        }
        println!(
            "latency ms: p50 {p50:.2}  p90 {p90:.2}  p99 {p99:.2}  p99.9 {p999:.2}  max {max:.2}"
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raft-bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}
