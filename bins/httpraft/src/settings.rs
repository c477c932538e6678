//! Command line, optional config file and `peers.json`, merged into what a node needs.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use raft_client::{AutopilotConfig, DurableConfig, NodeConfig, Peer, UnreachableAction};
use raft_http::HttpConfig;
use raft_storage::SyncPolicy;
use serde::Deserialize;

/// What `httpraft --version` prints: the release, the protocol versions it speaks to
/// peers, the storage formats it reads, and the release line it can raise a cluster to.
static VERSION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "{} (protocol {}-{}, storage format {}-{}, cluster version up to {})",
        raft_core::Release::CURRENT,
        raft_core::OLDEST_PROTOCOL_VERSION,
        raft_core::PROTOCOL_VERSION,
        raft_storage::OLDEST_FORMAT_VERSION,
        raft_storage::FORMAT_VERSION,
        raft_core::ClusterVersion::CURRENT,
    )
});

/// Runs one node of a Raft cluster with an HTTP API.
///
/// `httpraft <id>` reads `peers.json` from the working directory, like the original:
/// `{"peers": ["localhost:8000", ...], "apis": ["localhost:9000", ...]}`. Node `<id>` (0-based)
/// speaks Raft on `peers[id]` and HTTP on `apis[id]`. `httpraft dev` starts a local
/// 3-node cluster instead.
#[derive(Debug, Parser)]
#[command(
    name = "httpraft",
    version = VERSION.as_str(),
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The node to run: its 0-based position in peers.json.
    pub id: Option<usize>,
    #[command(flatten)]
    pub opts: Options,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a local 3-node cluster on loopback, in this process. Type `stop <id>`,
    /// `start <id>` or `status` on its standard input to stop and restart a node (try a
    /// failover) or see who leads; Ctrl-C stops everything.
    Dev {
        /// Where the nodes keep their data [default: a new private temporary directory,
        /// kept afterwards and printed].
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Fixed ports: node <i> serves HTTP on BASE+i and Raft on BASE+100+i [default: free
        /// ports picked at random].
        #[arg(long)]
        base_port: Option<u16>,
        /// Plain TCP between the nodes and plain HTTP for the API, instead of TLS with
        /// throwaway certificates (written under the data directory's `certs/`).
        #[arg(long)]
        plaintext: bool,
    },
    /// Seed a new node's data directory from a backup (GET /v1/snapshot), as a member of the
    /// cluster the peers file describes. Run it for every node of the new cluster, from the
    /// same backup, then start the nodes.
    Restore {
        /// The backup file.
        #[arg(long)]
        from: PathBuf,
        /// The node to seed: its 0-based position in the peers file.
        id: usize,
        /// The peers file of the new cluster [default: peers.json].
        #[arg(long)]
        peers: Option<PathBuf>,
        /// The data directory to create [default: the node's, as `httpraft <id>` would use].
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The cluster id [default: the peers file's, or "httpraft"].
        #[arg(long)]
        cluster_id: Option<String>,
    },
    /// Make the cluster's certificates: a CA, then one certificate per node (and per
    /// client, if the API asks for them).
    Certs {
        #[command(subcommand)]
        what: crate::certs::CertsCommand,
    },
    /// Manage the API's bearer tokens (the file given to --tokens): add one with a role,
    /// list them, remove one. Send SIGHUP to the nodes to load the file again.
    Tokens {
        #[command(subcommand)]
        what: crate::tokens::TokensCommand,
    },
}

/// Every option; each can also be set in the `--config` file (same names, with
/// underscores). Flags win over the file; the file wins over defaults.
#[derive(Debug, Default, Clone, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// A JSON file of options: any long option of `httpraft <id>` (see `httpraft --help`),
    /// with underscores for dashes, e.g. {"tick_ms": 20, "max_body_bytes": 65536}. Flags win
    /// over the file.
    #[arg(long, global = true)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// The peers file [default: peers.json].
    #[arg(long)]
    pub peers: Option<PathBuf>,
    /// The HTTP listen address [default: apis[id] from the peers file].
    #[arg(long)]
    pub api: Option<String>,
    /// Where to listen for the other members' Raft connections, when they reach this node
    /// at another address (through a proxy or a NAT) [default: peers[id] from the peers file,
    /// or --raft-addr].
    #[arg(long)]
    pub raft_listen: Option<String>,
    /// This node's certificate (PEM, from `httpraft certs node`): with --tls-key and
    /// --tls-ca, peer traffic is mutual TLS, each member authenticated by its certificate.
    /// Without them peer traffic is plain TCP, which anyone who reaches the Raft port can
    /// use to speak as any member. Reloaded on SIGHUP.
    #[arg(long, value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// This node's private key (PEM), for --tls-cert.
    #[arg(long, value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// The cluster CA's certificate (PEM, `ca.pem` from `httpraft certs init`).
    #[arg(long, value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// Serve the HTTP API in plain HTTP even with --tls-cert (which otherwise makes it
    /// HTTPS with the same certificate).
    #[arg(long)]
    #[serde(default)]
    pub api_plaintext: bool,
    /// HTTPS: also accept client certificates of this CA (PEM) besides the cluster's.
    #[arg(long, value_name = "PEM")]
    pub api_client_ca: Option<PathBuf>,
    /// HTTPS: refuse clients that present no certificate of the cluster's CA (or of
    /// --api-client-ca).
    #[arg(long)]
    #[serde(default)]
    pub api_require_client_cert: bool,
    /// The API's bearer tokens (JSON, made with `httpraft tokens add`): each request needs
    /// a token whose role allows it (read, write, admin). Without it the API is open to
    /// anyone who reaches it. Reloaded on SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub tokens: Option<PathBuf>,
    /// Origins (scheme://host:port, comma-separated) besides the node's own whose web pages
    /// may send requests that change something (a separate admin UI); every other page's
    /// are refused with 403 cross_origin [default: none].
    #[arg(long, value_name = "ORIGINS")]
    pub api_allowed_origins: Option<String>,
    /// A file holding a `read` token this node presents to the other members' APIs (the
    /// dashboard reads their status). Needed only when their API is plain HTTP and checks
    /// tokens: over HTTPS, a member's certificate lets it read.
    #[arg(long, value_name = "FILE")]
    pub peer_api_token_file: Option<PathBuf>,
    /// With --tokens: let /metrics be read without a token.
    #[arg(long)]
    #[serde(default)]
    pub metrics_public: bool,
    /// Join a running cluster: URL is any member's API (http://host:port). The node starts
    /// as a learner, asks to be added, catches up, and is promoted by the cluster's
    /// autopilot. Its own addresses come from --raft-addr and --api, or from the peers file.
    #[arg(long, value_name = "URL")]
    pub join: Option<String>,
    /// With --join, when the cluster checks tokens: a file holding an `admin` token, used
    /// only to ask the cluster to add this node (a node's certificate does not let it add
    /// itself). Not needed when an operator added the node first (POST /v1/members).
    #[arg(long, value_name = "FILE")]
    pub join_token_file: Option<PathBuf>,
    /// The Raft listen address when joining [default: peers[id] from the peers file].
    #[arg(long)]
    pub raft_addr: Option<String>,
    /// The autopilot, on the leader: promotes learners that caught up, and handles voters
    /// unreachable for long (see --autopilot-unreachable): on or off [default: on].
    #[arg(long)]
    pub autopilot: Option<String>,
    /// A learner is caught up while at most this many entries behind the leader
    /// [default: 1000].
    #[arg(long)]
    pub autopilot_max_lag: Option<u64>,
    /// Milliseconds a learner must stay caught up before it is promoted [default: 3000].
    #[arg(long)]
    pub autopilot_promote_after_ms: Option<u64>,
    /// What to do with a voter unreachable for --autopilot-unreachable-after-ms: nothing,
    /// demote or remove [default: nothing].
    #[arg(long)]
    pub autopilot_unreachable: Option<String>,
    /// Milliseconds a voter must be unreachable before --autopilot-unreachable applies
    /// [default: 60000].
    #[arg(long)]
    pub autopilot_unreachable_after_ms: Option<u64>,
    /// The autopilot never leaves fewer voters than this [default: 3].
    #[arg(long)]
    pub autopilot_min_voters: Option<usize>,
    /// The data directory [default: the peers file's "data_dir"/node-<id>, or ./data/node-<id>].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The cluster id [default: the peers file's "cluster_id", or "httpraft"].
    #[arg(long)]
    pub cluster_id: Option<String>,
    /// Milliseconds per protocol tick [default: 10].
    #[arg(long)]
    pub tick_ms: Option<u64>,
    /// Election timeout base, in ticks; the timeout is random in [T, 2T) [default: 30].
    #[arg(long)]
    pub election_ticks: Option<u32>,
    /// Heartbeat interval in ticks [default: 5].
    #[arg(long)]
    pub heartbeat_ticks: Option<u32>,
    /// Serve linearizable reads on the leader from its lease, without a heartbeat round per
    /// read. Safe while the members' clocks run at rates within --lease-margin-ticks of the
    /// election timeout of each other; set it on every member. Default off.
    #[arg(long)]
    #[serde(default)]
    pub lease_reads: bool,
    /// With --lease-reads: ticks of the election timeout the lease leaves for clock drift
    /// [default: 5, with 30 election ticks: clocks may differ in rate by 20 %].
    #[arg(long)]
    pub lease_margin_ticks: Option<u32>,
    /// How the leader sizes each follower's in-flight window: adaptive (from the
    /// follower's measured round trip and acknowledgement rate, within the static limit)
    /// or static (always the static limit of 32 MiB) [default: adaptive].
    #[arg(long)]
    pub flow_control: Option<String>,
    /// With adaptive flow control: milliseconds of queueing accepted in front of a
    /// follower, on top of twice its round trip [default: 10].
    #[arg(long)]
    pub flow_queue_delay_ms: Option<u64>,
    /// With adaptive flow control: the smallest in-flight window in bytes [default: 65536].
    #[arg(long)]
    pub flow_min_window_bytes: Option<u64>,
    /// Largest accepted HTTP request body in bytes [default: 1048576].
    #[arg(long)]
    pub max_body_bytes: Option<usize>,
    /// Longest key of /v1/kv/{key} in bytes [default: 4096].
    #[arg(long)]
    pub max_key_bytes: Option<usize>,
    /// Submits waiting for commit at most; past it requests get 429 [default: 65536].
    #[arg(long)]
    pub max_pending_submits: Option<usize>,
    /// Bytes of submits waiting for commit at most [default: 67108864].
    #[arg(long)]
    pub max_pending_bytes: Option<u64>,
    /// Entries returned by one log read at most [default: 10000].
    #[arg(long)]
    pub max_log_entries: Option<usize>,
    /// Largest Raft network frame in bytes [default: 16777216].
    #[arg(long)]
    pub max_frame_bytes: Option<usize>,
    /// When to fsync the log: always, or never (unsafe: for tests only) [default: always].
    #[arg(long)]
    pub sync: Option<String>,
    /// Log level or filter, e.g. info, debug, raft_client=debug [default: info; RUST_LOG wins].
    #[arg(long)]
    pub log_level: Option<String>,
    /// How log lines are written: text (for people) or json (one object per line, for log
    /// collectors) [default: text].
    #[arg(long)]
    pub log_format: Option<String>,
    /// Async worker threads [default: the number of CPUs]. Lower it when several nodes share
    /// a machine.
    #[arg(long)]
    pub worker_threads: Option<usize>,
    /// HTTP connections open at once at most; more are closed at once [default: 4096, lowered
    /// to fit the open-file limit].
    #[arg(long)]
    pub http_max_connections: Option<usize>,
    /// HTTP connections open at once from one client address; more are closed at once
    /// [default: 512].
    #[arg(long)]
    pub http_max_connections_per_address: Option<usize>,
    /// HTTPS: TLS handshakes in progress at once; more connections are closed at once
    /// [default: 256].
    #[arg(long)]
    pub http_max_handshakes: Option<usize>,
    /// HTTPS: TLS handshakes in progress at once from one client address [default: 16].
    #[arg(long)]
    pub http_max_handshakes_per_address: Option<usize>,
    /// HTTPS: milliseconds a TLS handshake may take [default: 5000].
    #[arg(long)]
    pub http_handshake_timeout_ms: Option<u64>,
    /// Milliseconds a client has to send a request's headers, from connecting or from the
    /// request's first byte [default: 10000].
    #[arg(long)]
    pub http_header_timeout_ms: Option<u64>,
    /// Milliseconds an HTTP keep-alive connection may sit idle before it is closed
    /// [default: 60000].
    #[arg(long)]
    pub http_idle_timeout_ms: Option<u64>,
    /// Milliseconds the requests in flight at shutdown may take to finish before their
    /// connections are closed [default: 10000].
    #[arg(long)]
    pub http_drain_timeout_ms: Option<u64>,
    /// Requests in flight at once on one HTTP/2 connection [default: 256].
    #[arg(long)]
    pub http2_max_streams: Option<u32>,
    /// Milliseconds a request may take before it is answered 503 request_timeout
    /// [default: 30000].
    #[arg(long)]
    pub http_request_timeout_ms: Option<u64>,
    /// Log reads (GET /log, GET /v1/log) running at once at most; more get 429
    /// [default: 16].
    #[arg(long)]
    pub max_concurrent_reads: Option<usize>,
    /// Streams (GET /v1/log/stream, GET /v1/kv/watch) open at once at most; more get 429
    /// [default: 1024].
    #[arg(long)]
    pub max_watchers: Option<usize>,
    /// Of --max-watchers, the stream slots kept for admin tokens and members [default: 32].
    #[arg(long)]
    pub stream_reserve: Option<usize>,
    /// Streams one token holds at once at most (admin tokens and members excepted); more
    /// get 429 [default: 256].
    #[arg(long)]
    pub max_streams_per_token: Option<usize>,
    /// Streams one client address holds at once at most (admin tokens and members
    /// excepted); more get 429 [default: 128].
    #[arg(long)]
    pub max_streams_per_address: Option<usize>,
    /// Milliseconds a stream stays open at most before it ends with a `closing` event (the
    /// client resumes with Last-Event-ID); 0: no limit [default: 3600000].
    #[arg(long)]
    pub max_stream_lifetime_ms: Option<u64>,
    /// Entries one POST /v1/log may append at most ({"entries": [...]}); more get 400
    /// [default: 10000].
    #[arg(long)]
    pub max_batch_entries: Option<usize>,
    /// How long GET /readyz waits for what was committed when the probe came to be applied
    /// before it answers 503 [default: 500].
    #[arg(long)]
    pub ready_apply_wait_ms: Option<u64>,
    /// Take a snapshot (and compact the Raft log) every this many entries; 0: never by count
    /// [default: 100000].
    #[arg(long)]
    pub snapshot_entries: Option<u64>,
    /// Take a snapshot once the Raft log grew by this many bytes; 0: never by size
    /// [default: 536870912].
    #[arg(long)]
    pub snapshot_wal_bytes: Option<u64>,
    /// Raft log entries kept before a snapshot, for followers slightly behind
    /// [default: 10000].
    #[arg(long)]
    pub snapshot_tail_entries: Option<u64>,
    /// Bytes per chunk of a snapshot transfer [default: 1048576].
    #[arg(long)]
    pub snapshot_chunk_bytes: Option<usize>,
    /// Keep at least this many of the newest entries of the log served by /log, dropping
    /// older whole segments (once a snapshot covers them) [default: all].
    #[arg(long)]
    pub log_retain_entries: Option<u64>,
    /// Keep at least this many bytes of the newest segments of the log served by /log,
    /// dropping older ones (once a snapshot covers them) [default: all].
    #[arg(long)]
    pub log_retain_bytes: Option<u64>,
    /// Start a new segment file of the Raft log once one reaches this size; retention drops
    /// whole segments [default: 67108864].
    #[arg(long)]
    pub log_segment_bytes: Option<u64>,
    /// Bytes of the newest log entries kept in memory for replication and applying; older
    /// ones are read from the segments [default: 8388608].
    #[arg(long)]
    pub log_cache_bytes: Option<u64>,
    /// Page cache of the application store (the key-value map), in bytes; the largest part
    /// of a node's memory once warm [default: 67108864].
    #[arg(long)]
    pub store_cache_bytes: Option<usize>,
}

