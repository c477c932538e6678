//! The versioned API under `/v1`.
//!
//! Writes must reach the leader. A follower answers them with `307 Temporary Redirect` to
//! the same path on the leader's API address (the method and body are kept by clients that
//! follow redirects, e.g. `curl -L`), with a JSON error body naming the leader. With no
//! known leader the answer is `503` with `Retry-After: 1`. Linearizable reads are served by
//! every node: a follower obtains a read index from the leader and answers once it has
//! applied up to it.

use std::time::Duration;

use axum::extract::{OriginalUri, State};
use axum::http::StatusCode;
use axum::Json;
use bytes::Bytes;
use raft_client::{Error, Expect, KvCommand, KvResponse, Versioned};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::entry_json::entry_to_json;
use crate::error::ApiError;
use crate::state::{
    json_response, parse_json, AppState, Body, KeyPath, Leader, Params, SubmitKvError,
};

/// `{"entry": "..."}`, or `{"entries": ["...", ...]}` for a batch.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppendBody {
    entry: Option<String>,
    entries: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutBody {
    value: String,
    #[serde(default, deserialize_with = "present")]
    expect: Option<Option<String>>,
    if_revision: Option<crate::state::Whole>,
}

/// The conditions of a conditional write: `"expect": "<value>"` (or `null`: only if
/// absent) and `"if_revision": n` (0: only if absent).
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Conditions {
    /// Absent: no condition on the value; `null`: the key must be absent.
    #[serde(default, deserialize_with = "present")]
    expect: Option<Option<String>>,
    if_revision: Option<crate::state::Whole>,
}

/// Tells a field given as `null` from a field not given.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

impl Conditions {
    fn expect(self) -> Option<Expect> {
        if self.expect.is_none() && self.if_revision.is_none() {
            return None;
        }
        Some(Expect {
            value: self.expect,
            revision: self.if_revision.map(|r| r.0),
        })
    }
}

fn versioned_json(v: &Option<Versioned>) -> Value {
    match v {
        Some(v) => json!({"value": v.value, "revision": v.revision}),
        None => Value::Null,
    }
}

/// Where a request that needs the leader goes instead of this node.
pub(crate) fn elsewhere(st: &AppState, uri: &axum::http::Uri, err: Option<Error>) -> ApiError {
    let leader = match st.leader() {
        Leader::Me => {
            // We are (still) the leader: the failure is something else.
            return match err {
                Some(e) => ApiError::from_node(e, st.leader_api()),
                None => ApiError::no_leader(),
            };
        }
        Leader::Unknown => return ApiError::no_leader(),
        Leader::Silent(l, age) => {
            return ApiError::no_leader_because(format!(
                "this node has not heard from its leader (node {l}) for {} ms, longer than an election timeout ({} ms): it has probably failed and an election will follow; retry shortly",
                age.as_millis(),
                st.node.election_timeout().as_millis()
            ))
        }
        Leader::Known(l) => l,
    };
    match st.node.api_address(leader) {
        Some(api) => {
            let path = uri.path_and_query().map_or("/", |p| p.as_str());
            let mut e = ApiError::new(
                StatusCode::TEMPORARY_REDIRECT,
                "not_leader",
                format!("this node is not the leader; send the request to {api}"),
            );
            e.location = Some(format!("{}://{api}{path}", st.scheme()));
            e.leader = Some(api);
            e
        }
        None => ApiError::no_leader(),
    }
}

pub(crate) fn is_leader(st: &AppState) -> bool {
    st.leader() == Leader::Me
}

