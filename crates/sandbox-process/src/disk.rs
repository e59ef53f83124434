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
//! `mkfs.ext4` runs once per size and server ([`Template`]): its output,
//! a few hundred KiB of metadata in a sparse image, is kept in memory, and
//! each disk is a fresh sparse file with those bytes written at their
//! offsets, attached with two ioctls (`LOOP_CTL_GET_FREE`, `LOOP_SET_FD`).
//! That is well under a millisecond, against ~4 ms of CPU and ~30 ms of
//! waiting for `mkfs.ext4` + `losetup` per disk, which bursts of cold starts
//! used to pay. Every disk of one size and server has the same filesystem
//! UUID (visible to a sandbox only as `statfs`'s `f_fsid`); its contents,
//! size cap and device are its own. The backend also keeps a few disks of
//! the default size ready ([`crate::ProcessBackendConfig::tmp_disk_pool`]).

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

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
    /// Formats a `size_mb` image in `dir` (`mkfs.ext4`) and attaches it to a
    /// free loop device (`losetup`).
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
                mkfs(&image)?;
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

/// Formats `image` as the empty ext4 filesystem of a `/tmp`.
fn mkfs(image: &Path) -> Result<(), DiskError> {
    // No journal (scratch data dies with the sandbox), no blocks reserved
    // for growing it online (it never grows; they were 256 KiB of the
    // ~320 KiB each disk writes), no reserved blocks (the function gets
    // all of its EphemeralStorage), inode tables initialised lazily.
    run(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-O",
            "^has_journal,^resize_inode",
            "-E",
            "nodiscard,lazy_itable_init=1",
            "-m",
            "0",
        ],
        image,
    )
    .map(drop)
}

/// An empty `/tmp` filesystem of one size, formatted once by `mkfs.ext4`:
/// the data extents of its sparse image (the rest of the image is holes,
/// which read as zeros), in memory: 60 KiB for 512 MiB.
#[derive(Debug)]
pub struct Template {
    size: u64,
    extents: Vec<(u64, Vec<u8>)>,
}

impl Template {
    /// Formats a `size_mb` image named `name` in `dir`, reads its data
    /// extents and removes it.
    pub fn make(dir: &Path, name: &str, size_mb: u64) -> Result<Self, DiskError> {
        let image = dir.join(format!("{name}.template"));
        let size = size_mb.saturating_mul(1 << 20);
        let failed = |source| DiskError::Image {
            path: image.clone(),
            source,
        };
        let made = File::create(&image)
            .and_then(|f| f.set_len(size))
            .map_err(failed)
            .and_then(|()| mkfs(&image))
            .and_then(|()| {
                // Lambda's /tmp starts empty: remove mkfs's lost+found once
                // here, not in every sandbox (freeing its blocks was ~5% of
                // a burst's CPU). Best effort: the jailer removes it if it
                // is still there.
                if let Err(e) = run("debugfs", &["-w", "-R", "rmdir lost+found"], &image) {
                    tracing::debug!(error = %e, "lost+found stays in the /tmp template");
                }
                let file = File::open(&image).map_err(failed)?;
                read_extents(&file, size).map_err(failed)
            });
        let _ = std::fs::remove_file(&image);
        Ok(Template {
            size,
            extents: made?,
        })
    }

    /// A fresh copy of the filesystem as an unnamed sparse image in `dir`
    /// (`O_TMPFILE`: no directory entry to make, sync or remove; the
    /// kernel names it `<dir>/#<inode> (deleted)`, which
    /// [`sweep_stale`] recognises), attached to a free loop device.
    pub fn instantiate(&self, dir: &Path) -> Result<TmpDisk, DiskError> {
        let failed = |source| DiskError::Image {
            path: dir.to_owned(),
            source,
        };
        let file = File::options()
            .read(true)
            .write(true)
            .custom_flags(libc::O_TMPFILE)
            .mode(0o600)
            .open(dir)
            .and_then(|file| {
                file.set_len(self.size)?;
                for (offset, bytes) in &self.extents {
                    file.write_all_at(bytes, *offset)?;
                }
                // Attaching syncs the image (`loop_configure` calls
                // `vfs_fsync`) while holding the attach lock: synced here
                // first, the writes of disks made side by side overlap.
                file.sync_data()?;
                Ok(file)
            })
            .map_err(failed)?;
        Ok(TmpDisk {
            device: attach(&file)?,
        })
    }
}