impl Options {
    /// `self` with unset options taken from `other`.
    fn or(self, other: Options) -> Options {
        Options {
            config: self.config.or(other.config),
            peers: self.peers.or(other.peers),
            api: self.api.or(other.api),
            raft_listen: self.raft_listen.or(other.raft_listen),
            tls_cert: self.tls_cert.or(other.tls_cert),
            tls_key: self.tls_key.or(other.tls_key),
            tls_ca: self.tls_ca.or(other.tls_ca),
            api_plaintext: self.api_plaintext || other.api_plaintext,
            api_client_ca: self.api_client_ca.or(other.api_client_ca),
            api_require_client_cert: self.api_require_client_cert || other.api_require_client_cert,
            tokens: self.tokens.or(other.tokens),
            api_allowed_origins: self.api_allowed_origins.or(other.api_allowed_origins),
            peer_api_token_file: self.peer_api_token_file.or(other.peer_api_token_file),
            metrics_public: self.metrics_public || other.metrics_public,
            join: self.join.or(other.join),
            join_token_file: self.join_token_file.or(other.join_token_file),
            raft_addr: self.raft_addr.or(other.raft_addr),
            autopilot: self.autopilot.or(other.autopilot),
            autopilot_max_lag: self.autopilot_max_lag.or(other.autopilot_max_lag),
            autopilot_promote_after_ms: self
                .autopilot_promote_after_ms
                .or(other.autopilot_promote_after_ms),
            autopilot_unreachable: self.autopilot_unreachable.or(other.autopilot_unreachable),
            autopilot_unreachable_after_ms: self
                .autopilot_unreachable_after_ms
                .or(other.autopilot_unreachable_after_ms),
            autopilot_min_voters: self.autopilot_min_voters.or(other.autopilot_min_voters),
            data_dir: self.data_dir.or(other.data_dir),
            cluster_id: self.cluster_id.or(other.cluster_id),
            tick_ms: self.tick_ms.or(other.tick_ms),
            election_ticks: self.election_ticks.or(other.election_ticks),
            heartbeat_ticks: self.heartbeat_ticks.or(other.heartbeat_ticks),
            lease_reads: self.lease_reads || other.lease_reads,
            lease_margin_ticks: self.lease_margin_ticks.or(other.lease_margin_ticks),
            flow_control: self.flow_control.or(other.flow_control),
            flow_queue_delay_ms: self.flow_queue_delay_ms.or(other.flow_queue_delay_ms),
            flow_min_window_bytes: self.flow_min_window_bytes.or(other.flow_min_window_bytes),
            max_body_bytes: self.max_body_bytes.or(other.max_body_bytes),
            max_key_bytes: self.max_key_bytes.or(other.max_key_bytes),
            max_pending_submits: self.max_pending_submits.or(other.max_pending_submits),
            max_pending_bytes: self.max_pending_bytes.or(other.max_pending_bytes),
            max_log_entries: self.max_log_entries.or(other.max_log_entries),
            max_frame_bytes: self.max_frame_bytes.or(other.max_frame_bytes),
            sync: self.sync.or(other.sync),
            log_level: self.log_level.or(other.log_level),
            log_format: self.log_format.or(other.log_format),
            worker_threads: self.worker_threads.or(other.worker_threads),
            http_max_connections: self.http_max_connections.or(other.http_max_connections),
            http_max_connections_per_address: self
                .http_max_connections_per_address
                .or(other.http_max_connections_per_address),
            http_max_handshakes: self.http_max_handshakes.or(other.http_max_handshakes),
            http_max_handshakes_per_address: self
                .http_max_handshakes_per_address
                .or(other.http_max_handshakes_per_address),
            http_handshake_timeout_ms: self
                .http_handshake_timeout_ms
                .or(other.http_handshake_timeout_ms),
            http_header_timeout_ms: self.http_header_timeout_ms.or(other.http_header_timeout_ms),
            http_idle_timeout_ms: self.http_idle_timeout_ms.or(other.http_idle_timeout_ms),
            http_drain_timeout_ms: self.http_drain_timeout_ms.or(other.http_drain_timeout_ms),
            http2_max_streams: self.http2_max_streams.or(other.http2_max_streams),
            http_request_timeout_ms: self
                .http_request_timeout_ms
                .or(other.http_request_timeout_ms),
            max_concurrent_reads: self.max_concurrent_reads.or(other.max_concurrent_reads),
            max_watchers: self.max_watchers.or(other.max_watchers),
            stream_reserve: self.stream_reserve.or(other.stream_reserve),
            max_streams_per_token: self.max_streams_per_token.or(other.max_streams_per_token),
            max_streams_per_address: self
                .max_streams_per_address
                .or(other.max_streams_per_address),
            max_stream_lifetime_ms: self.max_stream_lifetime_ms.or(other.max_stream_lifetime_ms),
            max_batch_entries: self.max_batch_entries.or(other.max_batch_entries),
            ready_apply_wait_ms: self.ready_apply_wait_ms.or(other.ready_apply_wait_ms),
            snapshot_entries: self.snapshot_entries.or(other.snapshot_entries),
            snapshot_wal_bytes: self.snapshot_wal_bytes.or(other.snapshot_wal_bytes),
            snapshot_tail_entries: self.snapshot_tail_entries.or(other.snapshot_tail_entries),
            snapshot_chunk_bytes: self.snapshot_chunk_bytes.or(other.snapshot_chunk_bytes),
            log_retain_entries: self.log_retain_entries.or(other.log_retain_entries),
            log_retain_bytes: self.log_retain_bytes.or(other.log_retain_bytes),
            log_segment_bytes: self.log_segment_bytes.or(other.log_segment_bytes),
            log_cache_bytes: self.log_cache_bytes.or(other.log_cache_bytes),
            store_cache_bytes: self.store_cache_bytes.or(other.store_cache_bytes),
        }
    }

