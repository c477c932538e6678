//! # raft-http
//!
//! The HTTP front end of one Raft node (axum on hyper):
//!
//! - the original httpraft API, byte-compatible: `POST /request`, `GET /log?index=n`, and its
//!   key-value companion `PUT /`, `GET /?key=k`;
//! - a versioned API: `POST|GET /v1/log`, `PUT|GET|DELETE /v1/kv/{key}`, `GET /v1/status`;
//! - operations: `GET /healthz`, `GET /readyz`, `GET /metrics` (Prometheus text).
//!
//! Errors are JSON `{"error": {"code", "message", "leader"}}`; bodies are limited
//! ([`HttpConfig::max_body_bytes`], 413 past it); wrong methods get 405 and unknown paths
//! 404, both as JSON errors. See `docs/http-api.md` for every endpoint.

#![forbid(unsafe_code)]

mod compat;
mod entry_json;
mod error;
mod metrics;
mod ops;
mod state;
mod v1;

use std::future::Future;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;

pub use entry_json::entry_to_json;
pub use error::ApiError;
pub use metrics::Metrics;
pub use state::{AppState, HttpConfig};

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

/// The router serving one node.
pub fn router(state: AppState) -> Router {
    let limit = state.cfg.max_body_bytes;
    Router::new()
        .route("/request", post(compat::post_request))
        .route("/log", get(compat::get_log))
        .route("/", get(compat::get_kv).put(compat::put_kv))
        .route("/v1/log", post(v1::append).get(v1::read_log))
        .route("/v1/kv/{key}", get(v1::get).put(v1::put).delete(v1::delete))
        .route("/v1/status", get(ops::status))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` completes, then finishes the requests in
/// flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
