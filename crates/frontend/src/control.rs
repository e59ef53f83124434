//! Control-plane operations: create, read, list, update and delete functions.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::de::DeserializeOwned;
use stratus_api::model::{
    Concurrency, CreateFunctionRequest, FunctionCodeLocation, GetFunctionResponse,
    ListFunctionsResponse, UpdateFunctionCodeRequest, UpdateFunctionConfigurationRequest,
};
use stratus_api::{ErrorCode, LambdaError};
use stratus_store::StoreError;
use stratus_types::limits::{
    EPHEMERAL_DEFAULT_MB, MEMORY_DEFAULT_MB, TIMEOUT_DEFAULT_S, ZIP_MAX_BYTES,
};
use stratus_types::{AccountId, FunctionRef, function_arn};

use crate::auth::Caller;
use crate::code_gc::Upload;
use crate::error::ApiResult;
use crate::registry::{Cached, FunctionRecord, RegistryError};
use crate::{Frontend, presign, validate};

/// Parses a JSON request body.
pub(crate) fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, LambdaError> {
    serde_json::from_slice(body).map_err(|e| {
        LambdaError::new(
            ErrorCode::InvalidRequestContent,
            format!("Could not parse request body into json: {e}"),
        )
    })
}

/// Lambda's timestamp format: `2024-01-01T00:00:00.000+0000`.
pub fn now_timestamp() -> String {
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]+0000"
    );
    time::OffsetDateTime::now_utc()
        .format(&f)
        .unwrap_or_default()
}

pub(crate) fn new_revision() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub(crate) fn registry_error(e: RegistryError, arn: &str) -> LambdaError {
    match e {
        RegistryError::Store(StoreError::Conflict { .. }) => LambdaError::conflict(format!(
            "The operation cannot be performed at this time. An update is in progress for resource: {arn}"
        )),
        other => LambdaError::service(other.to_string()),
    }
}

/// Resolves a FunctionName path parameter (and optional Qualifier) to the
/// `$LATEST` record of a function of the caller's account; any other
/// qualifier is not found here (see [`crate::versions::resolve_target`]
/// for versions and aliases).
pub fn resolve(
    fe: &Frontend,
    c: &Caller,
    name_param: &str,
    qualifier: Option<&str>,
) -> Result<Cached, LambdaError> {
    let (r, account, qualifier) = parse_function_ref(c, name_param, qualifier)?;
    let found = fe
        .registry
        .get(&account, &r.name)
        .ok_or_else(|| not_found(c, &account, &r.name, qualifier.as_deref()))?;
    match qualifier.as_deref() {
        None | Some("$LATEST") => Ok(found),
        Some(q) => Err(not_found(c, &account, &r.name, Some(q))),
    }
}

/// `Function not found: <arn>` (ResourceNotFoundException).
pub(crate) fn not_found(
    c: &Caller,
    account: &AccountId,
    name: &str,
    qualifier: Option<&str>,
) -> LambdaError {
    LambdaError::not_found(format!(
        "Function not found: {}",
        function_arn(&c.region, account, name, qualifier)
    ))
}

/// Parses a FunctionName path parameter and Qualifier: the name, the
/// caller's account (a function of another account is not found) and the
/// qualifier, from either (they must agree; empty means none).
pub(crate) fn parse_function_ref(
    c: &Caller,
    name_param: &str,
    qualifier: Option<&str>,
) -> Result<(FunctionRef, AccountId, Option<String>), LambdaError> {
    let r = FunctionRef::parse(name_param).map_err(|_| {
        LambdaError::validation(
            name_param,
            "functionName",
            &format!(
                "Member must satisfy regular expression pattern: {}",
                stratus_types::FUNCTION_NAME_PATTERN
            ),
        )
    })?;
    // An empty Qualifier parameter means "unqualified".
    let qualifier = qualifier.filter(|q| !q.is_empty());
    let qualifier = match (qualifier, r.qualifier.as_deref()) {
        (Some(a), Some(b)) if a != b => {
            return Err(LambdaError::invalid(
                "The derived qualifier from the function name does not match the specified qualifier.",
            ));
        }
        (Some(q), _) | (None, Some(q)) => Some(q.to_owned()),
        (None, None) => None,
    };
    if let Some(q) = &qualifier {
        stratus_types::validate_qualifier_param(q).map_err(|_| {
            LambdaError::validation(
                q,
                "qualifier",
                "Member must satisfy regular expression pattern: (|[a-zA-Z0-9$_-]+)",
            )
        })?;
    }
    let account = r.account.clone().unwrap_or_else(|| c.account.clone());
    if account != c.account {
        return Err(not_found(c, &account, &r.name, qualifier.as_deref()));
    }
    Ok((r, account, qualifier))
}

