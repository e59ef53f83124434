//! Code cache: each code digest unpacked once, then shared read-only.
//!
//! A sandbox bind-mounts its code directory at `/var/task`. A bind mount
//! shares the directory's files, it does not copy them: removing them on the
//! host removes them in every sandbox that mounts them. So every user of a
//! directory (a sandbox, an unpack in progress) holds a [`CodeLease`], and
//! [`CodeCache::remove`] of a digest still leased only marks it: the
//! directory goes when the last lease is dropped.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use stratus_api::LambdaError;
use stratus_store::BlobStore;
use stratus_types::limits::UNZIPPED_MAX_BYTES;
use tokio::sync::OnceCell;

/// The message Lambda gives for any archive it cannot unpack.
pub const UNZIP_FAILED: &str =
    "Could not unzip uploaded file. Please check your file, then try to upload again.";

#[derive(Debug)]
pub struct CodeCache {
    shared: Arc<Shared>,
    blobs: Arc<dyn BlobStore>,
}

/// What a [`CodeLease`] needs to give its directory back.
#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    entries: std::sync::Mutex<HashMap<String, Entry>>,
    /// Names directories moved aside for removal uniquely.
    seq: AtomicU64,
}

/// One digest being (or already) unpacked, and who uses it.
#[derive(Debug, Default)]
struct Entry {
    /// Concurrent cold starts of the same code unpack it once.
    cell: Arc<OnceCell<PathBuf>>,
    /// Leases alive.
    users: usize,
    /// [`CodeCache::remove`] was asked while leased: remove at the last drop.
    doomed: bool,
}

/// The unpacked code of one digest, kept on disk while this lives.
#[derive(Debug)]
pub struct CodeLease {
    digest: String,
    path: PathBuf,
    shared: Arc<Shared>,
}

impl CodeLease {
    /// The directory holding the unpacked code.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for CodeLease {
    fn drop(&mut self) {
        let aside = {
            let mut entries = self.shared.lock();
            let Some(e) = entries.get_mut(&self.digest) else {
                return;
            };
            e.users = e.users.saturating_sub(1);
            if e.users > 0 || !e.doomed {
                return;
            }
            entries.remove(&self.digest);
            self.shared.move_aside(&self.digest)
        };
        delete_soon(aside);
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Renames `<digest>` (and a staged `<digest>.zip`) to `.tmp-` names,
    /// which a restart sweeps if the removal does not finish; returns them.
    /// Called with the entries locked, so a new unpack of the digest starts
    /// from an empty place.
    fn move_aside(&self, digest: &str) -> Vec<PathBuf> {
        let mut aside = Vec::new();
        for name in [digest.to_owned(), format!("{digest}.zip")] {
            let from = self.dir.join(&name);
            let n = self.seq.fetch_add(1, Ordering::Relaxed);
            let to = self.dir.join(format!("{name}.tmp-removed-{n}"));
            match std::fs::rename(&from, &to) {
                Ok(()) => aside.push(to),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %from.display(), error = %e, "could not remove unused code");
                }
            }
        }
        aside
    }
}

