//! Settings of a node run by this crate.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use raft_core::NodeId;
use raft_storage::SyncPolicy;

/// Bytes reserved in a frame for the message envelope and per-entry framing.
pub const FRAME_HEADROOM: usize = 64 << 10;

/// How to reach one node of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The address its Raft transport listens on.
    pub raft: SocketAddr,
    /// The address clients use (for leader hints), if any.
    pub api: Option<String>,
}

/// Everything needed to start a node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's id (any number; unique in the cluster).
    pub id: NodeId,
    /// The cluster's id; the data directory and peers must belong to it.
    pub cluster_id: String,
    /// Every node of the cluster, this one included: the bootstrap configuration of a new
    /// cluster, and where to find members whose addresses the configuration does not hold.
    /// Once the log holds a configuration, it decides who the members are.
    pub peers: BTreeMap<NodeId, Peer>,
    /// The ids among `peers` that start as learners rather than voters. A node joining a
    /// running cluster lists the cluster's members in `peers`, itself included, and itself
    /// here. Default none.
    pub learners: std::collections::BTreeSet<NodeId>,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The length of one tick of the protocol. Default 10 ms.
    pub tick: Duration,
    /// Protocol tunables (election and heartbeat ticks, pre-vote, check-quorum, batching and
    /// in-flight limits). `id`, `voters` and `applied` are filled in at start.
    pub raft: raft_core::Config,
    /// When the log is made durable. Default `SyncPolicy::Always`.
    pub sync: SyncPolicy,
    /// Whether the node keeps stepping (acknowledgements, proposals, appends to followers)
    /// while its writes are being made durable and its committed entries applied (the state
    /// machine always applies in its own task). Default `true`; `false` waits for each
    /// write and apply before going on (for comparison; it is slower and no safer).
    pub pipeline_writes: bool,
    /// Log segment size. Default 64 MiB.
    pub segment_bytes: u64,
    /// Bytes of the newest log entries kept in memory, so that replicating to followers
    /// that keep up, and applying, never read the disk (older entries are read from the
    /// segments). Default 8 MiB.
    pub log_cache_bytes: u64,
    /// Requests queued toward the node at most; past it, `submit` returns `Busy`.
    /// Default 16,384.
    pub request_queue: usize,
    /// Submits waiting for their outcome at most. Default 65,536.
    pub max_pending_submits: usize,
    /// Bytes of submitted entries waiting for their outcome at most. Default 64 MiB.
    pub max_pending_bytes: u64,
    /// Entries returned by one `retrieve` at most. Default 10,000.
    pub max_retrieve_entries: usize,
    /// Bytes returned by one `retrieve` at most (one entry is always returned). Default 4 MiB.
    pub max_retrieve_bytes: u64,
    /// `retrieve` calls running at once at most; past it, `retrieve` answers
    /// [`crate::Error::TooManyReads`]. Default 16.
    pub max_concurrent_reads: usize,
    /// The largest entry `submit` accepts, in bytes; larger ones get
    /// [`crate::Error::TooLarge`]. It must leave room, within the transport's frame limit, for
    /// a full batch (`raft.max_bytes_per_msg`) plus this entry. Default 4 MiB.
    pub max_entry_bytes: usize,
    /// Transport tunables (frame limit, queues, backoff).
    pub net: NetTuning,
    /// When to take snapshots and compact the log, and how to send them.
    pub snapshot: SnapshotConfig,
    /// The autopilot (promotes caught-up learners, may demote or remove long-unreachable
    /// voters). Default off.
    pub autopilot: crate::AutopilotConfig,
    /// How the leader sizes each follower's in-flight window (adaptive by default, within
    /// `raft.max_inflight_bytes`).
    pub flow: crate::FlowConfig,
    /// Where the Raft transport listens, when it is not this node's address in `peers`
    /// (which is what the other members dial): behind a proxy or a NAT. Default: that
    /// address.
    pub raft_listen: Option<std::net::SocketAddr>,
    /// Runs every task of the node on the caller's runtime, and its blocking work (disk
    /// writes and reads, snapshot files) in place, instead of on a runtime of its own and
    /// tokio's blocking pool. On a current-thread runtime with paused time, a node then
    /// does the same things in the same order for the same inputs: what the node simulator
    /// needs. Default `false`: a real node should not share its thread with anything.
    pub single_thread: bool,
}

