//! The record framing of log segments: `len: u32 LE | crc: u32 LE | payload`, where the
//! payload is a `postcard`-encoded [`Record`] and `crc` is CRC32C over the length bytes and
//! the payload (so a damaged length is caught too).

use raft_core::{Entry, HardState, LogIndex, Membership, NodeId, SnapshotMeta, Term};
use serde::{Deserialize, Serialize};

/// Bytes of the frame header.
pub(crate) const HEADER_LEN: usize = 8;

/// The version of the on-disk format this build writes and reads.
///
/// 2: entries may have the kind `Command` (key-value commands are told apart from plain
/// entries by their kind, no longer by a payload prefix). Format 1 directories are refused
/// with [`crate::OpenError::OldFormat`]: their key-value commands are plain entries that
/// this release would not apply, and an older release cannot read format 2.
///
/// 3: snapshot records carry the cluster's configuration (voters, learners and their
/// addresses) instead of a list of voters. Format 2 directories are read (their snapshot
/// records become configurations of voters only) and marked format 3 when opened.
///
/// 4: entries may have the kind `ClusterVersion`, and `meta.json` may record the cluster
/// version. A directory stays at format 3 (which release 0.1.0 opens, so that a node can
/// go back to it) until the store first writes such an entry or records a cluster version
/// past the initial one; it is marked 4 before that write, and release 0.1.0 then refuses
/// it with a clear message instead of misreading it.
pub const FORMAT_VERSION: u32 = 4;

/// The format of a new directory, and of one that never held what format
/// [`FORMAT_VERSION`] adds: the newest that release 0.1.0 reads.
pub const BASE_FORMAT_VERSION: u32 = 3;

/// The oldest on-disk format this build opens.
pub const OLDEST_FORMAT_VERSION: u32 = 2;

/// What a record says. Variant order is part of the format: append new variants only.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub(crate) enum Record {
    /// First record of every segment.
    SegmentHeader { format: u32, seq: u64 },
    /// One log entry.
    Entry(Entry),
    /// The hard state from here on.
    HardState(HardState),
    /// Entries at `from` and after are removed.
    Truncate { from: LogIndex },
    /// Entries up to `index` (whose term was `term`) are purged.
    Purged { index: LogIndex, term: Term },
    /// The latest snapshot from here on, as format 2 wrote it.
    SnapshotV2(SnapshotMetaV2),
    /// The latest snapshot from here on (format 3).
    Snapshot(SnapshotMeta),
}

/// A snapshot's metadata as format 2 wrote it: the voters only.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub(crate) struct SnapshotMetaV2 {
    index: LogIndex,
    term: Term,
    voters: Vec<NodeId>,
}

impl From<SnapshotMetaV2> for SnapshotMeta {
    fn from(old: SnapshotMetaV2) -> Self {
        SnapshotMeta {
            index: old.index,
            term: old.term,
            membership: Membership::new(old.voters),
        }
    }
}

/// The encoding twin of [`Record`], borrowing what it writes.
#[derive(Serialize)]
pub(crate) enum RecordRef<'a> {
    SegmentHeader {
        format: u32,
        seq: u64,
    },
    Entry(&'a Entry),
    HardState(&'a HardState),
    Truncate {
        from: LogIndex,
    },
    Purged {
        index: LogIndex,
        term: Term,
    },
    /// Never written: holds the place of format 2's snapshot record.
    #[allow(dead_code)]
    SnapshotV2,
    Snapshot(&'a SnapshotMeta),
}

/// Appends one framed record to `buf`.
pub(crate) fn encode_into(buf: &mut Vec<u8>, rec: &RecordRef<'_>) -> Result<(), postcard::Error> {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; HEADER_LEN]);
    let mut body = postcard::to_extend(rec, std::mem::take(buf))?;
    let len = (body.len() - start - HEADER_LEN) as u32;
    body[start..start + 4].copy_from_slice(&len.to_le_bytes());
    let crc = crc32c::crc32c_append(
        crc32c::crc32c(&len.to_le_bytes()),
        &body[start + HEADER_LEN..],
    );
    body[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    *buf = body;
    Ok(())
}

/// What is found at an offset of a segment.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A valid record of `size` bytes (header included).
    Valid { record: Record, size: usize },
    /// Fewer bytes remain than the header or the declared length needs.
    Incomplete,
    /// The checksum or the decoding failed.
    Damaged,
}

/// The size (header included) the frame at the start of `bytes` declares, if its header is
/// there.
pub(crate) fn declared_size(bytes: &[u8]) -> Option<usize> {
    let len: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
    Some(HEADER_LEN + u32::from_le_bytes(len) as usize)
}

/// Why no valid frame starts at an offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bad {
    Incomplete,
    Damaged,
}

/// The checked payload of the frame at the start of `bytes` and the frame's size, or why
/// there is none; `max_len` bounds the declared payload length.
fn payload(bytes: &[u8], max_len: usize) -> Result<(&[u8], usize), Bad> {
    if bytes.len() < HEADER_LEN {
        return Err(Bad::Incomplete);
    }
    let mut len_bytes = [0u8; 4];
    len_bytes.copy_from_slice(&bytes[0..4]);
    let len = u32::from_le_bytes(len_bytes) as usize;
    let mut crc_bytes = [0u8; 4];
    crc_bytes.copy_from_slice(&bytes[4..8]);
    let crc = u32::from_le_bytes(crc_bytes);
    if len == 0 || len > max_len {
        return Err(Bad::Damaged);
    }
    if bytes.len() < HEADER_LEN + len {
        return Err(Bad::Incomplete);
    }
    let payload = &bytes[HEADER_LEN..HEADER_LEN + len];
    if crc32c::crc32c_append(crc32c::crc32c(&len_bytes), payload) != crc {
        return Err(Bad::Damaged);
    }
    Ok((payload, HEADER_LEN + len))
}

/// Reads the frame at the start of `bytes`; `max_len` bounds the declared payload length.
pub(crate) fn decode(bytes: &[u8], max_len: usize) -> Frame {
    let (payload, size) = match payload(bytes, max_len) {
        Ok(p) => p,
        Err(Bad::Incomplete) => return Frame::Incomplete,
        Err(Bad::Damaged) => return Frame::Damaged,
    };
    match postcard::from_bytes::<Record>(payload) {
        Ok(record) => Frame::Valid { record, size },
        Err(_) => Frame::Damaged,
    }
}

/// What recovery needs of a record: an entry's index and term (its payload is checked
/// against the checksum but not copied), anything else whole.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Head {
    Entry { index: LogIndex, term: Term },
    Other(Box<Record>),
}

