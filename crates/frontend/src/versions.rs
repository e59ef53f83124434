//! Function versions: PublishVersion, ListVersionsByFunction, deleting one
//! version, and resolving a qualifier (`$LATEST`, a version number or an
//! alias) to the record that runs.
//!
//! A version is an immutable snapshot of `$LATEST` (code digest and
//! configuration) with its own RevisionId, so its sandboxes are pooled apart
//! from `$LATEST`'s and survive every later change of `$LATEST`. Version
//! numbers are never reused: `$LATEST`'s record keeps the highest one ever
//! published. Publishing an unchanged function returns the newest version.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use stratus_api::LambdaError;
use stratus_api::model::{FunctionConfiguration, ListVersionsResponse, PublishVersionRequest};
use stratus_store::StoreError;
use stratus_types::{AccountId, function_arn};

use crate::auth::Caller;
use crate::control::{
    check_update, new_revision, not_found, now_timestamp, parse, parse_function_ref,
    registry_error, resolve,
};
use crate::error::ApiResult;
use crate::published::AliasRecord;
use crate::registry::{Cached, FunctionRecord, RegistryError};
use crate::{Frontend, validate};

/// What a FunctionName and Qualifier name.
#[derive(Debug, Clone)]
pub struct Target {
    /// The function's `$LATEST` record (its reservation, its state).
    pub latest: Cached,
    /// The record that runs: `$LATEST`, the version named, or the version an
    /// alias sends this request to.
    pub found: Cached,
    /// The qualifier as given (`None`: unqualified).
    pub qualifier: Option<String>,
    /// Set when the qualifier is an alias.
    pub alias: Option<Arc<AliasRecord>>,
}

impl Target {
    /// The ARN the caller named: unqualified, or with the qualifier given
    /// (`...:f:1`, `...:f:live`, `...:f:$LATEST`).
    pub fn arn(&self) -> String {
        let r = &self.latest.record;
        function_arn(&r.region, &r.account, &r.name, self.qualifier.as_deref())
    }

    /// The configuration document of what was named, with the ARN as named.
    pub fn configuration(&self) -> FunctionConfiguration {
        let mut doc = self.found.record.configuration();
        if self.qualifier.is_some() {
            doc.function_arn = self.arn();
        }
        doc
    }
}

/// A version number as written in a qualifier (`1`, never `01`).
fn version_number(q: &str) -> Option<u64> {
    q.parse::<u64>().ok().filter(|n| n.to_string() == q)
}

/// Resolves a FunctionName path parameter and Qualifier. With `route`, an
/// alias picks the version this request runs by its routing weights;
/// without, an alias stands for its primary version.
pub fn resolve_target(
    fe: &Frontend,
    c: &Caller,
    name_param: &str,
    qualifier: Option<&str>,
    route: bool,
) -> Result<Target, LambdaError> {
    let (r, account, qualifier) = parse_function_ref(c, name_param, qualifier)?;
    let missing = || not_found(c, &account, &r.name, qualifier.as_deref());
    let latest = fe.registry.get(&account, &r.name).ok_or_else(missing)?;
    let version = |v: &str| -> Option<Cached> {
        if v == "$LATEST" {
            return Some(latest.clone());
        }
        fe.published.version(&account, &r.name, version_number(v)?)
    };
    let (found, alias) = match qualifier.as_deref() {
        None => (latest.clone(), None),
        Some(q) if q == "$LATEST" || q.bytes().all(|b| b.is_ascii_digit()) => {
            (version(q).ok_or_else(missing)?, None)
        }
        Some(q) => {
            let a = fe
                .published
                .alias(&account, &r.name, q)
                .ok_or_else(missing)?;
            let runs: &str = if route {
                a.record.route(rand::random::<f64>())
            } else {
                a.record.function_version.as_str()
            };
            // An alias's versions cannot be deleted while it uses them.
            let found = version(runs).ok_or_else(|| {
                LambdaError::service(format!(
                    "alias {} names a missing version {runs}",
                    a.record.arn()
                ))
            })?;
            (found, Some(a.record))
        }
    };
    Ok(Target {
        latest,
        found,
        qualifier,
        alias,
    })
}

/// Whether two records run the same thing (code and configuration): then
/// publishing one after the other makes no new version.
fn same_snapshot(a: &FunctionRecord, b: &FunctionRecord) -> bool {
    a.code_digest == b.code_digest
        && a.runtime == b.runtime
        && a.role == b.role
        && a.handler == b.handler
        && a.timeout_s == b.timeout_s
        && a.memory_mb == b.memory_mb
        && a.ephemeral_mb == b.ephemeral_mb
        && a.environment == b.environment
        && a.architectures == b.architectures
        && a.layers == b.layers
        && a.dead_letter_target == b.dead_letter_target
}

