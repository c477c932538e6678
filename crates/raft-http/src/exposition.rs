//! `GET /metrics`: everything a node shows to Prometheus, gathered at scrape time.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use raft_client::PeerStats;
use raft_core::{Role, Status};

use crate::error::ApiError;
use crate::metrics::{Labels, Scrape};
use crate::state::{AppState, Leader};

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn peer(id: u64) -> Labels {
    vec![("peer", id.to_string())]
}

/// The exposition text of node `st` now.
pub(crate) async fn collect(st: &AppState) -> Result<String, ApiError> {
    let (status, net, listener) = match (
        st.node.status().await,
        st.node.net_stats().await,
        st.node.listener_stats().await,
    ) {
        (Ok(s), Ok(n), Ok(l)) => (s, n, l),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            return Err(ApiError::from_node(e, None))
        }
    };
    let mut s = Scrape::new();
    node_state(&mut s, st, &status);
    network(&mut s, &status, &net, listener);
    storage(&mut s, st);
    snapshots(&mut s, st, &status);
    http(&mut s, st);
    st.metrics.register(&mut s);
    crate::process::register(&mut s);
    Ok(s.encode())
}

fn node_state(s: &mut Scrape, st: &AppState, status: &Status) {
    let role = match status.role {
        Role::Follower => 0,
        Role::PreCandidate => 1,
        Role::Candidate => 2,
        Role::Leader => 3,
    };
    s.gauge_int(
        "raft_role",
        "Role of this node: 0 follower, 1 pre-candidate, 2 candidate, 3 leader.",
        role,
    );
    s.gauge_int("raft_term", "Current term.", int(status.term));
    s.gauge_int(
        "raft_commit_index",
        "Highest index known committed.",
        int(status.commit),
    );
    s.gauge_int(
        "raft_applied_index",
        "Highest index applied.",
        int(status.applied),
    );
    s.gauge_int(
        "raft_last_index",
        "Index of the last log entry.",
        int(status.last_index),
    );
    s.gauge_int("raft_node_id", "Id of this node.", int(status.id));
    s.gauge_int(
        "raft_leader_id",
        "Id of the known leader (-1 when none).",
        status.leader.map_or(-1, int),
    );
    s.gauge_int(
        "raft_has_leader",
        "1 when this node knows a leader it heard from within an election timeout (or leads), else 0.",
        i64::from(matches!(st.leader(), Leader::Me | Leader::Known(_))),
    );
    s.counter(
        "raft_leader_changes_seen",
        "Leaders this node learned of since it started (the same leader in a new term counts again).",
        st.node.leader_changes(),
    );
    s.gauge_family(
        "raft_build_info",
        "1, labelled with this build's release, the protocol versions it speaks and the storage format it writes at most.",
        vec![(
            vec![
                ("release", raft_core::Release::CURRENT.to_string()),
                (
                    "protocols",
                    format!(
                        "{}-{}",
                        raft_core::OLDEST_PROTOCOL_VERSION,
                        raft_core::PROTOCOL_VERSION
                    ),
                ),
                ("storage_format", raft_storage::FORMAT_VERSION.to_string()),
            ],
            1,
        )],
    );
    s.gauge_family(
        "raft_cluster_version",
        "1, labelled with the cluster version this node applied: the release line every member runs at least.",
        vec![(
            vec![("version", st.node.cluster_version().to_string())],
            1,
        )],
    );
    s.gauge_int(
        "raft_membership_index",
        "Index of the entry holding the configuration in effect (0: the bootstrap one).",
        int(status.membership_index),
    );
    s.gauge_int(
        "raft_membership_joint",
        "1 while a joint configuration is in effect.",
        i64::from(status.membership.is_joint()),
    );
    s.gauge_int(
        "raft_leader_transfer_in_progress",
        "1 while this leader hands leadership over (writes are refused meanwhile).",
        i64::from(status.transfer_to.is_some()),
    );
    let m = &status.membership;
    s.gauge_family(
        "raft_members",
        "Members of the configuration in effect, by role.",
        vec![
            (
                vec![("role", "voter".to_string())],
                m.all_voters().len() as u64,
            ),
            (
                vec![("role", "learner".to_string())],
                m.learners.len() as u64,
            ),
        ],
    );
    s.gauge_family(
        "raft_peer_replication_lag",
        "Entries a follower is behind the leader's last index (leader only).",
        status
            .progress
            .iter()
            .map(|p| (peer(p.id), status.last_index.saturating_sub(p.match_index)))
            .collect(),
    );
    s.gauge_family(
        "raft_peer_inflight_bytes",
        "Entry bytes sent to a follower and not acknowledged (leader only).",
        status
            .progress
            .iter()
            .map(|p| (peer(p.id), p.inflight_bytes))
            .collect(),
    );
    s.gauge_family(
        "raft_peer_flow_window_bytes",
        "A follower's in-flight window from adaptive flow control (leader only; absent while \
         none is measured: the static limit applies).",
        status
            .progress
            .iter()
            .filter_map(|p| p.flow_window.map(|w| (peer(p.id), w)))
            .collect(),
    );
    s.counter(
        "raft_messages_rejected",
        "Peer messages dropped because no correct peer could have sent them.",
        status.rejected_messages,
    );
    s.counter(
        "raft_lease_reads",
        "Linearizable reads this node served from its leader lease (--lease-reads).",
        status.lease_reads,
    );
}

