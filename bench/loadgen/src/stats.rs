//! Percentiles over recorded latencies and the summary a run prints.

use serde::Serialize;

/// Latency percentiles of one run, in microseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Percentiles {
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// Summarises latencies given in nanoseconds (sorted in place) as
/// microseconds, nearest-rank percentiles. `None` for no samples.
pub fn percentiles(samples_ns: &mut [u64]) -> Option<Percentiles> {
    if samples_ns.is_empty() {
        return None;
    }
    samples_ns.sort_unstable();
    let n = samples_ns.len();
    let at = |per_mille: usize| -> f64 {
        // Nearest rank: the smallest sample with at least this share of all
        // samples at or below it (integer arithmetic: no rounding surprises).
        let rank = (per_mille * n).div_ceil(1000);
        us(samples_ns[rank.clamp(1, n) - 1])
    };
    let sum: u128 = samples_ns.iter().map(|&v| u128::from(v)).sum();
    Some(Percentiles {
        min: us(samples_ns[0]),
        mean: round3(sum as f64 / n as f64 / 1000.0),
        p50: at(500),
        p90: at(900),
        p99: at(990),
        p999: at(999),
        max: us(samples_ns[n - 1]),
    })
}

fn us(ns: u64) -> f64 {
    round3(ns as f64 / 1000.0)
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// What signing cost per request, outside the timed window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SigningCost {
    pub enabled: bool,
    /// Always false: the timer starts after the request is signed.
    pub in_timed_window: bool,
    /// Percentiles of the time to sign one request, in microseconds.
    pub latency_us: Option<Percentiles>,
}

/// The JSON document `stratus-loadgen` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub url: String,
    pub method: String,
    pub payload_bytes: usize,
    pub concurrency: usize,
    /// Tokio worker threads the client ran on.
    pub threads: usize,
    pub tcp_nodelay: bool,
    pub keep_alive: bool,
    pub warmup_requests: u64,
    /// Timed requests completed (errors included).
    pub n: u64,
    pub errors: u64,
    /// The first few errors, as text.
    pub error_samples: Vec<String>,
    /// Connections opened in all (C, plus one per reconnect after an error).
    pub connections_opened: u64,
    pub latency_us: Option<Percentiles>,
    pub throughput_rps: f64,
    pub wall_s: f64,
    pub signing: SigningCost,
    /// How the figures were taken, in words.
    pub method_notes: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<u64> = (1..=1000).rev().map(|i| i * 1000).collect();
        let p = percentiles(&mut v).expect("samples");
        assert_eq!(p.min, 1.0);
        assert_eq!(p.p50, 500.0);
        assert_eq!(p.p90, 900.0);
        assert_eq!(p.p99, 990.0);
        assert_eq!(p.p999, 999.0);
        assert_eq!(p.max, 1000.0);
        assert_eq!(p.mean, 500.5);
    }

    #[test]
    fn one_sample_is_every_percentile() {
        let p = percentiles(&mut [1500]).expect("one sample");
        assert_eq!((p.min, p.p50, p.p999, p.max), (1.5, 1.5, 1.5, 1.5));
    }

    #[test]
    fn no_samples() {
        assert_eq!(percentiles(&mut []), None);
    }
}
