//! Provisioned concurrency: Put/Get/Delete/ListProvisionedConcurrencyConfig(s)
//! (`/2019-09-30/functions/{name}/provisioned-concurrency`).
//!
//! A config names a published version or an alias and a number of sandboxes
//! to keep initialised. It is stored in the `MetaStore` under
//! `provisioned/<account>/<function>/<qualifier>` (so it survives a restart:
//! [`load`] hands every stored config to the assignment service at start);
//! the assignment service owns the sandboxes and their progress
//! ([`Invoker::set_provisioned`], [`Invoker::provisioned_status`]), which
//! Get and List report as Lambda's `Status` and counts.
//!
//! Checks, as Lambda makes them: a qualifier is required and must not be
//! `$LATEST` (nor an alias of it, nor a weighted alias); an alias and the
//! version it points to cannot both have a config; the function's configs
//! together stay within its reserved concurrency, or, without one, leave the
//! account its 100 unreserved executions.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use stratus_api::service::{
    FunctionVersionSpec, Invoker, ProvisionId, ProvisionState, ProvisionedStatus,
};
use stratus_api::{ErrorCode, LambdaError};
use stratus_store::{MetaStore, Precondition, StoreError};
use stratus_types::{AccountId, function_arn};

use crate::auth::Caller;
use crate::control::{now_timestamp, parse, resolve};
use crate::error::ApiResult;
use crate::versions::{Target, resolve_target};
use crate::{Frontend, validate};

const PREFIX: &str = "provisioned/";

/// The least unreserved concurrency an account keeps (as for reservations).
const MIN_UNRESERVED: u64 = 100;

/// One stored config.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProvisionedRecord {
    pub account: AccountId,
    pub function: String,
    /// A version number or an alias name.
    pub qualifier: String,
    pub requested: u32,
    /// Lambda's timestamp of the last Put.
    pub last_modified: String,
}

impl ProvisionedRecord {
    fn id(&self) -> ProvisionId {
        ProvisionId {
            account: self.account.clone(),
            name: self.function.clone(),
            qualifier: self.qualifier.clone(),
        }
    }

    /// Get's document: the stored request with the assignment service's
    /// progress (no goal there yet: in progress, nothing allocated).
    fn document(&self, invoker: &dyn Invoker) -> Value {
        let st = invoker
            .provisioned_status(&self.id())
            .unwrap_or(ProvisionedStatus {
                requested: self.requested,
                allocated: 0,
                available: 0,
                state: ProvisionState::InProgress,
                reason: None,
            });
        let mut doc = json!({
            "RequestedProvisionedConcurrentExecutions": self.requested,
            "AvailableProvisionedConcurrentExecutions": st.available,
            "AllocatedProvisionedConcurrentExecutions": st.allocated,
            "Status": st.state.as_str(),
            "LastModified": self.last_modified,
        });
        if let Some(r) = st.reason {
            doc["StatusReason"] = Value::String(r);
        }
        doc
    }
}

/// Errors of the config store.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionedError {
    #[error("provisioned concurrency config store failed")]
    Store(#[from] StoreError),
    #[error("stored provisioned concurrency config {key} is unreadable: {message}")]
    Corrupt { key: String, message: String },
}

impl From<ProvisionedError> for LambdaError {
    fn from(e: ProvisionedError) -> Self {
        LambdaError::service(e.to_string())
    }
}

impl From<ProvisionedError> for crate::error::ApiError {
    fn from(e: ProvisionedError) -> Self {
        crate::error::ApiError(e.into())
    }
}

fn key(account: &AccountId, function: &str, qualifier: &str) -> String {
    format!("{PREFIX}{account}/{function}/{qualifier}")
}

async fn scan(
    store: &Arc<dyn MetaStore>,
    prefix: &str,
) -> Result<Vec<ProvisionedRecord>, ProvisionedError> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.scan(prefix, after.as_deref(), 100).await?;
        let Some((last, _)) = page.last() else {
            break;
        };
        after = Some(last.clone());
        for (key, v) in page {
            let r: ProvisionedRecord =
                serde_json::from_slice(&v.value).map_err(|e| ProvisionedError::Corrupt {
                    key: key.clone(),
                    message: e.to_string(),
                })?;
            out.push(r);
        }
    }
    Ok(out)
}

async fn get(
    store: &Arc<dyn MetaStore>,
    account: &AccountId,
    function: &str,
    qualifier: &str,
) -> Result<Option<ProvisionedRecord>, ProvisionedError> {
    let key = key(account, function, qualifier);
    match store.get(&key).await? {
        None => Ok(None),
        Some(v) => {
            serde_json::from_slice(&v.value)
                .map(Some)
                .map_err(|e| ProvisionedError::Corrupt {
                    key,
                    message: e.to_string(),
                })
        }
    }
}

