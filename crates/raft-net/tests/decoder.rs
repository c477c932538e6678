//! The decoder against arbitrary bytes: it never panics and never allocates for a frame
//! beyond the limit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;
use raft_core::{Entry, Message, MessageBody};
use raft_net::{decode_frame, decode_message, encode_message, FrameError, MessageDecoder};
use tokio_util::codec::Decoder;

const LIMIT: usize = 4096;

fn drain(bytes: &[u8]) -> (usize, bool) {
    let mut dec = MessageDecoder::new(LIMIT);
    let mut buf = BytesMut::from(bytes);
    let mut n = 0;
    loop {
        match dec.decode(&mut buf) {
            Ok(Some(_)) => n += 1,
            Ok(None) => return (n, false),
            Err(_) => {
                assert!(
                    buf.capacity() <= bytes.len() + LIMIT + 64,
                    "allocated past the limit"
                );
                return (n, true);
            }
        }
        assert!(
            buf.capacity() <= bytes.len() + LIMIT + 64,
            "allocated past the limit"
        );
    }
}

/// The receivers' decoder (payloads sliced out of the frame) against the copying one, the
/// reference: the same message from both, or an error from both.
fn both_decoders_agree(bytes: &[u8]) -> Result<(), TestCaseError> {
    match (
        decode_frame(&Bytes::copy_from_slice(bytes)),
        decode_message(bytes),
    ) {
        (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
        (Err(_), Err(_)) => {}
        (a, b) => prop_assert!(false, "zero-copy {a:?} but copying {b:?}"),
    }
    Ok(())
}

/// `RAFT_FUZZ_CASES=<n>` for the long mode (see `tests/fuzz.rs`).
fn cases() -> u32 {
    std::env::var("RAFT_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn arbitrary_bytes_never_panic_or_overallocate(bytes in proptest::collection::vec(any::<u8>(), 0..20_000)) {
        drain(&bytes);
    }

    #[test]
    fn arbitrary_frames_with_valid_prefixes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..LIMIT)) {
        let mut framed = BytesMut::new();
        framed.put_u32(body.len() as u32);
        framed.extend_from_slice(&body);
        drain(&framed);
    }

    #[test]
    fn the_zero_copy_decoder_agrees_with_the_copying_one_on_any_bytes(
        body in proptest::collection::vec(any::<u8>(), 0..2048),
        append_prefix in any::<bool>(),
    ) {
        // Half the cases start like a message (version 1, nodes 1 to 2, term 3, then an
        // AppendEntries), so that the entries' decoding is reached often.
        let mut bytes = if append_prefix { vec![0, 1, 2, 3, 4] } else { Vec::new() };
        bytes.extend_from_slice(&body);
        both_decoders_agree(&bytes)?;
    }

    /// Valid appends with payloads on both sides of the slicing threshold, then the same
    /// frame cut short, with a byte changed, or with bytes added: both decoders agree.
    #[test]
    fn both_decoders_agree_on_real_appends_and_their_damaged_forms(
        sizes in proptest::collection::vec(0usize..2048, 0..6),
        cut in any::<prop::sample::Index>(),
        flip in any::<(prop::sample::Index, u8)>(),
        extra in proptest::collection::vec(any::<u8>(), 0..8),
    ) {
        let entries: Vec<Entry> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| Entry::normal(5, 10 + i as u64, vec![i as u8; n]))
            .collect();
        let m = Message { from: 1, to: 2, term: 5, body: MessageBody::AppendEntries {
            prev_index: 9, prev_term: 4, entries, commit: 8 } };
        let frame = encode_message(m.clone()).unwrap().to_vec();
        prop_assert_eq!(decode_frame(&Bytes::from(frame.clone())).unwrap(), m);
        let mut flipped = frame.clone();
        let at = flip.0.index(flipped.len());
        flipped[at] ^= flip.1;
        let mut longer = frame.clone();
        longer.extend_from_slice(&extra);
        for bytes in [frame[..cut.index(frame.len())].to_vec(), flipped, longer] {
            both_decoders_agree(&bytes)?;
        }
    }

    #[test]
    fn encoded_messages_decode_to_themselves(term in any::<u64>(), data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let m = Message { from: 1, to: 2, term, body: MessageBody::AppendEntries {
            prev_index: 3, prev_term: 2, entries: vec![Entry::normal(term, 4, data)], commit: 1 } };
        let frame = encode_message(m.clone()).unwrap();
        let mut buf = BytesMut::new();
        buf.put_u32(frame.len() as u32);
        buf.extend_from_slice(&frame);
        let mut dec = MessageDecoder::new(LIMIT * 2);
        let (got, size) = dec.decode(&mut buf).unwrap().unwrap();
        prop_assert_eq!(got, m);
        prop_assert_eq!(size, frame.len() + 4);
    }
}

#[test]
fn a_four_gibibyte_length_prefix_is_refused_before_allocating() {
    let mut dec = MessageDecoder::new(16 << 20);
    let mut buf = BytesMut::from(&[0xFFu8, 0xFF, 0xFF, 0xFF, 0, 0][..]);
    assert!(dec.decode(&mut buf).is_err());
    assert!(buf.capacity() < 1 << 20);
}

#[test]
fn a_frame_with_bytes_after_its_message_is_refused_by_both_decoders() {
    let m = Message {
        from: 1,
        to: 2,
        term: 5,
        body: MessageBody::AppendEntries {
            prev_index: 9,
            prev_term: 4,
            entries: vec![Entry::normal(5, 10, vec![7u8; 600])],
            commit: 8,
        },
    };
    let mut frame = encode_message(m.clone()).unwrap().to_vec();
    assert_eq!(decode_message(&frame).unwrap(), m);
    frame.extend_from_slice(&[0, 0, 0]);
    for got in [
        decode_message(&frame),
        decode_frame(&Bytes::from(frame.clone())),
    ] {
        assert!(
            matches!(got, Err(FrameError::TrailingBytes { extra: 3 })),
            "{got:?}"
        );
    }
    let mut buf = BytesMut::new();
    buf.put_u32(frame.len() as u32);
    buf.extend_from_slice(&frame);
    let refused = MessageDecoder::new(LIMIT).decode(&mut buf);
    assert!(
        matches!(refused, Err(FrameError::TrailingBytes { extra: 3 })),
        "{refused:?}"
    );
}
