//! The HTTP server loop (HTTP/1.1, and HTTP/2: cleartext with prior knowledge, or chosen by
//! ALPN over TLS; one connection then carries many concurrent requests), with the limits a
//! server on a network needs:
//!
//! - at most [`ServerLimits::max_connections`] connections at once, and at most
//!   [`ServerLimits::max_connections_per_address`] from one client address; past either,
//!   new ones are closed at once (a file descriptor per connection is shared with the log's
//!   segments, and one client must not take them all);
//! - over TLS, at most [`ServerLimits::max_handshakes`] connections in their TLS handshake
//!   at once, [`ServerLimits::max_handshakes_per_address`] from one address, each given
//!   [`ServerLimits::handshake_timeout`]: slow handshakes from one client cannot crowd the
//!   others out;
//! - a client must send a request's complete headers within
//!   [`ServerLimits::header_timeout`] of connecting or of starting the request (slow or
//!   half-sent headers cannot hold a connection);
//! - a keep-alive connection with no request in flight for
//!   [`ServerLimits::idle_timeout`] is closed;
//! - an HTTP/2 connection carries at most [`ServerLimits::max_http2_streams`] requests at
//!   once (its header clock covers only its first request: after that, frames such as flow
//!   control updates arrive between requests, and each stream's time is bounded by the
//!   request timeout);
//! - `accept` failures (out of descriptors, say) back off instead of spinning;
//! - at shutdown, requests in flight get [`ServerLimits::drain_timeout`] to finish; then
//!   their connections are dropped, so that nothing of the router outlives the server.
//!
//! The request timeout is a layer of the router (see [`crate::router`]).

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Connection limits of the HTTP server.
#[derive(Clone, Copy, Debug)]
pub struct ServerLimits {
    /// Connections open at once at most; more are closed as soon as they are accepted.
    /// Default 4096.
    pub max_connections: usize,
    /// Connections open at once from one client address at most; more are closed as soon
    /// as they are accepted. Default 512.
    pub max_connections_per_address: usize,
    /// TLS handshakes in progress at once at most; more connections are closed at once.
    /// Default 256.
    pub max_handshakes: usize,
    /// TLS handshakes in progress at once from one client address at most. Default 16.
    pub max_handshakes_per_address: usize,
    /// Time a TLS handshake may take. Default 5 s.
    pub handshake_timeout: Duration,
    /// Time allowed for a request's headers, from the connection's start or from the first
    /// byte of the request. Default 10 s.
    pub header_timeout: Duration,
    /// A connection with no request in flight and no traffic for this long is closed.
    /// Default 60 s.
    pub idle_timeout: Duration,
    /// Requests in flight at once on one HTTP/2 connection at most. Default 256.
    pub max_http2_streams: u32,
    /// At shutdown, how long requests in flight may take to finish; the connections still
    /// open after it are dropped (their requests with them). Default 10 s.
    pub drain_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: 4096,
            max_connections_per_address: 512,
            max_handshakes: 256,
            max_handshakes_per_address: 16,
            handshake_timeout: Duration::from_secs(5),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_http2_streams: 256,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// What the server did with connections (shown in `/metrics`).
#[derive(Debug, Default)]
pub struct ServerStats {
    pub(crate) open: AtomicU64,
    pub(crate) accepted: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) header_timeouts: AtomicU64,
    pub(crate) idle_closed: AtomicU64,
    pub(crate) accept_errors: AtomicU64,
    pub(crate) request_timeouts: AtomicU64,
    pub(crate) tls_failures: AtomicU64,
    pub(crate) over_address_limit: AtomicU64,
    pub(crate) handshakes_over_limit: AtomicU64,
    pub(crate) handshake_timeouts: AtomicU64,
}

impl ServerStats {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Connections open now.
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// The counters now.
    pub fn snapshot(&self) -> ServerCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ServerCounts {
            open: get(&self.open),
            accepted: get(&self.accepted),
            rejected: get(&self.rejected),
            header_timeouts: get(&self.header_timeouts),
            idle_closed: get(&self.idle_closed),
            accept_errors: get(&self.accept_errors),
            request_timeouts: get(&self.request_timeouts),
        }
    }
}

