//! Membership changes (chapter 4 of the Raft thesis) and leadership transfer (§3.10):
//! learners, single-server and joint changes, removal of any member including the leader,
//! configurations in snapshots and across restarts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::*;
use raft_core::{
    ConfChange, ConfChangeError, Entry, EntryKind, MemStorage, Membership, MessageBody, NodeId,
    ProposeError, Role, TransferError,
};

fn learner(id: NodeId) -> ConfChange {
    ConfChange::AddLearner {
        id,
        context: Bytes::from(format!("node {id}")),
    }
}

fn voter(id: NodeId) -> ConfChange {
    ConfChange::AddVoter {
        id,
        context: Bytes::new(),
    }
}

fn set(ids: &[NodeId]) -> std::collections::BTreeSet<NodeId> {
    ids.iter().copied().collect()
}

/// Proposes `changes` on `leader` and lets the cluster settle; returns the entry's index.
fn change(c: &mut Cluster, leader: NodeId, changes: &[ConfChange]) -> u64 {
    let (index, _) = c.node_mut(leader).propose_conf_change(changes).unwrap();
    c.settle();
    index
}

fn commits(c: &mut Cluster, leader: NodeId, data: &'static [u8]) -> bool {
    let (index, _) = c.node_mut(leader).propose(data).unwrap();
    c.settle();
    c.node(leader).commit_index() >= index
}

#[test]
fn a_learner_receives_the_log_but_never_counts_towards_a_majority() {
    let mut c = Cluster::new(2);
    c.elect(1);
    c.add_joining(3, &[1, 2], |_| {});
    change(&mut c, 1, &[learner(3)]);
    assert!(commits(&mut c, 1, b"a"));
    assert_eq!(
        c.node(3).last_index(),
        c.node(1).last_index(),
        "3 holds the log"
    );
    assert_eq!(c.node(1).membership().learners, set(&[3]));
    assert_eq!(
        c.node(3).membership().context.get(&3),
        Some(&Bytes::from("node 3")),
        "the member's data travels with the configuration"
    );
    c.isolate(2);
    assert!(
        !commits(&mut c, 1, b"b"),
        "1 and learner 3 are no majority of 1,2"
    );
}

#[test]
fn a_promoted_learner_counts() {
    let mut c = Cluster::new(2);
    c.elect(1);
    c.add_joining(3, &[1, 2], |_| {});
    change(&mut c, 1, &[learner(3)]);
    change(&mut c, 1, &[ConfChange::Promote { id: 3 }]);
    assert_eq!(c.node(3).membership().voters, set(&[1, 2, 3]));
    c.isolate(2);
    assert!(commits(&mut c, 1, b"a"), "1 and 3 are a majority of 1,2,3");
}

#[test]
fn a_learner_never_campaigns() {
    let mut c = Cluster::new(2);
    c.elect(1);
    c.add_joining(3, &[1, 2], |_| {});
    change(&mut c, 1, &[learner(3)]);
    c.isolate(3);
    let term = c.node(3).term();
    for _ in 0..100 {
        c.node_mut(3).tick();
        c.node_mut(3).campaign();
        c.settle();
    }
    assert_eq!((c.node(3).role(), c.node(3).term()), (Role::Follower, term));
}

