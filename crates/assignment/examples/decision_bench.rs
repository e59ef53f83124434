//! What the invoke path's scheduling costs: one counting decision plus one
//! assignment decision, as the front end makes them for every warm invoke
//! (acquire a concurrency permit, take the warmest idle sandbox of the
//! revision, hand it the invoke, put it back, drop the permit), with a
//! sandbox that answers at once, so what is timed is the platform's own
//! bookkeeping, not a runtime.
//!
//! ```sh
//! cargo run --release -p stratus-assignment --example decision_bench -- [--iters 200000] [--out decision-bench.json]
//! ```
//!
//! Scenarios: `sequential` (one caller), and `concurrent_8` (8 tasks on a
//! 2-thread runtime, each with its own warm sandbox of the same function:
//! the counting and assignment locks are contended). Each sample times one
//! whole decision round trip with `Instant::now()`; the issue-7 target is
//! "well under 1.5 ms p99" (Lambda's counting service answers in ~1.5 ms).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use stratus_api::LambdaError;
use stratus_api::service::{
    Counting, FunctionVersionSpec, InitializationType, InvokeRequest, InvokeResponse, Invoker,
    WarmSandbox, Worker,
};
use stratus_assignment::{AssignmentConfig, LocalAssignment};
use stratus_counting::{CountingConfig, LocalCounting};
use stratus_types::{AccountId, Runtime};

/// A sandbox that answers every invoke at once.
#[derive(Debug)]
struct Instant0(String);

#[async_trait]
impl WarmSandbox for Instant0 {
    fn id(&self) -> &str {
        &self.0
    }
    fn is_alive(&self) -> bool {
        true
    }
    async fn ready(&self) -> Result<(), LambdaError> {
        Ok(())
    }
    async fn invoke(&self, req: InvokeRequest) -> Result<InvokeResponse, LambdaError> {
        Ok(InvokeResponse {
            payload: req.payload,
            function_error: None,
            executed_version: "$LATEST".into(),
            log: String::new(),
            cold_start: false,
            duration: Duration::ZERO,
            init_duration: None,
            provisioned: false,
        })
    }
    fn shutdown(&self) {}
}

#[derive(Debug, Default)]
struct Workers(std::sync::atomic::AtomicUsize);

#[async_trait]
impl Worker for Workers {
    fn id(&self) -> &str {
        "bench"
    }
    fn capacity_mb(&self) -> u64 {
        1 << 20
    }
    async fn prepare_code(&self, _digest: &str) -> Result<(), LambdaError> {
        Ok(())
    }
    fn remove_code(&self, _digest: &str) {}
    async fn create_sandbox(
        &self,
        _spec: Arc<FunctionVersionSpec>,
        _init: InitializationType,
    ) -> Result<Arc<dyn WarmSandbox>, LambdaError> {
        let n = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(Arc::new(Instant0(format!("sb{n}"))))
    }
}

fn spec() -> Result<Arc<FunctionVersionSpec>, String> {
    Ok(Arc::new(FunctionVersionSpec {
        account: AccountId::default_local(),
        region: "us-east-1".into(),
        name: "bench".into(),
        version: "$LATEST".into(),
        revision_id: "r1".into(),
        runtime: Runtime::parse("python3.12").map_err(|e| e.to_string())?,
        handler: "app.handler".into(),
        memory_mb: 128,
        timeout_s: 3,
        ephemeral_mb: 512,
        env: Default::default(),
        code_digest: "0".repeat(64),
        layers: Vec::new(),
    }))
}

fn req() -> InvokeRequest {
    InvokeRequest {
        request_id: "r".into(),
        payload: Bytes::from_static(b"{}"),
        invoked_arn: "arn".into(),
        client_context: None,
        trace_id: String::new(),
    }
}

