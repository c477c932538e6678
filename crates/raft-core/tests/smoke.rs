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

#[test]
fn nodes_may_be_numbered_from_zero() {
    // Ids are names, not positions: 0 is as good as any (the server numbers nodes as the
    // operator starts them, from 0).
    let mut c = Cluster::with_ids(&[0, 1, 2], |_| {});
    c.elect(0);
    assert_eq!(c.leaders(), vec![0]);
    let (idx, term) = c.node_mut(0).propose(&b"x"[..]).unwrap();
    c.settle();
    c.tick_all(2);
    for id in 0..=2 {
        assert!(
            c.applied(id).iter().any(|&(i, t, _)| i == idx && t == term),
            "node {id}"
        );
        assert_eq!(
            c.node(id).leader(),
            Some(0),
            "node {id} names node 0 as leader"
        );
    }
    // Node 0 also votes and follows: when it is cut off, another node takes over.
    c.isolate(0);
    c.tick_all(40);
    c.settle();
    let leaders = c.leaders();
    assert!(
        leaders.contains(&1) || leaders.contains(&2),
        "a new leader among 1 and 2: {leaders:?}"
    );
}

#[test]
fn a_node_must_be_one_of_the_voters() {
    let c = raft_core::Config::new(0, [1, 2, 3]);
    assert_eq!(
        c.validate(),
        Err(raft_core::ConfigError::NotAMember(0)),
        "node 0 is not in the voter list"
    );
    assert_eq!(raft_core::Config::new(0, [0, 1, 2]).validate(), Ok(()));
}

#[test]
fn a_zero_byte_budget_for_messages_or_for_inflight_bytes_is_refused() {
    let mut c = raft_core::Config::new(1, [1, 2, 3]);
    c.max_bytes_per_msg = 0;
    assert!(c.validate().is_err(), "no message could carry an entry");
    let mut c = raft_core::Config::new(1, [1, 2, 3]);
    c.max_inflight_bytes = 0;
    assert!(c.validate().is_err(), "nothing could ever be in flight");
}

#[test]
fn a_state_machine_behind_a_compacted_log_or_ahead_of_the_log_is_refused_at_start() {
    use raft_core::{Config, ConfigError, Entry, LogStore, MemStorage, Node};
    let mut store = MemStorage::new();
    store
        .append(
            &(1..=10)
                .map(|i| Entry::normal(1, i, b"x".to_vec()))
                .collect::<Vec<_>>(),
        )
        .unwrap();
    let start = |applied| {
        let mut c = Config::new(1, [1, 2, 3]);
        c.applied = applied;
        Node::new(c, store.clone()).err()
    };
    // Anything from nothing applied to the last entry is a state the log can follow.
    for applied in [0, 5, 10] {
        assert_eq!(start(applied), None, "applied {applied}");
    }
    assert_eq!(
        start(11),
        Some(ConfigError::LogBehindStateMachine {
            applied: 11,
            last_index: 10
        }),
        "the log lost entry 11, which the state machine applied"
    );
    store.compact(6).unwrap();
    let mut c = Config::new(1, [1, 2, 3]);
    c.applied = 4;
    assert_eq!(
        Node::new(c, store.clone()).err(),
        Some(ConfigError::StateMachineBehind {
            applied: 4,
            first_index: store.first_index()
        }),
        "entries 5 and 6 are gone from the log and were never applied"
    );
}