/// [`parse`] of a body that may be a code upload (tens of MB): a large one
/// is parsed on the blocking pool ([`crate::offload`]).
pub(crate) async fn parse_upload<T: DeserializeOwned + Send + 'static>(
    body: Bytes,
) -> Result<T, LambdaError> {
    crate::offload::cpu_bound(body.len(), move || parse(&body)).await?
}

/// The archive of a `ZipFile` member (base64), decoded on the blocking pool
/// when large ([`crate::offload`]).
pub(crate) async fn decode_zip(b64: String) -> Result<Vec<u8>, LambdaError> {
    crate::offload::cpu_bound(b64.len(), move || decode_zip_now(&b64)).await?
}

fn decode_zip_now(b64: &str) -> Result<Vec<u8>, LambdaError> {
    let zip = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| {
            LambdaError::invalid(
                "Could not unzip uploaded file. Please check your file, then try to upload again.",
            )
        })?;
    if zip.len() > ZIP_MAX_BYTES {
        return Err(LambdaError::new(
            ErrorCode::RequestEntityTooLarge,
            format!("Zipped size must be smaller than {ZIP_MAX_BYTES} bytes"),
        ));
    }
    Ok(zip)
}

/// A stored and unpacked archive, protected from removal until `upload`
/// is dropped (after the record naming it is written).
pub(crate) struct Stored<'a> {
    pub(crate) upload: Upload<'a>,
    pub(crate) digest: String,
    pub(crate) sha_b64: String,
    pub(crate) size: u64,
}

/// Lambda's message for an archive it cannot unpack.
pub(crate) const UNZIP_FAILED: &str =
    "Could not unzip uploaded file. Please check your file, then try to upload again.";

/// The unzipped size of a function's stored code (declared sizes), to
/// check it with its layers against the limit.
async fn stored_unzipped_size(fe: &Frontend, digest: &str) -> Result<u64, LambdaError> {
    let zip = fe
        .deps
        .blobs
        .get(digest)
        .await
        .map_err(|e| LambdaError::service(format!("reading code {digest}: {e}")))?;
    crate::layers::declared_size(&zip)
}

/// Stores the zip and checks it unpacks. An archive that does not unpack is
/// removed again.
pub(crate) async fn store_code(fe: &Frontend, zip: Vec<u8>) -> Result<Stored<'_>, LambdaError> {
    let size = zip.len() as u64;
    let (zip, (digest, sha_b64)) = crate::offload::cpu_bound(zip.len(), move || {
        let digests = stratus_code::digests(&zip);
        (zip, digests)
    })
    .await?;
    // Before the blob exists: from now until the record is written, nothing
    // else keeps it.
    let upload = fe.code_gc.upload(&digest).await;
    fe.deps
        .blobs
        .put_hashed(&digest, Bytes::from(zip))
        .await
        .map_err(|e| LambdaError::service(format!("storing code: {e}")))?;
    if let Err(e) = fe.deps.worker.prepare_code(&digest).await {
        drop(upload);
        fe.collect_code(&digest).await;
        return Err(e);
    }
    Ok(Stored {
        upload,
        digest,
        sha_b64,
        size,
    })
}

pub(crate) fn host(headers: &HeaderMap) -> String {
    headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".:-[]".contains(c))
        })
        .unwrap_or("127.0.0.1:9000")
        .to_owned()
}

/// Moves functions left Pending or InProgress (by a crash, or just now) to
/// their settled state once their code is ready.
pub async fn finish_pending(fe: &Arc<Frontend>) {
    for c in fe.registry.all() {
        settle(
            Arc::clone(fe),
            c.record.account.clone(),
            c.record.name.clone(),
        );
    }
}

