//! Decoding without copying payloads: a borrowed twin of [`Envelope`] that postcard decodes
//! in place, after which every entry's payload of [`SLICE_FROM_BYTES`] or more becomes a
//! slice of the received frame ([`Bytes::slice_ref`]) instead of a fresh allocation and a
//! copy.
//!
//! The twin must encode exactly as the core's types do: same variants in the same order,
//! same fields in the same order. `every_message_body_decodes_to_itself` in the tests below
//! checks every variant, and `exhaustive` stops the build when the core gains one.
//!
//! A payload slice keeps the read buffer its frame was cut from alive. Entries held
//! together (the unstable log, the storage cache, the apply queue) come from consecutive
//! frames, so what they pin is what they hold plus at most a buffer at either end; the
//! receiver replaces a read buffer grown by a large frame once it has been read
//! ([`crate::frame::release_large_buffer`]), so such a buffer is not carried on. A state
//! machine that keeps a few large payloads for long should copy them.

use bytes::Bytes;
use raft_core::{
    Entry, EntryKind, Envelope, LogIndex, Message, MessageBody, NodeId, RejectHint, SnapshotMeta,
    Term,
};
use serde::Deserialize;

use crate::frame::{whole, FrameError};

#[derive(Deserialize)]
enum WireEnvelope<'a> {
    V1(#[serde(borrow)] WireMessage<'a>),
}

#[derive(Deserialize)]
struct WireMessage<'a> {
    from: NodeId,
    to: NodeId,
    term: Term,
    #[serde(borrow)]
    body: WireBody<'a>,
}

#[derive(Deserialize)]
struct WireEntry<'a> {
    term: Term,
    index: LogIndex,
    kind: EntryKind,
    #[serde(borrow)]
    data: &'a [u8],
}

#[derive(Deserialize)]
enum WireBody<'a> {
    PreVote {
        last_log_index: LogIndex,
        last_log_term: Term,
    },
    PreVoteResponse {
        granted: bool,
    },
    RequestVote {
        last_log_index: LogIndex,
        last_log_term: Term,
        transfer: bool,
    },
    RequestVoteResponse {
        granted: bool,
    },
    AppendEntries {
        prev_index: LogIndex,
        prev_term: Term,
        #[serde(borrow)]
        entries: Vec<WireEntry<'a>>,
        commit: LogIndex,
    },
    AppendEntriesResponse {
        index: LogIndex,
        reject: Option<RejectHint>,
    },
    Heartbeat {
        commit: LogIndex,
        read_seq: u64,
    },
    HeartbeatResponse {
        read_seq: u64,
    },
    InstallSnapshot {
        meta: SnapshotMeta,
    },
    TimeoutNow,
    ReadIndex {
        id: u64,
    },
    ReadIndexResponse {
        id: u64,
        index: Option<LogIndex>,
    },
}

impl WireBody<'_> {
    fn into_body(self, frame: &Bytes) -> MessageBody {
        use MessageBody as B;
        match self {
            WireBody::PreVote {
                last_log_index,
                last_log_term,
            } => B::PreVote {
                last_log_index,
                last_log_term,
            },
            WireBody::PreVoteResponse { granted } => B::PreVoteResponse { granted },
            WireBody::RequestVote {
                last_log_index,
                last_log_term,
                transfer,
            } => B::RequestVote {
                last_log_index,
                last_log_term,
                transfer,
            },
            WireBody::RequestVoteResponse { granted } => B::RequestVoteResponse { granted },
            WireBody::AppendEntries {
                prev_index,
                prev_term,
                entries,
                commit,
            } => B::AppendEntries {
                prev_index,
                prev_term,
                entries: entries
                    .into_iter()
                    .map(|e| Entry {
                        term: e.term,
                        index: e.index,
                        kind: e.kind,
                        data: payload(frame, e.data),
                    })
                    .collect(),
                commit,
            },
            WireBody::AppendEntriesResponse { index, reject } => {
                B::AppendEntriesResponse { index, reject }
            }
            WireBody::Heartbeat { commit, read_seq } => B::Heartbeat { commit, read_seq },
            WireBody::HeartbeatResponse { read_seq } => B::HeartbeatResponse { read_seq },
            WireBody::InstallSnapshot { meta } => B::InstallSnapshot { meta },
            WireBody::TimeoutNow => B::TimeoutNow,
            WireBody::ReadIndex { id } => B::ReadIndex { id },
            WireBody::ReadIndexResponse { id, index } => B::ReadIndexResponse { id, index },
        }
    }
}

/// Payloads shorter than this are copied rather than sliced. Every slice of a frame shares
/// one reference count, which the runtime, the write pipeline and the apply task update from
/// different threads; for a small payload that costs more than a copy, and a slice would
/// keep a whole read buffer alive for a few bytes.
pub(crate) const SLICE_FROM_BYTES: usize = 512;

/// `data` as a slice of `frame`, which it borrows from, or a copy when it is small.
fn payload(frame: &Bytes, data: &[u8]) -> Bytes {
    if data.len() < SLICE_FROM_BYTES {
        Bytes::copy_from_slice(data)
    } else {
        frame.slice_ref(data)
    }
}

