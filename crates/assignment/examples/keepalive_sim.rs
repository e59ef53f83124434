//! Replays a generated invocation trace through the fixed keep-alive timer
//! and the adaptive (hybrid histogram) policy of
//! [`stratus_assignment::keepalive`], and prints, for each, the cold starts
//! and the memory held by idle sandboxes.
//!
//! ```sh
//! cargo run --release -p stratus-assignment --example keepalive_sim -- \
//!     [--functions 1000] [--hours 48] [--seed 1] [--out keepalive-sim.json]
//! ```
//!
//! The trace is generated, shaped after what Shahrad et al. (USENIX ATC
//! 2020) report of Azure Functions: most functions are called rarely (81%
//! at most once a minute on average), timers are common, a minority is
//! called often. Classes, in proportion: timers (a fixed period of 5-60
//! minutes), rare Poisson arrivals (mean gap 1 minute to 4 hours, log-
//! uniform), frequent Poisson arrivals (mean gap 1-60 s) and bursts (5-20
//! calls a second apart, every 10-120 minutes). Each invoke runs 0.5 s.
//!
//! The model is one sandbox per function, as for functions that never run
//! two invokes at once. A policy decides, when an invoke ends, whether the
//! sandbox stays loaded (and for how long) or is released and pre-warmed
//! later. An invoke that finds no loaded sandbox is a cold start. Idle
//! memory is the time sandboxes are loaded but not running, in
//! sandbox-hours (multiply by MemorySize for bytes).

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use stratus_assignment::keepalive::{IdleHistogram, PolicyConfig, Window, window};

const INVOKE_S: f64 = 0.5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Timer,
    Rare,
    Frequent,
    Bursty,
}

impl Class {
    fn name(self) -> &'static str {
        match self {
            Class::Timer => "timer",
            Class::Rare => "rare",
            Class::Frequent => "frequent",
            Class::Bursty => "bursty",
        }
    }
}

