//! A linearizability checker for registers with compare-and-swap.
//!
//! The algorithm is Wing and Gong's search ("Testing and verifying concurrent objects",
//! JPDC 1993) with Lowe's memoization of visited (linearized set, state) configurations
//! ("Testing for linearizability", CCPE 2017), the same as the porcupine checker's.
//! Histories are split per key first: linearizability is local (Herlihy and Wing 1990), so
//! the history is linearizable if and only if each key's is, and each key is searched on
//! its own (P-compositionality, Horn and Kroening 2015).
//!
//! An operation whose outcome the client never learned (a timeout, a dropped connection)
//! is *unknown*: it may have taken effect at any moment after its invocation, or never. It
//! gets no return event, so the search may linearize it anywhere after its call, including
//! after everything else (which is the same as never). An unknown read constrains nothing
//! and is left out.
//!
//! The search is exponential in the worst case: past a step budget it gives up and says
//! so ([`Verdict::Unknown`]) rather than run forever.
//!
//! Used by `raft-chaos` (histories of real processes) and by `raft-client`'s node simulator
//! (histories of simulated nodes).

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashSet};
use std::fmt;

/// What a client asked of one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOp {
    /// A linearizable read.
    Read,
    /// An unconditional write.
    Write(String),
    /// A write that applies only if the key holds `expect` (`None`: absent).
    Cas {
        /// The value the key must hold.
        expect: Option<String>,
        /// The value written if it does.
        new: String,
    },
}

/// What the client learned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOutcome {
    /// The read returned this (`None`: absent).
    Read(Option<String>),
    /// The write or compare-and-swap was applied.
    Ok,
    /// The compare-and-swap was refused: the key did not hold `expect`.
    CasFailed,
    /// No answer: it may or may not have taken effect.
    Unknown,
}

/// One operation of a history. Times are in nanoseconds since the run began.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// The client that ran it (each client runs one operation at a time).
    pub client: usize,
    /// The key.
    pub key: String,
    /// What was asked.
    pub op: KvOp,
    /// When the request was sent.
    pub invoke: u64,
    /// When the answer came (`None` for an unknown outcome).
    pub complete: Option<u64>,
    /// What the answer said.
    pub outcome: KvOutcome,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = |t: u64| t as f64 / 1e9;
        let end = match self.complete {
            Some(t) => format!("{:.3}s", secs(t)),
            None => "?".into(),
        };
        let show = |v: &Option<String>| match v {
            Some(v) => format!("{v:?}"),
            None => "absent".into(),
        };
        let what = match &self.op {
            KvOp::Read => "read".to_string(),
            KvOp::Write(v) => format!("write {v:?}"),
            KvOp::Cas { expect, new } => format!("cas {} -> {new:?}", show(expect)),
        };
        let out = match &self.outcome {
            KvOutcome::Read(v) => show(v),
            KvOutcome::Ok => "ok".into(),
            KvOutcome::CasFailed => "precondition failed".into(),
            KvOutcome::Unknown => "unknown (no answer)".into(),
        };
        write!(
            f,
            "client {:>2} [{:.3}s .. {end}] {} {what} => {out}",
            self.client,
            secs(self.invoke),
            self.key
        )
    }
}

/// The register: the key's value (`None`: absent).
type State = Option<String>;

/// The state after `op` from `state`, if `op`'s outcome is possible there.
fn step(state: &State, op: &Operation) -> Option<State> {
    match (&op.op, &op.outcome) {
        (KvOp::Read, KvOutcome::Read(v)) => (v == state).then(|| state.clone()),
        (KvOp::Read, _) => Some(state.clone()),
        (KvOp::Write(v), KvOutcome::Ok | KvOutcome::Unknown) => Some(Some(v.clone())),
        (KvOp::Write(_), _) => None,
        (KvOp::Cas { expect, new }, KvOutcome::Ok) => (expect == state).then(|| Some(new.clone())),
        (KvOp::Cas { expect, .. }, KvOutcome::CasFailed) => {
            (expect != state).then(|| state.clone())
        }
        (KvOp::Cas { expect, new }, KvOutcome::Unknown) => Some(if expect == state {
            Some(new.clone())
        } else {
            state.clone()
        }),
        (KvOp::Cas { .. }, KvOutcome::Read(_)) => None,
    }
}

/// The answer for one key or a whole history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A linearization exists.
    Linearizable,
    /// None exists; the excerpt shows where every attempt got stuck.
    NotLinearizable(Box<Excerpt>),
    /// The search ran out of its budget.
    Unknown(String),
}