/// Every config of `function` (in qualifier order).
pub async fn list_of(
    store: &Arc<dyn MetaStore>,
    account: &AccountId,
    function: &str,
) -> Result<Vec<ProvisionedRecord>, ProvisionedError> {
    scan(store, &format!("{PREFIX}{account}/{function}/")).await
}

/// The sum of what `function`'s configs request.
pub async fn total_of(
    store: &Arc<dyn MetaStore>,
    account: &AccountId,
    function: &str,
) -> Result<u64, ProvisionedError> {
    Ok(list_of(store, account, function)
        .await?
        .iter()
        .map(|r| u64::from(r.requested))
        .sum())
}

/// Removes the config of `qualifier` (or every config of the function) and
/// its sandboxes: the version, alias or function is being deleted.
pub async fn remove(
    fe: &Frontend,
    account: &AccountId,
    function: &str,
    qualifier: Option<&str>,
) -> Result<(), ProvisionedError> {
    fe.deps
        .invoker
        .remove_provisioned(account, function, qualifier);
    match qualifier {
        Some(q) => {
            fe.deps
                .meta
                .delete(&key(account, function, q), Precondition::None)
                .await?;
        }
        None => {
            for r in list_of(&fe.deps.meta, account, function).await? {
                fe.deps
                    .meta
                    .delete(&key(account, function, &r.qualifier), Precondition::None)
                    .await?;
            }
        }
    }
    Ok(())
}

/// The spec a config provisions: the version itself, or the version an
/// alias points to (`None`: it is gone or not runnable).
fn spec_for(fe: &Frontend, r: &ProvisionedRecord) -> Option<Arc<FunctionVersionSpec>> {
    let version = match r.qualifier.parse::<u64>() {
        Ok(n) => n,
        Err(_) => {
            let a = fe.published.alias(&r.account, &r.function, &r.qualifier)?;
            a.record.function_version.parse::<u64>().ok()?
        }
    };
    fe.published.version(&r.account, &r.function, version)?.spec
}

/// Hands every stored config to the assignment service (at start).
pub async fn load(fe: &Frontend) {
    let all = match scan(&fe.deps.meta, PREFIX).await {
        Ok(all) => all,
        Err(e) => {
            tracing::error!(error = %e, "could not read provisioned concurrency configs");
            return;
        }
    };
    for r in all {
        match spec_for(fe, &r) {
            Some(spec) => {
                tracing::info!(function = %r.function, qualifier = %r.qualifier, count = r.requested, "re-provisioning");
                fe.deps.invoker.set_provisioned(r.id(), spec, r.requested);
            }
            None => {
                tracing::warn!(function = %r.function, qualifier = %r.qualifier, "provisioned concurrency config of a missing version or alias; removing it");
                if let Err(e) = fe
                    .deps
                    .meta
                    .delete(
                        &key(&r.account, &r.function, &r.qualifier),
                        Precondition::None,
                    )
                    .await
                {
                    tracing::warn!(error = %e, "could not remove a stale provisioned concurrency config");
                }
            }
        }
    }
}

/// The version or alias a request names, with its qualifier: required, and
/// never `$LATEST`.
fn config_target(
    fe: &Frontend,
    c: &Caller,
    name: &str,
    q: &HashMap<String, String>,
) -> Result<(Target, String), LambdaError> {
    let qualifier = q
        .get("Qualifier")
        .map(String::as_str)
        .filter(|q| !q.is_empty());
    let t = resolve_target(fe, c, name, qualifier, false)?;
    let Some(qualifier) = t.qualifier.clone() else {
        return Err(LambdaError::invalid(
            "The Qualifier is required: provisioned concurrency is configured on a published version or an alias.",
        ));
    };
    if qualifier == "$LATEST" || t.found.record.is_latest() {
        return Err(unpublished());
    }
    Ok((t, qualifier))
}

fn unpublished() -> LambdaError {
    LambdaError::invalid(
        "Provisioned Concurrency Configs cannot be applied to unpublished function versions.",
    )
}