fn log_uniform(rng: &mut StdRng, lo: f64, hi: f64) -> f64 {
    (lo.ln() + rng.r#gen::<f64>() * (hi.ln() - lo.ln())).exp()
}

fn exponential(rng: &mut StdRng, mean: f64) -> f64 {
    -mean * (1.0 - rng.r#gen::<f64>()).ln()
}

/// One function's arrival times (seconds from the trace's start).
fn arrivals(rng: &mut StdRng, class: Class, horizon: f64) -> Vec<f64> {
    let mut out = Vec::new();
    match class {
        Class::Timer => {
            let periods = [5.0, 10.0, 15.0, 20.0, 30.0, 60.0];
            let period = periods[rng.gen_range(0..periods.len())] * 60.0;
            let mut t = rng.r#gen::<f64>() * period;
            while t < horizon {
                out.push(t);
                t += period;
            }
        }
        Class::Rare | Class::Frequent => {
            let mean = if class == Class::Rare {
                log_uniform(rng, 60.0, 4.0 * 3600.0)
            } else {
                log_uniform(rng, 1.0, 60.0)
            };
            let mut t = exponential(rng, mean);
            while t < horizon {
                out.push(t);
                t += exponential(rng, mean).max(INVOKE_S);
            }
        }
        Class::Bursty => {
            let every = log_uniform(rng, 600.0, 7200.0);
            let mut t = rng.r#gen::<f64>() * every;
            while t < horizon {
                for i in 0..rng.gen_range(5..=20) {
                    let at = t + f64::from(i);
                    if at < horizon {
                        out.push(at);
                    }
                }
                t += exponential(rng, every).max(30.0);
            }
        }
    }
    out
}

#[derive(Debug, Clone, Copy)]
enum Policy {
    Fixed(Duration),
    Adaptive(PolicyConfig),
}

impl Policy {
    fn name(&self) -> String {
        match self {
            Policy::Fixed(d) => format!("fixed {} min", d.as_secs() / 60),
            Policy::Adaptive(c) => format!(
                "adaptive (fallback {} min)",
                c.fallback_keep_alive.as_secs() / 60
            ),
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Outcome {
    invokes: u64,
    cold: u64,
    loaded_s: f64,
    learnt_windows: u64,
}

/// Replays one function's arrivals through `policy`.
fn replay(times: &[f64], policy: &Policy, horizon: f64) -> Outcome {
    let mut o = Outcome::default();
    let mut hist = match policy {
        Policy::Adaptive(c) => Some((IdleHistogram::new(c), *c)),
        Policy::Fixed(_) => None,
    };
    // Intervals the sandbox is planned to be loaded, from the last decision.
    let mut planned: Vec<(f64, f64)> = Vec::new();
    let mut prev_end: Option<f64> = None;
    for &t in times {
        o.invokes += 1;
        let warm = planned.iter().any(|&(s, e)| s <= t && t <= e);
        if !warm {
            o.cold += 1;
        }
        for &(s, e) in &planned {
            if s < t {
                o.loaded_s += e.min(t) - s;
            }
        }
        if let (Some(pe), Some((h, _))) = (prev_end, hist.as_mut()) {
            h.record(Duration::from_secs_f64((t - pe).max(0.0)));
        }
        let end = t + INVOKE_S;
        let w = match (&hist, policy) {
            (Some((h, c)), _) => window(c, h),
            (None, Policy::Fixed(k)) => Window {
                prewarm: Duration::ZERO,
                keep_alive: *k,
                learnt: false,
            },
            (None, Policy::Adaptive(c)) => Window {
                prewarm: Duration::ZERO,
                keep_alive: c.fallback_keep_alive,
                learnt: false,
            },
        };
        if w.learnt {
            o.learnt_windows += 1;
        }
        let p = w.prewarm.as_secs_f64();
        let k = w.keep_alive.as_secs_f64();
        planned = if p == 0.0 {
            vec![(t, end + k)]
        } else {
            vec![(t, end), (end + p, end + p + k)]
        };
        prev_end = Some(end);
    }
    for &(s, e) in &planned {
        if s < horizon {
            o.loaded_s += e.min(horizon) - s;
        }
    }
    o
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let k = ((sorted.len() - 1) as f64 * p / 100.0).round() as usize;
    sorted[k.min(sorted.len() - 1)]
}

fn arg<T: std::str::FromStr>(args: &[String], flag: &str, default: T) -> T {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let functions: usize = arg(&args, "--functions", 1000);
    let hours: f64 = arg(&args, "--hours", 48.0);
    let seed: u64 = arg(&args, "--seed", 1);
    let out: Option<String> = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1).cloned());
    let horizon = hours * 3600.0;

    let mut rng = StdRng::seed_from_u64(seed);
    let trace: Vec<(Class, Vec<f64>)> = (0..functions)
        .map(|_| {
            let class = match rng.r#gen::<f64>() {
                x if x < 0.30 => Class::Timer,
                x if x < 0.75 => Class::Rare,
                x if x < 0.90 => Class::Frequent,
                _ => Class::Bursty,
            };
            (class, arrivals(&mut rng, class, horizon))
        })
        .filter(|(_, t)| !t.is_empty())
        .collect();

    // The fixed timers beyond 10 minutes show what a fixed timer must cost
    // in memory to match the adaptive policy's cold starts.
    let policies = [
        Policy::Fixed(Duration::from_secs(300)),
        Policy::Fixed(Duration::from_secs(600)),
        Policy::Fixed(Duration::from_secs(1800)),
        Policy::Fixed(Duration::from_secs(3600)),
        Policy::Adaptive(PolicyConfig::default()),
    ];
    let total_invokes: usize = trace.iter().map(|(_, t)| t.len()).sum();
    println!(
        "trace: {} functions, {total_invokes} invokes over {hours} h (seed {seed}); invoke duration {INVOKE_S} s",
        trace.len()
    );
    println!(
        "\n{:<28} {:>8} {:>9} {:>9} {:>9} {:>14} {:>10}",
        "policy", "cold %", "fn p50 %", "fn p75 %", "fn p90 %", "idle sbx-h", "vs fixed 5"
    );
    let mut results = Vec::new();
    let mut base_idle = None;
    for policy in &policies {
        let mut per_fn = Vec::new();
        let (mut invokes, mut cold, mut loaded, mut learnt) = (0u64, 0u64, 0.0f64, 0u64);
        let mut by_class: Vec<(Class, u64, u64, f64)> = Vec::new();
        for (class, times) in &trace {
            let o = replay(times, policy, horizon);
            invokes += o.invokes;
            cold += o.cold;
            loaded += o.loaded_s;
            learnt += o.learnt_windows;
            per_fn.push(100.0 * o.cold as f64 / o.invokes as f64);
            let idle_s = o.loaded_s - o.invokes as f64 * INVOKE_S;
            match by_class.iter_mut().find(|(c, ..)| c == class) {
                Some(e) => {
                    e.1 += o.invokes;
                    e.2 += o.cold;
                    e.3 += idle_s;
                }
                None => by_class.push((*class, o.invokes, o.cold, idle_s)),
            }
        }
        per_fn.sort_by(f64::total_cmp);
        let idle_h = (loaded - invokes as f64 * INVOKE_S) / 3600.0;
        let base = *base_idle.get_or_insert(idle_h);
        let cold_pct = 100.0 * cold as f64 / invokes as f64;
        println!(
            "{:<28} {:>8.2} {:>9.1} {:>9.1} {:>9.1} {:>14.1} {:>9.0}%",
            policy.name(),
            cold_pct,
            pct(&per_fn, 50.0),
            pct(&per_fn, 75.0),
            pct(&per_fn, 90.0),
            idle_h,
            100.0 * idle_h / base
        );
        by_class.sort_by_key(|(c, ..)| c.name());
        results.push(serde_json::json!({
            "policy": policy.name(),
            "invokes": invokes,
            "cold_starts": cold,
            "cold_start_pct": cold_pct,
            "per_function_cold_pct": {"p50": pct(&per_fn, 50.0), "p75": pct(&per_fn, 75.0), "p90": pct(&per_fn, 90.0), "p99": pct(&per_fn, 99.0)},
            "idle_sandbox_hours": idle_h,
            "idle_vs_fixed_5min": idle_h / base,
            "decisions_from_histogram": learnt,
            "cold_start_pct_by_class": by_class.iter().map(|(c, i, k, _)| (c.name().to_owned(), serde_json::json!(100.0 * *k as f64 / *i as f64))).collect::<serde_json::Map<_, _>>(),
            "idle_sandbox_hours_by_class": by_class.iter().map(|(c, _, _, idle)| (c.name().to_owned(), serde_json::json!(idle / 3600.0))).collect::<serde_json::Map<_, _>>(),
        }));
    }
    for (title, key) in [
        (
            "cold starts by class (% of that class's invokes)",
            "cold_start_pct_by_class",
        ),
        ("idle sandbox-hours by class", "idle_sandbox_hours_by_class"),
    ] {
        println!("\n{title}:");
        for r in &results {
            println!(
                "  {:<28} {}",
                r["policy"].as_str().unwrap_or("-"),
                r[key]
                    .as_object()
                    .map(|m| m
                        .iter()
                        .map(|(k, v)| format!("{k} {:.1}", v.as_f64().unwrap_or(0.0)))
                        .collect::<Vec<_>>()
                        .join(", "))
                    .unwrap_or_default()
            );
        }
    }
    if let Some(path) = out {
        let doc = serde_json::json!({
            "trace": {"functions": trace.len(), "invokes": total_invokes, "hours": hours, "seed": seed, "invoke_s": INVOKE_S},
            "results": results,
        });
        match serde_json::to_string_pretty(&doc) {
            Ok(text) => {
                if let Err(e) = std::fs::write(&path, text + "\n") {
                    eprintln!("cannot write {path}: {e}");
                    std::process::exit(1);
                }
                println!("\nwritten to {path}");
            }
            Err(e) => eprintln!("cannot encode the results: {e}"),
        }
    }
}
