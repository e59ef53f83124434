//! The state store interface: durable metadata (a key-value space with
//! compare-and-swap) and content-addressed code blobs.
//!
//! This crate owns the contract every backend must meet and the conformance
//! suite that proves it ([`conformance`]); it knows nothing about Lambda
//! records (callers serialise their own values) and does no I/O itself.
//! Backends: `stratus-store-embedded` (redb + files, one machine). A cluster
//! backend (etcd for metadata, a blob service for code) implements the same
//! traits; see `docs/design/cluster.md`.
//!
//! Every value carries a `version` (a store-wide, monotonically increasing
//! revision, as etcd's `mod_revision`), so writers can say "only if nobody
//! changed this since I read it" ([`Precondition::Version`]).

use std::path::PathBuf;

use async_trait::async_trait;
use bytes::Bytes;

pub mod conformance;

/// A value read from the store, with the revision at which it was last written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub value: Bytes,
    pub version: u64,
}

/// A condition a write must meet to be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Write unconditionally.
    None,
    /// The key must not exist (create).
    Absent,
    /// The key must exist with exactly this version (update after read).
    Version(u64),
}

/// Errors of the metadata store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A precondition did not hold; the caller should re-read and decide again.
    #[error("precondition failed for key {key}")]
    Conflict { key: String },
    /// The backend failed; retrying may help.
    #[error("store backend failed on {op} {key}: {message}")]
    Backend {
        op: &'static str,
        key: String,
        message: String,
    },
}

/// Durable metadata: a sorted key-value space with compare-and-swap.
#[async_trait]
pub trait MetaStore: Send + Sync + std::fmt::Debug {
    /// Reads one key.
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError>;

    /// Writes one key if `pre` holds; returns the new version.
    async fn put(&self, key: &str, value: Bytes, pre: Precondition) -> Result<u64, StoreError>;

    /// Deletes one key if `pre` holds; returns whether it existed.
    async fn delete(&self, key: &str, pre: Precondition) -> Result<bool, StoreError>;

    /// Lists keys starting with `prefix`, in key order, strictly after `after`
    /// (if given), at most `limit` of them.
    async fn scan(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Versioned)>, StoreError>;
}

/// Errors of the blob store.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob {digest} not found")]
    NotFound { digest: String },
    #[error("blob store failed on {op} {digest}: {message}")]
    Backend {
        op: &'static str,
        digest: String,
        message: String,
    },
}

/// Content-addressed storage of code archives (zips), keyed by the hex
/// SHA-256 of their bytes. Writes are idempotent and atomic: a blob is either
/// wholly present or absent, never torn.
#[async_trait]
pub trait BlobStore: Send + Sync + std::fmt::Debug {
    /// Stores `data`; returns its hex SHA-256 digest.
    async fn put(&self, data: Bytes) -> Result<String, BlobError>;

    /// Stores `data` whose hex SHA-256 the caller has computed (`digest`),
    /// so a store that can trust it need not hash the bytes again (the
    /// front end hashes every upload to name it). The default hashes them
    /// anyway ([`BlobStore::put`]) and refuses a different digest (the
    /// bytes then stay stored under their own, for code GC to collect).
    async fn put_hashed(&self, digest: &str, data: Bytes) -> Result<(), BlobError> {
        let stored = self.put(data).await?;
        if stored == digest {
            Ok(())
        } else {
            Err(BlobError::Backend {
                op: "put",
                digest: digest.to_owned(),
                message: format!("the data's SHA-256 is {stored}"),
            })
        }
    }

    /// Reads a blob.
    async fn get(&self, digest: &str) -> Result<Bytes, BlobError>;

    /// A local file holding the blob, if the backend keeps one (lets the
    /// worker unzip without a copy).
    async fn local_path(&self, digest: &str) -> Result<Option<PathBuf>, BlobError>;

    /// Removes a blob; removing a missing blob is not an error.
    async fn delete(&self, digest: &str) -> Result<(), BlobError>;

    /// Lists the digests of every stored blob (for garbage collection).
    async fn list(&self) -> Result<Vec<String>, BlobError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// A store with only the required methods: `put_hashed` is the default.
    #[derive(Debug, Default)]
    struct Memory(Mutex<HashMap<String, Bytes>>);

    #[async_trait]
    impl BlobStore for Memory {
        async fn put(&self, data: Bytes) -> Result<String, BlobError> {
            let digest = hex::encode(Sha256::digest(&data));
            self.0.lock().expect("lock").insert(digest.clone(), data);
            Ok(digest)
        }
        async fn get(&self, digest: &str) -> Result<Bytes, BlobError> {
            self.0
                .lock()
                .expect("lock")
                .get(digest)
                .cloned()
                .ok_or_else(|| BlobError::NotFound {
                    digest: digest.to_owned(),
                })
        }
        async fn local_path(&self, _: &str) -> Result<Option<PathBuf>, BlobError> {
            Ok(None)
        }
        async fn delete(&self, digest: &str) -> Result<(), BlobError> {
            self.0.lock().expect("lock").remove(digest);
            Ok(())
        }
        async fn list(&self) -> Result<Vec<String>, BlobError> {
            Ok(self.0.lock().expect("lock").keys().cloned().collect())
        }
    }

    #[tokio::test]
    async fn the_default_put_hashed_passes_the_conformance_suite() {
        crate::conformance::run_blob_store_suite(&Memory::default()).await;
    }

    #[tokio::test]
    async fn the_default_put_hashed_refuses_a_digest_of_other_bytes() {
        let store = Memory::default();
        let other = hex::encode(Sha256::digest(b"other bytes"));
        let e = store
            .put_hashed(&other, Bytes::from_static(b"these bytes"))
            .await
            .expect_err("a wrong digest");
        assert!(e.to_string().contains(&other), "{e}");
        assert!(
            store.get(&other).await.is_err(),
            "nothing under the wrong name"
        );
    }
}
