//! Clients on every node: writes, compare-and-swaps and linearizable reads on a few keys,
//! recorded as a history for the linearizability checker, and every acknowledged write
//! kept with its index for the lost-write check.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raft_client::{Error, Expect, KvCommand, KvResponse};
use raft_core::{LogIndex, NodeId};
use raft_linearizable::{KvOp, KvOutcome, Operation};
use tokio::time::Instant;

use crate::cluster::SimCluster;
use crate::rng::Rng;

pub const KEYS: [&str; 3] = ["a", "b", "c"];

/// A write the cluster acknowledged: it must be in every node's log at `index`.
#[derive(Clone, Debug)]
pub struct Acked {
    pub key: String,
    pub value: String,
    pub index: LogIndex,
    pub node: NodeId,
}

#[derive(Default)]
pub struct History {
    pub ops: Mutex<Vec<Operation>>,
    pub acked: Mutex<Vec<Acked>>,
}

impl History {
    pub fn push(&self, op: Operation) {
        self.ops.lock().unwrap().push(op);
    }
}

/// How long a client waits for an answer before it counts the outcome as unknown.
const PATIENCE: Duration = Duration::from_secs(3);

fn nanos(c: &SimCluster) -> u64 {
    c.began.elapsed().as_nanos() as u64
}

/// One client, living on `home`: it reads there and sends writes to the leader `home` knows.
pub async fn client(
    cluster: Arc<SimCluster>,
    home: NodeId,
    client: usize,
    mut rng: Rng,
    until: Instant,
    history: Arc<History>,
) {
    // What this client last saw of each key: the usual expectation of its compare-and-swaps.
    let mut seen: BTreeMap<&str, Option<String>> = BTreeMap::new();
    let mut n = 0u64;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(rng.below(20))).await;
        let Some(local) = cluster.running(home) else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let key = KEYS[rng.below(KEYS.len() as u64) as usize];
        let choice = rng.below(10);
        if choice < 4 {
            let invoke = nanos(&cluster);
            let read = tokio::time::timeout(PATIENCE, local.node.read_barrier()).await;
            if let Ok(Ok(_)) = read {
                // The same incarnation's store as the barrier's.
                if let Ok(v) = local.reader.get(key) {
                    seen.insert(key, v.clone());
                    history.push(Operation {
                        client,
                        key: key.into(),
                        op: KvOp::Read,
                        invoke,
                        complete: Some(nanos(&cluster)),
                        outcome: KvOutcome::Read(v),
                    });
                }
            }
            continue;
        }
        n += 1;
        let value = format!("c{client}-{n}");
        let (op, cmd) = if choice < 7 {
            (
                KvOp::Write(value.clone()),
                KvCommand::put(key, value.clone()),
            )
        } else {
            let expect = match rng.below(4) {
                0 => None,
                1 => Some(format!("c{}-{}", rng.below(6), rng.between(1, n))),
                _ => seen.get(key).cloned().flatten(),
            };
            let condition = match &expect {
                Some(v) => Expect::value(v.clone()),
                None => Expect::absent(),
            };
            let cmd = KvCommand::Put {
                key: key.into(),
                value: value.clone(),
                expect: Some(condition),
            };
            (
                KvOp::Cas {
                    expect,
                    new: value.clone(),
                },
                cmd,
            )
        };
        let Ok(bytes) = cmd.encode() else { continue };
        let target = local
            .node
            .leader()
            .leader
            .and_then(|l| cluster.running(l))
            .unwrap_or(local);
        let at = target.node.id();
        let invoke = nanos(&cluster);
        let answer = tokio::time::timeout(PATIENCE, target.node.submit_command(bytes)).await;
        let outcome = match answer {
            Ok(Ok(c)) => match c.response {
                KvResponse::Applied { .. } => {
                    history.acked.lock().unwrap().push(Acked {
                        key: key.into(),
                        value: value.clone(),
                        index: c.index,
                        node: at,
                    });
                    seen.insert(key, Some(value.clone()));
                    KvOutcome::Ok
                }
                KvResponse::PreconditionFailed { current } => {
                    seen.insert(key, current.map(|v| v.value));
                    KvOutcome::CasFailed
                }
                KvResponse::NotACommand => {
                    cluster.record(format!("a key-value command applied as no command: {c:?}"));
                    KvOutcome::Unknown
                }
            },
            // Refused before anything was appended: it never happened.
            Ok(Err(
                Error::NotLeader { .. }
                | Error::Busy
                | Error::TransferInProgress { .. }
                | Error::TooLarge { .. },
            )) => continue,
            // Overwritten: another leader's entry took its index; it will never commit.
            Ok(Err(Error::Overwritten)) => continue,
            Ok(Err(_)) | Err(_) => KvOutcome::Unknown,
        };
        let complete = (outcome != KvOutcome::Unknown).then(|| nanos(&cluster));
        history.push(Operation {
            client,
            key: key.into(),
            op,
            invoke,
            complete,
            outcome,
        });
    }
}
