//! The accept loop and one reader task per connection.
//!
//! Limits: at most `max_pending_handshakes` connections in their handshake (more are closed
//! at once), each with `handshake_timeout`; one live connection per peer (a new one
//! replaces the old); `idle_timeout` on a connection that delivers nothing; frame buffers
//! that grow only with the bytes received; a byte budget on what waits for the node; and
//! an accept loop that backs off when `accept` fails (out of descriptors, say).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use raft_core::{Message, NodeId};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::NetConfig;
use crate::error::ConnError;
use crate::frame::{
    decode_frame, release_large_buffer, FrameCodec, HANDSHAKE_FRAME_BYTES, LENGTH_PREFIX_BYTES,
};
use crate::handshake::{decode_hello, encode_welcome, Channel, HelloReply, REFUSED};
use crate::io::BoxIo;
use crate::peers::PeerTable;
use crate::stats::{ListenerCounters, PeerCounters};
use crate::stream::PeerStream;

/// A received message on its way to the node, holding its share of the byte budget until
/// the node takes it.
pub(crate) struct Delivery {
    pub(crate) from: NodeId,
    pub(crate) msg: Message,
    pub(crate) _budget: OwnedSemaphorePermit,
}

/// The live inbound connection of each peer: (connection number, its cancellation).
type Live = Mutex<BTreeMap<NodeId, (u64, CancellationToken)>>;

/// What every reader shares.
pub(crate) struct Shared {
    pub(crate) cfg: Arc<NetConfig>,
    pub(crate) inbound: mpsc::Sender<Delivery>,
    /// Streams peers opened, for the node to take.
    pub(crate) streams: mpsc::Sender<PeerStream>,
    pub(crate) budget: Arc<Semaphore>,
    pub(crate) peers: Arc<PeerTable>,
    pub(crate) listener: Arc<ListenerCounters>,
    pub(crate) cancel: CancellationToken,
    live: Live,
    next_conn: AtomicU64,
}

impl Shared {
    pub(crate) fn new(
        cfg: Arc<NetConfig>,
        inbound: mpsc::Sender<Delivery>,
        streams: mpsc::Sender<PeerStream>,
        peers: Arc<PeerTable>,
        listener: Arc<ListenerCounters>,
        cancel: CancellationToken,
    ) -> Self {
        let budget = Arc::new(Semaphore::new(cfg.recv_queue_bytes));
        Shared {
            cfg,
            inbound,
            streams,
            budget,
            peers,
            listener,
            cancel,
            live: Mutex::new(BTreeMap::new()),
            next_conn: AtomicU64::new(0),
        }
    }
}

/// Handshakes in progress per IP address (other than the peers').
type PerIp = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// Who may be in a handshake: connections from the peers' IP addresses have their own
/// slots; any other address is limited overall and per address.
struct Admission {
    peers: Arc<PeerTable>,
    peer_slots: Arc<Semaphore>,
    other_slots: Arc<Semaphore>,
    per_ip: PerIp,
    max_per_ip: usize,
}

/// A connection's place in its handshake; given back when dropped.
pub(crate) struct HandshakeSlot {
    _slot: OwnedSemaphorePermit,
    ip: Option<(IpAddr, PerIp)>,
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        if let Some((ip, per_ip)) = self.ip.take() {
            if let Ok(mut m) = per_ip.lock() {
                if let Some(n) = m.get_mut(&ip) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        m.remove(&ip);
                    }
                }
            }
        }
    }
}

impl Admission {
    fn new(cfg: &NetConfig, peers: Arc<PeerTable>) -> Self {
        Admission {
            // Room for a cluster grown to 7 members whichever way it started.
            peer_slots: Arc::new(Semaphore::new((2 * peers.len()).max(16))),
            other_slots: Arc::new(Semaphore::new(cfg.max_pending_handshakes.max(1))),
            peers,
            per_ip: Arc::new(Mutex::new(HashMap::new())),
            max_per_ip: cfg.max_handshakes_per_ip.max(1),
        }
    }

    fn admit(&self, ip: IpAddr) -> Option<HandshakeSlot> {
        if self.peers.ips().contains(&ip) {
            let slot = self.peer_slots.clone().try_acquire_owned().ok()?;
            return Some(HandshakeSlot {
                _slot: slot,
                ip: None,
            });
        }
        let slot = self.other_slots.clone().try_acquire_owned().ok()?;
        let mut m = self.per_ip.lock().ok()?;
        let n = m.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return None; // the slot goes back as it drops
        }
        *n += 1;
        Some(HandshakeSlot {
            _slot: slot,
            ip: Some((ip, self.per_ip.clone())),
        })
    }
}

