//! The assignment service (Lambda's worker manager): which sandbox runs an invoke.
//!
//! Owns the table of every sandbox, idle or busy, per function revision
//! ([`VersionKey`]) and the memory each holds on its worker. An invoke takes
//! the most recently used idle sandbox of its revision (warm start); when none
//! is idle it asks placement for room, evicting least recently used idle
//! sandboxes of other revisions if it must, and has the worker create one
//! (cold start). A sandbox serves one invoke at a time; after the invoke it
//! goes back to idle, or is destroyed if it died or its revision was retired.
//! Idle sandboxes are shut down after the keep-alive period.
//!
//! With the adaptive keep-alive ([`KeepAlivePolicy::Adaptive`]), a revision
//! whose idle times are known and start well after its invokes end (a timer,
//! say) is *pre-warmed* instead of kept: its sandbox is released as soon as
//! the invoke ends, and a fresh one is created and initialised (without an
//! invoke, like a provisioned one) just before the next invoke is expected,
//! then kept until the tail of its idle times ([`keepalive::Window`]).
//!
//! Every sandbox also has a lease, a maximum lifetime counted from its
//! creation (default 6 hours, like Lambda's workers), so that long-lived
//! state, leaks and configuration drift cannot build up. A sandbox whose
//! lease has run out is never handed another invoke: an invoke already
//! running in it finishes normally, and the sandbox is shut down when it is
//! released (or by the reaper if it is idle); the next invoke of the function
//! takes a warm sibling or starts a new sandbox, so no invoke fails because
//! of a lease. Each sandbox's lease is shortened by a jitter of up to 10%,
//! derived from its id ([`lease_of`]), so that sandboxes created together do
//! not all expire at the same moment.
//!
//! Provisioned concurrency: for each config ([`ProvisionId`], a published
//! version or an alias) a goal of N sandboxes of one version, created with
//! `AWS_LAMBDA_INITIALIZATION_TYPE=provisioned-concurrency` and initialised
//! ([`WarmSandbox::ready`]) before any invoke. A reconciler (the same
//! background task as the reaper, woken at once by a change of goal) keeps N
//! of them alive: it replaces dead ones, and starts the successor of a
//! sandbox whose lease is about to run out ([`renewal_margin`]) while the old
//! one still serves. Provisioned sandboxes are never stopped by keep-alive
//! nor evicted by placement (placement sees their memory as taken), and warm
//! routing takes them before on-demand siblings; invokes beyond them start
//! on-demand sandboxes as usual.
//!
//! It does not admit or throttle by concurrency (the counting service does)
//! and never talks to the kernel: sandboxes are created and destroyed through
//! the [`Worker`] interface. The table is behind one mutex held only for
//! short, non-async sections; sandbox creation and invocations run outside it.

pub mod keepalive;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::time::Instant;

use async_trait::async_trait;
use stratus_api::LambdaError;
/// The adaptive keep-alive's pre-warm counters (also in [`SandboxCounts`],
/// which `/metrics` shows).
pub use stratus_api::service::PrewarmCounts;
use stratus_api::service::{
    Counting, FunctionProvisioned, FunctionVersionSpec, InitializationType, InvokeRequest,
    InvokeResponse, Invoker, ProvisionId, ProvisionState, ProvisionedStatus, ResponseSink,
    SandboxCounts, SandboxInfo, VersionKey, WarmSandbox, Worker,
};
use stratus_placement::{Decision, IdleSandbox, WorkerSlot, decide};
use stratus_types::AccountId;
use tracing::Instrument;

/// Tunables of the assignment service.
#[derive(Debug, Clone, Copy)]
pub struct AssignmentConfig {
    /// How long an idle sandbox is kept before it is shut down (with
    /// [`KeepAlivePolicy::Adaptive`]: until a function's idle times are
    /// known).
    pub keep_alive: Duration,
    /// Fixed keep-alive, or one learnt per function version.
    pub keep_alive_policy: KeepAlivePolicy,
    /// The longest a sandbox lives (before jitter, see [`lease_of`]); after
    /// it the sandbox takes no new invoke and is shut down.
    pub lease: Duration,
}

/// How long idle sandboxes are kept.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum KeepAlivePolicy {
    /// [`AssignmentConfig::keep_alive`] for every function.
    #[default]
    Fixed,
    /// Per function version, from its idle-time histogram
    /// ([`keepalive::window`]): kept until the tail of its idle times, or
    /// [`AssignmentConfig::keep_alive`] while they are not representative.
    /// When the window has a pre-warm (its idle times start a bin or more
    /// after an invoke ends), the sandbox is released after the invoke and
    /// a new one is pre-warmed at [`keepalive::Window::prewarm`].
    Adaptive(keepalive::PolicyConfig),
}

/// What the adaptive keep-alive knows of one function version.
#[derive(Debug)]
struct Activity {
    idle: keepalive::IdleHistogram,
    /// When its last invoke ended, if none has started since.
    last_end: Option<Instant>,
    last_seen: Instant,
    /// What a pre-warm creates (from the revision's first invoke).
    spec: Arc<FunctionVersionSpec>,
    /// A pre-warm to start then: its sandbox was released after the invoke
    /// that ended at `.end`. Cleared by the next invoke's start.
    prewarm: Option<PendingPrewarm>,
    /// A pre-warm's sandbox is being created and initialised.
    prewarming: bool,
}

#[derive(Debug, Clone, Copy)]
struct PendingPrewarm {
    /// When to start it: `end` plus the window's pre-warm.
    due: Instant,
    /// When the invoke ended: the new sandbox's idle time counts from it,
    /// so keep-alive ends it at the window's tail.
    end: Instant,
}

/// The default lease: 6 hours, as Lambda's workers.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(6 * 60 * 60);

/// The lease of the sandbox `id`: `lease` minus a jitter of up to 10% of it,
/// so within `[0.9 * lease, lease]` (never longer than configured).
///
/// The jitter is a stable hash (FNV-1a) of the id scaled into that range: the
/// same id always gets the same lease, in every process and build, and
/// sandboxes created at the same moment spread their expiries over a tenth of
/// the lease instead of being replaced all at once.
pub fn lease_of(id: &str, lease: Duration) -> Duration {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    const STEPS: u128 = 1 << 16;
    let max_jitter = lease.as_nanos() / 10;
    let jitter = max_jitter * u128::from(h % (1 << 16)) / (STEPS - 1);
    // `jitter <= lease / 10`, so it fits wherever `lease` does.
    lease.saturating_sub(Duration::from_nanos(
        u64::try_from(jitter).unwrap_or(u64::MAX),
    ))
}

