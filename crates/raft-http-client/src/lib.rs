//! # raft-http-client
//!
//! A typed client for the HTTP API of `httpraft` (`docs/http-api.md`).
//!
//! - **Endpoints and the leader**: give it any members' API addresses. Writes and
//!   linearizable reads sent to a follower are redirected to the leader (307, followed with
//!   method and body), and the client remembers where the answer came from, so later
//!   requests go straight there.
//! - **Retries**: only what is safe. A request that surely did nothing (`no_leader`,
//!   `not_leader`, `busy`, `transfer_in_progress`, `change_in_progress`,
//!   `too_many_reads`, `too_many_watchers`, `overwritten`, a refused connection) is retried
//!   with backoff (honouring `Retry-After`) on the next endpoint, up to
//!   [`ClientConfig::retries`] times. A write whose answer was lost is never retried: it
//!   fails with [`Error::Unknown`], since it may have been applied.
//! - **Compare-and-swap**: [`Client::put_if`] with an [`Expect`]; a condition that did not
//!   hold is [`Error::PreconditionFailed`] with the key's current value and revision.
//! - **Streams**: [`Client::log_stream`] and [`Client::watch`] yield [`Event`]s and, when a
//!   connection drops or its node stops, reconnect to another endpoint and resume after the
//!   last event seen (`Last-Event-ID`), missing and repeating nothing.
//!
//! ```no_run
//! # async fn demo() -> Result<(), raft_http_client::Error> {
//! use raft_http_client::{Client, Expect};
//! let c = Client::new(["127.0.0.1:9000", "127.0.0.1:9001", "127.0.0.1:9002"])?;
//! let at = c.append("hello").await?;
//! c.put("app/db", "db1").await?;
//! c.put_if("app/db", "db2", Expect::value("db1")).await?;
//! let kv = c.get("app/db").await?;
//! # let _ = (at, kv); Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod error;
mod sse;
mod types;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::Stream;
use reqwest::Method;
use serde_json::{json, Value};

pub use error::Error;
pub use sse::{next_event, RawEvent};
pub use types::{
    Appended, AppendedBatch, Event, Kv, KvPage, LogEntry, LogPage, Member, OriginalAnswer,
    Versioned, Written,
};

/// How a read is served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Consistency {
    /// Confirmed by the leader with a majority (ReadIndex): sees every write acknowledged
    /// before it began.
    #[default]
    Linearizable,
    /// From the node asked, at once; possibly stale.
    Local,
}

impl Consistency {
    fn as_str(self) -> &'static str {
        match self {
            Consistency::Linearizable => "linearizable",
            Consistency::Local => "local",
        }
    }
}

/// What a conditional write requires; every condition given must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expect {
    /// `Some(Some(v))`: the key must hold `v`; `Some(None)`: it must be absent.
    pub value: Option<Option<String>>,
    /// The key's revision must be this (0: absent).
    pub revision: Option<u64>,
}

impl Expect {
    /// The key must hold `value`.
    pub fn value(value: impl Into<String>) -> Self {
        Expect {
            value: Some(Some(value.into())),
            revision: None,
        }
    }

    /// The key must be absent.
    pub fn absent() -> Self {
        Expect {
            value: Some(None),
            revision: None,
        }
    }

    /// The key's revision must be `revision`.
    pub fn revision(revision: u64) -> Self {
        Expect {
            value: None,
            revision: Some(revision),
        }
    }

    fn add_to(&self, body: &mut Value) {
        if let Some(v) = &self.value {
            body["expect"] = json!(v);
        }
        if let Some(r) = self.revision {
            body["if_revision"] = json!(r);
        }
    }
}

