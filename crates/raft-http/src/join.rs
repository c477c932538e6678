//! The joining side of `POST /v1/members`: a new node reads the cluster's members from any
//! member's API, then asks to be added as a learner (following the redirect to the leader).

use std::time::Duration;

/// A member as `GET /v1/members` lists it.
pub type JoinMember = raft_http_client::Member;

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

/// A client of the member serving `url`, trying once (the callers retry, and log each
/// try).
fn client(
    url: &str,
    base: &raft_http_client::ClientConfig,
) -> Result<raft_http_client::Client, JoinError> {
    let cfg = raft_http_client::ClientConfig {
        timeout: Duration::from_secs(10),
        retries: 0,
        ..base.clone()
    };
    raft_http_client::Client::with_config([url], cfg).map_err(|e| JoinError {
        message: e.to_string(),
        retry: false,
    })
}

/// Whether trying again may help after `e`.
fn retryable(e: &raft_http_client::Error) -> bool {
    use raft_http_client::Error as E;
    match e {
        // Unreachable, no answer, or an answer meaning "not now" (no leader, another change
        // under way, busy).
        E::Unavailable { .. } | E::Unknown { .. } => true,
        E::Api { status, code, .. } => {
            *status >= 500 || code == "change_in_progress" || code == "not_leader"
        }
        _ => false,
    }
}

/// What to add to an error the cluster answered: for a refusal of credentials, how a node
/// gets the right to join.
fn hint(e: &raft_http_client::Error) -> &'static str {
    match e {
        raft_http_client::Error::Api { status: 401 | 403, .. } => {
            " (a node's certificate does not let it join: give it an admin token with --join-token-file, or have an operator add it first with POST /v1/members and start it again)"
        }
        _ => "",
    }
}

/// The members listed by the member serving `url` (`http://host:port`, or `host:port`),
/// reached with the TLS settings and token of `base`.
pub async fn fetch_members(
    url: &str,
    base: &raft_http_client::ClientConfig,
) -> Result<Vec<JoinMember>, JoinError> {
    client(url, base)?.members().await.map_err(|e| JoinError {
        message: format!("cannot list the members through {url}: {e}{}", hint(&e)),
        retry: retryable(&e),
    })
}

/// Asks the cluster, through the member serving `url`, to add node `id` as a learner.
/// Returns the index of the configuration entry that added it. A node that is already a
/// member is reported as an error that says so, not to be retried.
pub async fn ask_to_join(
    url: &str,
    base: &raft_http_client::ClientConfig,
    id: u64,
    raft: &str,
    api: Option<&str>,
) -> Result<u64, JoinError> {
    client(url, base)?
        .add_learner(id, raft, api)
        .await
        .map_err(|e| JoinError {
            message: format!("asking {url} to add node {id}: {e}{}", hint(&e)),
            retry: retryable(&e),
        })
}
