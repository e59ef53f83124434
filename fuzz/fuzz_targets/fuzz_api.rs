//! Fuzzes the Lambda API as a client sees it: arbitrary bodies, names,
//! queries and invoke headers, each request correctly signed with the admin
//! key, through the real router and front end over the embedded store, real
//! counting and the disk log store (only the worker and the invoker are
//! stand-ins: no sandboxes).
//!
//! Beyond "never panics": no input makes the server fail (5xx), and every
//! refusal names Lambda's error type in `X-Amzn-ErrorType` with a JSON body
//! carrying a message.

#![no_main]

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use stratus_api::LambdaError;
use stratus_api::service::{
    FunctionProvisioned, FunctionVersionSpec, InitializationType, InvokeRequest, InvokeResponse,
    Invoker, ProvisionId, ProvisionedStatus, SandboxCounts, SandboxInfo, WarmSandbox, Worker,
};
use stratus_frontend::sigv4::{Credentials, Scope, sign_request};
use stratus_frontend::{AdminKey, Frontend, FrontendDeps, Interpreters, Readiness};
use stratus_types::AccountId;
use tower::ServiceExt;

/// Answers every invoke with its payload.
#[derive(Debug)]
struct Echo;

#[async_trait]
impl Invoker for Echo {
    async fn invoke(
        &self,
        _spec: Arc<FunctionVersionSpec>,
        req: InvokeRequest,
    ) -> Result<InvokeResponse, LambdaError> {
        Ok(InvokeResponse {
            function_error: None,
            payload: req.payload,
            executed_version: "$LATEST".into(),
            log: String::new(),
            cold_start: false,
            duration: std::time::Duration::from_millis(1),
            init_duration: None,
            provisioned: false,
        })
    }
    fn retire(
        &self,
        _account: &AccountId,
        _name: &str,
        _version: Option<&str>,
        _keep: Option<&str>,
    ) {
    }
    async fn sandbox_counts(&self) -> SandboxCounts {
        SandboxCounts::default()
    }
    fn sandboxes_of(&self, _account: &AccountId, _name: &str) -> Vec<SandboxInfo> {
        Vec::new()
    }
    // Provisioned concurrency: configs are kept by the front end's store;
    // no sandbox is ever made, so every config stays IN_PROGRESS.
    fn set_provisioned(&self, _id: ProvisionId, _spec: Arc<FunctionVersionSpec>, _count: u32) {}
    fn remove_provisioned(&self, _account: &AccountId, _name: &str, _qualifier: Option<&str>) {}
    fn provisioned_status(&self, _id: &ProvisionId) -> Option<ProvisionedStatus> {
        None
    }
    fn provisioned_counts(&self) -> Vec<FunctionProvisioned> {
        Vec::new()
    }
}

/// Accepts all code and creates no sandbox.
#[derive(Debug)]
struct NoSandboxes;

#[async_trait]
impl Worker for NoSandboxes {
    fn id(&self) -> &str {
        "fuzz"
    }
    fn capacity_mb(&self) -> u64 {
        1024
    }
    async fn prepare_code(&self, _digest: &str) -> Result<(), LambdaError> {
        Ok(())
    }
    fn remove_code(&self, _digest: &str) {}
    async fn create_sandbox(
        &self,
        _spec: Arc<FunctionVersionSpec>,
        _init: InitializationType,
    ) -> Result<Arc<dyn WarmSandbox>, LambdaError> {
        Err(LambdaError::service("no sandboxes while fuzzing"))
    }
}

struct Server {
    rt: tokio::runtime::Runtime,
    app: axum::Router,
    admin: Credentials,
    _dir: tempfile::TempDir,
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("dir");
        let admin = Credentials {
            access_key_id: "FUZZADMIN".into(),
            secret: "fuzz-secret".into(),
        };
        let app = rt.block_on(async {
            let meta =
                stratus_store_embedded::EmbeddedMetaStore::open(dir.path().join("meta.redb"))
                    .expect("meta");
            let blobs = stratus_store_embedded::FileBlobStore::open(dir.path().join("blobs"))
                .expect("blobs");
            let logs = stratus_worker::DiskLogStore::open(
                dir.path().join("logs"),
                stratus_worker::LogStoreConfig::default(),
            )
            .expect("logs");
            let meta: Arc<dyn stratus_store::MetaStore> = Arc::new(meta);
            let fe = Frontend::new(FrontendDeps {
                events: Arc::new(stratus_async_invoke::StoreQueue::new(Arc::clone(&meta))),
                meta,
                blobs: Arc::new(blobs),
                counting: Arc::new(stratus_counting::LocalCounting::new(1000)),
                invoker: Arc::new(Echo),
                worker: Arc::new(NoSandboxes),
                logs: Arc::new(logs),
                presign_key: b"fuzz".to_vec(),
                admin_key: AdminKey {
                    credentials: admin.clone(),
                    account: AccountId::default_local(),
                },
                interpreters: Interpreters {
                    python: Some("/usr/bin/python3".into()),
                    node: Some("/usr/bin/node".into()),
                },
                readiness: Readiness::default(),
            })
            .await
            .expect("frontend");
            stratus_frontend::router(fe)
        });
        Server {
            rt,
            app,
            admin,
            _dir: dir,
        }
    })
}