/// Publishes `latest` (the `$LATEST` record just read) as the next version,
/// or returns the newest version if nothing changed since it was published.
pub(crate) async fn publish(
    fe: &Frontend,
    latest: &Cached,
    description: Option<String>,
) -> Result<Cached, LambdaError> {
    let l = &latest.record;
    if let Some(newest) = fe.published.newest(&l.account, &l.name)
        && same_snapshot(&newest.record, l)
    {
        return Ok(newest);
    }
    let newest_n = fe
        .published
        .newest(&l.account, &l.name)
        .and_then(|v| v.record.version.parse::<u64>().ok())
        .unwrap_or(0);
    let n = newest_n.max(l.last_version) + 1;
    let mut v = (**l).clone();
    v.version = n.to_string();
    v.last_version = 0;
    v.reserved_concurrency = None;
    v.state = "Active".into();
    v.last_update_status = Some("Successful".into());
    v.revision_id = new_revision();
    v.last_modified = now_timestamp();
    if let Some(d) = description {
        v.description = d;
    }
    let arn = v.arn();
    let published = fe
        .published
        .put_version(v)
        .await
        .map_err(|e| registry_error(e, &arn))?;
    // Record the number in $LATEST, on the very record snapshotted; if it
    // changed meanwhile only in its state (settling), try again on the new
    // one, else the snapshot is stale: take it back.
    let mut base = latest.clone();
    let mut attempts = 0;
    loop {
        let mut next = (*base.record).clone();
        next.last_version = n;
        match fe.registry.put(next, Some(base.version)).await {
            Ok(_) => break,
            Err(RegistryError::Store(StoreError::Conflict { .. })) if attempts < 8 => {
                attempts += 1;
                tokio::time::sleep(std::time::Duration::from_millis(1 << attempts)).await;
                match fe.registry.get(&l.account, &l.name) {
                    Some(now) if same_snapshot(&now.record, l) => base = now,
                    _ => {
                        unpublish(fe, &published).await;
                        return Err(LambdaError::conflict(format!(
                            "The operation cannot be performed at this time. An update is in progress for resource: {}",
                            l.arn()
                        )));
                    }
                }
            }
            Err(e) => {
                unpublish(fe, &published).await;
                return Err(registry_error(e, &l.arn()));
            }
        }
    }
    let r = &published.record;
    fe.deps
        .invoker
        .retire(&r.account, &r.name, Some(&r.version), Some(&r.revision_id));
    tracing::info!(function = %r.name, version = %r.version, "published a version");
    Ok(published)
}

/// Takes back a version whose publish failed (and its code, if an update
/// left it to this version meanwhile).
async fn unpublish(fe: &Frontend, v: &Cached) {
    match fe.published.delete_version(v).await {
        Ok(()) => fe.collect_code(&v.record.code_digest).await,
        Err(e) => {
            tracing::warn!(function = %v.record.name, version = %v.record.version, error = %e, "could not take back a failed publish");
        }
    }
}

/// The document a `Publish: true` create or code update returns: the new
/// version's, in `$LATEST`'s state at that moment.
pub(crate) fn as_published(latest: &Cached, version: &Cached) -> FunctionConfiguration {
    let l = latest.record.configuration();
    let mut doc = version.record.configuration();
    doc.state = l.state;
    doc.state_reason = l.state_reason;
    doc.state_reason_code = l.state_reason_code;
    doc.last_update_status = l.last_update_status;
    doc.last_update_status_reason = l.last_update_status_reason;
    doc.last_update_status_reason_code = l.last_update_status_reason_code;
    doc
}

/// `POST /2015-03-31/functions/{name}/versions`.
pub async fn publish_version(
    State(fe): State<Arc<Frontend>>,
    c: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let req: PublishVersionRequest = if body.iter().all(u8::is_ascii_whitespace) {
        PublishVersionRequest::default()
    } else {
        parse(&body)?
    };
    validate::other_fields(&req.other, "")?;
    if let Some(d) = &req.description {
        validate::description(d)?;
    }
    let latest = resolve(&fe, &c, &name, None)?;
    if let Some(sha) = req.code_sha256.as_deref().filter(|s| !s.is_empty())
        && sha != latest.record.code_sha256
    {
        return Err(LambdaError::invalid(format!(
            "CodeSHA256 ({sha}) is different from current CodeSHA256 in $LATEST ({}). Please try again with the CodeSHA256 in $LATEST.",
            latest.record.code_sha256
        ))
        .into());
    }
    check_update(&latest, req.revision_id.as_deref())?;
    let v = publish(&fe, &latest, req.description).await?;
    Ok((StatusCode::CREATED, Json(v.record.configuration())).into_response())
}

