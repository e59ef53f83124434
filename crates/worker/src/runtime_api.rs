//! The Lambda Runtime API (2018-06-01), served to one sandbox.
//!
//! Each sandbox gets its own server, on a listener that lives inside that
//! sandbox's network namespace: whatever connects here *is* that sandbox, so
//! no request can act on another sandbox's invocations.
//!
//! A response is buffered (read whole, up to 6 MiB + 100 bytes) unless the
//! runtime posts it with `Lambda-Runtime-Function-Response-Mode: streaming`:
//! then each frame of the chunked body is handed to the caller's
//! [`ResponseSink`] as it arrives (awaiting room in the channel, so a slow
//! caller slows the runtime), up to 20 MiB, and an error the runtime hits
//! mid-stream arrives in the trailers `Lambda-Runtime-Function-Error-Type`
//! and `Lambda-Runtime-Function-Error-Body`. A caller that cannot take a
//! stream (plain Invoke) gets the streamed body collected, as a buffered
//! response. See `docs/design/streaming.md`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use http_body_util::{BodyExt, Limited};
use serde_json::json;
use stratus_api::service::{InvokeRequest, ResponseSink, StreamPart};
use stratus_types::limits::{STREAMED_RESPONSE_MAX_BYTES, SYNC_RESPONSE_MAX_BYTES};
use tokio::sync::{mpsc, oneshot, watch};

/// An invocation waiting for the runtime to ask for it.
#[derive(Debug)]
pub struct Dispatch {
    pub req: InvokeRequest,
    pub timeout_ms: u64,
    /// Told the instant the runtime received the event, with its deadline.
    pub dispatched: oneshot::Sender<(Instant, u64)>,
    pub reply: oneshot::Sender<RuntimeReply>,
    /// Where a streamed response goes; `None` when the caller takes only a
    /// buffered one (a streamed response is then collected).
    pub sink: Option<ResponseSink>,
}

/// What the runtime answered for one invocation.
#[derive(Debug)]
pub enum RuntimeReply {
    Response(Bytes),
    Error {
        body: Bytes,
    },
    TooLarge,
    /// A streamed response ended; its body went to the sink. `error` is the
    /// error document when the runtime reported a mid-stream error.
    Streamed {
        error: Option<Bytes>,
    },
    /// A streamed response passed the streamed limit (20 MiB).
    StreamTooLarge,
}

#[derive(Debug)]
struct Inflight {
    request_id: String,
    reply: oneshot::Sender<RuntimeReply>,
    sink: Option<ResponseSink>,
}

/// Shared between the sandbox handle and its Runtime API server.
#[derive(Debug)]
pub struct RuntimeApiState {
    dispatch_rx: tokio::sync::Mutex<mpsc::Receiver<Dispatch>>,
    inflight: Mutex<Option<Inflight>>,
    /// Set when the runtime first asks for an invocation (init finished).
    pub ready: watch::Sender<Option<Instant>>,
    /// Set when the runtime reports an init error (the posted document).
    pub init_error: watch::Sender<Option<Bytes>>,
    initialized: AtomicBool,
}

impl RuntimeApiState {
    pub fn new(dispatch_rx: mpsc::Receiver<Dispatch>) -> Self {
        RuntimeApiState {
            dispatch_rx: tokio::sync::Mutex::new(dispatch_rx),
            inflight: Mutex::new(None),
            ready: watch::channel(None).0,
            init_error: watch::channel(None).0,
            initialized: AtomicBool::new(false),
        }
    }

    /// Forgets the in-flight invocation and the init state, for a runtime
    /// that is being replaced: its late answers are refused as unknown ids,
    /// and the next runtime's first `next` marks the end of its init.
    pub fn reset(&self) {
        *self.inflight() = None;
        self.initialized.store(false, Ordering::SeqCst);
        self.ready.send_replace(None);
        self.init_error.send_replace(None);
    }