    /// Merges in the `--config` file, if any.
    pub fn with_config_file(self) -> Result<Options, String> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let text = std::fs::read(&path)
            .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        let file: Options = serde_json::from_slice(&text)
            .map_err(|e| format!("config file {} is not valid: {e}", path.display()))?;
        Ok(self.or(file))
    }
}

/// The original's `peers.json`, with optional extras.
#[derive(Debug, Deserialize)]
pub struct PeersFile {
    /// Raft addresses, indexed by node id.
    pub peers: Vec<String>,
    /// HTTP addresses, indexed by node id.
    pub apis: Vec<String>,
    /// Optional cluster id.
    #[serde(default)]
    pub cluster_id: Option<String>,
    /// Optional base directory for node data (`<data_dir>/node-<id>`).
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
}

impl PeersFile {
    pub fn load(path: &Path) -> Result<PeersFile, String> {
        let text =
            std::fs::read(path).map_err(|e| {
                format!(
                    "cannot read the peers file {}: {e} (run httpraft where peers.json is, pass --peers FILE, or try httpraft dev for a local cluster)",
                    path.display()
                )
            })?;
        let pf: PeersFile = serde_json::from_slice(&text)
            .map_err(|e| {
                format!(
                    "{} is not a valid peers file: {e} (expected {{\"peers\": [\"host:port\", ...], \"apis\": [\"host:port\", ...]}})",
                    path.display()
                )
            })?;
        if pf.peers.is_empty() {
            return Err(format!(
                "{} lists no peers: give every node's Raft address in \"peers\" and its HTTP address in \"apis\"",
                path.display()
            ));
        }
        if pf.peers.len() != pf.apis.len() {
            return Err(format!(
                "{} lists {} peers but {} apis; they must pair up",
                path.display(),
                pf.peers.len(),
                pf.apis.len()
            ));
        }
        Ok(pf)
    }
}

