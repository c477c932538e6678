//! The transport: a listener for peers' connections and one writer per peer.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use std::sync::atomic::Ordering;

use raft_core::{Message, NodeId};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::NetConfig;
use crate::error::NetError;
use crate::frame::LENGTH_PREFIX_BYTES;
use crate::inbound::{run_acceptor, Delivery, Shared};
use crate::outbound::{run_writer, Queued};
use crate::peers::{PeerSlot, PeerTable};
use crate::stats::{ListenerCounters, ListenerStats, PeerCounters, PeerStats};
use crate::stream::PeerStream;

/// Messages received from peers: `(sender, message)`, in order per connection. Bounded in
/// count ([`NetConfig::recv_queue`]) and in bytes ([`NetConfig::recv_queue_bytes`]): a
/// message gives its bytes back when it is taken from here.
pub struct Inbound {
    rx: Receiving,
}

enum Receiving {
    /// From this crate's transport, each message holding its share of the byte budget.
    Transport(mpsc::Receiver<Delivery>),
    /// From another transport (see [`Inbound::channel`]).
    Plain(mpsc::Receiver<(NodeId, Message)>),
}

impl Inbound {
    /// An inbound queue fed by another transport (a simulated network): what is sent on the
    /// returned sender is received here, in order. Bounded to `capacity` messages.
    pub fn channel(capacity: usize) -> (mpsc::Sender<(NodeId, Message)>, Inbound) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            tx,
            Inbound {
                rx: Receiving::Plain(rx),
            },
        )
    }

    /// The next message; `None` once the transport is shut down.
    pub async fn recv(&mut self) -> Option<(NodeId, Message)> {
        match &mut self.rx {
            Receiving::Transport(rx) => rx.recv().await.map(|d| (d.from, d.msg)),
            Receiving::Plain(rx) => rx.recv().await,
        }
    }

    /// The next message if one is waiting.
    pub fn try_recv(&mut self) -> Result<(NodeId, Message), mpsc::error::TryRecvError> {
        match &mut self.rx {
            Receiving::Transport(rx) => rx.try_recv().map(|d| (d.from, d.msg)),
            Receiving::Plain(rx) => rx.try_recv(),
        }
    }
}

/// Framed TCP between this node and its peers.
///
/// [`send`](Self::send) never blocks: each peer has a bounded queue drained by a writer task
/// that owns one persistent connection; when the queue is full the message is dropped and
/// counted (Raft tolerates loss). Received messages arrive on the [`Inbound`] channel.
/// Dropping the transport, or [`shutdown`](Self::shutdown), ends every task and closes the
/// listener. The peers can change at runtime ([`set_peers`](Self::set_peers)).
pub struct Transport {
    id: NodeId,
    local_addr: SocketAddr,
    peers: Arc<PeerTable>,
    send_queue_bytes: u64,
    listener: Arc<ListenerCounters>,
    cfg: Arc<NetConfig>,
    streams: std::sync::Mutex<Option<mpsc::Receiver<PeerStream>>>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Transport {
    /// Binds the listener and starts the tasks. Must be called within a tokio runtime.
    pub async fn start(cfg: NetConfig) -> Result<(Transport, Inbound), NetError> {
        let listener = TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| NetError::Bind {
                addr: cfg.listen,
                source,
            })?;
        Self::start_with_listener(cfg, listener)
    }

    /// Starts on an already bound listener (`cfg.listen` is then informational), for callers
    /// that pick free ports before they know every peer's address.
    pub fn start_on(
        cfg: NetConfig,
        listener: std::net::TcpListener,
    ) -> Result<(Transport, Inbound), NetError> {
        let addr = cfg.listen;
        let bind_err = |source| NetError::Bind { addr, source };
        listener.set_nonblocking(true).map_err(bind_err)?;
        let listener =
            TcpListener::from_std(listener).map_err(|source| NetError::Bind { addr, source })?;
        Self::start_with_listener(cfg, listener)
    }

    fn start_with_listener(
        cfg: NetConfig,
        listener: TcpListener,
    ) -> Result<(Transport, Inbound), NetError> {
        if cfg.peers.contains_key(&cfg.id) {
            return Err(NetError::Config(format!(
                "node {} lists itself among its peers",
                cfg.id
            )));
        }
        if cfg.send_queue == 0 || cfg.recv_queue == 0 {
            return Err(NetError::Config("queue sizes must be at least 1".into()));
        }
        if cfg.recv_queue_bytes < cfg.max_frame_bytes + LENGTH_PREFIX_BYTES {
            return Err(NetError::Config(format!(
                "recv_queue_bytes ({}) must hold at least one frame of max_frame_bytes ({}) + {LENGTH_PREFIX_BYTES}",
                cfg.recv_queue_bytes, cfg.max_frame_bytes
            )));
        }
        if cfg.keepalive.is_zero() || cfg.idle_timeout.is_zero() || cfg.handshake_timeout.is_zero()
        {
            return Err(NetError::Config(
                "keepalive, idle_timeout and handshake_timeout must be longer than zero".into(),
            ));
        }
        if cfg.recv_queue_bytes > u32::MAX as usize {
            return Err(NetError::Config(format!(
                "recv_queue_bytes ({}) must be at most {}",
                cfg.recv_queue_bytes,
                u32::MAX
            )));
        }
        let local_addr = listener.local_addr().map_err(|source| NetError::Bind {
            addr: cfg.listen,
            source,
        })?;
        let cfg = Arc::new(cfg);
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let listener_counters = Arc::new(ListenerCounters::default());
        let (in_tx, in_rx) = mpsc::channel(cfg.recv_queue);
        let (streams_tx, streams_rx) = mpsc::channel(4);
        let peers = Arc::new(PeerTable::default());
        peers.replace(&cfg.peers, |peer, addr, counters| {
            start_writer(&cfg, &cancel, &tracker, peer, addr, counters)
        });
        let shared = Arc::new(Shared::new(
            cfg.clone(),
            in_tx,
            streams_tx,
            peers.clone(),
            listener_counters.clone(),
            cancel.clone(),
        ));
        tracker.spawn(run_acceptor(shared, listener, tracker.clone()));
        tracing::info!(id = cfg.id, %local_addr, peers = cfg.peers.len(), "transport listening");
        Ok((
            Transport {
                id: cfg.id,
                local_addr,
                peers,
                send_queue_bytes: cfg.send_queue_bytes,
                listener: listener_counters,
                cfg: cfg.clone(),
                streams: std::sync::Mutex::new(Some(streams_rx)),
                cancel,
                tracker,
            },
            Inbound {
                rx: Receiving::Transport(in_rx),
            },
        ))
    }

