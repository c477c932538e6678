//! Asynchronous storage writes: a caller that keeps stepping the node while `Ready`s are
//! being written acknowledges each write with `on_persisted` and each apply with
//! `on_applied`. The persist-before-promise rules hold as with `advance`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use raft_core::{LogIndex, MemStorage, Message, MessageBody, Node, NodeId, Ready};

/// How many appends (with entries or not) `msgs` hold for `to`.
fn appends_to(msgs: &[Message], to: NodeId) -> usize {
    msgs.iter()
        .filter(|m| m.to == to && matches!(m.body, MessageBody::AppendEntries { .. }))
        .count()
}

/// A 3-node leader (id 1) with its no-op committed and applied, everything drained.
fn leader() -> Node<MemStorage> {
    leader_with_noop_committed(plain)
}

/// Writes a `Ready`'s entries and hard state to the node's storage, without telling it.
fn write(node: &mut Node<MemStorage>, rd: &Ready) {
    node.storage_mut().apply_ready(rd).unwrap();
}

fn committed_indexes(rd: &Ready) -> Vec<LogIndex> {
    rd.committed_entries.iter().map(|e| e.index).collect()
}

#[test]
fn a_quorum_of_followers_commits_while_the_leaders_own_write_is_in_progress() {
    let mut leader = leader();
    let (index, term) = leader.propose(&b"x"[..]).unwrap();
    let rd = leader.ready();
    assert_eq!(rd.persisted_mark(), Some((index, term)));
    assert_eq!(appends_to(&rd.messages, 2), 1, "appends leave at once");
    // Both followers persisted it; the leader's write has not finished.
    for p in [2, 3] {
        leader.step(msg(p, 1, term, ack(index)));
    }
    assert_eq!(leader.commit_index(), index, "two of three persisted it");
    let rd2 = leader.ready();
    assert!(
        rd2.committed_entries.is_empty(),
        "applied on the leader before its own copy is durable"
    );
    write(&mut leader, &rd);
    leader.on_persisted(index, term);
    let rd3 = leader.ready();
    assert_eq!(committed_indexes(&rd3), vec![index]);
}

#[test]
fn the_leaders_own_write_counts_toward_the_quorum_once_acknowledged() {
    let mut leader = leader();
    let (index, term) = leader.propose(&b"x"[..]).unwrap();
    let rd = leader.ready();
    leader.step(msg(2, 1, term, ack(index)));
    assert_eq!(leader.commit_index(), 1, "one follower alone is no quorum");
    write(&mut leader, &rd);
    leader.on_persisted(index, term);
    assert_eq!(leader.commit_index(), index, "the leader and one follower");
    let rd2 = leader.ready();
    assert_eq!(committed_indexes(&rd2), vec![index]);
    assert!(
        appends_to(&rd2.messages, 2) + appends_to(&rd2.messages, 3) > 0,
        "the new commit index is broadcast"
    );
}

#[test]
fn later_readies_are_taken_while_earlier_writes_are_in_progress() {
    let mut leader = leader();
    let (a, term) = leader.propose(&b"a"[..]).unwrap();
    let rd_a = leader.ready();
    let (b, _) = leader.propose(&b"b"[..]).unwrap();
    let rd_b = leader.ready();
    assert_eq!(
        rd_b.entries.iter().map(|e| e.index).collect::<Vec<_>>(),
        vec![b],
        "each entry is handed out once"
    );
    for p in [2, 3] {
        leader.step(msg(p, 1, term, ack(b)));
    }
    write(&mut leader, &rd_a);
    leader.on_persisted(a, term);
    assert_eq!(
        committed_indexes(&leader.ready()),
        vec![a],
        "only what is durable here is applied"
    );
    write(&mut leader, &rd_b);
    leader.on_persisted(b, term);
    assert_eq!(committed_indexes(&leader.ready()), vec![b]);
}

