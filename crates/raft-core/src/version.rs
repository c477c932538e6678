//! Versions: the protocol a node speaks to each peer, and the cluster version that gates
//! features changing what other nodes must read.
//!
//! - The **protocol** is negotiated per connection: each side knows the range
//!   [`OLDEST_PROTOCOL_VERSION`]`..=`[`PROTOCOL_VERSION`] and the two speak the highest
//!   version both know. A node of an older release is spoken to as it expects.
//! - The **cluster version** is the release line (`major.minor`) every member runs at least.
//!   A leader raises it through the log (an entry of kind
//!   [`EntryKind::ClusterVersion`](crate::EntryKind::ClusterVersion)) once every member
//!   reports a release that knows it; features that change messages, entries or snapshot
//!   files activate only at a cluster version that has them. It never goes down.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The newest protocol version this build speaks.
///
/// 2: entries may have the kind `Command`, which version 1 cannot decode.
/// 3: membership changes: snapshots carry a configuration, `RequestVote` says whether it
/// comes from a leadership transfer, and `TimeoutNow` exists.
/// 4: the key-value commands of `raft-client` carry conditions and revisions; a node of
/// version 3 would take them for plain data, and its map would part from its peers'.
/// 5: the handshake carries each side's protocol range and release; entries may have the
/// kind `ClusterVersion` (sent only once the cluster version is 0.2 or later).
pub const PROTOCOL_VERSION: u16 = 5;

/// The oldest protocol version this build speaks: that of release 0.1.0.
pub const OLDEST_PROTOCOL_VERSION: u16 = 4;

/// A release of this project, `major.minor.patch`, as nodes tell each other in the
/// handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Release {
    /// The major version.
    pub major: u16,
    /// The minor version.
    pub minor: u16,
    /// The patch version.
    pub patch: u16,
}

impl Release {
    /// This build's release.
    pub const CURRENT: Release = Release {
        major: 0,
        minor: 2,
        patch: 0,
    };

    /// What a peer that does not say is taken for: release 0.1.0, the last whose handshake
    /// carried no release.
    pub const UNSAID: Release = Release {
        major: 0,
        minor: 1,
        patch: 0,
    };

    /// Its release line, the cluster version it can run at.
    pub fn line(self) -> ClusterVersion {
        ClusterVersion {
            major: self.major,
            minor: self.minor,
        }
    }
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// A release line, `major.minor`: what a cluster version names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClusterVersion {
    /// The major version.
    pub major: u16,
    /// The minor version.
    pub minor: u16,
}

impl ClusterVersion {
    /// The version of a cluster whose log never raised it: release 0.1, the first.
    pub const INITIAL: ClusterVersion = ClusterVersion { major: 0, minor: 1 };

    /// This build's release line: the highest cluster version it can run at.
    pub const CURRENT: ClusterVersion = ClusterVersion {
        major: Release::CURRENT.major,
        minor: Release::CURRENT.minor,
    };

    /// Parses `major.minor` (a `.patch` and anything after it are ignored).
    pub fn parse(s: &str) -> Option<ClusterVersion> {
        let mut parts = s.trim().split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(ClusterVersion { major, minor })
    }

    /// The payload of a `ClusterVersion` entry that raises the cluster to this version.
    pub fn encode(self) -> Vec<u8> {
        let mut v = Vec::with_capacity(4);
        v.extend_from_slice(&self.major.to_le_bytes());
        v.extend_from_slice(&self.minor.to_le_bytes());
        v
    }

    /// Reads the payload of a `ClusterVersion` entry; `None` if it is not one.
    pub fn decode(data: &[u8]) -> Option<ClusterVersion> {
        let [a, b, c, d] = *data else { return None };
        Some(ClusterVersion {
            major: u16::from_le_bytes([a, b]),
            minor: u16::from_le_bytes([c, d]),
        })
    }
}

impl fmt::Display for ClusterVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_release_is_this_crates_version() {
        assert_eq!(Release::CURRENT.to_string(), env!("CARGO_PKG_VERSION"));
        assert_eq!(Release::CURRENT.line(), ClusterVersion::CURRENT);
    }

    #[test]
    fn versions_order_by_major_then_minor_and_read_back_as_written() {
        let v = |major, minor| ClusterVersion { major, minor };
        assert!(v(0, 2) > v(0, 1) && v(1, 0) > v(0, 9) && v(0, 10) > v(0, 9));
        assert_eq!(ClusterVersion::parse("0.2.7"), Some(v(0, 2)));
        assert_eq!(ClusterVersion::parse("1.12"), Some(v(1, 12)));
        assert_eq!(ClusterVersion::parse("1"), None);
        assert_eq!(ClusterVersion::parse("x.1"), None);
        assert_eq!(ClusterVersion::decode(&v(3, 4).encode()), Some(v(3, 4)));
        assert_eq!(ClusterVersion::decode(&[1, 2, 3]), None);
        assert_eq!(v(0, 2).to_string(), "0.2");
    }
}
