//! Assignment against a fake worker: routing, warm reuse, placement,
//! keep-alive, leases.

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use stratus_api::ErrorCode;
use stratus_types::Runtime;

use super::*;

#[derive(Debug)]
struct FakeSandbox {
    id: String,
    alive: std::sync::atomic::AtomicBool,
    delay: Duration,
    shutdowns: Arc<AtomicUsize>,
    init_delay: Duration,
    init_fails: bool,
}

#[async_trait]
impl WarmSandbox for FakeSandbox {
    fn id(&self) -> &str {
        &self.id
    }
    fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }
    async fn ready(&self) -> Result<(), LambdaError> {
        tokio::time::sleep(self.init_delay).await;
        if self.init_fails {
            self.alive.store(false, Ordering::SeqCst);
            return Err(LambdaError::service("Runtime.InitError: boom"));
        }
        Ok(())
    }
    async fn invoke(&self, req: InvokeRequest) -> Result<InvokeResponse, LambdaError> {
        tokio::time::sleep(self.delay).await;
        Ok(InvokeResponse {
            payload: Bytes::from(self.id.clone()),
            function_error: None,
            executed_version: "$LATEST".into(),
            log: req.request_id,
            cold_start: false,
            duration: self.delay,
            init_duration: None,
            provisioned: false,
        })
    }
    fn shutdown(&self) {
        if self.alive.swap(false, Ordering::SeqCst) {
            self.shutdowns.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[derive(Debug)]
struct FakeWorker {
    capacity: u64,
    created: AtomicUsize,
    shutdowns: Arc<AtomicUsize>,
    delay: Duration,
    /// How long creating a sandbox takes.
    create_delay: Duration,
    /// How long a sandbox's init takes ([`WarmSandbox::ready`]).
    init_delay: Duration,
    /// Whether inits fail.
    init_fails: std::sync::atomic::AtomicBool,
    /// Every sandbox created, with how.
    made: Mutex<Vec<(Arc<FakeSandbox>, InitializationType)>>,
}

impl FakeWorker {
    fn made(&self) -> Vec<(Arc<FakeSandbox>, InitializationType)> {
        self.made.lock().expect("lock").clone()
    }
}

#[async_trait]
impl Worker for FakeWorker {
    fn id(&self) -> &str {
        "fake"
    }
    fn capacity_mb(&self) -> u64 {
        self.capacity
    }
    async fn prepare_code(&self, _digest: &str) -> Result<(), LambdaError> {
        Ok(())
    }
    fn remove_code(&self, _digest: &str) {}
    async fn create_sandbox(
        &self,
        _spec: Arc<FunctionVersionSpec>,
        init: InitializationType,
    ) -> Result<Arc<dyn WarmSandbox>, LambdaError> {
        tokio::time::sleep(self.create_delay).await;
        let n = self.created.fetch_add(1, Ordering::SeqCst);
        let sb = Arc::new(FakeSandbox {
            id: format!("sb{n}"),
            alive: true.into(),
            delay: self.delay,
            shutdowns: Arc::clone(&self.shutdowns),
            init_delay: self.init_delay,
            init_fails: self.init_fails.load(Ordering::SeqCst),
        });
        self.made
            .lock()
            .expect("lock")
            .push((Arc::clone(&sb), init));
        Ok(sb)
    }
}

fn setup(
    capacity: u64,
    delay_ms: u64,
    keep_alive_s: u64,
) -> (Arc<LocalAssignment>, Arc<FakeWorker>) {
    setup_with_lease(capacity, delay_ms, keep_alive_s, DEFAULT_LEASE)
}

fn setup_with_lease(
    capacity: u64,
    delay_ms: u64,
    keep_alive_s: u64,
    lease: Duration,
) -> (Arc<LocalAssignment>, Arc<FakeWorker>) {
    let worker = Arc::new(FakeWorker {
        capacity,
        created: AtomicUsize::new(0),
        shutdowns: Arc::new(AtomicUsize::new(0)),
        delay: Duration::from_millis(delay_ms),
        create_delay: Duration::ZERO,
        init_delay: Duration::from_millis(200),
        init_fails: false.into(),
        made: Mutex::default(),
    });
    let a = LocalAssignment::new(
        vec![Arc::clone(&worker) as Arc<dyn Worker>],
        AssignmentConfig {
            keep_alive: Duration::from_secs(keep_alive_s),
            keep_alive_policy: KeepAlivePolicy::Fixed,
            lease,
        },
    );
    (a, worker)
}

fn spec(name: &str, rev: &str, mem: u32) -> Arc<FunctionVersionSpec> {
    Arc::new(FunctionVersionSpec {
        account: AccountId::default_local(),
        region: "us-east-1".into(),
        name: name.into(),
        version: "$LATEST".into(),
        revision_id: rev.into(),
        runtime: Runtime::parse("python3.12").expect("valid"),
        handler: "app.handler".into(),
        memory_mb: mem,
        timeout_s: 3,
        ephemeral_mb: 512,
        env: Default::default(),
        code_digest: "0".repeat(64),
        layers: Vec::new(),
    })
}

fn req() -> InvokeRequest {
    InvokeRequest {
        request_id: "r".into(),
        payload: Bytes::new(),
        invoked_arn: "arn".into(),
        client_context: None,
        trace_id: String::new(),
    }
}

async fn run(a: &LocalAssignment, s: &Arc<FunctionVersionSpec>) -> Result<String, LambdaError> {
    let r = a.invoke(Arc::clone(s), req()).await?;
    Ok(String::from_utf8_lossy(&r.payload).into_owned())
}

#[tokio::test(start_paused = true)]
async fn sequential_invokes_reuse_one_warm_sandbox() {
    let (a, w) = setup(1024, 1, 60);
    let s = spec("f", "r1", 128);
    assert_eq!(run(&a, &s).await.expect("ok"), "sb0");
    assert_eq!(run(&a, &s).await.expect("ok"), "sb0");
    assert_eq!(w.created.load(Ordering::SeqCst), 1);
    assert_eq!(a.stats().idle, 1);
    let listed = a.sandboxes_of(&s.account, "f");
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].id.as_str(), listed[0].state, listed[0].memory_mb),
        ("sb0", "idle", 128)
    );
    assert_eq!(listed[0].revision_id, "r1");
    assert!(listed[0].idle_ms.is_some() && listed[0].lease_left_ms.is_some());
    assert!(a.sandboxes_of(&s.account, "other").is_empty());
}

