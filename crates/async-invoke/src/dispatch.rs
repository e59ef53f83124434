//! The dispatcher: takes due events off the queue, runs each through the
//! [`EventTarget`] (the front end's invoke path), and records the outcome.
//!
//! - Success: the OnSuccess destination (if any) gets the record; the
//!   event is removed.
//! - Function error or timeout: counted as an attempt; retried after
//!   `retry_delay` times the attempt number (Lambda: 1 then 2 minutes)
//!   while attempts ≤ MaximumRetryAttempts, then failed with
//!   `RetriesExhausted`.
//! - Throttle or system error: not an attempt; retried with exponential
//!   backoff (1 s doubling, at most `throttle_backoff_max`) until the
//!   event is older than MaximumEventAgeInSeconds, then failed with
//!   `EventAgeExceeded`.
//! - Reserved concurrency 0: failed at once with `ZeroReservedConcurrency`.
//!
//! A failed event goes to the OnFailure destination (the record) and to
//! the function's dead-letter target (the original payload). Deliveries are
//! themselves queued events of the target function, enqueued before the
//! original is removed. At most `max_in_flight` events run at once; each
//! runs in a span with the function and request id.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use stratus_api::LambdaError;
use stratus_api::service::InvokeResponse;
use tokio::sync::{Notify, Semaphore};
use tracing::Instrument;

use crate::config::{AsyncSettings, check_target_arn};
use crate::queue::{Entry, EventQueue, QueueError, QueuedEvent};
use crate::record::{Condition, destination_record};

/// Wall-clock milliseconds, advanced by tokio's clock (so tests on paused
/// time move it): the epoch time at creation plus the monotonic time since.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base_ms: u64,
    start: tokio::time::Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    pub fn new() -> Self {
        let base_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Clock {
            base_ms,
            start: tokio::time::Instant::now(),
        }
    }

    pub fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.base_ms.saturating_add(elapsed)
    }
}

/// The outcome of one attempt to run an event.
#[derive(Debug)]
pub enum Attempt {
    /// The function returned.
    Success(InvokeResponse),
    /// The function failed (error, timeout, crash): counts as an attempt.
    FunctionError(InvokeResponse),
    /// Throttled, or a system error before the function ran: retried with
    /// backoff, not counted.
    Retry(LambdaError),
    /// The function's reserved concurrency is 0.
    ZeroReservedConcurrency,
    /// The function no longer exists: the event is dropped.
    Gone,
}

/// What runs events: on one machine the front end's invoke path.
#[async_trait]
pub trait EventTarget: Send + Sync + std::fmt::Debug {
    /// The async settings of the event's function, `None` if it is gone.
    async fn settings(&self, event: &QueuedEvent) -> Option<AsyncSettings>;
    /// Runs one attempt, as a synchronous invoke would (counting, assignment).
    async fn invoke(&self, event: &QueuedEvent) -> Attempt;
    /// The event ended without a successful run (before it was sent to its
    /// failure destination or dead-letter target, if any): Lambda's
    /// `AsyncEventsDropped`. Called once per event; nothing by default.
    fn dropped(&self, _event: &QueuedEvent, _condition: Condition) {}
}