#[test]
fn a_joint_configuration_needs_a_majority_of_the_old_voters_and_of_the_new() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.add_joining(4, &[1, 2, 3], |_| {});
    c.add_joining(5, &[1, 2, 3], |_| {});
    c.isolate(2);
    c.isolate(3);
    c.cut
        .retain(|&(a, b)| !matches!((a, b), (1, 4) | (4, 1) | (1, 5) | (5, 1)));
    let (index, _) = c
        .node_mut(1)
        .propose_conf_change(&[voter(4), voter(5)])
        .unwrap();
    c.settle();
    let joint = c.node(1).membership().clone();
    assert_eq!(
        (joint.voters, joint.outgoing),
        (set(&[1, 2, 3, 4, 5]), set(&[1, 2, 3]))
    );
    assert_eq!(
        c.node(4).last_index(),
        index,
        "4 and 5 hold the joint entry"
    );
    assert!(
        c.node(1).commit_index() < index,
        "1, 4 and 5 are a majority of the new voters only"
    );
    assert_eq!(
        c.node_mut(1).propose_conf_change(&[learner(6)]),
        Err(ConfChangeError::InProgress)
    );
    c.heal();
    // The appends lost while 2 and 3 were cut off are sent again once the leader sees
    // them stall (an election timeout).
    let ticks = c.node(1).config().election_ticks + 2;
    c.tick_all(ticks);
    for id in 1..=5 {
        let m = c.node(id).membership();
        assert!(!m.is_joint(), "node {id} left the joint configuration");
        assert_eq!(m.voters, set(&[1, 2, 3, 4, 5]), "node {id}");
    }
    assert!(
        c.node(1).commit_index() > index,
        "the leave entry committed"
    );
    assert!(!c.node(1).conf_change_in_progress());
}

#[test]
fn one_change_at_a_time_and_only_once_the_leader_committed_in_its_term() {
    let mut c = Cluster::new(3);
    c.node_mut(1).campaign();
    c.settle_filtered(|m| !matches!(m.body, MessageBody::AppendEntries { .. }));
    assert_eq!(c.node(1).role(), Role::Leader);
    assert_eq!(
        c.node_mut(1).propose_conf_change(&[learner(4)]),
        Err(ConfChangeError::LeaderNotReady)
    );
    c.settle();
    c.tick_all(1);
    c.node_mut(1).propose_conf_change(&[learner(4)]).unwrap();
    assert_eq!(
        c.node_mut(1).propose_conf_change(&[learner(5)]),
        Err(ConfChangeError::InProgress)
    );
    assert!(c.node(1).conf_change_in_progress());
    c.settle();
    c.node_mut(1).propose_conf_change(&[learner(5)]).unwrap();
    assert_eq!(
        c.node_mut(2).propose_conf_change(&[learner(6)]),
        Err(ConfChangeError::NotLeader { leader: Some(1) })
    );
}

#[test]
fn a_removed_leader_steps_down_once_its_removal_commits_and_hands_over() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let (index, _) = c
        .node_mut(1)
        .propose_conf_change(&[ConfChange::Remove { id: 1 }])
        .unwrap();
    // Until the removal commits, 1 leads a cluster it is no longer a voter of.
    assert_eq!(c.node(1).role(), Role::Leader);
    assert_eq!(c.node(1).membership().voters, set(&[2, 3]));
    c.settle();
    assert_ne!(c.node(1).role(), Role::Leader);
    let leaders = c.leaders();
    assert!(
        leaders == [2] || leaders == [3],
        "a voter was handed leadership without waiting for a timeout: {leaders:?}"
    );
    assert!(c.node(leaders[0]).commit_index() >= index);
    let term = c.node(1).term();
    c.tick_all(100);
    assert_eq!(c.leaders(), leaders, "the removed node never disrupts");
    assert_eq!(c.node(1).role(), Role::Follower);
    assert!(commits(&mut c, leaders[0], b"after"));
    assert!(c.node(leaders[0]).term() <= term + 1);
}

#[test]
fn a_leader_removed_through_a_joint_configuration_steps_down_once_it_is_left() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.add_joining(4, &[1, 2, 3], |_| {});
    change(&mut c, 1, &[ConfChange::Remove { id: 1 }, voter(4)]);
    c.tick_all(2);
    let leaders = c.leaders();
    assert_eq!(leaders.len(), 1);
    assert_ne!(leaders[0], 1);
    for id in 2..=4 {
        let m = c.node(id).membership();
        assert_eq!((m.voters.clone(), m.is_joint()), (set(&[2, 3, 4]), false));
    }
}

