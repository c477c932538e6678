//! Tunables of one node, with defaults chosen for a LAN.

use crate::error::ConfigError;
use crate::types::{LogIndex, NodeId};

/// Settings of one node. Time is counted in ticks: the caller calls [`crate::Node::tick`]
/// at a fixed interval (10 ms is the intended default, giving the timings below).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node's id.
    pub id: NodeId,
    /// The voters of the cluster when neither the log nor a snapshot holds a configuration
    /// (a new cluster's bootstrap configuration).
    pub voters: Vec<NodeId>,
    /// The learners of that initial configuration. A node joining an existing cluster
    /// starts as one of them, with the cluster's voters in `voters`. Default none.
    pub learners: Vec<NodeId>,
    /// The base election timeout `T` in ticks: a follower campaigns after a random timeout in
    /// `[T, 2T)` without hearing from a leader. Default 30 (300–600 ms at 10 ms ticks).
    pub election_ticks: u32,
    /// A leader sends heartbeats every `H` ticks. Default 5 (50 ms). Must be below
    /// `election_ticks`.
    pub heartbeat_ticks: u32,
    /// Ask for pre-votes before disrupting the cluster with a new term. Default on.
    pub pre_vote: bool,
    /// A leader that has not heard from a majority for an election timeout steps down, and
    /// a follower that hears from a live leader refuses to vote. Default on.
    pub check_quorum: bool,
    /// Messages of entries a leader may have unacknowledged per follower. Default 256.
    pub max_inflight_msgs: usize,
    /// Bytes of entries a leader may have unacknowledged per follower. Default 32 MiB.
    pub max_inflight_bytes: u64,
    /// Entries per AppendEntries message at most. Default 4096.
    pub max_entries_per_msg: usize,
    /// Entry bytes per AppendEntries message at most (one entry is always allowed, even if
    /// larger). Default 1 MiB.
    pub max_bytes_per_msg: u64,
    /// Bytes of proposed but uncommitted entries a leader accepts before refusing proposals
    /// with [`crate::ProposeError::Busy`]. Default 64 MiB.
    pub max_uncommitted_bytes: u64,
    /// Bytes of committed entries handed out in one [`crate::Ready`] at most. Default 16 MiB.
    pub max_committed_bytes_per_ready: u64,
    /// Bytes of committed entries handed out and not yet acknowledged applied
    /// ([`crate::Node::on_applied`]) at most: a caller that applies in the background gets
    /// no more while this much waits (one batch always goes when none waits). Default
    /// 64 MiB.
    pub max_unapplied_bytes: u64,
    /// Serve linearizable reads on the leader from its lease, without a heartbeat round of
    /// their own, while a majority acknowledged a round sent within the last
    /// `election_ticks - lease_margin_ticks` ticks. Safe only while clocks advance at
    /// rates within the margin of each other (see the crate's `lease` module documentation);
    /// needs `check_quorum`, and must be set on every voter (it also makes a starting node
    /// ignore candidates for an election timeout). Default off.
    pub lease_reads: bool,
    /// Ticks of the election timeout a lease leaves unused, for clock drift. Default 5
    /// (with 30 election ticks: a voter's clock may run up to 20 % faster than the
    /// leader's).
    pub lease_margin_ticks: u32,
    /// The index the application has applied (on restart, entries up to here are not
    /// delivered again). Default 0.
    pub applied: LogIndex,
    /// Seed of the node's random numbers (election timeouts). Two nodes given the same
    /// inputs and seed behave identically. Mixed with `id`, so one seed serves a cluster.
    pub seed: u64,
}

impl Config {
    /// A configuration with the defaults for node `id` of a cluster of `voters`.
    pub fn new(id: NodeId, voters: impl IntoIterator<Item = NodeId>) -> Self {
        Config {
            id,
            voters: voters.into_iter().collect(),
            learners: Vec::new(),
            election_ticks: 30,
            heartbeat_ticks: 5,
            pre_vote: true,
            check_quorum: true,
            max_inflight_msgs: 256,
            max_inflight_bytes: 32 << 20,
            max_entries_per_msg: 4096,
            max_bytes_per_msg: 1 << 20,
            max_uncommitted_bytes: 64 << 20,
            max_committed_bytes_per_ready: 16 << 20,
            max_unapplied_bytes: 64 << 20,
            lease_reads: false,
            lease_margin_ticks: 5,
            applied: 0,
            seed: 0,
        }
    }

    /// Checks that the settings make sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.voters.contains(&self.id) && !self.learners.contains(&self.id) {
            return Err(ConfigError::NotAMember(self.id));
        }
        if self.voters.iter().any(|v| self.learners.contains(v)) {
            return Err(ConfigError::Invalid(
                "a node cannot be both a voter and a learner",
            ));
        }
        if self.heartbeat_ticks == 0 {
            return Err(ConfigError::Invalid("heartbeat_ticks must be at least 1"));
        }
        if self.election_ticks <= self.heartbeat_ticks {
            return Err(ConfigError::Invalid(
                "election_ticks must be greater than heartbeat_ticks",
            ));
        }
        if self.max_inflight_msgs == 0 {
            return Err(ConfigError::Invalid("max_inflight_msgs must be at least 1"));
        }
        if self.max_entries_per_msg == 0 {
            return Err(ConfigError::Invalid(
                "max_entries_per_msg must be at least 1",
            ));
        }
        if self.lease_reads && !self.check_quorum {
            return Err(ConfigError::Invalid(
                "lease_reads needs check_quorum (the lease is check-quorum's)",
            ));
        }
        if self.lease_reads && self.lease_margin_ticks >= self.election_ticks {
            return Err(ConfigError::Invalid(
                "lease_margin_ticks must be below election_ticks",
            ));
        }
        if self.max_bytes_per_msg == 0 || self.max_inflight_bytes == 0 {
            return Err(ConfigError::Invalid(
                "max_bytes_per_msg and max_inflight_bytes must be at least 1",
            ));
        }
        Ok(())
    }
}
