//! The nemesis: faults on a schedule drawn from a seed, one at a time, each held for a
//! while and then healed.

use std::fmt;
use std::time::Duration;

use crate::cluster::Cluster;
use crate::proxy::{LinkFault, NodeId};
use crate::rng::Rng;

/// A kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// SIGKILL a random node; restart it when healing.
    Kill,
    /// SIGKILL the leader.
    KillLeader,
    /// SIGSTOP a random node; SIGCONT when healing.
    Pause,
    /// SIGSTOP the leader.
    PauseLeader,
    /// Cut a random node off from the others, both ways.
    Isolate,
    /// Cut the leader off.
    IsolateLeader,
    /// Split the members into a minority and a majority.
    Split,
    /// A node's messages to the others are lost, theirs to it arrive (or the reverse).
    OneWay,
    /// Delay every link by 20–150 ms.
    Latency,
    /// Move leadership to a random other voter.
    Transfer,
    /// Add a new node (joined, promoted by the autopilot) and remove an old follower.
    Replace,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 11] = [
        FaultKind::Kill,
        FaultKind::KillLeader,
        FaultKind::Pause,
        FaultKind::PauseLeader,
        FaultKind::Isolate,
        FaultKind::IsolateLeader,
        FaultKind::Split,
        FaultKind::OneWay,
        FaultKind::Latency,
        FaultKind::Transfer,
        FaultKind::Replace,
    ];

    /// Its name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::KillLeader => "kill-leader",
            FaultKind::Pause => "pause",
            FaultKind::PauseLeader => "pause-leader",
            FaultKind::Isolate => "isolate",
            FaultKind::IsolateLeader => "isolate-leader",
            FaultKind::Split => "split",
            FaultKind::OneWay => "one-way",
            FaultKind::Latency => "latency",
            FaultKind::Transfer => "transfer",
            FaultKind::Replace => "replace",
        }
    }

    /// The kind named `name`.
    pub fn parse(name: &str) -> Option<FaultKind> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One step of a schedule: a fault, how long it is held, the quiet time after healing, and
/// the random choices it makes (which node, which way), all fixed by the seed.
#[derive(Clone, Debug)]
pub struct Step {
    /// The fault.
    pub kind: FaultKind,
    /// How long it is held before healing.
    pub hold: Duration,
    /// How long the cluster runs unharmed afterwards.
    pub gap: Duration,
    /// Random bits for the fault's choices.
    pub choice: u64,
}

/// The schedule of a seed: every kind in `kinds` once, in a seeded order, then kinds drawn
/// at random; as many steps as `count`.
pub fn schedule(seed: u64, kinds: &[FaultKind], count: usize, pace: Duration) -> Vec<Step> {
    let mut rng = Rng::new(seed);
    let mut order: Vec<FaultKind> = kinds.to_vec();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let pace_ms = pace.as_millis().max(1) as u64;
    (0..count)
        .map(|i| {
            let kind = match order.get(i) {
                Some(&k) => k,
                None => kinds[rng.below(kinds.len() as u64) as usize],
            };
            Step {
                kind,
                hold: Duration::from_millis(rng.between(pace_ms, pace_ms * 2)),
                gap: Duration::from_millis(rng.between(pace_ms / 2, pace_ms)),
                choice: rng.next_u64(),
            }
        })
        .collect()
}

/// Cuts every link from a node of `from` to a node of `to`.
fn cut(c: &Cluster, from: &[NodeId], to: &[NodeId]) -> Result<(), String> {
    for &a in from {
        for &b in to {
            if a != b {
                c.set_link(
                    a,
                    b,
                    LinkFault {
                        blocked: true,
                        ..LinkFault::default()
                    },
                )?;
            }
        }
    }
    Ok(())
}

