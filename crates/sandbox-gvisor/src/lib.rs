//! gVisor sandboxes: the `gvisor` isolation backend, a kernel boundary.
//!
//! Each sandbox is one `runsc run` of an OCI bundle (see `bundle`): the
//! runtime talks to gVisor's Sentry, a user-space kernel, instead of the
//! host's, so a kernel bug reachable from a system call is not reachable
//! from tenant code. Debian's `runsc` is used as installed (`apt-get install
//! runsc`; bookworm-backports has a 2024 build with the faster `systrap`
//! platform, bookworm's own 2022 build only `ptrace`), picked by
//! [`GvisorConfig::platform`].
//!
//! What this crate adds around `runsc`, so the sandbox honours the same
//! [`SandboxBackend`] contract as the process backend (and passes the same
//! `stratus_sandbox::conformance` suite):
//! - **Runtime API**: `runsc` starts inside a fresh network namespace holding
//!   only `lo`, where the backend has bound the Runtime API listener first
//!   (`launch`); with `--network=host` the Sentry uses that namespace's
//!   stack, so the runtime reaches `127.0.0.1:9001` and nothing else, and the
//!   worker accepts on the listener directly, as with the process backend.
//! - **Limits**: `runsc` is started inside cgroups this backend creates
//!   (v1 or v2, through the process backend's `cgroup` module; `runsc`
//!   itself is told `--ignore-cgroups`), with the function's memory plus
//!   [`GvisorConfig::sentry_overhead_mb`] for the Sentry, and a pids limit
//!   as a backstop; inside, `RLIMIT_NPROC` caps the runtime's processes.
//! - **`/tmp`**: an ext4 of `tmp_mb` on a loop device (the process backend's
//!   `disk` module), mounted in a private mount namespace of `runsc` and
//!   bound into the sandbox, so it survives a runtime restart.
//! - **Restart in place**: `restart_runtime` ends the whole `runsc` sandbox
//!   and runs the bundle again in the same network namespace, cgroups, `/tmp`
//!   and output pipe: memory and processes go, the rest stays.
//!
//! This crate owns its sandboxes' `runsc` state (under `<state>/runsc`),
//! scratch dirs, cgroups (under [`GvisorConfig::cgroup_parent`]) and loop
//! devices, and releases them on drop; [`GvisorBackend::new`] removes what a
//! crashed server left in them. It knows nothing about functions or the
//! Runtime API protocol.

mod bundle;
mod launch;

use std::ffi::OsString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use stratus_sandbox::{
    ExitStatus, RuntimeApiListener, Sandbox, SandboxBackend, SandboxError, SandboxSpec,
    SandboxUsage,
};
use stratus_sandbox_process::cgroup::{self, CgroupSet, CgroupVersion, CpuLimit};
use stratus_sandbox_process::disk::{DiskPool, TmpDisk};
use stratus_sandbox_process::{SANDBOX_GID, SANDBOX_UID};

/// Where cgroup filesystems are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// How long teardown waits for `runsc` to exit after its cgroup was killed.
const TEARDOWN_PATIENCE: Duration = Duration::from_secs(2);
/// Host processes and threads a sandbox may have beyond the function's
/// `max_pids`: the Sentry's and the gofer's threads and the platform's stub
/// processes all count in the host's pids cgroup.
const HOST_PIDS_OVERHEAD: u64 = 512;

/// gVisor's platform: how the Sentry intercepts the runtime's system calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Platform {
    /// seccomp traps and shared-memory stubs (runsc 2023 and later; the default).
    #[default]
    Systrap,
    /// `ptrace(2)`: slower, but in every runsc build.
    Ptrace,
}

impl Platform {
    /// The name `runsc --platform` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Systrap => "systrap",
            Platform::Ptrace => "ptrace",
        }
    }
}

