//! Router-level tests: the real front end over the embedded store, with a
//! fake worker and invoker (no sandboxes, no socket).

use std::sync::Mutex;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine;
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use stratus_api::LambdaError;
use stratus_api::service::{
    ConcurrencyPermit, FunctionError, FunctionInFlight, FunctionProvisioned, FunctionVersionSpec,
    InitializationType, InvokeRequest, InvokeResponse, Logs, PrewarmCounts, ProvisionId,
    ProvisionState, ProvisionedStatus, SandboxCounts, SandboxInfo, WarmSandbox,
};
use stratus_types::AccountId;
use tower::ServiceExt;

use super::*;

mod auth;
mod concurrency;
mod events;
mod layers;
mod provisioned;
mod scrape;
mod tags_urls;
mod versions;

/// Answers every invoke with its payload, as a cold start. A payload of
/// `{"fail":true}` makes it a function error; `{"hold":true}` waits for
/// `release` first.
#[derive(Debug, Default)]
struct FakeInvoker {
    seen: Mutex<Vec<(Arc<FunctionVersionSpec>, InvokeRequest)>>,
    retired: Mutex<Vec<(String, Option<String>)>>,
    release: tokio::sync::Notify,
    /// Provisioned goals set: (config, version it runs, count).
    provisioned: Mutex<Vec<(ProvisionId, String, u32)>>,
}

/// What [`FakeInvoker`] reports as its sandboxes.
const FAKE_SANDBOXES: SandboxCounts = SandboxCounts {
    starting: 1,
    idle: 2,
    busy: 3,
    prewarms: PrewarmCounts {
        started: 0,
        failed: 0,
        used: 0,
        no_room: 0,
    },
    lease_expiries: 0,
};

#[async_trait]
impl Invoker for FakeInvoker {
    async fn invoke(
        &self,
        spec: Arc<FunctionVersionSpec>,
        req: InvokeRequest,
    ) -> Result<InvokeResponse, LambdaError> {
        let payload = req.payload.clone();
        let id = req.request_id.clone();
        self.seen.lock().expect("lock").push((spec, req));
        if &payload[..] == br#"{"hold":true}"# {
            self.release.notified().await;
        }
        Ok(InvokeResponse {
            function_error: (&payload[..] == br#"{"fail":true}"#)
                .then_some(FunctionError::Unhandled),
            payload,
            executed_version: "$LATEST".into(),
            log: format!("START RequestId: {id} Version: $LATEST\nEND RequestId: {id}\n"),
            cold_start: true,
            duration: std::time::Duration::from_millis(3),
            init_duration: Some(std::time::Duration::from_millis(40)),
            provisioned: false,
        })
    }
    fn retire(&self, _account: &AccountId, name: &str, _version: Option<&str>, keep: Option<&str>) {
        self.retired
            .lock()
            .expect("lock")
            .push((name.to_owned(), keep.map(str::to_owned)));
    }
    async fn sandbox_counts(&self) -> SandboxCounts {
        FAKE_SANDBOXES
    }
    fn sandboxes_of(&self, _account: &AccountId, name: &str) -> Vec<SandboxInfo> {
        vec![SandboxInfo {
            id: format!("sbx-of-{name}"),
            version: "$LATEST".into(),
            revision_id: "r1".into(),
            state: "idle",
            memory_mb: 128,
            idle_ms: Some(5),
            lease_left_ms: Some(1000),
            provisioned: false,
        }]
    }
    fn set_provisioned(&self, id: ProvisionId, spec: Arc<FunctionVersionSpec>, count: u32) {
        self.provisioned
            .lock()
            .expect("lock")
            .push((id, spec.version.clone(), count));
    }
    fn remove_provisioned(&self, _account: &AccountId, name: &str, qualifier: Option<&str>) {
        self.provisioned
            .lock()
            .expect("lock")
            .retain(|(id, _, _)| !(id.name == name && qualifier.is_none_or(|q| q == id.qualifier)));
    }
    fn provisioned_status(&self, id: &ProvisionId) -> Option<ProvisionedStatus> {
        let goals = self.provisioned.lock().expect("lock");
        let (_, _, n) = goals.iter().rev().find(|(g, _, _)| g == id)?;
        Some(ProvisionedStatus {
            requested: *n,
            allocated: *n,
            available: *n,
            state: ProvisionState::Ready,
            reason: None,
        })
    }
    fn provisioned_counts(&self) -> Vec<FunctionProvisioned> {
        Vec::new()
    }
}

