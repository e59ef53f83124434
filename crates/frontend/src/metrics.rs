//! Prometheus metrics of the invoke path, served at `GET /metrics`.
//!
//! The front end sees the outcome of every invoke, so it records the
//! counters and histograms itself ([`Metrics::record_invoke`]). State that
//! another component owns is not copied here: at scrape time the handler asks
//! the counting service for the invokes in flight and the assignment service
//! for its sandboxes by state (and its provisioned sandboxes per function),
//! and encodes them beside the counters.
//!
//! Labels are bounded: the account and name of a function that exists, and
//! closed sets decided by the platform (outcome, Lambda error type, throttle
//! reason, sandbox state). Never a request id, never a string a tenant
//! chooses (a handler's own `errorType` stays in its error document).
//!
//! The exposition is OpenMetrics text from the `prometheus-client` encoder.
//! The route needs no credentials: [`crate::router`] serves it outside the
//! Lambda API routes that authentication will wrap.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use stratus_api::service::{FunctionInFlight, FunctionProvisioned, InvokeResponse, SandboxCounts};
use stratus_api::{ErrorCode, LambdaError};
use stratus_async_invoke::Condition;
use stratus_types::AccountId;

use crate::Frontend;
use crate::error::ApiResult;

/// Every metric name starts with this.
const PREFIX: &str = "stratus";

/// `Content-Type` of the OpenMetrics text exposition.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Bucket bounds (seconds) of the invoke duration: 1 ms up to Lambda's
/// 15-minute timeout.
const DURATION_BUCKETS: [f64; 16] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
];

