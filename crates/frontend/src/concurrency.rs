//! Reserved concurrency (Put/Get/DeleteFunctionConcurrency) and
//! GetAccountSettings.
//!
//! The counting service enforces reservations; the function record is where
//! they are persisted. A change goes to counting first (which checks the
//! minimum unreserved concurrency atomically) and is rolled back there if the
//! store write fails, so the two never disagree for long.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use stratus_api::model::Concurrency;
use stratus_api::{ErrorCode, LambdaError};
use stratus_store::StoreError;
use stratus_types::FunctionRef;
use stratus_types::limits::{UNZIPPED_MAX_BYTES, ZIP_MAX_BYTES};

use crate::Frontend;
use crate::auth::Caller;
use crate::control::resolve;
use crate::error::ApiResult;
use crate::registry::{Cached, RegistryError};

/// Lambda's default total code storage per account (75 GB).
const TOTAL_CODE_SIZE: u64 = 80_530_636_800;

/// Tells the counting service every stored reservation (at startup).
pub async fn load_reservations(fe: &Frontend) {
    for c in fe.registry.all() {
        let r = &c.record;
        if let Some(n) = r.reserved_concurrency
            && let Err(e) = fe
                .deps
                .counting
                .set_reserved(&r.account, &r.name, Some(n))
                .await
        {
            // Only possible if the account limit was lowered since: the
            // function then runs unreserved until its reservation is changed.
            tracing::error!(function = %r.name, reserved = n, error = %e, "stored reserved concurrency does not fit the account limit; ignoring it");
        }
    }
}

/// Resolves an unqualified function: concurrency is a function setting, not
/// a version's or an alias's.
fn resolve_unqualified(fe: &Frontend, c: &Caller, name: &str) -> Result<Cached, LambdaError> {
    if FunctionRef::parse(name).is_ok_and(|r| r.qualifier.is_some()) {
        return Err(LambdaError::invalid(
            "This operation is permitted on Lambda functions only. Aliases and versions do not support this operation. Please specify either a function name or an unqualified function ARN.",
        ));
    }
    resolve(fe, c, name, None)
}

fn reserved_from_body(body: &[u8]) -> Result<u32, LambdaError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        LambdaError::new(
            ErrorCode::InvalidRequestContent,
            format!("Could not parse request body into json: {e}"),
        )
    })?;
    let field = "reservedConcurrentExecutions";
    match v.get("ReservedConcurrentExecutions") {
        None | Some(Value::Null) => Err(LambdaError::validation(
            "null",
            field,
            "Member must not be null",
        )),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_u64()) {
            (_, Some(u)) => u32::try_from(u).map_err(|_| {
                LambdaError::invalid(
                    "Specified ReservedConcurrentExecutions for function decreases account's UnreservedConcurrentExecution below its minimum value of [100].",
                )
            }),
            (Some(i), None) => Err(LambdaError::validation(
                &i.to_string(),
                field,
                "Member must have value greater than or equal to 0",
            )),
            _ => Err(LambdaError::new(
                ErrorCode::InvalidRequestContent,
                "Could not parse request body into json: ReservedConcurrentExecutions must be an integer",
            )),
        },
        Some(_) => Err(LambdaError::new(
            ErrorCode::InvalidRequestContent,
            "Could not parse request body into json: ReservedConcurrentExecutions must be an integer",
        )),
    }
}

/// Stores `reserved` in the function record after counting accepted it;
/// restores counting's previous value if the store refuses.
async fn persist(fe: &Frontend, found: &Cached, reserved: Option<u32>) -> Result<(), LambdaError> {
    let r = &found.record;
    fe.deps
        .counting
        .set_reserved(&r.account, &r.name, reserved)
        .await?;
    let mut next = (**r).clone();
    next.reserved_concurrency = reserved;
    if let Err(e) = fe.registry.put(next, Some(found.version)).await {
        if let Err(rb) = fe
            .deps
            .counting
            .set_reserved(&r.account, &r.name, r.reserved_concurrency)
            .await
        {
            tracing::error!(function = %r.name, error = %rb, "could not roll back reserved concurrency");
        }
        return Err(match e {
            RegistryError::Store(StoreError::Conflict { .. }) => LambdaError::conflict(format!(
                "The operation cannot be performed at this time. An update is in progress for resource: {}",
                r.arn()
            )),
            other => LambdaError::service(other.to_string()),
        });
    }
    Ok(())
}

pub async fn put_concurrency(
    State(fe): State<Arc<Frontend>>,
    c: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let found = resolve_unqualified(&fe, &c, &name)?;
    let n = reserved_from_body(&body)?;
    let r = &found.record;
    let provisioned = crate::provisioned::total_of(&fe.deps.meta, &r.account, &r.name).await?;
    if u64::from(n) < provisioned {
        return Err(LambdaError::invalid(format!(
            "Requested ReservedConcurrentExecutions ({n}) is lower than the provisioned concurrency configured for the function ({provisioned})."
        ))
        .into());
    }
    persist(&fe, &found, Some(n)).await?;
    Ok(Json(Concurrency {
        reserved_concurrent_executions: n,
    })
    .into_response())
}

pub async fn get_concurrency(
    State(fe): State<Arc<Frontend>>,
    c: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let found = resolve_unqualified(&fe, &c, &name)?;
    Ok(match found.record.reserved_concurrency {
        Some(n) => Json(json!({"ReservedConcurrentExecutions": n})).into_response(),
        None => Json(json!({})).into_response(),
    })
}

pub async fn delete_concurrency(
    State(fe): State<Arc<Frontend>>,
    c: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let found = resolve_unqualified(&fe, &c, &name)?;
    if found.record.reserved_concurrency.is_some() {
        persist(&fe, &found, None).await?;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn account_settings(
    State(fe): State<Arc<Frontend>>,
    c: Caller,
    Query(_q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let (functions, _) = fe.registry.list(&c.account, None, usize::MAX);
    let code_size: u64 = functions.iter().map(|r| r.code_size).sum();
    let conc = fe.deps.counting.account_concurrency(&c.account).await;
    Ok(Json(json!({
        "AccountLimit": {
            "TotalCodeSize": TOTAL_CODE_SIZE,
            "CodeSizeUnzipped": UNZIPPED_MAX_BYTES,
            "CodeSizeZipped": ZIP_MAX_BYTES,
            "ConcurrentExecutions": conc.limit,
            "UnreservedConcurrentExecutions": conc.unreserved,
        },
        "AccountUsage": {
            "TotalCodeSize": code_size,
            "FunctionCount": functions.len(),
        },
    }))
    .into_response())
}
