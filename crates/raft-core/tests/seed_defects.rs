//! Regression tests for the defects of the original Go project that this crate replaces, one
//! test per defect (1–9). Each test builds the situation in which the original misbehaved
//! and checks the behaviour the Raft paper requires; run against the original's behaviour,
//! each one fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{
    ack, append, drain, drain_all, ids, log_of, lone_node, make_leader, msg, plain, storage_with,
    Cluster,
};
use raft_core::{
    Entry, EntryKind, LogIndex, LogStore, MemStorage, Message, MessageBody, Node, NodeId,
    PeerProgress, ProposeError, ReadError, RejectHint, Role, Term,
};

fn reject(index: LogIndex, hint_index: LogIndex, hint_term: Term) -> MessageBody {
    MessageBody::AppendEntriesResponse {
        index,
        reject: Some(RejectHint {
            index: hint_index,
            term: hint_term,
        }),
    }
}

fn heartbeat(commit: LogIndex) -> MessageBody {
    MessageBody::Heartbeat {
        commit,
        read_seq: 0,
    }
}

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

fn granted_votes(msgs: &[Message]) -> Vec<(NodeId, NodeId, Term)> {
    msgs.iter()
        .filter(|m| matches!(m.body, MessageBody::RequestVoteResponse { granted: true }))
        .map(|m| (m.from, m.to, m.term))
        .collect()
}

fn progress(n: &Node<MemStorage>, id: NodeId) -> PeerProgress {
    n.status()
        .progress
        .into_iter()
        .find(|p| p.id == id)
        .unwrap()
}

/// Defect 1: a new leader cleared its vote, so it could grant another vote in the term it
/// leads, and a second leader of the same term was observed. The vote for itself must stay
/// recorded (and persisted) for the whole term: live, and across a crash.
#[test]
fn seed_defect_1_leader_keeps_its_vote_in_its_own_term() {
    // All three servers hold entry (1, 1); server 2 misses the election of term 2.
    let stores = (0..3).map(|_| storage_with(&[1], 1, None)).collect();
    let mut c = Cluster::with_storages(stores, plain);
    c.isolate(2);
    c.node_mut(1).campaign();
    let requests = c.take_messages();
    for m in requests {
        c.deliver(m);
    }
    let grants = c.take_messages();
    for m in grants {
        c.deliver(m);
    }
    assert_eq!((c.node(1).role(), c.node(1).term()), (Role::Leader, 2));
    assert_eq!(
        c.node(1).hard_state().vote,
        Some(1),
        "the leader cleared its vote"
    );

    // The leader's first Ready must not unrecord the vote. The server persists that hard
    // state, then crashes before its no-op entry is durable.
    let rd = c.node_mut(1).ready();
    assert!(
        rd.hard_state.is_none_or(|hs| hs.vote == Some(1)),
        "the leader's Ready persists {:?}",
        rd.hard_state
    );
    if let Some(hs) = rd.hard_state {
        c.node_mut(1).storage_mut().set_hard_state(hs);
    }
    c.restart(1);
    assert_eq!(c.node(1).storage().hard_state().unwrap().vote, Some(1));
    assert_eq!(c.node(1).hard_state().vote, Some(1));

    // Server 2, as up to date as server 1 now is, campaigns for term 2 too.
    c.heal();
    c.node_mut(2).campaign();
    assert_eq!(c.node(2).term(), 2);
    let requests = c.take_messages();
    for m in requests {
        c.deliver(m);
    }
    let answers = c.take_messages();
    assert!(
        granted_votes(&answers).is_empty(),
        "a vote was granted twice in term 2: {answers:?}"
    );
    for m in answers {
        c.deliver(m);
    }
    c.settle();
    assert_ne!(c.node(2).role(), Role::Leader, "two leaders in term 2");
    assert_eq!(c.node(1).hard_state().vote, Some(1));
}

