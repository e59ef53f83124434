//! Asynchronous invocation, the front end's side: accepting an `Event`
//! invoke (queued durably, then 202), and running queued events for the
//! dispatcher of `stratus-async-invoke` through the same path as a
//! synchronous invoke ([`EventTarget`]: resolve, counting, assignment).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use stratus_api::service::InvokeRequest;
use stratus_api::{ErrorCode, LambdaError};
use stratus_async_invoke::{AsyncSettings, Attempt, Condition, EventTarget, QueuedEvent, config};
use stratus_types::function_arn;

use crate::Frontend;
use crate::auth::Caller;
use crate::registry::Cached;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Queues an event invoke and answers 202 once it is durable.
pub(crate) async fn accept(
    fe: &Frontend,
    found: &Cached,
    qualifier: Option<&str>,
    payload: Bytes,
    request_id: String,
    client_context: Option<String>,
) -> Result<Response, LambdaError> {
    let r = &found.record;
    let payload = String::from_utf8(payload.to_vec()).map_err(|_| {
        LambdaError::new(
            ErrorCode::InvalidRequestContent,
            "Could not parse request body into json: the payload is not UTF-8",
        )
    })?;
    let now = now_ms();
    let event = QueuedEvent {
        id: request_id.clone(),
        account: r.account.clone(),
        function: r.name.clone(),
        qualifier: qualifier.filter(|q| !q.is_empty()).map(str::to_owned),
        payload,
        client_context,
        enqueued_ms: now,
        attempts: 0,
        throttles: 0,
    };
    fe.deps
        .events
        .enqueue(&event, now)
        .await
        .map_err(|e| LambdaError::service(format!("queueing the event: {e}")))?;
    fe.metrics.record_async_received(&r.account, &r.name);
    tracing::info!(function = %r.name, request_id = %request_id, "async event queued");
    let mut resp = StatusCode::ACCEPTED.into_response();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-amzn-requestid", v);
    }
    Ok(resp)
}

impl Frontend {
    /// The function of a queued event, as its owner would call it.
    fn event_function(&self, ev: &QueuedEvent) -> Result<Cached, LambdaError> {
        let caller = Caller {
            account: ev.account.clone(),
            region: String::new(),
            admin: false,
        };
        // A version, or an alias routed per attempt, as a synchronous invoke
        // would run it.
        crate::versions::resolve_target(self, &caller, &ev.function, ev.qualifier.as_deref(), true)
            .map(|t| t.found)
    }
}

#[async_trait]
impl EventTarget for Frontend {
    async fn settings(&self, ev: &QueuedEvent) -> Option<AsyncSettings> {
        let found = self.event_function(ev).ok()?;
        let r = &found.record;
        let qualifier = ev.qualifier.as_deref().unwrap_or("$LATEST");
        let stored = match config::get(&self.deps.meta, &r.account, &r.name, qualifier).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(function = %r.name, error = %e, "could not read the event invoke config; using the defaults");
                None
            }
        };
        Some(AsyncSettings::new(
            function_arn(&r.region, &r.account, &r.name, Some(qualifier)),
            stored.as_ref(),
            r.dead_letter_target.clone(),
        ))
    }

    async fn invoke(&self, ev: &QueuedEvent) -> Attempt {
        let found = match self.event_function(ev) {
            Ok(f) => f,
            Err(e) if e.code == ErrorCode::ResourceNotFound => return Attempt::Gone,
            Err(e) => return Attempt::Retry(e),
        };
        let record = Arc::clone(&found.record);
        let age = Duration::from_millis(now_ms().saturating_sub(ev.enqueued_ms));
        self.metrics
            .record_async_attempt(&record.account, &record.name, age);
        // Reserved concurrency belongs to the function, not to a version:
        // a version's record keeps the value it had when it was published.
        let reserved = self
            .registry
            .get(&record.account, &record.name)
            .map_or(record.reserved_concurrency, |latest| {
                latest.record.reserved_concurrency
            });
        if reserved == Some(0) {
            return Attempt::ZeroReservedConcurrency;
        }
        if record.state == "Pending" {
            return Attempt::Retry(LambdaError::conflict("the function is Pending"));
        }
        let Some(spec) = found.spec.clone() else {
            return Attempt::Retry(LambdaError::service(format!(
                "function {} has an unrunnable runtime {}",
                record.name, record.runtime
            )));
        };
        let req = InvokeRequest {
            request_id: ev.id.clone(),
            payload: Bytes::from(ev.payload.clone().into_bytes()),
            invoked_arn: function_arn(
                &record.region,
                &record.account,
                &record.name,
                ev.qualifier.as_deref(),
            ),
            client_context: ev.client_context.clone(),
            trace_id: crate::invoke::trace_id(),
        };
        let result = crate::invoke::admit_and_run(self, &record, spec, req).await;
        self.metrics
            .record_invoke(&record.account, &record.name, &result);
        match result {
            Ok(r) if r.function_error.is_none() => Attempt::Success(r),
            Ok(r) => Attempt::FunctionError(r),
            Err(e) if e.code == ErrorCode::ResourceNotFound => Attempt::Gone,
            Err(e) => Attempt::Retry(e),
        }
    }

    fn dropped(&self, ev: &QueuedEvent, condition: Condition) {
        self.metrics
            .record_async_dropped(&ev.account, &ev.function, condition);
    }
}