fn config_missing() -> LambdaError {
    LambdaError::new(
        ErrorCode::ProvisionedConcurrencyConfigNotFound,
        "No Provisioned Concurrency Config found for this function",
    )
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutBody {
    provisioned_concurrent_executions: Option<i64>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

fn requested(body: &PutBody) -> Result<u32, LambdaError> {
    validate::other_fields(&body.other, "")?;
    let field = "provisionedConcurrentExecutions";
    match body.provisioned_concurrent_executions {
        None => Err(LambdaError::validation("null", field, "Member must not be null")),
        Some(n) if n < 1 => Err(LambdaError::validation(
            &n.to_string(),
            field,
            "Member must have value greater than or equal to 1",
        )),
        Some(n) => u32::try_from(n).map_err(|_| {
            LambdaError::invalid(
                "Specified ConcurrentExecutions for function decreases account's UnreservedConcurrentExecution below its minimum value of [100].",
            )
        }),
    }
}

/// An alias and the version it points to cannot both have a config.
fn check_overlap(
    fe: &Frontend,
    t: &Target,
    qualifier: &str,
    configs: &[ProvisionedRecord],
) -> Result<(), LambdaError> {
    let has = |q: &str| configs.iter().any(|r| r.qualifier == q);
    let r = &t.latest.record;
    if let Some(a) = &t.alias {
        if has(&a.function_version) {
            return Err(LambdaError::conflict(format!(
                "Version {} of {} already has a provisioned concurrency config; alias {} points to it and cannot have one too.",
                a.function_version,
                r.arn(),
                a.name
            )));
        }
    } else if let Some(a) = fe
        .published
        .aliases_of(&r.account, &r.name)
        .into_iter()
        .find(|a| a.record.function_version == qualifier && has(&a.record.name))
    {
        return Err(LambdaError::conflict(format!(
            "Alias {} of {} points to version {qualifier} and already has a provisioned concurrency config; the version cannot have one too.",
            a.record.name,
            r.arn()
        )));
    }
    Ok(())
}

/// The function's configs stay within its reserved concurrency; without
/// one, every unreserved function's configs leave the account 100.
async fn check_room(fe: &Frontend, t: &Target, qualifier: &str, n: u32) -> Result<(), LambdaError> {
    let r = &t.latest.record;
    let others = |rec: &ProvisionedRecord| !(rec.function == r.name && rec.qualifier == qualifier);
    let account = scan(&fe.deps.meta, &format!("{PREFIX}{}/", r.account)).await?;
    if let Some(reserved) = r.reserved_concurrency {
        let mine: u64 = account
            .iter()
            .filter(|x| x.function == r.name && others(x))
            .map(|x| u64::from(x.requested))
            .sum();
        if mine + u64::from(n) > u64::from(reserved) {
            return Err(LambdaError::invalid(
                "Requested Provisioned Concurrency should not be greater than the reservedConcurrentExecution for function",
            ));
        }
        return Ok(());
    }
    let unreserved_fns: u64 = account
        .iter()
        .filter(|x| others(x))
        .filter(|x| {
            fe.registry
                .get(&x.account, &x.function)
                .is_some_and(|f| f.record.reserved_concurrency.is_none())
        })
        .map(|x| u64::from(x.requested))
        .sum();
    let pool = u64::from(
        fe.deps
            .counting
            .account_concurrency(&r.account)
            .await
            .unreserved,
    );
    if unreserved_fns + u64::from(n) + MIN_UNRESERVED > pool {
        return Err(LambdaError::invalid(
            "Specified ConcurrentExecutions for function decreases account's UnreservedConcurrentExecution below its minimum value of [100].",
        ));
    }
    Ok(())
}

/// `PUT ...?Qualifier=Q`: 202 with the config as it starts.
pub async fn put_config(
    State(fe): State<Arc<Frontend>>,
    c: Caller,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> ApiResult<Response> {
    let req: PutBody = parse(&body)?;
    let (t, qualifier) = config_target(&fe, &c, &name, &q)?;
    let n = requested(&req)?;
    if let Some(a) = &t.alias {
        if !a.additional.is_empty() {
            return Err(LambdaError::invalid(
                "Alias with weights can not be used with Provisioned Concurrency",
            )
            .into());
        }
        if a.function_version == "$LATEST" {
            return Err(unpublished().into());
        }
    }
    let r = &t.latest.record;
    let configs = list_of(&fe.deps.meta, &r.account, &r.name).await?;
    check_overlap(&fe, &t, &qualifier, &configs)?;
    check_room(&fe, &t, &qualifier, n).await?;
    let spec = t
        .found
        .spec
        .clone()
        .ok_or_else(|| LambdaError::service("the version's runtime is no longer runnable"))?;
    let record = ProvisionedRecord {
        account: r.account.clone(),
        function: r.name.clone(),
        qualifier: qualifier.clone(),
        requested: n,
        last_modified: now_timestamp(),
    };
    let value = serde_json::to_vec(&record)
        .map_err(|e| LambdaError::service(format!("encoding the config: {e}")))?;
    fe.deps
        .meta
        .put(
            &key(&r.account, &r.name, &qualifier),
            Bytes::from(value),
            Precondition::None,
        )
        .await
        .map_err(ProvisionedError::from)?;
    fe.deps.invoker.set_provisioned(record.id(), spec, n);
    Ok((
        StatusCode::ACCEPTED,
        Json(record.document(fe.deps.invoker.as_ref())),
    )
        .into_response())
}

/// `GET ...?Qualifier=Q`, or with `List=ALL` ListProvisionedConcurrencyConfigs.
pub async fn get_config(
    State(fe): State<Arc<Frontend>>,
    c: Caller,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    if q.contains_key("List") {
        return list_configs(&fe, &c, &name, &q).await;
    }
    let (t, qualifier) = config_target(&fe, &c, &name, &q)?;
    let r = &t.latest.record;
    let record = get(&fe.deps.meta, &r.account, &r.name, &qualifier)
        .await?
        .ok_or_else(config_missing)?;
    Ok(Json(record.document(fe.deps.invoker.as_ref())).into_response())
}

/// `DELETE ...?Qualifier=Q`: 204; its sandboxes stop.
pub async fn delete_config(
    State(fe): State<Arc<Frontend>>,
    c: Caller,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let (t, qualifier) = config_target(&fe, &c, &name, &q)?;
    let r = &t.latest.record;
    if get(&fe.deps.meta, &r.account, &r.name, &qualifier)
        .await?
        .is_none()
    {
        return Err(LambdaError::not_found(format!(
            "No Provisioned Concurrency Config found for this function: {}",
            t.arn()
        ))
        .into());
    }
    remove(&fe, &r.account, &r.name, Some(&qualifier)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_configs(
    fe: &Frontend,
    c: &Caller,
    name: &str,
    q: &HashMap<String, String>,
) -> ApiResult<Response> {
    if q.get("List").map(String::as_str) != Some("ALL") {
        return Err(LambdaError::validation(
            q.get("List").map(String::as_str).unwrap_or(""),
            "list",
            "Member must satisfy enum value set: [ALL]",
        )
        .into());
    }
    let paging = crate::versions::Paging::parse(q)?;
    let found = resolve(fe, c, name, None)?;
    let r = &found.record;
    let all = list_of(&fe.deps.meta, &r.account, &r.name).await?;
    let (page, next) = paging.page(all, |x| x.qualifier.as_str());
    let docs: Vec<Value> = page
        .iter()
        .map(|x| {
            let mut d = x.document(fe.deps.invoker.as_ref());
            d["FunctionArn"] = Value::String(function_arn(
                &r.region,
                &r.account,
                &r.name,
                Some(&x.qualifier),
            ));
            d
        })
        .collect();
    let mut doc = json!({"ProvisionedConcurrencyConfigs": docs});
    if let Some(n) = next {
        doc["NextMarker"] = Value::String(n);
    }
    Ok(Json(doc).into_response())
}

/// UpdateAlias on an alias with a config: no weights, never `$LATEST`, and
/// a new version is provisioned in place of the old one.
pub async fn alias_updated(
    fe: &Frontend,
    account: &AccountId,
    function: &str,
    alias: &str,
) -> Result<(), LambdaError> {
    let Some(r) = get(&fe.deps.meta, account, function, alias).await? else {
        return Ok(());
    };
    match spec_for(fe, &r) {
        Some(spec) => fe.deps.invoker.set_provisioned(r.id(), spec, r.requested),
        None => tracing::warn!(
            function,
            alias,
            "alias with a provisioned concurrency config points to no runnable version"
        ),
    }
    Ok(())
}

/// Refuses an UpdateAlias that a config of the alias does not allow.
pub async fn check_alias_update(
    fe: &Frontend,
    account: &AccountId,
    function: &str,
    alias: &str,
    version: &str,
    weighted: bool,
) -> Result<(), LambdaError> {
    if get(&fe.deps.meta, account, function, alias)
        .await?
        .is_none()
    {
        return Ok(());
    }
    if weighted {
        return Err(LambdaError::invalid(
            "Alias with weights can not be used with Provisioned Concurrency",
        ));
    }
    if version == "$LATEST" {
        return Err(unpublished());
    }
    if get(&fe.deps.meta, account, function, version)
        .await?
        .is_some()
    {
        return Err(LambdaError::conflict(format!(
            "Version {version} already has a provisioned concurrency config; alias {alias}, which has one, cannot point to it."
        )));
    }
    Ok(())
}
