//! Starts real `httpraft` processes with a `peers.json` on free loopback ports, as a user
//! would, and talks to them over HTTP.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod browser;

use serde_json::Value;

pub const DEADLINE: Duration = Duration::from_secs(30);

/// The `httpraft` binary, built in release mode (as users run it) with the same cargo, so
/// a stale binary is never tested; when it is already up to date, this is a quick no-op.
pub fn binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| build("httpraft")).clone()
}

/// Runs a command to completion; panics with its output unless it succeeded.
pub fn run_ok(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The `raft-bench` binary, (re)built like [`binary`].
pub fn bench_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| build("raft-bench")).clone()
}

fn build(package: &str) -> PathBuf {
    build_with(package, &[])
}

/// Builds `package`'s binary in release mode with `features` on; where it is. The binary
/// is overwritten by the next build of the package with other features: copy it.
pub fn build_with(package: &str, features: &[&str]) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/e2e-... → target/release/<package>
    let target_dir = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .unwrap()
        .to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "--release",
            "-p",
            package,
            "--bin",
            package,
        ])
        .args(features.iter().flat_map(|f| ["--features", f]))
        .status()
        .unwrap();
    assert!(status.success(), "building {package} failed");
    let bin = target_dir.join("release").join(package);
    assert!(
        bin.exists(),
        "{package} binary not found at {}",
        bin.display()
    );
    bin
}

