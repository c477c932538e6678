//! What a node runs on besides its own code: the network to its peers, the file system of
//! its log and snapshots, and (for a single-thread node) how long its disk takes. A real node uses
//! `raft-net`'s TCP transport ([`Environment::real`], what [`RaftNode::start`] uses); the
//! node simulator gives nodes a simulated one ([`RaftNode::start_in`]).
//!
//! [`RaftNode::start`]: crate::RaftNode::start
//! [`RaftNode::start_in`]: crate::RaftNode::start_in

use std::sync::Arc;

use crate::network::{Connect, Tcp};

/// The world a node runs in.
#[derive(Clone)]
pub struct Environment {
    pub(crate) network: Arc<dyn Connect>,
    pub(crate) disk_delay: Option<crate::exec::DiskDelay>,
    pub(crate) vfs: Option<Arc<dyn raft_storage::Vfs>>,
}

impl Environment {
    /// Real sockets.
    pub fn real() -> Environment {
        Environment {
            network: Arc::new(Tcp),
            disk_delay: None,
            vfs: None,
        }
    }

    /// The same, with `network` connecting the node to its peers.
    pub fn with_network(mut self, network: Arc<dyn Connect>) -> Environment {
        self.network = network;
        self
    }

    /// The same, with the node's own files (the Raft log's WAL, the directory's identity
    /// and the snapshot files) kept through `vfs` instead of the real file system: the node
    /// simulator's disk, which can lose what was not synced when the node crashes. The
    /// state machine's own files are its own business.
    pub fn with_vfs(mut self, vfs: Arc<dyn raft_storage::Vfs>) -> Environment {
        self.vfs = Some(vfs);
        self
    }

    /// The same, with each piece of blocking work of a single-thread node
    /// ([`NodeConfig::single_thread`](crate::NodeConfig::single_thread): a log write and
    /// its sync, a snapshot file, a read of the log) done only after `delay()` has passed
    /// on the runtime's clock: the node simulator's slow disk. Ignored by a node with
    /// threads, whose disk takes the time it takes.
    pub fn with_disk_delay(
        mut self,
        delay: Arc<dyn Fn() -> std::time::Duration + Send + Sync>,
    ) -> Environment {
        self.disk_delay = Some(delay);
        self
    }
}

impl Default for Environment {
    fn default() -> Self {
        Environment::real()
    }
}

impl std::fmt::Debug for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Environment").finish_non_exhaustive()
    }
}
