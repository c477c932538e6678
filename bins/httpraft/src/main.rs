//! `httpraft`: one Raft node with an HTTP API, or (`httpraft dev`) a local 3-node cluster.

mod certs;
mod settings;
mod tokens;

use std::collections::BTreeMap;
use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use raft_client::{DurableStore, Peer, RaftNode};
use raft_http::AppState;
use settings::{Cli, Command, NodeSettings, Options};
use tokio::task::JoinHandle;
use tracing_subscriber::EnvFilter;

/// mimalloc: the request path allocates per request (HTTP parsing, JSON, channels); a
/// thread-caching allocator keeps that cheap.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A node and its HTTP server.
struct Running {
    node: RaftNode<raft_client::KvResponse>,
    stop_http: tokio::sync::watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    /// Ends the open streams when the node stops.
    state: AppState,
    /// Reloads the TLS material on SIGHUP while the node runs.
    reloader: Option<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, finishes in-flight requests, then stops the node (releasing the data
    /// directory).
    async fn stop(mut self) {
        let id = self.node.id();
        self.hand_over_leadership().await;
        tracing::info!(
            id,
            "stopping: no new HTTP connections; finishing requests in flight"
        );
        let _ = self.stop_http.send(true);
        // Streams end now (so that the requests serving them finish), and the API's own
        // tasks with them.
        self.state.closed().await;
        // In-flight requests get a bounded time to finish (`--http-drain-timeout-ms`); then
        // their connections are dropped and the node stops anyway (its waiting callers are
        // answered with an error as it shuts down).
        match (&mut self.server).await {
            Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server ended with an error"),
            Err(e) => tracing::warn!(error = %e, "HTTP server task failed"),
            Ok(Ok(())) => {}
        }
        tracing::info!(id, "stopping: HTTP closed; stopping the Raft node");
        if let Some(r) = self.reloader.take() {
            r.abort();
        }
        self.node.shutdown().await;
    }
}

impl Running {
    /// A leader first hands leadership to the most caught-up voter, trying again while a
    /// try is abandoned (each lasts at most an election timeout) for up to four election
    /// timeouts, so that a rolling restart costs no election timeout per node.
    async fn hand_over_leadership(&self) {
        let id = self.node.id();
        let leading = self
            .node
            .status()
            .await
            .is_ok_and(|s| s.role == raft_core::Role::Leader);
        if !leading {
            return;
        }
        let limit = self.node.election_timeout().saturating_mul(4);
        let t0 = std::time::Instant::now();
        let outcome = tokio::time::timeout(limit, async {
            loop {
                match self.node.transfer_leadership(None).await {
                    Err(raft_client::Error::TransferFailed { .. }) => continue,
                    other => return other,
                }
            }
        })
        .await;
        match outcome {
            Ok(Ok(to)) => tracing::info!(
                id,
                to,
                took_ms = t0.elapsed().as_millis() as u64,
                "stopping: leadership handed over"
            ),
            Ok(Err(e)) => {
                tracing::warn!(id, error = %e, "stopping: leadership not handed over")
            }
            Err(_) => tracing::warn!(
                id,
                waited_ms = limit.as_millis() as u64,
                "stopping: leadership not handed over in time"
            ),
        }
    }
}

/// Raises the open-file limit to its hard maximum (as Go programs do at start), and lowers
/// `max_connections` if the limit still cannot hold that many connections next to the log's
/// segment files and peer connections.
fn fit_open_files(s: &mut NodeSettings) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    if let (Some(cur), Some(max)) = (lim.current, lim.maximum) {
        if cur < max {
            lim.current = Some(max);
            if let Err(e) = setrlimit(Resource::Nofile, lim) {
                tracing::debug!(error = %e, "cannot raise the open-file limit");
            }
        }
    }
    let Some(soft) = getrlimit(Resource::Nofile).current else {
        return; // unlimited
    };
    let reserve = 512; // segments, peers, the blocking pool's files, the listener
    let fits = soft.saturating_sub(reserve).max(64) as usize;
    if s.http.limits.max_connections > fits {
        tracing::warn!(
            open_file_limit = soft,
            max_connections = fits,
            "the open-file limit is low: lowering the HTTP connection limit to keep descriptors for the log"
        );
        s.http.limits.max_connections = fits;
    }
}