/// How long before a provisioned sandbox's lease runs out its successor is
/// started: a tenth of the lease, at most 5 minutes. Until the successor is
/// ready the old sandbox keeps serving, so a lease never leaves a goal short
/// when there is room for one more sandbox.
pub fn renewal_margin(lease: Duration) -> Duration {
    (lease / 10).min(Duration::from_secs(300))
}

impl Default for AssignmentConfig {
    fn default() -> Self {
        AssignmentConfig {
            keep_alive: Duration::from_secs(300),
            keep_alive_policy: KeepAlivePolicy::Fixed,
            lease: DEFAULT_LEASE,
        }
    }
}

#[derive(Debug)]
struct Entry {
    sandbox: Arc<dyn WarmSandbox>,
    key: VersionKey,
    worker: usize,
    memory_mb: u64,
    busy: bool,
    idle_since: Instant,
    /// When its lease runs out (`None`: too far away to represent).
    expires_at: Option<Instant>,
    /// The provisioned concurrency config it is kept for (`None`: on demand).
    provisioned: Option<ProvisionId>,
    /// Created by the adaptive keep-alive's pre-warm and not used yet.
    prewarmed: bool,
}

impl Entry {
    fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }

    /// Whether it counts towards its provisioned goal: alive, and not so
    /// close to its lease's end that its successor should be starting.
    fn lasting(&self, now: Instant, margin: Duration) -> bool {
        self.sandbox.is_alive()
            && self
                .expires_at
                .is_none_or(|at| now.checked_add(margin).is_none_or(|m| m < at))
    }
}

/// One provisioned concurrency goal.
#[derive(Debug)]
struct Goal {
    spec: Arc<FunctionVersionSpec>,
    count: u32,
    /// Set when the goal is created (kept when it changes), so a creation
    /// started for a removed goal neither joins nor is counted by a new goal
    /// of the same config.
    incarnation: u64,
    /// Creations (and inits) in progress for it.
    starting: u32,
    /// Set once every requested sandbox was ready.
    was_ready: bool,
    /// Why it failed; the reconciler leaves a failed goal alone.
    failed: Option<String>,
}

#[derive(Debug, Default)]
struct Table {
    /// Every sandbox by id.
    sandboxes: HashMap<String, Entry>,
    /// Idle sandbox ids per revision, most recently used last.
    idle: HashMap<VersionKey, Vec<String>>,
    /// Memory reserved per worker (sandboxes plus creations in progress).
    reserved_mb: Vec<u64>,
    /// Sandbox creations in progress (not in `sandboxes` yet).
    starting: usize,
    /// Revisions retired, per function: their sandboxes are destroyed when
    /// released.
    retired: HashMap<(AccountId, String), Retired>,
    /// Live sandboxes shut down because their lease was over.
    lease_expiries: u64,
    /// Provisioned concurrency goals.
    goals: HashMap<ProvisionId, Goal>,
    /// Source of [`Goal::incarnation`].
    incarnations: u64,
    /// Idle times per revision, for the adaptive keep-alive.
    activity: HashMap<VersionKey, Activity>,
    /// What the pre-warms did.
    prewarms: PrewarmCounts,
}

/// What of one function is retired.
#[derive(Debug, Default)]
struct Retired {
    /// Every version (the function was deleted).
    all: bool,
    /// Per version: `None` retires all its revisions, `Some(keep)` all but
    /// `keep`.
    versions: HashMap<String, Option<String>>,
}

impl Table {
    fn is_retired(&self, key: &VersionKey) -> bool {
        let Some(r) = self.retired.get(&(key.account.clone(), key.name.clone())) else {
            return false;
        };
        r.all
            || match r.versions.get(&key.version) {
                None => false,
                Some(None) => true,
                Some(Some(keep)) => keep != &key.revision_id,
            }
    }

    /// Takes the most recently used idle sandbox of `key`, a provisioned one
    /// if there is one.
    fn pop_idle(&mut self, key: &VersionKey) -> Option<String> {
        let Table {
            idle, sandboxes, ..
        } = self;
        let list = idle.get_mut(key)?;
        let pos = list
            .iter()
            .rposition(|id| sandboxes.get(id).is_some_and(|e| e.provisioned.is_some()))
            .or_else(|| list.len().checked_sub(1))?;
        let id = list.remove(pos);
        if list.is_empty() {
            idle.remove(key);
        }
        Some(id)
    }

    fn remove_idle(&mut self, id: &str) -> Option<Entry> {
        let e = self.sandboxes.remove(id)?;
        if let Some(list) = self.idle.get_mut(&e.key) {
            list.retain(|x| x != id);
            if list.is_empty() {
                self.idle.remove(&e.key);
            }
        }
        if let Some(r) = self.reserved_mb.get_mut(e.worker) {
            *r = r.saturating_sub(e.memory_mb);
        }
        Some(e)
    }

    /// Stops keeping sandboxes for `id`: idle ones are removed (returned to
    /// be shut down), busy ones become on-demand and go after their invoke
    /// like any other.
    fn unprovision(&mut self, id: &ProvisionId) -> Vec<Entry> {
        let ids: Vec<(String, bool)> = self
            .sandboxes
            .iter()
            .filter(|(_, e)| e.provisioned.as_ref() == Some(id))
            .map(|(sid, e)| (sid.clone(), e.busy))
            .collect();
        let mut out = Vec::new();
        for (sid, busy) in ids {
            if busy {
                if let Some(e) = self.sandboxes.get_mut(&sid) {
                    e.provisioned = None;
                }
            } else if let Some(e) = self.remove_idle(&sid) {
                out.push(e);
            }
        }
        out
    }

    /// Like [`Table::remove_idle`], for a sandbox that takes no more
    /// invokes: counts it if it goes because its lease is over.
    fn remove_spent(&mut self, id: &str, now: Instant) -> Option<Entry> {
        let e = self.remove_idle(id)?;
        if e.expired(now) && e.sandbox.is_alive() {
            self.lease_expiries += 1;
            tracing::debug!(sandbox = e.sandbox.id(), "lease expired");
        }
        Some(e)
    }
}

/// Assignment for one machine: an in-memory table over a set of workers.
#[derive(Debug)]
pub struct LocalAssignment {
    workers: Vec<Arc<dyn Worker>>,
    table: Mutex<Table>,
    cfg: AssignmentConfig,
    /// Asked for a scale-up token before every cold start (the per-function
    /// burst limit); `None` means unlimited.
    scaling: Option<Arc<dyn Counting>>,
    /// Wakes the reconciler when a provisioned goal changes.
    reconcile: Arc<tokio::sync::Notify>,
}