/// Configuration of the gVisor backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GvisorConfig {
    /// The `runsc` binary.
    pub runsc: PathBuf,
    /// `runsc --platform`.
    pub platform: Platform,
    /// Backend state: `runsc`'s own (`runsc/`), sandbox bundles
    /// (`sandboxes/<id>`) and `/tmp` disk images (`disks/`).
    pub state_dir: PathBuf,
    /// Cgroup (relative to each hierarchy's root) under which sandbox
    /// cgroups are created; must belong to this backend alone.
    pub cgroup_parent: String,
    /// Memory added to each sandbox's cgroup limit for the Sentry and gofer
    /// themselves (the function still sees its MemorySize as its limit).
    pub sentry_overhead_mb: u64,
    /// CPU in proportion to memory, as the process backend.
    pub cpu_limit: CpuLimit,
    /// `/tmp` disks of Lambda's default size (512 MiB) kept formatted and
    /// attached ahead of time (~10 ms each to make); other sizes are made
    /// when asked for.
    pub tmp_disk_pool: usize,
}

impl Default for GvisorConfig {
    fn default() -> Self {
        Self {
            runsc: PathBuf::from("/usr/bin/runsc"),
            platform: Platform::Systrap,
            state_dir: PathBuf::from("/var/lib/stratus/gvisor"),
            cgroup_parent: "stratus-gvisor".into(),
            sentry_overhead_mb: 64,
            cpu_limit: CpuLimit::Weight,
            tmp_disk_pool: 2,
        }
    }
}

/// The gVisor backend.
#[derive(Debug, Clone)]
pub struct GvisorBackend {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: GvisorConfig,
    /// `runsc --version`'s first line.
    version: String,
    cgroup_root: PathBuf,
    cgroup_version: CgroupVersion,
    /// `runsc --root`.
    runsc_root: PathBuf,
    /// Bundles and scratch dirs, one per sandbox.
    sandboxes: PathBuf,
    /// `/tmp` disks; without any (a host that cannot make them) `/tmp` is
    /// an uncapped host directory.
    disks: DiskPool,
    live: AtomicUsize,
}

impl Drop for Inner {
    fn drop(&mut self) {
        cgroup::remove_parent_if_empty(
            &self.cgroup_root,
            self.cgroup_version,
            &self.config.cgroup_parent,
        );
    }
}

fn unavailable(what: impl std::fmt::Display) -> SandboxError {
    SandboxError::Unavailable(what.to_string())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs `runsc` with `args` to completion (for state commands, not sandboxes).
fn runsc_output(runsc: &Path, args: &[OsString]) -> io::Result<std::process::Output> {
    Command::new(runsc)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .output()
}

fn mkdir(path: &Path, mode: u32) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
}

