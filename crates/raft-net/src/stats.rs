//! Per-peer counters (exported as metrics by the layers above).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::handshake::PeerVersion;

/// Live counters for one peer.
#[derive(Debug, Default)]
pub(crate) struct PeerCounters {
    pub(crate) msgs_sent: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) msgs_received: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    pub(crate) msgs_dropped: AtomicU64,
    pub(crate) connects: AtomicU64,
    pub(crate) connect_failures: AtomicU64,
    /// Bytes of messages waiting in the peer's send queue.
    pub(crate) queued_bytes: AtomicU64,
    /// What its latest handshake told ([`PeerVersion::pack`]; 0: none yet).
    pub(crate) version: AtomicU64,
}

impl PeerCounters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Records what a handshake with the peer told.
    pub(crate) fn set_version(&self, v: PeerVersion) {
        self.version.store(v.pack(), Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> PeerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PeerStats {
            version: PeerVersion::unpack(get(&self.version)),
            msgs_sent: get(&self.msgs_sent),
            bytes_sent: get(&self.bytes_sent),
            msgs_received: get(&self.msgs_received),
            bytes_received: get(&self.bytes_received),
            msgs_dropped: get(&self.msgs_dropped),
            connects: get(&self.connects),
            connect_failures: get(&self.connect_failures),
        }
    }
}

/// Live counters of the listener.
#[derive(Debug, Default)]
pub(crate) struct ListenerCounters {
    pub(crate) accepted: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) over_limit: AtomicU64,
    pub(crate) replaced: AtomicU64,
    pub(crate) idle_closed: AtomicU64,
    pub(crate) accept_errors: AtomicU64,
}

impl ListenerCounters {
    pub(crate) fn snapshot(&self) -> ListenerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ListenerStats {
            accepted: get(&self.accepted),
            refused: get(&self.refused),
            over_limit: get(&self.over_limit),
            replaced: get(&self.replaced),
            idle_closed: get(&self.idle_closed),
            accept_errors: get(&self.accept_errors),
        }
    }
}

/// A snapshot of the listener's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenerStats {
    /// Connections whose handshake was accepted.
    pub accepted: u64,
    /// Connections refused in the handshake (the reason is in the log, not told to the
    /// dialer).
    pub refused: u64,
    /// Connections closed at once because too many handshakes were in progress.
    pub over_limit: u64,
    /// Live connections replaced by a newer one from the same peer.
    pub replaced: u64,
    /// Connections closed after the idle timeout.
    pub idle_closed: u64,
    /// Failed `accept` calls (the loop backs off after each).
    pub accept_errors: u64,
}

/// A snapshot of one peer's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// What the peer's latest handshake (either way) told: the protocol version spoken
    /// and its release. `None` until a connection was made.
    pub version: Option<PeerVersion>,
    /// Messages handed to the peer's connection (the last ones before a connection failure
    /// may still be lost).
    pub msgs_sent: u64,
    /// Frame bytes written to the peer (length prefixes included).
    pub bytes_sent: u64,
    /// Messages received from the peer.
    pub msgs_received: u64,
    /// Frame bytes received from the peer (length prefixes included).
    pub bytes_received: u64,
    /// Messages to the peer dropped: its queue was full, or its connection failed with
    /// them unsent, or they could not be encoded.
    pub msgs_dropped: u64,
    /// Outbound connections established (handshake completed).
    pub connects: u64,
    /// Outbound connection attempts or connections that failed.
    pub connect_failures: u64,
}
