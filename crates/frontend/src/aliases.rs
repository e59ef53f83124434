//! Aliases: Create/Get/Update/Delete/ListAliases.
//!
//! An alias names a version (or `$LATEST`) and may send a share of its
//! invokes to one additional version (`RoutingConfig`); the invoke path
//! picks per invoke ([`crate::published::AliasRecord::route`]). Validation
//! follows the recorded AWS behaviour: model patterns and ranges are
//! ValidationException, service rules InvalidParameterValueException.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use stratus_api::model::{
    AliasRoutingConfiguration, CreateAliasRequest, ListAliasesResponse, UpdateAliasRequest,
};
use stratus_api::{ErrorCode, LambdaError};
use stratus_store::StoreError;
use stratus_types::function_arn;

use crate::auth::Caller;
use crate::control::{new_revision, parse, registry_error, resolve};
use crate::error::ApiResult;
use crate::published::{AliasRecord, CachedAlias};
use crate::registry::{Cached, FunctionRecord, RegistryError};
use crate::versions::{decode_marker, marker, max_items, no_such_version};
use crate::{Frontend, validate};

/// The model's pattern for alias names: anything but all digits.
const ALIAS_PATTERN: &str = "(?!^[0-9]+$)([a-zA-Z0-9-_]+)";
/// The model's pattern for a FunctionVersion.
const VERSION_PATTERN: &str = "(\\$LATEST|[0-9]+)";

/// An alias name: 1-128 of `[a-zA-Z0-9-_]`, not all digits.
fn alias_name(name: &str) -> Result<(), LambdaError> {
    if name.len() > 128 {
        return Err(LambdaError::validation(
            name,
            "name",
            "Member must have length less than or equal to 128",
        ));
    }
    let chars_ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !chars_ok || name.bytes().all(|b| b.is_ascii_digit()) {
        return Err(LambdaError::validation(
            name,
            "name",
            &format!("Member must satisfy regular expression pattern: {ALIAS_PATTERN}"),
        ));
    }
    Ok(())
}

/// A FunctionVersion: `$LATEST` or a number (pattern only).
fn version_pattern(v: &str, field: &str) -> Result<(), LambdaError> {
    let ok = v == "$LATEST"
        || (!v.is_empty() && v.len() <= 1024 && v.bytes().all(|b| b.is_ascii_digit()));
    if ok {
        Ok(())
    } else {
        Err(LambdaError::validation(
            v,
            field,
            &format!("Member must satisfy regular expression pattern: {VERSION_PATTERN}"),
        ))
    }
}

/// Checks that `v` is `$LATEST` or a published version of the function.
fn version_exists(fe: &Frontend, latest: &FunctionRecord, v: &str) -> Result<(), LambdaError> {
    if v == "$LATEST" {
        return Ok(());
    }
    let found = v
        .parse::<u64>()
        .ok()
        .filter(|n| n.to_string() == v)
        .and_then(|n| fe.published.version(&latest.account, &latest.name, n));
    match found {
        Some(_) => Ok(()),
        None => Err(no_such_version(latest, v)),
    }
}

/// Validates a RoutingConfig against the alias's primary version: at most
/// one additional version, a published one other than the primary (never
/// `$LATEST`, on either side), weight within [0.0, 1.0].
fn routing(
    fe: &Frontend,
    latest: &FunctionRecord,
    primary: &str,
    rc: &AliasRoutingConfiguration,
) -> Result<BTreeMap<String, f64>, LambdaError> {
    let weights = &rc.additional_version_weights;
    if weights.is_empty() {
        return Ok(BTreeMap::new());
    }
    if weights.len() > 1 {
        return Err(LambdaError::invalid(
            "Number of items in AdditionalVersionWeights cannot be greater than 1",
        ));
    }
    for (v, w) in weights {
        if !(0.0..=1.0).contains(w) {
            return Err(LambdaError::validation(
                &format!("{{{v}={w}}}"),
                "routingConfig.additionalVersionWeights",
                "Map value must satisfy constraint: [Member must have value less than or equal to 1.0, Member must have value greater than or equal to 0.0]",
            ));
        }
        if v == "$LATEST" || primary == "$LATEST" {
            return Err(LambdaError::invalid(
                "$LATEST is not supported for an alias pointing to more than 1 version",
            ));
        }
        if !v.bytes().all(|b| b.is_ascii_digit()) || v.is_empty() || v.len() > 1024 {
            return Err(LambdaError::validation(
                v,
                "routingConfig.additionalVersionWeights",
                "Map keys must satisfy constraint: [Member must satisfy regular expression pattern: [0-9]+]",
            ));
        }
        if v == primary {
            return Err(LambdaError::invalid(format!(
                "Invalid function version {v}. Function version {v} is already included in routing configuration."
            )));
        }
        version_exists(fe, latest, v)?;
    }
    Ok(weights.clone())
}

