//! Linux process sandboxes: the `process` isolation backend.
//!
//! Each sandbox is one runtime process in fresh mount, pid, network, UTS, IPC
//! and cgroup namespaces plus its own user namespace, limited by a memory and
//! pids cgroup (v1 or v2) with CPU in proportion to memory (a weight, or with
//! [`CpuLimit::Quota`] also a hard quota), running as a host uid no other sandbox shares, with
//! a default-deny seccomp allowlist ([`seccomp::DEFAULT_POLICY`]) and a root filesystem
//! assembled from read-only binds (`/usr`, the code at `/var/task`, the
//! runtime at `/var/runtime`, layers at `/opt`) and a disk-backed `/tmp`.
//!
//! The sandbox's network holds only `lo` by default. The jailer binds the Runtime API
//! listener *inside* that network namespace and passes the socket to the
//! server, so the server accepts the runtime's connections directly, with no
//! proxy and no host port ([`stratus_sandbox::RuntimeApiListener`]). With
//! [`ProcessBackendConfig::network`] each sandbox also gets an `eth0` on a
//! NAT'd bridge that reaches the outside but not the host or other sandboxes
//! (see the [`net`] module).
//!
//! A server that is not root runs in rootless mode, with fewer of these
//! protections: the [`plan`] module chooses what this host allows and
//! [`ProcessBackend::protections`] says what is applied and what is not.
//!
//! This crate owns the kernel objects of its sandboxes (cgroups, scratch dirs,
//! uids, processes) and releases every one of them when a sandbox is dropped.
//! Nothing outlives the server: every jailer has a parent-death signal tied
//! to the server, and [`ProcessBackend::new`] removes what a crashed server
//! left under its cgroup parent and state dir (see
//! `docs/design/crash-cleanup.md`); it touches nothing outside them.
//! It does not know about functions, invokes or the Runtime API protocol.
//!
//! # How a sandbox starts
//! The backend's jailer zygote (the jailer program, see [`jailer_main`]
//! and the `zygote` module; started once, with `posix_spawn`) forks one
//! jailer per sandbox and hands it the control socket at fd 3, its config
//! pipe as stdin and the sandbox's output pipe as stdout and stderr. The
//! jailer
//! unshares its namespaces and forks the sandbox's init before it even reads
//! its config. On cgroup v1 the backend keeps [`ProcessBackendConfig::prewarm`]
//! such jailers ready, each init already moved into a spare cgroup (moving a
//! process into a cgroup waits for an RCU grace period, ~12 ms on the
//! project's hosts); `spawn` renames that cgroup to the sandbox id, sets the
//! limits and sends the config, and the runtime runs ~2 ms later.
//!
//! # Pre-initialised runtimes
//! The backend also keeps sandboxes started *all the
//! way* before any function is known ([`SandboxBackend::prepare_runtimes`],
//! one pool per [`PreInit`] profile, `stratus server --runtime-pool`): J has
//! unshared its namespaces, C has joined its cgroup, built the root with an
//! empty `/var/task` and `/opt` and mounted a `/tmp` disk of the default
//! size, R has dropped to its own leased uid, entered its user namespace,
//! set rlimits, Landlock and seccomp, and exec'd the interpreter with the
//! bootstrap in pre-init mode (imports done, blocked reading a pipe named by
//! `_STRATUS_PREINIT_FD`). A profile without a program ([`PreInit::argv`]
//! empty: custom runtimes, whose program is the function's `bootstrap`)
//! stops R right before `execve`, blocked on that pipe, and R execs the
//! spec's `argv` once specialised. C keeps its privileges meanwhile. `spawn` of a
//! spec whose [`SandboxSpec::preinit`] matches takes one, renames its cgroup
//! to the sandbox id and sets the function's limits, and sends
//! `Command::Specialise` with the full configuration and the code (and
//! layers) as detached mounts (`open_tree(OPEN_TREE_CLONE | AT_RECURSIVE)`,
//! passed with `SCM_RIGHTS`); C `move_mount`s them read-only onto
//! `/var/task` and `/opt`, sets the host name and `/dev/shm` size, drops its
//! privileges, then writes the function's environment to R's pipe, and
//! answers `Started` (~1 ms in all). A runtime restart after that is a
//! normal start with the full configuration. A pooled sandbox serves one
//! function version, forever; nothing is shared between sandboxes. The pool
//! is refilled in the background 50 ms after a take, so
//! the cold start that took one has the CPU meanwhile. Not in rootless mode
//! (a rootless jailer's ids are known only at spawn). Design note:
//! `docs/design/prewarmed-runtimes.md`.
//!
//! `argv[0]` is executed as given (no `PATH` search), relative to `cwd`
//! unless absolute. `/tmp` is an ext4 filesystem of exactly `tmp_mb` on a
//! loop device (see the `disk` module), so it is capped and its pages are
//! reclaimable page cache rather than memory; on a host without loop devices
//! (or without `mkfs.ext4`/`losetup`) the backend warns once and falls back
//! to an uncapped host directory.
//!
//! # Wiring
//! The server's binary must run the jailer when invoked as
//! `stratus __sandbox-init`, *before* starting any thread or async runtime:
//!
//! ```no_run
//! # use stratus_sandbox_process::{ProcessBackend, ProcessBackendConfig};
//! # fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // First thing in main(), before tokio or any thread exists:
//! if std::env::args().nth(1).as_deref() == Some("__sandbox-init") {
//!     stratus_sandbox_process::jailer_main();
//! }
//! // Later, inside the tokio runtime:
//! let backend = ProcessBackend::new(ProcessBackendConfig {
//!     jailer: vec![std::env::current_exe()?.display().to_string(), "__sandbox-init".into()],
//!     ..Default::default()
//! })?;
//! # Ok(()) }
//! ```

pub mod cgroup;
pub mod disk;
pub mod host;
mod jailer;
mod mount_api;
pub mod net;
pub mod plan;
mod protocol;
pub mod seccomp;
mod uid;
mod zygote;

use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, socketpair};
use nix::unistd::{Gid, Uid, chown};
use stratus_sandbox::{
    ExitStatus, PreInit, RuntimeApiListener, Sandbox, SandboxBackend, SandboxError, SandboxSpec,
    SandboxUsage,
};
use tokio::io::unix::AsyncFd;

pub use cgroup::{CgroupError, CgroupVersion, CpuLimit};
pub use disk::DiskError;
pub use jailer::{JailerError, jailer_main};
pub use net::{Ipv4Cidr, NetError, OutboundConfig};
pub use plan::{Plan, ProtectionStatus};
pub use protocol::{JailerConfig, Protection, SANDBOX_GID, SANDBOX_UID, UsernsSetup};
pub use uid::{UidAllocator, UidLease};

use crate::cgroup::CgroupSet;
use crate::disk::{DiskPool, TmpDisk};
use crate::net::{Attachment, Network};
use crate::plan::{Ids, Tmp};
use crate::protocol::{Command, MAX_REPORT, Report, recv_datagram, send_command, step_name};
use crate::zygote::{SpawnError, Zygote};

/// Where cgroup filesystems are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// How long `spawn` waits for the jailer to start the runtime.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long dropping a sandbox waits for its processes to vanish.
const TEARDOWN_PATIENCE: Duration = Duration::from_secs(2);
/// How long after a cold start took a pre-initialised runtime its pool is
/// refilled: the cold start (loading the function, its first invoke) has
/// the CPU to itself meanwhile (2 cores on the project's hosts).
const RUNTIME_REFILL_DELAY: Duration = Duration::from_millis(50);
/// Failed attempts in a row after which a runtime pool pauses refilling
/// for [`RUNTIME_POOL_RETRY_AFTER`] (a host that cannot make them must not
/// pay a failed attempt at every cold start).
const RUNTIME_POOL_MAX_FAILURES: u32 = 3;
/// How long a failing runtime pool pauses.
const RUNTIME_POOL_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Configuration of the process backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessBackendConfig {
    /// Argv prefix that runs the jailer, e.g. `[current_exe, "__sandbox-init"]`
    /// or the `stratus-jailer` binary of this crate.
    pub jailer: Vec<String>,
    /// State dir: the shared root mountpoint (`.root`), the `/tmp` disk images (`disks/`) and, when `/tmp` is a host directory, per-sandbox scratch dirs (`<state_dir>/<id>/tmp`).
    pub state_dir: PathBuf,
    /// Cgroup (relative to each hierarchy's root) under which sandbox cgroups are created.
    pub cgroup_parent: String,
    /// First host uid handed to sandboxes (the gid of each sandbox equals its uid).
    pub uid_base: u32,
    /// Number of uids, which is also the maximum number of live sandboxes.
    pub uid_count: u32,
    /// Jailers kept started ahead of time, each already placed in a spare
    /// cgroup (cgroup v1 only; ignored on v2). Moving a process into a
    /// cgroup waits for an RCU grace period (~12 ms on the project's hosts);
    /// a pre-warmed jailer forks the sandbox's init straight into its cgroup
    /// and the cgroup is renamed to the sandbox id. 0 disables the pool.
    pub prewarm: usize,
    /// `/tmp` disks of [`DEFAULT_TMP_MB`] kept formatted and attached ahead of
    /// time (each a copy of a formatted template: well under 1 ms of CPU
    /// and one fsync of ~60 KiB). Other sizes are made when asked for.
    pub tmp_disk_pool: usize,
    /// CPU in proportion to memory (1,769 MB = one CPU): a scheduling
    /// weight only (the default), or that weight plus a hard quota.
    pub cpu_limit: CpuLimit,
    /// Protections every sandbox starts without. For the protection-cost
    /// benchmark only (`tests/sandbox.rs`, `protection_costs`); the server
    /// never sets it.
    #[doc(hidden)]
    pub benchmark_without: Vec<Protection>,
    /// Outbound networking (a veth per sandbox on a NAT'd bridge); `None`
    /// (the default): a sandbox's network holds only `lo`.
    pub network: Option<OutboundConfig>,
}

