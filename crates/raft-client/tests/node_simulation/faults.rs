//! The faults, one at a time, drawn from the run's seed: partitions (a node, the leader,
//! the leader from one follower, one way), bad weather (loss, duplication, reordering,
//! delays of seconds), crashes and restarts (any node, the leader), failing, slow and lying
//! disks, slow and stuck state machines, paused processes, membership churn (a member
//! removed, then re-added and promoted by the autopilot), and operations that move
//! leadership or read the whole state (`campaign`, transfers, backups).

use std::sync::Arc;
use std::time::Duration;

use raft_core::NodeId;
use tokio::time::Instant;

use crate::cluster::SimCluster;
use crate::network::Weather;
use crate::rng::Rng;

fn leader(c: &SimCluster) -> Option<NodeId> {
    c.all_running()
        .into_iter()
        .find(|(id, r)| r.node.leader().leader == Some(*id))
        .map(|(id, _)| id)
}

/// The highest term any running node is in.
fn max_term(c: &SimCluster) -> u64 {
    c.all_running()
        .iter()
        .map(|(_, r)| r.node.leader().term)
        .max()
        .unwrap_or(0)
}

/// Waits (up to 5 s) until every node runs and follows one leader in one term, and has for
/// a second; returns that term.
pub async fn settled(c: &SimCluster) -> Option<u64> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut stable_since: Option<(u64, Instant)> = None;
    while Instant::now() < deadline {
        let running = c.all_running();
        let mut views = Vec::new();
        for (_, r) in &running {
            if let Ok(s) = r.node.status().await {
                views.push((s.term, s.leader));
            }
        }
        let one = views.len() == c.ids.len()
            && views.iter().all(|v| v.1.is_some())
            && views
                .windows(2)
                .all(|w| w[0].0 == w[1].0 && w[0].1 == w[1].1);
        match (one, stable_since) {
            (true, Some((term, since))) if term == views[0].0 => {
                if since.elapsed() >= Duration::from_secs(1) {
                    return Some(term);
                }
            }
            (true, _) => stable_since = Some((views[0].0, Instant::now())),
            (false, _) => stable_since = None,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

fn any(c: &SimCluster, rng: &mut Rng) -> NodeId {
    c.ids[rng.below(c.ids.len() as u64) as usize]
}

/// Injects faults until `until`, then heals everything and restarts every node it crashed.
pub async fn nemesis(cluster: Arc<SimCluster>, mut rng: Rng, until: Instant) {
    let all = cluster.ids.clone();
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(rng.between(50, 600))).await;
        let hold = Duration::from_millis(rng.between(100, 3000));
        match rng.below(19) {
            0 => {
                let n = any(&cluster, &mut rng);
                cluster.record(format!("isolate node {n} for {hold:?}"));
                cluster.net.isolate(n, &all);
            }
            1 => {
                let Some(l) = leader(&cluster) else { continue };
                cluster.record(format!("isolate the leader, node {l}, for {hold:?}"));
                cluster.net.isolate(l, &all);
            }
            2 => {
                // The partial partition: the leader cut from one follower, the other still
                // hearing both.
                let Some(l) = leader(&cluster) else { continue };
                let f = loop {
                    let f = any(&cluster, &mut rng);
                    if f != l {
                        break f;
                    }
                };
                cluster.record(format!(
                    "cut the leader, node {l}, from node {f}, both ways, for {hold:?}"
                ));
                cluster.net.cut(l, f);
                cluster.net.cut(f, l);
            }
            3 => {
                let (a, b) = (any(&cluster, &mut rng), any(&cluster, &mut rng));
                if a == b {
                    continue;
                }
                cluster.record(format!("cut node {a} to node {b} (one way) for {hold:?}"));
                cluster.net.cut(a, b);
            }
            4 => {
                let w = Weather {
                    loss_per_mille: rng.below(200),
                    dup_per_mille: rng.below(100),
                    max_delay: Duration::from_millis(rng.between(2, 40)),
                    long_per_mille: rng.below(30),
                    long_delay: Duration::from_millis(rng.between(100, 4000)),
                };
                cluster.record(format!("bad weather {w:?} for {hold:?}"));
                cluster.net.set_weather(w);
            }
            5 | 6 => {
                let n = if rng.below(2) == 0 {
                    leader(&cluster).unwrap_or_else(|| any(&cluster, &mut rng))
                } else {
                    any(&cluster, &mut rng)
                };
                cluster.record(format!("crash node {n}, restart after {hold:?}"));
                cluster.crash(n).await;
            }
            13 => {
                let n = any(&cluster, &mut rng);
                let per_mille = rng.between(5, 300);
                cluster.record(format!(
                    "failing disk on node {n}: {per_mille}‰ of writes, syncs and reads fail, for {hold:?}"
                ));
                cluster.set_disk_errors(n, per_mille);
            }
            12 => {
                // Power lost everywhere at once: every node restarts from what its disk
                // made durable.
                cluster.record(format!(
                    "power loss: every node crashes, restart after {hold:?}"
                ));
                for id in all.clone() {
                    cluster.crash(id).await;
                }
            }
            7 => {
                let n = any(&cluster, &mut rng);
                let Some(r) = cluster.running(n) else {
                    continue;
                };
                let started = r.node.campaign().await;
                cluster.record(format!("campaign on node {n}: {started:?}"));
                continue;
            }
            8 => {
                let (Some(l), to) = (leader(&cluster), any(&cluster, &mut rng)) else {
                    continue;
                };
                let Some(r) = cluster.running(l) else {
                    continue;
                };
                cluster.record(format!("transfer leadership from node {l} to node {to}"));
                let done = r.node.transfer_leadership(Some(to)).await;
                cluster.record(format!("transfer to node {to}: {done:?}"));
                continue;
            }
            9 => {
                let n = any(&cluster, &mut rng);
                let Some(r) = cluster.running(n) else {
                    continue;
                };
                let b = r.node.backup().await;
                cluster.record(format!("backup of node {n}: {}", b.is_ok()));
                continue;
            }
            10 | 11 => {
                // Slowness alone, on a healthy network, must not move leadership: a slow
                // disk or state machine never stops a node from heartbeating and voting.
                let slow_machine = rng.below(2) == 0;
                let n = if rng.below(2) == 0 {
                    leader(&cluster).unwrap_or_else(|| any(&cluster, &mut rng))
                } else {
                    any(&cluster, &mut rng)
                };
                let Some(term) = settled(&cluster).await else {
                    continue;
                };
                if slow_machine {
                    let slowest = rng.between(20_000, 1_500_000);
                    cluster.record(format!(
                        "slow state machine on node {n}: up to {slowest} µs per batch, for {hold:?}"
                    ));
                    cluster.set_pace(n, slowest);
                } else {
                    let slowest = rng.between(5_000, 300_000);
                    cluster.record(format!(
                        "slow disk on node {n}: up to {slowest} µs per write, sync or read, for {hold:?}"
                    ));
                    cluster.set_disk(n, slowest);
                }
                tokio::time::sleep(hold).await;
                let now = max_term(&cluster);
                if now != term {
                    let what = if slow_machine {
                        "state machine"
                    } else {
                        "disk"
                    };
                    cluster.violation(format!(
                        "the term moved from {term} to {now} while the network was healthy and only node {n}'s {what} was slow"
                    ));
                }
                heal(&cluster).await;
                continue;
            }
            15 => {
                let n = any(&cluster, &mut rng);
                cluster.record(format!("pause node {n} for {hold:?}"));
                cluster.freeze(n, hold);
            }
            16 => {
                let n = any(&cluster, &mut rng);
                let Some(r) = leader(&cluster).and_then(|l| cluster.running(l)) else {
                    continue;
                };
                let removed = r.node.remove_member(n).await;
                cluster.record(format!(
                    "remove node {n}: {removed:?}; re-add after {hold:?}"
                ));
                tokio::time::sleep(hold).await;
                heal(&cluster).await;
                restore_membership(&cluster).await;
                continue;
            }
            17 => {
                let n = any(&cluster, &mut rng);
                let done = cluster.damage_snapshots(n);
                cluster.record(format!("damage node {n}'s snapshot files: {done:?}"));
                continue;
            }
            14 => {
                stuck_state_machine(&cluster, &mut rng, hold).await;
                heal(&cluster).await;
                continue;
            }
            _ => {
                // A quiet spell.
                tokio::time::sleep(hold).await;
                continue;
            }
        }
        tokio::time::sleep(hold).await;
        heal(&cluster).await;
    }
    heal(&cluster).await;
}

