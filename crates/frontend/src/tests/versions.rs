//! Versions and aliases through the router: publish, qualified reads and
//! invokes, alias routing, the delete rules, and code kept for versions.

use super::*;

const F: &str = "/2015-03-31/functions";

async fn send(app: &Router, method: &str, uri: &str, body: Value) -> (StatusCode, String, Value) {
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let (s, hd, b) = call(app, method, uri, &[], body).await;
    let kind = hd
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let doc = if b.is_empty() {
        Value::Null
    } else {
        json_of(&b)
    };
    (s, kind, doc)
}

async fn publish(app: &Router, name: &str) -> Value {
    let (s, _, doc) = send(app, "POST", &format!("{F}/{name}/versions"), json!({})).await;
    assert_eq!(s, StatusCode::CREATED, "{doc}");
    doc
}

async fn update_code(app: &Router, name: &str, zip: &str) {
    let (s, _, doc) = send(
        app,
        "PUT",
        &format!("{F}/{name}/code"),
        json!({"ZipFile": zip}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{doc}");
    wait_active(app, name).await;
}

/// Invokes `uri` and returns the version and code digest the invoker was
/// handed, and the invoked ARN.
async fn invoke_seen(h: &Harness, uri: &str) -> (String, String, String) {
    let (s, _, b) = call(&h.app, "POST", uri, &[], "{}").await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let seen = h.invoker.seen.lock().expect("lock");
    let (spec, req) = seen.last().expect("an invoke");
    (
        spec.version.clone(),
        spec.code_digest.clone(),
        req.invoked_arn.clone(),
    )
}

#[tokio::test]
async fn published_versions_are_snapshots_run_by_qualifier() {
    let h = harness().await;
    let (one, two) = (zip_b64(), zip_b64_of("def handler(e, c):\n    return 2\n"));
    create(&h.app, "v").await;
    let latest = wait_active(&h.app, "v").await;
    let v1 = publish(&h.app, "v").await;
    assert_eq!(v1["Version"], "1");
    assert_eq!(
        v1["FunctionArn"],
        "arn:aws:lambda:us-east-1:000000000000:function:v:1"
    );
    assert_eq!(v1["CodeSha256"], latest["CodeSha256"]);
    assert_ne!(v1["RevisionId"], latest["RevisionId"]);
    let again = publish(&h.app, "v").await;
    assert_eq!(
        (&again["Version"], &again["RevisionId"]),
        (&v1["Version"], &v1["RevisionId"]),
        "nothing changed: the same version"
    );

    let uri = format!("{F}/v/versions");
    let (s, kind, _) = send(&h.app, "POST", &uri, json!({"RevisionId": "stale"})).await;
    assert_eq!(
        (s, kind.as_str()),
        (
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailedException"
        )
    );
    let (s, kind, _) = send(&h.app, "POST", &uri, json!({"CodeSha256": "other"})).await;
    assert_eq!(
        (s, kind.as_str()),
        (StatusCode::BAD_REQUEST, "InvalidParameterValueException")
    );

    update_code(&h.app, "v", &two).await;
    assert_eq!(publish(&h.app, "v").await["Version"], "2");
    update_code(&h.app, "v", &one).await;

    let (version, digest, arn) = invoke_seen(&h, &format!("{F}/v/invocations?Qualifier=2")).await;
    assert_eq!(
        (version.as_str(), digest),
        ("2", digest_of(&two)),
        "version 2 runs its own code"
    );
    assert!(arn.ends_with(":function:v:2"), "{arn}");
    let (version, digest, arn) = invoke_seen(&h, &format!("{F}/v:1/invocations")).await;
    assert_eq!((version.as_str(), digest), ("1", digest_of(&one)));
    assert!(arn.ends_with(":function:v:1"), "{arn}");
    let (version, _, arn) = invoke_seen(&h, &format!("{F}/v/invocations")).await;
    assert_eq!(version, "$LATEST");
    assert!(arn.ends_with(":function:v"), "{arn}");

    let (s, _, doc) = send(
        &h.app,
        "GET",
        &format!("{F}/v/configuration?Qualifier=2"),
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(doc["Version"], "2");
    let (s, kind, _) = send(&h.app, "GET", &format!("{F}/v?Qualifier=3"), Value::Null).await;
    assert_eq!(
        (s, kind.as_str()),
        (StatusCode::NOT_FOUND, "ResourceNotFoundException")
    );

    // Listing: $LATEST first, in pages.
    let (_, _, page) = send(
        &h.app,
        "GET",
        &format!("{F}/v/versions?MaxItems=2"),
        Value::Null,
    )
    .await;
    let versions: Vec<&str> = page["Versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| v["Version"].as_str().expect("version"))
        .collect();
    assert_eq!(versions, ["$LATEST", "1"]);
    let marker = page["NextMarker"].as_str().expect("more");
    let (_, _, page) = send(
        &h.app,
        "GET",
        &format!("{F}/v/versions?MaxItems=2&Marker={marker}"),
        Value::Null,
    )
    .await;
    assert_eq!(page["Versions"][0]["Version"], "2");
    assert!(page.get("NextMarker").is_none());
    let (_, _, all) = send(
        &h.app,
        "GET",
        &format!("{F}?FunctionVersion=ALL"),
        Value::Null,
    )
    .await;
    assert_eq!(all["Functions"].as_array().expect("functions").len(), 3);

    // The code of version 2 outlives $LATEST's move away from it, and goes
    // with the version.
    assert_eq!(h.blobs.list().await.expect("list").len(), 2);
    let (s, kind, _) = send(
        &h.app,
        "DELETE",
        &format!("{F}/v?Qualifier=$LATEST"),
        Value::Null,
    )
    .await;
    assert_eq!(
        (s, kind.as_str()),
        (StatusCode::BAD_REQUEST, "InvalidParameterValueException")
    );
    let (s, _, _) = send(&h.app, "DELETE", &format!("{F}/v?Qualifier=2"), Value::Null).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(h.blobs.list().await.expect("list"), vec![digest_of(&one)]);
    update_code(&h.app, "v", &two).await;
    assert_eq!(publish(&h.app, "v").await["Version"], "3", "never reused");
    let (s, _, _) = send(&h.app, "DELETE", &format!("{F}/v"), Value::Null).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(h.blobs.list().await.expect("list").is_empty());
}

#[tokio::test]
async fn aliases_route_by_weight_and_guard_their_versions() {
    let h = harness().await;
    create(&h.app, "a").await;
    wait_active(&h.app, "a").await;
    publish(&h.app, "a").await;
    update_code(
        &h.app,
        "a",
        &zip_b64_of("def handler(e, c):\n    return 2\n"),
    )
    .await;
    publish(&h.app, "a").await;
    let aliases = format!("{F}/a/aliases");

    let bad = [
        (
            json!({"Name": "123", "FunctionVersion": "1"}),
            "ValidationException",
        ),
        (
            json!({"Name": "x", "FunctionVersion": "v1"}),
            "ValidationException",
        ),
        (
            json!({"Name": "x", "FunctionVersion": "1", "RoutingConfig": {"AdditionalVersionWeights": {"2": 1.5}}}),
            "ValidationException",
        ),
        (
            json!({"Name": "x", "FunctionVersion": "1", "RoutingConfig": {"AdditionalVersionWeights": {"1": 0.5}}}),
            "InvalidParameterValueException",
        ),
        (
            json!({"Name": "x", "FunctionVersion": "$LATEST", "RoutingConfig": {"AdditionalVersionWeights": {"1": 0.5}}}),
            "InvalidParameterValueException",
        ),
        (
            json!({"Name": "x", "FunctionVersion": "1", "RoutingConfig": {"AdditionalVersionWeights": {"2": 0.1, "3": 0.1}}}),
            "InvalidParameterValueException",
        ),
        (
            json!({"Name": "x", "FunctionVersion": "9"}),
            "ResourceNotFoundException",
        ),
    ];
    for (body, want) in bad {
        let (_, kind, doc) = send(&h.app, "POST", &aliases, body.clone()).await;
        assert_eq!(kind, want, "{body} -> {doc}");
    }

    let body = json!({"Name": "live", "FunctionVersion": "1", "Description": "d",
        "RoutingConfig": {"AdditionalVersionWeights": {"2": 0.3}}});
    let (s, _, live) = send(&h.app, "POST", &aliases, body.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{live}");
    assert_eq!(
        live["AliasArn"],
        "arn:aws:lambda:us-east-1:000000000000:function:a:live"
    );
    assert_eq!(live["RoutingConfig"]["AdditionalVersionWeights"]["2"], 0.3);
    let (s, kind, _) = send(&h.app, "POST", &aliases, body).await;
    assert_eq!(
        (s, kind.as_str()),
        (StatusCode::CONFLICT, "ResourceConflictException")
    );

    // 2,000 invokes at 0.3: 600 expected, sigma about 20.5.
    let n = 2000;
    let mut twos = 0;
    for _ in 0..n {
        let (version, _, arn) = invoke_seen(&h, &format!("{F}/a/invocations?Qualifier=live")).await;
        assert!(arn.ends_with(":function:a:live"), "{arn}");
        twos += usize::from(version == "2");
    }
    assert!(
        (518..=682).contains(&twos),
        "{twos} of {n} went to version 2"
    );

    // Versions an alias uses stay.
    for v in ["1", "2"] {
        let (s, kind, doc) = send(
            &h.app,
            "DELETE",
            &format!("{F}/a?Qualifier={v}"),
            Value::Null,
        )
        .await;
        assert_eq!(
            (s, kind.as_str()),
            (StatusCode::CONFLICT, "ResourceConflictException"),
            "{doc}"
        );
    }

    let one = format!("{aliases}/live");
    let (s, kind, _) = send(
        &h.app,
        "PUT",
        &one,
        json!({"FunctionVersion": "2", "RevisionId": "stale"}),
    )
    .await;
    assert_eq!(
        (s, kind.as_str()),
        (
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailedException"
        )
    );
    let (s, kind, _) = send(&h.app, "PUT", &one, json!({"FunctionVersion": "2"})).await;
    assert_eq!(
        (s, kind.as_str()),
        (StatusCode::BAD_REQUEST, "InvalidParameterValueException"),
        "the kept routing would name the primary"
    );
    let (s, _, updated) = send(
        &h.app,
        "PUT",
        &one,
        json!({"FunctionVersion": "2", "RevisionId": live["RevisionId"],
            "RoutingConfig": {"AdditionalVersionWeights": {}}}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{updated}");
    assert_ne!(updated["RevisionId"], live["RevisionId"]);
    assert_eq!(updated["Description"], "d");
    assert!(updated.get("RoutingConfig").is_none());
    let (s, _, got) = send(&h.app, "GET", &one, Value::Null).await;
    assert_eq!((s, &got), (StatusCode::OK, &updated));
    let (version, _, _) = invoke_seen(&h, &format!("{F}/a:live/invocations")).await;
    assert_eq!(version, "2");
    let (s, _, doc) = send(&h.app, "GET", &format!("{F}/a?Qualifier=live"), Value::Null).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(doc["Configuration"]["Version"], "2");
    assert_eq!(
        doc["Configuration"]["FunctionArn"],
        "arn:aws:lambda:us-east-1:000000000000:function:a:live"
    );

    let (s, kind, doc) = send(&h.app, "GET", &format!("{aliases}/nope"), Value::Null).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(kind, "ResourceNotFoundException");
    assert!(
        doc["Message"]
            .as_str()
            .expect("message")
            .starts_with("Cannot find alias arn:")
    );
    let (s, _, _) = send(&h.app, "DELETE", &format!("{F}/a?Qualifier=1"), Value::Null).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "no alias uses 1 now");

    let (s, _, _) = send(
        &h.app,
        "POST",
        &aliases,
        json!({"Name": "b", "FunctionVersion": "2"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, _, page) = send(&h.app, "GET", &format!("{aliases}?MaxItems=1"), Value::Null).await;
    assert_eq!(page["Aliases"][0]["Name"], "b");
    let marker = page["NextMarker"].as_str().expect("more");
    let (_, _, page) = send(
        &h.app,
        "GET",
        &format!("{aliases}?MaxItems=1&Marker={marker}"),
        Value::Null,
    )
    .await;
    assert_eq!(page["Aliases"][0]["Name"], "live");
    assert!(page.get("NextMarker").is_none());

    for _ in 0..2 {
        let (s, _, _) = send(&h.app, "DELETE", &one, Value::Null).await;
        assert_eq!(s, StatusCode::NO_CONTENT, "also when already gone");
    }
    let (s, _, _) = send(&h.app, "DELETE", &format!("{F}/a"), Value::Null).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let retired = h.invoker.retired.lock().expect("lock");
    assert!(retired.iter().any(|(n, keep)| n == "a" && keep.is_none()));
}
