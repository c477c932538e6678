//! The peers a transport talks to, which change at runtime as the cluster's membership
//! does: each has an address, counters, the queue of its writer task and a token that stops
//! its writer and its inbound connection when it is removed or moves.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};

use raft_core::NodeId;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::outbound::Queued;
use crate::stats::PeerCounters;

/// One peer.
#[derive(Clone)]
pub(crate) struct PeerSlot {
    pub(crate) addr: SocketAddr,
    pub(crate) counters: Arc<PeerCounters>,
    pub(crate) queue: mpsc::Sender<Queued>,
    /// Cancelled when the peer is removed or its address changes.
    pub(crate) stop: CancellationToken,
}

/// Every peer, behind a lock that is taken for reading on every send and for writing only
/// when the membership changes.
#[derive(Default)]
pub(crate) struct PeerTable {
    slots: RwLock<BTreeMap<NodeId, PeerSlot>>,
}

impl PeerTable {
    pub(crate) fn get(&self, id: NodeId) -> Option<PeerSlot> {
        self.slots.read().ok().and_then(|s| s.get(&id).cloned())
    }

    pub(crate) fn contains(&self, id: NodeId) -> bool {
        self.slots.read().is_ok_and(|s| s.contains_key(&id))
    }

    /// Runs `f` on the peer's slot without cloning it (the hot path of `send`).
    pub(crate) fn with<R>(&self, id: NodeId, f: impl FnOnce(&PeerSlot) -> R) -> Option<R> {
        self.slots.read().ok().and_then(|s| s.get(&id).map(f))
    }

    pub(crate) fn ids_and_counters(&self) -> Vec<(NodeId, Arc<PeerCounters>)> {
        self.slots
            .read()
            .map(|s| s.iter().map(|(&id, p)| (id, p.counters.clone())).collect())
            .unwrap_or_default()
    }

    pub(crate) fn addresses(&self) -> BTreeMap<NodeId, SocketAddr> {
        self.slots
            .read()
            .map(|s| s.iter().map(|(&id, p)| (id, p.addr)).collect())
            .unwrap_or_default()
    }

    pub(crate) fn ips(&self) -> BTreeSet<IpAddr> {
        self.slots
            .read()
            .map(|s| s.values().map(|p| p.addr.ip()).collect())
            .unwrap_or_default()
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.read().map_or(0, |s| s.len())
    }

    /// Replaces the peer set: `start` makes a slot (and its writer) for a peer that is new
    /// or moved (given its counters, kept across a move). Removed and moved peers are
    /// stopped.
    pub(crate) fn replace(
        &self,
        peers: &BTreeMap<NodeId, SocketAddr>,
        mut start: impl FnMut(NodeId, SocketAddr, Arc<PeerCounters>) -> PeerSlot,
    ) {
        let Ok(mut slots) = self.slots.write() else {
            return;
        };
        let mut old_counters: BTreeMap<NodeId, Arc<PeerCounters>> = BTreeMap::new();
        slots.retain(|id, slot| {
            let keep = peers.get(id) == Some(&slot.addr);
            if !keep {
                slot.stop.cancel();
                if peers.contains_key(id) {
                    old_counters.insert(*id, slot.counters.clone());
                }
            }
            keep
        });
        for (&id, &addr) in peers {
            if slots.contains_key(&id) {
                continue;
            }
            let counters = old_counters.get(&id).cloned().unwrap_or_default();
            slots.insert(id, start(id, addr, counters));
        }
    }
}
