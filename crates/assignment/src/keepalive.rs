//! Adaptive keep-alive: how long a function's idle sandbox is worth keeping,
//! learnt from the function's own idle times.
//!
//! A fixed keep-alive timer (Stratus's default: 5 minutes) is wrong for most
//! functions in one direction or the other. A function called every 20
//! minutes by a timer pays a cold start on every call *and* holds memory for
//! 5 minutes after each; a function called every few seconds would be as
//! well served by a timer of a minute. This module implements the hybrid
//! histogram policy of Shahrad et al., "Serverless in the Wild" (USENIX ATC
//! 2020), measured on Azure Functions' production traces:
//!
//! - Each function keeps a histogram of its **idle times** (from the end of
//!   one invoke to the start of the next), in bins of one minute over a
//!   range of four hours ([`IdleHistogram`]).
//! - When the histogram is **representative** (enough samples, most of them
//!   in range, and concentrated rather than spread evenly — coefficient of
//!   variation of the bin counts at least [`PolicyConfig::min_cv`]), the
//!   window after an invoke ends is:
//!   - **pre-warm** = the head percentile (5th) of the idle times, less a
//!     10% margin: the sandbox is released at once and a new one is started
//!     that long after, just before the next call is expected;
//!   - **keep-alive** = from then until the tail percentile (99th), plus a
//!     10% margin.
//! - Otherwise the policy falls back to the fixed timer it replaces (no
//!   pre-warm, keep-alive = the configured one). The paper forecasts
//!   out-of-range patterns with ARIMA; here they fall back too.
//!
//! Everything here is pure: no clock, no I/O. The simulator in
//! `examples/keepalive_sim.rs` replays a generated invocation trace through
//! this policy and the fixed timer and prints the cold starts and idle
//! memory-time of each.

use std::time::Duration;

/// Tunables of the hybrid histogram policy (the paper's defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolicyConfig {
    /// Width of one histogram bin.
    pub bin: Duration,
    /// Idle times up to this are binned; longer ones are only counted.
    pub range: Duration,
    /// Percentile of idle times that starts the pre-warm (0-100).
    pub head_percentile: f64,
    /// Percentile of idle times that ends the keep-alive (0-100).
    pub tail_percentile: f64,
    /// Safety margin: the pre-warm comes this fraction earlier, the
    /// keep-alive ends this fraction later.
    pub margin: f64,
    /// Fewer idle times than this: not representative.
    pub min_samples: u32,
    /// Below this coefficient of variation of the bin counts the idle
    /// times are spread too evenly to predict: not representative.
    pub min_cv: f64,
    /// More than this fraction of idle times beyond `range`: not
    /// representative.
    pub max_out_of_range: f64,
    /// The fixed keep-alive used when the histogram is not representative.
    pub fallback_keep_alive: Duration,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            bin: Duration::from_secs(60),
            range: Duration::from_secs(4 * 60 * 60),
            head_percentile: 5.0,
            tail_percentile: 99.0,
            margin: 0.10,
            min_samples: 10,
            min_cv: 2.0,
            max_out_of_range: 0.5,
            fallback_keep_alive: Duration::from_secs(300),
        }
    }
}

/// What to do with a function's sandbox once an invoke has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Release the sandbox now and start a fresh one this long after the
    /// invoke ended (zero: keep it loaded).
    pub prewarm: Duration,
    /// Keep the (pre-warmed or still loaded) sandbox this long after the
    /// pre-warm point, then release it.
    pub keep_alive: Duration,
    /// The histogram decided (false: the fixed fallback).
    pub learnt: bool,
}

/// A function's idle times, in fixed-width bins over a limited range.
#[derive(Debug, Clone, PartialEq)]
pub struct IdleHistogram {
    bin: Duration,
    counts: Vec<u32>,
    in_range: u32,
    out_of_range: u32,
}

impl IdleHistogram {
    /// An empty histogram of `range / bin` bins (at least one).
    pub fn new(cfg: &PolicyConfig) -> Self {
        let bin = cfg.bin.max(Duration::from_millis(1));
        let bins = (cfg.range.as_nanos() / bin.as_nanos()).clamp(1, 100_000);
        IdleHistogram {
            bin,
            counts: vec![0; usize::try_from(bins).unwrap_or(1)],
            in_range: 0,
            out_of_range: 0,
        }
    }

    /// Records one idle time.
    pub fn record(&mut self, idle: Duration) {
        let i = idle.as_nanos() / self.bin.as_nanos();
        match usize::try_from(i).ok().and_then(|i| self.counts.get_mut(i)) {
            Some(c) => {
                *c = c.saturating_add(1);
                self.in_range = self.in_range.saturating_add(1);
            }
            None => self.out_of_range = self.out_of_range.saturating_add(1),
        }
    }

    /// Idle times recorded, in range or not.
    pub fn samples(&self) -> u32 {
        self.in_range.saturating_add(self.out_of_range)
    }

