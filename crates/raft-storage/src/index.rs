//! Where the log's entries are, without a record per entry in memory: each segment's live
//! entries form a [`Span`] with a sparse list of [`Mark`]s (one every
//! [`crate::StorageConfig::index_interval_bytes`] of segment, as Kafka's offset index), and
//! the terms are kept as runs (a term changes only at an election). An entry is found by
//! reading forward from the mark at or before it.
//!
//! A truncation leaves the replaced entries in their segment; the first entry written after
//! it gets a *restart* mark, so that a read never runs from older entries into the copies
//! that replaced them: bytes between two marks hold ascending live entries up to the next
//! restart (other records may sit between them).

use std::collections::VecDeque;

use raft_core::{LogIndex, Term};
use serde::{Deserialize, Serialize};

use crate::summary::Run;

/// A point of a segment where an entry starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Mark {
    pub(crate) index: LogIndex,
    pub(crate) offset: u64,
    /// The first entry of its span, or the first written after a truncation: the entries
    /// before it are not followed by it in the file.
    pub(crate) restart: bool,
}

/// Where the marks of a stretch of segment go: one every `interval` bytes, and one
/// wherever a restart needs it. Shared by the index and by segment summaries, so that both
/// place marks by the same rule.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Spacing {
    interval: u64,
    /// The offset from which the next entry gets a mark.
    next: u64,
}

impl Spacing {
    /// Marks every `interval` bytes; the first entry gets one.
    pub(crate) fn new(interval: u64) -> Self {
        Spacing {
            interval: interval.max(1),
            next: 0,
        }
    }

    /// A mark for entry `index` at `offset`, whether or not one is due.
    pub(crate) fn place(&mut self, index: LogIndex, offset: u64, restart: bool) -> Mark {
        self.next = offset.saturating_add(self.interval);
        Mark {
            index,
            offset,
            restart,
        }
    }

    /// A mark for entry `index` at `offset` if one is due there.
    pub(crate) fn due(&mut self, index: LogIndex, offset: u64) -> Option<Mark> {
        (offset >= self.next).then(|| self.place(index, offset, false))
    }

    /// Goes on after `mark`, placed elsewhere (replayed from a summary).
    fn after(&mut self, mark: Option<&Mark>) {
        self.next = mark.map_or(0, |m| m.offset.saturating_add(self.interval));
    }
}

/// The live entries of one segment, `first..=last`.
#[derive(Debug)]
struct Span {
    seq: u64,
    first: LogIndex,
    last: LogIndex,
    /// Ascending by index and by offset; the first is at or before `first`.
    marks: Vec<Mark>,
    spacing: Spacing,
    /// The next entry gets a restart mark (a truncation cut this span).
    restart: bool,
}

/// A stretch of one segment to read: the entries `from..to` (ascending, possibly with
/// other records between them) are found by reading forward from `offset`, where entry
/// `at` (≤ `from`) starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Region {
    pub(crate) seq: u64,
    pub(crate) offset: u64,
    pub(crate) at: LogIndex,
    pub(crate) from: LogIndex,
    pub(crate) to: LogIndex,
}

/// The locations and terms of the entries `first..=last`.
#[derive(Debug)]
pub(crate) struct SparseIndex {
    spans: VecDeque<Span>,
    /// `(first index of the run, term)`, ascending.
    terms: VecDeque<(LogIndex, Term)>,
    first: LogIndex,
    last: LogIndex,
    interval: u64,
}

impl SparseIndex {
    /// An empty index whose next entry is `first`; marks every `interval` bytes.
    pub(crate) fn new(first: LogIndex, interval: u64) -> Self {
        SparseIndex {
            spans: VecDeque::new(),
            terms: VecDeque::new(),
            first,
            last: first.saturating_sub(1),
            interval: interval.max(1),
        }
    }

    /// The first entry held (or the next one to come when empty).
    pub(crate) fn first(&self) -> LogIndex {
        self.first
    }

    /// The last entry held (`first() - 1` when empty).
    pub(crate) fn last(&self) -> LogIndex {
        self.last
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.last < self.first
    }

    /// Forgets every entry; the next one is `first`.
    pub(crate) fn reset(&mut self, first: LogIndex) {
        *self = SparseIndex::new(first, self.interval);
    }

    /// Records entry `index` (which must be `last() + 1`) of `term`, starting at `offset` of
    /// segment `seq`.
    pub(crate) fn push(&mut self, seq: u64, index: LogIndex, offset: u64, term: Term) {
        debug_assert_eq!(index, self.last + 1);
        if self.is_empty() {
            self.first = index;
        }
        self.last = index;
        if self.terms.back().is_none_or(|&(_, t)| t != term) {
            self.terms.push_back((index, term));
        }
        match self.spans.back_mut() {
            Some(span) if span.seq == seq => {
                span.last = index;
                let mark = if span.restart {
                    Some(span.spacing.place(index, offset, true))
                } else {
                    span.spacing.due(index, offset)
                };
                span.marks.extend(mark);
                span.restart = false;
            }
            _ => {
                let mut spacing = Spacing::new(self.interval);
                let mark = spacing.place(index, offset, true);
                self.spans.push_back(Span {
                    seq,
                    first: index,
                    last: index,
                    marks: vec![mark],
                    spacing,
                    restart: false,
                });
            }
        }
    }

