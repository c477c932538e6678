//! The handshake that opens every connection. The dialer sends a [`Hello`]; the acceptor
//! checks it and answers with a [`HelloReply`] before any message flows. Credentials are a
//! field of the hello checked by an [`Authenticator`], so that a shared-secret or
//! certificate-based variant slots in without changing the rest.
//!
//! **Versions.** From protocol 5 on, the dialer appends [`HelloVersions`] (the protocol
//! range it speaks and its release) after the hello, and the acceptor appends
//! [`WelcomeVersions`] (the protocol chosen: the highest both speak, and its release) after
//! its welcome. Release 0.1.0 decodes the hello and the welcome and ignores the bytes after
//! them, so the two sides meet whichever is older: a dialer's `version` field is the oldest
//! protocol it speaks (what such a node checks), and a side that appends nothing is taken
//! for release 0.1.0, protocol 4. A peer whose release line is below the cluster version
//! ([`VersionFloor`]) is refused: the cluster has activated what it cannot read.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use raft_core::{ClusterVersion, NodeId, Release, OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION};
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
    /// The oldest protocol version the dialer speaks ([`OLDEST_PROTOCOL_VERSION`]; the
    /// only one, for release 0.1.0).
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

/// What a dialer of protocol 5 or later appends after its [`Hello`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloVersions {
    /// The oldest protocol version it speaks.
    pub oldest: u16,
    /// The newest protocol version it speaks.
    pub newest: u16,
    /// Its release.
    pub release: Release,
}

impl HelloVersions {
    /// This build's.
    pub const OURS: HelloVersions = HelloVersions {
        oldest: OLDEST_PROTOCOL_VERSION,
        newest: PROTOCOL_VERSION,
        release: Release::CURRENT,
    };
}

/// What an acceptor of protocol 5 or later appends after [`HelloReply::Welcome`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WelcomeVersions {
    /// The protocol version the connection speaks.
    pub protocol: u16,
    /// The acceptor's release.
    pub release: Release,
}

/// What a peer speaks on a connection, as its handshake told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerVersion {
    /// The protocol version of the connection.
    pub protocol: u16,
    /// The peer's release ([`Release::UNSAID`] for a peer that does not say).
    pub release: Release,
}

impl PeerVersion {
    /// A peer of release 0.1.0, whose handshake carries no versions.
    pub const UNSAID: PeerVersion = PeerVersion {
        protocol: OLDEST_PROTOCOL_VERSION,
        release: Release::UNSAID,
    };

    /// Packed into 64 bits (never 0), to be kept in an atomic.
    pub(crate) fn pack(self) -> u64 {
        u64::from(self.protocol) << 48
            | u64::from(self.release.major) << 32
            | u64::from(self.release.minor) << 16
            | u64::from(self.release.patch)
    }

    /// Unpacks [`pack`](Self::pack); `None` for 0 (not known).
    pub(crate) fn unpack(v: u64) -> Option<PeerVersion> {
        let part = |shift: u32| ((v >> shift) & 0xffff) as u16;
        (v != 0).then(|| PeerVersion {
            protocol: part(48),
            release: Release {
                major: part(32),
                minor: part(16),
                patch: part(0),
            },
        })
    }
}

/// The cluster version as the transport enforces it: peers of an older release line are
/// refused. Shared between the transport and the node that raises it.
#[derive(Clone, Debug)]
pub struct VersionFloor(Arc<AtomicU32>);

impl Default for VersionFloor {
    fn default() -> Self {
        VersionFloor::new(ClusterVersion::INITIAL)
    }
}

impl VersionFloor {
    /// A floor at `v`.
    pub fn new(v: ClusterVersion) -> Self {
        let floor = VersionFloor(Arc::new(AtomicU32::new(0)));
        floor.raise(v);
        floor
    }

    /// Raises the floor to `v` (never lowers it).
    pub fn raise(&self, v: ClusterVersion) {
        let packed = u32::from(v.major) << 16 | u32::from(v.minor);
        self.0.fetch_max(packed, Ordering::AcqRel);
    }

    /// The floor.
    pub fn get(&self) -> ClusterVersion {
        let v = self.0.load(Ordering::Acquire);
        ClusterVersion {
            major: (v >> 16) as u16,
            minor: (v & 0xffff) as u16,
        }
    }

    /// Why a peer of `release` may not be spoken to, if it may not.
    pub(crate) fn check(&self, release: Release) -> Result<(), String> {
        let floor = self.get();
        if release.line() < floor {
            return Err(format!(
                "the peer runs release {release}, older than the cluster version {floor}: \
                 it cannot read what the cluster writes; upgrade it"
            ));
        }
        Ok(())
    }
}

