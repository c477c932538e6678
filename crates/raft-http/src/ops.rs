//! Status, health, readiness and metrics.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use raft_core::Role;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::metrics::{ProposalSummary, LATENCY_BUCKETS};
use crate::state::AppState;

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Follower => "follower",
        Role::PreCandidate => "pre-candidate",
        Role::Candidate => "candidate",
        Role::Leader => "leader",
    }
}

fn sync_name(p: raft_client::SyncPolicy) -> &'static str {
    match p {
        raft_client::SyncPolicy::Always => "always",
        raft_client::SyncPolicy::Never => "never",
    }
}

/// `GET /v1/status` → the node's state, and every follower's progress on the leader.
#[utoipa::path(get, operation_id = "status", path = "/v1/status", tag = "operations",
    responses((status = 200, description = "This node's state; followers' progress on the leader (see docs/http-api.md)", body = Object)))]
pub(crate) async fn status(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    status_json(&st).await.map(Json)
}

/// What `GET /v1/status` answers.
pub(crate) async fn status_json(st: &AppState) -> Result<Value, ApiError> {
    let s = st
        .node
        .status()
        .await
        .map_err(|e| ApiError::from_node(e, None))?;
    let progress: Vec<Value> = s
        .progress
        .iter()
        .map(|p| {
            json!({
                "id": p.id,
                "match_index": p.match_index,
                "next_index": p.next_index,
                "state": match (p.pending_snapshot, p.replicating) {
                    (Some(_), _) => "snapshot",
                    (None, true) => "replicate",
                    (None, false) => "probe",
                },
                "pending_snapshot": p.pending_snapshot,
                "lag": s.last_index.saturating_sub(p.match_index),
                "inflight_bytes": p.inflight_bytes,
                "flow_window": p.flow_window,
            })
        })
        .collect();
    let storage = st.node.storage_stats();
    let mut out = json!({
        "id": s.id,
        "role": role_name(s.role),
        "term": s.term,
        "leader": s.leader,
        "leader_api": st.leader_api(),
        "leader_changes": st.node.leader_changes(),
        "commit_index": s.commit,
        "applied_index": s.applied,
        "last_index": s.last_index,
        "persisted_index": s.persisted_index,
        "first_index": s.first_index,
        "snapshot_index": s.snapshot_index,
        "sync": sync_name(st.node.sync_policy()),
        "storage": {"writes": storage.writes, "syncs": storage.syncs, "bytes_written": storage.bytes_written},
        "rejected_messages": s.rejected_messages,
        "lease_reads": s.lease_reads,
        "snapshots": snapshot_json(st),
        "proposals": proposals_json(&st.metrics.proposals()),
        "membership": {
            "voters": s.membership.voters,
            "outgoing_voters": s.membership.outgoing,
            "learners": s.membership.learners,
            "index": s.membership_index,
            "joint": s.membership.is_joint(),
        },
        "transfer_to": s.transfer_to,
        "version": version_json(st).await,
        "autopilot": autopilot_json(st).await,
        "access": {
            "tokens": st.access.enabled(),
            "https": st.https,
            "token_reload_error": st.access.reload_error(),
            "token_reload_failures": st.access.reload_failures(),
        },
    });
    // Followers' progress is known only to the leader; other nodes leave the field out.
    if s.role == Role::Leader {
        out["progress"] = Value::Array(progress);
    }
    Ok(out)
}

/// Versions: this build's release, the protocols it speaks and the storage formats it
/// reads, the cluster version, and each peer's release and protocol as its latest
/// handshake told (`null` before one).
async fn version_json(st: &AppState) -> Value {
    let peers: serde_json::Map<String, Value> = st
        .node
        .net_stats()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|(id, p)| {
            let v = p
                .version
                .map(|v| json!({"release": v.release.to_string(), "protocol": v.protocol}));
            (id.to_string(), v.unwrap_or(Value::Null))
        })
        .collect();
    json!({
        "release": raft_core::Release::CURRENT.to_string(),
        "cluster": st.node.cluster_version().to_string(),
        "protocols": [raft_core::OLDEST_PROTOCOL_VERSION, raft_core::PROTOCOL_VERSION],
        "storage_formats": [raft_storage::OLDEST_FORMAT_VERSION, raft_storage::FORMAT_VERSION],
        "peers": peers,
    })
}

/// Proposals made through this node's API: outcomes and the cumulative latency histogram.
fn proposals_json(p: &ProposalSummary) -> Value {
    json!({
        "committed": p.committed,
        "failed": p.failed,
        "latency": {
            "le_seconds": LATENCY_BUCKETS,
            "cumulative": p.buckets,
            "count": p.count,
            "sum_seconds": p.sum_us as f64 / 1e6,
        },
    })
}

/// The autopilot's latest decisions on this node, oldest first.
async fn autopilot_json(st: &AppState) -> Value {
    let decisions = st.node.autopilot_decisions().await.unwrap_or_default();
    let list: Vec<Value> = decisions
        .iter()
        .map(|d| {
            let ms =
                d.at.duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |t| t.as_millis() as u64);
            json!({"at_unix_ms": ms, "member": d.member, "action": d.action, "reason": d.reason})
        })
        .collect();
    json!({ "decisions": list })
}

