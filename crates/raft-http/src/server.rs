//! The HTTP/1.1 server loop, with the limits a server on a network needs:
//!
//! - at most [`ServerLimits::max_connections`] connections at once; past it, new ones are
//!   closed at once (a file descriptor per connection is shared with the log's segments);
//! - a client must send a request's complete headers within
//!   [`ServerLimits::header_timeout`] of connecting or of starting the request (slow or
//!   half-sent headers cannot hold a connection);
//! - a keep-alive connection with no request in flight for
//!   [`ServerLimits::idle_timeout`] is closed;
//! - `accept` failures (out of descriptors, say) back off instead of spinning.
//!
//! The request timeout is a layer of the router (see [`crate::router`]).

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
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
    /// Time allowed for a request's headers, from the connection's start or from the first
    /// byte of the request. Default 10 s.
    pub header_timeout: Duration,
    /// A connection with no request in flight and no traffic for this long is closed.
    /// Default 60 s.
    pub idle_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: 4096,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
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
}

impl ServerStats {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Connections open now.
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }
}

/// A connection's clock: when it last moved bytes, whether a request is being served, and
/// since when it waits for a request's headers.
struct Activity {
    base: Instant,
    /// Nanoseconds since `base` of the last byte read or written.
    last_io: AtomicU64,
    /// Nanoseconds since `base` plus one when headers started arriving (0: not waiting).
    head_since: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Activity {
            base: Instant::now(),
            last_io: AtomicU64::new(0),
            // A new connection waits for its first request's headers from the start.
            head_since: AtomicU64::new(1),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn now(&self) -> u64 {
        self.base.elapsed().as_nanos().min(u128::from(u64::MAX - 1)) as u64
    }

    fn read_some(&self) {
        let now = self.now();
        self.last_io.store(now, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Acquire) == 0 {
            // Bytes with no request in flight: the headers of the next one.
            let _ =
                self.head_since
                    .compare_exchange(0, now + 1, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    fn wrote_some(&self) {
        self.last_io.store(self.now(), Ordering::Relaxed);
    }

    fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_since.store(0, Ordering::Release);
    }

    fn request_done(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.wrote_some();
    }

    /// What is due: the headers' deadline passed, the idle deadline passed, or the next
    /// moment to look again.
    fn check(&self, limits: &ServerLimits) -> Due {
        let now = self.now();
        let head = self.head_since.load(Ordering::Acquire);
        let header_deadline =
            (head != 0).then(|| (head - 1).saturating_add(limits.header_timeout.as_nanos() as u64));
        if header_deadline.is_some_and(|d| now >= d) {
            return Due::HeaderTimeout;
        }
        let idle_deadline = (self.in_flight.load(Ordering::Acquire) == 0).then(|| {
            self.last_io
                .load(Ordering::Relaxed)
                .saturating_add(limits.idle_timeout.as_nanos() as u64)
        });
        if idle_deadline.is_some_and(|d| now >= d) {
            return Due::Idle;
        }
        let next = match (header_deadline, idle_deadline) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            // A request is being served: look again after a while.
            (None, None) => now.saturating_add(limits.idle_timeout.as_nanos() as u64),
        };
        Due::At(self.base + Duration::from_nanos(next))
    }
}

enum Due {
    HeaderTimeout,
    Idle,
    At(Instant),
}

/// A TCP stream that tells its connection's [`Activity`] when bytes move.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
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

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
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
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then stops accepting, lets the
/// requests in flight finish and closes every connection.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    stats: Arc<ServerStats>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let tracker = TaskTracker::new();
    let stop = CancellationToken::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff = Duration::ZERO;
    loop {
        let (stream, _addr) = tokio::select! {
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
        ServerStats::add(&stats.accepted, 1);
        let router = router.clone();
        let stats = stats.clone();
        let stop = stop.clone();
        tracker.spawn(async move {
            stats.open.fetch_add(1, Ordering::Relaxed);
            serve_connection(stream, router, limits, &stats, stop).await;
            stats.open.fetch_sub(1, Ordering::Relaxed);
            drop(slot);
        });
    }
    drop(listener);
    stop.cancel();
    tracker.close();
    tracker.wait().await;
    Ok(())
}

async fn serve_connection(
    stream: TcpStream,
    router: Router,
    limits: ServerLimits,
    stats: &ServerStats,
    stop: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let served = activity.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let router = router.clone();
        let activity = served.clone();
        activity.request_started();
        async move {
            let response = router.oneshot(req.map(Body::new)).await;
            activity.request_done();
            Ok::<_, Infallible>(match response {
                Ok(r) => r,
                Err(never) => match never {},
            })
        }
    });
    let builder = hyper::server::conn::http1::Builder::new();
    let conn = builder.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let mut closing = false;
    loop {
        let wake = match activity.check(&limits) {
            Due::HeaderTimeout => {
                ServerStats::add(&stats.header_timeouts, 1);
                tracing::debug!("closing a connection whose headers did not arrive in time");
                return; // dropping the connection closes it
            }
            Due::Idle if !closing => {
                ServerStats::add(&stats.idle_closed, 1);
                conn.as_mut().graceful_shutdown();
                closing = true;
                None
            }
            Due::Idle => None,
            Due::At(t) => Some(t),
        };
        let sleep = async {
            match wake {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            _ = stop.cancelled(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = sleep => {}
        }
    }
}
