//! Admission control: submits in flight are bounded in number and bytes.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Debug)]
pub(crate) struct Limits {
    max_count: usize,
    max_bytes: u64,
    count: AtomicUsize,
    bytes: AtomicU64,
}

/// One admitted submit; dropping it gives its share back.
#[derive(Debug)]
pub(crate) struct Permit {
    limits: Arc<Limits>,
    bytes: u64,
}

impl Limits {
    pub(crate) fn new(max_count: usize, max_bytes: u64) -> Arc<Self> {
        Arc::new(Limits {
            max_count,
            max_bytes,
            count: AtomicUsize::new(0),
            bytes: AtomicU64::new(0),
        })
    }

    /// Admits a submit of `bytes`, or refuses it when a limit would be passed (a single
    /// submit larger than the byte limit is admitted only when nothing else is in flight).
    pub(crate) fn try_acquire(self: &Arc<Self>, bytes: u64) -> Option<Permit> {
        // The count never passes its limit, not even for an instant.
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_count).then_some(n + 1)
            })
            .ok()?;
        let b = self.bytes.fetch_add(bytes, Ordering::AcqRel);
        if b > 0 && b + bytes > self.max_bytes {
            self.count.fetch_sub(1, Ordering::AcqRel);
            self.bytes.fetch_sub(bytes, Ordering::AcqRel);
            return None;
        }
        Some(Permit {
            limits: self.clone(),
            bytes,
        })
    }

    /// Submits in flight now.
    pub(crate) fn in_flight(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limits.count.fetch_sub(1, Ordering::AcqRel);
        self.limits.bytes.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_are_bounded_and_given_back() {
        let l = Limits::new(2, 100);
        let a = l.try_acquire(10).unwrap();
        let _b = l.try_acquire(10).unwrap();
        assert!(l.try_acquire(10).is_none(), "count limit");
        drop(a);
        assert!(l.try_acquire(95).is_none(), "byte limit");
        assert!(l.try_acquire(10).is_some());
        assert_eq!(l.in_flight(), 1);
    }
}