/// Statistics for tests and operators.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AssignmentStats {
    pub sandboxes: usize,
    pub idle: usize,
    pub busy: usize,
    /// Memory reserved by sandboxes (idle, busy) and creations in progress.
    pub reserved_mb: u64,
    /// The part of `reserved_mb` held by idle sandboxes (evictable).
    pub idle_mb: u64,
    /// Live sandboxes shut down because their lease was over, since start.
    pub lease_expiries: u64,
    /// Sandboxes kept for provisioned concurrency (idle or busy).
    pub provisioned: usize,
    /// The adaptive keep-alive's pre-warms, since start.
    pub prewarms: PrewarmCounts,
}

impl LocalAssignment {
    /// Creates the service and starts its keep-alive reaper. New sandboxes
    /// are not rate limited.
    pub fn new(workers: Vec<Arc<dyn Worker>>, cfg: AssignmentConfig) -> Arc<Self> {
        Self::build(workers, cfg, None)
    }

    /// Like [`LocalAssignment::new`], but every cold start first takes a
    /// scale-up token from `counting` ([`Counting::try_scale_up`]).
    pub fn with_scaling(
        workers: Vec<Arc<dyn Worker>>,
        cfg: AssignmentConfig,
        counting: Arc<dyn Counting>,
    ) -> Arc<Self> {
        Self::build(workers, cfg, Some(counting))
    }

