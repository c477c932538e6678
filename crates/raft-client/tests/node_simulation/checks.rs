//! What a run must satisfy: watched while it runs (one leader per term, no node stopping on
//! its own) and checked once the faults are healed (convergence, no acknowledged write
//! lost, a linearizable history).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raft_client::KvCommand;
use raft_core::{NodeId, Term};
use raft_linearizable::{KvOp, KvOutcome, Operation, Verdict};
use tokio::time::Instant;

use crate::clients::{History, KEYS};
use crate::cluster::SimCluster;

/// The nodes that claimed leadership, per term.
#[derive(Default)]
pub struct Leaders(Mutex<BTreeMap<Term, BTreeSet<NodeId>>>);

impl Leaders {
    pub fn check(&self) -> Result<(), String> {
        for (term, ids) in self.0.lock().unwrap().iter() {
            if ids.len() > 1 {
                return Err(format!("two leaders in term {term}: nodes {ids:?}"));
            }
        }
        Ok(())
    }
}

/// Watches the running nodes: who leads in which term, and whether a node stopped although
/// nobody stopped it.
pub async fn monitor(cluster: Arc<SimCluster>, leaders: Arc<Leaders>) {
    let mut round = 0u64;
    loop {
        for (id, r) in cluster.all_running() {
            let l = r.node.leader();
            if l.leader == Some(id) {
                leaders
                    .0
                    .lock()
                    .unwrap()
                    .entry(l.term)
                    .or_default()
                    .insert(id);
            }
            if round.is_multiple_of(25) {
                if let Err(e) = r.node.status().await {
                    cluster.stopped_on_its_own(id, &r, format!("{} {e}", cluster.at()));
                }
            }
        }
        round += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn nanos(c: &SimCluster) -> u64 {
    c.began.elapsed().as_nanos() as u64
}

/// Once healed: every node applies the same log; then the checks.
pub async fn after_healing(cluster: &SimCluster, history: &History) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stopped = cluster.stopped();
        if let Some((id, why)) = stopped.first() {
            return Err(format!(
                "node {id} stopped on its own, or could not start again from its data: {why}"
            ));
        }
        let mut statuses = Vec::new();
        let mut versions = Vec::new();
        for (id, r) in cluster.all_running() {
            match r.node.status().await {
                Ok(s) => statuses.push(s),
                Err(e) => return Err(format!("node {id} stopped on its own: {e}")),
            }
            versions.push(r.node.cluster_version());
        }
        let agreed = statuses.len() == cluster.ids.len()
            && statuses.iter().any(|s| s.leader == Some(s.id))
            && statuses.windows(2).all(|w| {
                w[0].applied == w[1].applied
                    && w[0].commit == w[1].commit
                    && w[0].last_index == w[1].last_index
            })
            && statuses.iter().all(|s| s.applied == s.last_index)
            // Every member runs this build: the leader raised the cluster version to it
            // through the log, and every node applied or installed the raise.
            && versions.iter().all(|&v| v == raft_core::ClusterVersion::CURRENT);
        if agreed {
            break;
        }
        if Instant::now() > deadline {
            let shown: Vec<String> = statuses
                .iter()
                .map(|s| {
                    format!(
                        "node {} {:?} term {} leader {:?} commit {} applied {} last {} failure {:?}",
                        s.id, s.role, s.term, s.leader, s.commit, s.applied, s.last_index, s.failure
                    )
                })
                .collect();
            return Err(format!(
                "the cluster did not converge within 60 s of healing: {shown:?}; cluster versions {versions:?}; down: {:?}",
                cluster.down()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.record("converged");

    // Final reads on every node, part of the history.
    for (id, r) in cluster.all_running() {
        for key in KEYS {
            // Leadership may still move once (a vote held up before healing arrives
            // late): a read is retried, as a client would, for a while.
            let invoke = nanos(cluster);
            let retry_until = Instant::now() + Duration::from_secs(10);
            loop {
                match r.node.read_barrier().await {
                    Ok(_) => break,
                    Err(e) if Instant::now() > retry_until => {
                        return Err(format!("node {id}: reads fail 10 s after healing: {e:?}"));
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
            let v = r.reader.get(key).map_err(|e| format!("node {id}: {e}"))?;
            history.push(Operation {
                client: 1000 + id as usize,
                key: key.into(),
                op: KvOp::Read,
                invoke,
                complete: Some(nanos(cluster)),
                outcome: KvOutcome::Read(v),
            });
        }
    }

    // No acknowledged write lost: each is in every node's Raft log where it was
    // acknowledged, unless the node dropped it since (behind a snapshot, or past the
    // retention of a node whose log is the application's): those are left to the
    // linearizability check.
    let acked = history.acked.lock().unwrap().clone();
    for (id, r) in cluster.all_running() {
        let first = r
            .node
            .status()
            .await
            .map_err(|e| format!("node {id}: {e}"))?
            .first_index;
        for a in &acked {
            if a.index < first {
                continue;
            }
            let got = r.node.retrieve(a.index, 1).await.unwrap_or_default();
            let entry = got.first().filter(|e| e.index == a.index);
            let holds = entry.and_then(KvCommand::from_entry).is_some_and(|c| {
                matches!(c, KvCommand::Put { key, value, .. } if key == a.key && value == a.value)
            });
            if !holds {
                return Err(format!(
                    "lost acknowledged write: {}={:?} at index {} (acknowledged through node {}); node {id} holds {:?} there",
                    a.key, a.value, a.index, a.node, entry
                ));
            }
        }
    }

    // The same map everywhere.
    let mut maps = Vec::new();
    for (id, r) in cluster.all_running() {
        let mut map = Vec::new();
        for key in KEYS {
            map.push(r.reader.get(key).map_err(|e| format!("node {id}: {e}"))?);
        }
        maps.push((id, map));
    }
    for w in maps.windows(2) {
        if w[0].1 != w[1].1 {
            return Err(format!(
                "nodes {} and {} hold different values after converging: {:?} / {:?}",
                w[0].0, w[1].0, w[0].1, w[1].1
            ));
        }
    }

    let ops = history.ops.lock().unwrap().clone();
    match raft_linearizable::check(&ops, 20_000_000) {
        Verdict::Linearizable => Ok(()),
        Verdict::NotLinearizable(excerpt) => Err(format!("not linearizable: {excerpt}")),
        Verdict::Unknown(why) => {
            cluster.record(format!("linearizability undecided: {why}"));
            Ok(())
        }
    }
}
