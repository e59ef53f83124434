//! Reserved concurrency and GetAccountSettings through the router, with the
//! real counting service.

use stratus_counting::LocalCounting;

use super::*;

const PUT: &str = "/2017-10-31/functions";
const GET: &str = "/2019-09-30/functions";

async fn with_limit(limit: u32) -> (Harness, Arc<LocalCounting>) {
    let counting = Arc::new(LocalCounting::new(limit));
    let h = harness_with(Arc::clone(&counting) as Arc<dyn Counting>).await;
    (h, counting)
}

async fn put(app: &Router, name: &str, body: &str) -> (StatusCode, Value) {
    let (s, _, b) = call(
        app,
        "PUT",
        &format!("{PUT}/{name}/concurrency"),
        &[],
        body.to_owned(),
    )
    .await;
    (s, json_of(&b))
}

async fn get(app: &Router, uri: &str) -> (StatusCode, Value) {
    let (s, _, b) = call(app, "GET", uri, &[], Body::empty()).await;
    (s, json_of(&b))
}

#[tokio::test]
async fn put_get_delete_round_trip_and_get_function_shows_it() {
    let (h, _) = with_limit(1000).await;
    create(&h.app, "rc").await;
    wait_active(&h.app, "rc").await;
    let (s, v) = get(&h.app, &format!("{GET}/rc/concurrency")).await;
    assert_eq!((s, v), (StatusCode::OK, json!({})));
    let (_, f) = get(&h.app, "/2015-03-31/functions/rc").await;
    assert!(f.get("Concurrency").is_none(), "{f}");

    let (s, v) = put(&h.app, "rc", r#"{"ReservedConcurrentExecutions": 7}"#).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v, json!({"ReservedConcurrentExecutions": 7}));
    let (_, v) = get(&h.app, &format!("{GET}/rc/concurrency")).await;
    assert_eq!(v, json!({"ReservedConcurrentExecutions": 7}));
    let (_, f) = get(&h.app, "/2015-03-31/functions/rc").await;
    assert_eq!(f["Concurrency"], json!({"ReservedConcurrentExecutions": 7}));

    let (s, _, b) = call(
        &h.app,
        "DELETE",
        &format!("{PUT}/rc/concurrency"),
        &[],
        Body::empty(),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(b.is_empty());
    let (_, v) = get(&h.app, &format!("{GET}/rc/concurrency")).await;
    assert_eq!(v, json!({}));
}

#[tokio::test]
async fn put_validates_its_input() {
    let (h, _) = with_limit(1000).await;
    create(&h.app, "v").await;
    wait_active(&h.app, "v").await;
    let (s, v) = put(&h.app, "v", r#"{"ReservedConcurrentExecutions": -1}"#).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("Member must have value greater than or equal to 0")),
        "{v}"
    );
    let (s, v) = put(&h.app, "v", "{}").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = put(&h.app, "v", r#"{"ReservedConcurrentExecutions": 901}"#).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        v["Message"],
        "Specified ReservedConcurrentExecutions for function decreases account's UnreservedConcurrentExecution below its minimum value of [100]."
    );
    let (s, v) = put(&h.app, "v:1", r#"{"ReservedConcurrentExecutions": 1}"#).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["Message"]
            .as_str()
            .is_some_and(|m| m.starts_with("This operation is permitted on Lambda functions only")),
        "{v}"
    );
    let (s, _) = put(&h.app, "nope", r#"{"ReservedConcurrentExecutions": 1}"#).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = get(&h.app, &format!("{GET}/nope/concurrency")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = call(
        &h.app,
        "DELETE",
        &format!("{PUT}/nope/concurrency"),
        &[],
        Body::empty(),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn reserved_zero_throttles_invokes_with_the_reason() {
    let (h, _) = with_limit(1000).await;
    create(&h.app, "z").await;
    wait_active(&h.app, "z").await;
    let (s, _) = put(&h.app, "z", r#"{"ReservedConcurrentExecutions": 0}"#).await;
    assert_eq!(s, StatusCode::OK);
    let (s, hd, b) = call(
        &h.app,
        "POST",
        "/2015-03-31/functions/z/invocations",
        &[],
        "{}",
    )
    .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(hd["x-amzn-errortype"], "TooManyRequestsException");
    assert!(hd.contains_key("retry-after"));
    let v = json_of(&b);
    assert_eq!(
        v["Reason"],
        "ReservedFunctionConcurrentInvocationLimitExceeded"
    );
    assert_eq!(v["message"], "Rate Exceeded.");
}

#[tokio::test]
async fn account_settings_report_limits_and_usage_and_delete_frees_the_reservation() {
    let (h, counting) = with_limit(1000).await;
    let (s, v) = get(&h.app, "/2016-08-19/account-settings/").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["AccountLimit"]["ConcurrentExecutions"], 1000);
    assert_eq!(v["AccountLimit"]["UnreservedConcurrentExecutions"], 1000);
    assert_eq!(v["AccountLimit"]["TotalCodeSize"], 80_530_636_800_u64);
    assert_eq!(v["AccountLimit"]["CodeSizeUnzipped"], 262_144_000);
    assert_eq!(v["AccountLimit"]["CodeSizeZipped"], 52_428_800);
    assert_eq!(v["AccountUsage"]["FunctionCount"], 0);
    assert_eq!(v["AccountUsage"]["TotalCodeSize"], 0);

    let a = create(&h.app, "s1").await;
    let b = create(&h.app, "s2").await;
    wait_active(&h.app, "s1").await;
    wait_active(&h.app, "s2").await;
    put(&h.app, "s1", r#"{"ReservedConcurrentExecutions": 250}"#).await;
    let (_, v) = get(&h.app, "/2016-08-19/account-settings").await;
    assert_eq!(v["AccountLimit"]["UnreservedConcurrentExecutions"], 750);
    assert_eq!(v["AccountUsage"]["FunctionCount"], 2);
    let size = a["CodeSize"].as_u64().unwrap_or(0) + b["CodeSize"].as_u64().unwrap_or(0);
    assert!(size > 0);
    assert_eq!(v["AccountUsage"]["TotalCodeSize"], size);

    let (s, _, _) = call(
        &h.app,
        "DELETE",
        "/2015-03-31/functions/s1",
        &[],
        Body::empty(),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let acct = AccountId::default_local();
    assert_eq!(counting.account_concurrency(&acct).await.unreserved, 1000);
}
