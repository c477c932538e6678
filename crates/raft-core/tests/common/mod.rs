//! A small in-memory cluster for tests: nodes backed by `MemStorage`, messages carried by
//! hand, faults by filters. Everything is deterministic.

#![allow(dead_code, missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use raft_core::{
    Config, Entry, EntryKind, LogIndex, MemStorage, Message, MessageBody, Node, NodeId, ReadState,
    Ready, Role, Term,
};

/// Configuration used by the tests: pre-vote and check-quorum as given, small timeouts.
pub fn config(id: NodeId, voters: &[NodeId]) -> Config {
    let mut c = Config::new(id, voters.iter().copied());
    c.election_ticks = 10;
    c.heartbeat_ticks = 1;
    c.seed = 42;
    c
}

/// A node plus what it has done, as the caller of the core sees it.
pub struct TestNode {
    pub node: Node<MemStorage>,
    /// Entries handed out as committed, in order.
    pub applied: Vec<Entry>,
    pub read_states: Vec<ReadState>,
}

pub struct Cluster {
    pub nodes: BTreeMap<NodeId, TestNode>,
    /// Messages produced and not yet delivered.
    pub in_flight: Vec<Message>,
    /// Links (from, to) that drop everything.
    pub cut: BTreeSet<(NodeId, NodeId)>,
}

impl Cluster {
    /// `n` nodes with ids 1..=n, each configured by `tweak`.
    pub fn new_with(n: u64, tweak: impl Fn(&mut Config)) -> Self {
        let ids: Vec<NodeId> = (1..=n).collect();
        Self::with_ids(&ids, tweak)
    }

    /// One node per id in `ids` (any numbers), each configured by `tweak`.
    pub fn with_ids(ids: &[NodeId], tweak: impl Fn(&mut Config)) -> Self {
        let nodes = ids
            .iter()
            .map(|&id| {
                let mut c = config(id, ids);
                tweak(&mut c);
                (id, TestNode::new(c, MemStorage::new()))
            })
            .collect();
        Cluster {
            nodes,
            in_flight: Vec::new(),
            cut: BTreeSet::new(),
        }
    }

    pub fn new(n: u64) -> Self {
        Self::new_with(n, |_| {})
    }

    /// One node per store, with ids 1..=n (node `i + 1` starts from `stores[i]`), each
    /// configured by `tweak`.
    pub fn with_storages(stores: Vec<MemStorage>, tweak: impl Fn(&mut Config)) -> Self {
        let ids: Vec<NodeId> = (1..=stores.len() as u64).collect();
        let nodes = ids
            .iter()
            .zip(stores)
            .map(|(&id, store)| {
                let mut c = config(id, &ids);
                tweak(&mut c);
                (id, TestNode::new(c, store))
            })
            .collect();
        Cluster {
            nodes,
            in_flight: Vec::new(),
            cut: BTreeSet::new(),
        }
    }

    /// Adds node `id`, new and empty, that knows the cluster as `voters` and itself as a
    /// learner (as a node joining a running cluster starts), configured by `tweak`.
    pub fn add_joining(&mut self, id: NodeId, voters: &[NodeId], tweak: impl Fn(&mut Config)) {
        let mut c = config(id, voters);
        c.learners = vec![id];
        tweak(&mut c);
        self.nodes.insert(id, TestNode::new(c, MemStorage::new()));
    }