/// Marks a function Active / Successful once its code is prepared.
fn settle(fe: Arc<Frontend>, account: AccountId, name: String) {
    tokio::spawn(async move {
        for _ in 0..5 {
            let Some(c) = fe.registry.get(&account, &name) else {
                return;
            };
            let r = &c.record;
            if r.state == "Active" && r.last_update_status.as_deref() != Some("InProgress") {
                return;
            }
            if let Err(e) = fe.deps.worker.prepare_code(&r.code_digest).await {
                tracing::warn!(function = %name, error = %e, "code not ready");
            }
            let mut next = (**r).clone();
            next.state = "Active".into();
            next.last_update_status = Some("Successful".into());
            match fe.registry.put(next, Some(c.version)).await {
                Ok(_) => return,
                Err(RegistryError::Store(StoreError::Conflict { .. })) => continue,
                Err(e) => {
                    tracing::error!(function = %name, error = %e, "could not settle function state");
                    return;
                }
            }
        }
    });
}

pub async fn create_function(
    State(fe): State<Arc<Frontend>>,
    c: Caller,
    body: Bytes,
) -> ApiResult<Response> {
    let mut req: CreateFunctionRequest = parse_upload(body).await?;
    validate::function_name(&req.function_name)?;
    let dead_letter =
        crate::event_config::take_dead_letter(&mut req.other, &c.account, &req.function_name)?
            .flatten();
    let runtime_id = req
        .runtime
        .as_deref()
        .ok_or_else(|| LambdaError::invalid("Runtime and Handler are mandatory parameters for functions created with deployment packages."))?;
    let runtime = validate::runtime(runtime_id, &fe.deps.interpreters)?;
    let handler = req
        .handler
        .as_deref()
        .ok_or_else(|| LambdaError::invalid("Runtime and Handler are mandatory parameters for functions created with deployment packages."))?;
    validate::handler(handler)?;
    let role = req.role.as_deref().unwrap_or_default();
    validate::role(role)?;
    let description = req.description.clone().unwrap_or_default();
    validate::description(&description)?;
    let memory = req
        .memory_size
        .map(validate::memory)
        .transpose()?
        .unwrap_or(MEMORY_DEFAULT_MB);
    let timeout = req
        .timeout
        .map(validate::timeout)
        .transpose()?
        .unwrap_or(TIMEOUT_DEFAULT_S);
    let ephemeral = req
        .ephemeral_storage
        .as_ref()
        .map(validate::ephemeral)
        .transpose()?
        .unwrap_or(EPHEMERAL_DEFAULT_MB);
    let environment = req
        .environment
        .as_ref()
        .map(validate::environment)
        .transpose()?;
    let architectures = validate::architectures(&req.architectures)?;
    validate::tracing_config(&req.tracing_config)?;
    validate::logging_config(&req.logging_config, &req.function_name)?;
    if req.package_type.as_deref().is_some_and(|p| p != "Zip") {
        return Err(validate::unsupported("PackageType Image (container images)").into());
    }
    let tags = crate::tags::at_create(req.tags.as_ref())?;
    validate::other_fields(&req.other, "")?;
    let publish = req.publish == Some(true);
    let code = req.code.ok_or_else(|| {
        LambdaError::invalid(
            "Code is a mandatory parameter: upload the deployment package as Code.ZipFile.",
        )
    })?;
    validate::other_fields(&code.other, "Code.")?;
    let zip_b64 = code.zip_file.ok_or_else(|| {
        LambdaError::invalid(
            "Stratus takes code as Code.ZipFile (S3 locations and images are not supported).",
        )
    })?;
    let arn = function_arn(&c.region, &c.account, &req.function_name, None);
    if fe.registry.get(&c.account, &req.function_name).is_some() {
        return Err(LambdaError::conflict(format!(
            "Function already exist: {}",
            req.function_name
        ))
        .into());
    }
    let zip = decode_zip(zip_b64).await?;
    let layers = match req.layers.as_deref() {
        Some(arns) if !arns.is_empty() => {
            let code_unzipped = crate::layers::declared_size(&zip)?;
            crate::layers::resolve_layers(&fe, &c, arns, code_unzipped)?
        }
        _ => Vec::new(),
    };
    let stored = store_code(&fe, zip).await?;
    let record = FunctionRecord {
        account: c.account.clone(),
        region: c.region.clone(),
        name: req.function_name.clone(),
        runtime: runtime.id().to_owned(),
        role: role.to_owned(),
        handler: handler.to_owned(),
        description,
        timeout_s: timeout,
        memory_mb: memory,
        ephemeral_mb: ephemeral,
        environment,
        code_digest: stored.digest.clone(),
        code_sha256: stored.sha_b64.clone(),
        code_size: stored.size,
        revision_id: new_revision(),
        last_modified: now_timestamp(),
        architectures,
        state: "Pending".into(),
        last_update_status: None,
        reserved_concurrency: None,
        version: "$LATEST".into(),
        last_version: 0,
        tags,
        layers,
        dead_letter_target: dead_letter,
    };
    let written = fe.registry.put(record, None).await;
    drop(stored.upload);
    let cached = match written {
        Ok(c) => c,
        Err(e) => {
            fe.collect_code(&stored.digest).await;
            return Err(match e {
                RegistryError::Store(StoreError::Conflict { .. }) => {
                    LambdaError::conflict(format!("Function already exist: {}", req.function_name))
                }
                other => registry_error(other, &arn),
            }
            .into());
        }
    };
    fe.deps.invoker.retire(
        &c.account,
        &req.function_name,
        Some("$LATEST"),
        Some(&cached.record.revision_id),
    );
    let doc = if publish {
        let published = crate::versions::publish(&fe, &cached, None).await;
        settle(Arc::clone(&fe), c.account, req.function_name);
        crate::versions::as_published(&cached, &published?)
    } else {
        settle(Arc::clone(&fe), c.account, req.function_name);
        cached.record.configuration()
    };
    Ok((StatusCode::CREATED, Json(doc)).into_response())
}

