//! Function URLs: the FunctionUrlConfig operations
//! (`/2021-10-31/functions/{name}/url`, `.../urls`) and the HTTP endpoint
//! each config opens.
//!
//! Lambda gives every URL its own host name (`<id>.lambda-url.<region>.on.aws`);
//! Stratus serves them on its own listener under a path, so they work
//! without DNS: `http://<server>/_stratus/url/<id>/<path>`. The function
//! sees only its own path (`rawPath` without the prefix). Requests become
//! API Gateway payload v2.0 events; results map back to HTTP as Lambda maps
//! them (a `statusCode` object is a response, anything else is a 200 JSON
//! body). `AuthType: NONE` is open; `AWS_IAM` needs a SigV4 signature by a
//! key of the function's own account ([`crate::auth::verify`]). CORS
//! preflights are answered from the config without invoking the function.
//! A URL in `RESPONSE_STREAM` mode sends the function's streamed output as
//! it comes (chunked), with the status, headers and cookies of its
//! http-integration prelude when it has one (`streamed`); a URL on an alias
//! runs the version the alias routes to (`versions::resolve_target`), and
//! goes when the alias does.
//!
//! Configs are stored under `urls/<account>/<function>/<qualifier>` in the
//! [`MetaStore`] and cached in memory, also by URL id, for the data path.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use stratus_api::service::InvokeRequest;
use stratus_api::{ErrorCode, LambdaError};
use stratus_store::{MetaStore, Precondition, StoreError};
use stratus_types::AccountId;
use tracing::Instrument;

use crate::auth::Caller;
use crate::control::{host, now_timestamp, parse, resolve};
use crate::error::{ApiError, ApiResult};
use crate::registry::RegistryError;
use crate::stream::{Item, Started};
use crate::versions::resolve_target;
use crate::{Frontend, validate};

/// Where URLs are served on the API listener.
pub const URL_PREFIX: &str = "/_stratus/url/";

const NOT_FOUND: &str = "The resource you requested does not exist.";

/// A function URL's CORS settings, as the API takes and returns them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Cors {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_credentials: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_headers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_methods: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_origins: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose_headers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<i64>,
}

/// A function URL config as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UrlRecord {
    pub account: AccountId,
    pub region: String,
    pub function: String,
    /// The alias the URL points at; `None` for the unqualified function.
    pub qualifier: Option<String>,
    /// The URL id (32 lowercase hex digits): the path segment after
    /// [`URL_PREFIX`].
    pub id: String,
    /// `NONE` or `AWS_IAM`.
    pub auth_type: String,
    pub cors: Option<Cors>,
    /// `BUFFERED` or `RESPONSE_STREAM`.
    pub invoke_mode: String,
    pub creation_time: String,
    pub last_modified_time: String,
}

impl UrlRecord {
    fn function_arn(&self) -> String {
        stratus_types::function_arn(
            &self.region,
            &self.account,
            &self.function,
            self.qualifier.as_deref(),
        )
    }

    /// The config document (`with_modified`: GetFunctionUrlConfig and
    /// Update's shape, which carry LastModifiedTime).
    fn document(&self, host: &str, with_modified: bool) -> Value {
        let mut doc = json!({
            "FunctionUrl": format!("http://{host}{URL_PREFIX}{}/", self.id),
            "FunctionArn": self.function_arn(),
            "AuthType": self.auth_type,
            "CreationTime": self.creation_time,
            "InvokeMode": self.invoke_mode,
        });
        if let Some(cors) = &self.cors {
            doc["Cors"] = serde_json::to_value(cors).unwrap_or_default();
        }
        if with_modified {
            doc["LastModifiedTime"] = Value::String(self.last_modified_time.clone());
        }
        doc
    }
}

fn key(account: &AccountId, function: &str, qualifier: Option<&str>) -> String {
    format!("urls/{account}/{function}/{}", qualifier.unwrap_or(""))
}

#[derive(Debug, Default)]
struct Cache {
    /// Store key → record and store version.
    by_key: HashMap<String, (Arc<UrlRecord>, u64)>,
    /// URL id → store key.
    by_id: HashMap<String, String>,
}

/// Every function URL config, cached; written through to the store.
#[derive(Debug)]
pub struct UrlRegistry {
    store: Arc<dyn MetaStore>,
    cache: RwLock<Cache>,
}