/// Records which code it was told to remove.
#[derive(Debug, Default)]
struct FakeWorker {
    removed: Mutex<Vec<String>>,
}

#[async_trait]
impl Worker for FakeWorker {
    fn id(&self) -> &str {
        "fake"
    }
    fn capacity_mb(&self) -> u64 {
        1024
    }
    async fn prepare_code(&self, _digest: &str) -> Result<(), LambdaError> {
        Ok(())
    }
    fn remove_code(&self, digest: &str) {
        self.removed.lock().expect("lock").push(digest.to_owned());
    }
    async fn create_sandbox(
        &self,
        _spec: Arc<FunctionVersionSpec>,
        _init: InitializationType,
    ) -> Result<Arc<dyn WarmSandbox>, LambdaError> {
        Err(LambdaError::service("not used"))
    }
}

#[derive(Debug)]
struct Unlimited;

#[async_trait]
impl Counting for Unlimited {
    async fn acquire(&self, _a: &AccountId, _f: &str) -> Result<ConcurrencyPermit, LambdaError> {
        Ok(ConcurrencyPermit::new(()))
    }
    async fn try_scale_up(&self, _a: &AccountId, _f: &str) -> Result<(), LambdaError> {
        Ok(())
    }
    async fn set_reserved(
        &self,
        _a: &AccountId,
        _f: &str,
        _n: Option<u32>,
    ) -> Result<(), LambdaError> {
        Ok(())
    }
    async fn account_concurrency(
        &self,
        _a: &AccountId,
    ) -> stratus_api::service::AccountConcurrency {
        stratus_api::service::AccountConcurrency {
            limit: u32::MAX,
            unreserved: u32::MAX,
        }
    }
    async fn in_flight_snapshot(&self) -> Vec<FunctionInFlight> {
        Vec::new()
    }
}

struct Harness {
    app: Router,
    invoker: Arc<FakeInvoker>,
    logs: Arc<stratus_worker::DiskLogStore>,
    /// Makes the harness's `capacity` readiness check fail.
    full: Arc<std::sync::atomic::AtomicBool>,
    worker: Arc<FakeWorker>,
    blobs: Arc<dyn stratus_store::BlobStore>,
    _dir: tempfile::TempDir,
}

async fn harness() -> Harness {
    harness_with(Arc::new(Unlimited)).await
}

async fn harness_with(counting: Arc<dyn Counting>) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = stratus_store_embedded::EmbeddedMetaStore::open(dir.path().join("meta.redb"))
        .expect("meta");
    let blobs =
        stratus_store_embedded::FileBlobStore::open(dir.path().join("blobs")).expect("blobs");
    let blobs: Arc<dyn stratus_store::BlobStore> = Arc::new(blobs);
    let invoker = Arc::new(FakeInvoker::default());
    let worker = Arc::new(FakeWorker::default());
    let logs = Arc::new(
        stratus_worker::DiskLogStore::open(
            dir.path().join("logs"),
            stratus_worker::LogStoreConfig::default(),
        )
        .expect("logs"),
    );
    let full = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let is_full = Arc::clone(&full);
    let meta: Arc<dyn stratus_store::MetaStore> = Arc::new(meta);
    let fe = Frontend::new(FrontendDeps {
        events: Arc::new(stratus_async_invoke::StoreQueue::new(Arc::clone(&meta))),
        meta,
        blobs: Arc::clone(&blobs),
        counting,
        invoker: Arc::clone(&invoker) as Arc<dyn Invoker>,
        worker: Arc::clone(&worker) as Arc<dyn Worker>,
        logs: Arc::clone(&logs) as Arc<dyn Logs>,
        presign_key: b"test-key".to_vec(),
        admin_key: test_admin_key(),
        interpreters: Interpreters {
            python: Some("/usr/bin/python3".into()),
            node: None,
        },
        readiness: crate::Readiness::default().with(
            "capacity",
            Arc::new(move || {
                if is_full.load(std::sync::atomic::Ordering::Relaxed) {
                    Err("no memory left".into())
                } else {
                    Ok(())
                }
            }),
        ),
    })
    .await
    .expect("frontend");
    Harness {
        app: router(fe),
        invoker,
        logs,
        full,
        worker,
        blobs,
        _dir: dir,
    }
}