#[test]
fn a_mark_for_entries_replaced_since_acknowledges_nothing() {
    // A follower gets entries 2..3 of term 1, then, before that write completes, a new
    // leader of term 2 replaces entry 3.
    let mut f = lone_node(2, &ids(3), MemStorage::new(), plain);
    f.step(msg(
        1,
        2,
        1,
        append(0, 0, entries_with_terms(&[1, 1, 1]), 0),
    ));
    let rd1 = f.ready();
    assert_eq!(rd1.persisted_mark(), Some((3, 1)));
    let mut replacing = entries_with_terms(&[1, 1, 2]);
    replacing.drain(..2);
    f.step(msg(3, 2, 2, append(2, 1, replacing, 0)));
    let rd2 = f.ready();
    assert_eq!(rd2.persisted_mark(), Some((3, 2)));
    write(&mut f, &rd1);
    f.on_persisted(3, 1);
    assert_eq!(
        f.status().persisted_index,
        0,
        "entry 3 of term 1 is no longer in the log: nothing may count as durable past what is still unwritten"
    );
    write(&mut f, &rd2);
    f.on_persisted(3, 2);
    assert_eq!(f.status().persisted_index, 3);
}

#[test]
fn on_applied_acknowledges_only_entries_handed_out() {
    let mut leader = leader();
    let (index, term) = leader.propose(&b"x"[..]).unwrap();
    let rd = leader.ready();
    write(&mut leader, &rd);
    leader.on_persisted(index, term);
    for p in [2, 3] {
        leader.step(msg(p, 1, term, ack(index)));
    }
    leader.on_applied(index);
    assert_eq!(
        leader.status().applied,
        1,
        "an entry not yet handed out for applying cannot be applied"
    );
    let rd = leader.ready();
    assert_eq!(committed_indexes(&rd), vec![index]);
    leader.on_applied(index);
    assert_eq!(leader.status().applied, index);
}

/// Commits `payloads` on a leader (its own write acknowledged, both followers' acks
/// received) and returns their indexes.
fn commit_all(leader: &mut Node<MemStorage>, payloads: &[&[u8]]) -> Vec<LogIndex> {
    let mut indexes = Vec::new();
    for p in payloads {
        indexes.push(leader.propose(p.to_vec()).unwrap().0);
    }
    let term = leader.term();
    let last = *indexes.last().unwrap();
    let rd = leader.ready();
    write(leader, &rd);
    leader.on_persisted(last, term);
    for p in [2, 3] {
        leader.step(msg(p, 1, term, ack(last)));
    }
    assert_eq!(leader.commit_index(), last);
    indexes
}

#[test]
fn committed_entries_wait_while_too_many_bytes_handed_out_are_unapplied() {
    let big = [0u8; 100];
    let size = raft_core::Entry::normal(1, 1, big.to_vec()).size();
    let mut leader = leader_with_noop_committed(|c| {
        plain(c);
        c.max_committed_bytes_per_ready = 1; // one entry per Ready
        c.max_unapplied_bytes = 2 * size;
    });
    let indexes = commit_all(&mut leader, &[&big, &big, &big, &big]);
    // Two entries' bytes reach the limit: the third waits.
    let mut handed = Vec::new();
    while leader.has_ready() {
        handed.extend(committed_indexes(&leader.ready()));
    }
    assert_eq!(handed, indexes[..2].to_vec());
    assert!(
        !leader.has_ready(),
        "blocked entries are not reported ready"
    );
    // Applying the first frees its bytes: the third goes, and the fourth waits again.
    leader.on_applied(indexes[0]);
    assert!(leader.has_ready());
    assert_eq!(committed_indexes(&leader.ready()), vec![indexes[2]]);
    assert!(!leader.has_ready());
}