/// Deletes `paths` off the async threads when there are some (a large
/// unpacked tree takes a while), else at once.
fn delete_soon(paths: Vec<PathBuf>) {
    if paths.is_empty() {
        return;
    }
    let work = move || {
        for p in paths {
            let result = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            if let Err(e) = result {
                tracing::warn!(path = %p.display(), error = %e, "could not remove unused code");
            }
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => drop(rt.spawn_blocking(work)),
        Err(_) => work(),
    }
}

impl CodeCache {
    /// A cache in `dir`, which belongs to this server alone: unpacks a
    /// crashed server left unfinished (`<digest>.tmp-*`, see
    /// `stratus_code::extract_zip`, and removals moved aside) are removed here.
    pub fn new(dir: PathBuf, blobs: Arc<dyn BlobStore>) -> Self {
        let swept = remove_entries(&dir, "an unfinished code unpack", |name| {
            name.contains(".tmp-")
        });
        if swept > 0 {
            tracing::info!(swept, dir = %dir.display(), "removed unfinished code unpacks of a previous server process");
        }
        CodeCache {
            shared: Arc::new(Shared {
                dir,
                entries: std::sync::Mutex::new(HashMap::new()),
                seq: AtomicU64::new(0),
            }),
            blobs,
        }
    }

    /// Removes unpacked code whose digest is not in `keep`, staged zips and
    /// half-unpacked leftovers (`<digest>.tmp-*`). Call it before any
    /// sandbox starts: it does not look at leases. Returns how many
    /// entries were removed.
    pub fn remove_unused(&self, keep: &BTreeSet<String>) -> usize {
        remove_entries(&self.shared.dir, "unused code", |name| !keep.contains(name))
    }

    /// Removes the unpacked code of `digest` (no function uses it any
    /// more): now if nothing holds a lease on it, else when the last lease
    /// is dropped. A later [`CodeCache::prepare`] unpacks it again.
    pub fn remove(&self, digest: &str) {
        let aside = {
            let mut entries = self.shared.lock();
            if let Some(e) = entries.get_mut(digest)
                && e.users > 0
            {
                e.doomed = true;
                return;
            }
            entries.remove(digest);
            self.shared.move_aside(digest)
        };
        delete_soon(aside);
    }

    /// Unpacks `digest` if needed and leases its directory: it stays until
    /// the lease is dropped, even if [`CodeCache::remove`] is called.
    pub async fn prepare(&self, digest: &str) -> Result<CodeLease, LambdaError> {
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(LambdaError::service(format!(
                "invalid code digest {digest:?}"
            )));
        }
        let dir = &self.shared.dir;
        let dest = dir.join(digest);
        let cell = {
            let mut entries = self.shared.lock();
            let e = entries.entry(digest.to_owned()).or_default();
            e.users += 1;
            Arc::clone(&e.cell)
        };
        // Taken before the unpack: a failed or cancelled one gives it back.
        let lease = CodeLease {
            digest: digest.to_owned(),
            path: dest.clone(),
            shared: Arc::clone(&self.shared),
        };
        cell.get_or_try_init(|| async {
            if dest.is_dir() {
                return Ok(dest.clone());
            }
            let zip = match self.blobs.local_path(digest).await {
                Ok(Some(p)) => p,
                Ok(None) => {
                    // The backend keeps no local file: stage a copy.
                    let bytes =
                        self.blobs.get(digest).await.map_err(|e| {
                            LambdaError::service(format!("reading code {digest}: {e}"))
                        })?;
                    let staged = dir.join(format!("{digest}.zip"));
                    tokio::fs::write(&staged, &bytes)
                        .await
                        .map_err(|e| LambdaError::service(format!("staging code {digest}: {e}")))?;
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
        Ok(lease)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits (up to 5 s) until `path` is gone: removal runs off the async
    /// threads.
    async fn gone(path: &Path) -> bool {
        for _ in 0..500 {
            if !path.exists() {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        false
    }

    #[tokio::test]
    async fn removed_code_stays_while_leased_and_goes_with_the_last_lease() {
        let dir = tempfile::tempdir().expect("dir");
        let src = dir.path().join("src");
        std::fs::create_dir(&src).expect("src");
        std::fs::write(src.join("app.py"), "x = 1\n").expect("write");
        let zip = stratus_code::zip_directory(&src).expect("zip");
        let blobs =
            stratus_store_embedded::FileBlobStore::open(dir.path().join("blobs")).expect("blobs");
        let blobs: Arc<dyn BlobStore> = Arc::new(blobs);
        let digest = blobs.put(zip.into()).await.expect("put");
        let code = dir.path().join("code");
        std::fs::create_dir(&code).expect("code dir");
        let cache = CodeCache::new(code.clone(), blobs);

        let a = cache.prepare(&digest).await.expect("unpacked");
        let b = cache.prepare(&digest).await.expect("unpacked once");
        assert_eq!(a.path(), b.path());
        let app = a.path().join("app.py");
        assert!(app.is_file());
        cache.remove(&digest);
        assert!(app.is_file(), "two sandboxes still run it");
        drop(a);
        assert!(app.is_file(), "one sandbox still runs it");
        drop(b);
        assert!(gone(&code.join(&digest)).await, "gone with the last lease");
        for _ in 0..500 {
            if std::fs::read_dir(&code).expect("list").next().is_none() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(
            std::fs::read_dir(&code).expect("list").count(),
            0,
            "nothing moved aside is left"
        );

        // Asked for again (the archive is still there): unpacked again.
        let c = cache.prepare(&digest).await.expect("unpacked again");
        assert!(c.path().join("app.py").is_file());
        drop(c);
        assert!(
            code.join(&digest).join("app.py").is_file(),
            "not removed unless asked"
        );
        cache.remove(&digest);
        assert!(gone(&code.join(&digest)).await, "unleased: removed at once");
    }
}