/// The first fields of an encoded [`Entry`].
#[derive(Deserialize)]
struct EntryHead {
    term: Term,
    index: LogIndex,
}

/// [`Record::Entry`]'s variant number, as `postcard` writes it (one byte).
const ENTRY_VARIANT: u8 = 1;

/// What is found at an offset of a segment, read for recovery.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HeadFrame {
    /// A valid record of `size` bytes (header included).
    Valid { head: Head, size: usize },
    /// Fewer bytes remain than the header or the declared length needs.
    Incomplete,
    /// The checksum or the decoding failed.
    Damaged,
}

/// Like [`decode`], without copying an entry's payload.
pub(crate) fn decode_head(bytes: &[u8], max_len: usize) -> HeadFrame {
    let (payload, size) = match payload(bytes, max_len) {
        Ok(p) => p,
        Err(Bad::Incomplete) => return HeadFrame::Incomplete,
        Err(Bad::Damaged) => return HeadFrame::Damaged,
    };
    let head = match payload.split_first() {
        Some((&ENTRY_VARIANT, rest)) => match postcard::take_from_bytes::<EntryHead>(rest) {
            Ok((e, _)) => Head::Entry {
                index: e.index,
                term: e.term,
            },
            Err(_) => return HeadFrame::Damaged,
        },
        _ => match postcard::from_bytes::<Record>(payload) {
            Ok(record) => Head::Other(Box::new(record)),
            Err(_) => return HeadFrame::Damaged,
        },
    };
    HeadFrame::Valid { head, size }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_frames() {
        let e = Entry::normal(3, 7, &b"payload"[..]);
        let hs = HardState {
            term: 3,
            vote: Some(2),
            commit: 6,
        };
        let mut buf = Vec::new();
        encode_into(&mut buf, &RecordRef::Entry(&e)).unwrap();
        encode_into(&mut buf, &RecordRef::HardState(&hs)).unwrap();
        encode_into(&mut buf, &RecordRef::Truncate { from: 5 }).unwrap();
        let mut at = 0;
        let mut got = Vec::new();
        while at < buf.len() {
            match decode(&buf[at..], 1 << 20) {
                Frame::Valid { record, size } => {
                    got.push(record);
                    at += size;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(
            got,
            vec![
                Record::Entry(e),
                Record::HardState(hs),
                Record::Truncate { from: 5 }
            ]
        );
    }

    #[test]
    fn a_head_reads_an_entrys_index_and_term_and_any_other_record_whole() {
        let e = Entry::normal(3, 70_000, vec![9u8; 300]);
        let hs = HardState {
            term: 3,
            vote: Some(2),
            commit: 6,
        };
        let mut buf = Vec::new();
        encode_into(&mut buf, &RecordRef::Entry(&e)).unwrap();
        let at = buf.len();
        encode_into(&mut buf, &RecordRef::HardState(&hs)).unwrap();
        assert_eq!(
            decode_head(&buf, 1 << 20),
            HeadFrame::Valid {
                head: Head::Entry {
                    index: 70_000,
                    term: 3
                },
                size: at
            }
        );
        assert_eq!(
            decode_head(&buf[at..], 1 << 20),
            HeadFrame::Valid {
                head: Head::Other(Box::new(Record::HardState(hs))),
                size: buf.len() - at
            }
        );
        let mut bad = buf.clone();
        bad[at - 1] ^= 1; // the entry's payload: the checksum still covers it
        assert_eq!(decode_head(&bad, 1 << 20), HeadFrame::Damaged);
        assert_eq!(decode_head(&buf[..at - 1], 1 << 20), HeadFrame::Incomplete);
    }

    /// `payload` framed with a correct length and checksum.
    pub(super) fn frame(payload: &[u8]) -> Vec<u8> {
        let len = (payload.len() as u32).to_le_bytes();
        let crc = crc32c::crc32c_append(crc32c::crc32c(&len), payload);
        let mut out = len.to_vec();
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn a_format_2_snapshot_record_reads_as_a_configuration_of_its_voters() {
        // Variant 5, index 9, term 2, voters [1, 2, 3], as postcard wrote them in format 2.
        let old = frame(&[5, 9, 2, 3, 1, 2, 3]);
        let Frame::Valid { record, .. } = decode(&old, 1 << 20) else {
            panic!("a format 2 snapshot record must decode");
        };
        let Record::SnapshotV2(meta) = record else {
            panic!("decoded as {record:?}");
        };
        assert_eq!(
            SnapshotMeta::from(meta),
            SnapshotMeta {
                index: 9,
                term: 2,
                membership: Membership::new([1, 2, 3]),
            }
        );
        let mut membership = Membership::new([1, 2]);
        membership.learners.insert(3);
        let new = SnapshotMeta {
            index: 9,
            term: 2,
            membership,
        };
        let mut buf = Vec::new();
        encode_into(&mut buf, &RecordRef::Snapshot(&new)).unwrap();
        assert!(matches!(
            decode(&buf, 1 << 20),
            Frame::Valid { record: Record::Snapshot(m), .. } if m == new
        ));
    }

    #[test]
    fn any_flipped_bit_is_detected_and_any_cut_is_incomplete() {
        let mut buf = Vec::new();
        encode_into(
            &mut buf,
            &RecordRef::Entry(&Entry::normal(1, 1, &b"abc"[..])),
        )
        .unwrap();
        for cut in 0..buf.len() {
            assert_eq!(
                decode(&buf[..cut], 1 << 20),
                Frame::Incomplete,
                "cut at {cut}"
            );
        }
        for i in 0..buf.len() {
            for bit in 0..8 {
                let mut b = buf.clone();
                b[i] ^= 1 << bit;
                assert!(
                    !matches!(decode(&b, 1 << 20), Frame::Valid { .. }),
                    "flip of bit {bit} at byte {i} went unnoticed"
                );
            }
        }
    }
}

/// Record payloads behind a valid checksum (random damage to a segment almost never gets
/// past the CRC, so the payload decoder needs a target of its own). `RAFT_FUZZ_CASES=<n>`
/// runs more cases: the long mode, see docs/testing.md (Fuzzing).
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    fn cases() -> u32 {
        std::env::var("RAFT_FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2048)
    }

    /// The payload of a real record of each kind, to mutate from.
    fn seeds() -> Vec<Vec<u8>> {
        let e = Entry::normal(3, 7, &b"payload"[..]);
        let hs = HardState {
            term: 3,
            vote: Some(2),
            commit: 6,
        };
        let snap = SnapshotMeta {
            index: 9,
            term: 2,
            membership: Membership::new([1, 2, 3]),
        };
        [
            RecordRef::Entry(&e),
            RecordRef::HardState(&hs),
            RecordRef::Truncate { from: 5 },
            RecordRef::Snapshot(&snap),
        ]
        .iter()
        .map(|r| {
            let mut buf = Vec::new();
            encode_into(&mut buf, r).unwrap_or_default();
            buf[HEADER_LEN..].to_vec()
        })
        .collect()
    }

    /// Decodes a framed payload: never a panic; a valid record spans the whole frame.
    fn check(payload: &[u8]) -> Result<(), TestCaseError> {
        let bytes = super::tests::frame(payload);
        match decode(&bytes, 1 << 20) {
            Frame::Valid { size, .. } => prop_assert_eq!(size, bytes.len()),
            Frame::Damaged => {}
            Frame::Incomplete => prop_assert!(false, "a whole frame read as incomplete"),
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases()))]

        #[test]
        fn any_payload_behind_a_valid_checksum_decodes_or_is_damaged(
            payload in proptest::collection::vec(any::<u8>(), 1..256)
        ) {
            check(&payload)?;
        }

        #[test]
        fn real_records_with_bytes_changed_decode_or_are_damaged(
            which in 0usize..4,
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            tail in proptest::collection::vec(any::<u8>(), 0..8),
        ) {
            let mut payload = seeds()[which].clone();
            for (at, byte) in edits {
                let i = at.index(payload.len());
                payload[i] = byte;
            }
            payload.extend(tail);
            check(&payload)?;
        }
    }
}
