//! The byte streams connections run over: plain TCP, or TLS over TCP ([`crate::tls`]).
//! Everything above the handshake sees a boxed stream and does not know which.

use tokio::io::{AsyncRead, AsyncWrite};

/// A two-way byte stream with a peer.
pub(crate) trait PeerIo: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> PeerIo for T {}

/// A connection, plain or TLS.
pub(crate) type BoxIo = Box<dyn PeerIo>;
/// The reading half of a connection.
pub(crate) type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
/// The writing half of a connection.
pub(crate) type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;
