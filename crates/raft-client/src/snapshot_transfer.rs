//! Moving a snapshot file from the leader to a follower over a peer stream, in chunks, with
//! flow control, checked end to end, and resumable: an interrupted transfer of the same
//! snapshot starts again from what the follower's part file holds.
//!
//! ```text
//! leader                                   follower
//!   Offer { term, meta, size }  ──────────►  keeps incoming-<index>-<term>.part
//!                               ◄──────────  Resume { offset }   (bytes it already has)
//!   Chunk { offset, data } ...  ──────────►  appends (syncs every 16 MiB)
//!                               ◄──────────  Ack { offset }      (written so far)
//!   Done                        ──────────►  syncs, checks length and checksum, renames
//!                               ◄──────────  Received
//! ```
//!
//! The transfer ends at `Received`: installing the snapshot (restoring the state machine)
//! happens afterwards and never counts against the transfer's timeouts.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use raft_core::{NodeId, SnapshotMeta, Term};
use raft_net::PeerStream;
use serde::{Deserialize, Serialize};

use crate::snapshot_store::{SnapshotFile, SnapshotStore};

#[derive(Debug, Serialize, Deserialize)]
enum Frame {
    Offer {
        term: Term,
        meta: SnapshotMeta,
        size: u64,
    },
    Resume {
        offset: u64,
    },
    Chunk {
        offset: u64,
        data: Bytes,
    },
    Ack {
        offset: u64,
    },
    Done,
    Received,
    Abort {
        reason: String,
    },
}

/// Settings of snapshot transfers.
#[derive(Clone, Debug)]
pub(crate) struct TransferSettings {
    pub(crate) chunk_bytes: usize,
    /// Chunks sent and not yet acknowledged, at most.
    pub(crate) window: usize,
    /// A transfer with no progress for this long fails.
    pub(crate) idle_timeout: Duration,
    /// The largest snapshot a follower accepts.
    pub(crate) max_bytes: u64,
    /// Where the snapshot files' blocking work runs.
    pub(crate) exec: crate::exec::Exec,
}

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TransferError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("no progress for {0:?}")]
    Stalled(Duration),
    #[error("the peer closed the stream")]
    Closed,
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("the peer gave up: {0}")]
    Aborted(String),
}

/// One transfer's progress, as status and metrics show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferStatus {
    /// The other node.
    pub peer: NodeId,
    /// Whether this node sends (true) or receives.
    pub sending: bool,
    /// The index the snapshot covers.
    pub index: u64,
    /// Bytes the receiver holds durably so far.
    pub done_bytes: u64,
    /// The snapshot's size in bytes.
    pub total_bytes: u64,
    /// Bytes skipped because the receiver already had them (a resumed transfer).
    pub resumed_from: u64,
    /// Time since the transfer started.
    pub elapsed: Duration,
}

/// Transfers by (peer, sending?): their status and when each started.
type TransferMap = BTreeMap<(NodeId, bool), (TransferStatus, Instant)>;

/// Counts of what this node did with snapshots since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotStats {
    /// Snapshots taken (and the log compacted after them).
    pub taken: u64,
    /// Whether a snapshot is being taken now.
    pub taking: bool,
    /// Transfers to followers that completed.
    pub sent: u64,
    /// Transfers to followers that failed (each is retried).
    pub send_failures: u64,
    /// Bytes sent in transfers to followers.
    pub sent_bytes: u64,
    /// Bytes not sent because the follower already had them (resumed transfers).
    pub resumed_bytes: u64,
    /// Snapshots received whole from a leader.
    pub received: u64,
    /// Transfers from a leader that failed.
    pub receive_failures: u64,
    /// Snapshots installed (state machine restored from a leader's snapshot).
    pub installed: u64,
}

/// The transfers running now and the counters, shared with the handle for status and
/// metrics.
#[derive(Clone, Debug, Default)]
pub(crate) struct Transfers {
    running: Arc<Mutex<TransferMap>>,
    counts: Arc<Mutex<SnapshotStats>>,
}

impl Transfers {
    /// Adds to the counters.
    pub(crate) fn count(&self, f: impl FnOnce(&mut SnapshotStats)) {
        if let Ok(mut c) = self.counts.lock() {
            f(&mut c);
        }
    }

    /// The counters now.
    pub(crate) fn stats(&self) -> SnapshotStats {
        self.counts.lock().map(|c| *c).unwrap_or_default()
    }

    fn update(&self, peer: NodeId, sending: bool, f: impl FnOnce(&mut TransferStatus)) {
        if let Ok(mut m) = self.running.lock() {
            if let Some((s, _)) = m.get_mut(&(peer, sending)) {
                f(s);
            }
        }
    }