fn alias_arn(latest: &FunctionRecord, alias: &str) -> String {
    function_arn(&latest.region, &latest.account, &latest.name, Some(alias))
}

fn precondition_failed() -> LambdaError {
    LambdaError::new(
        ErrorCode::PreconditionFailed,
        "The Revision Id provided does not match the latest Revision Id. Call the GetFunction/GetAlias API to retrieve the latest Revision Id",
    )
}

/// `POST /2015-03-31/functions/{name}/aliases`.
pub async fn create_alias(
    State(fe): State<Arc<Frontend>>,
    c: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let req: CreateAliasRequest = parse(&body)?;
    validate::other_fields(&req.other, "")?;
    let alias = req
        .name
        .ok_or_else(|| LambdaError::validation("null", "name", "Member must not be null"))?;
    alias_name(&alias)?;
    let version = req.function_version.ok_or_else(|| {
        LambdaError::validation("null", "functionVersion", "Member must not be null")
    })?;
    version_pattern(&version, "functionVersion")?;
    let description = req.description.unwrap_or_default();
    validate::description(&description)?;
    let latest: Cached = resolve(&fe, &c, &name, None)?;
    let l = &latest.record;
    version_exists(&fe, l, &version)?;
    let additional = match &req.routing_config {
        Some(rc) => routing(&fe, l, &version, rc)?,
        None => BTreeMap::new(),
    };
    let arn = alias_arn(l, &alias);
    let exists = || LambdaError::conflict(format!("Alias already exists: {arn}"));
    if fe.published.alias(&l.account, &l.name, &alias).is_some() {
        return Err(exists().into());
    }
    let record = AliasRecord {
        account: l.account.clone(),
        region: l.region.clone(),
        function: l.name.clone(),
        name: alias,
        function_version: version,
        description,
        revision_id: new_revision(),
        additional,
    };
    let created = match fe.published.put_alias(record, None).await {
        Ok(a) => a,
        Err(RegistryError::Store(StoreError::Conflict { .. })) => return Err(exists().into()),
        Err(e) => return Err(registry_error(e, &arn).into()),
    };
    Ok((StatusCode::CREATED, Json(created.record.configuration())).into_response())
}

/// The alias `alias` of the function, or `missing(arn)`.
fn find(
    fe: &Frontend,
    c: &Caller,
    name: &str,
    alias: &str,
    missing: fn(&str) -> String,
) -> Result<(Cached, CachedAlias), LambdaError> {
    let latest = resolve(fe, c, name, None)?;
    let l = &latest.record;
    match fe.published.alias(&l.account, &l.name, alias) {
        Some(a) => Ok((latest, a)),
        None => Err(LambdaError::not_found(missing(&alias_arn(l, alias)))),
    }
}

