//! The HTTP server loop's connection limits, on a small router: header timeout, idle
//! timeout, stalled responses, slow but progressing responses, connection limit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use raft_http::{serve, ServerLimits, ServerStats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const REQUEST: &[u8] = b"GET /small HTTP/1.1\r\nHost: t\r\n\r\n";

fn router() -> Router {
    Router::new()
        .route("/small", get(|| async { "ok" }))
        .route("/big", get(|| async { vec![b'x'; 64 << 20] }))
        .route(
            "/slow",
            get(|| async {
                // A body that trickles out: one chunk every 100 ms, 2 s in all.
                let chunks = futures_chunks();
                axum::body::Body::from_stream(chunks)
            }),
        )
}

fn futures_chunks(
) -> impl futures_core_stream::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send {
    futures_core_stream::unfold(0u32, |n| async move {
        if n == 20 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        Some((Ok(bytes::Bytes::from_static(b"chunk\n")), n + 1))
    })
}

mod futures_core_stream {
    pub use futures_util::stream::{unfold, Stream};
}

async fn start(limits: ServerLimits) -> (std::net::SocketAddr, Arc<ServerStats>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stats = Arc::new(ServerStats::default());
    tokio::spawn(serve(
        listener,
        router(),
        limits,
        stats.clone(),
        std::future::pending(),
    ));
    (addr, stats)
}

/// Reads until the server closes the connection; returns what was read and when it closed.
async fn read_until_closed(s: &mut TcpStream, within: Duration) -> (Vec<u8>, Instant) {
    let mut all = Vec::new();
    let mut buf = [0u8; 65536];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (all, Instant::now()),
            Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the connection was still open after {within:?}"),
        }
    }
}