impl GvisorBackend {
    /// Checks the host (root, `runsc`, the platform, cgroups), removes what a
    /// previous server left under the state dir and cgroup parent, and runs
    /// one throw-away sandbox (`runsc do /bin/true`) so a `runsc` that cannot
    /// work here fails now, with its own message, rather than at the first
    /// invoke.
    pub fn new(config: GvisorConfig) -> Result<Self, SandboxError> {
        if !nix::unistd::Uid::effective().is_root() {
            return Err(unavailable("the gvisor backend must run as root"));
        }
        let runsc = &config.runsc;
        let version = match runsc_output(runsc, &["--version".into()]) {
            Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .unwrap_or("runsc")
                .to_owned(),
            Ok(out) => {
                return Err(unavailable(format!(
                    "{} --version failed: {}",
                    runsc.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            Err(e) => {
                return Err(unavailable(format!(
                    "gVisor isolation needs runsc, which could not be run at {} ({e}); install it \
                     with `apt-get install runsc` (Debian bookworm-backports has the systrap platform) \
                     or point --runsc at it",
                    runsc.display()
                )));
            }
        };
        if config
            .cgroup_parent
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
        {
            return Err(unavailable(format!(
                "bad cgroup parent {:?}",
                config.cgroup_parent
            )));
        }
        let cgroup_root = PathBuf::from(CGROUP_ROOT);
        let cgroup_version = cgroup::detect(&cgroup_root).ok_or_else(|| {
            unavailable(format!("no cgroup hierarchy at {}", cgroup_root.display()))
        })?;
        cgroup::prepare_parent(&cgroup_root, cgroup_version, &config.cgroup_parent)
            .map_err(unavailable)?;
        let runsc_root = config.state_dir.join("runsc");
        let sandboxes = config.state_dir.join("sandboxes");
        for dir in [&config.state_dir, &runsc_root, &sandboxes] {
            mkdir(dir, 0o711)
                .map_err(|e| unavailable(format!("creating {}: {e}", dir.display())))?;
        }
        let mut inner = Inner {
            version,
            cgroup_root,
            cgroup_version,
            runsc_root,
            sandboxes,
            disks: DiskPool::none(),
            live: AtomicUsize::new(0),
            config,
        };
        inner.sweep();
        inner.disks = DiskPool::open(
            &inner.config.state_dir,
            inner.config.tmp_disk_pool,
            "gvisor",
        );
        inner.self_test()?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// `runsc --version`'s first line, e.g. `runsc version 0.0~20240729.0`.
    pub fn runsc_version(&self) -> &str {
        &self.inner.version
    }

    /// The platform in use.
    pub fn platform(&self) -> Platform {
        self.inner.config.platform
    }

    /// Whether `/tmp` is a size-capped disk.
    pub fn tmp_is_capped(&self) -> bool {
        self.inner.disks.capped()
    }

    /// Fills the pool of `/tmp` disks now (blocking; `spawn` refills it in
    /// the background by itself).
    pub fn prewarm(&self) {
        self.inner.disks.refill();
    }

    /// Number of live sandboxes.
    pub fn live_sandboxes(&self) -> usize {
        self.inner.live.load(Ordering::Acquire)
    }

    /// Host directory holding sandbox `id`'s bundle (exists while it lives).
    pub fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.inner.sandboxes.join(id)
    }

    /// Cgroup directories sandbox `id` has while it lives.
    pub fn cgroup_dirs(&self, id: &str) -> Vec<PathBuf> {
        let i = &self.inner;
        cgroup::dirs_for(
            &i.cgroup_root,
            i.cgroup_version,
            &i.config.cgroup_parent,
            id,
        )
    }

    /// Ids `runsc` still knows under this backend's state dir.
    pub fn runsc_containers(&self) -> Vec<String> {
        self.inner.runsc_list()
    }

    /// Whether new sandboxes can still be made (for readiness probes): the
    /// state dir and `runsc` are still there. Cheap; spawns nothing.
    pub fn check_usable(&self) -> Result<(), SandboxError> {
        let i = &self.inner;
        if !i.sandboxes.is_dir() {
            return Err(unavailable(format!(
                "the gVisor state dir {} is gone",
                i.sandboxes.display()
            )));
        }
        if !i.config.runsc.is_file() {
            return Err(unavailable(format!(
                "runsc is gone from {}",
                i.config.runsc.display()
            )));
        }
        Ok(())
    }
}

impl Inner {
    /// Flags before `runsc`'s command, shared by every invocation.
    fn global_args(&self) -> Vec<OsString> {
        vec![
            "--root".into(),
            self.runsc_root.clone().into(),
            format!("--platform={}", self.config.platform.as_str()).into(),
            "--network=host".into(),
            "--ignore-cgroups".into(),
            "--overlay2=none".into(),
        ]
    }

    fn runsc_list(&self) -> Vec<String> {
        let mut args = vec!["--root".into(), self.runsc_root.clone().into()];
        args.extend(["list".into(), "-quiet".into()]);
        match runsc_output(&self.config.runsc, &args) {
            Ok(out) => String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Forgets container `id` in `runsc`'s state (its processes are gone or
    /// are killed by `--force`).
    fn runsc_delete(&self, id: &str) {
        let mut args = vec!["--root".into(), self.runsc_root.clone().into()];
        args.extend(["delete".into(), "-force".into(), id.into()]);
        match runsc_output(&self.config.runsc, &args) {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                let err = String::from_utf8_lossy(&out.stderr);
                if !err.contains("does not exist") && !err.contains("not found") {
                    tracing::warn!(sandbox = %id, error = %err.trim(), "runsc delete failed");
                }
            }
            Err(e) => tracing::warn!(sandbox = %id, error = %e, "could not run runsc delete"),
        }
    }

    /// Forgets container `id` in `runsc`'s state once its processes are all
    /// gone: removes its files from `runsc --root` (`<id>_sandbox:<id>.state`
    /// and `.lock`, and `runsc-<id>.sock` in newer builds). `runsc delete
    /// --force` does the same but polls the dead sandbox for ~1.5 s first.
    fn forget(&self, id: &str) {
        let prefix = format!("{id}_sandbox:");
        let socket = format!("runsc-{id}.sock");
        let Ok(entries) = std::fs::read_dir(&self.runsc_root) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if (name.starts_with(&prefix) || *name == socket)
                && let Err(e) = std::fs::remove_file(entry.path())
            {
                tracing::warn!(sandbox = %id, file = %name, error = %e, "could not remove runsc state");
            }
        }
    }

    /// Removes what a crashed server left: processes and cgroups first, then
    /// `runsc`'s records, then bundles (loop devices in `prepare_disks`).
    fn sweep(&self) {
        let swept = cgroup::sweep_leftovers(
            &self.cgroup_root,
            self.cgroup_version,
            &self.config.cgroup_parent,
        );
        // Their processes were all in the cgroups just killed.
        let containers = self.runsc_list();
        for id in &containers {
            self.forget(id);
        }
        let mut bundles = 0;
        if let Ok(entries) = std::fs::read_dir(&self.sandboxes) {
            for entry in entries.flatten() {
                if std::fs::remove_dir_all(entry.path()).is_ok() {
                    bundles += 1;
                }
            }
        }
        if swept != cgroup::Swept::default() || !containers.is_empty() || bundles > 0 {
            tracing::info!(
                cgroups = swept.cgroups,
                processes = swept.processes,
                runsc_containers = containers.len(),
                bundles,
                "removed the gVisor sandboxes of a previous server process"
            );
        }
    }

    /// One sandbox that runs `/bin/true`, with the configured platform.
    fn self_test(&self) -> Result<(), SandboxError> {
        let root = self.config.state_dir.join("selftest");
        let _ = std::fs::remove_dir_all(&root);
        mkdir(&root, 0o700)
            .map_err(|e| unavailable(format!("creating {}: {e}", root.display())))?;
        let args: Vec<OsString> = vec![
            "--root".into(),
            root.clone().into(),
            format!("--platform={}", self.config.platform.as_str()).into(),
            "--network=none".into(),
            "--ignore-cgroups".into(),
            "do".into(),
            "/bin/true".into(),
        ];
        let out = runsc_output(&self.config.runsc, &args);
        let _ = std::fs::remove_dir_all(&root);
        match out {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => Err(unavailable(format!(
                "{} ({}) cannot run a sandbox with --platform={}: {}",
                self.config.runsc.display(),
                self.version,
                self.config.platform.as_str(),
                String::from_utf8_lossy(&out.stderr).trim()
            ))),
            Err(e) => Err(unavailable(format!(
                "running {}: {e}",
                self.config.runsc.display()
            ))),
        }
    }
}

/// Kernel objects and files of one sandbox, released by [`Shared::teardown`].
#[derive(Debug, Default)]
struct Resources {
    cgroups: Option<CgroupSet>,
    /// Open `cgroup.procs` files `runsc` joins by writing `0`.
    procs: Vec<OwnedFd>,
    /// `<state>/sandboxes/<id>`: the bundle, and `tmp/` (the `/tmp` mount point).
    scratch: Option<PathBuf>,
    disk: Option<TmpDisk>,
    netns: Option<OwnedFd>,
    /// The write end of the output pipe, handed to every `runsc run`.
    output: Option<OwnedFd>,
}

/// The current `runsc run` process.
#[derive(Debug, Default)]
struct Run {
    /// Bumped by every restart and by teardown: a watcher of an older
    /// generation publishes nothing.
    generation: u64,
    child: Option<Child>,
}

/// What the sandbox handle, its watchers and restarts share.
#[derive(Debug)]
struct Shared {
    id: String,
    inner: Arc<Inner>,
    res: Mutex<Resources>,
    run: Mutex<Run>,
    status: tokio::sync::watch::Sender<Option<ExitStatus>>,
    /// Set by `kill`: the end is reported as SIGKILL whatever `runsc` says.
    killed: AtomicBool,
    /// Counted in `Inner::live` (undone by teardown).
    counted: AtomicBool,
}

/// Maps how `runsc run` ended to the runtime's status. `runsc run` exits
/// with the container's exit code, 128+n when it was killed by signal n,
/// and 128 itself when it could not start the container.
fn status_of(status: std::process::ExitStatus, killed: bool, oom: bool) -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    if killed || oom {
        return ExitStatus::Signal(libc::SIGKILL);
    }
    match (status.code(), status.signal()) {
        (Some(c), _) if (129..=192).contains(&c) => ExitStatus::Signal(c - 128),
        (Some(c), _) => ExitStatus::Code(c),
        (None, Some(s)) => ExitStatus::Signal(s),
        (None, None) => ExitStatus::Signal(libc::SIGKILL),
    }
}

/// Whether the memory cgroup in `dir` has OOM-killed anything.
fn oom_killed(version: CgroupVersion, dir: &Path) -> bool {
    let (file, key) = match version {
        CgroupVersion::V1 => ("memory.oom_control", "oom_kill"),
        CgroupVersion::V2 => ("memory.events", "oom_kill"),
    };
    std::fs::read_to_string(dir.join(file))
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == key).then(|| v.trim().parse::<u64>().ok())?
            })
        })
        .is_some_and(|n| n > 0)
}