/// Runs `work` (a write, a membership change) on the leader; a follower redirects, a lost
/// leadership says so.
pub(crate) async fn on_leader<T>(
    st: &AppState,
    uri: &axum::http::Uri,
    work: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, ApiError> {
    if !is_leader(st) {
        return Err(elsewhere(st, uri, None));
    }
    match work.await {
        Ok(v) => Ok(v),
        Err(e @ Error::NotLeader { .. }) => Err(elsewhere(st, uri, Some(e))),
        Err(e) => Err(ApiError::from_node(e, st.leader_api())),
    }
}

async fn submit_here(
    st: &AppState,
    uri: &axum::http::Uri,
    data: Bytes,
) -> Result<raft_client::Committed<KvResponse>, ApiError> {
    on_leader(st, uri, st.submit(data)).await
}

/// Submits a key-value command on the leader; returns the commit and the key's previous
/// state, or `412 precondition_failed` with the key's current state when the command's
/// condition did not hold.
async fn submit_kv(
    st: &AppState,
    uri: &axum::http::Uri,
    cmd: &KvCommand,
) -> Result<(raft_client::Committed<KvResponse>, Option<Versioned>), ApiError> {
    if !is_leader(st) {
        return Err(elsewhere(st, uri, None));
    }
    let c = match st.submit_kv(cmd).await {
        Ok(c) => c,
        Err(SubmitKvError::Encode(e)) => return Err(e),
        Err(SubmitKvError::Node(e @ Error::NotLeader { .. })) => {
            return Err(elsewhere(st, uri, Some(e)))
        }
        Err(SubmitKvError::Node(e)) => return Err(ApiError::from_node(e, st.leader_api())),
    };
    let previous = match &c.response {
        KvResponse::Applied { previous, .. } => previous.clone(),
        KvResponse::PreconditionFailed { current } => {
            let mut e = ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                format!(
                    "key {:?} does not meet the condition (it is {}): nothing was written; `current` is what it holds",
                    cmd.key(),
                    match current {
                        Some(v) => format!("at revision {}", v.revision),
                        None => "absent".to_string(),
                    }
                ),
            );
            e.detail = Some(Box::new(("current", versioned_json(current))));
            return Err(e);
        }
        KvResponse::NotACommand => None,
    };
    Ok((c, previous))
}

/// `POST /v1/log {"entry": "..."}` → `201 {"index", "term"}` once committed;
/// `POST /v1/log {"entries": ["...", ...]}` → `201 {"indexes": [...], "term"}` once all are
/// committed (appended together, all or none, at consecutive indexes).
#[utoipa::path(post, path = "/v1/log", tag = "log", request_body = crate::openapi::AppendRequest,
    responses((status = 201, description = "Committed", body = crate::openapi::Appended), (status = 400, description = "Malformed body or parameter", body = crate::openapi::ErrorBody), (status = 413, description = "Body too large", body = crate::openapi::ErrorBody), (status = 307, description = "Not the leader: sent to it (`Location`)", body = crate::openapi::ErrorBody), (status = 503, description = "No leader known, or the write timed out (`Retry-After`)", body = crate::openapi::ErrorBody)))]
pub(crate) async fn append(
    State(st): State<AppState>,
    OriginalUri(uri): OriginalUri,
    Body(body): Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let req: AppendBody = parse_json(&body)?;
    let entries = match (req.entry, req.entries) {
        (Some(entry), None) => {
            let c = submit_here(&st, &uri, Bytes::from(entry.into_bytes())).await?;
            return Ok((
                StatusCode::CREATED,
                Json(json!({"index": c.index, "term": c.term})),
            ));
        }
        (None, Some(entries)) => entries,
        _ => {
            return Err(ApiError::bad_request(
                "the body must hold either \"entry\": \"...\" or \"entries\": [\"...\", ...]"
                    .to_string(),
            ))
        }
    };
    if entries.is_empty() {
        return Err(ApiError::bad_request(
            "\"entries\" is empty: give at least one".to_string(),
        ));
    }
    if entries.len() > st.cfg.max_batch_entries {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "too_many_entries",
            format!(
                "{} entries in one request; the limit is {} (--max-batch-entries): split the batch",
                entries.len(),
                st.cfg.max_batch_entries
            ),
        ));
    }
    let data = entries
        .into_iter()
        .map(|e| Bytes::from(e.into_bytes()))
        .collect();
    let c = on_leader(&st, &uri, st.submit_batch(data)).await?;
    let indexes: Vec<u64> = (c.first..).take(c.responses.len()).collect();
    Ok((
        StatusCode::CREATED,
        Json(json!({"indexes": indexes, "term": c.term})),
    ))
}