/// The `/tmp` size the disk pool prepares: Lambda's default EphemeralStorage.
pub const DEFAULT_TMP_MB: u64 = 512;

impl Default for ProcessBackendConfig {
    fn default() -> Self {
        Self {
            jailer: Vec::new(),
            state_dir: PathBuf::from("/var/lib/stratus/sandboxes"),
            cgroup_parent: "stratus".into(),
            uid_base: 1_500_000,
            uid_count: 10_000,
            prewarm: 2,
            tmp_disk_pool: 4,
            cpu_limit: CpuLimit::Weight,
            benchmark_without: Vec::new(),
            network: None,
        }
    }
}

/// The Linux namespace/cgroup/seccomp backend.
#[derive(Debug)]
pub struct ProcessBackend {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ProcessBackendConfig,
    /// What this server can apply (root or rootless; see the `plan` module).
    plan: Plan,
    /// The cgroup hierarchy sandboxes are placed in; `None` in rootless
    /// mode without a delegated subtree (no cgroup limits).
    cgroups: Option<(PathBuf, CgroupVersion)>,
    uids: UidAllocator,
    /// Pre-warmed jailers (cgroup v1 only).
    pool: Mutex<Vec<Prepared>>,
    /// Set while a thread refills the pool.
    refilling: AtomicBool,
    /// Names pool cgroups uniquely.
    pool_seq: AtomicU64,
    /// `/tmp` disks; without any (a host that cannot make them) `/tmp` is
    /// an uncapped host directory, in rootless mode a tmpfs.
    disks: DiskPool,
    /// The bridge and firewall of outbound networking, if configured.
    network: Option<Network>,
    /// Pre-initialised runtime sandboxes, by pool name.
    runtimes: Mutex<std::collections::HashMap<String, RuntimePool>>,
    /// Set while a task refills the runtime pools.
    runtimes_refilling: AtomicBool,
    /// Forks every jailer (started at the first sandbox; see `zygote`).
    zygote: Mutex<Option<Zygote>>,
}

/// Pre-initialised sandboxes of one runtime profile, waiting for a function.
#[derive(Debug)]
struct RuntimePool {
    profile: PreInit,
    /// How many to keep ready.
    size: usize,
    ready: Vec<ProcessSandbox>,
    /// Failed attempts to make one, in a row.
    failures: u32,
    /// When the last attempt failed.
    failed_at: Option<Instant>,
}

impl RuntimePool {
    /// Short of sandboxes, and not pausing after failures.
    fn wants_one(&self, now: Instant) -> bool {
        self.ready.len() < self.size
            && (self.failures < RUNTIME_POOL_MAX_FAILURES
                || self
                    .failed_at
                    .is_none_or(|t| now.duration_since(t) >= RUNTIME_POOL_RETRY_AFTER))
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Pooled runtime sandboxes are killed and removed like any other.
        lock(&self.runtimes).clear();
        // Unused pre-warmed jailers exit on EOF and their cgroups go with them;
        // then the parent cgroup is removed unless something still lives there.
        self.pool.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.disks.clear();
        if let Some((root, version)) = &self.cgroups {
            cgroup::remove_parent_if_empty(root, *version, &self.config.cgroup_parent);
        }
    }
}

/// A started jailer waiting for its config on stdin.
#[derive(Debug)]
struct Prepared {
    /// Dropped first: EOF on stdin makes an unused jailer exit at once.
    stdin: Option<std::fs::File>,
    /// Its process and cgroups.
    res: Resources,
    control: OwnedFd,
    output: OwnedFd,
    /// The server already moved the sandbox init (C) into `res.cgroups`.
    in_cgroup: bool,
    /// J's pid (J is in the sandbox's network namespace).
    jailer_pid: u32,
}

fn unavailable(what: impl std::fmt::Display) -> SandboxError {
    SandboxError::Unavailable(what.to_string())
}

impl ProcessBackend {
    /// Checks the host (privileges, cgroups) and prepares the state dir and
    /// parent cgroup, after removing what a previous server process left in
    /// them (processes, cgroups, scratch dirs, `/tmp` loop devices). The
    /// cgroup parent and state dir must belong to this backend alone
    /// (`stratus server` locks its data dir and cgroup parent before calling
    /// this). Not root: rootless mode, with what the host allows
    /// ([`plan::select_checked`]; [`ProcessBackend::plan`] says what is applied and
    /// what is not).
    pub fn new(config: ProcessBackendConfig) -> Result<Self, SandboxError> {
        Self::with_plan(config, plan::select_checked(&plan::Facts::gather()))
    }

