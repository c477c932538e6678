//! Prometheus text exposition of the node's state and of request counters.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use raft_client::{PeerStats, StatsSnapshot};
use raft_core::{Role, Status};

use crate::server::ServerStats;

/// What `/metrics` shows besides the node's status and the per-peer counters.
pub(crate) struct Extra<'a> {
    pub(crate) snapshots: raft_client::SnapshotStats,
    pub(crate) transfers: Vec<raft_client::TransferStatus>,
    pub(crate) storage: StatsSnapshot,
    pub(crate) sync_always: bool,
    pub(crate) server: &'a ServerStats,
    pub(crate) listener: raft_client::ListenerStats,
}

/// Upper bounds (seconds) of the submit latency histogram buckets.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Proposals submitted through HTTP on this node: outcomes and a cumulative latency
/// histogram, as shown in `/v1/status` and summed over the members by the dashboard.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ProposalSummary {
    /// Proposals committed and applied.
    pub(crate) committed: u64,
    /// Proposals that failed.
    pub(crate) failed: u64,
    /// Proposals that took at most [`LATENCY_BUCKETS`]`[i]` seconds.
    pub(crate) buckets: [u64; BUCKETS.len()],
    /// Proposals timed.
    pub(crate) count: u64,
    /// Their total time, in microseconds.
    pub(crate) sum_us: u64,
}

/// Upper bounds (seconds) of the proposal latency histogram's buckets.
pub(crate) const LATENCY_BUCKETS: [f64; 12] = BUCKETS;

/// A network counter's name, help text and how to read it from the stats.
type NetCounter = (&'static str, &'static str, fn(&PeerStats) -> u64);

/// Counters kept by the HTTP layer.
#[derive(Debug, Default)]
pub struct Metrics {
    proposals_ok: AtomicU64,
    proposals_failed: AtomicU64,
    buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
}

