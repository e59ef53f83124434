//! Published versions and aliases: stored, and cached in memory.
//!
//! A version is an immutable snapshot of a function's `$LATEST` record
//! ([`FunctionRecord`] with `version` = its number), stored under
//! `versions/<account>/<name>/<number, 10 digits>`; an alias is an
//! [`AliasRecord`] under `aliases/<account>/<name>/<alias>`. As in the
//! registry, the [`MetaStore`] is the source of truth, written first with a
//! compare-and-swap, and the cache answers every read, including the invoke
//! path. Versions and aliases of a function that no longer exists (a crash
//! during DeleteFunction) are removed at load.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use stratus_api::model::{AliasConfiguration, AliasRoutingConfiguration};
use stratus_store::{MetaStore, Precondition};
use stratus_types::AccountId;

use crate::registry::{Cached, FunctionRecord, Registry, RegistryError, cached};

/// An alias as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AliasRecord {
    pub account: AccountId,
    pub region: String,
    pub function: String,
    pub name: String,
    /// `$LATEST` or a version number.
    pub function_version: String,
    pub description: String,
    pub revision_id: String,
    /// RoutingConfig.AdditionalVersionWeights: at most one version, and the
    /// share of invokes it gets.
    #[serde(default)]
    pub additional: BTreeMap<String, f64>,
}

impl AliasRecord {
    pub fn arn(&self) -> String {
        stratus_types::function_arn(
            &self.region,
            &self.account,
            &self.function,
            Some(&self.name),
        )
    }

    pub fn configuration(&self) -> AliasConfiguration {
        AliasConfiguration {
            alias_arn: self.arn(),
            name: self.name.clone(),
            function_version: self.function_version.clone(),
            description: self.description.clone(),
            revision_id: self.revision_id.clone(),
            routing_config: (!self.additional.is_empty()).then(|| AliasRoutingConfiguration {
                additional_version_weights: self.additional.clone(),
            }),
        }
    }

    /// The version one invoke runs: the additional version with its weight's
    /// probability, given `draw`, uniform in `[0, 1)`.
    pub fn route(&self, draw: f64) -> &str {
        match self.additional.iter().next() {
            Some((v, w)) if draw < *w => v,
            _ => &self.function_version,
        }
    }

    /// Whether the alias sends invokes to `version`.
    pub fn uses(&self, version: &str) -> bool {
        self.function_version == version || self.additional.contains_key(version)
    }
}

/// A cached alias and its store version.
#[derive(Debug, Clone)]
pub struct CachedAlias {
    pub record: Arc<AliasRecord>,
    pub version: u64,
}

type FnKey = (AccountId, String);
type VersionMap = HashMap<FnKey, BTreeMap<u64, Cached>>;
type AliasMap = HashMap<FnKey, BTreeMap<String, CachedAlias>>;

/// Every function's published versions and aliases.
#[derive(Debug)]
pub struct Published {
    store: Arc<dyn MetaStore>,
    versions: RwLock<VersionMap>,
    aliases: RwLock<AliasMap>,
}

fn version_key(account: &AccountId, name: &str, n: u64) -> String {
    format!("versions/{account}/{name}/{n:010}")
}

fn alias_key(account: &AccountId, name: &str, alias: &str) -> String {
    format!("aliases/{account}/{name}/{alias}")
}

/// Every `(key, version, value)` under `prefix`.
async fn scan_all(
    store: &dyn MetaStore,
    prefix: &str,
) -> Result<Vec<(String, u64, Bytes)>, RegistryError> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.scan(prefix, after.as_deref(), 1000).await?;
        let Some((last, _)) = page.last() else {
            return Ok(out);
        };
        after = Some(last.clone());
        out.extend(page.into_iter().map(|(k, v)| (k, v.version, v.value)));
    }
}

fn corrupt(key: &str, e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Corrupt {
        key: key.to_owned(),
        message: e.to_string(),
    }
}