/// Snapshot activity: counters and the transfers running now.
fn snapshot_json(st: &AppState) -> Value {
    let c = st.node.snapshot_stats();
    let transfers: Vec<Value> = st
        .node
        .snapshot_transfers()
        .iter()
        .map(|t| {
            let secs = t.elapsed.as_secs_f64();
            let moved = t.done_bytes.saturating_sub(t.resumed_from);
            json!({
                "peer": t.peer,
                "direction": if t.sending { "out" } else { "in" },
                "index": t.index,
                "done_bytes": t.done_bytes,
                "total_bytes": t.total_bytes,
                "resumed_from": t.resumed_from,
                "elapsed_ms": t.elapsed.as_millis() as u64,
                "bytes_per_sec": if secs > 0.0 { (moved as f64 / secs) as u64 } else { 0 },
            })
        })
        .collect();
    json!({
        "taken": c.taken,
        "taking": c.taking,
        "sent": c.sent,
        "send_failures": c.send_failures,
        "sent_bytes": c.sent_bytes,
        "resumed_bytes": c.resumed_bytes,
        "received": c.received,
        "receive_failures": c.receive_failures,
        "installed": c.installed,
        "transfers": transfers,
    })
}

/// Chunks a blocking writer into a channel that feeds a streamed response body.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    const CHUNK: usize = 256 << 10;

    fn push(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = bytes::Bytes::from(std::mem::take(&mut self.buf));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client left"))
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= Self::CHUNK {
            self.push()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.push()
    }
}

/// `GET /v1/snapshot` → a consistent copy of this node's state (the key-value map as of its
/// applied index; the log stays in the Raft log), streamed in the snapshot file format; restore it with
/// `httpraft restore`. One at a time per node (429 otherwise).
#[utoipa::path(get, path = "/v1/snapshot", tag = "operations",
    responses((status = 200, description = "A consistent copy of the state, in the snapshot file format", content_type = "application/octet-stream"),
        (status = 429, description = "A copy is already being made", body = crate::openapi::ErrorBody)))]
pub(crate) async fn snapshot(State(st): State<AppState>) -> Response {
    let Ok(permit) = st.backups.clone().try_acquire_owned() else {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "busy",
            "a backup of this node is already being streamed; retry when it ends",
        );
        e.retry_after = Some(5);
        return e.into_response();
    };
    let backup = match st.node.backup().await {
        Ok(b) => b,
        Err(e) => return ApiError::from_node(e, None).into_response(),
    };
    let index = backup.meta().index;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let mut w = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::new(),
        };
        if let Err(e) = backup.write_to(&mut w) {
            let _ = tx.blocking_send(Err(e));
        }
    });
    let body = axum::body::Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async {
        rx.recv().await.map(|item| (item, rx))
    }));
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"httpraft-{index}.snap\""),
            ),
        ],
        body,
    )
        .into_response()
}

/// `GET /healthz` → 200 while the node's runtime answers.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The node's runtime answers", body = Object), (status = 503, description = "It does not", body = crate::openapi::ErrorBody)))]
pub(crate) async fn healthz(State(st): State<AppState>) -> Response {
    match st.node.status().await {
        Ok(_) => Json(json!({"status": "ok"})).into_response(),
        Err(e) => ApiError::from_node(e, None).into_response(),
    }
}

/// `GET /readyz` → 200 when a leader is known and what was committed when the probe came is
/// applied within `--ready-apply-wait-ms` (a node that applies as fast as it commits stays
/// ready under a steady stream of writes; one that replays or lags does not).
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "A leader is known and everything committed when the probe came is applied (waiting at most --ready-apply-wait-ms)", body = Object), (status = 503, description = "Not yet (`Retry-After`)", body = crate::openapi::ErrorBody)))]
pub(crate) async fn readyz(State(st): State<AppState>) -> Response {
    // The whole answer within the wait (at least `READY_STATUS_WAIT`): the runtime itself
    // can be busy (installing a snapshot), which is a reason not to be ready, not to keep
    // the probe waiting.
    let wait = st.cfg.ready_apply_wait;
    let started = tokio::time::Instant::now();
    let s = match tokio::time::timeout(wait.max(READY_STATUS_WAIT), st.node.status()).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return ApiError::from_node(e, None).into_response(),
        Err(_) => {
            return not_ready(json!({
                "ready": false,
                "leader": null,
                "reason": "the node's runtime did not report its status in time",
            }))
        }
    };
    let mut applied = s.applied;
    if s.leader.is_some() && applied < s.commit {
        applied = st
            .applied_by(s.commit, wait.saturating_sub(started.elapsed()))
            .await;
    }
    let ready = s.leader.is_some() && applied >= s.commit;
    let body = json!({
        "ready": ready,
        "leader": s.leader,
        "commit_index": s.commit,
        // Applied as far as that commit index (it may have gone on since).
        "applied_index": applied.min(s.commit),
    });
    if ready {
        Json(body).into_response()
    } else {
        not_ready(body)
    }
}

/// How long `/readyz` waits for the runtime's status at least, whatever the apply wait.
const READY_STATUS_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// 503 with `Retry-After` and `body`.
fn not_ready(body: serde_json::Value) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1")],
        Json(body),
    )
        .into_response()
}

/// `GET /metrics` → OpenMetrics text (which Prometheus reads).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text")))]
pub(crate) async fn metrics(State(st): State<AppState>) -> Response {
    match crate::exposition::collect(&st).await {
        Ok(text) => ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => e.into_response(),
    }
}
