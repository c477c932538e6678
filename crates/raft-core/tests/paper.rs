//! The rules of the Raft paper, one test per rule: Figure 2 and §5.1–5.5 of "In Search of
//! an Understandable Consensus Algorithm" (Ongaro and Ousterhout), plus the extensions of
//! Ongaro's thesis that the core implements (disruptive-server lease §4.2.3, check-quorum
//! §6.2, ReadIndex §6.4, pre-vote §9.6). It covers the ground of etcd-raft's
//! `raft_paper_test.go` and raft-rs' `test_raft_paper.rs`.
//!
//! Each test quotes or paraphrases the rule it checks and drives nodes only through the
//! public API, playing the peers by hand (`lone_node`) or with the in-memory `Cluster`.
//! Unless a test says otherwise, nodes run the paper's basic algorithm (`plain`: no pre-vote,
//! no check-quorum) with `T` = 10 election ticks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use common::{
    ack, append, drain, drain_all, entries_with_terms, handle_ready, ids, log_of, lone_node,
    make_leader, msg, plain, plain_with_pre_vote, storage_with, Cluster,
};
use raft_core::{
    Entry, EntryKind, HardState, LogIndex, MemStorage, Message, MessageBody, Node, NodeId,
    ReadOutcome, ReadState, RejectHint, Role, Term,
};

/// The election timeout `T` of the test configuration.
const T: u32 = 10;

fn vote_req(last_log_index: LogIndex, last_log_term: Term) -> MessageBody {
    MessageBody::RequestVote {
        last_log_index,
        last_log_term,
        transfer: false,
    }
}

fn grant(granted: bool) -> MessageBody {
    MessageBody::RequestVoteResponse { granted }
}

/// The AppendEntries in `msgs` addressed to `to`: (prev index, prev term, entries, commit).
fn appends_to(msgs: &[Message], to: NodeId) -> Vec<(LogIndex, Term, Vec<Entry>, LogIndex)> {
    msgs.iter()
        .filter(|m| m.to == to)
        .filter_map(|m| match &m.body {
            MessageBody::AppendEntries {
                prev_index,
                prev_term,
                entries,
                commit,
            } => Some((*prev_index, *prev_term, entries.clone(), *commit)),
            _ => None,
        })
        .collect()
}

/// The vote answers in `msgs`: (to, term, granted).
fn vote_answers(msgs: &[Message]) -> Vec<(NodeId, Term, bool)> {
    msgs.iter()
        .filter_map(|m| match m.body {
            MessageBody::RequestVoteResponse { granted } => Some((m.to, m.term, granted)),
            _ => None,
        })
        .collect()
}

/// The AppendEntries answers in `msgs`: (to, term, index, reject hint).
fn append_answers(msgs: &[Message]) -> Vec<(NodeId, Term, LogIndex, Option<RejectHint>)> {
    msgs.iter()
        .filter_map(|m| match m.body {
            MessageBody::AppendEntriesResponse { index, reject } => {
                Some((m.to, m.term, index, reject))
            }
            _ => None,
        })
        .collect()
}

/// (index, term) of every persisted entry of a storage.
fn stored(s: &MemStorage) -> Vec<(LogIndex, Term)> {
    s.all_entries().iter().map(|e| (e.index, e.term)).collect()
}

/// (index, term) pairs for a log with the given terms at indexes 1, 2, ...
fn log_terms(terms: &[Term]) -> Vec<(LogIndex, Term)> {
    terms
        .iter()
        .enumerate()
        .map(|(i, &t)| (i as LogIndex + 1, t))
        .collect()
}

/// Ticks a node until its role leaves `role`; returns the number of ticks it took.
fn ticks_until_role_leaves(n: &mut Node<MemStorage>, role: Role) -> u32 {
    let mut ticks = 0;
    while n.role() == role {
        n.tick();
        ticks += 1;
        assert!(ticks <= 10 * T, "node stayed {role:?} for {ticks} ticks");
    }
    ticks
}

/// One request of each kind a higher term can arrive on (pre-vote kinds aside: they exist
/// precisely not to change terms, see the §9.6 test).
fn bodies_of_every_rpc() -> Vec<MessageBody> {
    vec![
        append(0, 0, vec![], 0),
        MessageBody::Heartbeat {
            commit: 0,
            read_seq: 0,
        },
        vote_req(0, 0),
        grant(false),
        ack(0),
        MessageBody::HeartbeatResponse { read_seq: 0 },
    ]
}

// ----- §5.1 Raft basics -----

/// §5.1: "When servers start up, they begin as followers." A restarted server is again a
/// follower, with the `currentTerm` and `votedFor` it persisted (Figure 2, "persistent state
/// on all servers").
#[test]
fn paper_5_1_servers_start_as_followers() {
    let n = lone_node(1, &ids(3), MemStorage::new(), plain);
    assert_eq!((n.role(), n.term(), n.leader()), (Role::Follower, 0, None));

    let n = lone_node(1, &ids(3), storage_with(&[1, 2], 5, Some(2)), plain);
    assert_eq!(n.role(), Role::Follower);
    assert_eq!((n.term(), n.hard_state().vote), (5, Some(2)));
    assert_eq!(log_of(&n), log_terms(&[1, 2]));
}

/// Figure 2, rules for all servers: "If RPC request or response contains term T >
/// currentTerm: set currentTerm = T, convert to follower (§5.1)." Here for a follower, and
/// every kind of RPC.
#[test]
fn paper_5_1_follower_updates_term_from_message() {
    for body in bodies_of_every_rpc() {
        let name = body.name();
        let is_leader_rpc = matches!(
            body,
            MessageBody::AppendEntries { .. } | MessageBody::Heartbeat { .. }
        );
        let is_vote_request = matches!(body, MessageBody::RequestVote { .. });
        let mut n = lone_node(1, &ids(3), storage_with(&[], 1, Some(3)), plain);
        n.step(msg(2, 1, 2, body));
        assert_eq!(n.term(), 2, "{name}");
        assert_eq!(n.role(), Role::Follower, "{name}");
        // The vote of term 1 does not carry over into term 2.
        let vote = if is_vote_request { Some(2) } else { None };
        assert_eq!(n.hard_state().vote, vote, "{name}");
        // Only the leader's own RPCs tell who the leader of the new term is.
        let leader = if is_leader_rpc { Some(2) } else { None };
        assert_eq!(n.leader(), leader, "{name}");
    }
}

/// Figure 2, rules for all servers: "If RPC request or response contains term T >
/// currentTerm: set currentTerm = T, convert to follower." §5.1: "If a candidate or leader
/// discovers that its term is out of date, it immediately reverts to follower state."
#[test]
fn paper_5_1_candidate_and_leader_revert_to_follower_on_higher_term() {
    for body in bodies_of_every_rpc() {
        let name = body.name();

        let mut candidate = lone_node(1, &ids(3), MemStorage::new(), plain);
        candidate.campaign();
        assert_eq!((candidate.role(), candidate.term()), (Role::Candidate, 1));
        candidate.step(msg(2, 1, 2, body.clone()));
        assert_eq!(
            (candidate.role(), candidate.term()),
            (Role::Follower, 2),
            "candidate, {name}"
        );

        let mut leader = lone_node(1, &ids(3), MemStorage::new(), plain);
        make_leader(&mut leader);
        drain(&mut leader);
        leader.step(msg(2, 1, 2, body.clone()));
        assert_eq!(
            (leader.role(), leader.term()),
            (Role::Follower, 2),
            "leader, {name}"
        );
        assert_ne!(leader.leader(), Some(1), "leader, {name}");

        // A pre-candidate has not changed its term yet; a higher one still sends it back.
        let mut pre = lone_node(1, &ids(3), MemStorage::new(), |_| {});
        pre.campaign();
        assert_eq!((pre.role(), pre.term()), (Role::PreCandidate, 0));
        pre.step(msg(2, 1, 2, body));
        assert_eq!(
            (pre.role(), pre.term()),
            (Role::Follower, 2),
            "pre-candidate, {name}"
        );
    }
}

/// Figure 2, AppendEntries and RequestVote receiver rule 1: "Reply false if term <
/// currentTerm (§5.1)"; §5.1: "If a server receives a request with a stale term number, it
/// rejects the request." The answer carries `currentTerm`, "for leader to update itself".
/// (With the default configuration a stale leader is told the newer term; a stale vote
/// request is dropped, which Raft tolerates as a lost message.)
#[test]
fn paper_5_1_stale_term_requests_are_rejected_with_current_term() {
    let mut n = lone_node(1, &ids(3), storage_with(&[1, 1], 3, None), |_| {});
    n.step(msg(
        2,
        1,
        2,
        append(2, 1, vec![Entry::normal(2, 3, &b"stale"[..])], 3),
    ));
    n.step(msg(
        2,
        1,
        2,
        MessageBody::Heartbeat {
            commit: 2,
            read_seq: 0,
        },
    ));
    n.step(msg(3, 1, 2, vote_req(9, 2)));
    let out = drain(&mut n);

    assert_eq!(
        log_of(&n),
        log_terms(&[1, 1]),
        "stale entries were appended"
    );
    assert_eq!(
        n.commit_index(),
        0,
        "a stale leader's commit index was taken"
    );
    assert_eq!((n.term(), n.role(), n.leader()), (3, Role::Follower, None));
    assert_eq!(n.hard_state().vote, None, "voted for a stale candidate");
    assert!(vote_answers(&out).iter().all(|&(_, _, g)| !g));
    let answers = append_answers(&out);
    assert!(!answers.is_empty(), "the stale leader was not answered");
    assert!(answers.iter().all(|&(to, term, _, _)| to == 2 && term == 3));

    // The answer makes the stale leader of term 2 step down.
    let mut old = lone_node(2, &ids(3), storage_with(&[1, 1], 1, None), |_| {});
    make_leader(&mut old);
    assert_eq!(old.term(), 2);
    let reply = out
        .iter()
        .find(|m| matches!(m.body, MessageBody::AppendEntriesResponse { .. }))
        .unwrap()
        .clone();
    old.step(reply);
    assert_eq!((old.role(), old.term()), (Role::Follower, 3));
}