impl Published {
    /// Loads every version and alias; drops those whose function is gone.
    pub async fn load(
        store: Arc<dyn MetaStore>,
        functions: &Registry,
    ) -> Result<Self, RegistryError> {
        let mut versions = VersionMap::new();
        let mut orphans = Vec::new();
        for (k, v, value) in scan_all(store.as_ref(), "versions/").await? {
            let record: FunctionRecord =
                serde_json::from_slice(&value).map_err(|e| corrupt(&k, e))?;
            let n: u64 = record.version.parse().map_err(|e| corrupt(&k, e))?;
            if functions.get(&record.account, &record.name).is_none() {
                orphans.push((k, v));
                continue;
            }
            versions
                .entry((record.account.clone(), record.name.clone()))
                .or_default()
                .insert(n, cached(record, v));
        }
        let mut aliases = AliasMap::new();
        for (k, v, value) in scan_all(store.as_ref(), "aliases/").await? {
            let record: AliasRecord = serde_json::from_slice(&value).map_err(|e| corrupt(&k, e))?;
            if functions.get(&record.account, &record.function).is_none() {
                orphans.push((k, v));
                continue;
            }
            aliases
                .entry((record.account.clone(), record.function.clone()))
                .or_default()
                .insert(
                    record.name.clone(),
                    CachedAlias {
                        record: Arc::new(record),
                        version: v,
                    },
                );
        }
        for (k, v) in orphans {
            tracing::info!(key = %k, "removing a version or alias of a deleted function");
            store.delete(&k, Precondition::Version(v)).await?;
        }
        Ok(Published {
            store,
            versions: RwLock::new(versions),
            aliases: RwLock::new(aliases),
        })
    }

