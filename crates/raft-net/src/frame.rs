//! Framing: a 4-byte big-endian length prefix (tokio-util's length-delimited codec) around
//! a `postcard`-encoded [`Envelope`]. A length above the limit is refused as soon as the
//! prefix is read, before anything is allocated for the frame.

use bytes::{Bytes, BytesMut};
use raft_core::{Envelope, Message};
use tokio_util::codec::{Decoder, LengthDelimitedCodec};

/// Bytes of the length prefix.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// The frame limit until the handshake completes: a hello or its reply is small, so an
/// unauthenticated connection never gets a large buffer.
pub const HANDSHAKE_FRAME_BYTES: usize = 64 << 10;

pub(crate) fn length_codec(max_frame_bytes: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(LENGTH_PREFIX_BYTES)
        .max_frame_length(max_frame_bytes)
        .new_codec()
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

/// Decodes frame contents into a message.
pub fn decode_message(frame: &[u8]) -> Result<Message, postcard::Error> {
    postcard::from_bytes::<Envelope>(frame).map(Envelope::into_message)
}

/// A decoder from bytes to messages, with the frame limit enforced.
pub struct MessageDecoder {
    inner: LengthDelimitedCodec,
}

impl MessageDecoder {
    /// A decoder refusing frames above `max_frame_bytes`.
    pub fn new(max_frame_bytes: usize) -> Self {
        MessageDecoder {
            inner: length_codec(max_frame_bytes),
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
                decode_message(&frame)
                    .map(|m| Some((m, size)))
                    .map_err(FrameError::Decode)
            }
        }
    }
}