/// A pidfd for `pid` (a child not yet reaped).
fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this new descriptor; we are its only owner.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

impl Shared {
    fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        if let Some(cg) = &lock(&self.res).cgroups {
            cg.kill_all();
        }
    }

    /// Starts `runsc run` for generation `generation` and a task that
    /// publishes how it ends.
    fn start_run(self: &Arc<Self>, generation: u64) -> Result<(), (&'static str, String)> {
        let inner = &self.inner;
        let mut cmd = Command::new(&inner.config.runsc);
        {
            let res = lock(&self.res);
            let (Some(scratch), Some(netns), Some(output)) =
                (&res.scratch, &res.netns, &res.output)
            else {
                return Err(("runsc", "the sandbox was torn down".into()));
            };
            let out = output
                .try_clone()
                .map_err(|e| ("runsc", format!("dup of the output pipe: {e}")))?;
            let err = output
                .try_clone()
                .map_err(|e| ("runsc", format!("dup of the output pipe: {e}")))?;
            cmd.args(inner.global_args())
                .arg("run")
                .arg("--bundle")
                .arg(scratch)
                .arg(&self.id)
                .env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .stdin(Stdio::null())
                .stdout(Stdio::from(out))
                .stderr(Stdio::from(err));
            let tmp_dir = scratch.join("tmp");
            launch::place(
                &mut cmd,
                &launch::Placement {
                    cgroup_procs: &res.procs,
                    netns,
                    tmp_device: res.disk.as_ref().map(TmpDisk::device),
                    tmp_dir: &tmp_dir,
                    fresh_disk: generation == 0,
                },
            )
            .map_err(|e| ("runsc", e.to_string()))?;
        }
        let child = launch::spawn(cmd).map_err(|e| {
            (
                "runsc",
                format!("starting {}: {e}", inner.config.runsc.display()),
            )
        })?;
        let pidfd = pidfd_open(child.id());
        {
            let mut run = lock(&self.run);
            if run.generation != generation {
                // Torn down meanwhile: the caller's cleanup kills it via the cgroup.
                run.child = Some(child);
                return Err(("runsc", "the sandbox was torn down".into()));
            }
            run.child = Some(child);
        }
        let pidfd = pidfd.map_err(|e| ("runsc", format!("pidfd_open: {e}")))?;
        // SAFETY: `pidfd` is an open descriptor owned by the AsyncFd from here on.
        let pidfd = unsafe { tokio::io::unix::AsyncFd::register(pidfd) }
            .map_err(|e| ("runsc", format!("watching runsc: {e}")))?;
        drop(tokio::spawn(Arc::clone(self).watch(generation, pidfd)));
        Ok(())
    }

    /// Waits for `runsc run` of `generation` to end and publishes its status.
    async fn watch(self: Arc<Self>, generation: u64, pidfd: tokio::io::unix::AsyncFd<OwnedFd>) {
        // A pidfd becomes readable when its process exits.
        let _ = pidfd.readable().await;
        let ended = {
            let mut run = lock(&self.run);
            if run.generation != generation {
                return;
            }
            match run.child.as_mut().map(Child::try_wait) {
                Some(Ok(Some(status))) => Some(status),
                _ => None,
            }
        };
        let oom = lock(&self.res)
            .cgroups
            .as_ref()
            .and_then(|cg| cg.dirs().first().cloned())
            .is_some_and(|dir| oom_killed(self.inner.cgroup_version, &dir));
        let status = match ended {
            Some(s) => status_of(s, self.killed.load(Ordering::Acquire), oom),
            None => ExitStatus::Signal(libc::SIGKILL),
        };
        // Every process of the sandbox goes with `runsc run` (the gofer and
        // the Sentry would otherwise outlive an OOM-killed sibling).
        self.kill_processes();
        let _ = self.status.send(Some(status));
    }

    fn kill_processes(&self) {
        if let Some(cg) = &lock(&self.res).cgroups {
            cg.kill_all();
        }
    }

    /// Waits (blocking, bounded) for the current `runsc run` to be reaped.
    fn reap(&self, until: Instant) -> bool {
        loop {
            {
                let mut run = lock(&self.run);
                match run.child.as_mut().map(Child::try_wait) {
                    None | Some(Ok(Some(_))) | Some(Err(_)) => return true,
                    Some(Ok(None)) => {}
                }
            }
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Ends the current run and forgets it in `runsc`'s state (blocking).
    fn end_run(&self) {
        let now = Instant::now();
        self.kill_processes();
        if !self.reap(now + TEARDOWN_PATIENCE) {
            tracing::warn!(sandbox = %self.id, "runsc did not exit after its cgroup was killed; killing it");
            if let Some(child) = lock(&self.run).child.as_mut() {
                let _ = child.kill();
            }
            self.reap(now + TEARDOWN_PATIENCE * 2);
        }
        // Every process of the sandbox (runsc, gofer, Sentry, stubs) was in
        // the cgroup: once it is empty, runsc's records can simply go.
        let empty = self.wait_cgroup_empty(now + TEARDOWN_PATIENCE);
        if empty {
            self.inner.forget(&self.id);
        } else {
            tracing::warn!(sandbox = %self.id, "sandbox processes survived a kill; asking runsc to delete it");
            self.inner.runsc_delete(&self.id);
        }
    }

    /// Kills until the sandbox's cgroup holds no process (blocking, bounded).
    fn wait_cgroup_empty(&self, until: Instant) -> bool {
        loop {
            let pids = match &lock(&self.res).cgroups {
                Some(cg) => cg.pids(),
                None => return true,
            };
            if pids.is_empty() {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            self.kill_processes();
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Kills everything and releases every resource (blocking).
    fn teardown(&self) {
        self.killed.store(true, Ordering::Release);
        lock(&self.run).generation += 1;
        let started = lock(&self.run).child.is_some();
        if started {
            self.end_run();
        }
        let mut res = std::mem::take(&mut *lock(&self.res));
        if let Some(cg) = &mut res.cgroups {
            cg.kill_all();
            if let Err(e) = cg.remove(Duration::from_millis(500)) {
                tracing::warn!(sandbox = %self.id, error = %e, "could not remove sandbox cgroup");
            }
        }
        if let Some(dir) = &res.scratch
            && let Err(e) = std::fs::remove_dir_all(dir)
        {
            tracing::warn!(sandbox = %self.id, dir = %dir.display(), error = %e, "could not remove the sandbox bundle");
        }
        // The disk detaches when `res` drops (its mount went with runsc's namespace).
        drop(res);
        if self.counted.swap(false, Ordering::AcqRel) {
            self.inner.live.fetch_sub(1, Ordering::AcqRel);
        }
        self.status.send_if_modified(|s| {
            if s.is_none() {
                *s = Some(ExitStatus::Signal(libc::SIGKILL));
                true
            } else {
                false
            }
        });
    }
}

fn validate(spec: &SandboxSpec) -> Result<(), (&'static str, String)> {
    let id = &spec.id;
    if id.is_empty()
        || id.len() > 128
        || id == "."
        || id == ".."
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err((
            "validate",
            "id must be 1-128 characters of [A-Za-z0-9._-]".into(),
        ));
    }
    if spec.argv.is_empty() {
        return Err(("validate", "argv is empty".into()));
    }
    if spec.limits.tmp_mb == 0 {
        return Err(("validate", "tmp_mb must be at least 1".into()));
    }
    Ok(())
}

impl GvisorBackend {
    /// Everything up to a started `runsc run`; `shared.res` collects what
    /// must be released if a later step fails.
    fn prepare(
        &self,
        spec: &SandboxSpec,
        shared: &Arc<Shared>,
    ) -> Result<(OwnedFd, std::net::TcpListener), (&'static str, String)> {
        let inner = &self.inner;
        let id = &spec.id;
        validate(spec)?;
        if !spec.code_dir.is_dir() {
            return Err((
                "mounts",
                format!("code dir {} is not a directory", spec.code_dir.display()),
            ));
        }
        let scratch = inner.sandboxes.join(id);
        std::fs::DirBuilder::new()
            .mode(0o711)
            .create(&scratch)
            .map_err(|e| ("scratch", format!("creating {}: {e}", scratch.display())))?;
        lock(&shared.res).scratch = Some(scratch.clone());
        let tmp_dir = scratch.join("tmp");
        mkdir(&tmp_dir, 0o755)
            .and_then(|()| std::os::unix::fs::chown(&tmp_dir, Some(SANDBOX_UID), Some(SANDBOX_GID)))
            .map_err(|e| ("scratch", format!("preparing {}: {e}", tmp_dir.display())))?;
        bundle::write(&scratch, spec, &tmp_dir)
            .map_err(|e| ("bundle", format!("writing the OCI bundle: {e}")))?;

        let memory_bytes = spec
            .limits
            .memory_mb
            .saturating_add(inner.config.sentry_overhead_mb)
            .saturating_mul(1 << 20);
        let cgroups = CgroupSet::create(
            &inner.cgroup_root,
            inner.cgroup_version,
            &inner.config.cgroup_parent,
            id,
            memory_bytes,
            spec.limits.max_pids.saturating_add(HOST_PIDS_OVERHEAD),
            inner.config.cpu_limit,
        )
        .map_err(|e| ("cgroup", e.to_string()))?;
        let procs = cgroups
            .procs_files()
            .iter()
            .map(|p| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(p)
                    .map(OwnedFd::from)
                    .map_err(|e| ("cgroup", format!("opening {}: {e}", p.display())))
            })
            .collect::<Result<Vec<_>, _>>();
        {
            let mut res = lock(&shared.res);
            res.cgroups = Some(cgroups);
            res.procs = procs?;
        }
        lock(&shared.res).disk = inner
            .disks
            .take(id, spec.limits.tmp_mb)
            .map_err(|e| ("tmp", e))?;
        let (netns, listener) = launch::netns_with_listener(spec.runtime_api_port)
            .map_err(|e| ("network", format!("making the network namespace: {e}")))?;
        let (out_read, out_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| ("runsc", format!("pipe: {e}")))?;
        {
            let mut res = lock(&shared.res);
            res.netns = Some(netns);
            res.output = Some(out_write);
        }
        shared.start_run(0)?;
        // Refill the disk pool now, off this sandbox's start.
        if inner.disks.wants_refill() {
            let refill = Arc::clone(inner);
            drop(tokio::task::spawn_blocking(move || refill.disks.refill()));
        }
        Ok((out_read, listener))
    }
}

#[async_trait]
impl SandboxBackend for GvisorBackend {
    fn name(&self) -> &'static str {
        "gvisor"
    }

    async fn spawn(&self, spec: SandboxSpec) -> Result<Box<dyn Sandbox>, SandboxError> {
        let started = Instant::now();
        let (status, status_rx) = tokio::sync::watch::channel(None);
        let shared = Arc::new(Shared {
            id: spec.id.clone(),
            inner: Arc::clone(&self.inner),
            res: Mutex::new(Resources::default()),
            run: Mutex::new(Run::default()),
            status,
            killed: AtomicBool::new(false),
            counted: AtomicBool::new(true),
        });
        self.inner.live.fetch_add(1, Ordering::AcqRel);
        let prepared = {
            let backend = self.clone();
            let shared = Arc::clone(&shared);
            let spec = spec.clone();
            // Blocking work (files, mkfs, the launcher thread); the watcher
            // task it starts needs the runtime's handle, which this thread has.
            let handle = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || {
                let _guard = handle.enter();
                backend.prepare(&spec, &shared)
            })
            .await
            .unwrap_or_else(|e| Err(("runsc", format!("setup task failed: {e}"))))
        };
        match prepared {
            Ok((output, listener)) => {
                tracing::debug!(sandbox = %spec.id, elapsed_us = started.elapsed().as_micros() as u64, "gVisor sandbox started");
                Ok(Box::new(GvisorSandbox {
                    id: spec.id,
                    listener: Some(listener),
                    output: Some(output),
                    status: status_rx,
                    shared,
                }))
            }
            Err((step, message)) => {
                tracing::debug!(sandbox = %spec.id, step, %message, "gVisor sandbox creation failed");
                let cleanup = Arc::clone(&shared);
                let _ = tokio::task::spawn_blocking(move || cleanup.teardown()).await;
                Err(SandboxError::Create {
                    id: spec.id,
                    step,
                    message,
                })
            }
        }
    }
}

