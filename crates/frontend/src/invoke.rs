//! The Invoke operation (RequestResponse, DryRun, and Event, which
//! `events` queues).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use http_body_util::{BodyExt, Limited};
use stratus_api::service::{FunctionVersionSpec, InvokeRequest, InvokeResponse};
use stratus_api::{ErrorCode, LambdaError};
use stratus_async_invoke::EVENT_PAYLOAD_MAX_BYTES;
use stratus_types::limits::SYNC_REQUEST_MAX_BYTES;
use tracing::Instrument;

use crate::auth::Caller;
use crate::error::ApiResult;
use crate::versions::resolve_target;
use crate::{Frontend, FunctionRecord};

/// The largest X-Amz-Client-Context Lambda accepts (base64 text).
const CLIENT_CONTEXT_MAX: usize = 3583;

pub(crate) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub(crate) fn too_large() -> LambdaError {
    LambdaError::new(
        ErrorCode::RequestEntityTooLarge,
        format!(
            "Request must be smaller than {SYNC_REQUEST_MAX_BYTES} bytes for the InvokeFunction operation"
        ),
    )
}

/// What runs a function that can be invoked now: refused while it is
/// `Pending` (Lambda's ResourceConflictException), or if its runtime cannot
/// run here.
pub(crate) fn runnable_spec(
    found: &crate::registry::Cached,
) -> Result<Arc<FunctionVersionSpec>, LambdaError> {
    let record = &found.record;
    if record.state == "Pending" {
        return Err(LambdaError::conflict(
            "The operation cannot be performed at this time. The function is currently in the following state: Pending",
        ));
    }
    found.spec.clone().ok_or_else(|| {
        LambdaError::service(format!(
            "function {} has an unrunnable runtime {}",
            record.name, record.runtime
        ))
    })
}

/// An Event invoke's payload over the asynchronous limit.
fn event_too_large() -> LambdaError {
    LambdaError::new(
        ErrorCode::RequestEntityTooLarge,
        format!(
            "Request must be smaller than {EVENT_PAYLOAD_MAX_BYTES} bytes for the InvokeFunction operation"
        ),
    )
}

pub(crate) async fn read_payload(body: Body, event: bool) -> Result<Bytes, LambdaError> {
    let limit = if event {
        EVENT_PAYLOAD_MAX_BYTES
    } else {
        SYNC_REQUEST_MAX_BYTES
    };
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(if event {
            event_too_large()
        } else {
            too_large()
        }),
        Err(e) => Err(LambdaError::new(
            ErrorCode::InvalidRequestContent,
            format!("Could not read request body: {e}"),
        )),
    }
}

pub(crate) fn trace_id() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let r = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "Root=1-{now:08x}-{};Parent={};Sampled=0",
        &r[..24],
        &r[16..32]
    )
}

/// `X-Amz-Log-Type`: whether the caller wants the log tail.
pub(crate) fn log_type(headers: &HeaderMap) -> Result<bool, LambdaError> {
    match header(headers, "x-amz-log-type") {
        None | Some("None") => Ok(false),
        Some("Tail") => Ok(true),
        Some(other) => Err(LambdaError::validation(
            other,
            "logType",
            "Member must satisfy enum value set: [None, Tail]",
        )),
    }
}

/// `X-Amz-Client-Context`, decoded: base64 of a JSON object.
pub(crate) fn client_context(headers: &HeaderMap) -> Result<Option<String>, LambdaError> {
    match header(headers, "x-amz-client-context") {
        None => Ok(None),
        Some(cc) if cc.len() > CLIENT_CONTEXT_MAX => Err(LambdaError::invalid(
            "Client context must be smaller than 3583 bytes.",
        )),
        Some(cc) => base64::engine::general_purpose::STANDARD
            .decode(cc)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .filter(|s| serde_json::from_str::<serde_json::Value>(s).is_ok_and(|v| v.is_object()))
            .map(Some)
            .ok_or_else(|| {
                LambdaError::invalid("Client context must be a valid Base64-encoded JSON object.")
            }),
    }
}

/// An invoke payload as the function gets it: empty → `{}`, else it must
/// be JSON (a large one is checked on the blocking pool, [`crate::offload`]).
pub(crate) async fn json_payload(payload: Bytes) -> Result<Bytes, LambdaError> {
    crate::offload::cpu_bound(payload.len(), move || check_json(payload)).await?
}