/// Tunables of the dispatcher.
#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    /// Wait before the first retry after a function error; the n-th retry
    /// waits n times this. Lambda: 60 s.
    pub retry_delay: Duration,
    /// Longest backoff after a throttle or system error. Lambda: 5 minutes.
    pub throttle_backoff_max: Duration,
    /// Events running at once.
    pub max_in_flight: usize,
    /// Longest sleep between looks at the queue.
    pub poll_interval: Duration,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        DispatcherConfig {
            retry_delay: Duration::from_secs(60),
            throttle_backoff_max: Duration::from_secs(300),
            max_in_flight: 64,
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// Takes due events off the queue and runs them.
#[derive(Debug)]
pub struct Dispatcher {
    queue: Arc<dyn EventQueue>,
    target: Arc<dyn EventTarget>,
    config: DispatcherConfig,
    clock: Clock,
    /// Keys of events running now (so the next look skips them).
    in_flight: Mutex<HashSet<String>>,
    slots: Arc<Semaphore>,
    /// An event finished (a slot is free).
    done: Notify,
}

/// Events looked at per round; more than `max_in_flight`, so running ones
/// never hide due ones.
const PEEK: usize = 512;

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Dispatcher {
    pub fn new(
        queue: Arc<dyn EventQueue>,
        target: Arc<dyn EventTarget>,
        config: DispatcherConfig,
        clock: Clock,
    ) -> Arc<Self> {
        let max = config.max_in_flight.clamp(1, PEEK / 2);
        Arc::new(Dispatcher {
            queue,
            target,
            config,
            clock,
            in_flight: Mutex::new(HashSet::new()),
            slots: Arc::new(Semaphore::new(max)),
            done: Notify::new(),
        })
    }

    /// Runs the dispatcher until the task is dropped.
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(
            async move {
                loop {
                    let wait = this.round().await;
                    tokio::select! {
                        _ = this.queue.wait(wait) => {}
                        _ = this.done.notified() => {}
                    }
                }
            }
            .instrument(tracing::info_span!("async_dispatcher")),
        )
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts every due event there is room for; returns how long to wait
    /// before the next look.
    async fn round(self: &Arc<Self>) -> Duration {
        // Taken before the look: an event that finishes meanwhile is gone
        // from the queue before it leaves this set, so it cannot be seen
        // queued but not running (and started twice).
        let running = self.in_flight().clone();
        let entries = match self.queue.peek(PEEK).await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the async event queue");
                return self.config.poll_interval;
            }
        };
        let now = self.clock.now_ms();
        let mut wait = self.config.poll_interval;
        for entry in entries {
            if running.contains(&entry.key) {
                continue;
            }
            if entry.due_ms > now {
                wait = wait.min(Duration::from_millis(entry.due_ms - now));
                break;
            }
            let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() else {
                break;
            };
            self.in_flight().insert(entry.key.clone());
            let this = Arc::clone(self);
            let span = tracing::info_span!(
                "async_event",
                function = %entry.event.function,
                request_id = %entry.event.id,
                attempt = entry.event.attempts + 1,
            );
            tokio::spawn(
                async move {
                    let key = entry.key.clone();
                    if let Err(e) = this.process(&entry).await {
                        tracing::warn!(error = %e, "could not record an async event's outcome; it stays queued");
                    }
                    this.in_flight().remove(&key);
                    drop(permit);
                    this.done.notify_one();
                }
                .instrument(span),
            );
        }
        wait
    }

    async fn process(&self, entry: &Entry) -> Result<(), QueueError> {
        let ev = &entry.event;
        let Some(s) = self.target.settings(ev).await else {
            tracing::warn!("the function of a queued async event is gone; dropping the event");
            return self.queue.remove(entry).await;
        };
        let deadline = ev.enqueued_ms.saturating_add(ms(s.max_age));
        if self.clock.now_ms() >= deadline {
            return self
                .fail(entry, &s, Condition::EventAgeExceeded, ev.attempts, None)
                .await;
        }
        match self.target.invoke(ev).await {
            Attempt::Success(r) => {
                if let Some(dest) = &s.on_success {
                    let record = destination_record(
                        self.clock.now_ms(),
                        &ev.id,
                        &s.function_arn,
                        Condition::Success,
                        ev.attempts + 1,
                        &ev.payload,
                        Some(&r),
                    );
                    self.deliver(ev, dest, record.to_string()).await?;
                }
                self.queue.remove(entry).await
            }
            Attempt::FunctionError(r) => {
                let mut next = ev.clone();
                next.attempts += 1;
                next.throttles = 0;
                if next.attempts > s.max_retries {
                    tracing::info!(
                        attempts = next.attempts,
                        "async event failed; retries exhausted"
                    );
                    return self
                        .fail(
                            entry,
                            &s,
                            Condition::RetriesExhausted,
                            next.attempts,
                            Some(&r),
                        )
                        .await;
                }
                let delay = self.config.retry_delay.saturating_mul(next.attempts);
                let due = self.clock.now_ms().saturating_add(ms(delay));
                tracing::info!(
                    attempts = next.attempts,
                    retry_in_ms = ms(delay),
                    "async event failed; retrying"
                );
                self.queue.reschedule(entry, &next, due).await.map(|_| ())
            }
            Attempt::Retry(e) => {
                let mut next = ev.clone();
                next.throttles = next.throttles.saturating_add(1);
                let backoff = backoff(next.throttles, self.config.throttle_backoff_max);
                let due = self
                    .clock
                    .now_ms()
                    .saturating_add(ms(backoff))
                    .min(deadline);
                tracing::debug!(error = %e, backoff_ms = ms(backoff), "async event not run; retrying later");
                self.queue.reschedule(entry, &next, due).await.map(|_| ())
            }
            Attempt::ZeroReservedConcurrency => {
                self.fail(
                    entry,
                    &s,
                    Condition::ZeroReservedConcurrency,
                    ev.attempts,
                    None,
                )
                .await
            }
            Attempt::Gone => {
                tracing::warn!("the function of a queued async event is gone; dropping the event");
                self.queue.remove(entry).await
            }
        }
    }

    /// Sends a failed event to its OnFailure destination and dead-letter
    /// target, then removes it.
    async fn fail(
        &self,
        entry: &Entry,
        s: &AsyncSettings,
        condition: Condition,
        invoke_count: u32,
        response: Option<&InvokeResponse>,
    ) -> Result<(), QueueError> {
        let ev = &entry.event;
        self.target.dropped(ev, condition);
        if let Some(dest) = &s.on_failure {
            let record = destination_record(
                self.clock.now_ms(),
                &ev.id,
                &s.function_arn,
                condition,
                invoke_count,
                &ev.payload,
                response,
            );
            self.deliver(ev, dest, record.to_string()).await?;
        }
        if let Some(dlq) = &s.dead_letter {
            self.deliver(ev, dlq, ev.payload.clone()).await?;
        }
        if s.on_failure.is_none() && s.dead_letter.is_none() {
            tracing::warn!(
                condition = condition.as_str(),
                "async event failed and has no failure destination or dead-letter target; dropped"
            );
        }
        self.queue.remove(entry).await
    }

    /// Queues `payload` as an async event of the function `arn`.
    async fn deliver(
        &self,
        from: &QueuedEvent,
        arn: &str,
        payload: String,
    ) -> Result<(), QueueError> {
        let target = match check_target_arn(arn, "destination", &from.account, None) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(destination = arn, error = %e, "cannot deliver to this destination; skipped");
                return Ok(());
            }
        };
        let now = self.clock.now_ms();
        let event = QueuedEvent {
            id: uuid::Uuid::new_v4().to_string(),
            account: target.account,
            function: target.function,
            qualifier: target.qualifier,
            payload,
            client_context: None,
            enqueued_ms: now,
            attempts: 0,
            throttles: 0,
        };
        self.queue.enqueue(&event, now).await.map(|_| ())
    }
}

