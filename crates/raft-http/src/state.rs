//! What every handler shares.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use raft_client::{AppLog, Committed, DurableReader, KvCommand, KvResponse, RaftNode};
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::server::{ServerLimits, ServerStats};

/// Settings of the HTTP front end.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Request bodies larger than this are refused with 413. Default 1 MiB.
    pub max_body_bytes: usize,
    /// Longest key of `/v1/kv/{key}` in bytes (after percent-decoding); longer ones get 414
    /// `key_too_long`. Default 4096.
    pub max_key_bytes: usize,
    /// Entries returned by `GET /log` and `GET /v1/log` at most per request. Default 10,000.
    pub max_log_entries: usize,
    /// Bytes of entries returned by one log read at most (one entry always). Default 4 MiB.
    pub max_log_bytes: u64,
    /// Log reads running at once at most; more get 429 `too_many_reads`. Default 16.
    pub max_concurrent_reads: usize,
    /// A request not answered within this time gets a 503 `request_timeout` (a write may
    /// or may not have been applied). Default 30 s.
    pub request_timeout: Duration,
    /// Streams (`/v1/log/stream`, `/v1/kv/watch`, `/v1/events`) open at once at most; more
    /// get 429 `too_many_watchers`. Default 1,024.
    pub max_watchers: usize,
    /// Of [`HttpConfig::max_watchers`], the slots only admin tokens and members may take.
    /// Default 32.
    pub stream_reserve: usize,
    /// Streams one token holds at once at most (admin tokens and members excepted).
    /// Default 256.
    pub max_streams_per_token: usize,
    /// Streams one client address holds at once at most (admin tokens and members
    /// excepted). Default 128.
    pub max_streams_per_address: usize,
    /// A stream open this long ends with a `closing` event (the client resumes with
    /// `Last-Event-ID`); zero: no limit. Default one hour.
    pub max_stream_lifetime: Duration,
    /// Entries one `POST /v1/log` may append at most (`{"entries": [...]}`); more get 400
    /// `too_many_entries`. Default 10,000.
    pub max_batch_entries: usize,
    /// How long `GET /readyz` waits for the state machine to apply what was committed when
    /// the probe came, before it answers 503. A node that applies as fast as it commits is
    /// ready under any write load; one replaying a long log is not. Default 500 ms.
    pub ready_apply_wait: Duration,
    /// Origins (`https://admin.example:8443`) besides the node's own whose pages may send
    /// requests that change something (see [`crate::cross_site`]). Default none.
    pub allowed_origins: Vec<String>,
    /// Connection limits (count, header and idle timeouts).
    pub limits: ServerLimits,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_body_bytes: 1 << 20,
            max_key_bytes: 4096,
            max_log_entries: 10_000,
            max_log_bytes: 4 << 20,
            max_concurrent_reads: 16,
            request_timeout: Duration::from_secs(30),
            max_watchers: 1024,
            stream_reserve: 32,
            max_streams_per_token: 256,
            max_streams_per_address: 128,
            max_stream_lifetime: crate::streams::DEFAULT_LIFETIME,
            max_batch_entries: 10_000,
            ready_apply_wait: Duration::from_millis(500),
            allowed_origins: Vec::new(),
            limits: ServerLimits::default(),
        }
    }
}

