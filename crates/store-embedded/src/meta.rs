//! [`EmbeddedMetaStore`]: the metadata store in one redb file.
//!
//! Layout: table `kv` maps each key to `(version, value)`; table `meta` holds
//! `format_version` (written on creation, checked on open) and
//! `last_version` (the store-wide revision, bumped by every put and every
//! delete that removes a key). Each write is its own redb write transaction,
//! committed durably before the call returns, so a crash loses nothing that
//! was acknowledged and never shows half a write. redb allows one writer at a
//! time, which is what makes the compare-and-swap race-free.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use redb::{Database, ReadableTable, TableDefinition};
use stratus_store::{MetaStore, Precondition, StoreError, Versioned};

/// The on-disk format this build writes and the newest it can read.
pub const FORMAT_VERSION: u64 = 1;

const KV: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("kv");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const FORMAT_KEY: &str = "format_version";
const LAST_VERSION_KEY: &str = "last_version";

/// Why [`EmbeddedMetaStore::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum MetaOpenError {
    #[error("cannot open metadata database {path}")]
    Database {
        path: PathBuf,
        #[source]
        source: Box<redb::DatabaseError>,
    },
    #[error("cannot initialise metadata database {path}")]
    Init {
        path: PathBuf,
        #[source]
        source: Box<redb::Error>,
    },
    #[error(
        "metadata database {path} has format version {found}, newer than the supported {supported}; upgrade stratus"
    )]
    UnsupportedFormat {
        path: PathBuf,
        found: u64,
        supported: u64,
    },
}

/// The metadata store of a single machine, kept in one redb file.
#[derive(Debug, Clone)]
pub struct EmbeddedMetaStore {
    db: Arc<Database>,
    path: PathBuf,
}

impl EmbeddedMetaStore {
    /// Opens the database at `path`, creating it (and its format marker) if
    /// it does not exist. Blocks on disk I/O: call it at startup, or from
    /// `spawn_blocking`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, MetaOpenError> {
        let path = path.as_ref().to_path_buf();
        let db = Database::create(&path).map_err(|source| MetaOpenError::Database {
            path: path.clone(),
            source: Box::new(source),
        })?;
        let found = init_format(&db).map_err(|source| MetaOpenError::Init {
            path: path.clone(),
            source,
        })?;
        if found > FORMAT_VERSION {
            return Err(MetaOpenError::UnsupportedFormat {
                path,
                found,
                supported: FORMAT_VERSION,
            });
        }
        Ok(Self {
            db: Arc::new(db),
            path,
        })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs a write on the blocking pool: commits fsync, which must not
    /// stall the async runtime.
    async fn write<T, F>(&self, op: &'static str, key: &str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, WriteError> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        let joined = tokio::task::spawn_blocking(move || f(&db)).await;
        match joined {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(WriteError::Conflict)) => Err(StoreError::Conflict {
                key: key.to_owned(),
            }),
            Ok(Err(WriteError::Backend(e))) => Err(backend(op, key, *e)),
            Err(join) => Err(StoreError::Backend {
                op,
                key: key.to_owned(),
                message: format!("write task failed: {join}"),
            }),
        }
    }
}

/// Creates the tables and format marker if missing; returns the format found.
fn init_format(db: &Database) -> Result<u64, Box<redb::Error>> {
    let txn = db.begin_write().map_err(redb::Error::from)?;
    let found = {
        let mut meta = txn.open_table(META).map_err(redb::Error::from)?;
        txn.open_table(KV).map_err(redb::Error::from)?;
        let existing = meta
            .get(FORMAT_KEY)
            .map_err(redb::Error::from)?
            .map(|g| g.value());
        match existing {
            Some(v) => v,
            None => {
                meta.insert(FORMAT_KEY, FORMAT_VERSION)
                    .map_err(redb::Error::from)?;
                FORMAT_VERSION
            }
        }
    };
    if found > FORMAT_VERSION {
        txn.abort().map_err(redb::Error::from)?;
    } else {
        txn.commit().map_err(redb::Error::from)?;
    }
    Ok(found)
}