/// Defect 2: a candidate (or pre-candidate) receiving AppendEntries of its own term did not
/// step down. §5.2: "If the leader's term ... is at least as large as the candidate's current
/// term, then the candidate recognizes the leader as legitimate and returns to follower
/// state." It then accepts the entries and, hearing from the leader, stops campaigning.
/// (A leader receiving such a message ignores it: by Election Safety it cannot be legitimate,
/// and the leader never lets it touch its log.)
#[test]
fn seed_defect_2_candidate_and_leader_step_down_on_append_of_equal_term() {
    // A candidate of term 2.
    let mut n = lone_node(1, &ids(3), storage_with(&[], 1, None), plain);
    n.campaign();
    drain(&mut n);
    assert_eq!((n.role(), n.term()), (Role::Candidate, 2));
    n.step(msg(2, 1, 2, append(0, 0, vec![Entry::noop(2, 1)], 1)));
    assert_eq!(
        (n.role(), n.term(), n.leader()),
        (Role::Follower, 2, Some(2))
    );
    let out = drain_all(&mut n);
    assert!(out
        .messages
        .iter()
        .any(|m| m.to == 2 && m.body == ack(1) && m.term == 2));
    assert_eq!(log_of(&n), vec![(1, 2)]);
    assert_eq!(n.commit_index(), 1);
    // The leader's heartbeats (every T - 1 ticks) keep it a follower of term 2.
    for _ in 0..5 {
        for _ in 0..9 {
            n.tick();
        }
        n.step(msg(2, 1, 2, heartbeat(1)));
        drain(&mut n);
    }
    assert_eq!((n.role(), n.term()), (Role::Follower, 2));

    // A candidate receiving a heartbeat of its term.
    let mut n = lone_node(1, &ids(3), storage_with(&[], 1, None), plain);
    n.campaign();
    n.step(msg(3, 1, 2, heartbeat(0)));
    assert_eq!(
        (n.role(), n.term(), n.leader()),
        (Role::Follower, 2, Some(3))
    );

    // A pre-candidate (pre-vote on) of term 1 hears from the leader of term 1.
    let mut n = lone_node(1, &ids(3), storage_with(&[], 1, None), |_| {});
    n.campaign();
    assert_eq!((n.role(), n.term()), (Role::PreCandidate, 1));
    n.step(msg(2, 1, 1, append(0, 0, vec![Entry::noop(1, 1)], 0)));
    assert_eq!(
        (n.role(), n.term(), n.leader()),
        (Role::Follower, 1, Some(2))
    );

    // A leader keeps its log and role against a (forged) append of its own term.
    let mut n = lone_node(1, &ids(3), MemStorage::new(), plain);
    make_leader(&mut n);
    drain(&mut n);
    n.step(msg(
        2,
        1,
        1,
        append(0, 0, vec![Entry::normal(1, 1, &b"forged"[..])], 0),
    ));
    assert_eq!(n.role(), Role::Leader);
    assert_eq!(
        n.storage().all_entries().first().map(|e| e.kind),
        Some(EntryKind::Noop)
    );
}