/// The node, its key-value view and the counters, shared by the handlers. Cloned for every
/// request (axum's `State`), so it is one shared pointer: a clone is one atomic increment,
/// not one per field (a profile of 64 clients reading showed the field-by-field clone and
/// drop at about 3 % of the node's CPU).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] shares.
#[derive(Clone)]
pub struct Shared {
    pub(crate) node: RaftNode<KvResponse>,
    pub(crate) store: DurableReader,
    /// The application log and the map's changes, read from the Raft log.
    pub(crate) log: AppLog,
    pub(crate) cfg: HttpConfig,
    pub(crate) log_reads: Arc<tokio::sync::Semaphore>,
    pub(crate) backups: Arc<tokio::sync::Semaphore>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) server: Arc<ServerStats>,
    /// The stream slots, and who holds them.
    pub(crate) streams: Arc<crate::streams::StreamSlots>,
    /// Cancelled when the node stops: open streams end.
    pub(crate) closing: tokio_util::sync::CancellationToken,
    /// Tasks of this API that outlive a request (the dashboard's sampler); they end on
    /// `closing`, and [`AppState::closed`] waits for them.
    pub(crate) background: tokio_util::task::TaskTracker,
    /// Long polls (`GET /v1/log?wait=`) waiting now.
    pub(crate) long_polls: Arc<std::sync::atomic::AtomicUsize>,
    /// The live view's sampler and what it keeps (`/v1/events`, `/ui`).
    pub(crate) dashboard: Arc<crate::events::Dashboard>,
    /// Who may do what ([`crate::auth`]).
    pub(crate) access: Arc<crate::auth::Access>,
    /// How this node reaches the other members' APIs (the dashboard's sampler): the URL
    /// scheme, and the client's TLS settings.
    /// Shared, not copied: the state is cloned for every request, and this holds PEM bytes.
    pub(crate) peer_api: Arc<raft_http_client::ClientConfig>,
    /// Whether the API is served over TLS (redirects name `https://`).
    pub(crate) https: bool,
}

impl AppState {
    /// State for serving `node`, whose state machine (a [`raft_client::DurableStore`]) is
    /// read through `store`.
    pub fn new(node: RaftNode<KvResponse>, store: DurableReader, cfg: HttpConfig) -> Self {
        AppState(Arc::new(Shared {
            log: AppLog::new(&node, store.clone()),
            node,
            store,
            log_reads: Arc::new(tokio::sync::Semaphore::new(cfg.max_concurrent_reads.max(1))),
            backups: Arc::new(tokio::sync::Semaphore::new(1)),
            metrics: Arc::new(Metrics::default()),
            server: Arc::new(ServerStats::default()),
            streams: Arc::new(crate::streams::StreamSlots::new(&cfg)),
            closing: tokio_util::sync::CancellationToken::new(),
            background: tokio_util::task::TaskTracker::new(),
            long_polls: Arc::default(),
            dashboard: Arc::default(),
            access: Arc::new(crate::auth::Access::open()),
            peer_api: Arc::default(),
            https: false,
            cfg,
        }))
    }

    /// Checks requests against `access` (tokens and roles) instead of letting everyone do
    /// everything.
    pub fn with_access(mut self, access: Arc<crate::auth::Access>) -> Self {
        Arc::make_mut(&mut self.0).access = access;
        self
    }