/// §5.1: "If a server receives a request with a stale term number, it rejects the request";
/// answers of an earlier term are stale too: they count neither as votes nor as
/// acknowledgements.
#[test]
fn paper_5_1_stale_responses_are_ignored() {
    let mut n = lone_node(1, &ids(5), storage_with(&[], 2, None), plain);
    n.campaign();
    drain(&mut n);
    assert_eq!((n.role(), n.term()), (Role::Candidate, 3));
    for p in [2, 3] {
        n.step(msg(p, 1, 2, grant(true)));
    }
    assert_eq!(
        n.role(),
        Role::Candidate,
        "votes of term 2 elected a leader of term 3"
    );
    for p in [2, 3] {
        n.step(msg(p, 1, 3, grant(true)));
    }
    assert_eq!(n.role(), Role::Leader);
    drain(&mut n);
    assert_eq!(n.last_index(), 1, "the no-op of term 3");

    for p in [2, 3] {
        n.step(msg(p, 1, 2, ack(1)));
    }
    drain(&mut n);
    assert_eq!(
        n.commit_index(),
        0,
        "acknowledgements of term 2 committed an entry"
    );
    assert!(n.status().progress.iter().all(|p| p.match_index == 0));
    for p in [2, 3] {
        n.step(msg(p, 1, 3, ack(1)));
    }
    drain(&mut n);
    assert_eq!(n.commit_index(), 1);
}

// ----- §5.2 Leader election -----

/// §5.2: "Leaders send periodic heartbeats (AppendEntries RPCs that carry no log entries) to
/// all followers in order to maintain their authority." Here every `H` ticks, to every
/// follower, carrying the commit index, and without waiting for any persistence.
#[test]
fn paper_5_2_leader_sends_heartbeats_every_h_ticks() {
    const H: u32 = 3;
    let mut n = lone_node(1, &ids(3), MemStorage::new(), |c| {
        plain(c);
        c.heartbeat_ticks = H;
    });
    make_leader(&mut n);
    drain(&mut n);
    for p in [2, 3] {
        n.step(msg(p, 1, 1, ack(1)));
    }
    drain(&mut n);
    assert_eq!(n.commit_index(), 1);

    for round in 0..4 {
        for _ in 0..H - 1 {
            n.tick();
            let out = drain(&mut n);
            assert!(
                !out.iter()
                    .any(|m| matches!(m.body, MessageBody::Heartbeat { .. })),
                "heartbeat before H ticks in round {round}"
            );
        }
        n.tick();
        let rd = handle_ready(&mut n);
        assert!(rd.persisted_messages.is_empty());
        let mut to: Vec<NodeId> = Vec::new();
        for m in &rd.messages {
            match m.body {
                MessageBody::Heartbeat { commit, .. } => {
                    assert_eq!((m.from, m.term, commit), (1, 1, 1));
                    to.push(m.to);
                }
                ref other => panic!("unexpected {}", other.name()),
            }
        }
        to.sort_unstable();
        assert_eq!(to, vec![2, 3], "round {round}");
    }
}

/// §5.2: "If a follower receives no communication over a period of time called the election
/// timeout, then it ... begins an election ... it increments its current term and
/// transitions to candidate state. It then votes for itself and issues RequestVote RPCs in
/// parallel to each of the other servers." (Figure 2: the vote is persisted before the
/// requests leave.)
#[test]
fn paper_5_2_follower_starts_election_on_timeout() {
    let mut n = lone_node(1, &ids(3), storage_with(&[1], 1, None), plain);
    let ticks = ticks_until_role_leaves(&mut n, Role::Follower);
    assert!((T..2 * T).contains(&ticks), "timed out after {ticks} ticks");
    assert_eq!((n.role(), n.term()), (Role::Candidate, 2));

    let rd = handle_ready(&mut n);
    assert_eq!(
        rd.hard_state,
        Some(HardState {
            term: 2,
            vote: Some(1),
            commit: 0
        })
    );
    assert!(
        rd.messages.is_empty(),
        "vote requests must wait for the vote to persist"
    );
    let mut to: Vec<NodeId> = Vec::new();
    for m in &rd.persisted_messages {
        assert_eq!((m.from, m.term, &m.body), (1, 2, &vote_req(1, 1)));
        to.push(m.to);
    }
    to.sort_unstable();
    assert_eq!(to, vec![2, 3]);
}

/// §5.2: a candidate that neither wins nor loses "will time out and start a new election by
/// incrementing its term and initiating another round of RequestVote RPCs".
#[test]
fn paper_5_2_candidate_starts_new_election_on_timeout() {
    let mut n = lone_node(1, &ids(3), MemStorage::new(), plain);
    n.campaign();
    drain(&mut n);
    assert_eq!((n.role(), n.term()), (Role::Candidate, 1));
    let mut ticks = 0;
    while n.term() == 1 {
        n.tick();
        ticks += 1;
        assert!(ticks < 2 * T, "no new election after {ticks} ticks");
    }
    assert!(ticks >= T, "new election after only {ticks} ticks");
    assert_eq!(
        (n.role(), n.term(), n.hard_state().vote),
        (Role::Candidate, 2, Some(1))
    );
    let out = drain(&mut n);
    let requests: Vec<_> = out
        .iter()
        .filter(|m| matches!(m.body, MessageBody::RequestVote { .. }))
        .map(|m| (m.to, m.term))
        .collect();
    assert_eq!(requests, vec![(2, 2), (3, 2)]);
}

