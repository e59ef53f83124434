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
use stratus_api::service::{
    Counting, FunctionVersionSpec, InvokeRequest, InvokeResponse, Invoker, ResponseSink,
    SandboxCounts, SandboxInfo, VersionKey, WarmSandbox, Worker,
};
use stratus_placement::{Decision, IdleSandbox, WorkerSlot, decide};
use stratus_types::AccountId;
use tracing::Instrument;

/// Tunables of the assignment service.
#[derive(Debug, Clone, Copy)]
pub struct AssignmentConfig {
    /// How long an idle sandbox is kept before it is shut down.
    pub keep_alive: Duration,
    /// The longest a sandbox lives (before jitter, see [`lease_of`]); after
    /// it the sandbox takes no new invoke and is shut down.
    pub lease: Duration,
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

impl Default for AssignmentConfig {
    fn default() -> Self {
        AssignmentConfig {
            keep_alive: Duration::from_secs(300),
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
}

impl Entry {
    fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }
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
        let idle = t
            .sandboxes
            .iter()
            .filter(|(_, e)| !e.busy)
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

    /// Whether a new sandbox of `memory_mb` would be placed now, evicting
    /// idle sandboxes if it must: placement's own decision over the current
    /// inventory (for readiness). Idle sandboxes do not count as taken;
    /// busy ones and creations in progress do.
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
            t.reserved_mb.iter_mut().for_each(|r| *r = 0);
            t.sandboxes.drain().map(|(_, e)| e).collect()
        };
        for e in entries {
            e.sandbox.shutdown();
        }
    }

    /// Takes an idle sandbox of `key`, or reserves room for a new one.
    fn take_or_reserve(&self, key: &VersionKey, memory_mb: u64) -> Result<Acquired, LambdaError> {
        let mut victims = Vec::new();
        let result = {
            let mut t = self.lock();
            let now = Instant::now();
            while let Some(id) = t.idle.get_mut(key).and_then(Vec::pop) {
                let usable = t
                    .sandboxes
                    .get(&id)
                    .is_some_and(|e| e.sandbox.is_alive() && !e.expired(now));
                if usable {
                    if let Some(e) = t.sandboxes.get_mut(&id) {
                        e.busy = true;
                        return Ok(Acquired::Warm(Arc::clone(&e.sandbox)));
                    }
                } else if let Some(e) = t.remove_spent(&id, now) {
                    victims.push(e);
                }
            }
            let (slots, idle) = self.inventory(&t);
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
                Decision::Full => {
                    drop(t);
                    for v in victims {
                        v.sandbox.shutdown();
                    }
                    return Err(LambdaError::throttled(
                        "ConcurrentInvocationLimitExceeded",
                        "Rate Exceeded. No worker has memory left for a new sandbox and no idle sandbox can be evicted.",
                    ));
                }
            };
            let w: usize = worker.parse().unwrap_or(0);
            if let Some(r) = t.reserved_mb.get_mut(w) {
                *r += memory_mb;
            }
            t.starting += 1;
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

    fn reap_idle(&self) {
        let doomed: Vec<Entry> = {
            let mut t = self.lock();
            let now = Instant::now();
            let ids: Vec<String> = t
                .sandboxes
                .iter()
                .filter(|(_, e)| {
                    !e.busy
                        && (now.saturating_duration_since(e.idle_since) >= self.cfg.keep_alive
                            || e.expired(now)
                            || !e.sandbox.is_alive())
                })
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter()
                .filter_map(|id| t.remove_spent(id, now))
                .collect()
        };
        for e in doomed {
            tracing::debug!(sandbox = e.sandbox.id(), "stopping an idle sandbox");
            e.sandbox.shutdown();
        }
    }
}

enum Acquired {
    Warm(Arc<dyn WarmSandbox>),
    Cold { worker: usize },
}

async fn reaper(this: Weak<LocalAssignment>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let Some(this) = this.upgrade() else {
            return;
        };
        this.reap_idle();
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
        let sandbox = match self.take_or_reserve(&key, memory_mb)? {
            Acquired::Warm(sb) => sb,
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
                let sb = w.create_sandbox(Arc::clone(&spec)).instrument(span).await?;
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
                    },
                );
                sb
            }
        };
        let _guard = ReleaseGuard {
            owner: self,
            id: sandbox.id().to_owned(),
        };
        match sink {
            None => sandbox.invoke(req).await,
            Some(sink) => sandbox.invoke_streaming(req, sink).await,
        }
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
            })
            .collect();
        out.sort_by(|a, b| (a.state != "busy", &a.id).cmp(&(b.state != "busy", &b.id)));
        out
    }

    async fn sandbox_counts(&self) -> SandboxCounts {
        let t = self.lock();
        let busy = t.sandboxes.values().filter(|e| e.busy).count();
        SandboxCounts {
            starting: t.starting,
            idle: t.sandboxes.len() - busy,
            busy,
        }
    }
}

#[cfg(test)]
mod tests;
