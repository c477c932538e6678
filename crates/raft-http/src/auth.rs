//! Who may do what through the HTTP API: bearer tokens with roles, and members' TLS
//! certificates.
//!
//! - **Roles**: `read` (every read and stream), `write` (also appends and key-value writes),
//!   `admin` (also membership, leadership transfers and backups). Each route needs one
//!   ([`required_role`]); `/healthz`, `/readyz`, the dashboard's page and the OpenAPI
//!   description need none, and `/metrics` needs `read` unless it is made public.
//! - **Tokens** are random strings given to clients; the token file keeps only their
//!   SHA-256 ([`TokenFile`]), so reading it does not reveal them. A request carries one as
//!   `Authorization: Bearer <token>`; a `GET` may carry it as the cookie `raft_token`
//!   instead, which is how the dashboard's browser stream sends it (never for writes, so a
//!   page elsewhere cannot make a browser write with its cookie).
//! - **Members**: a request over TLS whose client certificate names a member of this
//!   cluster ([`raft_net::tls::certificate_node`]) is a member's (the dashboard's sampler, a
//!   joining node): it may do anything, as a member can already do anything to the cluster
//!   through its Raft port.
//!
//! Without a token file, nothing is checked (and the node says so when it starts).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::state::AppState;

/// What a token (or a member) may do. Each role includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads and streams.
    Read,
    /// Also appends and key-value writes.
    Write,
    /// Also membership changes, leadership transfers and backups.
    Admin,
}

impl Role {
    /// The role's name, as in the token file.
    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "read" => Ok(Role::Read),
            "write" => Ok(Role::Write),
            "admin" => Ok(Role::Admin),
            other => Err(format!("a role is read, write or admin, not {other:?}")),
        }
    }
}

/// One entry of the token file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Who holds it (shown in logs and errors, never secret).
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// SHA-256 of the token, lowercase hexadecimal.
    pub sha256: String,
}

/// The token file: `{"tokens": [{"name", "role", "sha256"}]}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenFile {
    /// The tokens.
    pub tokens: Vec<TokenEntry>,
}

/// SHA-256 of `token`, lowercase hexadecimal.
pub fn token_hash(token: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A new random token: `rt_` and 43 characters (256 bits).
pub fn new_token() -> Result<String, String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "the system's random number generator failed".to_string())?;
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::from("rt_");
    // base64url without padding, 6 bits at a time.
    let mut acc = 0u32;
    let mut bits = 0u32;
    for b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(char::from(ALPHABET[((acc >> bits) & 63) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((acc << (6 - bits)) & 63) as usize]));
    }
    Ok(out)
}

impl TokenFile {
    /// Reads and checks a token file.
    pub fn load(path: &Path) -> Result<TokenFile, String> {
        let text = std::fs::read(path)
            .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
        let file: TokenFile = serde_json::from_slice(&text)
            .map_err(|e| format!("the token file {} is not valid: {e}", path.display()))?;
        for t in &file.tokens {
            let ok = t.sha256.len() == 64
                && t.sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !ok {
                return Err(format!(
                    "the token file {}: the sha256 of {:?} is not 64 lowercase hexadecimal digits",
                    path.display(),
                    t.name
                ));
            }
        }
        Ok(file)
    }
}

/// The tokens in force, by hash.
#[derive(Debug, Default)]
struct Tokens {
    by_hash: HashMap<String, (String, Role)>,
}

impl Tokens {
    fn from_file(f: &TokenFile) -> Tokens {
        Tokens {
            by_hash: f
                .tokens
                .iter()
                .map(|t| (t.sha256.clone(), (t.name.clone(), t.role)))
                .collect(),
        }
    }
}

/// The API's access rules: off (no token file), or the tokens of a file, reloadable.
#[derive(Debug)]
pub struct Access {
    file: Option<PathBuf>,
    tokens: RwLock<Arc<Tokens>>,
    metrics_public: bool,
}