/// Defect 3: followers stamped the entries they copied with their own current term. An
/// entry keeps, forever and everywhere, the term of the leader that created it (§5.3: "each
/// log entry also has a term number"); otherwise the Log Matching checks of later appends
/// fail, and logs that agree look different.
#[test]
fn seed_defect_3_followers_keep_the_term_of_copied_entries() {
    // A follower of term 5 receives entries created in terms 1 and 3.
    let mut n = lone_node(1, &ids(3), storage_with(&[], 5, None), plain);
    let entries = vec![
        Entry::normal(1, 1, &b"a"[..]),
        Entry::normal(3, 2, &b"b"[..]),
    ];
    n.step(msg(2, 1, 5, append(0, 0, entries.clone(), 0)));
    let rd = common::handle_ready(&mut n);
    assert_eq!(rd.entries, entries);
    assert_eq!(n.storage().all_entries(), &entries[..]);
    assert_eq!(log_of(&n), vec![(1, 1), (2, 3)]);
    // The leader's next append names (2, 3) as its predecessor: it must match.
    n.step(msg(
        2,
        1,
        5,
        append(2, 3, vec![Entry::normal(5, 3, &b"c"[..])], 3),
    ));
    let out = drain(&mut n);
    assert!(out.iter().any(|m| m.body == ack(3)), "{out:?}");
    assert_eq!(log_of(&n), vec![(1, 1), (2, 3), (3, 5)]);

    // In a cluster: a new leader of term 3 replicates entries of terms 1 and 2 to a server
    // that lacks them; every copy equals the original.
    let stores = vec![
        storage_with(&[1, 2], 2, None),
        MemStorage::new(),
        storage_with(&[1, 2], 2, None),
    ];
    let mut c = Cluster::with_storages(stores, plain);
    c.elect(1);
    assert_eq!(c.node(1).term(), 3);
    c.tick_all(2);
    assert_eq!(c.persisted(2), c.persisted(1));
    assert_eq!(log_of(c.node(2)), vec![(1, 1), (2, 2), (3, 3)]);
    assert_eq!(c.applied(2), c.applied(1));
}

/// Defect 4: entries of earlier terms were committed by counting replicas, the situation of
/// Figure 8. Replayed here: (b) S5 led term 3 and wrote (2, 3) only to itself; (c) S1 leads
/// term 4 and copies its (2, 2) to S3, so a majority {S1, S2, S3} holds it, but must not
/// commit it; (d) S1 crashes and S5 is elected with the votes of S3 and S4, overwriting
/// index 2 everywhere. Had S1 committed (2, 2), two servers would apply different entries
/// at index 2 (§5.4.2).
#[test]
fn seed_defect_4_entries_of_earlier_terms_are_not_committed_by_counting() {
    let stores = vec![
        storage_with(&[1, 2], 3, None),
        storage_with(&[1, 2], 3, None),
        storage_with(&[1], 3, Some(5)),
        storage_with(&[1], 3, Some(5)),
        storage_with(&[1, 3], 3, Some(5)),
    ];
    let mut c = Cluster::with_storages(stores, |cfg| {
        plain(cfg);
        cfg.max_entries_per_msg = 1;
    });

    // (c) S5 is down, S4 unreachable from S1. S1 wins term 4 with S2 and S3; S3 receives
    // entry (2, 2), then S1 crashes before its no-op (3, 4) reaches S3.
    c.isolate(5);
    c.cut.insert((1, 4));
    c.cut.insert((4, 1));
    c.node_mut(1).campaign();
    let mut s3_has_entry_2 = false;
    c.settle_filtered(|m| {
        if m.from == 3 && m.to == 1 && m.body == ack(2) {
            s3_has_entry_2 = true;
        }
        let carries_noop = matches!(&m.body, MessageBody::AppendEntries { entries, .. }
            if entries.iter().any(|e| e.index == 3));
        !(m.from == 1 && m.to == 3 && s3_has_entry_2 && carries_noop)
    });
    assert_eq!((c.node(1).role(), c.node(1).term()), (Role::Leader, 4));
    assert_eq!(log_of(c.node(3)), vec![(1, 1), (2, 2)]);
    assert_eq!(log_of(c.node(2)), vec![(1, 1), (2, 2), (3, 4)]);
    assert_eq!(
        c.node(1).commit_index(),
        0,
        "entry (2, 2) of an earlier term was committed by counting replicas"
    );
    assert!(c.applied(1).is_empty());

    // (d) S1 crashes; S5 times out (twice: in term 4, S2 and S3 have voted already).
    c.heal();
    c.isolate(1);
    for _ in 0..3 {
        if c.node(5).role() == Role::Leader {
            break;
        }
        c.node_mut(5).campaign();
        c.settle();
    }
    assert_eq!((c.node(5).role(), c.node(5).term()), (Role::Leader, 5));
    c.tick_all(2);

    // S1 comes back and learns the outcome.
    c.heal();
    c.tick_all(5);
    let want = vec![
        (1, 1, EntryKind::Normal),
        (2, 3, EntryKind::Normal),
        (3, 5, EntryKind::Noop),
    ];
    for id in 1..=5 {
        assert_eq!(c.applied(id), want, "node {id}");
    }
}