#[test]
fn a_removed_member_that_missed_its_removal_cannot_disrupt_the_cluster() {
    let mut c = Cluster::new_with(3, plain);
    c.elect(1);
    c.isolate(3);
    change(&mut c, 1, &[ConfChange::Remove { id: 3 }]);
    c.heal();
    let term = c.node(1).term();
    // 3 never heard of its removal: it campaigns in ever higher terms, and is ignored.
    for _ in 0..5 {
        c.node_mut(3).campaign();
        c.settle_filtered(|m| m.from == 3);
    }
    assert!(c.node(3).term() > term);
    assert_eq!((c.node(1).role(), c.node(1).term()), (Role::Leader, term));
    assert_eq!(c.node(2).term(), term);
}

#[test]
fn leadership_moves_to_the_chosen_voter_at_once_despite_the_leader_lease() {
    let mut c = Cluster::new(3);
    c.elect(1);
    assert!(c.node(2).config().check_quorum && c.node(2).config().pre_vote);
    let term = c.node(1).term();
    c.node_mut(1).transfer_leadership(3).unwrap();
    c.settle();
    assert_eq!(c.leaders(), vec![3]);
    assert_eq!(c.node(3).term(), term + 1);
    assert!(commits(&mut c, 3, b"x"));
}

#[test]
fn a_transfer_waits_for_the_target_to_catch_up_and_refuses_proposals_meanwhile() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(3);
    for _ in 0..5 {
        assert!(commits(&mut c, 1, b"while 3 is away"));
    }
    c.node_mut(1).transfer_leadership(3).unwrap();
    assert_eq!(c.node(1).transfer_target(), Some(3));
    assert_eq!(
        c.node_mut(1).propose(&b"y"[..]),
        Err(ProposeError::TransferInProgress { to: 3 })
    );
    assert_eq!(
        c.node_mut(1).propose_conf_change(&[learner(4)]),
        Err(ConfChangeError::TransferInProgress { to: 3 })
    );
    c.heal();
    c.tick_all(1);
    assert_eq!(c.leaders(), vec![3], "3 caught up, then took over");
    assert_eq!(c.node(3).last_index(), c.node(1).last_index());
}

#[test]
fn a_transfer_that_does_not_complete_within_an_election_timeout_is_abandoned() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(3);
    c.node_mut(1).transfer_leadership(3).unwrap();
    let ticks = c.node(1).config().election_ticks;
    for _ in 0..ticks - 1 {
        c.node_mut(1).tick();
        c.settle();
        assert!(c.node_mut(1).propose(&b"no"[..]).is_err());
    }
    c.node_mut(1).tick();
    c.settle();
    assert_eq!(c.node(1).transfer_target(), None);
    assert!(commits(&mut c, 1, b"resumed"));
    assert_eq!(c.leaders(), vec![1]);
}

#[test]
fn a_transfer_goes_only_to_a_voter_and_only_from_the_leader() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.add_joining(4, &[1, 2, 3], |_| {});
    change(&mut c, 1, &[learner(4)]);
    assert_eq!(
        c.node_mut(1).transfer_leadership(4),
        Err(TransferError::NotAVoter(4))
    );
    assert_eq!(
        c.node_mut(1).transfer_leadership(9),
        Err(TransferError::NotAVoter(9))
    );
    assert_eq!(
        c.node_mut(2).transfer_leadership(3),
        Err(TransferError::NotLeader { leader: Some(1) })
    );
    assert_eq!(c.node(1).transfer_candidate().map(|v| v != 4), Some(true));
    c.node_mut(1).transfer_leadership(1).unwrap();
    assert_eq!(c.node(1).transfer_target(), None);
}

#[test]
fn a_restarted_node_finds_its_configuration_in_its_log() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.add_joining(4, &[1, 2, 3], |_| {});
    change(&mut c, 1, &[learner(4)]);
    change(&mut c, 1, &[ConfChange::Promote { id: 4 }]);
    let expected = c.node(1).membership().clone();
    for id in [2, 4] {
        c.restart(id);
        assert_eq!(c.node(id).membership(), &expected, "node {id}");
    }
}

