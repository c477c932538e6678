//! The cluster under test: `httpraft` processes on loopback, each behind its proxy.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use raft_http_client::{Client, ClientConfig};
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
    /// Started with `--join` (and restarted the same way).
    joined_via: Option<String>,
    /// Runs this binary instead of the cluster's (after [`Cluster::upgrade`]).
    binary: Option<PathBuf>,
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
    /// Asks one node at a time, once, briefly (status polls).
    probe: Client,
    /// Talks to the members (see [`Cluster::admin`]).
    admin: Option<Client>,
}

/// Ports this process handed out for nodes to bind.
static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// The lowest and one past the highest port handed out: below Linux's ephemeral range
/// (32768–60999 by default), so that no outgoing connection takes a port between the
/// moment it is found free and the moment a node binds it.
const PORTS: (u16, u16) = (20_000, 32_768);

/// A loopback address free now, for a node to bind shortly. Never the same port twice in
/// this process: two runs at once (tests) must not share one, or a node of one run would
/// take the other run's messages.
fn free_addr() -> Result<SocketAddr, String> {
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    let span = u32::from(PORTS.1 - PORTS.0);
    let start = (std::process::id().wrapping_mul(7919) ^ handed.len() as u32) % span;
    for i in 0..span {
        let port = PORTS.0 + ((start + i) % span) as u16;
        if handed.contains(&port) {
            continue;
        }
        if let Ok(l) = StdListener::bind(("127.0.0.1", port)) {
            handed.insert(port);
            return l.local_addr().map_err(|e| e.to_string());
        }
    }
    Err(format!("no free port in {}..{}", PORTS.0, PORTS.1))
}