/// Resolves `host:port`, preferring IPv4 (so `localhost` means 127.0.0.1 everywhere).
pub fn resolve(addr: &str) -> Result<SocketAddr, String> {
    let all: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {addr:?}: {e} (addresses are host:port)"))?
        .collect();
    all.iter()
        .find(|a| a.is_ipv4())
        .or(all.first())
        .copied()
        .ok_or_else(|| format!("{addr:?} resolves to no address"))
}

/// Everything needed to run one node.
pub struct NodeSettings {
    pub node: NodeConfig,
    pub http: HttpConfig,
    pub api_listen: SocketAddr,
    /// HTTPS, unless the API is plain HTTP.
    pub api_tls: Option<std::sync::Arc<raft_net::ServerTls>>,
    /// Who may do what through the API.
    pub access: std::sync::Arc<raft_http::Access>,
    /// How this node calls the other members' APIs.
    pub peer_api: raft_http_client::ClientConfig,
    /// The application store (the key-value map).
    pub store: DurableConfig,
}

/// The application store's settings from the options.
pub fn store_config(opts: &Options) -> DurableConfig {
    let default = DurableConfig::default();
    DurableConfig {
        cache_bytes: opts.store_cache_bytes.unwrap_or(default.cache_bytes),
        ..default
    }
}

