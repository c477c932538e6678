//! # raft-chaos
//!
//! Checks `httpraft` the way Jepsen checks databases: real processes, real faults, and the
//! histories clients observed, checked.
//!
//! A run ([`run::run`]) starts a cluster of `httpraft` processes, each behind a
//! fault-injecting proxy ([`proxy`]) on its Raft port; drives two workloads against it
//! ([`workload`]): appends to the replicated log, and writes, compare-and-swaps and
//! linearizable reads on a few hot keys; and meanwhile injects faults on a schedule drawn
//! from a seed ([`nemesis`]): SIGKILL and restart, SIGSTOP/SIGCONT, partitions (one node,
//! a majority/minority split, one-way), latency, faults aimed at the leader, leadership
//! transfers and member replacement. Then it heals everything, waits for the cluster to
//! agree, and checks:
//!
//! - the key-value history is linearizable ([`linearizable`]: Wing–Gong search with Lowe's
//!   memoization, per key), and
//! - the log ([`log_check`]): every acknowledged entry present exactly once on every node,
//!   at the index it was acknowledged at; identical logs; nothing that was never sent;
//!   acknowledged appends in real-time order.
//!
//! Partitions and latency need no root: they are made by the proxies. As root, with
//! `--network namespaces`, each node runs in its own network namespace and the faults are
//! made on real interfaces ([`netns`]).
//!
//! The same seed replays the same fault schedule. A failing run prints the seed, the faults
//! and an excerpt of the offending history.

#![forbid(unsafe_code)]

pub mod cluster;
/// The linearizability checker ([`raft_linearizable`], shared with the node simulator).
pub use raft_linearizable as linearizable;
pub mod log_check;
pub mod nemesis;
pub mod netns;
pub mod proxy;
pub mod rng;
pub mod run;
pub mod workload;
