//! Errors of the transport.

use std::io;
use std::net::SocketAddr;

use thiserror::Error;

/// Why a transport could not start.
#[derive(Debug, Error)]
pub enum NetError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source} (is another process using the port?)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The configuration is unusable.
    #[error("invalid transport configuration: {0}")]
    Config(String),
}

/// Why a connection was closed; logged with the peer's address.
#[derive(Debug, Error)]
pub(crate) enum ConnError {
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("handshake refused: {0}")]
    Refused(String),
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("timed out")]
    Timeout,
    #[error("connection closed by the peer")]
    Closed,
}
