//! The joining side of `POST /v1/members`: a new node reads the cluster's members from any
//! member's API, then asks to be added as a learner (following the redirect to the leader).

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

/// A member as `GET /v1/members` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct JoinMember {
    /// Its id.
    pub id: u64,
    /// Its Raft address.
    pub raft: Option<String>,
    /// Its API address.
    pub api: Option<String>,
    /// `voter` or `learner`.
    pub role: String,
}

/// Why a join step failed, and whether trying again may help.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinError {
    /// What happened.
    pub message: String,
    /// Whether trying again may help (no leader yet, another change in progress, the member
    /// unreachable).
    pub retry: bool,
}

impl std::fmt::Display for JoinError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn client() -> Result<reqwest::Client, JoinError> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| JoinError {
            message: format!("cannot make an HTTP client: {e}"),
            retry: false,
        })
}

fn base(url: &str) -> String {
    let url = url.trim_end_matches('/');
    if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    }
}

/// The members listed by the member serving `url` (`http://host:port`, or `host:port`).
pub async fn fetch_members(url: &str) -> Result<Vec<JoinMember>, JoinError> {
    let target = format!("{}/v1/members", base(url));
    let r = client()?.get(&target).send().await.map_err(|e| JoinError {
        message: format!("cannot reach {target}: {e}"),
        retry: true,
    })?;
    let status = r.status();
    let body = r.text().await.unwrap_or_default();
    if !status.is_success() {
        return Err(JoinError {
            message: format!("{target} answered {status}: {body}"),
            retry: status.is_server_error(),
        });
    }
    serde_json::from_str(&body).map_err(|e| JoinError {
        message: format!("{target} did not list members: {e}"),
        retry: false,
    })
}

/// Asks the cluster, through the member serving `url`, to add node `id` as a learner.
/// Returns the index of the configuration entry that added it. A node that is already a
/// member is reported as an error that says so, not to be retried.
pub async fn ask_to_join(
    url: &str,
    id: u64,
    raft: &str,
    api: Option<&str>,
) -> Result<u64, JoinError> {
    let target = format!("{}/v1/members", base(url));
    let r = client()?
        .post(&target)
        .json(&json!({"id": id, "raft": raft, "api": api}))
        .send()
        .await
        .map_err(|e| JoinError {
            message: format!("cannot reach {target}: {e}"),
            retry: true,
        })?;
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        return v["index"].as_u64().ok_or_else(|| JoinError {
            message: format!("{target} answered {status} without an index: {v}"),
            retry: false,
        });
    }
    let code = v["error"]["code"].as_str().unwrap_or("");
    Err(JoinError {
        message: format!("{target} answered {status}: {v}"),
        retry: status.is_server_error() || status.as_u16() == 409 || code == "not_leader",
    })
}
