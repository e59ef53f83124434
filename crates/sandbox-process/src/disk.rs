//! Disk-backed `/tmp` of a fixed size: Lambda's EphemeralStorage.
//!
//! Each sandbox's `/tmp` is its own ext4 filesystem on a loop device: a
//! sparse image file under the state dir, formatted by `mkfs.ext4` and
//! attached by `losetup` (the standard tools; both ship with every Linux
//! distribution). The image is unlinked as soon as it is attached, so the
//! loop device holds the only reference: nothing is left on disk when it is
//! detached. The sandbox init mounts the device inside the sandbox's own
//! mount namespace, so the host's mount table never sees it.
//!
//! Why not a tmpfs: tmpfs pages are memory charged to the sandbox's memory
//! cgroup and never reclaimable without swap, so a function filling `/tmp`
//! would be OOM-killed at its MemorySize. File pages of a disk filesystem
//! are page cache: written back and reclaimed under memory pressure, as on
//! Lambda, where `/tmp` does not count against MemorySize.
//!
//! Formatting and attaching take ~10 ms, so the backend keeps a few disks
//! of the default size ready ([`crate::ProcessBackendConfig::tmp_disk_pool`]).

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What went wrong preparing a disk.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// Creating or sizing the image file failed.
    #[error("creating the image {path}: {source}")]
    Image {
        /// The image file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A tool could not be run or failed.
    #[error("{tool} failed: {message}")]
    Tool {
        /// `mkfs.ext4` or `losetup`.
        tool: &'static str,
        /// Its stderr, or why it could not start.
        message: String,
    },
}

/// An attached, freshly formatted loop device; detached on drop.
#[derive(Debug)]
pub struct TmpDisk {
    device: PathBuf,
}

impl TmpDisk {
    /// Formats a `size_mb` image in `dir` and attaches it to a free loop device.
    pub fn create(dir: &Path, name: &str, size_mb: u64) -> Result<Self, DiskError> {
        let image = dir.join(format!("{name}.img"));
        let file = std::fs::File::create(&image).map_err(|source| DiskError::Image {
            path: image.clone(),
            source,
        })?;
        let sized = file.set_len(size_mb.saturating_mul(1 << 20));
        drop(file);
        let attached = sized
            .map_err(|source| DiskError::Image {
                path: image.clone(),
                source,
            })
            .and_then(|()| {
                // No journal (scratch data dies with the sandbox), no reserved
                // blocks (the function gets all of its EphemeralStorage),
                // inode tables initialised lazily (formatting stays ~5 ms).
                run(
                    "mkfs.ext4",
                    &[
                        "-q",
                        "-F",
                        "-O",
                        "^has_journal",
                        "-E",
                        "nodiscard,lazy_itable_init=1",
                        "-m",
                        "0",
                    ],
                    &image,
                )?;
                let out = run("losetup", &["--find", "--show"], &image)?;
                let device = PathBuf::from(out.trim());
                if !device.starts_with("/dev/") {
                    return Err(DiskError::Tool {
                        tool: "losetup",
                        message: format!("unexpected output {out:?}"),
                    });
                }
                Ok(device)
            });
        // Attached or not, the image's name is no longer needed.
        let _ = std::fs::remove_file(&image);
        Ok(TmpDisk { device: attached? })
    }

    /// The loop device (e.g. `/dev/loop3`).
    pub fn device(&self) -> &Path {
        &self.device
    }
}

impl Drop for TmpDisk {
    fn drop(&mut self) {
        // If a mount still holds the device, the kernel detaches it when
        // that mount goes away (LOOP_CLR_FD on a busy device sets autoclear).
        if let Err(e) = detach(&self.device) {
            tracing::warn!(device = %self.device.display(), error = %e, "could not detach a /tmp loop device");
        }
    }
}

// LOOP_CLR_FD from <linux/loop.h>: `_IO('L', 0x01)` on the loop device.
nix::ioctl_none!(loop_clr_fd, 0x4C, 0x01);

/// Detaches a loop device. One ioctl: dropping a sandbox runs on the
/// server's async threads, where running `losetup -d` (a few ms) would stall
/// other work.
fn detach(device: &Path) -> Result<(), DiskError> {
    let failed = |e: String| DiskError::Tool {
        tool: "LOOP_CLR_FD",
        message: format!("{}: {e}", device.display()),
    };
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .open(device)
        .map_err(|e| failed(e.to_string()))?;
    // SAFETY: `dev` is an open loop device for the whole call; LOOP_CLR_FD
    // takes no argument.
    match unsafe { loop_clr_fd(std::os::fd::AsRawFd::as_raw_fd(&dev)) } {
        // ENXIO: not attached (already detached).
        Ok(_) | Err(nix::errno::Errno::ENXIO) => Ok(()),
        Err(e) => Err(failed(e.to_string())),
    }
}

