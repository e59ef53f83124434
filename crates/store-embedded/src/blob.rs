//! [`FileBlobStore`]: code blobs as content-addressed files.
//!
//! Layout: `<dir>/<first two hex digits>/<hex sha256>.zip`. A put writes a
//! temporary file in the same shard directory, fsyncs it, renames it into
//! place and fsyncs the directory, so a blob is either wholly present or
//! absent; writing a blob that is already there is a no-op. Temporary files
//! start with `.tmp` and are never listed.

use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use stratus_store::{BlobError, BlobStore};

const EXTENSION: &str = ".zip";

/// Why [`FileBlobStore::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobOpenError {
    #[error("cannot create blob directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Content-addressed code blobs in a local directory.
#[derive(Debug, Clone)]
pub struct FileBlobStore {
    dir: PathBuf,
}

impl FileBlobStore {
    /// Opens (creating if needed) the blob directory `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, BlobOpenError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|source| BlobOpenError::CreateDir {
            path: dir.clone(),
            source,
        })?;
        let swept = sweep_temps(&dir);
        if swept > 0 {
            tracing::info!(swept, dir = %dir.display(), "removed unfinished code uploads of a previous server process");
        }
        Ok(Self { dir })
    }

    /// The directory holding the blobs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the blob `digest` lives, or `None` if `digest` is not a
    /// lowercase hex SHA-256 (so no caller string ever becomes a path).
    fn path_of(&self, digest: &str) -> Option<PathBuf> {
        if !is_digest(digest) {
            return None;
        }
        let shard = digest.get(..2)?;
        Some(self.dir.join(shard).join(format!("{digest}{EXTENSION}")))
    }
}

/// Removes the temporary files of puts a crashed process never finished
/// (`<shard>/.tmp-*`). Only for `open` at start-up: the directory belongs to
/// one server, which has no put in flight yet.
fn sweep_temps(dir: &Path) -> usize {
    let Ok(shards) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for shard in shards.flatten() {
        let Ok(files) = std::fs::read_dir(shard.path()) else {
            continue;
        };
        for file in files.flatten() {
            if file.file_name().to_string_lossy().starts_with(".tmp-")
                && std::fs::remove_file(file.path()).is_ok()
            {
                removed += 1;
            }
        }
    }
    removed
}

fn is_digest(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn backend(op: &'static str, digest: &str, message: impl std::fmt::Display) -> BlobError {
    BlobError::Backend {
        op,
        digest: digest.to_owned(),
        message: message.to_string(),
    }
}

fn not_found(digest: &str) -> BlobError {
    BlobError::NotFound {
        digest: digest.to_owned(),
    }
}

/// Writes `data` to `path` atomically and durably (see the module docs).
fn put_blocking(path: &Path, digest: &str, data: &[u8]) -> Result<(), BlobError> {
    if path.exists() {
        return Ok(());
    }
    let shard = path
        .parent()
        .ok_or_else(|| backend("put", digest, "blob path has no parent"))?;
    std::fs::create_dir_all(shard)
        .map_err(|e| backend("put", digest, format!("create {}: {e}", shard.display())))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(shard)
        .map_err(|e| {
            backend(
                "put",
                digest,
                format!("temp file in {}: {e}", shard.display()),
            )
        })?;
    tmp.write_all(data)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| {
            backend(
                "put",
                digest,
                format!("write {}: {e}", tmp.path().display()),
            )
        })?;
    tmp.persist(path).map_err(|e| {
        backend(
            "put",
            digest,
            format!("rename to {}: {}", path.display(), e.error),
        )
    })?;
    // Make the rename itself durable.
    std::fs::File::open(shard)
        .and_then(|d| d.sync_all())
        .map_err(|e| backend("put", digest, format!("sync {}: {e}", shard.display())))?;
    Ok(())
}

fn list_blocking(dir: &Path) -> Result<Vec<String>, BlobError> {
    let err = |p: &Path, e: std::io::Error| backend("list", "", format!("{}: {e}", p.display()));
    let mut out = Vec::new();
    for shard in std::fs::read_dir(dir).map_err(|e| err(dir, e))? {
        let shard = shard.map_err(|e| err(dir, e))?;
        let shard_name = shard.file_name();
        let Some(shard_name) = shard_name.to_str() else {
            continue;
        };
        if shard_name.len() != 2 || !shard.file_type().map_err(|e| err(dir, e))?.is_dir() {
            continue;
        }
        let shard_path = shard.path();
        for file in std::fs::read_dir(&shard_path).map_err(|e| err(&shard_path, e))? {
            let file = file.map_err(|e| err(&shard_path, e))?;
            let name = file.file_name();
            let Some(digest) = name.to_str().and_then(|n| n.strip_suffix(EXTENSION)) else {
                continue;
            };
            if is_digest(digest) && digest.starts_with(shard_name) {
                out.push(digest.to_owned());
            }
        }
    }
    out.sort();
    Ok(out)
}

