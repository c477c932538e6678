//! Lease reads (`Config::lease_reads`, off by default): a leader whose recent heartbeat
//! round a majority acknowledged serves linearizable reads at once, for
//! `election_ticks - lease_margin_ticks` ticks from when that round was sent; a transfer
//! ends the lease, and a starting node ignores candidates for an election timeout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use raft_core::{
    Config, ConfigError, MemStorage, Message, MessageBody, Node, ReadOutcome, ReadState, Role,
};

/// Check-quorum on, pre-vote off, lease reads on; election timeout 10 ticks, heartbeats
/// every tick, a margin of 5: a lease lasts 5 ticks.
fn leasing(c: &mut Config) {
    c.pre_vote = false;
    c.check_quorum = true;
    c.lease_reads = true;
}

/// Sends one heartbeat round (one tick) and returns each peer's round number.
fn heartbeat_round(l: &mut Node<MemStorage>) -> Vec<(u64, u64)> {
    l.tick();
    drain(l)
        .iter()
        .filter_map(|m| match m.body {
            MessageBody::Heartbeat { read_seq, .. } => Some((m.to, read_seq)),
            _ => None,
        })
        .collect()
}

/// Peer `p` acknowledges heartbeat round `seq`.
fn heartbeat_ack(l: &mut Node<MemStorage>, p: u64, seq: u64) {
    let term = l.term();
    l.step(msg(
        p,
        1,
        term,
        MessageBody::HeartbeatResponse { read_seq: seq },
    ));
}

/// A leader whose lease a majority (peer 2) confirmed just now.
fn leased_leader() -> Node<MemStorage> {
    let mut l = leader_with_noop_committed(leasing);
    let round = heartbeat_round(&mut l);
    heartbeat_ack(&mut l, 2, round[0].1);
    drain(&mut l);
    l
}

fn ready_reads(rd_reads: &[ReadState]) -> Vec<(u64, ReadOutcome)> {
    rd_reads.iter().map(|r| (r.id, r.outcome)).collect()
}

fn heartbeats(msgs: &[Message]) -> usize {
    msgs.iter()
        .filter(|m| matches!(m.body, MessageBody::Heartbeat { .. }))
        .count()
}

#[test]
fn a_leased_leader_answers_a_read_at_once_without_a_heartbeat_round() {
    let mut l = leased_leader();
    let commit = l.commit_index();
    l.read_index(9).unwrap();
    let d = drain_all(&mut l);
    assert_eq!(
        ready_reads(&d.read_states),
        vec![(9, ReadOutcome::Ready { index: commit })]
    );
    assert_eq!(heartbeats(&d.messages), 0, "no round of its own");
    assert_eq!(l.status().lease_reads, 1);
}

#[test]
fn without_lease_reads_a_read_waits_for_its_own_heartbeat_round() {
    let mut l = leader_with_noop_committed(|c| {
        leasing(c);
        c.lease_reads = false;
    });
    let round = heartbeat_round(&mut l);
    heartbeat_ack(&mut l, 2, round[0].1);
    drain(&mut l);
    l.read_index(9).unwrap();
    let d = drain_all(&mut l);
    assert!(d.read_states.is_empty());
    assert_eq!(heartbeats(&d.messages), 2, "a round to both peers");
    assert_eq!(l.status().lease_reads, 0);
}

#[test]
fn the_lease_ends_election_ticks_less_the_margin_after_the_confirmed_round_was_sent() {
    let mut l = leased_leader();
    // Sent at tick 1 of the lease clock... (rounds sent later go unanswered).
    for _ in 0..3 {
        heartbeat_round(&mut l);
    }
    l.read_index(1).unwrap();
    assert_eq!(drain_all(&mut l).read_states.len(), 1, "still leased");
    heartbeat_round(&mut l);
    l.read_index(2).unwrap();
    let d = drain_all(&mut l);
    assert!(
        d.read_states.is_empty(),
        "served from a lease 5 ticks after its round was sent"
    );
    assert_eq!(heartbeats(&d.messages), 2, "back to a heartbeat round");
}

#[test]
fn an_acknowledged_later_round_renews_the_lease() {
    let mut l = leased_leader();
    for _ in 0..3 {
        heartbeat_round(&mut l);
    }
    let round = heartbeat_round(&mut l);
    heartbeat_ack(&mut l, 3, round[0].1);
    drain(&mut l);
    for _ in 0..2 {
        heartbeat_round(&mut l);
    }
    l.read_index(1).unwrap();
    assert_eq!(drain_all(&mut l).read_states.len(), 1);
}