/// The data extents of `file` (`SEEK_DATA`/`SEEK_HOLE`) up to `size`.
fn read_extents(file: &File, size: u64) -> std::io::Result<Vec<(u64, Vec<u8>)>> {
    use nix::unistd::{Whence, lseek};
    let seek = |offset: u64, whence| -> std::io::Result<Option<u64>> {
        let offset = i64::try_from(offset).map_err(std::io::Error::other)?;
        match lseek(file.as_raw_fd(), offset, whence) {
            Ok(at) => Ok(Some(u64::try_from(at).map_err(std::io::Error::other)?)),
            // No data after `offset`.
            Err(nix::errno::Errno::ENXIO) => Ok(None),
            Err(e) => Err(e.into()),
        }
    };
    let mut extents = Vec::new();
    let mut at = 0;
    while at < size {
        let Some(start) = seek(at, Whence::SeekData)? else {
            break;
        };
        let end = seek(start, Whence::SeekHole)?.unwrap_or(size).min(size);
        let len = usize::try_from(end - start).map_err(std::io::Error::other)?;
        let mut bytes = vec![0u8; len];
        file.read_exact_at(&mut bytes, start)?;
        extents.push((start, bytes));
        at = end;
    }
    Ok(extents)
}

// From <linux/loop.h>: LOOP_CTL_GET_FREE on /dev/loop-control, LOOP_SET_FD
// on a loop device.
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_SET_FD: libc::c_ulong = 0x4C00;

/// Attaches `image` to a free loop device, as `losetup --find` does: asks
/// for a free one and retries if another process took it first. One thread
/// of this process at a time (they would all be offered the same device).
fn attach(image: &File) -> Result<PathBuf, DiskError> {
    static ATTACHING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let failed = |step: &str, e: std::io::Error| DiskError::Tool {
        tool: "loop device",
        message: format!("{step}: {e}"),
    };
    let _one_at_a_time = ATTACHING.lock().unwrap_or_else(|e| e.into_inner());
    let control = File::options()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .map_err(|e| failed("opening /dev/loop-control", e))?;
    let mut last = None;
    for _ in 0..64 {
        // SAFETY: LOOP_CTL_GET_FREE on an open /dev/loop-control takes no
        // argument and returns a device number or -1.
        let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
        if n < 0 {
            return Err(failed("LOOP_CTL_GET_FREE", std::io::Error::last_os_error()));
        }
        let device = PathBuf::from(format!("/dev/loop{n}"));
        let dev = File::options()
            .read(true)
            .write(true)
            .open(&device)
            .map_err(|e| failed(&format!("opening {}", device.display()), e))?;
        // SAFETY: LOOP_SET_FD on an open loop device takes the backing
        // file's descriptor, which stays open for the whole call.
        let rc = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_FD as _, image.as_raw_fd()) };
        if rc == 0 {
            return Ok(device);
        }
        let e = std::io::Error::last_os_error();
        // Another process attached that device between the two ioctls.
        if e.raw_os_error() != Some(libc::EBUSY) {
            return Err(failed(&format!("LOOP_SET_FD on {}", device.display()), e));
        }
        last = Some(e);
    }
    Err(failed(
        "LOOP_SET_FD",
        last.unwrap_or_else(|| std::io::Error::other("no free loop device")),
    ))
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
    fn template_copies_are_separate_empty_filesystems_and_swept() {
        if !nix::unistd::Uid::effective().is_root() || !Path::new("/dev/loop-control").exists() {
            return;
        }
        let dir = tempfile::tempdir().expect("dir");
        let template = Template::make(dir.path(), "t", 16).expect("template");
        // Only the template's metadata is kept, not 16 MiB.
        let kept: usize = template.extents.iter().map(|(_, b)| b.len()).sum();
        assert!(kept < 1 << 20, "{kept} bytes");
        let a = template.instantiate(dir.path()).expect("disk");
        let b = template.instantiate(dir.path()).expect("disk");
        assert_ne!(a.device(), b.device());
        // Unnamed images: nothing in the directory, the template's removed too.
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 0);
        for d in [&a, &b] {
            let blkid = Command::new("blkid")
                .args(["-p", "-o", "value", "-s", "TYPE"])
                .arg(d.device())
                .output()
                .expect("blkid");
            assert_eq!(String::from_utf8_lossy(&blkid.stdout).trim(), "ext4");
            let size = Command::new("blockdev")
                .arg("--getsize64")
                .arg(d.device())
                .output()
                .expect("blockdev");
            assert_eq!(String::from_utf8_lossy(&size.stdout).trim(), "16777216");
            // Empty: the template's lost+found is gone (where debugfs exists).
            if let Ok(ls) = Command::new("debugfs")
                .args(["-R", "ls -p /"])
                .arg(d.device())
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .output()
            {
                let listing = String::from_utf8_lossy(&ls.stdout);
                assert!(!listing.contains("lost+found"), "{listing}");
            }
        }
        let sys = Path::new("/sys/block")
            .join(a.device().file_name().expect("name"))
            .join("loop/backing_file");
        // A crashed server's copies are found by their directory.
        assert_eq!(sweep_stale(dir.path()), 2);
        let now = backing_once_detached(&sys, dir.path());
        assert!(!now.contains(&dir.path().display().to_string()), "{now}");
        // Not dropped: the swept device numbers may already be another test's.
        std::mem::forget(a);
        std::mem::forget(b);
    }

    #[test]
    fn a_missing_tool_is_a_clear_error() {
        let err = run("stratus-no-such-tool", &[], Path::new("/x")).expect_err("fails");
        assert!(err.to_string().contains("could not run it"), "{err}");
    }
}