/// One decision round trip: permit, sandbox, invoke, release.
async fn decide(
    counting: &Arc<dyn Counting>,
    assignment: &Arc<LocalAssignment>,
    spec: &Arc<FunctionVersionSpec>,
) -> Result<Duration, LambdaError> {
    let t0 = Instant::now();
    let permit = counting.acquire(&spec.account, &spec.name).await?;
    assignment.invoke(Arc::clone(spec), req()).await?;
    drop(permit);
    Ok(t0.elapsed())
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let k = ((sorted.len() - 1) as f64 * p / 100.0).round() as usize;
    sorted[k.min(sorted.len() - 1)].as_secs_f64() * 1e6
}

fn summary(mut samples: Vec<Duration>, wall: Duration) -> serde_json::Value {
    samples.sort();
    serde_json::json!({
        "n": samples.len(),
        "p50_us": pct(&samples, 50.0),
        "p99_us": pct(&samples, 99.0),
        "p999_us": pct(&samples, 99.9),
        "max_us": pct(&samples, 100.0),
        "decisions_per_s": samples.len() as f64 / wall.as_secs_f64(),
    })
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
    };
    let iters: usize = value("--iters")
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let out = value("--out").cloned();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let spec = spec()?;
    let results = rt.block_on(async move {
        let counting: Arc<dyn Counting> =
            Arc::new(LocalCounting::with_config(CountingConfig::default()));
        let assignment = LocalAssignment::new(
            vec![Arc::new(Workers::default()) as Arc<dyn Worker>],
            AssignmentConfig::default(),
        );
        // Warm up: the sandboxes exist, the first decisions are not timed.
        for _ in 0..1_000 {
            decide(&counting, &assignment, &spec).await?;
        }
        let t0 = Instant::now();
        let mut seq = Vec::with_capacity(iters);
        for _ in 0..iters {
            seq.push(decide(&counting, &assignment, &spec).await?);
        }
        let sequential = summary(seq, t0.elapsed());

        let tasks = 8;
        let t0 = Instant::now();
        let mut handles = Vec::new();
        for _ in 0..tasks {
            let (c, a, s) = (
                Arc::clone(&counting),
                Arc::clone(&assignment),
                Arc::clone(&spec),
            );
            handles.push(tokio::spawn(async move {
                let mut v = Vec::with_capacity(iters / tasks);
                for _ in 0..iters / tasks {
                    v.push(decide(&c, &a, &s).await?);
                }
                Ok::<_, LambdaError>(v)
            }));
        }
        let mut all = Vec::with_capacity(iters);
        for h in handles {
            let v = h.await.map_err(|e| LambdaError::service(e.to_string()))??;
            all.extend(v);
        }
        let concurrent = summary(all, t0.elapsed());
        Ok::<_, LambdaError>(serde_json::json!({
            "sequential": sequential,
            "concurrent_8": concurrent,
        }))
    });
    let results = results.map_err(|e| e.to_string())?;
    for (name, r) in results.as_object().into_iter().flatten() {
        println!(
            "{name:<14} p50 {:>7.2} us  p99 {:>7.2} us  p99.9 {:>8.2} us  max {:>9.2} us  {:>10.0} decisions/s",
            r["p50_us"].as_f64().unwrap_or(0.0),
            r["p99_us"].as_f64().unwrap_or(0.0),
            r["p999_us"].as_f64().unwrap_or(0.0),
            r["max_us"].as_f64().unwrap_or(0.0),
            r["decisions_per_s"].as_f64().unwrap_or(0.0),
        );
    }
    let p99 = results["sequential"]["p99_us"].as_f64().unwrap_or(f64::MAX);
    println!(
        "target: counting + assignment decision well under 1.5 ms p99: sequential p99 {p99:.1} us ({})",
        if p99 < 1500.0 { "met" } else { "NOT met" }
    );
    if let Some(path) = out {
        let text = serde_json::to_string_pretty(&results).map_err(|e| e.to_string())?;
        std::fs::write(&path, text + "\n").map_err(|e| format!("writing {path}: {e}"))?;
        println!("written to {path}");
    }
    Ok(())
}