    /// The `p`th percentile (0-100) of the in-range idle times, as the
    /// start of its bin (`None` when nothing is in range).
    fn percentile_bin(&self, p: f64) -> Option<usize> {
        if self.in_range == 0 {
            return None;
        }
        let want = (f64::from(self.in_range) * p.clamp(0.0, 100.0) / 100.0).ceil();
        let want = (want as u64).max(1);
        let mut seen = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            seen += u64::from(*c);
            if seen >= want {
                return Some(i);
            }
        }
        Some(self.counts.len() - 1)
    }

    /// Coefficient of variation of the bin counts: high when idle times
    /// cluster in a few bins (predictable), low when spread evenly.
    fn cv(&self) -> f64 {
        let n = self.counts.len() as f64;
        let mean = f64::from(self.in_range) / n;
        if mean == 0.0 {
            return 0.0;
        }
        let var = self
            .counts
            .iter()
            .map(|c| (f64::from(*c) - mean).powi(2))
            .sum::<f64>()
            / n;
        var.sqrt() / mean
    }
}

/// The window after an invoke of a function with idle-time histogram `h`.
pub fn window(cfg: &PolicyConfig, h: &IdleHistogram) -> Window {
    let fixed = Window {
        prewarm: Duration::ZERO,
        keep_alive: cfg.fallback_keep_alive,
        learnt: false,
    };
    let samples = h.samples();
    if samples < cfg.min_samples
        || f64::from(h.out_of_range) > cfg.max_out_of_range * f64::from(samples)
        || h.cv() < cfg.min_cv
    {
        return fixed;
    }
    let (Some(head), Some(tail)) = (
        h.percentile_bin(cfg.head_percentile),
        h.percentile_bin(cfg.tail_percentile),
    ) else {
        return fixed;
    };
    let bin = h.bin;
    // Head: the start of its bin, less the margin. Tail: the end of its bin,
    // plus the margin.
    let head_at = bin.saturating_mul(u32::try_from(head).unwrap_or(u32::MAX));
    let prewarm = head_at.mul_f64(1.0 - cfg.margin.clamp(0.0, 1.0));
    let tail_end = bin.saturating_mul(u32::try_from(tail + 1).unwrap_or(u32::MAX));
    let until = tail_end.mul_f64(1.0 + cfg.margin.max(0.0));
    Window {
        prewarm,
        keep_alive: until.saturating_sub(prewarm),
        learnt: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn about(a: Duration, b: Duration) -> bool {
        a.abs_diff(b) < Duration::from_millis(1)
    }

    fn histogram(idle_minutes: &[u64]) -> IdleHistogram {
        let cfg = PolicyConfig::default();
        let mut h = IdleHistogram::new(&cfg);
        for m in idle_minutes {
            h.record(MIN * u32::try_from(*m).expect("small"));
        }
        h
    }

    #[test]
    fn too_few_samples_fall_back_to_the_fixed_timer() {
        let cfg = PolicyConfig::default();
        let w = window(&cfg, &histogram(&[20, 20, 20]));
        assert_eq!(
            w,
            Window {
                prewarm: Duration::ZERO,
                keep_alive: cfg.fallback_keep_alive,
                learnt: false
            }
        );
    }

    #[test]
    fn a_timer_every_twenty_minutes_is_prewarmed_just_before_the_next_call() {
        let cfg = PolicyConfig::default();
        let w = window(&cfg, &histogram(&[20; 30]));
        assert!(w.learnt);
        // Head: the 20-minute bin less 10% = 18 minutes: released in between.
        assert!(about(w.prewarm, MIN * 18), "{w:?}");
        // Kept until the end of the bin plus 10%: 21 * 1.1 = 23.1 minutes.
        assert!(
            about(w.prewarm + w.keep_alive, MIN.mul_f64(21.0 * 1.1)),
            "{w:?}"
        );
    }

    #[test]
    fn frequent_calls_keep_the_sandbox_loaded_for_their_tail_only() {
        let cfg = PolicyConfig::default();
        // Mostly under a minute apart, a few at 2 minutes.
        let mut idle = vec![0; 95];
        idle.extend([2; 5]);
        let w = window(&cfg, &histogram(&idle));
        assert!(w.learnt);
        assert_eq!(w.prewarm, Duration::ZERO);
        assert!(about(w.keep_alive, MIN.mul_f64(3.0 * 1.1)), "{w:?}");
        assert!(w.keep_alive < cfg.fallback_keep_alive);
    }

    #[test]
    fn evenly_spread_idle_times_are_not_predictable() {
        let cfg = PolicyConfig::default();
        let idle: Vec<u64> = (0..240).collect();
        assert!(!window(&cfg, &histogram(&idle)).learnt);
    }

    #[test]
    fn mostly_out_of_range_idle_times_fall_back() {
        let cfg = PolicyConfig::default();
        let mut idle = vec![300; 20];
        idle.extend([5; 10]);
        let h = histogram(&idle);
        assert_eq!(h.samples(), 30);
        assert!(!window(&cfg, &h).learnt);
    }

    #[test]
    fn percentiles_count_from_the_first_bin() {
        let h = histogram(&[1, 1, 1, 1, 1, 1, 1, 1, 1, 7]);
        assert_eq!(h.percentile_bin(5.0), Some(1));
        assert_eq!(h.percentile_bin(90.0), Some(1));
        assert_eq!(h.percentile_bin(99.0), Some(7));
        assert_eq!(histogram(&[]).percentile_bin(50.0), None);
    }
}