#[test]
fn a_snapshot_carries_the_configuration_of_its_index() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.add_joining(4, &[1, 2, 3], |_| {});
    change(&mut c, 1, &[learner(4)]);
    let at = c.node(1).commit_index();
    let before = c.node(1).membership_at(at).unwrap().clone();
    assert_eq!(before.learners, set(&[4]));
    // A later change is in the log but not part of a snapshot up to `at`.
    change(&mut c, 1, &[ConfChange::Promote { id: 4 }]);
    let store = c.node_mut(1).storage_mut();
    store.create_snapshot(at, before.clone()).unwrap();
    store.compact(at).unwrap();
    let snap = raft_core::LogStore::snapshot_meta(c.node(1).storage()).unwrap();
    assert_eq!(snap.membership, before);
    c.restart(1);
    assert_eq!(c.node(1).membership().voters, set(&[1, 2, 3, 4]));
    assert_eq!(c.node(1).membership_at(at), Some(&before));
}

#[test]
fn a_configuration_whose_entry_is_overwritten_stops_counting() {
    let mut n = lone_node(2, &[1, 2, 3], MemStorage::new(), plain);
    let mut m = Membership::new([1, 2, 3]);
    m.learners.insert(9);
    let config = Entry {
        term: 1,
        index: 2,
        kind: EntryKind::Config,
        data: m.encode(),
    };
    n.step(msg(
        1,
        2,
        1,
        append(0, 0, vec![Entry::noop(1, 1), config], 0),
    ));
    drain(&mut n);
    assert!(n.membership().is_learner(9), "in effect once in the log");
    n.step(msg(3, 2, 2, append(1, 1, vec![Entry::noop(2, 2)], 0)));
    drain(&mut n);
    assert_eq!(n.membership(), &Membership::new([1, 2, 3]), "overwritten");
}

#[test]
fn a_malformed_configuration_entry_changes_nothing() {
    let mut n = lone_node(2, &[1, 2, 3], MemStorage::new(), plain);
    let bad = Entry {
        term: 1,
        index: 1,
        kind: EntryKind::Config,
        data: Bytes::from_static(b"\xff\xff\xff"),
    };
    n.step(msg(1, 2, 1, append(0, 0, vec![bad], 0)));
    drain(&mut n);
    assert_eq!(n.membership(), &Membership::new([1, 2, 3]));
    assert_eq!(n.status().rejected_messages, 1);
}

#[test]
fn a_node_behind_on_configurations_answers_an_unknown_candidate_only_if_its_log_is_ahead() {
    let vote = |last_log_index, last_log_term| MessageBody::RequestVote {
        last_log_index,
        last_log_term,
        transfer: false,
    };
    let mut n = lone_node(2, &[1, 2, 3], MemStorage::new(), plain);
    n.step(msg(1, 2, 1, append(0, 0, vec![Entry::noop(1, 1)], 0)));
    drain(&mut n);
    // Node 9 is unknown here and its log is no longer than this node's: ignored.
    n.step(msg(9, 2, 5, vote(1, 1)));
    assert_eq!(
        n.term(),
        1,
        "an unknown candidate that is not ahead is ignored"
    );
    assert!(drain(&mut n).is_empty());
    // Ahead: this node must be behind on configurations too, and may be a vote 9 needs.
    n.step(msg(9, 2, 5, vote(3, 1)));
    let out = drain(&mut n);
    assert_eq!(n.term(), 5);
    assert!(
        out.iter()
            .any(|m| m.to == 9
                && matches!(m.body, MessageBody::RequestVoteResponse { granted: true }))
    );
}

