//! The state machine the runtime applies committed entries to, and the two that ship.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use raft_core::{Entry, LogIndex};

use crate::kv::{KvCommand, KvResponse, Versioned};

/// A point-in-time copy of a state machine's state, taken in a moment and written out on a
/// blocking thread while the state machine goes on applying.
pub trait SnapshotSource: Send + 'static {
    /// Writes the state (any length: it is streamed) to `out`.
    fn write_to(self: Box<Self>, out: &mut dyn Write) -> std::io::Result<()>;
}

/// What the application keeps up to date with the committed log.
///
/// Contract: `apply` receives every committed entry exactly once per incarnation, in index
/// order, no-ops included (their kind says so), and returns one response per entry, handed
/// to the `submit` caller of that entry. At start the runtime asks
/// [`applied_index`](Self::applied_index) and delivers only entries after it, so a
/// state machine that persists its state together with its applied index never sees an
/// entry twice across restarts; an in-memory one returns 0 and is rebuilt from the latest
/// snapshot and the log.
///
/// Snapshots let the log be compacted: [`snapshot`](Self::snapshot) takes a point-in-time
/// copy as of the last applied entry, and [`restore`](Self::restore) replaces the state by
/// one (at start, or when the leader sends one). A state machine that does not implement
/// them keeps the whole log.
#[async_trait]
pub trait StateMachine: Send + 'static {
    /// What `submit` returns for an entry.
    type Response: Send + 'static;

    /// Applies committed entries, in order; returns one response per entry.
    async fn apply(&mut self, entries: &[Entry]) -> Vec<Self::Response>;

    /// The index this state already reflects (0 for a state machine kept in memory).
    fn applied_index(&self) -> LogIndex {
        0
    }

    /// A point-in-time copy of the state as of the last applied entry. Must return quickly
    /// (a copy-on-write view, a read transaction): the copy is written out elsewhere while
    /// `apply` goes on. The default: snapshots are not supported, and the log is never
    /// compacted.
    async fn snapshot(&mut self) -> std::io::Result<Box<dyn SnapshotSource>> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "this state machine takes no snapshots",
        ))
    }

    /// Set once the state machine can no longer apply entries (its own storage failed):
    /// the node then stops, answering every waiting caller with the reason. Default: never.
    fn failure(&self) -> Option<String> {
        None
    }

    /// Replaces the whole state by a snapshot's, which covers the log up to `index`; `data`
    /// is what a [`SnapshotSource`] wrote. Runs on a thread that may block.
    fn restore(&mut self, index: LogIndex, data: &mut dyn Read) -> std::io::Result<()> {
        let _ = (index, data);
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "this state machine cannot restore snapshots",
        ))
    }
}

/// The plain replicated log, which is what the original offered: the log is the state;
/// read it with [`crate::RaftNode::retrieve`]. Responses are the applied index. It takes no
/// snapshots, since the log is all it has: a node running it keeps its whole log.
#[derive(Clone, Debug, Default)]
pub struct ReplicatedLog {
    applied: Arc<AtomicU64>,
}

impl ReplicatedLog {
    /// A new, empty log state machine.
    pub fn new() -> Self {
        Self::default()
    }

    /// The highest index applied so far.
    pub fn applied(&self) -> LogIndex {
        self.applied.load(Ordering::Acquire)
    }
}

#[async_trait]
impl StateMachine for ReplicatedLog {
    type Response = LogIndex;

    async fn apply(&mut self, entries: &[Entry]) -> Vec<LogIndex> {
        if let Some(last) = entries.last() {
            self.applied.store(last.index, Ordering::Release);
        }
        entries.iter().map(|e| e.index).collect()
    }
}

/// The map of a [`KvStore`]: a persistent (copy-on-write) ordered map, so that a snapshot
/// is a copy taken in constant time.
type KvMap = imbl::OrdMap<String, Versioned>;

/// An in-memory key-value map whose commands are puts and deletes, as the original's
/// companion app had. Commands are entries of kind [`EntryKind::Command`] (submitted with
/// [`crate::RaftNode::submit_command`]); plain entries are never taken for commands. Read
/// it through a [`KvReader`]. Snapshots are taken in constant time (the map is
/// copy-on-write) and written out as the list of pairs.
#[derive(Debug, Default)]
pub struct KvStore {
    map: Arc<RwLock<KvMap>>,
    applied: Arc<AtomicU64>,
}

/// A read handle on a [`KvStore`]'s map, usable while the store runs in the node.
#[derive(Clone, Debug)]
pub struct KvReader {
    map: Arc<RwLock<KvMap>>,
    applied: Arc<AtomicU64>,
}

/// A [`KvStore`]'s state at one point: [`KV_SNAPSHOT_MAGIC`], the number of keys, then
/// each `(key, value, revision)` as a length-prefixed postcard record.
struct KvSnapshot(KvMap);

