//! The runtime task (the original's `Run`): owns the core node and drives it with ticks,
//! peer messages and client commands; persists each `Ready` off the async threads; sends;
//! applies; answers callers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use raft_core::{
    Entry, LogIndex, LogStore, Message, Node, ProposeError, ReadError, ReadOutcome, Ready, Role,
    Term,
};
use raft_net::{Inbound, NetConfig, Transport};
use raft_storage::{LogStorage, StorageConfig};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::config::NodeConfig;
use crate::error::{Error, StartError};
use crate::handle::{Command, Committed, LeaderInfo};
use crate::limits::Permit;
use crate::state_machine::StateMachine;
use crate::storage::SharedStorage;

/// Inputs handled per turn at most before the node's output is processed.
const MAX_INPUTS_PER_TURN: usize = 4096;

struct PendingSubmit<R> {
    term: Term,
    reply: oneshot::Sender<Result<Committed<R>, Error>>,
    _permit: Permit,
}

type ReadReply = oneshot::Sender<Result<LogIndex, Error>>;

struct Runtime<SM: StateMachine> {
    cfg: NodeConfig,
    node: Node<SharedStorage>,
    storage: SharedStorage,
    sm: SM,
    transport: Transport,
    inbound: Inbound,
    cmds: mpsc::Receiver<Command<SM::Response>>,
    leader_tx: watch::Sender<LeaderInfo>,
    /// Submits on this leader awaiting their entry's commit, by index.
    pending: BTreeMap<LogIndex, PendingSubmit<SM::Response>>,
    /// Reads awaiting leadership confirmation, by read id.
    reads: BTreeMap<u64, ReadReply>,
    /// Confirmed reads awaiting the state machine to reach their index.
    parked_reads: Vec<(LogIndex, ReadReply)>,
    next_read_id: u64,
    applied: LogIndex,
    isolated: bool,
}

/// Opens storage and network, builds the core node, and spawns the runtime.
pub(crate) async fn spawn<SM: StateMachine>(
    cfg: NodeConfig,
    sm: SM,
    cmds: mpsc::Receiver<Command<SM::Response>>,
    leader_tx: watch::Sender<LeaderInfo>,
    cancel: CancellationToken,
) -> Result<JoinHandle<()>, StartError> {
    let mut scfg = StorageConfig::new(&cfg.data_dir, cfg.cluster_id.clone(), cfg.id);
    scfg.sync = cfg.sync;
    scfg.segment_bytes = cfg.segment_bytes;
    let log = tokio::task::spawn_blocking(move || LogStorage::open(scfg))
        .await
        .map_err(|e| StartError::Config(format!("storage open task failed: {e}")))??;
    let storage = SharedStorage(Arc::new(Mutex::new(log)));

    let mut rcfg = cfg.raft.clone();
    rcfg.id = cfg.id;
    rcfg.voters = cfg.peers.keys().copied().collect();
    rcfg.applied = sm.applied_index();
    if rcfg.seed == 0 {
        rcfg.seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
    }
    let applied = rcfg.applied;
    let node = Node::new(rcfg, storage.clone())?;

    let me = &cfg.peers[&cfg.id];
    let peers = cfg
        .peers
        .iter()
        .filter(|(&id, _)| id != cfg.id)
        .map(|(&id, p)| (id, p.raft))
        .collect();
    let mut ncfg = NetConfig::new(cfg.id, cfg.cluster_id.clone(), me.raft, peers);
    ncfg.max_frame_bytes = cfg.net.max_frame_bytes;
    ncfg.send_queue = cfg.net.send_queue;
    ncfg.recv_queue = cfg.net.recv_queue;
    ncfg.backoff_max = cfg.net.backoff_max;
    let (transport, inbound) = Transport::start(ncfg).await?;

    tracing::info!(
        id = cfg.id,
        cluster = %cfg.cluster_id,
        raft_addr = %me.raft,
        data_dir = %cfg.data_dir.display(),
        term = node.term(),
        last_index = node.last_index(),
        "raft node started"
    );
    let rt = Runtime {
        cfg,
        node,
        storage,
        sm,
        transport,
        inbound,
        cmds,
        leader_tx,
        pending: BTreeMap::new(),
        reads: BTreeMap::new(),
        parked_reads: Vec::new(),
        next_read_id: 0,
        applied,
        isolated: false,
    };
    Ok(tokio::spawn(rt.run(cancel)))
}