    fn build(
        workers: Vec<Arc<dyn Worker>>,
        cfg: AssignmentConfig,
        scaling: Option<Arc<dyn Counting>>,
    ) -> Arc<Self> {
        let n = workers.len();
        let this = Arc::new(LocalAssignment {
            workers,
            table: Mutex::new(Table {
                reserved_mb: vec![0; n],
                ..Table::default()
            }),
            cfg,
            scaling,
            reconcile: Arc::new(tokio::sync::Notify::new()),
        });
        tokio::spawn(reaper(Arc::downgrade(&this)));
        this
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn stats(&self) -> AssignmentStats {
        let t = self.lock();
        let busy = t.sandboxes.values().filter(|e| e.busy).count();
        AssignmentStats {
            sandboxes: t.sandboxes.len(),
            idle: t.sandboxes.len() - busy,
            busy,
            reserved_mb: t.reserved_mb.iter().sum(),
            idle_mb: t
                .sandboxes
                .values()
                .filter(|e| !e.busy)
                .map(|e| e.memory_mb)
                .sum(),
            lease_expiries: t.lease_expiries,
            provisioned: t
                .sandboxes
                .values()
                .filter(|e| e.provisioned.is_some())
                .count(),
            prewarms: t.prewarms,
        }
    }

    /// What placement sees: each worker's capacity and reserved memory
    /// (sandboxes and creations in progress), and the idle sandboxes it may
    /// evict.
    fn inventory(&self, t: &Table) -> (Vec<WorkerSlot>, Vec<IdleSandbox>) {
        let slots = self
            .workers
            .iter()
            .enumerate()
            .map(|(i, w)| WorkerSlot {
                id: i.to_string(),
                capacity_mb: w.capacity_mb(),
                reserved_mb: t.reserved_mb.get(i).copied().unwrap_or(0),
            })
            .collect();
        // Provisioned sandboxes are never evicted: their memory stays taken.
        let idle = t
            .sandboxes
            .iter()
            .filter(|(_, e)| !e.busy && e.provisioned.is_none())
            .map(|(id, e)| IdleSandbox {
                sandbox_id: id.clone(),
                worker_id: e.worker.to_string(),
                memory_mb: e.memory_mb,
                idle_since: u64::try_from(e.idle_since.elapsed().as_micros())
                    .map(|age| u64::MAX - age)
                    .unwrap_or(0),
            })
            .collect();
        (slots, idle)
    }

    /// Creates a sandbox of `spec` on worker `worker` and initialises it
    /// ahead of its first invoke (`WarmSandbox::ready`); one that fails to
    /// initialise is shut down. `None`: no such worker.
    async fn create_ready(
        &self,
        worker: usize,
        spec: &Arc<FunctionVersionSpec>,
        init: InitializationType,
    ) -> Option<Result<Arc<dyn WarmSandbox>, LambdaError>> {
        let w = self.workers.get(worker)?;
        let sb = match w.create_sandbox(Arc::clone(spec), init).await {
            Ok(sb) => sb,
            Err(e) => return Some(Err(e)),
        };
        Some(match sb.ready().await {
            Ok(()) => Ok(sb),
            Err(e) => {
                sb.shutdown();
                Err(e)
            }
        })
    }

    /// Placement's decision for a new sandbox of `memory_mb` over the
    /// current inventory. Placed: room is reserved on the worker and the
    /// creation counted as starting, the idle sandboxes placement evicts
    /// are moved to `victims` (to be shut down outside the lock), and the
    /// worker's index is returned. `None`: no worker has room.
    fn reserve_new(
        &self,
        t: &mut Table,
        memory_mb: u64,
        victims: &mut Vec<Entry>,
    ) -> Option<usize> {
        let (slots, idle) = self.inventory(t);
        let worker = match decide(&slots, &idle, memory_mb) {
            Decision::Place { worker_id } => worker_id,
            Decision::EvictThenPlace {
                worker_id,
                victims: ids,
            } => {
                for id in ids {
                    if let Some(e) = t.remove_idle(&id) {
                        victims.push(e);
                    }
                }
                worker_id
            }
            Decision::Full => return None,
        };
        let w: usize = worker.parse().unwrap_or(0);
        if let Some(r) = t.reserved_mb.get_mut(w) {
            *r += memory_mb;
        }
        t.starting += 1;
        Some(w)
    }

    /// Whether a new sandbox of `memory_mb` would be placed now, evicting
    /// idle sandboxes if it must: placement's own decision over the current
    /// inventory (for readiness). Idle on-demand sandboxes do not count as
    /// taken; busy and provisioned ones and creations in progress do.
    pub fn room_for(&self, memory_mb: u64) -> bool {
        let t = self.lock();
        let (slots, idle) = self.inventory(&t);
        decide(&slots, &idle, memory_mb) != Decision::Full
    }

    /// Shuts down every sandbox (server shutdown).
    pub fn shutdown_all(&self) {
        let entries: Vec<Entry> = {
            let mut t = self.lock();
            t.idle.clear();
            t.goals.clear();
            // No pre-warm starts after this, nor joins (it finds no activity).
            t.activity.clear();
            t.reserved_mb.iter_mut().for_each(|r| *r = 0);
            t.sandboxes.drain().map(|(_, e)| e).collect()
        };
        for e in entries {
            e.sandbox.shutdown();
        }
    }

    /// Takes an idle sandbox of `spec`'s revision (`key`), or reserves room
    /// for a new one.
    fn take_or_reserve(
        &self,
        spec: &Arc<FunctionVersionSpec>,
        key: &VersionKey,
        memory_mb: u64,
    ) -> Result<Acquired, LambdaError> {
        let mut victims: Vec<Entry> = Vec::new();
        let result = {
            let mut t = self.lock();
            let now = Instant::now();
            self.note_start(&mut t, spec, key, now);
            while let Some(id) = t.pop_idle(key) {
                let usable = t
                    .sandboxes
                    .get(&id)
                    .is_some_and(|e| e.sandbox.is_alive() && !e.expired(now));
                if usable {
                    if let Some(e) = t.sandboxes.get_mut(&id) {
                        e.busy = true;
                        let provisioned = e.provisioned.is_some();
                        let sb = Arc::clone(&e.sandbox);
                        let prewarmed = std::mem::take(&mut e.prewarmed);
                        if prewarmed {
                            t.prewarms.used += 1;
                            tracing::debug!(
                                sandbox = sb.id(),
                                "a pre-warmed sandbox serves an invoke"
                            );
                        }
                        drop(t);
                        for v in victims {
                            v.sandbox.shutdown();
                        }
                        return Ok(Acquired::Warm { sb, provisioned });
                    }
                } else if let Some(e) = t.remove_spent(&id, now) {
                    victims.push(e);
                }
            }
            let Some(w) = self.reserve_new(&mut t, memory_mb, &mut victims) else {
                drop(t);
                for v in victims {
                    v.sandbox.shutdown();
                }
                return Err(LambdaError::throttled(
                    "ConcurrentInvocationLimitExceeded",
                    "Rate Exceeded. No worker has memory left for a new sandbox and no idle sandbox can be evicted.",
                ));
            };
            Ok(Acquired::Cold { worker: w })
        };
        for v in victims {
            tracing::debug!(sandbox = v.sandbox.id(), "evicting idle sandbox");
            v.sandbox.shutdown();
        }
        result
    }

    /// Returns a sandbox after an invoke.
    fn release(&self, id: &str) {
        let doomed = {
            let mut t = self.lock();
            let now = Instant::now();
            let keep = match t.sandboxes.get(id) {
                Some(e) => e.sandbox.is_alive() && !t.is_retired(&e.key) && !e.expired(now),
                None => return,
            };
            let key = t.sandboxes.get(id).map(|e| e.key.clone());
            if let Some(a) = key.and_then(|k| t.activity.get_mut(&k)) {
                a.last_end = Some(now);
                a.last_seen = now;
            }
            if keep {
                if let Some(e) = t.sandboxes.get_mut(id) {
                    e.busy = false;
                    e.idle_since = now;
                    let key = e.key.clone();
                    t.idle.entry(key).or_default().push(id.to_owned());
                }
                None
            } else {
                t.remove_spent(id, now)
            }
        };
        if let Some(e) = doomed {
            e.sandbox.shutdown();
        }
    }

    /// An invoke of `key` starts: the time since its last one ended is an
    /// idle time, and a pending pre-warm is no longer wanted (adaptive
    /// keep-alive only).
    fn note_start(
        &self,
        t: &mut Table,
        spec: &Arc<FunctionVersionSpec>,
        key: &VersionKey,
        now: Instant,
    ) {
        let KeepAlivePolicy::Adaptive(cfg) = self.cfg.keep_alive_policy else {
            return;
        };
        let a = t.activity.entry(key.clone()).or_insert_with(|| Activity {
            idle: keepalive::IdleHistogram::new(&cfg),
            last_end: None,
            last_seen: now,
            spec: Arc::clone(spec),
            prewarm: None,
            prewarming: false,
        });
        if let Some(end) = a.last_end.take() {
            a.idle.record(now.saturating_duration_since(end));
        }
        if a.prewarm.take().is_some() {
            tracing::debug!(function = %key.name, version = %key.version, "invoked before its pre-warm: pre-warm cancelled");
        }
        a.last_seen = now;
    }

    /// The adaptive keep-alive's window for `key` (`None`: fixed policy).
    fn window_of(&self, t: &Table, key: &VersionKey) -> Option<keepalive::Window> {
        let KeepAlivePolicy::Adaptive(cfg) = self.cfg.keep_alive_policy else {
            return None;
        };
        let cfg = keepalive::PolicyConfig {
            fallback_keep_alive: self.cfg.keep_alive,
            ..cfg
        };
        Some(match t.activity.get(key) {
            Some(a) => keepalive::window(&cfg, &a.idle),
            None => keepalive::Window {
                prewarm: Duration::ZERO,
                keep_alive: self.cfg.keep_alive,
                learnt: false,
            },
        })
    }

    /// Stops idle sandboxes past their keep-alive or lease, or dead; with
    /// the adaptive keep-alive, also releases the sandboxes of revisions
    /// that are pre-warmed rather than kept (scheduling their pre-warm), and
    /// forgets revisions quiet for longer than the histogram's range.
    fn reap_idle(&self) {
        let doomed: Vec<Entry> = {
            let mut t = self.lock();
            let now = Instant::now();
            let mut windows: HashMap<VersionKey, Option<keepalive::Window>> = HashMap::new();
            let mut ids: Vec<String> = Vec::new();
            // Revisions whose sandboxes go now to be pre-warmed later: the
            // latest end of an invoke among them, and the pre-warm.
            let mut ended: HashMap<VersionKey, (Instant, Duration)> = HashMap::new();
            for (id, e) in &t.sandboxes {
                if e.busy {
                    continue;
                }
                let w = *windows
                    .entry(e.key.clone())
                    .or_insert_with(|| self.window_of(&t, &e.key));
                let keep = w.map_or(self.cfg.keep_alive, |w| {
                    w.prewarm.saturating_add(w.keep_alive)
                });
                let idle = now.saturating_duration_since(e.idle_since);
                let spent = (e.provisioned.is_none() && idle >= keep)
                    || e.expired(now)
                    || !e.sandbox.is_alive();
                // Released at once (at this tick, within 500 ms of the
                // invoke's end) when the next invoke is not expected before
                // the pre-warm point. A pre-warmed sandbox not used yet is
                // past that point: kept until the tail.
                let prewarm = w
                    .filter(|w| w.learnt && !w.prewarm.is_zero() && idle < w.prewarm)
                    .filter(|_| e.provisioned.is_none() && !e.prewarmed)
                    .map(|w| w.prewarm);
                if spent {
                    ids.push(id.clone());
                } else if let Some(p) = prewarm {
                    ids.push(id.clone());
                    let slot = ended.entry(e.key.clone()).or_insert((e.idle_since, p));
                    slot.0 = slot.0.max(e.idle_since);
                }
            }
            let doomed: Vec<Entry> = ids
                .iter()
                .filter_map(|id| t.remove_spent(id, now))
                .collect();
            // One sandbox per revision, as in the paper: a pre-warm only
            // when none is left (busy or idle, e.g. provisioned); a busy one
            // schedules it when its own invoke ends.
            for (key, (end, p)) in ended {
                let left = t.sandboxes.values().any(|e| e.key == key);
                let Some(a) = t.activity.get_mut(&key) else {
                    continue;
                };
                if left || a.prewarming {
                    tracing::debug!(function = %key.name, version = %key.version, "released an idle sandbox; another is left, no pre-warm");
                    continue;
                }
                let due = end.checked_add(p).unwrap_or(end);
                a.prewarm = Some(PendingPrewarm { due, end });
                tracing::debug!(function = %key.name, version = %key.version, prewarm_in_ms = due.saturating_duration_since(now).as_millis() as u64, "released an idle sandbox until its pre-warm");
            }
            // Forget what a revision did once it has been quiet for longer
            // than the histogram's range.
            if let KeepAlivePolicy::Adaptive(cfg) = self.cfg.keep_alive_policy {
                t.activity.retain(|_, a| {
                    a.prewarming || now.saturating_duration_since(a.last_seen) < cfg.range
                });
            }
            doomed
        };
        for e in doomed {
            tracing::debug!(sandbox = e.sandbox.id(), "stopping an idle sandbox");
            e.sandbox.shutdown();
        }
    }

    /// Places the pre-warms that are due, reserving their memory (evicting
    /// idle on-demand sandboxes if placement says so, as a cold start
    /// would), and returns them to be created, with when the next pending
    /// one is due. A pre-warm is dropped if its revision has a sandbox again
    /// or was retired, and skipped (counted) when placement is full.
    fn plan_prewarms(&self) -> (Vec<PlannedPrewarm>, Option<Instant>) {
        let mut victims = Vec::new();
        let mut plan = Vec::new();
        let mut next: Option<Instant> = None;
        {
            let mut t = self.lock();
            let now = Instant::now();
            let pending: Vec<(VersionKey, PendingPrewarm)> = t
                .activity
                .iter()
                .filter_map(|(k, a)| a.prewarm.map(|p| (k.clone(), p)))
                .collect();
            for (key, p) in pending {
                if p.due > now {
                    next = Some(next.map_or(p.due, |n| n.min(p.due)));
                    continue;
                }
                let has_sandbox = t.sandboxes.values().any(|e| e.key == key);
                let retired = t.is_retired(&key);
                let Some(a) = t.activity.get_mut(&key) else {
                    continue;
                };
                a.prewarm = None;
                if has_sandbox || retired || a.prewarming {
                    continue;
                }
                let spec = Arc::clone(&a.spec);
                let memory_mb = u64::from(spec.memory_mb);
                let Some(w) = self.reserve_new(&mut t, memory_mb, &mut victims) else {
                    t.prewarms.no_room += 1;
                    tracing::debug!(function = %key.name, version = %key.version, "no room for a pre-warm: skipped");
                    continue;
                };
                t.prewarms.started += 1;
                if let Some(a) = t.activity.get_mut(&key) {
                    a.prewarming = true;
                }
                plan.push(PlannedPrewarm {
                    key,
                    spec,
                    worker: w,
                    end: p.end,
                });
            }
        }
        for v in victims {
            tracing::debug!(
                sandbox = v.sandbox.id(),
                "evicting idle sandbox for a pre-warm"
            );
            v.sandbox.shutdown();
        }
        (plan, next)
    }

    /// Creates and initialises one planned pre-warm (on demand, as Lambda
    /// calls a proactively initialised environment), then adds it as idle,
    /// its idle time counted from the invoke's end. A failure is logged and
    /// counted, not retried.
    async fn prewarm_one(&self, p: PlannedPrewarm) {
        let memory_mb = u64::from(p.spec.memory_mb);
        let guard = PrewarmStarting {
            key: p.key.clone(),
            starting: Starting {
                owner: self,
                worker: p.worker,
                memory_mb,
                counted: true,
            },
        };
        tracing::debug!("pre-warming a sandbox");
        let Some(ready) = self
            .create_ready(p.worker, &p.spec, InitializationType::OnDemand)
            .await
        else {
            return;
        };
        let sb = match ready {
            Ok(sb) => sb,
            Err(e) => {
                tracing::warn!(error = %e.message, "pre-warm failed (not retried)");
                self.lock().prewarms.failed += 1;
                return;
            }
        };
        let now = Instant::now();
        let id = sb.id().to_owned();
        let entry = Entry {
            sandbox: Arc::clone(&sb),
            key: p.key,
            worker: p.worker,
            memory_mb,
            busy: false,
            idle_since: p.end,
            expires_at: now.checked_add(lease_of(&id, self.cfg.lease)),
            provisioned: None,
            prewarmed: true,
        };
        if !sb.is_alive() || !guard.finish(id, entry) {
            // It died, or its revision was retired or forgotten (shutdown)
            // while it started.
            sb.shutdown();
        } else {
            tracing::debug!(sandbox = sb.id(), "pre-warmed sandbox ready");
        }
    }
}

/// A pre-warm to create: of which revision, on which worker (its memory
/// already reserved), after the invoke that ended at `end`.
struct PlannedPrewarm {
    key: VersionKey,
    spec: Arc<FunctionVersionSpec>,
    worker: usize,
    end: Instant,
}

/// One pre-warm's creation: a [`Starting`] that also marks its revision as
/// pre-warming, so a failed or abandoned creation clears both.
struct PrewarmStarting<'a> {
    key: VersionKey,
    starting: Starting<'a>,
}