/// A long poll's `wait`: `30s`, `500ms`, or a number of seconds.
fn parse_wait(w: &str) -> Result<Duration, ApiError> {
    let bad = || {
        ApiError::bad_request(format!(
            "wait must be a duration such as 30s or 500ms, got {w:?}"
        ))
    };
    let (num, unit_ms) = if let Some(n) = w.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = w.strip_suffix('s') {
        (n, 1000)
    } else {
        (w, 1000)
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    // Any number of digits: a wait longer than the request timeout is cut to it anyway.
    let n: u64 = num.parse().unwrap_or(u64::MAX);
    Ok(Duration::from_millis(n.saturating_mul(unit_ms)))
}

/// Waits (at most `wait`) until the entry at `from` is applied here, or the node stops.
async fn wait_for_applied(st: &AppState, from: u64, wait: Duration) {
    use std::sync::atomic::Ordering;
    /// Counts the poll among those waiting while it lives.
    struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);
    impl Drop for Waiting<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
    st.long_polls.fetch_add(1, Ordering::Relaxed);
    let _waiting = Waiting(&st.long_polls);
    st.applied_by(from, wait).await;
}

/// `GET /v1/log?from=1&limit=100[&wait=30s]` → `{"entries": [...], "next": <index to ask
/// next>}`; with `wait`, a long poll: the answer comes as soon as the entry at `from` is
/// committed and applied here, or after `wait` (then with no entries).
#[utoipa::path(get, path = "/v1/log", tag = "log", params(
        ("from" = Option<u64>, Query, description = "The first index (default 1)"),
        ("limit" = Option<u64>, Query, description = "At most this many entries (1 to --max-log-entries)"),
        ("wait" = Option<String>, Query, description = "Long poll: answer as soon as `from` is committed, or after this long (`30s`, `500ms`)")),
    responses((status = 200, description = "Committed entries", body = crate::openapi::LogPage), (status = 400, description = "Malformed body or parameter", body = crate::openapi::ErrorBody)))]
pub(crate) async fn read_log(
    State(st): State<AppState>,
    Params(q): Params,
) -> Result<axum::response::Response, ApiError> {
    let num = |name: &str, default: u64| -> Result<u64, ApiError> {
        match q.get(name) {
            None => Ok(default),
            Some(s) => s
                .parse()
                .map_err(|_| ApiError::bad_request(format!("{name} must be a number, got {s:?}"))),
        }
    };
    let from = num("from", 1)?.max(1);
    let limit = num("limit", st.cfg.max_log_entries as u64)?;
    if limit == 0 {
        return Err(ApiError::bad_request(
            "limit must be at least 1 (at most --max-log-entries entries are returned)",
        ));
    }
    let limit = limit.min(st.cfg.max_log_entries as u64);
    if let Some(w) = q.get("wait") {
        let wait = parse_wait(w)?.min(
            st.cfg
                .request_timeout
                .saturating_sub(Duration::from_secs(1)),
        );
        wait_for_applied(&st, from, wait).await;
    }
    // Read and serialise on a blocking thread, under the read limit.
    st.read_log(from, limit as usize, move |entries, first| {
        let next = entries.last().map_or(from.max(first), |e| e.index + 1);
        json_response(&json!({
            "entries": entries.iter().map(entry_to_json).collect::<Vec<_>>(),
            "next": next,
            "first": first,
        }))
    })
    .await
}

/// `PUT /v1/kv/{key} {"value": "...", ["expect": "..."|null], ["if_revision": n]}` →
/// `{"key", "value", "revision", "previous", "previous_revision", "index", "term"}`; `412
/// precondition_failed` (with `current`) when a condition does not hold.
#[utoipa::path(put, operation_id = "put_key", path = "/v1/kv/{key}", tag = "kv", params(("key" = String, Path, description = "The key: everything after /v1/kv/, `/` included")),
    request_body = crate::openapi::PutRequest,
    responses((status = 200, description = "Committed", body = crate::openapi::Written), (status = 400, description = "Malformed body or parameter", body = crate::openapi::ErrorBody),
        (status = 412, description = "A condition did not hold (`error.current`)", body = crate::openapi::ErrorBody), (status = 307, description = "Not the leader: sent to it (`Location`)", body = crate::openapi::ErrorBody), (status = 503, description = "No leader known, or the write timed out (`Retry-After`)", body = crate::openapi::ErrorBody)))]