/// `YYYYMMDDTHHMMSSZ` now, as SigV4 dates are written.
fn amz_now() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// The operations fuzzed: method and path, `{}` standing for the name.
const ROUTES: &[(&str, &str)] = &[
    ("POST", "/2015-03-31/functions"),
    ("GET", "/2015-03-31/functions"),
    ("GET", "/2015-03-31/functions/{}"),
    ("DELETE", "/2015-03-31/functions/{}"),
    ("PUT", "/2015-03-31/functions/{}/configuration"),
    ("PUT", "/2015-03-31/functions/{}/code"),
    ("POST", "/2015-03-31/functions/{}/invocations"),
    (
        "POST",
        "/2021-11-15/functions/{}/response-streaming-invocations",
    ),
    ("PUT", "/2017-10-31/functions/{}/concurrency"),
    ("DELETE", "/2017-10-31/functions/{}/concurrency"),
    ("GET", "/2016-08-19/account-settings"),
    ("POST", "/2015-03-31/functions/{}/versions"),
    ("GET", "/2015-03-31/functions/{}/versions"),
    ("POST", "/2015-03-31/functions/{}/aliases"),
    ("GET", "/2015-03-31/functions/{}/aliases"),
    ("GET", "/2015-03-31/functions/{}/aliases/live"),
    ("PUT", "/2015-03-31/functions/{}/aliases/live"),
    ("DELETE", "/2015-03-31/functions/{}/aliases/live"),
    ("PUT", "/2019-09-25/functions/{}/event-invoke-config"),
    ("POST", "/2019-09-25/functions/{}/event-invoke-config"),
    ("GET", "/2019-09-25/functions/{}/event-invoke-config/list"),
    ("POST", "/2021-10-31/functions/{}/url"),
    ("PUT", "/2021-10-31/functions/{}/url"),
    ("GET", "/2021-10-31/functions/{}/urls"),
    ("POST", "/2018-10-31/layers/{}/versions"),
    ("GET", "/2018-10-31/layers/{}/versions"),
    ("GET", "/2018-10-31/layers"),
    ("POST", "/2017-03-31/tags/{}"),
    ("GET", "/2017-03-31/tags/{}"),
    ("PUT", "/2019-09-30/functions/{}/provisioned-concurrency"),
    ("GET", "/2019-09-30/functions/{}/provisioned-concurrency"),
    ("DELETE", "/2019-09-30/functions/{}/provisioned-concurrency"),
    ("GET", "/_stratus/logs/{}"),
    ("POST", "/_stratus/admin/accounts"),
    ("POST", "/_stratus/admin/keys"),
    ("DELETE", "/_stratus/admin/keys/{}"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let (method, template) = ROUTES[pick as usize % ROUTES.len()];
    // name \n query \n invocation-type \n log-type \n client-context \n body
    let mut parts = rest.splitn(6, |b| *b == b'\n');
    let mut text = || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let name = text();
    let query = text();
    let invocation_type = text();
    let log_type = text();
    let client_context = text();
    let body = parts.next().unwrap_or_default().to_vec();

    // Names go into the path as the AWS SDKs send them: every byte outside
    // the unreserved set percent-encoded.
    let encoded: String = name
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    let path = template.replace("{}", &encoded);
    let Ok(uri) = format!("{path}{}{query}", if query.is_empty() { "" } else { "?" })
        .parse::<axum::http::Uri>()
    else {
        return;
    };
    let query = uri.query().unwrap_or_default().to_owned();
    let method: Method = method.parse().expect("method");

    let srv = server();
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("localhost"));
    for (h, v) in [
        ("x-amz-invocation-type", &invocation_type),
        ("x-amz-log-type", &log_type),
        ("x-amz-client-context", &client_context),
    ] {
        if !v.is_empty()
            && let Ok(v) = HeaderValue::from_str(v)
        {
            headers.insert(h, v);
        }
    }
    let date = amz_now();
    let scope = Scope {
        date: date[..8].to_owned(),
        region: "us-east-1".into(),
        service: "lambda".into(),
    };
    sign_request(
        &srv.admin,
        &scope,
        &date,
        &method,
        uri.path(),
        &query,
        &mut headers,
        &body,
    );
    let mut req = Request::builder().method(method).uri(uri.clone());
    for (k, v) in &headers {
        req = req.header(k, v);
    }
    let req = req.body(Body::from(body)).expect("request");
    let (status, headers, bytes) = srv.rt.block_on(async {
        let resp = srv.app.clone().oneshot(req).await.expect("infallible");
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await.expect("body").to_bytes();
        (parts.status, parts.headers, bytes)
    });
    assert!(
        status.as_u16() < 500,
        "{uri}: {status}: {}",
        String::from_utf8_lossy(&bytes)
    );
    if !status.is_success() {
        assert!(
            headers.contains_key("x-amzn-errortype"),
            "{uri}: {status} without an error type"
        );
        let doc: serde_json::Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("{uri}: {status}: a body that is not JSON"));
        assert!(
            doc.get("message").or_else(|| doc.get("Message")).is_some(),
            "{uri}: {status}: no message: {doc}"
        );
    }
});