fn run(tool: &'static str, args: &[&str], path: &Path) -> Result<String, DiskError> {
    let out = Command::new(tool)
        .args(args)
        .arg(path)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| DiskError::Tool {
            tool,
            message: format!("could not run it: {e}"),
        })?;
    if !out.status.success() {
        return Err(DiskError::Tool {
            tool,
            message: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Detaches loop devices left attached to images under `dir` by a previous
/// server process (killed before it could detach them). Returns how many.
///
/// A device is ours when its backing file (as the kernel names it: an
/// absolute path without symlinks) is directly in `dir`; `dir` is resolved
/// the same way first, so a relative or symlinked data dir neither misses
/// its own devices nor matches another directory's. `dir` belongs to one
/// server at a time (`stratus server` locks its data dir first), so every
/// device found is a dead server's.
pub fn sweep_stale(dir: &Path) -> usize {
    let Ok(dir) = std::fs::canonicalize(dir) else {
        return 0;
    };
    let dir = dir.as_path();
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return 0;
    };
    let mut swept = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let Ok(backing) = std::fs::read_to_string(entry.path().join("loop/backing_file")) else {
            continue;
        };
        let file = backing.trim_end().trim_end_matches(" (deleted)");
        if Path::new(file).parent() == Some(dir) && detach(&Path::new("/dev").join(&name)).is_ok() {
            swept += 1;
        }
    }
    swept
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The backing file of the loop device whose sysfs file is `sys`, once it
    /// is no longer an image in `dir` (or after 2 s). If something (a probe)
    /// still had the device open at LOOP_CLR_FD, the kernel detaches it at
    /// that last close instead: allow a moment.
    fn backing_once_detached(sys: &Path, dir: &Path) -> String {
        let dir = dir.display().to_string();
        let mut now = std::fs::read_to_string(sys).unwrap_or_default();
        for _ in 0..100 {
            if !now.contains(&dir) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            now = std::fs::read_to_string(sys).unwrap_or_default();
        }
        now
    }

    #[test]
    fn a_disk_is_attached_formatted_and_detached_without_leftovers() {
        if !nix::unistd::Uid::effective().is_root() || !Path::new("/dev/loop-control").exists() {
            return;
        }
        let dir = tempfile::tempdir().expect("dir");
        let disk = TmpDisk::create(dir.path(), "t", 16).expect("disk");
        let device = disk.device().to_owned();
        // Nothing remains in the directory: the loop device holds the image.
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 0);
        let sys = Path::new("/sys/block")
            .join(device.file_name().expect("name"))
            .join("loop/backing_file");
        let backing = std::fs::read_to_string(&sys).expect("attached");
        assert!(backing.contains("(deleted)"), "{backing}");
        let blkid = Command::new("blkid")
            .args(["-o", "value", "-s", "TYPE"])
            .arg(&device)
            .output()
            .expect("blkid");
        assert_eq!(String::from_utf8_lossy(&blkid.stdout).trim(), "ext4");
        drop(disk);
        // Detached: the device is free, or already reused by someone else
        // (tests run in parallel), but no longer backed by our image.
        let now = backing_once_detached(&sys, dir.path());
        assert!(
            !now.contains(&dir.path().display().to_string()),
            "{} is still attached: {now}",
            device.display()
        );
    }

    #[test]
    fn sweep_detaches_only_devices_of_its_directory() {
        if !nix::unistd::Uid::effective().is_root() || !Path::new("/dev/loop-control").exists() {
            return;
        }
        let ours = tempfile::tempdir().expect("dir");
        let other = tempfile::tempdir().expect("dir");
        let stale = TmpDisk::create(ours.path(), "stale", 8).expect("disk");
        let kept = TmpDisk::create(other.path(), "kept", 8).expect("disk");
        let sys = |d: &TmpDisk| {
            Path::new("/sys/block")
                .join(d.device().file_name().expect("name"))
                .join("loop/backing_file")
        };
        assert_eq!(sweep_stale(ours.path()), 1);
        let ours_path = ours.path().display().to_string();
        let now = backing_once_detached(&sys(&stale), ours.path());
        assert!(!now.contains(&ours_path), "{now}");
        let kept_backing = std::fs::read_to_string(sys(&kept)).unwrap_or_default();
        assert!(
            kept_backing.contains(&other.path().display().to_string()),
            "{kept_backing}"
        );
        // Not dropped: the swept device's number may already be another
        // test's disk, which the drop would detach.
        std::mem::forget(stale);
        drop(kept);
    }

    #[test]
    fn sweep_resolves_a_symlinked_directory() {
        if !nix::unistd::Uid::effective().is_root() || !Path::new("/dev/loop-control").exists() {
            return;
        }
        let ours = tempfile::tempdir().expect("dir");
        let links = tempfile::tempdir().expect("dir");
        let link = links.path().join("disks");
        std::os::unix::fs::symlink(ours.path(), &link).expect("symlink");
        let stale = TmpDisk::create(ours.path(), "stale", 8).expect("disk");
        let sys = Path::new("/sys/block")
            .join(stale.device().file_name().expect("name"))
            .join("loop/backing_file");
        assert_eq!(sweep_stale(&link), 1);
        let now = backing_once_detached(&sys, ours.path());
        assert!(!now.contains(&ours.path().display().to_string()), "{now}");
        std::mem::forget(stale);
    }

    #[test]
    fn a_missing_tool_is_a_clear_error() {
        let err = run("stratus-no-such-tool", &[], Path::new("/x")).expect_err("fails");
        assert!(err.to_string().contains("could not run it"), "{err}");
    }
}