/// `GET /2015-03-31/functions/{name}/aliases/{alias}`.
pub async fn get_alias(
    State(fe): State<Arc<Frontend>>,
    c: Caller,
    Path((name, alias)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (_, a) = find(&fe, &c, &name, &alias, |arn| {
        format!("Cannot find alias arn: {arn}")
    })?;
    Ok(Json(a.record.configuration()).into_response())
}

/// `PUT /2015-03-31/functions/{name}/aliases/{alias}`.
pub async fn update_alias(
    State(fe): State<Arc<Frontend>>,
    c: Caller,
    Path((name, alias)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    let req: UpdateAliasRequest = parse(&body)?;
    validate::other_fields(&req.other, "")?;
    if let Some(v) = &req.function_version {
        version_pattern(v, "functionVersion")?;
    }
    if let Some(d) = &req.description {
        validate::description(d)?;
    }
    let (latest, a) = find(&fe, &c, &name, &alias, |arn| {
        format!("Alias not found: {arn}")
    })?;
    if req
        .revision_id
        .as_deref()
        .is_some_and(|r| r != a.record.revision_id)
    {
        return Err(precondition_failed().into());
    }
    let l = &latest.record;
    let mut next = (*a.record).clone();
    if let Some(v) = req.function_version {
        version_exists(&fe, l, &v)?;
        next.function_version = v;
    }
    if let Some(d) = req.description {
        next.description = d;
    }
    match &req.routing_config {
        Some(rc) => next.additional = routing(&fe, l, &next.function_version, rc)?,
        // The kept routing must still make sense with a new primary.
        None => {
            let rc = AliasRoutingConfiguration {
                additional_version_weights: next.additional.clone(),
            };
            routing(&fe, l, &next.function_version, &rc)?;
        }
    }
    crate::provisioned::check_alias_update(
        &fe,
        &l.account,
        &l.name,
        &next.name,
        &next.function_version,
        !next.additional.is_empty(),
    )
    .await?;
    next.revision_id = new_revision();
    let arn = next.arn();
    let updated = match fe.published.put_alias(next, Some(a.version)).await {
        Ok(u) => u,
        Err(RegistryError::Store(StoreError::Conflict { .. })) => {
            return Err(precondition_failed().into());
        }
        Err(e) => return Err(registry_error(e, &arn).into()),
    };
    crate::provisioned::alias_updated(&fe, &l.account, &l.name, &updated.record.name).await?;
    Ok(Json(updated.record.configuration()).into_response())
}

/// `DELETE /2015-03-31/functions/{name}/aliases/{alias}`: 204, also when
/// there is no such alias (as AWS).
pub async fn delete_alias(
    State(fe): State<Arc<Frontend>>,
    c: Caller,
    Path((name, alias)): Path<(String, String)>,
) -> ApiResult<Response> {
    let latest = resolve(&fe, &c, &name, None)?;
    let l = &latest.record;
    if let Some(a) = fe.published.alias(&l.account, &l.name, &alias) {
        fe.published
            .delete_alias(&a)
            .await
            .map_err(|e| registry_error(e, &a.record.arn()))?;
        // The alias's function URL and provisioned concurrency go with it.
        fe.urls.remove_alias(&l.account, &l.name, &alias).await;
        crate::provisioned::remove(&fe, &l.account, &l.name, Some(&alias)).await?;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /2015-03-31/functions/{name}/aliases[?FunctionVersion=]`.
pub async fn list_aliases(
    State(fe): State<Arc<Frontend>>,
    c: Caller,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let max = max_items(&q)?;
    let after = decode_marker(&q)?;
    let version = q.get("FunctionVersion").filter(|v| !v.is_empty());
    if let Some(v) = version {
        version_pattern(v, "functionVersion")?;
    }
    let latest = resolve(&fe, &c, &name, None)?;
    let l = &latest.record;
    let mut page: Vec<CachedAlias> = fe
        .published
        .aliases_of(&l.account, &l.name)
        .into_iter()
        .filter(|a| after.as_deref().is_none_or(|m| a.record.name.as_str() > m))
        .filter(|a| version.is_none_or(|v| a.record.uses(v)))
        .collect();
    let more = page.len() > max;
    page.truncate(max);
    let next_marker = more
        .then(|| page.last().map(|a| marker(&a.record.name)))
        .flatten();
    Ok(Json(ListAliasesResponse {
        aliases: page.iter().map(|a| a.record.configuration()).collect(),
        next_marker,
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_names() {
        assert!(alias_name("live").is_ok());
        assert!(alias_name("v2-blue_1").is_ok());
        for bad in ["123", "", "a!b", "$LATEST"] {
            assert_eq!(
                alias_name(bad).expect_err(bad).code,
                ErrorCode::Validation,
                "{bad}"
            );
        }
        assert_eq!(
            alias_name(&"a".repeat(129)).expect_err("long").code,
            ErrorCode::Validation
        );
    }

    #[test]
    fn version_patterns() {
        assert!(version_pattern("$LATEST", "functionVersion").is_ok());
        assert!(version_pattern("12", "functionVersion").is_ok());
        for bad in ["", "v1", "$latest", "1.0"] {
            assert!(version_pattern(bad, "functionVersion").is_err(), "{bad}");
        }
    }
}