    /// [`ProcessBackend::new`] with a given plan.
    pub fn with_plan(config: ProcessBackendConfig, plan: Plan) -> Result<Self, SandboxError> {
        if config.jailer.is_empty() {
            return Err(unavailable("no jailer command configured"));
        }
        if !plan.rootless() && !Uid::effective().is_root() {
            return Err(unavailable("the process backend's root plan needs root"));
        }
        if plan.rootless()
            && let Some(why) = plan::userns_blocked()
        {
            return Err(unavailable(format!(
                "rootless mode needs unprivileged user namespaces, which this host forbids ({why})"
            )));
        }
        if config.uid_count == 0 || config.uid_base == 0 {
            return Err(unavailable(
                "uid range must be non-empty and must not include root",
            ));
        }
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
        let cgroups = match plan.cgroup_hierarchy() {
            Some((root, version)) => Some((root.to_path_buf(), version)),
            // Root cannot do without them; rootless says so in its protections.
            None if !plan.rootless() => {
                return Err(unavailable(CgroupError::NotFound(PathBuf::from(
                    CGROUP_ROOT,
                ))));
            }
            None => None,
        };
        if let Some((cgroup_root, cgroup_version)) = &cgroups {
            Self::prepare_cgroups(&config, cgroup_root, *cgroup_version)?;
        } else if config.cpu_limit == CpuLimit::Quota {
            return Err(unavailable(
                "a CPU quota needs cgroups, which this rootless server cannot use here",
            ));
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&config.state_dir)
            .map_err(|e| unavailable(format!("creating {}: {e}", config.state_dir.display())))?;
        let scratch = sweep_scratch(&config.state_dir);
        if scratch > 0 {
            tracing::info!(
                scratch_dirs = scratch,
                state_dir = %config.state_dir.display(),
                "removed the scratch dirs of a previous server process"
            );
        }
        // Kept by the sweep; made (or found) like the state dir itself.
        let root_mountpoint = config.state_dir.join(ROOT_MOUNTPOINT);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root_mountpoint)
            .map_err(|e| unavailable(format!("creating {}: {e}", root_mountpoint.display())))?;
        let net_swept = Network::sweep(&config.cgroup_parent);
        if net_swept != net::Swept::default() {
            tracing::info!(
                links = net_swept.links,
                nft_tables = net_swept.tables,
                parent = %config.cgroup_parent,
                "removed the network bridge, veths and firewall tables of a previous server process"
            );
        }
        let network = match &config.network {
            None => None,
            Some(outbound) => {
                if plan.rootless() {
                    return Err(unavailable(
                        "outbound networking needs root (a bridge, veths and nftables rules); a rootless server's sandboxes have only loopback",
                    ));
                }
                let n = Network::setup(&config.cgroup_parent, outbound).map_err(|e| {
                    // Leave no empty parent cgroup behind a refused start.
                    if let Some((root, version)) = &cgroups {
                        cgroup::remove_parent_if_empty(root, *version, &config.cgroup_parent);
                    }
                    unavailable(format!(
                        "setting up outbound networking: {}",
                        net::error_chain(&e)
                    ))
                })?;
                tracing::info!(
                    bridge = n.bridge(),
                    cidr = %n.cidr(),
                    gateway = %n.cidr().gateway(),
                    allow_host = ?outbound.allow_host,
                    "outbound networking: each sandbox gets a veth on a NAT'd bridge; the host is reachable only at the allowed ports"
                );
                Some(n)
            }
        };
        let uids = match &plan.ids {
            // Each sandbox a subordinate uid (and the gid at the same offset).
            Ids::Subordinate { uids, gids, .. } => {
                UidAllocator::new(uids.0, config.uid_count.min(uids.1).min(gids.1))
            }
            // Shared: the leases only count live sandboxes.
            Ids::Root | Ids::Shared { .. } => UidAllocator::new(config.uid_base, config.uid_count),
        };
        let disks = match plan.tmp {
            Tmp::Disk => DiskPool::open(&config.state_dir, config.tmp_disk_pool, "process"),
            Tmp::Tmpfs => DiskPool::none(),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                plan,
                cgroups,
                uids,
                pool: Mutex::new(Vec::new()),
                refilling: AtomicBool::new(false),
                pool_seq: AtomicU64::new(0),
                disks,
                network,
                runtimes: Mutex::new(std::collections::HashMap::new()),
                runtimes_refilling: AtomicBool::new(false),
                zygote: Mutex::new(None),
            }),
        })
    }

    /// Makes the cgroup parent under `root` (after killing and removing what
    /// a crashed server left there) and checks the CPU quota can be set.
    fn prepare_cgroups(
        config: &ProcessBackendConfig,
        cgroup_root: &Path,
        cgroup_version: CgroupVersion,
    ) -> Result<(), SandboxError> {
        cgroup::prepare_parent(cgroup_root, cgroup_version, &config.cgroup_parent)
            .map_err(unavailable)?;
        if config.cpu_limit == CpuLimit::Quota
            && !cgroup::has_cpu_controller(cgroup_root, cgroup_version, &config.cgroup_parent)
        {
            return Err(unavailable(format!(
                "a CPU quota needs the cpu cgroup controller, which is not available under {}",
                cgroup_root.display()
            )));
        }
        // What a crashed server left: processes and cgroups first (they may
        // still use the scratch dirs and disks), then scratch dirs, then
        // loop devices (in `prepare_disks`).
        let swept = cgroup::sweep_leftovers(cgroup_root, cgroup_version, &config.cgroup_parent);
        if swept != cgroup::Swept::default() {
            tracing::info!(
                cgroups = swept.cgroups,
                processes = swept.processes,
                failed = swept.failed,
                parent = %config.cgroup_parent,
                "removed the sandbox cgroups of a previous server process and killed what ran in them"
            );
        }
        Ok(())
    }

    /// Whether `/tmp` is size-capped: a disk, or in rootless mode a tmpfs
    /// (false: an uncapped host directory).
    pub fn tmp_is_capped(&self) -> bool {
        self.inner.disks.capped() || self.inner.plan.tmp == Tmp::Tmpfs
    }

    /// What this server applies to sandboxes (root or rootless).
    pub fn plan(&self) -> &Plan {
        &self.inner.plan
    }

    /// Every protection and whether it is applied, `/tmp` as this host
    /// allows (for the server to say at start).
    pub fn protections(&self) -> Vec<ProtectionStatus> {
        let i = &self.inner;
        let mut all = i.plan.protections();
        let no_disks = i.plan.tmp == Tmp::Disk && !i.disks.capped();
        let no_cpu = i.cgroups.as_ref().is_some_and(|(root, version)| {
            !cgroup::has_cpu_controller(root, *version, &i.config.cgroup_parent)
        });
        for p in &mut all {
            if p.name == "/tmp" && no_disks {
                p.applied = false;
                p.detail = "an uncapped host directory: this host cannot make loop-device disks (needs /dev/loop-control, mkfs.ext4 and losetup)".into();
            }
            if p.name == "cgroups" && no_cpu {
                p.detail = format!(
                    "{}; but no cpu controller: CPU is not shared in proportion to memory",
                    p.detail
                        .replace("memory, pids and CPU limits", "memory and pids limits")
                );
            }
        }
        all
    }

    /// Fills the pools of pre-warmed jailers and `/tmp` disks (blocking;
    /// ~15 ms per jailer, ~1 ms per disk). Optional: `spawn` refills the
    /// pools in the background by itself.
    pub fn prewarm(&self) {
        self.inner.refill();
        self.inner.disks.refill();
    }

    /// Number of pre-warmed jailers ready.
    pub fn prewarmed(&self) -> usize {
        lock(&self.inner.pool).len()
    }

    /// The cgroup version in use; `None` without cgroups (rootless).
    pub fn cgroup_version(&self) -> Option<CgroupVersion> {
        self.inner.cgroups.as_ref().map(|(_, v)| *v)
    }

    /// Host directory holding sandbox `id`'s scratch dir (`/tmp` when it is
    /// neither a disk nor a tmpfs; exists while it lives).
    pub fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.inner.config.state_dir.join(id)
    }

    /// Cgroup directories sandbox `id` has while it lives.
    pub fn cgroup_dirs(&self, id: &str) -> Vec<PathBuf> {
        let i = &self.inner;
        match &i.cgroups {
            Some((root, version)) => cgroup::dirs_for(root, *version, &i.config.cgroup_parent, id),
            None => Vec::new(),
        }
    }

    /// The jailer zygote's pid, once the first sandbox has started it.
    #[doc(hidden)]
    pub fn zygote_pid(&self) -> Option<u32> {
        lock(&self.inner.zygote).as_ref().map(Zygote::pid)
    }

    /// Number of sandboxes currently holding a uid (live sandboxes), not
    /// counting the pre-initialised runtimes waiting in their pools.
    pub fn live_sandboxes(&self) -> usize {
        self.inner
            .uids
            .in_use()
            .saturating_sub(self.runtimes_ready())
    }

    /// Pre-initialised runtime sandboxes ready, in all pools.
    pub fn runtimes_ready(&self) -> usize {
        lock(&self.inner.runtimes)
            .values()
            .map(|p| p.ready.len())
            .sum()
    }

    /// Stops keeping pre-initialised runtimes and removes the ready ones
    /// (at server shutdown: no refill may start after this).
    pub fn stop_runtime_pools(&self) {
        let drained: Vec<RuntimePool> =
            lock(&self.inner.runtimes).drain().map(|(_, p)| p).collect();
        drop(drained);
    }

    /// Fills the runtime pools offered with `prepare_runtimes` (each
    /// pre-initialised sandbox takes about one cold start of its runtime).
    /// Optional: they are filled in the background anyway.
    pub async fn prewarm_runtimes(&self) {
        Inner::refill_runtimes(&self.inner).await;
    }

    /// Why this backend keeps no pre-initialised runtimes, if it does not.
    fn runtime_pool_blocker(&self) -> Option<String> {
        let i = &self.inner;
        if i.plan.rootless() {
            return Some(
                "rootless mode: a sandbox's ids are known only when it starts, and the sandbox init cannot mount a function's code later".into(),
            );
        }
        if i.cgroups.is_none() {
            return Some("no cgroups".into());
        }
        if !i.config.benchmark_without.is_empty() {
            return Some("the protection-cost benchmark starts every sandbox itself".into());
        }
        None
    }

    /// Whether new sandboxes can still be made (for readiness probes): the
    /// state dir is there and the cgroup hierarchy is still mounted. Cheap
    /// (two `stat`s); it does not spawn anything.
    pub fn check_usable(&self) -> Result<(), SandboxError> {
        let i = &self.inner;
        if !i.config.state_dir.is_dir() {
            return Err(unavailable(format!(
                "the sandbox state dir {} is gone",
                i.config.state_dir.display()
            )));
        }
        if let Some((root, version)) = &i.cgroups
            && cgroup::detect(root) != Some(*version)
        {
            return Err(unavailable(format!(
                "the {version:?} cgroup hierarchy is no longer at {}",
                root.display()
            )));
        }
        Ok(())
    }
}

/// Removes everything in `state_dir` but the `disks` dir (swept by
/// `disk::sweep_stale`) and the [`ROOT_MOUNTPOINT`]: scratch dirs of
/// sandboxes of a previous server process. Called before this backend has
/// made any. Returns how many.
fn sweep_scratch(state_dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(state_dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        if entry.file_name() == "disks" || entry.file_name() == ROOT_MOUNTPOINT {
            continue;
        }
        let path = entry.path();
        let result = match entry.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
            _ => std::fs::remove_file(&path),
        };
        match result {
            Ok(()) => removed += 1,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "could not remove a leftover scratch dir");
            }
        }
    }
    removed
}

impl Inner {
    /// For the sandbox leasing `host_uid`: the uid it runs as in the
    /// jailer's user namespace and, when rootless, that namespace's maps.
    fn ids_for(&self, host_uid: u32) -> (u32, Option<UsernsSetup>) {
        match &self.plan.ids {
            Ids::Root => (host_uid, None),
            Ids::Shared { uid, gid, .. } => (
                0,
                Some(UsernsSetup {
                    uid_map: vec![[0, *uid, 1]],
                    gid_map: vec![[0, *gid, 1]],
                    helpers: None,
                }),
            ),
            Ids::Subordinate {
                uid,
                gid,
                uids,
                gids,
                newuidmap,
                newgidmap,
            } => {
                // The allocator hands out uids from `uids.0`, never more
                // than either range holds; the gid sits at the same offset.
                let sub_gid = gids.0.saturating_add(host_uid.saturating_sub(uids.0));
                (
                    1,
                    Some(UsernsSetup {
                        uid_map: vec![[0, *uid, 1], [1, host_uid, 1]],
                        gid_map: vec![[0, *gid, 1], [1, sub_gid, 1]],
                        helpers: Some((newuidmap.clone(), newgidmap.clone())),
                    }),
                )
            }
        }
    }