fn zip_b64() -> String {
    zip_b64_of("def handler(e, c):\n    return e\n")
}

/// A zip holding `app.py` with `source`, base64.
fn zip_b64_of(source: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("app.py"), source).expect("write");
    let zip = stratus_code::zip_directory(dir.path()).expect("zip");
    base64::engine::general_purpose::STANDARD.encode(zip)
}

/// The harness's admin key (account 000000000000).
const ADMIN: (&str, &str) = ("TESTADMINKEY", "test-admin-secret");

fn test_admin_key() -> AdminKey {
    AdminKey {
        credentials: sigv4::Credentials {
            access_key_id: ADMIN.0.into(),
            secret: ADMIN.1.into(),
        },
        account: AccountId::default_local(),
    }
}

/// A request signed with the admin key.
async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: impl Into<Body>,
) -> (StatusCode, axum::http::HeaderMap, Bytes) {
    call_as(app, Some(ADMIN), method, uri, headers, body).await
}

/// A request signed with `key` (id, secret) now, in us-east-1, or unsigned.
async fn call_as(
    app: &Router,
    key: Option<(&str, &str)>,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: impl Into<Body>,
) -> (StatusCode, axum::http::HeaderMap, Bytes) {
    let body = body.into().collect().await.expect("body").to_bytes();
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let mut req = b.body(Body::from(body.clone())).expect("request");
    if let Some((id, secret)) = key {
        if !req.headers().contains_key("host") {
            req.headers_mut()
                .insert("host", axum::http::HeaderValue::from_static("localhost"));
        }
        sign(req.headers_mut(), id, secret, method, uri, &body, 0);
    }
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, headers, bytes)
}

/// Signs `headers` as of `age_s` seconds ago.
fn sign(
    headers: &mut axum::http::HeaderMap,
    id: &str,
    secret: &str,
    method: &str,
    uri: &str,
    body: &[u8],
    age_s: i64,
) {
    let when = time::OffsetDateTime::now_utc() - time::Duration::seconds(age_s);
    let amz_date = when
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .expect("date");
    let uri: axum::http::Uri = uri.parse().expect("uri");
    sigv4::sign_request(
        &sigv4::Credentials {
            access_key_id: id.into(),
            secret: secret.into(),
        },
        &sigv4::Scope {
            date: amz_date[..8].to_owned(),
            region: "us-east-1".into(),
            service: "lambda".into(),
        },
        &amz_date,
        &method.parse().expect("method"),
        uri.path(),
        uri.query().unwrap_or(""),
        headers,
        body,
    );
}

fn json_of(b: &Bytes) -> Value {
    serde_json::from_slice(b).expect("json body")
}

async fn create(app: &Router, name: &str) -> Value {
    let body = json!({
        "FunctionName": name, "Runtime": "python3.12", "Role": "arn:aws:iam::123456789012:role/r",
        "Handler": "app.handler", "Code": {"ZipFile": zip_b64()}
    });
    let (s, _, b) = call(app, "POST", "/2015-03-31/functions", &[], body.to_string()).await;
    assert_eq!(s, StatusCode::CREATED, "{}", String::from_utf8_lossy(&b));
    json_of(&b)
}