    /// Records the entries of `run` (the first must be `last() + 1`), in segment `seq`, with
    /// the run's marks and terms: what [`push`](Self::push) of each would do, from a
    /// segment's summary.
    pub(crate) fn push_run(&mut self, seq: u64, run: &Run) {
        debug_assert_eq!(run.first, self.last + 1);
        if self.is_empty() {
            self.first = run.first;
        }
        self.last = run.last;
        for &(start, term) in &run.terms {
            if self.terms.back().is_none_or(|&(_, t)| t != term) {
                self.terms.push_back((start, term));
            }
        }
        match self.spans.back_mut() {
            Some(span) if span.seq == seq => {
                span.last = run.last;
                span.marks.extend_from_slice(&run.marks);
                span.spacing.after(run.marks.last());
                span.restart = false;
            }
            _ => {
                let mut spacing = Spacing::new(self.interval);
                spacing.after(run.marks.last());
                self.spans.push_back(Span {
                    seq,
                    first: run.first,
                    last: run.last,
                    marks: run.marks.clone(),
                    spacing,
                    restart: false,
                });
            }
        }
    }

    /// Forgets the entries at `from` and after (`first() ≤ from ≤ last() + 1`).
    pub(crate) fn truncate(&mut self, from: LogIndex) {
        if from > self.last {
            return;
        }
        if from <= self.first {
            self.reset(from);
            return;
        }
        while self.spans.back().is_some_and(|s| s.first >= from) {
            self.spans.pop_back();
        }
        if let Some(span) = self.spans.back_mut() {
            if span.last >= from {
                span.last = from - 1;
                let keep = span.marks.partition_point(|m| m.index < from);
                span.marks.truncate(keep);
                span.restart = true;
            }
        }
        while self.terms.back().is_some_and(|&(start, _)| start >= from) {
            self.terms.pop_back();
        }
        self.last = from - 1;
    }

    /// Forgets the entries up to and including `through`; the next entry kept (or to come)
    /// is `through + 1`.
    pub(crate) fn drop_through(&mut self, through: LogIndex) {
        if through < self.first {
            return;
        }
        if through >= self.last {
            self.reset(through + 1);
            return;
        }
        let first = through + 1;
        while self.spans.front().is_some_and(|s| s.last < first) {
            self.spans.pop_front();
        }
        if let Some(span) = self.spans.front_mut() {
            span.first = span.first.max(first);
            // Keep the mark at or before the new first entry, and those after it.
            let floor = span.marks.partition_point(|m| m.index <= first);
            span.marks.drain(..floor.saturating_sub(1));
        }
        while self.terms.len() > 1 && self.terms[1].0 <= first {
            self.terms.pop_front();
        }
        self.first = first;
    }

    /// The term of entry `index`, if held.
    pub(crate) fn term(&self, index: LogIndex) -> Option<Term> {
        if index < self.first || index > self.last {
            return None;
        }
        let run = self.terms.partition_point(|&(start, _)| start <= index);
        run.checked_sub(1).map(|r| self.terms[r].1)
    }

    fn span_of(&self, index: LogIndex) -> Option<&Span> {
        if index < self.first || index > self.last {
            return None;
        }
        let i = self.spans.partition_point(|s| s.first <= index);
        let span = self.spans.get(i.checked_sub(1)?)?;
        (index <= span.last).then_some(span)
    }

    /// The segment holding entry `index`, if held.
    pub(crate) fn segment_of(&self, index: LogIndex) -> Option<u64> {
        self.span_of(index).map(|s| s.seq)
    }

    /// The regions to read for the entries `lo..hi` (within `first()..=last()`), in order.
    pub(crate) fn regions(&self, lo: LogIndex, hi: LogIndex) -> Vec<Region> {
        let mut out = Vec::new();
        let mut next = lo.max(self.first);
        let hi = hi.min(self.last.saturating_add(1));
        while next < hi {
            let Some(span) = self.span_of(next) else {
                break;
            };
            let floor = span.marks.partition_point(|m| m.index <= next);
            let Some(mark) = floor.checked_sub(1).and_then(|m| span.marks.get(m)) else {
                break;
            };
            // The region runs to the next restart mark or the span's end.
            let end = span.marks[floor..]
                .iter()
                .find(|m| m.restart)
                .map_or(span.last + 1, |m| m.index)
                .min(hi);
            out.push(Region {
                seq: span.seq,
                offset: mark.offset,
                at: mark.index,
                from: next,
                to: end,
            });
            next = end;
        }
        out
    }