pub(crate) async fn run_acceptor(shared: Arc<Shared>, listener: TcpListener, tracker: TaskTracker) {
    let admission = Admission::new(&shared.cfg, shared.peers.clone());
    let mut backoff = Duration::ZERO;
    loop {
        let (stream, addr) = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => {
                    backoff = Duration::ZERO;
                    x
                }
                Err(e) => {
                    // Out of descriptors, typically: retrying at once would spin.
                    PeerCounters::add(&shared.listener.accept_errors, 1);
                    backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                    tracing::warn!(error = %e, retry_in = ?backoff, "accept failed");
                    tokio::select! {
                        _ = shared.cancel.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    continue;
                }
            },
        };
        let Some(handshake_slot) = admission.admit(addr.ip()) else {
            PeerCounters::add(&shared.listener.over_limit, 1);
            tracing::debug!(%addr, "too many handshakes in progress; closing the connection");
            drop(stream);
            continue;
        };
        let shared = shared.clone();
        tracker.spawn(async move {
            match serve(&shared, stream, handshake_slot).await {
                Ok(()) => {}
                Err(ConnError::Closed) => tracing::debug!(%addr, "peer closed its connection"),
                Err(e) => tracing::warn!(%addr, reason = %e, "closed inbound connection"),
            }
        });
    }
}

/// Turns TCP keepalive on, so that a peer that vanished is noticed.
pub(crate) fn keepalive(stream: &TcpStream, every: Duration) -> std::io::Result<()> {
    let ka = socket2::TcpKeepalive::new()
        .with_time(every)
        .with_interval(every);
    socket2::SockRef::from(stream).set_tcp_keepalive(&ka)
}

/// Handshake, then read messages until the connection ends, is found bad, idles out or is
/// replaced by a newer connection from the same peer.
async fn serve(
    shared: &Shared,
    stream: TcpStream,
    handshake_slot: HandshakeSlot,
) -> Result<(), ConnError> {
    let cfg = &shared.cfg;
    stream.set_nodelay(true)?;
    keepalive(&stream, cfg.keepalive)?;
    // With TLS, the dialer's certificate must be of the cluster's CA before anything else
    // is read; the node it names is checked against the hello below.
    let (io, certified): (BoxIo, Option<Option<NodeId>>) = match &cfg.tls {
        None => (Box::new(stream), None),
        Some(tls) => {
            let accepted = tokio::select! {
                _ = shared.cancel.cancelled() => return Ok(()),
                r = tokio::time::timeout(cfg.handshake_timeout, tls.accept(stream)) => r,
            };
            match accepted.map_err(|_| ConnError::Timeout)? {
                Ok((s, named)) => (Box::new(s), Some(named)),
                Err(e) => {
                    PeerCounters::add(&shared.listener.refused, 1);
                    return Err(ConnError::Refused(format!("TLS handshake failed: {e}")));
                }
            }
        }
    };
    let mut framed = Framed::new(io, FrameCodec::new(HANDSHAKE_FRAME_BYTES));
    let first = tokio::select! {
        _ = shared.cancel.cancelled() => return Ok(()),
        f = tokio::time::timeout(cfg.handshake_timeout, framed.next()) => f,
    };
    let first = first
        .map_err(|_| ConnError::Timeout)?
        .ok_or(ConnError::Closed)??;
    let (hello, versions) = decode_hello(&first).map_err(ConnError::Malformed)?;
    let known = |id: NodeId| shared.peers.contains(id);
    let checked = hello
        .check(
            versions.as_ref(),
            &cfg.cluster_id,
            cfg.id,
            known,
            &*cfg.authenticator,
            &cfg.version_floor,
        )
        .and_then(|v| match certified {
            Some(named) if named != Some(hello.from) => Err(format!(
                "the hello claims node {} but the TLS certificate names {}",
                hello.from,
                named.map_or_else(
                    || "no node of this cluster".to_string(),
                    |n| format!("node {n}")
                )
            )),
            _ => Ok(v),
        });
    let version = match checked {
        Ok(v) => v,
        Err(reason) => {
            PeerCounters::add(&shared.listener.refused, 1);
            // The dialer learns only that it was refused: the reason names this node's cluster
            // and ids, which an outsider must not learn. It goes to the local log instead.
            let reply = postcard::to_allocvec(&HelloReply::Refused(REFUSED.into()))
                .map_err(|e| ConnError::Malformed(e.to_string()))?;
            let _ = tokio::time::timeout(
                cfg.handshake_timeout,
                framed.send(bytes::Bytes::from(reply)),
            )
            .await;
            return Err(ConnError::Refused(reason));
        }
    };
    let welcome =
        encode_welcome(version.protocol).map_err(|e| ConnError::Malformed(e.to_string()))?;
    tokio::time::timeout(
        cfg.handshake_timeout,
        framed.send(bytes::Bytes::from(welcome)),
    )
    .await
    .map_err(|_| ConnError::Timeout)??;
    drop(handshake_slot);
    PeerCounters::add(&shared.listener.accepted, 1);
    // Authenticated: from now on, frames up to the configured limit.
    framed.codec_mut().set_max_frame_bytes(cfg.max_frame_bytes);
    let from = hello.from;
    let Some(peer) = shared.peers.get(from) else {
        return Err(ConnError::Refused(format!(
            "node {from} is not a known peer"
        )));
    };
    let peer_counters = peer.counters.clone();
    peer_counters.set_version(version);
    if hello.channel == Channel::Stream {
        // A bulk transfer: the node takes the connection as it is. Too many waiting to be
        // taken: this one is closed (the peer retries).
        let stream = PeerStream::new(from, framed);
        if shared.streams.try_send(stream).is_err() {
            tracing::debug!(peer = from, "too many streams waiting; closing a new one");
        }
        return Ok(());
    }
    // This connection is the peer's live one now; an older one is closed.
    let conn = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    // Closed with the transport, when a newer connection replaces it, or when the peer is
    // removed.
    let mine = peer.stop.child_token();
    let older = shared
        .live
        .lock()
        .ok()
        .and_then(|mut live| live.insert(from, (conn, mine.clone())));
    if let Some((_, old)) = older {
        PeerCounters::add(&shared.listener.replaced, 1);
        old.cancel();
    }
    tracing::debug!(peer = from, "accepted connection from peer");
    let result = read_messages(shared, &mut framed, from, &peer_counters, &mine).await;
    if let Ok(mut live) = shared.live.lock() {
        if live.get(&from).is_some_and(|(c, _)| *c == conn) {
            live.remove(&from);
        }
    }
    result
}

