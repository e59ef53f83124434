//! Which isolation backend runs each sandbox, and who shares this host.
//!
//! The tier of a new sandbox is the strongest of: the server's default, its
//! account's setting, the function's own request (`STRATUS_ISOLATION`), and,
//! while sandboxes of another account run on this host, the operator's
//! shared-host tier ([`IsolationPolicy::shared_host`]). Choosing and
//! recording a sandbox happen under one lock, so two accounts' first
//! sandboxes cannot both see an empty host.
//!
//! When a sandbox of a second account arrives and the shared-host tier is
//! stronger than what the first account's sandboxes run under, those are
//! killed (their in-flight invokes fail; the assignment service drops dead
//! sandboxes and the next invoke starts one under the stronger tier): no
//! weaker sandbox of one tenant ever runs beside another tenant.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use async_trait::async_trait;
use stratus_api::service::FunctionVersionSpec;
use stratus_sandbox::{
    ExitStatus, RuntimeApiListener, Sandbox, SandboxBackend, SandboxError, SandboxSpec,
    SandboxUsage,
};
use stratus_types::{AccountId, Isolation};

/// The operator's isolation settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsolationPolicy {
    /// The tier of every sandbox unless something asks for a stronger one.
    pub default: Isolation,
    /// Per-account tiers, replacing the default for that account.
    pub accounts: BTreeMap<AccountId, Isolation>,
    /// The tier every sandbox gets while sandboxes of more than one account
    /// run on this host (`process`: no requirement).
    pub shared_host: Isolation,
}

impl Default for IsolationPolicy {
    fn default() -> Self {
        Self {
            default: Isolation::Process,
            accounts: BTreeMap::new(),
            shared_host: Isolation::Process,
        }
    }
}

impl IsolationPolicy {
    /// The tier for `account`'s function asking for `requested`, with or
    /// without other accounts' sandboxes on this host.
    pub fn tier(
        &self,
        account: &AccountId,
        requested: Option<Isolation>,
        shared: bool,
    ) -> Isolation {
        let floor = self.accounts.get(account).copied().unwrap_or(self.default);
        let mut tier = floor.max(requested.unwrap_or(Isolation::Process));
        if shared {
            tier = tier.max(self.shared_host);
        }
        tier
    }

    /// Whether any setting requires `tier` on its own (not just on request).
    pub fn requires(&self, tier: Isolation) -> bool {
        self.default == tier
            || self.shared_host == tier
            || self.accounts.values().any(|t| *t == tier)
    }
}

/// One live (or starting) sandbox of this host.
#[derive(Debug)]
struct Entry {
    account: AccountId,
    tier: Isolation,
    /// Set once started; lets a stronger shared-host tier kill it.
    sandbox: Option<Weak<dyn Sandbox>>,
    /// Killed by the shared-host rule while still starting: kill on arrival.
    doomed: bool,
}

/// The isolation backends of this worker and the policy that picks one.
#[derive(Debug)]
pub struct Tiers {
    backends: HashMap<Isolation, Result<Arc<dyn SandboxBackend>, String>>,
    policy: IsolationPolicy,
    live: Arc<Mutex<HashMap<u64, Entry>>>,
    next: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Tiers {
    /// Only the process backend, every sandbox in it.
    pub fn process_only(process: Arc<dyn SandboxBackend>) -> Self {
        Self::new(
            process,
            Err("not configured".into()),
            IsolationPolicy::default(),
        )
    }

    /// The process backend, the gVisor backend (or why there is none: a
    /// sandbox that needs it then fails with that reason) and the policy.
    pub fn new(
        process: Arc<dyn SandboxBackend>,
        gvisor: Result<Arc<dyn SandboxBackend>, String>,
        policy: IsolationPolicy,
    ) -> Self {
        Self {
            backends: HashMap::from([
                (Isolation::Process, Ok(process)),
                (Isolation::Gvisor, gvisor),
            ]),
            policy,
            live: Arc::new(Mutex::new(HashMap::new())),
            next: AtomicU64::new(0),
        }
    }

    /// The backend that starts sandboxes of `spec`, choosing the tier as it
    /// starts each one.
    pub(crate) fn backend_for(&self, spec: &FunctionVersionSpec) -> Chooser<'_> {
        Chooser {
            tiers: self,
            account: spec.account.clone(),
            requested: Isolation::requested_by(&spec.env),
        }
    }

    /// Live sandboxes per tier (for tests and diagnostics).
    pub fn live_by_tier(&self) -> BTreeMap<Isolation, usize> {
        let mut counts = BTreeMap::new();
        for e in lock(&self.live).values() {
            *counts.entry(e.tier).or_insert(0) += 1;
        }
        counts
    }