impl Metrics {
    /// Records the outcome and latency of one proposal.
    pub fn record_proposal(&self, ok: bool, took: Duration) {
        if ok {
            self.proposals_ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.proposals_failed.fetch_add(1, Ordering::Relaxed);
        }
        let secs = took.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// The proposal counters and latency histogram as they stand.
    pub(crate) fn proposals(&self) -> ProposalSummary {
        ProposalSummary {
            committed: self.proposals_ok.load(Ordering::Relaxed),
            failed: self.proposals_failed.load(Ordering::Relaxed),
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            count: self.latency_count.load(Ordering::Relaxed),
            sum_us: self.latency_sum_us.load(Ordering::Relaxed),
        }
    }

    /// The exposition text.
    pub(crate) fn render(
        &self,
        status: &Status,
        net: &std::collections::BTreeMap<u64, PeerStats>,
        extra: &Extra<'_>,
    ) -> String {
        let mut out = String::with_capacity(4096);
        let mut gauge = |name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge(
            "raft_storage_sync_enabled",
            "1 when the log is synced to disk (--sync always), 0 when it is not (--sync never: unsafe).",
            u64::from(extra.sync_always),
        );
        let role = match status.role {
            Role::Follower => 0,
            Role::PreCandidate => 1,
            Role::Candidate => 2,
            Role::Leader => 3,
        };
        gauge(
            "raft_role",
            "Role of this node: 0 follower, 1 pre-candidate, 2 candidate, 3 leader.",
            role,
        );
        gauge("raft_term", "Current term.", status.term);
        gauge(
            "raft_commit_index",
            "Highest index known committed.",
            status.commit,
        );
        gauge(
            "raft_applied_index",
            "Highest index applied.",
            status.applied,
        );
        gauge(
            "raft_last_index",
            "Index of the last log entry.",
            status.last_index,
        );
        gauge(
            "raft_membership_index",
            "Index of the entry holding the configuration in effect (0: the bootstrap one).",
            status.membership_index,
        );
        gauge(
            "raft_membership_joint",
            "1 while a joint configuration is in effect.",
            u64::from(status.membership.is_joint()),
        );
        gauge(
            "raft_leader_transfer_in_progress",
            "1 while this leader hands leadership over (writes are refused meanwhile).",
            u64::from(status.transfer_to.is_some()),
        );
        let m = &status.membership;
        let _ = writeln!(
            out,
            "# HELP raft_members Members of the configuration in effect, by role.\n# TYPE raft_members gauge\nraft_members{{role=\"voter\"}} {}\nraft_members{{role=\"learner\"}} {}",
            m.all_voters().len(),
            m.learners.len()
        );
        let _ = writeln!(
            out,
            "# HELP raft_leader_id Id of the known leader (-1 when none).\n# TYPE raft_leader_id gauge\nraft_leader_id {}",
            status.leader.map_or(-1, i128::from)
        );
        let _ = writeln!(
            out,
            "# HELP raft_node_id Id of this node.\n# TYPE raft_node_id gauge\nraft_node_id {}",
            status.id
        );
        let _ = writeln!(
            out,
            "# HELP raft_proposals_total Proposals submitted through HTTP, by result.\n# TYPE raft_proposals_total counter"
        );
        let _ = writeln!(
            out,
            "raft_proposals_total{{result=\"committed\"}} {}",
            self.proposals_ok.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "raft_proposals_total{{result=\"failed\"}} {}",
            self.proposals_failed.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP raft_proposal_seconds Time from submit to commit and apply.\n# TYPE raft_proposal_seconds histogram"
        );
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "raft_proposal_seconds_bucket{{le=\"{b}\"}} {}",
                self.buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        let _ = writeln!(out, "raft_proposal_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "raft_proposal_seconds_sum {}",
            self.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "raft_proposal_seconds_count {count}");
        let _ = writeln!(
            out,
            "# HELP raft_peer_replication_lag Entries a follower is behind the leader's last index (leader only).\n# TYPE raft_peer_replication_lag gauge"
        );
        for p in &status.progress {
            let _ = writeln!(
                out,
                "raft_peer_replication_lag{{peer=\"{}\"}} {}",
                p.id,
                status.last_index.saturating_sub(p.match_index)
            );
        }
        let counters: [NetCounter; 7] = [
            (
                "raft_net_messages_sent_total",
                "Messages written to the peer.",
                |s| s.msgs_sent,
            ),
            (
                "raft_net_bytes_sent_total",
                "Bytes written to the peer.",
                |s| s.bytes_sent,
            ),
            (
                "raft_net_messages_received_total",
                "Messages received from the peer.",
                |s| s.msgs_received,
            ),
            (
                "raft_net_bytes_received_total",
                "Bytes received from the peer.",
                |s| s.bytes_received,
            ),
            (
                "raft_net_messages_dropped_total",
                "Messages to the peer dropped (queue full or connection lost).",
                |s| s.msgs_dropped,
            ),
            (
                "raft_net_connects_total",
                "Connections established to the peer.",
                |s| s.connects,
            ),
            (
                "raft_net_connect_failures_total",
                "Failed connections to the peer.",
                |s| s.connect_failures,
            ),
        ];
        for (name, help, get) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (peer, s) in net {
                let _ = writeln!(out, "{name}{{peer=\"{peer}\"}} {}", get(s));
            }
        }
        self.render_extra(&mut out, status, extra);
        out
    }