impl PrewarmStarting<'_> {
    /// The sandbox is initialised: unless its revision was retired or
    /// forgotten meanwhile, it joins the table as idle in one step with the
    /// counts it held. Its idle time counts from the invoke's end (or the
    /// end of an invoke that ran meanwhile, if later). Returns false (and
    /// gives the counts back) if not.
    fn finish(mut self, sandbox_id: String, mut entry: Entry) -> bool {
        let owner = self.starting.owner;
        let mut t = owner.lock();
        if t.is_retired(&entry.key) {
            return false;
        }
        let Some(a) = t.activity.get_mut(&entry.key).filter(|a| a.prewarming) else {
            return false;
        };
        a.prewarming = false;
        if let Some(end) = a.last_end {
            entry.idle_since = entry.idle_since.max(end);
        }
        t.starting = t.starting.saturating_sub(1);
        let key = entry.key.clone();
        t.sandboxes.insert(sandbox_id.clone(), entry);
        t.idle.entry(key).or_default().push(sandbox_id);
        self.starting.counted = false;
        true
    }
}

impl Drop for PrewarmStarting<'_> {
    fn drop(&mut self) {
        if self.starting.counted {
            let mut t = self.starting.owner.lock();
            if let Some(a) = t.activity.get_mut(&self.key) {
                a.prewarming = false;
            }
        }
    }
}

