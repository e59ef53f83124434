//! Streamed invocations: InvokeWithResponseStream
//! (`POST /2021-11-15/functions/{name}/response-streaming-invocations`) and
//! the machinery function URLs in `RESPONSE_STREAM` mode share with it.
//!
//! An invocation whose caller takes a stream runs in its own task, which
//! holds the concurrency permit until the invocation ends (also when the
//! client went away: the function is not stopped, as on Lambda). The task
//! calls [`Invoker::invoke_streaming`] with the sending half of a bounded
//! channel; the HTTP response body reads the other half. [`start`] waits for
//! whichever comes first: the runtime beginning a streamed answer (the
//! response head can go out), or the invocation ending (a throttle or a
//! missing function is then an ordinary HTTP error, and a buffered answer
//! is sent as chunks).
//!
//! InvokeWithResponseStream frames its body in the AWS event-stream format
//! (`application/vnd.amazon.eventstream`), encoded by `aws-smithy-eventstream`
//! (AWS's own implementation, which computes both CRC32s): one
//! `PayloadChunk` event per chunk, then one `InvokeComplete` event carrying
//! the error (`ErrorCode`/`ErrorDetails`) and the log tail (`LogResult`).
//! Design note: `docs/design/streaming.md`.
//!
//! [`Invoker::invoke_streaming`]: stratus_api::service::Invoker::invoke_streaming

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue as EventHeaderValue, Message};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use http_body::Frame;
use serde_json::Value;
use stratus_api::LambdaError;
#[cfg(test)]
use stratus_api::service::FunctionError;
use stratus_api::service::{
    FunctionVersionSpec, InvokeRequest, InvokeResponse, RESPONSE_SINK_CAPACITY, StreamPart,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::auth::Caller;
use crate::error::ApiResult;
use crate::invoke::{
    client_context, header, json_payload, log_type, read_payload, runnable_spec, tail, trace_id,
    with_request_id,
};
use crate::versions::resolve_target;
use crate::{Frontend, FunctionRecord};

/// A buffered answer is sent in `PayloadChunk`s of at most this size.
const CHUNK_BYTES: usize = 64 * 1024;

/// How an invocation whose caller takes a stream got under way.
pub(crate) enum Started {
    /// It ended without streaming: a buffered answer, or an error before
    /// anything was sent (throttled, no sandbox, ...).
    Done(Result<InvokeResponse, LambdaError>),
    /// The runtime is streaming its answer.
    Streaming {
        /// The `Content-Type` the runtime declared.
        content_type: Option<String>,
        parts: Parts,
    },
}

/// Takes a concurrency permit (a throttle is an error here, before any
/// response) and starts the invocation in its own task; returns once the
/// runtime began streaming or the invocation ended.
pub(crate) async fn start(
    fe: &Arc<Frontend>,
    record: &FunctionRecord,
    spec: Arc<FunctionVersionSpec>,
    req: InvokeRequest,
) -> Result<Started, LambdaError> {
    let permit = match fe
        .deps
        .counting
        .acquire(&record.account, &record.name)
        .await
    {
        Ok(p) => p,
        Err(e) => {
            fe.metrics
                .record_invoke(&record.account, &record.name, &Err(e.clone()));
            return Err(e);
        }
    };
    let (tx, mut rx) = mpsc::channel(RESPONSE_SINK_CAPACITY);
    let span = tracing::info_span!("invoke_stream", function = %record.name, version = %record.version, request_id = %req.request_id);
    let task_fe = Arc::clone(fe);
    let (account, name) = (record.account.clone(), record.name.clone());
    let mut task = tokio::spawn(
        async move {
            let _permit = permit;
            let result = task_fe.deps.invoker.invoke_streaming(spec, req, tx).await;
            task_fe.metrics.record_invoke(&account, &name, &result);
            result
        }
        .instrument(span),
    );
    tokio::select! {
        // Parts are sent before the invocation ends: look at them first.
        biased;
        part = rx.recv() => match part {
            Some(StreamPart::Begin { content_type }) => Ok(Started::Streaming {
                content_type,
                parts: Parts::new(rx, task),
            }),
            Some(StreamPart::Chunk(first)) => {
                let mut parts = Parts::new(rx, task);
                parts.pending.push_back(first);
                Ok(Started::Streaming { content_type: None, parts })
            }
            None => Ok(Started::Done(joined(task.await))),
        },
        done = &mut task => Ok(Started::Done(joined(done))),
    }
}

fn joined(
    r: Result<Result<InvokeResponse, LambdaError>, tokio::task::JoinError>,
) -> Result<InvokeResponse, LambdaError> {
    r.unwrap_or_else(|e| Err(LambdaError::service(format!("the invocation failed: {e}"))))
}

/// What a streamed answer yields, in order.
#[derive(Debug)]
pub(crate) enum Item {
    Chunk(Bytes),
    /// The invocation ended (after every chunk).
    End(Result<InvokeResponse, LambdaError>),
}

/// The receiving end of a streamed answer: its chunks, then how the
/// invocation ended. Dropping it (the client went away) leaves the
/// invocation running to its end; the runtime's further output is dropped.
pub(crate) struct Parts {
    pending: VecDeque<Bytes>,
    rx: Option<mpsc::Receiver<StreamPart>>,
    task: Option<JoinHandle<Result<InvokeResponse, LambdaError>>>,
    ended: Option<Result<InvokeResponse, LambdaError>>,
}

impl std::fmt::Debug for Parts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parts")
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Parts {
    fn new(
        rx: mpsc::Receiver<StreamPart>,
        task: JoinHandle<Result<InvokeResponse, LambdaError>>,
    ) -> Self {
        Parts {
            pending: VecDeque::new(),
            rx: Some(rx),
            task: Some(task),
            ended: None,
        }
    }

    pub(crate) fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        loop {
            if let Some(b) = self.pending.pop_front() {
                return Poll::Ready(Some(Item::Chunk(b)));
            }
            if let Some(end) = self.ended.take() {
                return Poll::Ready(Some(Item::End(end)));
            }
            if let Some(rx) = &mut self.rx {
                match rx.poll_recv(cx) {
                    Poll::Ready(Some(StreamPart::Chunk(b))) if b.is_empty() => continue,
                    Poll::Ready(Some(StreamPart::Chunk(b))) => {
                        return Poll::Ready(Some(Item::Chunk(b)));
                    }
                    Poll::Ready(Some(StreamPart::Begin { .. })) => continue,
                    Poll::Ready(None) => self.rx = None,
                    Poll::Pending => {}
                }
            }
            let Some(task) = &mut self.task else {
                return Poll::Ready(None);
            };
            let done = std::task::ready!(Pin::new(task).poll(cx));
            self.task = None;
            // The invocation ended (a timeout or a crash may end it while
            // the runtime's handler still holds the sender): what was queued
            // still goes out, anything later is dropped.
            if let Some(mut rx) = self.rx.take() {
                while let Ok(part) = rx.try_recv() {
                    if let StreamPart::Chunk(b) = part {
                        self.pending.push_back(b);
                    }
                }
            }
            self.ended = Some(joined(done));
        }
    }

    /// The next item.
    pub(crate) async fn next(&mut self) -> Option<Item> {
        std::future::poll_fn(|cx| self.poll_item(cx)).await
    }
}