#[tokio::test(start_paused = true)]
async fn parallel_invokes_get_parallel_sandboxes() {
    let (a, w) = setup(4096, 100, 60);
    let s = spec("f", "r1", 128);
    let results = futures_join(&a, &s, 4).await;
    let mut ids: Vec<String> = results.into_iter().map(|r| r.expect("ok")).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4, "each concurrent invoke had its own sandbox");
    assert_eq!(w.created.load(Ordering::SeqCst), 4);
}

async fn futures_join(
    a: &Arc<LocalAssignment>,
    s: &Arc<FunctionVersionSpec>,
    n: usize,
) -> Vec<Result<String, LambdaError>> {
    let mut handles = Vec::new();
    for _ in 0..n {
        let a = Arc::clone(a);
        let s = Arc::clone(s);
        handles.push(tokio::spawn(async move { run(&a, &s).await }));
    }
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

#[tokio::test(start_paused = true)]
async fn a_new_revision_never_gets_a_stale_sandbox() {
    let (a, _w) = setup(1024, 1, 60);
    assert_eq!(run(&a, &spec("f", "r1", 128)).await.expect("ok"), "sb0");
    a.retire(
        &AccountId::default_local(),
        "f",
        Some("$LATEST"),
        Some("r2"),
    );
    assert_eq!(run(&a, &spec("f", "r2", 128)).await.expect("ok"), "sb1");
    assert_eq!(a.stats().sandboxes, 1, "the retired sandbox was shut down");
}

#[tokio::test(start_paused = true)]
async fn retiring_latest_keeps_published_versions_warm() {
    let (a, _w) = setup(1024, 1, 60);
    let mut v1 = (*spec("f", "v1rev", 128)).clone();
    v1.version = "1".into();
    let v1 = Arc::new(v1);
    assert_eq!(run(&a, &v1).await.expect("ok"), "sb0");
    assert_eq!(run(&a, &spec("f", "r1", 128)).await.expect("ok"), "sb1");
    a.retire(
        &AccountId::default_local(),
        "f",
        Some("$LATEST"),
        Some("r2"),
    );
    assert_eq!(
        run(&a, &v1).await.expect("ok"),
        "sb0",
        "version 1 stays warm"
    );
    assert_eq!(a.stats().sandboxes, 1, "the old $LATEST sandbox went");
    a.retire(&AccountId::default_local(), "f", Some("1"), None);
    assert_eq!(a.stats().sandboxes, 0, "a deleted version's sandboxes go");
    assert_eq!(run(&a, &spec("f", "r2", 128)).await.expect("ok"), "sb2");
    a.retire(&AccountId::default_local(), "f", None, None);
    assert_eq!(a.stats().sandboxes, 0, "deleting the function retires all");
}

#[tokio::test(start_paused = true)]
async fn full_worker_evicts_idle_sandboxes_of_other_functions() {
    let (a, w) = setup(256, 1, 600);
    run(&a, &spec("f", "r1", 128)).await.expect("ok");
    run(&a, &spec("g", "r1", 128)).await.expect("ok");
    tokio::time::advance(Duration::from_secs(1)).await;
    run(&a, &spec("g", "r1", 128)).await.expect("g again, warm");
    // Room for h only by evicting f's sandbox, the least recently used.
    assert_eq!(run(&a, &spec("h", "r1", 128)).await.expect("ok"), "sb2");
    assert_eq!(w.shutdowns.load(Ordering::SeqCst), 1);
    assert_eq!(
        run(&a, &spec("g", "r1", 128)).await.expect("ok"),
        "sb1",
        "g stayed warm"
    );
}

#[tokio::test(start_paused = true)]
async fn throttles_when_nothing_can_be_freed() {
    let (a, _w) = setup(256, 1000, 600);
    let s = spec("f", "r1", 256);
    let a2 = Arc::clone(&a);
    let s2 = Arc::clone(&s);
    let busy = tokio::spawn(async move { run(&a2, &s2).await });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let err = run(&a, &spec("g", "r1", 128)).await.expect_err("no room");
    assert_eq!(err.code, ErrorCode::TooManyRequests);
    busy.await
        .expect("task")
        .expect("the busy invoke completes");
    assert_eq!(a.stats().reserved_mb, 256);
}

#[tokio::test(start_paused = true)]
async fn idle_sandboxes_stop_after_keep_alive() {
    let (a, w) = setup(1024, 1, 5);
    run(&a, &spec("f", "r1", 128)).await.expect("ok");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(a.stats().idle, 1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(a.stats().sandboxes, 0);
    assert_eq!(a.stats().reserved_mb, 0);
    assert_eq!(w.shutdowns.load(Ordering::SeqCst), 1);
    assert_eq!(a.stats().lease_expiries, 0, "keep-alive, not the lease");
}

/// A function called every 20 s, with a 10 s fixed keep-alive: cold every
/// time. The adaptive policy learns the 20 s idle times and keeps its
/// sandbox once the histogram is representative (10 samples).
#[tokio::test(start_paused = true)]
async fn adaptive_keep_alive_learns_a_functions_idle_times() {
    async fn cold_starts(policy: KeepAlivePolicy) -> usize {
        let (_, w) = setup(1024, 1, 10);
        let a = LocalAssignment::new(
            vec![Arc::clone(&w) as Arc<dyn Worker>],
            AssignmentConfig {
                keep_alive: Duration::from_secs(10),
                keep_alive_policy: policy,
                lease: DEFAULT_LEASE,
            },
        );
        for _ in 0..25 {
            run(&a, &spec("timer", "r1", 128)).await.expect("ok");
            tokio::time::sleep(Duration::from_secs(20)).await;
        }
        w.created.load(Ordering::SeqCst)
    }
    assert_eq!(cold_starts(KeepAlivePolicy::Fixed).await, 25);
    let adaptive = cold_starts(KeepAlivePolicy::Adaptive(keepalive::PolicyConfig::default())).await;
    // Cold until 10 idle times are known (the 11th invoke is the first
    // decided by the histogram), warm after.
    assert_eq!(adaptive, 11);
}

// ---- adaptive keep-alive: pre-warm ----

const MINUTE: Duration = Duration::from_secs(60);

/// An adaptive service (one-minute bins, 60 s fallback) on one fake worker
/// of `capacity` MB whose invokes take 100 ms and inits 200 ms.
fn adaptive(capacity: u64) -> (Arc<LocalAssignment>, Arc<FakeWorker>) {
    let (_, w) = setup(capacity, 100, 60);
    let a = LocalAssignment::new(
        vec![Arc::clone(&w) as Arc<dyn Worker>],
        AssignmentConfig {
            keep_alive: Duration::from_secs(60),
            keep_alive_policy: KeepAlivePolicy::Adaptive(keepalive::PolicyConfig::default()),
            lease: DEFAULT_LEASE,
        },
    );
    (a, w)
}

/// Eleven invokes ten minutes apart: ten idle times of 10 minutes, so the
/// window is learnt (pre-warm at 9 minutes, tail at 12.1) from the last
/// invoke on. Each is cold (the 60 s fallback ends each sandbox); returns
/// when the last ended.
async fn learn_ten_minutes(a: &LocalAssignment, s: &Arc<FunctionVersionSpec>) {
    for i in 0..11 {
        if i > 0 {
            tokio::time::sleep(10 * MINUTE).await;
        }
        run(a, s).await.expect("ok");
    }
}

#[tokio::test(start_paused = true)]
async fn a_learnt_timer_is_released_at_once_and_prewarmed_before_its_next_call() {
    let (a, w) = adaptive(1024);
    let s = spec("timer", "r1", 128);
    learn_ten_minutes(&a, &s).await;
    assert_eq!(w.made().len(), 11, "cold while learning");
    // Released at the reaper's next tick, not kept through the gap.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(a.stats().sandboxes, 0, "released at once");
    assert_eq!(a.stats().reserved_mb, 0);
    tokio::time::sleep(Duration::from_secs(9 * 60 - 2)).await;
    assert_eq!(a.stats().sandboxes, 0, "nothing held until the pre-warm");
    assert_eq!(w.made().len(), 11);
    // The pre-warm at 9 minutes: created on demand and initialised.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let made = w.made();
    assert_eq!(made.len(), 12, "pre-warmed");
    assert_eq!(made[11].1, InitializationType::OnDemand);
    let st = a.stats();
    assert_eq!((st.sandboxes, st.idle), (1, 1));
    assert_eq!(
        st.prewarms,
        PrewarmCounts {
            started: 1,
            ..PrewarmCounts::default()
        }
    );
    // The call at 10 minutes is warm, on the pre-warmed sandbox.
    tokio::time::sleep(MINUTE - Duration::from_secs(1)).await;
    assert_eq!(run(&a, &s).await.expect("ok"), "sb11", "warm");
    assert_eq!(a.stats().prewarms.used, 1);
    // Released again after it, and pre-warmed again at 9 minutes.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(a.stats().sandboxes, 0);
    tokio::time::sleep(9 * MINUTE).await;
    assert_eq!(w.made().len(), 13);
    assert_eq!(a.stats().sandboxes, 1);
    // No call this time: kept until the tail (12.1 minutes after the end),
    // then released, and nothing more is started.
    tokio::time::sleep(Duration::from_secs(170)).await;
    assert_eq!(a.stats().sandboxes, 1, "kept until the tail");
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(a.stats().sandboxes, 0, "released after the tail");
    tokio::time::sleep(30 * MINUTE).await;
    assert_eq!(w.made().len(), 13, "one pre-warm per idle period");
    let st = a.stats();
    assert_eq!((st.prewarms.started, st.prewarms.used), (2, 1));
    assert_eq!(st.reserved_mb, 0);
}

#[tokio::test(start_paused = true)]
async fn a_call_before_the_prewarm_is_cold_and_cancels_it() {
    let (a, w) = adaptive(1024);
    let s = spec("timer", "r1", 128);
    learn_ten_minutes(&a, &s).await;
    // Called after 5 minutes: no sandbox, a cold start.
    tokio::time::sleep(5 * MINUTE).await;
    assert_eq!(a.stats().sandboxes, 0);
    assert_eq!(run(&a, &s).await.expect("ok"), "sb11", "cold");
    // The 9-minute pre-warm of the earlier gap does not happen. (The
    // 5-minute idle time is now the histogram's head: the next pre-warm
    // is due 4.5 minutes after this call.)
    tokio::time::sleep(4 * MINUTE).await;
    assert_eq!(w.made().len(), 12, "the pending pre-warm was cancelled");
    assert_eq!(a.stats().prewarms.started, 0);
    tokio::time::sleep(MINUTE).await;
    assert_eq!(w.made().len(), 13, "the next gap's pre-warm");
    assert_eq!(a.stats().prewarms.started, 1);
}

#[tokio::test(start_paused = true)]
async fn no_prewarm_when_placement_is_full() {
    let (a, w) = adaptive(256);
    let s = spec("timer", "r1", 128);
    learn_ten_minutes(&a, &s).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(a.stats().sandboxes, 0);
    // Another function's provisioned sandbox takes the whole worker.
    a.set_provisioned(pid("big", "1"), version_spec("big", "1", 256), 1);
    settle(Duration::from_secs(1)).await;
    assert_eq!(a.stats().provisioned, 1);
    tokio::time::sleep(10 * MINUTE).await;
    assert_eq!(w.made().len(), 12, "no pre-warm");
    let st = a.stats();
    assert_eq!(
        st.prewarms,
        PrewarmCounts {
            no_room: 1,
            ..PrewarmCounts::default()
        }
    );
    assert_eq!(st.provisioned, 1, "the provisioned sandbox was not evicted");
}

#[tokio::test(start_paused = true)]
async fn a_failed_prewarm_is_counted_and_not_retried() {
    let (a, w) = adaptive(1024);
    let s = spec("timer", "r1", 128);
    learn_ten_minutes(&a, &s).await;
    w.init_fails.store(true, Ordering::SeqCst);
    tokio::time::sleep(10 * MINUTE).await;
    let st = a.stats();
    assert_eq!(
        st.prewarms,
        PrewarmCounts {
            started: 1,
            failed: 1,
            ..PrewarmCounts::default()
        }
    );
    assert_eq!(
        (st.sandboxes, st.reserved_mb),
        (0, 0),
        "gave its memory back"
    );
    assert_eq!(a.sandbox_counts().await.starting, 0);
    tokio::time::sleep(60 * MINUTE).await;
    assert_eq!(w.made().len(), 12, "tried once");
    // The next call is cold, and its gap is pre-warmed again.
    w.init_fails.store(false, Ordering::SeqCst);
    assert_eq!(run(&a, &s).await.expect("ok"), "sb12");
    tokio::time::sleep(10 * MINUTE).await;
    assert_eq!(a.stats().prewarms.started, 2);
    assert_eq!(a.stats().sandboxes, 1);
}

#[tokio::test(start_paused = true)]
async fn a_retired_revision_is_not_prewarmed() {
    let (a, w) = adaptive(1024);
    let s = spec("timer", "r1", 128);
    learn_ten_minutes(&a, &s).await;
    a.retire(&s.account, "timer", Some("$LATEST"), Some("r2"));
    tokio::time::sleep(10 * MINUTE).await;
    assert_eq!(w.made().len(), 11);
    assert_eq!(a.stats().sandboxes, 0);
}

#[tokio::test(start_paused = true)]
async fn frequent_calls_keep_their_sandbox_loaded_without_prewarm() {
    // Idle times under a minute: the head bin is 0, no pre-warm.
    let (a, w) = adaptive(1024);
    let s = spec("busy", "r1", 128);
    for _ in 0..30 {
        run(&a, &s).await.expect("ok");
        tokio::time::sleep(Duration::from_secs(20)).await;
    }
    assert_eq!(w.made().len(), 1, "kept loaded between calls");
    assert_eq!(a.stats().prewarms, PrewarmCounts::default());
}

#[tokio::test(start_paused = true)]
async fn cold_starts_take_scale_up_tokens_and_warm_invokes_do_not() {
    let worker = Arc::new(FakeWorker {
        capacity: 4096,
        created: AtomicUsize::new(0),
        shutdowns: Arc::new(AtomicUsize::new(0)),
        delay: Duration::from_millis(100),
        create_delay: Duration::ZERO,
        init_delay: Duration::from_millis(200),
        init_fails: false.into(),
        made: Mutex::default(),
    });
    let counting = Arc::new(stratus_counting::LocalCounting::with_config(
        stratus_counting::CountingConfig {
            account_limit: 1000,
            burst_capacity: 2,
            burst_refill_per_s: 1.0,
        },
    ));
    let a = LocalAssignment::with_scaling(
        vec![Arc::clone(&worker) as Arc<dyn Worker>],
        AssignmentConfig::default(),
        counting,
    );
    let s = spec("f", "r1", 128);
    // Three at once: two new sandboxes fit the bucket, the third is throttled.
    let (r1, r2, r3) = tokio::join!(run(&a, &s), run(&a, &s), run(&a, &s));
    let errs: Vec<LambdaError> = [r1, r2, r3].into_iter().filter_map(Result::err).collect();
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].code, ErrorCode::TooManyRequests);
    assert_eq!(errs[0].reason, Some("FunctionInvocationRateLimitExceeded"));
    assert_eq!(worker.created.load(Ordering::SeqCst), 2);
    assert_eq!(
        a.stats().reserved_mb,
        256,
        "the throttled start gave its memory back"
    );
    // Warm invokes need no token.
    for _ in 0..5 {
        run(&a, &s).await.expect("warm");
    }
    assert_eq!(worker.created.load(Ordering::SeqCst), 2);
    // The bucket refills continuously: one token per second.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (r1, r2, r3) = tokio::join!(run(&a, &s), run(&a, &s), run(&a, &s));
    assert!(r1.is_ok() && r2.is_ok(), "two warm sandboxes");
    assert!(r3.is_ok(), "a token came back after about a second");
    assert_eq!(worker.created.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn sandbox_counts_follow_a_cold_start_through_its_states() {
    let worker = Arc::new(FakeWorker {
        capacity: 1024,
        created: AtomicUsize::new(0),
        shutdowns: Arc::new(AtomicUsize::new(0)),
        delay: Duration::from_millis(100),
        create_delay: Duration::from_millis(100),
        init_delay: Duration::from_millis(200),
        init_fails: false.into(),
        made: Mutex::default(),
    });
    let a = LocalAssignment::new(
        vec![Arc::clone(&worker) as Arc<dyn Worker>],
        AssignmentConfig::default(),
    );
    let counts = |starting, idle, busy| SandboxCounts {
        starting,
        idle,
        busy,
        prewarms: PrewarmCounts::default(),
        lease_expiries: 0,
    };
    let s = spec("f", "r1", 128);
    let (a2, s2) = (Arc::clone(&a), Arc::clone(&s));
    let first = tokio::spawn(async move { run(&a2, &s2).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(a.sandbox_counts().await, counts(1, 0, 0), "being created");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        a.sandbox_counts().await,
        counts(0, 0, 1),
        "running the invoke"
    );
    first.await.expect("task").expect("ok");
    assert_eq!(a.sandbox_counts().await, counts(0, 1, 0), "back to idle");

    // An invoke dropped while its sandbox is being created is not left
    // counted as starting, and gives its memory back.
    assert_eq!(a.stats().reserved_mb, 128);
    let g = spec("g", "r1", 128);
    let (a2, g2) = (Arc::clone(&a), Arc::clone(&g));
    let dropped = tokio::spawn(async move { run(&a2, &g2).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(a.sandbox_counts().await.starting, 1);
    assert_eq!(a.stats().reserved_mb, 256);
    dropped.abort();
    assert!(dropped.await.is_err_and(|e| e.is_cancelled()));
    assert_eq!(a.sandbox_counts().await, counts(0, 1, 0));
    assert_eq!(
        a.stats().reserved_mb,
        128,
        "the dropped start's memory is free"
    );
}

#[test]
fn lease_jitter_stays_within_a_tenth_and_is_stable_per_id() {
    let lease = Duration::from_secs(21_600);
    let leases: Vec<Duration> = (0..1000)
        .map(|i| lease_of(&format!("sandbox-{i}"), lease))
        .collect();
    for (i, l) in leases.iter().enumerate() {
        assert!(*l <= lease, "sandbox-{i}: {l:?} longer than the lease");
        assert!(
            *l >= lease.mul_f64(0.9),
            "sandbox-{i}: {l:?} jittered > 10%"
        );
        assert_eq!(*l, lease_of(&format!("sandbox-{i}"), lease), "stable");
    }
    let min = leases.iter().min().copied().unwrap_or_default();
    let max = leases.iter().max().copied().unwrap_or_default();
    assert!(
        max - min > lease.mul_f64(0.09),
        "spread over the whole tenth: {min:?}..{max:?}"
    );
    // The extremes do not panic and keep a lease above zero.
    assert!(lease_of("x", Duration::from_secs(1)) >= Duration::from_millis(900));
    assert_eq!(lease_of("x", Duration::ZERO), Duration::ZERO);
    assert!(lease_of("x", Duration::MAX) >= Duration::MAX.mul_f64(0.9));
}

#[tokio::test(start_paused = true)]
async fn an_idle_sandbox_past_its_lease_is_shut_down_and_replaced() {
    let (a, w) = setup_with_lease(1024, 1, 600, Duration::from_secs(10));
    let s = spec("f", "r1", 128);
    assert_eq!(run(&a, &s).await.expect("ok"), "sb0");
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(run(&a, &s).await.expect("ok"), "sb0", "within its lease");
    // Idle past its lease (at most 10 s): the reaper stops it, although its
    // keep-alive (600 s) has far to go.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(a.stats().sandboxes, 0);
    assert_eq!(a.stats().reserved_mb, 0);
    assert_eq!(w.shutdowns.load(Ordering::SeqCst), 1);
    assert_eq!(a.stats().lease_expiries, 1);
    assert_eq!(run(&a, &s).await.expect("ok"), "sb1", "a new sandbox");
}

#[tokio::test(start_paused = true)]
async fn an_invoke_running_across_the_lease_finishes_then_the_sandbox_goes() {
    // Invokes take 4 s; the lease ends between 9 and 10 s, during the third.
    let (a, w) = setup_with_lease(1024, 4000, 600, Duration::from_secs(10));
    let s = spec("f", "r1", 128);
    for n in 0..3 {
        assert_eq!(run(&a, &s).await.expect("ok"), "sb0", "invoke {n}");
    }
    // The third invoke ran past the lease, completed, and its sandbox was
    // shut down on release instead of going back to idle.
    assert_eq!(w.shutdowns.load(Ordering::SeqCst), 1);
    assert_eq!(a.stats().lease_expiries, 1);
    assert_eq!(a.stats().sandboxes, 0);
    assert_eq!(a.stats().reserved_mb, 0);
    assert_eq!(run(&a, &s).await.expect("ok"), "sb1");
    assert_eq!(w.created.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn an_expired_sandbox_gives_way_to_a_warm_sibling() {
    let (a, w) = setup_with_lease(1024, 1000, 600, Duration::from_secs(10));
    let s = spec("f", "r1", 128);
    assert_eq!(run(&a, &s).await.expect("ok"), "sb0");
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Two at once at t = 5 s: one takes sb0, the other starts sb1, whose
    // lease ends 5 s after sb0's.
    let (r0, r1) = tokio::join!(run(&a, &s), run(&a, &s));
    let mut ids = vec![r0.expect("ok"), r1.expect("ok")];
    ids.sort();
    assert_eq!(ids, ["sb0", "sb1"]);
    // t = 11 s: sb0's lease (at most 10 s) is over, sb1's (at least 14 s) not.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(run(&a, &s).await.expect("ok"), "sb1", "the warm sibling");
    assert_eq!(w.created.load(Ordering::SeqCst), 2, "no new sandbox needed");
    assert_eq!(w.shutdowns.load(Ordering::SeqCst), 1, "sb0 was shut down");
}

#[tokio::test(start_paused = true)]
async fn leases_expire_under_concurrent_load_without_a_failed_invoke() {
    const CLIENTS: usize = 8;
    let lease = Duration::from_secs(5);
    // Exactly room for one sandbox per client: an expired sandbox must give
    // its memory back before its replacement can start.
    let (a, w) = setup_with_lease(128 * CLIENTS as u64, 100, 600, lease);
    let s = spec("f", "r1", 128);
    let end = Instant::now() + Duration::from_secs(60);
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (a, s) = (Arc::clone(&a), Arc::clone(&s));
        clients.push(tokio::spawn(async move {
            let mut served: Vec<(String, Instant)> = Vec::new();
            let mut errors = 0usize;
            while Instant::now() < end {
                match run(&a, &s).await {
                    Ok(id) => served.push((id, Instant::now())),
                    Err(_) => errors += 1,
                }
            }
            (served, errors)
        }));
    }
    let mut first_last: HashMap<String, (Instant, Instant)> = HashMap::new();
    let mut invokes = 0usize;
    for c in clients {
        let (served, errors) = c.await.expect("client task");
        assert_eq!(errors, 0, "no invoke failed");
        invokes += served.len();
        for (id, at) in served {
            let e = first_last.entry(id).or_insert((at, at));
            e.0 = e.0.min(at);
            e.1 = e.1.max(at);
        }
    }
    assert!(invokes >= CLIENTS * 500, "load ran: {invokes} invokes");
    let created = w.created.load(Ordering::SeqCst);
    assert!(
        created >= CLIENTS * 11,
        "leases rotated the sandboxes: {created} created"
    );
    assert_eq!(first_last.len(), created);
    for (id, (first, last)) in &first_last {
        // First answer at creation + 100 ms; the last invoke started before
        // the lease ran out and ended 100 ms later.
        assert!(
            *last - *first <= lease,
            "{id} served for {:?}, past its lease",
            *last - *first
        );
    }
    assert_eq!(
        w.shutdowns.load(Ordering::SeqCst) + a.stats().sandboxes,
        created,
        "every sandbox not in the table was shut down"
    );
    assert_eq!(
        a.stats().lease_expiries,
        w.shutdowns.load(Ordering::SeqCst) as u64,
        "each went because of its lease"
    );
}

#[tokio::test(start_paused = true)]
async fn idle_sandboxes_leave_room_busy_and_starting_ones_do_not() {
    let (a, _w) = setup(256, 100, 60);
    assert!(a.room_for(128), "an empty worker has room");
    let (f, g) = (spec("f", "r1", 128), spec("g", "r1", 128));
    run(&a, &f).await.expect("f");
    run(&a, &g).await.expect("g");
    let st = a.stats();
    assert_eq!((st.reserved_mb, st.idle_mb), (256, 256));
    assert!(
        a.room_for(128),
        "all memory reserved, but by idle sandboxes placement would evict"
    );
    assert!(!a.room_for(512), "more than the worker has");

    // Two invokes in flight hold all the memory: nothing can be evicted.
    let (a1, f1) = (Arc::clone(&a), Arc::clone(&f));
    let (a2, g2) = (Arc::clone(&a), Arc::clone(&g));
    let busy_f = tokio::spawn(async move { run(&a1, &f1).await });
    let busy_g = tokio::spawn(async move { run(&a2, &g2).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(a.stats().busy, 2);
    assert_eq!(a.stats().idle_mb, 0);
    assert!(!a.room_for(128), "every sandbox is busy");
    assert_eq!(
        a.invoke(spec("h", "r1", 128), req())
            .await
            .map(|_| ())
            .map_err(|e| e.code),
        Err(ErrorCode::TooManyRequests),
        "placement agrees: the worker is full"
    );
    busy_f.await.expect("task").expect("f");
    busy_g.await.expect("task").expect("g");
    assert!(a.room_for(128), "idle again");
}

// ---- provisioned concurrency ----

fn version_spec(name: &str, version: &str, mem: u32) -> Arc<FunctionVersionSpec> {
    let mut s = (*spec(name, &format!("rev-{version}"), mem)).clone();
    s.version = version.into();
    Arc::new(s)
}

fn pid(name: &str, qualifier: &str) -> ProvisionId {
    ProvisionId {
        account: AccountId::default_local(),
        name: name.into(),
        qualifier: qualifier.into(),
    }
}

/// Lets the reconciler and the inits it started run (paused time).
async fn settle(d: Duration) {
    tokio::time::sleep(d).await;
}

fn state(a: &LocalAssignment, id: &ProvisionId) -> (ProvisionState, u32, u32) {
    let st = a.provisioned_status(id).expect("goal");
    (st.state, st.allocated, st.available)
}

#[tokio::test(start_paused = true)]
async fn provisioned_sandboxes_are_ready_before_any_invoke_and_serve_first() {
    let (a, w) = setup(4096, 100, 60);
    let s = version_spec("f", "1", 128);
    let id = pid("f", "1");
    a.set_provisioned(id.clone(), Arc::clone(&s), 2);
    // Created at once, initialising: allocated but not available yet.
    settle(Duration::from_millis(50)).await;
    assert_eq!(state(&a, &id), (ProvisionState::InProgress, 2, 0));
    assert_eq!(
        a.provisioned_counts(),
        vec![FunctionProvisioned {
            account: AccountId::default_local(),
            function: "f".into(),
            initializing: 2,
            idle: 0,
            busy: 0,
        }]
    );
    settle(Duration::from_millis(300)).await;
    assert_eq!(state(&a, &id), (ProvisionState::Ready, 2, 2));
    let made = w.made();
    assert_eq!(made.len(), 2);
    assert!(
        made.iter()
            .all(|(_, how)| *how == InitializationType::ProvisionedConcurrency)
    );
    let listed = a.sandboxes_of(&s.account, "f");
    assert!(listed.iter().all(|x| x.provisioned && x.state == "idle"));

    // Two at once run on the two provisioned sandboxes; a third spills over
    // to an on-demand cold start.
    let mut handles = Vec::new();
    for _ in 0..3 {
        let (a, s) = (Arc::clone(&a), Arc::clone(&s));
        handles.push(tokio::spawn(async move { a.invoke(s, req()).await }));
    }
    let mut provisioned = 0;
    for h in handles {
        let out = h.await.expect("task").expect("ok");
        provisioned += usize::from(out.provisioned);
    }
    assert_eq!(provisioned, 2);
    let made = w.made();
    assert_eq!(made.len(), 3);
    assert_eq!(made[2].1, InitializationType::OnDemand);
    // Sequential invokes prefer the provisioned ones over the warm on-demand one.
    for _ in 0..3 {
        assert!(
            a.invoke(Arc::clone(&s), req())
                .await
                .expect("ok")
                .provisioned
        );
    }
}

#[tokio::test(start_paused = true)]
async fn keep_alive_spares_provisioned_sandboxes_and_placement_never_evicts_them() {
    let (a, w) = setup(512, 1, 1);
    let s = version_spec("f", "1", 128);
    a.set_provisioned(pid("f", "1"), Arc::clone(&s), 2);
    settle(Duration::from_millis(500)).await;
    assert_eq!(a.stats().provisioned, 2);
    settle(Duration::from_secs(30)).await;
    assert_eq!(a.stats().provisioned, 2, "keep-alive does not reap them");
    assert_eq!(w.shutdowns.load(Ordering::SeqCst), 0);
    // 256 MB left: a 512 MB function of someone else cannot evict them.
    let err = a
        .invoke(spec("big", "r1", 512), req())
        .await
        .expect_err("full");
    assert_eq!(err.code, ErrorCode::TooManyRequests);
    assert_eq!(a.stats().provisioned, 2);
    assert!(!a.room_for(512), "readiness sees their memory as taken");
}

#[tokio::test(start_paused = true)]
async fn dead_provisioned_sandboxes_are_replaced() {
    let (a, w) = setup(4096, 1, 60);
    let s = version_spec("f", "1", 128);
    let id = pid("f", "1");
    a.set_provisioned(id.clone(), Arc::clone(&s), 2);
    settle(Duration::from_millis(500)).await;
    let first = w.made();
    first[0].0.alive.store(false, Ordering::SeqCst);
    settle(Duration::from_millis(1500)).await;
    assert_eq!(w.made().len(), 3, "one replacement");
    assert_eq!(state(&a, &id), (ProvisionState::Ready, 2, 2));
    assert_eq!(a.stats().sandboxes, 2, "the dead one is gone");
}

#[tokio::test(start_paused = true)]
async fn a_successor_is_ready_before_a_lease_runs_out() {
    let lease = Duration::from_secs(100);
    let (a, w) = setup_with_lease(4096, 1, 600, lease);
    let s = version_spec("f", "1", 128);
    let id = pid("f", "1");
    a.set_provisioned(id.clone(), Arc::clone(&s), 1);
    settle(Duration::from_millis(500)).await;
    let first = w.made()[0].0.id.clone();
    // Every 100 ms until well past the lease: a ready provisioned sandbox
    // is always there, and the first is replaced before it expires.
    let mut replaced_at = None;
    for step in 0..1500 {
        settle(Duration::from_millis(100)).await;
        let st = a.provisioned_status(&id).expect("goal");
        assert_eq!(st.available, 1, "step {step}");
        let ids: Vec<String> = a
            .sandboxes_of(&s.account, "f")
            .into_iter()
            .filter(|x| x.provisioned)
            .map(|x| x.id)
            .collect();
        if replaced_at.is_none() && !ids.contains(&first) {
            replaced_at = Some(step);
        }
    }
    assert!(replaced_at.is_some(), "the first sandbox's lease ran out");
    assert!(w.made().len() >= 2);
    assert!(a.stats().lease_expiries >= 1);
}

#[tokio::test(start_paused = true)]
async fn an_init_failure_fails_the_goal() {
    let (a, w) = setup(4096, 1, 60);
    w.init_fails.store(true, Ordering::SeqCst);
    let id = pid("f", "1");
    a.set_provisioned(id.clone(), version_spec("f", "1", 128), 2);
    settle(Duration::from_secs(2)).await;
    let st = a.provisioned_status(&id).expect("goal");
    assert_eq!(st.state, ProvisionState::Failed);
    assert!(
        st.reason
            .as_deref()
            .is_some_and(|r| r.contains("FUNCTION_ERROR_INIT_FAILURE")),
        "{st:?}"
    );
    assert_eq!(a.stats().sandboxes, 0);
    assert_eq!(a.stats().reserved_mb, 0, "the memory came back");
    assert_eq!(w.made().len(), 2, "no retry loop after a failure");
}

#[tokio::test(start_paused = true)]
async fn no_room_fails_the_goal() {
    let (a, _w) = setup(256, 1, 60);
    let id = pid("f", "1");
    a.set_provisioned(id.clone(), version_spec("f", "1", 128), 3);
    settle(Duration::from_secs(1)).await;
    let st = a.provisioned_status(&id).expect("goal");
    assert_eq!(st.state, ProvisionState::Failed);
    assert!(st.reason.is_some());
}

#[tokio::test(start_paused = true)]
async fn removing_or_lowering_a_goal_stops_its_sandboxes() {
    let (a, w) = setup(4096, 1, 60);
    let s = version_spec("f", "1", 128);
    let id = pid("f", "1");
    a.set_provisioned(id.clone(), Arc::clone(&s), 3);
    settle(Duration::from_millis(500)).await;
    assert_eq!(a.stats().provisioned, 3);
    a.set_provisioned(id.clone(), Arc::clone(&s), 1);
    settle(Duration::from_millis(500)).await;
    assert_eq!(a.stats().provisioned, 1);
    assert_eq!(w.shutdowns.load(Ordering::SeqCst), 2);
    assert_eq!(state(&a, &id), (ProvisionState::Ready, 1, 1));
    a.remove_provisioned(&s.account, "f", Some("1"));
    assert!(a.provisioned_status(&id).is_none());
    assert_eq!(a.stats().sandboxes, 0);
    // An alias moved to another version: the old version's go, new ones come.
    let alias = pid("f", "live");
    a.set_provisioned(alias.clone(), Arc::clone(&s), 1);
    settle(Duration::from_millis(500)).await;
    a.set_provisioned(alias.clone(), version_spec("f", "2", 128), 1);
    settle(Duration::from_millis(500)).await;
    let listed = a.sandboxes_of(&s.account, "f");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].version, "2");
    // Deleting the function retires its goals.
    a.retire(&s.account, "f", None, None);
    assert!(a.provisioned_status(&alias).is_none());
    settle(Duration::from_secs(1)).await;
    assert_eq!(a.stats().sandboxes, 0);
}

#[tokio::test(start_paused = true)]
async fn creations_for_a_removed_goal_never_join_a_new_one() {
    let (a, w) = setup(4096, 1, 60);
    let s = version_spec("f", "1", 128);
    let id = pid("f", "1");
    a.set_provisioned(id.clone(), Arc::clone(&s), 2);
    settle(Duration::from_millis(50)).await; // two inits in flight
    a.remove_provisioned(&s.account, "f", Some("1"));
    a.set_provisioned(id.clone(), Arc::clone(&s), 1);
    settle(Duration::from_secs(2)).await;
    assert_eq!(state(&a, &id), (ProvisionState::Ready, 1, 1));
    assert_eq!(a.stats().sandboxes, 1);
    assert_eq!(
        a.stats().reserved_mb,
        128,
        "the abandoned creations gave their memory back"
    );
    assert_eq!(w.made().len(), 3);
    assert_eq!(w.shutdowns.load(Ordering::SeqCst), 2);
    assert_eq!(
        a.provisioned_counts()[0],
        FunctionProvisioned {
            account: AccountId::default_local(),
            function: "f".into(),
            initializing: 0,
            idle: 1,
            busy: 0,
        }
    );
}