/// The outcome of a failed write, before the key is attached.
enum WriteError {
    Conflict,
    Backend(Box<redb::Error>),
}

macro_rules! write_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for WriteError {
            fn from(e: $t) -> Self {
                WriteError::Backend(Box::new(e.into()))
            }
        }
    )*};
}
write_error_from!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

fn backend(op: &'static str, key: &str, e: impl Into<redb::Error>) -> StoreError {
    StoreError::Backend {
        op,
        key: key.to_owned(),
        message: e.into().to_string(),
    }
}

fn holds(pre: Precondition, current: Option<u64>) -> bool {
    match (pre, current) {
        (Precondition::None, _) => true,
        (Precondition::Absent, found) => found.is_none(),
        (Precondition::Version(want), Some(have)) => want == have,
        (Precondition::Version(_), None) => false,
    }
}

fn put_blocking(
    db: &Database,
    key: &str,
    value: &[u8],
    pre: Precondition,
) -> Result<u64, WriteError> {
    let txn = db.begin_write()?;
    let version = {
        let mut kv = txn.open_table(KV)?;
        let current = kv.get(key)?.map(|g| g.value().0);
        if !holds(pre, current) {
            return Err(WriteError::Conflict);
        }
        let mut meta = txn.open_table(META)?;
        let last = meta.get(LAST_VERSION_KEY)?.map(|g| g.value()).unwrap_or(0);
        let version = last + 1;
        meta.insert(LAST_VERSION_KEY, version)?;
        kv.insert(key, (version, value))?;
        version
    };
    txn.commit()?;
    Ok(version)
}

fn delete_blocking(db: &Database, key: &str, pre: Precondition) -> Result<bool, WriteError> {
    let txn = db.begin_write()?;
    {
        let mut kv = txn.open_table(KV)?;
        let current = kv.get(key)?.map(|g| g.value().0);
        if !holds(pre, current) {
            return Err(WriteError::Conflict);
        }
        if current.is_none() {
            // Nothing to remove: the dropped transaction aborts.
            return Ok(false);
        }
        let mut meta = txn.open_table(META)?;
        let last = meta.get(LAST_VERSION_KEY)?.map(|g| g.value()).unwrap_or(0);
        meta.insert(LAST_VERSION_KEY, last + 1)?;
        kv.remove(key)?;
    }
    txn.commit()?;
    Ok(true)
}

