//! Code cache: each code digest unpacked once, then shared read-only.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use stratus_api::LambdaError;
use stratus_store::BlobStore;
use stratus_types::limits::UNZIPPED_MAX_BYTES;
use tokio::sync::{Mutex, OnceCell};

/// The message Lambda gives for any archive it cannot unpack.
pub const UNZIP_FAILED: &str =
    "Could not unzip uploaded file. Please check your file, then try to upload again.";

#[derive(Debug)]
pub struct CodeCache {
    dir: PathBuf,
    blobs: Arc<dyn BlobStore>,
    /// One cell per digest being (or already) unpacked, so concurrent cold
    /// starts of the same code unpack it once.
    cells: Mutex<HashMap<String, Arc<OnceCell<PathBuf>>>>,
}

impl CodeCache {
    /// A cache in `dir`, which belongs to this server alone: unpacks a
    /// crashed server left unfinished (`<digest>.tmp-*`, see
    /// `stratus_code::extract_zip`) are removed here.
    pub fn new(dir: PathBuf, blobs: Arc<dyn BlobStore>) -> Self {
        let swept = remove_entries(&dir, "an unfinished code unpack", |name| {
            name.contains(".tmp-")
        });
        if swept > 0 {
            tracing::info!(swept, dir = %dir.display(), "removed unfinished code unpacks of a previous server process");
        }
        CodeCache {
            dir,
            blobs,
            cells: Mutex::new(HashMap::new()),
        }
    }

    /// Removes unpacked code whose digest is not in `keep`, staged zips and
    /// half-unpacked leftovers (`<digest>.tmp-*`). Call it before any
    /// sandbox starts: a sandbox mounts its code directory. Returns how many
    /// entries were removed.
    pub fn remove_unused(&self, keep: &BTreeSet<String>) -> usize {
        remove_entries(&self.dir, "unused code", |name| !keep.contains(name))
    }

    /// Returns the directory holding the unpacked code of `digest`.
    pub async fn prepare(&self, digest: &str) -> Result<PathBuf, LambdaError> {
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(LambdaError::service(format!(
                "invalid code digest {digest:?}"
            )));
        }
        let dest = self.dir.join(digest);
        let cell = {
            let mut cells = self.cells.lock().await;
            Arc::clone(cells.entry(digest.to_owned()).or_default())
        };
        let path = cell
            .get_or_try_init(|| async {
                if dest.is_dir() {
                    return Ok(dest.clone());
                }
                let zip = match self.blobs.local_path(digest).await {
                    Ok(Some(p)) => p,
                    Ok(None) => {
                        // The backend keeps no local file: stage a copy.
                        let bytes = self.blobs.get(digest).await.map_err(|e| {
                            LambdaError::service(format!("reading code {digest}: {e}"))
                        })?;
                        let staged = self.dir.join(format!("{digest}.zip"));
                        tokio::fs::write(&staged, &bytes).await.map_err(|e| {
                            LambdaError::service(format!("staging code {digest}: {e}"))
                        })?;
                        staged
                    }
                    Err(e) => {
                        return Err(LambdaError::service(format!("locating code {digest}: {e}")));
                    }
                };
                let dest2 = dest.clone();
                tokio::task::spawn_blocking(move || {
                    stratus_code::extract_zip(&zip, &dest2, UNZIPPED_MAX_BYTES)
                })
                .await
                .map_err(|e| LambdaError::service(format!("unpacking code {digest}: {e}")))?
                .map_err(|e| {
                    tracing::info!(digest, error = %e, "refusing code archive");
                    LambdaError::invalid(UNZIP_FAILED)
                })?;
                Ok(dest.clone())
            })
            .await?;
        Ok(path.clone())
    }
}

/// Removes the entries of `dir` (files or whole directories) whose name
/// `doomed` picks; returns how many went.
fn remove_entries(dir: &Path, what: &str, doomed: impl Fn(&str) -> bool) -> usize {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if !doomed(&entry.file_name().to_string_lossy()) {
            continue;
        }
        let path = entry.path();
        let result = if entry.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match result {
            Ok(()) => removed += 1,
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "could not remove {what}"),
        }
    }
    removed
}
