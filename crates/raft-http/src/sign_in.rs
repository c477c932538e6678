//! The dashboard's sign-in: a token entered once in the page becomes a cookie the browser
//! keeps and JavaScript cannot read, sent back only to this site.
//!
//! - `GET /ui/session` → `{"tokens", "signed_in", "name", "role"}`: whether the API checks
//!   tokens, and what the browser's cookie (or `Authorization` header) grants.
//! - `POST /ui/session {"token"}` → checks the token; sets the cookie `raft_token`
//!   (`HttpOnly`, `SameSite=Strict`, `Path=/`, `Secure` over HTTPS, for
//!   [`COOKIE_MAX_AGE_SECS`]); `401` for an unknown token. Like every request that changes
//!   something, it must come from this node's own page ([`crate::cross_site`]).
//! - `DELETE /ui/session` → forgets the cookie.
//!
//! The cookie works for `GET` requests only ([`crate::auth`]): it lets the page read and
//! stream, and a page elsewhere cannot make the browser write with it.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use crate::auth::Holder;
use crate::error::ApiError;
use crate::state::{parse_json, AppState, Body};

/// How long the browser keeps the cookie: 12 hours.
pub const COOKIE_MAX_AGE_SECS: u64 = 12 * 3600;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    token: String,
}

/// Whether `token` can travel in a cookie unchanged (tokens from `httpraft tokens add`
/// always can).
fn cookie_safe(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 4096
        && token
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b',' | b';' | b'\\'))
}

fn cookie(st: &AppState, value: &str, max_age: u64) -> Result<HeaderValue, ApiError> {
    let secure = if st.https { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "raft_token={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .map_err(|_| ApiError::bad_request("the token cannot be kept in a cookie"))
}

/// `GET /ui/session` → what the browser's credential grants.
#[utoipa::path(get, operation_id = "dashboard_session", path = "/ui/session", tag = "dashboard",
    responses((status = 200, description = "Whether tokens are checked, and what the browser's cookie grants", body = crate::openapi::Session)))]
pub(crate) async fn session(State(st): State<AppState>, req: Request) -> Json<serde_json::Value> {
    if !st.access.enabled() {
        return Json(json!({"tokens": false, "signed_in": true, "name": null, "role": "admin"}));
    }
    match crate::auth::credential_for(&st, &req) {
        Some(c) => {
            let name = match &c.holder {
                Holder::Token { name, .. } => Some(name.clone()),
                Holder::Member(id) => Some(format!("node {id}")),
                Holder::Anyone => None,
            };
            Json(json!({"tokens": true, "signed_in": true, "name": name, "role": c.role.name()}))
        }
        None => Json(json!({"tokens": true, "signed_in": false, "name": null, "role": null})),
    }
}

/// `POST /ui/session {"token"}` → signs the browser in with a cookie.
#[utoipa::path(post, operation_id = "dashboard_sign_in", path = "/ui/session", tag = "dashboard",
    request_body = crate::openapi::SignInRequest,
    responses((status = 200, description = "Signed in: the cookie is set", body = crate::openapi::Session),
        (status = 400, description = "Malformed body", body = crate::openapi::ErrorBody),
        (status = 401, description = "Unknown token", body = crate::openapi::ErrorBody)))]
pub(crate) async fn sign_in(
    State(st): State<AppState>,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let req: SignIn = parse_json(&body)?;
    if !cookie_safe(&req.token) {
        return Err(ApiError::bad_request(
            "a token is printable text without quotes, commas, semicolons or backslashes",
        ));
    }
    let Some((name, role)) = st.access.lookup_token(&req.token) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the token is not known (revoked, or mistyped)",
        ));
    };
    let mut r = Json(json!({"tokens": st.access.enabled(), "signed_in": true, "name": name, "role": role.name()}))
        .into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        cookie(&st, &req.token, COOKIE_MAX_AGE_SECS)?,
    );
    Ok(r)
}

/// `DELETE /ui/session` → signs the browser out.
#[utoipa::path(delete, operation_id = "dashboard_sign_out", path = "/ui/session", tag = "dashboard",
    responses((status = 200, description = "Signed out: the cookie is cleared", body = crate::openapi::Session)))]
pub(crate) async fn sign_out(State(st): State<AppState>) -> Result<Response, ApiError> {
    let mut r = Json(
        json!({"tokens": st.access.enabled(), "signed_in": false, "name": null, "role": null}),
    )
    .into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, cookie(&st, "", 0)?);
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tokens_a_cookie_carries_unchanged_are_taken() {
        assert!(cookie_safe("rt_AbC-_09"));
        for bad in ["", "a b", "a;b", "a,b", "a\"b", "a\\b", "é"] {
            assert!(!cookie_safe(bad), "{bad:?}");
        }
        assert!(!cookie_safe(&"x".repeat(4097)));
    }
}