    fn inflight(&self) -> std::sync::MutexGuard<'_, Option<Inflight>> {
        self.inflight.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The router of one sandbox's Runtime API.
pub fn router(state: Arc<RuntimeApiState>) -> Router {
    Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(response),
        )
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .fallback(|| async { Refusal::NotFound })
        .with_state(state)
}

/// Every way a Runtime API call can be refused, with the status and
/// `errorType` the Lambda Runtime API uses for it.
///
/// A response or error is checked like AWS's runtime API server (rapid)
/// checks it: first the runtime's state, then the id. With no invocation
/// open (before the first `next`, or a second answer to an invocation
/// already answered) it is out of order: 403 `InvalidStateTransition`.
/// With one open, an id that is not that invocation's (unknown, or an
/// earlier, finished one) is 400 `InvalidRequestID`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// A call out of order (e.g. `next` while an invocation is open, or a
    /// response with none open).
    InvalidStateTransition(&'static str),
    /// A response or error for an id that is not the open invocation's.
    InvalidRequestId,
    /// A response body over the 6 MiB + 100 bytes limit.
    TooLarge,
    /// A streamed response over the 20 MiB limit.
    StreamTooLarge,
    /// `Lambda-Runtime-Function-Response-Mode` other than `streaming`.
    InvalidResponseMode,
    /// The body could not be read.
    BadBody,
    /// The sandbox is being shut down.
    ShuttingDown,
    /// No such path.
    NotFound,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, kind, message) = match self {
            Refusal::InvalidStateTransition(m) => (
                StatusCode::FORBIDDEN,
                "InvalidStateTransition",
                m.to_owned(),
            ),
            Refusal::InvalidRequestId => (
                StatusCode::BAD_REQUEST,
                "InvalidRequestID",
                "Invalid request ID".to_owned(),
            ),
            Refusal::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                format!("Exceeded maximum allowed payload size ({SYNC_RESPONSE_MAX_BYTES} bytes)."),
            ),
            Refusal::StreamTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                format!(
                    "Exceeded maximum allowed payload size ({STREAMED_RESPONSE_MAX_BYTES} bytes)."
                ),
            ),
            Refusal::InvalidResponseMode => (
                StatusCode::BAD_REQUEST,
                "InvalidFunctionResponseMode",
                "Lambda-Runtime-Function-Response-Mode must be 'streaming' when present".to_owned(),
            ),
            Refusal::BadBody => (
                StatusCode::BAD_REQUEST,
                "InvalidRequest",
                "Could not read the request body".to_owned(),
            ),
            Refusal::ShuttingDown => (
                StatusCode::GONE,
                "SandboxShutdown",
                "The sandbox is shutting down".to_owned(),
            ),
            Refusal::NotFound => (
                StatusCode::NOT_FOUND,
                "NotFound",
                "Unknown Runtime API path".to_owned(),
            ),
        };
        (
            status,
            axum::Json(json!({"errorType": kind, "errorMessage": message})),
        )
            .into_response()
    }
}

fn accepted() -> Response {
    (StatusCode::ACCEPTED, axum::Json(json!({"status": "OK"}))).into_response()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

async fn next(State(st): State<Arc<RuntimeApiState>>) -> Response {
    if st.inflight().is_some() {
        return Refusal::InvalidStateTransition(
            "State transition from Running to Ready failed: the current invocation has no response yet",
        )
        .into_response();
    }
    if !st.initialized.swap(true, Ordering::SeqCst) {
        st.ready.send_replace(Some(Instant::now()));
    }
    let dispatch = {
        let mut rx = st.dispatch_rx.lock().await;
        rx.recv().await
    };
    let Some(d) = dispatch else {
        return Refusal::ShuttingDown.into_response();
    };
    let deadline = now_ms() + d.timeout_ms;
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value)
            && !value.is_empty()
        {
            headers.insert(name, v);
        }
    };
    set("lambda-runtime-aws-request-id", &d.req.request_id);
    set("lambda-runtime-deadline-ms", &deadline.to_string());
    set("lambda-runtime-invoked-function-arn", &d.req.invoked_arn);
    set("lambda-runtime-trace-id", &d.req.trace_id);
    if let Some(cc) = &d.req.client_context {
        set("lambda-runtime-client-context", cc);
    }
    set("content-type", "application/json");
    *st.inflight() = Some(Inflight {
        request_id: d.req.request_id.clone(),
        reply: d.reply,
        sink: d.sink,
    });
    let _ = d.dispatched.send((Instant::now(), deadline));
    (StatusCode::OK, headers, Body::from(d.req.payload)).into_response()
}

