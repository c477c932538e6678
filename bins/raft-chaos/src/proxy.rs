//! A fault-injecting TCP proxy in front of each member's Raft port, so that partitions and
//! latency need no root.
//!
//! Every member dials the others at their proxies' addresses (the proxies' addresses are
//! what `peers.json` lists; each node listens on another port, `--raft-listen`). A proxy
//! reads the hello that opens each connection to learn who dials (the transport's
//! handshake names the dialer), then forwards bytes both ways under the fault set for the
//! link *dialer → this member*:
//!
//! - **blocked**: the connection turns into a black hole (bytes are read and dropped, nothing
//!   is forwarded, as with packets lost on a cut link); new connections are held the same
//!   way. When the link heals, those connections are closed, and the dialer reconnects.
//! - **delay**: each chunk is forwarded that long after it arrived, in order.
//! - **rate**: at most this many bytes a second are forwarded each way (a thin link), over
//!   all of the link's connections together (messages, snapshot streams, a reconnection
//!   while an old connection drains); what exceeds it waits in order, as in a router's
//!   queue, and then takes the delay.
//!
//! A connection carries the dialer's messages to this member (and, for a snapshot stream,
//! the replies), so blocking `a → b` loses what `a` sends to `b` while `b` still reaches
//! `a`: a one-way partition at the level of messages.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A node's id, as the cluster numbers it.
pub type NodeId = u64;

/// The faults on one directed link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkFault {
    /// Whatever the sender sends on this link is lost.
    pub blocked: bool,
    /// Added to everything sent on this link.
    pub delay: Duration,
    /// Bytes per second the link carries at most (0: no limit).
    pub rate: u64,
}

/// The faults of every directed link, shared by all proxies.
#[derive(Debug, Default)]
pub struct Links {
    faults: Mutex<HashMap<(NodeId, NodeId), LinkFault>>,
    /// For rate-limited links: when each direction (dialer → member: `true`) is free again.
    free_at: Mutex<HashMap<(NodeId, NodeId, bool), Instant>>,
}

impl Links {
    /// The faults on `from → to`.
    pub fn get(&self, from: NodeId, to: NodeId) -> LinkFault {
        match self.faults.lock() {
            Ok(m) => m.get(&(from, to)).copied().unwrap_or_default(),
            Err(p) => p.into_inner().get(&(from, to)).copied().unwrap_or_default(),
        }
    }

    /// Sets the faults on `from → to`.
    pub fn set(&self, from: NodeId, to: NodeId, fault: LinkFault) {
        let mut m = match self.faults.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        if fault == LinkFault::default() {
            m.remove(&(from, to));
        } else {
            m.insert((from, to), fault);
        }
    }

    /// Reserves the time `bytes` take on the link `from → to` (`forward`: the dialer's
    /// direction) at `rate` bytes a second, after what is already reserved; when they are
    /// through.
    fn reserve(&self, from: NodeId, to: NodeId, forward: bool, bytes: usize, rate: u64) -> Instant {
        let busy = Duration::from_secs_f64(bytes as f64 / rate.max(1) as f64);
        let mut m = match self.free_at.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let now = Instant::now();
        let free = m.entry((from, to, forward)).or_insert(now);
        *free = (*free).max(now) + busy;
        *free
    }

    /// Heals every link.
    pub fn heal_all(&self) {
        match self.faults.lock() {
            Ok(mut m) => m.clear(),
            Err(p) => p.into_inner().clear(),
        }
    }
}

/// Largest hello accepted (the transport's own handshake limit).
const MAX_HELLO: usize = 64 << 10;
/// How often a held connection looks whether its link healed.
const POLL: Duration = Duration::from_millis(20);

/// Starts a proxy for member `to`: accepts on `listener`, forwards to `target`.
pub fn spawn(listener: TcpListener, to: NodeId, target: SocketAddr, links: Arc<Links>) {
    tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                continue;
            };
            let _ = conn.set_nodelay(true);
            tokio::spawn(handle(conn, to, target, links.clone()));
        }
    });
}