impl Access {
    /// Nothing checked: every request may do everything.
    pub fn open() -> Access {
        Access {
            file: None,
            tokens: RwLock::default(),
            metrics_public: true,
        }
    }

    /// The tokens of `file`; `/metrics` needs a `read` token unless `metrics_public`.
    /// (Members are recognised by the certificates the HTTPS server names in each request.)
    pub fn with_tokens(file: PathBuf, metrics_public: bool) -> Result<Access, String> {
        let tokens = Tokens::from_file(&TokenFile::load(&file)?);
        Ok(Access {
            file: Some(file),
            tokens: RwLock::new(Arc::new(tokens)),
            metrics_public,
        })
    }

    /// Whether requests are checked at all.
    pub fn enabled(&self) -> bool {
        self.file.is_some()
    }

    /// Reads the token file again; requests from now on are checked against it. On error
    /// the tokens in force are kept.
    pub fn reload(&self) -> Result<usize, String> {
        let Some(file) = &self.file else {
            return Ok(0);
        };
        let tokens = Tokens::from_file(&TokenFile::load(file)?);
        let n = tokens.by_hash.len();
        match self.tokens.write() {
            Ok(mut t) => *t = Arc::new(tokens),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(tokens),
        }
        Ok(n)
    }

    fn lookup(&self, token: &str) -> Option<(String, Role)> {
        let tokens = match self.tokens.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        tokens.by_hash.get(&token_hash(token)).cloned()
    }
}

/// The member of this cluster a TLS client certificate names, put in each request's
/// extensions by the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The node the certificate names, if it names a member of this cluster.
    pub member: Option<u64>,
}

/// The role a route needs; `None`: open to anyone.
pub fn required_role(method: &Method, route: &str, metrics_public: bool) -> Option<Role> {
    match (method, route) {
        (_, "/healthz" | "/readyz" | "/ui" | "/ui/" | "/ui/app.js" | "/ui/style.css") => None,
        (_, "/v1/openapi.json") => None,
        (_, "/metrics") => (!metrics_public).then_some(Role::Read),
        (&Method::POST, "/v1/members" | "/v1/members/{id}/promote" | "/v1/leader/transfer") => {
            Some(Role::Admin)
        }
        (&Method::DELETE, "/v1/members/{id}") => Some(Role::Admin),
        (_, "/v1/snapshot") => Some(Role::Admin),
        (&Method::GET | &Method::HEAD, _) => Some(Role::Read),
        _ => Some(Role::Write),
    }
}

/// The bearer token of a request: `Authorization: Bearer`, or for a `GET` the cookie
/// `raft_token`.
fn presented_token(req: &Request) -> Option<String> {
    if let Some(v) = req.headers().get(header::AUTHORIZATION) {
        let v = v.to_str().ok()?;
        let (scheme, token) = v.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_string());
    }
    if req.method() != Method::GET {
        return None;
    }
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("raft_token=").map(str::to_string))
}

fn unauthorized(need: Role) -> Response {
    let mut r = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        format!(
            "this needs a token with the {} role: send Authorization: Bearer <token> (see docs/security.md)",
            need.name()
        ),
    )
    .into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"httpraft\""),
    );
    r
}