/// When a node takes snapshots and compacts its log, and how snapshots travel.
#[derive(Clone, Debug)]
pub struct SnapshotConfig {
    /// Take a snapshot once this many entries were applied since the last one (0: never
    /// by count). Default 100,000.
    pub every_entries: u64,
    /// Take a snapshot once the log has grown by this many bytes since the last one (0:
    /// never by size). Default 512 MiB.
    pub every_wal_bytes: u64,
    /// Whether a snapshot also waits until the log has grown by at least the size of the
    /// previous snapshot. A snapshot copies the whole state, so without this a large state
    /// snapshotted every `every_entries` costs work proportional to the state for every
    /// batch of entries; with it the copying stays proportional to what is written (at
    /// the cost of a log that grows to about the state's size between snapshots). Default
    /// `true`.
    pub scale_with_size: bool,
    /// Entries kept in the log before a snapshot's index, so that followers slightly
    /// behind catch up from the log rather than a snapshot. Default 10,000.
    pub tail_entries: u64,
    /// What a snapshot lets the node drop from its Raft log. Default
    /// [`LogRetention::AfterSnapshot`].
    pub retention: LogRetention,
    /// Bytes per chunk of a transfer. Default 1 MiB.
    pub chunk_bytes: usize,
    /// Chunks sent ahead of the receiver's acknowledgements. Default 4.
    pub window: usize,
    /// A transfer with no progress for this long fails (and is retried, resuming).
    /// Installing the snapshot afterwards does not count. Default 30 s.
    pub transfer_idle_timeout: Duration,
    /// Transfers to followers running at once at most; more wait their turn. Default 2.
    pub max_transfers: usize,
    /// The largest snapshot this node accepts from a leader. Default 64 GiB.
    pub max_bytes: u64,
    /// After a snapshot fails, the next is tried no sooner than this; the wait doubles with
    /// each failure in a row, up to `retry_max`, and a success resets it. Default 1 s.
    pub retry_after: Duration,
    /// The longest wait between failed snapshots. Default 60 s.
    pub retry_max: Duration,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            every_entries: 100_000,
            every_wal_bytes: 512 << 20,
            scale_with_size: true,
            tail_entries: 10_000,
            retention: LogRetention::AfterSnapshot,
            chunk_bytes: 1 << 20,
            window: 4,
            transfer_idle_timeout: Duration::from_secs(30),
            max_transfers: 2,
            max_bytes: 64 << 30,
            retry_after: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
        }
    }
}

/// What a node keeps of its Raft log once a snapshot covers it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogRetention {
    /// The state machine keeps what it needs of the entries: each snapshot drops the
    /// entries it covers, but for [`SnapshotConfig::tail_entries`] before it.
    #[default]
    AfterSnapshot,
    /// The Raft log is the application's record of every entry (`RaftNode::retrieve` reads
    /// it): it is kept, and only the oldest whole segments past these limits are dropped,
    /// never past [`SnapshotConfig::tail_entries`] before the latest snapshot (what the
    /// state machine holds durably). `None`: no limit of that kind; both `None` keeps
    /// everything.
    Keep {
        /// Keep at least this many of the newest entries; drop older whole segments.
        entries: Option<u64>,
        /// Keep at least this many bytes of the newest segments; drop older ones.
        bytes: Option<u64>,
    },
}

/// Transport settings that `NodeConfig` passes on to `raft-net`.
#[derive(Clone, Debug)]
pub struct NetTuning {
    /// The largest frame sent or accepted. Default 16 MiB.
    pub max_frame_bytes: usize,
    /// Messages queued per peer. Default 4096.
    pub send_queue: usize,
    /// Bytes of messages queued per peer. Default 64 MiB.
    pub send_queue_bytes: u64,
    /// Messages queued from peers. Default 8192.
    pub recv_queue: usize,
    /// Frame bytes queued from peers (at least `max_frame_bytes`). Default 64 MiB.
    pub recv_queue_bytes: usize,
    /// Longest reconnect delay. Default 1 s.
    pub backoff_max: Duration,
    /// Inbound connections in their handshake at most; more are closed at once. Default 64.
    pub max_pending_handshakes: usize,
    /// Time allowed to connect and complete the handshake. Default 3 s.
    pub handshake_timeout: Duration,
    /// An inbound peer connection silent this long is closed. Default 60 s.
    pub idle_timeout: Duration,
    /// TCP keepalive time and interval on peer connections. Default 10 s.
    pub keepalive: Duration,
    /// Mutual TLS with the other members ([`raft_net::tls`]); `None` (the default): plain
    /// TCP, on which anyone who reaches the port can speak as any member.
    pub tls: Option<std::sync::Arc<raft_net::PeerTls>>,
}