/// Settings of a [`Client`].
#[derive(Clone)]
pub struct ClientConfig {
    /// How long one request may take. Default 10 s.
    pub timeout: Duration,
    /// Tries after the first for a request that surely did nothing. Default 20.
    pub retries: u32,
    /// The first wait between tries (doubling up to [`max_backoff`](Self::max_backoff)).
    /// Default 50 ms.
    pub backoff: Duration,
    /// The longest wait between tries. Default 1 s.
    pub max_backoff: Duration,
    /// HTTPS: the CA certificate(s), PEM, that the nodes' certificates chain to (the
    /// cluster's `ca.pem`). With it, endpoints given as `host:port` are reached over
    /// `https://`. Default: none (plain HTTP).
    pub ca_pem: Option<Vec<u8>>,
    /// HTTPS: a client certificate and its private key, PEM, to present (for an API that
    /// asks for one; a member's certificate makes the client a member). Default: none.
    pub identity_pem: Option<Vec<u8>>,
    /// A bearer token sent with every request (for an API started with `--tokens`).
    /// Default: none.
    pub token: Option<String>,
    /// Speak HTTP/2: with prior knowledge over plain HTTP (h2c), by ALPN over HTTPS. One
    /// connection per endpoint then carries every concurrent request. Default: off
    /// (HTTP/1.1, a connection per concurrent request).
    pub http2: bool,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("backoff", &self.backoff)
            .field("max_backoff", &self.max_backoff)
            .field("https", &self.ca_pem.is_some())
            .field("client_certificate", &self.identity_pem.is_some())
            .field("http2", &self.http2)
            .field("token", &self.token.as_ref().map(|_| "(set)"))
            .finish()
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            timeout: Duration::from_secs(10),
            retries: 20,
            backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            ca_pem: None,
            identity_pem: None,
            token: None,
            http2: false,
        }
    }
}

impl ClientConfig {
    /// HTTPS with the CA in the PEM file `ca`, and, if given, the client certificate and
    /// key in the PEM files `identity`.
    pub fn with_tls_files(
        mut self,
        ca: &std::path::Path,
        identity: Option<(&std::path::Path, &std::path::Path)>,
    ) -> Result<ClientConfig, Error> {
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| Error::Config(format!("cannot read {}: {e}", p.display())))
        };
        self.ca_pem = Some(read(ca)?);
        if let Some((cert, key)) = identity {
            let mut pem = read(cert)?;
            pem.push(b'\n');
            pem.extend(read(key)?);
            self.identity_pem = Some(pem);
        }
        Ok(self)
    }

    /// A reqwest builder with the TLS settings and token of this configuration.
    fn builder(&self) -> Result<reqwest::ClientBuilder, Error> {
        let mut b = reqwest::Client::builder();
        b = if self.http2 {
            b.http2_prior_knowledge()
        } else {
            b.http1_only()
        };
        if let Some(ca) = &self.ca_pem {
            b = b.use_rustls_tls().tls_built_in_root_certs(false);
            let certs = reqwest::Certificate::from_pem_bundle(ca)
                .map_err(|e| Error::Config(format!("the CA certificate is not usable: {e}")))?;
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        if let Some(id) = &self.identity_pem {
            let identity = reqwest::Identity::from_pem(id).map_err(|e| {
                Error::Config(format!("the client certificate or key is not usable: {e}"))
            })?;
            b = b.identity(identity);
        }
        if let Some(token) = &self.token {
            let mut headers = reqwest::header::HeaderMap::new();
            let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| Error::Config("the token holds characters a header cannot".into()))?;
            v.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, v);
            b = b.default_headers(headers);
        }
        Ok(b)
    }
}

/// Redirects (to the leader) followed for one request at most.
const MAX_REDIRECTS: u32 = 5;

/// Error codes that mean the request did nothing and may be sent again.
const RETRYABLE: &[&str] = &[
    "no_leader",
    "not_leader",
    "busy",
    "overwritten",
    "transfer_in_progress",
    "change_in_progress",
    "too_many_reads",
    "too_many_watchers",
];

/// A client of one cluster. Cheap to clone; clones share the remembered leader.
#[derive(Clone, Debug)]
pub struct Client {
    endpoints: Arc<Vec<String>>,
    /// The base URL that answered last (the leader, for writes).
    preferred: Arc<Mutex<Option<String>>>,
    http: reqwest::Client,
    streams: reqwest::Client,
    cfg: ClientConfig,
}

/// `host:port` or a URL, as a base URL without a trailing slash.
/// An endpoint as a base URL: as given if it has a scheme, else `https://` for a client
/// with TLS settings and `http://` otherwise.
fn base_url(endpoint: &str, https: bool) -> String {
    let e = endpoint.trim().trim_end_matches('/');
    if e.contains("://") {
        e.to_string()
    } else if https {
        format!("https://{e}")
    } else {
        format!("http://{e}")
    }
}