/// Where the search got furthest before failing: the operations it had linearized (the
/// last few), the register's value then, and the operations that could come next, none of
/// which fits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Excerpt {
    /// The key.
    pub key: String,
    /// The last operations of the longest linearization found, in order.
    pub linearized: Vec<Operation>,
    /// How many operations that linearization had in all.
    pub linearized_count: usize,
    /// The value after it.
    pub state: State,
    /// The operations that could come next; none is possible from `state`.
    pub stuck: Vec<Operation>,
}

impl fmt::Display for Excerpt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "key {:?}: no linearization; the longest found orders {} operations, ending with:",
            self.key, self.linearized_count
        )?;
        for op in &self.linearized {
            writeln!(f, "    {op}")?;
        }
        writeln!(
            f,
            "  the value is then {}; none of these can come next:",
            match &self.state {
                Some(v) => format!("{v:?}"),
                None => "absent".into(),
            }
        )?;
        for op in &self.stuck {
            writeln!(f, "    {op}")?;
        }
        Ok(())
    }
}

/// Checks every key of `history` (at most `budget` search steps per key).
pub fn check(history: &[Operation], budget: u64) -> Verdict {
    let mut by_key: BTreeMap<&str, Vec<Operation>> = BTreeMap::new();
    for op in history {
        by_key.entry(op.key.as_str()).or_default().push(op.clone());
    }
    let mut unknown = None;
    for ops in by_key.values() {
        match check_key(ops, budget) {
            Verdict::Linearizable => {}
            v @ Verdict::NotLinearizable(_) => return v,
            Verdict::Unknown(why) => unknown = Some(why),
        }
    }
    match unknown {
        Some(why) => Verdict::Unknown(why),
        None => Verdict::Linearizable,
    }
}

/// A call or return event of the search's list.
#[derive(Clone, Copy)]
struct Event {
    op: usize,
    call: bool,
}

/// Checks the operations of one key (the register starts absent).
pub fn check_key(ops: &[Operation], budget: u64) -> Verdict {
    // Unknown reads constrain nothing.
    let ops: Vec<Operation> = ops
        .iter()
        .filter(|o| !(o.op == KvOp::Read && o.outcome == KvOutcome::Unknown))
        .cloned()
        .collect();
    let Some(key) = ops.first().map(|o| o.key.clone()) else {
        return Verdict::Linearizable;
    };
    // Events in time order; at equal times calls first (the more concurrency allowed, the
    // fewer false alarms). An unknown operation returns at the end of time.
    let mut timed: Vec<(u64, u8, Event)> = Vec::with_capacity(ops.len() * 2);
    for (i, o) in ops.iter().enumerate() {
        timed.push((o.invoke, 0, Event { op: i, call: true }));
        let end = o.complete.unwrap_or(u64::MAX);
        timed.push((end, 1, Event { op: i, call: false }));
    }
    timed.sort_by_key(|&(t, kind, e)| (t, kind, e.op));
    let events: Vec<Event> = timed.into_iter().map(|(_, _, e)| e).collect();
    // A doubly linked list over the events, with a head sentinel at index n; NIL ends it.
    const NIL: usize = usize::MAX;
    let n = events.len();
    let head = n;
    let mut next: Vec<usize> = (0..=n)
        .map(|i| if i + 1 < n { i + 1 } else { NIL })
        .collect();
    next[head] = 0;
    let mut prev: Vec<usize> = (0..=n).map(|i| if i == 0 { head } else { i - 1 }).collect();
    prev[head] = NIL;
    let mut ret_of = vec![NIL; ops.len()];
    for (i, e) in events.iter().enumerate() {
        if !e.call {
            ret_of[e.op] = i;
        }
    }
    let unlink = |i: usize, next: &mut Vec<usize>, prev: &mut Vec<usize>| {
        let (p, q) = (prev[i], next[i]);
        next[p] = q;
        if q != NIL {
            prev[q] = p;
        }
    };
    let relink = |i: usize, next: &mut Vec<usize>, prev: &mut Vec<usize>| {
        let (p, q) = (prev[i], next[i]);
        next[p] = i;
        if q != NIL {
            prev[q] = i;
        }
    };

    let mut linearized = vec![0u64; ops.len().div_ceil(64)];
    // Visited configurations, the linearized set kept as a 128-bit digest: memory stays
    // a few dozen bytes per configuration however long the history (a false "visited"
    // needs a collision of 128 bits).
    let mut cache: HashSet<(u128, State)> = HashSet::new();
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut state: State = None;
    let mut best: Option<Excerpt> = None;
    let mut steps = 0u64;
    // Every call's return comes after it in the list, so `entry` never runs off the end
    // while calls remain.
    let mut entry = next[head];
    while next[head] != NIL {
        steps += 1;
        if steps > budget {
            return Verdict::Unknown(format!(
                "key {key:?}: gave up after {budget} search steps ({} operations)",
                ops.len()
            ));
        }
        let e = events[entry];
        if e.call {
            if let Some(new_state) = step(&state, &ops[e.op]) {
                linearized[e.op / 64] |= 1 << (e.op % 64);
                if cache.insert((digest(&linearized), new_state.clone())) {
                    stack.push((entry, state));
                    state = new_state;
                    // Lift the call and its return out of the list.
                    unlink(entry, &mut next, &mut prev);
                    unlink(ret_of[e.op], &mut next, &mut prev);
                    entry = next[head];
                    continue;
                }
                linearized[e.op / 64] &= !(1 << (e.op % 64));
            }
            entry = next[entry];
        } else {
            // An operation returned before any order could include it: back up.
            if best
                .as_ref()
                .is_none_or(|b| stack.len() > b.linearized_count)
            {
                best = Some(excerpt(&key, &ops, &events, &stack, &state, &next, head));
            }
            let Some((call, before)) = stack.pop() else {
                let ex =
                    best.unwrap_or_else(|| excerpt(&key, &ops, &events, &[], &None, &next, head));
                return Verdict::NotLinearizable(Box::new(ex));
            };
            let op = events[call].op;
            state = before;
            linearized[op / 64] &= !(1 << (op % 64));
            relink(ret_of[op], &mut next, &mut prev);
            relink(call, &mut next, &mut prev);
            entry = next[call];
        }
    }
    Verdict::Linearizable
}