/// Reads the framed hello that opens a connection: the raw bytes, and the dialer's id when
/// the frame is a hello.
async fn read_hello(conn: &mut TcpStream) -> Option<(Vec<u8>, Option<NodeId>)> {
    let mut prefix = [0u8; 4];
    conn.read_exact(&mut prefix).await.ok()?;
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_HELLO {
        return None;
    }
    let mut frame = vec![0u8; 4 + len];
    frame[..4].copy_from_slice(&prefix);
    conn.read_exact(&mut frame[4..]).await.ok()?;
    let from = postcard::from_bytes::<raft_net::Hello>(&frame[4..])
        .ok()
        .map(|h| h.from);
    Some((frame, from))
}

async fn handle(mut conn: TcpStream, to: NodeId, target: SocketAddr, links: Arc<Links>) {
    let Ok(Some((hello, from))) =
        tokio::time::timeout(Duration::from_secs(10), read_hello(&mut conn)).await
    else {
        return;
    };
    let Some(from) = from else {
        // Not a member's hello: forwarded untouched (the member refuses it).
        if let Ok(up) = TcpStream::connect(target).await {
            let _ = up.set_nodelay(true);
            forward_plain(conn, up, hello).await;
        }
        return;
    };
    if links.get(from, to).blocked {
        hold(conn, &links, from, to).await;
        return;
    }
    let Ok(mut up) = TcpStream::connect(target).await else {
        return;
    };
    let _ = up.set_nodelay(true);
    if up.write_all(&hello).await.is_err() {
        return;
    }
    let (cr, cw) = conn.into_split();
    let (ur, uw) = up.into_split();
    let forward = pump(cr, uw, links.clone(), from, to, true);
    let back = pump(ur, cw, links.clone(), from, to, false);
    // Either direction ending (or turning into a black hole that healed) ends both.
    tokio::select! {
        _ = forward => {}
        _ = back => {}
    }
}

/// A connection on a blocked link: read and drop until the link heals, then close.
async fn hold(mut conn: TcpStream, links: &Links, from: NodeId, to: NodeId) {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        if !links.get(from, to).blocked {
            return;
        }
        match tokio::time::timeout(POLL, conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) | Err(_) => {}
        }
    }
}

/// Copies `r` to `w` under the link's faults. Returns when either side closes, or when a
/// link that was blocked heals (the connection is then dropped).
async fn pump<R, W>(mut r: R, mut w: W, links: Arc<Links>, from: NodeId, to: NodeId, forward: bool)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(256);
    let writer = tokio::spawn(async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if w.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let mut buf = vec![0u8; 64 << 10];
    let mut dropping = false;
    loop {
        let n = match tokio::time::timeout(POLL, r.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => n,
            Err(_) => 0,
        };
        let fault = links.get(from, to);
        if fault.blocked {
            dropping = true;
            continue;
        }
        if dropping {
            // The link healed: what was lost is lost; the dialer starts over.
            break;
        }
        if n == 0 {
            continue;
        }
        // Through the link's queue (if it has a rate), then across it.
        let through = if fault.rate > 0 {
            links.reserve(from, to, forward, n, fault.rate)
        } else {
            Instant::now()
        };
        if tx
            .send((through + fault.delay, buf[..n].to_vec()))
            .await
            .is_err()
        {
            break;
        }
    }
    drop(tx);
    writer.abort();
}

