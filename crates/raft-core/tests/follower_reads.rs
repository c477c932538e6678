//! Linearizable reads served by followers (§6.4 of the thesis): the follower asks the leader
//! for a read index, the leader confirms its leadership with a majority as for its own
//! reads, and the follower serves the read once it has applied up to that index.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use raft_core::{
    LogIndex, MemStorage, Message, MessageBody, Node, ReadError, ReadOutcome, ReadState,
};

/// A follower (node 2) of leader 1 in term 1, holding entries 1..=2.
fn follower() -> Node<MemStorage> {
    let mut f = lone_node(2, &ids(3), MemStorage::new(), plain);
    f.step(msg(1, 2, 1, append(0, 0, entries_with_terms(&[1, 1]), 2)));
    drain(&mut f);
    assert_eq!(f.leader(), Some(1));
    f
}

/// A 3-node leader (id 1) of term 1 with entries 1..=3 committed.
fn leader() -> Node<MemStorage> {
    let mut l = leader_with_noop_committed(plain);
    l.propose(&b"a"[..]).unwrap();
    l.propose(&b"b"[..]).unwrap();
    drain(&mut l);
    for p in [2, 3] {
        l.step(msg(p, 1, 1, ack(3)));
    }
    drain(&mut l);
    assert_eq!(l.commit_index(), 3);
    l
}

fn read_requests(msgs: &[Message]) -> Vec<(u64, u64)> {
    msgs.iter()
        .filter_map(|m| match m.body {
            MessageBody::ReadIndex { id } => Some((m.to, id)),
            _ => None,
        })
        .collect()
}

fn read_answers(msgs: &[Message]) -> Vec<(u64, u64, Option<LogIndex>)> {
    msgs.iter()
        .filter_map(|m| match m.body {
            MessageBody::ReadIndexResponse { id, index } => Some((m.to, id, index)),
            _ => None,
        })
        .collect()
}

fn heartbeat_seq(msgs: &[Message], to: u64) -> u64 {
    msgs.iter()
        .filter(|m| m.to == to)
        .find_map(|m| match m.body {
            MessageBody::Heartbeat { read_seq, .. } => Some(read_seq),
            _ => None,
        })
        .expect("a heartbeat round for the read")
}

#[test]
fn a_follower_forwards_a_read_to_its_leader_at_once() {
    let mut f = follower();
    f.read_index(7).unwrap();
    let rd = f.ready();
    assert_eq!(
        read_requests(&rd.messages),
        vec![(1, 7)],
        "the request promises nothing durable: it leaves at once"
    );
    assert!(rd.read_states.is_empty());
}

#[test]
fn the_leader_answers_a_forwarded_read_once_a_majority_confirms_it_leads() {
    let mut l = leader();
    l.step(msg(2, 1, 1, MessageBody::ReadIndex { id: 7 }));
    let out = drain(&mut l);
    assert!(read_answers(&out).is_empty(), "answered before confirming");
    let seq = heartbeat_seq(&out, 3);
    l.step(msg(
        3,
        1,
        1,
        MessageBody::HeartbeatResponse { read_seq: seq },
    ));
    let all = drain_all(&mut l);
    assert_eq!(read_answers(&all.messages), vec![(2, 7, Some(3))]);
    assert!(
        all.read_states.is_empty(),
        "not one of the leader's own reads"
    );
}

#[test]
fn the_follower_reports_the_leaders_index() {
    let mut f = follower();
    f.read_index(7).unwrap();
    drain(&mut f);
    f.step(msg(
        1,
        2,
        1,
        MessageBody::ReadIndexResponse {
            id: 7,
            index: Some(5),
        },
    ));
    let all = drain_all(&mut f);
    assert_eq!(
        all.read_states,
        vec![ReadState {
            id: 7,
            outcome: ReadOutcome::Ready { index: 5 }
        }]
    );
    // A duplicate answer, or one for a read never asked, is ignored.
    f.step(msg(
        1,
        2,
        1,
        MessageBody::ReadIndexResponse {
            id: 7,
            index: Some(5),
        },
    ));
    assert!(drain_all(&mut f).read_states.is_empty());
}

#[test]
fn a_leader_that_has_not_committed_in_its_term_answers_after_its_first_commit() {
    let mut l = lone_node(1, &ids(3), MemStorage::new(), plain);
    make_leader(&mut l);
    drain(&mut l);
    l.step(msg(2, 1, 1, MessageBody::ReadIndex { id: 9 }));
    assert!(read_answers(&drain(&mut l)).is_empty());
    l.step(msg(2, 1, 1, ack(1)));
    let out = drain(&mut l);
    let seq = heartbeat_seq(&out, 3);
    l.step(msg(
        3,
        1,
        1,
        MessageBody::HeartbeatResponse { read_seq: seq },
    ));
    assert_eq!(read_answers(&drain(&mut l)), vec![(2, 9, Some(1))]);
}

#[test]
fn a_node_that_is_not_the_leader_refuses_a_forwarded_read() {
    let mut f = follower();
    f.step(msg(3, 2, 1, MessageBody::ReadIndex { id: 4 }));
    assert_eq!(read_answers(&drain(&mut f)), vec![(3, 4, None)]);
    // And the asker reports its read aborted.
    let mut asker = follower();
    asker.read_index(4).unwrap();
    drain(&mut asker);
    asker.step(msg(
        1,
        2,
        1,
        MessageBody::ReadIndexResponse { id: 4, index: None },
    ));
    assert_eq!(
        drain_all(&mut asker).read_states,
        vec![ReadState {
            id: 4,
            outcome: ReadOutcome::Aborted
        }]
    );
}

#[test]
fn a_forwarded_read_unanswered_for_an_election_timeout_is_aborted() {
    let mut f = follower();
    f.read_index(3).unwrap();
    drain(&mut f);
    for _ in 0..9 {
        f.tick();
        assert!(
            drain_all(&mut f).read_states.is_empty(),
            "aborted too early"
        );
    }
    f.tick();
    let states = drain_all(&mut f).read_states;
    assert!(
        states.contains(&ReadState {
            id: 3,
            outcome: ReadOutcome::Aborted
        }),
        "{states:?}"
    );
}

#[test]
fn a_new_term_aborts_the_forwarded_reads_of_the_old_one() {
    let mut f = follower();
    f.read_index(3).unwrap();
    drain(&mut f);
    f.step(msg(3, 2, 2, append(2, 1, vec![], 2)));
    assert_eq!(
        drain_all(&mut f).read_states,
        vec![ReadState {
            id: 3,
            outcome: ReadOutcome::Aborted
        }]
    );
    // The old leader's late answer changes nothing.
    f.step(msg(
        1,
        2,
        1,
        MessageBody::ReadIndexResponse {
            id: 3,
            index: Some(2),
        },
    ));
    assert!(drain_all(&mut f).read_states.is_empty());
}

#[test]
fn a_node_without_a_known_leader_refuses_to_read() {
    let mut n = lone_node(2, &ids(3), MemStorage::new(), plain);
    assert_eq!(n.read_index(1), Err(ReadError::NotLeader { leader: None }));
}
