//! JSON errors: `{"error": {"code": ..., "message": ...}}` with a fitting status code, and
//! `"leader"` (the leader's API address) only on errors about leadership, when it is known.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// An error answered to an HTTP client.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable, machine-readable code.
    pub code: &'static str,
    /// What happened and what to do.
    pub message: String,
    /// The leader's API address: set only on errors about leadership.
    pub leader: Option<String>,
    /// Seconds after which a retry makes sense (sets `Retry-After`).
    pub retry_after: Option<u32>,
    /// Where to send the request instead (sets `Location`; used with 307).
    pub location: Option<String>,
    /// One more field of the error object, for errors that carry data (e.g. `current` on
    /// `precondition_failed`).
    pub detail: Option<Box<(&'static str, serde_json::Value)>>,
}

impl ApiError {
    /// An error with a status, a code and a message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            leader: None,
            retry_after: None,
            location: None,
            detail: None,
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 500: the node could not do what it should have.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// 503 with `Retry-After`: no leader is known right now.
    pub fn no_leader() -> Self {
        Self::no_leader_because("no leader is known right now (an election is under way or a majority is unreachable); retry shortly")
    }

    /// 503 `no_leader` with `Retry-After` and a specific reason.
    pub fn no_leader_because(message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "no_leader", message);
        e.retry_after = Some(1);
        e
    }

    /// Maps a node error to an HTTP error. `leader` (the leader's API address) is shown only
    /// when the error is about leadership.
    pub fn from_node(e: raft_client::Error, leader: Option<String>) -> Self {
        use raft_client::Error as E;
        let mut out = match &e {
            E::NotLeader { .. } => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "not_leader", e.to_string())
            }
            E::LeadershipLost => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "leadership_lost",
                e.to_string(),
            ),
            E::Overwritten => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overwritten",
                e.to_string(),
            ),
            E::PartlyCommitted { .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "partly_committed",
                e.to_string(),
            ),
            E::Busy => Self::new(StatusCode::TOO_MANY_REQUESTS, "busy", e.to_string()),
            E::Membership(c) => {
                use raft_client::ConfChangeError as C;
                match c {
                    C::InProgress | C::LeaderNotReady | C::TransferInProgress { .. } => {
                        let mut e409 =
                            Self::new(StatusCode::CONFLICT, "change_in_progress", e.to_string());
                        e409.retry_after = Some(1);
                        e409
                    }
                    _ => Self::new(StatusCode::CONFLICT, "invalid_member", e.to_string()),
                }
            }
            E::Transfer(raft_client::TransferError::NoCandidate) => {
                Self::new(StatusCode::CONFLICT, "no_candidate", e.to_string())
            }
            E::Transfer(_) => Self::new(StatusCode::CONFLICT, "invalid_member", e.to_string()),
            E::TransferFailed { .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "transfer_failed",
                e.to_string(),
            ),
            E::TransferInProgress { .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "transfer_in_progress",
                e.to_string(),
            ),
            E::TooManyReads { limit } => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_reads",
                format!(
                    "{limit} log reads are already running (--max-concurrent-reads); retry shortly"
                ),
            ),
            E::TooLarge { .. } => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                e.to_string(),
            ),
            E::Shutdown => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                e.to_string(),
            ),
            E::Storage(_) => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage_failure",
                e.to_string(),
            ),
        };
        if out.status == StatusCode::SERVICE_UNAVAILABLE
            || out.status == StatusCode::TOO_MANY_REQUESTS
        {
            out.retry_after = Some(1);
        }
        if matches!(e, E::NotLeader { .. } | E::LeadershipLost | E::Overwritten) {
            out.leader = leader;
        }
        out
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({
            "code": self.code,
            "message": self.message,
        });
        if let Some(leader) = self.leader {
            error["leader"] = json!(leader);
        }
        if let Some((name, value)) = self.detail.map(|d| *d) {
            error[name] = value;
        }
        let body = json!({ "error": error });
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if let Some(loc) = self.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
            resp.headers_mut().insert(header::LOCATION, loc);
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_client::{ConfChangeError, Error, TransferError};

    #[test]
    fn membership_errors_say_conflict_for_a_change_under_way_and_bad_request_for_a_bad_member() {
        for e in [ConfChangeError::InProgress, ConfChangeError::LeaderNotReady] {
            let a = ApiError::from_node(Error::Membership(e), None);
            assert_eq!(
                (a.status, a.code),
                (StatusCode::CONFLICT, "change_in_progress")
            );
            assert_eq!(
                a.retry_after,
                Some(1),
                "a client retries once the change is done"
            );
        }
        for e in [
            ConfChangeError::AlreadyMember(3),
            ConfChangeError::UnknownMember(9),
            ConfChangeError::NotALearner(1),
            ConfChangeError::NoVoters,
        ] {
            let a = ApiError::from_node(Error::Membership(e), None);
            assert_eq!((a.status, a.code), (StatusCode::CONFLICT, "invalid_member"));
        }
        let a = ApiError::from_node(Error::Transfer(TransferError::NotAVoter(4)), None);
        assert_eq!((a.status, a.code), (StatusCode::CONFLICT, "invalid_member"));
        let a = ApiError::from_node(Error::Transfer(TransferError::NoCandidate), None);
        assert_eq!((a.status, a.code), (StatusCode::CONFLICT, "no_candidate"));
        let a = ApiError::from_node(Error::TransferFailed { to: 2 }, Some("x".into()));
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            a.leader, None,
            "not a leadership error the client must follow"
        );
        let a = ApiError::from_node(Error::TransferInProgress { to: 2 }, None);
        assert_eq!(
            (a.status, a.code),
            (StatusCode::SERVICE_UNAVAILABLE, "transfer_in_progress")
        );
        assert_eq!(a.retry_after, Some(1));
    }
}