pub(crate) async fn put(
    State(st): State<AppState>,
    OriginalUri(uri): OriginalUri,
    KeyPath(key): KeyPath,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    let req: PutBody = parse_json(&body)?;
    let put = KvCommand::Put {
        key: key.clone(),
        value: req.value.clone(),
        expect: Conditions {
            expect: req.expect,
            if_revision: req.if_revision,
        }
        .expect(),
    };
    let (c, previous) = submit_kv(&st, &uri, &put).await?;
    Ok(Json(json!({
        "key": key,
        "value": req.value,
        "revision": c.index,
        "previous": previous.as_ref().map(|p| &p.value),
        "previous_revision": previous.as_ref().map(|p| p.revision),
        "index": c.index,
        "term": c.term,
    })))
}

/// `DELETE /v1/kv/{key}` (optionally with a body `{"expect": ..., "if_revision": n}`) →
/// `{"key", "previous", "previous_revision", "index", "term"}`; `412 precondition_failed`
/// when a condition does not hold.
#[utoipa::path(delete, operation_id = "delete_key", path = "/v1/kv/{key}", tag = "kv", params(("key" = String, Path, description = "The key: everything after /v1/kv/, `/` included")),
    request_body(content = Option<crate::openapi::DeleteRequest>, description = "Optional conditions"),
    responses((status = 200, description = "Committed", body = crate::openapi::Written), (status = 400, description = "Malformed body or parameter", body = crate::openapi::ErrorBody),
        (status = 412, description = "A condition did not hold (`error.current`)", body = crate::openapi::ErrorBody), (status = 307, description = "Not the leader: sent to it (`Location`)", body = crate::openapi::ErrorBody), (status = 503, description = "No leader known, or the write timed out (`Retry-After`)", body = crate::openapi::ErrorBody)))]
pub(crate) async fn delete(
    State(st): State<AppState>,
    OriginalUri(uri): OriginalUri,
    KeyPath(key): KeyPath,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    let when: Conditions = if body.iter().all(u8::is_ascii_whitespace) {
        Conditions::default()
    } else {
        parse_json(&body)?
    };
    let del = KvCommand::Delete {
        key: key.clone(),
        expect: when.expect(),
    };
    let (c, previous) = submit_kv(&st, &uri, &del).await?;
    Ok(Json(json!({
        "key": key,
        "previous": previous.as_ref().map(|p| &p.value),
        "previous_revision": previous.as_ref().map(|p| p.revision),
        "index": c.index,
        "term": c.term,
    })))
}

/// Confirms, for `consistency=linearizable` (the default), that this node has applied
/// everything committed before the read began (ReadIndex: on the leader, confirmed with a
/// majority; on a follower, the index obtained from the leader); `local` reads at once.
async fn confirm_read(
    st: &AppState,
    uri: &axum::http::Uri,
    q: &std::collections::HashMap<String, String>,
) -> Result<(), ApiError> {
    match q.get("consistency").map(String::as_str) {
        None | Some("linearizable") if cfg!(feature = "stale-linearizable-reads") => {
            // Deliberately wrong (see the feature): answered from this node's map.
            Ok(())
        }
        None | Some("linearizable") => {
            if matches!(st.leader(), Leader::Unknown | Leader::Silent(..)) {
                return Err(elsewhere(st, uri, None));
            }
            match st.node.read_barrier().await {
                Ok(_) => Ok(()),
                Err(e @ Error::NotLeader { .. }) => Err(elsewhere(st, uri, Some(e))),
                Err(e) => Err(ApiError::from_node(e, st.leader_api())),
            }
        }
        Some("local") => Ok(()),
        Some(other) => Err(ApiError::bad_request(format!(
            "consistency must be linearizable or local, got {other:?}"
        ))),
    }
}

