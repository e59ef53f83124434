use std::time::Duration;

use proptest::prelude::*;
use stratus_api::ErrorCode;

use super::*;

fn acct() -> AccountId {
    AccountId::default_local()
}

#[tokio::test]
async fn throttles_at_the_account_limit_and_releases_on_drop() {
    let c = LocalCounting::new(2);
    let a = acct();
    let p1 = c.acquire(&a, "f").await.expect("first");
    let _p2 = c.acquire(&a, "g").await.expect("second");
    let err = c.acquire(&a, "f").await.expect_err("third is throttled");
    assert_eq!(err.code, ErrorCode::TooManyRequests);
    assert_eq!(err.reason, Some("ConcurrentInvocationLimitExceeded"));
    assert_eq!(err.message, "Rate Exceeded.");
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

#[tokio::test]
async fn reserved_n_runs_at_most_n() {
    let c = LocalCounting::new(1000);
    let a = acct();
    c.set_reserved(&a, "f", Some(2)).await.expect("reserve");
    let p1 = c.acquire(&a, "f").await.expect("1");
    let _p2 = c.acquire(&a, "f").await.expect("2");
    let err = c.acquire(&a, "f").await.expect_err("3rd throttled");
    assert_eq!(err.code, ErrorCode::TooManyRequests);
    assert_eq!(
        err.reason,
        Some("ReservedFunctionConcurrentInvocationLimitExceeded")
    );
    assert_eq!(err.message, "Rate Exceeded.");
    assert_eq!(err.retry_after_s, Some(1));
    drop(p1);
    c.acquire(&a, "f").await.expect("released slot");
}

#[tokio::test]
async fn reserved_zero_throttles_every_invoke() {
    let c = LocalCounting::new(1000);
    let a = acct();
    c.set_reserved(&a, "f", Some(0)).await.expect("reserve 0");
    for _ in 0..3 {
        let err = c.acquire(&a, "f").await.expect_err("throttled");
        assert_eq!(
            err.reason,
            Some("ReservedFunctionConcurrentInvocationLimitExceeded")
        );
    }
    c.acquire(&a, "g").await.expect("other functions run");
}

#[tokio::test]
async fn reservations_are_carved_out_of_the_unreserved_pool() {
    let c = LocalCounting::new(103);
    let a = acct();
    c.set_reserved(&a, "r", Some(3)).await.expect("reserve 3");
    assert_eq!(
        c.account_concurrency(&a).await,
        AccountConcurrency {
            limit: 103,
            unreserved: 100
        }
    );
    let mut held = Vec::new();
    for i in 0..100 {
        held.push(c.acquire(&a, &format!("u{i}")).await.expect("unreserved"));
    }
    let err = c.acquire(&a, "u").await.expect_err("unreserved pool full");
    assert_eq!(err.reason, Some("ConcurrentInvocationLimitExceeded"));
    // The reserved function still has its own 3, untouched by the others.
    for _ in 0..3 {
        held.push(c.acquire(&a, "r").await.expect("reserved"));
    }
    assert_eq!(c.in_flight(&a), 103);
}

#[tokio::test]
async fn reserved_functions_never_use_the_unreserved_pool() {
    let c = LocalCounting::new(200);
    let a = acct();
    c.set_reserved(&a, "r", Some(1)).await.expect("reserve");
    let _p = c.acquire(&a, "r").await.expect("r");
    // r is at its reservation: throttled even though 199 unreserved are free.
    assert!(c.acquire(&a, "r").await.is_err());
    let mut held = Vec::new();
    for _ in 0..199 {
        held.push(c.acquire(&a, "u").await.expect("all 199 unreserved"));
    }
}

#[tokio::test]
async fn at_least_100_must_stay_unreserved() {
    let c = LocalCounting::new(150);
    let a = acct();
    let err = c
        .set_reserved(&a, "f", Some(60))
        .await
        .expect_err("150 - 60 < 100");
    assert_eq!(err.code, ErrorCode::InvalidParameterValue);
    assert_eq!(
        err.message,
        "Specified ReservedConcurrentExecutions for function decreases account's UnreservedConcurrentExecution below its minimum value of [100]."
    );
    c.set_reserved(&a, "f", Some(50))
        .await
        .expect("exactly 100 left");
    c.set_reserved(&a, "g", Some(1))
        .await
        .expect_err("the sum counts");
    // Changing f's own reservation replaces it, it does not add to it.
    c.set_reserved(&a, "f", Some(49)).await.expect("lower");
    c.set_reserved(&a, "g", Some(1)).await.expect("now fits");
    assert_eq!(c.account_concurrency(&a).await.unreserved, 100);
    c.set_reserved(&a, "f", None).await.expect("clear");
    assert_eq!(c.account_concurrency(&a).await.unreserved, 149);
}

#[tokio::test]
async fn clearing_a_reservation_moves_in_flight_invokes_to_the_shared_pool() {
    let c = LocalCounting::new(101);
    let a = acct();
    c.set_reserved(&a, "f", Some(1)).await.expect("reserve");
    let p = c.acquire(&a, "f").await.expect("f");
    c.set_reserved(&a, "f", None).await.expect("clear");
    let mut held = Vec::new();
    for _ in 0..100 {
        held.push(c.acquire(&a, "g").await.expect("g"));
    }
    assert!(c.acquire(&a, "g").await.is_err(), "f's invoke still counts");
    drop(p);
    c.acquire(&a, "g").await.expect("f's release freed a slot");
    assert_eq!(c.function_in_flight(&a, "f"), 0);
}

#[tokio::test(start_paused = true)]
async fn the_burst_bucket_limits_new_sandboxes_and_refills_continuously() {
    let c = LocalCounting::with_config(CountingConfig {
        account_limit: 1000,
        burst_capacity: 3,
        burst_refill_per_s: 2.0,
    });
    let a = acct();
    for _ in 0..3 {
        c.try_scale_up(&a, "f").await.expect("within the burst");
    }
    let err = c.try_scale_up(&a, "f").await.expect_err("bucket empty");
    assert_eq!(err.code, ErrorCode::TooManyRequests);
    assert_eq!(err.reason, Some("FunctionInvocationRateLimitExceeded"));
    assert_eq!(err.retry_after_s, Some(1));
    c.try_scale_up(&a, "g")
        .await
        .expect("buckets are per function");
    // 2 tokens/s: after 0.5 s exactly one more.
    tokio::time::advance(Duration::from_millis(500)).await;
    c.try_scale_up(&a, "f").await.expect("refilled one");
    assert!(c.try_scale_up(&a, "f").await.is_err());
    // Refill is capped at the capacity.
    tokio::time::advance(Duration::from_secs(60)).await;
    for _ in 0..3 {
        c.try_scale_up(&a, "f").await.expect("full again");
    }
    assert!(c.try_scale_up(&a, "f").await.is_err());
}

#[tokio::test(start_paused = true)]
async fn the_default_bucket_is_lambdas_1000_per_10_seconds() {
    let c = LocalCounting::new(1000);
    let a = acct();
    for _ in 0..1000 {
        c.try_scale_up(&a, "f").await.expect("1000 at once");
    }
    assert!(c.try_scale_up(&a, "f").await.is_err());
    tokio::time::advance(Duration::from_secs(1)).await;
    for _ in 0..100 {
        c.try_scale_up(&a, "f").await.expect("100 per second");
    }
    assert!(c.try_scale_up(&a, "f").await.is_err());
}

#[tokio::test]
async fn acquire_does_not_consume_scale_up_tokens() {
    let c = LocalCounting::with_config(CountingConfig {
        account_limit: 1000,
        burst_capacity: 1,
        burst_refill_per_s: 0.0,
    });
    let a = acct();
    for _ in 0..10 {
        drop(c.acquire(&a, "f").await.expect("warm invokes"));
    }
    c.try_scale_up(&a, "f").await.expect("token still there");
}

#[tokio::test]
async fn the_snapshot_lists_running_invokes_per_function_and_account() {
    let c = LocalCounting::new(1000);
    let a = acct();
    let b = AccountId::parse("222222222222").expect("valid");
    c.set_reserved(&a, "idle-reserved", Some(5))
        .await
        .expect("reserve");
    let p1 = c.acquire(&a, "f").await.expect("f");
    let _p2 = c.acquire(&a, "f").await.expect("f again");
    let _p3 = c.acquire(&b, "f").await.expect("f of b");
    let row = |account: &AccountId, function: &str, in_flight| FunctionInFlight {
        account: account.clone(),
        function: function.into(),
        in_flight,
    };
    assert_eq!(
        c.in_flight_snapshot().await,
        [row(&a, "f", 2), row(&b, "f", 1)],
        "functions with nothing running (even reserved ones) are left out"
    );
    drop(p1);
    assert_eq!(c.in_flight_snapshot().await[0], row(&a, "f", 1));
}

#[derive(Debug, Clone)]
enum Op {
    Acquire(usize),
    Release(usize),
    Reserve(usize, Option<u32>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..4usize).prop_map(Op::Acquire),
        4 => any::<usize>().prop_map(Op::Release),
        1 => (0..4usize, proptest::option::of(0..8u32)).prop_map(|(f, n)| Op::Reserve(f, n)),
    ]
}

