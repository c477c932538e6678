//! The runtime's own tests: membership bookkeeping and what a step-down or a write in
//! progress means for callers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use raft_core::{Entry, EntryKind, MessageBody, Role, Term};

use super::*;
use crate::commands::Committed;
use crate::config::Peer;
use crate::limits::Limits;
use crate::state_machine::ReplicatedLog;

fn unused_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Node 1 of {1, 2, 3}, built but not running: the test steps it by hand, as the
/// runtime loop would, with peers that never answer on their own.
async fn runtime(dir: &std::path::Path) -> Runtime<ReplicatedLog> {
    runtime_with(dir, |_| {}).await
}

async fn runtime_with(
    dir: &std::path::Path,
    tweak: impl FnOnce(&mut NodeConfig),
) -> Runtime<ReplicatedLog> {
    let peers: BTreeMap<u64, Peer> = (1..=3)
        .map(|id| {
            let p = Peer {
                raft: unused_addr(),
                api: None,
            };
            (id, p)
        })
        .collect();
    let mut cfg = NodeConfig::new(1, "t", peers, dir);
    tweak(&mut cfg);
    let (_tx, rx) = mpsc::channel(16);
    let (leader_tx, _) = crate::leader::channel();
    let (rt, _, _) = build(
        cfg,
        ReplicatedLog::new(),
        rx,
        leader_tx,
        AddressBook::default(),
        crate::Environment::real(),
    )
    .await
    .unwrap();
    rt
}

fn msg(from: u64, term: Term, body: MessageBody) -> Message {
    Message {
        from,
        to: 1,
        term,
        body,
    }
}

#[tokio::test]
async fn a_joining_node_is_not_told_it_was_removed_by_configurations_from_before_it_joined() {
    let dir = tempfile::tempdir().unwrap();
    let mut rt = runtime_with(dir.path(), |c| {
        c.learners.insert(1);
    })
    .await;
    assert!(!rt.seen_as_member);
    // The log replays a configuration from before node 1 joined, then the one adding it.
    let before = raft_core::Membership::new([2, 3]);
    let mut with_1 = before.clone();
    with_1.learners.insert(1);
    let entries = [
        Entry {
            term: 1,
            index: 1,
            kind: EntryKind::Config,
            data: before.encode(),
        },
        Entry {
            term: 1,
            index: 2,
            kind: EntryKind::Config,
            data: with_1.encode(),
        },
    ];
    rt.on_message(msg(
        2,
        1,
        MessageBody::AppendEntries {
            prev_index: 0,
            prev_term: 0,
            entries: entries[..1].to_vec(),
            commit: 1,
        },
    ));
    rt.process_ready().await.unwrap();
    assert_eq!(rt.node.membership(), &before);
    assert!(
        !rt.seen_as_member,
        "not a member yet, so not removed either"
    );
    rt.on_message(msg(
        2,
        1,
        MessageBody::AppendEntries {
            prev_index: 1,
            prev_term: 1,
            entries: entries[1..].to_vec(),
            commit: 2,
        },
    ));
    rt.process_ready().await.unwrap();
    assert!(rt.seen_as_member);
}

#[tokio::test]
async fn a_node_whose_removal_commits_stays_reachable_for_its_last_messages() {
    let dir = tempfile::tempdir().unwrap();
    let mut rt = runtime(dir.path()).await;
    // Leader 2 removes itself; the entry arrives committed.
    let without_2 = raft_core::Membership::new([1, 3]);
    let entry = Entry {
        term: 1,
        index: 1,
        kind: EntryKind::Config,
        data: without_2.encode(),
    };
    rt.on_message(msg(
        2,
        1,
        MessageBody::AppendEntries {
            prev_index: 0,
            prev_term: 0,
            entries: vec![entry],
            commit: 1,
        },
    ));
    rt.process_ready().await.unwrap();
    assert_eq!(
        (rt.node.membership(), rt.node.commit_index()),
        (&without_2, 1)
    );
    // Its TimeoutNow handing leadership over may still be on its way.
    let peers = rt.transport.peers();
    assert!(
        peers.contains_key(&2),
        "the removed leader is cut off too soon"
    );
    assert!(peers.contains_key(&3));
    assert_eq!(
        rt.members().len(),
        2,
        "but it is no longer listed as a member"
    );
}

