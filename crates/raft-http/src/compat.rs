//! The original httpraft API and its key-value companion, byte-compatible:
//! `POST /request`, `GET /log?index=n`, `PUT /`, `GET /?key=k`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use raft_client::KvCommand;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::entry_json::entry_to_json;
use crate::error::ApiError;
use crate::state::{json_response, parse_json, AppState, Body, Params, SubmitKvError};

/// Unknown fields are ignored here, as the original did (the versioned API refuses them).
#[derive(Deserialize)]
struct RequestBody {
    entry: String,
}

#[derive(Deserialize)]
struct PutBody {
    key: String,
    value: String,
}

/// `POST /request {"entry": "..."}` → `{"success": bool, "leader": "<host:port>"}`.
/// The leader answers once the entry is committed; any other node at once, with
/// `success: false` and its leader hint.
#[utoipa::path(post, operation_id = "original_request", path = "/request", tag = "original", request_body = crate::openapi::OriginalRequest,
    responses((status = 200, description = "Committed (on the leader), or not the leader (`success: false` with the leader hint)", body = crate::openapi::OriginalAnswer), (status = 400, description = "Malformed body or parameter", body = crate::openapi::ErrorBody)))]
pub(crate) async fn post_request(
    State(st): State<AppState>,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    let req: RequestBody = parse_json(&body)?;
    let outcome = st.submit(req.entry.into_bytes()).await;
    let (success, leader) = match outcome {
        Ok(_) => (true, Some(st.self_api())),
        Err(_) => (false, st.leader_api()),
    };
    Ok(Json(
        json!({"success": success, "leader": leader.unwrap_or_default()}),
    ))
}

/// `GET /log?index=n` → the committed entries from `n` on, as a JSON array (see
/// [`crate::entry_json`] for their shape).
#[utoipa::path(get, operation_id = "original_get_log", path = "/log", tag = "original", params(("index" = Option<u64>, Query, description = "The first index (1-based; default 1)")),
    responses((status = 200, description = "The committed entries from `index` on", body = Vec<crate::openapi::LogEntry>)))]
pub(crate) async fn get_log(
    State(st): State<AppState>,
    Params(q): Params,
) -> Result<Response, ApiError> {
    let from = match q.get("index") {
        None => 1,
        Some(s) => s
            .parse::<u64>()
            .map_err(|_| ApiError::bad_request(format!("index must be a number, got {s:?}")))?,
    };
    // Read and serialise on a blocking thread, under the read limit.
    st.read_log(from.max(1), st.cfg.max_log_entries, |entries, _first| {
        json_response(&Value::Array(entries.iter().map(entry_to_json).collect()))
    })
    .await
}

/// `PUT / {"key","value"}` → `{"leader","key","value"}` once committed; a follower
/// answers at once with only the leader hint.
#[utoipa::path(put, operation_id = "original_put_kv", path = "/", tag = "original", request_body = crate::openapi::OriginalPut,
    responses((status = 200, description = "Committed (on the leader), or the leader hint alone", body = crate::openapi::OriginalKv), (status = 400, description = "Malformed body or parameter", body = crate::openapi::ErrorBody)))]
pub(crate) async fn put_kv(
    State(st): State<AppState>,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let req: PutBody = parse_json(&body)?;
    let cmd = KvCommand::put(req.key.clone(), req.value.clone());
    match st.submit_kv(&cmd).await {
        Ok(_) => Ok(
            Json(json!({"leader": st.self_api(), "key": req.key, "value": req.value}))
                .into_response(),
        ),
        Err(SubmitKvError::Encode(e)) => Err(e),
        Err(SubmitKvError::Node(_)) => {
            Ok(Json(json!({"leader": st.leader_api().unwrap_or_default()})).into_response())
        }
    }
}

/// `GET /?key=k` → `{"leader","key","value"}` from this node's map (empty value when the
/// key is absent).
#[utoipa::path(get, operation_id = "original_get_kv", path = "/", tag = "original", params(("key" = String, Query, description = "The key")),
    responses((status = 200, description = "The value from this node's map (empty when absent)", body = crate::openapi::OriginalKv)))]
pub(crate) async fn get_kv(
    State(st): State<AppState>,
    Params(q): Params,
) -> Result<Json<Value>, ApiError> {
    let key = q.get("key").ok_or_else(|| {
        ApiError::bad_request("the key query parameter is required: GET /?key=<key>")
    })?;
    let value = st.get_value(key)?.unwrap_or_default();
    Ok(Json(
        json!({"leader": st.leader_api().unwrap_or_default(), "key": key, "value": value}),
    ))
}
