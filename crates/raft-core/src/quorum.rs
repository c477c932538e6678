//! Majority arithmetic over the voters.

use crate::types::NodeId;
use std::collections::BTreeSet;

/// The number of voters that form a majority.
pub(crate) fn majority(voters: &BTreeSet<NodeId>) -> usize {
    voters.len() / 2 + 1
}

/// The largest value that a majority of voters have reached: given one value per voter,
/// the `majority`-th largest.
pub(crate) fn committed_value(mut values: Vec<u64>, majority: usize) -> u64 {
    if values.len() < majority || majority == 0 {
        return 0;
    }
    values.sort_unstable_by(|a, b| b.cmp(a));
    values[majority - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_of_odd_and_even_clusters() {
        let v = |n: u64| (1..=n).collect::<BTreeSet<_>>();
        assert_eq!(majority(&v(1)), 1);
        assert_eq!(majority(&v(3)), 2);
        assert_eq!(majority(&v(4)), 3);
        assert_eq!(majority(&v(5)), 3);
    }

    #[test]
    fn committed_value_is_what_a_majority_reached() {
        assert_eq!(committed_value(vec![5, 1, 3], 2), 3);
        assert_eq!(committed_value(vec![5, 1, 3, 9, 2], 3), 3);
        assert_eq!(committed_value(vec![4], 1), 4);
    }
}
