//! Majority arithmetic over one set of voters.

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
    fn committed_value_is_what_a_majority_reached() {
        assert_eq!(committed_value(vec![5, 1, 3], 2), 3);
        assert_eq!(committed_value(vec![5, 1, 3, 9, 2], 3), 3);
        assert_eq!(committed_value(vec![4], 1), 4);
    }
}