impl<SM: StateMachine> Runtime<SM> {
    async fn run(mut self, cancel: CancellationToken) {
        let mut ticker = tokio::time::interval(self.cfg.tick);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let outcome = loop {
            tokio::select! {
                _ = cancel.cancelled() => break Error::Shutdown,
                _ = ticker.tick() => self.node.tick(),
                m = self.inbound.recv() => match m {
                    Some((_, msg)) => {
                        self.on_message(msg);
                        for _ in 0..MAX_INPUTS_PER_TURN {
                            match self.inbound.try_recv() {
                                Ok((_, msg)) => self.on_message(msg),
                                Err(_) => break,
                            }
                        }
                    }
                    None => break Error::Shutdown,
                },
                c = self.cmds.recv() => match c {
                    Some(cmd) => {
                        self.on_command(cmd);
                        for _ in 0..MAX_INPUTS_PER_TURN {
                            match self.cmds.try_recv() {
                                Ok(cmd) => self.on_command(cmd),
                                Err(_) => break,
                            }
                        }
                    }
                    None => break Error::Shutdown, // every handle is gone
                },
            }
            if let Err(e) = self.process_ready().await {
                break e;
            }
        };
        self.stop(outcome).await;
    }

    async fn stop(mut self, why: Error) {
        for (_, p) in std::mem::take(&mut self.pending) {
            let _ = p.reply.send(Err(why.clone()));
        }
        for (_, r) in std::mem::take(&mut self.reads) {
            let _ = r.send(Err(why.clone()));
        }
        for (_, r) in std::mem::take(&mut self.parked_reads) {
            let _ = r.send(Err(why.clone()));
        }
        self.cmds.close();
        while let Ok(cmd) = self.cmds.try_recv() {
            reject(cmd, why.clone());
        }
        self.transport.shutdown().await;
        tracing::info!(id = self.cfg.id, reason = %why, "raft node stopped");
    }

    fn on_message(&mut self, msg: Message) {
        if !self.isolated {
            self.node.step(msg);
        }
    }

    fn not_leader(&self, leader: Option<raft_core::NodeId>) -> Error {
        let address = leader
            .and_then(|l| self.cfg.peers.get(&l))
            .and_then(|p| p.api.clone());
        Error::NotLeader { leader, address }
    }

    fn on_command(&mut self, cmd: Command<SM::Response>) {
        match cmd {
            Command::Submit {
                data,
                reply,
                permit,
            } => match self.node.propose(data) {
                Ok((index, term)) => {
                    self.pending.insert(
                        index,
                        PendingSubmit {
                            term,
                            reply,
                            _permit: permit,
                        },
                    );
                }
                Err(ProposeError::NotLeader { leader }) => {
                    let _ = reply.send(Err(self.not_leader(leader)));
                }
                Err(ProposeError::Busy) => {
                    let _ = reply.send(Err(Error::Busy));
                }
                Err(ProposeError::UnsupportedKind) => {
                    let _ = reply.send(Err(Error::Busy));
                }
            },
            Command::Read { reply } => {
                self.next_read_id += 1;
                let id = self.next_read_id;
                match self.node.read_index(id) {
                    Ok(()) => {
                        self.reads.insert(id, reply);
                    }
                    Err(ReadError::NotLeader { leader }) => {
                        let _ = reply.send(Err(self.not_leader(leader)));
                    }
                }
            }
            Command::Retrieve { from, limit, reply } => {
                let _ = reply.send(self.retrieve(from, limit));
            }
            Command::Status { reply } => {
                let _ = reply.send(self.node.status());
            }
            Command::NetStats { reply } => {
                let _ = reply.send(self.transport.stats());
            }
            Command::Campaign => self.node.campaign(),
            Command::Isolate(on) => self.isolated = on,
        }
    }

    fn retrieve(&self, from: LogIndex, limit: usize) -> Result<Vec<Entry>, Error> {
        let store = self
            .storage
            .lock()
            .map_err(|e| Error::Storage(e.to_string()))?;
        let from = from.max(store.first_index());
        let last = self.node.commit_index().min(LogStore::last_index(&*store));
        if from > last {
            return Ok(Vec::new());
        }
        let hi = (last + 1).min(from.saturating_add(limit as u64));
        store
            .entries(from, hi, self.cfg.max_retrieve_bytes)
            .map_err(|e| Error::Storage(e.to_string()))
    }