/// Where a backend makes its `/tmp` disks, and a pool of ready ones of
/// Lambda's default size ([`crate::DEFAULT_TMP_MB`]), so a cold start rarely
/// waits for `mkfs`. Shared by every backend that gives sandboxes a disk.
#[derive(Debug)]
pub struct DiskPool {
    /// `None` when this host cannot make disks (or the backend uses none).
    dir: Option<PathBuf>,
    /// How many ready disks to keep.
    target: usize,
    ready: std::sync::Mutex<Vec<TmpDisk>>,
    /// Set while a thread refills `ready`.
    refilling: std::sync::atomic::AtomicBool,
    /// Names pooled disk images uniquely.
    seq: std::sync::atomic::AtomicU64,
}

impl DiskPool {
    /// No disks: `/tmp` is something else (a tmpfs, or an uncapped directory).
    pub fn none() -> DiskPool {
        DiskPool {
            dir: None,
            target: 0,
            ready: std::sync::Mutex::new(Vec::new()),
            refilling: std::sync::atomic::AtomicBool::new(false),
            seq: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Makes `<state_dir>/disks`, detaches loop devices a killed server left
    /// there, and checks that this host can make disks by making the first
    /// pooled one. On a host that cannot, says so and gives a pool without
    /// disks (`/tmp` is then uncapped). `what` names the backend in the logs.
    pub fn open(state_dir: &Path, target: usize, what: &str) -> DiskPool {
        let dir = state_dir.join("disks");
        let made = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("creating {}: {e}", dir.display()));
        let swept = sweep_stale(&dir);
        if swept > 0 {
            tracing::info!(
                swept,
                backend = what,
                "detached /tmp loop devices of a previous server process"
            );
        }
        let mut pool = DiskPool::none();
        pool.target = target;
        // Named like every pooled disk, so a crash's leftovers are told from
        // a live server's pool by the pid in the name.
        let first = made.and_then(|()| {
            if !Path::new("/dev/loop-control").exists() {
                return Err("no /dev/loop-control".into());
            }
            TmpDisk::create(&dir, &pool.next_name(), crate::DEFAULT_TMP_MB)
                .map_err(|e| e.to_string())
        });
        match first {
            Ok(disk) => {
                pool.dir = Some(dir);
                if target > 0 {
                    pool.lock().push(disk);
                }
            }
            Err(reason) => tracing::warn!(
                %reason,
                backend = what,
                "/tmp of sandboxes will NOT be size-limited on this host (needs loop devices, mkfs.ext4 and losetup)"
            ),
        }
        pool
    }

    /// `pool-<server pid>-<n>`: unique, and names the server that made it.
    fn next_name(&self) -> String {
        let n = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("pool-{}-{n}", std::process::id())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<TmpDisk>> {
        self.ready.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether sandboxes get disks (a capped `/tmp`).
    pub fn capped(&self) -> bool {
        self.dir.is_some()
    }

    /// Whether the pool has disks to refill after a spawn took one.
    pub fn wants_refill(&self) -> bool {
        self.target > 0 && self.dir.is_some()
    }

    /// A fresh disk of `size_mb` for sandbox `id`: a pooled one for the
    /// default size, else made now; `None` when this host makes no disks.
    pub fn take(&self, id: &str, size_mb: u64) -> Result<Option<TmpDisk>, String> {
        let Some(dir) = &self.dir else {
            return Ok(None);
        };
        if size_mb == crate::DEFAULT_TMP_MB
            && let Some(d) = self.lock().pop()
        {
            return Ok(Some(d));
        }
        TmpDisk::create(dir, id, size_mb)
            .map(Some)
            .map_err(|e| e.to_string())
    }

    /// Makes disks until the pool is full (blocking, ~10 ms a disk; one
    /// thread at a time, others return at once).
    pub fn refill(&self) {
        use std::sync::atomic::Ordering;
        let Some(dir) = &self.dir else {
            return;
        };
        if self.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        while self.lock().len() < self.target {
            match TmpDisk::create(dir, &self.next_name(), crate::DEFAULT_TMP_MB) {
                Ok(d) => self.lock().push(d),
                Err(e) => {
                    tracing::warn!(error = %e, "could not prepare a /tmp disk");
                    break;
                }
            }
        }
        self.refilling.store(false, Ordering::Release);
    }

    /// Detaches every pooled disk.
    pub fn clear(&self) {
        self.lock().clear();
    }
}
