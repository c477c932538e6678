//! The handshake decoders against arbitrary bytes: a hello or a reply that does not decode
//! is an error, never a panic, and whatever decodes encodes back to the same bytes' meaning.
//! (The frame decoder has its own in `decoder.rs`.)
//!
//! `RAFT_FUZZ_CASES=<n>` runs more cases: the long mode, see docs/testing.md (Fuzzing).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use raft_net::{Channel, Hello, HelloReply, MAGIC};

fn cases() -> u32 {
    std::env::var("RAFT_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn arbitrary_bytes_never_panic_the_hello_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(h) = postcard::from_bytes::<Hello>(&bytes) {
            let again = postcard::to_allocvec(&h).unwrap();
            prop_assert_eq!(postcard::from_bytes::<Hello>(&again).unwrap(), h);
        }
        if let Ok(r) = postcard::from_bytes::<HelloReply>(&bytes) {
            let again = postcard::to_allocvec(&r).unwrap();
            prop_assert_eq!(postcard::from_bytes::<HelloReply>(&again).unwrap(), r);
        }
    }

    #[test]
    fn a_valid_hello_with_bytes_flipped_never_panics(
        cluster in "[a-z]{0,20}",
        from in any::<u64>(),
        to in any::<u64>(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
    ) {
        let mut h = Hello::new(&cluster, from, to);
        h.channel = Channel::Stream;
        let mut bytes = postcard::to_allocvec(&h).unwrap();
        prop_assert_eq!(&bytes[..MAGIC.len()], &MAGIC[..]);
        for (at, b) in flips {
            let i = at % bytes.len();
            bytes[i] = b;
        }
        let _ = postcard::from_bytes::<Hello>(&bytes);
    }
}
