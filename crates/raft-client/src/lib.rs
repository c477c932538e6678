//! # raft-client
//!
//! Run a Raft node on tokio and use it from Rust. [`RaftNode::start`] opens the data
//! directory (`raft-storage`), starts the transport (`raft-net`) and spawns the runtime
//! task that drives the protocol (`raft-core`); the returned handle is `Clone + Send` and
//! serves any number of tasks at once.
//!
//! | the original (Go) | here |
//! |---|---|
//! | `New(id, peers)` + `Run()` | [`RaftNode::start`]`(config, state_machine)` |
//! | `Submit(msg)` / `Request` | [`RaftNode::submit`] → `Ok(Committed { index, term, response })` once committed and applied, or an [`Error`] that says what to do |
//! | `Retrieve(start)` | [`RaftNode::retrieve`]`(from, limit)` → committed entries, consistent with the committed log |
//! | `Leader()` | [`RaftNode::leader`] (and [`RaftNode::watch_leader`]) |
//! | — | [`RaftNode::read_barrier`] (linearizable reads), [`RaftNode::status`], [`RaftNode::shutdown`] |
//! | — | [`RaftNode::members`], [`RaftNode::add_learner`], [`RaftNode::promote`], [`RaftNode::remove_member`], [`RaftNode::change_membership`], [`RaftNode::transfer_leadership`]; the [`AutopilotConfig`] promotes caught-up learners |
//!
//! Each turn, the runtime feeds the core what arrived (ticks, peer messages, client
//! commands — all that arrived together, so many submits become one append, one sync and
//! one message per follower), makes the core's output durable on a blocking thread, sends
//! the messages that waited for it, applies committed entries to the [`StateMachine`] and
//! answers callers. As leader it sizes each follower's in-flight window from that
//! follower's measured round trip and acknowledgement rate ([`FlowConfig`]).
//!
//! ```no_run
//! use std::collections::BTreeMap;
//! use raft_client::{NodeConfig, Peer, RaftNode, ReplicatedLog};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let peers: BTreeMap<u64, Peer> = (1..=3)
//!         .map(|id| (id, Peer { raft: format!("127.0.0.1:{}", 7000 + id).parse().unwrap(), api: None }))
//!         .collect();
//!     let id = 1; // run this program three times, with ids 1, 2 and 3
//!     let cfg = NodeConfig::new(id, "demo", peers, format!("data/node-{id}"));
//!     let node = RaftNode::start(cfg, ReplicatedLog::new()).await?;
//!     loop {
//!         match node.submit(&b"hello"[..]).await {
//!             Ok(c) => { println!("committed at {}", c.index); break; }
//!             Err(e) => { eprintln!("{e}"); tokio::time::sleep(std::time::Duration::from_millis(200)).await; }
//!         }
//!     }
//!     for e in node.retrieve(1, 100).await? {
//!         println!("{} {} {:?}", e.index, e.term, e.data);
//!     }
//!     node.shutdown().await;
//!     Ok(())
//! }
//! ```

#![forbid(unsafe_code)]

mod app_log;
mod applier;
mod autopilot;
mod backup;
mod batch;
mod commands;
mod config;
mod durable_store;
mod environment;
mod error;
mod exec;
mod flow;
mod handle;
mod kv;
mod leader;
mod limits;
mod log_reader;
mod membership;
mod network;
mod runtime;
mod snapshot_store;
mod snapshot_transfer;
mod snapshots;
mod state_machine;
mod storage;
mod writes;

pub use app_log::AppLog;
pub use autopilot::{AutopilotConfig, AutopilotDecision, UnreachableAction};
pub use backup::{restore_backup, restore_backup_with, Backup};
pub use batch::CommittedBatch;
pub use commands::Committed;
pub use config::{LogRetention, NetTuning, NodeConfig, Peer, SnapshotConfig, FRAME_HEADROOM};
pub use durable_store::{DurableConfig, DurableReader, DurableStore};
pub use environment::Environment;
pub use error::{Error, StartError};
pub use flow::{Estimate, FlowConfig, FlowControl, RATE_MEMORY, RTT_MEMORY};
pub use handle::RaftNode;
pub use kv::{Expect, KvCommand, KvEvent, KvResponse, Revision, Versioned};
pub use leader::{LeaderChange, LeaderInfo, LEADER_HISTORY};
pub use membership::{MemberInfo, MemberRole};
pub use network::{Connect, PeerNetwork, Tcp};
pub use raft_core::{ConfChange, ConfChangeError, TransferError};
pub use raft_net::{ListenerStats, PeerStats};
pub use raft_storage::{StatsSnapshot, SyncPolicy, SYNC_BUCKETS};
pub use snapshot_transfer::{SnapshotStats, TransferStatus};
pub use state_machine::{KvReader, KvStore, ReplicatedLog, SnapshotSource, StateMachine};