/// Reads the peers file (`--peers`, default `peers.json`) and builds node `index`'s
/// settings from it.
pub fn load_node_settings(index: usize, opts: &Options) -> Result<NodeSettings, String> {
    let path = opts
        .peers
        .clone()
        .unwrap_or_else(|| PathBuf::from("peers.json"));
    node_settings(index, opts, &PeersFile::load(&path)?)
}

/// Builds the settings of node `index` (0-based) from the merged options and peers file.
pub fn node_settings(index: usize, opts: &Options, pf: &PeersFile) -> Result<NodeSettings, String> {
    if index >= pf.peers.len() {
        return Err(format!(
            "id {index} is out of range: the peers file lists {} nodes (ids 0 to {})",
            pf.peers.len(),
            pf.peers.len() - 1
        ));
    }
    let mut peers = BTreeMap::new();
    for (i, (raft, api)) in pf.peers.iter().zip(&pf.apis).enumerate() {
        peers.insert(
            i as u64,
            Peer {
                raft: resolve(raft)?,
                api: Some(api.clone()),
            },
        );
    }
    let id = index as u64;
    let cluster_id = opts
        .cluster_id
        .clone()
        .or(pf.cluster_id.clone())
        .unwrap_or_else(|| "httpraft".into());
    let data_dir = opts.data_dir.clone().unwrap_or_else(|| {
        pf.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("data"))
            .join(format!("node-{index}"))
    });
    let node = NodeConfig::new(id, cluster_id, peers, data_dir);
    let api = opts.api.clone().unwrap_or_else(|| pf.apis[index].clone());
    finish_settings(node, opts, &api)
}

/// The autopilot's settings from the options (on unless `--autopilot off`).
pub fn autopilot_config(opts: &Options) -> Result<AutopilotConfig, String> {
    let d = AutopilotConfig::default();
    let enabled = match opts.autopilot.as_deref() {
        None | Some("on") => true,
        Some("off") => false,
        Some(other) => return Err(format!("--autopilot must be on or off, got {other:?}")),
    };
    let unreachable_action = match opts.autopilot_unreachable.as_deref() {
        None | Some("nothing") => UnreachableAction::Nothing,
        Some("demote") => UnreachableAction::Demote,
        Some("remove") => UnreachableAction::Remove,
        Some(other) => {
            return Err(format!(
                "--autopilot-unreachable must be nothing, demote or remove, got {other:?}"
            ))
        }
    };
    let min_voters = opts.autopilot_min_voters.unwrap_or(d.min_voters);
    if min_voters == 0 {
        return Err("--autopilot-min-voters must be at least 1".into());
    }
    Ok(AutopilotConfig {
        enabled,
        promote_max_lag: opts.autopilot_max_lag.unwrap_or(d.promote_max_lag),
        promote_after: opts
            .autopilot_promote_after_ms
            .map_or(d.promote_after, Duration::from_millis),
        unreachable_action,
        unreachable_after: opts
            .autopilot_unreachable_after_ms
            .map_or(d.unreachable_after, Duration::from_millis),
        min_voters,
    })
}