/// §5.2: "A candidate wins an election if it receives votes from a majority of the servers
/// in the full cluster for the same term"; if another server wins (here: a majority refused)
/// it returns to follower; with neither, it remains a candidate.
#[test]
fn paper_5_2_leader_election_in_one_round_rpc() {
    type Case = (u64, &'static [(NodeId, bool)], Role);
    let cases: [Case; 13] = [
        (1, &[], Role::Leader),
        (3, &[(2, true), (3, true)], Role::Leader),
        (3, &[(2, true)], Role::Leader),
        (
            5,
            &[(2, true), (3, true), (4, true), (5, true)],
            Role::Leader,
        ),
        (5, &[(2, true), (3, true), (4, true)], Role::Leader),
        (5, &[(2, true), (3, true)], Role::Leader),
        (3, &[(2, false), (3, false)], Role::Follower),
        (
            5,
            &[(2, false), (3, false), (4, false), (5, false)],
            Role::Follower,
        ),
        (
            5,
            &[(2, true), (3, false), (4, false), (5, false)],
            Role::Follower,
        ),
        (3, &[], Role::Candidate),
        (5, &[(2, true)], Role::Candidate),
        (5, &[(2, false), (3, false)], Role::Candidate),
        (5, &[], Role::Candidate),
    ];
    for (size, votes, want) in cases {
        let mut n = lone_node(1, &ids(size), MemStorage::new(), plain);
        n.campaign();
        drain(&mut n);
        for &(from, granted) in votes {
            n.step(msg(from, 1, 1, grant(granted)));
        }
        assert_eq!(n.role(), want, "size {size}, votes {votes:?}");
        assert_eq!(n.term(), 1, "size {size}, votes {votes:?}");
        assert_eq!(n.leader() == Some(1), want == Role::Leader);
    }
}

/// §5.2: "Each server will vote for at most one candidate in a given term, on a
/// first-come-first-served basis." A repeated request from the candidate it voted for is
/// granted again (the first answer may have been lost); a new term brings a new vote.
#[test]
fn paper_5_2_follower_votes_once_per_term() {
    let mut n = lone_node(1, &ids(3), storage_with(&[], 1, None), plain);
    let cases: [(NodeId, Term, bool); 5] = [
        (2, 1, true),
        (3, 1, false),
        (2, 1, true),
        (3, 1, false),
        (3, 2, true),
    ];
    for (from, term, want) in cases {
        n.step(msg(from, 1, term, vote_req(0, 0)));
        let rd = handle_ready(&mut n);
        assert_eq!(
            vote_answers(&rd.persisted_messages),
            vec![(from, term, want)],
            "request from {from} in term {term}"
        );
    }
    assert_eq!(n.hard_state().vote, Some(3));
}

/// Figure 2: `votedFor` is persistent state, "updated on stable storage before responding to
/// RPCs": a server that crashes after voting does not vote again in the same term.
#[test]
fn paper_fig2_voted_for_survives_restart() {
    let mut n = lone_node(1, &ids(3), storage_with(&[], 1, None), plain);
    n.step(msg(2, 1, 1, vote_req(0, 0)));
    let rd = handle_ready(&mut n);
    assert_eq!(vote_answers(&rd.persisted_messages), vec![(2, 1, true)]);

    let mut restarted = Node::new(n.config().clone(), n.storage().clone()).unwrap();
    assert_eq!(restarted.hard_state().vote, Some(2));
    restarted.step(msg(3, 1, 1, vote_req(5, 1)));
    let out = drain(&mut restarted);
    assert!(vote_answers(&out).iter().all(|&(_, _, g)| !g));
    assert_eq!(restarted.hard_state().vote, Some(2));
}

/// §5.2: "While waiting for votes, a candidate may receive an AppendEntries RPC from another
/// server claiming to be leader. If the leader's term ... is at least as large as the
/// candidate's current term, then the candidate recognizes the leader as legitimate and
/// returns to follower state. If the term in the RPC is smaller than the candidate's current
/// term, then the candidate rejects the RPC and continues in candidate state."
#[test]
fn paper_5_2_candidate_falls_back_to_follower_on_append_from_leader() {
    let fresh_candidate = || {
        let mut n = lone_node(1, &ids(3), storage_with(&[], 1, None), plain);
        n.campaign();
        drain(&mut n);
        assert_eq!((n.role(), n.term()), (Role::Candidate, 2));
        n
    };

    let mut n = fresh_candidate();
    n.step(msg(2, 1, 2, append(0, 0, vec![Entry::noop(2, 1)], 0)));
    assert_eq!(
        (n.role(), n.term(), n.leader()),
        (Role::Follower, 2, Some(2))
    );
    let out = drain(&mut n);
    assert_eq!(append_answers(&out), vec![(2, 2, 1, None)]);
    assert_eq!(log_of(&n), vec![(1, 2)]);

    let mut n = fresh_candidate();
    n.step(msg(
        3,
        1,
        2,
        MessageBody::Heartbeat {
            commit: 0,
            read_seq: 0,
        },
    ));
    assert_eq!(
        (n.role(), n.term(), n.leader()),
        (Role::Follower, 2, Some(3))
    );

    let mut n = fresh_candidate();
    n.step(msg(2, 1, 1, append(0, 0, vec![Entry::noop(1, 1)], 0)));
    assert_eq!((n.role(), n.term()), (Role::Candidate, 2));
    assert_eq!(n.last_index(), 0);
}

/// §5.2: "Raft uses randomized election timeouts ... election timeouts are chosen randomly
/// from a fixed interval (e.g., 150–300ms)": here `[T, 2T)` ticks, drawn afresh for every
/// election, for followers and candidates alike, and spread over the whole interval.
#[test]
fn paper_5_2_election_timeout_is_randomized_between_t_and_2t() {
    let mut as_follower = BTreeSet::new();
    let mut as_candidate = BTreeSet::new();
    for seed in 0..200 {
        let mut n = lone_node(1, &ids(3), MemStorage::new(), |c| {
            plain(c);
            c.seed = seed;
        });
        let ticks = ticks_until_role_leaves(&mut n, Role::Follower);
        assert!((T..2 * T).contains(&ticks), "follower: {ticks}");
        as_follower.insert(ticks);
        for election in 1..=3 {
            assert_eq!(n.term(), election);
            let mut ticks = 0;
            while n.term() == election {
                n.tick();
                ticks += 1;
                assert!(ticks < 2 * T, "candidate: {ticks}");
            }
            assert!(ticks >= T, "candidate: {ticks}");
            as_candidate.insert(ticks);
        }
    }
    let all: BTreeSet<u32> = (T..2 * T).collect();
    assert_eq!(as_follower, all);
    assert_eq!(as_candidate, all);
}

/// §5.2: randomized timeouts ensure "that split votes are rare ... in most cases only a
/// single server will time out". Over many clusters of five, the first timeout is shared by
/// two servers at most 30% of the time (with `[T, 2T)` in 10 steps, about 23% is expected;
/// without randomization it would be 100%).
#[test]
fn paper_5_2_randomized_timeouts_make_split_votes_rare() {
    const RUNS: u64 = 1000;
    let mut conflicts = 0;
    for seed in 0..RUNS {
        let mut firsts = Vec::new();
        for id in 1..=5 {
            let mut n = lone_node(id, &ids(5), MemStorage::new(), |c| {
                plain(c);
                c.seed = seed;
            });
            firsts.push(ticks_until_role_leaves(&mut n, Role::Follower));
        }
        let min = *firsts.iter().min().unwrap();
        if firsts.iter().filter(|&&t| t == min).count() > 1 {
            conflicts += 1;
        }
    }
    assert!(
        conflicts * 10 <= RUNS * 3,
        "{conflicts} of {RUNS} elections started with a tie"
    );
}

/// §5.2: "A server remains in follower state as long as it receives valid RPCs from a leader
/// or candidate"; Figure 2: a follower converts to candidate only if the "election timeout
/// elapses without receiving AppendEntries RPC from current leader or granting vote to
/// candidate".
#[test]
fn paper_5_2_heartbeats_and_granted_votes_reset_the_election_timer() {
    // Heartbeats every T - 1 ticks keep a follower a follower, however long.
    let mut n = lone_node(1, &ids(3), storage_with(&[], 1, None), plain);
    for _ in 0..30 {
        for _ in 0..T - 1 {
            n.tick();
        }
        n.step(msg(
            2,
            1,
            1,
            MessageBody::Heartbeat {
                commit: 0,
                read_seq: 0,
            },
        ));
        drain(&mut n);
        assert_eq!(n.role(), Role::Follower);
    }
    // Once they stop, it times out.
    let ticks = ticks_until_role_leaves(&mut n, Role::Follower);
    assert!(ticks < 2 * T);

    // Granting a vote restarts the countdown: a twin with the same seed times out after
    // `timeout` ticks, this one only `timeout` ticks after its vote.
    let fresh = || lone_node(1, &ids(3), storage_with(&[], 1, None), plain);
    let timeout = ticks_until_role_leaves(&mut fresh(), Role::Follower);
    let mut n = fresh();
    for _ in 0..timeout - 1 {
        n.tick();
    }
    n.step(msg(2, 1, 1, vote_req(0, 0)));
    assert_eq!(vote_answers(&drain(&mut n)), vec![(2, 1, true)]);
    for _ in 0..timeout - 1 {
        n.tick();
    }
    assert_eq!(n.role(), Role::Follower, "the vote did not reset the timer");
    n.tick();
    assert_eq!(n.role(), Role::Candidate);
}

/// Figure 2 again: the timer restarts on a heartbeat or a vote *granted*; a candidate whose
/// log is behind, refused in a newer term, does not restart it. Otherwise such a candidate,
/// campaigning again and again, keeps the one voter whose log could win from ever reaching
/// its timeout (the simulator found that livelock with clocks running at different rates).
#[test]
fn paper_fig2_a_refused_candidate_does_not_restart_the_voters_election_timer() {
    let fresh = || lone_node(1, &ids(3), storage_with(&[1, 1, 1], 1, None), plain);
    let timeout = ticks_until_role_leaves(&mut fresh(), Role::Follower);
    let mut n = fresh();
    for _ in 0..timeout - 1 {
        n.tick();
    }
    // A candidate of a newer term whose log is behind: the term is adopted, the vote refused.
    n.step(msg(2, 1, 5, vote_req(1, 1)));
    assert_eq!(vote_answers(&drain(&mut n)), vec![(2, 5, false)]);
    assert_eq!((n.role(), n.term()), (Role::Follower, 5));
    // The timer ran on: the next tick is the one it would have timed out at anyway.
    n.tick();
    assert_eq!(
        n.role(),
        Role::Candidate,
        "a refused vote request restarted the election timer"
    );
}

// ----- §5.3 Log replication -----

/// §5.3: "The leader appends the command to its log as a new entry, then issues
/// AppendEntries RPCs in parallel to each of the other servers to replicate the entry." The
/// RPC carries "prevLogIndex, prevLogTerm, entries[], leaderCommit" (Figure 2).
#[test]
fn paper_5_3_leader_appends_proposal_and_sends_append_entries() {
    let mut n = lone_node(1, &ids(3), MemStorage::new(), plain);
    make_leader(&mut n);
    drain(&mut n);
    for p in [2, 3] {
        n.step(msg(p, 1, 1, ack(1)));
    }
    drain(&mut n);
    assert_eq!(n.commit_index(), 1);

    let (index, term) = n.propose(&b"x"[..]).unwrap();
    assert_eq!((index, term), (2, 1));
    let rd = handle_ready(&mut n);
    let x = Entry::normal(1, 2, &b"x"[..]);
    assert_eq!(rd.entries, vec![x.clone()]);
    for p in [2, 3] {
        assert_eq!(
            appends_to(&rd.messages, p),
            vec![(1, 1, vec![x.clone()], 1)]
        );
    }
    assert!(appends_to(&rd.persisted_messages, 2).is_empty());
}

/// §5.3: "When the entry has been safely replicated [on a majority] ... the leader applies
/// the entry to its state machine ... The leader keeps track of the highest index it knows
/// to be committed, and it includes that index in future AppendEntries RPCs (including
/// heartbeats) so that the other servers eventually find out. Once a follower learns that a
/// log entry is committed, it applies the entry to its local state machine." And: "if
/// network packets are lost, the leader retries AppendEntries RPCs indefinitely (even after
/// it has responded to the client) until all followers eventually store all log entries":
/// here a follower whose appends were lost catches up within two election timeouts, with no
/// new proposal to carry the entries.
#[test]
fn paper_5_3_leader_replicates_and_commits() {
    let mut c = Cluster::new_with(3, plain);
    c.elect(1);
    c.isolate(3);
    let (index, term) = c.node_mut(1).propose(&b"x"[..]).unwrap();

    let appends = c.take_messages();
    assert!(c.node(1).commit_index() < index);
    for m in appends {
        c.deliver(m);
    }
    let answers = c.take_messages();
    assert!(
        c.node(1).commit_index() < index,
        "committed before a majority answered"
    );
    assert!(!c.applied(2).iter().any(|&(i, _, _)| i == index));
    for m in answers {
        c.deliver(m);
    }
    assert_eq!(
        c.node(1).commit_index(),
        index,
        "a majority {{1, 2}} holds it"
    );

    c.settle();
    let x = (index, term, EntryKind::Normal);
    assert!(c.applied(1).contains(&x));
    assert!(
        c.applied(2).contains(&x),
        "the follower learned the commit index"
    );
    assert!(!c.applied(3).contains(&x));

    c.heal();
    c.tick_all(2 * T);
    assert!(
        c.applied(3).contains(&x),
        "the lagging follower never caught up"
    );
}

/// §5.3: "A log entry is committed once the leader that created the entry has replicated it
/// on a majority of the servers": not before, whatever the cluster size.
#[test]
fn paper_5_3_leader_commits_only_with_a_majority() {
    type Case = (u64, &'static [NodeId], bool);
    let cases: [Case; 9] = [
        (1, &[], true),
        (3, &[], false),
        (3, &[2], true),
        (3, &[2, 3], true),
        (5, &[], false),
        (5, &[2], false),
        (5, &[2, 3], true),
        (5, &[2, 3, 4], true),
        (5, &[2, 3, 4, 5], true),
    ];
    for (size, acks, want) in cases {
        let mut n = lone_node(1, &ids(size), MemStorage::new(), plain);
        make_leader(&mut n);
        drain(&mut n);
        for p in 2..=size {
            n.step(msg(p, 1, 1, ack(1)));
        }
        drain(&mut n);
        assert_eq!(n.commit_index(), 1);
        let (index, _) = n.propose(&b"x"[..]).unwrap();
        drain(&mut n);
        for &p in acks {
            n.step(msg(p, 1, 1, ack(index)));
        }
        drain(&mut n);
        assert_eq!(
            n.commit_index() == index,
            want,
            "size {size}, acknowledged by {acks:?}"
        );
    }
}

/// §5.3: committing an entry "also commits all preceding entries in the leader's log,
/// including entries created by previous leaders"; they are applied in log order.
#[test]
fn paper_5_3_committing_an_entry_commits_all_preceding_entries() {
    let mut n = lone_node(1, &ids(3), storage_with(&[1, 2], 2, None), plain);
    make_leader(&mut n);
    assert_eq!(n.term(), 3);
    let before = drain_all(&mut n);
    assert!(before.committed.is_empty());
    n.step(msg(2, 1, 3, ack(3)));
    let after = drain_all(&mut n);
    let applied: Vec<_> = after.committed.iter().map(|e| (e.index, e.term)).collect();
    assert_eq!(applied, vec![(1, 1), (2, 2), (3, 3)]);
}

/// Figure 2, AppendEntries receiver rule 5: "If leaderCommit > commitIndex, set commitIndex =
/// min(leaderCommit, index of last new entry)": not the follower's last index, whose tail
/// may not be the leader's. The commit index never goes back.
#[test]
fn paper_5_3_follower_commit_is_min_of_leader_commit_and_last_new_entry() {
    let mut n = lone_node(1, &ids(3), storage_with(&[1, 1, 1, 1, 1], 1, None), plain);

    n.step(msg(
        2,
        1,
        2,
        append(1, 1, vec![Entry::normal(1, 2, &b"e2"[..])], 4),
    ));
    let out = drain_all(&mut n);
    assert_eq!(
        n.commit_index(),
        2,
        "entries 3-4 were not vouched for by the leader"
    );
    let applied: Vec<_> = out.committed.iter().map(|e| e.index).collect();
    assert_eq!(applied, vec![1, 2]);
    assert_eq!(append_answers(&out.messages), vec![(2, 2, 2, None)]);

    let fresh = vec![
        Entry::normal(2, 3, &b"f3"[..]),
        Entry::normal(2, 4, &b"f4"[..]),
    ];
    n.step(msg(2, 1, 2, append(2, 1, fresh, 3)));
    drain(&mut n);
    assert_eq!(
        n.commit_index(),
        3,
        "leaderCommit is below the last new entry"
    );
    assert_eq!(log_of(&n), log_terms(&[1, 1, 2, 2]));

    n.step(msg(2, 1, 2, append(4, 2, vec![], 10)));
    drain(&mut n);
    assert_eq!(n.commit_index(), 4, "min(10, 4)");

    n.step(msg(2, 1, 2, append(4, 2, vec![], 1)));
    drain(&mut n);
    assert_eq!(n.commit_index(), 4, "the commit index went back");
}

/// Figure 2, AppendEntries receiver rule 2: "Reply false if log doesn't contain an entry at
/// prevLogIndex whose term matches prevLogTerm (§5.3)". The rejection leaves the log as it
/// was, and hints where the logs may agree.
#[test]
fn paper_5_3_follower_rejects_append_with_mismatched_prev() {
    // (prev index, prev term) -> Ok(acknowledged index) or Err(hint)
    type Case = (LogIndex, Term, Result<LogIndex, RejectHint>);
    let cases: [Case; 5] = [
        (0, 0, Ok(0)),
        (1, 1, Ok(1)),
        (2, 2, Ok(2)),
        (2, 1, Err(RejectHint { index: 1, term: 1 })), // term mismatch at 2
        (3, 2, Err(RejectHint { index: 2, term: 2 })), // no entry at 3
    ];
    for (prev_index, prev_term, want) in cases {
        let mut n = lone_node(1, &ids(3), storage_with(&[1, 2], 2, None), plain);
        n.step(msg(2, 1, 2, append(prev_index, prev_term, vec![], 0)));
        let rd = handle_ready(&mut n);
        let answers = append_answers(&rd.persisted_messages);
        let got = match answers.as_slice() {
            [(2, 2, index, None)] => Ok(*index),
            [(2, 2, index, Some(hint))] => {
                assert_eq!(*index, prev_index);
                Err(*hint)
            }
            other => panic!("unexpected answers {other:?}"),
        };
        assert_eq!(got, want, "prev ({prev_index}, {prev_term})");
        assert_eq!(log_of(&n), log_terms(&[1, 2]));
        assert_eq!(stored(n.storage()), log_terms(&[1, 2]));
    }
}

/// Figure 2, AppendEntries receiver rules 3 and 4: "If an existing entry conflicts with a new
/// one (same index but different terms), delete the existing entry and all that follow it";
/// "Append any new entries not already in the log". Entries that match are kept as they
/// are, and nothing is deleted when nothing conflicts.
#[test]
fn paper_5_3_follower_truncates_only_conflicting_suffix() {
    type Case = (
        LogIndex,
        Term,
        &'static [(LogIndex, Term)],
        &'static [Term],
        usize,
    );
    // (prev, entries as (index, term), resulting log, entries written to storage)
    let cases: [Case; 6] = [
        (2, 2, &[(3, 3)], &[1, 2, 3], 1),
        (1, 1, &[(2, 3), (3, 4)], &[1, 3, 4], 2),
        (0, 0, &[(1, 1)], &[1, 2], 0),
        (0, 0, &[(1, 1), (2, 2)], &[1, 2], 0),
        (0, 0, &[(1, 3)], &[3], 1),
        (1, 1, &[], &[1, 2], 0),
    ];
    for (prev_index, prev_term, entries, want, written) in cases {
        let mut n = lone_node(1, &ids(3), storage_with(&[1, 2], 2, None), plain);
        let entries: Vec<Entry> = entries
            .iter()
            .map(|&(i, t)| Entry::normal(t, i, format!("new{i}").into_bytes()))
            .collect();
        let last_new = prev_index + entries.len() as LogIndex;
        n.step(msg(2, 1, 4, append(prev_index, prev_term, entries, 0)));
        let rd = handle_ready(&mut n);
        assert_eq!(
            rd.entries.len(),
            written,
            "prev ({prev_index}, {prev_term}): rewrote matching entries"
        );
        assert_eq!(
            append_answers(&rd.persisted_messages),
            vec![(2, 4, last_new, None)]
        );
        assert_eq!(
            stored(n.storage()),
            log_terms(want),
            "prev ({prev_index}, {prev_term})"
        );
        // Matching entries keep their own content: they were not replaced by the copies.
        if written == 0 && prev_index == 0 {
            assert_eq!(&n.storage().all_entries()[0].data[..], b"e1");
        }
    }
}

/// §5.3: "After a rejection, the leader decrements nextIndex and retries the AppendEntries
/// RPC. Eventually nextIndex will reach a point where the leader and follower logs match."
/// With the optimization the paper describes ("the follower can include the term of the
/// conflicting entry and the first index it stores for that term ... one AppendEntries RPC
/// will be required for each term with conflicting entries, rather than one RPC per
/// entry"), a conflict of 50 entries in 2 terms costs at most 2 rejections, not 50.
#[test]
fn paper_5_3_leader_backs_up_next_index_until_logs_match() {
    // Leader: [1, 3 x 50]; follower: [1, 2 x 60]; a third server with the leader's log.
    let mut leader_terms = vec![1];
    leader_terms.extend([3; 50]);
    let mut follower_terms = vec![1];
    follower_terms.extend([2; 60]);
    let stores = vec![
        storage_with(&leader_terms, 3, None),
        storage_with(&follower_terms, 3, None),
        storage_with(&leader_terms, 3, None),
    ];
    let mut c = Cluster::with_storages(stores, plain);
    c.node_mut(1).campaign();
    let (mut appends, mut rejections) = (0, 0);
    c.settle_filtered(|m| {
        if m.from == 1 && m.to == 2 {
            if let MessageBody::AppendEntries { .. } = m.body {
                appends += 1;
            }
        }
        if m.from == 2 && m.to == 1 {
            if let MessageBody::AppendEntriesResponse {
                reject: Some(_), ..
            } = m.body
            {
                rejections += 1;
            }
        }
        true
    });
    assert_eq!(c.leaders(), vec![1]);
    assert!(
        rejections <= 2,
        "{rejections} rejections for 2 conflicting terms"
    );
    assert!(
        appends <= 4,
        "{appends} AppendEntries to bring the follower in line"
    );
    assert_eq!(log_of(c.node(2)), log_of(c.node(1)));
    let mut want = leader_terms.clone();
    want.push(4);
    assert_eq!(stored(c.node(2).storage()), log_terms(&want));
}

/// §5.3, Figure 7: "the leader handles inconsistencies by forcing the followers' logs to
/// duplicate its own": whatever the follower's log (missing entries, extra uncommitted
/// entries, or both), it ends up equal to the leader's.
#[test]
fn paper_5_3_leader_brings_figure_7_followers_into_agreement() {
    let leader: &[Term] = &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
    let followers: [(&str, &[Term]); 6] = [
        ("a", &[1, 1, 1, 4, 4, 5, 5, 6, 6]),
        ("b", &[1, 1, 1, 4]),
        ("c", &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6]),
        ("d", &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7]),
        ("e", &[1, 1, 1, 4, 4, 4, 4]),
        ("f", &[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3]),
    ];
    for (name, follower) in followers {
        let stores = vec![
            storage_with(leader, 7, None),
            storage_with(follower, 7, None),
            MemStorage::new(),
        ];
        let mut c = Cluster::with_storages(stores, plain);
        c.elect(1);
        assert_eq!(c.leaders(), vec![1], "({name})");
        assert_eq!(c.node(1).term(), 8);
        let mut want = leader.to_vec();
        want.push(8);
        assert_eq!(log_of(c.node(2)), log_terms(&want), "({name})");
        assert_eq!(stored(c.node(2).storage()), log_terms(&want), "({name})");
        c.tick_all(1);
        assert_eq!(c.node(2).commit_index(), 11, "({name})");
    }
}

