//! The state machine the runtime applies committed entries to, and the two that ship.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use bytes::Bytes;
use raft_core::{Entry, EntryKind, LogIndex};
use serde::{Deserialize, Serialize};

/// What the application keeps up to date with the committed log.
///
/// Contract: `apply` receives every committed entry exactly once per incarnation, in index
/// order, no-ops included (their kind says so), and returns one response per entry, handed
/// to the `submit` caller of that entry. At start the runtime asks
/// [`applied_index`](Self::applied_index) and delivers only entries after it, so a
/// state machine that persists its state together with its applied index never sees an
/// entry twice across restarts; an in-memory one returns 0 and is rebuilt from the log.
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
}

/// The plain replicated log, which is what the original offered: the log is the state;
/// read it with [`crate::RaftNode::retrieve`]. Responses are the applied index.
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

/// A key-value command, carried in a normal entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCommand {
    /// Sets `key` to `value`.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Removes `key`.
    Delete {
        /// The key.
        key: String,
    },
}

impl KvCommand {
    /// The entry payload for this command; submit it with
    /// [`crate::RaftNode::submit_command`].
    pub fn encode(&self) -> Result<Bytes, postcard::Error> {
        postcard::to_allocvec(self).map(Bytes::from)
    }

    /// The command in an entry payload, if it decodes as one. Only entries of kind
    /// [`EntryKind::Command`] hold commands: use [`KvCommand::from_entry`] on entries.
    pub fn decode(data: &[u8]) -> Option<KvCommand> {
        postcard::from_bytes(data).ok()
    }

    /// The command an entry holds: only a [`EntryKind::Command`] entry holds one, whatever
    /// the payload of other entries looks like.
    pub fn from_entry(e: &Entry) -> Option<KvCommand> {
        if e.kind == EntryKind::Command {
            Self::decode(&e.data)
        } else {
            None
        }
    }
}

/// What applying an entry did to the key-value map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvResponse {
    /// A put or delete was applied; the key's previous value is given.
    Applied {
        /// The value before the command.
        previous: Option<String>,
    },
    /// The entry was not a key-value command (a no-op, a plain log entry, or a command
    /// entry that does not decode as one).
    NotACommand,
}

/// An in-memory key-value map whose commands are puts and deletes, as the original's
/// companion app had. Commands are entries of kind [`EntryKind::Command`] (submitted with
/// [`crate::RaftNode::submit_command`]); plain entries are never taken for commands. Read
/// it through a [`KvReader`].
#[derive(Debug, Default)]
pub struct KvStore {
    map: Arc<RwLock<BTreeMap<String, String>>>,
    applied: Arc<AtomicU64>,
}

/// A read handle on a [`KvStore`]'s map, usable while the store runs in the node.
#[derive(Clone, Debug)]
pub struct KvReader {
    map: Arc<RwLock<BTreeMap<String, String>>>,
    applied: Arc<AtomicU64>,
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
                Some(KvCommand::Put { key, value }) => KvResponse::Applied {
                    previous: map.insert(key, value),
                },
                Some(KvCommand::Delete { key }) => KvResponse::Applied {
                    previous: map.remove(&key),
                },
                None => KvResponse::NotACommand,
            })
            .collect();
        if let Some(last) = entries.last() {
            self.applied.store(last.index, Ordering::Release);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let put = KvCommand::Put {
            key: "k".into(),
            value: "v".into(),
        };
        assert_eq!(KvCommand::decode(&put.encode().unwrap()), Some(put.clone()));
        assert_eq!(KvCommand::decode(b"\"just text\""), None);
        let mut kv = KvStore::new();
        let r = kv.reader();
        let out = kv
            .apply(&[
                command(1, &put),
                Entry::normal(1, 2, &b"plain"[..]),
                command(3, &KvCommand::Delete { key: "k".into() }),
            ])
            .await;
        assert_eq!(
            out,
            vec![
                KvResponse::Applied { previous: None },
                KvResponse::NotACommand,
                KvResponse::Applied {
                    previous: Some("v".into())
                }
            ]
        );
        assert_eq!(r.get("k"), None);
        assert_eq!(r.applied(), 3);
    }

    #[tokio::test]
    async fn a_plain_entry_holding_a_command_payload_is_not_applied_as_one() {
        let put = KvCommand::Put {
            key: "k".into(),
            value: "forged".into(),
        };
        let mut kv = KvStore::new();
        let r = kv.reader();
        // Byte for byte a command, but submitted as a plain entry: it is plain data.
        let out = kv
            .apply(&[Entry::normal(1, 1, put.encode().unwrap())])
            .await;
        assert_eq!(out, vec![KvResponse::NotACommand]);
        assert_eq!(r.get("k"), None);
    }
}