/// Which answer to an invocation the runtime is giving.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Response,
    Error,
}

/// Takes the in-flight invocation if `id` names it (see [`Refusal`] for
/// the order of the checks).
fn take_inflight(
    st: &RuntimeApiState,
    id: &str,
    answer: Answer,
) -> Result<(oneshot::Sender<RuntimeReply>, Option<ResponseSink>), Refusal> {
    let mut guard = st.inflight();
    match guard.take() {
        Some(inf) if inf.request_id == id => Ok((inf.reply, inf.sink)),
        Some(other) => {
            *guard = Some(other);
            Err(Refusal::InvalidRequestId)
        }
        None => Err(Refusal::InvalidStateTransition(match answer {
            Answer::Response => {
                "State transition to InvocationResponse failed: no invocation is open (call /runtime/invocation/next first)"
            }
            Answer::Error => {
                "State transition to InvocationErrorResponse failed: no invocation is open (call /runtime/invocation/next first)"
            }
        })),
    }
}

async fn read_limited(body: Body) -> Result<Bytes, Refusal> {
    match Limited::new(body, SYNC_RESPONSE_MAX_BYTES).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Refusal::TooLarge),
        Err(_) => Err(Refusal::BadBody),
    }
}

/// How the runtime is answering, from `Lambda-Runtime-Function-Response-Mode`.
fn response_mode(headers: &HeaderMap) -> Result<bool, Refusal> {
    match headers.get("lambda-runtime-function-response-mode") {
        None => Ok(false),
        Some(v) if v.as_bytes().eq_ignore_ascii_case(b"streaming") => Ok(true),
        Some(_) => Err(Refusal::InvalidResponseMode),
    }
}

async fn response(
    State(st): State<Arc<RuntimeApiState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let streaming = match response_mode(&headers) {
        Ok(s) => s,
        Err(refusal) => return refusal.into_response(),
    };
    let (reply, sink) = match take_inflight(&st, &id, Answer::Response) {
        Ok(r) => r,
        Err(refusal) => return refusal.into_response(),
    };
    if streaming {
        return stream_response(reply, sink, &headers, body).await;
    }
    match read_limited(body).await {
        Ok(bytes) => {
            let _ = reply.send(RuntimeReply::Response(bytes));
            accepted()
        }
        Err(refusal) => {
            let _ = reply.send(match refusal {
                Refusal::TooLarge => RuntimeReply::TooLarge,
                _ => RuntimeReply::Error {
                    body: Bytes::from_static(br#"{"errorType":"Runtime.InvalidResponse","errorMessage":"The runtime's response could not be read"}"#),
                },
            });
            refusal.into_response()
        }
    }
}

/// A streamed response: each data frame goes to the sink as it arrives
/// (or is collected, for a buffered caller); the trailers may carry an error.
async fn stream_response(
    reply: oneshot::Sender<RuntimeReply>,
    mut sink: Option<ResponseSink>,
    headers: &HeaderMap,
    mut body: Body,
) -> Response {
    let collect = sink.is_none();
    let limit = if collect {
        SYNC_RESPONSE_MAX_BYTES
    } else {
        STREAMED_RESPONSE_MAX_BYTES
    };
    if let Some(s) = &sink {
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if s.send(StreamPart::Begin { content_type }).await.is_err() {
            sink = None;
        }
    }
    let mut collected = Vec::new();
    let mut total = 0usize;
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(_) => {
                // The runtime's connection broke mid-body (it crashed or
                // was killed): the invoke ends by its exit or timeout.
                return Refusal::BadBody.into_response();
            }
        };
        let frame = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers = Some(t);
                }
                continue;
            }
        };
        total += frame.len();
        if total > limit {
            let _ = reply.send(if collect {
                RuntimeReply::TooLarge
            } else {
                RuntimeReply::StreamTooLarge
            });
            return if collect {
                Refusal::TooLarge
            } else {
                Refusal::StreamTooLarge
            }
            .into_response();
        }
        if collect {
            collected.extend_from_slice(&frame);
        } else if let Some(s) = &sink
            && s.send(StreamPart::Chunk(frame)).await.is_err()
        {
            tracing::debug!("the caller of a streamed response went away; discarding the rest");
            sink = None;
        }
    }
    let error = trailers.as_ref().and_then(stream_error);
    let _ = reply.send(match (collect, error) {
        (true, None) => RuntimeReply::Response(Bytes::from(collected)),
        (true, Some(body)) => RuntimeReply::Error { body },
        (false, error) => RuntimeReply::Streamed { error },
    });
    accepted()
}

