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

/// A sandbox's `/opt`: its layers, unpacked (each a [`CodeLease`]) and, when
/// there are several, merged into one directory of its own, removed when
/// this is dropped.
#[derive(Debug)]
pub struct OptLease {
    path: PathBuf,
    merged: bool,
    _layers: Vec<CodeLease>,
}

impl OptLease {
    /// The directory to mount at `/opt`.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for OptLease {
    fn drop(&mut self) {
        if self.merged {
            delete_soon(vec![self.path.clone()]);
        }
    }
}

impl CodeCache {
    /// Unpacks the layers `digests` (in order) and leases them as one
    /// directory for `/opt`: the layer's own directory when there is one,
    /// else a merge of them where a later layer's files replace an earlier
    /// one's (hard links to the unpacked files, so no content is copied).
    /// `None` without layers.
    pub async fn prepare_opt(&self, digests: &[String]) -> Result<Option<OptLease>, LambdaError> {
        let mut layers = Vec::with_capacity(digests.len());
        for d in digests {
            layers.push(self.prepare(d).await?);
        }
        match layers.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(OptLease {
                path: one.path().to_owned(),
                merged: false,
                _layers: layers,
            })),
            many => {
                // `.tmp-` in the name: a restart sweeps what a crash left.
                let n = self.shared.seq.fetch_add(1, Ordering::Relaxed);
                let dest = self.shared.dir.join(format!(
                    "opt-{}.tmp-merged-{n}",
                    uuid::Uuid::new_v4().simple()
                ));
                let sources: Vec<PathBuf> = many.iter().map(|l| l.path().to_owned()).collect();
                let dest2 = dest.clone();
                let merged = tokio::task::spawn_blocking(move || merge_layers(&sources, &dest2))
                    .await
                    .map_err(|e| LambdaError::service(format!("merging layers: {e}")));
                let lease = OptLease {
                    path: dest,
                    merged: true,
                    _layers: layers,
                };
                merged?.map_err(|e| {
                    LambdaError::service(format!(
                        "merging layers into {}: {e}",
                        lease.path.display()
                    ))
                })?;
                Ok(Some(lease))
            }
        }
    }
}

/// Builds `dest` from the unpacked trees `sources`, in order, a later
/// tree's entries replacing an earlier one's. Never writes through a
/// symlink: an entry in the way (a file or link where a directory must go,
/// or the reverse) is removed first, so every directory written into is
/// one this function made.
fn merge_layers(sources: &[PathBuf], dest: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir(dest)?;
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o755))?;
    for src in sources {
        merge_dir(src, dest)?;
    }
    Ok(())
}

fn merge_dir(src: &Path, dest: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let to = dest.join(entry.file_name());
        let existing = std::fs::symlink_metadata(&to).ok();
        if kind.is_dir() {
            match existing {
                Some(m) if m.is_dir() => {}
                Some(_) => {
                    std::fs::remove_file(&to)?;
                    std::fs::create_dir(&to)?;
                }
                None => std::fs::create_dir(&to)?,
            }
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755))?;
            merge_dir(&entry.path(), &to)?;
            continue;
        }
        match existing {
            Some(m) if m.is_dir() => std::fs::remove_dir_all(&to)?,
            Some(_) => std::fs::remove_file(&to)?,
            None => {}
        }
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &to)?;
        } else if std::fs::hard_link(entry.path(), &to).is_err() {
            std::fs::copy(entry.path(), &to)?;
        }
    }
    Ok(())
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

    #[test]
    fn layers_merge_in_order_without_following_links() {
        let dir = tempfile::tempdir().expect("dir");
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::create_dir_all(a.join("python/pkg")).expect("a");
        std::fs::create_dir_all(b.join("python")).expect("b");
        std::fs::write(a.join("python/shared.py"), "A").expect("write");
        std::fs::write(a.join("python/pkg/x.py"), "x").expect("write");
        std::fs::write(a.join("bin"), "a file where b has a directory").expect("write");
        std::os::unix::fs::symlink("/etc", a.join("python/link")).expect("link");
        std::fs::write(b.join("python/shared.py"), "B").expect("write");
        std::fs::create_dir_all(b.join("bin")).expect("bin");
        std::fs::write(b.join("bin/tool"), "t").expect("write");
        // b puts a directory where a had a symlink: the link is replaced,
        // never written through.
        std::fs::create_dir_all(b.join("python/link")).expect("dir");
        std::fs::write(b.join("python/link/inside"), "i").expect("write");
        let dest = dir.path().join("opt");
        merge_layers(&[a, b], &dest).expect("merged");
        let read = |p: &str| std::fs::read_to_string(dest.join(p)).expect(p);
        assert_eq!(read("python/shared.py"), "B", "the later layer wins");
        assert_eq!(read("python/pkg/x.py"), "x");
        assert_eq!(read("bin/tool"), "t");
        assert_eq!(read("python/link/inside"), "i");
        assert!(
            !std::path::Path::new("/etc/inside").exists(),
            "nothing was written through the link"
        );
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