/// One running gVisor sandbox.
#[derive(Debug)]
pub struct GvisorSandbox {
    id: String,
    listener: Option<std::net::TcpListener>,
    output: Option<OwnedFd>,
    status: tokio::sync::watch::Receiver<Option<ExitStatus>>,
    shared: Arc<Shared>,
}

impl Drop for GvisorSandbox {
    fn drop(&mut self) {
        self.shared.teardown();
    }
}

#[async_trait]
impl Sandbox for GvisorSandbox {
    fn id(&self) -> &str {
        &self.id
    }

    fn take_runtime_api_listener(&mut self) -> Option<RuntimeApiListener> {
        self.listener.take().map(RuntimeApiListener::Tcp)
    }

    fn take_output(&mut self) -> Option<OwnedFd> {
        self.output.take()
    }

    async fn wait(&self) -> ExitStatus {
        let mut rx = self.status.clone();
        match rx.wait_for(Option::is_some).await {
            Ok(status) => status.unwrap_or(ExitStatus::Signal(libc::SIGKILL)),
            Err(_) => ExitStatus::Signal(libc::SIGKILL),
        }
    }

    fn kill(&self) {
        self.shared.kill();
    }

    async fn restart_runtime(&self) -> Result<(), SandboxError> {
        let failed = |message: String| SandboxError::Io {
            id: self.id.clone(),
            message,
        };
        if self.status.borrow().is_some() || self.shared.killed.load(Ordering::Acquire) {
            return Err(failed("the sandbox has ended".into()));
        }
        let generation = {
            let mut run = lock(&self.shared.run);
            run.generation += 1;
            run.generation
        };
        let shared = Arc::clone(&self.shared);
        let handle = tokio::runtime::Handle::current();
        let restarted = tokio::task::spawn_blocking(move || {
            let _guard = handle.enter();
            shared.end_run();
            if shared.killed.load(Ordering::Acquire) {
                return Err(("runsc", "the sandbox was killed".to_owned()));
            }
            shared.start_run(generation)
        })
        .await
        .unwrap_or_else(|e| Err(("runsc", format!("restart task failed: {e}"))));
        restarted.map_err(|(step, message)| {
            self.shared.kill();
            let _ = self
                .shared
                .status
                .send(Some(ExitStatus::Signal(libc::SIGKILL)));
            failed(format!("restarting the runtime: {step}: {message}"))
        })
    }

