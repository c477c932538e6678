//! Framing: a 4-byte big-endian length prefix around a `postcard`-encoded [`Envelope`].
//! A length above the limit is refused as soon as the prefix is read, and nothing is
//! reserved for a frame ahead of its bytes: the read buffer grows with the bytes actually
//! received, so a peer that announces a large frame and sends nothing costs nothing.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use raft_core::{Envelope, Message};
use tokio_util::codec::{Decoder, Encoder};

/// Bytes of the length prefix.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// The frame limit until the handshake completes: a hello or its reply is small, so an
/// unauthenticated connection never gets a large buffer.
pub const HANDSHAKE_FRAME_BYTES: usize = 64 << 10;

/// Length-prefixed frames of at most `max_frame_bytes` (prefix excluded).
#[derive(Clone, Debug)]
pub struct FrameCodec {
    max_frame_bytes: usize,
}

impl FrameCodec {
    /// A codec refusing frames above `max_frame_bytes`.
    pub fn new(max_frame_bytes: usize) -> Self {
        FrameCodec { max_frame_bytes }
    }

    /// Changes the limit (raised once a peer is authenticated).
    pub fn set_max_frame_bytes(&mut self, max_frame_bytes: usize) {
        self.max_frame_bytes = max_frame_bytes;
    }

    fn too_large(&self, len: usize) -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "frame of {len} bytes exceeds the limit of {}",
                self.max_frame_bytes
            ),
        )
    }
}

impl Decoder for FrameCodec {
    type Item = BytesMut;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, std::io::Error> {
        if src.len() < LENGTH_PREFIX_BYTES {
            return Ok(None);
        }
        let mut prefix = [0u8; LENGTH_PREFIX_BYTES];
        prefix.copy_from_slice(&src[..LENGTH_PREFIX_BYTES]);
        let len = u32::from_be_bytes(prefix) as usize;
        if len > self.max_frame_bytes {
            return Err(self.too_large(len));
        }
        if src.len() - LENGTH_PREFIX_BYTES < len {
            // Wait for more bytes; the reader grows the buffer as they arrive.
            return Ok(None);
        }
        src.advance(LENGTH_PREFIX_BYTES);
        Ok(Some(src.split_to(len)))
    }
}

impl Encoder<Bytes> for FrameCodec {
    type Error = std::io::Error;

    fn encode(&mut self, data: Bytes, dst: &mut BytesMut) -> Result<(), std::io::Error> {
        if data.len() > self.max_frame_bytes {
            return Err(self.too_large(data.len()));
        }
        let len = u32::try_from(data.len()).map_err(|_| self.too_large(data.len()))?;
        dst.reserve(LENGTH_PREFIX_BYTES + data.len());
        dst.put_u32(len);
        dst.extend_from_slice(&data);
        Ok(())
    }
}

/// A read buffer whose capacity is above this is replaced by a small one once what it holds
/// is below [`SMALL_READ_BUFFER`]. Buffers never shrink, and the payload slices of received
/// entries keep theirs alive: without this, one large catch-up frame would leave a buffer
/// of its size (up to the frame limit) that every later slice of it pins.
pub(crate) const LARGE_READ_BUFFER: usize = 256 << 10;

/// What a replaced read buffer starts with (the codec's usual buffer).
pub(crate) const SMALL_READ_BUFFER: usize = 64 << 10;

/// Moves what `buf` holds into a fresh small buffer when `buf` is large and nearly empty
/// (see [`LARGE_READ_BUFFER`]); the old allocation is freed once nothing refers to it.
pub(crate) fn release_large_buffer(buf: &mut BytesMut) {
    if buf.capacity() > LARGE_READ_BUFFER && buf.len() < SMALL_READ_BUFFER {
        let mut fresh = BytesMut::with_capacity(SMALL_READ_BUFFER);
        fresh.extend_from_slice(buf);
        *buf = fresh;
    }
}

/// Why bytes could not be decoded into messages.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix exceeds the frame limit.
    #[error("frame too large or malformed: {0}")]
    Length(std::io::Error),
    /// The frame's contents are not a message.
    #[error("cannot decode message: {0}")]
    Decode(postcard::Error),
    /// The frame holds a message and then more bytes: a damaged frame, or a sender speaking
    /// another version of the protocol.
    #[error("{extra} unexpected bytes after the message in its frame")]
    TrailingBytes {
        /// How many bytes followed the message.
        extra: usize,
    },
}

impl From<postcard::Error> for FrameError {
    fn from(e: postcard::Error) -> Self {
        FrameError::Decode(e)
    }
}