impl Default for NetTuning {
    fn default() -> Self {
        NetTuning {
            max_frame_bytes: 16 << 20,
            send_queue: 4096,
            send_queue_bytes: 64 << 20,
            recv_queue: 8192,
            recv_queue_bytes: 64 << 20,
            backoff_max: Duration::from_secs(1),
            max_pending_handshakes: 64,
            handshake_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(60),
            keepalive: Duration::from_secs(10),
            tls: None,
        }
    }
}

impl NodeConfig {
    /// Defaults for node `id` of a cluster whose nodes are `peers`, storing in `data_dir`.
    pub fn new(
        id: NodeId,
        cluster_id: impl Into<String>,
        peers: BTreeMap<NodeId, Peer>,
        data_dir: impl Into<PathBuf>,
    ) -> Self {
        let voters: Vec<NodeId> = peers.keys().copied().collect();
        NodeConfig {
            id,
            cluster_id: cluster_id.into(),
            peers,
            learners: std::collections::BTreeSet::new(),
            data_dir: data_dir.into(),
            tick: Duration::from_millis(10),
            raft: raft_core::Config::new(id, voters),
            sync: SyncPolicy::Always,
            pipeline_writes: true,
            segment_bytes: 64 << 20,
            log_cache_bytes: 8 << 20,
            request_queue: 16_384,
            max_pending_submits: 65_536,
            max_pending_bytes: 64 << 20,
            max_retrieve_entries: 10_000,
            max_retrieve_bytes: 4 << 20,
            max_concurrent_reads: 16,
            max_entry_bytes: 4 << 20,
            net: NetTuning::default(),
            snapshot: SnapshotConfig::default(),
            autopilot: crate::AutopilotConfig::default(),
            flow: crate::FlowConfig::default(),
            raft_listen: None,
            single_thread: false,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if !self.peers.contains_key(&self.id) {
            return Err(format!("node {} is not among the peers", self.id));
        }
        if self.tick.is_zero() {
            return Err("tick must be longer than zero".into());
        }
        if self.request_queue == 0 || self.max_pending_submits == 0 {
            return Err("request_queue and max_pending_submits must be at least 1".into());
        }
        if self.max_retrieve_entries == 0 || self.max_concurrent_reads == 0 {
            return Err("max_retrieve_entries and max_concurrent_reads must be at least 1".into());
        }
        if self.snapshot.chunk_bytes == 0
            || self.snapshot.chunk_bytes as u128 + FRAME_HEADROOM as u128
                > self.net.max_frame_bytes as u128
        {
            return Err(format!(
                "snapshot.chunk_bytes ({}) must be at least 1 and fit a frame (max_frame_bytes {} minus {FRAME_HEADROOM})",
                self.snapshot.chunk_bytes, self.net.max_frame_bytes
            ));
        }
        // An append carries up to max_bytes_per_msg of entries plus one more entry, each
        // with some framing; it must always fit in a network frame, or the entry could
        // never reach a follower and the log would stall behind it.
        let needed = self.raft.max_bytes_per_msg as u128
            + self.max_entry_bytes as u128
            + FRAME_HEADROOM as u128;
        if needed > self.net.max_frame_bytes as u128 {
            return Err(format!(
                "max_frame_bytes ({}) must be at least max_bytes_per_msg ({}) + max_entry_bytes ({}) + {FRAME_HEADROOM} bytes of framing",
                self.net.max_frame_bytes, self.raft.max_bytes_per_msg, self.max_entry_bytes
            ));
        }
        Ok(())
    }
}