/// `GET /v1/kv/{key}?consistency=linearizable|local` → `{"key", "value", "revision",
/// "applied"}`, 404 when absent. `linearizable` (the default) is served by any node once it
/// has applied up to a read index the leader confirmed (ReadIndex); `local` answers from
/// this node's map, possibly stale.
#[utoipa::path(get, operation_id = "get_key", path = "/v1/kv/{key}", tag = "kv", params(
        ("key" = String, Path, description = "The key: everything after /v1/kv/, `/` included"),
        ("consistency" = Option<crate::openapi::Consistency>, Query, description = "`linearizable` (default) or `local`")),
    responses((status = 200, description = "The value", body = crate::openapi::KeyValue), (status = 404, description = "No such key", body = crate::openapi::ErrorBody), (status = 307, description = "Not the leader: sent to it (`Location`)", body = crate::openapi::ErrorBody), (status = 503, description = "No leader known, or the write timed out (`Retry-After`)", body = crate::openapi::ErrorBody)))]
pub(crate) async fn get(
    State(st): State<AppState>,
    OriginalUri(uri): OriginalUri,
    KeyPath(key): KeyPath,
    Params(q): Params,
) -> Result<Json<Value>, ApiError> {
    confirm_read(&st, &uri, &q).await?;
    match st.get_versioned(&key)? {
        Some(v) => Ok(Json(
            json!({"key": key, "value": v.value, "revision": v.revision, "applied": st.store.applied()}),
        )),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "key_not_found",
            format!("no value for key {key:?}"),
        )),
    }
}

/// `GET /v1/kv?prefix=p&limit=n&consistency=...` → `{"kvs": [{"key", "value",
/// "revision"}], "more", "applied"}`: the keys starting with `p` in order, at most `n`
/// (default and cap `--max-log-entries`); `more` says whether others follow (ask again
/// with a longer prefix, or from the last key with `start_after`).
#[utoipa::path(get, operation_id = "list_keys", path = "/v1/kv", tag = "kv", params(
        ("prefix" = Option<String>, Query, description = "Keys starting with this"),
        ("limit" = Option<u64>, Query, description = "At most this many"),
        ("start_after" = Option<String>, Query, description = "Keys after this one (to page)"),
        ("consistency" = Option<crate::openapi::Consistency>, Query, description = "`linearizable` (default) or `local`")),
    responses((status = 200, description = "The keys in order", body = crate::openapi::KvList), (status = 400, description = "Malformed body or parameter", body = crate::openapi::ErrorBody), (status = 307, description = "Not the leader: sent to it (`Location`)", body = crate::openapi::ErrorBody), (status = 503, description = "No leader known, or the write timed out (`Retry-After`)", body = crate::openapi::ErrorBody)))]
pub(crate) async fn list(
    State(st): State<AppState>,
    OriginalUri(uri): OriginalUri,
    Params(q): Params,
) -> Result<Json<Value>, ApiError> {
    let prefix = q.get("prefix").cloned().unwrap_or_default();
    let limit = match q.get("limit") {
        None => st.cfg.max_log_entries,
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| {
                ApiError::bad_request(format!("limit must be a number of at least 1, got {s:?}"))
            })?
            .min(st.cfg.max_log_entries),
    };
    let start_after = q.get("start_after").cloned();
    confirm_read(&st, &uri, &q).await?;
    let store = st.store.clone();
    let (kvs, more, applied) = tokio::task::spawn_blocking(move || {
        let applied = store.applied();
        let (kvs, more) = store.list_from(&prefix, start_after.as_deref(), limit)?;
        Ok::<_, std::io::Error>((kvs, more, applied))
    })
    .await
    .map_err(|e| ApiError::internal(format!("the list task failed: {e}")))?
    .map_err(|e| ApiError::internal(format!("cannot read the map: {e}")))?;
    Ok(Json(json!({
        "kvs": kvs
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v.value, "revision": v.revision}))
            .collect::<Vec<_>>(),
        "more": more,
        "applied": applied,
    })))
}
