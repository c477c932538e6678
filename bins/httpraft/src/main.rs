//! `httpraft`: one Raft node with an HTTP API, or (`httpraft dev`) a local 3-node cluster.

mod settings;

use std::collections::BTreeMap;
use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use raft_client::{DurableStore, Peer, RaftNode};
use raft_http::AppState;
use settings::{Cli, Command, NodeSettings, Options, PeersFile};
use tokio::task::JoinHandle;
use tracing_subscriber::EnvFilter;

/// mimalloc: the request path allocates per request (HTTP parsing, JSON, channels); a
/// thread-caching allocator keeps that cheap.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long in-flight HTTP requests may take to finish at shutdown.
const HTTP_DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

/// A node and its HTTP server.
struct Running {
    node: RaftNode<raft_client::KvResponse>,
    stop_http: tokio::sync::watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Stops accepting, finishes in-flight requests, then stops the node (releasing the data
    /// directory).
    async fn stop(mut self) {
        let _ = self.stop_http.send(true);
        // In-flight requests get a bounded time to finish; then the node stops anyway (its
        // waiting callers are answered with an error as it shuts down).
        match tokio::time::timeout(HTTP_DRAIN, &mut self.server).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "HTTP server ended with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server task failed"),
            Ok(Ok(Ok(()))) => {}
            Err(_) => {
                tracing::warn!(
                    seconds = HTTP_DRAIN.as_secs(),
                    "HTTP requests still in flight after the drain period; stopping anyway"
                );
                self.server.abort();
            }
        }
        self.node.shutdown().await;
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
    std::fs::create_dir_all(&data_dir).map_err(|e| {
        format!(
            "cannot create the data directory {}: {e}",
            data_dir.display()
        )
    })?;
    let store_path = data_dir.join("app.redb");
    let store_cfg = s.store.clone();
    let store = tokio::task::spawn_blocking(move || DurableStore::open(&store_path, store_cfg))
        .await
        .map_err(|e| format!("cannot open the application store: {e}"))?
        .map_err(|e| e.to_string())?;
    let reader = store.reader();
    let node = RaftNode::start(s.node, store)
        .await
        .map_err(|e| e.to_string())?;
    let state = AppState::new(node.clone(), reader, s.http);
    let (limits, stats) = (state.limits(), state.server_stats());
    let app = raft_http::router(state);
    let (stop_http, mut stopped) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(raft_http::serve(listener, app, limits, stats, async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));
    tracing::info!(
        node = id - 1,
        raft_id = id,
        raft = %raft_addr,
        api = %api_addr,
        data_dir = %data_dir.display(),
        cluster = %cluster,
        sync = ?sync,
        max_http_connections = limits.max_connections,
        "httpraft node started"
    );
    Ok(Running {
        node,
        stop_http,
        server,
    })
}

/// Waits for SIGINT (Ctrl-C) or SIGTERM.
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("signal received; shutting down");
}

async fn run_node(index: usize, opts: &Options) -> Result<(), String> {
    let peers_path = opts
        .peers
        .clone()
        .unwrap_or_else(|| PathBuf::from("peers.json"));
    let pf = PeersFile::load(&peers_path)?;
    let s = settings::node_settings(index, opts, &pf)?;
    let running = start_node(s, None).await?;
    wait_for_signal().await;
    running.stop().await;
    Ok(())
}

/// `httpraft restore`: seeds node `index`'s data directory from a backup.
fn run_restore(from: &std::path::Path, index: usize, opts: &Options) -> Result<(), String> {
    let peers_path = opts
        .peers
        .clone()
        .unwrap_or_else(|| PathBuf::from("peers.json"));
    let pf = PeersFile::load(&peers_path)?;
    let s = settings::node_settings(index, opts, &pf)?;
    let voters = s.node.peers.keys().copied().collect();
    let meta = raft_client::restore_backup(
        from,
        &s.node.data_dir,
        &s.node.cluster_id,
        s.node.id,
        voters,
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

async fn run_dev(data_dir: Option<PathBuf>, opts: &Options) -> Result<(), String> {
    let base = data_dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("httpraft-dev-{}", std::process::id()))
    });
    let mut apis = Vec::new();
    let mut peers = BTreeMap::new();
    for id in 1..=3u64 {
        let api = free_listener()?;
        let api_addr = api.local_addr().map_err(|e| e.to_string())?;
        // The Raft port is picked now and bound by the transport right after.
        let raft = free_listener()?.local_addr().map_err(|e| e.to_string())?;
        peers.insert(
            id,
            Peer {
                raft,
                api: Some(api_addr.to_string()),
            },
        );
        apis.push((api, api_addr));
    }
    let mut running = Vec::new();
    for (i, (api, api_addr)) in apis.into_iter().enumerate() {
        let id = i as u64 + 1;
        let mut node = raft_client::NodeConfig::new(
            id,
            opts.cluster_id
                .clone()
                .unwrap_or_else(|| "httpraft-dev".into()),
            peers.clone(),
            base.join(format!("node-{i}")),
        );
        settings::apply_tuning(&mut node, opts)?;
        let http = settings::http_config(opts)?;
        running.push(
            start_node(
                NodeSettings {
                    node,
                    http,
                    api_listen: api_addr,
                    store: settings::store_config(opts),
                },
                Some(api),
            )
            .await?,
        );
    }
    println!("httpraft dev: a local 3-node cluster");
    println!("data directory: {}", base.display());
    for (id, p) in &peers {
        println!(
            "node {}: http://{}  (raft {})",
            id - 1,
            p.api.as_deref().unwrap_or(""),
            p.raft
        );
    }
    let first = peers
        .values()
        .next()
        .and_then(|p| p.api.clone())
        .unwrap_or_default();
    println!("try:");
    println!("  curl -s -XPOST http://{first}/request -d '{{\"entry\": \"hello\"}}'");
    println!("  curl -s 'http://{first}/log?index=1'");
    println!("  curl -sL -XPUT http://{first}/v1/kv/greeting -d '{{\"value\": \"hi\"}}'");
    println!("  curl -s http://{first}/v1/status");
    println!("stop with Ctrl-C");
    wait_for_signal().await;
    for r in running {
        r.stop().await;
    }
    println!("stopped; data kept in {}", base.display());
    Ok(())
}

fn main() -> ExitCode {
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
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let result = match (cli.command, cli.id) {
        (Some(Command::Dev { data_dir }), _) => run_dev(data_dir, &opts).await,
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
