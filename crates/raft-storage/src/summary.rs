//! Segment summaries: what recovery needs of a closed segment, written beside it
//! (`NNNNNNNNNNNNNNNNNNNN.idx`) when it is closed, so that opening a long log reads a few
//! small files instead of every segment. A summary is the segment's records in order with
//! its entries folded into runs (first and last index, the marks of the sparse index, the
//! term runs) and its hard-state updates folded into the last one: replaying it does what
//! replaying the records does.
//!
//! A summary is a shortcut, never the data: one that is missing, damaged, of another
//! segment, or of another length than the segment is ignored and the segment is read
//! whole (and summarised again). Older releases ignore the files (they list `.wal` only).

use std::path::{Path, PathBuf};

use raft_core::{HardState, LogIndex, SnapshotMeta, Term};
use serde::{Deserialize, Serialize};

use crate::index::{Mark, Spacing};

/// The extension of summary files.
pub(crate) const SUMMARY_EXT: &str = "idx";

/// The first bytes of a summary file (and its layout version).
const MAGIC: &[u8; 8] = b"RAFTIDX1";

/// The path of segment `seq`'s summary in `dir`.
pub(crate) fn summary_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.{SUMMARY_EXT}"))
}

/// Entries `first..=last` appended in order, where some of them start (`marks`, the first
/// one at `first`), and the terms as runs (`(first index, term)`, the first at `first`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Run {
    pub(crate) first: LogIndex,
    pub(crate) last: LogIndex,
    pub(crate) marks: Vec<Mark>,
    pub(crate) terms: Vec<(LogIndex, Term)>,
}

impl Run {
    /// Whether the run is well formed (a summary read from disk is checked before use).
    fn is_sound(&self) -> bool {
        let marks_ok = self.marks.first().is_some_and(|m| m.index == self.first)
            && self
                .marks
                .windows(2)
                .all(|w| w[0].index < w[1].index && w[0].offset < w[1].offset)
            && self.marks.last().is_some_and(|m| m.index <= self.last);
        let terms_ok = self.terms.first().is_some_and(|t| t.0 == self.first)
            && self
                .terms
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1)
            && self.terms.last().is_some_and(|t| t.0 <= self.last);
        self.first <= self.last && marks_ok && terms_ok
    }
}

/// One thing a segment does to the log, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Step {
    Entries(Run),
    Truncate { from: LogIndex },
    Purged { index: LogIndex, term: Term },
    Snapshot(SnapshotMeta),
}

/// What recovery needs of one segment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Summary {
    pub(crate) seq: u64,
    /// The segment's length when summarised: a segment of another length is read whole.
    pub(crate) size: u64,
    /// The checksum field of the segment's first record (its header): ties the summary to
    /// this file and not another of the same number and length.
    pub(crate) header_crc: u32,
    /// The on-disk format its header names.
    pub(crate) format: u32,
    pub(crate) steps: Vec<Step>,
    /// The last hard state the segment records, if any.
    pub(crate) hard_state: Option<HardState>,
}

impl Summary {
    /// The file's bytes: magic, the postcard summary, a CRC32C of both.
    pub(crate) fn encode(&self) -> Result<Vec<u8>, postcard::Error> {
        let mut out = MAGIC.to_vec();
        out = postcard::to_extend(self, out)?;
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// Reads a summary file's bytes; `None` if they are not a sound summary.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Summary> {
        let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
        let crc = u32::from_le_bytes(crc.try_into().ok()?);
        if crc32c::crc32c(body) != crc {
            return None;
        }
        let s: Summary = postcard::from_bytes(body.strip_prefix(MAGIC)?).ok()?;
        let runs_ok = s.steps.iter().all(|step| match step {
            Step::Entries(run) => run.is_sound(),
            _ => true,
        });
        runs_ok.then_some(s)
    }
}

/// Builds the summary of a segment from its records, in order: while the segment is
/// written, and when recovery reads one whole.
#[derive(Debug)]
pub(crate) struct Summarizer {
    summary: Summary,
    spacing: Spacing,
}