pub async fn get_function(
    State(fe): State<Arc<Frontend>>,
    headers: HeaderMap,
    c: Caller,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let t = crate::versions::resolve_target(
        &fe,
        &c,
        &name,
        q.get("Qualifier").map(String::as_str),
        false,
    )?;
    let r = &t.found.record;
    let resp = GetFunctionResponse {
        concurrency: t.latest.record.reserved_concurrency.map(|n| Concurrency {
            reserved_concurrent_executions: n,
        }),
        tags: (!r.tags.is_empty()).then(|| r.tags.clone()),
        configuration: t.configuration(),
        code: FunctionCodeLocation {
            repository_type: "S3".into(),
            location: presign::url(
                &fe.deps.presign_key,
                &host(&headers),
                r.account.as_str(),
                &r.code_digest,
            ),
        },
    };
    Ok(Json(resp).into_response())
}

pub async fn get_configuration(
    State(fe): State<Arc<Frontend>>,
    c: Caller,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let t = crate::versions::resolve_target(
        &fe,
        &c,
        &name,
        q.get("Qualifier").map(String::as_str),
        false,
    )?;
    Ok(Json(t.configuration()).into_response())
}

pub async fn list_functions(
    State(fe): State<Arc<Frontend>>,
    c: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let max = match q.get("MaxItems") {
        None => 50,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=10_000).contains(&n) => n,
            _ => {
                return Err(LambdaError::validation(
                    s,
                    "maxItems",
                    "Member must have value between 1 and 10000",
                )
                .into());
            }
        },
    };
    let all_versions = match q.get("FunctionVersion").map(String::as_str) {
        None | Some("") => false,
        Some("ALL") => true,
        Some(v) => {
            return Err(LambdaError::validation(
                v,
                "functionVersion",
                "Member must satisfy enum value set: [ALL]",
            )
            .into());
        }
    };
    let marker = q.get("Marker").filter(|m| !m.is_empty());
    let after = match marker {
        None => None,
        Some(m) => Some(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(m)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| LambdaError::invalid(format!("Invalid Marker: {m}")))?,
        ),
    };
    if all_versions {
        let (functions, next_marker) =
            crate::versions::list_all_versions(&fe, &c.account, after.as_deref(), max);
        return Ok(Json(ListFunctionsResponse {
            functions,
            next_marker,
        })
        .into_response());
    }
    let (page, more) = fe.registry.list(&c.account, after.as_deref(), max);
    let next_marker = if more {
        page.last()
            .map(|r| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r.name.as_bytes()))
    } else {
        None
    };
    Ok(Json(ListFunctionsResponse {
        functions: page.iter().map(|r| r.configuration()).collect(),
        next_marker,
    })
    .into_response())
}

/// `GET /_stratus/functions/{name}/sandboxes`: the function's live
/// sandboxes (Stratus's own; Lambda does not show them).
pub async fn list_sandboxes(
    State(fe): State<Arc<Frontend>>,
    c: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let found = resolve(&fe, &c, &name, None)?;
    let r = &found.record;
    let list = fe.deps.invoker.sandboxes_of(&r.account, &r.name);
    Ok(Json(serde_json::json!({"FunctionName": r.name, "Sandboxes": list})).into_response())
}