/// A copy of [`ServerStats`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerCounts {
    /// Connections open.
    pub open: u64,
    /// Connections accepted.
    pub accepted: u64,
    /// Connections closed at once because the connection limit was reached.
    pub rejected: u64,
    /// Connections closed because a request's headers did not arrive in time.
    pub header_timeouts: u64,
    /// Connections closed idle, or because a response stopped making progress.
    pub idle_closed: u64,
    /// Failed `accept` calls.
    pub accept_errors: u64,
    /// Requests answered 503 `request_timeout`.
    pub request_timeouts: u64,
}

/// How many of something each client address holds (connections, handshakes).
#[derive(Clone, Default)]
struct PerAddress(Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>);

/// One held by an address, given back when dropped.
struct AddressSlot {
    of: PerAddress,
    ip: std::net::IpAddr,
}

impl PerAddress {
    /// One more for `ip`, unless it holds `limit` already.
    fn take(&self, ip: std::net::IpAddr, limit: usize) -> Option<AddressSlot> {
        let mut m = match self.0.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        let n = m.entry(ip).or_default();
        if *n >= limit.max(1) {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            of: self.clone(),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut m = match self.of.0.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// What the handshakes in progress hold.
#[derive(Clone)]
struct Handshakes {
    all: Arc<Semaphore>,
    by_address: PerAddress,
}

/// Nanoseconds in `d`, saturating (a timeout of centuries is as good as none).
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A connection's clock: when it last moved bytes, whether a request is being served, and
/// since when it waits for a request's headers.
///
/// A request is in flight from the moment its headers are parsed until its response has
/// been written out (the response body's end, not the handler's return). Bytes read with no
/// request in flight start the header clock; bytes read after the handler returned, while
/// its response is still being written, are the next request's and start the header clock
/// once that response is done.
struct Activity {
    base: Instant,
    /// Nanoseconds since `base` of the last byte read or written.
    last_io: AtomicU64,
    /// Nanoseconds since `base` plus one when headers started arriving (0: not waiting).
    head_since: AtomicU64,
    /// Like `head_since`, for bytes read while a response was still being written.
    early_head: AtomicU64,
    in_flight: AtomicUsize,
    handler_done: AtomicBool,
    /// The connection speaks HTTP/2: bytes between requests are frames of the connection
    /// (settings, flow control), not the start of a request's headers.
    http2: AtomicBool,
    /// The HTTP/1 request in flight has no body or its body was read to the end; if not when
    /// its handler answers, the answer says `Connection: close` (the connection cannot carry
    /// another request, and a client's pool must not send one on it).
    body_read: AtomicBool,
    /// Wakes the connection's watchdog when a deadline may have moved earlier.
    changed: tokio::sync::Notify,
}

impl Activity {
    fn new() -> Self {
        Activity {
            base: Instant::now(),
            last_io: AtomicU64::new(0),
            // A new connection waits for its first request's headers from the start.
            head_since: AtomicU64::new(1),
            early_head: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            handler_done: AtomicBool::new(false),
            http2: AtomicBool::new(false),
            body_read: AtomicBool::new(true),
            changed: tokio::sync::Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        nanos(self.base.elapsed()).min(u64::MAX - 1)
    }

    fn read_some(&self) {
        let now = self.now();
        self.last_io.store(now, Ordering::Relaxed);
        if self.http2.load(Ordering::Acquire) {
            return;
        }
        let waiting = if self.in_flight.load(Ordering::Acquire) == 0 {
            &self.head_since
        } else if self.handler_done.load(Ordering::Acquire) {
            &self.early_head
        } else {
            return; // the request's own body
        };
        if waiting
            .compare_exchange(0, now + 1, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            self.changed.notify_one();
        }
    }

    fn wrote_some(&self) {
        self.last_io.store(self.now(), Ordering::Relaxed);
    }

    fn request_started(&self, version: hyper::Version) {
        if version == hyper::Version::HTTP_2 {
            self.http2.store(true, Ordering::Release);
        }
        self.handler_done.store(false, Ordering::Release);
        self.early_head.store(0, Ordering::Release);
        self.head_since.store(0, Ordering::Release);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    fn handler_returned(&self) {
        self.handler_done.store(true, Ordering::Release);
        self.changed.notify_one();
    }

    fn response_done(&self) {
        self.wrote_some();
        if self.early_head.swap(0, Ordering::AcqRel) != 0 {
            // The next request's bytes came while this response was written: its header
            // clock starts now (the client is not to blame for a slow response).
            let _ = self.head_since.compare_exchange(
                0,
                self.now() + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.changed.notify_one();
    }

    /// What is due now, or the next moment to look again.
    fn check(&self, limits: &ServerLimits, closing_since: Option<u64>) -> Due {
        let now = self.now();
        let idle = nanos(limits.idle_timeout);
        let head = self.head_since.load(Ordering::Acquire);
        let header_deadline =
            (head != 0).then(|| (head - 1).saturating_add(nanos(limits.header_timeout)));
        if header_deadline.is_some_and(|d| now >= d) {
            return Due::HeaderTimeout;
        }
        let quiet_deadline = self.last_io.load(Ordering::Relaxed).saturating_add(idle);
        let in_flight = self.in_flight.load(Ordering::Acquire) > 0;
        let writing = in_flight && self.handler_done.load(Ordering::Acquire);
        if writing && now >= quiet_deadline {
            return Due::Stalled; // a response nobody reads
        }
        if let Some(since) = closing_since {
            if now >= since.saturating_add(idle) {
                return Due::Stalled; // asked to close, and still not closed
            }
        }
        if !in_flight && now >= quiet_deadline && closing_since.is_none() {
            return Due::Idle;
        }
        // Nothing due yet: the next deadline. (While a handler runs, the request timeout
        // bounds it; look again after a while.)
        let mut next = match closing_since {
            Some(since) => since.saturating_add(idle),
            None if !in_flight || writing => quiet_deadline,
            None => now.saturating_add(idle),
        };
        if let Some(d) = header_deadline {
            next = next.min(d);
        }
        let next = Duration::from_nanos(next.max(now.saturating_add(1)));
        Due::At(
            self.base
                .checked_add(next)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)),
        )
    }
}

enum Due {
    /// A request's headers did not arrive in time: close at once.
    HeaderTimeout,
    /// Nothing in flight and no traffic: close gracefully.
    Idle,
    /// No progress while a response is being written, or a graceful close that does not
    /// finish: close at once.
    Stalled,
    At(Instant),
}

/// Tells the connection's [`Activity`] when the response has been written (or dropped).
struct ResponseGuard(Arc<Activity>);

impl Drop for ResponseGuard {
    fn drop(&mut self) {
        self.0.response_done();
    }
}

/// A response body that keeps its request in flight until it is fully written.
struct Guarded {
    inner: Body,
    _guard: ResponseGuard,
}

impl http_body::Body for Guarded {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, axum::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        http_body::Body::is_end_stream(&self.inner)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::Body::size_hint(&self.inner)
    }
}

/// An HTTP/1 request's body, which tells its connection's [`Activity`] once it was read to
/// its end.
struct Tracked {
    inner: Incoming,
    activity: Arc<Activity>,
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, hyper::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.activity.body_read.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A TCP stream that tells its connection's [`Activity`] when bytes move, and gives hyper's
/// automatic error answers a JSON body (see [`crate::parse_errors`]).
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
    /// A rewritten error answer, and how much of it is written.
    replacement: Option<(Vec<u8>, usize)>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Watched<S> {
    /// Whether `bufs` is hyper's own error answer (written with no request in flight), and
    /// if so, queues its replacement.
    fn intercept(&mut self, bufs: &[std::io::IoSlice<'_>]) -> bool {
        if self.replacement.is_some() {
            return true; // the rest of the original answer: dropped
        }
        if self.activity.in_flight.load(Ordering::Acquire) != 0 {
            return false;
        }
        // Cheap checks first: hyper's error answers are short and start with a status line;
        // everything else (the tail of a large response, say) passes untouched and uncopied.
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        let starts_as_status = bufs
            .iter()
            .find(|b| !b.is_empty())
            .is_some_and(|b| b.starts_with(b"HTTP/1.1 "));
        if len > crate::parse_errors::MAX_HEAD_BYTES || !starts_as_status {
            return false;
        }
        let head: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        match crate::parse_errors::rewrite(&head) {
            Some(r) => {
                self.replacement = Some((r, 0));
                true
            }
            None => false,
        }
    }

    /// Writes out the queued replacement, if any.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while let Some((bytes, done)) = &mut self.replacement {
            let Some(rest) = bytes.get(*done..).filter(|r| !r.is_empty()) else {
                return Poll::Ready(Ok(()));
            };
            match std::pin::Pin::new(&mut self.inner).poll_write(cx, rest) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()))
                }
                Poll::Ready(Ok(n)) => {
                    *done += n;
                    self.activity.wrote_some();
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read_some();
        }
        r
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.intercept(&[std::io::IoSlice::new(buf)]) {
            // Taken; the replacement goes out on flush (hyper flushes after every answer).
            return Poll::Ready(Ok(buf.len()));
        }
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote_some();
        }
        r
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if self.intercept(bufs) {
            return Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()));
        }
        let r = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote_some();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.poll_replacement(cx))?;
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.poll_replacement(cx))?;
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then stops accepting, lets the
/// requests in flight finish (for at most [`ServerLimits::drain_timeout`]) and closes every
/// connection. Returns once every connection's task has ended.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    stats: Arc<ServerStats>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with_tls(listener, router, limits, stats, None, shutdown).await
}