enum Acquired {
    Warm {
        sb: Arc<dyn WarmSandbox>,
        provisioned: bool,
    },
    Cold {
        worker: usize,
    },
}

/// A provisioned sandbox to create: for which goal (and which incarnation of
/// it), on which worker (its memory already reserved).
struct Planned {
    id: ProvisionId,
    incarnation: u64,
    spec: Arc<FunctionVersionSpec>,
    worker: usize,
}

impl LocalAssignment {
    /// Compares every goal with its sandboxes and reserves room for the
    /// missing ones (evicting idle on-demand sandboxes if placement says so).
    /// No room: a goal not yet ready fails; a ready one waits for the next
    /// round (a replacement).
    fn plan_provisioning(&self) -> Vec<Planned> {
        let mut victims = Vec::new();
        let mut plan = Vec::new();
        {
            let mut t = self.lock();
            let now = Instant::now();
            let margin = renewal_margin(self.cfg.lease);
            let mut ids: Vec<ProvisionId> = t.goals.keys().cloned().collect();
            ids.sort();
            for id in ids {
                let lasting = t
                    .sandboxes
                    .values()
                    .filter(|e| e.provisioned.as_ref() == Some(&id) && e.lasting(now, margin))
                    .count();
                let Some(g) = t.goals.get(&id) else { continue };
                if g.failed.is_some() {
                    continue;
                }
                let have = lasting + g.starting as usize;
                let missing = (g.count as usize).saturating_sub(have);
                let (spec, incarnation, was_ready) =
                    (Arc::clone(&g.spec), g.incarnation, g.was_ready);
                let memory_mb = u64::from(spec.memory_mb);
                for _ in 0..missing {
                    let Some(w) = self.reserve_new(&mut t, memory_mb, &mut victims) else {
                        if !was_ready && let Some(g) = t.goals.get_mut(&id) {
                            tracing::warn!(function = %id.name, qualifier = %id.qualifier, "no room for provisioned sandboxes");
                            g.failed = Some(format!(
                                "No worker has {memory_mb} MB of memory left for a provisioned sandbox."
                            ));
                        }
                        break;
                    };
                    if let Some(g) = t.goals.get_mut(&id) {
                        g.starting += 1;
                    }
                    plan.push(Planned {
                        id: id.clone(),
                        incarnation,
                        spec: Arc::clone(&spec),
                        worker: w,
                    });
                }
            }
        }
        for v in victims {
            tracing::debug!(
                sandbox = v.sandbox.id(),
                "evicting idle sandbox for a provisioned one"
            );
            v.sandbox.shutdown();
        }
        plan
    }

    /// Creates and initialises one planned provisioned sandbox, then adds it
    /// to the table as idle; a failure fails its goal.
    async fn provision_one(&self, p: Planned) {
        let guard = ProvisionStarting {
            owner: self,
            id: p.id.clone(),
            incarnation: p.incarnation,
            starting: Starting {
                owner: self,
                worker: p.worker,
                memory_mb: u64::from(p.spec.memory_mb),
                counted: true,
            },
        };
        let Some(ready) = self
            .create_ready(
                p.worker,
                &p.spec,
                InitializationType::ProvisionedConcurrency,
            )
            .await
        else {
            return;
        };
        let sb = match ready {
            Ok(sb) => sb,
            Err(e) => {
                tracing::warn!(function = %p.id.name, qualifier = %p.id.qualifier, error = %e.message, "provisioned sandbox failed to initialise");
                let mut t = self.lock();
                if let Some(g) = t.goals.get_mut(&p.id)
                    && g.incarnation == p.incarnation
                    && g.spec.key() == p.spec.key()
                {
                    g.failed = Some(format!("FUNCTION_ERROR_INIT_FAILURE: {}", e.message));
                }
                return;
            }
        };
        let now = Instant::now();
        let id = sb.id().to_owned();
        let entry = Entry {
            sandbox: Arc::clone(&sb),
            key: p.spec.key(),
            worker: p.worker,
            memory_mb: u64::from(p.spec.memory_mb),
            busy: false,
            idle_since: now,
            expires_at: now.checked_add(lease_of(&id, self.cfg.lease)),
            provisioned: Some(p.id.clone()),
            prewarmed: false,
        };
        if !sb.is_alive() || !guard.finish(id, entry) {
            // It died, or its goal went or moved to another version while
            // it started.
            sb.shutdown();
        }
    }

    /// Marks goals ready once every requested sandbox is.
    fn note_ready_goals(&self) {
        let mut t = self.lock();
        let Table {
            goals, sandboxes, ..
        } = &mut *t;
        for (id, g) in goals.iter_mut() {
            if g.was_ready || g.failed.is_some() {
                continue;
            }
            let ready = sandboxes
                .values()
                .filter(|e| e.provisioned.as_ref() == Some(id) && e.sandbox.is_alive())
                .count();
            if ready >= g.count as usize {
                g.was_ready = true;
            }
        }
    }
}

/// Keep-alive, leases, provisioned goals and pre-warms: every 500 ms, at
/// once when a goal changes, and when a pre-warm is due.
async fn reaper(this: Weak<LocalAssignment>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    // Held alone, so that waiting does not keep the service alive.
    let Some(kick) = this.upgrade().map(|t| Arc::clone(&t.reconcile)) else {
        return;
    };
    // When the next pre-warm is due: woken then, not at the next tick.
    let mut next_prewarm: Option<Instant> = None;
    loop {
        let prewarm_due = async move {
            match next_prewarm {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tick.tick() => {}
            () = kick.notified() => {}
            () = prewarm_due => {}
        }
        let Some(this) = this.upgrade() else {
            return;
        };
        this.reap_idle();
        for p in this.plan_provisioning() {
            let owner = Arc::clone(&this);
            let span = tracing::info_span!("provision", function = %p.id.name, qualifier = %p.id.qualifier, version = %p.spec.version);
            tokio::spawn(
                async move {
                    owner.provision_one(p).await;
                    owner.note_ready_goals();
                }
                .instrument(span),
            );
        }
        let (prewarms, next) = this.plan_prewarms();
        next_prewarm = next;
        for p in prewarms {
            let owner = Arc::clone(&this);
            let span =
                tracing::info_span!("prewarm", function = %p.key.name, version = %p.key.version);
            tokio::spawn(async move { owner.prewarm_one(p).await }.instrument(span));
        }
        this.note_ready_goals();
    }
}

/// One sandbox creation: counted as starting, with its memory reserved on
/// its worker. Dropped unfinished (a failed creation, or an invoke future
/// dropped because its client went away), it gives both back, so neither
/// the count nor the memory can leak.
struct Starting<'a> {
    owner: &'a LocalAssignment,
    worker: usize,
    memory_mb: u64,
    counted: bool,
}