    /// A fresh `/tmp` disk of `size_mb` (`None` on hosts without disks).
    fn take_disk(&self, id: &str, size_mb: u64) -> Result<Option<TmpDisk>, String> {
        if self.config.benchmark_without.contains(&Protection::TmpDisk) {
            return Ok(None);
        }
        // A pooled disk is replaced by `spawn` once this sandbox runs, off
        // its critical path.
        self.disks.take(id, size_mb)
    }

    fn refill(&self) {
        // Pre-warming hides cgroup v1 migration latency: nothing to hide
        // without cgroups, and a rootless jailer's ids are known only at spawn.
        if self.config.prewarm == 0
            || self.plan.rootless()
            || !matches!(self.cgroups, Some((_, CgroupVersion::V1)))
        {
            return;
        }
        if self.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        while lock(&self.pool).len() < self.config.prewarm {
            match self.prewarm_one() {
                Ok(p) => lock(&self.pool).push(p),
                Err((step, message)) => {
                    tracing::warn!(step, %message, "could not pre-warm a sandbox jailer");
                    break;
                }
            }
        }
        self.refilling.store(false, Ordering::Release);
    }

    fn prewarm_one(&self) -> Result<Prepared, (&'static str, String)> {
        let name = format!(
            "pool-{}-{}",
            std::process::id(),
            self.pool_seq.fetch_add(1, Ordering::Relaxed)
        );
        let Some((cgroup_root, cgroup_version)) = &self.cgroups else {
            return Err(("cgroup", "no cgroups to pre-warm in".into()));
        };
        let cgroups = CgroupSet::create(
            cgroup_root,
            *cgroup_version,
            &self.config.cgroup_parent,
            &name,
            256 << 20,
            16,
            self.config.cpu_limit,
        )
        .map_err(|e| ("cgroup", e.to_string()))?;
        let mut prepared = self.start_jailer(&name, Some(cgroups), None)?;
        // The jailer forks the sandbox init before it reads its config.
        let init_pid = loop {
            match recv_once(prepared.control.as_raw_fd(), MsgFlags::empty()) {
                Ok(Some((Report::Forked { pid }, _))) => break pid,
                Ok(Some((Report::Error { step, message }, _))) => {
                    return Err((step_name(&step), message));
                }
                Ok(Some(_)) => continue,
                Ok(None) => return Err(("jailer", "the jailer exited while pre-warming".into())),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(("jailer", format!("reading the control socket: {e}"))),
            }
        };
        let init_pid =
            u32::try_from(init_pid).map_err(|_| ("jailer", format!("bad pid {init_pid}")))?;
        if let Some(cg) = &prepared.res.cgroups {
            // The slow part (an RCU grace period), done here ahead of time.
            cg.add_pid(init_pid)
                .map_err(|e| ("cgroup", e.to_string()))?;
            prepared.in_cgroup = true;
        }
        if let Some(network) = &self.network {
            // J has unshared its network namespace (it reported C's fork).
            prepared.res.net = Some(
                network
                    .attach(prepared.jailer_pid)
                    .map_err(|e| ("network", net::error_chain(&e)))?,
            );
        }
        Ok(prepared)
    }

    fn take_pooled(&self, id: &str) -> Option<Prepared> {
        loop {
            let mut prepared = lock(&self.pool).pop()?;
            let renamed = prepared.res.cgroups.as_mut().map(|cg| cg.rename(id));
            match renamed {
                Some(Ok(())) => {
                    prepared.res.id = id.to_owned();
                    return Some(prepared);
                }
                // Dropping it kills the jailer and removes its cgroups.
                Some(Err(e)) => {
                    tracing::warn!(sandbox = %id, error = %e, "discarding a pre-warmed jailer")
                }
                None => {}
            }
        }
    }

    /// Starts a jailer process with its control socket and output pipe.
    fn start_jailer(
        &self,
        id: &str,
        cgroups: Option<CgroupSet>,
        userns: Option<&UsernsSetup>,
    ) -> Result<Prepared, (&'static str, String)> {
        let mut res = Resources::default();
        res.id = id.to_owned();
        res.cgroups = cgroups;
        let (ctl_server, ctl_child) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| ("jailer", format!("socketpair: {e}")))?;
        // Both ends stay blocking: the async side reads with MSG_DONTWAIT.
        let (out_read, out_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| ("jailer", format!("pipe: {e}")))?;

        let (stdin_read, stdin_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| ("jailer", format!("pipe: {e}")))?;
        let (jailer_pid, pidfd) = self
            .spawn_jailer(&stdin_read, &ctl_child, &out_write, userns)
            .map_err(|e| ("jailer", e))?;
        drop((stdin_read, ctl_child, out_write));
        let stdin = Some(std::fs::File::from(stdin_write));
        res.pidfd = Some(pidfd);
        Ok(Prepared {
            stdin,
            res,
            control: ctl_server,
            output: out_read,
            in_cgroup: false,
            jailer_pid,
        })
    }

    /// Has the jailer zygote fork a jailer (J) with these descriptors,
    /// starting the zygote first if there is none or it has died; returns
    /// J's pid and a pidfd for it.
    fn spawn_jailer(
        &self,
        stdin: &OwnedFd,
        control: &OwnedFd,
        output: &OwnedFd,
        userns: Option<&UsernsSetup>,
    ) -> Result<(u32, OwnedFd), String> {
        let mut zygote = lock(&self.zygote);
        let mut retried = false;
        loop {
            let z = match zygote.as_ref() {
                Some(z) => z,
                None => zygote.insert(
                    Zygote::start(&self.config.jailer, launch)
                        .map_err(|e| format!("starting the jailer zygote: {e}"))?,
                ),
            };
            match z.spawn(stdin, control, output, userns) {
                Ok(spawned) => return Ok(spawned),
                // It had died: a new one is asked, once.
                Err(e @ SpawnError::NotSent(_)) if !retried => {
                    tracing::warn!(error = %e, "starting a new jailer zygote");
                    *zygote = None;
                    retried = true;
                }
                // A jailer may exist for these descriptors: this start fails,
                // the next one gets a new zygote.
                Err(e @ (SpawnError::NotSent(_) | SpawnError::Lost(_))) => {
                    *zygote = None;
                    return Err(e.to_string());
                }
                Err(e @ SpawnError::Refused(_)) => return Err(e.to_string()),
            }
        }
    }
}

/// Starts whose blocking part runs at once (per server process). Bursts of
/// 200 on 2 cores: 16 gave 154-155 sandboxes/s, 64 gave 94-144/s, 8 gave
/// 88/s, 2 gave 64/s (the ignored test `creation_rate`, with a compiler
/// running beside it).
const STARTS_AT_ONCE: usize = 16;
static STARTING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(STARTS_AT_ONCE);

/// What [`Inner::prepare_start`] made ready for the rest of a start.
struct Setup {
    jail_uid: u32,
    real_uid: u32,
    root_dir: PathBuf,
    tmp_dir: Option<PathBuf>,
    tmp_device: Option<PathBuf>,
    memory_bytes: u64,
    /// The `cgroup.procs` files C joins (empty: C is in its cgroup already).
    procs: Vec<PathBuf>,
    ctl_server: OwnedFd,
    out_read: OwnedFd,
    stdin: Option<std::fs::File>,
    in_cgroup: bool,
    jailer_pid: u32,
    t_disk: Duration,
}

impl Inner {
    /// The blocking part of a start (file system, loop device, cgroup
    /// writes, starting the jailer or taking a pre-warmed one): run on a
    /// blocking thread, so that starts proceed side by side and the async
    /// workers (Runtime API listeners, invokes) are never held up by them.
    /// Everything made is recorded in `res` as it is made.
    fn prepare_start(
        &self,
        spec: &SandboxSpec,
        res: &mut Resources,
        preinit: bool,
    ) -> Result<Setup, (&'static str, String)> {
        let id = &spec.id;
        check_id(id)?;
        // A pre-initialised sandbox without a program waits before execve
        // for the function's (see `JailerConfig::preinit`).
        if spec.argv.is_empty() && !preinit {
            return Err(("validate", "argv is empty".into()));
        }
        let lease = self
            .uids
            .allocate()
            .ok_or(("uid", "all sandbox uids are in use".to_owned()))?;
        let host_uid = lease.uid();
        res.uid = Some(lease);
        // The uid in the jailer's user namespace, and that namespace's maps.
        let (jail_uid, userns) = self.ids_for(host_uid);
        let real_uid = match &self.plan.ids {
            Ids::Shared { uid, .. } => *uid,
            Ids::Root | Ids::Subordinate { .. } => host_uid,
        };

        if spec.limits.tmp_mb == 0 {
            return Err(("validate", "tmp_mb must be at least 1".into()));
        }
        let t_disk = Instant::now();
        res.disk = self
            .take_disk(id, spec.limits.tmp_mb)
            .map_err(|e| ("tmp", e))?;
        // Formatting a disk when the pool is empty (a burst) is the slow case.
        let t_disk = t_disk.elapsed();
        let tmp_device = res.disk.as_ref().map(|d| d.device().to_owned());

        // Without a disk or a tmpfs, `/tmp` is a host directory of its own:
        // <state>/<id>/tmp, the sandbox's only scratch dir. (The root is
        // assembled on the shared, always empty ROOT_MOUNTPOINT, in the
        // jailer's own mount namespace.)
        let tmp_dir = if tmp_device.is_none() && self.plan.tmp != Tmp::Tmpfs {
            let dir = self.config.state_dir.join(id);
            std::fs::DirBuilder::new()
                .mode(0o711)
                .create(&dir)
                .map_err(|e| ("scratch", format!("creating {}: {e}", dir.display())))?;
            res.scratch = Some(dir.clone());
            let tmp_dir = dir.join("tmp");
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&tmp_dir)
                .map_err(|e| ("scratch", format!("creating {}: {e}", tmp_dir.display())))?;
            if !self.plan.rootless() {
                chown(
                    &tmp_dir,
                    Some(Uid::from_raw(host_uid)),
                    Some(Gid::from_raw(host_uid)),
                )
                .map_err(|e| ("scratch", format!("chown {}: {e}", tmp_dir.display())))?;
            }
            Some(tmp_dir)
        } else {
            None
        };
        let root_dir = self.config.state_dir.join(ROOT_MOUNTPOINT);

