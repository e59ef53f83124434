//! Tags and function URLs through the router. The fake invoker answers
//! with its payload, so a URL call returns the event the function got.

use super::*;

const ARN: &str = "arn:aws:lambda:us-east-1:000000000000:function";

fn enc(s: &str) -> String {
    s.replace(':', "%3A")
}

#[tokio::test]
async fn tags_merge_list_untag_and_show_in_get_function() {
    let h = harness().await;
    let body = json!({"FunctionName": "tg", "Runtime": "python3.12", "Role": "arn:aws:iam::123456789012:role/r",
        "Handler": "app.handler", "Code": {"ZipFile": zip_b64()}, "Tags": {"team": "a"}});
    let (s, _, b) = call(
        &h.app,
        "POST",
        "/2015-03-31/functions",
        &[],
        body.to_string(),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{}", String::from_utf8_lossy(&b));
    let rev = wait_active(&h.app, "tg").await["RevisionId"].clone();
    let uri = format!("/2017-03-31/tags/{}", enc(&format!("{ARN}:tg")));
    let (s, _, _) = call(
        &h.app,
        "POST",
        &uri,
        &[],
        json!({"Tags": {"env": "prod", "team": "b"}}).to_string(),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, b) = call(&h.app, "GET", &uri, &[], Body::empty()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(json_of(&b), json!({"Tags": {"env": "prod", "team": "b"}}));
    let (s, _, _) = call(
        &h.app,
        "DELETE",
        &format!("{uri}?tagKeys=team&tagKeys=nope"),
        &[],
        Body::empty(),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, _, b) = call(
        &h.app,
        "GET",
        "/2015-03-31/functions/tg",
        &[],
        Body::empty(),
    )
    .await;
    let doc = json_of(&b);
    assert_eq!(doc["Tags"], json!({"env": "prod"}));
    assert_eq!(
        doc["Configuration"]["RevisionId"], rev,
        "tags do not change the revision"
    );

    // Qualified ARNs, reserved keys, unknown functions.
    let qualified = format!("/2017-03-31/tags/{}", enc(&format!("{ARN}:tg:1")));
    let (s, hd, _) = call(&h.app, "GET", &qualified, &[], Body::empty()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(hd["x-amzn-errortype"], "InvalidParameterValueException");
    let (s, hd, _) = call(
        &h.app,
        "POST",
        &uri,
        &[],
        json!({"Tags": {"aws:x": "1"}}).to_string(),
    )
    .await;
    assert_eq!(
        (s, &hd["x-amzn-errortype"]),
        (
            StatusCode::BAD_REQUEST,
            &HeaderValue::from_static("InvalidParameterValueException")
        )
    );
    let missing = format!("/2017-03-31/tags/{}", enc(&format!("{ARN}:nope")));
    let (s, _, _) = call(&h.app, "GET", &missing, &[], Body::empty()).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, hd, _) = call(
        &h.app,
        "GET",
        "/2017-03-31/tags/not-an-arn",
        &[],
        Body::empty(),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(hd["x-amzn-errortype"], "ValidationException");
    // Over 50 in total after the merge.
    let many: serde_json::Map<String, Value> =
        (0..50).map(|i| (format!("k{i}"), json!("v"))).collect();
    let (s, _, _) = call(&h.app, "POST", &uri, &[], json!({"Tags": many}).to_string()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

async fn url_config(app: &Router, name: &str, body: Value) -> Value {
    let (s, _, b) = call(
        app,
        "POST",
        &format!("/2021-10-31/functions/{name}/url"),
        &[],
        body.to_string(),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{}", String::from_utf8_lossy(&b));
    json_of(&b)
}

fn url_path(doc: &Value) -> String {
    let url = doc["FunctionUrl"].as_str().expect("url");
    let at = url.find("/_stratus/url/").expect("path-based URL");
    url[at..].to_owned()
}

#[tokio::test]
async fn url_config_crud_and_errors() {
    let h = harness().await;
    create(&h.app, "u1").await;
    wait_active(&h.app, "u1").await;
    let base = "/2021-10-31/functions/u1/url";
    let (s, _, b) = call(&h.app, "GET", base, &[], Body::empty()).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        json_of(&b)["Message"],
        "The resource you requested does not exist."
    );
    let (s, hd, _) = call(
        &h.app,
        "POST",
        base,
        &[],
        json!({"AuthType": "MAYBE"}).to_string(),
    )
    .await;
    assert_eq!(
        (s, &hd["x-amzn-errortype"]),
        (
            StatusCode::BAD_REQUEST,
            &HeaderValue::from_static("ValidationException")
        )
    );
    let (s, hd, _) = call(
        &h.app,
        "POST",
        &format!("{base}?Qualifier=1"),
        &[],
        json!({"AuthType": "NONE"}).to_string(),
    )
    .await;
    assert_eq!(
        (s, &hd["x-amzn-errortype"]),
        (
            StatusCode::BAD_REQUEST,
            &HeaderValue::from_static("ValidationException")
        )
    );
    let (s, _, b) = call(
        &h.app,
        "POST",
        base,
        &[],
        json!({"AuthType": "NONE", "InvokeMode": "STREAMING"}).to_string(),
    )
    .await;
    // RESPONSE_STREAM is served (tests/e2e/test_stream.py); others are not modes.
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&b).contains("BUFFERED, RESPONSE_STREAM"));

    let doc = url_config(
        &h.app,
        "u1",
        json!({"AuthType": "NONE", "Cors": {"AllowOrigins": ["*"]}}),
    )
    .await;
    assert_eq!(doc["AuthType"], "NONE");
    assert_eq!(doc["InvokeMode"], "BUFFERED");
    assert_eq!(doc["FunctionArn"], format!("{ARN}:u1"));
    assert!(
        doc["FunctionUrl"]
            .as_str()
            .expect("url")
            .starts_with("http://localhost/_stratus/url/")
    );
    let (s, hd, _) = call(
        &h.app,
        "POST",
        base,
        &[],
        json!({"AuthType": "NONE"}).to_string(),
    )
    .await;
    assert_eq!(
        (s, &hd["x-amzn-errortype"]),
        (
            StatusCode::CONFLICT,
            &HeaderValue::from_static("ResourceConflictException")
        )
    );

    let (s, _, b) = call(
        &h.app,
        "PUT",
        base,
        &[],
        json!({"AuthType": "AWS_IAM"}).to_string(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let updated = json_of(&b);
    assert_eq!(updated["AuthType"], "AWS_IAM");
    assert_eq!(updated["FunctionUrl"], doc["FunctionUrl"]);
    assert_eq!(updated["Cors"], json!({"AllowOrigins": ["*"]}));
    let (_, _, b) = call(
        &h.app,
        "GET",
        "/2021-10-31/functions/u1/urls",
        &[],
        Body::empty(),
    )
    .await;
    assert_eq!(
        json_of(&b)["FunctionUrlConfigs"].as_array().map(Vec::len),
        Some(1)
    );

    let (s, _, _) = call(&h.app, "DELETE", base, &[], Body::empty()).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, _) = call(&h.app, "DELETE", base, &[], Body::empty()).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = call_as(&h.app, None, "GET", &url_path(&doc), &[], Body::empty()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "a deleted URL answers no more");
}

#[tokio::test]
async fn a_url_delivers_a_v2_event_and_checks_iam_signatures() {
    let h = harness().await;
    create(&h.app, "u2").await;
    wait_active(&h.app, "u2").await;
    let doc = url_config(&h.app, "u2", json!({"AuthType": "NONE"})).await;
    let path = url_path(&doc);

    let (s, hd, b) = call_as(
        &h.app,
        None,
        "POST",
        &format!("{path}items/7?a=1&a=2&b=x%20y"),
        &[
            ("host", "localhost"),
            ("content-type", "text/plain"),
            ("cookie", "c1=v1; c2=v2"),
            ("x-Custom", "Yes"),
        ],
        "hello",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    assert_eq!(hd["content-type"], "application/json");
    let ev = json_of(&b);
    assert_eq!(ev["version"], "2.0");
    assert_eq!(ev["routeKey"], "$default");
    assert_eq!(ev["rawPath"], "/items/7");
    assert_eq!(ev["rawQueryString"], "a=1&a=2&b=x%20y");
    assert_eq!(ev["queryStringParameters"], json!({"a": "1,2", "b": "x y"}));
    assert_eq!(ev["cookies"], json!(["c1=v1", "c2=v2"]));
    assert_eq!(ev["headers"]["x-custom"], "Yes");
    assert!(ev["headers"].get("cookie").is_none());
    assert_eq!(ev["body"], "hello");
    assert_eq!(ev["isBase64Encoded"], false);
    assert_eq!(ev["requestContext"]["http"]["method"], "POST");
    assert_eq!(ev["requestContext"]["http"]["path"], "/items/7");
    assert_eq!(ev["requestContext"]["accountId"], "anonymous");
    assert_eq!(
        ev["requestContext"]["requestId"],
        hd["x-amzn-requestid"].to_str().expect("id")
    );
    assert!(ev["requestContext"]["timeEpoch"].as_i64().is_some());

    // A binary body goes base64.
    let (_, _, b) = call_as(
        &h.app,
        None,
        "PUT",
        &path,
        &[("content-type", "application/octet-stream")],
        vec![0u8, 1, 2, 255],
    )
    .await;
    let ev = json_of(&b);
    assert_eq!(ev["isBase64Encoded"], true);
    assert_eq!(ev["body"], "AAEC/w==");
    assert_eq!(ev["rawPath"], "/");

    // AWS_IAM: unsigned is refused, a key of the function's account passes.
    let (s, _, _) = call(
        &h.app,
        "PUT",
        "/2021-10-31/functions/u2/url",
        &[],
        json!({"AuthType": "AWS_IAM"}).to_string(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = call_as(&h.app, None, "GET", &path, &[], Body::empty()).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, b) = call(&h.app, "GET", &format!("{path}x"), &[], Body::empty()).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let ev = json_of(&b);
    assert_eq!(ev["requestContext"]["accountId"], "000000000000");
    assert_eq!(
        ev["requestContext"]["authorizer"]["iam"]["accessKey"],
        ADMIN.0
    );

    let (s, _, _) = call_as(
        &h.app,
        None,
        "GET",
        "/_stratus/url/nope/",
        &[],
        Body::empty(),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn cors_preflight_is_answered_without_invoking() {
    let h = harness().await;
    create(&h.app, "u3").await;
    wait_active(&h.app, "u3").await;
    let doc = url_config(
        &h.app,
        "u3",
        json!({"AuthType": "AWS_IAM", "Cors": {"AllowOrigins": ["https://app.example"], "AllowMethods": ["POST"], "MaxAge": 60, "ExposeHeaders": ["x-out"]}}),
    )
    .await;
    let path = url_path(&doc);
    let before = h.invoker.seen.lock().expect("lock").len();
    let (s, hd, _) = call_as(
        &h.app,
        None,
        "OPTIONS",
        &path,
        &[
            ("origin", "https://app.example"),
            ("access-control-request-method", "POST"),
        ],
        Body::empty(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(hd["access-control-allow-origin"], "https://app.example");
    assert_eq!(hd["access-control-allow-methods"], "POST");
    assert_eq!(hd["access-control-max-age"], "60");
    assert_eq!(
        h.invoker.seen.lock().expect("lock").len(),
        before,
        "no invoke"
    );
    let (s, hd, _) = call(
        &h.app,
        "POST",
        &path,
        &[("origin", "https://app.example")],
        "{}",
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(hd["access-control-allow-origin"], "https://app.example");
    assert_eq!(hd["access-control-expose-headers"], "x-out");
}
