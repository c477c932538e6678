//! # raft-core
//!
//! The Raft consensus protocol as a pure, deterministic state machine: no threads, no
//! clocks, no sockets, no files, no global randomness. The caller drives a [`Node`]:
//!
//! - [`Node::tick`] advances logical time (call it at a fixed interval, 10 ms by default);
//! - [`Node::step`] feeds a message from a peer;
//! - [`Node::propose`] appends an entry on the leader;
//! - [`Node::read_index`] starts a linearizable read;
//! - [`Node::propose_conf_change`] changes the membership (learners, voters, joint
//!   configurations; see [`Membership`]) and [`Node::transfer_leadership`] hands leadership
//!   to another voter;
//!
//! and then takes a [`Ready`] with [`Node::ready`], carries it out (persist, send, apply,
//! in the order its documentation gives) and calls [`Node::advance`].
//!
//! Persisted state is read through the [`LogStore`] trait; [`MemStorage`] implements it in
//! memory for tests. Given the same configuration (including [`Config::seed`]) and the same
//! inputs, a node produces the same outputs.
//!
//! ```
//! use raft_core::{Config, MemStorage, Node, Role};
//!
//! let mut node = Node::new(Config::new(1, [1]), MemStorage::new()).unwrap();
//! while node.role() != Role::Leader {
//!     node.tick();
//! }
//! let (index, term) = node.propose(&b"hello"[..]).unwrap();
//! let mut applied = Vec::new();
//! while !applied.iter().any(|e: &raft_core::Entry| e.index == index) {
//!     let rd = node.ready();
//!     node.storage_mut().apply_ready(&rd).unwrap();
//!     applied.extend(rd.committed_entries);
//!     node.advance();
//! }
//! assert_eq!(applied.last().unwrap().term, term);
//! ```

#![forbid(unsafe_code)]

mod conf_change;
mod config;
mod election;
mod entry;
mod error;
mod lease;
mod log;
mod membership;
mod message;
mod node;
mod progress;
mod quorum;
mod read_index;
mod ready;
mod replication;
mod rng;
mod snapshot;
mod storage;
mod transfer;
mod types;
mod version;

pub use config::Config;
pub use entry::{Entry, EntryKind, ENTRY_OVERHEAD_BYTES};
pub use error::{
    ConfChangeError, ConfigError, ProposeError, ReadError, StorageError, TransferError,
};
pub use membership::{ConfChange, Membership};
pub use message::{Envelope, Message, MessageBody, RejectHint};
pub use node::{Node, PeerProgress, Status};
pub use progress::{Progress, ProgressState};
pub use ready::{ReadOutcome, ReadState, Ready};
pub use snapshot::{SnapshotMeta, SnapshotOutcome};
pub use storage::{LogStore, MemStorage};
pub use types::plausible_term;
pub use types::{HardState, LogIndex, NodeId, Role, SoftState, Term, MAX_TERM_JUMP, TERM_LIMIT};
pub use version::{ClusterVersion, Release, OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION};