    /// Picks the tier for one sandbox of `account` and records it; returns
    /// the entry's key and the other accounts' sandboxes to kill.
    fn admit(
        &self,
        account: &AccountId,
        requested: Option<Isolation>,
    ) -> (u64, Isolation, Vec<Weak<dyn Sandbox>>) {
        let mut live = lock(&self.live);
        let shared = live.values().any(|e| &e.account != account);
        let tier = self.policy.tier(account, requested, shared);
        let mut kill = Vec::new();
        if shared {
            for e in live.values_mut() {
                if &e.account != account && e.tier < self.policy.shared_host {
                    match &e.sandbox {
                        Some(weak) => kill.push(weak.clone()),
                        None => e.doomed = true,
                    }
                }
            }
        }
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        live.insert(
            key,
            Entry {
                account: account.clone(),
                tier,
                sandbox: None,
                doomed: false,
            },
        );
        (key, tier, kill)
    }
}

/// Starts one function's sandboxes in the tier the policy picks.
#[derive(Debug)]
pub(crate) struct Chooser<'a> {
    tiers: &'a Tiers,
    account: AccountId,
    requested: Option<Isolation>,
}

#[async_trait]
impl SandboxBackend for Chooser<'_> {
    fn name(&self) -> &'static str {
        "tiered"
    }

    async fn spawn(&self, spec: SandboxSpec) -> Result<Box<dyn Sandbox>, SandboxError> {
        let tiers = self.tiers;
        let (key, tier, kill) = tiers.admit(&self.account, self.requested);
        for weak in kill {
            if let Some(sb) = weak.upgrade() {
                tracing::info!(sandbox = %sb.id(), account = %self.account, shared_host = %tiers.policy.shared_host, "another account arrived on this host: stopping a sandbox of a weaker tier");
                sb.kill();
            }
        }
        let forget = || {
            lock(&tiers.live).remove(&key);
        };
        let backend = match tiers.backends.get(&tier) {
            Some(Ok(b)) => Arc::clone(b),
            Some(Err(reason)) => {
                forget();
                return Err(SandboxError::Unavailable(format!(
                    "this sandbox needs the {tier} isolation tier, which this server cannot provide: {reason}"
                )));
            }
            None => {
                forget();
                return Err(SandboxError::Unavailable(format!("no {tier} backend")));
            }
        };
        let mut sandbox = match backend.spawn(spec).await {
            Ok(sb) => sb,
            Err(e) => {
                forget();
                return Err(e);
            }
        };
        tracing::debug!(sandbox = %sandbox.id(), %tier, "sandbox started");
        let listener = sandbox.take_runtime_api_listener();
        let output = sandbox.take_output();
        let inner: Arc<dyn Sandbox> = Arc::from(sandbox);
        let doomed = {
            let mut live = lock(&tiers.live);
            match live.get_mut(&key) {
                Some(e) => {
                    e.sandbox = Some(Arc::downgrade(&inner));
                    e.doomed
                }
                None => false,
            }
        };
        if doomed {
            inner.kill();
        }
        Ok(Box::new(Tracked {
            inner,
            listener,
            output,
            key,
            live: Arc::clone(&tiers.live),
        }))
    }
}

/// A started sandbox, recorded in [`Tiers`] until it is dropped.
#[derive(Debug)]
struct Tracked {
    inner: Arc<dyn Sandbox>,
    listener: Option<RuntimeApiListener>,
    output: Option<OwnedFd>,
    key: u64,
    live: Arc<Mutex<HashMap<u64, Entry>>>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        lock(&self.live).remove(&self.key);
    }
}