#[async_trait]
impl MetaStore for EmbeddedMetaStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        // Reads take no lock and do not fsync: cheap enough to run inline.
        let txn = self.db.begin_read().map_err(|e| backend("get", key, e))?;
        let kv = txn.open_table(KV).map_err(|e| backend("get", key, e))?;
        let found = kv.get(key).map_err(|e| backend("get", key, e))?;
        Ok(found.map(|g| {
            let (version, value) = g.value();
            Versioned {
                value: Bytes::copy_from_slice(value),
                version,
            }
        }))
    }

    async fn put(&self, key: &str, value: Bytes, pre: Precondition) -> Result<u64, StoreError> {
        let owned_key = key.to_owned();
        self.write("put", key, move |db| {
            put_blocking(db, &owned_key, &value, pre)
        })
        .await
    }

    async fn delete(&self, key: &str, pre: Precondition) -> Result<bool, StoreError> {
        let owned_key = key.to_owned();
        self.write("delete", key, move |db| {
            delete_blocking(db, &owned_key, pre)
        })
        .await
    }

    async fn scan(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Versioned)>, StoreError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let err = |e: redb::Error| StoreError::Backend {
            op: "scan",
            key: prefix.to_owned(),
            message: e.to_string(),
        };
        let txn = self.db.begin_read().map_err(|e| err(e.into()))?;
        let kv = txn.open_table(KV).map_err(|e| err(e.into()))?;
        let start = match after {
            Some(a) if a >= prefix => a,
            _ => prefix,
        };
        let range = kv.range::<&str>(start..).map_err(|e| err(e.into()))?;
        for entry in range {
            let (k, v) = entry.map_err(|e| err(e.into()))?;
            let k = k.value();
            if !k.starts_with(prefix) {
                break;
            }
            if after == Some(k) {
                continue;
            }
            let (version, value) = v.value();
            out.push((
                k.to_owned(),
                Versioned {
                    value: Bytes::copy_from_slice(value),
                    version,
                },
            ));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_db() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("meta.redb");
        (dir, path)
    }

    #[tokio::test]
    async fn conformance() {
        let (_dir, path) = temp_db();
        let store = EmbeddedMetaStore::open(&path).expect("open");
        stratus_store::conformance::run_meta_store_suite(&store).await;
    }

    #[tokio::test]
    async fn persists_across_reopen() {
        let (_dir, path) = temp_db();
        let (v1, v2) = {
            let store = EmbeddedMetaStore::open(&path).expect("open");
            let v1 = store
                .put("fn/a", Bytes::from_static(b"alpha"), Precondition::Absent)
                .await
                .expect("put a");
            let v2 = store
                .put("fn/b", Bytes::from_static(b"beta"), Precondition::Absent)
                .await
                .expect("put b");
            assert!(
                store
                    .delete("fn/b", Precondition::Version(v2))
                    .await
                    .expect("delete")
            );
            (v1, v2)
        };
        let store = EmbeddedMetaStore::open(&path).expect("reopen");
        assert_eq!(
            store.get("fn/a").await.expect("get"),
            Some(Versioned {
                value: Bytes::from_static(b"alpha"),
                version: v1
            })
        );
        assert_eq!(store.get("fn/b").await.expect("get"), None);
        let v3 = store
            .put("fn/c", Bytes::from_static(b"gamma"), Precondition::None)
            .await
            .expect("put c");
        assert!(
            v3 > v2 + 1,
            "the version counter survives a reopen (delete bumped it too)"
        );
        // The whole contract still holds on a reopened file, twice.
        stratus_store::conformance::run_meta_store_suite(&store).await;
        drop(store);
        let store = EmbeddedMetaStore::open(&path).expect("reopen again");
        stratus_store::conformance::run_meta_store_suite(&store).await;
        assert!(store.get("fn/a").await.expect("get").is_some());
    }

    #[tokio::test]
    async fn rejects_newer_format() {
        let (_dir, path) = temp_db();
        {
            let db = Database::create(&path).expect("create");
            let txn = db.begin_write().expect("txn");
            txn.open_table(META)
                .expect("meta")
                .insert(FORMAT_KEY, FORMAT_VERSION + 1)
                .expect("insert");
            txn.commit().expect("commit");
        }
        match EmbeddedMetaStore::open(&path) {
            Err(MetaOpenError::UnsupportedFormat {
                found, supported, ..
            }) => {
                assert_eq!(found, FORMAT_VERSION + 1);
                assert_eq!(supported, FORMAT_VERSION);
            }
            other => panic!("expected UnsupportedFormat, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn writes_format_marker_on_creation() {
        let (_dir, path) = temp_db();
        drop(EmbeddedMetaStore::open(&path).expect("open"));
        let db = Database::open(&path).expect("raw open");
        let txn = db.begin_read().expect("txn");
        let meta = txn.open_table(META).expect("meta");
        let found = meta.get(FORMAT_KEY).expect("get").map(|g| g.value());
        assert_eq!(found, Some(FORMAT_VERSION));
    }

    #[test]
    fn garbage_file_is_a_clear_error() {
        let (_dir, path) = temp_db();
        std::fs::write(&path, b"this is not a redb file at all").expect("write");
        let err = EmbeddedMetaStore::open(&path).expect_err("garbage must not open");
        assert!(err.to_string().contains("meta.redb"), "{err}");
    }
}