/// A state machine that applies nothing for `hold`: half the time its node is also cut off
/// for the first half, so that it comes back behind a compacted log and installs a snapshot
/// while its apply queue cannot drain. All along, the node's loop must go on answering (it
/// never waits for the apply task).
async fn stuck_state_machine(cluster: &SimCluster, rng: &mut Rng, hold: Duration) {
    let n = any(cluster, rng);
    let cut_first = rng.below(2) == 0;
    cluster.record(format!(
        "stuck state machine on node {n} for {hold:?}{}",
        if cut_first {
            ", the node isolated for the first half"
        } else {
            ""
        }
    ));
    cluster.set_stuck(n, true);
    if cut_first {
        cluster.net.isolate(n, &cluster.ids);
    }
    let began = Instant::now();
    while began.elapsed() < hold {
        if cut_first && began.elapsed() >= hold / 2 {
            cluster.net.heal();
        }
        if let Some(r) = cluster.running(n) {
            let answer = tokio::time::timeout(ANSWER_WITHIN, r.node.status()).await;
            if answer.is_err() {
                cluster.violation(format!(
                    "node {n} did not answer a status request for {ANSWER_WITHIN:?} while its state machine was stuck"
                ));
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Makes every node a voter again: a removed one is re-added as a learner, and the
/// autopilot promotes it once it has caught up. Not done within 20 s is a violation.
async fn restore_membership(cluster: &SimCluster) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut asked = std::collections::BTreeSet::new();
    loop {
        let status = match leader(cluster).and_then(|l| cluster.running(l)) {
            Some(r) => r.node.status().await.ok().map(|s| (r, s)),
            None => None,
        };
        if let Some((r, status)) = status {
            let m = &status.membership;
            if m.outgoing.is_empty() && cluster.ids.iter().all(|id| m.voters.contains(id)) {
                return;
            }
            for &id in &cluster.ids {
                if !m.contains(id) {
                    let added = r.node.add_learner(id, cluster.peer(id)).await;
                    if asked.insert(id) || added.is_ok() {
                        cluster.record(format!("re-add node {id} as a learner: {added:?}"));
                    }
                }
            }
        }
        if Instant::now() >= deadline {
            let members = match leader(cluster).and_then(|l| cluster.running(l)) {
                Some(r) => format!("{:?}", r.node.status().await.map(|s| s.membership)),
                None => "no leader".into(),
            };
            cluster.violation(format!(
                "20 s after membership churn not every node is a voter again: {members}"
            ));
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How soon a node's loop answers a request whatever its state machine or disk is doing.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(1);

/// Every link restored, calm weather, every crashed node started again.
pub async fn heal(cluster: &SimCluster) {
    cluster.net.heal();
    cluster.heal_disks();
    // A node whose disk failed stopped, as it should: it starts again from its data.
    for id in cluster.may_have_stopped() {
        cluster.set_disk_errors(id, 0);
        let stopped = match cluster.running(id) {
            Some(r) => r.node.status().await.is_err(),
            None => false,
        };
        if stopped {
            cluster.record(format!("node {id} stopped on its failing disk"));
            cluster.crash(id).await;
        }
        cluster.expect_running(id);
    }
    for id in cluster.down() {
        cluster.record(format!("restart node {id}"));
        if let Err(e) = cluster.start(id).await {
            cluster.record(format!("node {id} did not restart: {e}"));
            cluster.failed_restart(id, format!("{} {e}", cluster.at()));
        }
    }
}
