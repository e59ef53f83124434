//! Tags: TagResource, UntagResource and ListTags (`/2017-03-31/tags/{ARN}`),
//! and the checks shared with CreateFunction's `Tags`.
//!
//! Tags live in the function's record ([`FunctionRecord::tags`]); changing
//! them does not change the function's RevisionId (no sandbox is retired).
//! Only unqualified function ARNs of the caller's account are taggable.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use stratus_api::LambdaError;
use stratus_store::StoreError;

use crate::Frontend;
use crate::auth::Caller;
use crate::control::{parse, registry_error};
use crate::error::ApiResult;
use crate::registry::{Cached, FunctionRecord, RegistryError};

/// Most tags a function may carry.
pub const MAX_TAGS: usize = 50;
/// Longest tag key and value, in characters.
pub const KEY_MAX_CHARS: usize = 128;
pub const VALUE_MAX_CHARS: usize = 256;

/// The pattern the model gives a taggable resource ARN.
const RESOURCE_PATTERN: &str = "arn:(aws[a-zA-Z-]*):lambda:[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\\d{1}:\\d{12}:(function:[a-zA-Z0-9-_]+(:(\\$LATEST|[a-zA-Z0-9-_]+))?|layer:([a-zA-Z0-9-_]+)|code-signing-config:csc-[a-z0-9]{17}|event-source-mapping:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})";

/// Checks a set of tags (keys and values, and the count).
pub fn check(tags: &BTreeMap<String, String>) -> Result<(), LambdaError> {
    if tags.len() > MAX_TAGS {
        return Err(too_many());
    }
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > KEY_MAX_CHARS {
            return Err(LambdaError::invalid(format!(
                "The tag key '{k}' is invalid: a key is 1 to {KEY_MAX_CHARS} characters."
            )));
        }
        if k.to_ascii_lowercase().starts_with("aws:") {
            return Err(LambdaError::invalid(format!(
                "The tag key '{k}' is invalid: the aws: prefix is reserved for AWS use."
            )));
        }
        if v.chars().count() > VALUE_MAX_CHARS {
            return Err(LambdaError::invalid(format!(
                "The value of tag '{k}' is invalid: a value is at most {VALUE_MAX_CHARS} characters."
            )));
        }
    }
    Ok(())
}

fn too_many() -> LambdaError {
    LambdaError::invalid(format!(
        "Number of tags exceeds resource tag limit ({MAX_TAGS})."
    ))
}

/// Resolves a tag resource ARN to a function of the caller's account.
fn function_of(fe: &Frontend, c: &Caller, resource: &str) -> Result<Cached, LambdaError> {
    let bad = || {
        LambdaError::validation(
            resource,
            "resource",
            &format!("Member must satisfy regular expression pattern: {RESOURCE_PATTERN}"),
        )
    };
    let parts: Vec<&str> = resource.split(':').collect();
    if parts.len() < 7
        || parts[0] != "arn"
        || !parts[1].starts_with("aws")
        || parts[2] != "lambda"
        || !stratus_types::is_region(parts[3])
    {
        return Err(bad());
    }
    if parts[5] != "function" {
        return Err(LambdaError::invalid(format!(
            "Stratus tags only functions, not {}: {resource}",
            parts[5]
        )));
    }
    if parts.len() > 7 {
        return Err(LambdaError::invalid(
            "Tags on function aliases and versions are not supported. Please specify a function ARN.",
        ));
    }
    let r = stratus_types::FunctionRef::parse(resource).map_err(|_| bad())?;
    if r.region.as_deref().is_some_and(|reg| reg != c.region) {
        return Err(LambdaError::not_found(format!(
            "Function not found: {resource}"
        )));
    }
    crate::control::resolve(fe, c, resource, None)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct TagRequest {
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

/// Applies `change` to the function's tags, retrying if the record changed
/// under us (tags are not guarded by a RevisionId).
async fn update_tags(
    fe: &Frontend,
    c: &Caller,
    resource: &str,
    change: impl Fn(&mut BTreeMap<String, String>) -> Result<(), LambdaError>,
) -> Result<(), LambdaError> {
    let mut found = function_of(fe, c, resource)?;
    for attempt in 0..8 {
        let mut next: FunctionRecord = (*found.record).clone();
        change(&mut next.tags)?;
        if next.tags == found.record.tags {
            return Ok(());
        }
        let arn = next.arn();
        match fe.registry.put(next, Some(found.version)).await {
            Ok(_) => return Ok(()),
            Err(RegistryError::Store(StoreError::Conflict { .. })) if attempt < 7 => {
                tokio::time::sleep(std::time::Duration::from_millis(1 << attempt)).await;
                found = function_of(fe, c, resource)?;
            }
            Err(e) => return Err(registry_error(e, &arn)),
        }
    }
    Err(LambdaError::service("tagging kept conflicting"))
}

/// `POST /2017-03-31/tags/{ARN}`: merges the given tags into the function's.
pub async fn tag_resource(
    State(fe): State<Arc<Frontend>>,
    c: Caller,
    Path(resource): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let req: TagRequest = parse(&body)?;
    check(&req.tags)?;
    update_tags(&fe, &c, &resource, |tags| {
        for (k, v) in &req.tags {
            tags.insert(k.clone(), v.clone());
        }
        if tags.len() > MAX_TAGS {
            return Err(too_many());
        }
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /2017-03-31/tags/{ARN}?tagKeys=a&tagKeys=b`: removes those keys;
/// keys the function does not have are ignored.
pub async fn untag_resource(
    State(fe): State<Arc<Frontend>>,
    c: Caller,
    Path(resource): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> ApiResult<Response> {
    let keys: Vec<String> = q
        .into_iter()
        .filter(|(k, _)| k == "tagKeys")
        .map(|(_, v)| v)
        .collect();
    update_tags(&fe, &c, &resource, |tags| {
        for k in &keys {
            tags.remove(k);
        }
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /2017-03-31/tags/{ARN}`: `{"Tags": {...}}`.
pub async fn list_tags(
    State(fe): State<Arc<Frontend>>,
    c: Caller,
    Path(resource): Path<String>,
    Query(_q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let found = function_of(&fe, &c, &resource)?;
    Ok(Json(serde_json::json!({"Tags": found.record.tags})).into_response())
}

/// Tags given at CreateFunction, checked.
pub fn at_create(
    tags: Option<&BTreeMap<String, String>>,
) -> Result<BTreeMap<String, String>, LambdaError> {
    let tags = tags.cloned().unwrap_or_default();
    check(&tags)?;
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn keys_values_and_count_are_checked() {
        assert!(check(&tags(&[("team", "a"), ("", "")])).is_err());
        assert!(check(&tags(&[("aws:cloudformation:stack", "x")])).is_err());
        assert!(check(&tags(&[("AWS:x", "x")])).is_err());
        let long_key = "k".repeat(KEY_MAX_CHARS + 1);
        assert!(check(&tags(&[(&long_key, "v")])).is_err());
        let long_value = "v".repeat(VALUE_MAX_CHARS + 1);
        assert!(check(&tags(&[("k", &long_value)])).is_err());
        let ok_key = "k".repeat(KEY_MAX_CHARS);
        let ok_value = "v".repeat(VALUE_MAX_CHARS);
        assert!(check(&tags(&[(&ok_key, &ok_value), ("empty", "")])).is_ok());
        let many: BTreeMap<String, String> = (0..=MAX_TAGS)
            .map(|i| (format!("k{i}"), String::new()))
            .collect();
        assert!(check(&many).is_err());
    }
}