    fn versions_read(&self) -> std::sync::RwLockReadGuard<'_, VersionMap> {
        self.versions.read().unwrap_or_else(|e| e.into_inner())
    }

    fn versions_write(&self) -> std::sync::RwLockWriteGuard<'_, VersionMap> {
        self.versions.write().unwrap_or_else(|e| e.into_inner())
    }

    fn aliases_read(&self) -> std::sync::RwLockReadGuard<'_, AliasMap> {
        self.aliases.read().unwrap_or_else(|e| e.into_inner())
    }

    fn aliases_write(&self) -> std::sync::RwLockWriteGuard<'_, AliasMap> {
        self.aliases.write().unwrap_or_else(|e| e.into_inner())
    }

    /// One published version.
    pub fn version(&self, account: &AccountId, name: &str, n: u64) -> Option<Cached> {
        self.versions_read()
            .get(&(account.clone(), name.to_owned()))
            .and_then(|m| m.get(&n))
            .cloned()
    }

    /// A function's versions, oldest first.
    pub fn versions_of(&self, account: &AccountId, name: &str) -> Vec<Cached> {
        self.versions_read()
            .get(&(account.clone(), name.to_owned()))
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The version with the highest number, if any.
    pub fn newest(&self, account: &AccountId, name: &str) -> Option<Cached> {
        self.versions_read()
            .get(&(account.clone(), name.to_owned()))
            .and_then(|m| m.values().next_back().cloned())
    }

    /// Stores a new version (its number must be unused).
    pub async fn put_version(&self, record: FunctionRecord) -> Result<Cached, RegistryError> {
        let n: u64 = record
            .version
            .parse()
            .map_err(|e| corrupt(&record.version, e))?;
        let k = version_key(&record.account, &record.name, n);
        let value = serde_json::to_vec(&record).map_err(|e| corrupt(&k, e))?;
        let v = self
            .store
            .put(&k, Bytes::from(value), Precondition::Absent)
            .await?;
        let c = cached(record, v);
        self.versions_write()
            .entry((c.record.account.clone(), c.record.name.clone()))
            .or_default()
            .insert(n, c.clone());
        Ok(c)
    }

    /// Deletes one version.
    pub async fn delete_version(&self, c: &Cached) -> Result<(), RegistryError> {
        let r = &c.record;
        let n: u64 = r.version.parse().map_err(|e| corrupt(&r.version, e))?;
        self.store
            .delete(
                &version_key(&r.account, &r.name, n),
                Precondition::Version(c.version),
            )
            .await?;
        let key = (r.account.clone(), r.name.clone());
        let mut all = self.versions_write();
        if let Some(m) = all.get_mut(&key) {
            m.remove(&n);
            if m.is_empty() {
                all.remove(&key);
            }
        }
        Ok(())
    }

    /// Whether any published version runs the code `digest`.
    pub fn uses_digest(&self, digest: &str) -> bool {
        self.versions_read()
            .values()
            .flat_map(BTreeMap::values)
            .any(|c| {
                c.record.code_digest == digest
                    || c.record.layers.iter().any(|l| l.code_digest == digest)
            })
    }

    /// Every code digest a published version runs: its code and its layers'.
    pub fn digests(&self) -> Vec<String> {
        self.versions_read()
            .values()
            .flat_map(BTreeMap::values)
            .flat_map(|c| {
                std::iter::once(c.record.code_digest.clone())
                    .chain(c.record.layers.iter().map(|l| l.code_digest.clone()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    pub fn alias(&self, account: &AccountId, function: &str, alias: &str) -> Option<CachedAlias> {
        self.aliases_read()
            .get(&(account.clone(), function.to_owned()))
            .and_then(|m| m.get(alias))
            .cloned()
    }

    /// A function's aliases by name.
    pub fn aliases_of(&self, account: &AccountId, function: &str) -> Vec<CachedAlias> {
        self.aliases_read()
            .get(&(account.clone(), function.to_owned()))
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Writes an alias: `expected` is the store version it was derived from
    /// (`None` to create).
    pub async fn put_alias(
        &self,
        record: AliasRecord,
        expected: Option<u64>,
    ) -> Result<CachedAlias, RegistryError> {
        let k = alias_key(&record.account, &record.function, &record.name);
        let value = serde_json::to_vec(&record).map_err(|e| corrupt(&k, e))?;
        let pre = match expected {
            Some(v) => Precondition::Version(v),
            None => Precondition::Absent,
        };
        let v = self.store.put(&k, Bytes::from(value), pre).await?;
        let c = CachedAlias {
            record: Arc::new(record),
            version: v,
        };
        self.aliases_write()
            .entry((c.record.account.clone(), c.record.function.clone()))
            .or_default()
            .insert(c.record.name.clone(), c.clone());
        Ok(c)
    }

    pub async fn delete_alias(&self, c: &CachedAlias) -> Result<(), RegistryError> {
        let r = &c.record;
        self.store
            .delete(
                &alias_key(&r.account, &r.function, &r.name),
                Precondition::Version(c.version),
            )
            .await?;
        let key = (r.account.clone(), r.function.clone());
        let mut all = self.aliases_write();
        if let Some(m) = all.get_mut(&key) {
            m.remove(&r.name);
            if m.is_empty() {
                all.remove(&key);
            }
        }
        Ok(())
    }

    /// Deletes every alias and version of a function (before its record);
    /// returns the deleted versions.
    pub async fn remove_function(
        &self,
        account: &AccountId,
        name: &str,
    ) -> Result<Vec<Cached>, RegistryError> {
        for a in self.aliases_of(account, name) {
            self.delete_alias(&a).await?;
        }
        let versions = self.versions_of(account, name);
        for v in &versions {
            self.delete_version(v).await?;
        }
        Ok(versions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alias(additional: &[(&str, f64)]) -> AliasRecord {
        AliasRecord {
            account: AccountId::default_local(),
            region: "us-east-1".into(),
            function: "f".into(),
            name: "live".into(),
            function_version: "1".into(),
            description: String::new(),
            revision_id: "r".into(),
            additional: additional
                .iter()
                .map(|(v, w)| ((*v).to_owned(), *w))
                .collect(),
        }
    }

    #[tokio::test]
    async fn versions_and_aliases_of_a_missing_function_are_removed_at_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn MetaStore> = Arc::new(
            stratus_store_embedded::EmbeddedMetaStore::open(dir.path().join("meta.redb"))
                .expect("meta"),
        );
        let a = alias(&[]);
        let value = serde_json::to_vec(&a).expect("json");
        let k = alias_key(&a.account, "f", "live");
        store
            .put(&k, Bytes::from(value), Precondition::Absent)
            .await
            .expect("put");
        let functions = Registry::load(Arc::clone(&store)).await.expect("registry");
        let published = Published::load(Arc::clone(&store), &functions)
            .await
            .expect("published");
        assert!(published.aliases_of(&a.account, "f").is_empty());
        assert!(store.get(&k).await.expect("get").is_none(), "removed");
    }

    #[test]
    fn routing_follows_the_weight() {
        let a = alias(&[("2", 0.3)]);
        assert_eq!(a.route(0.0), "2");
        assert_eq!(a.route(0.299), "2");
        assert_eq!(a.route(0.3), "1");
        assert_eq!(a.route(0.99), "1");
        assert_eq!(alias(&[]).route(0.0), "1");
        assert_eq!(alias(&[("2", 0.0)]).route(0.0), "1", "weight 0: never");
        assert_eq!(alias(&[("2", 1.0)]).route(0.999), "2", "weight 1: always");
        assert!(a.uses("1") && a.uses("2") && !a.uses("3"));
        assert_eq!(
            a.arn(),
            "arn:aws:lambda:us-east-1:000000000000:function:f:live"
        );
        let doc = serde_json::to_value(alias(&[]).configuration()).expect("json");
        assert!(doc.get("RoutingConfig").is_none());
        let doc = serde_json::to_value(a.configuration()).expect("json");
        assert_eq!(doc["RoutingConfig"]["AdditionalVersionWeights"]["2"], 0.3);
    }
}