/// One event-stream message with the three headers Lambda's events carry.
fn event(event_type: &'static str, content_type: &'static str, payload: Bytes) -> Bytes {
    let message = Message::new_from_parts(
        vec![
            Header::new(":event-type", EventHeaderValue::String(event_type.into())),
            Header::new(
                ":content-type",
                EventHeaderValue::String(content_type.into()),
            ),
            Header::new(":message-type", EventHeaderValue::String("event".into())),
        ],
        payload,
    );
    let mut out = Vec::with_capacity(message.payload().len() + 100);
    if let Err(e) = write_message_to(&message, &mut out) {
        // Only a payload over the format's 16 MiB message limit fails;
        // chunks are far smaller.
        tracing::warn!(error = %e, "could not frame an event");
        return Bytes::new();
    }
    Bytes::from(out)
}

/// A `PayloadChunk` event.
pub(crate) fn payload_chunk(payload: Bytes) -> Bytes {
    event("PayloadChunk", "application/octet-stream", payload)
}

/// The `InvokeComplete` event for how the invocation ended.
pub(crate) fn invoke_complete(
    result: &Result<InvokeResponse, LambdaError>,
    want_tail: bool,
) -> Bytes {
    let mut doc = serde_json::Map::new();
    match result {
        Ok(out) => {
            if let Some(kind) = out.function_error {
                let (code, details) = error_fields(&out.payload, kind.error_type());
                doc.insert("ErrorCode".into(), Value::String(code));
                doc.insert("ErrorDetails".into(), Value::String(details));
            }
            if want_tail {
                let b64 = base64::engine::general_purpose::STANDARD.encode(tail(&out.log));
                doc.insert("LogResult".into(), Value::String(b64));
            }
        }
        Err(e) => {
            doc.insert(
                "ErrorCode".into(),
                Value::String(e.code.type_name().to_owned()),
            );
            doc.insert("ErrorDetails".into(), Value::String(e.message.clone()));
        }
    }
    event(
        "InvokeComplete",
        "application/json",
        Bytes::from(Value::Object(doc).to_string()),
    )
}