pub async fn delete_function(
    State(fe): State<Arc<Frontend>>,
    c: Caller,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let qualifier = q.get("Qualifier").map(String::as_str);
    let target = crate::versions::resolve_target(&fe, &c, &name, qualifier, false)?;
    match target.qualifier.as_deref() {
        None => {}
        Some("$LATEST") => {
            return Err(LambdaError::invalid(
                "$LATEST version cannot be deleted without deleting the function.",
            )
            .into());
        }
        Some(_) => return crate::versions::delete_version(&fe, &target).await,
    }
    let found = target.latest;
    // No qualifier from here on: the whole function goes.
    let qualifier = None;
    // Aliases and versions first: a crash in between leaves a function
    // with fewer of them, never versions of a function that is gone.
    let versions = fe
        .published
        .remove_function(&found.record.account, &found.record.name)
        .await
        .map_err(|e| registry_error(e, &found.record.arn()))?;
    // DeleteFunction has no precondition: if the record changed under us
    // (the background task settling Pending -> Active), delete what is there now.
    let mut found = found;
    let mut attempts = 0;
    loop {
        let r = &found.record;
        match fe.registry.delete(&r.account, &r.name, found.version).await {
            Ok(()) => break,
            Err(RegistryError::Store(StoreError::Conflict { .. })) if attempts < 8 => {
                attempts += 1;
                // The writer has stored its record but may not have updated
                // the cache yet: let it run before reading the cache again.
                tokio::time::sleep(std::time::Duration::from_millis(1 << attempts)).await;
                found = resolve(&fe, &c, &name, qualifier)?;
            }
            Err(e) => return Err(registry_error(e, &r.arn()).into()),
        }
    }
    let r = &found.record;
    fe.deps.invoker.retire(&r.account, &r.name, None, None);
    for v in &versions {
        fe.collect_code(&v.record.code_digest).await;
    }
    if r.reserved_concurrency.is_some()
        && let Err(e) = fe
            .deps
            .counting
            .set_reserved(&r.account, &r.name, None)
            .await
    {
        tracing::warn!(function = %r.name, error = %e, "could not clear the reservation");
    }
    fe.deps.logs.remove(&r.account, &r.name).await;
    fe.urls.remove_function(&r.account, &r.name).await;
    if let Err(e) = crate::provisioned::remove(&fe, &r.account, &r.name, None).await {
        tracing::warn!(function = %r.name, error = %e, "could not remove the provisioned concurrency configs");
    }
    if let Err(e) =
        stratus_async_invoke::config::delete_all(&fe.deps.meta, &r.account, &r.name).await
    {
        tracing::warn!(function = %r.name, error = %e, "could not remove the event invoke configs");
    }
    fe.collect_code(&r.code_digest).await;
    for l in &r.layers {
        fe.collect_code(&l.code_digest).await;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Checks a RevisionId precondition and that no update is in progress.
pub(crate) fn check_update(found: &Cached, revision_id: Option<&str>) -> Result<(), LambdaError> {
    if let Some(rev) = revision_id
        && rev != found.record.revision_id
    {
        return Err(LambdaError::new(
            ErrorCode::PreconditionFailed,
            "The Revision Id provided does not match the latest Revision Id. Call the GetFunction/GetAlias API to retrieve the latest Revision Id",
        ));
    }
    if found.record.last_update_status.as_deref() == Some("InProgress")
        || found.record.state == "Pending"
    {
        return Err(LambdaError::conflict(format!(
            "The operation cannot be performed at this time. An update is in progress for resource: {}",
            found.record.arn()
        )));
    }
    Ok(())
}

async fn commit_update(
    fe: &Arc<Frontend>,
    found: &Cached,
    mut next: FunctionRecord,
) -> Result<Cached, LambdaError> {
    next.revision_id = new_revision();
    next.last_modified = now_timestamp();
    next.last_update_status = Some("InProgress".into());
    let arn = next.arn();
    let cached = fe
        .registry
        .put(next, Some(found.version))
        .await
        .map_err(|e| registry_error(e, &arn))?;
    let r = &cached.record;
    fe.deps
        .invoker
        .retire(&r.account, &r.name, Some("$LATEST"), Some(&r.revision_id));
    settle(Arc::clone(fe), r.account.clone(), r.name.clone());
    Ok(cached)
}

pub async fn update_configuration(
    State(fe): State<Arc<Frontend>>,
    c: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let mut req: UpdateFunctionConfigurationRequest = parse(&body)?;
    let found = resolve(&fe, &c, &name, None)?;
    let mut next = (*found.record).clone();
    if let Some(dlq) =
        crate::event_config::take_dead_letter(&mut req.other, &next.account, &next.name)?
    {
        next.dead_letter_target = dlq;
    }
    if let Some(rt) = &req.runtime {
        next.runtime = validate::runtime(rt, &fe.deps.interpreters)?
            .id()
            .to_owned();
    }
    if let Some(h) = &req.handler {
        validate::handler(h)?;
        next.handler = h.clone();
    }
    if let Some(role) = &req.role {
        validate::role(role)?;
        next.role = role.clone();
    }
    if let Some(d) = &req.description {
        validate::description(d)?;
        next.description = d.clone();
    }
    if let Some(m) = req.memory_size {
        next.memory_mb = validate::memory(m)?;
    }
    if let Some(t) = req.timeout {
        next.timeout_s = validate::timeout(t)?;
    }
    if let Some(e) = &req.ephemeral_storage {
        next.ephemeral_mb = validate::ephemeral(e)?;
    }
    if let Some(env) = &req.environment {
        next.environment = Some(validate::environment(env)?);
    }
    if let Some(arns) = &req.layers {
        next.layers = if arns.is_empty() {
            Vec::new()
        } else {
            let code_unzipped = stored_unzipped_size(&fe, &next.code_digest).await?;
            crate::layers::resolve_layers(&fe, &c, arns, code_unzipped)?
        };
    }
    validate::tracing_config(&req.tracing_config)?;
    validate::logging_config(&req.logging_config, &next.name)?;
    validate::other_fields(&req.other, "")?;
    check_update(&found, req.revision_id.as_deref())?;
    let cached = commit_update(&fe, &found, next).await?;
    // Layers the function no longer uses, whose versions may be deleted.
    if req.layers.is_some() {
        for l in &found.record.layers {
            fe.collect_code(&l.code_digest).await;
        }
    }
    Ok(Json(cached.record.configuration()).into_response())
}

pub async fn update_code(
    State(fe): State<Arc<Frontend>>,
    c: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let req: UpdateFunctionCodeRequest = parse_upload(body).await?;
    let found = resolve(&fe, &c, &name, None)?;
    validate::architectures(&req.architectures)?;
    validate::other_fields(&req.other, "")?;
    let zip_b64 = req.zip_file.ok_or_else(|| {
        LambdaError::invalid("Please provide a source for function code: Stratus takes ZipFile.")
    })?;
    check_update(&found, req.revision_id.as_deref())?;
    let zip = decode_zip(zip_b64).await?;
    if !found.record.layers.is_empty() {
        let total = found
            .record
            .layers
            .iter()
            .fold(crate::layers::declared_size(&zip)?, |t, l| {
                t.saturating_add(l.unzipped_size)
            });
        if total > stratus_types::limits::UNZIPPED_MAX_BYTES {
            return Err(crate::layers::too_big(total).into());
        }
    }
    let stored = store_code(&fe, zip).await?;
    if req.dry_run == Some(true) {
        let mut doc = found.record.configuration();
        doc.code_sha256 = stored.sha_b64;
        doc.code_size = stored.size;
        drop(stored.upload);
        fe.collect_code(&stored.digest).await;
        return Ok(Json(doc).into_response());
    }
    let mut next = (*found.record).clone();
    next.code_digest = stored.digest.clone();
    next.code_sha256 = stored.sha_b64;
    next.code_size = stored.size;
    let committed = commit_update(&fe, &found, next).await;
    drop(stored.upload);
    // The code the function no longer runs, or, if the update failed, the
    // code it never got.
    let unused = if committed.is_ok() {
        &found.record.code_digest
    } else {
        &stored.digest
    };
    fe.collect_code(unused).await;
    let cached = committed?;
    let doc = if req.publish == Some(true) {
        // The update is made; a failed publish is this call's error.
        let v = crate::versions::publish(&fe, &cached, None).await?;
        crate::versions::as_published(&cached, &v)
    } else {
        cached.record.configuration()
    };
    Ok(Json(doc).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_look_like_lambdas() {
        let t = now_timestamp();
        assert_eq!(t.len(), "2024-01-01T00:00:00.000+0000".len());
        assert!(t.ends_with("+0000"));
        assert_eq!(&t[10..11], "T");
    }
}
