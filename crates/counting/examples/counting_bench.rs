//! What one counting decision costs, measured through the `Counting` trait
//! object exactly as the front end and the assignment service call it.
//!
//! ```sh
//! cargo run --release -p stratus-counting --example counting_bench -- --out counting-bench.json
//! ```
//!
//! Options: `--iters N` timed decisions per thread and scenario (default
//! 1,000,000), `--out FILE` to also write the figures as JSON.
//!
//! Scenarios, each on one thread and on two threads hammering the same
//! function (and so the same lock) at once:
//! - `acquire_release_unreserved`: a permit of a function in the shared pool,
//!   taken and dropped (the front end's work for every invoke);
//! - `acquire_release_reserved`: the same for a function with reserved
//!   concurrency 100;
//! - `acquire_throttled`: a function reserved at 0, so every acquire is the
//!   429 `ReservedFunctionConcurrentInvocationLimitExceeded` (error built);
//! - `scale_up_allowed`: the scaling-bucket check before a cold start, with
//!   tokens available;
//! - `scale_up_throttled`: the same check with the bucket empty (the 429
//!   `FunctionInvocationRateLimitExceeded`).
//!
//! Every decision's outcome is checked against the scenario's expectation;
//! a mismatch makes the run fail. Latency samples time one decision each
//! with `Instant::now()` around it (the timer's own cost is printed too);
//! decisions/s come from a separate untimed loop.

use std::sync::{Arc, Barrier};
use std::time::Instant;

use stratus_api::service::Counting;
use stratus_counting::{CountingConfig, LocalCounting};
use stratus_types::AccountId;

#[derive(Debug, Clone, Copy)]
enum Op {
    Acquire(&'static str),
    ScaleUp(&'static str),
}

#[derive(Debug)]
struct Scenario {
    name: &'static str,
    op: Op,
    /// Whether every decision should admit (true) or throttle (false).
    admit: bool,
}

const SCENARIOS: [Scenario; 5] = [
    Scenario {
        name: "acquire_release_unreserved",
        op: Op::Acquire("unreserved"),
        admit: true,
    },
    Scenario {
        name: "acquire_release_reserved",
        op: Op::Acquire("reserved"),
        admit: true,
    },
    Scenario {
        name: "acquire_throttled",
        op: Op::Acquire("reserved-zero"),
        admit: false,
    },
    Scenario {
        name: "scale_up_allowed",
        op: Op::ScaleUp("unreserved"),
        admit: true,
    },
    Scenario {
        name: "scale_up_throttled",
        op: Op::ScaleUp("empty-bucket"),
        admit: false,
    },
];

/// One decision; `true` if it admitted.
async fn decide(c: &dyn Counting, account: &AccountId, op: Op) -> bool {
    match op {
        Op::Acquire(f) => c.acquire(account, f).await.map(drop).is_ok(),
        Op::ScaleUp(f) => c.try_scale_up(account, f).await.is_ok(),
    }
}

/// The counting service of every scenario but `scale_up_throttled`:
/// `reserved` holds 100, `reserved-zero` 0.
fn counting(
    rt: &tokio::runtime::Runtime,
    account: &AccountId,
) -> Result<Arc<dyn Counting>, String> {
    // A bucket that never runs dry within a run, for `scale_up_allowed`.
    let c: Arc<dyn Counting> = Arc::new(LocalCounting::with_config(CountingConfig {
        account_limit: 1000,
        burst_capacity: u32::MAX,
        burst_refill_per_s: 100.0,
    }));
    rt.block_on(async {
        c.set_reserved(account, "reserved", Some(100)).await?;
        c.set_reserved(account, "reserved-zero", Some(0)).await
    })
    .map_err(|e| format!("setting up reservations: {}", e.message))?;
    Ok(c)
}

/// A service whose `empty-bucket` function has used its only scale-up token
/// and refills too slowly to get another within a run.
fn empty_bucket(
    rt: &tokio::runtime::Runtime,
    account: &AccountId,
) -> Result<Arc<dyn Counting>, String> {
    let c: Arc<dyn Counting> = Arc::new(LocalCounting::with_config(CountingConfig {
        account_limit: 1000,
        burst_capacity: 1,
        burst_refill_per_s: 1e-9,
    }));
    rt.block_on(c.try_scale_up(account, "empty-bucket"))
        .map_err(|e| format!("taking the only token: {}", e.message))?;
    Ok(c)
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| format!("building a tokio runtime: {e}"))
}

/// What one thread measured.
#[derive(Debug, Default)]
struct ThreadRun {
    samples_ns: Vec<u64>,
    untimed_ops: u64,
    untimed_wall_s: f64,
    mismatches: u64,
}

fn run_thread(
    c: &dyn Counting,
    account: &AccountId,
    s: &Scenario,
    iters: usize,
    barrier: &Barrier,
) -> Result<ThreadRun, String> {
    let rt = runtime()?;
    Ok(rt.block_on(async {
        let mut out = ThreadRun {
            samples_ns: Vec::with_capacity(iters),
            ..ThreadRun::default()
        };
        for _ in 0..iters / 10 {
            if decide(c, account, s.op).await != s.admit {
                out.mismatches += 1;
            }
        }
        barrier.wait();
        for _ in 0..iters {
            let t0 = Instant::now();
            let admitted = decide(c, account, s.op).await;
            let ns = t0.elapsed().as_nanos();
            out.samples_ns.push(u64::try_from(ns).unwrap_or(u64::MAX));
            if admitted != s.admit {
                out.mismatches += 1;
            }
        }
        barrier.wait();
        let t0 = Instant::now();
        for _ in 0..iters {
            if decide(c, account, s.op).await != s.admit {
                out.mismatches += 1;
            }
        }
        out.untimed_wall_s = t0.elapsed().as_secs_f64();
        out.untimed_ops = u64::try_from(iters).unwrap_or(u64::MAX);
        out
    }))
}

#[derive(Debug)]
struct Figures {
    scenario: &'static str,
    threads: usize,
    n: usize,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
    mean_us: f64,
    decisions_per_s: f64,
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    // Nearest rank.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[allow(clippy::cast_precision_loss)]
fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn measure(
    c: &Arc<dyn Counting>,
    account: &AccountId,
    s: &Scenario,
    threads: usize,
    iters: usize,
) -> Result<Figures, String> {
    let barrier = Barrier::new(threads);
    let runs: Vec<Result<ThreadRun, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| scope.spawn(|| run_thread(c.as_ref(), account, s, iters, &barrier)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a bench thread panicked".into()))
            })
            .collect()
    });
    let mut samples = Vec::with_capacity(threads * iters);
    let (mut ops, mut wall, mut mismatches) = (0u64, 0f64, 0u64);
    for r in runs {
        let r = r?;
        samples.extend_from_slice(&r.samples_ns);
        ops += r.untimed_ops;
        wall = wall.max(r.untimed_wall_s);
        mismatches += r.mismatches;
    }
    if mismatches > 0 {
        return Err(format!(
            "{}: {mismatches} decisions did not {} as expected",
            s.name,
            if s.admit { "admit" } else { "throttle" }
        ));
    }
    samples.sort_unstable();
    let total: u128 = samples.iter().map(|&x| u128::from(x)).sum();
    #[allow(clippy::cast_precision_loss)]
    let mean_ns = total as f64 / samples.len().max(1) as f64;
    #[allow(clippy::cast_precision_loss)]
    let rate = ops as f64 / wall.max(f64::MIN_POSITIVE);
    Ok(Figures {
        scenario: s.name,
        threads,
        n: samples.len(),
        p50_us: us(percentile(&samples, 50.0)),
        p99_us: us(percentile(&samples, 99.0)),
        p999_us: us(percentile(&samples, 99.9)),
        max_us: us(samples.last().copied().unwrap_or(0)),
        mean_us: mean_ns / 1000.0,
        decisions_per_s: rate,
    })
}