/// The TLS files named by --tls-cert, --tls-key and --tls-ca: all three, or none.
pub fn tls_files(opts: &Options) -> Result<Option<raft_net::TlsFiles>, String> {
    match (&opts.tls_cert, &opts.tls_key, &opts.tls_ca) {
        (None, None, None) => Ok(None),
        (Some(cert), Some(key), Some(ca)) => Ok(Some(raft_net::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            ca: ca.clone(),
        })),
        _ => Err("--tls-cert, --tls-key and --tls-ca go together: give all three (see `httpraft certs`), or none for plaintext".into()),
    }
}

/// How this node calls members' APIs to join: over HTTPS with its own certificate when the
/// API is HTTPS (which lets it read the members once it is one), with the admin token of
/// --join-token-file if given (which lets it ask to be added).
pub fn join_client_config(opts: &Options) -> Result<raft_http_client::ClientConfig, String> {
    let mut cfg = member_client(tls_files(opts)?.as_ref(), opts.api_plaintext)?;
    if let Some(f) = &opts.join_token_file {
        cfg.token = Some(read_token_file(f)?);
    }
    Ok(cfg)
}

/// The token a file holds (its first line, without surrounding blanks).
fn read_token_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
    match text.lines().next().map(str::trim) {
        Some(t) if !t.is_empty() => Ok(t.to_string()),
        _ => Err(format!(
            "the token file {} is empty: write the token (from `httpraft tokens add`) on its first line",
            path.display()
        )),
    }
}

fn member_client(
    files: Option<&raft_net::TlsFiles>,
    api_plaintext: bool,
) -> Result<raft_http_client::ClientConfig, String> {
    let base = raft_http_client::ClientConfig::default();
    match files {
        Some(f) if !api_plaintext => base
            .with_tls_files(&f.ca, Some((&f.cert, &f.key)))
            .map_err(|e| e.to_string()),
        _ => Ok(base),
    }
}

/// A node's TLS, from its files.
pub struct NodeTls {
    /// Mutual TLS with the other members.
    pub peer: Option<std::sync::Arc<raft_net::PeerTls>>,
    /// HTTPS for the API (none when the API is plain HTTP).
    pub api: Option<std::sync::Arc<raft_net::ServerTls>>,
    /// How the node calls the members' APIs.
    pub client: raft_http_client::ClientConfig,
}

/// The TLS of node `id` of `cluster` from `files` (none: plaintext everywhere); the API
/// stays plain HTTP with `api_plaintext`, and takes client certificates of `client_ca` too
/// (required with `require_client_cert`).
pub fn node_tls(
    cluster: &str,
    id: u64,
    files: Option<raft_net::TlsFiles>,
    api_plaintext: bool,
    client_ca: Option<PathBuf>,
    require_client_cert: bool,
) -> Result<NodeTls, String> {
    let Some(files) = files else {
        return Ok(NodeTls {
            peer: None,
            api: None,
            client: raft_http_client::ClientConfig::default(),
        });
    };
    let client = member_client(Some(&files), api_plaintext)?;
    let peer = raft_net::PeerTls::load(cluster, id, files.clone()).map_err(|e| e.to_string())?;
    let api = if api_plaintext {
        None
    } else {
        let tls = raft_net::ServerTls::load(cluster, files, client_ca, require_client_cert)
            .map_err(|e| e.to_string())?;
        Some(std::sync::Arc::new(tls))
    };
    Ok(NodeTls {
        peer: Some(std::sync::Arc::new(peer)),
        api,
        client,
    })
}

/// Tuning, HTTP and store settings on top of a node's identity and peers.
fn finish_settings(
    mut node: NodeConfig,
    opts: &Options,
    api: &str,
) -> Result<NodeSettings, String> {
    apply_tuning(&mut node, opts)?;
    let tls = node_tls(
        &node.cluster_id,
        node.id,
        tls_files(opts)?,
        opts.api_plaintext,
        opts.api_client_ca.clone(),
        opts.api_require_client_cert,
    )?;
    node.net.tls = tls.peer;
    node.autopilot = autopilot_config(opts)?;
    if let Some(l) = &opts.raft_listen {
        node.raft_listen = Some(resolve(l)?);
    }
    let mut http = http_config(opts)?;
    if let Some(n) = opts.max_log_entries {
        http.max_log_entries = n.max(1);
        node.max_retrieve_entries = n.max(1);
    }
    let access = match &opts.tokens {
        None => raft_http::Access::open(),
        Some(f) => raft_http::Access::with_tokens(f.clone(), opts.metrics_public)?,
    };
    Ok(NodeSettings {
        node,
        http,
        api_listen: resolve(api)?,
        api_tls: tls.api,
        access: std::sync::Arc::new(access),
        peer_api: match &opts.peer_api_token_file {
            Some(f) => raft_http_client::ClientConfig {
                token: Some(read_token_file(f)?),
                ..tls.client
            },
            None => tls.client,
        },
        store: store_config(opts),
    })
}