impl Starting<'_> {
    /// The sandbox exists: it stops counting as starting and joins the table
    /// (keeping its reservation) in one step, so no snapshot sees it twice or
    /// not at all.
    fn finish(mut self, id: String, entry: Entry) {
        let mut t = self.owner.lock();
        t.starting = t.starting.saturating_sub(1);
        t.sandboxes.insert(id, entry);
        self.counted = false;
    }
}

impl Drop for Starting<'_> {
    fn drop(&mut self) {
        if self.counted {
            let mut t = self.owner.lock();
            t.starting = t.starting.saturating_sub(1);
            if let Some(r) = t.reserved_mb.get_mut(self.worker) {
                *r = r.saturating_sub(self.memory_mb);
            }
        }
    }
}

/// One provisioned sandbox creation: a [`Starting`] that also counts for its
/// goal, so a failed or abandoned creation gives back both.
struct ProvisionStarting<'a> {
    owner: &'a LocalAssignment,
    id: ProvisionId,
    incarnation: u64,
    starting: Starting<'a>,
}

impl ProvisionStarting<'_> {
    /// The sandbox is initialised: if its goal still wants this version, it
    /// joins the table as idle, kept for the goal, in one step with the
    /// counts it held. Returns false (and gives the counts back) if not.
    fn finish(mut self, sandbox_id: String, entry: Entry) -> bool {
        let mut t = self.owner.lock();
        let Some(g) = t
            .goals
            .get_mut(&self.id)
            .filter(|g| g.incarnation == self.incarnation && g.spec.key() == entry.key)
        else {
            return false;
        };
        g.starting = g.starting.saturating_sub(1);
        t.starting = t.starting.saturating_sub(1);
        let key = entry.key.clone();
        t.sandboxes.insert(sandbox_id.clone(), entry);
        t.idle.entry(key).or_default().push(sandbox_id);
        self.starting.counted = false;
        true
    }
}

impl Drop for ProvisionStarting<'_> {
    fn drop(&mut self) {
        if self.starting.counted {
            let mut t = self.owner.lock();
            if let Some(g) = t.goals.get_mut(&self.id)
                && g.incarnation == self.incarnation
            {
                g.starting = g.starting.saturating_sub(1);
            }
        }
    }
}

/// Returns the sandbox to the table even if the invoke future is dropped.
struct ReleaseGuard<'a> {
    owner: &'a LocalAssignment,
    id: String,
}

impl Drop for ReleaseGuard<'_> {
    fn drop(&mut self) {
        self.owner.release(&self.id);
    }
}

impl LocalAssignment {
    /// Runs one invocation in a warm sandbox or a new one; with a sink, the
    /// runtime may stream its answer there. The sandbox is held (busy) until
    /// the invocation ends, also when its response was streamed.
    async fn run_invoke(
        &self,
        spec: Arc<FunctionVersionSpec>,
        req: InvokeRequest,
        sink: Option<ResponseSink>,
    ) -> Result<InvokeResponse, LambdaError> {
        let key = spec.key();
        let memory_mb = u64::from(spec.memory_mb);
        let (sandbox, provisioned) = match self.take_or_reserve(&spec, &key, memory_mb)? {
            Acquired::Warm { sb, provisioned } => (sb, provisioned),
            Acquired::Cold { worker } => {
                let starting = Starting {
                    owner: self,
                    worker,
                    memory_mb,
                    counted: true,
                };
                let Some(w) = self.workers.get(worker) else {
                    return Err(LambdaError::service("placement chose an unknown worker"));
                };
                if let Some(counting) = &self.scaling {
                    counting.try_scale_up(&spec.account, &spec.name).await?;
                }
                let span = tracing::info_span!("cold_start", function = %spec.name, version = %spec.version);
                let sb = w
                    .create_sandbox(Arc::clone(&spec), InitializationType::OnDemand)
                    .instrument(span)
                    .await?;
                let now = Instant::now();
                let expires_at = now.checked_add(lease_of(sb.id(), self.cfg.lease));
                starting.finish(
                    sb.id().to_owned(),
                    Entry {
                        sandbox: Arc::clone(&sb),
                        key: key.clone(),
                        worker,
                        memory_mb,
                        busy: true,
                        idle_since: now,
                        expires_at,
                        provisioned: None,
                        prewarmed: false,
                    },
                );
                (sb, false)
            }
        };
        let _guard = ReleaseGuard {
            owner: self,
            id: sandbox.id().to_owned(),
        };
        let mut out = match sink {
            None => sandbox.invoke(req).await,
            Some(sink) => sandbox.invoke_streaming(req, sink).await,
        }?;
        out.provisioned = provisioned;
        Ok(out)
    }
}

#[async_trait]
impl Invoker for LocalAssignment {
    async fn invoke(
        &self,
        spec: Arc<FunctionVersionSpec>,
        req: InvokeRequest,
    ) -> Result<InvokeResponse, LambdaError> {
        self.run_invoke(spec, req, None).await
    }

    async fn invoke_streaming(
        &self,
        spec: Arc<FunctionVersionSpec>,
        req: InvokeRequest,
        sink: ResponseSink,
    ) -> Result<InvokeResponse, LambdaError> {
        self.run_invoke(spec, req, Some(sink)).await
    }