        let memory_bytes = spec.limits.memory_mb.saturating_mul(1 << 20);
        let inner = self;
        let prepared = match inner.take_pooled(id) {
            Some(p) => p,
            None => {
                let cgroups = match &inner.cgroups {
                    Some((root, version)) => Some(
                        CgroupSet::create(
                            root,
                            *version,
                            &inner.config.cgroup_parent,
                            id,
                            memory_bytes,
                            spec.limits.max_pids,
                            inner.config.cpu_limit,
                        )
                        .map_err(|e| ("cgroup", e.to_string()))?,
                    ),
                    None => None,
                };
                inner.start_jailer(id, cgroups, userns.as_ref())?
            }
        };
        let Prepared {
            res: mut prepared_res,
            control: ctl_server,
            output: out_read,
            stdin,
            in_cgroup,
            jailer_pid,
        } = prepared;
        res.pidfd = prepared_res.pidfd.take();
        res.cgroups = prepared_res.cgroups.take();
        res.net = prepared_res.net.take();
        drop(prepared_res);
        let procs = match &res.cgroups {
            Some(cg) if in_cgroup => {
                cg.set_limits(memory_bytes, spec.limits.max_pids, inner.config.cpu_limit)
                    .map_err(|e| ("cgroup", e.to_string()))?;
                Vec::new()
            }
            Some(cg) => cg.procs_files(),
            None => Vec::new(),
        };
        Ok(Setup {
            jail_uid,
            real_uid,
            root_dir,
            tmp_dir,
            tmp_device,
            memory_bytes,
            procs,
            ctl_server,
            out_read,
            stdin,
            in_cgroup,
            jailer_pid,
            t_disk,
        })
    }
}

impl ProcessBackend {
    /// Starts a sandbox from scratch; with `preinit`, a pre-initialised
    /// runtime sandbox for a pool (no code, waiting for `Specialise`).
    async fn spawn_inner(
        &self,
        spec: &SandboxSpec,
        res: &mut Resources,
        preinit: bool,
    ) -> Result<ProcessSandbox, (&'static str, String)> {
        let t0 = Instant::now();
        let id = &spec.id;
        // `res` goes to the blocking thread and comes back with what was made
        // (if this future is dropped meanwhile, the thread releases it).
        let inner = Arc::clone(&self.inner);
        let spec_owned = spec.clone();
        let _starting = STARTING
            .acquire()
            .await
            .map_err(|e| ("jailer", format!("the start queue is closed: {e}")))?;
        let mut owned = std::mem::take(res);
        let (owned, setup) = tokio::task::spawn_blocking(move || {
            let setup = inner.prepare_start(&spec_owned, &mut owned, preinit);
            (owned, setup)
        })
        .await
        .map_err(|e| ("jailer", format!("the start task failed: {e}")))?;
        *res = owned;
        let Setup {
            jail_uid,
            real_uid,
            root_dir,
            tmp_dir,
            tmp_device,
            memory_bytes,
            procs,
            ctl_server,
            out_read,
            stdin,
            in_cgroup,
            jailer_pid,
            t_disk,
        } = setup?;
        let t_forked = t0.elapsed();
        let inner = &self.inner;
        if inner.config.prewarm > 0 && matches!(inner.cgroups, Some((_, CgroupVersion::V1))) {
            let refill = Arc::clone(inner);
            drop(tokio::task::spawn_blocking(move || refill.refill()));
        }

        // The sandbox keeps a second descriptor of the socket to send commands on.
        let commands = ctl_server
            .try_clone()
            .map_err(|e| ("jailer", format!("dup of the control socket: {e}")))?;
        // SAFETY: `ctl_server` is an open socket owned by the AsyncFd from here on.
        let control = unsafe { AsyncFd::register(ctl_server) }
            .map_err(|e| ("jailer", format!("registering control socket: {e}")))?;

        let mut t_net = Duration::ZERO;
        if inner.network.is_some() && res.net.is_none() {
            // A jailer started just now: its network namespace exists once
            // it reports C's fork.
            tokio::time::timeout(START_TIMEOUT, wait_forked(&control))
                .await
                .map_err(|_| {
                    (
                        "jailer",
                        format!("the jailer did not start within {START_TIMEOUT:?}"),
                    )
                })??;
            // A netlink request waits for the kernel's rtnl lock, which
            // namespace creation and teardown elsewhere hold for up to tens
            // of milliseconds: not on an async worker.
            let t_attach = Instant::now();
            let inner = Arc::clone(&self.inner);
            let attached = tokio::task::spawn_blocking(move || {
                inner.network.as_ref().map(|n| n.attach(jailer_pid))
            })
            .await
            .map_err(|e| ("network", format!("the veth task failed: {e}")))?;
            if let Some(attached) = attached {
                res.net = Some(attached.map_err(|e| ("network", net::error_chain(&e)))?);
            }
            t_net = t_attach.elapsed();
        }

        let config = JailerConfig {
            id: id.clone(),
            code_dir: spec.code_dir.clone(),
            runtime_dir: spec.runtime_dir.clone(),
            opt_dir: spec.opt_dir.clone(),
            argv: spec.argv.clone(),
            env: spec.env.clone(),
            cwd: spec.cwd.clone(),
            hostname: spec.hostname.clone(),
            runtime_api_port: spec.runtime_api_port,
            max_fds: spec.limits.max_fds,
            max_pids: spec.limits.max_pids,
            shm_bytes: memory_bytes,
            cgroup_procs: procs,
            host_uid: jail_uid,
            tmp_dir,
            tmp_device,
            tmp_tmpfs_bytes: (inner.plan.tmp == Tmp::Tmpfs)
                .then(|| spec.limits.tmp_mb.saturating_mul(1 << 20)),
            root_dir,
            without: inner.config.benchmark_without.clone(),
            network: res.net.as_ref().map(|a: &Attachment| a.net.clone()),
            preinit,
        };
        let config_json = serde_json::to_vec(&config).map_err(|e| ("config", e.to_string()))?;
        if let Some(mut stdin) = stdin {
            // A few KiB into an empty pipe: this never blocks for long.
            stdin
                .write_all(&config_json)
                .map_err(|e| ("config", format!("writing the jailer config: {e}")))?;
        }

        let mut listener = None;
        let mut t_listening = Duration::ZERO;
        let started = tokio::time::timeout(START_TIMEOUT, async {
            loop {
                match recv_report(&control).await {
                    Ok(Some((Report::Listening, fd))) => {
                        let fd = fd.ok_or((
                            "listener",
                            "listener report without a descriptor".to_owned(),
                        ))?;
                        let l = std::net::TcpListener::from(fd);
                        l.set_nonblocking(true)
                            .map_err(|e| ("listener", e.to_string()))?;
                        listener = Some(l);
                        t_listening = t0.elapsed();
                    }
                    Ok(Some((Report::Started, _))) => return Ok(()),
                    Ok(Some((Report::Forked { .. }, _))) => {}
                    Ok(Some((Report::Error { step, message }, _))) => {
                        return Err((step_name(&step), message));
                    }
                    Ok(Some((Report::Exited { status }, _))) => {
                        return Err((
                            "jailer",
                            format!("runtime ended before it started: {status}"),
                        ));
                    }
                    Ok(None) => {
                        return Err((
                            "jailer",
                            "the jailer exited without starting the runtime".into(),
                        ));
                    }
                    Err(e) => return Err(("jailer", format!("reading the control socket: {e}"))),
                }
            }
        })
        .await
        .map_err(|_| {
            (
                "jailer",
                format!("the runtime did not start within {START_TIMEOUT:?}"),
            )
        })?;
        started?;
        // Refill the disk pool now, not while this sandbox was being set up:
        // formatting a disk (~10 ms of CPU) would have competed with it.
        let inner = &self.inner;
        if inner.disks.wants_refill() {
            let refill = Arc::clone(inner);
            drop(tokio::task::spawn_blocking(move || refill.disks.refill()));
        }
        tracing::debug!(
            sandbox = %id,
            pooled = in_cgroup,
            disk_us = t_disk.as_micros() as u64,
            preinit,
            jailer_ready_us = t_forked.as_micros() as u64,
            network_us = t_net.as_micros() as u64,
            listening_us = t_listening.as_micros() as u64,
            started_us = t0.elapsed().as_micros() as u64,
            "sandbox start phases"
        );
        let listener = listener.ok_or(("listener", "the jailer sent no listener".to_owned()))?;

        let (status_tx, status_rx) = tokio::sync::watch::channel(None);
        let (starts_tx, starts_rx) = tokio::sync::watch::channel(0);
        // Detached: it ends by itself once the sandbox is gone.
        drop(tokio::spawn(watch(
            id.clone(),
            control,
            status_tx,
            starts_tx,
        )));
        Ok(ProcessSandbox {
            id: id.clone(),
            listener: Some(listener),
            output: Some(out_read),
            status: status_rx,
            starts: starts_rx,
            commands,
            host_uid: real_uid,
            res: Resources::default(),
            preinit: preinit.then(|| Box::new(config)),
        })
    }

