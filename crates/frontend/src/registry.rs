//! The function registry: every function's stored record, cached in memory.
//!
//! The [`MetaStore`] is the source of truth (key `functions/<account>/<name>`,
//! a JSON [`FunctionRecord`]); the cache answers reads and the invoke path
//! without touching the store. Writes go to the store first, with a
//! compare-and-swap on the version read, and then to the cache, so a crash
//! never leaves the cache ahead of the store.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use stratus_api::model::{
    Environment, EphemeralStorage, FunctionConfiguration, LoggingConfig, TracingConfig,
};
use stratus_api::service::FunctionVersionSpec;
use stratus_store::{MetaStore, Precondition, StoreError};
use stratus_types::{AccountId, Runtime};

/// A function as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionRecord {
    pub account: AccountId,
    pub region: String,
    pub name: String,
    pub runtime: String,
    pub role: String,
    pub handler: String,
    pub description: String,
    pub timeout_s: u32,
    pub memory_mb: u32,
    pub ephemeral_mb: u32,
    /// `None` when the function never had an Environment.
    pub environment: Option<BTreeMap<String, String>>,
    /// Hex SHA-256 of the zip: the blob key.
    pub code_digest: String,
    /// Base64 SHA-256 of the zip: Lambda's CodeSha256.
    pub code_sha256: String,
    pub code_size: u64,
    pub revision_id: String,
    pub last_modified: String,
    pub architectures: Vec<String>,
    /// `Pending` or `Active`.
    pub state: String,
    /// `None` right after create; `InProgress` or `Successful` after updates.
    pub last_update_status: Option<String>,
    /// Reserved concurrency (PutFunctionConcurrency); `None` when unset.
    /// Records written before it existed load as `None`.
    #[serde(default)]
    pub reserved_concurrency: Option<u32>,
    /// `$LATEST`, or the number of a published version (whose record is an
    /// immutable snapshot, module `published`). Records written before
    /// versions existed load as `$LATEST`.
    #[serde(default = "latest")]
    pub version: String,
    /// In `$LATEST`'s record: the highest version number ever published.
    /// Numbers are never reused, even after that version is deleted.
    #[serde(default)]
    pub last_version: u64,
    /// Tags (TagResource, CreateFunction's `Tags`). Records written before
    /// they existed load with none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Layers, in order. Records written before they existed load with none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<FunctionLayer>,
    /// DeadLetterConfig's TargetArn: a Stratus function that gets the
    /// asynchronous events that failed. Older records load as `None`.
    #[serde(default)]
    pub dead_letter_target: Option<String>,
}

fn latest() -> String {
    "$LATEST".into()
}

/// One layer of a function: the version it named, and what it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionLayer {
    /// The layer version ARN.
    pub arn: String,
    /// Hex SHA-256 of the layer's zip (kept even if the version is deleted).
    pub code_digest: String,
    pub code_size: u64,
    pub unzipped_size: u64,
}

impl FunctionRecord {
    /// Unqualified for `$LATEST`, `...:function:name:N` for a version.
    pub fn arn(&self) -> String {
        let qualifier = (!self.is_latest()).then_some(self.version.as_str());
        stratus_types::function_arn(&self.region, &self.account, &self.name, qualifier)
    }

    pub fn is_latest(&self) -> bool {
        self.version == "$LATEST"
    }

    /// The configuration document.
    pub fn configuration(&self) -> FunctionConfiguration {
        let pending = self.state == "Pending";
        let in_progress = self.last_update_status.as_deref() == Some("InProgress");
        FunctionConfiguration {
            function_name: self.name.clone(),
            function_arn: self.arn(),
            runtime: self.runtime.clone(),
            role: self.role.clone(),
            handler: self.handler.clone(),
            code_size: self.code_size,
            description: self.description.clone(),
            timeout: self.timeout_s,
            memory_size: self.memory_mb,
            last_modified: self.last_modified.clone(),
            code_sha256: self.code_sha256.clone(),
            version: self.version.clone(),
            environment: self.environment.as_ref().map(|v| Environment {
                variables: v.clone(),
            }),
            tracing_config: TracingConfig {
                mode: Some("PassThrough".into()),
            },
            revision_id: self.revision_id.clone(),
            state: self.state.clone(),
            state_reason: pending.then(|| "The function is being created.".into()),
            state_reason_code: pending.then(|| "Creating".into()),
            last_update_status: self.last_update_status.clone(),
            last_update_status_reason: in_progress.then(|| "The function is being created.".into()),
            last_update_status_reason_code: in_progress.then(|| "Creating".into()),
            package_type: "Zip".into(),
            architectures: self.architectures.clone(),
            ephemeral_storage: EphemeralStorage {
                size: i64::from(self.ephemeral_mb),
            },
            logging_config: LoggingConfig {
                log_format: Some("Text".into()),
                log_group: Some(format!("/aws/lambda/{}", self.name)),
                application_log_level: None,
                system_log_level: None,
            },
            snap_start: serde_json::json!({"ApplyOn": "None", "OptimizationStatus": "Off"}),
            dead_letter_config: self
                .dead_letter_target
                .as_ref()
                .map(|arn| serde_json::json!({"TargetArn": arn})),
            runtime_version_config: serde_json::json!({
                "RuntimeVersionArn": format!("arn:aws:lambda:{}::runtime:stratus-{}", self.region, self.runtime)
            }),
            layers: self
                .layers
                .iter()
                .map(|l| stratus_api::model::Layer {
                    arn: l.arn.clone(),
                    code_size: l.code_size,
                })
                .collect(),
        }
    }