/// The error document a runtime reported in a streamed response's
/// trailers: `Lambda-Runtime-Function-Error-Body` is base64 of the JSON
/// document (AWS's Node client) or, failing that, taken as the message.
fn stream_error(trailers: &HeaderMap) -> Option<Bytes> {
    let kind = trailers
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok());
    let body = trailers
        .get("lambda-runtime-function-error-body")
        .map(|v| v.as_bytes().to_vec());
    if kind.is_none() && body.is_none() {
        return None;
    }
    let kind = kind.unwrap_or("Runtime.StreamError");
    let body = body.unwrap_or_default();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(&body)
        .unwrap_or(body);
    if serde_json::from_slice::<serde_json::Value>(&decoded).is_ok_and(|v| v.is_object()) {
        return Some(Bytes::from(decoded));
    }
    let message = String::from_utf8_lossy(&decoded).into_owned();
    Some(Bytes::from(
        json!({"errorType": kind, "errorMessage": message}).to_string(),
    ))
}

/// An error document as the runtime posted it, or a wrapper when it is not JSON.
fn error_document(body: Bytes, headers: &HeaderMap) -> Bytes {
    if serde_json::from_slice::<serde_json::Value>(&body).is_ok_and(|v| v.is_object()) {
        return body;
    }
    let kind = headers
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("Runtime.Unknown");
    let message = String::from_utf8_lossy(&body).into_owned();
    Bytes::from(json!({"errorType": kind, "errorMessage": message}).to_string())
}

