//! Basic end-to-end behaviour of a small cluster.
#![allow(clippy::unwrap_used)]
mod common;
use common::Cluster;
use raft_core::Role;

#[test]
fn three_nodes_elect_one_leader_and_commit_on_all() {
    let mut c = Cluster::new(3);
    c.elect(1);
    assert_eq!(c.leaders(), vec![1]);
    let (idx, term) = c.node_mut(1).propose(&b"x"[..]).unwrap();
    c.settle();
    c.tick_all(2);
    for id in 1..=3 {
        assert!(
            c.applied(id).iter().any(|&(i, t, _)| i == idx && t == term),
            "node {id}"
        );
        assert_eq!(c.node(id).role() == Role::Leader, id == 1);
    }
}
