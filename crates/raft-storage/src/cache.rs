//! A bounded cache of the most recent entries, so that replicating to followers that keep
//! up never touches the disk.

use std::collections::VecDeque;

use raft_core::{Entry, LogIndex};

/// Contiguous recent entries, newest last, within a byte budget.
pub(crate) struct Cache {
    entries: VecDeque<Entry>,
    bytes: u64,
    max_bytes: u64,
}

impl Cache {
    pub(crate) fn new(max_bytes: u64) -> Self {
        Cache {
            entries: VecDeque::new(),
            bytes: 0,
            max_bytes,
        }
    }

    /// Adds the entry after the newest (clearing the cache if it does not follow).
    pub(crate) fn push(&mut self, e: Entry) {
        if self.max_bytes == 0 {
            return;
        }
        if let Some(last) = self.entries.back() {
            if last.index + 1 != e.index {
                self.entries.clear();
                self.bytes = 0;
            }
        }
        self.bytes += e.size();
        self.entries.push_back(e);
        while self.bytes > self.max_bytes {
            match self.entries.pop_front() {
                Some(old) => self.bytes -= old.size(),
                None => break,
            }
        }
    }

    /// The oldest entry held.
    pub(crate) fn first(&self) -> Option<LogIndex> {
        self.entries.front().map(|e| e.index)
    }

    pub(crate) fn get(&self, index: LogIndex) -> Option<&Entry> {
        let first = self.entries.front()?.index;
        if index < first {
            return None;
        }
        self.entries.get((index - first) as usize)
    }

    /// Removes entries at `from` and after.
    pub(crate) fn truncate_from(&mut self, from: LogIndex) {
        while self.entries.back().is_some_and(|e| e.index >= from) {
            if let Some(e) = self.entries.pop_back() {
                self.bytes -= e.size();
            }
        }
    }

    /// Removes entries up to and including `index`.
    pub(crate) fn drop_through(&mut self, index: LogIndex) {
        while self.entries.front().is_some_and(|e| e.index <= index) {
            if let Some(e) = self.entries.pop_front() {
                self.bytes -= e.size();
            }
        }
    }
}