/// Parses `MaxItems` (1..=10000, default 50).
pub(crate) fn max_items(q: &HashMap<String, String>) -> Result<usize, LambdaError> {
    match q.get("MaxItems") {
        None => Ok(50),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=10_000).contains(&n) => Ok(n),
            _ => Err(LambdaError::validation(
                s,
                "maxItems",
                "Member must have value between 1 and 10000",
            )),
        },
    }
}

/// Encodes a position for `NextMarker`.
pub(crate) fn marker(position: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(position.as_bytes())
}

/// Decodes a `Marker` (absent or empty: from the start).
pub(crate) fn decode_marker(q: &HashMap<String, String>) -> Result<Option<String>, LambdaError> {
    match q.get("Marker").filter(|m| !m.is_empty()) {
        None => Ok(None),
        Some(m) => base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(m)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .map(Some)
            .ok_or_else(|| LambdaError::invalid(format!("Invalid Marker: {m}"))),
    }
}

/// Parses `MaxItems` of the per-function config lists (event invoke,
/// provisioned concurrency, URLs): 1..=50, default 50.
pub(crate) fn max_items_50(q: &HashMap<String, String>) -> Result<usize, LambdaError> {
    match q.get("MaxItems") {
        None => Ok(50),
        Some(m) => m
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=50).contains(n))
            .ok_or_else(|| {
                LambdaError::validation(m, "maxItems", "Member must have value between 1 and 50")
            }),
    }
}

/// The paging of a per-function config list: `MaxItems` (1..=50) and the
/// decoded `Marker`, checked before the function is looked up.
#[derive(Debug)]
pub(crate) struct Paging {
    max: usize,
    after: Option<String>,
}

impl Paging {
    pub(crate) fn parse(q: &HashMap<String, String>) -> Result<Self, LambdaError> {
        Ok(Paging {
            max: max_items_50(q)?,
            after: decode_marker(q)?,
        })
    }

    /// One page of `items`, listed in key order by `key` (a qualifier):
    /// those after the marker, at most `max`, and the `NextMarker` when
    /// more follow (the last key of the page).
    pub(crate) fn page<T>(
        &self,
        items: Vec<T>,
        key: impl Fn(&T) -> &str,
    ) -> (Vec<T>, Option<String>) {
        let mut rest: Vec<T> = items
            .into_iter()
            .filter(|x| self.after.as_deref().is_none_or(|a| key(x) > a))
            .collect();
        let more = rest.len() > self.max;
        rest.truncate(self.max);
        let next = more.then(|| rest.last().map(|x| marker(key(x)))).flatten();
        (rest, next)
    }
}

/// A function's `$LATEST` (ARN `...:$LATEST`) then its versions in order,
/// each with its order key (0 for `$LATEST`).
fn all_versions_of(fe: &Frontend, latest: &FunctionRecord) -> Vec<(u64, FunctionConfiguration)> {
    let mut doc = latest.configuration();
    doc.function_arn = function_arn(
        &latest.region,
        &latest.account,
        &latest.name,
        Some("$LATEST"),
    );
    let mut out = vec![(0, doc)];
    for v in fe.published.versions_of(&latest.account, &latest.name) {
        if let Ok(n) = v.record.version.parse::<u64>() {
            out.push((n, v.record.configuration()));
        }
    }
    out
}

/// `GET /2015-03-31/functions/{name}/versions`: `$LATEST` first, then the
/// versions in order.
pub async fn list_versions(
    State(fe): State<Arc<Frontend>>,
    c: Caller,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let max = max_items(&q)?;
    let after = match decode_marker(&q)? {
        None => None,
        Some(m) => Some(
            m.parse::<u64>()
                .map_err(|_| LambdaError::invalid(format!("Invalid Marker: {m}")))?,
        ),
    };
    let latest = resolve(&fe, &c, &name, None)?;
    let mut all: Vec<(u64, FunctionConfiguration)> = all_versions_of(&fe, &latest.record)
        .into_iter()
        .filter(|(n, _)| after.is_none_or(|a| *n > a))
        .collect();
    let more = all.len() > max;
    all.truncate(max);
    let next_marker = more
        .then(|| all.last().map(|(n, _)| marker(&n.to_string())))
        .flatten();
    Ok(Json(ListVersionsResponse {
        versions: all.into_iter().map(|(_, d)| d).collect(),
        next_marker,
    })
    .into_response())
}

