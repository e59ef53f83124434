//! Placement: which worker gets a new sandbox, and what must be evicted first.
//!
//! Pure scoring over an inventory of workers (capacity and reserved memory)
//! and the idle sandboxes that could be evicted. It never starts or stops
//! anything itself: the assignment service owns the inventory, asks
//! [`decide`], and carries out the answer. Packing is best-fit (the worker
//! left with the least free memory that still fits), which keeps large holes
//! free for large functions; eviction takes the least recently used idle
//! sandboxes on the worker that needs the fewest evictions.

use std::collections::HashMap;

/// A worker as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSlot {
    pub id: String,
    pub capacity_mb: u64,
    pub reserved_mb: u64,
}

impl WorkerSlot {
    pub fn free_mb(&self) -> u64 {
        self.capacity_mb.saturating_sub(self.reserved_mb)
    }
}

/// An idle sandbox that may be evicted to make room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdleSandbox {
    pub sandbox_id: String,
    pub worker_id: String,
    pub memory_mb: u64,
    /// Monotonic time it became idle (smaller = older).
    pub idle_since: u64,
}

/// What the assignment service should do for a new sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Place it on this worker now.
    Place { worker_id: String },
    /// Evict these idle sandboxes on this worker, then place it there.
    EvictThenPlace {
        worker_id: String,
        victims: Vec<String>,
    },
    /// Nothing fits and not enough can be freed.
    Full,
}

/// Decides where a sandbox needing `need_mb` goes.
pub fn decide(workers: &[WorkerSlot], idle: &[IdleSandbox], need_mb: u64) -> Decision {
    let fits = workers
        .iter()
        .filter(|w| w.free_mb() >= need_mb)
        .min_by_key(|w| (w.free_mb() - need_mb, w.id.clone()));
    if let Some(w) = fits {
        return Decision::Place {
            worker_id: w.id.clone(),
        };
    }

    let mut by_worker: HashMap<&str, Vec<&IdleSandbox>> = HashMap::new();
    for s in idle {
        by_worker.entry(s.worker_id.as_str()).or_default().push(s);
    }
    let mut best: Option<(usize, String, Vec<String>)> = None;
    for w in workers.iter().filter(|w| w.capacity_mb >= need_mb) {
        let Some(cands) = by_worker.get_mut(w.id.as_str()) else {
            continue;
        };
        cands.sort_by_key(|s| (s.idle_since, s.sandbox_id.clone()));
        let mut free = w.free_mb();
        let mut victims = Vec::new();
        for s in cands.iter() {
            if free >= need_mb {
                break;
            }
            free += s.memory_mb;
            victims.push(s.sandbox_id.clone());
        }
        if free >= need_mb {
            let better = match &best {
                None => true,
                Some((n, id, _)) => (victims.len(), &w.id) < (*n, id),
            };
            if better {
                best = Some((victims.len(), w.id.clone(), victims));
            }
        }
    }
    match best {
        Some((_, worker_id, victims)) => Decision::EvictThenPlace { worker_id, victims },
        None => Decision::Full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn w(id: &str, cap: u64, res: u64) -> WorkerSlot {
        WorkerSlot {
            id: id.into(),
            capacity_mb: cap,
            reserved_mb: res,
        }
    }

    fn idle(id: &str, worker: &str, mb: u64, since: u64) -> IdleSandbox {
        IdleSandbox {
            sandbox_id: id.into(),
            worker_id: worker.into(),
            memory_mb: mb,
            idle_since: since,
        }
    }

    #[test]
    fn places_where_it_fits_best() {
        let ws = [w("a", 1000, 0), w("b", 1000, 700)];
        assert_eq!(
            decide(&ws, &[], 256),
            Decision::Place {
                worker_id: "b".into()
            }
        );
        assert_eq!(
            decide(&ws, &[], 512),
            Decision::Place {
                worker_id: "a".into()
            }
        );
    }

    #[test]
    fn evicts_least_recently_used_first() {
        let ws = [w("a", 512, 512)];
        let idle = [
            idle("new", "a", 128, 20),
            idle("old", "a", 128, 10),
            idle("mid", "a", 256, 15),
        ];
        assert_eq!(
            decide(&ws, &idle, 256),
            Decision::EvictThenPlace {
                worker_id: "a".into(),
                victims: vec!["old".into(), "mid".into()]
            }
        );
    }

    #[test]
    fn full_when_nothing_can_be_freed() {
        let ws = [w("a", 512, 512)];
        assert_eq!(decide(&ws, &[idle("x", "a", 128, 1)], 256), Decision::Full);
        assert_eq!(decide(&ws, &[], 128), Decision::Full);
        assert_eq!(decide(&[w("a", 128, 0)], &[], 256), Decision::Full);
    }

    proptest! {
        /// Whatever placement answers is feasible: the chosen worker has room
        /// after evicting exactly the victims, and victims are idle on it.
        #[test]
        fn decisions_are_feasible(
            caps in proptest::collection::vec((1u64..4096, 0u64..4096), 1..5),
            idles in proptest::collection::vec((0usize..5, 1u64..1024, 0u64..100), 0..12),
            need in 1u64..2048,
        ) {
            let ws: Vec<WorkerSlot> = caps.iter().enumerate()
                .map(|(i, (c, r))| w(&format!("w{i}"), *c, (*r).min(*c))).collect();
            let is: Vec<IdleSandbox> = idles.iter().enumerate()
                .filter(|(_, (wi, _, _))| *wi < ws.len())
                .map(|(i, (wi, mb, t))| idle(&format!("s{i}"), &format!("w{wi}"), *mb, *t)).collect();
            match decide(&ws, &is, need) {
                Decision::Place { worker_id } => {
                    let wk = ws.iter().find(|x| x.id == worker_id).expect("known worker");
                    prop_assert!(wk.free_mb() >= need);
                }
                Decision::EvictThenPlace { worker_id, victims } => {
                    let wk = ws.iter().find(|x| x.id == worker_id).expect("known worker");
                    let freed: u64 = victims.iter()
                        .map(|v| is.iter().find(|s| &s.sandbox_id == v && s.worker_id == worker_id).expect("victim idle on worker").memory_mb)
                        .sum();
                    prop_assert!(wk.free_mb() + freed >= need);
                    prop_assert!(wk.free_mb() < need);
                }
                Decision::Full => {
                    for wk in &ws {
                        let all: u64 = is.iter().filter(|s| s.worker_id == wk.id).map(|s| s.memory_mb).sum();
                        prop_assert!(wk.free_mb() + all < need || wk.capacity_mb < need);
                    }
                }
            }
        }
    }
}