    fn retire(
        &self,
        account: &AccountId,
        name: &str,
        version: Option<&str>,
        keep_revision: Option<&str>,
    ) {
        let doomed: Vec<Entry> = {
            let mut t = self.lock();
            let fkey = (account.clone(), name.to_owned());
            // Goals of what is retired go too (their sandboxes below).
            t.goals.retain(|id, g| {
                !(&id.account == account
                    && id.name == name
                    && version.is_none_or(|v| {
                        g.spec.version == v && keep_revision.is_none_or(|k| k != g.spec.revision_id)
                    }))
            });
            match version {
                None => {
                    t.retired.insert(
                        fkey,
                        Retired {
                            all: true,
                            versions: HashMap::new(),
                        },
                    );
                }
                Some(v) => {
                    // A version of a new function of this name (after a
                    // delete) lifts the function-wide retirement.
                    let r = t.retired.entry(fkey).or_default();
                    r.all = false;
                    r.versions
                        .insert(v.to_owned(), keep_revision.map(str::to_owned));
                }
            }
            let ids: Vec<String> = t
                .sandboxes
                .iter()
                .filter(|(_, e)| {
                    !e.busy
                        && &e.key.account == account
                        && e.key.name == name
                        && t.is_retired(&e.key)
                })
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter().filter_map(|id| t.remove_idle(id)).collect()
        };
        for e in doomed {
            e.sandbox.shutdown();
        }
    }

    fn sandboxes_of(&self, account: &AccountId, name: &str) -> Vec<SandboxInfo> {
        let now = Instant::now();
        let t = self.lock();
        let mut out: Vec<SandboxInfo> = t
            .sandboxes
            .iter()
            .filter(|(_, e)| e.key.account == *account && e.key.name == name)
            .map(|(id, e)| SandboxInfo {
                id: id.clone(),
                version: e.key.version.clone(),
                revision_id: e.key.revision_id.clone(),
                state: if e.busy { "busy" } else { "idle" },
                memory_mb: e.memory_mb,
                idle_ms: (!e.busy)
                    .then(|| now.saturating_duration_since(e.idle_since).as_millis() as u64),
                lease_left_ms: e
                    .expires_at
                    .map(|x| x.saturating_duration_since(now).as_millis() as u64),
                provisioned: e.provisioned.is_some(),
            })
            .collect();
        out.sort_by(|a, b| (a.state != "busy", &a.id).cmp(&(b.state != "busy", &b.id)));
        out
    }

    fn set_provisioned(&self, id: ProvisionId, spec: Arc<FunctionVersionSpec>, count: u32) {
        let doomed = {
            let mut t = self.lock();
            // A goal for another version (an alias moved) lets the old
            // version's sandboxes go. Creations in progress stay counted
            // until they end (those for the old version are then dropped).
            let moved = t.goals.get(&id).is_some_and(|g| g.spec.key() != spec.key());
            let doomed = if moved {
                t.unprovision(&id)
            } else {
                Vec::new()
            };
            let (incarnation, starting) = match t.goals.get(&id) {
                Some(g) => (g.incarnation, g.starting),
                None => {
                    t.incarnations += 1;
                    (t.incarnations, 0)
                }
            };
            t.goals.insert(
                id.clone(),
                Goal {
                    spec,
                    count,
                    incarnation,
                    starting,
                    was_ready: false,
                    failed: None,
                },
            );
            // Fewer wanted: the surplus (idle ones first) stops being kept.
            let now = Instant::now();
            let mut mine: Vec<(bool, Instant, String)> = t
                .sandboxes
                .iter()
                .filter(|(_, e)| e.provisioned.as_ref() == Some(&id))
                .map(|(sid, e)| (e.busy, e.idle_since, sid.clone()))
                .collect();
            mine.sort();
            let surplus = mine.len().saturating_sub(count as usize);
            let mut doomed = doomed;
            for (busy, _, sid) in mine.into_iter().take(surplus) {
                if busy {
                    if let Some(e) = t.sandboxes.get_mut(&sid) {
                        e.provisioned = None;
                    }
                } else if let Some(e) = t.remove_spent(&sid, now) {
                    doomed.push(e);
                }
            }
            doomed
        };
        for e in doomed {
            e.sandbox.shutdown();
        }
        self.reconcile.notify_one();
    }

    fn remove_provisioned(&self, account: &AccountId, name: &str, qualifier: Option<&str>) {
        let doomed = {
            let mut t = self.lock();
            let ids: Vec<ProvisionId> = t
                .goals
                .keys()
                .filter(|id| {
                    &id.account == account
                        && id.name == name
                        && qualifier.is_none_or(|q| q == id.qualifier)
                })
                .cloned()
                .collect();
            let mut doomed = Vec::new();
            for id in ids {
                t.goals.remove(&id);
                doomed.extend(t.unprovision(&id));
            }
            doomed
        };
        for e in doomed {
            e.sandbox.shutdown();
        }
    }

    fn provisioned_status(&self, id: &ProvisionId) -> Option<ProvisionedStatus> {
        let t = self.lock();
        let g = t.goals.get(id)?;
        let available = t
            .sandboxes
            .values()
            .filter(|e| e.provisioned.as_ref() == Some(id) && e.sandbox.is_alive())
            .count();
        let available = u32::try_from(available).unwrap_or(u32::MAX).min(g.count);
        let allocated = available.saturating_add(g.starting).min(g.count);
        let state = if g.failed.is_some() {
            ProvisionState::Failed
        } else if g.was_ready || available >= g.count {
            ProvisionState::Ready
        } else {
            ProvisionState::InProgress
        };
        Some(ProvisionedStatus {
            requested: g.count,
            allocated,
            available,
            state,
            reason: g.failed.clone(),
        })
    }

    fn provisioned_counts(&self) -> Vec<FunctionProvisioned> {
        type ByFunction = std::collections::BTreeMap<(AccountId, String), FunctionProvisioned>;
        fn slot<'a>(by_fn: &'a mut ByFunction, id: &ProvisionId) -> &'a mut FunctionProvisioned {
            by_fn
                .entry((id.account.clone(), id.name.clone()))
                .or_insert_with(|| FunctionProvisioned {
                    account: id.account.clone(),
                    function: id.name.clone(),
                    initializing: 0,
                    idle: 0,
                    busy: 0,
                })
        }
        let t = self.lock();
        let mut by_fn = ByFunction::new();
        for (id, g) in &t.goals {
            let f = slot(&mut by_fn, id);
            f.initializing += g.starting as usize;
        }
        for e in t.sandboxes.values() {
            let Some(id) = &e.provisioned else { continue };
            let f = slot(&mut by_fn, id);
            if e.busy {
                f.busy += 1;
            } else {
                f.idle += 1;
            }
        }
        by_fn.into_values().collect()
    }

    async fn sandbox_counts(&self) -> SandboxCounts {
        let t = self.lock();
        let busy = t.sandboxes.values().filter(|e| e.busy).count();
        SandboxCounts {
            starting: t.starting,
            idle: t.sandboxes.len() - busy,
            busy,
            prewarms: t.prewarms,
            lease_expiries: t.lease_expiries,
        }
    }
}

#[cfg(test)]
mod tests;