/// Defect 5: followers truncated their log at prevLogIndex + 1 even when the entries
/// matched, so a stale (delayed or duplicated) AppendEntries removed entries the follower
/// had already acknowledged, and the leader had counted, towards commitment. Figure 2,
/// receiver rule 3 deletes entries only on a conflict.
#[test]
fn seed_defect_5_stale_append_does_not_truncate_acknowledged_entries() {
    let mut c = Cluster::new_with(3, plain);
    c.elect(1);
    c.isolate(3);
    c.node_mut(1).propose(&b"e1"[..]).unwrap();
    let first = c.take_messages();
    let (index, term) = c.node_mut(1).propose(&b"e2"[..]).unwrap();
    assert_eq!((index, term), (3, 1));
    let second = c.take_messages();
    let stale = first
        .iter()
        .find(|m| m.to == 2 && matches!(m.body, MessageBody::AppendEntries { .. }))
        .unwrap()
        .clone();
    for m in first.into_iter().chain(second) {
        c.deliver(m);
    }
    let acks = c.take_messages();
    for m in acks {
        c.deliver(m);
    }
    assert_eq!(c.node(1).commit_index(), 3, "e2 is committed on {{1, 2}}");
    assert!(
        c.node(2).commit_index() < 3,
        "the follower has not heard of it yet"
    );

    // The first append arrives again.
    c.deliver(stale);
    assert_eq!(
        c.node(2).last_index(),
        3,
        "an acknowledged entry was removed"
    );
    assert_eq!(c.node(2).entry_term(3), Some(1));
    let answers = c.take_messages();
    assert!(answers.iter().any(|m| m.from == 2 && m.body == ack(2)));
    for m in answers {
        c.deliver(m);
    }
    c.settle();
    assert_eq!(progress(c.node(1), 2).match_index, 3);

    // The leader crashes; server 2 must carry e2 into the next term.
    c.heal();
    c.isolate(1);
    c.node_mut(3).campaign();
    c.settle();
    c.node_mut(2).campaign();
    c.settle();
    assert_eq!(c.node(2).role(), Role::Leader);
    c.tick_all(2);
    let e2 = (index, term, EntryKind::Normal);
    for id in 1..=3 {
        assert!(
            c.applied(id).contains(&e2),
            "node {id}: {:?}",
            c.applied(id)
        );
    }
    let leader_applied = c.applied(1);
    assert_eq!(c.applied(2)[..leader_applied.len()], leader_applied[..]);
}

