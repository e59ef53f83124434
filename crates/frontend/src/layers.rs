//! Layers: PublishLayerVersion, GetLayerVersion(ByArn), ListLayerVersions,
//! ListLayers and DeleteLayerVersion (`/2018-10-31/layers/...`), and the
//! checks of a function's `Layers`.
//!
//! A layer version is a zip in the [`BlobStore`](stratus_store::BlobStore)
//! (content-addressed, like function code, and unpacked by the worker's
//! code cache) plus a record under `layers/<account>/<name>/<version>` in
//! the [`MetaStore`]. Version numbers are never reused: the last one given
//! is kept under `layer-heads/<account>/<name>`, also after every version
//! is deleted. A function names its layers by version ARN; its record
//! keeps each layer's digest, so deleting a layer version does not break
//! the functions that use it (as on Lambda): the archive stays while a
//! function names it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use stratus_api::LambdaError;
use stratus_store::{MetaStore, Precondition, StoreError};
use stratus_types::AccountId;
use stratus_types::limits::UNZIPPED_MAX_BYTES;

use crate::auth::Caller;
use crate::control::{decode_zip, host, now_timestamp, parse_upload, store_code};
use crate::error::ApiResult;
use crate::registry::{FunctionLayer, RegistryError};
use crate::{Frontend, presign, validate};

/// Most layers a function may use.
pub const MAX_LAYERS: usize = 5;

const NOT_FOUND: &str = "The resource you requested does not exist.";

const NAME_PATTERN: &str =
    "(arn:[a-zA-Z0-9-]+:lambda:[a-zA-Z0-9-]+:\\d{12}:layer:[a-zA-Z0-9-_]+)|[a-zA-Z0-9-_]+";
const VERSION_ARN_PATTERN: &str =
    "arn:[a-zA-Z0-9-]+:lambda:[a-zA-Z0-9-]+:\\d{12}:layer:[a-zA-Z0-9-_]+:[0-9]+";

/// One layer version as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerVersionRecord {
    pub account: AccountId,
    pub region: String,
    pub name: String,
    pub version: u64,
    pub description: String,
    pub compatible_runtimes: Vec<String>,
    pub compatible_architectures: Vec<String>,
    pub license_info: Option<String>,
    /// Hex SHA-256 of the zip: the blob key.
    pub code_digest: String,
    pub code_sha256: String,
    pub code_size: u64,
    /// The sum of the zip's declared uncompressed sizes.
    pub unzipped_size: u64,
    pub created_date: String,
}

fn layer_arn(region: &str, account: &AccountId, name: &str) -> String {
    format!("arn:aws:lambda:{region}:{account}:layer:{name}")
}

impl LayerVersionRecord {
    pub fn layer_arn(&self) -> String {
        layer_arn(&self.region, &self.account, &self.name)
    }

    pub fn version_arn(&self) -> String {
        format!("{}:{}", self.layer_arn(), self.version)
    }

    /// A LayerVersionsListItem.
    fn item(&self) -> Value {
        let mut v = json!({
            "LayerVersionArn": self.version_arn(),
            "Version": self.version,
            "Description": self.description,
            "CreatedDate": self.created_date,
            "CompatibleRuntimes": self.compatible_runtimes,
            "CompatibleArchitectures": self.compatible_architectures,
        });
        if let Some(l) = &self.license_info {
            v["LicenseInfo"] = Value::String(l.clone());
        }
        v
    }

    /// PublishLayerVersion's and GetLayerVersion's document.
    fn document(&self, fe: &Frontend, host: &str) -> Value {
        let mut v = self.item();
        v["LayerArn"] = Value::String(self.layer_arn());
        v["Content"] = json!({
            "Location": presign::url(&fe.deps.presign_key, host, self.account.as_str(), &self.code_digest),
            "CodeSha256": self.code_sha256,
            "CodeSize": self.code_size,
        });
        v
    }
}

type Key = (AccountId, String, u64);