/// ListFunctions with `FunctionVersion=ALL`: every function's `$LATEST` and
/// versions, by name then version. The marker is `name/order`.
pub(crate) fn list_all_versions(
    fe: &Frontend,
    account: &AccountId,
    after: Option<&str>,
    max: usize,
) -> (Vec<FunctionConfiguration>, Option<String>) {
    let after: Option<(String, u64)> = after.map(|m| match m.split_once('/') {
        Some((name, n)) => (name.to_owned(), n.parse().unwrap_or(u64::MAX)),
        // A marker of the default listing: after that function's versions.
        None => (m.to_owned(), u64::MAX),
    });
    let (functions, _) = fe.registry.list(account, None, usize::MAX);
    let mut out = Vec::new();
    let mut last: Option<(String, u64)> = None;
    for f in functions {
        if after.as_ref().is_some_and(|(name, _)| f.name < *name) {
            continue;
        }
        for (n, doc) in all_versions_of(fe, &f) {
            if after
                .as_ref()
                .is_some_and(|(name, a)| f.name == *name && n <= *a)
            {
                continue;
            }
            if out.len() == max {
                let next = last.map(|(name, n)| marker(&format!("{name}/{n}")));
                return (out, next);
            }
            out.push(doc);
            last = Some((f.name.clone(), n));
        }
    }
    (out, None)
}

/// DeleteFunction with a version qualifier: deletes that version, unless an
/// alias uses it.
pub(crate) async fn delete_version(fe: &Frontend, t: &Target) -> ApiResult<Response> {
    if t.alias.is_some() {
        return Err(LambdaError::invalid(
            "Deletion of aliases is not supported by DeleteFunction; use DeleteAlias.",
        )
        .into());
    }
    let v = &t.found.record;
    let users: Vec<String> = fe
        .published
        .aliases_of(&v.account, &v.name)
        .into_iter()
        .filter(|a| a.record.uses(&v.version))
        .map(|a| a.record.name.clone())
        .collect();
    if !users.is_empty() {
        return Err(LambdaError::conflict(format!(
            "Unable to delete version because the following aliases reference it: [{}]",
            users.join(", ")
        ))
        .into());
    }
    fe.published
        .delete_version(&t.found)
        .await
        .map_err(|e| registry_error(e, &v.arn()))?;
    if let Err(e) = crate::provisioned::remove(fe, &v.account, &v.name, Some(&v.version)).await {
        tracing::warn!(function = %v.name, version = %v.version, error = %e, "could not remove the version's provisioned concurrency config");
    }
    fe.deps
        .invoker
        .retire(&v.account, &v.name, Some(&v.version), None);
    fe.collect_code(&v.code_digest).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The error of a version number that is not there.
pub(crate) fn no_such_version(latest: &FunctionRecord, v: &str) -> LambdaError {
    LambdaError::not_found(format!(
        "Function not found: {}",
        function_arn(&latest.region, &latest.account, &latest.name, Some(v))
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_numbers_are_canonical() {
        assert_eq!(version_number("1"), Some(1));
        assert_eq!(version_number("42"), Some(42));
        assert_eq!(version_number("01"), None);
        assert_eq!(version_number("$LATEST"), None);
        assert_eq!(version_number("99999999999999999999999"), None);
    }

    #[test]
    fn config_lists_page_by_qualifier() {
        let q = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let items = || vec!["$LATEST", "1", "2"];
        let first = Paging::parse(&q(&[("MaxItems", "2")])).expect("valid");
        let (page, next) = first.page(items(), |x| x);
        assert_eq!(page, ["$LATEST", "1"]);
        let next = next.expect("more follow");
        let second = Paging::parse(&q(&[("MaxItems", "2"), ("Marker", &next)])).expect("valid");
        assert_eq!(second.page(items(), |x| x), (vec!["2"], None));
        let all = Paging::parse(&q(&[])).expect("default");
        assert_eq!(all.page(items(), |x| x).1, None);
        for bad in ["0", "51", "x"] {
            assert!(Paging::parse(&q(&[("MaxItems", bad)])).is_err(), "{bad}");
        }
        assert!(Paging::parse(&q(&[("Marker", "!!")])).is_err());
    }
}
