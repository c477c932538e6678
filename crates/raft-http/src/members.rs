//! Membership and leadership under `/v1`: list the members, add a learner, promote or
//! remove a member, hand leadership over. Changes must reach the leader: a follower answers
//! `307` to it, as for other writes.

use axum::extract::{OriginalUri, Path, State};
use axum::http::StatusCode;
use axum::Json;
use raft_client::{MemberRole, Peer};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::state::{parse_json, AppState, Body};
use crate::v1::on_leader;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBody {
    id: u64,
    raft: String,
    api: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferBody {
    to: u64,
}

/// `GET /v1/members` → `[{"id", "raft", "api", "role", "match_index", "lag", "reachable"}]`.
/// Progress (`match_index`, `lag`, `reachable`) is known on the leader only, `null`
/// elsewhere.
#[utoipa::path(get, operation_id = "list_members", path = "/v1/members", tag = "members",
    responses((status = 200, description = "The members in the configuration in effect on this node", body = Vec<crate::openapi::Member>)))]
pub(crate) async fn list(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let members = st
        .node
        .members()
        .await
        .map_err(|e| ApiError::from_node(e, st.leader_api()))?;
    let list: Vec<Value> = members
        .iter()
        .map(|m| {
            json!({
                "id": m.id,
                "raft": m.raft.map(|a| a.to_string()),
                "api": m.api,
                "role": match m.role {
                    MemberRole::Voter => "voter",
                    MemberRole::Learner => "learner",
                },
                "match_index": m.match_index,
                "lag": m.lag,
                "reachable": m.reachable,
            })
        })
        .collect();
    Ok(Json(Value::Array(list)))
}

/// `POST /v1/members {"id": 4, "raft": "host:port", "api": "host:port"}` adds a learner;
/// `200 {"index"}` once the change is committed.
#[utoipa::path(post, operation_id = "add_member", path = "/v1/members", tag = "members", request_body = crate::openapi::AddMemberRequest,
    responses((status = 200, description = "Added as a learner", body = crate::openapi::Changed), (status = 400, description = "Malformed body or parameter", body = crate::openapi::ErrorBody), (status = 409, description = "Another change is in progress", body = crate::openapi::ErrorBody), (status = 307, description = "Not the leader: sent to it (`Location`)", body = crate::openapi::ErrorBody), (status = 503, description = "No leader known, or the write timed out (`Retry-After`)", body = crate::openapi::ErrorBody)))]
pub(crate) async fn add(
    State(st): State<AppState>,
    OriginalUri(uri): OriginalUri,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    let req: AddBody = parse_json(&body)?;
    let raft = req.raft.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "raft: {:?} is not an address of the form ip:port",
            req.raft
        ))
    })?;
    let peer = Peer { raft, api: req.api };
    let index = on_leader(&st, &uri, st.node.add_learner(req.id, peer)).await?;
    Ok(Json(json!({ "index": index })))
}

/// `POST /v1/members/{id}/promote` makes a learner a voter.
#[utoipa::path(post, operation_id = "promote_member", path = "/v1/members/{id}/promote", tag = "members", params(("id" = u64, Path, description = "The learner")),
    responses((status = 200, description = "Now a voter", body = crate::openapi::Changed), (status = 400, description = "Malformed body or parameter", body = crate::openapi::ErrorBody), (status = 409, description = "Another change is in progress", body = crate::openapi::ErrorBody), (status = 307, description = "Not the leader: sent to it (`Location`)", body = crate::openapi::ErrorBody), (status = 503, description = "No leader known, or the write timed out (`Retry-After`)", body = crate::openapi::ErrorBody)))]
pub(crate) async fn promote(
    State(st): State<AppState>,
    OriginalUri(uri): OriginalUri,
    Path(id): Path<u64>,
) -> Result<Json<Value>, ApiError> {
    let index = on_leader(&st, &uri, st.node.promote(id)).await?;
    Ok(Json(json!({ "index": index })))
}

/// `DELETE /v1/members/{id}` removes a member, the leader included.
#[utoipa::path(delete, operation_id = "remove_member", path = "/v1/members/{id}", tag = "members", params(("id" = u64, Path, description = "The member")),
    responses((status = 200, description = "Removed", body = crate::openapi::Changed), (status = 400, description = "Malformed body or parameter", body = crate::openapi::ErrorBody), (status = 409, description = "Another change is in progress", body = crate::openapi::ErrorBody), (status = 307, description = "Not the leader: sent to it (`Location`)", body = crate::openapi::ErrorBody), (status = 503, description = "No leader known, or the write timed out (`Retry-After`)", body = crate::openapi::ErrorBody)))]
pub(crate) async fn remove(
    State(st): State<AppState>,
    OriginalUri(uri): OriginalUri,
    Path(id): Path<u64>,
) -> Result<Json<Value>, ApiError> {
    let index = on_leader(&st, &uri, st.node.remove_member(id)).await?;
    Ok(Json(json!({ "index": index })))
}

/// `POST /v1/leader/transfer` with `{"to": 2}`, or without a body for the most caught-up
/// voter → `200 {"leader"}` once it leads.
#[utoipa::path(post, operation_id = "transfer_leader", path = "/v1/leader/transfer", tag = "members",
    request_body(content = Option<crate::openapi::TransferRequest>, description = "The target; none: the most caught-up voter"),
    responses((status = 200, description = "The target leads", body = crate::openapi::Transferred), (status = 400, description = "Malformed body or parameter", body = crate::openapi::ErrorBody), (status = 409, description = "No other voter", body = crate::openapi::ErrorBody), (status = 307, description = "Not the leader: sent to it (`Location`)", body = crate::openapi::ErrorBody), (status = 503, description = "No leader known, or the write timed out (`Retry-After`)", body = crate::openapi::ErrorBody)))]
pub(crate) async fn transfer(
    State(st): State<AppState>,
    OriginalUri(uri): OriginalUri,
    Body(body): Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let to = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(parse_json::<TransferBody>(&body)?.to)
    };
    let leader = on_leader(&st, &uri, st.node.transfer_leadership(to)).await?;
    Ok((StatusCode::OK, Json(json!({ "leader": leader }))))
}