/// Node 1 made leader of term `t` by node 2's votes, with one submitted entry proposed
/// (its write handed to the write pipeline, not acknowledged to the core); returns the
/// term, the entry's index and the submit's outcome.
async fn leader_with_one_submit(
    rt: &mut Runtime<ReplicatedLog>,
) -> (
    Term,
    LogIndex,
    oneshot::Receiver<Result<Committed<LogIndex>, Error>>,
) {
    rt.node.campaign();
    rt.process_ready().await.unwrap();
    let t = rt.node.term() + 1;
    rt.on_message(msg(2, t, MessageBody::PreVoteResponse { granted: true }));
    rt.process_ready().await.unwrap();
    rt.on_message(msg(
        2,
        t,
        MessageBody::RequestVoteResponse { granted: true },
    ));
    rt.process_ready().await.unwrap();
    assert_eq!(rt.node.role(), Role::Leader);
    let noop = rt.node.last_index();

    let limits = Limits::new(10, 1 << 20);
    let (reply, outcome) = oneshot::channel();
    rt.on_command(Command::Submit {
        kind: EntryKind::Normal,
        data: bytes::Bytes::from_static(b"x"),
        reply,
        permit: limits.try_acquire(1).unwrap(),
    });
    rt.process_ready().await.unwrap();
    let index = rt.node.last_index();
    assert_eq!(index, noop + 1);
    (t, index, outcome)
}

fn ack(from: u64, t: Term, index: LogIndex) -> Message {
    msg(
        from,
        t,
        MessageBody::AppendEntriesResponse {
            index,
            reject: None,
        },
    )
}

#[tokio::test]
async fn an_entry_committed_in_the_same_turn_as_a_step_down_is_reported_committed() {
    let dir = tempfile::tempdir().unwrap();
    let mut rt = runtime(dir.path()).await;
    let (t, index, outcome) = leader_with_one_submit(&mut rt).await;
    // The leader's own write of the entry is durable before the acknowledgement comes.
    rt.flush_writes().await.unwrap();

    // One turn: node 2 acknowledges the entry (it commits), then node 3 speaks from a
    // newer term (the leader steps down). Both arrive before the Ready is processed.
    rt.on_message(ack(2, t, index));
    rt.on_message(ack(3, t + 1, 0));
    assert_ne!(rt.node.role(), Role::Leader);
    rt.process_ready().await.unwrap();
    // (The entry was handed to the apply task before the step-down: it is answered
    // once applied.)
    rt.wait_applied().await.unwrap();
    match outcome.await.unwrap() {
        Ok(c) => assert_eq!(c.index, index),
        Err(e) => panic!("the entry committed, yet the submit was told: {e}"),
    }
}

#[tokio::test]
async fn an_entry_the_followers_committed_before_the_leaders_own_write_ended_is_reported_committed()
{
    let dir = tempfile::tempdir().unwrap();
    let mut rt = runtime(dir.path()).await;
    let (t, index, outcome) = leader_with_one_submit(&mut rt).await;
    // Both followers acknowledge the entry while the leader's own write of it is still
    // under way: it is committed, but not yet durable here, so it cannot be handed to
    // the apply task. Then the leader steps down, in the same turn.
    rt.on_message(ack(2, t, index));
    rt.on_message(ack(3, t, index));
    assert_eq!(rt.node.commit_index(), index);
    rt.on_message(ack(3, t + 1, 0));
    assert_ne!(rt.node.role(), Role::Leader);
    rt.process_ready().await.unwrap();
    assert!(
        rt.applier.handed() < index,
        "the test needs the entry not handed over"
    );
    // The write ends, the entry is applied: the submit learns it committed.
    rt.flush_writes().await.unwrap();
    while rt.node.has_ready() {
        rt.process_ready().await.unwrap();
    }
    rt.wait_applied().await.unwrap();
    match outcome.await.unwrap() {
        Ok(c) => assert_eq!(c.index, index),
        Err(e) => panic!("the entry committed, yet the submit was told: {e}"),
    }
}