/// Starts a snapshot with revisions. A snapshot without it (from a build that kept no
/// revisions) starts with the number of pairs and holds `(key, value)` pairs; its keys get
/// revision 0.
const KV_SNAPSHOT_MAGIC: [u8; 8] = *b"RAFTKV2\0";

impl SnapshotSource for KvSnapshot {
    fn write_to(self: Box<Self>, out: &mut dyn Write) -> std::io::Result<()> {
        out.write_all(&KV_SNAPSHOT_MAGIC)?;
        out.write_all(&(self.0.len() as u64).to_le_bytes())?;
        let mut buf = Vec::new();
        for (k, v) in self.0.iter() {
            buf.clear();
            let record = postcard::to_extend(&(k, &v.value, v.revision), std::mem::take(&mut buf))
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            out.write_all(&(record.len() as u32).to_le_bytes())?;
            out.write_all(&record)?;
            buf = record;
        }
        Ok(())
    }
}

fn read_kv_snapshot(data: &mut dyn Read) -> std::io::Result<KvMap> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let mut head = [0u8; 8];
    data.read_exact(&mut head)?;
    let versioned = head == KV_SNAPSHOT_MAGIC;
    let n = if versioned {
        data.read_exact(&mut head)?;
        u64::from_le_bytes(head)
    } else {
        u64::from_le_bytes(head)
    };
    let mut map = KvMap::new();
    let mut buf = Vec::new();
    for _ in 0..n {
        let mut len = [0u8; 4];
        data.read_exact(&mut len)?;
        let len = u32::from_le_bytes(len);
        if len > (1 << 30) {
            return Err(bad("a key-value record larger than 1 GiB in a snapshot"));
        }
        crate::snapshot_store::read_record(data, len, &mut buf)?;
        let (k, value, revision): (String, String, u64) = if versioned {
            postcard::from_bytes(&buf).map_err(|_| bad("a malformed key-value record"))?
        } else {
            let (k, v): (String, String) =
                postcard::from_bytes(&buf).map_err(|_| bad("a malformed key-value pair"))?;
            (k, v, 0)
        };
        map.insert(k, Versioned { value, revision });
    }
    Ok(map)
}

impl KvStore {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// A handle to read the map.
    pub fn reader(&self) -> KvReader {
        KvReader {
            map: self.map.clone(),
            applied: self.applied.clone(),
        }
    }
}

impl KvReader {
    /// The value of `key` as of the applied index.
    pub fn get(&self, key: &str) -> Option<String> {
        self.get_versioned(key).map(|v| v.value)
    }

    /// The value of `key` and its revision, as of the applied index.
    pub fn get_versioned(&self, key: &str) -> Option<Versioned> {
        match self.map.read() {
            Ok(m) => m.get(key).cloned(),
            Err(poisoned) => poisoned.into_inner().get(key).cloned(),
        }
    }