/// A port that is free now, from a range below the kernel's ephemeral ports (so outgoing
/// connections of other tests cannot take it before the node binds it), never handed out
/// twice by this process.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = (std::process::id() % 100) as u16 * 100;
    loop {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % 10_000;
        let port = 20_000 + (base + offset) % 12_000;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Tokens made by [`Cluster::enable_tokens`], one per role.
pub struct Tokens {
    pub read: String,
    pub write: String,
    pub admin: String,
    pub file: PathBuf,
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub apis: Vec<String>,
    /// The Raft addresses of the nodes (peers.json's "peers").
    pub peers: Vec<String>,
    procs: Vec<Option<Child>>,
    /// Extra command-line arguments of every node.
    args: Vec<String>,
    /// Extra command-line arguments of each node (its TLS files).
    node_args: Vec<Vec<String>>,
    /// Whether the nodes speak mutual TLS with each other ([`Cluster::enable_tls`]).
    tls: bool,
    /// The umask nodes start with, if not the test's own ([`Cluster::set_umask`]).
    umask: Option<u32>,
    pub http: reqwest::Client,
}

impl Cluster {
    /// Writes a peers.json for `n` nodes and starts them all.
    pub async fn start(n: usize) -> Cluster {
        Self::start_with(n, &[]).await
    }

    /// Like [`start`](Self::start), every node started with `args` added.
    pub async fn start_with(n: usize, args: &[&str]) -> Cluster {
        let mut c = Self::new(n, args);
        c.launch().await;
        c
    }

    /// Starts every node and waits until they are ready.
    pub async fn launch(&mut self) {
        for i in 0..self.procs.len() {
            self.spawn(i);
        }
        self.wait_ready().await;
    }

    /// The data directory of node `i` (`httpraft`'s default under the cluster directory).
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join("data").join(format!("node-{i}"))
    }

    /// Writes a peers.json for `n` nodes; starts nothing.
    pub fn new(n: usize, args: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let peers: Vec<String> = (0..n)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let apis: Vec<String> = (0..n)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let json = serde_json::json!({"peers": peers, "apis": apis});
        std::fs::write(dir.path().join("peers.json"), json.to_string()).unwrap();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        Cluster {
            dir,
            apis,
            peers,
            procs: (0..n).map(|_| None).collect(),
            args: args.iter().map(|a| a.to_string()).collect(),
            node_args: vec![Vec::new(); n],
            tls: false,
            umask: None,
            http,
        }
    }

    /// `https` once [`enable_tls`](Self::enable_tls) made the API HTTPS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }

    /// An HTTP client that trusts the cluster's CA (when it has one) and sends `token`.
    pub fn client_with(&self, token: Option<&str>) -> reqwest::Client {
        self.client_presenting(None, token)
    }

    /// Like [`client_with`](Self::client_with), presenting the client certificate
    /// `certs/<cert>.pem` (with its key `certs/<cert>.key`) when `cert` is given.
    pub fn client_presenting(&self, cert: Option<&str>, token: Option<&str>) -> reqwest::Client {
        let mut b = reqwest::Client::builder().timeout(Duration::from_secs(10));
        if let Some(name) = cert {
            let certs = self.certs_dir();
            let mut pem = std::fs::read(certs.join(format!("{name}.pem"))).unwrap();
            pem.extend(std::fs::read(certs.join(format!("{name}.key"))).unwrap());
            b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
        }
        if self.tls {
            let ca = std::fs::read(self.certs_dir().join("ca.pem")).unwrap();
            b = b
                .use_rustls_tls()
                .tls_built_in_root_certs(false)
                .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap());
        }
        if let Some(t) = token {
            let mut h = reqwest::header::HeaderMap::new();
            h.insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {t}").parse().unwrap(),
            );
            b = b.default_headers(h);
        }
        b.build().unwrap()
    }

    /// Makes a token of each role with `httpraft tokens add` and starts every node (from
    /// now on) with `--tokens`; the cluster's own client uses the admin token.
    pub fn enable_tokens(&mut self) -> Tokens {
        let file = self.dir.path().join("tokens.json");
        let add = |name: &str, role: &str| {
            let out = run_ok(
                Command::new(binary())
                    .args(["tokens", "add", name, "--role", role, "--file"])
                    .arg(&file),
            );
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        };
        let tokens = Tokens {
            read: add("reader", "read"),
            write: add("writer", "write"),
            admin: add("operator", "admin"),
            file: file.clone(),
        };
        self.args.push("--tokens".into());
        self.args.push(file.display().to_string());
        self.http = self.client_with(Some(&tokens.admin));
        tokens
    }

    /// Where `httpraft certs` put the cluster's certificates.
    pub fn certs_dir(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    /// Makes the cluster's CA and every node's certificate with `httpraft certs`, as an
    /// operator would, and starts every node (from now on) with mutual TLS between members.
    pub fn enable_tls(&mut self) {
        let certs = self.certs_dir();
        run_ok(
            Command::new(binary())
                .args(["certs", "init", "--dir"])
                .arg(&certs),
        );
        self.tls = true;
        for i in 0..self.procs.len() {
            self.issue_node_cert(i);
        }
        self.http = self.client_with(None);
    }

    /// Issues a certificate for node `id` from the cluster's CA, as `httpraft certs node`
    /// does (`certs/node-<id>.pem`), without making it a member.
    pub fn issue_cert(&self, id: usize) {
        run_ok(
            Command::new(binary())
                .args([
                    "certs",
                    "node",
                    &id.to_string(),
                    "--host",
                    "127.0.0.1",
                    "--dir",
                ])
                .arg(self.certs_dir()),
        );
    }

    fn issue_node_cert(&mut self, i: usize) {
        let certs = self.certs_dir();
        run_ok(
            Command::new(binary())
                .args([
                    "certs",
                    "node",
                    &i.to_string(),
                    "--host",
                    "127.0.0.1",
                    "--dir",
                ])
                .arg(&certs),
        );
        let file = |name: String| certs.join(name).display().to_string();
        self.node_args[i] = vec![
            "--tls-cert".into(),
            file(format!("node-{i}.pem")),
            "--tls-key".into(),
            file(format!("node-{i}.key")),
            "--tls-ca".into(),
            file("ca.pem".into()),
        ];
    }

    /// Like [`start`](Self::start), with mutual TLS between members.
    pub async fn start_tls(n: usize) -> Cluster {
        let mut c = Self::new(n, &[]);
        c.enable_tls();
        c.launch().await;
        c
    }

    /// Makes room for one more node with fresh addresses (peers.json is left as it is: a
    /// new node joins with its own addresses on the command line). Returns its index.
    pub fn add_slot(&mut self) -> usize {
        self.peers.push(format!("127.0.0.1:{}", free_port()));
        self.apis.push(format!("127.0.0.1:{}", free_port()));
        self.procs.push(None);
        self.node_args.push(Vec::new());
        let i = self.apis.len() - 1;
        if self.tls {
            self.issue_node_cert(i);
        }
        i
    }

    /// Starts every node (from now on) with `mask` as its umask.
    pub fn set_umask(&mut self, mask: u32) {
        self.umask = Some(mask);
    }

    /// Adds `args` to node `i`'s own command line, for every later start.
    pub fn push_node_args(&mut self, i: usize, args: &[&str]) {
        self.node_args[i].extend(args.iter().map(|a| a.to_string()));
    }

    /// Starts node `i` as a new member joining the cluster through node `via`'s API.
    pub fn spawn_joining(&mut self, i: usize, via: usize) {
        let extra = [
            "--join".to_string(),
            format!("{}://{}", self.scheme(), self.apis[via]),
            "--raft-addr".to_string(),
            self.peers[i].clone(),
            "--api".to_string(),
            self.apis[i].clone(),
        ];
        self.spawn_with(i, &extra);
    }

    /// Starts node `i` as `httpraft <i>` in the cluster's directory (where peers.json is).
    pub fn spawn(&mut self, i: usize) {
        self.spawn_with(i, &[]);
    }

    /// Like [`spawn`](Self::spawn), with `extra` arguments for this node only.
    pub fn spawn_with(&mut self, i: usize, extra: &[String]) {
        let log = std::fs::File::create(self.dir.path().join(format!("node-{i}.log"))).unwrap();
        // Quick elections unless the test sets its own timing.
        let timing: &[&str] = if self.args.iter().any(|a| a == "--election-ticks") {
            &[]
        } else {
            &["--election-ticks", "20", "--heartbeat-ticks", "3"]
        };
        let mut command = match self.umask {
            None => Command::new(binary()),
            Some(mask) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("umask {mask:03o} && exec \"$0\" \"$@\""))
                    .arg(binary());
                sh
            }
        };
        let child = command
            .arg(i.to_string())
            .args(timing)
            .args(&self.args)
            .args(&self.node_args[i])
            .args(extra)
            .current_dir(self.dir.path())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.procs[i] = Some(child);
    }

    /// Waits (up to the deadline) for node `i` to exit on its own; its exit status.
    pub fn wait_exit(&mut self, i: usize) -> std::process::ExitStatus {
        let mut c = self.procs[i].take().expect("node not running");
        let start = Instant::now();
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < DEADLINE, "node {i} did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.procs[i].take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM, then wait for a clean exit; returns how long the node took to exit.
    pub fn stop(&mut self, i: usize) -> Duration {
        self.stop_timed(i).unwrap_or_default()
    }

    /// Sends signal `name` (`HUP`, `STOP`, ...) to node `i`, with the shell's own `kill`.
    pub fn signal(&self, i: usize, name: &str) {
        let Some(c) = &self.procs[i] else {
            panic!("node {i} is not running");
        };
        let ok = Command::new("sh")
            .args(["-c", &format!("kill -{name} {}", c.id())])
            .status()
            .unwrap();
        assert!(ok.success(), "kill -{name} failed");
    }

    fn stop_timed(&mut self, i: usize) -> Option<Duration> {
        if let Some(mut c) = self.procs[i].take() {
            // The shell's own `kill`, so no extra package is needed.
            let ok = Command::new("sh")
                .args(["-c", &format!("kill -TERM {}", c.id())])
                .status()
                .unwrap();
            assert!(ok.success());
            let start = Instant::now();
            loop {
                if let Some(status) = c.try_wait().unwrap() {
                    assert!(
                        status.success(),
                        "node {i} exited with {status} after SIGTERM"
                    );
                    return Some(start.elapsed());
                }
                assert!(
                    start.elapsed() < DEADLINE,
                    "node {i} did not stop after SIGTERM"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        None
    }

    pub fn running(&self) -> Vec<usize> {
        (0..self.procs.len())
            .filter(|&i| self.procs[i].is_some())
            .collect()
    }

    pub fn url(&self, i: usize, path: &str) -> String {
        format!("{}://{}{path}", self.scheme(), self.apis[i])
    }

    /// Node `i`'s answer to `GET path`, as JSON.
    pub async fn get_json(&self, i: usize, path: &str) -> Value {
        self.http
            .get(self.url(i, path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Node `i`'s `/v1/status`.
    pub async fn status(&self, i: usize) -> Value {
        self.get_json(i, "/v1/status").await
    }

    /// The index of the running node every running node names as leader (waits for
    /// agreement).
    pub async fn leader(&self) -> usize {
        let start = Instant::now();
        loop {
            let mut named = Vec::new();
            for i in self.running() {
                if let Ok(r) = self.http.get(self.url(i, "/v1/status")).send().await {
                    if let Ok(v) = r.json::<Value>().await {
                        named.push(v["leader_api"].as_str().map(String::from));
                    }
                }
            }
            if let Some(Some(api)) = named.first() {
                if named.len() == self.running().len()
                    && named.iter().all(|n| n.as_ref() == Some(api))
                {
                    // A node that was just stopped (for example a leader that removed
                    // itself) is still named until the others time out: wait for one
                    // that runs.
                    if let Some(i) = self.apis.iter().position(|a| a == api) {
                        if self.procs[i].is_some() {
                            return i;
                        }
                    }
                }
            }
            assert!(
                start.elapsed() < DEADLINE,
                "the nodes never agreed on a leader"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Node `i`'s `/metrics` text.
    pub async fn metrics_text(&self, i: usize) -> String {
        self.http
            .get(self.url(i, "/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// One metric's value from node `i`'s `/metrics` (the first sample of that name).
    pub async fn metric(&self, i: usize, name: &str) -> f64 {
        let text = self.metrics_text(i).await;
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                let (n, v) = l.rsplit_once(' ')?;
                (n == name).then(|| v.parse().ok()).flatten()
            })
            .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
    }

    /// The log node `i` wrote to its standard error so far.
    pub fn node_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node-{i}.log"))).unwrap_or_default()
    }

    /// Waits until every running node reports ready (a leader known, everything applied).
    pub async fn wait_ready(&self) {
        let start = Instant::now();
        for i in self.running() {
            loop {
                let ok = self
                    .http
                    .get(self.url(i, "/readyz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ok {
                    break;
                }
                if start.elapsed() > DEADLINE {
                    let log =
                        std::fs::read_to_string(self.dir.path().join(format!("node-{i}.log")))
                            .unwrap_or_default();
                    panic!("node {i} never became ready; its log:\n{log}");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// The original's client flow: post to `api`, follow the returned leader until success.
    /// Returns whether it succeeded (false after the deadline).
    pub async fn post_entry(&self, mut api: String, entry: &str) -> (bool, String) {
        let start = Instant::now();
        loop {
            let r = self
                .http
                .post(format!("{}://{api}/request", self.scheme()))
                .header("Host", "me")
                .json(&serde_json::json!({"entry": entry}))
                .send()
                .await;
            if let Ok(r) = r {
                if let Ok(v) = r.json::<Value>().await {
                    if v["success"] == true {
                        return (true, api);
                    }
                    if let Some(l) = v["leader"].as_str().filter(|l| !l.is_empty()) {
                        api = l.to_string();
                    }
                }
            }
            if start.elapsed() > DEADLINE {
                return (false, api);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The entries (`kind: entry`) node `i` returns from `GET /log?index=1`.
    pub async fn log_texts(&self, i: usize) -> Option<Vec<String>> {
        let r = self
            .http
            .get(self.url(i, "/log?index=1"))
            .send()
            .await
            .ok()?;
        let v: Value = r.json().await.ok()?;
        Some(
            v.as_array()?
                .iter()
                .filter(|e| e["kind"] == "entry")
                .filter_map(|e| e["entry"].as_str().map(String::from))
                .collect(),
        )
    }

    /// Waits until every running node's log contains all of `texts`; returns the logs.
    pub async fn logs_containing(&self, texts: &[String]) -> Vec<Vec<String>> {
        let start = Instant::now();
        loop {
            let mut all = Vec::new();
            for i in self.running() {
                match self.log_texts(i).await {
                    Some(log) if texts.iter().all(|t| log.contains(t)) => all.push(log),
                    _ => break,
                }
            }
            if all.len() == self.running().len() {
                return all;
            }
            assert!(start.elapsed() < DEADLINE, "not every node has every entry");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self.procs.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
