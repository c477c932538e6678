//! The caller's flow-control window (`Node::set_flow_window`): a per-follower bound on the
//! entry bytes a leader has unacknowledged, below the configured `max_inflight_bytes`. It
//! decides how fast entries flow to a follower, never what is sent or committed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{ack, drain, leader_with_noop_committed, msg};
use raft_core::{MemStorage, Message, MessageBody, Node, NodeId, Role, ENTRY_OVERHEAD_BYTES};

/// Payload bytes of each proposal in these tests, and the bytes the window counts for it.
const PAYLOAD: u64 = 100;
const SIZE: u64 = PAYLOAD + ENTRY_OVERHEAD_BYTES;

/// Node 1, leader of a 3-node cluster, one entry per append, both followers replicating.
fn leader(tweak: impl Fn(&mut raft_core::Config)) -> Node<MemStorage> {
    leader_with_noop_committed(|c| {
        c.max_entries_per_msg = 1;
        tweak(c);
    })
}

fn propose(n: &mut Node<MemStorage>, count: usize) {
    for _ in 0..count {
        n.propose(vec![7; PAYLOAD as usize]).unwrap();
    }
}

/// The last index of each append carrying entries to `to`, in order.
fn appended_to(msgs: &[Message], to: NodeId) -> Vec<u64> {
    msgs.iter()
        .filter(|m| m.to == to)
        .filter_map(|m| match &m.body {
            MessageBody::AppendEntries { entries, .. } => entries.last().map(|e| e.index),
            _ => None,
        })
        .collect()
}

fn peer(n: &Node<MemStorage>, id: NodeId) -> raft_core::PeerProgress {
    n.status()
        .progress
        .into_iter()
        .find(|p| p.id == id)
        .unwrap()
}

#[test]
fn a_window_holds_back_appends_once_that_many_bytes_are_unacknowledged() {
    let mut n = leader(|_| {});
    n.set_flow_window(2, Some(3 * SIZE));
    propose(&mut n, 10);
    let sent = drain(&mut n);
    assert_eq!(appended_to(&sent, 2), vec![2, 3, 4], "three entries' bytes");
    assert_eq!(
        appended_to(&sent, 3).len(),
        10,
        "the other follower has no window"
    );
    let p = peer(&n, 2);
    assert_eq!(p.inflight_bytes, 3 * SIZE);
    assert_eq!(p.flow_window, Some(3 * SIZE));
}

#[test]
fn each_acknowledgement_lets_as_many_bytes_go_as_it_freed() {
    let mut n = leader(|_| {});
    n.set_flow_window(2, Some(3 * SIZE));
    propose(&mut n, 10);
    drain(&mut n);
    n.step(msg(2, 1, 1, ack(3)));
    assert_eq!(appended_to(&drain(&mut n), 2), vec![5, 6]);
}

#[test]
fn a_larger_window_sends_what_it_held_back_at_once() {
    let mut n = leader(|_| {});
    n.set_flow_window(2, Some(2 * SIZE));
    propose(&mut n, 6);
    assert_eq!(appended_to(&drain(&mut n), 2), vec![2, 3]);
    n.set_flow_window(2, Some(4 * SIZE));
    assert_eq!(appended_to(&drain(&mut n), 2), vec![4, 5]);
    n.set_flow_window(2, None);
    assert_eq!(
        appended_to(&drain(&mut n), 2),
        vec![6, 7],
        "no window: only the configured limit"
    );
}

#[test]
fn a_window_never_raises_the_configured_limit() {
    let mut n = leader(|c| c.max_inflight_bytes = 2 * SIZE);
    n.set_flow_window(2, Some(1 << 30));
    propose(&mut n, 5);
    assert_eq!(appended_to(&drain(&mut n), 2), vec![2, 3]);
}

#[test]
fn a_window_of_zero_still_lets_one_append_be_in_flight() {
    let mut n = leader(|_| {});
    n.set_flow_window(2, Some(0));
    propose(&mut n, 3);
    assert_eq!(appended_to(&drain(&mut n), 2), vec![2]);
    assert_eq!(peer(&n, 2).flow_window, Some(1));
    n.step(msg(2, 1, 1, ack(2)));
    assert_eq!(appended_to(&drain(&mut n), 2), vec![3]);
}

#[test]
fn a_window_does_not_hold_back_commitment_through_the_other_followers() {
    let mut n = leader(|_| {});
    n.set_flow_window(2, Some(1));
    propose(&mut n, 4);
    drain(&mut n);
    n.step(msg(3, 1, 1, ack(5)));
    drain(&mut n);
    assert_eq!(
        n.commit_index(),
        5,
        "follower 3 and the leader are a majority"
    );
}

#[test]
fn a_window_ends_with_the_leaders_term() {
    let mut n = leader(|_| {});
    n.set_flow_window(2, Some(SIZE));
    // A newer term: node 1 steps down, and wins again later.
    n.step(msg(
        3,
        1,
        2,
        MessageBody::Heartbeat {
            commit: 0,
            read_seq: 0,
        },
    ));
    assert_eq!(n.role(), Role::Follower);
    common::make_leader(&mut n);
    drain(&mut n);
    assert_eq!(peer(&n, 2).flow_window, None);
}

#[test]
fn on_a_follower_a_window_is_ignored() {
    let mut n = leader(|_| {});
    n.step(msg(
        3,
        1,
        2,
        MessageBody::Heartbeat {
            commit: 0,
            read_seq: 0,
        },
    ));
    drain(&mut n);
    n.set_flow_window(2, Some(SIZE));
    assert!(drain(&mut n).is_empty(), "a follower sends no appends");
    assert!(n.status().progress.is_empty());
}

/// The entries of each append to `to`, by count.
fn append_sizes(msgs: &[Message], to: NodeId) -> Vec<usize> {
    msgs.iter()
        .filter(|m| m.to == to)
        .filter_map(|m| match &m.body {
            MessageBody::AppendEntries { entries, .. } if !entries.is_empty() => {
                Some(entries.len())
            }
            _ => None,
        })
        .collect()
}

#[test]
fn under_a_window_an_append_carries_at_most_a_quarter_of_it() {
    // Heartbeats queue behind appends on the way to a slow follower: small appends keep
    // that wait short.
    let mut n = leader_with_noop_committed(|c| c.max_entries_per_msg = 1000);
    n.set_flow_window(2, Some(8 * SIZE));
    propose(&mut n, 8);
    let sent = drain(&mut n);
    assert_eq!(append_sizes(&sent, 2), vec![2, 2, 2, 2]);
    assert_eq!(append_sizes(&sent, 3), vec![8], "no window: one append");
}

#[test]
fn under_a_tiny_window_an_append_still_carries_one_entry() {
    let mut n = leader_with_noop_committed(|c| c.max_entries_per_msg = 1000);
    n.set_flow_window(2, Some(1));
    propose(&mut n, 3);
    assert_eq!(append_sizes(&drain(&mut n), 2), vec![1]);
}