    /// Hands the pre-initialised sandbox `sb` to the function of `spec`:
    /// its cgroup limited, its code and layers cloned with `open_tree` and
    /// passed to C with `Specialise`, its cgroup renamed to the sandbox id
    /// meanwhile (on a blocking thread: after the machine has been idle a
    /// rename in every v1 hierarchy takes 1-2 ms, which C's work now hides).
    /// Returns once the runtime has its function (C answered `Started`) and
    /// the cgroup has its name.
    async fn specialise(
        &self,
        sb: &mut ProcessSandbox,
        spec: &SandboxSpec,
    ) -> Result<(), (&'static str, String)> {
        let t0 = Instant::now();
        check_id(&spec.id)?;
        let inner = &self.inner;
        let Some(base) = sb.preinit.take() else {
            return Err(("specialise", "not a pre-initialised sandbox".into()));
        };
        let memory_bytes = spec.limits.memory_mb.saturating_mul(1 << 20);
        // The function's limits hold before any of its code runs.
        if let Some(cg) = sb.res.cgroups.as_ref() {
            cg.set_limits(memory_bytes, spec.limits.max_pids, inner.config.cpu_limit)
                .map_err(|e| ("cgroup", e.to_string()))?;
        }
        sb.res.id = spec.id.clone();
        sb.id = spec.id.clone();
        let t_cgroup = t0.elapsed();
        let clone = |dir: &Path| {
            mount_api::clone_tree(dir)
                .map_err(|e| ("specialise", format!("open_tree {}: {e}", dir.display())))
        };
        let code = clone(&spec.code_dir)?;
        let opt = spec.opt_dir.as_deref().map(clone).transpose()?;
        let config = JailerConfig {
            id: spec.id.clone(),
            code_dir: spec.code_dir.clone(),
            runtime_dir: spec.runtime_dir.clone(),
            opt_dir: spec.opt_dir.clone(),
            argv: spec.argv.clone(),
            env: spec.env.clone(),
            cwd: spec.cwd.clone(),
            hostname: spec.hostname.clone(),
            max_fds: spec.limits.max_fds,
            max_pids: spec.limits.max_pids,
            shm_bytes: memory_bytes,
            preinit: false,
            ..*base
        };
        let mut fds = vec![code.as_raw_fd()];
        fds.extend(opt.as_ref().map(AsRawFd::as_raw_fd));
        let mut starts = sb.starts.clone();
        let before = *starts.borrow_and_update();
        send_command(
            sb.commands.as_fd(),
            &Command::Specialise {
                config: Box::new(config),
            },
            &fds,
        )
        .map_err(|e| ("specialise", format!("sending the function: {e}")))?;
        drop((code, opt));
        // The name only matters to the host (C is in the cgroup already, and
        // the sandbox sees its cgroup as `/`): renamed while C works. The
        // set is taken out of `sb` meanwhile and always put back, so that
        // the sandbox's teardown finds it whatever happens.
        let rename = sb.res.cgroups.take().map(|mut cg| {
            let id = spec.id.clone();
            tokio::task::spawn_blocking(move || {
                let t = Instant::now();
                let renamed = cg.rename(&id);
                (cg, renamed, t.elapsed())
            })
        });
        let mut status = sb.status.clone();
        let done = tokio::time::timeout(START_TIMEOUT, async {
            tokio::select! {
                r = starts.wait_for(|n| *n > before) => r.is_ok(),
                _ = status.wait_for(Option::is_some) => false,
            }
        })
        .await;
        let mut t_rename = Duration::ZERO;
        if let Some(task) = rename {
            let (cg, renamed, took) = task
                .await
                .map_err(|e| ("cgroup", format!("the rename task failed: {e}")))?;
            sb.res.cgroups = Some(cg);
            renamed.map_err(|e| ("cgroup", e.to_string()))?;
            t_rename = took;
        }
        match done {
            Ok(true) => {}
            Ok(false) => {
                return Err((
                    "specialise",
                    "the sandbox ended instead of taking its function".into(),
                ));
            }
            Err(_) => {
                return Err((
                    "specialise",
                    format!("the sandbox did not take its function within {START_TIMEOUT:?}"),
                ));
            }
        }
        tracing::debug!(
            sandbox = %spec.id,
            pooled_runtime = true,
            cgroup_us = t_cgroup.as_micros() as u64,
            rename_us = t_rename.as_micros() as u64,
            started_us = t0.elapsed().as_micros() as u64,
            "sandbox start phases"
        );
        Ok(())
    }
}

/// The empty directory in the state dir on which every jailer, in its own
/// mount namespace, mounts its sandbox's root tmpfs; one for all sandboxes,
/// so that a start makes no directory on the host's file system. Not a
/// valid sandbox id (ids do not start with a dot).
const ROOT_MOUNTPOINT: &str = ".root";

/// Sandbox ids name cgroups and scratch dirs.
fn check_id(id: &str) -> Result<(), (&'static str, String)> {
    if id.is_empty()
        || id.len() > 128
        || id.starts_with('.')
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err((
            "validate",
            "id must be 1-128 characters of [A-Za-z0-9._-], not starting with a dot".into(),
        ));
    }
    Ok(())
}

/// Whether a pooled sandbox of `profile` can become the sandbox of `spec`:
/// same runtime start, `/tmp` size, process and descriptor limits, Runtime
/// API port; at least the pool's memory (limits only grow).
fn matches_profile(profile: &PreInit, spec: &SandboxSpec) -> bool {
    spec.preinit.as_ref() == Some(profile)
        && spec.runtime_dir.as_deref() == Some(profile.runtime_dir.as_path())
        && spec.runtime_api_port == profile.runtime_api_port
        && spec.limits.tmp_mb == profile.limits.tmp_mb
        && spec.limits.max_pids == profile.limits.max_pids
        && spec.limits.max_fds == profile.limits.max_fds
        && spec.limits.memory_mb >= profile.limits.memory_mb
}

impl Inner {
    /// A ready pre-initialised sandbox for `spec`, if its pool has one
    /// alive. Schedules the pool's refill.
    fn take_runtime(self: &Arc<Self>, spec: &SandboxSpec) -> Option<ProcessSandbox> {
        let pre = spec.preinit.as_ref()?;
        let taken = {
            let mut pools = lock(&self.runtimes);
            let pool = pools.get_mut(&pre.pool)?;
            if !matches_profile(&pool.profile, spec) {
                return None;
            }
            let mut taken = None;
            while let Some(sb) = pool.ready.pop() {
                // A runtime that died while pooled (its exit is published).
                if sb.status.borrow().is_none() {
                    taken = Some(sb);
                    break;
                }
                tracing::debug!(sandbox = %sb.id, "discarding a pooled runtime sandbox that ended");
            }
            taken
        };
        Inner::schedule_runtime_refill(self, RUNTIME_REFILL_DELAY);
        taken
    }

    /// Refills the runtime pools after `delay`, in the background.
    fn schedule_runtime_refill(self: &Arc<Self>, delay: Duration) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let inner = Arc::clone(self);
        drop(handle.spawn(async move {
            tokio::time::sleep(delay).await;
            Inner::refill_runtimes(&inner).await;
        }));
    }

    async fn refill_runtimes(self: &Arc<Self>) {
        if self.runtimes_refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        let backend = ProcessBackend {
            inner: Arc::clone(self),
        };
        loop {
            // The first pool short of sandboxes (and not failing).
            let now = Instant::now();
            let wanted = lock(&self.runtimes)
                .values()
                .find_map(|p| p.wants_one(now).then(|| p.profile.clone()));
            let Some(profile) = wanted else { break };
            let id = format!(
                "rt-{}-{}-{}",
                profile.pool,
                std::process::id(),
                self.pool_seq.fetch_add(1, Ordering::Relaxed)
            );
            let spec = SandboxSpec {
                id: id.clone(),
                code_dir: profile.runtime_dir.clone(),
                runtime_dir: Some(profile.runtime_dir.clone()),
                opt_dir: None,
                argv: profile.argv.clone(),
                env: profile.env.clone(),
                cwd: PathBuf::from("/var/task"),
                limits: profile.limits,
                runtime_api_port: profile.runtime_api_port,
                hostname: "sandbox".into(),
                preinit: None,
            };
            let t0 = Instant::now();
            let mut res = Resources::default();
            res.id = id.clone();
            let made = backend.spawn_inner(&spec, &mut res, true).await;
            let mut pools = lock(&self.runtimes);
            let Some(pool) = pools.get_mut(&profile.pool) else {
                break;
            };
            match made {
                Ok(mut sb) => {
                    sb.res = res;
                    pool.failures = 0;
                    tracing::debug!(
                        sandbox = %id,
                        pool = %profile.pool,
                        elapsed_us = t0.elapsed().as_micros() as u64,
                        "pre-initialised a runtime sandbox"
                    );
                    if pool.profile == profile {
                        pool.ready.push(sb);
                    }
                }
                Err((step, message)) => {
                    pool.failures += 1;
                    pool.failed_at = Some(Instant::now());
                    tracing::warn!(pool = %profile.pool, step, %message, "could not pre-initialise a runtime sandbox");
                }
            }
        }
        self.runtimes_refilling.store(false, Ordering::Release);
    }
}