    fn render_extra(&self, out: &mut String, status: &Status, extra: &Extra<'_>) {
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        let st = &extra.storage;
        counter(
            "raft_storage_writes_total",
            "Appends to the log's segments.",
            st.writes,
        );
        counter(
            "raft_storage_bytes_written_total",
            "Bytes appended to the log's segments.",
            st.bytes_written,
        );
        counter(
            "raft_storage_syncs_total",
            "fdatasync calls on the log (entries, term and vote are synced; a commit index alone is not).",
            st.syncs,
        );
        counter(
            "raft_messages_rejected_total",
            "Peer messages dropped because no correct peer could have sent them.",
            status.rejected_messages,
        );
        let sn = &extra.snapshots;
        for (name, help, v) in [
            (
                "raft_snapshots_taken_total",
                "Snapshots taken (the log compacted after each).",
                sn.taken,
            ),
            (
                "raft_snapshots_sent_total",
                "Snapshot transfers to followers completed.",
                sn.sent,
            ),
            (
                "raft_snapshot_send_failures_total",
                "Snapshot transfers to followers failed (retried).",
                sn.send_failures,
            ),
            (
                "raft_snapshot_sent_bytes_total",
                "Bytes sent in snapshot transfers.",
                sn.sent_bytes,
            ),
            (
                "raft_snapshot_resumed_bytes_total",
                "Bytes skipped by resumed snapshot transfers.",
                sn.resumed_bytes,
            ),
            (
                "raft_snapshots_received_total",
                "Snapshots received whole from a leader.",
                sn.received,
            ),
            (
                "raft_snapshot_receive_failures_total",
                "Snapshot transfers from a leader failed.",
                sn.receive_failures,
            ),
            (
                "raft_snapshots_installed_total",
                "Snapshots from a leader installed.",
                sn.installed,
            ),
        ] {
            counter(name, help, v);
        }
        let sv = extra.server;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        counter(
            "raft_http_connections_accepted_total",
            "HTTP connections accepted.",
            load(&sv.accepted),
        );
        counter(
            "raft_http_connections_rejected_total",
            "HTTP connections closed at once because the connection limit was reached.",
            load(&sv.rejected),
        );
        counter(
            "raft_http_header_timeouts_total",
            "HTTP connections closed because a request's headers did not arrive in time.",
            load(&sv.header_timeouts),
        );
        counter(
            "raft_http_idle_closed_total",
            "Idle HTTP keep-alive connections closed.",
            load(&sv.idle_closed),
        );
        counter(
            "raft_http_request_timeouts_total",
            "HTTP requests answered 503 request_timeout.",
            load(&sv.request_timeouts),
        );
        let ls = &extra.listener;
        counter(
            "raft_net_handshakes_refused_total",
            "Peer connections refused in the handshake (the reasons are in the log).",
            ls.refused,
        );
        counter(
            "raft_net_connections_over_limit_total",
            "Peer connections closed at once because too many handshakes were in progress.",
            ls.over_limit,
        );
        let _ = writeln!(
            out,
            "# HELP raft_snapshot_index Index the latest snapshot covers.\n# TYPE raft_snapshot_index gauge\nraft_snapshot_index {}\n# HELP raft_log_first_index First index the Raft log holds.\n# TYPE raft_log_first_index gauge\nraft_log_first_index {}",
            status.snapshot_index, status.first_index
        );
        let _ = writeln!(
            out,
            "# HELP raft_snapshot_transfer_bytes Bytes of snapshot transfers in progress, done and total.\n# TYPE raft_snapshot_transfer_bytes gauge"
        );
        for t in &extra.transfers {
            let dir = if t.sending { "out" } else { "in" };
            let _ = writeln!(
                out,
                "raft_snapshot_transfer_bytes{{peer=\"{}\",direction=\"{dir}\",of=\"done\"}} {}\nraft_snapshot_transfer_bytes{{peer=\"{}\",direction=\"{dir}\",of=\"total\"}} {}",
                t.peer, t.done_bytes, t.peer, t.total_bytes
            );
        }
        let _ = writeln!(
            out,
            "# HELP raft_http_connections_open HTTP connections open now.\n# TYPE raft_http_connections_open gauge\nraft_http_connections_open {}",
            sv.open()
        );
        let _ = writeln!(
            out,
            "# HELP raft_storage_sync_seconds Time of one fdatasync of the log.\n# TYPE raft_storage_sync_seconds histogram"
        );
        for (b, n) in raft_client::SYNC_BUCKETS.iter().zip(st.sync_buckets) {
            let _ = writeln!(out, "raft_storage_sync_seconds_bucket{{le=\"{b}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "raft_storage_sync_seconds_bucket{{le=\"+Inf\"}} {}",
            st.syncs
        );
        let _ = writeln!(out, "raft_storage_sync_seconds_sum {}", st.sync_seconds);
        let _ = writeln!(out, "raft_storage_sync_seconds_count {}", st.syncs);
    }
}
