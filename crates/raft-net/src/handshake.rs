//! The handshake that opens every connection. The dialer sends a [`Hello`]; the acceptor
//! checks it and answers with a [`HelloReply`] before any message flows. Credentials are a
//! field of the hello checked by an [`Authenticator`], so that a shared-secret or
//! certificate-based variant slots in without changing the rest.

use raft_core::{NodeId, PROTOCOL_VERSION};
use serde::{Deserialize, Serialize};

/// The bytes every hello starts with.
pub const MAGIC: [u8; 8] = *b"RAFTNET\x01";

/// The only reason an acceptor gives a refused dialer. The real reason (wrong cluster,
/// unknown node, ...) would tell an outsider this node's cluster id and its peers' ids; it
/// goes to the acceptor's log instead.
pub const REFUSED: &str = "refused; the peer's log says why";

/// What a connection carries after its handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Channel {
    /// Raft messages, one way: from the dialer to the acceptor.
    Messages,
    /// A stream of frames both ways, for a bulk transfer (a snapshot) beside the messages.
    Stream,
}

/// The first frame on a connection, from the dialer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Must be [`MAGIC`].
    pub magic: [u8; 8],
    /// The dialer's protocol version ([`PROTOCOL_VERSION`]).
    pub version: u16,
    /// The dialer's cluster.
    pub cluster_id: String,
    /// The dialer's node id.
    pub from: NodeId,
    /// The node the dialer means to reach.
    pub to: NodeId,
    /// What the connection will carry.
    pub channel: Channel,
    /// Credentials added by the dialer's [`Authenticator`] (empty without one).
    pub credentials: Vec<u8>,
}

/// The acceptor's answer to a [`Hello`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    /// The connection is accepted; messages may follow.
    Welcome,
    /// The connection is refused; the acceptor closes it. The text is always [`REFUSED`].
    Refused(String),
}

/// Adds credentials to outgoing hellos and checks those of incoming ones.
pub trait Authenticator: Send + Sync {
    /// Credentials for a hello about to be sent.
    fn credentials(&self, hello: &Hello) -> Vec<u8>;
    /// Accepts or refuses an incoming hello (its other fields are already checked).
    fn verify(&self, hello: &Hello) -> Result<(), String>;
}

/// No authentication: any well-formed hello from a known peer is accepted.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoAuth;

impl Authenticator for NoAuth {
    fn credentials(&self, _hello: &Hello) -> Vec<u8> {
        Vec::new()
    }
    fn verify(&self, _hello: &Hello) -> Result<(), String> {
        Ok(())
    }
}

impl Hello {
    /// A hello from `from` of `cluster_id` to `to`, without credentials.
    pub fn new(cluster_id: &str, from: NodeId, to: NodeId) -> Self {
        Hello {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            cluster_id: cluster_id.to_string(),
            from,
            to,
            channel: Channel::Messages,
            credentials: Vec::new(),
        }
    }

    /// The same hello for a stream connection.
    pub fn for_stream(mut self) -> Self {
        self.channel = Channel::Stream;
        self
    }

    /// Checks a received hello against this node's identity; `Err` carries the reason.
    pub(crate) fn check(
        &self,
        cluster_id: &str,
        me: NodeId,
        known: impl Fn(NodeId) -> bool,
        auth: &dyn Authenticator,
    ) -> Result<(), String> {
        if self.magic != MAGIC {
            return Err("wrong magic: not a raft-net peer".into());
        }
        if self.version != PROTOCOL_VERSION {
            return Err(format!(
                "protocol version {} is not supported (this node speaks {PROTOCOL_VERSION})",
                self.version
            ));
        }
        if self.cluster_id != cluster_id {
            return Err(format!(
                "cluster {:?} is not this node's cluster {cluster_id:?}",
                self.cluster_id
            ));
        }
        if self.to != me {
            return Err(format!(
                "connection meant for node {}, this is node {me}",
                self.to
            ));
        }
        if !known(self.from) {
            return Err(format!("node {} is not a known peer", self.from));
        }
        auth.verify(self)
    }
}