/// The protocol version to speak with a dialer whose hello says `oldest` and, from
/// protocol 5 on, `theirs`: the highest both speak.
pub(crate) fn negotiate(oldest: u16, theirs: Option<&HelloVersions>) -> Result<u16, String> {
    let (lo, hi) = match theirs {
        None => (oldest, oldest),
        Some(v) => (v.oldest.max(oldest), v.newest),
    };
    let chosen = hi.min(PROTOCOL_VERSION);
    if chosen < lo.max(OLDEST_PROTOCOL_VERSION) {
        return Err(format!(
            "protocol versions {lo}..={hi} are not supported (this node speaks \
             {OLDEST_PROTOCOL_VERSION}..={PROTOCOL_VERSION})"
        ));
    }
    Ok(chosen)
}

/// A hello as sent: the [`Hello`], then this build's [`HelloVersions`].
pub(crate) fn encode_hello(hello: &Hello) -> Result<Vec<u8>, postcard::Error> {
    let mut bytes = postcard::to_allocvec(hello)?;
    bytes.extend_from_slice(&postcard::to_allocvec(&HelloVersions::OURS)?);
    Ok(bytes)
}

/// Reads a hello as received: the [`Hello`] and what follows it, if anything.
pub(crate) fn decode_hello(bytes: &[u8]) -> Result<(Hello, Option<HelloVersions>), String> {
    let (hello, rest) =
        postcard::take_from_bytes::<Hello>(bytes).map_err(|e| format!("not a hello: {e}"))?;
    if rest.is_empty() {
        return Ok((hello, None));
    }
    let versions = postcard::from_bytes::<HelloVersions>(rest)
        .map_err(|e| format!("a hello with unreadable versions: {e}"))?;
    Ok((hello, Some(versions)))
}

/// A welcome as sent: [`HelloReply::Welcome`], then the chosen protocol and this build's
/// release.
pub(crate) fn encode_welcome(protocol: u16) -> Result<Vec<u8>, postcard::Error> {
    let mut bytes = postcard::to_allocvec(&HelloReply::Welcome)?;
    bytes.extend_from_slice(&postcard::to_allocvec(&WelcomeVersions {
        protocol,
        release: Release::CURRENT,
    })?);
    Ok(bytes)
}

/// How a dialer's handshake ended, from the acceptor's reply.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReplyError {
    /// The acceptor refused, or the dialer refuses the acceptor's release.
    Refused(String),
    /// Not a reply.
    Malformed(String),
}