    /// The highest index applied to the map.
    pub fn applied(&self) -> LogIndex {
        self.applied.load(Ordering::Acquire)
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        match self.map.read() {
            Ok(m) => m.len(),
            Err(poisoned) => poisoned.into_inner().len(),
        }
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl StateMachine for KvStore {
    type Response = KvResponse;

    async fn apply(&mut self, entries: &[Entry]) -> Vec<KvResponse> {
        let mut map = match self.map.write() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        let out = entries
            .iter()
            .map(|e| match KvCommand::from_entry(e) {
                Some(cmd) => {
                    let outcome = cmd.decide(e.index, map.get(cmd.key()));
                    match outcome.write {
                        Some(Some(new)) => {
                            map.insert(cmd.key().to_string(), new);
                        }
                        Some(None) => {
                            map.remove(cmd.key());
                        }
                        None => {}
                    }
                    outcome.response
                }
                None => KvResponse::NotACommand,
            })
            .collect();
        if let Some(last) = entries.last() {
            self.applied.store(last.index, Ordering::Release);
        }
        out
    }

    async fn snapshot(&mut self) -> std::io::Result<Box<dyn SnapshotSource>> {
        let map = match self.map.read() {
            Ok(m) => m.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        Ok(Box::new(KvSnapshot(map)))
    }

    fn restore(&mut self, index: LogIndex, data: &mut dyn Read) -> std::io::Result<()> {
        let restored = read_kv_snapshot(data)?;
        match self.map.write() {
            Ok(mut m) => *m = restored,
            Err(poisoned) => *poisoned.into_inner() = restored,
        }
        self.applied.store(index, Ordering::Release);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::Expect;
    use raft_core::EntryKind;

    fn command(index: LogIndex, cmd: &KvCommand) -> Entry {
        Entry {
            term: 1,
            index,
            kind: EntryKind::Command,
            data: cmd.encode().unwrap(),
        }
    }

    #[tokio::test]
    async fn kv_commands_round_trip_and_plain_entries_are_ignored() {
        let put = KvCommand::put("k", "v");
        assert_eq!(KvCommand::decode(&put.encode().unwrap()), Some(put.clone()));
        assert_eq!(KvCommand::decode(b"\"just text\""), None);
        let mut kv = KvStore::new();
        let r = kv.reader();
        let out = kv
            .apply(&[
                command(1, &put),
                Entry::normal(1, 2, &b"plain"[..]),
                command(3, &KvCommand::delete("k")),
            ])
            .await;
        assert_eq!(
            out,
            vec![
                KvResponse::Applied {
                    previous: None,
                    revision: 1
                },
                KvResponse::NotACommand,
                KvResponse::Applied {
                    previous: Some(Versioned {
                        value: "v".into(),
                        revision: 1
                    }),
                    revision: 3
                }
            ]
        );
        assert_eq!(r.get("k"), None);
        assert_eq!(r.applied(), 3);
    }

    #[tokio::test]
    async fn a_plain_entry_holding_a_command_payload_is_not_applied_as_one() {
        let put = KvCommand::put("k", "forged");
        let mut kv = KvStore::new();
        let r = kv.reader();
        // Byte for byte a command, but submitted as a plain entry: it is plain data.
        let out = kv
            .apply(&[Entry::normal(1, 1, put.encode().unwrap())])
            .await;
        assert_eq!(out, vec![KvResponse::NotACommand]);
        assert_eq!(r.get("k"), None);
    }

    #[tokio::test]
    async fn a_kv_snapshot_restores_the_same_map_and_later_writes_do_not_leak_into_it() {
        let mut kv = KvStore::new();
        let puts: Vec<Entry> = (1..=100)
            .map(|i| command(i, &KvCommand::put(format!("k{i}"), format!("v{i}"))))
            .collect();
        kv.apply(&puts).await;
        let snap = kv.snapshot().await.unwrap();
        // Applying goes on after the copy was taken.
        kv.apply(&[command(101, &KvCommand::delete("k1"))]).await;
        let mut bytes = Vec::new();
        snap.write_to(&mut bytes).unwrap();
        let mut other = KvStore::new();
        let r = other.reader();
        other.restore(100, &mut &bytes[..]).unwrap();
        assert_eq!(r.len(), 100);
        assert_eq!(
            r.get("k1"),
            Some("v1".into()),
            "the snapshot is as of index 100"
        );
        assert_eq!(r.applied(), 100);
        assert_eq!(r.get_versioned("k7").map(|v| v.revision), Some(7));
        assert!(
            other.restore(5, &mut &bytes[..3]).is_err(),
            "a cut snapshot"
        );
    }

    #[tokio::test]
    async fn a_compare_and_swap_applies_only_while_its_condition_holds() {
        let mut kv = KvStore::new();
        let r = kv.reader();
        let cas = |from: &str, to: &str| KvCommand::Put {
            key: "k".into(),
            value: to.into(),
            expect: Some(Expect::value(from)),
        };
        let out = kv
            .apply(&[
                command(1, &KvCommand::put("k", "a")),
                command(2, &cas("a", "b")),
                command(3, &cas("a", "c")),
            ])
            .await;
        assert!(matches!(out[1], KvResponse::Applied { revision: 2, .. }));
        assert_eq!(
            out[2],
            KvResponse::PreconditionFailed {
                current: Some(Versioned {
                    value: "b".into(),
                    revision: 2
                })
            },
            "the second swap from a finds b"
        );
        assert_eq!(r.get("k"), Some("b".into()));
        let del = KvCommand::Delete {
            key: "k".into(),
            expect: Some(Expect::revision(1)),
        };
        let out = kv.apply(&[command(4, &del)]).await;
        assert!(matches!(out[0], KvResponse::PreconditionFailed { .. }));
        assert_eq!(
            r.get("k"),
            Some("b".into()),
            "a stale revision deletes nothing"
        );
    }

    #[tokio::test]
    async fn a_snapshot_without_revisions_restores_its_keys_at_revision_zero() {
        // The earlier format: the number of pairs, then (key, value) records.
        let mut bytes = 1u64.to_le_bytes().to_vec();
        let pair = postcard::to_allocvec(&("k", "v")).unwrap();
        bytes.extend_from_slice(&(pair.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&pair);
        let mut kv = KvStore::new();
        let r = kv.reader();
        kv.restore(10, &mut &bytes[..]).unwrap();
        assert_eq!(
            r.get_versioned("k"),
            Some(Versioned {
                value: "v".into(),
                revision: 0
            })
        );
    }
}