/// Figure 3, Leader Append-Only: "a leader never overwrites or deletes entries in its log;
/// it only appends new entries" (§5.3). Neither answers nor an AppendEntries claiming its
/// own term change a leader's log.
#[test]
fn paper_5_3_leader_never_overwrites_or_deletes_its_own_entries() {
    let mut n = lone_node(1, &ids(3), storage_with(&[1, 1], 1, None), plain);
    make_leader(&mut n);
    n.propose(&b"x"[..]).unwrap();
    drain(&mut n);
    let log = log_of(&n);
    assert_eq!(log, log_terms(&[1, 1, 2, 2]));

    n.step(msg(
        2,
        1,
        2,
        MessageBody::AppendEntriesResponse {
            index: 3,
            reject: Some(RejectHint { index: 0, term: 0 }),
        },
    ));
    n.step(msg(3, 1, 2, ack(1)));
    n.step(msg(
        2,
        1,
        2,
        append(1, 1, vec![Entry::normal(2, 2, &b"forged"[..])], 0),
    ));
    drain(&mut n);
    assert_eq!(n.role(), Role::Leader);
    assert_eq!(log_of(&n), log);
    assert_eq!(stored(n.storage()), log);
    n.propose(&b"y"[..]).unwrap();
    drain(&mut n);
    assert_eq!(log_of(&n), log_terms(&[1, 1, 2, 2, 2]));
}