/// A network counter's name, help text and how to read it from the stats.
type NetCounter = (&'static str, &'static str, fn(&PeerStats) -> u64);

fn network(
    s: &mut Scrape,
    _status: &Status,
    net: &BTreeMap<u64, PeerStats>,
    listener: raft_client::ListenerStats,
) {
    let counters: [NetCounter; 7] = [
        (
            "raft_net_messages_sent",
            "Messages written to the peer.",
            |p| p.msgs_sent,
        ),
        ("raft_net_bytes_sent", "Bytes written to the peer.", |p| {
            p.bytes_sent
        }),
        (
            "raft_net_messages_received",
            "Messages received from the peer.",
            |p| p.msgs_received,
        ),
        (
            "raft_net_bytes_received",
            "Bytes received from the peer.",
            |p| p.bytes_received,
        ),
        (
            "raft_net_messages_dropped",
            "Messages to the peer dropped (queue full or connection lost).",
            |p| p.msgs_dropped,
        ),
        (
            "raft_net_connects",
            "Connections established to the peer.",
            |p| p.connects,
        ),
        (
            "raft_net_connect_failures",
            "Failed connections to the peer.",
            |p| p.connect_failures,
        ),
    ];
    for (name, help, get) in counters {
        let rows = net.iter().map(|(id, p)| (peer(*id), get(p))).collect();
        s.counter_family(name, help, rows);
    }
    s.counter(
        "raft_net_handshakes_refused",
        "Peer connections refused in the handshake (the reasons are in the log).",
        listener.refused,
    );
    s.counter(
        "raft_net_connections_over_limit",
        "Peer connections closed at once because too many handshakes were in progress.",
        listener.over_limit,
    );
}

fn storage(s: &mut Scrape, st: &AppState) {
    let sync_always = st.node.sync_policy() == raft_client::SyncPolicy::Always;
    s.gauge_int(
        "raft_storage_sync_enabled",
        "1 when the log is synced to disk (--sync always), 0 when it is not (--sync never: unsafe).",
        i64::from(sync_always),
    );
    let io = st.node.storage_stats();
    s.counter(
        "raft_storage_writes",
        "Appends to the log's segments.",
        io.writes,
    );
    s.counter(
        "raft_storage_bytes_written",
        "Bytes appended to the log's segments.",
        io.bytes_written,
    );
    s.counter(
        "raft_storage_syncs",
        "fdatasync calls on the log (entries, term and vote are synced; a commit index alone is not).",
        io.syncs,
    );
    s.histogram(
        "raft_storage_sync_seconds",
        "Time of one fdatasync of the log.",
        io.sync_seconds,
        io.syncs,
        &raft_client::SYNC_BUCKETS,
        &io.sync_buckets,
    );
}