/// Whether `m` carries entry `index` (a filter that holds that entry back).
fn carries(m: &raft_core::Message, index: u64) -> bool {
    matches!(&m.body, MessageBody::AppendEntries { entries, .. }
        if entries.iter().any(|e| e.index == index))
}

/// An `n`-node cluster whose leader 1 removed itself, the removal committed everywhere, and
/// one more entry that reached no one. Returns the cluster, the removal's index and that
/// entry's.
fn removed_leader_ahead_of_everyone(n: u64) -> (Cluster, u64, u64) {
    let mut c = Cluster::new(n);
    c.elect(1);
    let (removal, _) = c
        .node_mut(1)
        .propose_conf_change(&[ConfChange::Remove { id: 1 }])
        .unwrap();
    // The removal reaches everyone; the entry after it reaches nobody yet.
    let msgs = c.take_messages();
    let (data, _) = c.node_mut(1).propose(&b"after the removal"[..]).unwrap();
    for m in msgs {
        c.deliver(m);
    }
    c.settle_filtered(|m| !carries(m, data));
    assert!(c.node(1).commit_index() >= removal, "the removal committed");
    (c, removal, data)
}

#[test]
fn a_removed_leader_whose_successor_lags_hands_over_through_a_transfer() {
    let (mut c, _, data) = removed_leader_ahead_of_everyone(5);
    // No voter holds the leader's last entry: it stays leader, hands over by a transfer,
    // and takes no proposal meanwhile.
    assert_eq!(c.node(1).role(), Role::Leader);
    let to = c
        .node(1)
        .transfer_target()
        .expect("a transfer to the best voter");
    assert!(matches!(
        c.node_mut(1).propose(&b"x"[..]),
        Err(ProposeError::TransferInProgress { .. })
    ));
    c.tick_all(1);
    assert_eq!(
        c.leaders(),
        vec![to],
        "the successor caught up and took over"
    );
    assert!(c.node(to).commit_index() >= data);
    assert_eq!(c.node(1).role(), Role::Follower);
}

#[test]
fn a_removed_leader_steps_down_when_its_handover_times_out() {
    let (mut c, _, data) = removed_leader_ahead_of_everyone(3);
    assert!(c.node(1).transfer_target().is_some());
    // The successor never gets the last entry: after an election timeout the removed
    // leader steps down anyway.
    let ticks = c.node(1).config().election_ticks;
    for _ in 0..ticks {
        c.node_mut(1).tick();
        c.settle_filtered(|m| !carries(m, data));
    }
    assert_eq!(c.node(1).role(), Role::Follower);
}

#[test]
fn an_installed_snapshot_brings_its_configuration() {
    let mut n = lone_node(2, &[1, 2, 3], MemStorage::new(), plain);
    let mut m = Membership::new([1, 2, 3]);
    m.learners.insert(9);
    let meta = raft_core::SnapshotMeta {
        index: 5,
        term: 1,
        membership: m.clone(),
    };
    n.step(msg(1, 2, 1, MessageBody::InstallSnapshot { meta }));
    drain(&mut n);
    assert_eq!(n.membership(), &m);
    assert_eq!(n.membership_at(5), Some(&m));
}

#[test]
fn a_new_member_is_probed_from_the_end_of_the_leaders_log() {
    let mut c = Cluster::new(3);
    c.elect(1);
    assert!(commits(&mut c, 1, b"a"));
    c.add_joining(4, &[1, 2, 3], |_| {});
    c.node_mut(1).propose_conf_change(&[learner(4)]).unwrap();
    let last = c.node(1).last_index();
    let first_to_4 = c
        .take_messages()
        .into_iter()
        .find(|m| m.to == 4)
        .expect("the leader contacts its new member at once");
    assert!(
        matches!(first_to_4.body, MessageBody::AppendEntries { prev_index, ref entries, .. }
            if prev_index == last && entries.is_empty()),
        "{first_to_4:?}"
    );
}

