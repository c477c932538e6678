//! The cluster's members as the runtime sees them. Each member's addresses travel in the
//! configuration (the core carries them as the member's context), so after bootstrap the
//! cluster, not a peers file, is the source of truth; members of the bootstrap
//! configuration, which the log names without addresses until a change records them, are
//! found in the node's own peer list.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use raft_core::{LogIndex, Membership, NodeId};
use serde::{Deserialize, Serialize};

use crate::config::Peer;

/// A member's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberRole {
    /// Votes and counts towards majorities.
    Voter,
    /// Receives the log; neither votes nor counts.
    Learner,
}

/// One member of the cluster, as [`crate::RaftNode::members`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    /// Its id.
    pub id: NodeId,
    /// Its Raft transport address, if known.
    pub raft: Option<SocketAddr>,
    /// Its client API address, if known.
    pub api: Option<String>,
    /// Voter or learner. (While a joint configuration is in effect, an outgoing voter is
    /// reported as a voter.)
    pub role: MemberRole,
    /// Leader only: the highest index known to be on it (the leader's own last index for
    /// itself).
    pub match_index: Option<LogIndex>,
    /// Leader only: how many entries it is behind the leader's log.
    pub lag: Option<u64>,
    /// Leader only: whether it was heard from within an election timeout (always true for
    /// the leader itself).
    pub reachable: Option<bool>,
}

/// The versioned form of a member's addresses inside a configuration.
#[derive(Serialize, Deserialize)]
enum Context {
    V1 { raft: String, api: Option<String> },
}

/// A member's addresses as a configuration context.
pub(crate) fn encode_context(peer: &Peer) -> Bytes {
    let c = Context::V1 {
        raft: peer.raft.to_string(),
        api: peer.api.clone(),
    };
    // Strings and options always encode.
    Bytes::from(postcard::to_allocvec(&c).unwrap_or_default())
}

/// The addresses a configuration context holds, if it holds valid ones.
pub(crate) fn decode_context(data: &[u8]) -> Option<Peer> {
    match postcard::from_bytes::<Context>(data).ok()? {
        Context::V1 { raft, api } => Some(Peer {
            raft: raft.parse().ok()?,
            api,
        }),
    }
}

/// The address of every member of `m`: from its context, else from `bootstrap` (the node's
/// own peer list). A member found in neither has no known address and is left out.
pub(crate) fn member_addresses(
    m: &Membership,
    bootstrap: &BTreeMap<NodeId, Peer>,
) -> BTreeMap<NodeId, Peer> {
    m.members()
        .into_iter()
        .filter_map(|id| {
            let from_context = m.context.get(&id).and_then(|c| decode_context(c));
            from_context
                .or_else(|| bootstrap.get(&id).cloned())
                .map(|p| (id, p))
        })
        .collect()
}

/// The addresses of the members, and who is a member of the configuration in effect,
/// shared by the runtime (which updates them as the configuration changes) and the handles
/// (which use them for leader hints and to tell a member's credentials from a stranger's).
#[derive(Clone)]
pub(crate) struct AddressBook(Arc<Book>);

struct Book {
    peers: RwLock<BTreeMap<NodeId, Peer>>,
    /// The voters and learners of the configuration in effect.
    members: RwLock<BTreeSet<NodeId>>,
    /// Bumped whenever `members` changes.
    version: tokio::sync::watch::Sender<u64>,
}

impl Default for AddressBook {
    fn default() -> Self {
        AddressBook::new(BTreeMap::new())
    }
}

impl AddressBook {
    /// A book of `peers`, all of them members until the runtime says otherwise.
    pub(crate) fn new(peers: BTreeMap<NodeId, Peer>) -> Self {
        let members = peers.keys().copied().collect();
        AddressBook(Arc::new(Book {
            peers: RwLock::new(peers),
            members: RwLock::new(members),
            version: tokio::sync::watch::channel(0).0,
        }))
    }

    pub(crate) fn get(&self, id: NodeId) -> Option<Peer> {
        self.0.peers.read().ok().and_then(|m| m.get(&id).cloned())
    }

    pub(crate) fn all(&self) -> BTreeMap<NodeId, Peer> {
        self.0.peers.read().map(|m| m.clone()).unwrap_or_default()
    }

    pub(crate) fn set(&self, peers: BTreeMap<NodeId, Peer>) {
        if let Ok(mut m) = self.0.peers.write() {
            *m = peers;
        }
    }

    /// Whether `id` is a voter or a learner of the configuration in effect.
    pub(crate) fn is_member(&self, id: NodeId) -> bool {
        self.0.members.read().is_ok_and(|m| m.contains(&id))
    }

    /// Records the members of the configuration in effect.
    pub(crate) fn set_members(&self, members: BTreeSet<NodeId>) {
        let changed = match self.0.members.write() {
            Ok(mut m) if *m != members => {
                *m = members;
                true
            }
            _ => false,
        };
        if changed {
            self.0.version.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    /// A receiver that sees every change of the members.
    pub(crate) fn watch_members(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.version.subscribe()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn peer(port: u16, api: &str) -> Peer {
        Peer {
            raft: SocketAddr::from(([127, 0, 0, 1], port)),
            api: Some(api.into()),
        }
    }

    #[test]
    fn addresses_come_from_the_configuration_before_the_peer_list() {
        let mut m = Membership::new([1, 2]);
        m.learners.insert(3);
        m.context.insert(2, encode_context(&peer(9002, "moved:2")));
        m.context.insert(3, encode_context(&peer(9003, "new:3")));
        let bootstrap = BTreeMap::from([(1, peer(8001, "a:1")), (2, peer(8002, "a:2"))]);
        let got = member_addresses(&m, &bootstrap);
        assert_eq!(got[&1], peer(8001, "a:1"));
        assert_eq!(got[&2], peer(9002, "moved:2"));
        assert_eq!(got[&3], peer(9003, "new:3"));
        m.voters.insert(4);
        assert!(
            !member_addresses(&m, &bootstrap).contains_key(&4),
            "no address anywhere"
        );
        assert_eq!(decode_context(b"\xff\xff"), None);
    }
}
