//! Layers through the router: publish, read, list, delete, and functions
//! naming them (their digests reach the sandbox spec in order).

use super::*;

const LAYER: &str = "arn:aws:lambda:us-east-1:000000000000:layer";

fn layer_zip(file: &str, source: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(file);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(&path, source).expect("write");
    let zip = stratus_code::zip_directory(dir.path()).expect("zip");
    base64::engine::general_purpose::STANDARD.encode(zip)
}

async fn publish(app: &Router, name: &str, zip: &str) -> Value {
    let body = json!({"Content": {"ZipFile": zip}, "CompatibleRuntimes": ["python3.12"]});
    let (s, _, b) = call(
        app,
        "POST",
        &format!("/2018-10-31/layers/{name}/versions"),
        &[],
        body.to_string(),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{}", String::from_utf8_lossy(&b));
    json_of(&b)
}

#[tokio::test]
async fn layers_publish_list_get_delete_and_number_versions_once() {
    let h = harness().await;
    let one = publish(&h.app, "deps", &layer_zip("python/a.py", "A = 1\n")).await;
    assert_eq!(one["Version"], 1);
    assert_eq!(one["LayerVersionArn"], format!("{LAYER}:deps:1"));
    let two = publish(&h.app, "deps", &layer_zip("python/a.py", "A = 2\n")).await;
    assert_eq!(two["Version"], 2);
    let (s, _, b) = call(
        &h.app,
        "GET",
        "/2018-10-31/layers/deps/versions",
        &[],
        Body::empty(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let versions: Vec<Value> = json_of(&b)["LayerVersions"]
        .as_array()
        .expect("list")
        .clone();
    assert_eq!(
        versions
            .iter()
            .map(|v| v["Version"].clone())
            .collect::<Vec<_>>(),
        vec![json!(2), json!(1)]
    );
    let (_, _, b) = call(&h.app, "GET", "/2018-10-31/layers", &[], Body::empty()).await;
    assert_eq!(
        json_of(&b)["Layers"][0]["LatestMatchingVersion"]["Version"],
        2
    );
    let by_arn = format!(
        "/2018-10-31/layers?find=LayerVersion&Arn={}",
        format!("{LAYER}:deps:1").replace(':', "%3A")
    );
    let (s, _, b) = call(&h.app, "GET", &by_arn, &[], Body::empty()).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    assert_eq!(json_of(&b)["Version"], 1);

    let (s, _, _) = call(
        &h.app,
        "DELETE",
        "/2018-10-31/layers/deps/versions/2",
        &[],
        Body::empty(),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, _) = call(
        &h.app,
        "GET",
        "/2018-10-31/layers/deps/versions/2",
        &[],
        Body::empty(),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let three = publish(&h.app, "deps", &layer_zip("python/a.py", "A = 3\n")).await;
    assert_eq!(three["Version"], 3, "never reused");
}

#[tokio::test]
async fn functions_run_their_layers_in_order() {
    let h = harness().await;
    let a = publish(&h.app, "la", &layer_zip("python/a.py", "A = 1\n")).await;
    let b = publish(&h.app, "lb", &layer_zip("python/b.py", "B = 1\n")).await;
    let arns = json!([b["LayerVersionArn"], a["LayerVersionArn"]]);
    let body = json!({"FunctionName": "withl", "Runtime": "python3.12", "Role": "arn:aws:iam::123456789012:role/r",
        "Handler": "app.handler", "Code": {"ZipFile": zip_b64()}, "Layers": arns});
    let (s, _, bd) = call(
        &h.app,
        "POST",
        "/2015-03-31/functions",
        &[],
        body.to_string(),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{}", String::from_utf8_lossy(&bd));
    let doc = json_of(&bd);
    assert_eq!(doc["Layers"][0]["Arn"], b["LayerVersionArn"]);
    assert_eq!(doc["Layers"][1]["CodeSize"], a["Content"]["CodeSize"]);
    wait_active(&h.app, "withl").await;
    let (s, _, _) = call(
        &h.app,
        "POST",
        "/2015-03-31/functions/withl/invocations",
        &[],
        "{}",
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let spec = h
        .invoker
        .seen
        .lock()
        .expect("lock")
        .last()
        .expect("invoked")
        .0
        .clone();
    assert_eq!(spec.layers.len(), 2);
    let digest_of = |v: &Value| {
        let sha = base64::engine::general_purpose::STANDARD
            .decode(v["Content"]["CodeSha256"].as_str().expect("sha"))
            .expect("b64");
        hex::encode(sha)
    };
    assert_eq!(spec.layers, vec![digest_of(&b), digest_of(&a)]);

    // The blob of a deleted layer version stays while a function uses it.
    let (s, _, _) = call(
        &h.app,
        "DELETE",
        "/2018-10-31/layers/la/versions/1",
        &[],
        Body::empty(),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(h.blobs.get(&digest_of(&a)).await.is_ok());
    assert!(
        !h.worker
            .removed
            .lock()
            .expect("lock")
            .contains(&digest_of(&a))
    );

    // Unknown layers, too many, another region.
    for (layers, code) in [
        (
            json!([format!("{LAYER}:nope:1")]),
            "InvalidParameterValueException",
        ),
        (
            json!(vec![b["LayerVersionArn"].clone(); 6]),
            "InvalidParameterValueException",
        ),
        (
            json!([format!("{LAYER}:lb:1").replace("us-east-1", "eu-west-1")]),
            "InvalidParameterValueException",
        ),
        (json!(["layer-without-arn"]), "ValidationException"),
    ] {
        let (s, hd, bd) = call(
            &h.app,
            "PUT",
            "/2015-03-31/functions/withl/configuration",
            &[],
            json!({"Layers": layers}).to_string(),
        )
        .await;
        assert_eq!(
            s,
            StatusCode::BAD_REQUEST,
            "{}",
            String::from_utf8_lossy(&bd)
        );
        assert_eq!(hd["x-amzn-errortype"], code);
    }
    let (_, _, bd) = call(
        &h.app,
        "PUT",
        "/2015-03-31/functions/withl/configuration",
        &[],
        json!({"Layers": [format!("{LAYER}:nope:1")]}).to_string(),
    )
    .await;
    assert_eq!(
        json_of(&bd)["Message"],
        format!("Layer version {LAYER}:nope:1 does not exist.")
    );
}
