//! Runs a 3-node cluster in one process, in memory, driven tick by tick: elects a leader,
//! commits a few entries, isolates the leader, shows the others elect a new one, heals.
//!
//! `cargo run -p raft-core --example tick_by_tick`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use raft_core::{Config, MemStorage, Message, Node, NodeId, Role};

struct Cluster {
    nodes: BTreeMap<NodeId, Node<MemStorage>>,
    isolated: Option<NodeId>,
    committed: BTreeMap<NodeId, u64>,
}

impl Cluster {
    fn step(&mut self) {
        let mut inbox: Vec<Message> = Vec::new();
        for node in self.nodes.values_mut() {
            node.tick();
        }
        loop {
            for (id, node) in self.nodes.iter_mut() {
                if !node.has_ready() {
                    continue;
                }
                let rd = node.ready();
                inbox.extend(rd.messages.iter().cloned());
                node.storage_mut()
                    .apply_ready(&rd)
                    .expect("in-memory append");
                inbox.extend(rd.persisted_messages.iter().cloned());
                for e in &rd.committed_entries {
                    if !e.data.is_empty() {
                        println!(
                            "node {id}: applied #{} (term {}): {}",
                            e.index,
                            e.term,
                            String::from_utf8_lossy(&e.data)
                        );
                    }
                    self.committed.insert(*id, e.index);
                }
                node.advance();
            }
            if inbox.is_empty() {
                break;
            }
            for m in inbox.drain(..) {
                if self.isolated == Some(m.from) || self.isolated == Some(m.to) {
                    continue;
                }
                if let Some(n) = self.nodes.get_mut(&m.to) {
                    n.step(m);
                }
            }
        }
    }

    fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .find(|(id, n)| n.role() == Role::Leader && self.isolated != Some(**id))
            .map(|(id, _)| *id)
    }

    fn run_until_leader(&mut self) -> NodeId {
        for _ in 0..10_000 {
            self.step();
            if let Some(l) = self.leader() {
                return l;
            }
        }
        panic!("no leader elected");
    }
}

fn main() {
    let ids = [1, 2, 3];
    let nodes = ids
        .iter()
        .map(|&id| {
            let mut cfg = Config::new(id, ids);
            cfg.seed = 7;
            (id, Node::new(cfg, MemStorage::new()).expect("valid config"))
        })
        .collect();
    let mut c = Cluster {
        nodes,
        isolated: None,
        committed: BTreeMap::new(),
    };
    let leader = c.run_until_leader();
    println!(
        "node {leader} is leader in term {}",
        c.nodes[&leader].term()
    );
    for i in 0..3 {
        let data = format!("entry {i}");
        c.nodes
            .get_mut(&leader)
            .unwrap()
            .propose(data.into_bytes())
            .unwrap();
        c.step();
    }
    println!("isolating node {leader}");
    c.isolated = Some(leader);
    let new_leader = c.run_until_leader();
    println!(
        "node {new_leader} is leader in term {}",
        c.nodes[&new_leader].term()
    );
    c.nodes
        .get_mut(&new_leader)
        .unwrap()
        .propose(&b"after failover"[..])
        .unwrap();
    c.step();
    println!("healing");
    c.isolated = None;
    for _ in 0..100 {
        c.step();
    }
    println!("last applied per node: {:?}", c.committed);
}