/// Like [`serve`], over TLS when `tls` is given: the TLS handshake must complete within
/// the header timeout, and each request carries the member its client certificate names
/// ([`crate::auth::ClientCertificate`]).
pub async fn serve_with_tls(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    stats: Arc<ServerStats>,
    tls: Option<Arc<raft_net::ServerTls>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let by_address = PerAddress::default();
    let handshakes = Handshakes {
        all: Arc::new(Semaphore::new(limits.max_handshakes.max(1))),
        by_address: PerAddress::default(),
    };
    let tracker = TaskTracker::new();
    let stop = CancellationToken::new();
    let force = CancellationToken::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff = Duration::ZERO;
    loop {
        let (stream, addr) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => {
                    backoff = Duration::ZERO;
                    x
                }
                Err(e) => {
                    ServerStats::add(&stats.accept_errors, 1);
                    backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                    tracing::warn!(error = %e, retry_in = ?backoff, "HTTP accept failed");
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            ServerStats::add(&stats.rejected, 1);
            tracing::debug!(
                limit = limits.max_connections,
                "too many HTTP connections; closing a new one"
            );
            drop(stream);
            continue;
        };
        let Some(address_slot) = by_address.take(addr.ip(), limits.max_connections_per_address)
        else {
            ServerStats::add(&stats.over_address_limit, 1);
            tracing::debug!(
                %addr,
                limit = limits.max_connections_per_address,
                "too many HTTP connections from one address; closing a new one"
            );
            drop(stream);
            continue;
        };
        ServerStats::add(&stats.accepted, 1);
        let handshakes = handshakes.clone();
        let router = router.clone();
        let stats = stats.clone();
        let stop = stop.clone();
        let force = force.clone();
        let tls = tls.clone();
        tracker.spawn(async move {
            stats.open.fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                () = serve_accepted(stream, addr, router, limits, &stats, stop, tls, handshakes) => {}
                () = force.cancelled() => {}
            }
            stats.open.fetch_sub(1, Ordering::Relaxed);
            drop(address_slot);
            drop(slot);
        });
    }
    drop(listener);
    stop.cancel();
    tracker.close();
    if tokio::time::timeout(limits.drain_timeout, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = stats.open.load(Ordering::Relaxed),
            drain_ms = limits.drain_timeout.as_millis() as u64,
            "HTTP requests still in flight after the drain period; closing their connections"
        );
        force.cancel();
        tracker.wait().await;
    }
    Ok(())
}

