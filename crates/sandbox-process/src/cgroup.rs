//! Per-sandbox control groups, for both cgroup v1 (one hierarchy per
//! controller, as on the project's Debian hosts) and cgroup v2 (unified).
//!
//! This module only creates, limits, reads, kills and removes the cgroup
//! directories of one sandbox under `<root>/<parent>/<id>`; the jailer moves
//! itself in by writing `0` to the `cgroup.procs` files it is given.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Which cgroup interface the host offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// One hierarchy per controller under `<root>/<controller>/`.
    V1,
    /// The unified hierarchy mounted at `<root>`.
    V2,
}

/// v1 controllers a sandbox is placed in; the first two are required.
const V1_CONTROLLERS: [&str; 5] = ["memory", "pids", "cpu", "cpuacct", "freezer"];
const V1_REQUIRED: usize = 2;

/// Lambda gives a function one vCPU at 1,769 MB of memory, and CPU in
/// proportion to memory below and above that.
pub const MB_PER_VCPU: u64 = 1769;

/// cgroup v1 `cpu.shares` for a memory size: 1024 (one CPU's default
/// weight) per 1,769 MB, at least the kernel's minimum of 2.
pub fn cpu_shares_v1(memory_bytes: u64) -> u64 {
    (memory_bytes / (1024 * 1024) * 1024 / MB_PER_VCPU).max(2)
}

/// cgroup v2 `cpu.weight` for a memory size: 100 (the default weight) per
/// 1,769 MB, within the kernel's 1..=10000.
pub fn cpu_weight_v2(memory_bytes: u64) -> u64 {
    (memory_bytes / (1024 * 1024) * 100 / MB_PER_VCPU).clamp(1, 10_000)
}

/// How a sandbox's CPU, in proportion to its memory, is enforced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CpuLimit {
    /// A scheduling weight only (v1 `cpu.shares`, v2 `cpu.weight`): under
    /// contention CPU is shared in proportion to memory, and an idle machine
    /// still runs a small function at full speed.
    #[default]
    Weight,
    /// The weight plus a hard CFS quota in the same proportion (v1
    /// `cpu.cfs_quota_us`, v2 `cpu.max`): a 128 MB function never gets more
    /// than 128/1,769 of one CPU, even on an idle machine.
    Quota,
}

/// The CFS period the quota is measured against (the kernel's default).
pub const CFS_PERIOD_US: u64 = 100_000;
/// The smallest quota the kernel accepts.
pub const CFS_QUOTA_MIN_US: u64 = 1_000;

/// CPU time per [`CFS_PERIOD_US`] for a memory size: the whole period per
/// 1,769 MB (more than one CPU above that), at least [`CFS_QUOTA_MIN_US`].
pub fn cpu_quota_us(memory_bytes: u64) -> u64 {
    (memory_bytes / (1024 * 1024))
        .saturating_mul(CFS_PERIOD_US)
        .checked_div(MB_PER_VCPU)
        .unwrap_or(CFS_PERIOD_US)
        .max(CFS_QUOTA_MIN_US)
}

