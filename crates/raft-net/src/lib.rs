//! # raft-net
//!
//! Framed TCP between Raft peers, built on tokio.
//!
//! - **Frames**: a 4-byte big-endian length prefix ([`FrameCodec`]) around a
//!   `postcard`-encoded [`raft_core::Envelope`]. The limit
//!   ([`NetConfig::max_frame_bytes`], 16 MiB by default) is checked on the prefix, before
//!   anything is allocated for the frame.
//! - **Decoding in place**: receivers decode with [`decode_frame`], which makes entry
//!   payloads of 512 bytes or more slices of the received frame (no copy); smaller ones,
//!   and everything [`decode_message`] decodes, are copied.
//! - **Handshake**: every connection opens with a [`Hello`] (magic, protocol version,
//!   cluster id, sender id, intended receiver id, credentials) answered by a
//!   [`HelloReply`]; the acceptor refuses, with a logged reason, a wrong magic, version,
//!   cluster or receiver, an unknown sender, or credentials its [`Authenticator`] rejects.
//!   Both sides say which protocol versions they speak and their release
//!   ([`HelloVersions`], [`WelcomeVersions`]) after the hello and the welcome, where
//!   release 0.1.0 ignores them: each connection speaks the highest version both know
//!   ([`PeerStats::version`]), and a peer older than the cluster version
//!   ([`NetConfig::version_floor`]) is refused.
//! - **TLS** ([`tls`], optional: [`NetConfig::tls`]): mutual TLS under the handshake, each
//!   member's certificate naming its cluster and node id; a dialer whose hello claims
//!   another identity than its certificate's is refused, and so is one without a
//!   certificate of the cluster's CA, before any Raft message is read.
//! - **Outbound**: one persistent connection per peer, owned by a writer task fed by a
//!   bounded queue; sends never block and are dropped (and counted) when the queue is
//!   full; each batch is flushed once; `TCP_NODELAY` is on; reconnects back off
//!   exponentially with jitter up to [`NetConfig::backoff_max`].
//! - **Inbound**: an accept loop and a reader per connection; messages reach the node
//!   through one bounded channel. A malformed or oversized frame closes that connection
//!   only.
//! - **Membership**: the peers can change at runtime ([`Transport::set_peers`]); a removed
//!   peer's connections close and its handshakes are refused from then on.
//! - **Streams**: besides the one-way message connections, a node can open a two-way
//!   stream of frames to a peer ([`Transport::open_stream`]) for a bulk transfer such as a
//!   snapshot, so that it never holds up the messages; the peer receives it through
//!   [`Transport::take_streams`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), raft_net::NetError> {
//! use std::collections::BTreeMap;
//! use raft_net::{NetConfig, Transport};
//!
//! let peers = BTreeMap::from([(2, "127.0.0.1:7002".parse().unwrap())]);
//! let cfg = NetConfig::new(1, "demo", "127.0.0.1:7001".parse().unwrap(), peers);
//! let (transport, mut inbound) = Transport::start(cfg).await?;
//! while let Some((from, msg)) = inbound.recv().await {
//!     // feed `msg` to the node; send its output with `transport.send(..)`
//!     # let _ = (from, msg, &transport);
//! }
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod backoff;
pub mod certs;
mod config;
mod error;
mod frame;
mod handshake;
mod inbound;
mod io;
mod outbound;
mod peers;
mod stats;
mod stream;
pub mod tls;
mod transport;
mod wire;

pub use config::NetConfig;
pub use error::NetError;
pub use frame::{
    decode_frame, decode_message, encode_message, FrameCodec, FrameError, MessageDecoder,
    HANDSHAKE_FRAME_BYTES, LENGTH_PREFIX_BYTES,
};
pub use handshake::{
    Authenticator, Channel, Hello, HelloReply, HelloVersions, NoAuth, PeerVersion, VersionFloor,
    WelcomeVersions, MAGIC, REFUSED,
};
pub use stats::{ListenerStats, PeerStats};
pub use stream::PeerStream;
pub use tls::{PeerTls, ServerTls, TlsError, TlsFiles};
pub use transport::{Inbound, Transport};