#[test]
fn a_transfer_to_a_voter_that_a_change_removes_is_abandoned() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.add_joining(4, &[1, 2, 3], |_| {});
    c.isolate(3);
    c.node_mut(1)
        .propose_conf_change(&[ConfChange::Remove { id: 3 }, voter(4)])
        .unwrap();
    // 3 still votes, as an outgoing voter of the joint configuration.
    c.node_mut(1).transfer_leadership(3).unwrap();
    c.settle();
    let m = c.node(1).membership().clone();
    assert_eq!((m.voters.clone(), m.is_joint()), (set(&[1, 2, 4]), false));
    assert_eq!(c.node(1).transfer_target(), None, "3 no longer votes");
    assert!(commits(&mut c, 1, b"taken again"));
}

#[test]
fn asking_again_keeps_the_transfer_and_asking_for_another_voter_redirects_it() {
    // Without check-quorum, so that the cut-off leader stays leader.
    let mut c = Cluster::new_with(3, plain);
    c.elect(1);
    c.isolate(1);
    let ticks = c.node(1).config().election_ticks;
    c.node_mut(1).transfer_leadership(3).unwrap();
    for _ in 0..ticks / 2 {
        c.node_mut(1).tick();
    }
    c.node_mut(1).transfer_leadership(3).unwrap();
    for _ in ticks / 2..ticks {
        c.node_mut(1).tick();
    }
    assert_eq!(
        c.node(1).transfer_target(),
        None,
        "asking again did not restart the clock"
    );
    c.node_mut(1).transfer_leadership(3).unwrap();
    c.node_mut(1).transfer_leadership(2).unwrap();
    assert_eq!(c.node(1).transfer_target(), Some(2));
}

/// Node 3, a learner of voters 1 and 2 (as a joining node starts), without pre-vote or
/// check-quorum, on `store`.
fn lone_learner(store: MemStorage) -> raft_core::Node<MemStorage> {
    let mut cfg = config(3, &[1, 2]);
    cfg.learners = vec![3];
    plain(&mut cfg);
    raft_core::Node::new(cfg, store).unwrap()
}

#[test]
fn a_learner_whose_addition_is_not_yet_committed_does_not_campaign() {
    let mut n = lone_learner(MemStorage::new());
    let mut m = Membership::new([1, 2]);
    m.learners.insert(3);
    assert_eq!(
        n.membership(),
        &m,
        "it starts as a learner of the given voters"
    );
    let add = Entry {
        term: 1,
        index: 1,
        kind: EntryKind::Config,
        data: m.encode(),
    };
    n.step(msg(1, 3, 1, append(0, 0, vec![add], 0)));
    drain(&mut n);
    assert_eq!(
        n.commit_index(),
        0,
        "its addition is in its log, not committed"
    );
    n.campaign();
    assert_eq!(n.role(), Role::Follower);
}

#[test]
fn a_voter_that_knows_its_removal_is_committed_does_not_campaign_even_before_applying_it() {
    let mut n = lone_node(3, &[1, 2, 3], MemStorage::new(), plain);
    let removal = Entry {
        term: 1,
        index: 1,
        kind: EntryKind::Config,
        data: Membership::new([1, 2]).encode(),
    };
    n.step(msg(1, 3, 1, append(0, 0, vec![removal], 1)));
    assert_eq!(n.commit_index(), 1);
    n.campaign();
    assert_eq!(
        n.role(),
        Role::Follower,
        "nothing applied yet, but the removal is committed"
    );
    drain(&mut n);
    n.campaign();
    assert_eq!(n.role(), Role::Follower);
}

/// `node`'s output answers the stale leader `to` with an append response in `term`.
fn assert_tells_term(node: &mut raft_core::Node<MemStorage>, to: NodeId, term: u64) {
    let out = drain(node);
    assert!(
        out.iter().any(|m| m.to == to
            && m.term == term
            && matches!(m.body, MessageBody::AppendEntriesResponse { .. })),
        "{out:?}"
    );
}