    /// What a sandbox of this function runs, or `None` if the stored runtime
    /// id is no longer runnable.
    pub fn spec(&self) -> Option<FunctionVersionSpec> {
        Some(FunctionVersionSpec {
            account: self.account.clone(),
            region: self.region.clone(),
            name: self.name.clone(),
            version: self.version.clone(),
            revision_id: self.revision_id.clone(),
            runtime: Runtime::parse(&self.runtime).ok()?,
            handler: self.handler.clone(),
            memory_mb: self.memory_mb,
            timeout_s: self.timeout_s,
            ephemeral_mb: self.ephemeral_mb,
            env: self.environment.clone().unwrap_or_default(),
            code_digest: self.code_digest.clone(),
            layers: self.layers.iter().map(|l| l.code_digest.clone()).collect(),
        })
    }
}

/// A cached function: its record, store version and ready-made spec.
#[derive(Debug, Clone)]
pub struct Cached {
    pub record: Arc<FunctionRecord>,
    pub version: u64,
    pub spec: Option<Arc<FunctionVersionSpec>>,
}

/// Errors of the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored record {key} is unreadable: {message}")]
    Corrupt { key: String, message: String },
}

#[derive(Debug)]
pub struct Registry {
    store: Arc<dyn MetaStore>,
    cache: RwLock<HashMap<(AccountId, String), Cached>>,
}

const PREFIX: &str = "functions/";

fn key(account: &AccountId, name: &str) -> String {
    format!("{PREFIX}{account}/{name}")
}

impl Registry {
    /// Loads every function from the store.
    pub async fn load(store: Arc<dyn MetaStore>) -> Result<Self, RegistryError> {
        let mut cache = HashMap::new();
        let mut after: Option<String> = None;
        loop {
            let page = store.scan(PREFIX, after.as_deref(), 1000).await?;
            let Some((last, _)) = page.last() else {
                break;
            };
            after = Some(last.clone());
            for (k, v) in page {
                let record: FunctionRecord =
                    serde_json::from_slice(&v.value).map_err(|e| RegistryError::Corrupt {
                        key: k.clone(),
                        message: e.to_string(),
                    })?;
                cache.insert(
                    (record.account.clone(), record.name.clone()),
                    cached(record, v.version),
                );
            }
        }
        Ok(Registry {
            store,
            cache: RwLock::new(cache),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<(AccountId, String), Cached>> {
        self.cache.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<(AccountId, String), Cached>> {
        self.cache.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn get(&self, account: &AccountId, name: &str) -> Option<Cached> {
        self.read()
            .get(&(account.clone(), name.to_owned()))
            .cloned()
    }

    /// Names of an account's functions in order, strictly after `after`.
    pub fn list(
        &self,
        account: &AccountId,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<Arc<FunctionRecord>>, bool) {
        let cache = self.read();
        let mut all: Vec<&Cached> = cache
            .iter()
            .filter(|((a, n), _)| a == account && after.is_none_or(|m| n.as_str() > m))
            .map(|(_, c)| c)
            .collect();
        all.sort_by(|a, b| a.record.name.cmp(&b.record.name));
        let more = all.len() > limit;
        (
            all.into_iter()
                .take(limit)
                .map(|c| Arc::clone(&c.record))
                .collect(),
            more,
        )
    }

    /// Writes a record: `expected` is the store version it was derived from
    /// (`None` to create). Fails with `StoreError::Conflict` if someone else
    /// wrote first.
    pub async fn put(
        &self,
        record: FunctionRecord,
        expected: Option<u64>,
    ) -> Result<Cached, RegistryError> {
        let k = key(&record.account, &record.name);
        let value = serde_json::to_vec(&record).map_err(|e| RegistryError::Corrupt {
            key: k.clone(),
            message: e.to_string(),
        })?;
        let pre = match expected {
            Some(v) => Precondition::Version(v),
            None => Precondition::Absent,
        };
        let version = self.store.put(&k, Bytes::from(value), pre).await?;
        let c = cached(record, version);
        self.write()
            .insert((c.record.account.clone(), c.record.name.clone()), c.clone());
        Ok(c)
    }

    /// Deletes a function; returns its last record if it existed.
    pub async fn delete(
        &self,
        account: &AccountId,
        name: &str,
        expected: u64,
    ) -> Result<(), RegistryError> {
        self.store
            .delete(&key(account, name), Precondition::Version(expected))
            .await?;
        self.write().remove(&(account.clone(), name.to_owned()));
        Ok(())
    }

    /// Whether some function's code or one of its layers is `digest`.
    pub fn uses(&self, digest: &str) -> bool {
        self.read().values().any(|c| {
            c.record.code_digest == digest
                || c.record.layers.iter().any(|l| l.code_digest == digest)
        })
    }

    /// Every function (all accounts).
    pub fn all(&self) -> Vec<Cached> {
        self.read().values().cloned().collect()
    }
}

pub(crate) fn cached(record: FunctionRecord, version: u64) -> Cached {
    let spec = record.spec().map(Arc::new);
    Cached {
        record: Arc::new(record),
        version,
        spec,
    }
}