/// Figure 2, rules for all servers: "If commitIndex > lastApplied: increment lastApplied,
/// apply log[lastApplied] to state machine": every server applies the same entries, in log
/// order, each exactly once.
#[test]
fn paper_5_3_committed_entries_are_applied_in_order_exactly_once() {
    let mut c = Cluster::new_with(3, plain);
    c.elect(1);
    for round in 0..5u8 {
        for k in 0..3u8 {
            c.node_mut(1).propose(vec![round, k]).unwrap();
        }
        if round == 2 {
            c.isolate(3);
        }
        c.settle();
        c.tick_all(1);
    }
    c.heal();
    c.tick_all(2 * T);
    let last = c.node(1).last_index();
    assert_eq!(last, 16);
    for id in 1..=3 {
        let applied = c.applied(id);
        let indexes: Vec<LogIndex> = applied.iter().map(|&(i, _, _)| i).collect();
        assert_eq!(indexes, (1..=last).collect::<Vec<_>>(), "node {id}");
        assert_eq!(c.nodes[&id].applied, c.nodes[&1].applied, "node {id}");
        assert_eq!(c.node(id).status().applied, last);
    }
}

// ----- §5.4 Safety -----

/// §5.4.1: "The RequestVote RPC ... includes information about the candidate's log":
/// lastLogIndex and lastLogTerm (Figure 2), in pre-votes too.
#[test]
fn paper_5_4_1_candidate_sends_last_log_index_and_term() {
    let mut n = lone_node(1, &ids(3), storage_with(&[1, 2, 2], 2, None), plain);
    n.campaign();
    let out = drain(&mut n);
    let requests: Vec<_> = out.iter().map(|m| (m.to, m.term, m.body.clone())).collect();
    assert_eq!(
        requests,
        vec![(2, 3, vote_req(3, 2)), (3, 3, vote_req(3, 2))]
    );

    let mut n = lone_node(1, &ids(3), storage_with(&[1, 2, 2], 2, None), |_| {});
    n.campaign();
    let out = drain(&mut n);
    let pre = MessageBody::PreVote {
        last_log_index: 3,
        last_log_term: 2,
    };
    let requests: Vec<_> = out.iter().map(|m| (m.to, m.term, m.body.clone())).collect();
    assert_eq!(requests, vec![(2, 3, pre.clone()), (3, 3, pre)]);
    assert_eq!(n.term(), 2, "a pre-vote changes no term");
}