/// The settings of node `index` joining a running cluster whose members are `members`:
/// its own addresses from `--raft-addr` and `--api` (or the peers file, if it lists the
/// node), the members' from the cluster; it starts as a learner unless the cluster already
/// lists it as a voter.
pub fn join_settings(
    index: usize,
    opts: &Options,
    members: &[raft_http::join::JoinMember],
) -> Result<NodeSettings, String> {
    let s = own_join_settings(index, opts, members)?;
    if s.node.peers.keys().all(|m| s.node.learners.contains(m)) {
        return Err(
            "the cluster listed no voter with an address; is the URL a member's API?".into(),
        );
    }
    Ok(s)
}

/// The settings of a node that joined before, restarted without reaching the cluster: its
/// own addresses only; the members come from its data directory (the configuration in its
/// log or snapshot, with every member's addresses).
pub fn rejoin_settings(index: usize, opts: &Options) -> Result<NodeSettings, String> {
    own_join_settings(index, opts, &[])
}

fn own_join_settings(
    index: usize,
    opts: &Options,
    members: &[raft_http::join::JoinMember],
) -> Result<NodeSettings, String> {
    let path = opts
        .peers
        .clone()
        .unwrap_or_else(|| PathBuf::from("peers.json"));
    let pf = PeersFile::load(&path).ok();
    let listed = |list: fn(&PeersFile) -> &Vec<String>| {
        pf.as_ref().and_then(|pf| list(pf).get(index).cloned())
    };
    let raft = opts
        .raft_addr
        .clone()
        .or_else(|| listed(|pf| &pf.peers))
        .ok_or_else(|| {
            format!("joining needs this node's Raft address: pass --raft-addr, or list node {index} in the peers file")
        })?;
    let api = opts
        .api
        .clone()
        .or_else(|| listed(|pf| &pf.apis))
        .ok_or_else(|| {
            format!("joining needs this node's HTTP address: pass --api, or list node {index} in the peers file")
        })?;
    let id = index as u64;
    let mut peers = BTreeMap::new();
    let mut learners = std::collections::BTreeSet::new();
    for m in members.iter().filter(|m| m.id != id) {
        let Some(raft) = &m.raft else { continue };
        peers.insert(
            m.id,
            Peer {
                raft: resolve(raft)?,
                api: m.api.clone(),
            },
        );
        if m.role == "learner" {
            learners.insert(m.id);
        }
    }
    let voter = members.iter().any(|m| m.id == id && m.role == "voter");
    if !voter {
        learners.insert(id);
    }
    peers.insert(
        id,
        Peer {
            raft: resolve(&raft)?,
            api: Some(api.clone()),
        },
    );
    let cluster_id = opts
        .cluster_id
        .clone()
        .or(pf.as_ref().and_then(|pf| pf.cluster_id.clone()))
        .unwrap_or_else(|| "httpraft".into());
    let data_dir = opts.data_dir.clone().unwrap_or_else(|| {
        pf.as_ref()
            .and_then(|pf| pf.data_dir.clone())
            .unwrap_or_else(|| PathBuf::from("data"))
            .join(format!("node-{index}"))
    });
    let mut node = NodeConfig::new(id, cluster_id, peers, data_dir);
    node.learners = learners;
    finish_settings(node, opts, &api)
}

/// The HTTP settings from the options.
pub fn http_config(opts: &Options) -> Result<HttpConfig, String> {
    let mut http = HttpConfig::default();
    if let Some(b) = opts.max_body_bytes {
        http.max_body_bytes = b;
    }
    if let Some(n) = opts.max_key_bytes {
        if n == 0 {
            return Err("--max-key-bytes must be at least 1".into());
        }
        http.max_key_bytes = n;
    }
    let ms = |name: &str, v: Option<u64>, default: Duration| -> Result<Duration, String> {
        match v {
            None => Ok(default),
            Some(0) => Err(format!("--{name} must be at least 1")),
            Some(ms) => Ok(Duration::from_millis(ms)),
        }
    };
    let l = &mut http.limits;
    l.header_timeout = ms(
        "http-header-timeout-ms",
        opts.http_header_timeout_ms,
        l.header_timeout,
    )?;
    l.idle_timeout = ms(
        "http-idle-timeout-ms",
        opts.http_idle_timeout_ms,
        l.idle_timeout,
    )?;
    l.drain_timeout = ms(
        "http-drain-timeout-ms",
        opts.http_drain_timeout_ms,
        l.drain_timeout,
    )?;
    if let Some(n) = opts.http2_max_streams {
        if n == 0 {
            return Err("--http2-max-streams must be at least 1".into());
        }
        l.max_http2_streams = n;
    }
    http.request_timeout = ms(
        "http-request-timeout-ms",
        opts.http_request_timeout_ms,
        http.request_timeout,
    )?;
    if let Some(n) = opts.http_max_connections {
        if n == 0 {
            return Err("--http-max-connections must be at least 1".into());
        }
        http.limits.max_connections = n;
    }
    for (flag, value, limit) in [
        (
            "--http-max-connections-per-address",
            opts.http_max_connections_per_address,
            &mut http.limits.max_connections_per_address,
        ),
        (
            "--http-max-handshakes",
            opts.http_max_handshakes,
            &mut http.limits.max_handshakes,
        ),
        (
            "--http-max-handshakes-per-address",
            opts.http_max_handshakes_per_address,
            &mut http.limits.max_handshakes_per_address,
        ),
    ] {
        if let Some(n) = value {
            if n == 0 {
                return Err(format!("{flag} must be at least 1"));
            }
            *limit = n;
        }
    }
    http.limits.handshake_timeout = ms(
        "http-handshake-timeout-ms",
        opts.http_handshake_timeout_ms,
        http.limits.handshake_timeout,
    )?;
    if let Some(n) = opts.max_concurrent_reads {
        http.max_concurrent_reads = n.max(1);
    }
    if let Some(n) = opts.max_watchers {
        if n == 0 {
            return Err("--max-watchers must be at least 1".into());
        }
        http.max_watchers = n;
    }
    if let Some(n) = opts.stream_reserve {
        if n >= http.max_watchers {
            return Err(format!(
                "--stream-reserve ({n}) must be smaller than --max-watchers ({})",
                http.max_watchers
            ));
        }
        http.stream_reserve = n;
    }
    http.stream_reserve = http.stream_reserve.min(http.max_watchers - 1);
    if let Some(n) = opts.max_streams_per_token {
        if n == 0 {
            return Err("--max-streams-per-token must be at least 1".into());
        }
        http.max_streams_per_token = n;
    }
    if let Some(n) = opts.max_streams_per_address {
        if n == 0 {
            return Err("--max-streams-per-address must be at least 1".into());
        }
        http.max_streams_per_address = n;
    }
    if let Some(ms) = opts.max_stream_lifetime_ms {
        http.max_stream_lifetime = Duration::from_millis(ms);
    }
    if let Some(n) = opts.max_batch_entries {
        if n == 0 {
            return Err("--max-batch-entries must be at least 1".into());
        }
        http.max_batch_entries = n;
    }
    if let Some(ms) = opts.ready_apply_wait_ms {
        http.ready_apply_wait = Duration::from_millis(ms);
    }
    if let Some(list) = &opts.api_allowed_origins {
        http.allowed_origins = parse_origins(list)?;
    }
    Ok(http)
}