async fn start_node(mut s: NodeSettings, api: Option<StdListener>) -> Result<Running, String> {
    fit_open_files(&mut s);
    let listener = match api {
        Some(l) => {
            l.set_nonblocking(true)
                .map_err(|e| format!("cannot use the API listener: {e}"))?;
            tokio::net::TcpListener::from_std(l)
                .map_err(|e| format!("cannot use the API listener: {e}"))?
        }
        None => tokio::net::TcpListener::bind(s.api_listen)
            .await
            .map_err(|e| {
                format!(
                    "cannot listen for HTTP on {}: {e} (is the port in use?)",
                    s.api_listen
                )
            })?,
    };
    let api_addr = listener.local_addr().map_err(|e| e.to_string())?;
    let id = s.node.id;
    let raft_addr = s.node.peers[&id].raft;
    let data_dir = s.node.data_dir.clone();
    let cluster = s.node.cluster_id.clone();
    let sync = s.node.sync;
    let peer_tls = s.node.net.tls.clone();
    // Private whatever the umask; one an older version (or a copy) left looser is
    // tightened: directories 0700, files 0600.
    raft_storage::private::create_dir_all(&data_dir)
        .and_then(|()| raft_storage::private::tighten(&data_dir))
        .map_err(|e| {
            format!(
                "cannot create the data directory {} (or make it private): {e}",
                data_dir.display()
            )
        })?;
    let store_path = data_dir.join(APP_STORE);
    let store_cfg = s.store.clone();
    let store = tokio::task::spawn_blocking(move || DurableStore::open(&store_path, store_cfg))
        .await
        .map_err(|e| format!("cannot open the application store: {e}"))?
        .map_err(|e| e.to_string())?;
    let reader = store.reader();
    let node = RaftNode::start(s.node, store)
        .await
        .map_err(|e| e.to_string())?;
    let api_tls = s.api_tls.clone();
    let access = s.access.clone();
    let state = AppState::new(node.clone(), reader, s.http)
        .with_access(access.clone())
        .with_peer_api(s.peer_api.clone())
        .with_https(api_tls.is_some());
    let streams = state.clone();
    let (limits, stats) = (state.limits(), state.server_stats());
    let app = raft_http::router(state);
    let (stop_http, mut stopped) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(raft_http::serve_with_tls(
        listener,
        app,
        limits,
        stats,
        api_tls.clone(),
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        },
    ));
    tracing::info!(
        id,
        raft = %raft_addr,
        api = %api_addr,
        data_dir = %data_dir.display(),
        cluster = %cluster,
        sync = ?sync,
        max_http_connections = limits.max_connections,
        peer_traffic = if peer_tls.is_some() { "mutual TLS" } else { "PLAINTEXT" },
        api_scheme = if api_tls.is_some() { "https" } else { "http" },
        api_access = if access.enabled() { "tokens" } else { "OPEN" },
        "httpraft node started"
    );
    if !access.enabled() {
        tracing::warn!(
            id,
            api = %api_addr,
            "the HTTP API is OPEN: anyone who can reach {api_addr} can read, write and change the members; give --tokens (see docs/security.md) on any network you do not fully control"
        );
    }
    if access.enabled() && api_tls.is_none() {
        tracing::warn!(
            id,
            api = %api_addr,
            "tokens travel in the clear: the HTTP API checks tokens but is plain HTTP (--api-plaintext, or no --tls-cert), so anyone who can watch the network between a client and {api_addr} can take its token; serve HTTPS (see docs/security.md)"
        );
    }
    if peer_tls.is_none() {
        tracing::warn!(
            id,
            raft = %raft_addr,
            "peer traffic is PLAINTEXT: anyone who can reach {raft_addr} can speak as any member (forge votes, entries and acknowledgements); on any network you do not fully control give --tls-cert, --tls-key and --tls-ca (see `httpraft certs`)"
        );
    }
    let reloadable = Reloadable {
        peer: peer_tls,
        api: api_tls,
        access,
    };
    let reloader = reloadable
        .any()
        .then(|| tokio::spawn(reload_on_sighup(id, reloadable)));
    if cfg!(feature = "stale-linearizable-reads") {
        tracing::error!(
            "this build serves linearizable reads from the local map (feature stale-linearizable-reads): it is broken on purpose, for testing the fault harness; never run it for real"
        );
    }
    Ok(Running {
        node,
        stop_http,
        server,
        state: streams,
        reloader,
    })
}