/// A 128-bit digest of a set of operations (two SipHashes with different prefixes).
fn digest(set: &[u64]) -> u128 {
    use std::hash::{Hash, Hasher};
    let half = |salt: u8| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        salt.hash(&mut h);
        set.hash(&mut h);
        h.finish()
    };
    (u128::from(half(1)) << 64) | u128::from(half(2))
}

/// The search's position as an excerpt: the last linearized operations, the value, and
/// the calls that could come next (those before the first pending return).
fn excerpt(
    key: &str,
    ops: &[Operation],
    events: &[Event],
    stack: &[(usize, State)],
    state: &State,
    next: &[usize],
    head: usize,
) -> Excerpt {
    const SHOWN: usize = 8;
    let linearized: Vec<Operation> = stack
        .iter()
        .skip(stack.len().saturating_sub(SHOWN))
        .map(|&(call, _)| ops[events[call].op].clone())
        .collect();
    let mut stuck = Vec::new();
    let mut i = next[head];
    while i != usize::MAX {
        let e = events[i];
        if !e.call {
            // The operation that had to be ordered by now.
            if !stuck.contains(&ops[e.op]) {
                stuck.push(ops[e.op].clone());
            }
            break;
        }
        if stuck.len() < SHOWN {
            stuck.push(ops[e.op].clone());
        }
        i = next[i];
    }
    Excerpt {
        key: key.to_string(),
        linearized,
        linearized_count: stack.len(),
        state: state.clone(),
        stuck,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// SplitMix64: a seeded sequence for generated histories.
    struct SplitMix(u64);

    impl SplitMix {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) % n
        }
    }

    fn op(client: usize, t: (u64, Option<u64>), op: KvOp, outcome: KvOutcome) -> Operation {
        Operation {
            client,
            key: "x".into(),
            op,
            invoke: t.0 * MS,
            complete: t.1.map(|c| c * MS),
            outcome,
        }
    }
    fn write(c: usize, t: (u64, u64), v: &str) -> Operation {
        op(c, (t.0, Some(t.1)), KvOp::Write(v.into()), KvOutcome::Ok)
    }
    fn read(c: usize, t: (u64, u64), v: Option<&str>) -> Operation {
        op(
            c,
            (t.0, Some(t.1)),
            KvOp::Read,
            KvOutcome::Read(v.map(String::from)),
        )
    }
    fn cas(c: usize, t: (u64, u64), from: Option<&str>, to: &str, ok: bool) -> Operation {
        op(
            c,
            (t.0, Some(t.1)),
            KvOp::Cas {
                expect: from.map(String::from),
                new: to.into(),
            },
            if ok {
                KvOutcome::Ok
            } else {
                KvOutcome::CasFailed
            },
        )
    }
    fn is_linearizable(h: &[Operation]) -> bool {
        match check(h, 1_000_000) {
            Verdict::Linearizable => true,
            Verdict::NotLinearizable(_) => false,
            Verdict::Unknown(why) => panic!("{why}"),
        }
    }

    #[test]
    fn sequential_and_overlapping_histories_that_have_an_order_are_linearizable() {
        assert!(is_linearizable(&[]));
        assert!(is_linearizable(&[
            read(0, (0, 1), None),
            write(0, (2, 3), "a"),
            read(1, (4, 5), Some("a")),
            cas(1, (6, 7), Some("a"), "b", true),
            cas(0, (8, 9), Some("a"), "c", false),
            read(0, (10, 11), Some("b")),
        ]));
        // Concurrent with the write, a read may see either value.
        assert!(is_linearizable(&[
            write(0, (0, 1), "a"),
            write(1, (2, 10), "b"),
            read(2, (3, 4), Some("a")),
            read(3, (5, 6), Some("b")),
        ]));
    }

    #[test]
    fn a_stale_read_is_caught() {
        let h = [
            write(0, (0, 1), "a"),
            write(0, (2, 3), "b"),
            read(1, (4, 5), Some("a")),
        ];
        let Verdict::NotLinearizable(ex) = check(&h, 1_000_000) else {
            panic!("a read after b was acknowledged returned a");
        };
        assert_eq!(ex.key, "x");
        assert!(ex.stuck.iter().any(|o| o.op == KvOp::Read), "{ex}");
    }

    #[test]
    fn a_lost_write_is_caught() {
        // b was acknowledged, then every read shows a.
        assert!(!is_linearizable(&[
            write(0, (0, 1), "a"),
            write(1, (2, 3), "b"),
            read(0, (4, 5), Some("a")),
            read(1, (6, 7), Some("a")),
        ]));
    }

    #[test]
    fn a_compare_and_swap_that_succeeds_twice_is_caught() {
        // Two clients both swapped a → their value: only one can have found a.
        assert!(!is_linearizable(&[
            write(0, (0, 1), "a"),
            cas(1, (2, 5), Some("a"), "b", true),
            cas(2, (3, 6), Some("a"), "c", true),
        ]));
        // Whereas one succeeding and the other refused is fine.
        assert!(is_linearizable(&[
            write(0, (0, 1), "a"),
            cas(1, (2, 5), Some("a"), "b", true),
            cas(2, (3, 6), Some("a"), "c", false),
            read(0, (7, 8), Some("b")),
        ]));
        // And a refusal while the key held the expected value is caught.
        assert!(!is_linearizable(&[
            write(0, (0, 1), "a"),
            cas(1, (2, 3), Some("a"), "b", false),
        ]));
    }

    #[test]
    fn an_unknown_write_may_have_happened_or_not_but_not_before_it_was_sent() {
        let unknown = |t: u64, v: &str| op(1, (t, None), KvOp::Write(v.into()), KvOutcome::Unknown);
        // It happened.
        assert!(is_linearizable(&[
            write(0, (0, 1), "a"),
            unknown(2, "b"),
            read(0, (10, 11), Some("b")),
        ]));
        // It did not.
        assert!(is_linearizable(&[
            write(0, (0, 1), "a"),
            unknown(2, "b"),
            read(0, (10, 11), Some("a")),
        ]));
        // It cannot have been seen before it was sent.
        assert!(!is_linearizable(&[
            write(0, (0, 1), "a"),
            read(0, (2, 3), Some("b")),
            unknown(4, "b"),
        ]));
        // Unknown reads are ignored.
        assert!(is_linearizable(&[
            write(0, (0, 1), "a"),
            op(1, (2, None), KvOp::Read, KvOutcome::Unknown),
        ]));
    }

    #[test]
    fn keys_are_checked_separately_and_the_budget_gives_up_with_unknown() {
        let mut h = vec![write(0, (0, 1), "a")];
        let mut y = read(1, (2, 3), None);
        y.key = "y".into();
        h.push(y);
        assert!(is_linearizable(&h), "y was never written: absent is right");
        // Many concurrent writes and a read nothing explains: the search is large.
        let mut h: Vec<Operation> = (0..14)
            .map(|i| write(i, (0, 100), &format!("v{i}")))
            .collect();
        h.push(read(99, (101, 102), Some("never")));
        assert!(matches!(check(&h, 1_000), Verdict::Unknown(_)));
    }

    #[test]
    fn the_excerpt_reads_as_the_operations_in_question() {
        let h = [
            write(0, (0, 1), "a"),
            write(0, (2, 3), "b"),
            read(1, (4, 5), Some("a")),
        ];
        let Verdict::NotLinearizable(ex) = check(&h, 1_000_000) else {
            panic!("stale read");
        };
        let text = ex.to_string();
        assert!(text.contains("write \"b\""), "{text}");
        assert!(text.contains("read => \"a\""), "{text}");
        assert!(
            text.contains("[0.004s .. 0.005s]"),
            "times in seconds: {text}"
        );
    }

    #[test]
    fn the_excerpt_names_each_operation_that_could_come_next_once_and_at_most_eight() {
        // After a and then b, ten concurrent reads of a: none fits.
        let mut h = vec![write(0, (0, 1), "a"), write(0, (2, 3), "b")];
        for c in 1..=10 {
            h.push(read(c, (4 + c as u64, 100), Some("a")));
        }
        let Verdict::NotLinearizable(ex) = check(&h, 1_000_000) else {
            panic!("ten stale reads");
        };
        assert_eq!(ex.linearized_count, 2);
        assert_eq!(ex.stuck.len(), 8, "{ex}");
        let clients: Vec<usize> = ex.stuck.iter().map(|o| o.client).collect();
        assert_eq!(
            clients,
            (1..=8).collect::<Vec<_>>(),
            "in call order, each once"
        );
        // The excerpt is the deepest attempt, even when a shallower one failed first:
        // ordering x before y fails after two operations, y before x after three.
        let xy = [
            write(0, (0, 10), "x"),
            write(1, (0, 10), "y"),
            read(2, (11, 12), Some("x")),
            read(2, (13, 14), Some("y")),
        ];
        let Verdict::NotLinearizable(deepest) = check(&xy, 1_000_000) else {
            panic!("y read after x was the last value");
        };
        assert_eq!(deepest.linearized_count, 3, "{deepest}");
        // Two of them: both named.
        let Verdict::NotLinearizable(ex) = check(&h[..4], 1_000_000) else {
            panic!("two stale reads");
        };
        assert_eq!(
            ex.stuck.iter().map(|o| o.client).collect::<Vec<_>>(),
            [1, 2]
        );
    }

    /// A history made by running operations one at a time on a register, each at its own
    /// instant, then giving each an interval around that instant (overlapping others) and
    /// losing some answers: linearizable by construction.
    fn random_history(seed: u64, n: usize) -> Vec<Operation> {
        let mut rng = SplitMix(seed);
        let mut state: Option<String> = None;
        let mut out = Vec::new();
        for i in 0..n {
            let at = (i as u64 + 3) * 10;
            let v = format!("v{i}");
            let (op, outcome) = match rng.below(3) {
                0 => (KvOp::Read, KvOutcome::Read(state.clone())),
                1 => {
                    state = Some(v.clone());
                    (KvOp::Write(v), KvOutcome::Ok)
                }
                _ => {
                    let expect = if rng.below(2) == 0 {
                        state.clone()
                    } else {
                        Some("other".into())
                    };
                    let ok = expect == state;
                    if ok {
                        state = Some(v.clone());
                    }
                    let outcome = if ok {
                        KvOutcome::Ok
                    } else {
                        KvOutcome::CasFailed
                    };
                    (KvOp::Cas { expect, new: v }, outcome)
                }
            };
            let lost = op != KvOp::Read && rng.below(10) == 0;
            out.push(Operation {
                client: i % 5,
                key: "x".into(),
                op,
                invoke: (at - rng.below(25)) * MS,
                complete: (!lost).then(|| (at + rng.below(25)) * MS),
                outcome: if lost { KvOutcome::Unknown } else { outcome },
            });
        }
        out
    }

    #[test]
    fn histories_linearizable_by_construction_pass_and_one_forged_read_fails_them() {
        for seed in 0..200 {
            let h = random_history(seed, 60);
            assert_eq!(check(&h, 10_000_000), Verdict::Linearizable, "seed {seed}");
            // A read of a value never written cannot be explained.
            let mut forged = h.clone();
            if let Some(r) = forged.iter_mut().find(|o| o.op == KvOp::Read) {
                r.outcome = KvOutcome::Read(Some("never written".into()));
                assert!(
                    matches!(check(&forged, 10_000_000), Verdict::NotLinearizable(_)),
                    "seed {seed}"
                );
            }
        }
    }
}