    fn start(&self, peer: NodeId, sending: bool, index: u64, total: u64) {
        if let Ok(mut m) = self.running.lock() {
            m.insert(
                (peer, sending),
                (
                    TransferStatus {
                        peer,
                        sending,
                        index,
                        done_bytes: 0,
                        total_bytes: total,
                        resumed_from: 0,
                        elapsed: Duration::ZERO,
                    },
                    Instant::now(),
                ),
            );
        }
    }

    fn end(&self, peer: NodeId, sending: bool) {
        if let Ok(mut m) = self.running.lock() {
            m.remove(&(peer, sending));
        }
    }

    /// Every transfer running now.
    pub(crate) fn list(&self) -> Vec<TransferStatus> {
        match self.running.lock() {
            Ok(m) => m
                .values()
                .map(|(s, started)| TransferStatus {
                    elapsed: started.elapsed(),
                    ..s.clone()
                })
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

fn encode(f: &Frame) -> Result<Bytes, TransferError> {
    postcard::to_allocvec(f)
        .map(Bytes::from)
        .map_err(|e| TransferError::Protocol(e.to_string()))
}

async fn recv(stream: &mut PeerStream, idle: Duration) -> Result<Frame, TransferError> {
    match tokio::time::timeout(idle, stream.recv()).await {
        Err(_) => Err(TransferError::Stalled(idle)),
        Ok(None) => Err(TransferError::Closed),
        Ok(Some(Err(e))) => Err(e.into()),
        Ok(Some(Ok(b))) => match postcard::from_bytes::<Frame>(&b) {
            Ok(Frame::Abort { reason }) => Err(TransferError::Aborted(reason)),
            Ok(f) => Ok(f),
            Err(e) => Err(TransferError::Protocol(format!("undecodable frame: {e}"))),
        },
    }
}

async fn send(stream: &mut PeerStream, f: &Frame, idle: Duration) -> Result<(), TransferError> {
    let bytes = encode(f)?;
    match tokio::time::timeout(idle, stream.send(bytes)).await {
        Err(_) => Err(TransferError::Stalled(idle)),
        Ok(r) => Ok(r?),
    }
}

/// Leader: sends `file` (a snapshot of `term`'s leader) until the follower says it has it.
/// Returns how many bytes the follower already had (a resumed transfer skips them).
pub(crate) async fn send_snapshot(
    stream: &mut PeerStream,
    store: &SnapshotStore,
    term: Term,
    file: &SnapshotFile,
    s: TransferSettings,
    transfers: &Transfers,
) -> Result<u64, TransferError> {
    let peer = stream.peer();
    transfers.start(peer, true, file.meta.index, file.size);
    let result = send_inner(stream, store, term, file, s, transfers).await;
    transfers.end(peer, true);
    result
}

async fn send_inner(
    stream: &mut PeerStream,
    store: &SnapshotStore,
    term: Term,
    file: &SnapshotFile,
    s: TransferSettings,
    transfers: &Transfers,
) -> Result<u64, TransferError> {
    let peer = stream.peer();
    let idle = s.idle_timeout;
    let offer = Frame::Offer {
        term,
        meta: file.meta.clone(),
        size: file.size,
    };
    send(stream, &offer, idle).await?;
    let Frame::Resume { offset } = recv(stream, idle).await? else {
        return Err(TransferError::Protocol("expected Resume".into()));
    };
    if offset > file.size {
        return Err(TransferError::Protocol(format!(
            "resume at {offset} past the end ({})",
            file.size
        )));
    }
    transfers.update(peer, true, |t| {
        t.resumed_from = offset;
        t.done_bytes = offset;
    });
    // Read through the node's executor (a blocking thread, or in place in a single-thread
    // node), one chunk at a time.
    let f = {
        let (store, path) = (store.clone(), file.path.clone());
        s.exec
            .blocking(move || store.open_file(&path))
            .await
            .map_err(|e| TransferError::Protocol(e.to_string()))??
    };
    let f: Arc<dyn raft_storage::VfsFile> = Arc::from(f);
    let mut sent = offset;
    let mut acked = offset;
    let mut in_flight = 0usize;
    let chunk = s.chunk_bytes.max(1);
    while acked < file.size {
        while sent < file.size && in_flight < s.window.max(1) {
            let n = (chunk as u64).min(file.size - sent) as usize;
            let data = {
                let (f, at) = (f.clone(), sent);
                s.exec
                    .blocking(move || {
                        let mut buf = vec![0u8; n];
                        f.read_exact_at(&mut buf, at).map(|()| buf)
                    })
                    .await
                    .map_err(|e| TransferError::Protocol(e.to_string()))??
            };
            let frame = Frame::Chunk {
                offset: sent,
                data: Bytes::from(data),
            };
            send(stream, &frame, idle).await?;
            sent += n as u64;
            in_flight += 1;
        }
        match recv(stream, idle).await? {
            Frame::Ack { offset } if offset <= sent && offset > acked => {
                acked = offset;
                in_flight = in_flight.saturating_sub(1);
                transfers.update(peer, true, |t| t.done_bytes = acked);
            }
            other => {
                return Err(TransferError::Protocol(format!(
                    "unexpected answer {other:?}"
                )))
            }
        }
    }
    send(stream, &Frame::Done, idle).await?;
    match recv(stream, idle).await? {
        Frame::Received => Ok(offset),
        other => Err(TransferError::Protocol(format!(
            "expected Received, got {other:?}"
        ))),
    }
}

/// What a follower received: a whole snapshot file, from the leader of `term`.
#[derive(Debug)]
pub(crate) struct Received {
    pub(crate) from: NodeId,
    pub(crate) term: Term,
    pub(crate) file: SnapshotFile,
}

/// Follower: receives a snapshot on `stream` into `store`, resuming a part already there.
pub(crate) async fn receive_snapshot(
    stream: &mut PeerStream,
    store: &SnapshotStore,
    s: TransferSettings,
    transfers: &Transfers,
) -> Result<Received, TransferError> {
    let peer = stream.peer();
    let idle = s.idle_timeout;
    let Frame::Offer { term, meta, size } = recv(stream, idle).await? else {
        return Err(TransferError::Protocol("expected Offer".into()));
    };
    if size > s.max_bytes || meta.index == 0 {
        let reason = format!(
            "a {size}-byte snapshot is over the limit of {} bytes (max_snapshot_bytes)",
            s.max_bytes
        );
        let _ = send(
            stream,
            &Frame::Abort {
                reason: reason.clone(),
            },
            idle,
        )
        .await;
        return Err(TransferError::Protocol(reason));
    }
    transfers.start(peer, false, meta.index, size);
    let result = receive_inner(stream, store, s, transfers, term, meta, size).await;
    transfers.end(peer, false);
    result
}

#[allow(clippy::too_many_arguments)]
async fn receive_inner(
    stream: &mut PeerStream,
    store: &SnapshotStore,
    s: TransferSettings,
    transfers: &Transfers,
    term: Term,
    meta: SnapshotMeta,
    size: u64,
) -> Result<Received, TransferError> {
    let peer = stream.peer();
    let idle = s.idle_timeout;
    let (path, mut have) = {
        let store = store.clone();
        let meta = meta.clone();
        s.exec
            .blocking(move || store.incoming(&meta))
            .await
            .map_err(|e| TransferError::Protocol(e.to_string()))??
    };
    if have > size {
        have = 0;
    }
    transfers.update(peer, false, |t| {
        t.resumed_from = have;
        t.done_bytes = have;
    });
    send(stream, &Frame::Resume { offset: have }, idle).await?;
    let mut unsynced = 0u64;
    loop {
        match recv(stream, idle).await? {
            Frame::Chunk { offset, data } => {
                if offset != have || offset + data.len() as u64 > size {
                    return Err(TransferError::Protocol(format!(
                        "chunk at {offset} ({} bytes) where {have} was expected",
                        data.len()
                    )));
                }
                let len = data.len() as u64;
                // Synced every SYNC_EVERY_BYTES rather than per chunk: a sync per chunk bounds
                // the transfer by the disk's sync latency. The part is synced whole before
                // it becomes a snapshot.
                unsynced += len;
                let sync = unsynced >= crate::snapshot_store::SYNC_EVERY_BYTES;
                if sync {
                    unsynced = 0;
                }
                let (store2, path2) = (store.clone(), path.clone());
                s.exec
                    .blocking(move || store2.write_part(&path2, offset, &data, sync))
                    .await
                    .map_err(|e| TransferError::Protocol(e.to_string()))??;
                have = offset + len;
                transfers.update(peer, false, |t| t.done_bytes = have);
                send(stream, &Frame::Ack { offset: have }, idle).await?;
            }
            Frame::Done => break,
            other => {
                return Err(TransferError::Protocol(format!(
                    "unexpected frame {other:?}"
                )))
            }
        }
    }
    let file = {
        let (store, path, meta) = (store.clone(), path.clone(), meta.clone());
        s.exec
            .blocking(move || store.finish_part(&path, &meta, size))
            .await
            .map_err(|e| TransferError::Protocol(e.to_string()))?
    };
    let file = match file {
        Ok(f) => f,
        Err(e) => {
            // A damaged part is useless: the next offer starts from zero.
            let _ = store.remove(&path);
            let _ = send(
                stream,
                &Frame::Abort {
                    reason: e.to_string(),
                },
                idle,
            )
            .await;
            return Err(e.into());
        }
    };
    send(stream, &Frame::Received, idle).await?;
    Ok(Received {
        from: peer,
        term,
        file,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::BTreeMap;

    use raft_net::{NetConfig, Transport};
    use tokio::sync::mpsc;

    use super::*;

    fn settings() -> TransferSettings {
        TransferSettings {
            chunk_bytes: 4 << 10,
            window: 2,
            idle_timeout: Duration::from_secs(10),
            max_bytes: 1 << 30,
            exec: crate::exec::Exec::Threads,
        }
    }

    fn pair() -> (Transport, Transport) {
        let l1 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let l2 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (a1, a2) = (l1.local_addr().unwrap(), l2.local_addr().unwrap());
        let (t1, _) =
            Transport::start_on(NetConfig::new(1, "t", a1, BTreeMap::from([(2, a2)])), l1).unwrap();
        let (t2, _) =
            Transport::start_on(NetConfig::new(2, "t", a2, BTreeMap::from([(1, a1)])), l2).unwrap();
        (t1, t2)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_interrupted_transfer_resumes_from_what_the_follower_holds() {
        let src_dir = tempfile::tempdir().unwrap();
        let dst_dir = tempfile::tempdir().unwrap();
        let src = SnapshotStore::open_std(src_dir.path()).unwrap();
        let dst = SnapshotStore::open_std(dst_dir.path()).unwrap();
        let meta = SnapshotMeta {
            index: 42,
            term: 3,
            membership: raft_core::Membership::new([1, 2]),
        };
        let data: Vec<u8> = (0..400_000u32).map(|i| (i % 251) as u8).collect();
        let file = src.create(&meta, |w| w.write_all(&data)).unwrap();
        let (t1, t2) = pair();
        let mut incoming = t2.take_streams().unwrap();
        let rx_transfers = Transfers::default();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        {
            let (dst, rx_transfers) = (dst.clone(), rx_transfers.clone());
            tokio::spawn(async move {
                while let Some(mut stream) = incoming.recv().await {
                    let r = receive_snapshot(&mut stream, &dst, settings(), &rx_transfers).await;
                    let _ = done_tx.send(r.map(|r| r.file));
                }
            });
        }
        // First attempt: cut after some chunks are acknowledged.
        let tx_transfers = Transfers::default();
        let first = {
            let (file, tx_transfers, stream, src) = (
                file.clone(),
                tx_transfers.clone(),
                t1.open_stream(2).await.unwrap(),
                src.clone(),
            );
            tokio::spawn(async move {
                let mut stream = stream;
                send_snapshot(&mut stream, &src, 3, &file, settings(), &tx_transfers).await
            })
        };
        let start = Instant::now();
        while tx_transfers.list().first().map_or(0, |t| t.done_bytes) < 40_000 {
            assert!(start.elapsed() < Duration::from_secs(20), "no progress");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        first.abort();
        assert!(
            done_rx.recv().await.unwrap().is_err(),
            "the cut transfer failed"
        );
        // Second attempt: resumes, and the follower ends with the very same file.
        let mut stream = t1.open_stream(2).await.unwrap();
        let resumed = send_snapshot(&mut stream, &src, 3, &file, settings(), &tx_transfers)
            .await
            .unwrap();
        assert!(resumed >= 40_000, "resumed from {resumed}");
        let got = done_rx.recv().await.unwrap().unwrap();
        assert_eq!(got.meta, meta);
        assert_eq!(
            std::fs::read(&got.path).unwrap(),
            std::fs::read(&file.path).unwrap()
        );
        assert!(tx_transfers.list().is_empty() && rx_transfers.list().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snapshot_over_the_limit_is_refused() {
        let src_dir = tempfile::tempdir().unwrap();
        let dst_dir = tempfile::tempdir().unwrap();
        let src = SnapshotStore::open_std(src_dir.path()).unwrap();
        let dst = SnapshotStore::open_std(dst_dir.path()).unwrap();
        let meta = SnapshotMeta {
            index: 7,
            term: 1,
            membership: raft_core::Membership::new([1, 2]),
        };
        let file = src.create(&meta, |w| w.write_all(&[1u8; 10_000])).unwrap();
        let (t1, t2) = pair();
        let mut incoming = t2.take_streams().unwrap();
        let receiver = tokio::spawn(async move {
            let mut stream = incoming.recv().await.unwrap();
            let mut small = settings();
            small.max_bytes = 1_000;
            receive_snapshot(&mut stream, &dst, small, &Transfers::default()).await
        });
        let mut stream = t1.open_stream(2).await.unwrap();
        let sent = send_snapshot(
            &mut stream,
            &src,
            1,
            &file,
            settings(),
            &Transfers::default(),
        )
        .await;
        assert!(
            matches!(sent, Err(TransferError::Aborted(ref r)) if r.contains("max_snapshot_bytes")),
            "{sent:?}"
        );
        assert!(receiver.await.unwrap().is_err());
    }
}
