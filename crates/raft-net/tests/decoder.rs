//! The decoder against arbitrary bytes: it never panics and never allocates for a frame
//! beyond the limit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;
use raft_core::{Entry, Message, MessageBody};
use raft_net::{decode_frame, decode_message, encode_message, MessageDecoder};
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

    /// The receivers' decoder slices payloads out of the frame; the copying one is the
    /// reference: the same bytes must give the same message, or an error from both.
    #[test]
    fn the_zero_copy_decoder_agrees_with_the_copying_one_on_any_bytes(
        body in proptest::collection::vec(any::<u8>(), 0..2048),
        append_prefix in any::<bool>(),
    ) {
        // Half the cases start like a message (version 1, nodes 1 to 2, term 3, then an
        // AppendEntries), so that the entries' decoding is reached often.
        let mut bytes = if append_prefix { vec![0, 1, 2, 3, 4] } else { Vec::new() };
        bytes.extend_from_slice(&body);
        let shared = decode_frame(&Bytes::from(bytes.clone()));
        let copied = decode_message(&bytes);
        match (shared, copied) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
            (Err(_), Err(_)) => {}
            (a, b) => prop_assert!(false, "zero-copy {a:?} but copying {b:?}"),
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