#[async_trait]
impl BlobStore for FileBlobStore {
    async fn put(&self, data: Bytes) -> Result<String, BlobError> {
        let hashed = data.clone();
        let digest = tokio::task::spawn_blocking(move || hex::encode(Sha256::digest(&hashed)))
            .await
            .map_err(|e| backend("put", "", format!("hash task failed: {e}")))?;
        self.put_hashed(&digest, data).await?;
        Ok(digest)
    }

    /// Trusts `digest` (it must be one): the caller hashed these bytes in
    /// this process.
    async fn put_hashed(&self, digest: &str, data: Bytes) -> Result<(), BlobError> {
        let path = self
            .path_of(digest)
            .ok_or_else(|| backend("put", digest, "not a hex SHA-256 digest"))?;
        let digest = digest.to_owned();
        tokio::task::spawn_blocking(move || put_blocking(&path, &digest, &data))
            .await
            .map_err(|e| backend("put", "", format!("write task failed: {e}")))?
    }

    async fn get(&self, digest: &str) -> Result<Bytes, BlobError> {
        let path = self.path_of(digest).ok_or_else(|| not_found(digest))?;
        match tokio::fs::read(&path).await {
            Ok(data) => Ok(Bytes::from(data)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(not_found(digest)),
            Err(e) => Err(backend("get", digest, format!("{}: {e}", path.display()))),
        }
    }

    async fn local_path(&self, digest: &str) -> Result<Option<PathBuf>, BlobError> {
        let path = self.path_of(digest).ok_or_else(|| not_found(digest))?;
        match tokio::fs::try_exists(&path).await {
            Ok(true) => Ok(Some(path)),
            Ok(false) => Err(not_found(digest)),
            Err(e) => Err(backend(
                "local_path",
                digest,
                format!("{}: {e}", path.display()),
            )),
        }
    }

    async fn delete(&self, digest: &str) -> Result<(), BlobError> {
        // A string that is not a digest names no blob: nothing to delete.
        let Some(path) = self.path_of(digest) else {
            return Ok(());
        };
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(backend(
                "delete",
                digest,
                format!("{}: {e}", path.display()),
            )),
        }
    }

    async fn list(&self) -> Result<Vec<String>, BlobError> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || list_blocking(&dir))
            .await
            .map_err(|e| backend("list", "", format!("list task failed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conformance() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FileBlobStore::open(dir.path().join("blobs")).expect("open");
        stratus_store::conformance::run_blob_store_suite(&store).await;
        // Running it again on the same directory must also pass.
        stratus_store::conformance::run_blob_store_suite(&store).await;
    }

    #[tokio::test]
    async fn layout_and_persistence() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("blobs");
        let digest = {
            let store = FileBlobStore::open(&root).expect("open");
            store
                .put(Bytes::from_static(b"zip bytes"))
                .await
                .expect("put")
        };
        let expected = root.join(&digest[..2]).join(format!("{digest}.zip"));
        assert_eq!(std::fs::read(&expected).expect("blob file"), b"zip bytes");

        let store = FileBlobStore::open(&root).expect("reopen");
        assert_eq!(store.list().await.expect("list"), vec![digest.clone()]);
        assert_eq!(
            store.local_path(&digest).await.expect("local_path"),
            Some(expected)
        );
        assert_eq!(
            store.get(&digest).await.expect("get"),
            Bytes::from_static(b"zip bytes")
        );
    }

    #[tokio::test]
    async fn list_ignores_strays() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FileBlobStore::open(dir.path()).expect("open");
        let digest = store.put(Bytes::from_static(b"x")).await.expect("put");
        let shard = dir.path().join(&digest[..2]);
        std::fs::write(shard.join(".tmp-abandoned"), b"half").expect("stray temp");
        std::fs::write(shard.join("notes.txt"), b"?").expect("stray file");
        std::fs::write(dir.path().join("README"), b"?").expect("stray top file");
        std::fs::create_dir(dir.path().join("zz")).expect("stray shard");
        assert_eq!(store.list().await.expect("list"), vec![digest.clone()]);
        // The next start removes the unfinished upload, and only that.
        drop(FileBlobStore::open(dir.path()).expect("reopen"));
        assert!(!shard.join(".tmp-abandoned").exists());
        assert!(shard.join("notes.txt").exists());
        assert_eq!(store.list().await.expect("list"), vec![digest]);
    }

    #[tokio::test]
    async fn malformed_digests_never_become_paths() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FileBlobStore::open(dir.path().join("blobs")).expect("open");
        std::fs::write(dir.path().join("secret.zip"), b"s").expect("write");
        for bad in ["../secret", "..", "/etc/passwd", "AB"] {
            assert!(matches!(
                store.get(bad).await,
                Err(BlobError::NotFound { .. })
            ));
            assert!(store.local_path(bad).await.is_err());
            store
                .delete(bad)
                .await
                .expect("delete of a non-digest is a no-op");
        }
        assert!(dir.path().join("secret.zip").exists());
    }
}
