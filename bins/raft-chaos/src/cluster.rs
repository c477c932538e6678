//! The cluster under test: `httpraft` processes on loopback, each behind its proxy.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};
use serde_json::{json, Value};

use crate::netns::Namespaces;
use crate::proxy::{self, LinkFault, Links, NodeId};

/// The API addresses of the current members, read by the clients.
pub type Endpoints = Arc<RwLock<Vec<String>>>;

/// One node: its addresses and its process.
#[derive(Debug)]
pub struct Node {
    /// Its HTTP API (`host:port`).
    pub api: String,
    /// Where the others reach it: its proxy.
    pub raft_public: SocketAddr,
    /// Where it listens for Raft connections.
    pub raft_listen: SocketAddr,
    /// The running process, if any.
    proc: Option<Child>,
    /// Stopped with SIGSTOP.
    pub paused: bool,
    /// Killed by a fault, to be restarted.
    pub killed: bool,
    /// Started with `--join` (and restarted the same way).
    joined_via: Option<String>,
}

/// How links between members are made to fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkMode {
    /// A fault-injecting proxy in front of each member's Raft port (no root needed).
    Proxies,
    /// Each member in its own network namespace; cuts and delays on real interfaces
    /// (root only).
    Namespaces,
}

/// The links' fault injector.
enum Network {
    Proxies(Arc<Links>),
    Namespaces(Namespaces),
}

impl Network {
    /// Node `id`'s addresses: where the others reach its Raft port, where it listens for
    /// Raft, and its API.
    async fn place(&mut self, id: NodeId) -> Result<(SocketAddr, SocketAddr, String), String> {
        match self {
            Network::Proxies(links) => {
                let listener = bind_proxy().await?;
                let raft_public = listener.local_addr().map_err(|e| e.to_string())?;
                let raft_listen = free_addr()?;
                proxy::spawn(listener, id, raft_listen, links.clone());
                Ok((raft_public, raft_listen, free_addr()?.to_string()))
            }
            Network::Namespaces(ns) => {
                let (raft, api) = ns.add(id)?;
                Ok((raft, raft, api.to_string()))
            }
        }
    }
}

/// The cluster.
pub struct Cluster {
    dir: PathBuf,
    binary: PathBuf,
    extra_args: Vec<String>,
    /// The current members, by id (a removed member's entry is dropped).
    pub nodes: BTreeMap<NodeId, Node>,
    next_id: NodeId,
    network: Network,
    /// What the clients talk to.
    pub endpoints: Endpoints,
    http: reqwest::Client,
}

fn free_addr() -> Result<SocketAddr, String> {
    let l = StdListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr().map_err(|e| e.to_string())
}

async fn bind_proxy() -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("cannot bind a proxy: {e}"))
}

