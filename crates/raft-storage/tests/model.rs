//! Property test: random appends (with truncation), hard-state updates, purges and reopens
//! against a simple in-memory model of the log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use raft_core::{Entry, HardState, LogStore};
use raft_storage::{LogStorage, StorageConfig, SyncPolicy};

#[derive(Clone, Debug)]
enum Op {
    /// Append `count` entries of `term` starting `back` entries before the end.
    Append {
        back: u64,
        count: u64,
        term: u64,
        size: usize,
    },
    HardState(u64),
    Purge(u64),
    Reopen,
    /// Reopens after removing the closed segments' summaries: they are read whole.
    ReopenWithoutSummaries,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u64..4, 1u64..6, 1u64..5, 0usize..80)
            .prop_map(|(back, count, term, size)| Op::Append { back, count, term, size }),
        1 => (0u64..100).prop_map(Op::HardState),
        1 => (0u64..30).prop_map(Op::Purge),
        2 => Just(Op::Reopen),
        1 => Just(Op::ReopenWithoutSummaries),
    ]
}

#[derive(Default)]
struct Model {
    purged: u64,
    purged_term: u64,
    entries: Vec<Entry>, // indexes purged+1 ..
    hs: HardState,
}

impl Model {
    fn last(&self) -> u64 {
        self.purged + self.entries.len() as u64
    }
}

fn check(log: &LogStorage, m: &Model) {
    assert_eq!(log.first_index(), m.purged + 1);
    assert_eq!(log.last_index(), m.last());
    assert_eq!(log.hard_state().unwrap(), m.hs);
    assert_eq!(log.term(m.purged), Ok(m.purged_term));
    if !m.entries.is_empty() {
        let got = log.entries(m.purged + 1, m.last() + 1, u64::MAX).unwrap();
        assert_eq!(got, m.entries);
        for e in &m.entries {
            assert_eq!(log.term(e.index), Ok(e.term));
            // One entry alone, read forward from the mark before it.
            assert_eq!(
                log.entries(e.index, e.index + 1, 0).unwrap(),
                vec![e.clone()]
            );
            let plan = log.plan_read(e.index, m.last() + 1, u64::MAX).unwrap();
            let got = log.reader().read(plan).unwrap();
            assert_eq!(&got[..], &m.entries[(e.index - m.purged - 1) as usize..]);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn storage_matches_a_model_across_reopens(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = StorageConfig::new(dir.path(), "model", 7);
        cfg.sync = SyncPolicy::Never;
        cfg.segment_bytes = 300;
        cfg.cache_bytes = 200;
        cfg.index_interval_bytes = 40;
        let mut log = Some(LogStorage::open(cfg.clone()).unwrap());
        let mut m = Model::default();
        let mut seq = 0u64;
        for op in ops {
            let store = log.as_mut().unwrap();
            match op {
                Op::Append { back, count, term, size } => {
                    let start = (m.last() + 1).saturating_sub(back).max(m.purged + 1);
                    let batch: Vec<Entry> = (start..start + count)
                        .map(|i| {
                            seq += 1;
                            Entry::normal(term, i, vec![seq as u8; size])
                        })
                        .collect();
                    store.write(&batch, None).unwrap();
                    m.entries.truncate((start - m.purged - 1) as usize);
                    m.entries.extend(batch);
                }
                Op::HardState(commit) => {
                    let hs = HardState { term: commit / 3, vote: Some(commit % 3 + 1), commit };
                    store.write(&[], Some(hs)).unwrap();
                    m.hs = hs;
                }
                Op::Purge(back) => {
                    let to = m.last().saturating_sub(back);
                    if to > m.purged {
                        let term = m.entries[(to - m.purged - 1) as usize].term;
                        store.purge_to(to).unwrap();
                        m.entries.drain(..(to - m.purged) as usize);
                        m.purged = to;
                        m.purged_term = term;
                    }
                }
                Op::Reopen => {
                    drop(log.take());
                    log = Some(LogStorage::open(cfg.clone()).unwrap());
                }
                Op::ReopenWithoutSummaries => {
                    drop(log.take());
                    for f in std::fs::read_dir(dir.path().join(raft_storage::WAL_DIR)).unwrap() {
                        let p = f.unwrap().path();
                        if p.extension().is_some_and(|e| e == "idx") {
                            std::fs::remove_file(p).unwrap();
                        }
                    }
                    log = Some(LogStorage::open(cfg.clone()).unwrap());
                }
            }
            check(log.as_ref().unwrap(), &m);
        }
    }
}