fn limits(header_ms: u64, idle_ms: u64) -> ServerLimits {
    ServerLimits {
        max_connections: 64,
        header_timeout: Duration::from_millis(header_ms),
        idle_timeout: Duration::from_millis(idle_ms),
        ..ServerLimits::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
    let (addr, stats) = start(limits(300, 60_000)).await;
    let opened = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let (_, closed) = read_until_closed(&mut s, Duration::from_secs(10)).await;
    assert!(closed - opened >= Duration::from_millis(300));
    assert_eq!(stats.snapshot().header_timeouts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_is_closed_after_the_idle_timeout_not_the_header_timeout() {
    let (addr, _) = start(limits(200, 1_500)).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(REQUEST).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(std::str::from_utf8(&buf[..n])
        .unwrap()
        .starts_with("HTTP/1.1 200"));
    let answered = Instant::now();
    let (_, closed) = read_until_closed(&mut s, Duration::from_secs(10)).await;
    assert!(
        closed - answered >= Duration::from_millis(1_400),
        "closed after {:?}: the header timeout must not apply between requests",
        closed - answered
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_headers_after_a_response_are_closed_after_the_header_timeout() {
    let (addr, _) = start(limits(300, 60_000)).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(REQUEST).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(std::str::from_utf8(&buf[..n])
        .unwrap()
        .starts_with("HTTP/1.1 200"));
    s.write_all(b"GET /small HTTP/1.1\r\nHo").await.unwrap();
    let sent = Instant::now();
    read_until_closed(&mut s, Duration::from_secs(10)).await;
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "the idle timeout (60 s) applied instead of the header timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_headers_sent_during_a_slow_response_are_timed_from_its_end() {
    let (addr, _) = start(limits(500, 60_000)).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    // Wait for the response to start, then send half of the next request's headers.
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(std::str::from_utf8(&buf[..n])
        .unwrap()
        .starts_with("HTTP/1.1 200"));
    s.write_all(b"GET /small HTTP/1.1\r\nHo").await.unwrap();
    let (got, _) = read_until_closed(&mut s, Duration::from_secs(10)).await;
    let text = String::from_utf8_lossy(&buf[..n]).to_string() + &String::from_utf8_lossy(&got);
    // The slow response (2 s, well past the header timeout) was not cut...
    assert_eq!(text.matches("chunk\n").count(), 20, "{text}");
    // ...and the half-sent request then got the header timeout, not the idle one.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_nobody_reads_is_dropped_after_the_idle_timeout() {
    let (addr, stats) = start(limits(1_000, 500)).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    // Never read: the server's writes stall once the socket buffers are full.
    let start = Instant::now();
    while stats.open() > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "a stalled response kept its connection"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_response_that_makes_progress_is_not_cut_by_the_timeouts() {
    let (addr, _) = start(limits(300, 500)).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    // The slow request, and right behind it the next one, whole.
    let mut two = b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n".to_vec();
    two.extend_from_slice(b"GET /small HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    s.write_all(&two).await.unwrap();
    let (got, _) = read_until_closed(&mut s, Duration::from_secs(20)).await;
    let text = String::from_utf8_lossy(&got);
    assert_eq!(text.matches("chunk\n").count(), 20, "{text}");
    assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "{text}");
    assert!(text.trim_end().ends_with("ok"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_are_closed_at_once() {
    let mut l = limits(30_000, 60_000);
    l.max_connections = 2;
    let (addr, stats) = start(l).await;
    let a = TcpStream::connect(addr).await.unwrap();
    let b = TcpStream::connect(addr).await.unwrap();
    let start = Instant::now();
    while stats.open() < 2 {
        assert!(start.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut c = TcpStream::connect(addr).await.unwrap();
    read_until_closed(&mut c, Duration::from_secs(5)).await;
    assert_eq!(stats.snapshot().rejected, 1);
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_shutdown_a_request_that_never_finishes_is_dropped_after_the_drain_timeout() {
    // A handler that holds a share of the application's state and never answers.
    let held = Arc::new(());
    let in_handler = Arc::new(tokio::sync::Notify::new());
    let app = {
        let (held, in_handler) = (held.clone(), in_handler.clone());
        Router::new().route(
            "/forever",
            get(move || {
                let (held, in_handler) = (held.clone(), in_handler.clone());
                async move {
                    in_handler.notify_one();
                    std::future::pending::<()>().await;
                    drop(held);
                }
            }),
        )
    };
    let mut l = limits(30_000, 60_000);
    l.drain_timeout = Duration::from_millis(300);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        listener,
        app,
        l,
        Arc::new(ServerStats::default()),
        async move {
            let _ = stopped.await;
        },
    ));
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /forever HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), in_handler.notified())
        .await
        .expect("the request never reached its handler");
    assert_eq!(Arc::strong_count(&held), 3, "router and handler hold it");

    let stopping = Instant::now();
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server never returned: a request held it past the drain timeout")
        .unwrap()
        .unwrap();
    assert!(
        stopping.elapsed() >= Duration::from_millis(300),
        "the request got its drain period"
    );
    assert_eq!(
        Arc::strong_count(&held),
        1,
        "nothing of the router outlives the server"
    );
    read_until_closed(&mut s, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_answer_given_before_the_request_body_was_read_closes_the_connection() {
    let app = Router::new()
        .route(
            "/ignores",
            axum::routing::post(|| async { (axum::http::StatusCode::FORBIDDEN, "no") }),
        )
        .route(
            "/reads",
            axum::routing::post(|body: bytes::Bytes| async move { body.len().to_string() }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(
        listener,
        app,
        limits(30_000, 60_000),
        Arc::new(ServerStats::default()),
        std::future::pending(),
    ));
    let body = vec![b'x'; 256 << 10];
    let head = |path: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
    };
    // A handler that reads the body: the connection stays open for the next request.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(head("/reads").as_bytes()).await.unwrap();
    s.write_all(&body).await.unwrap();
    let answer = answer_head(&mut s).await;
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    assert!(!answer.contains("connection: close"), "{answer}");

    // A handler that answers without reading it: the answer says the connection closes.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(head("/ignores").as_bytes()).await.unwrap();
    let answer = answer_head(&mut s).await;
    assert!(answer.starts_with("http/1.1 403"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
}

/// The status line and headers of the next answer on `s`, lowercased.
async fn answer_head(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed before answering: {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).to_ascii_lowercase()
}