/// A frame's message, or an error if bytes follow it.
pub(crate) fn whole<T>((value, rest): (T, &[u8])) -> Result<T, FrameError> {
    match rest.len() {
        0 => Ok(value),
        extra => Err(FrameError::TrailingBytes { extra }),
    }
}

impl From<std::io::Error> for FrameError {
    fn from(e: std::io::Error) -> Self {
        FrameError::Length(e)
    }
}

/// Encodes a message into frame contents (without the length prefix).
pub fn encode_message(msg: Message) -> Result<Bytes, postcard::Error> {
    postcard::to_allocvec(&Envelope::V1(msg)).map(Bytes::from)
}

/// Decodes frame contents into a message, copying entry payloads out of `frame`.
pub fn decode_message(frame: &[u8]) -> Result<Message, FrameError> {
    whole(postcard::take_from_bytes::<Envelope>(frame)?).map(Envelope::into_message)
}

/// Decodes frame contents into a message whose entry payloads of 512 bytes or more are
/// slices of `frame` (no copy, no allocation); smaller ones are copied, which costs less
/// than sharing the frame's reference count across threads. What the transport's
/// receivers use.
pub fn decode_frame(frame: &Bytes) -> Result<Message, FrameError> {
    crate::wire::decode_shared(frame)
}

/// A decoder from bytes to messages, with the frame limit enforced.
pub struct MessageDecoder {
    inner: FrameCodec,
}

impl MessageDecoder {
    /// A decoder refusing frames above `max_frame_bytes`.
    pub fn new(max_frame_bytes: usize) -> Self {
        MessageDecoder {
            inner: FrameCodec::new(max_frame_bytes),
        }
    }
}

impl Decoder for MessageDecoder {
    type Item = (Message, usize);
    type Error = FrameError;

    /// Returns the next message and its frame size (prefix included).
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, FrameError> {
        match self.inner.decode(src)? {
            None => Ok(None),
            Some(frame) => {
                let size = frame.len() + LENGTH_PREFIX_BYTES;
                decode_frame(&frame.freeze()).map(|m| Some((m, size)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_announced_frame_reserves_nothing_ahead_of_its_bytes() {
        let mut codec = FrameCodec::new(16 << 20);
        let mut buf = BytesMut::with_capacity(64);
        buf.put_u32(15 << 20); // announces 15 MiB...
        buf.put_slice(b"abc"); // ...and sends three bytes
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(buf.capacity() < 1024, "capacity {}", buf.capacity());
    }

    #[test]
    fn frames_round_trip_and_oversized_ones_are_refused_on_the_prefix() {
        let mut codec = FrameCodec::new(8);
        let mut buf = BytesMut::new();
        codec
            .encode(Bytes::from_static(b"12345678"), &mut buf)
            .unwrap();
        codec.encode(Bytes::from_static(b""), &mut buf).unwrap();
        assert_eq!(&codec.decode(&mut buf).unwrap().unwrap()[..], b"12345678");
        assert_eq!(&codec.decode(&mut buf).unwrap().unwrap()[..], b"");
        assert!(codec
            .encode(Bytes::from_static(b"123456789"), &mut buf)
            .is_err());
        let mut big = BytesMut::new();
        big.put_u32(9);
        assert!(codec.decode(&mut big).is_err());
    }

    #[test]
    fn after_a_large_frame_the_read_buffer_is_small_again_and_keeps_what_follows() {
        let mut codec = FrameCodec::new(16 << 20);
        let mut buf = BytesMut::new();
        codec
            .encode(Bytes::from(vec![7u8; 4 << 20]), &mut buf)
            .unwrap();
        codec
            .encode(Bytes::from_static(b"next frame"), &mut buf)
            .unwrap();
        buf.put_slice(&[0, 0]); // the start of a third frame's prefix
        let large = codec.decode(&mut buf).unwrap().unwrap().freeze();
        assert!(buf.capacity() > LARGE_READ_BUFFER);
        release_large_buffer(&mut buf);
        assert!(buf.capacity() <= SMALL_READ_BUFFER, "{}", buf.capacity());
        assert_eq!(large.len(), 4 << 20, "what was taken stays whole");
        assert_eq!(&codec.decode(&mut buf).unwrap().unwrap()[..], b"next frame");
        assert_eq!(&buf[..], &[0, 0]);
        // A small buffer, or a large one still holding much, is left as it is.
        let mut small = BytesMut::with_capacity(1024);
        small.put_slice(b"abc");
        release_large_buffer(&mut small);
        assert_eq!(small.capacity(), 1024);
        let mut full = BytesMut::with_capacity(1 << 20);
        full.put_slice(&vec![1u8; SMALL_READ_BUFFER]);
        let at = full.as_ptr();
        release_large_buffer(&mut full);
        assert_eq!(full.as_ptr(), at);
    }
}