/// Defect 6: the leader decremented nextIndex with no floor (down to 0 and below), and stale
/// answers moved matchIndex backwards. nextIndex stays within `[matchIndex + 1, ...]` and
/// at least 1 whatever the rejections; matchIndex and the commit index never go back.
#[test]
fn seed_defect_6_next_index_has_a_floor_and_match_index_never_goes_back() {
    let mut n = lone_node(1, &ids(3), storage_with(&[1, 1, 1, 1, 1], 1, None), plain);
    make_leader(&mut n);
    assert_eq!(n.term(), 2);
    drain(&mut n);
    let check = |n: &Node<MemStorage>| {
        for p in n.status().progress {
            assert!(p.next_index >= 1, "{p:?}");
            assert!(p.next_index > p.match_index, "{p:?}");
        }
    };

    n.step(msg(2, 1, 2, ack(6)));
    drain(&mut n);
    let p = progress(&n, 2);
    assert_eq!((p.match_index, p.next_index, p.replicating), (6, 7, true));
    assert_eq!(n.commit_index(), 6);

    // A delayed answer to an earlier, shorter append, and a delayed rejection.
    n.step(msg(2, 1, 2, ack(3)));
    n.step(msg(2, 1, 2, reject(4, 3, 1)));
    drain(&mut n);
    assert_eq!(progress(&n, 2), p, "a stale answer moved the progress back");
    assert_eq!(n.commit_index(), 6);

    // A genuine rejection above the match index backs up to matchIndex + 1, not below,
    // even if the hint says the logs agree nowhere.
    for k in 0..3u8 {
        n.propose(vec![k]).unwrap();
    }
    drain(&mut n);
    assert_eq!(progress(&n, 2).next_index, 10);
    n.step(msg(2, 1, 2, reject(8, 0, 0)));
    let out = drain(&mut n);
    let p = progress(&n, 2);
    assert_eq!((p.match_index, p.next_index), (6, 7));
    check(&n);
    assert!(out
        .iter()
        .any(|m| m.to == 2 && matches!(m.body, MessageBody::AppendEntries { prev_index: 6, .. })));

    // Server 3 rejects again and again, down to the start of the log and past it.
    n.step(msg(3, 1, 2, reject(5, 0, 0)));
    let out = drain(&mut n);
    check(&n);
    assert_eq!(progress(&n, 3).next_index, 1);
    for _ in 0..5 {
        n.step(msg(3, 1, 2, reject(0, 0, 0)));
        let out = drain(&mut n);
        check(&n);
        assert_eq!(progress(&n, 3).next_index, 1);
        for m in out.iter().filter(|m| m.to == 3) {
            if let MessageBody::AppendEntries { prev_index, .. } = m.body {
                assert_eq!(prev_index, 0);
            }
        }
    }
    assert!(out
        .iter()
        .any(|m| m.to == 3 && matches!(m.body, MessageBody::AppendEntries { prev_index: 0, .. })));
    assert_eq!(n.commit_index(), 6);
}

/// Defect 7: vote grants arriving late re-ran "become leader" in a node that was no longer a
/// candidate (already leader, or back to follower), resetting its followers' progress and
/// appending another no-op, or making a follower a second leader. Late grants, of votes or
/// pre-votes, change nothing once the node is past the phase that asked for them.
#[test]
fn seed_defect_7_late_vote_grants_do_not_rerun_become_leader() {
    // An elected leader of a five-server cluster receives the remaining grants.
    let mut n = lone_node(1, &ids(5), MemStorage::new(), plain);
    n.campaign();
    drain(&mut n);
    for p in [2, 3] {
        n.step(msg(p, 1, 1, grant(true)));
    }
    assert_eq!(n.role(), Role::Leader);
    drain(&mut n);
    n.step(msg(2, 1, 1, ack(1)));
    drain(&mut n);
    let (status, log) = (n.status(), log_of(&n));
    for p in [4, 5] {
        n.step(msg(p, 1, 1, grant(true)));
    }
    let out = drain(&mut n);
    assert!(out.is_empty(), "late grants produced {out:?}");
    assert_eq!(n.status(), status);
    assert_eq!(log_of(&n), log, "a second no-op was appended");

    // A candidate that lost to server 2 receives grants afterwards.
    let mut n = lone_node(1, &ids(3), MemStorage::new(), plain);
    n.campaign();
    drain(&mut n);
    n.step(msg(2, 1, 1, append(0, 0, vec![Entry::noop(1, 1)], 0)));
    assert_eq!(n.role(), Role::Follower);
    for p in [3, 2] {
        n.step(msg(p, 1, 1, grant(true)));
    }
    assert_eq!(
        (n.role(), n.leader()),
        (Role::Follower, Some(2)),
        "two leaders in term 1"
    );
    assert_eq!(log_of(&n), vec![(1, 1)]);

    // A pre-candidate that became candidate receives a late pre-vote grant; then, as leader,
    // another one.
    let mut n = lone_node(1, &ids(5), MemStorage::new(), |_| {});
    n.campaign();
    drain(&mut n);
    for p in [2, 3] {
        n.step(msg(p, 1, 1, MessageBody::PreVoteResponse { granted: true }));
    }
    assert_eq!((n.role(), n.term()), (Role::Candidate, 1));
    n.step(msg(4, 1, 1, MessageBody::PreVoteResponse { granted: true }));
    assert_eq!(
        (n.role(), n.term()),
        (Role::Candidate, 1),
        "a second campaign began"
    );
    drain(&mut n);
    for p in [2, 3] {
        n.step(msg(p, 1, 1, grant(true)));
    }
    assert_eq!(n.role(), Role::Leader);
    drain(&mut n);
    let log = log_of(&n);
    n.step(msg(5, 1, 1, MessageBody::PreVoteResponse { granted: true }));
    assert_eq!((n.role(), n.term()), (Role::Leader, 1));
    assert_eq!(log_of(&n), log);

    // A candidate of term 2 receives the grants of its campaign in term 1.
    let mut n = lone_node(1, &ids(3), MemStorage::new(), plain);
    n.campaign();
    while n.term() == 1 {
        n.tick();
    }
    assert_eq!((n.role(), n.term()), (Role::Candidate, 2));
    for p in [2, 3] {
        n.step(msg(p, 1, 1, grant(true)));
    }
    assert_eq!(n.role(), Role::Candidate);
}