#[test]
fn one_batch_goes_when_nothing_waits_however_large() {
    let mut leader = leader_with_noop_committed(|c| {
        plain(c);
        c.max_unapplied_bytes = 10;
    });
    let big = [0u8; 100];
    let indexes = commit_all(&mut leader, &[&big, &big]);
    let rd = leader.ready();
    assert_eq!(committed_indexes(&rd), indexes, "one batch, over the limit");
    let (index, term) = leader.propose(&b"y"[..]).unwrap();
    let rd = leader.ready();
    write(&mut leader, &rd);
    leader.on_persisted(index, term);
    for p in [2, 3] {
        leader.step(msg(p, 1, term, ack(index)));
    }
    assert!(
        leader.ready().committed_entries.is_empty(),
        "the next waits for the first to be applied"
    );
    // Applying only part of a batch frees nothing.
    leader.on_applied(indexes[0]);
    assert!(leader.ready().committed_entries.is_empty());
    leader.on_applied(indexes[1]);
    assert_eq!(committed_indexes(&leader.ready()), vec![index]);
}

/// Node 1, the cluster's only voter, with node 2 as its learner.
fn only_voter() -> Node<MemStorage> {
    lone_node(1, &[1], MemStorage::new(), |c| {
        plain(c);
        c.learners = vec![2];
    })
}

#[test]
fn a_leader_elected_by_its_own_vote_sends_nothing_of_its_term_until_the_term_is_durable() {
    // No vote request made its new term durable before it won: were its appends to leave
    // before its first write, a crash could lose the term after the learner heard it.
    let mut n = only_voter();
    n.campaign();
    assert_eq!(n.role(), raft_core::Role::Leader);
    let rd = n.ready();
    assert_eq!(rd.hard_state.map(|h| (h.term, h.vote)), Some((1, Some(1))));
    assert!(rd.messages.is_empty(), "left at once: {:?}", rd.messages);
    assert_eq!(appends_to(&rd.persisted_messages, 2), 1);
    let noop = rd.persisted_mark().unwrap();
    // While that write is in progress, the learner's acknowledgement frees the next
    // append: it waits too.
    let (index, term) = n.propose(&b"x"[..]).unwrap();
    n.step(msg(2, 1, 1, ack(noop.0)));
    let rd2 = n.ready();
    assert!(rd2.messages.is_empty(), "left at once: {:?}", rd2.messages);
    assert_eq!(appends_to(&rd2.persisted_messages, 2), 1);
    // Once its first entry, and with it the term, is durable, appends leave at once
    // again (the second write may still be in progress).
    write(&mut n, &rd);
    n.on_persisted(noop.0, noop.1);
    n.propose(&b"y"[..]).unwrap();
    let rd3 = n.ready();
    assert_eq!(appends_to(&rd3.messages, 2), 1, "{rd3:?}");
    write(&mut n, &rd2);
    n.on_persisted(index, term);
}

#[test]
fn a_leader_elected_by_other_voters_sends_its_first_appends_at_once() {
    // Its vote requests left only once its term was durable.
    let mut n = lone_node(1, &ids(3), MemStorage::new(), plain);
    make_leader(&mut n);
    let rd = n.ready();
    assert_eq!(appends_to(&rd.messages, 2), 1, "{rd:?}");
}

#[test]
fn a_received_snapshot_is_announced_until_a_ready_hands_it_out() {
    let mut n = lone_node(2, &[1, 2, 3], MemStorage::new(), plain);
    assert!(!n.has_snapshot_to_install(), "nothing received yet");
    let meta = raft_core::SnapshotMeta {
        index: 5,
        term: 1,
        membership: raft_core::Membership::new([1, 2, 3]),
    };
    n.step(msg(1, 2, 1, MessageBody::InstallSnapshot { meta }));
    assert!(n.has_snapshot_to_install());
    // Stepping and ticking meanwhile keep it announced.
    n.tick();
    assert!(n.has_snapshot_to_install());
    let rd = n.ready();
    assert_eq!(rd.snapshot.as_ref().map(|m| m.index), Some(5));
    assert!(!n.has_snapshot_to_install(), "handed out");
    write(&mut n, &rd);
    n.advance();
    assert!(!n.has_snapshot_to_install());
}