    /// The applied index once it reaches `index`, or as it stands after `wait` (or when the
    /// server closes).
    pub(crate) async fn applied_by(&self, index: u64, wait: Duration) -> u64 {
        let mut applied = self.store.watch_applied();
        let reached = async {
            while *applied.borrow_and_update() < index {
                if applied.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::select! {
            _ = reached => {}
            _ = tokio::time::sleep(wait) => {}
            _ = self.closing.cancelled() => {}
        }
        self.store.applied()
    }

    /// How this node calls the other members' APIs (for the dashboard): with TLS and this
    /// node's certificate when the API is HTTPS.
    pub fn with_peer_api(mut self, cfg: raft_http_client::ClientConfig) -> Self {
        Arc::make_mut(&mut self.0).peer_api = Arc::new(cfg);
        self
    }

    /// Says the API is served over TLS ([`crate::serve_with_tls`]): redirects name
    /// `https://`.
    pub fn with_https(mut self, https: bool) -> Self {
        Arc::make_mut(&mut self.0).https = https;
        self
    }

    /// The scheme clients reach this API by.
    pub(crate) fn scheme(&self) -> &'static str {
        if self.https {
            "https"
        } else {
            "http"
        }
    }

    /// Ends every open stream (`/v1/log/stream`, `/v1/kv/watch`) with a `closing` event;
    /// call it when the node stops, before waiting for requests in flight.
    pub fn close_streams(&self) {
        self.closing.cancel();
    }

    /// Ends the open streams and waits for this API's own tasks (the dashboard's sampler)
    /// to finish: once the server stopped too, nothing of the API holds the node or its
    /// store any more, and the node's files are free when the node has stopped.
    pub async fn closed(&self) {
        self.close_streams();
        self.background.close();
        self.background.wait().await;
    }

    /// Streams open now.
    pub fn open_streams(&self) -> usize {
        self.streams.open()
    }

    /// The counters [`crate::serve`] keeps about connections, shown in `/metrics`.
    pub fn server_stats(&self) -> Arc<ServerStats> {
        self.server.clone()
    }

    /// The connection limits to give [`crate::serve`].
    pub fn limits(&self) -> ServerLimits {
        self.cfg.limits
    }

    /// This node's own API address, as configured.
    pub(crate) fn self_api(&self) -> String {
        self.node.api_address(self.node.id()).unwrap_or_default()
    }

    /// Who leads, as far as clients should be told: this node when it leads; otherwise the
    /// leader it names, but only if it heard from it within an election timeout (a leader
    /// silent for that long has probably failed, and sending clients to it only makes them
    /// wait for a connection error).
    pub(crate) fn leader(&self) -> Leader {
        let me = self.node.id();
        match self.node.leader().leader {
            None => Leader::Unknown,
            Some(l) if l == me => Leader::Me,
            Some(l) => match self.node.since_leader_contact() {
                Some(age) if age > self.node.election_timeout() => Leader::Silent(l, age),
                _ => Leader::Known(l),
            },
        }
    }

    /// The API address of the leader clients should be sent to (see [`AppState::leader`]).
    pub(crate) fn leader_api(&self) -> Option<String> {
        match self.leader() {
            Leader::Me => self.node.api_address(self.node.id()),
            Leader::Known(l) => self.node.api_address(l),
            Leader::Unknown | Leader::Silent(..) => None,
        }
    }

    /// Submits a plain entry and records the outcome in the metrics.
    pub(crate) async fn submit(
        &self,
        data: impl Into<Bytes>,
    ) -> Result<Committed<KvResponse>, raft_client::Error> {
        let _pending = self.metrics.proposal_pending();
        let t0 = Instant::now();
        let r = self.node.submit(data).await;
        self.metrics.record_proposal(r.is_ok(), t0.elapsed());
        r
    }

    /// Submits entries together (one batch, recorded as one proposal in the metrics).
    pub(crate) async fn submit_batch(
        &self,
        data: Vec<Bytes>,
    ) -> Result<raft_client::CommittedBatch<KvResponse>, raft_client::Error> {
        let _pending = self.metrics.proposal_pending();
        let t0 = Instant::now();
        let r = self.node.submit_batch(data).await;
        self.metrics.record_proposal(r.is_ok(), t0.elapsed());
        r
    }

    /// Submits a key-value command and records the outcome in the metrics.
    pub(crate) async fn submit_kv(
        &self,
        cmd: &KvCommand,
    ) -> Result<Committed<KvResponse>, SubmitKvError> {
        let data = cmd.encode().map_err(|e| {
            SubmitKvError::Encode(ApiError::bad_request(format!(
                "cannot encode the command: {e}"
            )))
        })?;
        let _pending = self.metrics.proposal_pending();
        let t0 = Instant::now();
        let r = self.node.submit_command(data).await;
        self.metrics.record_proposal(r.is_ok(), t0.elapsed());
        r.map_err(SubmitKvError::Node)
    }
}

/// Who leads, from the point of view of redirecting clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Leader {
    /// This node.
    Me,
    /// Another node, heard from recently.
    Known(raft_core::NodeId),
    /// Another node, not heard from for longer than an election timeout (how long).
    Silent(raft_core::NodeId, Duration),
    /// None known.
    Unknown,
}

/// Why a key-value submit failed.
pub(crate) enum SubmitKvError {
    /// The command could not be encoded (answered as 400).
    Encode(ApiError),
    /// The node refused or failed it.
    Node(raft_client::Error),
}