proptest! {
    /// Under any sequence of acquires, releases and reservation changes, an
    /// acquire only succeeds while its pool has room, and every count goes
    /// back to zero when all permits are dropped.
    #[test]
    fn in_flight_never_exceeds_the_limits(limit in 100u32..112, ops in prop::collection::vec(op(), 1..200)) {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("rt");
        rt.block_on(async {
            let c = LocalCounting::new(limit);
            let a = acct();
            let names = ["f0", "f1", "f2", "f3"];
            let mut reserved: [Option<u32>; 4] = [None; 4];
            let mut held: Vec<(usize, ConcurrencyPermit)> = Vec::new();
            for op in ops {
                match op {
                    Op::Acquire(f) => {
                        let ok = c.acquire(&a, names[f]).await.is_ok_and(|p| {
                            held.push((f, p));
                            true
                        });
                        let in_f: u32 = held.iter().filter(|(g, _)| *g == f).count().try_into().unwrap_or(u32::MAX);
                        let total_reserved: u32 = reserved.iter().flatten().sum();
                        let unreserved_in_flight: u32 = held.iter().filter(|(g, _)| reserved[*g].is_none()).count().try_into().unwrap_or(u32::MAX);
                        if ok {
                            match reserved[f] {
                                Some(n) => prop_assert!(in_f <= n),
                                None => prop_assert!(unreserved_in_flight <= limit - total_reserved),
                            }
                        }
                    }
                    Op::Release(i) => {
                        if !held.is_empty() {
                            held.remove(i % held.len());
                        }
                    }
                    Op::Reserve(f, n) => {
                        if c.set_reserved(&a, names[f], n).await.is_ok() {
                            reserved[f] = n;
                        }
                        let total_reserved: u32 = reserved.iter().flatten().sum();
                        prop_assert!(limit - total_reserved >= MIN_UNRESERVED);
                        prop_assert_eq!(c.account_concurrency(&a).await.unreserved, limit - total_reserved);
                    }
                }
                let held_n: u32 = held.len().try_into().unwrap_or(u32::MAX);
                prop_assert_eq!(c.in_flight(&a), held_n);
                let expected: Vec<(String, u32)> = names
                    .iter()
                    .enumerate()
                    .map(|(f, n)| (n.to_string(), held.iter().filter(|(g, _)| *g == f).count().try_into().unwrap_or(u32::MAX)))
                    .filter(|(_, k)| *k > 0)
                    .collect();
                let snapshot: Vec<(String, u32)> = c.in_flight_snapshot().await.into_iter().map(|x| (x.function, x.in_flight)).collect();
                prop_assert_eq!(snapshot, expected);
            }
            held.clear();
            prop_assert_eq!(c.in_flight(&a), 0);
            prop_assert!(c.in_flight_snapshot().await.is_empty());
            Ok(())
        })?;
    }
}