/// Defect 8 (core part): concurrent proposals must each get their own (index, term), and a
/// deposed leader's proposal must be recognisably lost: the entry finally committed at its
/// index has another term (§8: a client learns the outcome from what commits there).
#[test]
fn seed_defect_8_proposals_get_distinct_index_and_term_and_losses_are_visible() {
    let mut c = Cluster::new_with(3, plain);
    c.elect(1);
    let term = c.node(1).term();

    // Five clients propose before the leader hands anything out.
    let proposals: Vec<((LogIndex, Term), u8)> = (0..5u8)
        .map(|k| (c.node_mut(1).propose(vec![k]).unwrap(), k))
        .collect();
    let indexes: Vec<LogIndex> = proposals.iter().map(|&((i, _), _)| i).collect();
    assert_eq!(indexes, vec![2, 3, 4, 5, 6]);
    assert!(proposals.iter().all(|&((_, t), _)| t == term));
    c.settle();
    c.tick_all(1);
    for id in 1..=3 {
        for &((index, t), k) in &proposals {
            let e = c.nodes[&id]
                .applied
                .iter()
                .find(|e| e.index == index)
                .unwrap();
            assert_eq!((e.term, &e.data[..]), (t, &[k][..]), "node {id}");
        }
    }

    // Server 1 is cut off but still believes it leads; it accepts a proposal.
    c.isolate(1);
    let (lost_index, lost_term) = c.node_mut(1).propose(&b"lost"[..]).unwrap();
    assert_eq!((lost_index, lost_term), (7, term));
    c.node_mut(2).campaign();
    c.settle();
    assert_eq!(c.node(2).role(), Role::Leader);
    let (won_index, won_term) = c.node_mut(2).propose(&b"won"[..]).unwrap();
    assert!(won_term > lost_term);
    c.settle();
    c.heal();
    c.tick_all(3);

    assert_eq!(c.node(1).leader(), Some(2));
    for id in 1..=3 {
        let applied = &c.nodes[&id].applied;
        let at_lost = applied.iter().find(|e| e.index == lost_index).unwrap();
        assert_ne!(
            at_lost.term, lost_term,
            "node {id}: the lost proposal looks committed"
        );
        assert!(applied.iter().all(|e| &e.data[..] != b"lost"), "node {id}");
        let at_won = applied.iter().find(|e| e.index == won_index).unwrap();
        assert_eq!((at_won.term, &at_won.data[..]), (won_term, &b"won"[..]));
    }
}