#[async_trait]
impl SandboxBackend for ProcessBackend {
    fn name(&self) -> &'static str {
        "process"
    }

    fn prepare_runtimes(&self, profiles: Vec<(PreInit, usize)>) {
        if let Some(why) = self.runtime_pool_blocker() {
            tracing::info!(reason = %why, "no pre-initialised runtime sandboxes: every cold start starts its runtime from scratch");
            return;
        }
        {
            let mut pools = lock(&self.inner.runtimes);
            pools.clear();
            for (profile, size) in profiles {
                if size == 0 {
                    continue;
                }
                tracing::info!(pool = %profile.pool, size, "keeping pre-initialised runtime sandboxes ready");
                pools.insert(
                    profile.pool.clone(),
                    RuntimePool {
                        profile,
                        size,
                        ready: Vec::new(),
                        failures: 0,
                        failed_at: None,
                    },
                );
            }
        }
        Inner::schedule_runtime_refill(&self.inner, Duration::ZERO);
    }

    fn runtime_pool_unavailable(&self) -> Option<String> {
        self.runtime_pool_blocker()
    }

    async fn spawn(&self, spec: SandboxSpec) -> Result<Box<dyn Sandbox>, SandboxError> {
        let started = Instant::now();
        if let Some(mut pooled) = self.inner.take_runtime(&spec) {
            let pooled_id = pooled.id.clone();
            match self.specialise(&mut pooled, &spec).await {
                Ok(()) => {
                    tracing::debug!(sandbox = %spec.id, pooled_runtime = true, elapsed_us = started.elapsed().as_micros() as u64, "sandbox started");
                    return Ok(Box::new(pooled));
                }
                // The function still starts, from scratch.
                Err((step, message)) => {
                    tracing::warn!(sandbox = %spec.id, pooled = %pooled_id, step, %message, "could not specialise a pre-initialised runtime sandbox; starting one from scratch");
                    drop(pooled);
                }
            }
        }
        let mut res = Resources::default();
        res.id = spec.id.clone();
        match self.spawn_inner(&spec, &mut res, false).await {
            Ok(mut sandbox) => {
                sandbox.res = res;
                tracing::debug!(sandbox = %spec.id, elapsed_us = started.elapsed().as_micros() as u64, "sandbox started");
                Ok(Box::new(sandbox))
            }
            Err((step, message)) => {
                tracing::debug!(sandbox = %spec.id, step, %message, "sandbox creation failed");
                // Dropping `res` kills and removes whatever was created.
                drop(res);
                Err(SandboxError::Create {
                    id: spec.id,
                    step,
                    message,
                })
            }
        }
    }
}

/// Receives one report (and a descriptor, if one came along). `None` on EOF.
/// Waits for J's [`Report::Forked`] (J has unshared its namespaces).
async fn wait_forked(control: &AsyncFd<OwnedFd>) -> Result<(), (&'static str, String)> {
    loop {
        match recv_report(control).await {
            Ok(Some((Report::Forked { .. }, _))) => return Ok(()),
            Ok(Some((Report::Error { step, message }, _))) => {
                return Err((step_name(&step), message));
            }
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err((
                    "jailer",
                    "the jailer exited before it forked the sandbox init".into(),
                ));
            }
            Err(e) => return Err(("jailer", format!("reading the control socket: {e}"))),
        }
    }
}

async fn recv_report(control: &AsyncFd<OwnedFd>) -> io::Result<Option<(Report, Option<OwnedFd>)>> {
    loop {
        let mut guard = control.readable().await?;
        match guard.try_io(|fd| recv_once(fd.get_ref().as_fd().as_raw_fd(), MsgFlags::MSG_DONTWAIT))
        {
            Ok(result) => return result,
            Err(_would_block) => continue,
        }
    }
}

/// Receives one report; blocks unless `flags` has `MSG_DONTWAIT`.
fn recv_once(fd: RawFd, flags: MsgFlags) -> io::Result<Option<(Report, Option<OwnedFd>)>> {
    let d = recv_datagram(fd, MAX_REPORT, flags)?;
    if d.fds_cut {
        return Err(io::Error::from(nix::errno::Errno::ENOBUFS));
    }
    if d.bytes.is_empty() {
        return Ok(None);
    }
    let report = serde_json::from_slice(&d.bytes)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    // Extra descriptors are closed when dropped.
    Ok(Some((report, d.fds.into_iter().next())))
}

/// Follows a started sandbox: counts runtime (re)starts, reads reports until
/// the control socket closes (all of J, C and R are gone), reaps the jailer
/// and publishes R's status.
async fn watch(
    id: String,
    control: AsyncFd<OwnedFd>,
    status_tx: tokio::sync::watch::Sender<Option<ExitStatus>>,
    starts_tx: tokio::sync::watch::Sender<u64>,
) {
    // If nothing reports an end, the sandbox was killed.
    let mut status = ExitStatus::Signal(9);
    loop {
        match recv_report(&control).await {
            Ok(Some((Report::Exited { status: s }, _))) => status = s,
            Ok(Some((Report::Started, _))) => starts_tx.send_modify(|n| *n += 1),
            Ok(Some((Report::Error { step, message }, _))) => {
                tracing::debug!(sandbox = %id, step, %message, "restarting the runtime failed");
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    // EOF means every holder of the socket (J, C, R before exec) has
    // exited; the zygote reaps J.
    drop(control);
    let _ = status_tx.send(Some(status));
}

/// A request to the launcher thread: a command and where to send its child.
type Launch = (
    std::process::Command,
    std::sync::mpsc::SyncSender<io::Result<std::process::Child>>,
);

/// Starts `cmd` from one thread that lives as long as the process.
///
/// A parent-death signal (the jailer zygote arms it itself, first thing)
/// fires when the *thread* that started the child ends, not the process: a
/// zygote started by a tokio blocking thread (which exits when idle) or a
/// test thread would be killed with it, and its jailers with it. The
/// launcher thread never returns, so the signal fires only when the server
/// dies.
fn launch(cmd: std::process::Command) -> io::Result<std::process::Child> {
    static LAUNCHER: std::sync::OnceLock<Option<std::sync::mpsc::Sender<Launch>>> =
        std::sync::OnceLock::new();
    let sender = LAUNCHER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Launch>();
        std::thread::Builder::new()
            .name("stratus-jailer-launcher".into())
            .spawn(move || {
                // The static sender never drops, so this loop never ends.
                for (mut cmd, reply) in rx {
                    let child = cmd.spawn();
                    // Closes the parent's copies of the child's stdio first.
                    drop(cmd);
                    let _ = reply.send(child);
                }
            })
            .ok()
            .map(|_| tx)
    });
    let sender = sender
        .as_ref()
        .ok_or_else(|| io::Error::other("the jailer launcher thread could not be started"))?;
    let (reply_tx, reply_rx) = std::sync::mpsc::sync_channel(1);
    sender
        .send((cmd, reply_tx))
        .map_err(|_| io::Error::other("the jailer launcher thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("the jailer launcher thread is gone"))?
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Kernel objects of one sandbox; released on drop.
#[derive(Debug, Default)]
struct Resources {
    id: String,
    /// J (a child of the jailer zygote, not of the server).
    pidfd: Option<OwnedFd>,
    cgroups: Option<CgroupSet>,
    scratch: Option<PathBuf>,
    /// Detached after everything above is gone (fields drop after `drop`).
    disk: Option<TmpDisk>,
    uid: Option<UidLease>,
    /// The sandbox's address on the bridge (outbound networking); freed
    /// after the jailer is gone (its veth dies with its network namespace).
    net: Option<Attachment>,
}

impl Resources {
    /// Kills everything inside the sandbox (C, R and descendants). J is not in
    /// the cgroup: it reaps C, reports and exits by itself.
    fn kill(&self) {
        match &self.cgroups {
            Some(cg) => cg.kill_all(),
            None => self.kill_jailer(),
        }
    }

    /// Kills J itself (C follows through its parent-death signal).
    fn kill_jailer(&self) {
        if let Some(pidfd) = &self.pidfd {
            // SAFETY: pidfd_send_signal with a valid pidfd, a signal number and no siginfo.
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    pidfd.as_raw_fd(),
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                );
            }
        }
    }

    /// Waits (blocking, bounded) until J has exited (its pidfd is readable).
    fn reap_jailer(&self, until: Instant) -> bool {
        let Some(pidfd) = &self.pidfd else {
            return true;
        };
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            let mut fds = [nix::poll::PollFd::new(
                pidfd.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)) {
                Ok(n) if n > 0 => return true,
                Err(nix::errno::Errno::EINTR) => continue,
                // A pidfd that cannot be polled: nothing to wait on.
                Err(_) => return true,
                Ok(_) if left.is_zero() => return false,
                Ok(_) => {}
            }
        }
    }
}

impl Drop for Resources {
    fn drop(&mut self) {
        self.kill();
        let now = Instant::now();
        if !self.reap_jailer(now + TEARDOWN_PATIENCE / 2) {
            tracing::warn!(sandbox = %self.id, "jailer did not exit after the sandbox was killed; killing it");
            self.kill_jailer();
            self.reap_jailer(now + TEARDOWN_PATIENCE);
        }
        if let Some(cg) = &mut self.cgroups {
            // Stragglers (if any) are killed again before removal.
            cg.kill_all();
            if let Err(e) = cg.remove(Duration::from_millis(500)) {
                tracing::warn!(sandbox = %self.id, error = %e, "could not remove sandbox cgroup");
            }
        }
        if let Some(dir) = &self.scratch
            && let Err(e) = std::fs::remove_dir_all(dir)
        {
            tracing::warn!(sandbox = %self.id, dir = %dir.display(), error = %e, "could not remove scratch dir");
        }
        // The uid lease is released when `self.uid` drops, after everything using it is gone.
    }
}

/// One running sandbox of the process backend.
#[derive(Debug)]
pub struct ProcessSandbox {
    id: String,
    listener: Option<std::net::TcpListener>,
    output: Option<OwnedFd>,
    status: tokio::sync::watch::Receiver<Option<ExitStatus>>,
    /// Runtime restarts completed ([`Sandbox::restart_runtime`]).
    starts: tokio::sync::watch::Receiver<u64>,
    /// The control socket, for commands to the sandbox init.
    commands: OwnedFd,
    /// Host uid its processes run as.
    host_uid: u32,
    res: Resources,
    /// A pre-initialised runtime sandbox not yet handed to a function: the
    /// configuration it was started with.
    preinit: Option<Box<JailerConfig>>,
}

impl ProcessSandbox {
    /// Host uid the sandbox's processes run as (the server's own in
    /// rootless mode without subordinate ids).
    pub fn host_uid(&self) -> Option<u32> {
        self.res.uid.as_ref().map(|_| self.host_uid)
    }

    /// Cgroup directories of the sandbox.
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        self.res
            .cgroups
            .as_ref()
            .map(|c| c.dirs().to_vec())
            .unwrap_or_default()
    }

    /// The sandbox's scratch directory on the host.
    pub fn scratch_dir(&self) -> Option<&Path> {
        self.res.scratch.as_deref()
    }
}