    pub fn node(&self, id: NodeId) -> &Node<MemStorage> {
        &self.nodes[&id].node
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut Node<MemStorage> {
        &mut self.nodes.get_mut(&id).unwrap().node
    }

    /// Carries out every node's `Ready` (persist, then collect messages, apply).
    pub fn process_ready(&mut self) {
        for tn in self.nodes.values_mut() {
            let out = tn.process_ready();
            self.in_flight.extend(out);
        }
    }

    /// Delivers messages until none are left (cut links drop theirs).
    pub fn settle(&mut self) {
        for _ in 0..10_000 {
            self.process_ready();
            if self.in_flight.is_empty() {
                return;
            }
            let msgs = std::mem::take(&mut self.in_flight);
            for m in msgs {
                self.deliver(m);
            }
        }
        panic!("cluster did not settle");
    }

    /// Like [`settle`](Self::settle), but drops every message for which `keep` is false.
    pub fn settle_filtered(&mut self, mut keep: impl FnMut(&Message) -> bool) {
        for _ in 0..10_000 {
            self.process_ready();
            if self.in_flight.is_empty() {
                return;
            }
            let msgs = std::mem::take(&mut self.in_flight);
            for m in msgs {
                if keep(&m) {
                    self.deliver(m);
                }
            }
        }
        panic!("cluster did not settle");
    }

    /// Carries out every node's `Ready` and returns the messages produced, undelivered.
    pub fn take_messages(&mut self) -> Vec<Message> {
        self.process_ready();
        std::mem::take(&mut self.in_flight)
    }

    /// Crashes node `id` and restarts it from what it persisted (unsent messages and
    /// volatile state are lost; entries it already applied are not delivered again).
    pub fn restart(&mut self, id: NodeId) {
        self.in_flight.retain(|m| m.from != id);
        let tn = self.nodes.get_mut(&id).unwrap();
        let mut cfg = tn.node.config().clone();
        cfg.applied = tn.applied.last().map_or(0, |e| e.index);
        let store = tn.node.storage().clone();
        tn.node = Node::new(cfg, store).unwrap();
    }

    pub fn deliver(&mut self, m: Message) {
        if self.cut.contains(&(m.from, m.to)) {
            return;
        }
        if let Some(tn) = self.nodes.get_mut(&m.to) {
            tn.node.step(m);
        }
    }

    /// Ticks `id` until it starts an election, then lets the cluster settle.
    pub fn elect(&mut self, id: NodeId) {
        self.node_mut(id).campaign();
        self.settle();
    }

    pub fn tick_all(&mut self, ticks: u32) {
        for _ in 0..ticks {
            for tn in self.nodes.values_mut() {
                tn.node.tick();
            }
            self.settle();
        }
    }

    pub fn isolate(&mut self, id: NodeId) {
        let others: Vec<NodeId> = self.nodes.keys().copied().filter(|&o| o != id).collect();
        for o in others {
            self.cut.insert((id, o));
            self.cut.insert((o, id));
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    pub fn leaders(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, t)| t.node.role() == Role::Leader)
            .map(|(&id, _)| id)
            .collect()
    }

    /// (index, term, kind) of every entry a node has applied.
    pub fn applied(&self, id: NodeId) -> Vec<(LogIndex, Term, EntryKind)> {
        self.nodes[&id]
            .applied
            .iter()
            .map(|e| (e.index, e.term, e.kind))
            .collect()
    }

    /// Every entry in a node's persisted log.
    pub fn persisted(&self, id: NodeId) -> Vec<Entry> {
        self.nodes[&id].node.storage().all_entries().to_vec()
    }
}

impl TestNode {
    pub fn new(c: Config, store: MemStorage) -> Self {
        TestNode {
            node: Node::new(c, store).unwrap(),
            applied: Vec::new(),
            read_states: Vec::new(),
        }
    }