impl Cluster {
    /// Starts `n` nodes of `binary` in `dir` (with `extra_args` each) and waits for a
    /// leader.
    pub async fn start(
        binary: &Path,
        dir: &Path,
        n: usize,
        extra_args: &[String],
        mode: NetworkMode,
    ) -> Result<Cluster, String> {
        let mut network = match mode {
            NetworkMode::Proxies => Network::Proxies(Arc::new(Links::default())),
            NetworkMode::Namespaces => Network::Namespaces(Namespaces::new()?),
        };
        let mut nodes = BTreeMap::new();
        let mut peers = Vec::new();
        let mut apis = Vec::new();
        for id in 0..n as NodeId {
            let (raft_public, raft_listen, api) = network.place(id).await?;
            peers.push(raft_public.to_string());
            apis.push(api.clone());
            nodes.insert(
                id,
                Node {
                    api,
                    raft_public,
                    raft_listen,
                    proc: None,
                    paused: false,
                    killed: false,
                    joined_via: None,
                },
            );
        }
        std::fs::write(
            dir.join("peers.json"),
            json!({"peers": peers, "apis": apis, "cluster_id": "chaos"}).to_string(),
        )
        .map_err(|e| format!("cannot write peers.json: {e}"))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| e.to_string())?;
        let mut c = Cluster {
            dir: dir.to_path_buf(),
            binary: binary.to_path_buf(),
            extra_args: extra_args.to_vec(),
            nodes,
            next_id: n as NodeId,
            network,
            endpoints: Arc::new(RwLock::new(apis)),
            http,
        };
        for id in 0..n as NodeId {
            c.spawn(id)?;
        }
        c.wait_leader(Duration::from_secs(30)).await?;
        Ok(c)
    }

    fn spawn(&mut self, id: NodeId) -> Result<(), String> {
        let Some(node) = self.nodes.get_mut(&id) else {
            return Err(format!("no node {id}"));
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("node-{id}.log")))
            .map_err(|e| format!("cannot open the node's log: {e}"))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = match &self.network {
            Network::Proxies(_) => Command::new(&self.binary),
            Network::Namespaces(ns) => ns.command(id, &self.binary),
        };
        cmd.current_dir(&self.dir)
            .arg(id.to_string())
            .args(["--peers", "peers.json"])
            .args(["--raft-listen", &node.raft_listen.to_string()])
            .args(["--autopilot-promote-after-ms", "300"])
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        if let Some(via) = &node.joined_via {
            cmd.args(["--join", via])
                .args(["--raft-addr", &node.raft_public.to_string()])
                .args(["--api", &node.api]);
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.binary.display()))?;
        node.proc = Some(child);
        node.killed = false;
        node.paused = false;
        Ok(())
    }

    fn signal(&self, id: NodeId, sig: Signal) {
        if let Some(pid) = self
            .nodes
            .get(&id)
            .and_then(|n| n.proc.as_ref())
            .and_then(|c| Pid::from_raw(c.id() as i32))
        {
            let _ = kill_process(pid, sig);
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self, id: NodeId) {
        if let Some(n) = self.nodes.get_mut(&id) {
            if let Some(mut c) = n.proc.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            n.killed = true;
            n.paused = false;
        }
    }

    /// Starts a killed node again from its data.
    pub fn restart(&mut self, id: NodeId) -> Result<(), String> {
        if self.nodes.get(&id).is_some_and(|n| n.proc.is_none()) {
            self.spawn(id)?;
        }
        Ok(())
    }

    /// SIGSTOP.
    pub fn pause(&mut self, id: NodeId) {
        self.signal(id, Signal::STOP);
        if let Some(n) = self.nodes.get_mut(&id) {
            n.paused = true;
        }
    }

    /// SIGCONT.
    pub fn resume(&mut self, id: NodeId) {
        self.signal(id, Signal::CONT);
        if let Some(n) = self.nodes.get_mut(&id) {
            n.paused = false;
        }
    }

    /// Ends every fault: links healed, paused nodes resumed, killed nodes restarted.
    pub fn heal(&mut self) -> Result<(), String> {
        self.heal_links();
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            if self.nodes[&id].paused {
                self.resume(id);
            }
            if self.nodes[&id].proc.is_none() {
                self.spawn(id)?;
            }
        }
        Ok(())
    }

    /// Sets the faults of the link `from → to` (what `from` sends to `to`).
    pub fn set_link(&self, from: NodeId, to: NodeId, fault: LinkFault) -> Result<(), String> {
        match &self.network {
            Network::Proxies(links) => {
                links.set(from, to, fault);
                Ok(())
            }
            Network::Namespaces(ns) => {
                if fault.blocked {
                    ns.cut(from, to)?;
                }
                if !fault.delay.is_zero() {
                    // netem delays everything the node sends, whoever to.
                    ns.delay(from, fault.delay)?;
                }
                Ok(())
            }
        }
    }

    /// Heals every link.
    pub fn heal_links(&self) {
        match &self.network {
            Network::Proxies(links) => links.heal_all(),
            Network::Namespaces(ns) => ns.heal(&self.ids()),
        }
    }

    /// The members' ids.
    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// The node whose log a failure points at.
    pub fn log_path(&self, id: NodeId) -> PathBuf {
        self.dir.join(format!("node-{id}.log"))
    }

    async fn get_json(&self, id: NodeId, path: &str) -> Option<Value> {
        self.get_json_within(id, path, Duration::from_millis(500))
            .await
    }

    async fn get_json_within(&self, id: NodeId, path: &str, within: Duration) -> Option<Value> {
        let api = &self.nodes.get(&id)?.api;
        let r = self
            .http
            .get(format!("http://{api}{path}"))
            .timeout(within)
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    }

    /// The leader, if the running nodes that answer agree on one that says so itself.
    pub async fn leader(&self) -> Option<NodeId> {
        for (&id, n) in &self.nodes {
            if n.proc.is_none() || n.paused {
                continue;
            }
            if let Some(s) = self.get_json(id, "/v1/status").await {
                if s["role"] == "leader" {
                    return Some(id);
                }
            }
        }
        None
    }

    /// Polls until a leader is known.
    pub async fn wait_leader(&self, within: Duration) -> Result<NodeId, String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(l) = self.leader().await {
                return Ok(l);
            }
            if Instant::now() > deadline {
                return Err(format!("no leader within {within:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends `body` with `method` to the leader's `path`; the answer's status and JSON.
    async fn to_leader(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), String> {
        let leader = self.wait_leader(Duration::from_secs(10)).await?;
        let api = &self.nodes[&leader].api;
        let mut req = self
            .http
            .request(method, format!("http://{api}{path}"))
            .timeout(Duration::from_secs(10));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.map_err(|e| e.to_string())?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }

    /// Asks the leader to hand leadership to `to`; its answer.
    pub async fn transfer_leadership(&self, to: NodeId) -> Result<(u16, Value), String> {
        self.to_leader(
            reqwest::Method::POST,
            "/v1/leader/transfer",
            Some(json!({ "to": to })),
        )
        .await
    }

    /// The ids of the voters, as the leader sees them.
    pub async fn voters(&self) -> Result<Vec<NodeId>, String> {
        let (_, v) = self
            .to_leader(reqwest::Method::GET, "/v1/members", None)
            .await?;
        Ok(v.as_array()
            .map(|a| {
                a.iter()
                    .filter(|m| m["role"] == "voter")
                    .filter_map(|m| m["id"].as_u64())
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Starts a new node that joins through the leader; waits (at most `within`) until
    /// the autopilot made it a voter. Its id.
    pub async fn add_node(&mut self, within: Duration) -> Result<NodeId, String> {
        let leader = self.wait_leader(Duration::from_secs(10)).await?;
        let id = self.next_id;
        self.next_id += 1;
        let (raft_public, raft_listen, api) = self.network.place(id).await?;
        let via = format!("http://{}", self.nodes[&leader].api);
        self.nodes.insert(
            id,
            Node {
                api: api.clone(),
                raft_public,
                raft_listen,
                proc: None,
                paused: false,
                killed: false,
                joined_via: Some(via),
            },
        );
        self.spawn(id)?;
        let deadline = Instant::now() + within;
        loop {
            if self.voters().await.is_ok_and(|v| v.contains(&id)) {
                self.publish();
                return Ok(id);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "node {id} joined but was not a voter within {within:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Removes member `id` from the cluster (retrying while another change is under way),
    /// then stops its process and forgets it.
    pub async fn remove_node(&mut self, id: NodeId, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            match self
                .to_leader(reqwest::Method::DELETE, &format!("/v1/members/{id}"), None)
                .await
            {
                Ok((200, _)) => break,
                // Removed already (by an attempt whose answer was lost).
                Ok((400, v)) if v["error"]["code"] == "invalid_member" => break,
                other => {
                    if Instant::now() > deadline {
                        return Err(format!("removing node {id}: {other:?}"));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.kill(id);
        self.nodes.remove(&id);
        self.publish();
        Ok(())
    }

    /// Tells the clients the current members' API addresses.
    fn publish(&self) {
        let apis: Vec<String> = self.nodes.values().map(|n| n.api.clone()).collect();
        match self.endpoints.write() {
            Ok(mut e) => *e = apis,
            Err(p) => *p.into_inner() = apis,
        }
    }

    /// Waits until every member answers and all have applied the same index, which the
    /// leader has committed; that index.
    pub async fn wait_converged(&self, within: Duration) -> Result<u64, String> {
        let deadline = Instant::now() + within;
        loop {
            let mut applied = Vec::new();
            let mut commit = None;
            for &id in self.nodes.keys() {
                match self.get_json(id, "/v1/status").await {
                    Some(s) => {
                        applied.push(s["applied_index"].as_u64().unwrap_or(0));
                        if s["role"] == "leader" {
                            commit = s["commit_index"].as_u64();
                        }
                    }
                    None => applied.push(u64::MAX),
                }
            }
            if let Some(c) = commit {
                if applied.iter().all(|&a| a == c) {
                    return Ok(c);
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the cluster did not converge within {within:?}: applied {applied:?}, leader's commit {commit:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Node `id`'s plain log entries, `(index, text)`, read through `GET /v1/log`.
    pub async fn plain_log(&self, id: NodeId) -> Result<Vec<(u64, String)>, String> {
        let mut out = Vec::new();
        let mut from = 1u64;
        loop {
            let v = self
                .get_json_within(
                    id,
                    &format!("/v1/log?from={from}&limit=10000"),
                    Duration::from_secs(10),
                )
                .await
                .ok_or_else(|| format!("node {id} did not answer GET /v1/log"))?;
            let entries = v["entries"].as_array().cloned().unwrap_or_default();
            if entries.is_empty() {
                return Ok(out);
            }
            for e in &entries {
                if e["kind"] == "entry" {
                    if let (Some(i), Some(t)) = (e["index"].as_u64(), e["entry"].as_str()) {
                        out.push((i, t.to_string()));
                    }
                }
            }
            let next = v["next"].as_u64().unwrap_or(from + entries.len() as u64);
            if next <= from {
                return Ok(out);
            }
            from = next;
        }
    }

    /// Stops every process.
    pub fn shutdown(&mut self) {
        let ids = self.ids();
        for id in ids {
            self.resume(id);
            self.kill(id);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}