/// Reads the acceptor's reply: what the connection speaks, or why it ends.
pub(crate) fn decode_reply(bytes: &[u8], floor: &VersionFloor) -> Result<PeerVersion, ReplyError> {
    let (reply, rest) = postcard::take_from_bytes::<HelloReply>(bytes)
        .map_err(|e| ReplyError::Malformed(e.to_string()))?;
    if let HelloReply::Refused(reason) = reply {
        return Err(ReplyError::Refused(reason));
    }
    let version = if rest.is_empty() {
        PeerVersion::UNSAID
    } else {
        let v = postcard::from_bytes::<WelcomeVersions>(rest)
            .map_err(|e| ReplyError::Malformed(format!("unreadable versions: {e}")))?;
        if !(OLDEST_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&v.protocol) {
            return Err(ReplyError::Malformed(format!(
                "the peer chose protocol version {}, which this node does not speak",
                v.protocol
            )));
        }
        PeerVersion {
            protocol: v.protocol,
            release: v.release,
        }
    };
    floor.check(version.release).map_err(ReplyError::Refused)?;
    Ok(version)
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
            version: OLDEST_PROTOCOL_VERSION,
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

    /// Checks a received hello (and the versions that followed it) against this node's
    /// identity and the cluster version; what the connection speaks, or why it may not.
    pub(crate) fn check(
        &self,
        versions: Option<&HelloVersions>,
        cluster_id: &str,
        me: NodeId,
        known: impl Fn(NodeId) -> bool,
        auth: &dyn Authenticator,
        floor: &VersionFloor,
    ) -> Result<PeerVersion, String> {
        if self.magic != MAGIC {
            return Err("wrong magic: not a raft-net peer".into());
        }
        let protocol = negotiate(self.version, versions)?;
        let release = versions.map_or(Release::UNSAID, |v| v.release);
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
        floor.check(release)?;
        auth.verify(self)?;
        Ok(PeerVersion { protocol, release })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> Hello {
        Hello::new("c", 1, 2)
    }

    #[test]
    fn a_hello_without_versions_is_release_0_1_0_and_spoken_to_in_its_protocol() {
        assert_eq!(negotiate(4, None), Ok(4));
        assert!(
            negotiate(3, None).is_err(),
            "protocol 3 is older than 0.1.0"
        );
        let plain = postcard::to_allocvec(&hello()).unwrap();
        assert_eq!(decode_hello(&plain), Ok((hello(), None)));
        let v = hello()
            .check(None, "c", 2, |_| true, &NoAuth, &VersionFloor::default())
            .unwrap();
        assert_eq!(v, PeerVersion::UNSAID);
    }

    #[test]
    fn two_nodes_speak_the_newest_protocol_both_know() {
        assert_eq!(
            negotiate(4, Some(&HelloVersions::OURS)),
            Ok(PROTOCOL_VERSION)
        );
        let newer = HelloVersions {
            oldest: 4,
            newest: PROTOCOL_VERSION + 3,
            release: Release::CURRENT,
        };
        assert_eq!(negotiate(4, Some(&newer)), Ok(PROTOCOL_VERSION));
        let too_new = HelloVersions {
            oldest: PROTOCOL_VERSION + 1,
            ..newer
        };
        assert!(negotiate(PROTOCOL_VERSION + 1, Some(&too_new)).is_err());
    }

    #[test]
    fn release_0_1_0_reads_this_builds_hello_and_welcome_as_its_own() {
        // Release 0.1.0 decodes with `postcard::from_bytes`, which ignores what follows.
        let sent = encode_hello(&hello()).unwrap();
        assert_eq!(postcard::from_bytes::<Hello>(&sent).unwrap(), hello());
        assert_eq!(
            postcard::from_bytes::<Hello>(&sent).unwrap().version,
            4,
            "0.1.0 accepts protocol 4 only"
        );
        let welcome = encode_welcome(PROTOCOL_VERSION).unwrap();
        assert_eq!(
            postcard::from_bytes::<HelloReply>(&welcome).unwrap(),
            HelloReply::Welcome
        );
        // And this build reads both in full.
        assert_eq!(
            decode_hello(&sent),
            Ok((hello(), Some(HelloVersions::OURS)))
        );
        let floor = VersionFloor::default();
        assert_eq!(
            decode_reply(&welcome, &floor),
            Ok(PeerVersion {
                protocol: PROTOCOL_VERSION,
                release: Release::CURRENT
            })
        );
        let old_welcome = postcard::to_allocvec(&HelloReply::Welcome).unwrap();
        assert_eq!(decode_reply(&old_welcome, &floor), Ok(PeerVersion::UNSAID));
    }

    #[test]
    fn once_the_cluster_version_is_raised_older_releases_are_refused_both_ways() {
        let floor = VersionFloor::new(ClusterVersion::CURRENT);
        floor.raise(ClusterVersion::INITIAL);
        assert_eq!(
            floor.get(),
            ClusterVersion::CURRENT,
            "a floor never goes down"
        );
        if ClusterVersion::CURRENT > ClusterVersion::INITIAL {
            let err = hello()
                .check(None, "c", 2, |_| true, &NoAuth, &floor)
                .unwrap_err();
            assert!(err.contains("upgrade it"), "{err}");
            let old_welcome = postcard::to_allocvec(&HelloReply::Welcome).unwrap();
            assert!(matches!(
                decode_reply(&old_welcome, &floor),
                Err(ReplyError::Refused(_))
            ));
        }
        let ours = hello()
            .check(
                Some(&HelloVersions::OURS),
                "c",
                2,
                |_| true,
                &NoAuth,
                &floor,
            )
            .unwrap();
        assert_eq!(ours.release, Release::CURRENT);
    }

    #[test]
    fn garbage_after_a_hello_or_a_welcome_is_refused_not_guessed() {
        let mut sent = postcard::to_allocvec(&hello()).unwrap();
        sent.push(0xff);
        assert!(decode_hello(&sent).is_err());
        let mut welcome = postcard::to_allocvec(&HelloReply::Welcome).unwrap();
        welcome.extend_from_slice(
            &postcard::to_allocvec(&WelcomeVersions {
                protocol: PROTOCOL_VERSION + 1,
                release: Release::CURRENT,
            })
            .unwrap(),
        );
        assert!(matches!(
            decode_reply(&welcome, &VersionFloor::default()),
            Err(ReplyError::Malformed(_))
        ));
    }

    #[test]
    fn a_peers_version_survives_being_kept_in_an_atomic() {
        let v = PeerVersion {
            protocol: 5,
            release: Release {
                major: 1,
                minor: 65535,
                patch: 7,
            },
        };
        assert_eq!(PeerVersion::unpack(v.pack()), Some(v));
        assert_eq!(PeerVersion::unpack(0), None);
    }
}
