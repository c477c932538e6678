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
//! - **Members**: a request over TLS whose client certificate names a node
//!   ([`raft_net::tls::certificate_node`]) that is a voter or a learner of the configuration
//!   in effect is a member's, and gets what members need from each other's API: the `read`
//!   role (the dashboard's sampler reads the others' status; a node restarted with `--join`
//!   lists the members). Being a node grants nothing more: writes, membership changes and
//!   backups need a token of their role, and a certificate naming a node that was removed,
//!   or never added, grants nothing at all.
//!
//! Each request that passes carries its [`Credential`], which streams check again whenever
//! the token file is reloaded or the membership changes (see [`crate::streams`]).
//!
//! Without a token file, nothing is checked (and the node says so when it starts).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use raft_client::{KvResponse, RaftNode};

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
    /// Bumped at every successful reload: open streams check their credential again.
    generation: tokio::sync::watch::Sender<u64>,
    /// Why the latest reload failed, while the tokens in force are older than the file.
    reload_error: Mutex<Option<String>>,
    /// Reloads that failed since the node started.
    reload_failures: AtomicU64,
}

impl Access {
    /// Nothing checked: every request may do everything.
    pub fn open() -> Access {
        Access {
            file: None,
            tokens: RwLock::default(),
            metrics_public: true,
            generation: tokio::sync::watch::channel(0).0,
            reload_error: Mutex::new(None),
            reload_failures: AtomicU64::new(0),
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
            generation: tokio::sync::watch::channel(0).0,
            reload_error: Mutex::new(None),
            reload_failures: AtomicU64::new(0),
        })
    }

    /// Whether requests are checked at all.
    pub fn enabled(&self) -> bool {
        self.file.is_some()
    }

    /// Reads the token file again; requests from now on are checked against it, and open
    /// streams whose token is gone (or lost the role they need) end. On error the tokens in
    /// force are kept, and the failure is recorded ([`Access::reload_error`]) until a reload
    /// succeeds.
    pub fn reload(&self) -> Result<usize, String> {
        let Some(file) = &self.file else {
            return Ok(0);
        };
        let tokens = match TokenFile::load(file) {
            Ok(f) => Tokens::from_file(&f),
            Err(e) => {
                self.reload_failures.fetch_add(1, Ordering::Relaxed);
                *lock(&self.reload_error) = Some(e.clone());
                return Err(e);
            }
        };
        let n = tokens.by_hash.len();
        match self.tokens.write() {
            Ok(mut t) => *t = Arc::new(tokens),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(tokens),
        }
        *lock(&self.reload_error) = None;
        self.generation.send_modify(|g| *g = g.wrapping_add(1));
        Ok(n)
    }

    /// Why the latest reload of the token file failed, while it has not succeeded since:
    /// the tokens in force are then older than the file (a token removed from it still
    /// works).
    pub fn reload_error(&self) -> Option<String> {
        lock(&self.reload_error).clone()
    }

    /// Reloads of the token file that failed since the node started.
    pub fn reload_failures(&self) -> u64 {
        self.reload_failures.load(Ordering::Relaxed)
    }

    /// A receiver that sees every successful reload.
    pub(crate) fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

    fn current(&self) -> Arc<Tokens> {
        match self.tokens.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The name and role of `token`, if it is one of the token file's.
    pub(crate) fn lookup_token(&self, token: &str) -> Option<(String, Role)> {
        self.lookup_hash(&token_hash(token))
    }

    /// The name and role of the token whose SHA-256 is `hash`.
    fn lookup_hash(&self, hash: &str) -> Option<(String, Role)> {
        self.current().by_hash.get(hash).cloned()
    }

    /// What `cred` grants now, after the reloads and membership changes since it was
    /// checked: `None` once it grants nothing.
    pub(crate) fn grants_now(
        &self,
        cred: &Credential,
        node: &RaftNode<KvResponse>,
    ) -> Option<Role> {
        match &cred.holder {
            Holder::Anyone => Some(Role::Admin),
            Holder::Token { hash, .. } => self.lookup_hash(hash).map(|(_, role)| role),
            Holder::Member(id) => node.is_member(*id).then_some(MEMBER_ROLE),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// What a member's certificate grants on another member's API: what the members need from
/// each other (the dashboard's sampler reads their status; a node restarted with `--join`
/// lists the members).
pub const MEMBER_ROLE: Role = Role::Read;

/// Who presented the credential of a request.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Holder {
    /// Nobody in particular: the API is open (no token file).
    Anyone,
    /// The holder of a token of the token file.
    Token {
        /// Its name in the token file.
        name: String,
        /// Its SHA-256, to look it up again after a reload.
        hash: String,
    },
    /// A member, by its certificate.
    Member(u64),
}

/// The credential a request was let in with, and what it granted then. Put in the request's
/// extensions by the access check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Credential {
    /// Who.
    pub(crate) holder: Holder,
    /// What it granted.
    pub(crate) role: Role,
}

impl Credential {
    /// Whether it may take the stream slots kept for administrators and members.
    pub(crate) fn privileged(&self) -> bool {
        match self.holder {
            Holder::Member(_) => true,
            Holder::Token { .. } => self.role == Role::Admin,
            Holder::Anyone => false,
        }
    }

    /// How it is named in logs and errors.
    pub(crate) fn describe(&self) -> String {
        match &self.holder {
            Holder::Anyone => "this client".to_string(),
            Holder::Token { name, .. } => format!("the token {name:?}"),
            Holder::Member(id) => format!("the certificate of member {id}"),
        }
    }
}

/// The node a TLS client certificate names, put in each request's extensions by the
/// server. Whether that node is a member is decided at each request, against the
/// configuration in effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The node of this cluster the certificate names, if it names one.
    pub node: Option<u64>,
}