    fn usage(&self) -> SandboxUsage {
        let (peak, current) = lock(&self.shared.res)
            .cgroups
            .as_ref()
            .map(CgroupSet::memory)
            .unwrap_or((0, 0));
        SandboxUsage {
            memory_peak_bytes: peak,
            memory_current_bytes: current,
        }
    }

    fn reset_peak(&self) {
        if let Some(cg) = &lock(&self.shared.res).cgroups {
            cg.reset_peak();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn runsc_exit_codes_map_to_runtime_statuses() {
        let exited = |c: i32| std::process::ExitStatus::from_raw(c << 8);
        assert_eq!(status_of(exited(0), false, false), ExitStatus::Code(0));
        assert_eq!(status_of(exited(3), false, false), ExitStatus::Code(3));
        assert_eq!(status_of(exited(128), false, false), ExitStatus::Code(128));
        assert_eq!(status_of(exited(137), false, false), ExitStatus::Signal(9));
        assert_eq!(status_of(exited(0), true, false), ExitStatus::Signal(9));
        assert_eq!(status_of(exited(128), false, true), ExitStatus::Signal(9));
        let signalled = std::process::ExitStatus::from_raw(15);
        assert_eq!(status_of(signalled, false, false), ExitStatus::Signal(15));
        assert_eq!(Platform::default().as_str(), "systrap");
    }
}