/// Injects `step`'s fault; what was done, in words. The fault stays until [`Cluster::heal`].
pub async fn inject(c: &mut Cluster, step: &Step) -> Result<String, String> {
    let mut rng = Rng::new(step.choice);
    let ids = c.ids();
    let leader = c.leader().await;
    let random = rng.pick(&ids).unwrap_or(0);
    let target = |aimed: bool| -> Option<NodeId> {
        if aimed {
            leader
        } else {
            Some(random)
        }
    };
    let say_leader = |id: NodeId| {
        if Some(id) == leader {
            format!("node {id} (the leader)")
        } else {
            format!("node {id}")
        }
    };
    Ok(match step.kind {
        FaultKind::Kill | FaultKind::KillLeader => {
            let Some(id) = target(step.kind == FaultKind::KillLeader) else {
                return Ok("kill: no leader to aim at".into());
            };
            c.kill(id);
            format!("SIGKILL {}", say_leader(id))
        }
        FaultKind::Pause | FaultKind::PauseLeader => {
            let Some(id) = target(step.kind == FaultKind::PauseLeader) else {
                return Ok("pause: no leader to aim at".into());
            };
            c.pause(id);
            format!("SIGSTOP {}", say_leader(id))
        }
        FaultKind::Isolate | FaultKind::IsolateLeader => {
            let Some(id) = target(step.kind == FaultKind::IsolateLeader) else {
                return Ok("isolate: no leader to aim at".into());
            };
            let others: Vec<NodeId> = ids.iter().copied().filter(|&o| o != id).collect();
            cut(c, &[id], &others)?;
            cut(c, &others, &[id])?;
            format!("isolate {}", say_leader(id))
        }
        FaultKind::Split => {
            let mut shuffled = ids.clone();
            for i in (1..shuffled.len()).rev() {
                shuffled.swap(i, rng.below(i as u64 + 1) as usize);
            }
            let minority = shuffled.split_off(shuffled.len().div_ceil(2));
            cut(c, &minority, &shuffled)?;
            cut(c, &shuffled, &minority)?;
            format!("split {minority:?} | {shuffled:?}")
        }
        FaultKind::OneWay => {
            let others: Vec<NodeId> = ids.iter().copied().filter(|&o| o != random).collect();
            if rng.below(2) == 0 {
                cut(c, &[random], &others)?;
                format!("one-way: {} cannot send to the others", say_leader(random))
            } else {
                cut(c, &others, &[random])?;
                format!("one-way: {} hears nobody", say_leader(random))
            }
        }
        FaultKind::Latency => {
            let delay = Duration::from_millis(rng.between(20, 150));
            for &a in &ids {
                for &b in &ids {
                    if a != b {
                        c.set_link(
                            a,
                            b,
                            LinkFault {
                                delay,
                                ..LinkFault::default()
                            },
                        )?;
                    }
                }
            }
            format!("{} ms latency on every link", delay.as_millis())
        }
        FaultKind::Transfer => {
            let voters = c.voters().await?;
            let candidates: Vec<NodeId> =
                voters.into_iter().filter(|&v| Some(v) != leader).collect();
            let Some(to) = rng.pick(&candidates) else {
                return Ok("transfer: no other voter".into());
            };
            match c.transfer_leadership(to).await {
                Ok(l) => format!("transfer leadership to node {to}: node {l} leads"),
                // A transfer that did not finish is still a fault that happened.
                Err(e) => format!("transfer leadership to node {to}: {e}"),
            }
        }
        FaultKind::Replace => {
            let added = c.add_node(Duration::from_secs(15)).await?;
            let leader = c.wait_leader(Duration::from_secs(10)).await?;
            let olds: Vec<NodeId> = c
                .ids()
                .into_iter()
                .filter(|&v| v != leader && v != added)
                .collect();
            let Some(out) = rng.pick(&olds) else {
                return Ok(format!(
                    "replace: added node {added}, no follower to remove"
                ));
            };
            c.remove_node(out, Duration::from_secs(15)).await?;
            format!("replace: node {added} joined and became a voter, node {out} was removed")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_one_schedule_that_starts_with_every_kind_once() {
        let a = schedule(42, &FaultKind::ALL, 20, Duration::from_millis(1000));
        let b = schedule(42, &FaultKind::ALL, 20, Duration::from_millis(1000));
        let kinds = |s: &[Step]| s.iter().map(|x| x.kind).collect::<Vec<_>>();
        assert_eq!(kinds(&a), kinds(&b));
        assert_eq!(
            a.iter().map(|s| s.choice).collect::<Vec<_>>(),
            b.iter().map(|s| s.choice).collect::<Vec<_>>()
        );
        let mut first: Vec<FaultKind> = kinds(&a)[..FaultKind::ALL.len()].to_vec();
        first.sort();
        assert_eq!(first, FaultKind::ALL.to_vec());
        assert_ne!(
            kinds(&schedule(
                43,
                &FaultKind::ALL,
                20,
                Duration::from_millis(1000)
            )),
            kinds(&a)
        );
        assert!(a.iter().all(
            |s| s.hold >= Duration::from_millis(1000) && s.hold <= Duration::from_millis(2000)
        ));
        for k in FaultKind::ALL {
            assert_eq!(FaultKind::parse(k.name()), Some(k));
        }
    }
}