impl UrlRegistry {
    pub async fn load(store: Arc<dyn MetaStore>) -> Result<Self, RegistryError> {
        let mut cache = Cache::default();
        let mut after: Option<String> = None;
        loop {
            let page = store.scan("urls/", after.as_deref(), 1000).await?;
            let Some((last, _)) = page.last() else {
                break;
            };
            after = Some(last.clone());
            for (k, v) in page {
                let r: UrlRecord =
                    serde_json::from_slice(&v.value).map_err(|e| RegistryError::Corrupt {
                        key: k.clone(),
                        message: e.to_string(),
                    })?;
                cache.by_id.insert(r.id.clone(), k.clone());
                cache.by_key.insert(k, (Arc::new(r), v.version));
            }
        }
        Ok(UrlRegistry {
            store,
            cache: RwLock::new(cache),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Cache> {
        self.cache.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Cache> {
        self.cache.write().unwrap_or_else(|e| e.into_inner())
    }

    fn get(
        &self,
        account: &AccountId,
        function: &str,
        qualifier: Option<&str>,
    ) -> Option<(Arc<UrlRecord>, u64)> {
        self.read()
            .by_key
            .get(&key(account, function, qualifier))
            .cloned()
    }

    fn by_id(&self, id: &str) -> Option<Arc<UrlRecord>> {
        let c = self.read();
        let k = c.by_id.get(id)?;
        c.by_key.get(k).map(|(r, _)| Arc::clone(r))
    }

    fn list(&self, account: &AccountId, function: &str) -> Vec<Arc<UrlRecord>> {
        let prefix = format!("urls/{account}/{function}/");
        let c = self.read();
        let mut all: Vec<(&String, &Arc<UrlRecord>)> = c
            .by_key
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(k, (r, _))| (k, r))
            .collect();
        all.sort_by(|a, b| a.0.cmp(b.0));
        all.into_iter().map(|(_, r)| Arc::clone(r)).collect()
    }

    /// Writes a record; `expected` is the version it was derived from
    /// (`None` to create).
    async fn put(&self, r: UrlRecord, expected: Option<u64>) -> Result<Arc<UrlRecord>, StoreError> {
        let k = key(&r.account, &r.function, r.qualifier.as_deref());
        let value = serde_json::to_vec(&r).map_err(|e| StoreError::Backend {
            op: "encode",
            key: k.clone(),
            message: e.to_string(),
        })?;
        let pre = expected.map_or(Precondition::Absent, Precondition::Version);
        let version = self.store.put(&k, Bytes::from(value), pre).await?;
        let r = Arc::new(r);
        let mut c = self.write();
        c.by_id.insert(r.id.clone(), k.clone());
        c.by_key.insert(k, (Arc::clone(&r), version));
        Ok(r)
    }

    async fn delete(&self, r: &UrlRecord, version: u64) -> Result<(), StoreError> {
        let k = key(&r.account, &r.function, r.qualifier.as_deref());
        self.store
            .delete(&k, Precondition::Version(version))
            .await?;
        let mut c = self.write();
        c.by_key.remove(&k);
        c.by_id.remove(&r.id);
        Ok(())
    }

    /// Removes the URL of an alias that was deleted, if it has one. A
    /// failure is logged: the URL then answers 404, as its alias is gone.
    pub async fn remove_alias(&self, account: &AccountId, function: &str, alias: &str) {
        let k = key(account, function, Some(alias));
        let Some(r) = self.get(account, function, Some(alias)) else {
            return;
        };
        if let Err(e) = self.store.delete(&k, Precondition::None).await {
            tracing::warn!(function, alias, error = %e, "could not remove a function URL config");
            return;
        }
        let mut c = self.write();
        c.by_key.remove(&k);
        c.by_id.remove(&r.0.id);
    }

    /// Removes every URL of a deleted function. Failures are logged: the
    /// URL then answers 403, as its function is gone.
    pub async fn remove_function(&self, account: &AccountId, function: &str) {
        for r in self.list(account, function) {
            let k = key(&r.account, &r.function, r.qualifier.as_deref());
            if let Err(e) = self.store.delete(&k, Precondition::None).await {
                tracing::warn!(function, error = %e, "could not remove a function URL config");
                continue;
            }
            let mut c = self.write();
            c.by_key.remove(&k);
            c.by_id.remove(&r.id);
        }
    }
}

fn store_error(e: StoreError, arn: &str) -> LambdaError {
    match e {
        StoreError::Conflict { .. } => LambdaError::conflict(format!(
            "The operation cannot be performed at this time. An update is in progress for resource: {arn}"
        )),
        other => LambdaError::service(format!("function URL config store: {other}")),
    }
}

/// The function (and alias) a URL config request is about. The qualifier
/// may only name an alias.
fn target(
    fe: &Frontend,
    c: &Caller,
    name: &str,
    q: &HashMap<String, String>,
) -> Result<(crate::registry::Cached, Option<String>), LambdaError> {
    let param = q
        .get("Qualifier")
        .map(String::as_str)
        .filter(|s| !s.is_empty());
    let in_name = stratus_types::FunctionRef::parse(name)
        .ok()
        .and_then(|r| r.qualifier);
    let qualifier = param.map(str::to_owned).or(in_name);
    if let Some(qual) = &qualifier
        && (qual == "$LATEST" || qual.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(LambdaError::validation(
            qual,
            "qualifier",
            "Member must satisfy regular expression pattern: ((?!^\\d+$)^[0-9a-zA-Z-_]+$)",
        ));
    }
    // An alias must exist (a URL may name only an alias).
    let found = resolve_target(fe, c, name, param, false)?.latest;
    Ok((found, qualifier))
}

fn auth_type(v: &str) -> Result<String, LambdaError> {
    match v {
        "NONE" | "AWS_IAM" => Ok(v.to_owned()),
        other => Err(LambdaError::validation(
            other,
            "authType",
            "Member must satisfy enum value set: [NONE, AWS_IAM]",
        )),
    }
}

fn invoke_mode(v: Option<&str>) -> Result<String, LambdaError> {
    match v {
        None | Some("BUFFERED") => Ok("BUFFERED".into()),
        Some("RESPONSE_STREAM") => Ok("RESPONSE_STREAM".into()),
        Some(other) => Err(LambdaError::validation(
            other,
            "invokeMode",
            "Member must satisfy enum value set: [BUFFERED, RESPONSE_STREAM]",
        )),
    }
}

/// Checks CORS settings against the model's limits.
fn check_cors(cors: &Cors) -> Result<(), LambdaError> {
    let lists = [
        ("cors.allowHeaders", &cors.allow_headers, 1024),
        ("cors.allowMethods", &cors.allow_methods, 6),
        ("cors.allowOrigins", &cors.allow_origins, 253),
        ("cors.exposeHeaders", &cors.expose_headers, 1024),
    ];
    for (field, list, max_len) in lists {
        let Some(list) = list else { continue };
        if list.len() > 100 {
            return Err(LambdaError::validation(
                &format!("{list:?}"),
                field,
                "Member must have length less than or equal to 100",
            ));
        }
        for item in list {
            if item.is_empty() || item.len() > max_len {
                return Err(LambdaError::validation(
                    item,
                    field,
                    &format!("Member must have length between 1 and {max_len}"),
                ));
            }
        }
    }
    if let Some(methods) = &cors.allow_methods {
        for m in methods {
            let known = m == "*"
                || ["GET", "PUT", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS"]
                    .contains(&m.to_ascii_uppercase().as_str());
            if !known {
                return Err(LambdaError::invalid(format!(
                    "Cors.AllowMethods: '{m}' is not an HTTP method."
                )));
            }
        }
    }
    if let Some(age) = cors.max_age
        && !(0..=86_400).contains(&age)
    {
        return Err(LambdaError::validation(
            &age.to_string(),
            "cors.maxAge",
            "Member must have value between 0 and 86400",
        ));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UrlRequest {
    auth_type: Option<String>,
    cors: Option<Cors>,
    invoke_mode: Option<String>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

/// Timestamps of URL configs: `2024-01-01T00:00:00.000000Z`.
fn url_timestamp() -> String {
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    time::OffsetDateTime::now_utc()
        .format(&f)
        .unwrap_or_else(|_| now_timestamp())
}

/// `POST /2021-10-31/functions/{name}/url`: CreateFunctionUrlConfig.
pub async fn create_url(
    State(fe): State<Arc<Frontend>>,
    headers: HeaderMap,
    c: Caller,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> ApiResult<Response> {
    let req: UrlRequest = parse(&body)?;
    let (found, qualifier) = target(&fe, &c, &name, &q)?;
    let auth =
        auth_type(req.auth_type.as_deref().ok_or_else(|| {
            LambdaError::validation("null", "authType", "Member must not be null")
        })?)?;
    if let Some(cors) = &req.cors {
        check_cors(cors)?;
    }
    let mode = invoke_mode(req.invoke_mode.as_deref())?;
    validate::other_fields(&req.other, "")?;
    let f = &found.record;
    let arn = stratus_types::function_arn(&f.region, &f.account, &f.name, qualifier.as_deref());
    let exists = || {
        LambdaError::conflict(format!(
            "Failed to create function url config for [functionArn = {arn}]. Error message:  FunctionUrlConfig exists for this Lambda function"
        ))
    };
    if fe
        .urls
        .get(&f.account, &f.name, qualifier.as_deref())
        .is_some()
    {
        return Err(exists().into());
    }
    let now = url_timestamp();
    let record = UrlRecord {
        account: f.account.clone(),
        region: f.region.clone(),
        function: f.name.clone(),
        qualifier,
        id: uuid::Uuid::new_v4().simple().to_string(),
        auth_type: auth,
        cors: req.cors,
        invoke_mode: mode,
        creation_time: now.clone(),
        last_modified_time: now,
    };
    let r = match fe.urls.put(record, None).await {
        Ok(r) => r,
        Err(StoreError::Conflict { .. }) => return Err(exists().into()),
        Err(e) => return Err(store_error(e, &arn).into()),
    };
    Ok((
        StatusCode::CREATED,
        Json(r.document(&host(&headers), false)),
    )
        .into_response())
}

fn url_of(
    fe: &Frontend,
    c: &Caller,
    name: &str,
    q: &HashMap<String, String>,
) -> Result<(Arc<UrlRecord>, u64), LambdaError> {
    let (found, qualifier) = target(fe, c, name, q)?;
    let f = &found.record;
    fe.urls
        .get(&f.account, &f.name, qualifier.as_deref())
        .ok_or_else(|| LambdaError::not_found(NOT_FOUND))
}

/// `GET /2021-10-31/functions/{name}/url`: GetFunctionUrlConfig.
pub async fn get_url(
    State(fe): State<Arc<Frontend>>,
    headers: HeaderMap,
    c: Caller,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let (r, _) = url_of(&fe, &c, &name, &q)?;
    Ok(Json(r.document(&host(&headers), true)).into_response())
}

/// `PUT /2021-10-31/functions/{name}/url`: UpdateFunctionUrlConfig. The
/// settings given replace the stored ones (Cors as a whole).
pub async fn update_url(
    State(fe): State<Arc<Frontend>>,
    headers: HeaderMap,
    c: Caller,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> ApiResult<Response> {
    let req: UrlRequest = parse(&body)?;
    let (current, version) = url_of(&fe, &c, &name, &q)?;
    let mut next = (*current).clone();
    if let Some(a) = &req.auth_type {
        next.auth_type = auth_type(a)?;
    }
    if let Some(cors) = req.cors {
        check_cors(&cors)?;
        next.cors = Some(cors);
    }
    if let Some(m) = &req.invoke_mode {
        next.invoke_mode = invoke_mode(Some(m))?;
    }
    validate::other_fields(&req.other, "")?;
    next.last_modified_time = url_timestamp();
    let arn = next.function_arn();
    let r = fe
        .urls
        .put(next, Some(version))
        .await
        .map_err(|e| store_error(e, &arn))?;
    Ok(Json(r.document(&host(&headers), true)).into_response())
}

/// `DELETE /2021-10-31/functions/{name}/url`: DeleteFunctionUrlConfig.
pub async fn delete_url(
    State(fe): State<Arc<Frontend>>,
    c: Caller,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let (r, version) = url_of(&fe, &c, &name, &q)?;
    fe.urls
        .delete(&r, version)
        .await
        .map_err(|e| store_error(e, &r.function_arn()))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /2021-10-31/functions/{name}/urls`: ListFunctionUrlConfigs.
pub async fn list_urls(
    State(fe): State<Arc<Frontend>>,
    headers: HeaderMap,
    c: Caller,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    crate::versions::max_items_50(&q)?;
    let found = resolve(&fe, &c, &name, None)?;
    let f = &found.record;
    let h = host(&headers);
    let configs: Vec<Value> = fe
        .urls
        .list(&f.account, &f.name)
        .iter()
        .map(|r| r.document(&h, true))
        .collect();
    Ok(Json(json!({"FunctionUrlConfigs": configs})).into_response())
}

// ---- the data path -------------------------------------------------------

/// A message-only answer, as Lambda's URL front end gives them.
fn message(status: StatusCode, msg: &str) -> Response {
    (status, Json(json!({"Message": msg}))).into_response()
}

/// The origin a CORS config allows for this request, as the
/// `Access-Control-Allow-Origin` value.
fn allowed_origin(cors: &Cors, origin: &str) -> Option<String> {
    let origins = cors.allow_origins.as_deref().unwrap_or_default();
    if origins.iter().any(|o| o == "*") {
        // A credentialed request may not be answered with `*`.
        return Some(if cors.allow_credentials == Some(true) {
            origin.to_owned()
        } else {
            "*".to_owned()
        });
    }
    origins
        .iter()
        .any(|o| o.eq_ignore_ascii_case(origin))
        .then(|| origin.to_owned())
}

fn put_header(h: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

/// Adds the CORS headers of a non-preflight response.
fn add_cors(resp: &mut Response, cors: Option<&Cors>, origin: Option<&str>) {
    let (Some(cors), Some(origin)) = (cors, origin) else {
        return;
    };
    let Some(allow) = allowed_origin(cors, origin) else {
        return;
    };
    let h = resp.headers_mut();
    put_header(h, "access-control-allow-origin", &allow);
    if cors.allow_credentials == Some(true) {
        put_header(h, "access-control-allow-credentials", "true");
    }
    if let Some(expose) = cors.expose_headers.as_ref().filter(|e| !e.is_empty()) {
        put_header(h, "access-control-expose-headers", &expose.join(","));
    }
    put_header(h, "vary", "Origin");
}

/// Answers a CORS preflight from the config alone.
fn preflight(cors: &Cors, origin: &str, headers: &HeaderMap) -> Response {
    let mut resp = StatusCode::OK.into_response();
    let Some(allow) = allowed_origin(cors, origin) else {
        return resp;
    };
    let asked = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let h = resp.headers_mut();
    put_header(h, "access-control-allow-origin", &allow);
    if let Some(methods) = cors.allow_methods.as_ref().filter(|m| !m.is_empty()) {
        let v = if methods.iter().any(|m| m == "*") {
            asked("access-control-request-method").to_owned()
        } else {
            methods.join(",")
        };
        put_header(h, "access-control-allow-methods", &v);
    }
    if let Some(allowed) = cors.allow_headers.as_ref().filter(|a| !a.is_empty()) {
        let v = if allowed.iter().any(|a| a == "*") {
            asked("access-control-request-headers").to_owned()
        } else {
            allowed.join(",")
        };
        put_header(h, "access-control-allow-headers", &v);
    }
    if let Some(age) = cors.max_age {
        put_header(h, "access-control-max-age", &age.to_string());
    }
    if cors.allow_credentials == Some(true) {
        put_header(h, "access-control-allow-credentials", "true");
    }
    if let Some(expose) = cors.expose_headers.as_ref().filter(|e| !e.is_empty()) {
        put_header(h, "access-control-expose-headers", &expose.join(","));
    }
    put_header(h, "vary", "Origin");
    resp
}

/// Whether a body of this content type goes to the function as text (else
/// base64, `isBase64Encoded: true`).
fn is_text(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else {
        return true;
    };
    let ct = ct.to_ascii_lowercase();
    ct.starts_with("text/")
        || [
            "json",
            "xml",
            "javascript",
            "x-www-form-urlencoded",
            "graphql",
            "yaml",
        ]
        .iter()
        .any(|t| ct.contains(t))
}

/// What [`event`] needs to know of the request besides its parts.
struct EventInput<'a> {
    url: &'a UrlRecord,
    raw_path: &'a str,
    body: &'a [u8],
    caller: Option<(&'a Caller, String)>,
    request_id: &'a str,
}

/// The API Gateway payload v2.0 event of a request.
fn event(parts: &Parts, input: &EventInput<'_>) -> Value {
    let url = input.url;
    let text = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for name in parts.headers.keys() {
        if name == header::COOKIE {
            continue;
        }
        let joined: Vec<String> = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        headers.insert(name.as_str().to_owned(), joined.join(","));
    }
    let cookies: Vec<String> = parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect();
    let raw_query = parts.uri.query().unwrap_or("");
    let mut params: BTreeMap<String, String> = BTreeMap::new();
    if let Ok(Query(pairs)) = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri) {
        for (k, v) in pairs {
            params
                .entry(k)
                .and_modify(|e| {
                    e.push(',');
                    e.push_str(&v);
                })
                .or_insert(v);
        }
    }
    let source_ip = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| a.ip().to_string())
        .unwrap_or_else(|| "127.0.0.1".into());
    let now = time::OffsetDateTime::now_utc();
    let clf = time::macros::format_description!(
        "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000"
    );
    let protocol = format!("{:?}", parts.version);
    let mut context = json!({
        "accountId": input.caller.as_ref().map_or_else(|| "anonymous".to_owned(), |(c, _)| c.account.to_string()),
        "apiId": url.id,
        "domainName": text("host"),
        "domainPrefix": url.id,
        "http": {
            "method": parts.method.as_str(),
            "path": input.raw_path,
            "protocol": protocol,
            "sourceIp": source_ip,
            "userAgent": text("user-agent"),
        },
        "requestId": input.request_id,
        "routeKey": "$default",
        "stage": "$default",
        "time": now.format(&clf).unwrap_or_default(),
        "timeEpoch": i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(0),
    });
    if let Some((c, key_id)) = &input.caller {
        context["authorizer"] = json!({"iam": {
            "accessKey": key_id,
            "accountId": c.account.to_string(),
            "callerId": key_id,
            "cognitoIdentity": null,
            "principalOrgId": null,
            "userArn": format!("arn:aws:iam::{}:user/{key_id}", c.account),
            "userId": key_id,
        }});
    }
    let mut ev = json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": input.raw_path,
        "rawQueryString": raw_query,
        "headers": headers,
        "requestContext": context,
        "isBase64Encoded": false,
    });
    if !cookies.is_empty() {
        ev["cookies"] = json!(cookies);
    }
    if !params.is_empty() {
        ev["queryStringParameters"] = json!(params);
    }
    if !input.body.is_empty() {
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        match std::str::from_utf8(input.body) {
            Ok(s) if is_text(content_type) => ev["body"] = Value::String(s.to_owned()),
            _ => {
                ev["body"] =
                    Value::String(base64::engine::general_purpose::STANDARD.encode(input.body));
                ev["isBase64Encoded"] = Value::Bool(true);
            }
        }
    }
    ev
}

/// Maps a function's result to the HTTP response, as Lambda does: an object
/// with `statusCode` is a response description; anything else is the body
/// of a 200 `application/json` response.
fn http_response(payload: &Bytes) -> Response {
    let json_body = |b: Bytes| {
        let mut r = (StatusCode::OK, b).into_response();
        put_header(r.headers_mut(), "content-type", "application/json");
        r
    };
    let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(payload) else {
        return json_body(payload.clone());
    };
    let Some(code) = m.get("statusCode") else {
        return json_body(payload.clone());
    };
    let status = code
        .as_u64()
        .and_then(|n| u16::try_from(n).ok())
        .and_then(|n| StatusCode::from_u16(n).ok());
    let Some(status) = status else {
        tracing::debug!("function URL result has an invalid statusCode");
        return message(StatusCode::BAD_GATEWAY, "Internal Server Error");
    };
    let body = match m.get("body") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) if m.get("isBase64Encoded") == Some(&Value::Bool(true)) => {
            match base64::engine::general_purpose::STANDARD.decode(s.trim()) {
                Ok(b) => b,
                Err(_) => return message(StatusCode::BAD_GATEWAY, "Internal Server Error"),
            }
        }
        Some(Value::String(s)) => s.clone().into_bytes(),
        Some(other) => other.to_string().into_bytes(),
    };
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    if let Some(Value::Object(headers)) = m.get("headers") {
        for (k, v) in headers {
            let v = match v {
                Value::String(s) => s.clone(),
                Value::Null => continue,
                other => other.to_string(),
            };
            if let (Ok(name), Ok(value)) = (
                axum::http::HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(&v),
            ) {
                h.insert(name, value);
            }
        }
    }
    if let Some(Value::Array(cookies)) = m.get("cookies") {
        for c in cookies.iter().filter_map(Value::as_str) {
            if let Ok(v) = HeaderValue::from_str(c) {
                h.append(header::SET_COOKIE, v);
            }
        }
    }
    if !h.contains_key(header::CONTENT_TYPE) {
        put_header(h, "content-type", "application/json");
    }
    resp
}

/// The `Content-Type` of a streamed answer that opens with an HTTP prelude.
const HTTP_INTEGRATION: &str = "application/vnd.awslambda.http-integration-response";

/// The longest prelude read before its eight NUL bytes.
const PRELUDE_MAX_BYTES: usize = 64 * 1024;

/// A `RESPONSE_STREAM` URL call: the function's output goes to the client
/// as it comes (chunked), after the status and headers of its prelude.
async fn streamed(
    fe: &Arc<Frontend>,
    record: &crate::FunctionRecord,
    spec: Arc<stratus_api::service::FunctionVersionSpec>,
    req: InvokeRequest,
) -> Result<Response, ApiError> {
    let (content_type, mut parts) = match crate::stream::start(fe, record, spec, req).await? {
        Started::Done(result) => {
            let out = result?;
            if out.function_error.is_some() {
                return Ok(message(StatusCode::BAD_GATEWAY, "Internal Server Error"));
            }
            return Ok(http_response(&out.payload));
        }
        Started::Streaming {
            content_type,
            parts,
        } => (content_type, parts),
    };
    let (mut head, first) = if content_type.as_deref() == Some(HTTP_INTEGRATION) {
        match read_prelude(&mut parts).await {
            Some((prelude, rest)) => match prelude_response(&prelude) {
                Some(r) => (r, rest),
                None => return Ok(message(StatusCode::BAD_GATEWAY, "Internal Server Error")),
            },
            None => return Ok(message(StatusCode::BAD_GATEWAY, "Internal Server Error")),
        }
    } else {
        let mut r = StatusCode::OK.into_response();
        put_header(
            r.headers_mut(),
            "content-type",
            content_type
                .as_deref()
                .unwrap_or("application/octet-stream"),
        );
        (r, Bytes::new())
    };
    *head.body_mut() = Body::new(UrlBody {
        first: (!first.is_empty()).then_some(first),
        parts: Some(parts),
    });
    Ok(head)
}

/// Reads up to the prelude's eight NUL bytes: the prelude, and what came
/// after them. `None` if the stream ended first or the prelude is too long.
async fn read_prelude(parts: &mut crate::stream::Parts) -> Option<(Bytes, Bytes)> {
    const DELIMITER: [u8; 8] = [0; 8];
    let mut buf = Vec::new();
    loop {
        match parts.next().await? {
            Item::Chunk(b) => buf.extend_from_slice(&b),
            Item::End(_) => return None,
        }
        if let Some(at) = buf.windows(8).position(|w| w == DELIMITER) {
            let rest = Bytes::copy_from_slice(&buf[at + 8..]);
            buf.truncate(at);
            return Some((Bytes::from(buf), rest));
        }
        if buf.len() > PRELUDE_MAX_BYTES {
            return None;
        }
    }
}

/// The response head a prelude describes: `statusCode` (default 200),
/// `headers`, `cookies`.
fn prelude_response(prelude: &[u8]) -> Option<Response> {
    let doc: Value = if prelude.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(prelude).ok()?
    };
    let m = doc.as_object()?;
    let status = match m.get("statusCode") {
        None | Some(Value::Null) => StatusCode::OK,
        Some(v) => v
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .and_then(|n| StatusCode::from_u16(n).ok())?,
    };
    let mut resp = status.into_response();
    let h = resp.headers_mut();
    if let Some(Value::Object(headers)) = m.get("headers") {
        for (k, v) in headers {
            let v = match v {
                Value::String(s) => s.clone(),
                Value::Null => continue,
                other => other.to_string(),
            };
            if let (Ok(name), Ok(value)) = (
                axum::http::HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(&v),
            ) {
                h.insert(name, value);
            }
        }
    }
    if let Some(Value::Array(cookies)) = m.get("cookies") {
        for c in cookies.iter().filter_map(Value::as_str) {
            if let Ok(v) = HeaderValue::from_str(c) {
                h.append(header::SET_COOKIE, v);
            }
        }
    }
    if !h.contains_key(header::CONTENT_TYPE) {
        put_header(h, "content-type", "application/octet-stream");
    }
    Some(resp)
}

/// The body of a streamed URL response: the function's bytes as they come.
/// A mid-stream error cannot change the status any more: the body ends.
struct UrlBody {
    first: Option<Bytes>,
    parts: Option<crate::stream::Parts>,
}

impl http_body::Body for UrlBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        use std::task::Poll;
        if let Some(b) = self.first.take() {
            return Poll::Ready(Some(Ok(http_body::Frame::data(b))));
        }
        let Some(parts) = &mut self.parts else {
            return Poll::Ready(None);
        };
        match std::task::ready!(parts.poll_item(cx)) {
            Some(Item::Chunk(b)) => Poll::Ready(Some(Ok(http_body::Frame::data(b)))),
            Some(Item::End(result)) => {
                if let Ok(out) = &result
                    && out.function_error.is_some()
                {
                    tracing::debug!("a streamed function URL response ended with a function error");
                }
                self.parts = None;
                Poll::Ready(None)
            }
            None => {
                self.parts = None;
                Poll::Ready(None)
            }
        }
    }
}

/// Any request under [`URL_PREFIX`]: a function URL call.
pub async fn serve(State(fe): State<Arc<Frontend>>, req: Request) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let (parts, body) = req.into_parts();
    let origin = parts
        .headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let url = parts
        .uri
        .path()
        .strip_prefix(URL_PREFIX)
        .map(|rest| match rest.find('/') {
            Some(i) => (rest[..i].to_owned(), rest[i..].to_owned()),
            None => (rest.to_owned(), "/".to_owned()),
        })
        .and_then(|(id, path)| Some((fe.urls.by_id(&id)?, path)));
    let Some((url, raw_path)) = url else {
        return message(StatusCode::FORBIDDEN, "Forbidden");
    };
    let cors = url.cors.as_ref();
    let mut resp = if parts.method == Method::OPTIONS
        && let (Some(cors), Some(origin)) = (cors, origin.as_deref())
        && parts.headers.contains_key("access-control-request-method")
    {
        preflight(cors, origin, &parts.headers)
    } else {
        let span =
            tracing::info_span!("function_url", function = %url.function, request_id = %request_id);
        let mut r = call(&fe, &url, parts, body, &raw_path, &request_id)
            .instrument(span)
            .await
            .unwrap_or_else(IntoResponse::into_response);
        add_cors(&mut r, cors, origin.as_deref());
        r
    };
    put_header(resp.headers_mut(), "x-amzn-requestid", &request_id);
    resp
}

/// Authenticates (AWS_IAM), builds the event, invokes and maps the result.
async fn call(
    fe: &Arc<Frontend>,
    url: &UrlRecord,
    parts: Parts,
    body: Body,
    raw_path: &str,
    request_id: &str,
) -> Result<Response, ApiError> {
    let body = crate::invoke::read_payload(body, false).await?;
    let (parts, body, caller) = if url.auth_type == "AWS_IAM" {
        let (parts, body, c) =
            crate::auth::verify_owned(fe, parts, body, crate::auth::now_secs()).await?;
        if c.account != url.account {
            return Err(LambdaError::new(
                ErrorCode::AccessDenied,
                "The caller's account may not invoke this function URL.",
            )
            .into());
        }
        let key_id = crate::auth::sigv4::auth_header(&parts.headers)
            .map(|a| a.access_key_id)
            .unwrap_or_default();
        (parts, body, Some((c, key_id)))
    } else {
        (parts, body, None)
    };
    // The function as the URL's owner sees it (an alias resolves here).
    let owner = Caller {
        account: url.account.clone(),
        region: url.region.clone(),
        admin: false,
    };
    let target = resolve_target(fe, &owner, &url.function, url.qualifier.as_deref(), true)?;
    let found = &target.found;
    let record = &found.record;
    let spec = crate::invoke::runnable_spec(found)?;
    let ev = event(
        &parts,
        &EventInput {
            url,
            raw_path,
            body: &body,
            caller: caller.as_ref().map(|(c, k)| (c, k.clone())),
            request_id,
        },
    );
    let req = InvokeRequest {
        request_id: request_id.to_owned(),
        payload: Bytes::from(ev.to_string()),
        invoked_arn: url.function_arn(),
        client_context: None,
        trace_id: crate::invoke::trace_id(),
    };
    if url.invoke_mode == "RESPONSE_STREAM" {
        return streamed(fe, record, spec, req).await;
    }
    let result = crate::invoke::admit_and_run(fe, record, spec, req).await;
    fe.metrics
        .record_invoke(&record.account, &record.name, &result);
    let out = result?;
    if out.function_error.is_some() {
        return Ok(message(StatusCode::BAD_GATEWAY, "Internal Server Error"));
    }
    Ok(http_response(&out.payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(origins: &[&str]) -> Cors {
        Cors {
            allow_origins: Some(origins.iter().map(|s| (*s).to_owned()).collect()),
            allow_methods: Some(vec!["GET".into(), "POST".into()]),
            allow_headers: Some(vec!["x-custom".into()]),
            max_age: Some(300),
            ..Cors::default()
        }
    }

    #[test]
    fn origins_match_exactly_or_by_star() {
        assert_eq!(
            allowed_origin(&cors(&["https://a.example"]), "https://a.example").as_deref(),
            Some("https://a.example")
        );
        assert_eq!(
            allowed_origin(&cors(&["https://a.example"]), "https://b.example"),
            None
        );
        assert_eq!(
            allowed_origin(&cors(&["*"]), "https://b.example").as_deref(),
            Some("*")
        );
        let mut creds = cors(&["*"]);
        creds.allow_credentials = Some(true);
        assert_eq!(
            allowed_origin(&creds, "https://b.example").as_deref(),
            Some("https://b.example")
        );
    }

    #[test]
    fn preflight_answers_from_the_config() {
        let mut h = HeaderMap::new();
        h.insert(
            "access-control-request-method",
            HeaderValue::from_static("POST"),
        );
        let r = preflight(&cors(&["https://a.example"]), "https://a.example", &h);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers()["access-control-allow-origin"],
            "https://a.example"
        );
        assert_eq!(r.headers()["access-control-allow-methods"], "GET,POST");
        assert_eq!(r.headers()["access-control-allow-headers"], "x-custom");
        assert_eq!(r.headers()["access-control-max-age"], "300");
        let other = preflight(&cors(&["https://a.example"]), "https://evil.example", &h);
        assert!(!other.headers().contains_key("access-control-allow-origin"));
    }

    #[test]
    fn results_map_to_http_as_lambda_maps_them() {
        let r = http_response(&Bytes::from_static(br#"{"hello":"world"}"#));
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["content-type"], "application/json");
        let r = http_response(&Bytes::from_static(
            br#"{"statusCode":201,"headers":{"x-a":"1","content-type":"text/plain"},"cookies":["a=1","b=2"],"body":"made"}"#,
        ));
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(r.headers()["x-a"], "1");
        assert_eq!(r.headers()["content-type"], "text/plain");
        assert_eq!(r.headers().get_all("set-cookie").iter().count(), 2);
        let r = http_response(&Bytes::from_static(
            br#"{"statusCode":200,"body":"AAEC/w==","isBase64Encoded":true}"#,
        ));
        assert_eq!(r.status(), StatusCode::OK);
        let r = http_response(&Bytes::from_static(br#"{"statusCode":"nope"}"#));
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
        let r = http_response(&Bytes::from_static(b"null"));
        assert_eq!(r.status(), StatusCode::OK);
    }

    #[test]
    fn text_and_binary_bodies() {
        assert!(is_text(None));
        assert!(is_text(Some("application/json; charset=utf-8")));
        assert!(is_text(Some("text/plain")));
        assert!(!is_text(Some("application/octet-stream")));
        assert!(!is_text(Some("image/png")));
    }

    #[test]
    fn cors_limits_are_checked() {
        assert!(check_cors(&cors(&["*"])).is_ok());
        let mut bad = cors(&["*"]);
        bad.max_age = Some(86_401);
        assert!(check_cors(&bad).is_err());
        let mut bad = cors(&["*"]);
        bad.allow_methods = Some(vec!["FETCH".into()]);
        assert!(check_cors(&bad).is_err());
        let mut bad = cors(&[""]);
        bad.allow_methods = None;
        assert!(check_cors(&bad).is_err());
    }
}