async fn error(
    State(st): State<Arc<RuntimeApiState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let reply = match take_inflight(&st, &id, Answer::Error) {
        Ok((r, _)) => r,
        Err(refusal) => return refusal.into_response(),
    };
    let body = read_limited(body).await.unwrap_or_else(|_| {
        Bytes::from_static(br#"{"errorType":"Runtime.Unknown","errorMessage":"The runtime's error document was too large"}"#)
    });
    let _ = reply.send(RuntimeReply::Error {
        body: error_document(body, &headers),
    });
    accepted()
}

async fn init_error(
    State(st): State<Arc<RuntimeApiState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if st.inflight().is_some() {
        return Refusal::InvalidStateTransition(
            "State transition from Running to InitError failed",
        )
        .into_response();
    }
    let body = read_limited(body).await.unwrap_or_else(|_| Bytes::new());
    st.init_error
        .send_replace(Some(error_document(body, &headers)));
    accepted()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    fn state() -> (Arc<RuntimeApiState>, mpsc::Sender<Dispatch>) {
        let (tx, rx) = mpsc::channel(1);
        (Arc::new(RuntimeApiState::new(rx)), tx)
    }

    fn req(id: &str) -> InvokeRequest {
        InvokeRequest {
            request_id: id.into(),
            payload: Bytes::from_static(b"{\"a\":1}"),
            invoked_arn: "arn:aws:lambda:us-east-1:000000000000:function:f".into(),
            client_context: None,
            trace_id: "Root=1-0-0;Parent=0;Sampled=0".into(),
        }
    }

    async fn call(
        st: &Arc<RuntimeApiState>,
        method: &str,
        uri: &str,
        body: &'static [u8],
    ) -> Response {
        let r = axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::from(body))
            .expect("request");
        router(Arc::clone(st)).oneshot(r).await.expect("infallible")
    }

    #[tokio::test]
    async fn next_then_response_delivers_the_result() {
        let (st, tx) = state();
        let (drx, rrx) = queue(&tx, "id-1", 3000).await;
        let resp = call(&st, "GET", "/2018-06-01/runtime/invocation/next", b"").await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["lambda-runtime-aws-request-id"], "id-1");
        let deadline: u64 = resp.headers()["lambda-runtime-deadline-ms"]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("number");
        assert!(deadline > now_ms() + 2000);
        assert_eq!(
            resp.headers()["lambda-runtime-invoked-function-arn"],
            "arn:aws:lambda:us-east-1:000000000000:function:f"
        );
        drx.await.expect("dispatched");
        // Unknown id is refused; the right one is accepted.
        let bad = call(
            &st,
            "POST",
            "/2018-06-01/runtime/invocation/other/response",
            b"1",
        )
        .await;
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
        let ok = call(
            &st,
            "POST",
            "/2018-06-01/runtime/invocation/id-1/response",
            b"{\"r\":2}",
        )
        .await;
        assert_eq!(ok.status(), StatusCode::ACCEPTED);
        match rrx.await.expect("reply") {
            RuntimeReply::Response(b) => assert_eq!(&b[..], b"{\"r\":2}"),
            other => panic!("unexpected {other:?}"),
        }
        // A second response for the answered invocation is out of order.
        let again = call(
            &st,
            "POST",
            "/2018-06-01/runtime/invocation/id-1/response",
            b"1",
        )
        .await;
        assert_eq!(again.status(), StatusCode::FORBIDDEN);
    }

    async fn error_type(resp: Response) -> String {
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        v["errorType"].as_str().unwrap_or_default().to_owned()
    }

    async fn expect_refusal(resp: Response, status: StatusCode, kind: &str) {
        assert_eq!(resp.status(), status);
        assert_eq!(error_type(resp).await, kind);
    }

    /// Queues one invocation for the runtime's `next`; returns the channels
    /// telling when it was dispatched and what the runtime answered.
    async fn queue(
        tx: &mpsc::Sender<Dispatch>,
        id: &str,
        timeout_ms: u64,
    ) -> (
        oneshot::Receiver<(Instant, u64)>,
        oneshot::Receiver<RuntimeReply>,
    ) {
        let (dtx, drx) = oneshot::channel();
        let (rtx, rrx) = oneshot::channel();
        tx.send(Dispatch {
            req: req(id),
            timeout_ms,
            dispatched: dtx,
            reply: rtx,
            sink: None,
        })
        .await
        .expect("send");
        (drx, rrx)
    }

    /// Hands the runtime one invocation through `next`; returns its reply channel.
    async fn open(
        st: &Arc<RuntimeApiState>,
        tx: &mpsc::Sender<Dispatch>,
        id: &str,
    ) -> oneshot::Receiver<RuntimeReply> {
        let (_drx, rrx) = queue(tx, id, 3000).await;
        let resp = call(st, "GET", "/2018-06-01/runtime/invocation/next", b"").await;
        assert_eq!(resp.status(), StatusCode::OK);
        rrx
    }

    #[tokio::test]
    async fn misbehaving_runtimes_get_the_lambda_errors() {
        let (st, tx) = state();
        let path = |id: &str, what: &str| format!("/2018-06-01/runtime/invocation/{id}/{what}");
        let post = |uri: String| {
            let st = Arc::clone(&st);
            async move {
                let r = axum::http::Request::builder()
                    .method("POST")
                    .uri(uri)
                    .body(Body::from("{}"))
                    .expect("request");
                router(st).oneshot(r).await.expect("infallible")
            }
        };
        // Before the first `next`: nothing to answer.
        for what in ["response", "error"] {
            let resp = post(path("early", what)).await;
            expect_refusal(resp, StatusCode::FORBIDDEN, "InvalidStateTransition").await;
        }

        // An unknown id while an invocation is open leaves it open.
        let first = open(&st, &tx, "id-1").await;
        for what in ["response", "error"] {
            let resp = post(path("not-this-one", what)).await;
            expect_refusal(resp, StatusCode::BAD_REQUEST, "InvalidRequestID").await;
        }
        // `next` again before answering is out of order.
        let resp = call(&st, "GET", "/2018-06-01/runtime/invocation/next", b"").await;
        expect_refusal(resp, StatusCode::FORBIDDEN, "InvalidStateTransition").await;
        // An error, then a response for the same invocation: the second is
        // out of order and the invoker keeps the error.
        assert_eq!(
            post(path("id-1", "error")).await.status(),
            StatusCode::ACCEPTED
        );
        let resp = post(path("id-1", "response")).await;
        expect_refusal(resp, StatusCode::FORBIDDEN, "InvalidStateTransition").await;
        assert!(matches!(
            first.await.expect("reply"),
            RuntimeReply::Error { .. }
        ));

        // The finished id while the next invocation is open: an invalid id.
        let second = open(&st, &tx, "id-2").await;
        let resp = post(path("id-1", "response")).await;
        expect_refusal(resp, StatusCode::BAD_REQUEST, "InvalidRequestID").await;
        // Two responses: the first wins, the second is out of order.
        assert_eq!(
            post(path("id-2", "response")).await.status(),
            StatusCode::ACCEPTED
        );
        let resp = post(path("id-2", "response")).await;
        expect_refusal(resp, StatusCode::FORBIDDEN, "InvalidStateTransition").await;
        assert!(matches!(
            second.await.expect("reply"),
            RuntimeReply::Response(b) if &b[..] == b"{}"
        ));
    }

    #[tokio::test]
    async fn reset_forgets_the_timed_out_invocation() {
        let (st, tx) = state();
        let (drx, rrx) = queue(&tx, "id-1", 1000).await;
        let resp = call(&st, "GET", "/2018-06-01/runtime/invocation/next", b"").await;
        assert_eq!(resp.status(), StatusCode::OK);
        drx.await.expect("dispatched");
        assert!(st.ready.borrow().is_some());

        // The invocation timed out and the runtime is being replaced.
        st.reset();
        assert!(st.ready.borrow().is_none());
        let late = call(
            &st,
            "POST",
            "/2018-06-01/runtime/invocation/id-1/response",
            b"1",
        )
        .await;
        // No invocation is open any more: out of order.
        assert_eq!(late.status(), StatusCode::FORBIDDEN);
        assert!(rrx.await.is_err(), "the late answer must not be delivered");

        // The new runtime's first `next` is not refused as out of order and
        // marks the end of its init.
        let (_drx, _rrx) = queue(&tx, "id-2", 1000).await;
        let resp = call(&st, "GET", "/2018-06-01/runtime/invocation/next", b"").await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["lambda-runtime-aws-request-id"], "id-2");
        assert!(st.ready.borrow().is_some());
    }

    #[tokio::test]
    async fn init_error_is_published() {
        let (st, _tx) = state();
        let mut rx = st.init_error.subscribe();
        let resp = call(
            &st,
            "POST",
            "/2018-06-01/runtime/init/error",
            b"{\"errorType\":\"Runtime.ImportModuleError\",\"errorMessage\":\"x\"}",
        )
        .await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        rx.changed().await.expect("changed");
        let doc = rx.borrow().clone().expect("document");
        assert!(String::from_utf8_lossy(&doc).contains("Runtime.ImportModuleError"));
    }

    /// Opens an invocation whose caller takes a stream.
    async fn open_streaming(
        st: &Arc<RuntimeApiState>,
        tx: &mpsc::Sender<Dispatch>,
        id: &str,
    ) -> (oneshot::Receiver<RuntimeReply>, mpsc::Receiver<StreamPart>) {
        let (dtx, _drx) = oneshot::channel();
        let (rtx, rrx) = oneshot::channel();
        let (sink, parts) = mpsc::channel(4);
        tx.send(Dispatch {
            req: req(id),
            timeout_ms: 3000,
            dispatched: dtx,
            reply: rtx,
            sink: Some(sink),
        })
        .await
        .expect("send");
        let resp = call(st, "GET", "/2018-06-01/runtime/invocation/next", b"").await;
        assert_eq!(resp.status(), StatusCode::OK);
        (rrx, parts)
    }

    /// A streamed POST whose body the test writes frame by frame.
    fn streaming_post(
        st: &Arc<RuntimeApiState>,
        id: &str,
        mode: &str,
    ) -> (
        http_body_util::channel::Sender<Bytes, std::convert::Infallible>,
        tokio::task::JoinHandle<Response>,
    ) {
        let (body_tx, body) =
            http_body_util::channel::Channel::<Bytes, std::convert::Infallible>::new(1);
        let r = axum::http::Request::builder()
            .method("POST")
            .uri(format!("/2018-06-01/runtime/invocation/{id}/response"))
            .header("lambda-runtime-function-response-mode", mode)
            .header(
                "content-type",
                "application/vnd.awslambda.http-integration-response",
            )
            .body(Body::new(body))
            .expect("request");
        let router = router(Arc::clone(st));
        let call = tokio::spawn(async move { router.oneshot(r).await.expect("infallible") });
        (body_tx, call)
    }

    #[tokio::test]
    async fn streamed_chunks_are_forwarded_in_order_before_the_end() {
        let (st, tx) = state();
        let (reply, mut parts) = open_streaming(&st, &tx, "id-s").await;
        let (mut body, call) = streaming_post(&st, "id-s", "streaming");
        assert_eq!(
            parts.recv().await,
            Some(StreamPart::Begin {
                content_type: Some("application/vnd.awslambda.http-integration-response".into())
            })
        );
        for chunk in ["one", "two", "three"] {
            body.send_data(Bytes::from(chunk)).await.expect("send");
            // Each chunk reaches the caller while the runtime is still writing.
            assert_eq!(
                parts.recv().await,
                Some(StreamPart::Chunk(Bytes::from(chunk)))
            );
            assert!(!call.is_finished());
        }
        drop(body);
        let resp = call.await.expect("joined");
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        assert!(matches!(
            reply.await.expect("reply"),
            RuntimeReply::Streamed { error: None }
        ));
        assert_eq!(parts.recv().await, None, "the sink is dropped at the end");
    }

    #[tokio::test]
    async fn a_mid_stream_error_arrives_in_the_trailers() {
        let (st, tx) = state();
        let (reply, mut parts) = open_streaming(&st, &tx, "id-t").await;
        let (mut body, call) = streaming_post(&st, "id-t", "streaming");
        body.send_data(Bytes::from_static(b"partial"))
            .await
            .expect("send");
        let doc = br#"{"errorType":"Error","errorMessage":"boom mid-stream"}"#;
        let mut trailers = HeaderMap::new();
        trailers.insert(
            "lambda-runtime-function-error-type",
            HeaderValue::from_static("Error"),
        );
        let b64 = base64::engine::general_purpose::STANDARD.encode(doc);
        trailers.insert(
            "lambda-runtime-function-error-body",
            HeaderValue::from_str(&b64).expect("ascii"),
        );
        body.send_trailers(trailers).await.expect("trailers");
        drop(body);
        assert_eq!(call.await.expect("joined").status(), StatusCode::ACCEPTED);
        assert!(matches!(parts.recv().await, Some(StreamPart::Begin { .. })));
        assert_eq!(
            parts.recv().await,
            Some(StreamPart::Chunk(Bytes::from_static(b"partial")))
        );
        match reply.await.expect("reply") {
            RuntimeReply::Streamed { error: Some(e) } => assert_eq!(&e[..], doc),
            other => panic!("unexpected {other:?}"),
        }

        // The Rust crate's plain-text body and type: wrapped in a document.
        let mut t = HeaderMap::new();
        t.insert(
            "lambda-runtime-function-error-type",
            HeaderValue::from_static("Runtime.StreamError"),
        );
        t.insert(
            "lambda-runtime-function-error-body",
            HeaderValue::from_static("not base64!"),
        );
        let doc: serde_json::Value =
            serde_json::from_slice(&stream_error(&t).expect("an error")).expect("json");
        assert_eq!(doc["errorType"], "Runtime.StreamError");
        assert_eq!(doc["errorMessage"], "not base64!");
        assert!(stream_error(&HeaderMap::new()).is_none());
    }

    #[tokio::test]
    async fn a_bad_response_mode_is_refused_and_the_invocation_stays_open() {
        let (st, tx) = state();
        let rrx = open(&st, &tx, "id-m").await;
        let r = axum::http::Request::builder()
            .method("POST")
            .uri("/2018-06-01/runtime/invocation/id-m/response")
            .header("lambda-runtime-function-response-mode", "buffered-please")
            .body(Body::from("{}"))
            .expect("request");
        let resp = router(Arc::clone(&st))
            .oneshot(r)
            .await
            .expect("infallible");
        expect_refusal(resp, StatusCode::BAD_REQUEST, "InvalidFunctionResponseMode").await;
        let ok = call(
            &st,
            "POST",
            "/2018-06-01/runtime/invocation/id-m/response",
            b"1",
        )
        .await;
        assert_eq!(ok.status(), StatusCode::ACCEPTED);
        assert!(matches!(rrx.await.expect("reply"), RuntimeReply::Response(b) if &b[..] == b"1"));
    }

    #[tokio::test]
    async fn a_stream_to_a_buffered_caller_is_collected() {
        let (st, tx) = state();
        let rrx = open(&st, &tx, "id-c").await;
        let (mut body, call) = streaming_post(&st, "id-c", "streaming");
        body.send_data(Bytes::from_static(b"ab"))
            .await
            .expect("send");
        body.send_data(Bytes::from_static(b"cd"))
            .await
            .expect("send");
        drop(body);
        assert_eq!(call.await.expect("joined").status(), StatusCode::ACCEPTED);
        assert!(
            matches!(rrx.await.expect("reply"), RuntimeReply::Response(b) if &b[..] == b"abcd")
        );
    }

    #[tokio::test]
    async fn a_caller_that_goes_away_does_not_stop_the_runtime() {
        let (st, tx) = state();
        let (reply, parts) = open_streaming(&st, &tx, "id-g").await;
        drop(parts);
        let (mut body, call) = streaming_post(&st, "id-g", "streaming");
        for _ in 0..10 {
            body.send_data(Bytes::from_static(b"lost"))
                .await
                .expect("send");
        }
        drop(body);
        assert_eq!(call.await.expect("joined").status(), StatusCode::ACCEPTED);
        assert!(matches!(
            reply.await.expect("reply"),
            RuntimeReply::Streamed { error: None }
        ));
    }

    #[test]
    fn non_json_error_bodies_are_wrapped() {
        let mut h = HeaderMap::new();
        h.insert(
            "lambda-runtime-function-error-type",
            HeaderValue::from_static("Runtime.Crash"),
        );
        let doc = error_document(Bytes::from_static(b"plain text"), &h);
        let v: serde_json::Value = serde_json::from_slice(&doc).expect("json");
        assert_eq!(v["errorType"], "Runtime.Crash");
        assert_eq!(v["errorMessage"], "plain text");
    }
}