/// Defect 9: any event (even a stale message or a client request) reset the election timer,
/// so a follower flooded with requests never noticed its leader was gone. Figure 2: only
/// AppendEntries from the current leader and granting a vote count. A follower bombarded
/// every tick with proposals, reads, stale-term messages, refused vote requests, answers it
/// did not ask for and messages from strangers times out on exactly the same tick as an
/// identical follower left alone.
#[test]
fn seed_defect_9_proposals_and_stale_messages_do_not_delay_election() {
    let fresh = || lone_node(1, &ids(3), storage_with(&[1], 2, None), |_| {});
    let mut twin = fresh();
    let mut timeout = 0;
    while twin.role() == Role::Follower {
        twin.tick();
        timeout += 1;
    }
    assert_eq!(twin.role(), Role::PreCandidate);

    let mut n = fresh();
    for _ in 0..timeout {
        assert_eq!(n.role(), Role::Follower);
        assert!(matches!(
            n.propose(&b"x"[..]),
            Err(ProposeError::NotLeader { leader: None })
        ));
        assert!(matches!(
            n.read_index(1),
            Err(ReadError::NotLeader { leader: None })
        ));
        let noise = [
            msg(
                2,
                1,
                1,
                append(1, 1, vec![Entry::normal(1, 2, &b"old"[..])], 2),
            ),
            msg(2, 1, 1, heartbeat(1)),
            msg(3, 1, 1, vote_req(9, 1)),
            msg(3, 1, 2, vote_req(0, 0)), // this term, but a stale log: refused
            msg(3, 1, 1, grant(true)),
            msg(2, 1, 2, ack(1)),
            msg(2, 1, 2, MessageBody::HeartbeatResponse { read_seq: 1 }),
            msg(9, 1, 3, vote_req(1, 1)), // not a member, not ahead: cannot disrupt
            msg(9, 1, 2, grant(true)),    // not a member: does not count
            msg(2, 3, 2, heartbeat(1)),   // not addressed to this node
        ];
        for m in noise {
            n.step(m);
        }
        let out = drain(&mut n);
        assert!(granted_votes(&out).is_empty());
        assert_eq!((n.term(), n.leader(), n.hard_state().vote), (2, None, None));
        n.tick();
    }
    assert_eq!(
        n.role(),
        Role::PreCandidate,
        "the noise delayed the election past {timeout} ticks"
    );
}

/// Not a defect of the original but of any node trusting its input: an AppendEntries whose
/// entries are not numbered right after `prev_index`, or whose indexes overflow, is ignored
/// instead of crashing the node or corrupting its log.
#[test]
fn malformed_append_entries_are_ignored_not_obeyed() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let before = c.node(2).last_index();
    let bad = [
        (0, vec![Entry::normal(5, 5, &b"x"[..])]),
        (u64::MAX, vec![Entry::normal(5, 0, &b"x"[..])]),
        (
            1,
            vec![
                Entry::normal(5, 2, &b"a"[..]),
                Entry::normal(5, 4, &b"b"[..]),
            ],
        ),
    ];
    for (prev_index, entries) in bad {
        let prev_term = c.node(2).entry_term(prev_index).unwrap_or(0);
        let term = c.node(1).term();
        c.node_mut(2).step(msg(
            1,
            2,
            term,
            MessageBody::AppendEntries {
                prev_index,
                prev_term,
                entries,
                commit: 0,
            },
        ));
        assert_eq!(c.node(2).last_index(), before);
    }
    // A success answer acknowledging entries the leader never had is ignored too.
    let term = c.node(1).term();
    c.node_mut(1).step(msg(
        2,
        1,
        term,
        MessageBody::AppendEntriesResponse {
            index: u64::MAX,
            reject: None,
        },
    ));
    let st = c.node(1).status();
    assert!(st.progress.iter().all(|p| p.match_index <= st.last_index));
}