/// Bucket bounds (seconds) of the init duration: up to the 10 s init limit.
const INIT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// What became of an invoke, as the `outcome` label says it.
mod outcome {
    pub const SUCCESS: &str = "success";
    /// The function failed (`X-Amz-Function-Error: Unhandled`).
    pub const FUNCTION_ERROR: &str = "function_error";
    pub const THROTTLED: &str = "throttled";
    /// Any other error response (e.g. a sandbox that could not start).
    pub const ERROR: &str = "error";
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FunctionLabels {
    account: String,
    function: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    account: String,
    function: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    account: String,
    function: String,
    error_type: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ThrottleLabels {
    account: String,
    function: String,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConditionLabels {
    account: String,
    function: String,
    condition: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AccountLabels {
    account: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PrewarmLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FunctionStateLabels {
    account: String,
    function: String,
    state: &'static str,
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

fn init_histogram() -> Histogram {
    Histogram::new(INIT_BUCKETS)
}

/// Bucket bounds (seconds) of an async event's age at an attempt: from
/// 1 ms up to the 6-hour maximum event age.
const EVENT_AGE_BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0,
];

fn event_age_histogram() -> Histogram {
    Histogram::new(EVENT_AGE_BUCKETS)
}

/// The counters and histograms the front end records.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    invocations: Family<OutcomeLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    throttles: Family<ThrottleLabels, Counter>,
    duration: Family<FunctionLabels, Histogram>,
    cold_starts: Family<FunctionLabels, Counter>,
    provisioned_invocations: Family<FunctionLabels, Counter>,
    init_duration: Family<FunctionLabels, Histogram>,
    async_received: Family<FunctionLabels, Counter>,
    async_age: Family<FunctionLabels, Histogram>,
    async_dropped: Family<ConditionLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let invocations = Family::<OutcomeLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let throttles = Family::<ThrottleLabels, Counter>::default();
        let duration = Family::<FunctionLabels, Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        let cold_starts = Family::<FunctionLabels, Counter>::default();
        let provisioned_invocations = Family::<FunctionLabels, Counter>::default();
        let init_duration = Family::<FunctionLabels, Histogram>::new_with_constructor(
            init_histogram as fn() -> Histogram,
        );
        let async_received = Family::<FunctionLabels, Counter>::default();
        let async_age = Family::<FunctionLabels, Histogram>::new_with_constructor(
            event_age_histogram as fn() -> Histogram,
        );
        let async_dropped = Family::<ConditionLabels, Counter>::default();
        let mut registry = Registry::with_prefix(PREFIX);
        registry.register(
            "invocations",
            "Invokes admitted to or refused by the counting service, by outcome (success, function_error, throttled, error)",
            invocations.clone(),
        );
        registry.register(
            "invocation_errors",
            "Failed invokes by Lambda error type: the function's (Unhandled, Sandbox.Timedout, Runtime.ExitError, ...) or the API's (ServiceException, ...)",
            errors.clone(),
        );
        registry.register(
            "throttles",
            "Invokes refused with 429 TooManyRequestsException, by Lambda's Reason",
            throttles.clone(),
        );
        registry.register_with_unit(
            "invocation_duration",
            "The REPORT Duration of invokes that ran in a sandbox",
            Unit::Seconds,
            duration.clone(),
        );
        registry.register(
            "cold_starts",
            "Invokes that started a new sandbox",
            cold_starts.clone(),
        );
        registry.register(
            "provisioned_invocations",
            "Invokes served by a provisioned-concurrency sandbox (initialised before the invoke)",
            provisioned_invocations.clone(),
        );
        registry.register_with_unit(
            "init_duration",
            "The REPORT Init Duration of cold starts",
            Unit::Seconds,
            init_duration.clone(),
        );
        registry.register(
            "async_events_received",
            "Asynchronous (Event) invokes queued durably (Lambda's AsyncEventsReceived)",
            async_received.clone(),
        );
        registry.register_with_unit(
            "async_event_age",
            "Time from an async event's queueing to each attempt to run it (Lambda's AsyncEventAge)",
            Unit::Seconds,
            async_age.clone(),
        );
        registry.register(
            "async_events_dropped",
            "Async events that ended without a successful run, by condition (RetriesExhausted, EventAgeExceeded, ZeroReservedConcurrency); counted before any failure destination or dead-letter delivery (Lambda's AsyncEventsDropped)",
            async_dropped.clone(),
        );
        Metrics {
            registry,
            invocations,
            errors,
            throttles,
            duration,
            cold_starts,
            provisioned_invocations,
            init_duration,
            async_received,
            async_age,
            async_dropped,
        }
    }
}

impl Metrics {
    /// An async event of the function was queued.
    pub fn record_async_received(&self, account: &AccountId, function: &str) {
        self.async_received
            .get_or_create(&FunctionLabels {
                account: account.as_str().to_owned(),
                function: function.to_owned(),
            })
            .inc();
    }

    /// An attempt of an async event starts, `age` after it was queued.
    pub fn record_async_attempt(&self, account: &AccountId, function: &str, age: Duration) {
        self.async_age
            .get_or_create(&FunctionLabels {
                account: account.as_str().to_owned(),
                function: function.to_owned(),
            })
            .observe(age.as_secs_f64());
    }

    /// An async event ended without a successful run.
    pub fn record_async_dropped(&self, account: &AccountId, function: &str, condition: Condition) {
        self.async_dropped
            .get_or_create(&ConditionLabels {
                account: account.as_str().to_owned(),
                function: function.to_owned(),
                condition: condition.as_str(),
            })
            .inc();
    }

    /// Records one invoke that reached the counting service: its outcome,
    /// and for one that ran in a sandbox its duration and cold start.
    pub fn record_invoke(
        &self,
        account: &AccountId,
        function: &str,
        result: &Result<InvokeResponse, LambdaError>,
    ) {
        let account = account.as_str().to_owned();
        let function = function.to_owned();
        let labels = FunctionLabels {
            account: account.clone(),
            function: function.clone(),
        };
        let outcome = match result {
            Ok(out) => {
                self.duration
                    .get_or_create(&labels)
                    .observe(out.duration.as_secs_f64());
                if out.cold_start {
                    self.cold_starts.get_or_create(&labels).inc();
                }
                if out.provisioned {
                    self.provisioned_invocations.get_or_create(&labels).inc();
                }
                if let Some(init) = out.init_duration {
                    self.init_duration
                        .get_or_create(&labels)
                        .observe(init.as_secs_f64());
                }
                match out.function_error {
                    None => outcome::SUCCESS,
                    Some(e) => {
                        self.count_error(&labels, e.error_type());
                        outcome::FUNCTION_ERROR
                    }
                }
            }
            Err(e) if e.code == ErrorCode::TooManyRequests => {
                self.throttles
                    .get_or_create(&ThrottleLabels {
                        account: account.clone(),
                        function: function.clone(),
                        reason: e.reason.unwrap_or("Unspecified"),
                    })
                    .inc();
                outcome::THROTTLED
            }
            Err(e) => {
                self.count_error(&labels, e.code.type_name());
                outcome::ERROR
            }
        };
        self.invocations
            .get_or_create(&OutcomeLabels {
                account,
                function,
                outcome,
            })
            .inc();
    }

    fn count_error(&self, f: &FunctionLabels, error_type: &'static str) {
        self.errors
            .get_or_create(&ErrorLabels {
                account: f.account.clone(),
                function: f.function.clone(),
                error_type,
            })
            .inc();
    }

    /// The whole exposition: the recorded metrics, then gauges built from
    /// the owners' snapshots taken for this scrape.
    pub fn encode(
        &self,
        in_flight: &[FunctionInFlight],
        sandboxes: SandboxCounts,
        provisioned: &[FunctionProvisioned],
    ) -> Result<String, std::fmt::Error> {
        let per_function = Family::<FunctionLabels, Gauge>::default();
        let mut per_account: BTreeMap<&AccountId, i64> = BTreeMap::new();
        for f in in_flight {
            let n = i64::from(f.in_flight);
            per_function
                .get_or_create(&FunctionLabels {
                    account: f.account.as_str().to_owned(),
                    function: f.function.clone(),
                })
                .set(n);
            *per_account.entry(&f.account).or_default() += n;
        }
        let accounts = Family::<AccountLabels, Gauge>::default();
        for (account, n) in per_account {
            accounts
                .get_or_create(&AccountLabels {
                    account: account.as_str().to_owned(),
                })
                .set(n);
        }
        let by_state = Family::<StateLabels, Gauge>::default();
        for (state, n) in [
            ("starting", sandboxes.starting),
            ("idle", sandboxes.idle),
            ("busy", sandboxes.busy),
        ] {
            by_state
                .get_or_create(&StateLabels { state })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let prewarms = Family::<PrewarmLabels, Counter>::default();
        let p = sandboxes.prewarms;
        for (outcome, n) in [
            ("started", p.started),
            ("failed", p.failed),
            ("used", p.used),
            ("no_room", p.no_room),
        ] {
            prewarms.get_or_create(&PrewarmLabels { outcome }).inc_by(n);
        }
        let lease_expiries = Counter::<u64>::default();
        lease_expiries.inc_by(sandboxes.lease_expiries);
        let per_function_state = Family::<FunctionStateLabels, Gauge>::default();
        for f in provisioned {
            for (state, n) in [
                ("initializing", f.initializing),
                ("idle", f.idle),
                ("busy", f.busy),
            ] {
                per_function_state
                    .get_or_create(&FunctionStateLabels {
                        account: f.account.as_str().to_owned(),
                        function: f.function.clone(),
                        state,
                    })
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
        let mut scrape = Registry::with_prefix(PREFIX);
        scrape.register(
            "concurrent_executions",
            "Invokes of a function running now (functions with none are absent)",
            per_function,
        );
        scrape.register(
            "account_concurrent_executions",
            "Invokes of an account running now (accounts with none are absent)",
            accounts,
        );
        scrape.register("sandboxes", "Sandboxes by state", by_state);
        scrape.register(
            "prewarms",
            "Adaptive keep-alive pre-warms since start: started (created and initialised ahead of the expected invoke), failed (of those), used (served an invoke warm), no_room (due but placement was full)",
            prewarms,
        );
        scrape.register(
            "sandbox_lease_expiries",
            "Live sandboxes shut down because their lease was over (--sandbox-lease-secs), since start",
            lease_expiries,
        );
        scrape.register(
            "provisioned_sandboxes",
            "Provisioned-concurrency sandboxes per function by state (initializing, idle, busy); functions without a config are absent",
            per_function_state,
        );

        let mut out = String::new();
        encode_registry(&mut out, &self.registry)?;
        encode_registry(&mut out, &scrape)?;
        encode_eof(&mut out)?;
        Ok(out)
    }
}

/// `GET /metrics`.
pub async fn serve(State(fe): State<Arc<Frontend>>) -> ApiResult<Response> {
    let in_flight = fe.deps.counting.in_flight_snapshot().await;
    let sandboxes = fe.deps.invoker.sandbox_counts().await;
    let provisioned = fe.deps.invoker.provisioned_counts();
    let text = fe
        .metrics
        .encode(&in_flight, sandboxes, &provisioned)
        .map_err(|e| LambdaError::service(format!("encoding metrics: {e}")))?;
    let mut resp = text.into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use stratus_api::service::{FunctionError, PrewarmCounts};

    use super::*;

    fn response(error: Option<FunctionError>, cold: bool) -> InvokeResponse {
        InvokeResponse {
            payload: Bytes::new(),
            function_error: error,
            executed_version: "$LATEST".into(),
            log: String::new(),
            cold_start: cold,
            duration: Duration::from_millis(30),
            init_duration: cold.then_some(Duration::from_millis(200)),
            provisioned: false,
        }
    }

    /// The exposition's lines that start with `prefix`.
    fn lines<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
        text.lines().filter(|l| l.starts_with(prefix)).collect()
    }

    #[test]
    fn every_outcome_lands_in_its_series() {
        let m = Metrics::default();
        let a = AccountId::default_local();
        m.record_invoke(&a, "f", &Ok(response(None, true)));
        m.record_invoke(&a, "f", &Ok(response(None, false)));
        m.record_invoke(&a, "f", &Ok(response(Some(FunctionError::Timedout), false)));
        m.record_invoke(
            &a,
            "f",
            &Err(LambdaError::throttled(
                "FunctionInvocationRateLimitExceeded",
                "Rate Exceeded.",
            )),
        );
        m.record_invoke(&a, "f", &Err(LambdaError::service("no sandbox")));
        let mut warm = response(None, false);
        warm.provisioned = true;
        m.record_invoke(&a, "f", &Ok(warm));
        let text = m
            .encode(&[], SandboxCounts::default(), &[])
            .expect("encode");
        let f = r#"account="000000000000",function="f""#;
        for expected in [
            format!(r#"stratus_invocations_total{{{f},outcome="success"}} 3"#),
            format!(r#"stratus_provisioned_invocations_total{{{f}}} 1"#),
            format!(r#"stratus_invocations_total{{{f},outcome="function_error"}} 1"#),
            format!(r#"stratus_invocations_total{{{f},outcome="throttled"}} 1"#),
            format!(r#"stratus_invocations_total{{{f},outcome="error"}} 1"#),
            format!(r#"stratus_invocation_errors_total{{{f},error_type="Sandbox.Timedout"}} 1"#),
            format!(r#"stratus_invocation_errors_total{{{f},error_type="ServiceException"}} 1"#),
            format!(
                r#"stratus_throttles_total{{{f},reason="FunctionInvocationRateLimitExceeded"}} 1"#
            ),
            format!(r#"stratus_invocation_duration_seconds_count{{{f}}} 4"#),
            format!(r#"stratus_invocation_duration_seconds_bucket{{le="0.025",{f}}} 0"#),
            format!(r#"stratus_invocation_duration_seconds_bucket{{le="0.05",{f}}} 4"#),
            format!(r#"stratus_cold_starts_total{{{f}}} 1"#),
            format!(r#"stratus_init_duration_seconds_count{{{f}}} 1"#),
            format!(r#"stratus_init_duration_seconds_sum{{{f}}} 0.2"#),
        ] {
            assert!(
                text.lines().any(|l| l == expected),
                "{expected} missing from:\n{text}"
            );
        }
        assert_eq!(lines(&text, "stratus_invocation_errors_total").len(), 2);
        assert!(text.ends_with("# EOF\n"), "one complete exposition");
        assert_eq!(text.matches("# EOF").count(), 1);
    }

    #[test]
    fn gauges_come_from_the_snapshots() {
        let m = Metrics::default();
        let a = AccountId::default_local();
        let b = AccountId::parse("222222222222").expect("valid");
        let row = |account: &AccountId, function: &str, in_flight| FunctionInFlight {
            account: account.clone(),
            function: function.into(),
            in_flight,
        };
        let text = m
            .encode(
                &[row(&a, "f", 2), row(&a, "g", 3), row(&b, "f", 1)],
                SandboxCounts {
                    starting: 1,
                    idle: 4,
                    busy: 5,
                    prewarms: PrewarmCounts {
                        started: 7,
                        failed: 1,
                        used: 5,
                        no_room: 2,
                    },
                    lease_expiries: 9,
                },
                &[FunctionProvisioned {
                    account: a.clone(),
                    function: "f".into(),
                    initializing: 1,
                    idle: 2,
                    busy: 0,
                }],
            )
            .expect("encode");
        for expected in [
            r#"stratus_concurrent_executions{account="000000000000",function="f"} 2"#,
            r#"stratus_concurrent_executions{account="000000000000",function="g"} 3"#,
            r#"stratus_concurrent_executions{account="222222222222",function="f"} 1"#,
            r#"stratus_account_concurrent_executions{account="000000000000"} 5"#,
            r#"stratus_account_concurrent_executions{account="222222222222"} 1"#,
            r#"stratus_sandboxes{state="starting"} 1"#,
            r#"stratus_provisioned_sandboxes{account="000000000000",function="f",state="initializing"} 1"#,
            r#"stratus_provisioned_sandboxes{account="000000000000",function="f",state="idle"} 2"#,
            r#"stratus_provisioned_sandboxes{account="000000000000",function="f",state="busy"} 0"#,
            r#"stratus_sandboxes{state="idle"} 4"#,
            r#"stratus_sandboxes{state="busy"} 5"#,
            r#"stratus_prewarms_total{outcome="started"} 7"#,
            r#"stratus_prewarms_total{outcome="failed"} 1"#,
            r#"stratus_prewarms_total{outcome="used"} 5"#,
            r#"stratus_prewarms_total{outcome="no_room"} 2"#,
            "stratus_sandbox_lease_expiries_total 9",
        ] {
            assert!(
                text.lines().any(|l| l == expected),
                "{expected} missing from:\n{text}"
            );
        }
        let idle = m
            .encode(&[], SandboxCounts::default(), &[])
            .expect("encode idle");
        assert!(lines(&idle, "stratus_concurrent_executions{").is_empty());
        assert!(idle.contains("stratus_sandboxes{state=\"busy\"} 0"));
        assert!(idle.contains("stratus_prewarms_total{outcome=\"used\"} 0"));
        assert!(
            idle.lines()
                .any(|l| l == "stratus_sandbox_lease_expiries_total 0")
        );
    }
}