/// `ErrorCode` and `ErrorDetails` from an error document: its `errorType`
/// and `errorMessage` (the platform's type and the raw document otherwise).
fn error_fields(payload: &Bytes, fallback: &str) -> (String, String) {
    let doc = serde_json::from_slice::<Value>(payload).ok();
    let field = |k: &str| {
        doc.as_ref()
            .and_then(|d| d.get(k))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    (
        field("errorType").unwrap_or_else(|| fallback.to_owned()),
        field("errorMessage").unwrap_or_else(|| String::from_utf8_lossy(payload).into_owned()),
    )
}

/// The event-stream body of an InvokeWithResponseStream answer.
struct EventStreamBody {
    parts: Option<Parts>,
    /// Frames ready to go (a buffered answer's chunks and its end).
    ready: VecDeque<Bytes>,
    want_tail: bool,
}

impl http_body::Body for EventStreamBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(b) = self.ready.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        let want_tail = self.want_tail;
        let Some(parts) = &mut self.parts else {
            return Poll::Ready(None);
        };
        match std::task::ready!(parts.poll_item(cx)) {
            Some(Item::Chunk(b)) => Poll::Ready(Some(Ok(Frame::data(payload_chunk(b))))),
            Some(Item::End(result)) => {
                self.parts = None;
                Poll::Ready(Some(Ok(Frame::data(invoke_complete(&result, want_tail)))))
            }
            None => {
                self.parts = None;
                Poll::Ready(None)
            }
        }
    }
}

/// The events of a buffered answer: its payload in chunks (none for a
/// function error, whose document goes in `InvokeComplete`), then the end.
fn buffered_events(
    result: &Result<InvokeResponse, LambdaError>,
    want_tail: bool,
) -> VecDeque<Bytes> {
    let mut out = VecDeque::new();
    if let Ok(r) = result
        && r.function_error.is_none()
    {
        let mut rest = r.payload.clone();
        while !rest.is_empty() {
            let n = rest.len().min(CHUNK_BYTES);
            out.push_back(payload_chunk(rest.split_to(n)));
        }
    }
    out.push_back(invoke_complete(result, want_tail));
    out
}