#[async_trait]
impl Sandbox for Tracked {
    fn id(&self) -> &str {
        self.inner.id()
    }
    fn take_runtime_api_listener(&mut self) -> Option<RuntimeApiListener> {
        self.listener.take()
    }
    fn take_output(&mut self) -> Option<OwnedFd> {
        self.output.take()
    }
    async fn wait(&self) -> ExitStatus {
        self.inner.wait().await
    }
    fn kill(&self) {
        self.inner.kill();
    }
    async fn restart_runtime(&self) -> Result<(), SandboxError> {
        self.inner.restart_runtime().await
    }
    fn usage(&self) -> SandboxUsage {
        self.inner.usage()
    }
    fn reset_peak(&self) {
        self.inner.reset_peak();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(n: u8) -> AccountId {
        AccountId::parse(&format!("{n:012}")).expect("account")
    }

    #[test]
    fn the_strongest_setting_wins_and_a_function_cannot_weaken_it() {
        let policy = IsolationPolicy {
            default: Isolation::Process,
            accounts: BTreeMap::from([(account(2), Isolation::Gvisor)]),
            shared_host: Isolation::Gvisor,
        };
        let p = Some(Isolation::Process);
        let g = Some(Isolation::Gvisor);
        assert_eq!(policy.tier(&account(1), None, false), Isolation::Process);
        assert_eq!(policy.tier(&account(1), g, false), Isolation::Gvisor);
        assert_eq!(policy.tier(&account(2), p, false), Isolation::Gvisor);
        assert_eq!(policy.tier(&account(1), p, true), Isolation::Gvisor);
        let default = IsolationPolicy::default();
        assert_eq!(default.tier(&account(1), None, true), Isolation::Process);
        assert!(policy.requires(Isolation::Gvisor));
        assert!(!default.requires(Isolation::Gvisor));
    }

    /// A fake backend whose sandboxes only record being killed.
    #[derive(Debug)]
    struct Fake(&'static str);

    #[derive(Debug)]
    struct FakeSandbox {
        id: String,
        killed: tokio::sync::watch::Sender<bool>,
    }

    #[async_trait]
    impl Sandbox for FakeSandbox {
        fn id(&self) -> &str {
            &self.id
        }
        fn take_runtime_api_listener(&mut self) -> Option<RuntimeApiListener> {
            None
        }
        fn take_output(&mut self) -> Option<OwnedFd> {
            None
        }
        async fn wait(&self) -> ExitStatus {
            let mut rx = self.killed.subscribe();
            let _ = rx.wait_for(|k| *k).await;
            ExitStatus::Signal(9)
        }
        fn kill(&self) {
            self.killed.send_replace(true);
        }
        async fn restart_runtime(&self) -> Result<(), SandboxError> {
            Ok(())
        }
        fn usage(&self) -> SandboxUsage {
            SandboxUsage::default()
        }
    }

    #[async_trait]
    impl SandboxBackend for Fake {
        fn name(&self) -> &'static str {
            self.0
        }
        async fn spawn(&self, spec: SandboxSpec) -> Result<Box<dyn Sandbox>, SandboxError> {
            Ok(Box::new(FakeSandbox {
                id: format!("{}-{}", self.0, spec.id),
                killed: tokio::sync::watch::channel(false).0,
            }))
        }
    }

    fn spec(id: &str) -> SandboxSpec {
        SandboxSpec {
            id: id.into(),
            code_dir: "/code".into(),
            runtime_dir: None,
            opt_dir: None,
            argv: vec!["/bin/true".into()],
            env: BTreeMap::new(),
            cwd: "/var/task".into(),
            limits: stratus_sandbox::SandboxLimits {
                memory_mb: 128,
                tmp_mb: 512,
                max_pids: 64,
                max_fds: 1024,
            },
            runtime_api_port: 9001,
            hostname: "h".into(),
            preinit: None,
        }
    }

    fn chooser(tiers: &Tiers, a: u8, requested: Option<Isolation>) -> Chooser<'_> {
        Chooser {
            tiers,
            account: account(a),
            requested,
        }
    }

    #[tokio::test]
    async fn a_second_account_moves_the_host_to_the_shared_tier() {
        let tiers = Tiers::new(
            Arc::new(Fake("process")),
            Ok(Arc::new(Fake("gvisor"))),
            IsolationPolicy {
                shared_host: Isolation::Gvisor,
                ..IsolationPolicy::default()
            },
        );
        let a1 = chooser(&tiers, 1, None)
            .spawn(spec("a1"))
            .await
            .expect("a1");
        let a2 = chooser(&tiers, 1, None)
            .spawn(spec("a2"))
            .await
            .expect("a2");
        assert_eq!(a1.id(), "process-a1", "one account alone: process");
        assert_eq!(a2.id(), "process-a2");
        let b1 = chooser(&tiers, 2, None)
            .spawn(spec("b1"))
            .await
            .expect("b1");
        assert_eq!(b1.id(), "gvisor-b1", "a second account: gVisor");
        // The first account's process sandboxes were stopped...
        assert_eq!(a1.wait().await, ExitStatus::Signal(9));
        assert_eq!(a2.wait().await, ExitStatus::Signal(9));
        // ...and its next ones are gVisor too while the host is shared.
        let a3 = chooser(&tiers, 1, None)
            .spawn(spec("a3"))
            .await
            .expect("a3");
        assert_eq!(a3.id(), "gvisor-a3");
        drop((a1, a2, b1, a3));
        assert!(
            tiers.live_by_tier().is_empty(),
            "dropped sandboxes are forgotten"
        );
        let a4 = chooser(&tiers, 1, None)
            .spawn(spec("a4"))
            .await
            .expect("a4");
        assert_eq!(a4.id(), "process-a4", "alone again: process");
    }

    #[tokio::test]
    async fn a_missing_tier_fails_with_its_reason_and_records_nothing() {
        let tiers = Tiers::process_only(Arc::new(Fake("process")));
        let err = chooser(&tiers, 1, Some(Isolation::Gvisor))
            .spawn(spec("g"))
            .await
            .expect_err("no gVisor");
        assert!(err.to_string().contains("gvisor isolation tier"), "{err}");
        assert!(tiers.live_by_tier().is_empty());
        let p = chooser(&tiers, 1, None)
            .spawn(spec("p"))
            .await
            .expect("process");
        assert_eq!(p.id(), "process-p");
        assert_eq!(tiers.live_by_tier().get(&Isolation::Process), Some(&1));
    }
}
