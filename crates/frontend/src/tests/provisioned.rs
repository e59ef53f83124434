//! Provisioned concurrency configs through the router, with the real
//! counting service and the fake invoker recording the goals it is given.

use stratus_counting::LocalCounting;

use super::*;

const PC: &str = "/2019-09-30/functions";

async fn send(app: &Router, method: &str, uri: &str, body: &str) -> (StatusCode, Value, String) {
    let (s, h, b) = call(app, method, uri, &[], body.to_owned()).await;
    let kind = h
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (
        s,
        if b.is_empty() {
            Value::Null
        } else {
            json_of(&b)
        },
        kind,
    )
}

#[tokio::test]
async fn configs_are_checked_stored_handed_to_assignment_and_removed() {
    let h = harness_with(Arc::new(LocalCounting::new(1000))).await;
    create(&h.app, "pc").await;
    wait_active(&h.app, "pc").await;
    let (s, v, _) = send(&h.app, "POST", "/2015-03-31/functions/pc/versions", "{}").await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let body = r#"{"ProvisionedConcurrentExecutions": 3}"#;

    for (q, status, kind) in [
        (
            "",
            StatusCode::BAD_REQUEST,
            "InvalidParameterValueException",
        ),
        (
            "?Qualifier=$LATEST",
            StatusCode::BAD_REQUEST,
            "InvalidParameterValueException",
        ),
        (
            "?Qualifier=7",
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
        ),
        (
            "?Qualifier=nope",
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
        ),
    ] {
        let (s, v, k) = send(
            &h.app,
            "PUT",
            &format!("{PC}/pc/provisioned-concurrency{q}"),
            body,
        )
        .await;
        assert_eq!((s, k.as_str()), (status, kind), "{q}: {v}");
    }
    let uri = format!("{PC}/pc/provisioned-concurrency?Qualifier=1");
    let (s, v, k) = send(
        &h.app,
        "PUT",
        &uri,
        r#"{"ProvisionedConcurrentExecutions": 0}"#,
    )
    .await;
    assert_eq!(
        (s, k.as_str()),
        (StatusCode::BAD_REQUEST, "ValidationException"),
        "{v}"
    );
    let (s, v, k) = send(
        &h.app,
        "PUT",
        &uri,
        r#"{"ProvisionedConcurrentExecutions": 901}"#,
    )
    .await;
    assert_eq!(
        (s, k.as_str()),
        (StatusCode::BAD_REQUEST, "InvalidParameterValueException"),
        "{v}"
    );
    assert!(
        v["Message"].as_str().is_some_and(|m| m.contains("[100]")),
        "{v}"
    );
    let (s, _, k) = send(&h.app, "GET", &uri, "").await;
    assert_eq!(
        (s, k.as_str()),
        (
            StatusCode::NOT_FOUND,
            "ProvisionedConcurrencyConfigNotFoundException"
        )
    );

    let (s, v, _) = send(&h.app, "PUT", &uri, body).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["RequestedProvisionedConcurrentExecutions"], 3);
    assert!(v["LastModified"].is_string());
    let goals = h.invoker.provisioned.lock().expect("lock").clone();
    assert_eq!(goals.len(), 1);
    assert_eq!(
        (
            goals[0].0.qualifier.as_str(),
            goals[0].1.as_str(),
            goals[0].2
        ),
        ("1", "1", 3)
    );
    let (s, v, _) = send(&h.app, "GET", &uri, "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["Status"], "READY");
    let (_, v, _) = send(
        &h.app,
        "GET",
        &format!("{PC}/pc/provisioned-concurrency?List=ALL"),
        "",
    )
    .await;
    assert_eq!(
        v["ProvisionedConcurrencyConfigs"].as_array().map(Vec::len),
        Some(1),
        "{v}"
    );
    assert!(
        v["ProvisionedConcurrencyConfigs"][0]["FunctionArn"]
            .as_str()
            .is_some_and(|a| a.ends_with(":function:pc:1"))
    );

    // Reserved concurrency below the provisioned total is refused.
    let (s, v, _) = send(
        &h.app,
        "PUT",
        "/2017-10-31/functions/pc/concurrency",
        r#"{"ReservedConcurrentExecutions": 2}"#,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

    // Deleting the version removes its config and tells assignment.
    let (s, _, _) = send(&h.app, "DELETE", "/2015-03-31/functions/pc?Qualifier=1", "").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(h.invoker.provisioned.lock().expect("lock").is_empty());
    let (_, v, _) = send(
        &h.app,
        "GET",
        &format!("{PC}/pc/provisioned-concurrency?List=ALL"),
        "",
    )
    .await;
    assert_eq!(v["ProvisionedConcurrencyConfigs"], json!([]));
}