async fn forward_plain(conn: TcpStream, mut up: TcpStream, first: Vec<u8>) {
    if up.write_all(&first).await.is_err() {
        return;
    }
    let (mut cr, mut cw) = conn.into_split();
    let (mut ur, mut uw) = up.into_split();
    tokio::select! {
        _ = tokio::io::copy(&mut cr, &mut uw) => {}
        _ = tokio::io::copy(&mut ur, &mut cw) => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// An echo server standing in for a member, behind a proxy for member 2.
    async fn echo_behind_proxy(links: Arc<Links>) -> SocketAddr {
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = server.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = server.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = c.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = front.local_addr().unwrap();
        spawn(front, 2, target, links);
        addr
    }

    async fn dial_as(from: NodeId, proxy: SocketAddr) -> TcpStream {
        let mut c = TcpStream::connect(proxy).await.unwrap();
        let hello = postcard::to_allocvec(&raft_net::Hello::new("c", from, 2)).unwrap();
        c.write_all(&(hello.len() as u32).to_be_bytes())
            .await
            .unwrap();
        c.write_all(&hello).await.unwrap();
        // The echo sends the hello back.
        let mut back = vec![0u8; 4 + hello.len()];
        c.read_exact(&mut back).await.unwrap();
        c
    }

    async fn echo_within(c: &mut TcpStream, within: Duration) -> bool {
        c.write_all(b"ping").await.unwrap();
        let mut b = [0u8; 4];
        matches!(
            tokio::time::timeout(within, c.read_exact(&mut b)).await,
            Ok(Ok(_))
        )
    }

    #[tokio::test]
    async fn a_blocked_link_loses_the_dialers_bytes_and_others_are_untouched_then_it_heals() {
        let links = Arc::new(Links::default());
        let proxy = echo_behind_proxy(links.clone()).await;
        let mut one = dial_as(1, proxy).await;
        let mut three = dial_as(3, proxy).await;
        assert!(echo_within(&mut one, Duration::from_secs(2)).await);
        links.set(
            1,
            2,
            LinkFault {
                blocked: true,
                ..LinkFault::default()
            },
        );
        assert!(
            !echo_within(&mut one, Duration::from_millis(300)).await,
            "1 → 2 is cut"
        );
        assert!(
            echo_within(&mut three, Duration::from_secs(2)).await,
            "3 → 2 still works"
        );
        links.heal_all();
        // The held connection is closed once the link heals; a new one works.
        let mut b = [0u8; 1];
        let closed = tokio::time::timeout(Duration::from_secs(2), one.read(&mut b)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
        let mut again = dial_as(1, proxy).await;
        assert!(echo_within(&mut again, Duration::from_secs(2)).await);
    }

    #[tokio::test]
    async fn a_delayed_link_delivers_late_and_in_order() {
        let links = Arc::new(Links::default());
        let proxy = echo_behind_proxy(links.clone()).await;
        let mut c = dial_as(1, proxy).await;
        links.set(
            1,
            2,
            LinkFault {
                delay: Duration::from_millis(150),
                ..LinkFault::default()
            },
        );
        let t0 = std::time::Instant::now();
        c.write_all(b"abc").await.unwrap();
        c.write_all(b"def").await.unwrap();
        let mut b = [0u8; 6];
        c.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"abcdef");
        assert!(t0.elapsed() >= Duration::from_millis(150));
    }

    #[tokio::test]
    async fn a_rate_limited_link_carries_no_more_than_its_rate() {
        let links = Arc::new(Links::default());
        let proxy = echo_behind_proxy(links.clone()).await;
        let mut c = dial_as(1, proxy).await;
        links.set(
            1,
            2,
            LinkFault {
                rate: 100_000,
                ..LinkFault::default()
            },
        );
        // 40 kB each way at 100 kB/s: at least 0.4 s there (the echo's way back is
        // limited too, but overlaps).
        let data = vec![9u8; 40_000];
        let t0 = std::time::Instant::now();
        let (mut r, mut w) = c.split();
        let send = async { w.write_all(&data).await.unwrap() };
        let mut back = vec![0u8; data.len()];
        let recv = async { r.read_exact(&mut back).await.unwrap() };
        tokio::join!(send, recv);
        assert_eq!(back, data);
        assert!(
            t0.elapsed() >= Duration::from_millis(350),
            "{:?}",
            t0.elapsed()
        );
    }
}