/// A key as a path: every byte but unreserved ones and `/` percent-encoded.
fn key_path(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A query parameter's value, percent-encoded.
fn query_value(v: &str) -> String {
    key_path(v).replace('/', "%2F")
}

/// An answer: status and JSON body (`Null` when there was none).
struct Answer {
    status: u16,
    body: Value,
    endpoint: String,
}

impl Answer {
    fn decode<T: serde::de::DeserializeOwned>(self) -> Result<T, Error> {
        serde_json::from_value(self.body).map_err(|e| Error::Decode {
            endpoint: self.endpoint,
            message: e.to_string(),
        })
    }

    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    fn into_error(self) -> Error {
        if self.status == 412 {
            let current = serde_json::from_value(self.body["error"]["current"].clone()).ok();
            return Error::PreconditionFailed { current };
        }
        if self.status == 404 && self.code() == "key_not_found" {
            return Error::NotFound;
        }
        Error::Api {
            status: self.status,
            code: self.code().to_string(),
            message: self.body["error"]["message"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        }
    }
}

impl Client {
    /// A client of the cluster whose members' APIs are `endpoints` (`host:port` or URLs).
    pub fn new<I, S>(endpoints: I) -> Result<Client, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::with_config(endpoints, ClientConfig::default())
    }

    /// Like [`new`](Self::new), with settings.
    pub fn with_config<I, S>(endpoints: I, cfg: ClientConfig) -> Result<Client, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let endpoints: Vec<String> = endpoints
            .into_iter()
            .map(|e| base_url(e.as_ref(), cfg.ca_pem.is_some()))
            .filter(|e| e != "http://" && e != "https://")
            .collect();
        if endpoints.is_empty() {
            return Err(Error::Config("no endpoint given".into()));
        }
        let http = cfg
            .builder()?
            .redirect(reqwest::redirect::Policy::none())
            .timeout(cfg.timeout)
            .build()
            .map_err(|e| Error::Config(format!("cannot make an HTTP client: {e}")))?;
        let streams = cfg
            .builder()?
            .connect_timeout(cfg.timeout)
            .build()
            .map_err(|e| Error::Config(format!("cannot make an HTTP client: {e}")))?;
        Ok(Client {
            endpoints: Arc::new(endpoints),
            preferred: Arc::new(Mutex::new(None)),
            http,
            streams,
            cfg,
        })
    }

    /// A client that sends to `endpoint` first (then to the others), sharing this one's
    /// connections and settings but not its remembered leader.
    pub fn via(&self, endpoint: &str) -> Client {
        let first = base_url(endpoint, self.cfg.ca_pem.is_some());
        let mut endpoints = vec![first.clone()];
        endpoints.extend(self.endpoints.iter().filter(|e| **e != first).cloned());
        Client {
            endpoints: Arc::new(endpoints),
            preferred: Arc::new(Mutex::new(None)),
            http: self.http.clone(),
            streams: self.streams.clone(),
            cfg: self.cfg.clone(),
        }
    }

    /// The endpoints, the one that answered last first.
    fn order(&self) -> Vec<String> {
        let preferred = match self.preferred.lock() {
            Ok(p) => p.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let mut out: Vec<String> = preferred.into_iter().collect();
        for e in self.endpoints.iter() {
            if !out.contains(e) {
                out.push(e.clone());
            }
        }
        out
    }

    /// Where a redirect answer sends the request: the base URL of its `Location`, unless
    /// it would leave TLS for plain HTTP.
    fn redirect_target(&self, from: &str, resp: &reqwest::Response) -> Option<String> {
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)?
            .to_str()
            .ok()?;
        let url = reqwest::Url::parse(location).ok()?;
        if from.starts_with("https://") && url.scheme() != "https" {
            return None;
        }
        let host = url.host_str()?;
        Some(match url.port() {
            Some(p) => format!("{}://{host}:{p}", url.scheme()),
            None => format!("{}://{host}", url.scheme()),
        })
    }

    /// Remembers `endpoint` (one of ours) as the one to try first, unless it already is.
    fn remember_endpoint(&self, endpoint: &str) {
        let mut p = match self.preferred.lock() {
            Ok(p) => p,
            Err(p) => p.into_inner(),
        };
        if p.as_deref() != Some(endpoint) {
            *p = Some(endpoint.to_string());
        }
    }

    fn pause(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .cfg
            .backoff
            .saturating_mul(1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX));
        retry_after.unwrap_or(exp).min(self.cfg.max_backoff)
    }

    /// Sends a request to `target` (or to the endpoints in turn, when `None`), retrying
    /// what surely did nothing. `idempotent` requests are also retried when their answer is
    /// lost. Error answers are returned as answers.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        idempotent: bool,
        target: Option<&str>,
    ) -> Result<Answer, Error> {
        let order = match target {
            Some(t) => vec![base_url(t, self.cfg.ca_pem.is_some())],
            None => self.order(),
        };
        let mut last = String::new();
        // Redirects to the leader are followed here, not by reqwest, which drops the
        // Authorization header on a redirect to another host (port).
        let mut redirected: Option<String> = None;
        let mut redirects = 0u32;
        let mut attempt = 0u32;
        loop {
            if redirected.is_none() && attempt > self.cfg.retries {
                break;
            }
            let endpoint = match redirected.take() {
                Some(e) => e,
                None => {
                    let e = order[attempt as usize % order.len()].clone();
                    attempt += 1;
                    e
                }
            };
            let endpoint = &endpoint;
            let mut req = self
                .http
                .request(method.clone(), format!("{endpoint}{path}"));
            if let Some(b) = body {
                req = req.json(b);
            }
            match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    if matches!(status, 307 | 308) && redirects < MAX_REDIRECTS {
                        if let Some(to) = self.redirect_target(endpoint, &resp) {
                            redirects += 1;
                            redirected = Some(to);
                            continue;
                        }
                    }
                    let retry_after = resp
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let text = resp.text().await.map_err(|e| Error::Unknown {
                        endpoint: endpoint.clone(),
                        message: e.to_string(),
                    })?;
                    let body: Value = if text.is_empty() {
                        Value::Null
                    } else {
                        serde_json::from_str(&text).map_err(|e| Error::Decode {
                            endpoint: endpoint.clone(),
                            message: format!("{e}: {text}"),
                        })?
                    };
                    let answer = Answer {
                        status,
                        body,
                        endpoint: endpoint.clone(),
                    };
                    if status < 400 || !RETRYABLE.contains(&answer.code()) {
                        if status < 400 {
                            self.remember_endpoint(endpoint);
                        }
                        return Ok(answer);
                    }
                    last = format!("{status} {}", answer.code());
                    if attempt <= self.cfg.retries {
                        tokio::time::sleep(self.pause(attempt - 1, retry_after)).await;
                    }
                }
                Err(e) if e.is_connect() || (idempotent && (e.is_timeout() || e.is_request())) => {
                    last = format!("{endpoint}: {e}");
                    if attempt <= self.cfg.retries {
                        tokio::time::sleep(self.pause(attempt.saturating_sub(1), None)).await;
                    }
                }
                Err(e) => {
                    return Err(Error::Unknown {
                        endpoint: endpoint.clone(),
                        message: e.to_string(),
                    })
                }
            }
        }
        Err(Error::Unavailable {
            tries: self.cfg.retries + 1,
            last,
        })
    }

    async fn ok(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        idempotent: bool,
    ) -> Result<Answer, Error> {
        let a = self.call(method, path, body, idempotent, None).await?;
        if a.status >= 400 {
            return Err(a.into_error());
        }
        Ok(a)
    }

    /// Appends an entry to the log; where it was committed.
    pub async fn append(&self, entry: impl Into<String>) -> Result<Appended, Error> {
        let body = json!({ "entry": entry.into() });
        self.ok(Method::POST, "/v1/log", Some(&body), false)
            .await?
            .decode()
    }

    /// Appends `entries` together (all or none, at consecutive indexes) and waits until all
    /// are committed: far fewer requests than one `append` per entry. An empty batch is
    /// refused by the server (400), as is one longer than its `--max-batch-entries`.
    pub async fn append_batch(&self, entries: Vec<String>) -> Result<AppendedBatch, Error> {
        let body = json!({ "entries": entries });
        self.ok(Method::POST, "/v1/log", Some(&body), false)
            .await?
            .decode()
    }

    /// Committed entries from `from`, at most `limit`.
    pub async fn read_log(&self, from: u64, limit: usize) -> Result<LogPage, Error> {
        let path = format!("/v1/log?from={from}&limit={}", limit.max(1));
        self.ok(Method::GET, &path, None, true).await?.decode()
    }

    /// Like [`read_log`](Self::read_log), but waits up to `wait` for entry `from` to commit
    /// (a long poll); an empty page if it did not.
    pub async fn wait_log(
        &self,
        from: u64,
        limit: usize,
        wait: Duration,
    ) -> Result<LogPage, Error> {
        let path = format!(
            "/v1/log?from={from}&limit={}&wait={}ms",
            limit.max(1),
            wait.as_millis()
        );
        self.ok(Method::GET, &path, None, true).await?.decode()
    }

    /// Sets `key` to `value`.
    pub async fn put(&self, key: &str, value: impl Into<String>) -> Result<Written, Error> {
        self.put_if(key, value, Expect::default()).await
    }

    /// Sets `key` to `value` if `expect` holds; [`Error::PreconditionFailed`] otherwise.
    pub async fn put_if(
        &self,
        key: &str,
        value: impl Into<String>,
        expect: Expect,
    ) -> Result<Written, Error> {
        let mut body = json!({ "value": value.into() });
        expect.add_to(&mut body);
        let path = format!("/v1/kv/{}", key_path(key));
        self.ok(Method::PUT, &path, Some(&body), false)
            .await?
            .decode()
    }

    /// Deletes `key` (if `expect` holds).
    pub async fn delete_if(&self, key: &str, expect: Expect) -> Result<Written, Error> {
        let mut body = json!({});
        expect.add_to(&mut body);
        let path = format!("/v1/kv/{}", key_path(key));
        self.ok(Method::DELETE, &path, Some(&body), false)
            .await?
            .decode()
    }

    /// Deletes `key`.
    pub async fn delete(&self, key: &str) -> Result<Written, Error> {
        self.delete_if(key, Expect::default()).await
    }

    /// Reads `key` linearizably; `None` when absent.
    pub async fn get(&self, key: &str) -> Result<Option<Kv>, Error> {
        self.get_with(key, Consistency::Linearizable).await
    }

    /// Reads `key`; `None` when absent.
    pub async fn get_with(&self, key: &str, consistency: Consistency) -> Result<Option<Kv>, Error> {
        let path = format!(
            "/v1/kv/{}?consistency={}",
            key_path(key),
            consistency.as_str()
        );
        match self.ok(Method::GET, &path, None, true).await {
            Ok(a) => a.decode().map(Some),
            Err(Error::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The keys starting with `prefix`, after `start_after`, at most `limit`.
    pub async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<KvPage, Error> {
        let mut path = format!(
            "/v1/kv?prefix={}&limit={}",
            query_value(prefix),
            limit.max(1)
        );
        if let Some(a) = start_after {
            path.push_str(&format!("&start_after={}", query_value(a)));
        }
        self.ok(Method::GET, &path, None, true).await?.decode()
    }

    /// The original API's `POST /request {"entry"}` sent to `endpoint` (or to the endpoints
    /// in turn): `success` when that node led and committed it, else the leader's address
    /// to send it to. Not retried once sent.
    pub async fn original_request(
        &self,
        entry: impl Into<String>,
        endpoint: Option<&str>,
    ) -> Result<OriginalAnswer, Error> {
        let body = json!({ "entry": entry.into() });
        let a = self
            .call(Method::POST, "/request", Some(&body), false, endpoint)
            .await?;
        if a.status >= 400 {
            return Err(a.into_error());
        }
        a.decode()
    }

    /// `GET /v1/status` of `endpoint` (or of the first endpoint that answers).
    pub async fn status(&self, endpoint: Option<&str>) -> Result<Value, Error> {
        let a = self
            .call(Method::GET, "/v1/status", None, true, endpoint)
            .await?;
        if a.status >= 400 {
            return Err(a.into_error());
        }
        Ok(a.body)
    }

    /// The members, as the leader (or the first endpoint that answers) lists them.
    pub async fn members(&self) -> Result<Vec<Member>, Error> {
        self.ok(Method::GET, "/v1/members", None, true)
            .await?
            .decode()
    }

    /// Adds node `id` as a learner; the index of the change.
    pub async fn add_learner(&self, id: u64, raft: &str, api: Option<&str>) -> Result<u64, Error> {
        let body = json!({ "id": id, "raft": raft, "api": api });
        let a = self
            .ok(Method::POST, "/v1/members", Some(&body), false)
            .await?;
        index_of(a)
    }

    /// Makes learner `id` a voter; the index of the change.
    pub async fn promote(&self, id: u64) -> Result<u64, Error> {
        let a = self
            .ok(
                Method::POST,
                &format!("/v1/members/{id}/promote"),
                None,
                false,
            )
            .await?;
        index_of(a)
    }

    /// Removes member `id`; the index of the change.
    pub async fn remove_member(&self, id: u64) -> Result<u64, Error> {
        let a = self
            .ok(Method::DELETE, &format!("/v1/members/{id}"), None, false)
            .await?;
        index_of(a)
    }

    /// Moves leadership to `to` (or the most caught-up voter); the new leader.
    pub async fn transfer_leader(&self, to: Option<u64>) -> Result<u64, Error> {
        let body = match to {
            Some(t) => json!({ "to": t }),
            None => json!({}),
        };
        let a = self
            .ok(Method::POST, "/v1/leader/transfer", Some(&body), false)
            .await?;
        let endpoint = a.endpoint.clone();
        a.body["leader"].as_u64().ok_or_else(|| Error::Decode {
            endpoint,
            message: "no leader in the answer".into(),
        })
    }

    /// Streams a consistent copy of a node's state (`GET /v1/snapshot`) into `out`; the
    /// bytes written.
    pub async fn snapshot_save(
        &self,
        endpoint: Option<&str>,
        out: &mut (dyn std::io::Write + Send),
    ) -> Result<u64, Error> {
        let order = match endpoint {
            Some(e) => vec![base_url(e, self.cfg.ca_pem.is_some())],
            None => self.order(),
        };
        let base = &order[0];
        let mut resp = self
            .streams
            .get(format!("{base}/v1/snapshot"))
            .send()
            .await
            .map_err(|e| Error::Unavailable {
                tries: 1,
                last: format!("{base}: {e}"),
            })?;
        if !resp.status().is_success() {
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            return Err(Answer {
                status,
                body,
                endpoint: base.clone(),
            }
            .into_error());
        }
        let mut written = 0u64;
        while let Some(chunk) = resp.chunk().await.map_err(|e| Error::Unknown {
            endpoint: base.clone(),
            message: e.to_string(),
        })? {
            out.write_all(&chunk)
                .map_err(|e| Error::Config(format!("cannot write: {e}")))?;
            written += chunk.len() as u64;
        }
        Ok(written)
    }

    /// Committed entries from `from` (default: the next to commit) on, as they commit;
    /// resumes on another endpoint after a dropped connection.
    pub fn log_stream(&self, from: Option<u64>) -> impl Stream<Item = Result<Event, Error>> + Send {
        let path = match from {
            Some(f) => format!("/v1/log/stream?from={f}"),
            None => "/v1/log/stream".to_string(),
        };
        sse::follow(self.clone(), path)
    }

    /// Puts and deletes of keys starting with `prefix`, from revision `from` (default: from
    /// now on); resumes on another endpoint after a dropped connection.
    pub fn watch(
        &self,
        prefix: &str,
        from: Option<u64>,
    ) -> impl Stream<Item = Result<Event, Error>> + Send {
        let mut path = format!("/v1/kv/watch?prefix={}", query_value(prefix));
        if let Some(f) = from {
            path.push_str(&format!("&from_revision={f}"));
        }
        sse::follow(self.clone(), path)
    }
}

fn index_of(a: Answer) -> Result<u64, Error> {
    let endpoint = a.endpoint.clone();
    a.body["index"].as_u64().ok_or_else(|| Error::Decode {
        endpoint,
        message: "no index in the answer".into(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn keys_become_paths_and_endpoints_base_urls() {
        assert_eq!(key_path("app/db host?#%"), "app/db%20host%3F%23%25");
        assert_eq!(key_path("ü"), "%C3%BC");
        assert_eq!(query_value("a/b c"), "a%2Fb%20c");
        assert_eq!(base_url("127.0.0.1:9000/", false), "http://127.0.0.1:9000");
        assert_eq!(base_url("127.0.0.1:9000", true), "https://127.0.0.1:9000");
        assert_eq!(base_url("https://h:1", false), "https://h:1");
        assert!(matches!(
            Client::new(Vec::<String>::new()),
            Err(Error::Config(_))
        ));
    }

    #[test]
    fn conditions_become_the_documented_fields() {
        let mut b = json!({"value": "v"});
        Expect::absent().add_to(&mut b);
        assert_eq!(b, json!({"value": "v", "expect": null}));
        let mut b = json!({});
        Expect {
            value: Some(Some("a".into())),
            revision: Some(7),
        }
        .add_to(&mut b);
        assert_eq!(b, json!({"expect": "a", "if_revision": 7}));
    }

    #[test]
    fn a_precondition_failure_carries_the_current_value() {
        let a = Answer {
            status: 412,
            body: json!({"error": {"code": "precondition_failed", "message": "m", "current": {"value": "b", "revision": 9}}}),
            endpoint: "e".into(),
        };
        match a.into_error() {
            Error::PreconditionFailed { current } => assert_eq!(
                current,
                Some(Versioned {
                    value: "b".into(),
                    revision: 9
                })
            ),
            e => panic!("{e}"),
        }
    }
}
