//! Requests a page on another site makes a browser send are refused: a page elsewhere must
//! not write to the log, change the membership or sign in for a user whose browser can
//! reach a node (an open cluster, a member's certificate, the dashboard's cookie).
//!
//! For every request that changes something (any method but `GET`, `HEAD` and `OPTIONS`):
//!
//! - an `Origin` header must name this node itself (the scheme it serves and the host and
//!   port the request was sent to) or an origin of [`HttpConfig::allowed_origins`];
//!   otherwise 403 `cross_origin`. Browsers send `Origin` with every such request;
//!   command-line clients and libraries send none.
//! - `Sec-Fetch-Site: cross-site` or `same-site` (a browser's word that another site made
//!   the request) is refused the same way, unless the `Origin` is allowed.
//! - a body must be JSON: `Content-Type: application/json` (or `…+json`). A request with no
//!   `Content-Type`, or with `application/x-www-form-urlencoded` (what `curl -d` sends, and
//!   what clients of the original httpraft may send), is taken as JSON when no browser sent
//!   it (no `Origin`, no `Sec-Fetch-*`). Any other type (`text/plain`, `multipart/form-data`:
//!   what an HTML form can send without asking) gets 415 `unsupported_media_type`.
//!
//! [`HttpConfig::allowed_origins`]: crate::HttpConfig::allowed_origins

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::AppState;

/// Whether a request with `method` changes something (and so must come from this site).
fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether a browser sent the request: it says so with `Origin` or `Sec-Fetch-*` headers.
fn from_browser(headers: &HeaderMap) -> bool {
    headers.contains_key(header::ORIGIN)
        || headers.keys().any(|k| k.as_str().starts_with("sec-fetch-"))
}

/// The origin (`scheme://host:port`) a request was sent to, as a browser would write it.
fn own_origin(req: &Request, scheme: &str) -> Option<String> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))?;
    Some(format!("{scheme}://{}", host.to_ascii_lowercase()))
}

/// `origin` without a default port (`:80` for http, `:443` for https), lowercased, as
/// browsers send it.
fn normalized(origin: &str) -> String {
    let o = origin.trim().to_ascii_lowercase();
    for (scheme, port) in [("http://", ":80"), ("https://", ":443")] {
        if o.starts_with(scheme) {
            if let Some(stripped) = o.strip_suffix(port) {
                return stripped.to_string();
            }
        }
    }
    o
}

/// Why a state-changing request is refused as cross-site, if it is.
fn cross_site(req: &Request, st: &AppState) -> Option<String> {
    let headers = req.headers();
    let allowed = |o: &str| {
        let o = normalized(o);
        own_origin(req, st.scheme()).is_some_and(|own| normalized(&own) == o)
            || st.cfg.allowed_origins.iter().any(|a| normalized(a) == o)
    };
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("(not text)");
        if !allowed(origin) {
            return Some(format!(
                "a request from the page of {origin:?} may not change anything on this node; only its own pages and the origins of --api-allowed-origins may"
            ));
        }
        return None;
    }
    match headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
    {
        Some(site @ ("cross-site" | "same-site")) => Some(format!(
            "the browser says another site made this request (Sec-Fetch-Site: {site}) and it names no allowed Origin"
        )),
        _ => None,
    }
}

/// Whether the request's body (if it has one) is of a type this API reads.
fn acceptable_body(req: &Request) -> Result<(), String> {
    let headers = req.headers();
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
    let essence = ct.split(';').next().unwrap_or("").trim().to_string();
    if essence == "application/json" || essence.ends_with("+json") {
        return Ok(());
    }
    if essence == "application/x-www-form-urlencoded" && !from_browser(headers) {
        return Ok(());
    }
    Err(format!(
        "the body must be JSON: send Content-Type: application/json (got {essence:?})"
    ))
}

/// Refuses cross-site requests that would change something, and bodies that are not JSON.
pub(crate) async fn check(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if !changes_state(req.method()) {
        return next.run(req).await;
    }
    if let Some(why) = cross_site(&req, &st) {
        return ApiError::new(StatusCode::FORBIDDEN, "cross_origin", why).into_response();
    }
    if let Err(why) = acceptable_body(&req) {
        return ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            why,
        )
        .into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: Method, headers: &[(&str, &str)]) -> Request {
        let mut b = Request::builder()
            .method(method)
            .uri("/v1/log")
            .header("host", "10.0.0.1:9000");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(axum::body::Body::empty()).unwrap_or_default()
    }

    #[test]
    fn reads_are_never_checked_and_writes_always_are() {
        assert!(!changes_state(&Method::GET));
        assert!(!changes_state(&Method::HEAD));
        assert!(changes_state(&Method::POST));
        assert!(changes_state(&Method::PUT));
        assert!(changes_state(&Method::DELETE));
        assert!(changes_state(&Method::PATCH));
    }

    #[test]
    fn origins_compare_without_default_ports_or_case() {
        assert_eq!(
            normalized("HTTPS://Node.example:443"),
            "https://node.example"
        );
        assert_eq!(normalized("http://a:80"), "http://a");
        assert_eq!(normalized("http://a:8080"), "http://a:8080");
        assert_ne!(normalized("https://a:80"), "https://a");
    }

    #[test]
    fn only_json_bodies_unless_a_command_line_client_sends_a_form() {
        let json = req(
            Method::POST,
            &[("content-type", "application/json; charset=utf-8")],
        );
        assert!(acceptable_body(&json).is_ok());
        let problem = req(
            Method::POST,
            &[("content-type", "application/problem+json")],
        );
        assert!(acceptable_body(&problem).is_ok());
        assert!(acceptable_body(&req(Method::POST, &[])).is_ok());
        let curl = req(
            Method::POST,
            &[("content-type", "application/x-www-form-urlencoded")],
        );
        assert!(acceptable_body(&curl).is_ok());
        let form = req(
            Method::POST,
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("origin", "http://10.0.0.1:9000"),
            ],
        );
        assert!(acceptable_body(&form).is_err());
        let fetched = req(
            Method::POST,
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("sec-fetch-mode", "no-cors"),
            ],
        );
        assert!(acceptable_body(&fetched).is_err());
        for t in ["text/plain", "multipart/form-data; boundary=x"] {
            let err = acceptable_body(&req(Method::POST, &[("content-type", t)])).unwrap_err();
            assert!(err.contains("application/json"), "{err}");
        }
    }
}