/// Every layer version, cached; written through to the store.
#[derive(Debug)]
pub struct LayerRegistry {
    store: Arc<dyn MetaStore>,
    cache: RwLock<BTreeMap<Key, Arc<LayerVersionRecord>>>,
}

fn record_key(account: &AccountId, name: &str, version: u64) -> String {
    format!("layers/{account}/{name}/{version:020}")
}

fn head_key(account: &AccountId, name: &str) -> String {
    format!("layer-heads/{account}/{name}")
}

impl LayerRegistry {
    pub async fn load(store: Arc<dyn MetaStore>) -> Result<Self, RegistryError> {
        let mut cache = BTreeMap::new();
        let mut after: Option<String> = None;
        loop {
            let page = store.scan("layers/", after.as_deref(), 1000).await?;
            let Some((last, _)) = page.last() else {
                break;
            };
            after = Some(last.clone());
            for (k, v) in page {
                let r: LayerVersionRecord =
                    serde_json::from_slice(&v.value).map_err(|e| RegistryError::Corrupt {
                        key: k.clone(),
                        message: e.to_string(),
                    })?;
                cache.insert((r.account.clone(), r.name.clone(), r.version), Arc::new(r));
            }
        }
        Ok(LayerRegistry {
            store,
            cache: RwLock::new(cache),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<Key, Arc<LayerVersionRecord>>> {
        self.cache.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<Key, Arc<LayerVersionRecord>>> {
        self.cache.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(
        &self,
        account: &AccountId,
        name: &str,
        version: u64,
    ) -> Option<Arc<LayerVersionRecord>> {
        self.read()
            .get(&(account.clone(), name.to_owned(), version))
            .cloned()
    }

    /// The versions of one layer, newest first.
    fn versions(&self, account: &AccountId, name: &str) -> Vec<Arc<LayerVersionRecord>> {
        let mut v: Vec<_> = self
            .read()
            .range(
                (account.clone(), name.to_owned(), 0)
                    ..=(account.clone(), name.to_owned(), u64::MAX),
            )
            .map(|(_, r)| Arc::clone(r))
            .collect();
        v.reverse();
        v
    }

    /// Every version of an account's layers, by name then version.
    fn all_of(&self, account: &AccountId) -> Vec<Arc<LayerVersionRecord>> {
        self.read()
            .iter()
            .filter(|((a, _, _), _)| a == account)
            .map(|(_, r)| Arc::clone(r))
            .collect()
    }

    /// Whether any layer version (of any account) is stored as `digest`.
    pub fn uses(&self, digest: &str) -> bool {
        self.read().values().any(|r| r.code_digest == digest)
    }

    /// The digests of every layer version.
    pub fn digests(&self) -> Vec<String> {
        self.read()
            .values()
            .map(|r| r.code_digest.clone())
            .collect()
    }

    /// Takes the next version number of a layer (never reused).
    async fn next_version(&self, account: &AccountId, name: &str) -> Result<u64, StoreError> {
        let k = head_key(account, name);
        loop {
            let current = self.store.get(&k).await?;
            let (last, pre) = match &current {
                Some(v) => (
                    std::str::from_utf8(&v.value)
                        .ok()
                        .and_then(|s| s.trim().parse::<u64>().ok())
                        .unwrap_or(0),
                    Precondition::Version(v.version),
                ),
                None => (0, Precondition::Absent),
            };
            // Never below what the cache holds (a head lost by hand).
            let last = last.max(
                self.versions(account, name)
                    .first()
                    .map_or(0, |r| r.version),
            );
            let next = last + 1;
            match self.store.put(&k, Bytes::from(next.to_string()), pre).await {
                Ok(_) => return Ok(next),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    async fn put(&self, r: LayerVersionRecord) -> Result<Arc<LayerVersionRecord>, StoreError> {
        let k = record_key(&r.account, &r.name, r.version);
        let value = serde_json::to_vec(&r).map_err(|e| StoreError::Backend {
            op: "encode",
            key: k.clone(),
            message: e.to_string(),
        })?;
        self.store
            .put(&k, Bytes::from(value), Precondition::Absent)
            .await?;
        let r = Arc::new(r);
        self.write().insert(
            (r.account.clone(), r.name.clone(), r.version),
            Arc::clone(&r),
        );
        Ok(r)
    }

    async fn delete(&self, r: &LayerVersionRecord) -> Result<(), StoreError> {
        self.store
            .delete(
                &record_key(&r.account, &r.name, r.version),
                Precondition::None,
            )
            .await?;
        self.write()
            .remove(&(r.account.clone(), r.name.clone(), r.version));
        Ok(())
    }
}

/// A LayerName path parameter: a name or a layer ARN (without version) of
/// the caller's account and region. `None` when it names another account's
/// or region's layer (which then does not exist for the caller).
fn layer_name(c: &Caller, param: &str) -> Result<Option<String>, LambdaError> {
    let bad = || {
        LambdaError::validation(
            param,
            "layerName",
            &format!("Member must satisfy regular expression pattern: {NAME_PATTERN}"),
        )
    };
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.len() <= 140
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !param.starts_with("arn:") {
        return if name_ok(param) {
            Ok(Some(param.to_owned()))
        } else {
            Err(bad())
        };
    }
    let parts: Vec<&str> = param.split(':').collect();
    if parts.len() != 7 || parts[2] != "lambda" || parts[5] != "layer" || !name_ok(parts[6]) {
        return Err(bad());
    }
    let same = parts[3] == c.region && parts[4] == c.account.as_str();
    Ok(same.then(|| parts[6].to_owned()))
}

fn version_number(v: &str) -> Result<u64, LambdaError> {
    v.parse::<u64>().ok().filter(|n| *n >= 1).ok_or_else(|| {
        LambdaError::validation(v, "versionNumber", "Member must be a positive integer")
    })
}

/// A layer version ARN: `(region, account, name, version)`.
fn parse_version_arn(arn: &str) -> Option<(String, AccountId, String, u64)> {
    let parts: Vec<&str> = arn.split(':').collect();
    if parts.len() != 8
        || parts[0] != "arn"
        || parts[2] != "lambda"
        || parts[5] != "layer"
        || parts[6].is_empty()
        || !parts[6]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return None;
    }
    let account = AccountId::parse(parts[4]).ok()?;
    let version = parts[7].parse::<u64>().ok()?;
    Some((parts[3].to_owned(), account, parts[6].to_owned(), version))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PublishRequest {
    content: Option<stratus_api::model::FunctionCode>,
    description: Option<String>,
    compatible_runtimes: Option<Vec<String>>,
    compatible_architectures: Option<Vec<String>>,
    license_info: Option<String>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

/// `POST /2018-10-31/layers/{name}/versions`: PublishLayerVersion.
pub async fn publish(
    State(fe): State<Arc<Frontend>>,
    headers: HeaderMap,
    c: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let req: PublishRequest = parse_upload(body).await?;
    let Some(name) = layer_name(&c, &name)? else {
        return Err(LambdaError::invalid(
            "Stratus publishes layers only in the caller's own account and region.",
        )
        .into());
    };
    let description = req.description.unwrap_or_default();
    validate::description(&description)?;
    let runtimes = req.compatible_runtimes.unwrap_or_default();
    if runtimes.len() > 15 {
        return Err(LambdaError::validation(
            &format!("{runtimes:?}"),
            "compatibleRuntimes",
            "Member must have length less than or equal to 15",
        )
        .into());
    }
    for r in &runtimes {
        if stratus_types::Runtime::parse(r).is_err() {
            return Err(LambdaError::validation(
                r,
                "compatibleRuntimes",
                "Member must satisfy enum value set of the runtimes this server knows",
            )
            .into());
        }
    }
    let architectures = req.compatible_architectures.unwrap_or_default();
    for a in &architectures {
        if a != "x86_64" && a != "arm64" {
            return Err(LambdaError::validation(
                a,
                "compatibleArchitectures",
                "Member must satisfy enum value set: [x86_64, arm64]",
            )
            .into());
        }
    }
    if let Some(l) = &req.license_info
        && l.chars().count() > 512
    {
        return Err(LambdaError::validation(
            l,
            "licenseInfo",
            "Member must have length less than or equal to 512",
        )
        .into());
    }
    validate::other_fields(&req.other, "")?;
    let content = req.content.ok_or_else(|| {
        LambdaError::invalid(
            "Content is a mandatory parameter: upload the layer as Content.ZipFile.",
        )
    })?;
    validate::other_fields(&content.other, "Content.")?;
    let zip_b64 = content.zip_file.ok_or_else(|| {
        LambdaError::invalid(
            "Stratus takes layer content as Content.ZipFile (S3 locations are not supported).",
        )
    })?;
    let zip = decode_zip(zip_b64).await?;
    let unzipped_size = declared_size(&zip)?;
    let stored = store_code(&fe, zip).await?;
    let published = async {
        let version = fe
            .layers
            .next_version(&c.account, &name)
            .await
            .map_err(|e| LambdaError::service(format!("numbering the layer version: {e}")))?;
        fe.layers
            .put(LayerVersionRecord {
                account: c.account.clone(),
                region: c.region.clone(),
                name: name.clone(),
                version,
                description,
                compatible_runtimes: runtimes,
                compatible_architectures: architectures,
                license_info: req.license_info,
                code_digest: stored.digest.clone(),
                code_sha256: stored.sha_b64.clone(),
                code_size: stored.size,
                unzipped_size,
                created_date: now_timestamp(),
            })
            .await
            .map_err(|e| LambdaError::service(format!("storing the layer version: {e}")))
    }
    .await;
    let digest = stored.digest.clone();
    drop(stored);
    match published {
        Ok(r) => Ok((StatusCode::CREATED, Json(r.document(&fe, &host(&headers)))).into_response()),
        Err(e) => {
            fe.collect_code(&digest).await;
            Err(e.into())
        }
    }
}

/// The sum of the declared uncompressed sizes of a zip's entries.
pub fn declared_size(zip: &[u8]) -> Result<u64, LambdaError> {
    stratus_code::declared_size(zip).map_err(|_| LambdaError::invalid(crate::control::UNZIP_FAILED))
}

fn found(
    fe: &Frontend,
    c: &Caller,
    name: &str,
    version: &str,
) -> Result<Arc<LayerVersionRecord>, LambdaError> {
    let version = version_number(version)?;
    let name = layer_name(c, name)?;
    name.and_then(|n| fe.layers.get(&c.account, &n, version))
        .ok_or_else(|| LambdaError::not_found(NOT_FOUND))
}

/// `GET /2018-10-31/layers/{name}/versions/{version}`: GetLayerVersion.
pub async fn get_version(
    State(fe): State<Arc<Frontend>>,
    headers: HeaderMap,
    c: Caller,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult<Response> {
    let r = found(&fe, &c, &name, &version)?;
    Ok(Json(r.document(&fe, &host(&headers))).into_response())
}

/// `DELETE /2018-10-31/layers/{name}/versions/{version}`: DeleteLayerVersion
/// (204 also when there is no such version). Functions using it keep it.
pub async fn delete_version(
    State(fe): State<Arc<Frontend>>,
    c: Caller,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult<Response> {
    let r = match found(&fe, &c, &name, &version) {
        Ok(r) => r,
        Err(e) if e.code == stratus_api::ErrorCode::ResourceNotFound => {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        Err(e) => return Err(e.into()),
    };
    fe.layers
        .delete(&r)
        .await
        .map_err(|e| LambdaError::service(format!("deleting the layer version: {e}")))?;
    fe.collect_code(&r.code_digest).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn max_items(q: &HashMap<String, String>) -> Result<usize, LambdaError> {
    match q.get("MaxItems") {
        None => Ok(50),
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=50).contains(n))
            .ok_or_else(|| {
                LambdaError::validation(s, "maxItems", "Member must have value between 1 and 50")
            }),
    }
}

fn matches(r: &LayerVersionRecord, q: &HashMap<String, String>) -> bool {
    q.get("CompatibleRuntime")
        .is_none_or(|rt| r.compatible_runtimes.iter().any(|x| x == rt))
        && q.get("CompatibleArchitecture")
            .is_none_or(|a| r.compatible_architectures.iter().any(|x| x == a))
}

/// A page of `items` after the marker (an index), and the next marker.
fn page(
    items: Vec<Value>,
    q: &HashMap<String, String>,
) -> Result<(Vec<Value>, Option<String>), LambdaError> {
    let max = max_items(q)?;
    let start = match q.get("Marker").filter(|m| !m.is_empty()) {
        None => 0,
        Some(m) => m
            .parse::<usize>()
            .map_err(|_| LambdaError::invalid(format!("Invalid Marker: {m}")))?,
    };
    let end = start.saturating_add(max).min(items.len());
    let next = (end < items.len()).then(|| end.to_string());
    Ok((items.into_iter().skip(start).take(max).collect(), next))
}

/// `GET /2018-10-31/layers/{name}/versions`: ListLayerVersions, newest first.
pub async fn list_versions(
    State(fe): State<Arc<Frontend>>,
    c: Caller,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let items: Vec<Value> = match layer_name(&c, &name)? {
        Some(n) => fe
            .layers
            .versions(&c.account, &n)
            .iter()
            .filter(|r| matches(r, &q))
            .map(|r| r.item())
            .collect(),
        None => Vec::new(),
    };
    let (items, next) = page(items, &q)?;
    let mut doc = json!({"LayerVersions": items});
    if let Some(n) = next {
        doc["NextMarker"] = Value::String(n);
    }
    Ok(Json(doc).into_response())
}

/// `GET /2018-10-31/layers`: ListLayers (each layer with its newest
/// matching version), or GetLayerVersionByArn with `?find=LayerVersion&Arn=`.
pub async fn list_layers(
    State(fe): State<Arc<Frontend>>,
    headers: HeaderMap,
    c: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    if let Some(find) = q.get("find") {
        if find != "LayerVersion" {
            return Err(LambdaError::validation(
                find,
                "find",
                "Member must satisfy enum value set: [LayerVersion]",
            )
            .into());
        }
        let arn = q.get("Arn").map(String::as_str).unwrap_or_default();
        let (region, account, name, version) = parse_version_arn(arn).ok_or_else(|| {
            LambdaError::validation(
                arn,
                "arn",
                &format!("Member must satisfy regular expression pattern: {VERSION_ARN_PATTERN}"),
            )
        })?;
        let r = (region == c.region && account == c.account)
            .then(|| fe.layers.get(&account, &name, version))
            .flatten()
            .ok_or_else(|| LambdaError::not_found(NOT_FOUND))?;
        return Ok(Json(r.document(&fe, &host(&headers))).into_response());
    }
    let mut newest: BTreeMap<String, Arc<LayerVersionRecord>> = BTreeMap::new();
    for r in fe.layers.all_of(&c.account) {
        if matches(&r, &q) {
            // Versions come in ascending order: the last one wins.
            newest.insert(r.name.clone(), r);
        }
    }
    let items: Vec<Value> = newest
        .values()
        .map(|r| {
            json!({
                "LayerName": r.name,
                "LayerArn": r.layer_arn(),
                "LatestMatchingVersion": r.item(),
            })
        })
        .collect();
    let (items, next) = page(items, &q)?;
    let mut doc = json!({"Layers": items});
    if let Some(n) = next {
        doc["NextMarker"] = Value::String(n);
    }
    Ok(Json(doc).into_response())
}

/// Checks a function's `Layers` (version ARNs of the caller's own layers,
/// at most five, one version per layer) and that its code and layers fit
/// in the unzipped limit together; returns them in order.
pub fn resolve_layers(
    fe: &Frontend,
    c: &Caller,
    arns: &[String],
    code_unzipped: u64,
) -> Result<Vec<FunctionLayer>, LambdaError> {
    if arns.len() > MAX_LAYERS {
        return Err(LambdaError::invalid(format!(
            "Cannot reference more than {MAX_LAYERS} layers."
        )));
    }
    let mut out: Vec<FunctionLayer> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut total = code_unzipped;
    for arn in arns {
        let (region, account, name, version) = parse_version_arn(arn).ok_or_else(|| {
            LambdaError::validation(
                &format!("{arns:?}"),
                "layers",
                &format!("Member must satisfy constraint: [Member must satisfy regular expression pattern: {VERSION_ARN_PATTERN}]"),
            )
        })?;
        if region != c.region {
            return Err(LambdaError::invalid(format!(
                "Layers are not in the same region as the function. Layers are expected to be in region {}.",
                c.region
            )));
        }
        let r = (account == c.account)
            .then(|| fe.layers.get(&account, &name, version))
            .flatten()
            .ok_or_else(|| LambdaError::invalid(format!("Layer version {arn} does not exist.")))?;
        if names.contains(&name) {
            return Err(LambdaError::invalid(format!(
                "Two different versions of the same layer are not allowed: {}.",
                r.layer_arn()
            )));
        }
        names.push(name);
        total = total.saturating_add(r.unzipped_size);
        out.push(FunctionLayer {
            arn: r.version_arn(),
            code_digest: r.code_digest.clone(),
            code_size: r.code_size,
            unzipped_size: r.unzipped_size,
        });
    }
    if total > UNZIPPED_MAX_BYTES {
        return Err(too_big(total));
    }
    Ok(out)
}

/// The error for code and layers over the unzipped limit together.
pub fn too_big(total: u64) -> LambdaError {
    LambdaError::invalid(format!(
        "Function code combined with layers exceeds the maximum allowed size of {UNZIPPED_MAX_BYTES} bytes. The actual size is {total} bytes."
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller() -> Caller {
        Caller {
            account: AccountId::default_local(),
            region: "us-east-1".into(),
            admin: false,
        }
    }

    #[test]
    fn layer_names_and_arns() {
        let c = caller();
        assert_eq!(
            layer_name(&c, "deps").expect("name").as_deref(),
            Some("deps")
        );
        assert_eq!(
            layer_name(&c, "arn:aws:lambda:us-east-1:000000000000:layer:deps")
                .expect("arn")
                .as_deref(),
            Some("deps")
        );
        assert_eq!(
            layer_name(&c, "arn:aws:lambda:us-east-1:111111111111:layer:deps").expect("arn"),
            None,
            "another account's layer"
        );
        assert!(layer_name(&c, "bad name").is_err());
        assert!(layer_name(&c, "").is_err());
        assert_eq!(
            parse_version_arn("arn:aws:lambda:us-east-1:000000000000:layer:deps:3"),
            Some((
                "us-east-1".into(),
                AccountId::default_local(),
                "deps".into(),
                3
            ))
        );
        assert_eq!(
            parse_version_arn("arn:aws:lambda:us-east-1:000000000000:layer:deps"),
            None
        );
        assert_eq!(
            parse_version_arn("arn:aws:lambda:us-east-1:000000000000:function:f:3"),
            None
        );
    }

    #[test]
    fn pages_carry_a_marker() {
        let items: Vec<Value> = (0..5).map(|i| json!(i)).collect();
        let mut q = HashMap::new();
        q.insert("MaxItems".to_owned(), "2".to_owned());
        let (first, next) = page(items.clone(), &q).expect("page");
        assert_eq!(first, vec![json!(0), json!(1)]);
        assert_eq!(next.as_deref(), Some("2"));
        q.insert("Marker".to_owned(), "4".to_owned());
        let (last, next) = page(items, &q).expect("page");
        assert_eq!(last, vec![json!(4)]);
        assert_eq!(next, None);
    }
}