/// One accepted connection: the TLS handshake (within the handshake limits and timeout)
/// if any, then its requests.
#[allow(clippy::too_many_arguments)]
async fn serve_accepted(
    stream: tokio::net::TcpStream,
    addr: std::net::SocketAddr,
    router: Router,
    limits: ServerLimits,
    stats: &ServerStats,
    stop: CancellationToken,
    tls: Option<Arc<raft_net::ServerTls>>,
    handshakes: Handshakes,
) {
    let _ = stream.set_nodelay(true);
    let Some(tls) = tls else {
        return serve_connection(stream, addr, router, limits, stats, stop, None).await;
    };
    let Ok(in_handshake) = handshakes.all.clone().try_acquire_owned() else {
        ServerStats::add(&stats.handshakes_over_limit, 1);
        tracing::debug!(%addr, limit = limits.max_handshakes, "too many TLS handshakes at once; closing a new connection");
        return;
    };
    let Some(address_handshake) = handshakes
        .by_address
        .take(addr.ip(), limits.max_handshakes_per_address)
    else {
        ServerStats::add(&stats.handshakes_over_limit, 1);
        tracing::debug!(%addr, limit = limits.max_handshakes_per_address, "too many TLS handshakes from one address; closing a new connection");
        return;
    };
    let accepted = tokio::time::timeout(limits.handshake_timeout, tls.accept(stream)).await;
    drop(address_handshake);
    drop(in_handshake);
    match accepted {
        Ok(Ok((s, node))) => {
            let cert = crate::auth::ClientCertificate { node };
            serve_connection(s, addr, router, limits, stats, stop, Some(cert)).await;
        }
        Ok(Err(e)) => {
            ServerStats::add(&stats.tls_failures, 1);
            tracing::debug!(error = %e, "TLS handshake failed");
        }
        Err(_) => {
            ServerStats::add(&stats.handshake_timeouts, 1);
            tracing::debug!("closing a connection whose TLS handshake did not finish in time");
        }
    }
}