fn check_json(payload: Bytes) -> Result<Bytes, LambdaError> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Ok(Bytes::from_static(b"{}"));
    }
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&payload) {
        return Err(LambdaError::new(
            ErrorCode::InvalidRequestContent,
            format!(
                "Could not parse request body into json: Could not parse payload into json: {e}"
            ),
        ));
    }
    Ok(payload)
}

pub async fn invoke(
    State(fe): State<Arc<Frontend>>,
    headers: HeaderMap,
    c: Caller,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: Body,
) -> ApiResult<Response> {
    let request_id = uuid::Uuid::new_v4().to_string();
    let invocation_type = header(&headers, "x-amz-invocation-type").unwrap_or("RequestResponse");
    let (dry_run, event) = match invocation_type {
        "RequestResponse" => (false, false),
        "DryRun" => (true, false),
        "Event" => (false, true),
        other => {
            return Err(LambdaError::validation(
                other,
                "invocationType",
                "Member must satisfy enum value set: [Event, RequestResponse, DryRun]",
            )
            .into());
        }
    };
    let want_tail = log_type(&headers)?;
    let client_context = client_context(&headers)?;
    let qualifier = q.get("Qualifier").map(String::as_str);
    let target = resolve_target(&fe, &c, &name, qualifier, true)?;
    let found = &target.found;
    let payload = json_payload(read_payload(body, event).await?).await?;
    let record = &found.record;
    let spec = runnable_spec(found)?;
    if event {
        return Ok(crate::events::accept(
            &fe,
            found,
            qualifier,
            payload,
            request_id,
            client_context,
        )
        .await?);
    }
    if dry_run {
        return Ok(with_request_id(
            StatusCode::NO_CONTENT.into_response(),
            &request_id,
        ));
    }
    let invoked_arn = target.arn();
    let req = InvokeRequest {
        request_id: request_id.clone(),
        payload,
        invoked_arn,
        client_context,
        trace_id: trace_id(),
    };
    let span = tracing::info_span!("invoke", function = %record.name, version = %record.version, request_id = %request_id);
    let result = admit_and_run(&fe, record, spec, req).instrument(span).await;
    fe.metrics
        .record_invoke(&record.account, &record.name, &result);
    let out = result?;
    let mut resp = (StatusCode::OK, out.payload).into_response();
    let h = resp.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(&out.executed_version) {
        h.insert("x-amz-executed-version", v);
    }
    if let Some(fe_err) = out.function_error {
        h.insert(
            "x-amz-function-error",
            HeaderValue::from_static(fe_err.header()),
        );
    }
    if want_tail {
        let tail = tail(&out.log);
        let b64 = base64::engine::general_purpose::STANDARD.encode(tail.as_bytes());
        if let Ok(v) = HeaderValue::from_str(&b64) {
            h.insert("x-amz-log-result", v);
        }
    }
    Ok(with_request_id(resp, &request_id))
}

/// Takes a concurrency permit from the counting service and runs the
/// invocation; the permit is released when it ends. Queued events run
/// through here too (`events`).
pub(crate) async fn admit_and_run(
    fe: &Frontend,
    record: &FunctionRecord,
    spec: Arc<FunctionVersionSpec>,
    req: InvokeRequest,
) -> Result<InvokeResponse, LambdaError> {
    let _permit = fe
        .deps
        .counting
        .acquire(&record.account, &record.name)
        .await?;
    fe.deps.invoker.invoke(spec, req).await
}

/// What `X-Amz-Log-Type: Tail` returns: the last 4 KB of the invocation's log.
const TAIL_BYTES: usize = 4096;

pub(crate) fn tail(log: &str) -> &str {
    if log.len() <= TAIL_BYTES {
        return log;
    }
    let mut start = log.len() - TAIL_BYTES;
    while !log.is_char_boundary(start) {
        start += 1;
    }
    &log[start..]
}

pub(crate) fn with_request_id(mut resp: Response, id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut().insert("x-amzn-requestid", v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_is_bounded_and_a_suffix() {
        let log = "é".repeat(5000);
        let t = tail(&log);
        assert!(t.len() <= TAIL_BYTES);
        assert!(log.ends_with(t));
        assert_eq!(tail("short"), "short");
    }

    #[test]
    fn trace_ids_have_xray_shape() {
        let t = trace_id();
        assert!(t.starts_with("Root=1-"));
        assert!(t.contains(";Parent="));
        assert!(t.ends_with(";Sampled=0"));
    }
}