/// The backoff after the n-th throttle in a row: 1 s, 2 s, 4 s ... at most `max`.
pub fn backoff(throttles: u32, max: Duration) -> Duration {
    let exp = throttles.saturating_sub(1).min(20);
    Duration::from_secs(1u64 << exp).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::StoreQueue;
    use crate::queue::tests::{MemStore, event};
    use std::collections::HashMap;
    use stratus_api::service::FunctionError;

    /// Functions "f" (behaviour chosen per test) and "dest" (records what
    /// it gets, always succeeds).
    #[derive(Debug)]
    struct Fake {
        settings: HashMap<String, AsyncSettings>,
        behaviour: fn() -> Attempt,
        runs: Mutex<Vec<(String, tokio::time::Instant, String)>>,
        dropped: Mutex<Vec<(String, Condition)>>,
    }

    fn response(err: bool) -> InvokeResponse {
        InvokeResponse {
            payload: bytes::Bytes::from_static(b"{}"),
            function_error: err.then_some(FunctionError::Unhandled),
            executed_version: "$LATEST".into(),
            log: String::new(),
            cold_start: false,
            duration: Duration::ZERO,
            init_duration: None,
            provisioned: false,
        }
    }

    #[async_trait]
    impl EventTarget for Fake {
        async fn settings(&self, event: &QueuedEvent) -> Option<AsyncSettings> {
            self.settings.get(&event.function).cloned()
        }
        async fn invoke(&self, event: &QueuedEvent) -> Attempt {
            self.runs.lock().expect("lock").push((
                event.function.clone(),
                tokio::time::Instant::now(),
                event.payload.clone(),
            ));
            if event.function == "dest" {
                Attempt::Success(response(false))
            } else {
                (self.behaviour)()
            }
        }
        fn dropped(&self, event: &QueuedEvent, condition: Condition) {
            self.dropped
                .lock()
                .expect("lock")
                .push((event.function.clone(), condition));
        }
    }

    const DEST: &str = "arn:aws:lambda:us-east-1:000000000000:function:dest";

    fn fake(max_retries: u32, max_age_s: u64, behaviour: fn() -> Attempt) -> Arc<Fake> {
        let f = AsyncSettings {
            function_arn: "arn:aws:lambda:us-east-1:000000000000:function:f:$LATEST".into(),
            max_retries,
            max_age: Duration::from_secs(max_age_s),
            on_success: Some(DEST.into()),
            on_failure: Some(DEST.into()),
            dead_letter: None,
        };
        let dest = AsyncSettings {
            function_arn: format!("{DEST}:$LATEST"),
            max_retries: 0,
            max_age: Duration::from_secs(3600),
            on_success: None,
            on_failure: None,
            dead_letter: None,
        };
        Arc::new(Fake {
            settings: HashMap::from([("f".to_string(), f), ("dest".to_string(), dest)]),
            behaviour,
            runs: Mutex::new(Vec::new()),
            dropped: Mutex::new(Vec::new()),
        })
    }

    /// Runs the dispatcher until "dest" got something; returns every run.
    async fn run_until_delivered(
        fake: Arc<Fake>,
        config: DispatcherConfig,
    ) -> Vec<(String, tokio::time::Instant, String)> {
        let clock = Clock::new();
        let q = Arc::new(StoreQueue::new(Arc::new(MemStore::default())));
        let mut ev = event("ev-1");
        ev.enqueued_ms = clock.now_ms();
        q.enqueue(&ev, ev.enqueued_ms).await.expect("enqueue");
        let d = Dispatcher::new(q.clone(), fake.clone(), config, clock);
        let task = d.spawn();
        for _ in 0..100_000 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if fake
                .runs
                .lock()
                .expect("lock")
                .iter()
                .any(|r| r.0 == "dest")
            {
                break;
            }
        }
        task.abort();
        // Everything is done: nothing left queued.
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(q.peek(10).await.expect("peek").is_empty());
        fake.runs.lock().expect("lock").clone()
    }

    #[tokio::test(start_paused = true)]
    async fn function_errors_are_retried_after_one_then_two_delays() {
        let fake = fake(2, 21_600, || Attempt::FunctionError(response(true)));
        let start = tokio::time::Instant::now();
        let runs = run_until_delivered(fake, DispatcherConfig::default()).await;
        let f: Vec<_> = runs.iter().filter(|r| r.0 == "f").collect();
        assert_eq!(f.len(), 3, "1 attempt + 2 retries");
        let secs = |a: tokio::time::Instant, b: tokio::time::Instant| (b - a).as_secs_f64();
        assert!(secs(start, f[0].1) < 1.0);
        let first = secs(f[0].1, f[1].1);
        let second = secs(f[1].1, f[2].1);
        assert!((60.0..61.5).contains(&first), "{first}");
        assert!((120.0..121.5).contains(&second), "{second}");
        let dest = runs.iter().find(|r| r.0 == "dest").expect("delivered");
        let record: serde_json::Value = serde_json::from_str(&dest.2).expect("json");
        assert_eq!(record["requestContext"]["condition"], "RetriesExhausted");
        assert_eq!(record["requestContext"]["approximateInvokeCount"], 3);
        assert_eq!(record["requestContext"]["requestId"], "ev-1");
        assert_eq!(record["responseContext"]["functionError"], "Unhandled");
    }

    #[tokio::test(start_paused = true)]
    async fn no_retries_when_the_config_says_zero() {
        let fake = fake(0, 21_600, || Attempt::FunctionError(response(true)));
        let runs = run_until_delivered(fake, DispatcherConfig::default()).await;
        assert_eq!(runs.iter().filter(|r| r.0 == "f").count(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn success_goes_to_the_success_destination() {
        let fake = fake(2, 21_600, || Attempt::Success(response(false)));
        let runs = run_until_delivered(Arc::clone(&fake), DispatcherConfig::default()).await;
        assert!(fake.dropped.lock().expect("lock").is_empty());
        let dest = runs.iter().find(|r| r.0 == "dest").expect("delivered");
        let record: serde_json::Value = serde_json::from_str(&dest.2).expect("json");
        assert_eq!(record["requestContext"]["condition"], "Success");
        assert_eq!(record["requestContext"]["approximateInvokeCount"], 1);
        assert_eq!(record["requestPayload"], serde_json::json!({}));
        assert_eq!(record["responseContext"]["statusCode"], 200);
    }

    #[tokio::test(start_paused = true)]
    async fn throttles_back_off_until_the_event_is_too_old() {
        let fake = fake(2, 60, || {
            Attempt::Retry(LambdaError::throttled(
                "ReservedFunctionConcurrentInvocationLimitExceeded",
                "Rate Exceeded.",
            ))
        });
        let start = tokio::time::Instant::now();
        let runs = run_until_delivered(fake, DispatcherConfig::default()).await;
        let f: Vec<_> = runs.iter().filter(|r| r.0 == "f").collect();
        // 0, 1, 3, 7, 15, 31 s, then clamped to the deadline at 60 s.
        let at: Vec<u64> = f.iter().map(|r| (r.1 - start).as_secs()).collect();
        assert_eq!(at, [0, 1, 3, 7, 15, 31], "{at:?}");
        let dest = runs.iter().find(|r| r.0 == "dest").expect("delivered");
        assert!((dest.1 - start).as_secs_f64() >= 60.0);
        let record: serde_json::Value = serde_json::from_str(&dest.2).expect("json");
        assert_eq!(record["requestContext"]["condition"], "EventAgeExceeded");
        assert_eq!(record["requestContext"]["approximateInvokeCount"], 0);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_reserved_concurrency_fails_at_once() {
        let fake = fake(2, 21_600, || Attempt::ZeroReservedConcurrency);
        let runs = run_until_delivered(Arc::clone(&fake), DispatcherConfig::default()).await;
        assert_eq!(
            *fake.dropped.lock().expect("lock"),
            [("f".to_string(), Condition::ZeroReservedConcurrency)],
            "reported dropped once"
        );
        let dest = runs.iter().find(|r| r.0 == "dest").expect("delivered");
        let record: serde_json::Value = serde_json::from_str(&dest.2).expect("json");
        assert_eq!(
            record["requestContext"]["condition"],
            "ZeroReservedConcurrency"
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let max = Duration::from_secs(300);
        let got: Vec<u64> = (1..=11).map(|n| backoff(n, max).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
    }
}
