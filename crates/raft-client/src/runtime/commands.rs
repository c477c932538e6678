//! Carrying out what a handle asks (`crate::commands`): proposals, reads, status, backups,
//! membership and leadership requests.

use raft_core::{EntryKind, LogIndex, Node, ProposeError, ReadError, Term};

use super::Runtime;
use crate::commands::Command;
use crate::error::Error;
use crate::state_machine::StateMachine;
use crate::storage::SharedStorage;

impl<SM: StateMachine> Runtime<SM> {
    pub(super) fn on_command(&mut self, cmd: Command<SM::Response>) {
        match cmd {
            Command::Submit {
                kind,
                data,
                reply,
                permit,
            } => match propose(&mut self.node, kind, data) {
                Ok((index, term)) => self.waiters.add_submit(index, term, reply, permit),
                Err(e) => {
                    let _ = reply.send(Err(self.refused(e)));
                }
            },
            Command::SubmitBatch {
                kind,
                data,
                reply,
                permit,
            } => {
                let count = data.len();
                match self.node.propose_batch(kind, data) {
                    Ok((first, term)) if count == 0 => {
                        let _ = reply.send(Ok(crate::CommittedBatch {
                            first,
                            term,
                            responses: Vec::new(),
                        }));
                    }
                    Ok((first, term)) => self.waiters.add_batch(first, count, term, reply, permit),
                    Err(e) => {
                        let _ = reply.send(Err(self.refused(e)));
                    }
                }
            }
            Command::Read { reply } => {
                let id = self.waiters.next_read_id();
                match self.node.read_index(id) {
                    Ok(()) => self.waiters.add_read(id, reply),
                    Err(ReadError::NotLeader { leader }) => {
                        let _ = reply.send(Err(self.not_leader(leader)));
                    }
                    Err(ReadError::Stopped(e)) => {
                        let _ = reply.send(Err(Error::Storage(e.to_string())));
                    }
                }
            }
            Command::Status { reply } => {
                let _ = reply.send(self.node.status());
            }
            Command::NetStats { reply } => {
                let _ = reply.send(self.transport.stats());
            }
            Command::ListenerStats { reply } => {
                let _ = reply.send(self.transport.listener_stats());
            }
            Command::Backup { reply } => {
                self.pending_backups.push(reply);
            }
            Command::ChangeMembership { changes, reply } => self.change_membership(changes, reply),
            Command::TransferLeadership { to, reply } => self.transfer_leadership(to, reply),
            Command::Members { reply } => {
                let _ = reply.send(self.members());
            }
            Command::Autopilot { reply } => {
                let _ = reply.send(self.autopilot.decisions.iter().cloned().collect());
            }
            Command::Campaign { reply } => {
                let _ = reply.send(self.node.campaign());
            }
            Command::Isolate(on) => self.isolated = on,
        }
    }

    pub(super) fn not_leader(&self, leader: Option<raft_core::NodeId>) -> Error {
        let address = leader.and_then(|l| self.book.get(l)).and_then(|p| p.api);
        Error::NotLeader { leader, address }
    }

    /// What a refused proposal tells its submitter.
    pub(super) fn refused(&self, e: ProposeError) -> Error {
        match e {
            ProposeError::NotLeader { leader } => self.not_leader(leader),
            ProposeError::Busy | ProposeError::UnsupportedKind => Error::Busy,
            ProposeError::TransferInProgress { to } => Error::TransferInProgress { to },
            ProposeError::Stopped(e) => Error::Storage(e.to_string()),
        }
    }
}

/// Proposes an entry of the submit's kind.
pub(super) fn propose(
    node: &mut Node<SharedStorage>,
    kind: EntryKind,
    data: bytes::Bytes,
) -> Result<(LogIndex, Term), ProposeError> {
    match kind {
        EntryKind::Command => node.propose_command(data),
        _ => node.propose(data),
    }
}

pub(super) fn reject<R>(cmd: Command<R>, why: Error) {
    match cmd {
        Command::Submit { reply, .. } => {
            let _ = reply.send(Err(why));
        }
        Command::SubmitBatch { reply, .. } => {
            let _ = reply.send(Err(why));
        }
        Command::Read { reply } => {
            let _ = reply.send(Err(why));
        }
        Command::ChangeMembership { reply, .. } => {
            let _ = reply.send(Err(why));
        }
        Command::TransferLeadership { reply, .. } => {
            let _ = reply.send(Err(why));
        }
        Command::Members { .. }
        | Command::Autopilot { .. }
        | Command::Status { .. }
        | Command::NetStats { .. }
        | Command::ListenerStats { .. }
        | Command::Backup { .. }
        | Command::Campaign { .. }
        | Command::Isolate(_) => {}
    }
}