/// What SIGHUP reloads.
struct Reloadable {
    peer: Option<std::sync::Arc<raft_net::PeerTls>>,
    api: Option<std::sync::Arc<raft_net::ServerTls>>,
    access: std::sync::Arc<raft_http::Access>,
}

impl Reloadable {
    fn any(&self) -> bool {
        self.peer.is_some() || self.api.is_some() || self.access.enabled()
    }

    fn reload(&self, id: u64) {
        if let Some(tls) = &self.peer {
            match tls.reload() {
                Ok(()) => tracing::info!(id, "SIGHUP: reloaded the peer TLS material"),
                Err(e) => {
                    tracing::warn!(id, error = %e, "SIGHUP: the peer TLS material did not load; still using the previous one")
                }
            }
        }
        if let Some(tls) = &self.api {
            match tls.reload() {
                Ok(()) => tracing::info!(id, "SIGHUP: reloaded the API's TLS material"),
                Err(e) => {
                    tracing::warn!(id, error = %e, "SIGHUP: the API's TLS material did not load; still using the previous one")
                }
            }
        }
        if self.access.enabled() {
            match self.access.reload() {
                Ok(n) => tracing::info!(id, tokens = n, "SIGHUP: reloaded the token file"),
                Err(e) => {
                    tracing::warn!(id, error = %e, "SIGHUP: the token file did not load; still using the previous tokens")
                }
            }
        }
    }
}

/// How often a node reminds, in its log, that its token file failed to reload.
const STALE_TOKENS_REMINDER: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads the TLS files and the token file again at every SIGHUP: connections opened and
/// requests made afterwards use them; open connections finish with what they have. A file
/// that does not load leaves what is in use.
async fn reload_on_sighup(id: u64, what: Reloadable) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!(
                id,
                "cannot listen for SIGHUP: TLS material and tokens will not be reloaded"
            );
            return;
        };
        let mut reminder = tokio::time::interval(STALE_TOKENS_REMINDER);
        reminder.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                signal = hup.recv() => {
                    if signal.is_none() {
                        return;
                    }
                    what.reload(id);
                }
                _ = reminder.tick() => {
                    if let Some(e) = what.access.reload_error() {
                        tracing::warn!(
                            id,
                            error = %e,
                            "the token file still does not load: the tokens of its last good version are in force, revoked ones included; fix the file and send SIGHUP"
                        );
                    }
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (id, what);
}

