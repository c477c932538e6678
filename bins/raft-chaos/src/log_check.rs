//! Checks of the append-only log workload, on the logs read back from every node once the
//! cluster healed and agreed.

use std::collections::{BTreeMap, HashMap};

/// One append a client sent. Times are in nanoseconds since the run began.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Append {
    /// The client.
    pub client: usize,
    /// The entry's text (unique in the run).
    pub text: String,
    /// When it was sent.
    pub invoke: u64,
    /// When it was acknowledged, and at which index (`None`: not acknowledged, or no
    /// answer).
    pub acked: Option<(u64, u64)>,
}

/// A node's log: (index, text) of its plain entries, in index order.
pub type NodeLog = Vec<(u64, String)>;

/// Every rule the logs break (empty: none).
pub fn check(appends: &[Append], logs: &BTreeMap<u64, NodeLog>) -> Vec<String> {
    let mut violations = Vec::new();
    let sent: HashMap<&str, &Append> = appends.iter().map(|a| (a.text.as_str(), a)).collect();

    // Logs identical on every node.
    let mut reference: Option<(u64, &NodeLog)> = None;
    for (&node, log) in logs {
        match reference {
            None => reference = Some((node, log)),
            Some((other, theirs)) => {
                if let Some(i) =
                    (0..log.len().max(theirs.len())).find(|&i| log.get(i) != theirs.get(i))
                {
                    violations.push(format!(
                        "the logs of node {other} and node {node} differ: {:?} vs {:?} (the {}th plain entry)",
                        theirs.get(i),
                        log.get(i),
                        i + 1
                    ));
                }
            }
        }
    }

    for (&node, log) in logs {
        let mut seen: HashMap<&str, u64> = HashMap::new();
        let mut last_index = 0;
        for (index, text) in log {
            if *index <= last_index {
                violations.push(format!(
                    "node {node}: index {index} follows index {last_index}"
                ));
            }
            last_index = *index;
            if !sent.contains_key(text.as_str()) {
                violations.push(format!(
                    "node {node}: entry {text:?} at index {index} was never sent"
                ));
            }
            if let Some(first) = seen.insert(text, *index) {
                violations.push(format!(
                    "node {node}: entry {text:?} is in the log twice (indexes {first} and {index})"
                ));
            }
        }
        for a in appends {
            let Some((_, index)) = a.acked else { continue };
            match seen.get(a.text.as_str()) {
                None => violations.push(format!(
                    "node {node}: acknowledged entry {:?} (index {index}, client {}) is missing",
                    a.text, a.client
                )),
                Some(&at) if at != index => violations.push(format!(
                    "node {node}: entry {:?} was acknowledged at index {index} but is at {at}",
                    a.text
                )),
                Some(_) => {}
            }
        }
    }

    // Real-time order: an append acknowledged before another was sent has a lower index.
    let mut acked: Vec<(&Append, u64, u64)> = appends
        .iter()
        .filter_map(|a| a.acked.map(|(t, i)| (a, t, i)))
        .collect();
    let mut by_invoke = acked.clone();
    by_invoke.sort_by_key(|&(a, _, _)| a.invoke);
    acked.sort_by_key(|&(_, done, _)| done);
    let mut highest: Option<(&Append, u64)> = None;
    let mut k = 0;
    for (b, _, b_index) in by_invoke {
        while k < acked.len() && acked[k].1 < b.invoke {
            let (a, _, a_index) = acked[k];
            if highest.is_none_or(|(_, i)| a_index > i) {
                highest = Some((a, a_index));
            }
            k += 1;
        }
        if let Some((a, a_index)) = highest {
            if a_index >= b_index {
                violations.push(format!(
                    "{:?} (index {a_index}) was acknowledged before {:?} was sent, yet {:?} has index {b_index}",
                    a.text, b.text, b.text
                ));
            }
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(text: &str, invoke: u64, acked: Option<(u64, u64)>) -> Append {
        Append {
            client: 0,
            text: text.into(),
            invoke,
            acked,
        }
    }
    fn log(entries: &[(u64, &str)]) -> NodeLog {
        entries.iter().map(|&(i, t)| (i, t.to_string())).collect()
    }

    #[test]
    fn identical_logs_holding_every_acknowledged_entry_in_order_pass() {
        let appends = [
            append("a", 0, Some((1, 2))),
            append("b", 2, None),
            append("c", 3, Some((4, 5))),
        ];
        // b had no answer and was committed anyway: allowed.
        let l = log(&[(2, "a"), (4, "b"), (5, "c")]);
        let logs = BTreeMap::from([(0, l.clone()), (1, l)]);
        assert_eq!(check(&appends, &logs), Vec::<String>::new());
    }

    #[test]
    fn a_lost_a_duplicated_a_forged_and_a_reordered_entry_are_each_reported() {
        let appends = [append("a", 0, Some((1, 2))), append("c", 3, Some((4, 5)))];
        let lost = check(&appends, &BTreeMap::from([(0, log(&[(2, "a")]))]));
        assert!(
            lost.iter()
                .any(|v| v.contains("\"c\"") && v.contains("missing")),
            "{lost:?}"
        );
        let twice = check(
            &appends,
            &BTreeMap::from([(0, log(&[(2, "a"), (3, "a"), (5, "c")]))]),
        );
        assert!(twice.iter().any(|v| v.contains("twice")), "{twice:?}");
        let forged = check(
            &appends,
            &BTreeMap::from([(0, log(&[(2, "a"), (3, "zz"), (5, "c")]))]),
        );
        assert!(
            forged.iter().any(|v| v.contains("never sent")),
            "{forged:?}"
        );
        // c was sent after a was acknowledged, but lands before it.
        let order = [append("a", 0, Some((1, 5))), append("c", 3, Some((4, 2)))];
        let reordered = check(&order, &BTreeMap::from([(0, log(&[(2, "c"), (5, "a")]))]));
        assert!(
            reordered.iter().any(|v| v.contains("acknowledged before")),
            "{reordered:?}"
        );
    }

    #[test]
    fn an_entry_found_at_another_index_than_acknowledged_is_reported() {
        let appends = [append("a", 0, Some((1, 2)))];
        let v = check(&appends, &BTreeMap::from([(0, log(&[(3, "a")]))]));
        assert!(v.iter().any(|v| v.contains("but is at 3")), "{v:?}");
    }

    #[test]
    fn real_time_order_counts_the_highest_index_acknowledged_before_and_only_strictly_before() {
        // b (index 7) was acknowledged before c was sent; c has index 6.
        let appends = [
            append("a", 0, Some((1, 5))),
            append("b", 0, Some((2, 7))),
            append("c", 3, Some((4, 6))),
        ];
        let l = log(&[(5, "a"), (6, "c"), (7, "b")]);
        let v = check(&appends, &BTreeMap::from([(0, l)]));
        assert!(v.iter().any(|v| v.contains("\"b\" (index 7)")), "{v:?}");
        // Acknowledged at the very instant the other was sent: concurrent, not before.
        let appends = [append("a", 0, Some((3, 5))), append("c", 3, Some((4, 4)))];
        let v = check(&appends, &BTreeMap::from([(0, log(&[(4, "c"), (5, "a")]))]));
        assert_eq!(v, Vec::<String>::new());
        // A lower index acknowledged later does not hide a higher one.
        let appends = [
            append("a", 0, Some((1, 5))),
            append("b", 0, Some((2, 3))),
            append("c", 3, Some((4, 4))),
        ];
        let v = check(
            &appends,
            &BTreeMap::from([(0, log(&[(3, "b"), (4, "c"), (5, "a")]))]),
        );
        assert!(v.iter().any(|v| v.contains("\"a\" (index 5)")), "{v:?}");
    }

    #[test]
    fn logs_that_differ_between_nodes_are_reported() {
        let appends = [append("a", 0, None), append("b", 0, None)];
        let v = check(
            &appends,
            &BTreeMap::from([(0, log(&[(2, "a")])), (1, log(&[(2, "b")]))]),
        );
        assert!(v.iter().any(|v| v.contains("differ")), "{v:?}");
    }
}