/// Sizes whose [`Template`] a [`DiskPool`] keeps (the default size's is
/// always kept); other sizes are formatted one disk at a time.
const MAX_TEMPLATES: usize = 8;

/// Where a backend makes its `/tmp` disks, the [`Template`]s it copies them
/// from, and a pool of ready ones of Lambda's default size
/// ([`crate::DEFAULT_TMP_MB`]). Shared by every backend that gives
/// sandboxes a disk.
#[derive(Debug)]
pub struct DiskPool {
    /// `None` when this host cannot make disks (or the backend uses none).
    dir: Option<PathBuf>,
    /// How many ready disks to keep.
    target: usize,
    ready: std::sync::Mutex<Vec<TmpDisk>>,
    /// By size in MiB.
    templates: std::sync::Mutex<HashMap<u64, Arc<Template>>>,
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
            templates: std::sync::Mutex::new(HashMap::new()),
            refilling: std::sync::atomic::AtomicBool::new(false),
            seq: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Makes `<state_dir>/disks/server-<pid>`, detaches loop devices a
    /// killed server left under `<state_dir>/disks`, and checks that this host can make disks by making the
    /// default size's template and the first pooled disk. On a host that cannot, says so and gives a pool without
    /// disks (`/tmp` is then uncapped). `what` names the backend in the logs.
    pub fn open(state_dir: &Path, target: usize, what: &str) -> DiskPool {
        let disks = state_dir.join("disks");
        // This server's images live in `disks/server-<pid>/` (they are
        // unnamed, so the directory is what tells whose a loop device is);
        // every other directory there, and any image directly in `disks/`
        // (older servers), belongs to a server that is gone: one server
        // per data dir.
        let mut swept = sweep_stale(&disks);
        if let Ok(entries) = std::fs::read_dir(&disks) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    swept += sweep_stale(&e.path());
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
        let dir = disks.join(format!("server-{}", std::process::id()));
        let made = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("creating {}: {e}", dir.display()));
        if swept > 0 {
            tracing::info!(
                swept,
                backend = what,
                "detached /tmp loop devices of a previous server process"
            );
        }
        let mut pool = DiskPool::none();
        pool.target = target;
        // Named like every pooled disk (the template's image, briefly; the
        // copies are unnamed, in this server's directory).
        let first = made.and_then(|()| {
            if !Path::new("/dev/loop-control").exists() {
                return Err("no /dev/loop-control".into());
            }
            let template = Template::make(&dir, &pool.next_name(), crate::DEFAULT_TMP_MB)
                .map_err(|e| e.to_string())?;
            let disk = template.instantiate(&dir).map_err(|e| e.to_string())?;
            pool.templates_lock()
                .insert(crate::DEFAULT_TMP_MB, Arc::new(template));
            Ok(disk)
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

    /// `pool-<server pid>-<n>`: unique names for template images and for
    /// the disks of sizes without a template (whose server the directory
    /// `disks/server-<pid>/` also tells).
    fn next_name(&self) -> String {
        let n = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("pool-{}-{n}", std::process::id())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<TmpDisk>> {
        self.ready.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn templates_lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Template>>> {
        self.templates.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new disk of `size_mb` named `name`: a copy of that size's template
    /// (made now if this pool has none yet and keeps templates of
    /// [`MAX_TEMPLATES`] sizes at most; else the disk is formatted itself).
    fn make(&self, dir: &Path, name: &str, size_mb: u64) -> Result<TmpDisk, DiskError> {
        let known = self.templates_lock().get(&size_mb).cloned();
        let template = match known {
            Some(t) => t,
            None if self.templates_lock().len() < MAX_TEMPLATES => {
                // Two spawns may both make one; the second insert wins, harmlessly.
                let t = Arc::new(Template::make(dir, &format!("{name}-t"), size_mb)?);
                self.templates_lock().insert(size_mb, Arc::clone(&t));
                t
            }
            None => return TmpDisk::create(dir, name, size_mb),
        };
        template.instantiate(dir)
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
        self.make(dir, id, size_mb)
            .map(Some)
            .map_err(|e| e.to_string())
    }

    /// Makes disks until the pool is full (blocking, well under 1 ms a
    /// disk; one thread at a time, others return at once).
    pub fn refill(&self) {
        use std::sync::atomic::Ordering;
        let Some(dir) = &self.dir else {
            return;
        };
        if self.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        while self.lock().len() < self.target {
            match self.make(dir, &self.next_name(), crate::DEFAULT_TMP_MB) {
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
