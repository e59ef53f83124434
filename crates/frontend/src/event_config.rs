//! Put/Update/Get/Delete/ListFunctionEventInvokeConfig(s)
//! (`/2019-09-25/functions/{name}/event-invoke-config[/list]`): retries,
//! maximum event age and destinations of a function's asynchronous
//! invocations, stored by `stratus_async_invoke::config`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value};
use stratus_api::LambdaError;
use stratus_async_invoke::check_target_arn;
use stratus_async_invoke::config::{
    self, EventInvokeConfig, MAX_MAX_AGE_S, MAX_RETRIES, MIN_MAX_AGE_S,
};
use stratus_types::{AccountId, function_arn};

use crate::auth::Caller;
use crate::control::{parse, resolve};
use crate::error::ApiResult;
use crate::registry::Cached;
use crate::{Frontend, validate};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TargetBody {
    destination: Option<String>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DestinationsBody {
    on_success: Option<TargetBody>,
    on_failure: Option<TargetBody>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

/// The body of Put and Update.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConfigBody {
    maximum_retry_attempts: Option<i64>,
    maximum_event_age_in_seconds: Option<i64>,
    destination_config: Option<DestinationsBody>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

fn in_range(v: i64, min: u32, max: u32, field: &str) -> Result<u32, LambdaError> {
    if v < i64::from(min) {
        return Err(LambdaError::validation(
            &v.to_string(),
            field,
            &format!("Member must have value greater than or equal to {min}"),
        ));
    }
    if v > i64::from(max) {
        return Err(LambdaError::validation(
            &v.to_string(),
            field,
            &format!("Member must have value less than or equal to {max}"),
        ));
    }
    u32::try_from(v).map_err(|_| LambdaError::invalid(format!("{field}: {v} is out of range")))
}

/// A checked destination: `Some(None)` clears it, `None` leaves it as is.
fn destination(
    t: &Option<TargetBody>,
    field: &str,
    account: &AccountId,
    own: &str,
) -> Result<Option<Option<String>>, LambdaError> {
    let Some(t) = t else {
        return Ok(None);
    };
    validate::other_fields(&t.other, &format!("{field}."))?;
    match t.destination.as_deref().filter(|d| !d.is_empty()) {
        None => Ok(Some(None)),
        Some(arn) => {
            check_target_arn(arn, &format!("{field}.destination"), account, Some(own))?;
            Ok(Some(Some(arn.to_owned())))
        }
    }
}

/// Applies a checked body to `base` (empty for Put, the stored one for Update).
fn apply(
    base: EventInvokeConfig,
    body: &ConfigBody,
    account: &AccountId,
    own: &str,
) -> Result<EventInvokeConfig, LambdaError> {
    validate::other_fields(&body.other, "")?;
    let mut next = base;
    if let Some(n) = body.maximum_retry_attempts {
        next.maximum_retry_attempts = Some(in_range(n, 0, MAX_RETRIES, "maximumRetryAttempts")?);
    }
    if let Some(n) = body.maximum_event_age_in_seconds {
        next.maximum_event_age_in_seconds = Some(in_range(
            n,
            MIN_MAX_AGE_S,
            MAX_MAX_AGE_S,
            "maximumEventAgeInSeconds",
        )?);
    }
    if let Some(d) = &body.destination_config {
        validate::other_fields(&d.other, "DestinationConfig.")?;
        if let Some(s) = destination(&d.on_success, "destinationConfig.onSuccess", account, own)? {
            next.on_success = s;
        }
        if let Some(f) = destination(&d.on_failure, "destinationConfig.onFailure", account, own)? {
            next.on_failure = f;
        }
    }
    next.last_modified_ms = now_ms();
    Ok(next)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The function and the qualifier the configuration belongs to.
fn target(
    fe: &Frontend,
    c: &Caller,
    name: &str,
    q: &HashMap<String, String>,
) -> Result<(Cached, String, String), LambdaError> {
    let qualifier = q.get("Qualifier").map(String::as_str);
    // A version or an alias has its own config, as `$LATEST` has.
    let found = crate::versions::resolve_target(fe, c, name, qualifier, false)?.found;
    let from_name = stratus_types::FunctionRef::parse(name)
        .ok()
        .and_then(|r| r.qualifier);
    let qualifier = qualifier
        .filter(|q| !q.is_empty())
        .map(str::to_owned)
        .or(from_name)
        .unwrap_or_else(|| "$LATEST".to_owned());
    let r = &found.record;
    let arn = function_arn(&r.region, &r.account, &r.name, Some(&qualifier));
    Ok((found, qualifier, arn))
}

fn store_error(e: config::ConfigError) -> LambdaError {
    LambdaError::service(format!("event invoke config: {e}"))
}

fn missing(arn: &str) -> LambdaError {
    LambdaError::not_found(format!(
        "The function {arn} doesn't have an EventInvokeConfig"
    ))
}

pub async fn put_config(
    State(fe): State<Arc<Frontend>>,
    c: Caller,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> ApiResult<Response> {
    let req: ConfigBody = parse(&body)?;
    let (found, qualifier, arn) = target(&fe, &c, &name, &q)?;
    let r = &found.record;
    let next = apply(EventInvokeConfig::default(), &req, &r.account, &r.name)?;
    if next.maximum_retry_attempts.is_none()
        && next.maximum_event_age_in_seconds.is_none()
        && next.on_success.is_none()
        && next.on_failure.is_none()
    {
        return Err(LambdaError::invalid(
            "You must specify at least one of error handling or destination setting.",
        )
        .into());
    }
    config::put(&fe.deps.meta, &r.account, &r.name, &qualifier, &next)
        .await
        .map_err(store_error)?;
    Ok(Json(next.document(&arn)).into_response())
}

pub async fn update_config(
    State(fe): State<Arc<Frontend>>,
    c: Caller,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> ApiResult<Response> {
    let req: ConfigBody = parse(&body)?;
    let (found, qualifier, arn) = target(&fe, &c, &name, &q)?;
    let r = &found.record;
    let current = config::get(&fe.deps.meta, &r.account, &r.name, &qualifier)
        .await
        .map_err(store_error)?
        .ok_or_else(|| missing(&arn))?;
    let next = apply(current, &req, &r.account, &r.name)?;
    config::put(&fe.deps.meta, &r.account, &r.name, &qualifier, &next)
        .await
        .map_err(store_error)?;
    Ok(Json(next.document(&arn)).into_response())
}

pub async fn get_config(
    State(fe): State<Arc<Frontend>>,
    c: Caller,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let (found, qualifier, arn) = target(&fe, &c, &name, &q)?;
    let r = &found.record;
    let current = config::get(&fe.deps.meta, &r.account, &r.name, &qualifier)
        .await
        .map_err(store_error)?
        .ok_or_else(|| missing(&arn))?;
    Ok(Json(current.document(&arn)).into_response())
}

pub async fn delete_config(
    State(fe): State<Arc<Frontend>>,
    c: Caller,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let (found, qualifier, arn) = target(&fe, &c, &name, &q)?;
    let r = &found.record;
    let existed = config::delete(&fe.deps.meta, &r.account, &r.name, &qualifier)
        .await
        .map_err(store_error)?;
    if !existed {
        return Err(missing(&arn).into());
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn list_configs(
    State(fe): State<Arc<Frontend>>,
    c: Caller,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let paging = crate::versions::Paging::parse(&q)?;
    let found = resolve(&fe, &c, &name, None)?;
    let r = &found.record;
    let all = config::list(&fe.deps.meta, &r.account, &r.name)
        .await
        .map_err(store_error)?;
    // The store lists qualifiers in key order, so a marker is the last
    // qualifier of the previous page.
    let (page, next) = paging.page(all, |(qualifier, _)| qualifier);
    let docs: Vec<Value> = page
        .iter()
        .map(|(qualifier, cfg)| {
            cfg.document(&function_arn(
                &r.region,
                &r.account,
                &r.name,
                Some(qualifier),
            ))
        })
        .collect();
    let mut doc = serde_json::json!({"FunctionEventInvokeConfigs": docs});
    if let Some(n) = next {
        doc["NextMarker"] = Value::String(n);
    }
    Ok(Json(doc).into_response())
}

/// Checks a `DeadLetterConfig` member of Create/UpdateFunctionConfiguration
/// (taken out of the request's unknown members): `Some(None)` clears the
/// target, `None` says nothing.
pub(crate) fn take_dead_letter(
    other: &mut Map<String, Value>,
    account: &AccountId,
    function: &str,
) -> Result<Option<Option<String>>, LambdaError> {
    let Some(v) = other.remove("DeadLetterConfig") else {
        return Ok(None);
    };
    let obj = match v {
        Value::Null => return Ok(Some(None)),
        Value::Object(o) => o,
        _ => {
            return Err(LambdaError::invalid(
                "DeadLetterConfig must be an object: {\"TargetArn\": \"arn:aws:lambda:...:function:NAME\"}",
            ));
        }
    };
    for k in obj.keys() {
        if k != "TargetArn" {
            return Err(validate::unsupported(&format!("DeadLetterConfig.{k}")));
        }
    }
    match obj.get("TargetArn") {
        None | Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) if s.is_empty() => Ok(Some(None)),
        Some(Value::String(arn)) => {
            check_target_arn(arn, "deadLetterConfig.targetArn", account, Some(function))?;
            Ok(Some(Some(arn.clone())))
        }
        Some(_) => Err(LambdaError::invalid(
            "DeadLetterConfig.TargetArn must be a string",
        )),
    }
}