/// A cluster id of its own for each cluster this process starts: a message that reaches
/// another run's node (a port reused by accident) is refused, never taken into its log.
fn cluster_id() -> String {
    static STARTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("chaos-{}-{n}", std::process::id())
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
                    joined_via: None,
                    binary: None,
                },
            );
        }
        std::fs::write(
            dir.join("peers.json"),
            json!({"peers": peers, "apis": apis, "cluster_id": cluster_id()}).to_string(),
        )
        .map_err(|e| format!("cannot write peers.json: {e}"))?;
        let probe = Client::with_config(
            &apis,
            ClientConfig {
                timeout: Duration::from_millis(500),
                retries: 0,
                ..ClientConfig::default()
            },
        )
        .map_err(|e| e.to_string())?;
        let mut c = Cluster {
            dir: dir.to_path_buf(),
            binary: binary.to_path_buf(),
            extra_args: extra_args.to_vec(),
            nodes,
            next_id: n as NodeId,
            network,
            admin: Client::new(&apis).ok(),
            endpoints: Arc::new(RwLock::new(apis)),
            probe,
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
        let binary = node.binary.clone().unwrap_or_else(|| self.binary.clone());
        let mut cmd = match &self.network {
            Network::Proxies(_) => Command::new(&binary),
            Network::Namespaces(ns) => ns.command(id, &binary),
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
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        node.proc = Some(child);
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
            n.paused = false;
        }
    }

    /// Stops node `id` as an operator would (SIGTERM, then SIGKILL if it has not exited
    /// within 10 s) and starts `binary` in its place on the same data directory.
    pub async fn upgrade(&mut self, id: NodeId, binary: &Path) -> Result<(), String> {
        self.signal(id, Signal::TERM);
        let Some(node) = self.nodes.get_mut(&id) else {
            return Err(format!("no node {id}"));
        };
        if let Some(mut child) = node.proc.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
        node.binary = Some(binary.to_path_buf());
        self.spawn(id)
    }

    /// The process id of node `id`, while it runs.
    pub fn pid(&self, id: NodeId) -> Option<u32> {
        self.nodes.get(&id)?.proc.as_ref().map(Child::id)
    }

    /// Starts a killed node again from its data (nothing if it runs).
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
            self.restart(id)?;
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
            Network::Namespaces(_) if fault.rate > 0 => {
                Err("a link's rate limit needs --network proxies".to_string())
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

    /// Node `id`'s `/v1/status`, if it answers within half a second.
    pub async fn status_of(&self, id: NodeId) -> Option<Value> {
        let api = &self.nodes.get(&id)?.api;
        self.probe.status(Some(api)).await.ok()
    }

    /// A client of the members, for changes and transfers (retrying what may be
    /// retried); made again when the members change.
    fn admin(&self) -> Result<Client, String> {
        self.admin
            .clone()
            .ok_or_else(|| "no member to talk to".to_string())
    }

    /// The leader, if the running nodes that answer agree on one that says so itself.
    pub async fn leader(&self) -> Option<NodeId> {
        for (&id, n) in &self.nodes {
            if n.proc.is_none() || n.paused {
                continue;
            }
            if let Some(s) = self.status_of(id).await {
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

    /// Asks the leader to hand leadership to `to`; the new leader.
    pub async fn transfer_leadership(&self, to: NodeId) -> Result<NodeId, String> {
        self.admin()?
            .transfer_leader(Some(to))
            .await
            .map_err(|e| e.to_string())
    }

    /// The ids of the voters, as the leader sees them.
    pub async fn voters(&self) -> Result<Vec<NodeId>, String> {
        let members = self.admin()?.members().await.map_err(|e| e.to_string())?;
        Ok(members
            .into_iter()
            .filter(|m| m.role == "voter")
            .map(|m| m.id)
            .collect())
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
                joined_via: Some(via),
                binary: None,
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
        let admin = self.admin()?;
        loop {
            match admin.remove_member(id).await {
                Ok(_) => break,
                // Removed already (by an attempt whose answer was lost).
                Err(e) if e.code() == Some("invalid_member") => break,
                Err(e) => {
                    if Instant::now() > deadline {
                        return Err(format!("removing node {id}: {e}"));
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
    fn publish(&mut self) {
        let apis: Vec<String> = self.nodes.values().map(|n| n.api.clone()).collect();
        self.admin = Client::new(&apis).ok();
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
                match self.status_of(id).await {
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

    /// Waits until node `id` answers and has applied what the leader had committed when
    /// this was called (as an operator waits before upgrading the next node: under a
    /// steady load, every member applying the same index at the same moment is rare).
    pub async fn wait_caught_up(&self, id: NodeId, within: Duration) -> Result<u64, String> {
        let deadline = Instant::now() + within;
        let target = loop {
            let leader = self.wait_leader(within).await?;
            if let Some(c) = self
                .status_of(leader)
                .await
                .and_then(|s| s["commit_index"].as_u64())
            {
                break c;
            }
            if Instant::now() > deadline {
                return Err(format!("the leader did not answer within {within:?}"));
            }
        };
        loop {
            let applied = self
                .status_of(id)
                .await
                .and_then(|s| s["applied_index"].as_u64());
            if applied.is_some_and(|a| a >= target) {
                return Ok(target);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "node {id} did not apply the leader's commit index {target} within {within:?} (applied: {applied:?})"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Node `id`'s plain log entries, `(index, text)`, read through `GET /v1/log`.
    pub async fn plain_log(&self, id: NodeId) -> Result<Vec<(u64, String)>, String> {
        let api = &self
            .nodes
            .get(&id)
            .ok_or_else(|| format!("no node {id}"))?
            .api;
        let node = self.admin()?.via(api);
        let mut out = Vec::new();
        let mut from = 1u64;
        loop {
            // Local reads of this node's copy (GET /v1/log never redirects).
            let page = node
                .read_log(from, 10_000)
                .await
                .map_err(|e| format!("node {id}: GET /v1/log: {e}"))?;
            if page.entries.is_empty() {
                return Ok(out);
            }
            for e in &page.entries {
                if let (true, Some(t)) = (e.kind == "entry", &e.entry) {
                    out.push((e.index, t.clone()));
                }
            }
            if page.next <= from {
                return Ok(out);
            }
            from = page.next;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Two runs at once in one process (the end-to-end tests) once shared a port: a node
    /// of one took the other's messages, under the same cluster id, and both histories
    /// broke. Ports are handed out once each, outside the ephemeral range, and each
    /// cluster has an id of its own.
    #[test]
    fn runs_in_one_process_never_share_a_port_or_a_cluster_id() {
        let ports: Vec<u16> = (0..300).map(|_| free_addr().unwrap().port()).collect();
        let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
        assert!(ports.iter().all(|&p| (PORTS.0..PORTS.1).contains(&p)));
        assert_ne!(cluster_id(), cluster_id());
    }
}