    /// Carries out everything the core has for us, in the order the core requires.
    async fn process_ready(&mut self) -> Result<(), Error> {
        while self.node.has_ready() {
            let mut rd = self.node.ready();
            if let Some(ss) = rd.soft_state {
                self.on_soft_state(ss.role, ss.leader);
            }
            self.send_all(std::mem::take(&mut rd.messages));
            let mut rd = self.persist(rd).await?;
            self.send_all(std::mem::take(&mut rd.persisted_messages));
            self.apply(rd.committed_entries).await;
            for rs in rd.read_states {
                let Some(reply) = self.reads.remove(&rs.id) else {
                    continue;
                };
                match rs.outcome {
                    ReadOutcome::Ready { index } => self.parked_reads.push((index, reply)),
                    ReadOutcome::Aborted => {
                        let _ = reply.send(Err(Error::LeadershipLost));
                    }
                }
            }
            self.release_reads();
            self.node.advance();
        }
        Ok(())
    }

    fn on_soft_state(&mut self, role: Role, leader: Option<raft_core::NodeId>) {
        let term = self.node.term();
        self.leader_tx.send_replace(LeaderInfo { leader, term });
        if role != Role::Leader && !self.pending.is_empty() {
            // The entries may still commit under the next leader, or not: the outcome is
            // unknown, and waiting for it could take forever. Say so now.
            for (_, p) in std::mem::take(&mut self.pending) {
                let _ = p.reply.send(Err(Error::LeadershipLost));
            }
        }
        tracing::info!(id = self.cfg.id, ?role, ?leader, term, "role changed");
    }

    /// Hands the messages to the transport (moved, not copied: this is the hot path).
    fn send_all(&self, msgs: Vec<Message>) {
        if self.isolated {
            return;
        }
        for m in msgs {
            self.transport.send(m);
        }
    }

    /// Makes the `Ready`'s hard state and entries durable on a blocking thread.
    async fn persist(&mut self, rd: Ready) -> Result<Ready, Error> {
        if !rd.must_persist() {
            return Ok(rd);
        }
        let storage = self.storage.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let result = match storage.lock() {
                Ok(mut s) => s.persist(&rd).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            (rd, result)
        })
        .await;
        match joined {
            Ok((rd, Ok(()))) => Ok(rd),
            Ok((_, Err(e))) => {
                tracing::error!(id = self.cfg.id, error = %e, "storage failed; stopping the node");
                Err(Error::Storage(e))
            }
            Err(e) => Err(Error::Storage(format!("persist task failed: {e}"))),
        }
    }

    async fn apply(&mut self, entries: Vec<Entry>) {
        if entries.is_empty() {
            return;
        }
        let responses = self.sm.apply(&entries).await;
        let mut responses = responses.into_iter();
        for e in &entries {
            let response = responses.next();
            let Some(p) = self.pending.remove(&e.index) else {
                continue;
            };
            let outcome = match response {
                Some(response) if p.term == e.term => Ok(Committed {
                    index: e.index,
                    term: e.term,
                    response,
                }),
                Some(_) => Err(Error::Overwritten),
                None => Err(Error::Storage(
                    "the state machine returned fewer responses than entries".into(),
                )),
            };
            let _ = p.reply.send(outcome);
        }
        if let Some(last) = entries.last() {
            self.applied = last.index;
        }
    }

    fn release_reads(&mut self) {
        let applied = self.applied;
        let mut i = 0;
        while i < self.parked_reads.len() {
            if self.parked_reads[i].0 <= applied {
                let (index, reply) = self.parked_reads.swap_remove(i);
                let _ = reply.send(Ok(index));
            } else {
                i += 1;
            }
        }
    }
}

fn reject<R>(cmd: Command<R>, why: Error) {
    match cmd {
        Command::Submit { reply, .. } => {
            let _ = reply.send(Err(why));
        }
        Command::Read { reply } => {
            let _ = reply.send(Err(why));
        }
        Command::Retrieve { reply, .. } => {
            let _ = reply.send(Err(why));
        }
        Command::Status { .. }
        | Command::NetStats { .. }
        | Command::Campaign
        | Command::Isolate(_) => {}
    }
}