/// Decodes frame contents into a message whose entry payloads are slices of `frame`.
pub(crate) fn decode_shared(frame: &Bytes) -> Result<Message, FrameError> {
    let WireEnvelope::V1(m) = whole(postcard::take_from_bytes::<WireEnvelope<'_>>(frame)?)?;
    Ok(Message {
        from: m.from,
        to: m.to,
        term: m.term,
        body: m.body.into_body(frame),
    })
}

/// Names every variant of the core's message body: a variant added there fails to build
/// here, as a reminder to add it to [`WireBody`] (at the same position).
#[allow(dead_code)]
fn exhaustive(b: &MessageBody) {
    match b {
        MessageBody::PreVote { .. }
        | MessageBody::PreVoteResponse { .. }
        | MessageBody::RequestVote { .. }
        | MessageBody::RequestVoteResponse { .. }
        | MessageBody::AppendEntries { .. }
        | MessageBody::AppendEntriesResponse { .. }
        | MessageBody::Heartbeat { .. }
        | MessageBody::HeartbeatResponse { .. }
        | MessageBody::InstallSnapshot { .. }
        | MessageBody::TimeoutNow
        | MessageBody::ReadIndex { .. }
        | MessageBody::ReadIndexResponse { .. } => {}
    }
    // The envelope too.
    let _ = |e: Envelope| match e {
        Envelope::V1(_) => {}
    };
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use raft_core::Membership;

    use super::*;
    use crate::frame::{decode_message, encode_message};

    fn every_body() -> Vec<MessageBody> {
        let mut membership = Membership::new([1, 2, 3]);
        membership.learners.insert(4);
        vec![
            MessageBody::PreVote {
                last_log_index: 300,
                last_log_term: 7,
            },
            MessageBody::PreVoteResponse { granted: true },
            MessageBody::RequestVote {
                last_log_index: u64::MAX,
                last_log_term: 1,
                transfer: true,
            },
            MessageBody::RequestVoteResponse { granted: false },
            MessageBody::AppendEntries {
                prev_index: 41,
                prev_term: 6,
                entries: vec![
                    Entry::normal(7, 42, &b"first payload"[..]),
                    Entry {
                        term: 7,
                        index: 43,
                        kind: EntryKind::Noop,
                        data: Bytes::new(),
                    },
                    Entry {
                        term: 7,
                        index: 44,
                        kind: EntryKind::Command,
                        data: Bytes::from(vec![0xAB; 70_000]),
                    },
                    Entry {
                        term: 7,
                        index: 45,
                        kind: EntryKind::Config,
                        data: Bytes::from_static(b"config"),
                    },
                ],
                commit: 40,
            },
            MessageBody::AppendEntriesResponse {
                index: 9,
                reject: Some(RejectHint { index: 5, term: 2 }),
            },
            MessageBody::AppendEntriesResponse {
                index: 9,
                reject: None,
            },
            MessageBody::Heartbeat {
                commit: 12,
                read_seq: 3,
            },
            MessageBody::HeartbeatResponse { read_seq: 3 },
            MessageBody::InstallSnapshot {
                meta: SnapshotMeta {
                    index: 100,
                    term: 5,
                    membership,
                },
            },
            MessageBody::TimeoutNow,
            MessageBody::ReadIndex { id: 77 },
            MessageBody::ReadIndexResponse {
                id: 77,
                index: Some(12),
            },
            MessageBody::ReadIndexResponse {
                id: 78,
                index: None,
            },
        ]
    }

    #[test]
    fn every_message_body_decodes_to_itself() {
        for body in every_body() {
            exhaustive(&body);
            let m = Message {
                from: 1,
                to: 2,
                term: 9,
                body,
            };
            let frame = encode_message(m.clone()).unwrap();
            assert_eq!(decode_shared(&frame).unwrap(), m);
            assert_eq!(decode_message(&frame).unwrap(), m);
        }
    }

    /// The append of [`every_body`], with payloads on both sides of the threshold.
    fn the_append() -> Message {
        Message {
            from: 1,
            to: 2,
            term: 9,
            body: every_body().swap_remove(4),
        }
    }

    /// Whether `data` lies inside `frame`.
    fn is_slice_of(data: &Bytes, frame: &Bytes) -> bool {
        let start = frame.as_ptr() as usize;
        (start..start + frame.len()).contains(&(data.as_ptr() as usize))
    }

    #[test]
    fn large_payloads_are_slices_of_the_frame_and_small_ones_copies() {
        let frame = encode_message(the_append()).unwrap();
        let MessageBody::AppendEntries { entries, .. } = decode_shared(&frame).unwrap().body else {
            panic!("not an append");
        };
        let mut large = 0;
        for e in entries.iter().filter(|e| !e.data.is_empty()) {
            let sliced = is_slice_of(&e.data, &frame);
            assert_eq!(
                sliced,
                e.data.len() >= SLICE_FROM_BYTES,
                "entry {} of {} bytes",
                e.index,
                e.data.len()
            );
            large += usize::from(sliced);
        }
        assert_eq!(large, 1, "the 70,000-byte entry is the one slice");
    }

    #[test]
    fn the_threshold_is_exact_a_payload_of_511_bytes_is_copied_and_one_of_512_sliced() {
        for (len, sliced) in [(511usize, false), (512, true)] {
            let m = Message {
                from: 1,
                to: 2,
                term: 9,
                body: MessageBody::AppendEntries {
                    prev_index: 0,
                    prev_term: 0,
                    entries: vec![Entry::normal(9, 1, vec![5u8; len])],
                    commit: 0,
                },
            };
            let frame = encode_message(m.clone()).unwrap();
            let got = decode_shared(&frame).unwrap();
            assert_eq!(got, m);
            let MessageBody::AppendEntries { entries, .. } = got.body else {
                panic!("not an append");
            };
            assert_eq!(is_slice_of(&entries[0].data, &frame), sliced, "{len} bytes");
        }
    }

    #[test]
    fn a_damaged_frame_is_an_error_like_the_copying_decoder_says() {
        let frame = encode_message(the_append()).unwrap();
        for cut in 0..frame.len() {
            let part = frame.slice(..cut);
            assert_eq!(
                decode_shared(&part).is_ok(),
                decode_message(&part).is_ok(),
                "cut at {cut}"
            );
        }
    }
}