impl Summarizer {
    /// A summary of segment `seq` (of `format`), whose header's checksum field is
    /// `header_crc`; marks every `interval` bytes.
    pub(crate) fn new(seq: u64, format: u32, header_crc: u32, interval: u64) -> Self {
        Summarizer {
            summary: Summary {
                seq,
                size: 0,
                header_crc,
                format,
                steps: Vec::new(),
                hard_state: None,
            },
            spacing: Spacing::new(interval),
        }
    }

    /// Entry `index` of `term` starts at `offset`.
    pub(crate) fn entry(&mut self, index: LogIndex, offset: u64, term: Term) {
        if let Some(Step::Entries(run)) = self.summary.steps.last_mut() {
            if run.last.checked_add(1) == Some(index) {
                run.last = index;
                run.marks.extend(self.spacing.due(index, offset));
                if run.terms.last().is_none_or(|&(_, t)| t != term) {
                    run.terms.push((index, term));
                }
                return;
            }
        }
        // A new run (after another record, or not following the last entry): its first
        // entry is a restart, so that no read runs into it from what came before.
        let mark = self.spacing.place(index, offset, true);
        self.summary.steps.push(Step::Entries(Run {
            first: index,
            last: index,
            marks: vec![mark],
            terms: vec![(index, term)],
        }));
    }

    /// A record other than an entry or a hard state.
    pub(crate) fn step(&mut self, step: Step) {
        self.summary.steps.push(step);
    }

    /// A hard state (only the last one counts).
    pub(crate) fn hard_state(&mut self, hs: HardState) {
        self.summary.hard_state = Some(hs);
    }

    /// The summary of the segment at `size` bytes.
    pub(crate) fn finish(&self, size: u64) -> Summary {
        Summary {
            size,
            ..self.summary.clone()
        }
    }

    /// The segment summarised.
    pub(crate) fn seq(&self) -> u64 {
        self.summary.seq
    }

    /// The steps so far (recovery replays them).
    pub(crate) fn steps(&self) -> &[Step] {
        &self.summary.steps
    }

    /// The last hard state so far.
    pub(crate) fn last_hard_state(&self) -> Option<HardState> {
        self.summary.hard_state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summarized() -> Summary {
        let mut s = Summarizer::new(3, 4, 0xfeed, 100);
        for i in 10..40u64 {
            s.entry(i, (i - 10) * 30, 1 + i / 30);
        }
        s.hard_state(HardState {
            term: 2,
            vote: Some(1),
            commit: 30,
        });
        s.step(Step::Truncate { from: 35 });
        for i in 35..38u64 {
            s.entry(i, 2_000 + (i - 35) * 30, 3);
        }
        s.finish(2_090)
    }

    #[test]
    fn entries_fold_into_runs_with_marks_every_interval_and_term_runs() {
        let s = summarized();
        let Step::Entries(run) = &s.steps[0] else {
            panic!("{:?}", s.steps)
        };
        assert_eq!((run.first, run.last), (10, 39));
        // 30 bytes an entry, a mark every 100 bytes: at 0, 120, 240, ...
        assert_eq!(run.marks.len(), 8);
        assert!(run.marks[0].restart && !run.marks[1].restart);
        assert_eq!(run.terms, vec![(10, 1), (30, 2)]);
        assert_eq!(s.steps[1], Step::Truncate { from: 35 });
        let Step::Entries(after) = &s.steps[2] else {
            panic!()
        };
        assert!(
            after.marks[0].restart,
            "entries after a truncation start a run"
        );
        assert_eq!(s.hard_state.map(|h| h.commit), Some(30));
    }

    #[test]
    fn a_summary_round_trips_and_any_damage_makes_it_unusable() {
        let s = summarized();
        let bytes = s.encode().unwrap();
        assert_eq!(Summary::decode(&bytes), Some(s));
        for at in [0, 9, bytes.len() / 2, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            assert_eq!(Summary::decode(&bad), None, "byte {at}");
        }
        assert_eq!(Summary::decode(&bytes[..bytes.len() - 3]), None);
        assert_eq!(Summary::decode(&[]), None);
    }
}
