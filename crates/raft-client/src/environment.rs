//! What a node runs on besides its own code: the network to its peers. A real node uses
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
}

impl Environment {
    /// Real sockets.
    pub fn real() -> Environment {
        Environment {
            network: Arc::new(Tcp),
        }
    }

    /// The same, with `network` connecting the node to its peers.
    pub fn with_network(mut self, network: Arc<dyn Connect>) -> Environment {
        self.network = network;
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