impl AppState {
    /// Reads the application log from `from` (at most `limit` entries) and turns it into a
    /// response with `f`, on a blocking thread, under the read limit: reads never load the
    /// async threads nor the Raft runtime.
    pub(crate) async fn read_log(
        &self,
        from: raft_core::LogIndex,
        limit: usize,
        f: impl FnOnce(Vec<raft_core::Entry>, raft_core::LogIndex) -> axum::response::Response
            + Send
            + 'static,
    ) -> Result<axum::response::Response, ApiError> {
        let permit = self.log_reads.clone().try_acquire_owned().map_err(|_| {
            ApiError::from_node(
                raft_client::Error::TooManyReads {
                    limit: self.cfg.max_concurrent_reads,
                },
                None,
            )
        })?;
        let log = self.log.clone();
        let max_bytes = self.cfg.max_log_bytes;
        let limit = limit.clamp(1, self.cfg.max_log_entries.max(1));
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let first = log.first_index()?;
            let entries = log.read(from.max(first), limit, max_bytes)?;
            Ok::<_, std::io::Error>(f(entries, first))
        })
        .await
        .map_err(|e| ApiError::internal(format!("the log read task failed: {e}")))?
        .map_err(|e| ApiError::internal(format!("cannot read the log: {e}")))
    }

    /// The value of `key` in the map, as of the applied index.
    pub(crate) fn get_value(&self, key: &str) -> Result<Option<String>, ApiError> {
        Ok(self.get_versioned(key)?.map(|v| v.value))
    }

    /// The value of `key` and its revision, as of the applied index.
    pub(crate) fn get_versioned(
        &self,
        key: &str,
    ) -> Result<Option<raft_client::Versioned>, ApiError> {
        self.store
            .get_versioned(key)
            .map_err(|e| ApiError::internal(format!("cannot read the map: {e}")))
    }
}

/// A JSON response serialised now (on the caller's thread).
pub(crate) fn json_response(v: &serde_json::Value) -> axum::response::Response {
    use axum::response::IntoResponse;
    match serde_json::to_vec(v) {
        Ok(body) => (
            [(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Err(e) => ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("cannot serialise the response: {e}"),
        )
        .into_response(),
    }
}

/// Parses a JSON body whatever its content type (the original's clients do not always set
/// one), answering 400 with a JSON error when it is not what is expected: a syntax error
/// says where, a missing, unknown or mistyped field names the field and what was expected.
pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    // Every body is an object (serde would also read a struct from an array).
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') | None => {}
        Some(_) => {
            return Err(ApiError::bad_request(
                "the body must be a JSON object: {\"field\": ...}",
            ))
        }
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = match inner.classify() {
            serde_json::error::Category::Data
                if path != "." && !inner.to_string().starts_with("unknown field") =>
            {
                format!("invalid request body: field `{path}`: {inner}")
            }
            serde_json::error::Category::Data => format!("invalid request body: {inner}"),
            _ => format!("malformed JSON body: {inner}"),
        };
        ApiError::bad_request(message)
    })?;
    de.end()
        .map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))?;
    Ok(value)
}

/// A whole number in a body: an integer, or a number written with a fraction of zero
/// (`7.0`: JSON does not tell them apart, and some clients write every number so).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Whole(pub(crate) u64);

impl<'de> serde::Deserialize<'de> for Whole {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Whole, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Whole;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a whole number from 0 to 18446744073709551615")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Whole, E> {
                Ok(Whole(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Whole, E> {
                u64::try_from(v)
                    .map(Whole)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Whole, E> {
                // 2^64 is the first float past u64::MAX.
                if v.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&v) {
                    Ok(Whole(v as u64))
                } else {
                    Err(E::invalid_value(serde::de::Unexpected::Float(v), &self))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A request body within the configured limit; past it, a JSON 413 error naming the limit.
///
/// A body found too large is still read, and thrown away, up to [`DRAIN_FACTOR`] times the
/// limit and for at most [`DRAIN_TIME`], before the 413 goes out: a client still sending its
/// body when the server closes the connection gets a broken pipe instead of the answer (the
/// "lingering close" of nginx and Go's server). Past either bound the connection is closed.
pub(crate) struct Body(pub(crate) Bytes);

/// How many times `--max-body-bytes` a too-large body is read and discarded at most.
pub(crate) const DRAIN_FACTOR: usize = 8;
/// How long a too-large body is read and discarded at most.
pub(crate) const DRAIN_TIME: Duration = Duration::from_secs(1);

impl axum::extract::FromRequest<AppState> for Body {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, st: &AppState) -> Result<Self, ApiError> {
        use http_body::Body as _;
        let limit = st.cfg.max_body_bytes;
        let too_large = || {
            ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "the request body is larger than {limit} bytes, the most this node accepts (--max-body-bytes)"
                ),
            )
        };
        let mut body = req.into_body();
        let declared = body.size_hint().exact();
        let mut buf = bytes::BytesMut::new();
        let mut over = declared.is_some_and(|n| n > limit as u64);
        while !over {
            match std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await {
                None => return Ok(Body(buf.freeze())),
                Some(Err(e)) => {
                    return Err(ApiError::new(
                        axum::http::StatusCode::BAD_REQUEST,
                        "bad_request",
                        format!("cannot read the request body: {e}"),
                    ))
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if buf.len().saturating_add(data.len()) > limit {
                            over = true;
                        } else {
                            buf.extend_from_slice(&data);
                        }
                    }
                }
            }
        }
        drop(buf);
        let cap = limit.saturating_mul(DRAIN_FACTOR);
        let deadline = tokio::time::Instant::now() + DRAIN_TIME;
        let mut drained = 0usize;
        while drained <= cap {
            let next = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx));
            match tokio::time::timeout_at(deadline, next).await {
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        drained = drained.saturating_add(data.len());
                    }
                }
                _ => break,
            }
        }
        Err(too_large())
    }
}

