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
    id: crate::state::Whole,
    raft: String,
    api: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferBody {
    to: crate::state::Whole,
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
    if let Some(api) = &req.api {
        check_api_address(api).map_err(ApiError::bad_request)?;
    }
    let peer = Peer { raft, api: req.api };
    let index = on_leader(&st, &uri, st.node.add_learner(req.id.0, peer)).await?;
    Ok(Json(json!({ "index": index })))
}

/// Checks a member's API address: `host:port` (a DNS name, an IPv4 address, or an IPv6
/// address in brackets) and nothing else. Clients are sent there (`Location`, `leader`),
/// and the dashboard links to it: no scheme, path, space or control character may ride
/// along.
pub(crate) fn check_api_address(api: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "api: {api:?} is not an address of the form host:port ({why})"
        ))
    };
    if api.len() > 261 {
        return bad("too long");
    }
    let Some((host, port)) = api.rsplit_once(':') else {
        return bad("no port");
    };
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || port.len() > 5 {
        return bad("the port is not a number");
    }
    match port.parse::<u32>() {
        Ok(1..=65535) => {}
        _ => return bad("the port is not between 1 and 65535"),
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return match v6.parse::<std::net::Ipv6Addr>() {
            Ok(_) => Ok(()),
            Err(_) => bad("not an IPv6 address in brackets"),
        };
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) {
        return bad("the host is not a DNS name or an IP address");
    }
    Ok(())
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
        Some(parse_json::<TransferBody>(&body)?.to.0)
    };
    let leader = on_leader(&st, &uri, st.node.transfer_leadership(to)).await?;
    Ok((StatusCode::OK, Json(json!({ "leader": leader }))))
}

#[cfg(test)]
mod tests {
    use super::check_api_address;

    #[test]
    fn a_members_api_address_is_a_host_and_a_port_and_nothing_else() {
        for ok in [
            "10.0.0.4:9000",
            "db-3.example.com:443",
            "localhost:1",
            "[::1]:9000",
        ] {
            assert!(check_api_address(ok).is_ok(), "{ok}");
        }
        for bad in [
            "10.0.0.4",
            "http://10.0.0.4:9000",
            "10.0.0.4:9000/path",
            "a b:9000",
            "evil\r\nx:1",
            "x:0",
            "x:65536",
            "x:",
            ":9000",
            "[zz]:9000",
            "x\">:1",
            "-x:1",
        ] {
            assert!(check_api_address(bad).is_err(), "{bad}");
        }
    }
}
