//! Segment files: naming, and scanning one into records with their offsets, telling a torn
//! tail (an unfinished last write) from damage in the middle.

use std::path::{Path, PathBuf};

use crate::record::{decode_head, Head, HeadFrame};

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

/// The unit a disk writes atomically: a crash leaves each sector of a write either all
/// new or as it was before (zeros, past the old end of an appended file).
pub(crate) const SECTOR_BYTES: usize = 512;

/// How a scan ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ScanEnd {
    /// Every byte belonged to a valid record.
    Clean,
    /// From `offset` on, the bytes hold no valid record, and they look like a write that a
    /// crash interrupted: the last record runs past the end of the file, or part of it
    /// never reached the disk (a sector of it reads as zeros).
    Torn { offset: u64 },
    /// The last record at `offset` is complete but fails its checksum, and no sector of
    /// it is missing: that is damage to data that may have been acknowledged, not an
    /// interrupted write.
    DamagedTail { offset: u64 },
    /// The record at `offset` is damaged but valid records follow it.
    Corrupt { offset: u64 },
}

/// The records of a segment (entries by index and term only): offset, record, size.
pub(crate) struct Scan {
    pub(crate) records: Vec<(u64, Head, usize)>,
    pub(crate) end: ScanEnd,
}

/// Whether the bytes from `at` to the end look like an interrupted write: some sector's
/// share of them is all zeros (it never reached the disk). `at` is a file offset.
fn has_missing_sector(bytes: &[u8], at: usize) -> bool {
    let mut start = at;
    while start < bytes.len() {
        let sector_end = (start / SECTOR_BYTES + 1) * SECTOR_BYTES;
        let end = sector_end.min(bytes.len());
        if bytes[start..end].iter().all(|&b| b == 0) {
            return true;
        }
        start = end;
    }
    false
}

/// Reads every record of `bytes`. At the first bad frame, looks for any valid frame after
/// it: if one exists the damage is in the middle of the log (corruption). Otherwise the
/// bad frame is the last one: a torn write when it is incomplete or has a sector missing,
/// and damage otherwise.
pub(crate) fn scan(bytes: &[u8], max_len: usize) -> Scan {
    let mut records = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        match decode_head(&bytes[at..], max_len) {
            HeadFrame::Valid { head, size } => {
                records.push((at as u64, head, size));
                at += size;
            }
            bad @ (HeadFrame::Incomplete | HeadFrame::Damaged) => {
                let later_valid = (at + 1..bytes.len())
                    .any(|p| matches!(decode_head(&bytes[p..], max_len), HeadFrame::Valid { .. }));
                let offset = at as u64;
                let end = if later_valid {
                    ScanEnd::Corrupt { offset }
                } else if bad == HeadFrame::Incomplete || has_missing_sector(bytes, at) {
                    ScanEnd::Torn { offset }
                } else {
                    ScanEnd::DamagedTail { offset }
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

    #[test]
    fn a_missing_sector_is_a_zeroed_share_of_any_sector() {
        let mut b = vec![7u8; 2048];
        assert!(!has_missing_sector(&b, 1000));
        b[1000..1024].fill(0); // the rest of sector 1 after the record's start
        assert!(has_missing_sector(&b, 1000));
        assert!(!has_missing_sector(&b, 1024), "starts after the zeros");
        let mut c = vec![7u8; 2048];
        c[1536..].fill(0); // the last sector
        assert!(has_missing_sector(&c, 1000));
        c[1536] = 1;
        assert!(!has_missing_sector(&c, 1000));
    }
}
