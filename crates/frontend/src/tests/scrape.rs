//! `GET /metrics` through the router: invokes move the counters, throttles
//! carry their reason, gauges are read from the owners at scrape time.

use stratus_counting::LocalCounting;

use super::*;

const F: &str = r#"account="000000000000",function="#;

/// Scrapes with no credentials at all; checks status and content type.
async fn scrape(app: &Router) -> String {
    let (s, hd, b) = call(app, "GET", "/metrics", &[], Body::empty()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        hd["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    String::from_utf8(b.to_vec()).expect("utf-8")
}

/// The value of the sample written exactly as `series` (name and labels).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (name, v) = l.rsplit_once(' ')?;
        (name == series).then(|| v.parse().ok()).flatten()
    })
}

async fn invoke(app: &Router, name: &str, payload: &str) -> StatusCode {
    let uri = format!("/2015-03-31/functions/{name}/invocations");
    call(app, "POST", &uri, &[], payload.to_owned()).await.0
}

#[tokio::test]
async fn invokes_move_the_counters_and_histograms() {
    let h = harness().await;
    create(&h.app, "m").await;
    wait_active(&h.app, "m").await;
    let before = scrape(&h.app).await;
    assert_eq!(
        value(
            &before,
            &format!(r#"stratus_invocations_total{{{F}"m",outcome="success"}}"#)
        ),
        None,
        "no series before the first invoke:\n{before}"
    );
    assert_eq!(invoke(&h.app, "m", "{}").await, StatusCode::OK);
    assert_eq!(invoke(&h.app, "m", "{}").await, StatusCode::OK);
    assert_eq!(
        invoke(&h.app, "m", r#"{"fail":true}"#).await,
        StatusCode::OK
    );
    // Neither a DryRun nor a request refused before admission is an invocation.
    let (s, _, _) = call(
        &h.app,
        "POST",
        "/2015-03-31/functions/m/invocations",
        &[("x-amz-invocation-type", "DryRun")],
        "{}",
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(
        invoke(&h.app, "m", "{not json").await,
        StatusCode::BAD_REQUEST
    );

    let text = scrape(&h.app).await;
    let v = |series: &str| value(&text, series);
    assert_eq!(
        v(&format!(
            r#"stratus_invocations_total{{{F}"m",outcome="success"}}"#
        )),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        v(&format!(
            r#"stratus_invocations_total{{{F}"m",outcome="function_error"}}"#
        )),
        Some(1.0)
    );
    assert_eq!(
        v(&format!(
            r#"stratus_invocation_errors_total{{{F}"m",error_type="Unhandled"}}"#
        )),
        Some(1.0)
    );
    assert_eq!(
        v(&format!(
            r#"stratus_invocation_duration_seconds_count{{{F}"m"}}"#
        )),
        Some(3.0)
    );
    assert_eq!(
        v(&format!(r#"stratus_cold_starts_total{{{F}"m"}}"#)),
        Some(3.0)
    );
    assert_eq!(
        v(&format!(r#"stratus_init_duration_seconds_count{{{F}"m"}}"#)),
        Some(3.0)
    );
    assert!(
        v(&format!(r#"stratus_init_duration_seconds_sum{{{F}"m"}}"#))
            .is_some_and(|s| (s - 0.12).abs() < 1e-9),
        "{text}"
    );
    // Sandboxes come from the invoker at scrape time.
    assert_eq!(v(r#"stratus_sandboxes{state="starting"}"#), Some(1.0));
    assert_eq!(v(r#"stratus_sandboxes{state="idle"}"#), Some(2.0));
    assert_eq!(v(r#"stratus_sandboxes{state="busy"}"#), Some(3.0));
    assert!(!text.contains("stratus_throttles_total{"), "{text}");
}

#[tokio::test]
async fn a_throttle_counts_its_reason_and_never_reaches_the_invoker() {
    let counting = Arc::new(LocalCounting::new(1000));
    let h = harness_with(Arc::clone(&counting) as Arc<dyn Counting>).await;
    create(&h.app, "t").await;
    wait_active(&h.app, "t").await;
    let (s, _, _) = call(
        &h.app,
        "PUT",
        "/2017-10-31/functions/t/concurrency",
        &[],
        r#"{"ReservedConcurrentExecutions": 0}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    for _ in 0..2 {
        assert_eq!(
            invoke(&h.app, "t", "{}").await,
            StatusCode::TOO_MANY_REQUESTS
        );
    }
    assert!(h.invoker.seen.lock().expect("lock").is_empty());
    let text = scrape(&h.app).await;
    assert_eq!(
        value(
            &text,
            &format!(
                r#"stratus_throttles_total{{{F}"t",reason="ReservedFunctionConcurrentInvocationLimitExceeded"}}"#
            )
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            &format!(r#"stratus_invocations_total{{{F}"t",outcome="throttled"}}"#)
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &text,
            &format!(r#"stratus_invocation_duration_seconds_count{{{F}"t"}}"#)
        ),
        None,
        "a throttled invoke never ran"
    );
}

#[tokio::test]
async fn concurrency_gauges_are_read_from_counting_at_scrape_time() {
    let counting = Arc::new(LocalCounting::new(1000));
    let h = harness_with(Arc::clone(&counting) as Arc<dyn Counting>).await;
    create(&h.app, "c").await;
    wait_active(&h.app, "c").await;
    let app = h.app.clone();
    let held = tokio::spawn(async move { invoke(&app, "c", r#"{"hold":true}"#).await });
    while counting.function_in_flight(&AccountId::default_local(), "c") == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let during = scrape(&h.app).await;
    assert_eq!(
        value(
            &during,
            &format!(r#"stratus_concurrent_executions{{{F}"c"}}"#)
        ),
        Some(1.0),
        "{during}"
    );
    assert_eq!(
        value(
            &during,
            r#"stratus_account_concurrent_executions{account="000000000000"}"#
        ),
        Some(1.0)
    );
    h.invoker.release.notify_one();
    assert_eq!(held.await.expect("task"), StatusCode::OK);
    let after = scrape(&h.app).await;
    assert!(
        !after.contains("stratus_concurrent_executions{"),
        "nothing runs any more:\n{after}"
    );
}
