//! # raft-http
//!
//! The HTTP front end of one Raft node (axum on hyper):
//!
//! - the original httpraft API, byte-compatible: `POST /request`, `GET /log?index=n`, and its
//!   key-value companion `PUT /`, `GET /?key=k`;
//! - a versioned API: `POST|GET /v1/log`, `PUT|GET|DELETE /v1/kv/{key}` (with
//!   compare-and-swap), `GET /v1/kv?prefix=`, `GET /v1/status`, membership;
//! - streams of server-sent events: `GET /v1/log/stream` (committed entries) and
//!   `GET /v1/kv/watch` (puts and deletes under a prefix), resumable with `Last-Event-ID`;
//! - operations: `GET /healthz`, `GET /readyz`, `GET /metrics` (OpenMetrics text, through
//!   the `prometheus-client` crate);
//! - `GET /v1/openapi.json`: the OpenAPI description of all of the above;
//! - a live dashboard at `GET /ui`, drawn from the server-sent events of `GET /v1/events`
//!   (every member's state, replication, elections, snapshot transfers, write rate and
//!   latency), its assets embedded in the binary.
//!
//! Errors are JSON `{"error": {"code", "message", "leader"}}`; bodies are limited
//! ([`HttpConfig::max_body_bytes`], 413 past it); wrong methods get 405 and unknown paths
//! 404, both as JSON errors. See `docs/http-api.md` for every endpoint.

#![forbid(unsafe_code)]

mod auth;
mod compat;
mod cross_site;
mod entry_json;
mod error;
mod events;
mod exposition;
pub mod join;
mod members;
mod metrics;
mod openapi;
mod ops;
mod parse_errors;
mod process;
mod server;
mod sign_in;
mod state;
mod streams;
mod ui;
mod v1;
mod watch;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

pub use auth::{new_token, token_hash, Access, ClientCertificate, Role, TokenEntry, TokenFile};
pub use entry_json::entry_to_json;
pub use error::ApiError;
pub use metrics::Metrics;
pub use server::{serve, serve_with_tls, ServerCounts, ServerLimits, ServerStats};
pub use state::{AppState, HttpConfig};
pub use streams::ClientAddr;

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; see docs/http-api.md",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not accept that method",
    )
}

/// Answers 503 `request_timeout` when a request takes longer than
/// [`HttpConfig::request_timeout`].
async fn request_timeout(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let limit = st.cfg.request_timeout;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            st.server
                .request_timeouts
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut e = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "request_timeout",
                format!(
                    "the request did not complete within {} ms (--http-request-timeout-ms); a write may or may not have been applied: read before retrying",
                    limit.as_millis()
                ),
            );
            e.retry_after = Some(1);
            e.into_response()
        }
    }
}

/// Counts every answered request in `raft_http_requests_total` and times it in
/// `raft_http_request_seconds`, by the route pattern that matched (not the path, so that
/// keys do not become series).
async fn track_request(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().clone();
    let t0 = std::time::Instant::now();
    let resp = next.run(req).await;
    st.metrics
        .record_request(&route, &method, resp.status().as_u16(), t0.elapsed());
    resp
}

/// The router serving one node.
pub fn router(state: AppState) -> Router {
    let limit = state.cfg.max_body_bytes;
    Router::new()
        .route("/request", post(compat::post_request))
        .route("/log", get(compat::get_log))
        .route("/", get(compat::get_kv).put(compat::put_kv))
        .route("/v1/log", post(v1::append).get(v1::read_log))
        .route("/v1/log/stream", get(watch::log_stream))
        .route("/v1/kv", get(v1::list))
        .route(
            "/v1/kv/watch",
            get(watch::kv_watch).put(v1::put).delete(v1::delete),
        )
        .route(
            "/v1/kv/{*key}",
            get(v1::get).put(v1::put).delete(v1::delete),
        )
        .route("/v1/members", get(members::list).post(members::add))
        .route("/v1/members/{id}", axum::routing::delete(members::remove))
        .route("/v1/members/{id}/promote", post(members::promote))
        .route("/v1/leader/transfer", post(members::transfer))
        .route("/v1/status", get(ops::status))
        .route("/v1/snapshot", get(ops::snapshot))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/v1/events", get(events::events))
        .route("/v1/openapi.json", get(openapi::openapi_json))
        .route("/ui", get(ui::index))
        .route("/ui/", get(ui::index_slash))
        .route("/ui/app.js", get(ui::script))
        .route("/ui/style.css", get(ui::style))
        .route(
            "/ui/session",
            get(sign_in::session)
                .post(sign_in::sign_in)
                .delete(sign_in::sign_out),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::check,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            cross_site::check,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            request_timeout,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            track_request,
        ))
        .with_state(state)
}