/// SIGINT (Ctrl-C) and SIGTERM, listened for from the moment this is created: a signal that
/// arrives while the node is still starting is not lost (nor left to an inherited
/// "ignore" disposition).
struct Signals {
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn listen() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Signals {
                interrupt: signal(SignalKind::interrupt()).ok(),
                terminate: signal(SignalKind::terminate()).ok(),
            }
        }
        #[cfg(not(unix))]
        {
            Signals {}
        }
    }

    /// Waits for one of them.
    async fn recv(&mut self) {
        #[cfg(unix)]
        {
            async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            if self.interrupt.is_none() && self.terminate.is_none() {
                let _ = tokio::signal::ctrl_c().await;
            } else {
                tokio::select! {
                    _ = next(&mut self.interrupt) => {}
                    _ = next(&mut self.terminate) => {}
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("signal received; shutting down");
    }
}

/// Reads the members of the cluster `url` belongs to, retrying while it cannot answer.
async fn members_to_join(
    url: &str,
    client: &raft_http_client::ClientConfig,
) -> Result<Vec<raft_http::join::JoinMember>, String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match raft_http::join::fetch_members(url, client).await {
            Ok(m) => return Ok(m),
            Err(e) if e.retry && std::time::Instant::now() < deadline => {
                tracing::warn!(url, error = %e, "cannot list the cluster's members yet; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(e) => return Err(format!("cannot join through {url}: {e}")),
        }
    }
}

/// Asks the cluster to add this node as a learner until it has (or says it already is).
async fn ask_to_join(
    url: String,
    client: raft_http_client::ClientConfig,
    id: u64,
    raft: String,
    api: Option<String>,
) {
    loop {
        match raft_http::join::ask_to_join(&url, &client, id, &raft, api.as_deref()).await {
            Ok(index) => {
                tracing::info!(node = id, index, "added to the cluster as a learner");
                return;
            }
            Err(e) if e.retry => {
                tracing::warn!(node = id, error = %e, "not added yet; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(e) => {
                tracing::error!(node = id, error = %e, "the cluster refused to add this node");
                return;
            }
        }
    }
}

async fn run_node(index: usize, opts: &Options) -> Result<(), String> {
    let client = settings::join_client_config(opts)?;
    let (s, join) = match &opts.join {
        Some(url) => {
            let own = settings::rejoin_settings(index, opts)?;
            let joined_before = own.node.data_dir.join(raft_storage::META_FILE).exists();
            let members = if joined_before {
                // A restart: the data directory names the members. The URL's node may be
                // gone by now (removed, or down), which must not keep this one down.
                match raft_http::join::fetch_members(url, &client).await {
                    Ok(m) => Some(m),
                    Err(e) => {
                        tracing::warn!(
                            url,
                            error = %e,
                            "cannot reach the cluster through --join; starting from this node's own data, which names its members"
                        );
                        None
                    }
                }
            } else {
                Some(members_to_join(url, &client).await?)
            };
            match members {
                Some(members) => {
                    let member = members.iter().any(|m| m.id == index as u64);
                    let s = settings::join_settings(index, opts, &members)?;
                    (s, (!member).then(|| url.clone()))
                }
                None => (own, None),
            }
        }
        None => (settings::load_node_settings(index, opts)?, None),
    };
    let me = s.node.peers.get(&s.node.id).cloned();
    let mut signals = Signals::listen();
    let running = start_node(s, None).await?;
    if let (Some(url), Some(me)) = (join, me) {
        tokio::spawn(ask_to_join(
            url,
            client,
            index as u64,
            me.raft.to_string(),
            me.api,
        ));
    }
    signals.recv().await;
    let t0 = std::time::Instant::now();
    running.stop().await;
    tracing::info!(
        node = index,
        took_ms = t0.elapsed().as_millis() as u64,
        "httpraft stopped"
    );
    Ok(())
}

/// The application store's file in a node's data directory.
const APP_STORE: &str = "app.redb";

/// `httpraft restore`: seeds node `index`'s data directory from a backup.
fn run_restore(from: &std::path::Path, index: usize, opts: &Options) -> Result<(), String> {
    let s = settings::load_node_settings(index, opts)?;
    let voters = s.node.peers.keys().copied().collect();
    let store_cfg = s.store.clone();
    // The application store is restored too, in the directory being built: reading the
    // backup's whole state proves it is one this node can start from.
    let meta = raft_client::restore_backup_with(
        from,
        &s.node.data_dir,
        &s.node.cluster_id,
        s.node.id,
        voters,
        |dir, meta, data| {
            let mut store = DurableStore::open(&dir.join(APP_STORE), store_cfg)?;
            raft_client::StateMachine::restore(&mut store, meta.index, data)
        },
    )?;
    println!(
        "node {index}: {} seeded from {} (log up to index {}, term {}); start it with httpraft {index}",
        s.node.data_dir.display(),
        from.display(),
        meta.index,
        meta.term
    );
    Ok(())
}

fn free_listener() -> Result<StdListener, String> {
    StdListener::bind("127.0.0.1:0").map_err(|e| format!("cannot find a free port: {e}"))
}

/// The nodes of `httpraft dev`: where each listens, and the running ones.
struct DevCluster {
    base: PathBuf,
    /// The throwaway certificates (`ca.pem`, `node-<id>.pem`/`.key`), unless plaintext.
    certs: Option<PathBuf>,
    cluster_id: String,
    peers: BTreeMap<u64, Peer>,
    running: BTreeMap<u64, Running>,
}

impl DevCluster {
    fn settings(&self, id: u64, opts: &Options) -> Result<NodeSettings, String> {
        let mut node = raft_client::NodeConfig::new(
            id,
            self.cluster_id.clone(),
            self.peers.clone(),
            self.base.join(format!("node-{id}")),
        );
        settings::apply_tuning(&mut node, opts)?;
        let api = self.api(id);
        let files = self.certs.as_ref().map(|dir| raft_net::TlsFiles {
            cert: dir.join(format!("node-{id}.pem")),
            key: dir.join(format!("node-{id}.key")),
            ca: dir.join("ca.pem"),
        });
        let tls = settings::node_tls(&self.cluster_id, id, files, false, None, false)?;
        node.net.tls = tls.peer;
        Ok(NodeSettings {
            node,
            http: settings::http_config(opts)?,
            api_listen: settings::resolve(&api)?,
            api_tls: tls.api,
            access: std::sync::Arc::new(raft_http::Access::open()),
            peer_api: tls.client,
            store: settings::store_config(opts),
        })
    }

    fn scheme(&self) -> &'static str {
        if self.certs.is_some() {
            "https"
        } else {
            "http"
        }
    }

    fn api(&self, id: u64) -> String {
        self.peers
            .get(&id)
            .and_then(|p| p.api.clone())
            .unwrap_or_default()
    }

    async fn start(
        &mut self,
        id: u64,
        opts: &Options,
        listener: Option<StdListener>,
    ) -> Result<(), String> {
        if self.running.contains_key(&id) {
            return Err(format!("node {id} is already running"));
        }
        let s = self.settings(id, opts)?;
        let r = start_node(s, listener).await?;
        self.running.insert(id, r);
        Ok(())
    }

    async fn stop(&mut self, id: u64) -> Result<(), String> {
        match self.running.remove(&id) {
            Some(r) => {
                r.stop().await;
                Ok(())
            }
            None => Err(format!("node {id} is not running")),
        }
    }

    /// The node every running node names as leader, once they agree (waits up to `wait`).
    async fn leader(&self, wait: std::time::Duration) -> Option<u64> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let named: Vec<Option<u64>> = self
                .running
                .values()
                .map(|r| r.node.leader().leader)
                .collect();
            if let Some(Some(l)) = named.first() {
                if named.iter().all(|n| *n == Some(*l)) && self.running.contains_key(l) {
                    return Some(*l);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    async fn print_status(&self) {
        for (id, p) in &self.peers {
            let state = match self.running.get(id) {
                None => "stopped".to_string(),
                Some(r) => {
                    let l = r.node.leader();
                    match l.leader {
                        Some(l2) if l2 == *id => format!("leader (term {})", l.term),
                        Some(l2) => format!("follower of node {l2} (term {})", l.term),
                        None => format!("no leader known (term {})", l.term),
                    }
                }
            };
            println!(
                "node {id}: {}://{}  {state}",
                self.scheme(),
                p.api.as_deref().unwrap_or("")
            );
        }
    }
}

/// The dev cluster's addresses, and its HTTP ports already bound.
struct DevAddresses {
    peers: BTreeMap<u64, Peer>,
    listeners: Vec<StdListener>,
}

/// Picks the dev cluster's addresses: fixed from `base_port`, or free ports.
fn dev_addresses(base_port: Option<u16>) -> Result<DevAddresses, String> {
    let mut peers = BTreeMap::new();
    let mut listeners = Vec::new();
    for id in 0..3u16 {
        let (api, raft) = match base_port {
            Some(base) => {
                let port = |offset: u16| {
                    base.checked_add(offset).filter(|p| *p != 0).ok_or_else(|| {
                        format!(
                            "--base-port {base} is too high: node {id} needs port {base}+{offset}"
                        )
                    })
                };
                let api: std::net::SocketAddr = ([127, 0, 0, 1], port(id)?).into();
                let raft: std::net::SocketAddr = ([127, 0, 0, 1], port(100 + id)?).into();
                let l = StdListener::bind(api).map_err(|e| {
                    format!("cannot listen for HTTP on {api}: {e} (is the port in use? pick another --base-port)")
                })?;
                listeners.push(l);
                (api, raft)
            }
            None => {
                let l = free_listener()?;
                let api = l.local_addr().map_err(|e| e.to_string())?;
                listeners.push(l);
                // The Raft port is picked now and bound by the transport right after.
                let raft = free_listener()?.local_addr().map_err(|e| e.to_string())?;
                (api, raft)
            }
        };
        peers.insert(
            u64::from(id),
            Peer {
                raft,
                api: Some(api.to_string()),
            },
        );
    }
    Ok(DevAddresses { peers, listeners })
}

/// Reads `stop <id>`, `start <id>`, `status` and `help` from standard input, on a thread of
/// its own (a read blocked on a terminal must not hold up the process's exit).
fn dev_commands() -> tokio::sync::mpsc::Receiver<String> {
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let spawned = std::thread::Builder::new()
        .name("dev-commands".into())
        .spawn(move || {
            for line in std::io::stdin().lines() {
                let Ok(line) = line else { break };
                if tx.blocking_send(line).is_err() {
                    break;
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot read commands from standard input");
    }
    rx
}

async fn dev_command(c: &mut DevCluster, line: &str, opts: &Options) {
    let words: Vec<&str> = line.split_whitespace().collect();
    let id = |w: Option<&&str>| -> Result<u64, String> {
        let w = w.ok_or("give a node id: 0, 1 or 2")?;
        match w.parse::<u64>() {
            Ok(n) if c.peers.contains_key(&n) => Ok(n),
            _ => Err(format!("no node {w:?}: the nodes are 0, 1 and 2")),
        }
    };
    let result = match words.first().copied() {
        None => Ok(()),
        Some("stop" | "kill") => match id(words.get(1)) {
            Ok(n) => c.stop(n).await.map(|()| println!("node {n} stopped")),
            Err(e) => Err(e),
        },
        Some("start") => match id(words.get(1)) {
            Ok(n) => c
                .start(n, opts, None)
                .await
                .map(|()| println!("node {n} started")),
            Err(e) => Err(e),
        },
        Some("status") => {
            c.print_status().await;
            Ok(())
        }
        Some("help") => {
            println!("commands: stop <id>, start <id>, status, help; Ctrl-C stops everything");
            Ok(())
        }
        Some(other) => Err(format!(
            "unknown command {other:?}: try stop <id>, start <id>, status or help"
        )),
    };
    if let Err(e) = result {
        println!("{e}");
    }
}

/// A builder for a temporary directory only its owner can enter, with a random name.
fn private_temp_builder() -> tempfile::Builder<'static, 'static> {
    let mut b = tempfile::Builder::new();
    b.prefix("httpraft-dev-");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        b.permissions(std::fs::Permissions::from_mode(0o700));
    }
    b
}

/// The dev cluster's throwaway CA and node certificates under `dir` (made once, reused
/// when the data directory is).
fn dev_certs(dir: &std::path::Path, cluster: &str, ids: &[u64]) -> Result<(), String> {
    use raft_net::certs::{Ca, Issued, Validity};
    // Written last: its presence means the rest is there.
    if dir.join("ca.key").exists() {
        return Ok(());
    }
    raft_storage::private::create_dir_all(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let ca = Ca::generate(cluster, Validity::days(30)).map_err(|e| e.to_string())?;
    let hosts = ["127.0.0.1".to_string(), "localhost".to_string()];
    for id in ids {
        let n = ca
            .issue_node(cluster, *id, &hosts, Validity::days(30))
            .map_err(|e| e.to_string())?;
        certs::write_pair(dir, &format!("node-{id}"), &n)?;
    }
    let issued = Issued {
        cert_pem: ca.cert_pem().to_string(),
        key_pem: ca.key_pem().to_string(),
    };
    certs::write_pair(dir, "ca", &issued).map(drop)
}

async fn run_dev(
    data_dir: Option<PathBuf>,
    base_port: Option<u16>,
    plaintext: bool,
    opts: &Options,
) -> Result<(), String> {
    let base = match data_dir {
        Some(d) => d,
        None => private_temp_builder()
            .tempdir()
            .map_err(|e| format!("cannot create a temporary data directory: {e}"))?
            .keep(),
    };
    let mut signals = Signals::listen();
    let DevAddresses { peers, listeners } = dev_addresses(base_port)?;
    let cluster_id = opts
        .cluster_id
        .clone()
        .unwrap_or_else(|| "httpraft-dev".into());
    let certs = if plaintext {
        None
    } else {
        let dir = base.join("certs");
        let ids: Vec<u64> = peers.keys().copied().collect();
        dev_certs(&dir, &cluster_id, &ids)?;
        Some(dir)
    };
    let mut c = DevCluster {
        base: base.clone(),
        certs,
        cluster_id,
        peers,
        running: BTreeMap::new(),
    };
    for (id, l) in (0u64..).zip(listeners) {
        c.start(id, opts, Some(l)).await?;
    }
    println!("httpraft dev: a local 3-node cluster");
    println!("data directory: {}", base.display());
    c.print_status().await;
    let leader = c.leader(std::time::Duration::from_secs(5)).await;
    let target = c.api(leader.unwrap_or(0));
    match leader {
        Some(l) => println!("node {l} leads; try:"),
        None => println!("no leader yet; try (with -L, any node forwards to the leader):"),
    }
    let scheme = c.scheme();
    let curl = match &c.certs {
        Some(dir) => format!("curl --cacert {}", dir.join("ca.pem").display()),
        None => "curl".to_string(),
    };
    println!("  {curl} -sL -XPOST {scheme}://{target}/v1/log -d '{{\"entry\": \"hello\"}}'");
    println!("  {curl} -s '{scheme}://{target}/v1/log?from=1'");
    println!("  {curl} -sL -XPUT {scheme}://{target}/v1/kv/greeting -d '{{\"value\": \"hi\"}}'");
    println!("  {curl} -sL {scheme}://{target}/v1/kv/greeting");
    println!("  {curl} -s {scheme}://{target}/v1/status");
    match &c.certs {
        Some(dir) => {
            println!(
                "members speak mutual TLS and the API is HTTPS, with throwaway certificates of a dev CA in {} (raftctl: --cacert {}; httpraft dev --plaintext for plain HTTP)",
                dir.display(),
                dir.join("ca.pem").display()
            );
            println!(
                "the live dashboard: {scheme}://{}/ui (a browser does not know the dev CA: import ca.pem, or accept the warning)",
                c.api(0)
            );
        }
        None => println!("the live dashboard: {scheme}://{}/ui", c.api(0)),
    }
    println!("type `stop <id>` / `start <id>` to stop and restart a node, `status` to see who leads; Ctrl-C stops everything");
    let mut commands = dev_commands();
    let signal = signals.recv();
    let mut signal = std::pin::pin!(signal);
    let mut reading = true;
    loop {
        tokio::select! {
            _ = &mut signal => break,
            line = commands.recv(), if reading => match line {
                Some(line) => dev_command(&mut c, line.trim(), opts).await,
                None => reading = false, // no more input: keep running until a signal
            },
        }
    }
    let t0 = std::time::Instant::now();
    let ids: Vec<u64> = c.running.keys().copied().collect();
    for id in ids {
        let _ = c.stop(id).await;
    }
    println!(
        "stopped in {} ms; data kept in {}",
        t0.elapsed().as_millis(),
        base.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    // Whatever this process creates that the code below does not make private itself
    // (a library's file, say) is private too.
    rustix::process::umask(rustix::fs::Mode::from_bits_truncate(0o077));
    let cli = Cli::parse();
    let opts = match cli.opts.clone().with_config_file() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("httpraft: error: {e}");
            return ExitCode::from(2);
        }
    };
    let workers = opts
        .worker_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max(1);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("httpraft: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async_main(cli, opts))
}

async fn async_main(cli: Cli, opts: Options) -> ExitCode {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .or(opts.log_level.clone())
        .unwrap_or_else(|| "info".into());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match opts.log_format.as_deref() {
        None | Some("text") => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        Some("json") => logs.json().flatten_event(true).init(),
        Some(other) => {
            eprintln!("httpraft: error: --log-format must be text or json, got {other:?}");
            return ExitCode::FAILURE;
        }
    }
    let result = match (cli.command, cli.id) {
        (
            Some(Command::Dev {
                data_dir,
                base_port,
                plaintext,
            }),
            _,
        ) => run_dev(data_dir, base_port, plaintext, &opts).await,
        (
            Some(Command::Restore {
                from,
                id,
                peers,
                data_dir,
                cluster_id,
            }),
            _,
        ) => {
            let opts = Options {
                peers,
                data_dir,
                cluster_id,
                ..opts
            };
            run_restore(&from, id, &opts)
        }
        (Some(Command::Certs { what }), _) => certs::run(what),
        (Some(Command::Tokens { what }), _) => tokens::run(what),
        (None, Some(id)) => run_node(id, &opts).await,
        (None, None) => Err(
            "give the node's id (httpraft <id>), or run httpraft dev; see httpraft --help".into(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("httpraft: error: {e}");
            ExitCode::FAILURE
        }
    }
}
