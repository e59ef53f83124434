//! Reading a function's log: `GET /_stratus/logs/{FunctionName}`.
//!
//! Lambda's logs live in CloudWatch Logs, another AWS service that Stratus
//! does not emulate; this small Stratus endpoint serves the same content (log
//! group `/aws/lambda/<name>`, one stream per sandbox) to `stratus logs`.
//! Query: `after=<seq>` (events after that position), `limit` (1-10000,
//! default 1000; a page also stops at about one MiB of messages) and
//! `wait=<seconds>` (0-30: long-poll for new lines, for `--follow`). Each
//! event names its `logStreamName`; `nextToken` is the `after` of the next
//! page (the same value when there was nothing new).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use stratus_api::LambdaError;
use stratus_api::service::LogEvent;

use crate::Frontend;
use crate::auth::Caller;
use crate::control::resolve;
use crate::error::ApiResult;

const MAX_WAIT_S: u64 = 30;

fn number(
    q: &HashMap<String, String>,
    key: &str,
    field: &str,
    max: u64,
) -> Result<Option<u64>, LambdaError> {
    match q.get(key) {
        None => Ok(None),
        Some(v) => match v.parse::<u64>() {
            Ok(n) if n <= max => Ok(Some(n)),
            _ => Err(LambdaError::validation(
                v,
                field,
                &format!("Member must be an integer between 0 and {max}"),
            )),
        },
    }
}

pub async fn read(
    State(fe): State<Arc<Frontend>>,
    c: Caller,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let found = resolve(&fe, &c, &name, None)?;
    let after = number(&q, "after", "after", u64::MAX)?;
    let limit = number(&q, "limit", "limit", 10_000)?.unwrap_or(1000).max(1) as usize;
    let wait = Duration::from_secs(number(&q, "wait", "wait", MAX_WAIT_S)?.unwrap_or(0));
    let r = &found.record;
    let events = fe
        .deps
        .logs
        .read(&r.account, &r.name, after, limit, wait)
        .await?;
    let next = events.last().map(|e| e.seq).or(after);
    // Serialized straight from the events (a `serde_json::Value` of a full
    // page would take several times the page's size in memory).
    Ok(Json(Page {
        log_group_name: format!("/aws/lambda/{}", r.name),
        events: &events,
        next_token: next,
    })
    .into_response())
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Page<'a> {
    log_group_name: String,
    events: &'a [LogEvent],
    next_token: Option<u64>,
}