/// Errors of cgroup handling.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No usable cgroup mount was found under the root.
    #[error("no cgroup v1 memory hierarchy or cgroup v2 mount under {0}")]
    NotFound(PathBuf),
    /// A required v1 controller hierarchy is missing.
    #[error("cgroup v1 controller {controller} is not mounted under {root}")]
    MissingController {
        /// The controller.
        controller: &'static str,
        /// The cgroup root searched.
        root: PathBuf,
    },
    /// A CPU quota was asked for, but the sandbox's cgroup has no cpu
    /// controller (v1: no `cpu` hierarchy mounted).
    #[error("cgroup {0} has no cpu controller to set a CPU quota on")]
    NoCpuQuota(PathBuf),
    /// Creating a cgroup directory failed.
    #[error("creating cgroup {path}: {source}")]
    Create {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Writing a control file failed.
    #[error("writing {value:?} to {path}: {source}")]
    Write {
        /// The control file.
        path: PathBuf,
        /// What was written.
        value: String,
        /// The OS error.
        source: io::Error,
    },
    /// Removing a cgroup directory failed (usually: still has processes).
    #[error("removing cgroup {path}: {source}")]
    Remove {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// Detects the cgroup version mounted at `root` (normally `/sys/fs/cgroup`).
pub fn detect(root: &Path) -> Option<CgroupVersion> {
    if root.join("cgroup.controllers").is_file() {
        Some(CgroupVersion::V2)
    } else if root.join("memory").join("cgroup.procs").is_file()
        && root.join("pids").join("cgroup.procs").is_file()
    {
        Some(CgroupVersion::V1)
    } else {
        None
    }
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.to_owned(),
        value: value.to_owned(),
        source,
    })
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The mounted v1 controller hierarchies under `root`, in
/// [`V1_CONTROLLERS`] order, each directory once (co-mounted controllers,
/// e.g. cpu,cpuacct behind symlinks, share one). Fails if a required
/// controller is missing.
fn v1_hierarchies(root: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    let mut seen = Vec::new();
    let mut bases = Vec::new();
    for (i, ctrl) in V1_CONTROLLERS.iter().enumerate() {
        let base = root.join(ctrl);
        if !base.join("cgroup.procs").is_file() {
            if i < V1_REQUIRED {
                return Err(CgroupError::MissingController {
                    controller: ctrl,
                    root: root.to_owned(),
                });
            }
            continue;
        }
        let canonical = fs::canonicalize(&base).unwrap_or_else(|_| base.clone());
        if !seen.contains(&canonical) {
            seen.push(canonical);
            bases.push(base);
        }
    }
    Ok(bases)
}

/// Prepares `<root>/<parent>` so sandbox cgroups can be created beneath it
/// (v2: enables the memory and pids controllers on every level).
pub fn prepare_parent(
    root: &Path,
    version: CgroupVersion,
    parent: &str,
) -> Result<(), CgroupError> {
    match version {
        CgroupVersion::V1 => {
            for base in v1_hierarchies(root)? {
                let dir = base.join(parent);
                fs::create_dir_all(&dir)
                    .map_err(|source| CgroupError::Create { path: dir, source })?;
            }
            Ok(())
        }
        CgroupVersion::V2 => {
            // CPU weights need the cpu controller too; a host without it
            // still runs sandboxes, just without proportional CPU.
            let enable = |dir: &Path| {
                let control = dir.join("cgroup.subtree_control");
                fs::write(&control, "+memory +pids +cpu")
                    .or_else(|_| write(&control, "+memory +pids"))
            };
            let mut level = root.to_path_buf();
            enable(&level)?;
            for part in Path::new(parent).components() {
                level.push(part);
                fs::create_dir_all(&level).map_err(|source| CgroupError::Create {
                    path: level.clone(),
                    source,
                })?;
                enable(&level)?;
            }
            Ok(())
        }
    }
}

/// The directories [`CgroupSet::create`] makes for `id` (only existing hierarchies).
pub fn dirs_for(root: &Path, version: CgroupVersion, parent: &str, id: &str) -> Vec<PathBuf> {
    match version {
        CgroupVersion::V1 => V1_CONTROLLERS
            .iter()
            .map(|ctrl| root.join(ctrl))
            .filter(|base| base.join("cgroup.procs").is_file())
            .map(|base| base.join(parent).join(id))
            .collect(),
        CgroupVersion::V2 => vec![root.join(parent).join(id)],
    }
}

/// Whether the cpu controller is there for sandbox cgroups under `parent`
/// (call after [`prepare_parent`]): v1 a mounted `cpu` hierarchy, v2 `cpu`
/// enabled in the parent's `cgroup.subtree_control`.
pub fn has_cpu_controller(root: &Path, version: CgroupVersion, parent: &str) -> bool {
    match version {
        CgroupVersion::V1 => root.join("cpu").join("cgroup.procs").is_file(),
        CgroupVersion::V2 => fs::read_to_string(root.join(parent).join("cgroup.subtree_control"))
            .is_ok_and(|s| {
                s.split_whitespace()
                    .any(|c| c.trim_start_matches('+') == "cpu")
            }),
    }
}

/// Removes the parent cgroup(s) made by [`prepare_parent`] if they are
/// empty (another server or live sandboxes keep them). Best effort.
pub fn remove_parent_if_empty(root: &Path, version: CgroupVersion, parent: &str) {
    let dirs: Vec<PathBuf> = match version {
        CgroupVersion::V1 => V1_CONTROLLERS
            .iter()
            .map(|c| root.join(c).join(parent))
            .collect(),
        CgroupVersion::V2 => vec![root.join(parent)],
    };
    for dir in dirs {
        // rmdir only succeeds on a cgroup without children or processes.
        let _ = fs::remove_dir(dir);
    }
}

/// What [`sweep_leftovers`] removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Sandbox and pre-warm cgroups removed (counted once, not per hierarchy).
    pub cgroups: usize,
    /// Processes that were still running in them and were killed.
    pub processes: usize,
    /// Cgroup directories that could not be removed.
    pub failed: usize,
}

/// Removes every cgroup under `<root>/<parent>` that a previous server left
/// behind (a crash, or a kill -9): sandbox cgroups and pre-warm cgroups
/// (`pool-<pid>-<n>`) of server processes that no longer exist. Whatever
/// still runs in them is killed first; nested cgroups go before their
/// parent. Pre-warm cgroups of a live process are kept. Nothing outside
/// `<parent>` is looked at.
pub fn sweep_leftovers(root: &Path, version: CgroupVersion, parent: &str) -> Swept {
    let bases: Vec<PathBuf> = match version {
        CgroupVersion::V1 => V1_CONTROLLERS
            .iter()
            .map(|c| root.join(c).join(parent))
            .collect(),
        CgroupVersion::V2 => vec![root.join(parent)],
    };
    // The same sandbox has a directory in every v1 hierarchy: gather them by
    // name so it is killed once, across all of them, and counted once.
    let mut by_name: Vec<(String, Vec<PathBuf>)> = Vec::new();
    let mut seen_bases = Vec::new();
    for base in bases {
        // Co-mounted controllers (cpu,cpuacct) reach one directory twice.
        let canonical = fs::canonicalize(&base).unwrap_or_else(|_| base.clone());
        if seen_bases.contains(&canonical) {
            continue;
        }
        seen_bases.push(canonical);
        let Ok(entries) = fs::read_dir(&base) else {
            continue;
        };
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            if pool_owner_alive(&name) {
                continue;
            }
            match by_name.iter_mut().find(|(n, _)| *n == name) {
                Some((_, dirs)) => dirs.push(entry.path()),
                None => by_name.push((name, vec![entry.path()])),
            }
        }
    }
    let mut swept = Swept::default();
    for (_, dirs) in by_name {
        swept.processes += kill_tree(version, &dirs);
        let mut ok = true;
        for dir in &dirs {
            if !remove_tree(dir, Duration::from_secs(2)) {
                ok = false;
            }
        }
        if ok {
            swept.cgroups += 1;
        } else {
            swept.failed += 1;
        }
    }
    swept
}