    /// `(segment, last entry held in it)` for each segment holding entries, oldest first.
    pub(crate) fn segment_ends(&self) -> impl Iterator<Item = (u64, LogIndex)> + '_ {
        self.spans.iter().map(|s| (s.seq, s.last))
    }

    /// How many marks the index holds (its memory grows with this, not with the entries).
    pub(crate) fn marks(&self) -> usize {
        self.spans.iter().map(|s| s.marks.len()).sum()
    }

    /// How many term runs the index holds.
    pub(crate) fn term_runs(&self) -> usize {
        self.terms.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entries of 10 bytes each, `per_segment` to a segment, terms from `term_of`.
    fn filled(
        n: u64,
        per_segment: u64,
        interval: u64,
        term_of: impl Fn(u64) -> Term,
    ) -> SparseIndex {
        let mut ix = SparseIndex::new(1, interval);
        for i in 1..=n {
            let seq = (i - 1) / per_segment + 1;
            ix.push(seq, i, ((i - 1) % per_segment) * 10, term_of(i));
        }
        ix
    }

    #[test]
    fn marks_grow_with_bytes_over_the_interval_not_with_entries() {
        let ix = filled(10_000, 1_000, 100, |_| 1);
        // 1,000 entries of 10 bytes a segment: a mark every 10 entries.
        assert_eq!(ix.marks(), 1_000);
        assert_eq!(ix.term_runs(), 1);
        assert_eq!((ix.first(), ix.last()), (1, 10_000));
    }

    #[test]
    fn terms_are_runs_and_answer_for_every_entry_held() {
        let ix = filled(100, 30, 50, |i| i / 25 + 1);
        assert_eq!(ix.term_runs(), 5);
        for i in 1..=100 {
            assert_eq!(ix.term(i), Some(i / 25 + 1), "entry {i}");
        }
        assert_eq!(ix.term(0), None);
        assert_eq!(ix.term(101), None);
    }

    #[test]
    fn a_region_starts_at_the_mark_at_or_before_the_first_entry_read() {
        let ix = filled(100, 100, 100, |_| 1);
        assert_eq!(
            ix.regions(25, 40),
            vec![Region {
                seq: 1,
                offset: 200,
                at: 21,
                from: 25,
                to: 40
            }]
        );
        assert_eq!(ix.segment_of(25), Some(1));
    }

    #[test]
    fn regions_follow_segments() {
        let ix = filled(100, 40, 1_000, |_| 1);
        let r = ix.regions(35, 90);
        assert_eq!(
            r.iter().map(|r| (r.seq, r.from, r.to)).collect::<Vec<_>>(),
            vec![(1, 35, 41), (2, 41, 81), (3, 81, 90)]
        );
        assert_eq!(r[1].offset, 0);
        assert_eq!(ix.segment_of(81), Some(3));
    }

    #[test]
    fn a_truncation_makes_the_next_entry_a_restart_so_reads_never_run_into_replaced_copies() {
        let mut ix = filled(50, 100, 1_000, |_| 1);
        ix.truncate(30);
        assert_eq!(ix.last(), 29);
        // Entries 30.. written again after the old ones (at 500..) in the same segment.
        for i in 30..=40 {
            ix.push(1, i, 500 + (i - 30) * 10, 2);
        }
        let r = ix.regions(1, 41);
        assert_eq!(
            r.iter()
                .map(|r| (r.offset, r.at, r.from, r.to))
                .collect::<Vec<_>>(),
            vec![(0, 1, 1, 30), (500, 30, 30, 41)]
        );
        assert_eq!(ix.term(29), Some(1));
        assert_eq!(ix.term(30), Some(2));
    }

    #[test]
    fn a_truncation_into_an_earlier_segment_drops_the_later_spans() {
        let mut ix = filled(100, 40, 1_000, |_| 1);
        ix.truncate(35);
        assert_eq!(ix.segment_of(34), Some(1));
        assert_eq!(ix.segment_of(35), None);
        ix.push(3, 35, 400, 2);
        assert_eq!(ix.segment_of(35), Some(3));
        assert_eq!(ix.regions(35, 36)[0].offset, 400);
        ix.truncate(1);
        assert!(ix.is_empty());
        assert_eq!(ix.first(), 1);
    }

    #[test]
    fn dropping_a_prefix_keeps_the_mark_before_the_new_first_entry() {
        let mut ix = filled(100, 40, 100, |i| if i < 50 { 1 } else { 2 });
        ix.drop_through(55);
        assert_eq!((ix.first(), ix.last()), (56, 100));
        assert_eq!(ix.term(55), None);
        assert_eq!(ix.term(56), Some(2));
        assert_eq!(ix.term_runs(), 1);
        let r = ix.regions(1, 60);
        assert_eq!(r[0].from, 56);
        assert!(r[0].at <= 56);
        ix.drop_through(200);
        assert!(ix.is_empty());
        assert_eq!(ix.first(), 201);
    }
}
