//! Authentication through the router: SigV4 failures, per-account
//! isolation, the admin API and the routes that stay open.

use super::*;

fn error_type(h: &axum::http::HeaderMap) -> &str {
    h.get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

const LIST: &str = "/2015-03-31/functions";

/// Creates an account and a key for it with the admin key: (account, id, secret).
async fn new_account(app: &Router) -> (String, String, String) {
    let (s, _, b) = call(app, "POST", "/_stratus/admin/accounts", &[], "").await;
    assert_eq!(s, StatusCode::CREATED, "{}", String::from_utf8_lossy(&b));
    let account = json_of(&b)["AccountId"]
        .as_str()
        .expect("account id")
        .to_owned();
    let body = json!({ "AccountId": account }).to_string();
    let (s, _, b) = call(app, "POST", "/_stratus/admin/keys", &[], body).await;
    assert_eq!(s, StatusCode::CREATED, "{}", String::from_utf8_lossy(&b));
    let v = json_of(&b);
    let id = v["AccessKeyId"].as_str().expect("id").to_owned();
    let secret = v["SecretAccessKey"].as_str().expect("secret").to_owned();
    (account, id, secret)
}

#[tokio::test]
async fn requests_without_a_valid_signature_are_403_with_aws_error_types() {
    let h = harness().await;
    let (s, hd, b) = call_as(&h.app, None, "GET", LIST, &[], Body::empty()).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(error_type(&hd), "MissingAuthenticationTokenException");
    assert_eq!(json_of(&b)["message"], "Missing Authentication Token");

    let unknown = Some(("NOSUCHKEY", "x"));
    let (s, hd, _) = call_as(&h.app, unknown, "GET", LIST, &[], Body::empty()).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(error_type(&hd), "UnrecognizedClientException");

    let wrong = Some((ADMIN.0, "not-the-secret"));
    let (s, hd, b) = call_as(&h.app, wrong, "GET", LIST, &[], Body::empty()).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(error_type(&hd), "InvalidSignatureException");
    assert!(
        json_of(&b)["message"]
            .as_str()
            .expect("message")
            .starts_with("The request signature we calculated does not match")
    );

    let (s, hd, _) = call_as(
        &h.app,
        None,
        "GET",
        LIST,
        &[("authorization", "AWS4-HMAC-SHA256 Credential=oops")],
        Body::empty(),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(error_type(&hd), "IncompleteSignatureException");
}

/// Signs a request `age_s` seconds in the past (negative: the future) or
/// with a body other than the one sent.
async fn send_signed(
    h: &Harness,
    age_s: i64,
    signed_body: &[u8],
    sent: &'static str,
) -> (StatusCode, String) {
    let mut req = Request::builder()
        .method("POST")
        .uri("/2015-03-31/functions/f/invocations")
        .header("host", "localhost")
        .body(Body::from(sent))
        .expect("request");
    sign(
        req.headers_mut(),
        ADMIN.0,
        ADMIN.1,
        "POST",
        "/2015-03-31/functions/f/invocations",
        signed_body,
        age_s,
    );
    let resp = h.app.clone().oneshot(req).await.expect("infallible");
    (resp.status(), error_type(resp.headers()).to_owned())
}

#[tokio::test]
async fn stale_future_and_tampered_requests_are_refused() {
    let h = harness().await;
    create(&h.app, "f").await;
    wait_active(&h.app, "f").await;
    let ok = send_signed(&h, 0, b"{}", "{}").await;
    assert_eq!(ok.0, StatusCode::OK, "{ok:?}");
    let replay = send_signed(&h, 20 * 60, b"{}", "{}").await;
    assert_eq!(
        replay,
        (StatusCode::FORBIDDEN, "InvalidSignatureException".into())
    );
    let future = send_signed(&h, -20 * 60, b"{}", "{}").await;
    assert_eq!(
        future,
        (StatusCode::FORBIDDEN, "InvalidSignatureException".into())
    );
    let tampered = send_signed(&h, 0, br#"{"a":1}"#, r#"{"a":2}"#).await;
    assert_eq!(
        tampered,
        (StatusCode::FORBIDDEN, "InvalidSignatureException".into())
    );
    // A few minutes of clock skew are fine.
    let skewed = send_signed(&h, 5 * 60, b"{}", "{}").await;
    assert_eq!(skewed.0, StatusCode::OK);
}

#[tokio::test]
async fn accounts_cannot_see_or_touch_each_others_functions() {
    let h = harness().await;
    create(&h.app, "mine").await;
    let (account, id, secret) = new_account(&h.app).await;
    let b_key = Some((id.as_str(), secret.as_str()));
    let arn = "arn:aws:lambda:us-east-1:000000000000:function:mine";
    for (method, uri, body) in [
        ("GET", "/2015-03-31/functions/mine".to_owned(), ""),
        ("GET", format!("/2015-03-31/functions/{arn}"), ""),
        (
            "POST",
            "/2015-03-31/functions/mine/invocations".to_owned(),
            "{}",
        ),
        ("DELETE", "/2015-03-31/functions/mine".to_owned(), ""),
        ("GET", "/_stratus/logs/mine".to_owned(), ""),
        ("GET", "/_stratus/functions/mine/sandboxes".to_owned(), ""),
    ] {
        let (s, hd, b) = call_as(&h.app, b_key, method, &uri, &[], body).await;
        assert_eq!(
            (s, error_type(&hd)),
            (StatusCode::NOT_FOUND, "ResourceNotFoundException"),
            "{method} {uri}: {}",
            String::from_utf8_lossy(&b)
        );
    }
    let (s, _, b) = call_as(&h.app, b_key, "GET", LIST, &[], Body::empty()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(json_of(&b)["Functions"], json!([]));

    // B's own function of the same name is B's, with B's account in its ARN.
    let body = json!({
        "FunctionName": "mine", "Runtime": "python3.12", "Role": "arn:aws:iam::123456789012:role/r",
        "Handler": "app.handler", "Code": {"ZipFile": zip_b64()}
    });
    let (s, _, b) = call_as(&h.app, b_key, "POST", LIST, &[], body.to_string()).await;
    assert_eq!(s, StatusCode::CREATED, "{}", String::from_utf8_lossy(&b));
    assert_eq!(
        json_of(&b)["FunctionArn"],
        format!("arn:aws:lambda:us-east-1:{account}:function:mine")
    );
    // A's is still there, untouched.
    let (s, _, b) = call(
        &h.app,
        "GET",
        "/2015-03-31/functions/mine",
        &[],
        Body::empty(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(json_of(&b)["Configuration"]["FunctionArn"], arn);
}

#[tokio::test]
async fn only_the_admin_key_manages_keys_and_revoked_keys_stop_working() {
    let h = harness().await;
    let (account, id, secret) = new_account(&h.app).await;
    let b_key = Some((id.as_str(), secret.as_str()));
    for (method, uri, body) in [
        ("POST", "/_stratus/admin/accounts", String::new()),
        ("GET", "/_stratus/admin/accounts", String::new()),
        (
            "POST",
            "/_stratus/admin/keys",
            json!({"AccountId": account}).to_string(),
        ),
        ("GET", "/_stratus/admin/keys", String::new()),
        ("DELETE", "/_stratus/admin/keys/STKSOMETHING", String::new()),
    ] {
        let (s, hd, _) = call_as(&h.app, b_key, method, uri, &[], body).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{method} {uri}");
        assert_eq!(error_type(&hd), "AccessDeniedException");
    }

    // Listings never show secrets.
    let (s, _, b) = call(&h.app, "GET", "/_stratus/admin/keys", &[], Body::empty()).await;
    assert_eq!(s, StatusCode::OK);
    let text = String::from_utf8_lossy(&b).into_owned();
    assert!(text.contains(&id));
    assert!(!text.contains(&secret), "a listing shows a secret");
    let (_, _, b) = call(
        &h.app,
        "GET",
        "/_stratus/admin/accounts",
        &[],
        Body::empty(),
    )
    .await;
    assert_eq!(json_of(&b)["Accounts"][1]["AccountId"], account.as_str());

    let (s, _, _) = call_as(&h.app, b_key, "GET", LIST, &[], Body::empty()).await;
    assert_eq!(s, StatusCode::OK);
    let revoke = format!("/_stratus/admin/keys/{id}");
    let (s, _, _) = call(&h.app, "DELETE", &revoke, &[], Body::empty()).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, hd, _) = call_as(&h.app, b_key, "GET", LIST, &[], Body::empty()).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(error_type(&hd), "UnrecognizedClientException");
    let (s, hd, _) = call(&h.app, "DELETE", &revoke, &[], Body::empty()).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(error_type(&hd), "ResourceNotFoundException");

    // Keys need an existing account; bad ids are validation errors.
    let (s, hd, _) = call(
        &h.app,
        "POST",
        "/_stratus/admin/keys",
        &[],
        json!({"AccountId": "999999999999"}).to_string(),
    )
    .await;
    assert_eq!(
        (s, error_type(&hd)),
        (StatusCode::NOT_FOUND, "ResourceNotFoundException")
    );
    let (s, hd, _) = call(
        &h.app,
        "POST",
        "/_stratus/admin/keys",
        &[],
        json!({"AccountId": "12"}).to_string(),
    )
    .await;
    assert_eq!(
        (s, error_type(&hd)),
        (StatusCode::BAD_REQUEST, "ValidationException")
    );
    let (s, hd, _) = call(
        &h.app,
        "POST",
        "/_stratus/admin/keys",
        &[],
        json!({"Account": "1"}).to_string(),
    )
    .await;
    assert_eq!(
        (s, error_type(&hd)),
        (StatusCode::BAD_REQUEST, "InvalidRequestContentException")
    );
}

#[tokio::test]
async fn probes_and_metrics_need_no_credentials() {
    let h = harness().await;
    for path in ["/health", "/ready", "/metrics"] {
        let (s, _, _) = call_as(&h.app, None, "GET", path, &[], Body::empty()).await;
        assert_eq!(s, StatusCode::OK, "{path}");
    }
}