fn snapshots(s: &mut Scrape, st: &AppState, status: &Status) {
    let sn = st.node.snapshot_stats();
    for (name, help, v) in [
        (
            "raft_snapshots_taken",
            "Snapshots taken (the log compacted after each).",
            sn.taken,
        ),
        (
            "raft_snapshots_sent",
            "Snapshot transfers to followers completed.",
            sn.sent,
        ),
        (
            "raft_snapshot_send_failures",
            "Snapshot transfers to followers failed (retried).",
            sn.send_failures,
        ),
        (
            "raft_snapshot_sent_bytes",
            "Bytes sent in snapshot transfers.",
            sn.sent_bytes,
        ),
        (
            "raft_snapshot_resumed_bytes",
            "Bytes skipped by resumed snapshot transfers.",
            sn.resumed_bytes,
        ),
        (
            "raft_snapshots_received",
            "Snapshots received whole from a leader.",
            sn.received,
        ),
        (
            "raft_snapshot_receive_failures",
            "Snapshot transfers from a leader failed.",
            sn.receive_failures,
        ),
        (
            "raft_snapshots_installed",
            "Snapshots from a leader installed.",
            sn.installed,
        ),
    ] {
        s.counter(name, help, v);
    }
    s.gauge_int(
        "raft_snapshot_index",
        "Index the latest snapshot covers.",
        int(status.snapshot_index),
    );
    s.gauge_int(
        "raft_log_first_index",
        "First index the Raft log holds.",
        int(status.first_index),
    );
    let mut rows = Vec::new();
    for t in st.node.snapshot_transfers() {
        let dir = if t.sending { "out" } else { "in" };
        for (of, v) in [("done", t.done_bytes), ("total", t.total_bytes)] {
            let labels = vec![
                ("peer", t.peer.to_string()),
                ("direction", dir.to_string()),
                ("of", of.to_string()),
            ];
            rows.push((labels, v));
        }
    }
    s.gauge_family(
        "raft_snapshot_transfer_bytes",
        "Bytes of snapshot transfers in progress, done and total.",
        rows,
    );
}

fn http(s: &mut Scrape, st: &AppState) {
    let sv = &st.server;
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    s.gauge_int(
        "raft_http_connections_open",
        "HTTP connections open now.",
        int(sv.open()),
    );
    for (name, help, v) in [
        (
            "raft_http_connections_accepted",
            "HTTP connections accepted.",
            load(&sv.accepted),
        ),
        (
            "raft_http_connections_rejected",
            "HTTP connections closed at once because the connection limit was reached.",
            load(&sv.rejected),
        ),
        (
            "raft_http_header_timeouts",
            "HTTP connections closed because a request's headers did not arrive in time.",
            load(&sv.header_timeouts),
        ),
        (
            "raft_http_idle_closed",
            "Idle HTTP keep-alive connections closed.",
            load(&sv.idle_closed),
        ),
        (
            "raft_http_request_timeouts",
            "HTTP requests answered 503 request_timeout.",
            load(&sv.request_timeouts),
        ),
        (
            "raft_http_tls_handshake_failures",
            "HTTPS connections closed because their TLS handshake failed (no or a bad client certificate, a plaintext client).",
            load(&sv.tls_failures),
        ),
        (
            "raft_http_connections_over_address_limit",
            "HTTP connections closed at once because their client address held --http-max-connections-per-address already.",
            load(&sv.over_address_limit),
        ),
        (
            "raft_http_tls_handshakes_over_limit",
            "HTTPS connections closed at once because too many TLS handshakes were in progress (--http-max-handshakes, --http-max-handshakes-per-address).",
            load(&sv.handshakes_over_limit),
        ),
        (
            "raft_http_tls_handshake_timeouts",
            "HTTPS connections closed because their TLS handshake did not finish within --http-handshake-timeout-ms.",
            load(&sv.handshake_timeouts),
        ),
    ] {
        s.counter(name, help, v);
    }
    s.counter(
        "raft_http_token_reload_failures",
        "Reloads of the token file (SIGHUP) that failed; the tokens in force were kept.",
        st.access.reload_failures(),
    );
    s.gauge_int(
        "raft_http_token_file_stale",
        "1 while the latest reload of the token file failed: a token removed from the file since is still accepted.",
        int(u64::from(st.access.reload_error().is_some())),
    );
    s.gauge_int(
        "raft_http_streams_open",
        "Streams open now (GET /v1/log/stream, GET /v1/kv/watch, GET /v1/events).",
        int(st.open_streams() as u64),
    );
    s.gauge_int(
        "raft_http_long_polls_waiting",
        "Long polls (GET /v1/log?wait=) waiting now.",
        int(st.long_polls.load(Ordering::Relaxed) as u64),
    );
}