/// Median cost of the `Instant::now()` pair around each sample, in ns.
fn timer_overhead_ns() -> u64 {
    let mut v: Vec<u64> = (0..100_000)
        .map(|_| {
            let t0 = Instant::now();
            u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX)
        })
        .collect();
    v.sort_unstable();
    percentile(&v, 50.0)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

struct Args {
    iters: usize,
    out: Option<std::path::PathBuf>,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        iters: 1_000_000,
        out: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--iters" => {
                let v = it.next().ok_or("--iters needs a number")?;
                a.iters = v
                    .parse()
                    .ok()
                    .filter(|&n| n >= 1000)
                    .ok_or_else(|| format!("--iters {v:?}: need a whole number >= 1000"))?;
            }
            "--out" => a.out = Some(it.next().ok_or("--out needs a file name")?.into()),
            "-h" | "--help" => {
                println!("counting_bench [--iters N] [--out FILE]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(a)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("counting_bench: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let args = args()?;
    let account = AccountId::default_local();
    let rt = runtime()?;
    let load_before = loadavg();
    let timer_ns = timer_overhead_ns();
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    println!(
        "counting decision cost through Arc<dyn Counting> (LocalCounting), {} timed decisions per thread and scenario",
        args.iters
    );
    println!(
        "host: {cpus} CPUs, load average {load_before}; Instant::now() pair: {timer_ns} ns (included in every sample)"
    );
    println!(
        "{:<28} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>14}",
        "scenario", "threads", "p50 us", "p99 us", "p99.9 us", "max us", "mean us", "decisions/s"
    );
    let mut all = Vec::new();
    for threads in [1, 2] {
        for s in &SCENARIOS {
            // A fresh service per run, so one run's state never slows the next.
            let c = match s.op {
                Op::ScaleUp("empty-bucket") => empty_bucket(&rt, &account)?,
                _ => counting(&rt, &account)?,
            };
            let f = measure(&c, &account, s, threads, args.iters)?;
            println!(
                "{:<28} {:>7} {:>9.3} {:>9.3} {:>9.3} {:>9.1} {:>9.3} {:>14.0}",
                f.scenario,
                f.threads,
                f.p50_us,
                f.p99_us,
                f.p999_us,
                f.max_us,
                f.mean_us,
                f.decisions_per_s
            );
            all.push(f);
        }
    }
    let load_after = loadavg();
    println!("load average after: {load_after}");
    if let Some(path) = &args.out {
        let results: Vec<serde_json::Value> = all
            .iter()
            .map(|f| {
                serde_json::json!({
                    "scenario": f.scenario,
                    "threads": f.threads,
                    "n": f.n,
                    "p50_us": f.p50_us,
                    "p99_us": f.p99_us,
                    "p99_9_us": f.p999_us,
                    "max_us": f.max_us,
                    "mean_us": f.mean_us,
                    "decisions_per_s": f.decisions_per_s.round(),
                })
            })
            .collect();
        let unix_time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let doc = serde_json::json!({
            "benchmark": "counting_bench",
            "unix_time": unix_time,
            "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
            "iters_per_thread": args.iters,
            "host": {
                "cpus": cpus,
                "loadavg_before": load_before,
                "loadavg_after": load_after,
            },
            "timer_overhead_ns": timer_ns,
            "results": results,
        });
        let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n")
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        println!("written to {}", path.display());
    }
    Ok(())
}
