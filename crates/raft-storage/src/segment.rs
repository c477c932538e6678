//! Segment files: naming, and scanning one into records with their offsets, telling a torn
//! tail (an unfinished last write) from damage in the middle.

use std::path::{Path, PathBuf};

use crate::record::{decode, Frame, Record};

/// The extension of segment files.
pub const SEGMENT_EXT: &str = "wal";

/// The path of segment `seq` in `dir`: zero-padded so that names sort by number.
pub(crate) fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.{SEGMENT_EXT}"))
}

/// The sequence number of a segment path, if it names one.
pub(crate) fn parse_segment_seq(path: &Path) -> Option<u64> {
    if path.extension()?.to_str()? != SEGMENT_EXT {
        return None;
    }
    path.file_stem()?.to_str()?.parse().ok()
}

/// How a scan ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ScanEnd {
    /// Every byte belonged to a valid record.
    Clean,
    /// From `offset` on, the bytes hold no valid record: an unfinished write.
    Torn { offset: u64 },
    /// The record at `offset` is damaged but valid records follow it.
    Corrupt { offset: u64 },
}

/// The records of a segment.
pub(crate) struct Scan {
    pub(crate) records: Vec<(u64, Record, usize)>,
    pub(crate) end: ScanEnd,
}

/// Reads every record of `bytes`. At the first bad frame, looks for any valid frame after
/// it: if one exists the damage is in the middle of the log (corruption); otherwise it is
/// a torn tail.
pub(crate) fn scan(bytes: &[u8], max_len: usize) -> Scan {
    let mut records = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        match decode(&bytes[at..], max_len) {
            Frame::Valid { record, size } => {
                records.push((at as u64, record, size));
                at += size;
            }
            Frame::Incomplete | Frame::Damaged => {
                let later_valid = (at + 1..bytes.len())
                    .any(|p| matches!(decode(&bytes[p..], max_len), Frame::Valid { .. }));
                let end = if later_valid {
                    ScanEnd::Corrupt { offset: at as u64 }
                } else {
                    ScanEnd::Torn { offset: at as u64 }
                };
                return Scan { records, end };
            }
        }
    }
    Scan {
        records,
        end: ScanEnd::Clean,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_sort_by_sequence_and_parse_back() {
        let p = segment_path(Path::new("/d"), 42);
        assert_eq!(parse_segment_seq(&p), Some(42));
        assert!(segment_path(Path::new("/d"), 9) < segment_path(Path::new("/d"), 10));
        assert_eq!(parse_segment_seq(Path::new("/d/meta.json")), None);
    }
}