/// `scheme://host[:port]` origins, comma-separated.
fn parse_origins(list: &str) -> Result<Vec<String>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(|o| {
            let rest = o
                .strip_prefix("https://")
                .or_else(|| o.strip_prefix("http://"))
                .ok_or_else(|| {
                    format!("--api-allowed-origins: {o:?} must start with http:// or https://")
                })?;
            if rest.is_empty() || rest.contains(['/', '?', '#', ' ', '@']) {
                return Err(format!(
                    "--api-allowed-origins: {o:?} is not an origin (scheme://host[:port], no path)"
                ));
            }
            Ok(o.to_string())
        })
        .collect()
}

/// Applies timing and limit options to a node configuration.
pub fn apply_tuning(node: &mut NodeConfig, opts: &Options) -> Result<(), String> {
    if let Some(n) = opts.snapshot_entries {
        node.snapshot.every_entries = n;
    }
    if let Some(n) = opts.snapshot_wal_bytes {
        node.snapshot.every_wal_bytes = n;
    }
    if let Some(n) = opts.snapshot_tail_entries {
        node.snapshot.tail_entries = n;
    }
    if let Some(n) = opts.log_segment_bytes {
        if n < 4096 {
            return Err(format!(
                "--log-segment-bytes must be at least 4096, got {n}"
            ));
        }
        node.segment_bytes = n;
    }
    if let Some(n) = opts.log_cache_bytes {
        node.log_cache_bytes = n;
    }
    // The Raft log is the log /log serves: kept, up to the retention policy.
    node.snapshot.retention = raft_client::LogRetention::Keep {
        entries: opts.log_retain_entries,
        bytes: opts.log_retain_bytes,
    };
    if let Some(n) = opts.snapshot_chunk_bytes {
        node.snapshot.chunk_bytes = n;
    }
    if let Some(ms) = opts.tick_ms {
        if ms == 0 {
            return Err("--tick-ms must be at least 1".into());
        }
        node.tick = Duration::from_millis(ms);
    }
    if let Some(t) = opts.election_ticks {
        node.raft.election_ticks = t;
    }
    if let Some(t) = opts.heartbeat_ticks {
        node.raft.heartbeat_ticks = t;
    }
    node.raft.lease_reads = opts.lease_reads;
    if let Some(t) = opts.lease_margin_ticks {
        node.raft.lease_margin_ticks = t;
    }
    if let Some(n) = opts.max_pending_submits {
        node.max_pending_submits = n;
    }
    if let Some(n) = opts.max_pending_bytes {
        node.max_pending_bytes = n;
    }
    if let Some(n) = opts.max_frame_bytes {
        node.net.max_frame_bytes = n;
        // What waits for the node must hold at least one frame.
        node.net.recv_queue_bytes = node.net.recv_queue_bytes.max(n.saturating_add(4));
    }
    if let Some(n) = opts.max_concurrent_reads {
        if n == 0 {
            return Err("--max-concurrent-reads must be at least 1".into());
        }
        node.max_concurrent_reads = n;
    }
    node.flow.adaptive = match opts.flow_control.as_deref() {
        None | Some("adaptive") => true,
        Some("static") => false,
        Some(other) => {
            return Err(format!(
                "--flow-control must be adaptive or static, got {other:?}"
            ))
        }
    };
    if let Some(ms) = opts.flow_queue_delay_ms {
        node.flow.queue_delay = Duration::from_millis(ms);
    }
    if let Some(n) = opts.flow_min_window_bytes {
        node.flow.min_window_bytes = n;
    }
    node.sync = match opts.sync.as_deref() {
        None | Some("always") => SyncPolicy::Always,
        Some("never") => SyncPolicy::Never,
        Some(other) => return Err(format!("--sync must be always or never, got {other:?}")),
    };
    node.raft.validate().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_origins_are_schemes_and_hosts_without_paths() {
        assert_eq!(
            parse_origins("https://admin.example:8443, http://10.0.0.5").unwrap_or_default(),
            vec!["https://admin.example:8443", "http://10.0.0.5"]
        );
        for bad in ["admin.example", "https://a/ui", "ftp://a", "https://"] {
            assert!(parse_origins(bad).is_err(), "{bad}");
        }
    }
}
