//! The counting service: admits or throttles every invoke by concurrency.
//!
//! Owns the in-flight invoke counts per account and per function, each
//! function's reserved concurrency and the per-function scaling token bucket.
//! It knows nothing about sandboxes: a permit is one running invoke, released
//! when the front end drops it; a scale-up token is one new execution
//! environment, taken by the assignment service before a cold start.
//!
//! The rules (Lambda's):
//! - a function with reserved concurrency N runs at most N invokes at once
//!   (N = 0 throttles every invoke), and never uses the unreserved pool;
//! - every other function of the account shares `limit - sum(reserved)`;
//! - a reservation may not leave fewer than [`MIN_UNRESERVED`] unreserved;
//! - a function starts at most `burst_capacity` new execution environments
//!   at once, refilled continuously at `burst_refill_per_s`.
//!
//! It must answer fast and never block: all state is behind one mutex, held
//! for a few map operations and never across an `.await`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use stratus_api::LambdaError;
use stratus_api::service::{AccountConcurrency, ConcurrencyPermit, Counting, FunctionInFlight};
use stratus_types::AccountId;
use tokio::time::Instant;

/// Lambda keeps at least this much of an account's concurrency unreserved.
pub const MIN_UNRESERVED: u32 = 100;

/// Tunables of the counting service.
#[derive(Debug, Clone, Copy)]
pub struct CountingConfig {
    /// Concurrent executions per account.
    pub account_limit: u32,
    /// New execution environments a function may start at once (bucket size).
    pub burst_capacity: u32,
    /// Scale-up tokens added per second, continuously.
    pub burst_refill_per_s: f64,
}

impl Default for CountingConfig {
    fn default() -> Self {
        // Lambda: 1,000 new execution environments per function every 10 s.
        CountingConfig {
            account_limit: stratus_types::limits::ACCOUNT_CONCURRENCY_DEFAULT,
            burst_capacity: 1_000,
            burst_refill_per_s: 100.0,
        }
    }
}

#[derive(Debug, Default)]
struct FunctionState {
    reserved: Option<u32>,
    in_flight: u32,
}

#[derive(Debug, Default)]
struct AccountState {
    /// In flight across functions without a reservation.
    unreserved_in_flight: u32,
    /// Sum of every reservation.
    reserved_total: u32,
    functions: HashMap<String, FunctionState>,
}

impl AccountState {
    fn is_idle(&self) -> bool {
        self.unreserved_in_flight == 0 && self.reserved_total == 0 && self.functions.is_empty()
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug, Default)]
struct State {
    accounts: HashMap<AccountId, AccountState>,
    buckets: HashMap<(AccountId, String), Bucket>,
}

/// Counting for one machine: in-memory counters.
#[derive(Debug)]
pub struct LocalCounting {
    cfg: CountingConfig,
    state: Arc<Mutex<State>>,
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    // Every critical section leaves the counters consistent before it can
    // panic (they are plain integer updates), so a poisoned lock is usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn rate_exceeded(reason: &'static str) -> LambdaError {
    LambdaError::throttled(reason, "Rate Exceeded.")
}

impl LocalCounting {
    /// `account_limit`: concurrent executions allowed per account; the
    /// scaling bucket has Lambda's defaults.
    pub fn new(account_limit: u32) -> Self {
        Self::with_config(CountingConfig {
            account_limit,
            ..CountingConfig::default()
        })
    }

