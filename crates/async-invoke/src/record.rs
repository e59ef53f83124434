//! The destination record: what an OnSuccess / OnFailure destination
//! function receives as its event, in Lambda's shape.

use serde_json::{Value, json};
use stratus_api::service::InvokeResponse;

/// Why an event finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Success,
    /// Every attempt (1 + MaximumRetryAttempts) failed.
    RetriesExhausted,
    /// It waited longer than MaximumEventAgeInSeconds (throttles, errors).
    EventAgeExceeded,
    /// The function's reserved concurrency is 0.
    ZeroReservedConcurrency,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Success => "Success",
            Condition::RetriesExhausted => "RetriesExhausted",
            Condition::EventAgeExceeded => "EventAgeExceeded",
            Condition::ZeroReservedConcurrency => "ZeroReservedConcurrency",
        }
    }
}

/// Lambda's timestamp in records: `2019-11-14T18:16:05.568Z`.
pub fn timestamp(now_ms: u64) -> String {
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    let nanos = i128::from(now_ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(&f).ok())
        .unwrap_or_default()
}

/// A payload as JSON, or as a string when it is not JSON.
fn as_json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// The record delivered to a destination.
pub fn destination_record(
    now_ms: u64,
    request_id: &str,
    function_arn: &str,
    condition: Condition,
    invoke_count: u32,
    request_payload: &str,
    response: Option<&InvokeResponse>,
) -> Value {
    let mut record = json!({
        "version": "1.0",
        "timestamp": timestamp(now_ms),
        "requestContext": {
            "requestId": request_id,
            "functionArn": function_arn,
            "condition": condition.as_str(),
            "approximateInvokeCount": invoke_count,
        },
        "requestPayload": as_json(request_payload.as_bytes()),
    });
    if let Some(r) = response {
        let mut ctx = json!({"statusCode": 200, "executedVersion": r.executed_version});
        if let Some(e) = r.function_error {
            ctx["functionError"] = e.header().into();
        }
        record["responseContext"] = ctx;
        record["responsePayload"] = as_json(&r.payload);
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_shape() {
        let resp = InvokeResponse {
            payload: bytes::Bytes::from_static(br#"{"errorType":"ValueError"}"#),
            function_error: Some(stratus_api::service::FunctionError::Unhandled),
            executed_version: "$LATEST".into(),
            log: String::new(),
            cold_start: false,
            duration: std::time::Duration::ZERO,
            init_duration: None,
            provisioned: false,
        };
        let r = destination_record(
            1_573_755_365_568,
            "id",
            "arn:f:$LATEST",
            Condition::RetriesExhausted,
            3,
            r#"{"k":1}"#,
            Some(&resp),
        );
        assert_eq!(r["timestamp"], "2019-11-14T18:16:05.568Z");
        assert_eq!(r["requestContext"]["condition"], "RetriesExhausted");
        assert_eq!(r["requestContext"]["approximateInvokeCount"], 3);
        assert_eq!(r["requestPayload"]["k"], 1);
        assert_eq!(r["responseContext"]["functionError"], "Unhandled");
        assert_eq!(r["responsePayload"]["errorType"], "ValueError");
        let aged = destination_record(0, "id", "a", Condition::EventAgeExceeded, 0, "{}", None);
        assert!(aged.get("responseContext").is_none());
    }
}