    /// The address the listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Replaces the set of peers (this node left out): writers start for new peers, peers
    /// no longer listed are disconnected (their connections in both directions close, and
    /// their handshakes are refused from now on), a peer whose address changed is
    /// reconnected there. Counters of peers that stay are kept.
    pub fn set_peers(&self, peers: &BTreeMap<NodeId, SocketAddr>) {
        let mut peers = peers.clone();
        peers.remove(&self.id);
        let before = self.peers.addresses();
        if before == peers {
            return;
        }
        self.peers.replace(&peers, |peer, addr, counters| {
            start_writer(&self.cfg, &self.cancel, &self.tracker, peer, addr, counters)
        });
        tracing::info!(id = self.id, ?peers, "peers changed");
    }

    /// The peers and their addresses.
    pub fn peers(&self) -> BTreeMap<NodeId, SocketAddr> {
        self.peers.addresses()
    }

    /// Queues `msg` for `msg.to`. Returns false if it was dropped: unknown peer, or its
    /// queue is full in messages or bytes (counted in [`PeerStats::msgs_dropped`]).
    pub fn send(&self, msg: Message) -> bool {
        if msg.to == self.id {
            return false;
        }
        let to = msg.to;
        self.peers
            .with(to, |slot| self.send_to(slot, msg))
            .unwrap_or(false)
    }

    fn send_to(&self, slot: &PeerSlot, msg: Message) -> bool {
        let (q, c) = (&slot.queue, &slot.counters);
        let bytes = msg.size_hint();
        // One message always fits an empty queue; otherwise the byte bound holds.
        let admitted = c
            .queued_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                (queued == 0 || queued.saturating_add(bytes) <= self.send_queue_bytes)
                    .then(|| queued.saturating_add(bytes))
            })
            .is_ok();
        if !admitted {
            PeerCounters::add(&c.msgs_dropped, 1);
            return false;
        }
        match q.try_send(Queued { msg, bytes }) {
            Ok(()) => true,
            Err(_) => {
                c.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
                PeerCounters::add(&c.msgs_dropped, 1);
                false
            }
        }
    }

    /// Counters of every peer.
    pub fn stats(&self) -> BTreeMap<NodeId, PeerStats> {
        self.peers
            .ids_and_counters()
            .into_iter()
            .map(|(id, c)| (id, c.snapshot()))
            .collect()
    }

    /// Opens a stream to `peer` for a bulk transfer: a new connection, authenticated like
    /// the message connections, carrying frames both ways.
    pub async fn open_stream(&self, peer: NodeId) -> Result<PeerStream, std::io::Error> {
        let addr = self.peers.get(peer).map(|p| p.addr).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("node {peer} is not a peer"),
            )
        })?;
        let connect = crate::outbound::connect_stream(&self.cfg, peer, addr);
        tokio::select! {
            _ = self.cancel.cancelled() => Err(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "the transport is shutting down",
            )),
            r = tokio::time::timeout(self.cfg.handshake_timeout, connect) => match r {
                Ok(r) => r,
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connecting a stream to node {peer} timed out"),
                )),
            },
        }
    }

    /// The streams peers open to this node, once: the first call gets the receiver.
    pub fn take_streams(&self) -> Option<mpsc::Receiver<PeerStream>> {
        self.streams.lock().ok().and_then(|mut s| s.take())
    }

    /// The listener's counters: handshakes accepted and refused, connections over the
    /// handshake limit, replaced or closed idle, failed accepts.
    pub fn listener_stats(&self) -> ListenerStats {
        self.listener.snapshot()
    }

    /// Stops every task, closes the listener and connections, and waits for them.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// Starts the writer task of `peer` and returns its slot.
fn start_writer(
    cfg: &Arc<NetConfig>,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
    peer: NodeId,
    addr: SocketAddr,
    counters: Arc<PeerCounters>,
) -> PeerSlot {
    let (tx, rx) = mpsc::channel(cfg.send_queue);
    let stop = cancel.child_token();
    tracker.spawn(run_writer(
        cfg.clone(),
        peer,
        addr,
        rx,
        counters.clone(),
        stop.clone(),
    ));
    PeerSlot {
        addr,
        counters,
        queue: tx,
        stop,
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