#[test]
fn a_leader_that_sent_timeout_now_serves_no_lease_read() {
    let mut l = leased_leader();
    l.transfer_leadership(2).unwrap();
    let msgs = drain(&mut l);
    assert!(
        msgs.iter()
            .any(|m| m.to == 2 && matches!(m.body, MessageBody::TimeoutNow)),
        "peer 2 holds the whole log: it is told to campaign"
    );
    l.read_index(1).unwrap();
    let d = drain_all(&mut l);
    assert!(
        d.read_states.is_empty(),
        "its lease ended with the transfer"
    );
    assert_eq!(l.status().lease_reads, 0);
}

#[test]
fn a_starting_node_with_lease_reads_ignores_candidates_for_an_election_timeout() {
    let vote = MessageBody::RequestVote {
        last_log_index: 0,
        last_log_term: 0,
        transfer: false,
    };
    let mut n = lone_node(1, &ids(3), MemStorage::new(), leasing);
    n.step(msg(2, 1, 1, vote.clone()));
    assert!(
        drain(&mut n).is_empty(),
        "a vote in its first election timeout"
    );
    assert_eq!(n.term(), 0);
    for _ in 0..10 {
        n.tick();
    }
    drain(&mut n);
    let term = n.term() + 1;
    n.step(msg(2, 1, term, vote.clone()));
    let answers = drain(&mut n);
    assert!(
        answers
            .iter()
            .any(|m| matches!(m.body, MessageBody::RequestVoteResponse { granted: true })),
        "{answers:?}"
    );

    // Without lease reads, a starting node votes at once.
    let mut plain_node = lone_node(1, &ids(3), MemStorage::new(), |c| {
        leasing(c);
        c.lease_reads = false;
    });
    plain_node.step(msg(2, 1, 1, vote));
    assert_eq!(plain_node.term(), 1);
    assert_eq!(plain_node.role(), Role::Follower);
}

/// A follower that heard from its leader within an election timeout backs that leader:
/// asked to campaign (an operator's `campaign`), it refuses, or it would vote for itself
/// while the leader, counting on it, serves reads from its lease. (With a partial partition,
/// leader cut from the other voter, that election succeeded and the leader served a stale
/// read: simulator seed 620 of the core simulator as it was when campaigns were added.)
#[test]
fn a_follower_backing_its_leader_does_not_campaign_on_request_until_the_lease_is_over() {
    let mut n = lone_node(2, &ids(3), MemStorage::new(), leasing);
    for _ in 0..10 {
        n.tick(); // past the starting node's lease
    }
    drain(&mut n);
    let heartbeat = MessageBody::Heartbeat {
        commit: 0,
        read_seq: 1,
    };
    n.step(msg(1, 2, 5, heartbeat));
    drain(&mut n);
    assert_eq!(n.leader(), Some(1));
    assert!(!n.campaign(), "campaigned while backing its leader");
    assert_eq!((n.role(), n.term()), (Role::Follower, 5));
    assert!(drain(&mut n).is_empty(), "no vote request may leave");
    // An election timeout without the leader: the lease is over, and it campaigns.
    for _ in 0..10 {
        n.tick();
    }
    drain(&mut n);
    if n.role() == Role::Follower {
        assert!(
            n.campaign(),
            "refused once the leader was silent for an election timeout"
        );
    }
    assert_eq!(n.role(), Role::Candidate);
    assert_eq!(n.term(), 6);
}

#[test]
fn a_follower_read_forwarded_to_a_leased_leader_is_answered_at_once() {
    let mut l = leased_leader();
    let commit = l.commit_index();
    l.step(msg(3, 1, l.term(), MessageBody::ReadIndex { id: 4 }));
    let msgs = drain(&mut l);
    assert!(msgs.iter().any(|m| m.to == 3
        && m.body
            == MessageBody::ReadIndexResponse {
                id: 4,
                index: Some(commit)
            }));
}

#[test]
fn lease_reads_need_check_quorum_and_a_margin_below_the_election_timeout() {
    let mut c = config(1, &ids(3));
    c.lease_reads = true;
    c.check_quorum = false;
    assert!(matches!(c.validate(), Err(ConfigError::Invalid(_))));
    c.check_quorum = true;
    assert!(c.validate().is_ok());
    c.lease_margin_ticks = c.election_ticks;
    assert!(matches!(c.validate(), Err(ConfigError::Invalid(_))));
}
