//! What a handle asks its runtime for ([`Command`], each with where to send the answer),
//! and what a submit returns ([`Committed`]). The handle (`handle.rs`) sends commands and
//! the runtime (`runtime/`) carries them out; neither knows the other.

use std::collections::BTreeMap;

use bytes::Bytes;
use raft_core::{EntryKind, LogIndex, NodeId, Status, Term};
use tokio::sync::oneshot;

use crate::error::Error;
use crate::limits::Permit;

/// A committed and applied entry, as `submit` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed<R> {
    /// Where the entry is in the log.
    pub index: LogIndex,
    /// The term it was created in.
    pub term: Term,
    /// What the state machine returned for it.
    pub response: R,
}

/// A request from a handle to its runtime.
pub(crate) enum Command<R> {
    Submit {
        kind: EntryKind,
        data: Bytes,
        reply: oneshot::Sender<Result<Committed<R>, Error>>,
        permit: Permit,
    },
    SubmitBatch {
        kind: EntryKind,
        data: Vec<Bytes>,
        reply: crate::batch::BatchReply<R>,
        permit: Permit,
    },
    Read {
        reply: oneshot::Sender<Result<LogIndex, Error>>,
    },
    Status {
        reply: oneshot::Sender<Status>,
    },
    NetStats {
        reply: oneshot::Sender<BTreeMap<NodeId, raft_net::PeerStats>>,
    },
    ListenerStats {
        reply: oneshot::Sender<raft_net::ListenerStats>,
    },
    Backup {
        reply: oneshot::Sender<Result<crate::Backup, Error>>,
    },
    ChangeMembership {
        changes: Vec<raft_core::ConfChange>,
        reply: oneshot::Sender<Result<LogIndex, Error>>,
    },
    TransferLeadership {
        to: Option<NodeId>,
        reply: oneshot::Sender<Result<NodeId, Error>>,
    },
    Members {
        reply: oneshot::Sender<Vec<crate::MemberInfo>>,
    },
    Autopilot {
        reply: oneshot::Sender<Vec<crate::AutopilotDecision>>,
    },
    Campaign {
        reply: oneshot::Sender<bool>,
    },
    Isolate(bool),
}