    /// Carries out one `Ready`; returns the messages to send.
    pub fn process_ready(&mut self) -> Vec<Message> {
        if !self.node.has_ready() {
            return Vec::new();
        }
        let rd = self.node.ready();
        let mut out = rd.messages.clone();
        self.node.storage_mut().apply_ready(&rd).unwrap();
        out.extend(rd.persisted_messages.iter().cloned());
        self.applied.extend(rd.committed_entries.iter().cloned());
        self.read_states.extend(rd.read_states.iter().copied());
        self.node.advance();
        out
    }
}

/// A message with the given parts.
pub fn msg(from: NodeId, to: NodeId, term: Term, body: raft_core::MessageBody) -> Message {
    Message {
        from,
        to,
        term,
        body,
    }
}

/// Normal entries with the given terms at indexes 1, 2, ...
pub fn entries_with_terms(terms: &[Term]) -> Vec<Entry> {
    terms
        .iter()
        .enumerate()
        .map(|(i, &t)| Entry::normal(t, i as u64 + 1, format!("e{}", i + 1).into_bytes()))
        .collect()
}

/// A storage preloaded with entries and a hard state.
pub fn storage_with(terms: &[Term], term: Term, vote: Option<NodeId>) -> MemStorage {
    let mut s = MemStorage::new();
    s.append(&entries_with_terms(terms)).unwrap();
    s.set_hard_state(raft_core::HardState {
        term,
        vote,
        commit: 0,
    });
    s
}

/// The paper's basic algorithm: neither pre-vote nor check-quorum.
pub fn plain(c: &mut Config) {
    c.pre_vote = false;
    c.check_quorum = false;
}

/// Pre-vote without check-quorum (no leader lease).
pub fn plain_with_pre_vote(c: &mut Config) {
    c.pre_vote = true;
    c.check_quorum = false;
}

/// A lone node whose peers the test plays by hand.
pub fn lone_node(
    id: NodeId,
    voters: &[NodeId],
    store: MemStorage,
    tweak: impl Fn(&mut Config),
) -> Node<MemStorage> {
    let mut c = config(id, voters);
    tweak(&mut c);
    Node::new(c, store).unwrap()
}

/// Carries out one `Ready` of a lone node (persist, then advance) and returns it.
pub fn handle_ready(node: &mut Node<MemStorage>) -> Ready {
    let rd = node.ready();
    node.storage_mut().apply_ready(&rd).unwrap();
    node.advance();
    rd
}

/// What a lone node handed out over several `Ready`s.
#[derive(Debug, Default)]
pub struct Drained {
    /// Every message, in order (each `Ready`'s `messages`, then its `persisted_messages`).
    pub messages: Vec<Message>,
    pub committed: Vec<Entry>,
    pub read_states: Vec<ReadState>,
}

/// Carries out `Ready`s until there is none; returns everything they held.
pub fn drain_all(node: &mut Node<MemStorage>) -> Drained {
    let mut out = Drained::default();
    while node.has_ready() {
        let rd = handle_ready(node);
        out.messages.extend(rd.messages);
        out.messages.extend(rd.persisted_messages);
        out.committed.extend(rd.committed_entries);
        out.read_states.extend(rd.read_states);
    }
    out
}

/// Carries out `Ready`s until there is none; returns every message produced, in order.
pub fn drain(node: &mut Node<MemStorage>) -> Vec<Message> {
    drain_all(node).messages
}

/// Makes a lone node leader by answering its (pre-)vote requests with grants from every
/// peer. Messages are left in the node for the caller to drain.
pub fn make_leader(node: &mut Node<MemStorage>) {
    // A node that heard from a leader lately refuses to campaign on request (its lease):
    // then it campaigns on its own once its election timeout passes.
    if !node.campaign() {
        for _ in 0..1000 {
            node.tick();
            if node.role() != Role::Follower {
                break;
            }
        }
    }
    let id = node.id();
    let peers: Vec<NodeId> = node.voters().filter(|&p| p != id).collect();
    if node.role() == Role::PreCandidate {
        drain(node);
        let term = node.term() + 1;
        for &p in &peers {
            if node.role() == Role::PreCandidate {
                node.step(msg(
                    p,
                    id,
                    term,
                    MessageBody::PreVoteResponse { granted: true },
                ));
            }
        }
    }
    drain(node);
    let term = node.term();
    for &p in &peers {
        if node.role() == Role::Candidate {
            node.step(msg(
                p,
                id,
                term,
                MessageBody::RequestVoteResponse { granted: true },
            ));
        }
    }
    assert_eq!(node.role(), Role::Leader, "node {id} did not win");
}

/// Node 1, leader of term 1 in a 3-node cluster whose peers the test plays, with its no-op
/// committed (both peers acknowledged it) and everything drained.
pub fn leader_with_noop_committed(tweak: impl Fn(&mut Config)) -> Node<MemStorage> {
    let mut leader = lone_node(1, &ids(3), MemStorage::new(), tweak);
    make_leader(&mut leader);
    drain(&mut leader);
    for p in [2, 3] {
        leader.step(msg(p, 1, 1, ack(1)));
    }
    drain(&mut leader);
    assert_eq!(leader.commit_index(), 1);
    leader
}

/// (index, term) of every entry in a node's log, durable or not.
pub fn log_of(node: &Node<MemStorage>) -> Vec<(LogIndex, Term)> {
    (1..=node.last_index())
        .map(|i| (i, node.entry_term(i).unwrap()))
        .collect()
}

/// Node ids 1..=n.
pub fn ids(n: u64) -> Vec<NodeId> {
    (1..=n).collect()
}

/// An AppendEntries body.
pub fn append(
    prev_index: LogIndex,
    prev_term: Term,
    entries: Vec<Entry>,
    commit: LogIndex,
) -> raft_core::MessageBody {
    raft_core::MessageBody::AppendEntries {
        prev_index,
        prev_term,
        entries,
        commit,
    }
}

/// A successful AppendEntriesResponse body.
pub fn ack(index: LogIndex) -> raft_core::MessageBody {
    raft_core::MessageBody::AppendEntriesResponse {
        index,
        reject: None,
    }
}