    pub fn with_config(cfg: CountingConfig) -> Self {
        LocalCounting {
            cfg,
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    /// Invokes currently running for `account`.
    pub fn in_flight(&self, account: &AccountId) -> u32 {
        let s = lock(&self.state);
        s.accounts.get(account).map_or(0, |a| {
            a.functions.values().map(|f| f.in_flight).sum::<u32>()
        })
    }

    /// Invokes currently running for one function.
    pub fn function_in_flight(&self, account: &AccountId, function: &str) -> u32 {
        let s = lock(&self.state);
        s.accounts
            .get(account)
            .and_then(|a| a.functions.get(function))
            .map_or(0, |f| f.in_flight)
    }

    fn acquire_sync(&self, account: &AccountId, function: &str) -> Result<(), LambdaError> {
        let mut s = lock(&self.state);
        let a = s.accounts.entry(account.clone()).or_default();
        let unreserved_limit = self.cfg.account_limit.saturating_sub(a.reserved_total);
        let unreserved_in_flight = a.unreserved_in_flight;
        let f = a.functions.entry(function.to_owned()).or_default();
        match f.reserved {
            Some(n) if f.in_flight >= n => Err(rate_exceeded(
                "ReservedFunctionConcurrentInvocationLimitExceeded",
            )),
            Some(_) => {
                f.in_flight += 1;
                Ok(())
            }
            None if unreserved_in_flight >= unreserved_limit => {
                if f.in_flight == 0 {
                    a.functions.remove(function);
                }
                Err(rate_exceeded("ConcurrentInvocationLimitExceeded"))
            }
            None => {
                f.in_flight += 1;
                a.unreserved_in_flight += 1;
                Ok(())
            }
        }
    }

    fn release(state: &Mutex<State>, account: &AccountId, function: &str) {
        let mut s = lock(state);
        let Some(a) = s.accounts.get_mut(account) else {
            return;
        };
        let Some(f) = a.functions.get_mut(function) else {
            return;
        };
        f.in_flight = f.in_flight.saturating_sub(1);
        let (reserved, idle) = (f.reserved, f.in_flight == 0);
        if reserved.is_none() {
            a.unreserved_in_flight = a.unreserved_in_flight.saturating_sub(1);
        }
        if idle && reserved.is_none() {
            a.functions.remove(function);
        }
        if a.is_idle() {
            s.accounts.remove(account);
        }
    }

    fn set_reserved_sync(
        &self,
        account: &AccountId,
        function: &str,
        reserved: Option<u32>,
    ) -> Result<(), LambdaError> {
        let mut s = lock(&self.state);
        let a = s.accounts.entry(account.clone()).or_default();
        let f = a.functions.entry(function.to_owned()).or_default();
        let old = f.reserved;
        let new_total = (u64::from(a.reserved_total) - u64::from(old.unwrap_or(0)))
            + u64::from(reserved.unwrap_or(0));
        if reserved.is_some()
            && u64::from(self.cfg.account_limit) < new_total + u64::from(MIN_UNRESERVED)
        {
            if f.in_flight == 0 && f.reserved.is_none() {
                a.functions.remove(function);
            }
            if a.is_idle() {
                s.accounts.remove(account);
            }
            return Err(LambdaError::invalid(format!(
                "Specified ReservedConcurrentExecutions for function decreases account's UnreservedConcurrentExecution below its minimum value of [{MIN_UNRESERVED}]."
            )));
        }
        // Invokes in flight move with the function between the pools.
        match (old.is_some(), reserved.is_some()) {
            (false, true) => {
                a.unreserved_in_flight = a.unreserved_in_flight.saturating_sub(f.in_flight);
            }
            (true, false) => a.unreserved_in_flight += f.in_flight,
            _ => {}
        }
        f.reserved = reserved;
        a.reserved_total = u32::try_from(new_total).unwrap_or(u32::MAX);
        if f.in_flight == 0 && f.reserved.is_none() {
            a.functions.remove(function);
        }
        if a.is_idle() {
            s.accounts.remove(account);
        }
        Ok(())
    }

    fn try_scale_up_sync(&self, account: &AccountId, function: &str) -> Result<(), LambdaError> {
        let capacity = f64::from(self.cfg.burst_capacity);
        let rate = self.cfg.burst_refill_per_s;
        let now = Instant::now();
        let mut s = lock(&self.state);
        let b = s
            .buckets
            .entry((account.clone(), function.to_owned()))
            .or_insert(Bucket {
                tokens: capacity,
                at: now,
            });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(capacity);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Ok(());
        }
        let wait_s = if rate > 0.0 {
            ((1.0 - b.tokens) / rate).ceil().max(1.0)
        } else {
            1.0
        };
        // Lambda's ThrottleReason for a function scaling faster than its
        // scaling rate: `FunctionInvocationRateLimitExceeded` (a per-function
        // rate, as opposed to `ConcurrentInvocationLimitExceeded`, which is
        // the account's concurrency being used up).
        let mut e = rate_exceeded("FunctionInvocationRateLimitExceeded");
        // Float to integer: a small positive whole number of seconds.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let wait = wait_s as u64;
        e.retry_after_s = Some(wait);
        Err(e)
    }
}

struct Release {
    account: AccountId,
    function: String,
    state: Arc<Mutex<State>>,
}

impl Drop for Release {
    fn drop(&mut self) {
        LocalCounting::release(&self.state, &self.account, &self.function);
    }
}

#[async_trait::async_trait]
impl Counting for LocalCounting {
    async fn acquire(
        &self,
        account: &AccountId,
        function: &str,
    ) -> Result<ConcurrencyPermit, LambdaError> {
        self.acquire_sync(account, function)?;
        Ok(ConcurrencyPermit::new(Release {
            account: account.clone(),
            function: function.to_owned(),
            state: Arc::clone(&self.state),
        }))
    }

    async fn try_scale_up(&self, account: &AccountId, function: &str) -> Result<(), LambdaError> {
        self.try_scale_up_sync(account, function)
    }

    async fn set_reserved(
        &self,
        account: &AccountId,
        function: &str,
        reserved: Option<u32>,
    ) -> Result<(), LambdaError> {
        self.set_reserved_sync(account, function, reserved)
    }

    async fn account_concurrency(&self, account: &AccountId) -> AccountConcurrency {
        let s = lock(&self.state);
        let reserved = s.accounts.get(account).map_or(0, |a| a.reserved_total);
        AccountConcurrency {
            limit: self.cfg.account_limit,
            unreserved: self.cfg.account_limit.saturating_sub(reserved),
        }
    }

    async fn in_flight_snapshot(&self) -> Vec<FunctionInFlight> {
        let s = lock(&self.state);
        let mut out: Vec<FunctionInFlight> = s
            .accounts
            .iter()
            .flat_map(|(account, a)| {
                a.functions
                    .iter()
                    .filter(|(_, f)| f.in_flight > 0)
                    .map(move |(function, f)| FunctionInFlight {
                        account: account.clone(),
                        function: function.clone(),
                        in_flight: f.in_flight,
                    })
            })
            .collect();
        drop(s);
        out.sort_by(|x, y| (&x.account, &x.function).cmp(&(&y.account, &y.function)));
        out
    }
}

#[cfg(test)]
mod tests;
