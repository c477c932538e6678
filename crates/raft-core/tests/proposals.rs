//! Proposals on the leader: single entries and batches, and the uncommitted-bytes limit
//! that bounds what a leader holds before it commits.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::*;
use raft_core::{EntryKind, MemStorage, Node, ProposeError, ENTRY_OVERHEAD_BYTES};

/// A 3-node leader (id 1) with its no-op committed, and `max_uncommitted_bytes` = `limit`.
fn leader(limit: u64) -> Node<MemStorage> {
    leader_with_noop_committed(|c| {
        plain(c);
        c.max_uncommitted_bytes = limit;
    })
}

fn batch(n: usize, size: usize) -> Vec<Bytes> {
    (0..n).map(|i| Bytes::from(vec![i as u8; size])).collect()
}

#[test]
fn a_batch_gets_consecutive_indexes_in_one_term_in_order() {
    let mut l = leader(1 << 20);
    let (first, term) = l.propose_batch(EntryKind::Command, batch(5, 8)).unwrap();
    assert_eq!((first, term), (2, 1));
    let rd = l.ready();
    let got: Vec<(u64, u64, EntryKind, u8)> = rd
        .entries
        .iter()
        .map(|e| (e.index, e.term, e.kind, e.data[0]))
        .collect();
    let want: Vec<(u64, u64, EntryKind, u8)> = (0..5)
        .map(|i| (2 + i, 1, EntryKind::Command, i as u8))
        .collect();
    assert_eq!(got, want);
    let (next, _) = l.propose(&b"after"[..]).unwrap();
    assert_eq!(next, 7);
}

#[test]
fn a_batch_that_does_not_fit_the_uncommitted_limit_is_refused_whole() {
    let entry = 100u64;
    // Room for three entries of 100 bytes beside one uncommitted entry.
    let limit = 4 * (entry + ENTRY_OVERHEAD_BYTES);
    let mut l = leader(limit);
    l.propose(Bytes::from(vec![0u8; entry as usize])).unwrap();
    let last = l.last_index();
    assert_eq!(
        l.propose_batch(EntryKind::Normal, batch(4, entry as usize)),
        Err(ProposeError::Busy)
    );
    assert_eq!(
        l.last_index(),
        last,
        "no part of a refused batch is proposed"
    );
    assert!(l
        .propose_batch(EntryKind::Normal, batch(3, entry as usize))
        .is_ok());
    assert_eq!(l.last_index(), last + 3);
    assert_eq!(
        l.propose(Bytes::from(vec![0u8; 1])),
        Err(ProposeError::Busy),
        "a single entry past the limit is refused too"
    );
}

#[test]
fn a_batch_alone_over_the_limit_is_admitted_when_nothing_is_uncommitted() {
    let mut l = leader(64);
    let (first, _) = l.propose_batch(EntryKind::Normal, batch(10, 100)).unwrap();
    assert_eq!(l.last_index(), first + 9);
}

#[test]
fn a_batch_is_refused_whole_where_a_single_entry_would_be() {
    let mut f = lone_node(2, &ids(3), MemStorage::new(), plain);
    assert_eq!(
        f.propose_batch(EntryKind::Normal, batch(2, 1)),
        Err(ProposeError::NotLeader { leader: None })
    );
    let mut l = leader(1 << 20);
    let last = l.last_index();
    assert_eq!(
        l.propose_batch(EntryKind::Noop, batch(2, 1)),
        Err(ProposeError::UnsupportedKind)
    );
    assert_eq!(l.last_index(), last);
}

#[test]
fn an_empty_batch_proposes_nothing() {
    let mut l = leader(1 << 20);
    let last = l.last_index();
    assert_eq!(
        l.propose_batch(EntryKind::Normal, Vec::new()),
        Ok((last + 1, 1))
    );
    assert_eq!(l.last_index(), last);
    assert!(l.ready().entries.is_empty());
}

#[test]
fn a_raise_of_the_cluster_version_is_an_entry_of_its_own_kind_proposed_on_the_leader_only() {
    use raft_core::ClusterVersion;
    let mut l = leader(1 << 20);
    let v = ClusterVersion { major: 0, minor: 2 };
    let (index, term) = l.propose_cluster_version(v).unwrap();
    assert_eq!((index, term), (2, 1));
    let rd = l.ready();
    let e = rd.entries.last().unwrap();
    assert_eq!((e.index, e.kind), (2, EntryKind::ClusterVersion));
    assert_eq!(ClusterVersion::decode(&e.data), Some(v));
    // A batch of raises is taken like any other batch; configuration entries are not.
    assert!(l
        .propose_batch(EntryKind::ClusterVersion, vec![Bytes::from(v.encode())])
        .is_ok());
    assert_eq!(
        l.propose_batch(EntryKind::Config, batch(1, 4)),
        Err(ProposeError::UnsupportedKind)
    );

    let mut c = config(2, &[1, 2, 3]);
    plain(&mut c);
    let mut follower = Node::new(c, MemStorage::new()).unwrap();
    assert!(matches!(
        follower.propose_cluster_version(v),
        Err(ProposeError::NotLeader { .. })
    ));
}