/// §5.4.1: "the voter denies its vote if its own log is more up-to-date than that of the
/// candidate ... If the logs have last entries with different terms, then the log with the
/// later term is more up-to-date. If the logs end with the same term, then whichever log is
/// longer is more up-to-date."
#[test]
fn paper_5_4_1_voter_rejects_candidate_with_stale_log() {
    // (voter's log, candidate's last index, candidate's last term, granted)
    type Case = (&'static [Term], LogIndex, Term, bool);
    let cases: [Case; 9] = [
        (&[1], 1, 1, true),
        (&[1], 2, 1, true),
        (&[1, 1], 1, 1, false),
        (&[1], 1, 2, true),
        (&[1], 2, 2, true),
        (&[1, 1], 1, 2, true),
        (&[2], 1, 1, false),
        (&[2], 2, 1, false),
        (&[2, 1], 1, 1, false),
    ];
    for (voter, last_index, last_term, want) in cases {
        let mut n = lone_node(1, &ids(3), storage_with(voter, 2, None), plain);
        n.step(msg(2, 1, 3, vote_req(last_index, last_term)));
        let out = drain(&mut n);
        assert_eq!(
            vote_answers(&out),
            vec![(2, 3, want)],
            "voter {voter:?}, candidate ({last_index}, {last_term})"
        );
        assert_eq!(n.hard_state().vote, want.then_some(2));
    }
}

/// §5.4.1, Leader Completeness: "a candidate must contact a majority of the cluster in order
/// to be elected, which means that every committed entry must be present in at least one of
/// those servers": a server missing a committed entry cannot become leader; one holding it
/// can, and the entry survives.
#[test]
fn paper_5_4_1_server_missing_a_committed_entry_cannot_become_leader() {
    let mut c = Cluster::new_with(3, plain);
    c.elect(1);
    c.isolate(3);
    let (index, term) = c.node_mut(1).propose(&b"x"[..]).unwrap();
    c.settle();
    assert_eq!(c.node(1).commit_index(), index);

    // The leader crashes; server 3, which missed the entry, campaigns again and again.
    c.heal();
    c.isolate(1);
    for _ in 0..3 {
        c.node_mut(3).campaign();
        c.settle();
        assert_ne!(c.node(3).role(), Role::Leader);
    }
    c.node_mut(2).campaign();
    c.settle();
    assert_eq!(c.node(2).role(), Role::Leader);
    c.tick_all(2);
    for id in [2, 3] {
        assert_eq!(c.node(id).entry_term(index), Some(term), "node {id}");
        assert!(c.applied(id).contains(&(index, term, EntryKind::Normal)));
    }
}

/// §5.4.2, Figure 8: "Raft never commits log entries from previous terms by counting
/// replicas. Only log entries from the leader's current term are committed by counting
/// replicas; once an entry from the current term has been committed in this way, then all
/// prior entries are committed indirectly."
#[test]
fn paper_5_4_2_leader_commits_only_current_term_entries_by_counting() {
    // Leader of term 4 in a cluster of five; entry 2 comes from term 2.
    let mut n = lone_node(1, &ids(5), storage_with(&[1, 2], 3, None), plain);
    make_leader(&mut n);
    assert_eq!(n.term(), 4);
    drain(&mut n);
    // Three followers hold entry 2: with the leader, four of five servers.
    for p in [2, 3, 4] {
        n.step(msg(p, 1, 4, ack(2)));
    }
    let out = drain_all(&mut n);
    assert_eq!(
        n.commit_index(),
        0,
        "entry of term 2 committed by counting replicas"
    );
    assert!(out.committed.is_empty());
    // Entry 3, of term 4, reaches a majority: it commits, and entry 2 with it.
    n.step(msg(2, 1, 4, ack(3)));
    drain(&mut n);
    assert_eq!(n.commit_index(), 0);
    n.step(msg(3, 1, 4, ack(3)));
    let out = drain_all(&mut n);
    assert_eq!(n.commit_index(), 3);
    let applied: Vec<_> = out.committed.iter().map(|e| (e.index, e.term)).collect();
    assert_eq!(applied, vec![(1, 1), (2, 2), (3, 4)]);
}

/// §5.4.2 and §8: since only entries of its own term commit by counting, "each leader
/// commit[s] a blank no-op entry into the log at the start of its term". It is appended
/// before any client request, sent at once, and commits the previous terms' entries.
#[test]
fn paper_5_4_2_leader_appends_noop_at_term_start() {
    let mut n = lone_node(1, &ids(3), storage_with(&[1, 1], 1, None), plain);
    make_leader(&mut n);
    assert_eq!(n.term(), 2);
    let rd = handle_ready(&mut n);
    assert_eq!(rd.entries, vec![Entry::noop(2, 3)]);
    for p in [2, 3] {
        let appends = appends_to(&rd.messages, p);
        assert_eq!(appends.len(), 1);
        assert_eq!(appends[0].2, vec![Entry::noop(2, 3)]);
    }
    n.step(msg(2, 1, 2, ack(3)));
    let out = drain_all(&mut n);
    let applied: Vec<_> = out
        .committed
        .iter()
        .map(|e| (e.index, e.term, e.kind))
        .collect();
    assert_eq!(
        applied,
        vec![
            (1, 1, EntryKind::Normal),
            (2, 1, EntryKind::Normal),
            (3, 2, EntryKind::Noop)
        ]
    );
}

/// §5.5: "Raft RPCs are idempotent ... if a follower receives an AppendEntries request that
/// includes log entries already present in its log, it ignores those entries in the new
/// request." A duplicate changes nothing and is acknowledged the same way.
#[test]
fn paper_5_5_append_entries_is_idempotent() {
    let mut n = lone_node(1, &ids(3), storage_with(&[1], 1, None), plain);
    let m = msg(
        2,
        1,
        2,
        append(1, 1, entries_with_terms(&[1, 2, 2])[1..].to_vec(), 1),
    );
    n.step(m.clone());
    let first = handle_ready(&mut n);
    assert_eq!(first.entries.len(), 2);
    n.step(m);
    let second = handle_ready(&mut n);
    assert!(second.entries.is_empty(), "a duplicate rewrote the log");
    assert_eq!(second.hard_state, None);
    assert_eq!(
        append_answers(&first.persisted_messages),
        append_answers(&second.persisted_messages)
    );
    assert_eq!(stored(n.storage()), log_terms(&[1, 2, 2]));
}

// ----- Figure 2: persistence before answering -----

/// Figure 2: "Persistent state on all servers: (Updated on stable storage before responding
/// to RPCs)". A granted vote, and the candidate's own vote behind its requests, leave only
/// through `persisted_messages`, in the same `Ready` as the hard state recording them.
#[test]
fn paper_fig2_vote_grant_is_sent_only_after_persistence() {
    let mut voter = lone_node(1, &ids(3), MemStorage::new(), plain);
    voter.step(msg(2, 1, 1, vote_req(0, 0)));
    let rd = voter.ready();
    assert_eq!(
        rd.hard_state,
        Some(HardState {
            term: 1,
            vote: Some(2),
            commit: 0
        })
    );
    assert!(
        vote_answers(&rd.messages).is_empty(),
        "grant sent before persisting"
    );
    assert_eq!(vote_answers(&rd.persisted_messages), vec![(2, 1, true)]);

    let mut candidate = lone_node(1, &ids(3), MemStorage::new(), plain);
    candidate.campaign();
    let rd = candidate.ready();
    assert_eq!(rd.hard_state.map(|h| (h.term, h.vote)), Some((1, Some(1))));
    assert!(rd.messages.is_empty());
    assert_eq!(rd.persisted_messages.len(), 2);
}

/// Figure 2 / §10.2.1 of the thesis: the leader's AppendEntries may leave before its own
/// entries are durable (it counts itself in the majority only once they are), while a
/// follower acknowledges entries only once they are durable (and hands them out for
/// applying only then: `Ready` persists before it applies).
#[test]
fn paper_fig2_leader_appends_leave_at_once_follower_acks_after_persistence() {
    let mut leader = lone_node(1, &ids(3), MemStorage::new(), plain);
    make_leader(&mut leader);
    drain(&mut leader);
    for p in [2, 3] {
        leader.step(msg(p, 1, 1, ack(1)));
    }
    drain(&mut leader);
    let (index, _) = leader.propose(&b"x"[..]).unwrap();
    let rd = leader.ready();
    assert_eq!(rd.entries.len(), 1);
    assert_eq!(
        appends_to(&rd.messages, 2).len(),
        1,
        "appends must leave at once"
    );
    assert!(rd.persisted_messages.is_empty());

    // The follower: its answer waits for its entries.
    let mut follower = lone_node(2, &ids(3), MemStorage::new(), plain);
    for m in rd.messages.iter().filter(|m| m.to == 2) {
        let mut m = m.clone();
        m.body = append(0, 0, entries_with_terms(&[1, 1]), 1);
        follower.step(m);
    }
    let frd = follower.ready();
    assert_eq!(frd.entries.len(), 2);
    assert!(
        append_answers(&frd.messages).is_empty(),
        "acknowledged before persisting"
    );
    assert_eq!(
        append_answers(&frd.persisted_messages),
        vec![(1, 1, 2, None)]
    );
    assert!(
        frd.committed_entries.is_empty(),
        "entries handed out for applying before they were durable"
    );
    follower.storage_mut().apply_ready(&frd).unwrap();
    follower.advance();
    let applied: Vec<LogIndex> = follower
        .ready()
        .committed_entries
        .iter()
        .map(|e| e.index)
        .collect();
    assert_eq!(applied, vec![1]);

    // One follower acknowledges; the leader's own copy is not yet durable: no majority.
    leader.step(msg(2, 1, 1, ack(index)));
    assert!(leader.commit_index() < index);
    leader.storage_mut().apply_ready(&rd).unwrap();
    leader.advance();
    assert_eq!(leader.commit_index(), index);
}

// ----- Thesis extensions: disruptive servers, check-quorum, pre-vote, ReadIndex -----

/// Thesis §6.2: "a leader [steps] down if an election timeout elapses without a successful
/// round of heartbeats to a majority of its cluster". A connected leader keeps its role; an
/// isolated one steps down within two election timeouts; without check-quorum it would not.
#[test]
fn paper_thesis_6_2_check_quorum_leader_steps_down_without_majority() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.tick_all(10 * T);
    assert_eq!(c.leaders(), vec![1]);
    let term = c.node(1).term();

    c.isolate(1);
    let mut ticks = 0;
    while c.node(1).role() == Role::Leader {
        c.node_mut(1).tick();
        c.settle();
        ticks += 1;
        assert!(ticks <= 2 * T, "still leader after {ticks} ticks alone");
    }
    assert_eq!(c.node(1).role(), Role::Follower);
    assert_eq!((c.node(1).term(), c.node(1).leader()), (term, None));

    // Contrast: the same isolation without check-quorum leaves a leader in place.
    let mut c = Cluster::new_with(3, |cfg| cfg.check_quorum = false);
    c.elect(1);
    c.isolate(1);
    for _ in 0..10 * T {
        c.node_mut(1).tick();
        c.settle();
    }
    assert_eq!(c.node(1).role(), Role::Leader);
}