/// Whether `name` is a pre-warm cgroup of a process that still exists
/// (this one included).
fn pool_owner_alive(name: &str) -> bool {
    let Some(owner) = name
        .strip_prefix("pool-")
        .and_then(|rest| rest.split('-').next())
        .and_then(|pid| pid.parse::<u32>().ok())
    else {
        return false;
    };
    owner == std::process::id() || Path::new("/proc").join(owner.to_string()).exists()
}

/// Every cgroup directory at and below `dir`, deepest first.
fn subtree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(subtree(&entry.path()));
            }
        }
    }
    out.push(dir.to_owned());
    out
}

fn procs_of(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Kills every process in the cgroups `dirs` (one sandbox, all its
/// hierarchies) and below, and waits up to 2 s for them to be gone.
/// Returns how many distinct processes were found.
fn kill_tree(version: CgroupVersion, dirs: &[PathBuf]) -> usize {
    let all: Vec<PathBuf> = dirs.iter().flat_map(|d| subtree(d)).collect();
    let mut killed: Vec<i32> = Vec::new();
    if version == CgroupVersion::V2 {
        for dir in dirs {
            killed.extend(procs_of_tree(dir));
            // Since Linux 5.14; without it, the loop below kills one by one.
            let kill = dir.join("cgroup.kill");
            if kill.exists() {
                let _ = fs::write(kill, "1");
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let mut alive = false;
        for dir in &all {
            for pid in procs_of(dir) {
                alive = true;
                if !killed.contains(&pid) {
                    killed.push(pid);
                }
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        if !alive || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    killed.sort_unstable();
    killed.dedup();
    killed.len()
}

fn procs_of_tree(dir: &Path) -> Vec<i32> {
    subtree(dir).iter().flat_map(|d| procs_of(d)).collect()
}

/// Removes `dir` and the cgroups below it, children first, retrying while
/// the kernel reports them busy. Whether all are gone.
fn remove_tree(dir: &Path, patience: Duration) -> bool {
    let deadline = Instant::now() + patience;
    let mut all_gone = true;
    for d in subtree(dir) {
        loop {
            match fs::remove_dir(&d) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => {
                    tracing::warn!(cgroup = %d.display(), error = %e, "could not remove a leftover cgroup");
                    all_gone = false;
                    break;
                }
            }
        }
    }
    all_gone
}

/// The cgroup directories of one sandbox.
#[derive(Debug)]
pub struct CgroupSet {
    version: CgroupVersion,
    /// Every directory created, memory first (v1: one per hierarchy; v2: one).
    dirs: Vec<PathBuf>,
    /// v2: `memory.peak` opened for the last reset. A v2 peak reset only
    /// applies to reads through the descriptor that was written to.
    peak_fd: std::sync::Mutex<Option<fs::File>>,
    /// v1: `memory.max_usage_in_bytes` (read-write) and
    /// `memory.usage_in_bytes`, opened at first use: every invoke reads
    /// them for its REPORT line and resets the peak, and an open
    /// descriptor saves a path walk of cgroupfs each time (the files stay
    /// the same across a rename of the directory).
    v1_memory: std::sync::OnceLock<Option<(fs::File, fs::File)>>,
    /// The limits last written in full by [`CgroupSet::set_limits`]
    /// (`None`: not yet, or the last attempt failed): a pre-warmed cgroup
    /// handed to a sandbox is only written what changes, which after idle
    /// is tenths of a millisecond per file on a cold start's path.
    applied: std::sync::Mutex<Option<Limits>>,
}

/// What [`CgroupSet::set_limits`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Limits {
    memory_bytes: u64,
    max_pids: u64,
    cpu: CpuLimit,
}

/// A cgroup file's number, read through an open descriptor.
fn read_u64_at(file: &fs::File) -> Option<u64> {
    let mut buf = [0u8; 32];
    let n = std::os::unix::fs::FileExt::read_at(file, &mut buf, 0).ok()?;
    std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()
}

impl CgroupSet {
    /// The v1 memory files (see [`CgroupSet::v1_memory`]), `None` if they
    /// cannot be opened.
    fn v1_memory_files(&self, dir: &Path) -> Option<&(fs::File, fs::File)> {
        self.v1_memory
            .get_or_init(|| {
                let peak = fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(dir.join("memory.max_usage_in_bytes"))
                    .ok()?;
                let usage = fs::File::open(dir.join("memory.usage_in_bytes")).ok()?;
                Some((peak, usage))
            })
            .as_ref()
    }

    /// Creates `<root>/<parent>/<id>` (in every v1 hierarchy) and sets the limits.
    /// On error, whatever was created is removed again.
    pub fn create(
        root: &Path,
        version: CgroupVersion,
        parent: &str,
        id: &str,
        memory_bytes: u64,
        max_pids: u64,
        cpu: CpuLimit,
    ) -> Result<Self, CgroupError> {
        let mut set = CgroupSet {
            version,
            dirs: Vec::new(),
            peak_fd: std::sync::Mutex::new(None),
            v1_memory: std::sync::OnceLock::new(),
            applied: std::sync::Mutex::new(None),
        };
        let result = set.create_inner(root, parent, id, memory_bytes, max_pids, cpu);
        match result {
            Ok(()) => Ok(set),
            Err(e) => {
                // Best effort; the directories are empty at this point.
                let _ = set.remove(Duration::from_millis(100));
                Err(e)
            }
        }
    }

    fn mkdir(&mut self, dir: PathBuf) -> Result<(), CgroupError> {
        match fs::create_dir(&dir) {
            Ok(()) => {}
            // A leftover from an earlier run with the same id: reuse it.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(CgroupError::Create { path: dir, source }),
        }
        self.dirs.push(dir);
        Ok(())
    }

    fn create_inner(
        &mut self,
        root: &Path,
        parent: &str,
        id: &str,
        memory_bytes: u64,
        max_pids: u64,
        cpu: CpuLimit,
    ) -> Result<(), CgroupError> {
        match self.version {
            CgroupVersion::V1 => {
                for base in v1_hierarchies(root)? {
                    self.mkdir(base.join(parent).join(id))?;
                }
            }
            CgroupVersion::V2 => {
                self.mkdir(root.join(parent).join(id))?;
            }
        }
        self.set_limits(memory_bytes, max_pids, cpu)
    }

    /// Sets the memory limit (no swap), the pids limit, and CPU in
    /// proportion to memory: always a weight (see [`cpu_shares_v1`]), with
    /// [`CpuLimit::Quota`] also a hard quota (see [`cpu_quota_us`]).
    /// Only what differs from the limits this set last wrote is written.
    pub fn set_limits(
        &self,
        memory_bytes: u64,
        max_pids: u64,
        cpu: CpuLimit,
    ) -> Result<(), CgroupError> {
        let mut applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        let prev = applied.take();
        if prev.map(|p| p.memory_bytes) != Some(memory_bytes) {
            self.set_memory(memory_bytes, prev.is_none())?;
        }
        if prev.map(|p| p.max_pids) != Some(max_pids) {
            self.set_pids(max_pids)?;
        }
        if prev.map(|p| (p.memory_bytes, p.cpu)) != Some((memory_bytes, cpu)) {
            self.set_cpu(memory_bytes, cpu)?;
        }
        *applied = Some(Limits {
            memory_bytes,
            max_pids,
            cpu,
        });
        Ok(())
    }

    /// v1: the directory in the hierarchy that has the cpu controller.
    fn v1_cpu_dir(&self) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|d| {
                d.components().any(|c| {
                    c.as_os_str()
                        .to_str()
                        .is_some_and(|c| c.split(',').any(|x| x == "cpu"))
                })
            })
            .map(PathBuf::as_path)
    }

    /// The weight, and the quota or its absence. Without the cpu controller
    /// the weight is skipped (the sandbox still runs), but a quota asked for
    /// is an error: it would otherwise silently not be enforced.
    fn set_cpu(&self, memory_bytes: u64, cpu: CpuLimit) -> Result<(), CgroupError> {
        match self.version {
            CgroupVersion::V1 => {
                let Some(dir) = self.v1_cpu_dir() else {
                    return match cpu {
                        CpuLimit::Weight => Ok(()),
                        CpuLimit::Quota => Err(CgroupError::NoCpuQuota(
                            self.dirs.first().cloned().unwrap_or_default(),
                        )),
                    };
                };
                write(
                    &dir.join("cpu.shares"),
                    &cpu_shares_v1(memory_bytes).to_string(),
                )?;
                let quota = dir.join("cpu.cfs_quota_us");
                match cpu {
                    CpuLimit::Quota => {
                        write(&dir.join("cpu.cfs_period_us"), &CFS_PERIOD_US.to_string())?;
                        write(&quota, &cpu_quota_us(memory_bytes).to_string())
                    }
                    // A reused cgroup may carry an old quota: lift it.
                    CpuLimit::Weight if quota.exists() => write(&quota, "-1"),
                    CpuLimit::Weight => Ok(()),
                }
            }
            CgroupVersion::V2 => {
                let Some(dir) = self.dirs.first() else {
                    return Ok(());
                };
                if dir.join("cpu.weight").exists() {
                    write(
                        &dir.join("cpu.weight"),
                        &cpu_weight_v2(memory_bytes).to_string(),
                    )?;
                }
                let max = dir.join("cpu.max");
                match cpu {
                    CpuLimit::Quota => write(
                        &max,
                        &format!("{} {CFS_PERIOD_US}", cpu_quota_us(memory_bytes)),
                    ),
                    CpuLimit::Weight if max.exists() => {
                        write(&max, &format!("max {CFS_PERIOD_US}"))
                    }
                    CpuLimit::Weight => Ok(()),
                }
            }
        }
    }

    /// The memory limit, without swap (`first`: also the settings that
    /// never change, swappiness and the swap limit).
    fn set_memory(&self, memory_bytes: u64, first: bool) -> Result<(), CgroupError> {
        let Some(mem) = self.dirs.first() else {
            return Ok(());
        };
        match self.version {
            CgroupVersion::V1 => {
                // memsw must never be below the memory limit: order the writes accordingly.
                let memsw = mem.join("memory.memsw.limit_in_bytes");
                let current = read_u64(&mem.join("memory.limit_in_bytes")).unwrap_or(u64::MAX);
                let value = memory_bytes.to_string();
                if memsw.exists() && memory_bytes < current {
                    write(&mem.join("memory.limit_in_bytes"), &value)?;
                    write(&memsw, &value)?;
                } else if memsw.exists() {
                    write(&memsw, &value)?;
                    write(&mem.join("memory.limit_in_bytes"), &value)?;
                } else {
                    write(&mem.join("memory.limit_in_bytes"), &value)?;
                }
                if first {
                    // Swapping the runtime out would only hide the limit; ignore if unsupported.
                    let _ = fs::write(mem.join("memory.swappiness"), "0");
                }
                Ok(())
            }
            CgroupVersion::V2 => {
                write(&mem.join("memory.max"), &memory_bytes.to_string())?;
                let swap = mem.join("memory.swap.max");
                if first && swap.exists() {
                    write(&swap, "0")?;
                }
                Ok(())
            }
        }
    }

    fn set_pids(&self, max_pids: u64) -> Result<(), CgroupError> {
        let (Some(mem), Some(last)) = (self.dirs.first(), self.dirs.last()) else {
            return Ok(());
        };
        let dir = match self.version {
            CgroupVersion::V1 => self.dirs.get(1).unwrap_or(last),
            CgroupVersion::V2 => mem,
        };
        write(&dir.join("pids.max"), &max_pids.to_string())
    }

    /// Renames the cgroup (in every hierarchy) to `new_name` under the same
    /// parent. Supported by cgroup v1 only; used to hand a pre-warmed cgroup
    /// to a sandbox.
    pub fn rename(&mut self, new_name: &str) -> Result<(), CgroupError> {
        for dir in &mut self.dirs {
            let Some(parent) = dir.parent() else {
                continue;
            };
            let target = parent.join(new_name);
            fs::rename(&*dir, &target).map_err(|source| CgroupError::Create {
                path: target.clone(),
                source,
            })?;
            *dir = target;
        }
        Ok(())
    }

    /// Moves process `pid` into the cgroup (in every hierarchy).
    pub fn add_pid(&self, pid: u32) -> Result<(), CgroupError> {
        for procs in self.procs_files() {
            write(&procs, &pid.to_string())?;
        }
        Ok(())
    }

    /// The `cgroup.procs` files the jailer must write `0` into to join.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// The created directories.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    fn memory_dir(&self) -> Option<&Path> {
        self.dirs.first().map(PathBuf::as_path)
    }

    /// Pids of all processes in the sandbox's cgroup.
    pub fn pids(&self) -> Vec<i32> {
        let Some(dir) = self.memory_dir() else {
            return Vec::new();
        };
        fs::read_to_string(dir.join("cgroup.procs"))
            .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Kills every process in the cgroup (v2 `cgroup.kill` when available).
    pub fn kill_all(&self) {
        if self.version == CgroupVersion::V2
            && let Some(dir) = self.memory_dir()
            && fs::write(dir.join("cgroup.kill"), "1").is_ok()
        {
            return;
        }
        // Without cgroup.kill a forking process could slip through one pass; repeat.
        for _ in 0..3 {
            let pids = self.pids();
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }

    /// `(peak, current)` memory use in bytes.
    pub fn memory(&self) -> (u64, u64) {
        let Some(dir) = self.memory_dir() else {
            return (0, 0);
        };
        match self.version {
            CgroupVersion::V1 => match self.v1_memory_files(dir) {
                Some((peak, usage)) => (
                    read_u64_at(peak).unwrap_or(0),
                    read_u64_at(usage).unwrap_or(0),
                ),
                None => (
                    read_u64(&dir.join("memory.max_usage_in_bytes")).unwrap_or(0),
                    read_u64(&dir.join("memory.usage_in_bytes")).unwrap_or(0),
                ),
            },
            CgroupVersion::V2 => {
                let current = read_u64(&dir.join("memory.current")).unwrap_or(0);
                let guard = self.peak_fd.lock().unwrap_or_else(|p| p.into_inner());
                let peak = match guard.as_ref() {
                    Some(file) => {
                        let mut buf = [0u8; 32];
                        std::os::unix::fs::FileExt::read_at(file, &mut buf, 0)
                            .ok()
                            .and_then(|n| std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok())
                    }
                    None => read_u64(&dir.join("memory.peak")),
                };
                (peak.unwrap_or(current), current)
            }
        }
    }

    /// Resets the peak-memory counter where the kernel allows it.
    pub fn reset_peak(&self) {
        let Some(dir) = self.memory_dir() else {
            return;
        };
        match self.version {
            CgroupVersion::V1 => match self.v1_memory_files(dir) {
                Some((peak, _)) => {
                    let _ = std::os::unix::fs::FileExt::write_at(peak, b"0", 0);
                }
                None => {
                    let _ = fs::write(dir.join("memory.max_usage_in_bytes"), "0");
                }
            },
            CgroupVersion::V2 => {
                // Resettable since Linux 6.12 (per open file); older kernels refuse.
                let Ok(mut file) = fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(dir.join("memory.peak"))
                else {
                    return;
                };
                if io::Write::write_all(&mut file, b"reset").is_ok() {
                    *self.peak_fd.lock().unwrap_or_else(|p| p.into_inner()) = Some(file);
                }
            }
        }
    }

    /// Removes the directories, retrying while the kernel still reports them busy.
    pub fn remove(&mut self, patience: Duration) -> Result<(), CgroupError> {
        let deadline = Instant::now() + patience;
        let mut first_error = None;
        for dir in std::mem::take(&mut self.dirs) {
            loop {
                match fs::remove_dir(&dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(source) => {
                        first_error.get_or_insert(CgroupError::Remove {
                            path: dir.clone(),
                            source,
                        });
                        break;
                    }
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        fs::create_dir_all(path.parent().expect("has parent")).expect("mkdir");
        fs::write(path, "").expect("write");
    }

    #[test]
    fn cpu_weight_is_proportional_to_memory() {
        const MB: u64 = 1024 * 1024;
        assert_eq!(cpu_shares_v1(1769 * MB), 1024, "1,769 MB is one vCPU");
        assert_eq!(cpu_shares_v1(3538 * MB), 2048);
        assert_eq!(cpu_shares_v1(128 * MB), 74);
        assert_eq!(cpu_shares_v1(0), 2, "kernel minimum");
        assert_eq!(cpu_weight_v2(1769 * MB), 100);
        assert_eq!(cpu_weight_v2(128 * MB), 7);
        assert_eq!(cpu_weight_v2(10_240 * MB), 578);
        assert_eq!(cpu_weight_v2(0), 1);
    }

    #[test]
    fn cpu_quota_is_proportional_to_memory() {
        const MB: u64 = 1024 * 1024;
        assert_eq!(cpu_quota_us(1769 * MB), 100_000, "1,769 MB is one vCPU");
        assert_eq!(cpu_quota_us(3538 * MB), 200_000, "two vCPUs");
        assert_eq!(cpu_quota_us(128 * MB), 7_235);
        assert_eq!(cpu_quota_us(10_240 * MB), 578_858);
        assert_eq!(cpu_quota_us(0), CFS_QUOTA_MIN_US, "kernel minimum");
        assert!(cpu_quota_us(u64::MAX) > CFS_PERIOD_US, "no overflow");
    }

    /// A set `<root>/.../stratus/<id>` of 128 MiB and 64 pids.
    fn create_128(
        root: &Path,
        version: CgroupVersion,
        id: &str,
        cpu: CpuLimit,
    ) -> Result<CgroupSet, CgroupError> {
        CgroupSet::create(root, version, "stratus", id, 128 << 20, 64, cpu)
    }

    /// A fake v1 tree with a separate cpu hierarchy, as on the project's hosts.
    fn fake_v1_with_cpu() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for ctrl in ["memory", "pids", "cpu", "cpuacct"] {
            touch(&dir.path().join(ctrl).join("cgroup.procs"));
        }
        prepare_parent(dir.path(), CgroupVersion::V1, "stratus").expect("prepare");
        dir
    }

    #[test]
    fn v1_quota_mode_writes_period_and_quota() {
        let dir = fake_v1_with_cpu();
        let cpu = dir.path().join("cpu/stratus/sbx");
        let set =
            create_128(dir.path(), CgroupVersion::V1, "sbx", CpuLimit::Quota).expect("create");
        let read = |f: &str| fs::read_to_string(cpu.join(f)).expect(f);
        assert_eq!(read("cpu.shares"), "74");
        assert_eq!(read("cpu.cfs_period_us"), "100000");
        assert_eq!(read("cpu.cfs_quota_us"), "7235");
        // New limits (a pre-warmed cgroup handed to a sandbox) replace them.
        set.set_limits(3538 << 20, 64, CpuLimit::Quota)
            .expect("set");
        assert_eq!(read("cpu.shares"), "2048");
        assert_eq!(read("cpu.cfs_quota_us"), "200000");
        // Weight mode lifts a quota left on the cgroup.
        set.set_limits(128 << 20, 64, CpuLimit::Weight)
            .expect("set");
        assert_eq!(read("cpu.shares"), "74");
        assert_eq!(read("cpu.cfs_quota_us"), "-1");
    }

    #[test]
    fn only_limits_that_change_are_written_again() {
        let dir = fake_v1_with_cpu();
        let file = |ctrl: &str, f: &str| dir.path().join(ctrl).join("stratus/sbx").join(f);
        let read = |ctrl: &str, f: &str| fs::read_to_string(file(ctrl, f)).expect(f);
        let set =
            create_128(dir.path(), CgroupVersion::V1, "sbx", CpuLimit::Weight).expect("create");
        assert_eq!(
            read("memory", "memory.limit_in_bytes"),
            (128u64 << 20).to_string()
        );
        assert_eq!(read("memory", "memory.swappiness"), "0");
        // Marks: a file written again loses its mark.
        for (ctrl, f) in [
            ("memory", "memory.limit_in_bytes"),
            ("memory", "memory.swappiness"),
            ("pids", "pids.max"),
            ("cpu", "cpu.shares"),
        ] {
            fs::write(file(ctrl, f), "mark").expect("mark");
        }
        set.set_limits(128 << 20, 64, CpuLimit::Weight)
            .expect("same limits");
        assert_eq!(read("memory", "memory.limit_in_bytes"), "mark");
        assert_eq!(read("pids", "pids.max"), "mark");
        assert_eq!(read("cpu", "cpu.shares"), "mark");
        // Another pids limit: that file only.
        set.set_limits(128 << 20, 32, CpuLimit::Weight)
            .expect("pids");
        assert_eq!(read("pids", "pids.max"), "32");
        assert_eq!(read("memory", "memory.limit_in_bytes"), "mark");
        assert_eq!(read("cpu", "cpu.shares"), "mark");
        // Another memory size: the memory limit and the CPU weight that
        // follows it; swappiness was set once, at creation.
        set.set_limits(1024 << 20, 32, CpuLimit::Weight)
            .expect("memory");
        assert_eq!(
            read("memory", "memory.limit_in_bytes"),
            (1024u64 << 20).to_string()
        );
        assert_eq!(
            read("cpu", "cpu.shares"),
            cpu_shares_v1(1024 << 20).to_string()
        );
        assert_eq!(read("memory", "memory.swappiness"), "mark");
        // A failed write leaves nothing remembered: the next call writes all.
        fs::remove_dir_all(dir.path().join("pids/stratus/sbx")).expect("break pids");
        assert!(set.set_limits(1024 << 20, 16, CpuLimit::Weight).is_err());
        fs::create_dir_all(dir.path().join("pids/stratus/sbx")).expect("restore");
        fs::write(file("memory", "memory.limit_in_bytes"), "mark").expect("mark");
        set.set_limits(1024 << 20, 16, CpuLimit::Weight)
            .expect("all again");
        assert_eq!(
            read("memory", "memory.limit_in_bytes"),
            (1024u64 << 20).to_string()
        );
        assert_eq!(read("pids", "pids.max"), "16");
    }

    #[test]
    fn v1_weight_mode_writes_no_quota() {
        let dir = fake_v1_with_cpu();
        create_128(dir.path(), CgroupVersion::V1, "sbx", CpuLimit::Weight).expect("create");
        let cpu = dir.path().join("cpu/stratus/sbx");
        assert_eq!(
            fs::read_to_string(cpu.join("cpu.shares")).expect("shares"),
            "74"
        );
        assert!(!cpu.join("cpu.cfs_quota_us").exists());
        assert!(!cpu.join("cpu.cfs_period_us").exists());
    }

    #[test]
    fn v1_quota_without_a_cpu_hierarchy_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        for ctrl in ["memory", "pids"] {
            touch(&dir.path().join(ctrl).join("cgroup.procs"));
        }
        prepare_parent(dir.path(), CgroupVersion::V1, "stratus").expect("prepare");
        assert!(!has_cpu_controller(
            dir.path(),
            CgroupVersion::V1,
            "stratus"
        ));
        let err = create_128(dir.path(), CgroupVersion::V1, "sbx", CpuLimit::Quota)
            .expect_err("no cpu controller");
        assert!(matches!(err, CgroupError::NoCpuQuota(_)), "{err}");
        // Weight mode runs without it.
        create_128(dir.path(), CgroupVersion::V1, "sbx2", CpuLimit::Weight)
            .expect("weight mode needs no cpu controller");
    }

    #[test]
    fn v2_quota_mode_writes_cpu_max() {
        let dir = tempfile::tempdir().expect("tempdir");
        touch(&dir.path().join("cgroup.controllers"));
        prepare_parent(dir.path(), CgroupVersion::V2, "stratus").expect("prepare");
        assert!(has_cpu_controller(dir.path(), CgroupVersion::V2, "stratus"));
        // A real cgroupfs creates these when the cpu controller is enabled.
        let sbx = dir.path().join("stratus/sbx");
        touch(&sbx.join("cpu.weight"));
        touch(&sbx.join("cpu.max"));
        let set =
            create_128(dir.path(), CgroupVersion::V2, "sbx", CpuLimit::Quota).expect("create");
        let read = |f: &str| fs::read_to_string(sbx.join(f)).expect(f);
        assert_eq!(read("cpu.weight"), "7");
        assert_eq!(read("cpu.max"), "7235 100000");
        assert_eq!(read("memory.max"), "134217728");
        set.set_limits(128 << 20, 64, CpuLimit::Weight)
            .expect("set");
        assert_eq!(read("cpu.max"), "max 100000");
    }

    #[test]
    fn sweep_removes_leftovers_children_first_and_keeps_live_pools() {
        let dir = tempfile::tempdir().expect("tempdir");
        for ctrl in ["memory", "pids"] {
            touch(&dir.path().join(ctrl).join("cgroup.procs"));
        }
        // Outside the parent: never looked at.
        fs::create_dir_all(dir.path().join("memory/other/sbx")).expect("mkdir");
        let live_pool = format!("pool-{}-0", std::process::id());
        for ctrl in ["memory", "pids"] {
            let parent = dir.path().join(ctrl).join("stratus");
            // A sandbox with a nested cgroup, a dead server's pool, a live one's.
            fs::create_dir_all(parent.join("sbx-1/nested")).expect("mkdir");
            fs::create_dir_all(parent.join("pool-999999999-3")).expect("mkdir");
            fs::create_dir_all(parent.join(&live_pool)).expect("mkdir");
        }
        // A leftover that exists in one hierarchy only.
        fs::create_dir_all(dir.path().join("pids/stratus/sbx-2")).expect("mkdir");
        let swept = sweep_leftovers(dir.path(), CgroupVersion::V1, "stratus");
        assert_eq!(
            swept,
            Swept {
                cgroups: 3,
                processes: 0,
                failed: 0
            }
        );
        for ctrl in ["memory", "pids"] {
            let parent = dir.path().join(ctrl).join("stratus");
            let mut left: Vec<String> = fs::read_dir(&parent)
                .expect("parent")
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            left.sort();
            assert_eq!(left, vec![live_pool.clone()], "{ctrl}");
        }
        assert!(dir.path().join("memory/other/sbx").is_dir());
    }

    #[test]
    fn detects_v2_from_cgroup_controllers() {
        let dir = tempfile::tempdir().expect("tempdir");
        touch(&dir.path().join("cgroup.controllers"));
        assert_eq!(detect(dir.path()), Some(CgroupVersion::V2));
    }

    #[test]
    fn detects_v1_from_controller_hierarchies() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(detect(dir.path()), None);
        touch(&dir.path().join("memory/cgroup.procs"));
        assert_eq!(detect(dir.path()), None, "pids hierarchy is required too");
        touch(&dir.path().join("pids/cgroup.procs"));
        assert_eq!(detect(dir.path()), Some(CgroupVersion::V1));
    }

    #[test]
    fn v2_parent_enables_controllers_on_every_level() {
        let dir = tempfile::tempdir().expect("tempdir");
        touch(&dir.path().join("cgroup.controllers"));
        prepare_parent(dir.path(), CgroupVersion::V2, "a/b").expect("prepare");
        for level in ["", "a", "a/b"] {
            let content = fs::read_to_string(dir.path().join(level).join("cgroup.subtree_control"))
                .expect("read");
            assert_eq!(content, "+memory +pids +cpu");
        }
    }

    #[test]
    fn v1_set_writes_limits_in_fake_hierarchy() {
        let dir = tempfile::tempdir().expect("tempdir");
        for ctrl in ["memory", "pids", "freezer"] {
            touch(&dir.path().join(ctrl).join("cgroup.procs"));
        }
        prepare_parent(dir.path(), CgroupVersion::V1, "stratus").expect("prepare");
        // A real cgroupfs creates the control files itself; a plain dir does not,
        // so create the sandbox dir beforehand with the files the code checks for.
        touch(
            &dir.path()
                .join("memory/stratus/sbx/memory.memsw.limit_in_bytes"),
        );
        let mut set =
            create_128(dir.path(), CgroupVersion::V1, "sbx", CpuLimit::Weight).expect("create");
        assert_eq!(set.dirs().len(), 3);
        let mem = dir.path().join("memory/stratus/sbx");
        assert_eq!(
            fs::read_to_string(mem.join("memory.limit_in_bytes")).expect("limit"),
            "134217728"
        );
        assert_eq!(
            fs::read_to_string(mem.join("memory.memsw.limit_in_bytes")).expect("memsw"),
            "134217728"
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("pids/stratus/sbx/pids.max")).expect("pids"),
            "64"
        );
        assert_eq!(set.procs_files()[0], mem.join("cgroup.procs"));
        assert!(
            CgroupSet::create(
                dir.path(),
                CgroupVersion::V1,
                "stratus",
                "x",
                1,
                1,
                CpuLimit::Weight
            )
            .is_ok()
        );
        // Plain directories with files in them cannot be rmdir'ed; only check it reports that.
        assert!(set.remove(Duration::from_millis(5)).is_err());
    }
}