/// InvokeWithResponseStream.
pub async fn invoke_with_response_stream(
    State(fe): State<Arc<Frontend>>,
    headers: HeaderMap,
    c: Caller,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: Body,
) -> ApiResult<Response> {
    let request_id = uuid::Uuid::new_v4().to_string();
    let dry_run = match header(&headers, "x-amz-invocation-type").unwrap_or("RequestResponse") {
        "RequestResponse" => false,
        "DryRun" => true,
        other => {
            return Err(LambdaError::validation(
                other,
                "invocationType",
                "Member must satisfy enum value set: [RequestResponse, DryRun]",
            )
            .into());
        }
    };
    let want_tail = log_type(&headers)?;
    let client_context = client_context(&headers)?;
    let qualifier = q.get("Qualifier").map(String::as_str);
    let target = resolve_target(&fe, &c, &name, qualifier, true)?;
    let payload = json_payload(read_payload(body, false).await?).await?;
    let found = &target.found;
    let record = &found.record;
    let spec = runnable_spec(found)?;
    if dry_run {
        return Ok(with_request_id(
            StatusCode::NO_CONTENT.into_response(),
            &request_id,
        ));
    }
    let req = InvokeRequest {
        request_id: request_id.clone(),
        payload,
        invoked_arn: target.arn(),
        client_context,
        trace_id: trace_id(),
    };
    let body = match start(&fe, record, spec, req).await? {
        Started::Done(result) => {
            // An error before the function ran (no room, no sandbox) is
            // the operation's error, as for Invoke.
            let result = Ok(result?);
            EventStreamBody {
                parts: None,
                ready: buffered_events(&result, want_tail),
                want_tail,
            }
        }
        Started::Streaming { parts, .. } => EventStreamBody {
            parts: Some(parts),
            ready: VecDeque::new(),
            want_tail,
        },
    };
    let mut resp = Response::new(Body::new(body));
    let h = resp.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static("application/vnd.amazon.eventstream"),
    );
    if let Ok(v) = HeaderValue::from_str(&record.version) {
        h.insert("x-amz-executed-version", v);
    }
    Ok(with_request_id(resp, &request_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder, read_message_from};
    use serde_json::json;

    fn header_str(m: &Message, name: &str) -> String {
        m.headers()
            .iter()
            .find(|h| h.name().as_str() == name)
            .and_then(|h| h.value().as_string().ok())
            .map(|s| s.as_str().to_owned())
            .unwrap_or_default()
    }

    fn response(payload: &'static [u8], error: Option<FunctionError>) -> InvokeResponse {
        InvokeResponse {
            payload: Bytes::from_static(payload),
            function_error: error,
            executed_version: "$LATEST".into(),
            log: "START RequestId: r\nEND RequestId: r\n".into(),
            cold_start: false,
            duration: std::time::Duration::ZERO,
            init_duration: None,
            provisioned: false,
        }
    }

    #[test]
    fn payload_chunks_round_trip_with_checked_crcs() {
        let framed = payload_chunk(Bytes::from_static(b"hello \x00 world"));
        // Prelude: total length, headers length, prelude CRC32.
        let total = u32::from_be_bytes(framed[0..4].try_into().expect("4 bytes"));
        assert_eq!(total as usize, framed.len());
        let prelude_crc = u32::from_be_bytes(framed[8..12].try_into().expect("4 bytes"));
        assert_eq!(prelude_crc, crc32fast::hash(&framed[0..8]));
        let n = framed.len();
        let message_crc = u32::from_be_bytes(framed[n - 4..].try_into().expect("4 bytes"));
        assert_eq!(message_crc, crc32fast::hash(&framed[..n - 4]));

        let m = read_message_from(framed.clone()).expect("decodes");
        assert_eq!(&m.payload()[..], b"hello \x00 world");
        assert_eq!(header_str(&m, ":event-type"), "PayloadChunk");
        assert_eq!(header_str(&m, ":message-type"), "event");
        assert_eq!(header_str(&m, ":content-type"), "application/octet-stream");

        // One flipped payload bit: the message CRC no longer matches.
        let mut bad = framed.to_vec();
        bad[n - 6] ^= 1;
        assert!(read_message_from(Bytes::from(bad)).is_err());
        // A flipped length: the prelude CRC no longer matches.
        let mut bad = framed.to_vec();
        bad[3] ^= 1;
        assert!(read_message_from(Bytes::from(bad)).is_err());
    }

    #[test]
    fn invoke_complete_carries_error_and_log() {
        let ok = invoke_complete(&Ok(response(b"{}", None)), true);
        let m = read_message_from(ok).expect("decodes");
        assert_eq!(header_str(&m, ":event-type"), "InvokeComplete");
        let doc: Value = serde_json::from_slice(m.payload()).expect("json");
        assert!(doc.get("ErrorCode").is_none());
        let log = base64::engine::general_purpose::STANDARD
            .decode(doc["LogResult"].as_str().expect("log"))
            .expect("base64");
        assert!(String::from_utf8_lossy(&log).contains("END RequestId: r"));

        let failed = response(
            br#"{"errorType":"Error","errorMessage":"boom"}"#,
            Some(FunctionError::Unhandled),
        );
        let m = read_message_from(invoke_complete(&Ok(failed), false)).expect("decodes");
        let doc: Value = serde_json::from_slice(m.payload()).expect("json");
        assert_eq!(doc, json!({"ErrorCode": "Error", "ErrorDetails": "boom"}));
    }

    #[test]
    fn a_buffered_answer_is_chunked_and_decodes_in_order() {
        let big = vec![b'x'; CHUNK_BYTES * 2 + 10];
        let mut r = response(b"", None);
        r.payload = Bytes::from(big.clone());
        let events = buffered_events(&Ok(r), false);
        assert_eq!(events.len(), 4);
        // Decode the concatenation as a client reads it, in odd pieces.
        let all: Vec<u8> = events.iter().flat_map(|b| b.to_vec()).collect();
        let mut decoder = MessageFrameDecoder::new();
        let mut buf = bytes::BytesMut::new();
        let mut payload = Vec::new();
        let mut kinds = Vec::new();
        for piece in all.chunks(7000) {
            buf.extend_from_slice(piece);
            while let DecodedFrame::Complete(m) = decoder.decode_frame(&mut buf).expect("frame") {
                kinds.push(header_str(&m, ":event-type"));
                if kinds.last().is_some_and(|k| k == "PayloadChunk") {
                    payload.extend_from_slice(m.payload());
                }
            }
        }
        assert_eq!(payload, big);
        assert_eq!(kinds.last().map(String::as_str), Some("InvokeComplete"));
        assert_eq!(kinds.len(), 4);

        // A function error: no chunk, the error in InvokeComplete.
        let failed = response(
            br#"{"errorType":"ValueError","errorMessage":"boom"}"#,
            Some(FunctionError::Unhandled),
        );
        assert_eq!(buffered_events(&Ok(failed), false).len(), 1);
    }
}