/// Checks every request against the access rules before its handler runs.
pub(crate) async fn check(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let access = &st.access;
    if !access.enabled() {
        return next.run(req).await;
    }
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    // Unknown paths answer 404 whoever asks.
    let Some(route) = route else {
        return next.run(req).await;
    };
    let Some(need) = required_role(req.method(), &route, access.metrics_public) else {
        return next.run(req).await;
    };
    let member = req
        .extensions()
        .get::<ClientCertificate>()
        .and_then(|c| c.member);
    if member.is_some() {
        return next.run(req).await;
    }
    let Some(token) = presented_token(&req) else {
        return unauthorized(need);
    };
    match access.lookup(&token) {
        None => unauthorized(need),
        Some((_, role)) if role >= need => next.run(req).await,
        Some((name, role)) => ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "the token {name:?} has the {} role; this needs {}",
                role.name(),
                need.name()
            ),
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_needs_the_role_of_what_it_does() {
        let r = |m: Method, route: &str| required_role(&m, route, false);
        assert_eq!(r(Method::GET, "/healthz"), None);
        assert_eq!(r(Method::GET, "/ui"), None);
        assert_eq!(r(Method::GET, "/metrics"), Some(Role::Read));
        assert_eq!(required_role(&Method::GET, "/metrics", true), None);
        assert_eq!(r(Method::GET, "/v1/kv/{*key}"), Some(Role::Read));
        assert_eq!(r(Method::GET, "/v1/events"), Some(Role::Read));
        assert_eq!(r(Method::PUT, "/v1/kv/{*key}"), Some(Role::Write));
        assert_eq!(r(Method::DELETE, "/v1/kv/{*key}"), Some(Role::Write));
        assert_eq!(r(Method::POST, "/v1/log"), Some(Role::Write));
        assert_eq!(r(Method::POST, "/request"), Some(Role::Write));
        assert_eq!(r(Method::PUT, "/"), Some(Role::Write));
        assert_eq!(r(Method::GET, "/"), Some(Role::Read));
        assert_eq!(r(Method::POST, "/v1/members"), Some(Role::Admin));
        assert_eq!(r(Method::DELETE, "/v1/members/{id}"), Some(Role::Admin));
        assert_eq!(r(Method::POST, "/v1/leader/transfer"), Some(Role::Admin));
        assert_eq!(r(Method::GET, "/v1/snapshot"), Some(Role::Admin));
        assert_eq!(r(Method::GET, "/v1/members"), Some(Role::Read));
    }

    #[test]
    fn roles_include_the_ones_below() {
        assert!(Role::Admin > Role::Write && Role::Write > Role::Read);
        assert_eq!("write".parse::<Role>(), Ok(Role::Write));
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn tokens_are_random_and_only_their_hashes_are_kept() {
        let a = new_token().unwrap_or_default();
        let b = new_token().unwrap_or_default();
        assert_ne!(a, b);
        assert_eq!(a.len(), 3 + 43);
        assert_eq!(token_hash(&a).len(), 64);
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_token_file_with_a_bad_hash_is_refused_with_the_name() {
        let dir = std::env::temp_dir().join(format!("raft-http-auth-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let f = dir.join("tokens.json");
        let _ = std::fs::write(
            &f,
            r#"{"tokens": [{"name": "ci", "role": "write", "sha256": "xyz"}]}"#,
        );
        let err = TokenFile::load(&f).unwrap_err();
        assert!(err.contains("\"ci\""), "{err}");
        let _ = std::fs::write(
            &f,
            r#"{"tokens": [{"name": "ci", "role": "root", "sha256": ""}]}"#,
        );
        assert!(TokenFile::load(&f).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_cookie_carries_a_token_only_for_reads() {
        let get = Request::builder()
            .method(Method::GET)
            .header(header::COOKIE, "a=b; raft_token=rt_x")
            .body(axum::body::Body::empty())
            .unwrap_or_default();
        assert_eq!(presented_token(&get).as_deref(), Some("rt_x"));
        let put = Request::builder()
            .method(Method::PUT)
            .header(header::COOKIE, "raft_token=rt_x")
            .body(axum::body::Body::empty())
            .unwrap_or_default();
        assert_eq!(presented_token(&put), None);
        let bearer = Request::builder()
            .method(Method::PUT)
            .header(header::AUTHORIZATION, "Bearer rt_y")
            .body(axum::body::Body::empty())
            .unwrap_or_default();
        assert_eq!(presented_token(&bearer).as_deref(), Some("rt_y"));
    }
}