/// Query parameters; a malformed query string is a JSON 400 error.
pub(crate) struct Params(pub(crate) std::collections::HashMap<String, String>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        use axum::extract::Query;
        <Query<std::collections::HashMap<String, String>> as axum::extract::FromRequestParts<S>>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| Params(q))
            .map_err(|r| ApiError::new(r.status(), "bad_request", r.body_text()))
    }
}

/// The key: the rest of the path after `/v1/kv/`, `/` included, percent-decoded. An
/// undecodable, empty or oversized key is a JSON error.
pub(crate) struct KeyPath(pub(crate) String);

impl axum::extract::FromRequestParts<AppState> for KeyPath {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        st: &AppState,
    ) -> Result<Self, ApiError> {
        use axum::extract::Path;
        if parts.uri.path() == "/v1/kv/watch" {
            // The key `watch`, whose GET is the watch endpoint; its writes land here.
            return Ok(KeyPath("watch".into()));
        }
        let Path(key) =
            <Path<String> as axum::extract::FromRequestParts<AppState>>::from_request_parts(
                parts, st,
            )
            .await
            .map_err(|r| {
                ApiError::new(
                    r.status(),
                    "bad_request",
                    format!("cannot read the key from the path: {}", r.body_text()),
                )
            })?;
        if key.is_empty() {
            return Err(ApiError::bad_request("the key is empty: use /v1/kv/<key>"));
        }
        if key.len() > st.cfg.max_key_bytes {
            return Err(ApiError::new(
                axum::http::StatusCode::URI_TOO_LONG,
                "key_too_long",
                format!(
                    "the key is {} bytes long; keys are limited to {} bytes (--max-key-bytes)",
                    key.len(),
                    st.cfg.max_key_bytes
                ),
            ));
        }
        Ok(KeyPath(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct To {
        to: Whole,
    }

    #[test]
    fn a_whole_number_may_be_written_with_a_zero_fraction_and_nothing_else() {
        let to = |body: &str| parse_json::<To>(body.as_bytes()).map(|t| t.to.0);
        assert_eq!(to(r#"{"to": 7}"#).ok(), Some(7));
        assert_eq!(to(r#"{"to": 7.0}"#).ok(), Some(7));
        assert_eq!(to(r#"{"to": 18446744073709551615}"#).ok(), Some(u64::MAX));
        for bad in [
            r#"{"to": 7.5}"#,
            r#"{"to": -1}"#,
            r#"{"to": 1e20}"#,
            r#"{"to": 18446744073709551616}"#,
            r#"{"to": "7"}"#,
        ] {
            assert!(to(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_body_is_an_object_never_an_array_read_as_a_struct() {
        let err = parse_json::<To>(b" [7]").unwrap_err();
        assert_eq!(err.status, axum::http::StatusCode::BAD_REQUEST);
        assert!(err.message.contains("JSON object"), "{}", err.message);
    }
}