async fn read_messages(
    shared: &Shared,
    framed: &mut Framed<BoxIo, FrameCodec>,
    from: NodeId,
    peer_counters: &PeerCounters,
    mine: &CancellationToken,
) -> Result<(), ConnError> {
    let cfg = &shared.cfg;
    // Every wait below looks at `mine` first (`biased`): once the peer is removed (or the
    // connection replaced), nothing more of it is delivered, even a frame already read.
    // (An unbiased select picks at random among the branches that are ready.)
    loop {
        let frame = tokio::select! {
            biased;
            _ = mine.cancelled() => return Ok(()),
            f = tokio::time::timeout(cfg.idle_timeout, framed.next()) => match f {
                Err(_) => {
                    PeerCounters::add(&shared.listener.idle_closed, 1);
                    tracing::debug!(peer = from, "closing an idle connection");
                    return Ok(());
                }
                Ok(None) => return Err(ConnError::Closed),
                Ok(Some(Err(e))) => return Err(ConnError::Malformed(e.to_string())),
                Ok(Some(Ok(f))) => f,
            },
        };
        let size = frame.len() + LENGTH_PREFIX_BYTES;
        let frame = frame.freeze();
        let msg = decode_frame(&frame).map_err(|e| ConnError::Malformed(e.to_string()))?;
        drop(frame);
        release_large_buffer(framed.read_buffer_mut());
        // What the message takes in memory once decoded, which can be far more than its
        // bytes on the wire (an empty entry is a few bytes there, a whole Entry here).
        let held = size.max(memory_size(&msg));
        if msg.from != from || msg.to != cfg.id {
            return Err(ConnError::Malformed(format!(
                "message from {} to {} on the connection of node {from} to node {}",
                msg.from, msg.to, cfg.id
            )));
        }
        PeerCounters::add(&peer_counters.msgs_received, 1);
        PeerCounters::add(&peer_counters.bytes_received, size as u64);
        // Wait for room in the byte budget: a node that falls behind slows its peers down
        // (TCP pushes back) instead of queueing without bound.
        let want = u32::try_from(held.min(cfg.recv_queue_bytes)).unwrap_or(u32::MAX);
        let budget = tokio::select! {
            biased;
            _ = mine.cancelled() => return Ok(()),
            p = shared.budget.clone().acquire_many_owned(want) => match p {
                Ok(p) => p,
                Err(_) => return Ok(()),
            },
        };
        let delivery = Delivery {
            from,
            msg,
            _budget: budget,
        };
        tokio::select! {
            biased;
            _ = mine.cancelled() => return Ok(()),
            r = shared.inbound.send(delivery) => if r.is_err() { return Ok(()) },
        }
    }
}

/// Roughly the memory a decoded message holds: its entries and their payloads.
fn memory_size(msg: &Message) -> usize {
    const BASE: usize = std::mem::size_of::<Message>();
    match &msg.body {
        raft_core::MessageBody::AppendEntries { entries, .. } => {
            entries.iter().fold(BASE, |n, e| {
                n.saturating_add(std::mem::size_of::<raft_core::Entry>())
                    .saturating_add(e.data.len())
            })
        }
        _ => BASE,
    }
}