/// The role a route needs; `None`: open to anyone.
pub fn required_role(method: &Method, route: &str, metrics_public: bool) -> Option<Role> {
    match (method, route) {
        (_, "/healthz" | "/readyz" | "/ui" | "/ui/" | "/ui/app.js" | "/ui/style.css") => None,
        // The sign-in checks the token it is given itself.
        (_, "/ui/session") => None,
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

fn unauthorized(need: Role, why: Option<String>) -> Response {
    let what = format!(
        "this needs a token with the {} role: send Authorization: Bearer <token> (see docs/security.md)",
        need.name()
    );
    let message = match why {
        Some(why) => format!("{why}; {what}"),
        None => what,
    };
    let mut r = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"httpraft\""),
    );
    r
}

/// What a request's token and client certificate grant together: the stronger of the two.
/// `Err` means 401, with the reason when there is more to say than "no credential".
fn credential_of(
    access: &Access,
    node: &RaftNode<KvResponse>,
    req: &Request,
) -> Result<Credential, Option<String>> {
    let mut granted = None;
    if let Some(token) = presented_token(req) {
        let hash = token_hash(&token);
        match access.lookup_hash(&hash) {
            Some((name, role)) => {
                granted = Some(Credential {
                    holder: Holder::Token { name, hash },
                    role,
                })
            }
            None => return Err(Some("the token is not known (revoked, or mistyped)".into())),
        }
    }
    let certified = req
        .extensions()
        .get::<ClientCertificate>()
        .and_then(|c| c.node);
    if let Some(id) = certified {
        if !node.is_member(id) {
            if granted.is_none() {
                return Err(Some(format!(
                    "the client certificate names node {id}, which is not a member of this cluster (a node's certificate grants reads to members only)"
                )));
            }
        } else if granted.as_ref().is_none_or(|c| c.role < MEMBER_ROLE) {
            granted = Some(Credential {
                holder: Holder::Member(id),
                role: MEMBER_ROLE,
            });
        }
    }
    granted.ok_or(None)
}

/// What `req`'s token or certificate grants, if anything (for a page that asks whether it
/// is signed in).
pub(crate) fn credential_for(st: &AppState, req: &Request) -> Option<Credential> {
    credential_of(&st.access, &st.node, req).ok()
}

/// Checks every request against the access rules before its handler runs, and puts the
/// [`Credential`] it was let in with in its extensions.
pub(crate) async fn check(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let access = &st.access;
    if !access.enabled() {
        req.extensions_mut().insert(Credential {
            holder: Holder::Anyone,
            role: Role::Admin,
        });
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
    let cred = match credential_of(access, &st.node, &req) {
        Ok(c) => c,
        Err(why) => return unauthorized(need, why),
    };
    if cred.role < need {
        let hint = match cred.holder {
            Holder::Member(_) => {
                " (what members need from each other's API); send a token for more"
            }
            _ => "",
        };
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "{} has the {} role{hint}; this needs {}",
                cred.describe(),
                cred.role.name(),
                need.name()
            ),
        )
        .into_response();
    }
    req.extensions_mut().insert(cred);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_needs_the_role_of_what_it_does() {
        let r = |m: Method, route: &str| required_role(&m, route, false);
        assert_eq!(r(Method::GET, "/healthz"), None);
        assert_eq!(r(Method::GET, "/ui"), None);
        assert_eq!(r(Method::POST, "/ui/session"), None);
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