async fn wait_active(app: &Router, name: &str) -> Value {
    for _ in 0..100 {
        let (_, _, b) = call(
            app,
            "GET",
            &format!("/2015-03-31/functions/{name}/configuration"),
            &[],
            Body::empty(),
        )
        .await;
        let v = json_of(&b);
        if v["State"] == "Active" && v["LastUpdateStatus"] == "Successful" {
            return v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{name} never became Active");
}

#[tokio::test]
async fn create_is_pending_then_active_and_duplicates_conflict() {
    let h = harness().await;
    let doc = create(&h.app, "f1").await;
    assert_eq!(doc["State"], "Pending");
    assert_eq!(doc["StateReasonCode"], "Creating");
    assert!(doc.get("LastUpdateStatus").is_none());
    assert_eq!(
        doc["FunctionArn"],
        "arn:aws:lambda:us-east-1:000000000000:function:f1"
    );
    let active = wait_active(&h.app, "f1").await;
    assert_eq!(active["RevisionId"], doc["RevisionId"]);
    let body = json!({"FunctionName": "f1", "Runtime": "python3.12", "Role": "arn:aws:iam::123456789012:role/r",
        "Handler": "app.handler", "Code": {"ZipFile": zip_b64()}});
    let (s, hd, _) = call(
        &h.app,
        "POST",
        "/2015-03-31/functions",
        &[],
        body.to_string(),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(hd["x-amzn-errortype"], "ResourceConflictException");
}

#[tokio::test]
async fn unimplemented_fields_are_refused_by_name() {
    let h = harness().await;
    let body = json!({"FunctionName": "f", "Runtime": "python3.12", "Role": "arn:aws:iam::123456789012:role/r",
        "Handler": "app.handler", "Code": {"ZipFile": zip_b64()}, "VpcConfig": {"SubnetIds": ["subnet-1"]}});
    let (s, hd, b) = call(
        &h.app,
        "POST",
        "/2015-03-31/functions",
        &[],
        body.to_string(),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(hd["x-amzn-errortype"], "InvalidParameterValueException");
    assert!(
        json_of(&b)["Message"]
            .as_str()
            .expect("message")
            .contains("VpcConfig")
    );
}

#[tokio::test]
async fn invoke_validates_payload_and_passes_it_on() {
    let h = harness().await;
    create(&h.app, "f2").await;
    wait_active(&h.app, "f2").await;
    let uri = "/2015-03-31/functions/f2/invocations";

    let (s, hd, b) = call(&h.app, "POST", uri, &[("x-amz-log-type", "Tail")], "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(&b[..], b"{}", "empty body reaches the function as {{}}");
    assert_eq!(hd["x-amz-executed-version"], "$LATEST");
    let id = hd["x-amzn-requestid"].to_str().expect("ascii").to_owned();
    let first_id = h.invoker.seen.lock().expect("lock")[0].1.request_id.clone();
    assert_eq!(first_id, id, "the response's request id is the handler's");
    let tail = base64::engine::general_purpose::STANDARD
        .decode(hd["x-amz-log-result"].as_bytes())
        .expect("base64");
    assert!(String::from_utf8_lossy(&tail).contains(&format!("START RequestId: {id}")));

    let (s, hd, _) = call(&h.app, "POST", uri, &[], "{not json").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(hd["x-amzn-errortype"], "InvalidRequestContentException");

    let big = vec![b' '; stratus_types::limits::SYNC_REQUEST_MAX_BYTES + 1];
    let (s, hd, _) = call(&h.app, "POST", uri, &[], big).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(hd["x-amzn-errortype"], "RequestEntityTooLargeException");

    let (s, _, b) = call(
        &h.app,
        "POST",
        uri,
        &[("x-amz-invocation-type", "DryRun")],
        "{}",
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(b.is_empty());
    assert_eq!(
        h.invoker.seen.lock().expect("lock").len(),
        1,
        "DryRun and bad requests never reach the invoker"
    );
}

#[tokio::test]
async fn missing_functions_are_404_with_their_arn() {
    let h = harness().await;
    let (s, hd, b) = call(
        &h.app,
        "POST",
        "/2015-03-31/functions/nope/invocations",
        &[],
        "{}",
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(hd["x-amzn-errortype"], "ResourceNotFoundException");
    assert_eq!(
        json_of(&b)["Message"],
        "Function not found: arn:aws:lambda:us-east-1:000000000000:function:nope"
    );
    let (s, _, _) = call(
        &h.app,
        "GET",
        "/2015-03-31/functions/nope:prod",
        &[],
        Body::empty(),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn updates_check_revision_and_retire_old_sandboxes() {
    let h = harness().await;
    create(&h.app, "f3").await;
    let before = wait_active(&h.app, "f3").await;
    let uri = "/2015-03-31/functions/f3/configuration";
    let (s, hd, _) = call(
        &h.app,
        "PUT",
        uri,
        &[],
        json!({"MemorySize": 256, "RevisionId": "stale"}).to_string(),
    )
    .await;
    assert_eq!(s, StatusCode::PRECONDITION_FAILED);
    assert_eq!(hd["x-amzn-errortype"], "PreconditionFailedException");
    let body = json!({"MemorySize": 256, "RevisionId": before["RevisionId"], "Environment": {"Variables": {"A": "1"}}});
    let (s, _, b) = call(&h.app, "PUT", uri, &[], body.to_string()).await;
    assert_eq!(s, StatusCode::OK);
    let doc = json_of(&b);
    assert_eq!(doc["LastUpdateStatus"], "InProgress");
    assert_ne!(doc["RevisionId"], before["RevisionId"]);
    let after = wait_active(&h.app, "f3").await;
    assert_eq!(after["MemorySize"], 256);
    assert_eq!(after["Environment"]["Variables"]["A"], "1");
    let retired = h.invoker.retired.lock().expect("lock");
    assert!(
        retired
            .iter()
            .any(|(n, keep)| n == "f3" && keep.as_deref() == doc["RevisionId"].as_str())
    );
}

#[tokio::test]
async fn list_pages_with_markers() {
    let h = harness().await;
    for n in ["a", "b", "c", "d", "e"] {
        create(&h.app, n).await;
    }
    let mut names = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let uri = match &marker {
            Some(m) => format!("/2015-03-31/functions?MaxItems=2&Marker={m}"),
            None => "/2015-03-31/functions?MaxItems=2".into(),
        };
        let (s, _, b) = call(&h.app, "GET", &uri, &[], Body::empty()).await;
        assert_eq!(s, StatusCode::OK);
        let v = json_of(&b);
        let page = v["Functions"].as_array().expect("array");
        assert!(page.len() <= 2);
        names.extend(
            page.iter()
                .map(|f| f["FunctionName"].as_str().expect("name").to_owned()),
        );
        match v.get("NextMarker").and_then(Value::as_str) {
            Some(m) => marker = Some(m.to_owned()),
            None => break,
        }
    }
    assert_eq!(names, ["a", "b", "c", "d", "e"]);
    let (s, hd, _) = call(
        &h.app,
        "GET",
        "/2015-03-31/functions?MaxItems=0",
        &[],
        Body::empty(),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(hd["x-amzn-errortype"], "ValidationException");
}

#[tokio::test]
async fn presigned_code_urls_download_and_refuse_tampering() {
    let h = harness().await;
    create(&h.app, "f4").await;
    let (_, _, b) = call(
        &h.app,
        "GET",
        "/2015-03-31/functions/f4",
        &[("host", "localhost:9000")],
        Body::empty(),
    )
    .await;
    let loc = json_of(&b)["Code"]["Location"]
        .as_str()
        .expect("location")
        .to_owned();
    let path = loc.strip_prefix("http://localhost:9000").expect("our host");
    // The URL is its own credential: no signature needed.
    let (s, _, zip) = call_as(&h.app, None, "GET", path, &[], Body::empty()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        base64::engine::general_purpose::STANDARD.encode(&zip),
        zip_b64()
    );
    let tampered = path.replace("Expires=", "Expires=9");
    let (s, _, _) = call(&h.app, "GET", &tampered, &[], Body::empty()).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // The same MAC in uppercase hex is not the URL that was issued.
    let (head, sig) = path.split_once("Signature=").expect("signature");
    let upper = format!("{head}Signature={}", sig.to_uppercase());
    assert_ne!(upper, path, "the signature has hex letters");
    let (s, _, _) = call(&h.app, "GET", &upper, &[], Body::empty()).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_functions_live_sandboxes_are_listed() {
    let h = harness().await;
    create(&h.app, "sb").await;
    let (s, _, b) = call(
        &h.app,
        "GET",
        "/_stratus/functions/sb/sandboxes",
        &[],
        Body::empty(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let v = json_of(&b);
    assert_eq!(v["Sandboxes"][0]["Id"], "sbx-of-sb");
    assert_eq!(v["Sandboxes"][0]["State"], "idle");
    assert_eq!(v["Sandboxes"][0]["MemoryMb"], 128);
    let (s, hd, _) = call(
        &h.app,
        "GET",
        "/_stratus/functions/nope/sandboxes",
        &[],
        Body::empty(),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(hd["x-amzn-errortype"], "ResourceNotFoundException");
}

#[tokio::test]
async fn unknown_routes_are_404() {
    let h = harness().await;
    let (s, hd, _) = call(&h.app, "GET", "/2099-01-01/nothing", &[], Body::empty()).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(hd.contains_key("x-amzn-requestid"));
    // A known path with a method it does not have (found by fuzz_api: axum
    // answered a bare 405).
    for (method, path) in [
        ("DELETE", "/2015-03-31/functions/"),
        ("PATCH", "/2015-03-31/functions/f"),
        ("POST", "/health"),
    ] {
        let (s, hd, body) = call(&h.app, method, path, &[], Body::empty()).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{method} {path}");
        assert_eq!(hd["x-amzn-errortype"], "UnknownOperationException");
        let doc: Value = serde_json::from_slice(&body).expect("json");
        assert!(
            doc.get("message").or_else(|| doc.get("Message")).is_some(),
            "{doc}"
        );
    }
}

#[tokio::test]
async fn logs_are_read_by_position_and_forgotten_with_the_function() {
    let h = harness().await;
    create(&h.app, "lg").await;
    let acct = AccountId::default_local();
    let stream = stratus_types::LogStreamName::new(2026, 1, 1, "$LATEST", &"ab".repeat(16))
        .expect("stream name");
    let lines = ["START x", "hello", "END x"]
        .map(|m| stratus_api::service::LogLine {
            timestamp: 1,
            message: m.to_owned(),
        })
        .to_vec();
    let key = stratus_api::service::LogStreamKey {
        account: acct.clone(),
        function: "lg".into(),
        stream,
    };
    h.logs.append(&key, lines).await;
    let (s, _, b) = call(&h.app, "GET", "/_stratus/logs/lg", &[], Body::empty()).await;
    assert_eq!(s, StatusCode::OK);
    let v = json_of(&b);
    assert_eq!(v["logGroupName"], "/aws/lambda/lg");
    let events = v["events"].as_array().expect("events");
    assert_eq!(events.len(), 3);
    assert_eq!(events[1]["message"], "hello");
    assert_eq!(
        events[1]["logStreamName"],
        format!("2026/01/01/[$LATEST]{}", "ab".repeat(16))
    );
    let next = v["nextToken"].as_u64().expect("token");
    let (_, _, b) = call(
        &h.app,
        "GET",
        &format!("/_stratus/logs/lg?after={next}"),
        &[],
        Body::empty(),
    )
    .await;
    assert!(json_of(&b)["events"].as_array().expect("events").is_empty());
    let (s, hd, _) = call(
        &h.app,
        "GET",
        "/_stratus/logs/lg?wait=999",
        &[],
        Body::empty(),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(hd["x-amzn-errortype"], "ValidationException");
    let (s, _, b) = call(
        &h.app,
        "DELETE",
        "/2015-03-31/functions/lg",
        &[],
        Body::empty(),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{}", String::from_utf8_lossy(&b));
    assert!(
        h.logs
            .read(&acct, "lg", None, 10, std::time::Duration::ZERO)
            .await
            .expect("read")
            .is_empty()
    );
    let (s, _, _) = call(&h.app, "GET", "/_stratus/logs/lg", &[], Body::empty()).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn ready_reports_each_check_and_503_when_one_fails() {
    let h = harness().await;
    let (s, headers, b) = call(&h.app, "GET", "/ready", &[], Body::empty()).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    assert_eq!(
        json_of(&b),
        json!({"ready": true, "checks": {"store": "ok", "capacity": "ok"}})
    );
    assert_eq!(headers["server"], crate::SERVER_HEADER);
    h.full.store(true, std::sync::atomic::Ordering::Relaxed);
    let (s, _, b) = call(&h.app, "GET", "/ready", &[], Body::empty()).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        json_of(&b),
        json!({"ready": false, "checks": {"store": "ok", "capacity": "no memory left"}})
    );
    // Liveness is not readiness.
    let (s, _, _) = call(&h.app, "GET", "/health", &[], Body::empty()).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn every_response_names_the_server_version() {
    let h = harness().await;
    assert_eq!(
        crate::SERVER_HEADER,
        format!("stratus/{}", env!("CARGO_PKG_VERSION"))
    );
    for (method, uri) in [
        ("GET", "/2015-03-31/functions"),
        ("GET", "/2015-03-31/functions/missing"),
        ("GET", "/no-such-operation"),
        ("GET", "/health"),
        ("GET", "/metrics"),
    ] {
        let (_, headers, _) = call(&h.app, method, uri, &[], Body::empty()).await;
        assert_eq!(headers["server"], crate::SERVER_HEADER, "{method} {uri}");
    }
}

/// The digest under which the code of `zip_b64` is stored.
fn digest_of(zip_b64: &str) -> String {
    let zip = base64::engine::general_purpose::STANDARD
        .decode(zip_b64)
        .expect("base64");
    stratus_code::sha256_hex(&zip)
}

#[tokio::test]
async fn deletes_and_updates_remove_code_no_function_uses() {
    let h = harness().await;
    let (one, two) = (zip_b64(), zip_b64_of("def handler(e, c):\n    return 2\n"));
    let (d1, d2) = (digest_of(&one), digest_of(&two));
    let stored = || async { h.blobs.list().await.expect("list") };
    let removed = || h.worker.removed.lock().expect("lock").clone();
    create(&h.app, "a").await;
    create(&h.app, "b").await;
    wait_active(&h.app, "a").await;
    wait_active(&h.app, "b").await;
    assert_eq!(stored().await, vec![d1.clone()], "one archive for both");

    // `b` still runs the code: nothing goes.
    let (s, _, _) = call(
        &h.app,
        "DELETE",
        "/2015-03-31/functions/a",
        &[],
        Body::empty(),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(stored().await, vec![d1.clone()]);
    assert!(removed().is_empty());

    // A dry run stores and checks the new code but keeps nothing.
    let update = |zip: &str, dry: bool| json!({"ZipFile": zip, "DryRun": dry}).to_string();
    let uri = "/2015-03-31/functions/b/code";
    let (s, _, b) = call(&h.app, "PUT", uri, &[], update(&two, true)).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    assert_eq!(stored().await, vec![d1.clone()]);
    assert_eq!(removed(), vec![d2.clone()]);

    // The old code of an update goes; the new stays.
    let (s, _, b) = call(&h.app, "PUT", uri, &[], update(&two, false)).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    assert_eq!(stored().await, vec![d2.clone()]);
    assert_eq!(removed(), vec![d2.clone(), d1.clone()]);
    wait_active(&h.app, "b").await;

    let (s, _, _) = call(
        &h.app,
        "DELETE",
        "/2015-03-31/functions/b",
        &[],
        Body::empty(),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(stored().await, Vec::<String>::new());
    assert_eq!(removed(), vec![d2.clone(), d1, d2]);
}
