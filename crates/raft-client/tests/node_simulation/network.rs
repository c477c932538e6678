//! The simulated network: every message goes through one hub that decides, from the run's
//! seeded generator, whether it is lost, how long it is held up (which reorders), and
//! whether it arrives twice; links can be cut one way or both, and a node frozen (its
//! messages held, not lost). Snapshot streams are in-memory pipes, refused across a cut.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raft_client::{Connect, PeerNetwork};
use raft_core::{Message, NodeId};
use raft_net::{Inbound, ListenerStats, NetConfig, NetError, PeerStats, PeerStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::rng::Rng;

const FRAME: usize = 16 << 20;

/// How the network behaves now.
#[derive(Clone, Debug)]
pub struct Weather {
    /// Chance in a thousand that a message is lost.
    pub loss_per_mille: u64,
    /// Chance in a thousand that a message is delivered twice.
    pub dup_per_mille: u64,
    /// Every message is held up for a time drawn up to this.
    pub max_delay: Duration,
    /// Chance in a thousand that a message is held up for a time drawn up to `long_delay`.
    pub long_per_mille: u64,
    /// The longest hold-up of a long-delayed message.
    pub long_delay: Duration,
}

impl Weather {
    /// A healthy network: a millisecond or two, nothing lost.
    pub fn calm() -> Weather {
        Weather {
            loss_per_mille: 0,
            dup_per_mille: 0,
            max_delay: Duration::from_millis(2),
            long_per_mille: 0,
            long_delay: Duration::ZERO,
        }
    }
}

struct Hub {
    rng: Rng,
    inboxes: BTreeMap<NodeId, mpsc::Sender<(NodeId, Message)>>,
    streams: BTreeMap<NodeId, mpsc::Sender<PeerStream>>,
    /// Links that deliver nothing, as (from, to).
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Nodes paused until then: what they send and what is sent to them is held until then.
    frozen: BTreeMap<NodeId, Instant>,
    weather: Weather,
    /// Nodes that tell their peers another release than this build's.
    releases: BTreeMap<NodeId, raft_core::Release>,
}

/// The network all simulated nodes share.
#[derive(Clone)]
pub struct SimNet(Arc<Mutex<Hub>>);

impl SimNet {
    pub fn new(rng: Rng) -> SimNet {
        SimNet(Arc::new(Mutex::new(Hub {
            rng,
            inboxes: BTreeMap::new(),
            streams: BTreeMap::new(),
            cut: BTreeSet::new(),
            frozen: BTreeMap::new(),
            weather: Weather::calm(),
            releases: BTreeMap::new(),
        })))
    }

    /// From now on `node`'s peers see it run `release` (as its handshakes would tell).
    pub fn set_release(&self, node: NodeId, release: raft_core::Release) {
        self.0.lock().unwrap().releases.insert(node, release);
    }

    /// Holds every message `node` sends or is sent until `until` (none is lost), and
    /// refuses snapshot streams to and from it meanwhile: a paused process, as its peers
    /// see it.
    pub fn freeze(&self, node: NodeId, until: Instant) {
        self.0.lock().unwrap().frozen.insert(node, until);
    }

    /// Messages from `from` to `to` are lost until healed.
    pub fn cut(&self, from: NodeId, to: NodeId) {
        self.0.lock().unwrap().cut.insert((from, to));
    }

    /// Cuts `node` off from every other node, both ways.
    pub fn isolate(&self, node: NodeId, all: &[NodeId]) {
        for &other in all {
            if other != node {
                self.cut(node, other);
                self.cut(other, node);
            }
        }
    }

    pub fn set_weather(&self, weather: Weather) {
        self.0.lock().unwrap().weather = weather;
    }

    /// Every link restored and the weather calm.
    pub fn heal(&self) {
        let mut hub = self.0.lock().unwrap();
        hub.cut.clear();
        hub.frozen.clear();
        hub.weather = Weather::calm();
    }
}

struct SimPeer {
    id: NodeId,
    net: SimNet,
    peers: Mutex<BTreeMap<NodeId, SocketAddr>>,
    streams: Mutex<Option<mpsc::Receiver<PeerStream>>>,
}

#[async_trait::async_trait]
impl Connect for SimNet {
    async fn connect(&self, cfg: NetConfig) -> Result<(Arc<dyn PeerNetwork>, Inbound), NetError> {
        let (tx, inbound) = Inbound::channel(4096);
        let (stx, srx) = mpsc::channel(8);
        {
            let mut hub = self.0.lock().unwrap();
            // A restarted node replaces its earlier incarnation: what was in flight to that
            // one is lost with it.
            hub.inboxes.insert(cfg.id, tx);
            hub.streams.insert(cfg.id, stx);
        }
        let peer = SimPeer {
            id: cfg.id,
            net: self.clone(),
            peers: Mutex::new(cfg.peers.clone()),
            streams: Mutex::new(Some(srx)),
        };
        Ok((Arc::new(peer), inbound))
    }
}

#[async_trait::async_trait]
impl PeerNetwork for SimPeer {
    fn send(&self, msg: Message) -> bool {
        let from = self.id;
        let to = msg.to;
        let mut hub = self.net.0.lock().unwrap();
        let Some(inbox) = hub.inboxes.get(&to).cloned() else {
            return false;
        };
        // A lost message looks sent, as on a real network.
        if hub.cut.contains(&(from, to)) {
            return true;
        }
        let w = hub.weather.clone();
        if hub.rng.below(1000) < w.loss_per_mille {
            return true;
        }
        let copies = if hub.rng.below(1000) < w.dup_per_mille {
            2
        } else {
            1
        };
        let now = Instant::now();
        let thawed = [from, to]
            .iter()
            .filter_map(|n| hub.frozen.get(n))
            .max()
            .map_or(Duration::ZERO, |&until| {
                until.saturating_duration_since(now)
            });
        for _ in 0..copies {
            let delay = if hub.rng.below(1000) < w.long_per_mille {
                hub.rng.duration_below(w.long_delay)
            } else {
                hub.rng.duration_below(w.max_delay)
            };
            let delay = delay.max(thawed);
            let (inbox, msg, net) = (inbox.clone(), msg.clone(), self.net.clone());
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                // Cut while in flight: lost.
                if !net.0.lock().unwrap().cut.contains(&(from, to)) {
                    let _ = inbox.try_send((from, msg));
                }
            });
        }
        true
    }
    fn set_peers(&self, peers: &BTreeMap<NodeId, SocketAddr>) {
        *self.peers.lock().unwrap() = peers.clone();
    }
    fn peers(&self) -> BTreeMap<NodeId, SocketAddr> {
        self.peers.lock().unwrap().clone()
    }
    /// Every peer runs this build, as a handshake would tell (unless the test says
    /// otherwise): the leader raises the cluster version through the log during the run.
    fn stats(&self) -> BTreeMap<NodeId, PeerStats> {
        let releases = self.net.0.lock().unwrap().releases.clone();
        self.peers
            .lock()
            .unwrap()
            .keys()
            .map(|&id| {
                let release = releases
                    .get(&id)
                    .copied()
                    .unwrap_or(raft_core::Release::CURRENT);
                let version = Some(raft_net::PeerVersion {
                    protocol: raft_core::PROTOCOL_VERSION,
                    release,
                });
                (
                    id,
                    PeerStats {
                        version,
                        ..PeerStats::default()
                    },
                )
            })
            .collect()
    }
    fn listener_stats(&self) -> ListenerStats {
        ListenerStats::default()
    }
    async fn open_stream(&self, peer: NodeId) -> std::io::Result<PeerStream> {
        let to = {
            let hub = self.net.0.lock().unwrap();
            let now = Instant::now();
            let frozen = [self.id, peer]
                .iter()
                .any(|n| hub.frozen.get(n).is_some_and(|&until| until > now));
            if frozen || hub.cut.contains(&(self.id, peer)) || hub.cut.contains(&(peer, self.id)) {
                return Err(std::io::ErrorKind::ConnectionRefused.into());
            }
            hub.streams.get(&peer).cloned()
        };
        let to = to.ok_or(std::io::ErrorKind::ConnectionRefused)?;
        let (mine, theirs) = tokio::io::duplex(1 << 16);
        to.send(PeerStream::over(self.id, theirs, FRAME))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::ConnectionRefused))?;
        Ok(PeerStream::over(peer, mine, FRAME))
    }
    fn take_streams(&self) -> Option<mpsc::Receiver<PeerStream>> {
        self.streams.lock().unwrap().take()
    }
    async fn shutdown(&self) {}
}
