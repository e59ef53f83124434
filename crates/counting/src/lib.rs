//! The counting service: admits or throttles every invoke by concurrency.
//!
//! Owns the in-flight invoke counts per account (and, in a later issue, per
//! function for reserved concurrency and the burst token bucket). It knows
//! nothing about sandboxes: a permit is one running invoke, released when the
//! front end drops it. It must answer fast and never block: one short mutex
//! section per acquire and per release.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use stratus_api::LambdaError;
use stratus_api::service::{ConcurrencyPermit, Counting};
use stratus_types::AccountId;

/// Counting for one machine: in-memory counters.
#[derive(Debug)]
pub struct LocalCounting {
    account_limit: u32,
    in_flight: Arc<Mutex<HashMap<AccountId, u32>>>,
}

impl LocalCounting {
    /// `account_limit`: concurrent executions allowed per account.
    pub fn new(account_limit: u32) -> Self {
        LocalCounting {
            account_limit,
            in_flight: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Invokes currently running for `account`.
    pub fn in_flight(&self, account: &AccountId) -> u32 {
        lock(&self.in_flight).get(account).copied().unwrap_or(0)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock cannot leave the counters inconsistent
    // (each critical section is a single increment or decrement).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Release {
    account: AccountId,
    in_flight: Arc<Mutex<HashMap<AccountId, u32>>>,
}

impl Drop for Release {
    fn drop(&mut self) {
        let mut map = lock(&self.in_flight);
        if let Some(n) = map.get_mut(&self.account) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.account);
            }
        }
    }
}

#[async_trait::async_trait]
impl Counting for LocalCounting {
    async fn acquire(
        &self,
        account: &AccountId,
        _function: &str,
    ) -> Result<ConcurrencyPermit, LambdaError> {
        let mut map = lock(&self.in_flight);
        let n = map.entry(account.clone()).or_insert(0);
        if *n >= self.account_limit {
            return Err(LambdaError::throttled(
                "ConcurrentInvocationLimitExceeded",
                "Rate Exceeded.",
            ));
        }
        *n += 1;
        drop(map);
        Ok(ConcurrencyPermit::new(Release {
            account: account.clone(),
            in_flight: Arc::clone(&self.in_flight),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratus_api::ErrorCode;

    #[tokio::test]
    async fn throttles_at_the_account_limit_and_releases_on_drop() {
        let c = LocalCounting::new(2);
        let a = AccountId::default_local();
        let p1 = c.acquire(&a, "f").await.expect("first");
        let _p2 = c.acquire(&a, "g").await.expect("second");
        let err = c.acquire(&a, "f").await.expect_err("third is throttled");
        assert_eq!(err.code, ErrorCode::TooManyRequests);
        assert_eq!(err.reason, Some("ConcurrentInvocationLimitExceeded"));
        drop(p1);
        assert_eq!(c.in_flight(&a), 1);
        c.acquire(&a, "f").await.expect("a slot was released");
    }

    #[tokio::test]
    async fn accounts_are_counted_separately() {
        let c = LocalCounting::new(1);
        let a = AccountId::parse("111111111111").expect("valid");
        let b = AccountId::parse("222222222222").expect("valid");
        let _pa = c.acquire(&a, "f").await.expect("a");
        let _pb = c.acquire(&b, "f").await.expect("b is not affected by a");
    }
}