async fn serve_connection<S>(
    stream: S,
    addr: std::net::SocketAddr,
    router: Router,
    limits: ServerLimits,
    stats: &ServerStats,
    stop: CancellationToken,
    cert: Option<crate::auth::ClientCertificate>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
        replacement: None,
    });
    let served = activity.clone();
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        if let Some(c) = cert {
            req.extensions_mut().insert(c);
        }
        req.extensions_mut()
            .insert(crate::streams::ClientAddr(addr));
        let router = router.clone();
        let activity = served.clone();
        activity.request_started(req.version());
        let guard = ResponseGuard(activity.clone());
        // An HTTP/1 request whose body is left unread cannot be followed by another on its
        // connection (a 413, a refusal before the body was looked at).
        let watch_body =
            req.version() < hyper::Version::HTTP_2 && !http_body::Body::is_end_stream(req.body());
        activity.body_read.store(!watch_body, Ordering::Release);
        let req = if watch_body {
            let activity = activity.clone();
            req.map(|inner| Body::new(Tracked { inner, activity }))
        } else {
            req.map(Body::new)
        };
        async move {
            let response = router.oneshot(req).await;
            activity.handler_returned();
            let mut response = match response {
                Ok(r) => r.map(|inner| {
                    Body::new(Guarded {
                        inner,
                        _guard: guard,
                    })
                }),
                Err(never) => match never {},
            };
            if !activity.body_read.load(Ordering::Acquire) {
                response.headers_mut().insert(
                    axum::http::header::CONNECTION,
                    axum::http::HeaderValue::from_static("close"),
                );
            }
            Ok::<_, Infallible>(response)
        }
    });
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .http2()
        .max_concurrent_streams(limits.max_http2_streams);
    let conn = builder.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    // When a graceful close was asked for (idle, or the server stopping).
    let mut closing_since: Option<u64> = None;
    loop {
        let wake = match activity.check(&limits, closing_since) {
            Due::HeaderTimeout => {
                ServerStats::add(&stats.header_timeouts, 1);
                tracing::debug!("closing a connection whose headers did not arrive in time");
                return; // dropping the connection closes it
            }
            Due::Stalled => {
                ServerStats::add(&stats.idle_closed, 1);
                tracing::debug!("closing a connection that stopped making progress");
                return;
            }
            Due::Idle => {
                ServerStats::add(&stats.idle_closed, 1);
                conn.as_mut().graceful_shutdown();
                closing_since = Some(activity.now());
                continue;
            }
            Due::At(t) => t,
        };
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            _ = stop.cancelled(), if closing_since.is_none() => {
                conn.as_mut().graceful_shutdown();
                closing_since = Some(activity.now());
            }
            _ = tokio::time::sleep_until(wake) => {}
            _ = activity.changed.notified() => {}
        }
    }
}