/// Thesis §9.6: "in the Pre-Vote algorithm, a candidate only increments its term if it first
/// learns from a majority of the cluster that they would be willing to grant the candidate
/// their votes". A partitioned server keeps its term, and does not disrupt the leader when
/// it rejoins.
#[test]
fn paper_thesis_9_6_prevote_does_not_bump_term_of_partitioned_node() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let term = c.node(1).term();
    c.isolate(3);
    c.tick_all(10 * T);
    assert_ne!(c.node(3).role(), Role::Leader);
    assert_eq!(
        c.node(3).term(),
        term,
        "the partitioned server bumped its term"
    );
    assert_eq!(c.leaders(), vec![1]);

    c.heal();
    c.tick_all(2 * T);
    assert_eq!(c.leaders(), vec![1]);
    for id in 1..=3 {
        assert_eq!(c.node(id).term(), term, "node {id}");
        assert_eq!(c.node(id).leader(), Some(1), "node {id}");
    }

    // Contrast: without pre-vote, the partitioned server's term runs away.
    let mut c = Cluster::new_with(3, |cfg| cfg.pre_vote = false);
    c.elect(1);
    c.isolate(3);
    c.tick_all(10 * T);
    assert!(c.node(3).term() > term);
}

/// §5.3 with flow control: once a follower is known to match (replicate state), the leader
/// streams appends to it without waiting for each answer, up to the in-flight window; a
/// follower it is still probing gets one append at a time.
#[test]
fn paper_5_3_leader_pipelines_appends_to_a_replicating_follower_and_probes_one_at_a_time() {
    let mut n = lone_node(1, &ids(2), MemStorage::new(), |c| {
        c.max_entries_per_msg = 2;
        c.max_inflight_msgs = 3;
    });
    make_leader(&mut n);
    let first = drain(&mut n);
    assert_eq!(appends_to(&first, 2).len(), 1, "probing: one append");
    let term = n.term();
    n.step(msg(2, 1, term, ack(n.last_index())));
    drain(&mut n);
    for k in 0..10u8 {
        n.propose(vec![k]).unwrap();
    }
    let sent = appends_to(&drain(&mut n), 2);
    assert_eq!(
        sent.len(),
        3,
        "three appends of two entries in flight: {sent:?}"
    );
    assert!(sent.iter().all(|(_, _, e, _)| e.len() == 2));
    assert_eq!(sent[1].0, sent[0].0 + 2, "each continues the previous one");
}

/// Thesis §9.6: a pre-vote asks "would you vote for me in the next term"; a server answers
/// it as it would answer the vote. A pre-vote for the server's own term (the asker is a term
/// behind) is granted only when a vote in this term could be: not while it knows a leader
/// or voted for another.
/// The pre-vote answers a lone node sends, as (term, granted).
fn pre_vote_answers(n: &mut Node<MemStorage>) -> Vec<(Term, bool)> {
    drain(n)
        .iter()
        .filter_map(|m| match m.body {
            MessageBody::PreVoteResponse { granted } => Some((m.term, granted)),
            _ => None,
        })
        .collect()
}

#[test]
fn paper_thesis_9_6_prevote_for_the_current_term_is_granted_only_as_a_vote_would_be() {
    // Node 1 at term 2, following leader 2 (check-quorum off: no lease in the way).
    let mut n = lone_node(1, &ids(3), storage_with(&[1], 2, None), plain_with_pre_vote);
    n.step(msg(2, 1, 2, append(1, 1, vec![], 0)));
    assert_eq!(n.leader(), Some(2));
    drain(&mut n);
    // Node 3, a term behind, asks to campaign in term 2: node 1 has a leader in term 2.
    n.step(msg(
        3,
        1,
        2,
        MessageBody::PreVote {
            last_log_index: 1,
            last_log_term: 1,
        },
    ));
    let answers: Vec<bool> = pre_vote_answers(&mut n).iter().map(|a| a.1).collect();
    assert_eq!(
        answers,
        vec![false],
        "a pre-vote for a term with a known leader"
    );
    // For the next term, the same log gets the pre-vote (the lease is off).
    n.step(msg(
        3,
        1,
        3,
        MessageBody::PreVote {
            last_log_index: 1,
            last_log_term: 1,
        },
    ));
    let answers: Vec<bool> = pre_vote_answers(&mut n).iter().map(|a| a.1).collect();
    assert_eq!(answers, vec![true]);
    assert_eq!(n.term(), 2, "granting a pre-vote changes no term");
    // A pre-vote for a past term is refused, with the current term.
    n.step(msg(
        3,
        1,
        1,
        MessageBody::PreVote {
            last_log_index: 1,
            last_log_term: 1,
        },
    ));
    let answers = pre_vote_answers(&mut n);
    assert_eq!(answers, vec![(2, false)]);
}

/// §5.2: only followers and candidates start elections; a leader asked to campaign (for
/// instance through the API's manual election) stays leader in its term.
#[test]
fn paper_5_2_a_leader_never_starts_an_election() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let term = c.node(1).term();
    c.node_mut(1).campaign();
    assert_eq!(c.node(1).role(), Role::Leader);
    assert_eq!(c.node(1).term(), term);
    assert!(c.take_messages().iter().all(|m| !matches!(
        m.body,
        MessageBody::PreVote { .. } | MessageBody::RequestVote { .. }
    )));
}

/// Thesis §4.2.3: "if a server receives a RequestVote request within the minimum election
/// timeout of hearing from a current leader, it does not update its term or grant its vote".
/// Once the timeout passes without news of the leader, it votes again.
#[test]
fn paper_thesis_4_2_3_follower_hearing_from_leader_ignores_vote_requests() {
    let mut n = lone_node(1, &ids(3), storage_with(&[], 1, None), |_| {});
    n.step(msg(
        2,
        1,
        1,
        MessageBody::Heartbeat {
            commit: 0,
            read_seq: 0,
        },
    ));
    drain(&mut n);
    assert_eq!(n.leader(), Some(2));

    n.step(msg(3, 1, 2, vote_req(5, 1)));
    n.step(msg(
        3,
        1,
        2,
        MessageBody::PreVote {
            last_log_index: 5,
            last_log_term: 1,
        },
    ));
    let out = drain(&mut n);
    assert_eq!(
        (n.term(), n.hard_state().vote, n.leader()),
        (1, None, Some(2))
    );
    assert!(out.is_empty(), "answered a disruptive candidate: {out:?}");

    for _ in 0..T {
        n.tick();
    }
    drain(&mut n);
    n.step(msg(3, 1, 2, vote_req(5, 1)));
    let out = drain(&mut n);
    assert_eq!(vote_answers(&out), vec![(3, 2, true)]);
    assert_eq!(n.term(), 2);
}

/// Thesis §6.4 (ReadIndex): the leader "records its current commit index in a local
/// variable readIndex ... sends a new round of heartbeats, and waits for their
/// acknowledgments from a majority of the cluster"; only then is the read served at
/// readIndex. An acknowledgement of an earlier round does not confirm a later read.
#[test]
fn paper_thesis_6_4_read_index_returns_commit_index_after_heartbeat_quorum() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let (index, _) = c.node_mut(1).propose(&b"x"[..]).unwrap();
    c.settle();
    assert_eq!(c.node(1).commit_index(), index);
    let term = c.node(1).term();

    c.node_mut(1).read_index(7).unwrap();
    let out = c.take_messages();
    let rounds: Vec<(NodeId, u64)> = out
        .iter()
        .filter_map(|m| match m.body {
            MessageBody::Heartbeat { read_seq, .. } => Some((m.to, read_seq)),
            _ => None,
        })
        .collect();
    assert_eq!(rounds.len(), 2, "a heartbeat round to every follower");
    let seq = rounds[0].1;
    assert!(seq > 0 && rounds.iter().all(|&(_, s)| s == seq));
    assert!(
        c.nodes[&1].read_states.is_empty(),
        "served before confirmation"
    );

    // Another write commits meanwhile; the read keeps the index it recorded.
    c.node_mut(1).propose(&b"y"[..]).unwrap();
    c.take_messages();
    c.node_mut(1).step(msg(2, 1, term, ack(index + 1)));
    assert_eq!(c.node(1).commit_index(), index + 1);
    assert!(c.nodes[&1].read_states.is_empty());
    c.take_messages();

    c.node_mut(1).step(msg(
        2,
        1,
        term,
        MessageBody::HeartbeatResponse { read_seq: seq },
    ));
    c.take_messages();
    assert_eq!(
        c.nodes[&1].read_states,
        vec![ReadState {
            id: 7,
            outcome: ReadOutcome::Ready { index }
        }]
    );

    // A second read is not confirmed by acknowledgements of the first round.
    c.node_mut(1).read_index(8).unwrap();
    c.take_messages();
    for p in [2, 3] {
        c.node_mut(1).step(msg(
            p,
            1,
            term,
            MessageBody::HeartbeatResponse { read_seq: seq },
        ));
    }
    c.take_messages();
    assert_eq!(
        c.nodes[&1].read_states.len(),
        1,
        "confirmed by a stale round"
    );
    c.node_mut(1).step(msg(
        3,
        1,
        term,
        MessageBody::HeartbeatResponse { read_seq: seq + 1 },
    ));
    c.take_messages();
    assert_eq!(
        c.nodes[&1].read_states[1],
        ReadState {
            id: 8,
            outcome: ReadOutcome::Ready { index: index + 1 }
        }
    );
}

