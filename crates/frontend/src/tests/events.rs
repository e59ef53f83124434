//! Event invokes and the event invoke configuration API, at the router.

use super::*;

#[tokio::test]
async fn event_invoke_is_202_with_its_request_id_and_capped_at_1_mb() {
    let h = harness().await;
    create(&h.app, "ev").await;
    wait_active(&h.app, "ev").await;
    let uri = "/2015-03-31/functions/ev/invocations";
    let ty = [("x-amz-invocation-type", "Event")];
    let (s, hd, b) = call(&h.app, "POST", uri, &ty, r#"{"a":1}"#).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{}", String::from_utf8_lossy(&b));
    assert!(b.is_empty());
    let rid = hd["x-amzn-requestid"].to_str().expect("ascii");
    assert_eq!(rid.len(), 36, "{rid}");
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(1_048_576));
    let (s, hd, b) = call(&h.app, "POST", uri, &ty, big).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(hd["x-amzn-errortype"], "RequestEntityTooLargeException");
    assert!(
        json_of(&b)["Message"]
            .as_str()
            .expect("message")
            .contains("1048576 bytes")
    );
    let (s, _, _) = call(&h.app, "POST", uri, &ty, "{nope").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn event_invoke_config_validation() {
    let h = harness().await;
    create(&h.app, "cfg").await;
    let uri = "/2019-09-25/functions/cfg/event-invoke-config";
    let put = |body: Value| {
        let app = h.app.clone();
        async move { call(&app, "PUT", uri, &[], body.to_string()).await }
    };
    let (s, hd, _) = put(json!({})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(hd["x-amzn-errortype"], "InvalidParameterValueException");
    let (s, hd, _) = put(json!({"MaximumRetryAttempts": -1})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(hd["x-amzn-errortype"], "ValidationException");
    let (s, hd, b) = put(json!({"DestinationConfig": {"OnFailure": {"Destination": "arn:aws:sqs:us-east-1:000000000000:q"}}})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(hd["x-amzn-errortype"], "InvalidParameterValueException");
    assert!(String::from_utf8_lossy(&b).contains("SQS"));
    let (s, _, b) = put(json!({"MaximumEventAgeInSeconds": 60, "Bogus": 1})).await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "{}",
        String::from_utf8_lossy(&b)
    );
    let (s, _, b) = put(json!({"MaximumEventAgeInSeconds": 60})).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    assert_eq!(json_of(&b)["MaximumEventAgeInSeconds"], 60);
    let (s, _, b) = call(&h.app, "GET", uri, &[], Body::empty()).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        json_of(&b)["FunctionArn"]
            .as_str()
            .expect("arn")
            .ends_with(":function:cfg:$LATEST")
    );
    let (s, _, _) = call(&h.app, "DELETE", uri, &[], Body::empty()).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, _) = call(&h.app, "GET", uri, &[], Body::empty()).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}
