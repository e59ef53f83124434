//! Allocation of one unprivileged host uid/gid per live sandbox.
//!
//! Every sandbox runs as its own host uid (and gid of the same number) so that
//! no two sandboxes can signal, trace or share files with each other even if
//! one escaped its namespaces. A [`UidLease`] returns its uid when dropped.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};

/// Hands out distinct uids from `[base, base + count)`.
#[derive(Debug, Clone)]
pub struct UidAllocator {
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    base: u32,
    count: u32,
    /// Offset at which the next search starts, so a freed uid is not reused at once.
    next: u32,
    used: BTreeSet<u32>,
}

/// One uid handed out by a [`UidAllocator`]; freed on drop.
#[derive(Debug)]
pub struct UidLease {
    uid: u32,
    state: Arc<Mutex<State>>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // The state is a plain set; a panic while holding the lock cannot leave it inconsistent.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl UidAllocator {
    /// An allocator over `[base, base + count)`; the range is clamped so it never wraps.
    pub fn new(base: u32, count: u32) -> Self {
        let count = count.min(u32::MAX - base);
        Self {
            state: Arc::new(Mutex::new(State {
                base,
                count,
                next: 0,
                used: BTreeSet::new(),
            })),
        }
    }

    /// Takes a free uid, or `None` when all are in use.
    pub fn allocate(&self) -> Option<UidLease> {
        let mut st = lock(&self.state);
        if st.count == 0 || st.used.len() >= st.count as usize {
            return None;
        }
        for i in 0..st.count {
            let offset = (st.next + i) % st.count;
            let uid = st.base + offset;
            if !st.used.contains(&uid) {
                st.used.insert(uid);
                st.next = (offset + 1) % st.count;
                return Some(UidLease {
                    uid,
                    state: Arc::clone(&self.state),
                });
            }
        }
        None
    }

    /// Number of uids currently handed out.
    pub fn in_use(&self) -> usize {
        lock(&self.state).used.len()
    }
}

impl UidLease {
    /// The host uid (also used as the host gid).
    pub fn uid(&self) -> u32 {
        self.uid
    }
}

impl Drop for UidLease {
    fn drop(&mut self) {
        lock(&self.state).used.remove(&self.uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_distinct_uids_until_exhausted() {
        let alloc = UidAllocator::new(1000, 3);
        let a = alloc.allocate().expect("first");
        let b = alloc.allocate().expect("second");
        let c = alloc.allocate().expect("third");
        let mut uids = vec![a.uid(), b.uid(), c.uid()];
        uids.sort_unstable();
        assert_eq!(uids, vec![1000, 1001, 1002]);
        assert!(alloc.allocate().is_none());
        drop(b);
        assert_eq!(alloc.in_use(), 2);
        let d = alloc.allocate().expect("freed uid is reusable");
        assert_eq!(d.uid(), 1001);
    }

    #[test]
    fn does_not_reuse_a_freed_uid_immediately() {
        let alloc = UidAllocator::new(50, 10);
        let a = alloc.allocate().expect("a");
        let first = a.uid();
        drop(a);
        let b = alloc.allocate().expect("b");
        assert_ne!(b.uid(), first);
    }

    #[test]
    fn empty_and_overflowing_ranges_are_safe() {
        assert!(UidAllocator::new(10, 0).allocate().is_none());
        let alloc = UidAllocator::new(u32::MAX - 1, 10);
        let only = alloc.allocate().expect("one uid fits");
        assert_eq!(
            only.uid(),
            u32::MAX - 1,
            "u32::MAX (-1) is never handed out"
        );
        assert!(alloc.allocate().is_none());
    }
}