/// Thesis §6.4: "If the leader has not yet marked an entry from its current term committed,
/// it waits until it has done so": a new leader may not know the latest commit index.
#[test]
fn paper_thesis_6_4_read_index_waits_for_leader_to_commit_in_its_term() {
    let mut n = lone_node(1, &ids(3), storage_with(&[1, 1], 1, None), |_| {});
    make_leader(&mut n);
    drain(&mut n);
    assert_eq!(n.commit_index(), 0);
    n.read_index(1).unwrap();
    let out = drain_all(&mut n);
    assert!(out.read_states.is_empty());
    assert!(
        !out.messages
            .iter()
            .any(|m| matches!(m.body, MessageBody::Heartbeat { read_seq, .. } if read_seq > 0)),
        "a read round started before the leader committed in its term"
    );

    n.step(msg(2, 1, 2, ack(3)));
    let out = drain_all(&mut n);
    assert_eq!(n.commit_index(), 3);
    let seq = out
        .messages
        .iter()
        .find_map(|m| match m.body {
            MessageBody::Heartbeat { read_seq, .. } if read_seq > 0 => Some(read_seq),
            _ => None,
        })
        .expect("a read round once the no-op committed");
    n.step(msg(
        2,
        1,
        2,
        MessageBody::HeartbeatResponse { read_seq: seq },
    ));
    let out = drain_all(&mut n);
    assert_eq!(
        out.read_states,
        vec![ReadState {
            id: 1,
            outcome: ReadOutcome::Ready { index: 3 }
        }]
    );
}

/// Thesis §6.4: the read is served only if leadership is confirmed; a leader that steps down
/// (on a higher term, or by check-quorum) fails its pending reads so that clients retry on
/// the new leader.
#[test]
fn paper_thesis_6_4_read_index_is_aborted_on_step_down() {
    let confirmed_leader = || {
        let mut n = lone_node(1, &ids(3), MemStorage::new(), |_| {});
        make_leader(&mut n);
        drain(&mut n);
        n.step(msg(2, 1, 1, ack(1)));
        drain(&mut n);
        assert_eq!(n.commit_index(), 1);
        n.read_index(5).unwrap();
        assert!(drain_all(&mut n).read_states.is_empty());
        n
    };
    let aborted = vec![ReadState {
        id: 5,
        outcome: ReadOutcome::Aborted,
    }];

    let mut n = confirmed_leader();
    n.step(msg(3, 1, 2, ack(0)));
    assert_eq!(n.role(), Role::Follower);
    assert_eq!(drain_all(&mut n).read_states, aborted);

    let mut n = confirmed_leader();
    let mut states = Vec::new();
    for _ in 0..2 * T {
        n.tick();
        states.extend(drain_all(&mut n).read_states);
    }
    assert_eq!(n.role(), Role::Follower);
    assert_eq!(states, aborted);
}

/// §5.3: "the leader keeps track of the highest index it knows to be committed, and it
/// includes that index in future AppendEntries RPCs". Here the new commit index travels at
/// once, in an empty append to every follower, not at the next heartbeat; and an answer
/// that commits nothing new from a follower that has everything costs no message.
#[test]
fn paper_5_3_a_new_commit_index_is_sent_at_once_and_idle_acks_send_nothing() {
    let mut n = lone_node(1, &ids(3), MemStorage::new(), |_| {});
    make_leader(&mut n);
    drain(&mut n);
    let term = n.term();
    let noop = n.last_index();
    n.step(msg(2, 1, term, ack(noop)));
    n.step(msg(3, 1, term, ack(noop)));
    drain(&mut n);
    n.propose(&b"x"[..]).unwrap();
    let idx = n.last_index();
    drain(&mut n);
    // Node 2 acknowledges: with the leader that is a majority, so `idx` commits.
    n.step(msg(2, 1, term, ack(idx)));
    let out = drain(&mut n);
    for f in [2, 3] {
        let sent = appends_to(&out, f);
        assert!(
            sent.iter()
                .any(|(_, _, e, commit)| e.is_empty() && *commit == idx),
            "follower {f} is told of commit {idx} at once: {sent:?}"
        );
    }
    // Node 2 repeats what it has: nothing new to send, nothing sent.
    n.step(msg(2, 1, term, ack(idx)));
    let out = drain(&mut n);
    assert!(appends_to(&out, 2).is_empty(), "{out:?}");
}

/// Answers and appends that no correct peer could send are dropped and counted, on the
/// leader (an acknowledgement of entries it never sent) and on a follower (entries whose
/// indexes do not follow the append's previous index).
#[test]
fn impossible_acks_and_misnumbered_appends_are_counted() {
    let mut leader = lone_node(1, &ids(3), MemStorage::new(), |_| {});
    make_leader(&mut leader);
    drain(&mut leader);
    let term = leader.term();
    let beyond = leader.last_index() + 5;
    leader.step(msg(2, 1, term, ack(beyond)));
    assert_eq!(leader.status().rejected_messages, 1);

    let mut follower = lone_node(2, &ids(3), MemStorage::new(), |_| {});
    follower.step(msg(
        1,
        2,
        1,
        MessageBody::AppendEntries {
            prev_index: 0,
            prev_term: 0,
            entries: vec![Entry::normal(1, 5, &b"x"[..])],
            commit: 0,
        },
    ));
    assert_eq!(follower.status().rejected_messages, 1);
    assert_eq!(follower.last_index(), 0, "nothing was appended");
}

/// §5.3 optimisation: a rejection whose hint carries no term (the follower's log is
/// shorter) says exactly where to probe next; the leader probes from that index rather than
/// searching its own log for a term.
#[test]
fn paper_5_3_a_rejection_hint_without_a_term_is_probed_from_its_index() {
    // A leader elected with five entries of term 1 probes follower 2 after its last entry.
    let mut n = lone_node(1, &ids(2), storage_with(&[1, 1, 1, 1, 1], 1, None), |_| {});
    make_leader(&mut n);
    let term = n.term();
    let first = appends_to(&drain(&mut n), 2);
    let (prev, _, _, _) = *first.first().expect("a probe to the follower");
    assert!(prev >= 5, "{first:?}");
    // The follower's log ends at 3: it rejects and says so, with no term to match.
    n.step(msg(
        2,
        1,
        term,
        MessageBody::AppendEntriesResponse {
            index: prev,
            reject: Some(RejectHint { index: 3, term: 0 }),
        },
    ));
    let next = appends_to(&drain(&mut n), 2);
    assert_eq!(
        next.first().map(|a| a.0),
        Some(3),
        "probe right after the follower's last entry: {next:?}"
    );
}

/// §7: a follower that needed the snapshot and has installed it (its answer acknowledges
/// the snapshot's index) is streamed the entries after it at once.
#[test]
fn paper_7_after_a_snapshot_is_acknowledged_the_follower_gets_the_entries_after_it() {
    let mut store = storage_with(&[1; 10], 1, None);
    store
        .create_snapshot(8, raft_core::Membership::new(ids(2)))
        .unwrap();
    store.compact(8).unwrap();
    let mut n = lone_node(1, &ids(2), store, |c| c.applied = 8);
    make_leader(&mut n);
    let term = n.term();
    let out = drain(&mut n);
    let probe = appends_to(&out, 2);
    let (prev, _, _, _) = *probe.first().expect("a probe to the follower");
    // The follower has nothing: the entries it needs are compacted, so it gets the snapshot.
    n.step(msg(
        2,
        1,
        term,
        MessageBody::AppendEntriesResponse {
            index: prev,
            reject: Some(RejectHint { index: 0, term: 0 }),
        },
    ));
    let out = drain(&mut n);
    assert!(
        out.iter()
            .any(|m| m.to == 2 && matches!(m.body, MessageBody::InstallSnapshot { .. })),
        "{out:?}"
    );
    // Installed: the follower acknowledges index 8.
    n.step(msg(2, 1, term, ack(8)));
    let next = appends_to(&drain(&mut n), 2);
    assert_eq!(
        next.first().map(|a| a.0),
        Some(8),
        "entries from 9 on follow at once: {next:?}"
    );
}