#[async_trait]
impl Sandbox for ProcessSandbox {
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
            Ok(status) => status.unwrap_or(ExitStatus::Signal(9)),
            // The watcher is gone (runtime shutting down): treat as killed.
            Err(_) => ExitStatus::Signal(9),
        }
    }

    fn kill(&self) {
        self.res.kill();
    }

    async fn restart_runtime(&self) -> Result<(), SandboxError> {
        let failed = |message: String| SandboxError::Io {
            id: self.id.clone(),
            message,
        };
        let mut starts = self.starts.clone();
        let before = *starts.borrow_and_update();
        send_command(self.commands.as_fd(), &Command::RestartRuntime, &[]).map_err(|e| {
            failed(format!(
                "asking the sandbox init to restart the runtime: {e}"
            ))
        })?;
        let mut status = self.status.clone();
        let restarted = tokio::time::timeout(START_TIMEOUT, async {
            tokio::select! {
                r = starts.wait_for(|n| *n > before) => r.is_ok(),
                _ = status.wait_for(Option::is_some) => false,
            }
        })
        .await;
        match restarted {
            Ok(true) => Ok(()),
            Ok(false) => Err(failed(
                "the sandbox ended instead of restarting its runtime".into(),
            )),
            Err(_) => Err(failed(format!(
                "the runtime did not restart within {START_TIMEOUT:?}"
            ))),
        }
    }

    fn usage(&self) -> SandboxUsage {
        let (peak, current) = self
            .res
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
        if let Some(cg) = &self.res.cgroups {
            cg.reset_peak();
        }
    }
}

/// Makes `path` and everything below it readable (and dirs searchable) by
/// everyone, which the sandbox uids need for code and runtime dirs.
pub fn make_world_readable(path: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mut perms = meta.permissions();
    let add = if meta.is_dir() { 0o555 } else { 0o444 };
    perms.set_mode(perms.mode() | add);
    std::fs::set_permissions(path, perms)?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            make_world_readable(&entry?.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod state_dir_tests {
    use super::*;

    #[test]
    fn the_sweep_removes_scratch_dirs_and_keeps_the_disks_and_the_root_mountpoint() {
        let state = tempfile::tempdir().expect("state dir");
        let s = state.path();
        for d in ["disks/server-1", ".root", "0123abcd/tmp", "leak-0/tmp"] {
            std::fs::create_dir_all(s.join(d)).expect("mkdir");
        }
        std::fs::write(s.join("leak-0/tmp/file"), b"x").expect("write");
        std::fs::write(s.join("stray"), b"x").expect("write");
        assert_eq!(sweep_scratch(s), 3);
        let mut left: Vec<String> = std::fs::read_dir(s)
            .expect("read")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".root", "disks"]);
        assert!(s.join("disks/server-1").is_dir());
        assert_eq!(sweep_scratch(s), 0);
    }

    #[test]
    fn ids_that_could_name_another_state_dir_entry_are_refused() {
        for ok in ["0123abcdef", "leak-0", "a.b_c-d", &"x".repeat(128)] {
            assert!(check_id(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            ROOT_MOUNTPOINT,
            ".hidden",
            "a/b",
            "a b",
            &"x".repeat(129),
        ] {
            let err = check_id(bad).expect_err(bad);
            assert_eq!(err.0, "validate", "{bad}");
        }
    }
}

#[cfg(test)]
mod pool_tests {
    use super::*;
    use stratus_sandbox::SandboxLimits;

    fn profile() -> PreInit {
        PreInit {
            pool: "python".into(),
            argv: vec![
                "/usr/bin/python3".into(),
                "/var/runtime/python/bootstrap.py".into(),
            ],
            env: std::collections::BTreeMap::from([("PATH".into(), "/usr/bin".into())]),
            runtime_dir: "/srv/runtime".into(),
            runtime_api_port: 9001,
            limits: SandboxLimits {
                memory_mb: 128,
                tmp_mb: 512,
                max_pids: 1024,
                max_fds: 1024,
            },
        }
    }

    fn spec_for(p: &PreInit) -> SandboxSpec {
        SandboxSpec {
            id: "s".into(),
            code_dir: "/srv/code".into(),
            runtime_dir: Some(p.runtime_dir.clone()),
            opt_dir: None,
            argv: p.argv.clone(),
            env: p.env.clone(),
            cwd: "/var/task".into(),
            limits: SandboxLimits {
                memory_mb: 1024,
                ..p.limits
            },
            runtime_api_port: 9001,
            hostname: "h".into(),
            preinit: Some(p.clone()),
        }
    }

    #[test]
    fn only_a_spec_of_the_same_profile_and_limits_takes_a_pooled_sandbox() {
        let p = profile();
        assert!(matches_profile(&p, &spec_for(&p)));
        let mut s = spec_for(&p);
        s.preinit = None;
        assert!(!matches_profile(&p, &s), "not offered");
        let mut other = p.clone();
        other.argv[0] = "/usr/bin/python3.12".into();
        assert!(!matches_profile(&p, &spec_for(&other)), "another program");
        for change in [
            |s: &mut SandboxSpec| s.limits.tmp_mb = 1024,
            |s: &mut SandboxSpec| s.limits.max_pids = 10,
            |s: &mut SandboxSpec| s.limits.max_fds = 10,
            |s: &mut SandboxSpec| s.limits.memory_mb = 64,
            |s: &mut SandboxSpec| s.runtime_api_port = 9002,
            |s: &mut SandboxSpec| s.runtime_dir = Some("/elsewhere".into()),
        ] {
            let mut s = spec_for(&p);
            change(&mut s);
            assert!(!matches_profile(&p, &s), "{s:?}");
        }
    }

    #[test]
    fn a_failing_pool_pauses_then_retries() {
        let now = Instant::now();
        let mut pool = RuntimePool {
            profile: profile(),
            size: 1,
            ready: Vec::new(),
            failures: 0,
            failed_at: None,
        };
        assert!(pool.wants_one(now));
        pool.failures = RUNTIME_POOL_MAX_FAILURES;
        pool.failed_at = Some(now);
        assert!(!pool.wants_one(now + Duration::from_secs(1)));
        assert!(pool.wants_one(now + RUNTIME_POOL_RETRY_AFTER));
        pool.size = 0;
        assert!(!pool.wants_one(now + RUNTIME_POOL_RETRY_AFTER));
    }
}