#[test]
fn without_pre_vote_or_check_quorum_voters_and_learners_tell_a_stale_leader_its_term_is_over() {
    // A voter: its own campaigns would end the stale leader's term too, but only if they
    // reach it and can succeed (a voter behind on configurations may campaign among members
    // that no longer run); answering does at once what they would do (unlike etcd, which
    // leaves it to the campaigns).
    let mut voter = lone_node(2, &[1, 2, 3], storage_with(&[1], 2, None), plain);
    voter.step(msg(1, 2, 1, append(1, 1, vec![], 1)));
    assert_tells_term(&mut voter, 1, 2);
    // A learner never campaigns: answering is its only way to end the stale term.
    let mut learner = lone_learner(storage_with(&[1], 2, None));
    learner.step(msg(1, 3, 1, append(1, 1, vec![], 1)));
    assert_tells_term(&mut learner, 1, 2);
}

#[test]
fn a_candidate_learns_the_newer_term_of_a_vote_request_from_a_node_its_configuration_omits() {
    let request = |term| {
        msg(
            7,
            2,
            term,
            MessageBody::RequestVote {
                last_log_index: 0,
                last_log_term: 0,
                transfer: false,
            },
        )
    };
    // A candidate of term 3 (configuration {1, 2, 3}) hears from node 7, removed or not yet
    // known, campaigning in term 9 with a shorter log: no vote, but the term is learned.
    let mut candidate = lone_node(2, &[1, 2, 3], storage_with(&[1], 2, None), plain);
    candidate.campaign();
    drain(&mut candidate);
    assert_eq!((candidate.role(), candidate.term()), (Role::Candidate, 3));
    candidate.step(request(3));
    assert_eq!(
        (candidate.role(), candidate.term()),
        (Role::Candidate, 3),
        "a request in its own term teaches nothing"
    );
    candidate.step(request(9));
    assert_eq!((candidate.role(), candidate.term()), (Role::Follower, 9));
    assert!(
        !drain(&mut candidate)
            .iter()
            .any(|m| matches!(m.body, MessageBody::RequestVoteResponse { granted: true })),
        "no vote for a node outside the configuration"
    );
    // A follower (with or without a leader) ignores it as before: a removed member
    // cannot move the cluster to new terms.
    let mut follower = lone_node(2, &[1, 2, 3], storage_with(&[1], 2, None), plain);
    follower.step(request(9));
    assert_eq!((follower.role(), follower.term()), (Role::Follower, 2));
    assert!(drain(&mut follower).is_empty());
}

#[test]
fn without_pre_vote_or_check_quorum_a_voter_answers_a_stale_leader_its_configuration_omits() {
    // Node 2 fell behind at a newer term with an old configuration {1, 2, 3}; the leader
    // of term 1, node 7, joined later. Node 2's own campaigns go to 1 and 3 only, so they
    // would never end node 7's term: node 2 must tell it the newer term.
    let mut voter = lone_node(2, &[1, 2, 3], storage_with(&[1], 2, None), plain);
    voter.step(msg(7, 2, 1, append(1, 1, vec![], 1)));
    assert_tells_term(&mut voter, 7, 2);
    voter.step(msg(
        7,
        2,
        1,
        raft_core::MessageBody::Heartbeat {
            commit: 1,
            read_seq: 0,
        },
    ));
    assert!(
        drain(&mut voter).iter().any(|m| m.to == 7 && m.term == 2),
        "a heartbeat is answered the same way"
    );
}

#[test]
fn a_snapshot_without_a_valid_configuration_falls_back_to_the_initial_one() {
    let mut store = MemStorage::new();
    store.apply_snapshot(&raft_core::SnapshotMeta {
        index: 4,
        term: 1,
        membership: Membership::default(),
    });
    let n = lone_node(2, &[1, 2, 3], store, |c| c.applied = 4);
    assert_eq!(n.membership(), &Membership::new([1, 2, 3]));
}
