//! The jailer: the small single-threaded code that builds one sandbox and
//! becomes its runtime.
//!
//! Three processes take part (see the crate docs for the whole picture):
//! - **J**, the jailer as forked by the jailer zygote (`zygote` module;
//!   host root; for a rootless
//!   server it first enters a user namespace where the server's uid is 0,
//!   see [`enter_user_namespace`]): compiles the
//!   seccomp policy, unshares the mount, network, UTS, IPC and pid
//!   namespaces, brings up `lo` and forks C (reporting C's pid) — all
//!   before it reads its [`JailerConfig`] from stdin, so a pre-warmed
//!   jailer has this done ahead of time. Then it binds the Runtime API
//!   listener *inside* the new network namespace, passes it to the server,
//!   hands the config on to C and waits for C. J never joins the sandbox's
//!   cgroup, so killing the cgroup never orphans C.
//! - **C**, pid 1 of the new pid namespace: waits for its config from J,
//!   joins the sandbox's cgroups unless the server already moved it there,
//!   enters a new cgroup namespace, assembles
//!   the root filesystem, pivots into it, forks R, drops to the sandbox's
//!   host uid and reaps children until R ends, whose status it reports
//!   before it exits (ending the sandbox). On the server's
//!   [`Command::RestartRuntime`] it kills every other process of the
//!   sandbox and forks a fresh R instead: the mounts (and `/tmp`), cgroup
//!   and network stay, memory and processes do not. A pre-initialised
//!   sandbox ([`JailerConfig::preinit`]) is built without code; C keeps its
//!   privileges until [`Command::Specialise`] brings the function (code and
//!   layers as detached mounts), then drops them and hands R its
//!   environment through a pipe (see [`specialise`]).
//! - **R**, the runtime: drops to the sandbox uid, enters its own user
//!   namespace (seeing itself as uid 993), sets rlimits, installs seccomp and
//!   execs the runtime with exactly the configured environment.
//!
//! Every failure before exec is printed to stderr (the sandbox output) and
//! reported on the control socket as [`Report::Error`].

use std::convert::Infallible;
use std::ffi::CString;
use std::fs;
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, symlink};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl, open};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::{CloneFlags, unshare};
use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::MsgFlags;
use nix::sys::stat::Mode;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{
    ForkResult, Gid, Pid, Uid, chdir, dup2, execve, fork, pipe2, pivot_root, sethostname,
};
use nix::unistd::{setgroups, setresgid, setresuid};
use stratus_sandbox::ExitStatus;

use crate::protocol::{
    CONTROL_FD, Command, JailerConfig, MAX_COMMAND, PARENT_PID_ENV, PREINIT_FD_ENV, Protection,
    Report, SANDBOX_GID, SANDBOX_UID, Specialisation, UsernsSetup, recv_datagram, send_report,
};
use crate::seccomp::{DEFAULT_POLICY, Policy};

/// Longest error message sent to the server.
const MAX_MESSAGE: usize = 4096;

/// A failed setup step.
#[derive(Debug, thiserror::Error)]
pub enum JailerError {
    /// A system call failed.
    #[error("{what}: {source}")]
    Sys {
        /// The step (see `protocol::step_name`).
        step: &'static str,
        /// What was attempted.
        what: String,
        /// The errno.
        source: Errno,
    },
    /// An I/O operation failed.
    #[error("{what}: {source}")]
    Io {
        /// The step.
        step: &'static str,
        /// What was attempted.
        what: String,
        /// The OS error.
        source: io::Error,
    },
    /// The input was unusable.
    #[error("{message}")]
    Invalid {
        /// The step.
        step: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl JailerError {
    fn step(&self) -> &'static str {
        match self {
            JailerError::Sys { step, .. }
            | JailerError::Io { step, .. }
            | JailerError::Invalid { step, .. } => step,
        }
    }
}

trait Ctx<T> {
    fn ctx(self, step: &'static str, what: impl FnOnce() -> String) -> Result<T, JailerError>;
}

impl<T> Ctx<T> for nix::Result<T> {
    fn ctx(self, step: &'static str, what: impl FnOnce() -> String) -> Result<T, JailerError> {
        self.map_err(|source| JailerError::Sys {
            step,
            what: what(),
            source,
        })
    }
}

impl<T> Ctx<T> for io::Result<T> {
    fn ctx(self, step: &'static str, what: impl FnOnce() -> String) -> Result<T, JailerError> {
        self.map_err(|source| JailerError::Io {
            step,
            what: what(),
            source,
        })
    }
}

/// Entry point of the jailer. The `stratus` binary must call this first thing
/// in `main` when invoked as `stratus __sandbox-init`, before any thread or
/// async runtime exists (the jailer forks and must be single-threaded).
/// The program runs as the jailer zygote, which forks one jailer per
/// sandbox (see the `zygote` module).
pub fn jailer_main() -> ! {
    crate::zygote::zygote_main()
}

/// J (forked by the zygote), once its control socket is at [`CONTROL_FD`],
/// its config pipe on stdin and the sandbox's output on stdout and stderr:
/// builds the sandbox and exits with J's code. `userns`: the user namespace
/// a rootless server has J enter first; `policy`: the seccomp policy, as the
/// zygote compiled it once for all its jailers ([`compile_policy`]).
pub(crate) fn run(userns: Option<UsernsSetup>, policy: Result<&Policy, &str>) -> ! {
    // SAFETY: the caller put the control socket at CONTROL_FD (a dup2) and
    // nothing else in this process owns that descriptor.
    let ctl = unsafe { OwnedFd::from_raw_fd(CONTROL_FD) };
    // The control socket must not leak into the runtime.
    if let Err(source) = fcntl(ctl.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)) {
        let err = JailerError::Sys {
            step: "stdio",
            what: "marking the control socket close-on-exec".into(),
            source,
        };
        fail(ctl.as_fd(), &err);
    }
    match jail(ctl.as_fd(), userns.as_ref(), policy) {
        Ok(code) => std::process::exit(code),
        Err(e) => fail(ctl.as_fd(), &e),
    }
}

/// The seccomp policy of this architecture, compiled (what failed if not).
pub(crate) fn compile_policy() -> Result<Policy, String> {
    DEFAULT_POLICY
        .ok_or_else(|| format!("no seccomp policy for {}", std::env::consts::ARCH))
        .and_then(|json| Policy::compile(json).map_err(|e| e.to_string()))
}

/// The server's pid, from [`PARENT_PID_ENV`].
pub(crate) fn parent_pid_from_env() -> Result<i32, String> {
    std::env::var(PARENT_PID_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
        .ok_or_else(|| format!("no parent pid in {PARENT_PID_ENV}"))
}

/// Arms the parent-death signal (SIGKILL) and checks the parent is still
/// `parent`: it may have died before the signal was armed.
///
/// J dies with the server (and C with J, R with C's pid namespace), so a
/// crashed server leaves no sandbox running. The server starts the zygote
/// from a thread that lives as long as it does (the signal follows the
/// parent *thread*); the single-threaded zygote is J's parent.
pub(crate) fn arm_parent_death(parent: i32) -> Result<(), String> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(|e| format!("arming the parent-death signal: {e}"))?;
    if nix::unistd::getppid().as_raw() != parent {
        return Err(format!("the server (pid {parent}) exited"));
    }
    Ok(())
}

/// Reports a failed step on stderr and the control socket, then exits.
fn fail(ctl: BorrowedFd<'_>, err: &JailerError) -> ! {
    let mut message = err.to_string();
    if message.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    eprintln!("stratus-jailer: {}: {message}", err.step());
    let _ = send_report(
        ctl,
        &Report::Error {
            step: err.step().to_owned(),
            message,
        },
        None,
    );
    // `_exit`: no destructors or atexit handlers in forked children.
    // SAFETY: _exit is always safe to call; it ends the process immediately.
    unsafe { libc::_exit(127) }
}

/// Reads everything from `fd` (stdin for J, the config pipe for C).
fn read_all(fd: BorrowedFd<'_>) -> Result<Vec<u8>, JailerError> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        match nix::unistd::read(fd.as_raw_fd(), &mut chunk) {
            Ok(0) => return Ok(buf),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e).ctx("config", || "reading the config".into()),
        }
    }
}

fn parse_config(raw: &[u8]) -> Result<JailerConfig, JailerError> {
    let cfg: JailerConfig = serde_json::from_slice(raw).map_err(|e| JailerError::Invalid {
        step: "config",
        message: format!("parsing config: {e}"),
    })?;
    // Only a pre-initialised sandbox may wait for its program.
    if cfg.argv.is_empty() && !cfg.preinit {
        return Err(JailerError::Invalid {
            step: "config",
            message: "argv is empty".into(),
        });
    }
    Ok(cfg)
}

/// Points fd 0 at /dev/null: stdin is not for the runtime (nor the zygote's).
pub(crate) fn stdin_to_null() -> Result<(), JailerError> {
    let null = open(
        "/dev/null",
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ctx("stdio", || "opening /dev/null".into())?;
    // SAFETY: open just returned this new descriptor; we are its only owner
    // (closed once fd 0 is a copy of it).
    let null = unsafe { OwnedFd::from_raw_fd(null) };
    dup2(null.as_raw_fd(), 0).ctx("stdio", || "redirecting stdin".into())?;
    Ok(())
}

fn write_file(step: &'static str, path: &str, value: &str) -> Result<(), JailerError> {
    fs::write(path, value).ctx(step, || format!("writing {value:?} to {path}"))
}

/// J: runs as the zygote's child; returns J's exit code.
fn jail(
    ctl: BorrowedFd<'_>,
    userns: Option<&UsernsSetup>,
    policy: Result<&Policy, &str>,
) -> Result<i32, JailerError> {
    // Everything up to the listener is independent of the config, so a
    // pre-warmed jailer has done it before its config arrives.
    let policy = policy.map_err(|message| JailerError::Invalid {
        step: "seccomp",
        message: message.to_owned(),
    })?;
    // J and C should never be the OOM killer's choice; R resets its own value.
    // Lowering needs CAP_SYS_RESOURCE, which some containers drop: then J and
    // C keep the server's value and are still far smaller than any runtime.
    match fs::write("/proc/self/oom_score_adj", "-1000") {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {}
        Err(e) => {
            return Err(e).ctx("oom", || "writing -1000 to /proc/self/oom_score_adj".into());
        }
    }
    if let Some(setup) = userns {
        enter_user_namespace(setup)?;
    }
    unshare(
        CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWNET
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWPID,
    )
    .ctx("namespaces", || "unshare".into())?;
    loopback_up()?;

    // C is forked now too, so a pre-warmed sandbox's init already sits in
    // the sandbox's cgroup (the server moves it there ahead of time: a slow
    // migration, off the critical path). J itself never joins that cgroup,
    // so killing the cgroup never orphans C. C gets its config from J.
    let (cfg_rd, cfg_wr) =
        pipe2(OFlag::O_CLOEXEC).ctx("fork", || "creating the config pipe".into())?;
    // SAFETY: the jailer is single-threaded (jailer_main runs before any thread
    // is started), so the child may run arbitrary code after fork.
    let child = match unsafe { fork() }.ctx("fork", || "forking the sandbox init".into())? {
        ForkResult::Child => {
            drop(cfg_wr);
            let result = stdin_to_null()
                .and_then(|()| read_all(cfg_rd.as_fd()))
                .and_then(|raw| parse_config(&raw))
                .and_then(|cfg| container_init(ctl, &cfg, policy));
            match result {
                Ok(never) => match never {},
                Err(e) => fail(ctl, &e),
            }
        }
        ForkResult::Parent { child } => child,
    };
    drop(cfg_rd);
    send_report(
        ctl,
        &Report::Forked {
            pid: child.as_raw(),
        },
        None,
    )
    .ctx("fork", || "reporting the sandbox init".into())?;

    let raw = read_all(io::stdin().as_fd())?;
    stdin_to_null()?;
    let cfg = parse_config(&raw)?;
    if let Some(net) = &cfg.network {
        crate::net::configure_sandbox_iface(net).map_err(|e| JailerError::Invalid {
            step: "network",
            message: crate::net::error_chain(&e),
        })?;
    }
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, cfg.runtime_api_port))
        .ctx("listener", || {
            format!("binding 127.0.0.1:{}", cfg.runtime_api_port)
        })?;
    send_report(ctl, &Report::Listening, Some(listener.as_raw_fd()))
        .ctx("listener", || "passing the listener to the server".into())?;
    drop(listener);
    // Only now may C go on: the server must hold the listener before the runtime starts.
    nix::unistd::write(&cfg_wr, &raw)
        .ctx("config", || "passing the config to the sandbox init".into())?;
    drop(cfg_wr);
    wait_for_init(child)
}

fn map_text(lines: &[[u32; 3]]) -> String {
    lines
        .iter()
        .map(|[inside, outside, count]| format!("{inside} {outside} {count}\n"))
        .collect()
}

/// J of a rootless server: enters a new user namespace in which the
/// server's uid is 0, so J may make the other namespaces, mount and pivot
/// there. Without helpers J writes the maps itself (only its own uid and
/// gid can be mapped so, and `setgroups` must be denied); with them a child
/// left in the parent namespace runs the setuid `newuidmap`/`newgidmap` on
/// J, which may also map a subordinate uid for the sandbox.
fn enter_user_namespace(setup: &UsernsSetup) -> Result<(), JailerError> {
    let Some((newuidmap, newgidmap)) = &setup.helpers else {
        unshare(CloneFlags::CLONE_NEWUSER).ctx("userns", || "unshare(CLONE_NEWUSER)".into())?;
        write_file("userns", "/proc/self/setgroups", "deny")?;
        write_file("userns", "/proc/self/uid_map", &map_text(&setup.uid_map))?;
        write_file("userns", "/proc/self/gid_map", &map_text(&setup.gid_map))?;
        return Ok(());
    };
    let jailer = nix::unistd::getpid();
    let (go_rd, go_wr) = pipe2(OFlag::O_CLOEXEC).ctx("userns", || "creating a pipe".into())?;
    // SAFETY: J is single-threaded; the child only runs two programs and exits.
    let helper = match unsafe { fork() }.ctx("userns", || "forking the id-map helper".into())? {
        ForkResult::Child => {
            drop(go_wr);
            let mut byte = [0u8; 1];
            // EOF: J failed before its namespace existed; nothing to map.
            let go = loop {
                match nix::unistd::read(go_rd.as_raw_fd(), &mut byte) {
                    Err(Errno::EINTR) => continue,
                    other => break other.is_ok_and(|n| n == 1),
                }
            };
            let mut code = i32::from(!go);
            for (program, map) in [(newuidmap, &setup.uid_map), (newgidmap, &setup.gid_map)] {
                if code != 0 {
                    break;
                }
                let args = map.iter().flatten().map(u32::to_string);
                match std::process::Command::new(program)
                    .arg(jailer.to_string())
                    .args(args)
                    .stdin(std::process::Stdio::null())
                    .status()
                {
                    Ok(status) if status.success() => {}
                    Ok(status) => {
                        eprintln!("stratus-jailer: {} failed: {status}", program.display());
                        code = 1;
                    }
                    Err(e) => {
                        eprintln!("stratus-jailer: running {}: {e}", program.display());
                        code = 1;
                    }
                }
            }
            // SAFETY: _exit ends this forked child without running destructors.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => child,
    };
    drop(go_rd);
    unshare(CloneFlags::CLONE_NEWUSER).ctx("userns", || "unshare(CLONE_NEWUSER)".into())?;
    nix::unistd::write(&go_wr, b"!").ctx("userns", || "waking the id-map helper".into())?;
    drop(go_wr);
    loop {
        match waitpid(helper, None) {
            Ok(WaitStatus::Exited(_, 0)) => return Ok(()),
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) => {
                return Err(JailerError::Invalid {
                    step: "userns",
                    message: format!(
                        "{} or {} could not map the sandbox's ids (see the output above)",
                        newuidmap.display(),
                        newgidmap.display()
                    ),
                });
            }
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(e) => return Err(e).ctx("userns", || "waiting for the id-map helper".into()),
        }
    }
}

/// How long C waits for the killed processes of a runtime restart to be gone.
const RESTART_REAP: std::time::Duration = std::time::Duration::from_millis(500);

/// Reaps children until there are none left or `patience` has passed
/// (zero: those that have ended).
pub(crate) fn reap_all(patience: std::time::Duration) {
    let deadline = std::time::Instant::now() + patience;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {
                if std::time::Instant::now() >= deadline {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_micros(100));
            }
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

fn wait_for_init(child: Pid) -> Result<i32, JailerError> {
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(e) => return Err(e).ctx("fork", || "waiting for the sandbox init".into()),
        }
    }
}

/// Sets `IFF_UP` on `lo` in the current network namespace.
fn loopback_up() -> Result<(), JailerError> {
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .ctx("network", || "opening an ioctl socket".into())?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `sock` is an open socket and `ifr` a valid, NUL-terminated ifreq
    // the kernel reads and writes within its size.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) };
    Errno::result(rc).ctx("network", || "reading flags of lo".into())?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union; reading and
    // updating it is what the kernel expects for SIOCSIFFLAGS.
    unsafe {
        ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: as above; the kernel only reads `ifr`.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) };
    Errno::result(rc).ctx("network", || "bringing lo up".into())?;
    Ok(())
}

/// C: pid 1 of the sandbox. Never returns on success.
fn container_init(
    ctl: BorrowedFd<'_>,
    cfg: &JailerConfig,
    policy: &Policy,
) -> Result<Infallible, JailerError> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .ctx("fork", || "setting the parent-death signal".into())?;
    // Only C and its descendants live in the sandbox's cgroup: killing the
    // cgroup then leaves J alive to reap C and report, so nothing is orphaned.
    for procs in &cfg.cgroup_procs {
        fs::write(procs, "0").ctx("cgroup", || format!("joining {}", procs.display()))?;
    }
    // Rooted at the sandbox's cgroup, so /proc/self/cgroup reveals no host paths.
    unshare(CloneFlags::CLONE_NEWCGROUP).ctx("namespaces", || "unshare(CLONE_NEWCGROUP)".into())?;
    build_root(cfg)?;
    sethostname(&cfg.hostname).ctx("hostname", || {
        format!("setting host name {:?}", cfg.hostname)
    })?;

    // SIGCHLD is read from a signalfd so C can wait for its children and for
    // commands from the server at once; each runtime unblocks it before exec.
    let mut sigchld = SigSet::empty();
    sigchld.add(Signal::SIGCHLD);
    sigchld
        .thread_block()
        .ctx("fork", || "blocking SIGCHLD".into())?;
    let children = SignalFd::with_flags(&sigchld, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .ctx("fork", || "creating the SIGCHLD signalfd".into())?;

    // A pre-initialised sandbox keeps C's privileges until it is handed to
    // a function: mounting the code needs them.
    let mut cfg = cfg.clone();
    let mut runtime = start_runtime(ctl, &cfg, policy)?;
    if !cfg.preinit {
        drop_privileges(cfg.host_uid)?;
        disarm_init()?;
    }
    if runtime.started {
        let _ = send_report(ctl, &Report::Started, None);
    }
    loop {
        let (child_ready, command_ready) = {
            let mut fds = [
                PollFd::new(children.as_fd(), PollFlags::POLLIN),
                PollFd::new(ctl, PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e).ctx("fork", || "waiting for the runtime".into()),
            }
            let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
            (ready(&fds[0]), ready(&fds[1]))
        };
        if child_ready {
            while let Ok(Some(_)) = children.read_signal() {}
            // Reap everything (we are pid 1); the sandbox ends with its runtime.
            if let Some(status) = reap(runtime.pid)? {
                if runtime.started {
                    let _ = send_report(ctl, &Report::Exited { status }, None);
                }
                // SAFETY: _exit ends the process; leaving pid 1 kills the rest of the namespace.
                unsafe { libc::_exit(0) }
            }
        }
        if command_ready {
            match receive_command(ctl) {
                // The server is gone: so is the sandbox.
                Received::Closed => {
                    // SAFETY: as above.
                    unsafe { libc::_exit(0) }
                }
                Received::Nothing => {}
                Received::Command(Command::RestartRuntime, _) => {
                    // Every process of the namespace but us, at once: nothing
                    // the runtime started can fork its way out of this, and
                    // none of them runs another instruction.
                    let _ = nix::sys::signal::kill(Pid::from_raw(-1), Signal::SIGKILL);
                    // But a process killed in the middle of a write to the
                    // output pipe finishes that write, and the server drains
                    // the output once we report the new runtime (then writes
                    // "Task timed out"): so they are reaped first, for at
                    // most RESTART_REAP (a fork bomb's zombies are reaped as
                    // they come after that, by the SIGCHLD path).
                    reap_all(RESTART_REAP);
                    runtime = loop {
                        match start_runtime(ctl, &cfg, policy) {
                            // The pids limit is still full of zombies: reap one and retry.
                            Err(JailerError::Sys {
                                source: Errno::EAGAIN,
                                ..
                            }) => {
                                let _ = waitpid(Pid::from_raw(-1), None);
                            }
                            other => break other?,
                        }
                    };
                    if runtime.started {
                        let _ = send_report(ctl, &Report::Started, None);
                    }
                }
                Received::Command(Command::Specialise { config }, fds) => {
                    let Some(pipe) = runtime.specialise.take().filter(|_| cfg.preinit) else {
                        return Err(JailerError::Invalid {
                            step: "specialise",
                            message: "this sandbox is not waiting for a function".into(),
                        });
                    };
                    let body = specialise(&cfg, &config, fds)?;
                    cfg = *config;
                    cfg.preinit = false;
                    // Before the runtime gets its function (and runs the
                    // function's code), C is what it is in any sandbox.
                    drop_privileges(cfg.host_uid)?;
                    disarm_init()?;
                    write_to_runtime(&pipe, &body)?;
                    drop(pipe);
                    // A runtime waiting before execve execs the function's
                    // program now: started once that exec succeeded (if it
                    // failed, R reported why and exits, ending the sandbox).
                    if let Some(exec_rd) = runtime.exec_pending.take() {
                        runtime.started = matches!(read_exec_pipe(&exec_rd), ExecPipe::Execed);
                    }
                    if runtime.started {
                        let _ = send_report(ctl, &Report::Started, None);
                    }
                }
            }
        }
    }
}

/// C, handing a pre-initialised sandbox to one function: mounts the code
/// (and layers) the server cloned with `open_tree`, read-only, on the empty
/// `/var/task` (and `/opt`), sets the host name (and `/etc/hostname`,
/// `/etc/hosts`) and the `/dev/shm` size. Returns the runtime's
/// [`Specialisation`], for [`write_to_runtime`].
fn specialise(
    old: &JailerConfig,
    new: &JailerConfig,
    fds: Vec<OwnedFd>,
) -> Result<Vec<u8>, JailerError> {
    let mut fds = fds.into_iter();
    let Some(code) = fds.next() else {
        return Err(JailerError::Invalid {
            step: "specialise",
            message: "no code tree came with the command".into(),
        });
    };
    attach_tree(&code, "/var/task")?;
    if new.opt_dir.is_some() {
        let Some(opt) = fds.next() else {
            return Err(JailerError::Invalid {
                step: "specialise",
                message: "no layers tree came with the command".into(),
            });
        };
        attach_tree(&opt, "/opt")?;
    }
    drop(fds);
    // A runtime waiting before execve (started without a program) execs
    // the function's; one that runs its interpreter takes no program.
    let argv = if old.argv.is_empty() {
        if new.argv.is_empty() {
            return Err(JailerError::Invalid {
                step: "specialise",
                message: "no program to run came with the command".into(),
            });
        }
        new.argv.clone()
    } else {
        Vec::new()
    };
    sethostname(&new.hostname).ctx("hostname", || {
        format!("setting host name {:?}", new.hostname)
    })?;
    if new.hostname != old.hostname {
        // The root tmpfs is read-only once built: open it for two writes.
        let root_flags = MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        mount(NONE, "/", NONE, root_flags, NONE)
            .ctx("specialise", || "remounting the root writable".into())?;
        let written = write_host_files(new, Path::new("/etc"));
        mount(NONE, "/", NONE, root_flags | MsFlags::MS_RDONLY, NONE)
            .ctx("specialise", || "remounting the root read-only".into())?;
        written?;
    }
    if new.shm_bytes != old.shm_bytes {
        mount(
            NONE,
            "/dev/shm",
            NONE,
            MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some(format!("mode=1777,size={}", new.shm_bytes.max(4096)).as_str()),
        )
        .ctx("specialise", || "resizing /dev/shm".into())?;
    }
    serde_json::to_vec(&Specialisation {
        env: new.env.clone(),
        cwd: new.cwd.clone(),
        argv,
    })
    .map_err(|e| JailerError::Invalid {
        step: "specialise",
        message: e.to_string(),
    })
}

/// Writes the specialisation to the waiting runtime (which reads to EOF:
/// the caller closes the pipe after).
fn write_to_runtime(pipe: &OwnedFd, body: &[u8]) -> Result<(), JailerError> {
    // A runtime that died meanwhile gives EPIPE (pid 1 ignores SIGPIPE);
    // its exit is reported as usual.
    let mut rest = body;
    while !rest.is_empty() {
        match nix::unistd::write(pipe, rest) {
            Ok(n) => rest = &rest[n..],
            Err(Errno::EINTR) => continue,
            Err(Errno::EPIPE) => break,
            Err(e) => return Err(e).ctx("specialise", || "writing to the runtime".into()),
        }
    }
    Ok(())
}

/// Mounts a detached tree (an `open_tree` clone) on `target`, read-only,
/// no setuid, no devices, private.
fn attach_tree(tree: &OwnedFd, target: &str) -> Result<(), JailerError> {
    crate::mount_api::move_mount_to(tree.as_fd(), target)
        .ctx("specialise", || format!("moving the tree to {target}"))?;
    mount(
        NONE,
        target,
        NONE,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        NONE,
    )
    .ctx("specialise", || format!("making {target} private"))?;
    let remount = |flags: MsFlags| {
        mount(
            NONE,
            target,
            NONE,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags,
            NONE,
        )
    };
    match remount(RO) {
        Err(Errno::EPERM) => remount(RO | locked_flags(Path::new(target))),
        other => other,
    }
    .ctx("specialise", || format!("remounting {target} read-only"))
}

/// A runtime process C started.
struct Runtime {
    pid: Pid,
    /// It got as far as exec (otherwise it reported its error and exits).
    started: bool,
    /// Pre-initialised: the write end of the pipe it waits on for its
    /// [`Specialisation`].
    specialise: Option<OwnedFd>,
    /// Pre-initialised without a program (it waits before `execve`): the
    /// read end of its exec pipe, which tells whether the exec it does
    /// once specialised succeeded.
    exec_pending: Option<OwnedFd>,
}

/// What R's exec pipe says.
#[derive(Debug, PartialEq, Eq)]
enum ExecPipe {
    /// Closed by a successful exec.
    Execed,
    /// R is pre-initialised and waits for its function before `execve`.
    Waiting,
    /// R failed (it reported its error and exits).
    Failed,
}

/// The byte R writes on its exec pipe when it waits before `execve`.
const WAITING: u8 = b'w';

/// Waits for R's word on its exec pipe.
fn read_exec_pipe(exec_rd: &OwnedFd) -> ExecPipe {
    let mut byte = [0u8; 1];
    loop {
        match nix::unistd::read(exec_rd.as_raw_fd(), &mut byte) {
            Ok(0) => return ExecPipe::Execed,
            Ok(_) if byte[0] == WAITING => return ExecPipe::Waiting,
            Ok(_) => return ExecPipe::Failed,
            Err(Errno::EINTR) => continue,
            Err(_) => return ExecPipe::Failed,
        }
    }
}

/// How R gets its function.
enum Wait<'a> {
    /// It is not pre-initialised: exec `cfg.argv` with `cfg.env` now.
    No,
    /// Exec the interpreter now, with this pipe (named by
    /// [`PREINIT_FD_ENV`], kept across exec) to read its
    /// [`Specialisation`] from.
    InRuntime(&'a OwnedFd),
    /// Exec nothing yet: once confined, say so on `ready` (the exec
    /// pipe), read the [`Specialisation`] from `pipe`, then exec its
    /// `argv` with its environment.
    BeforeExec {
        pipe: &'a OwnedFd,
        ready: &'a OwnedFd,
    },
}

/// Forks R and waits until it has exec'd the runtime (or failed to, or,
/// pre-initialised without a program, waits before `execve`).
fn start_runtime(
    ctl: BorrowedFd<'_>,
    cfg: &JailerConfig,
    policy: &Policy,
) -> Result<Runtime, JailerError> {
    // R writes one byte here if it fails before exec (or, waiting before
    // exec, [`WAITING`]); exec closes it otherwise.
    let (exec_rd, exec_wr) =
        pipe2(OFlag::O_CLOEXEC).ctx("fork", || "creating the exec pipe".into())?;
    let spec_pipe = if cfg.preinit {
        Some(pipe2(OFlag::O_CLOEXEC).ctx("fork", || "creating the specialisation pipe".into())?)
    } else {
        None
    };
    // Pre-initialised without a program: R waits before execve.
    let before_exec = cfg.preinit && cfg.argv.is_empty();
    // SAFETY: C is single-threaded (forked from the single-threaded J).
    let pid = match unsafe { fork() }.ctx("fork", || "forking the runtime".into())? {
        ForkResult::Child => {
            drop(exec_rd);
            let inherit = match spec_pipe {
                Some((rd, wr)) => {
                    drop(wr);
                    if before_exec {
                        // Read before exec; closed by it.
                        Ok(Some(rd))
                    } else {
                        // The one descriptor R keeps across exec.
                        fcntl(rd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::empty()))
                            .ctx("exec", || "passing the specialisation pipe".into())
                            .map(|_| Some(rd))
                    }
                }
                None => Ok(None),
            };
            let run = |rd: Option<OwnedFd>| {
                let wait = match &rd {
                    Some(pipe) if before_exec => Wait::BeforeExec {
                        pipe,
                        ready: &exec_wr,
                    },
                    Some(pipe) => Wait::InRuntime(pipe),
                    None => Wait::No,
                };
                exec_runtime(cfg, policy, wait)
            };
            match inherit.and_then(run) {
                Ok(never) => match never {},
                Err(e) => {
                    let _ = nix::unistd::write(&exec_wr, b"!");
                    fail(ctl, &e)
                }
            }
        }
        ForkResult::Parent { child } => child,
    };
    drop(exec_wr);
    let specialise = spec_pipe.map(|(rd, wr)| {
        drop(rd);
        wr
    });
    let outcome = read_exec_pipe(&exec_rd);
    Ok(Runtime {
        pid,
        started: outcome != ExecPipe::Failed,
        specialise,
        exec_pending: (outcome == ExecPipe::Waiting).then_some(exec_rd),
    })
}

/// Reaps C's exited children without blocking. Returns the runtime's status
/// once it has been reaped.
fn reap(runtime: Pid) -> Result<Option<ExitStatus>, JailerError> {
    let mut status = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == runtime => {
                status = Some(ExitStatus::Code(code))
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == runtime => {
                status = Some(ExitStatus::Signal(sig as i32))
            }
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return Ok(status),
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(e) => return Err(e).ctx("fork", || "reaping".into()),
        }
    }
}

enum Received {
    /// A command and the descriptors that came with it.
    Command(Command, Vec<OwnedFd>),
    /// Not a command C knows (ignored) or a spurious wake-up.
    Nothing,
    /// The server's end is closed.
    Closed,
}

fn receive_command(ctl: BorrowedFd<'_>) -> Received {
    let d = match recv_datagram(ctl.as_raw_fd(), MAX_COMMAND, MsgFlags::MSG_DONTWAIT) {
        Ok(d) => d,
        Err(Errno::EAGAIN | Errno::EINTR) => return Received::Nothing,
        Err(_) => return Received::Closed,
    };
    if d.bytes.is_empty() {
        return Received::Closed;
    }
    match serde_json::from_slice(&d.bytes) {
        Ok(c) => Received::Command(c, d.fds),
        Err(e) => {
            eprintln!("stratus-init: ignoring an unknown command: {e}");
            Received::Nothing
        }
    }
}

fn drop_privileges(host_uid: u32) -> Result<(), JailerError> {
    let uid = Uid::from_raw(host_uid);
    let gid = Gid::from_raw(host_uid);
    // A restarted runtime is forked from C, which has dropped them already.
    if nix::unistd::getresuid().is_ok_and(|r| r.real == uid && r.effective == uid && r.saved == uid)
    {
        return Ok(());
    }
    setgroups(&[]).ctx("credentials", || "clearing supplementary groups".into())?;
    setresgid(gid, gid, gid).ctx("credentials", || format!("setresgid {host_uid}"))?;
    setresuid(uid, uid, uid).ctx("credentials", || format!("setresuid {host_uid}"))?;
    Ok(())
}

/// C, once it has dropped to the sandbox uid: not dumpable, so a runtime of
/// the same uid cannot take it over (through `/proc/1/mem`, say), and no
/// capability but `CAP_SETFCAP`. Dropping to a non-zero uid did all of it
/// already; this matters for a rootless server without subordinate ids,
/// whose sandboxes run as uid 0 of the jailer's user namespace (the
/// server's own uid). A runtime C forks must map that uid 0 into its own
/// user namespace, which Linux (5.12 and later) allows only to a creator
/// holding `CAP_SETFCAP` in the parent namespace: C keeps that one.
fn disarm_init() -> Result<(), JailerError> {
    nix::sys::prctl::set_dumpable(false).ctx("credentials", || "PR_SET_DUMPABLE 0".into())?;
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    #[repr(C)]
    struct CapHeader {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    struct CapData {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    // CAP_SETFCAP is capability 31 (linux/capability.h).
    const SETFCAP: u32 = 1 << 31;
    let data = [
        CapData {
            effective: SETFCAP,
            permitted: SETFCAP,
            inheritable: 0,
        },
        CapData {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        },
    ];
    // SAFETY: capset reads a version-3 header and two data structs, both
    // valid for the call; pid 0 is this thread (C is single-threaded).
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    Errno::result(rc)
        .map(drop)
        .ctx("credentials", || "dropping the init's capabilities".into())
}

/// R, still root: the output pipe (fds 1 and 2) becomes the sandbox user's,
/// so the runtime can reopen it as `/dev/stdout` or `/dev/stderr` (shell
/// runtimes write `> /dev/stderr`), as it can on Lambda. A restarted runtime
/// finds it done already.
fn give_output_to(host_uid: u32) -> Result<(), JailerError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    for fd in [1, 2] {
        nix::unistd::fchown(
            fd,
            Some(Uid::from_raw(host_uid)),
            Some(Gid::from_raw(host_uid)),
        )
        .ctx("stdio", || {
            "giving the output pipe to the sandbox user".into()
        })?;
    }
    Ok(())
}

/// R, in its own user namespace (where it still holds every capability of
/// that namespace): empties the bounding and ambient sets and locks the
/// securebits, so nothing it execs can ever hold a capability again, not even
/// a setuid or file-capability binary, and uid 0 means nothing special. The
/// exec as uid 993 then clears the effective and permitted sets.
fn drop_capabilities() -> Result<(), JailerError> {
    let prctl = |what: &str, option: libc::c_int, arg: libc::c_ulong| {
        // SAFETY: prctl with integer arguments only; no memory is passed.
        let rc = unsafe { libc::prctl(option, arg, 0 as libc::c_ulong, 0 as libc::c_ulong, 0) };
        if rc == 0 {
            Ok(())
        } else {
            Err(nix::Error::last()).ctx("capabilities", || what.to_owned())
        }
    };
    for cap in 0..=63 {
        match prctl("PR_CAPBSET_DROP", libc::PR_CAPBSET_DROP, cap) {
            Ok(()) => {}
            // Past the kernel's last capability.
            Err(JailerError::Sys {
                source: nix::Error::EINVAL,
                ..
            }) => break,
            Err(e) => return Err(e),
        }
    }
    prctl(
        "PR_CAP_AMBIENT_CLEAR_ALL",
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
    )?;
    // SECBIT_NOROOT, SECBIT_NO_SETUID_FIXUP, SECBIT_KEEP_CAPS_LOCKED,
    // SECBIT_NO_CAP_AMBIENT_RAISE, each with its lock bit.
    const SECUREBITS: libc::c_ulong = 0b1111_0111;
    prctl("PR_SET_SECUREBITS", libc::PR_SET_SECUREBITS, SECUREBITS)
}

/// R: a Landlock domain where the kernel has Landlock (best effort, silently
/// absent on older kernels): the whole root readable and executable, writes
/// only under `/tmp` and `/dev` (the null devices and `/dev/shm`), no
/// signals to processes outside the domain and no abstract unix sockets of
/// others. The mounts are already read-only; this also closes what a
/// read-only mount leaves open, such as `/proc/self/*` files.
fn landlock() -> Result<(), JailerError> {
    use landlock::{
        ABI, Access, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, Scope, path_beneath_rules,
    };
    let abi = ABI::V6;
    let fail = |e: landlock::RulesetError| JailerError::Invalid {
        step: "landlock",
        message: e.to_string(),
    };
    Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .and_then(|r| r.scope(Scope::from_all(abi)))
        .and_then(|r| r.create())
        .and_then(|r| r.add_rules(path_beneath_rules(["/"], AccessFs::from_read(abi))))
        .and_then(|r| {
            r.add_rules(path_beneath_rules(
                ["/tmp", "/dev"],
                AccessFs::from_all(abi),
            ))
        })
        .and_then(|r| r.restrict_self())
        .map_err(fail)?;
    Ok(())
}

fn mkdir(step: &'static str, path: &Path, mode: u32) -> Result<(), JailerError> {
    fs::DirBuilder::new()
        .mode(mode)
        .recursive(true)
        .create(path)
        .ctx(step, || format!("creating {}", path.display()))
}

const NONE: Option<&str> = None;

/// Read-only, no setuid, no devices: how host directories appear inside.
const RO: MsFlags = MsFlags::MS_RDONLY
    .union(MsFlags::MS_NOSUID)
    .union(MsFlags::MS_NODEV);
/// Writable, no setuid, no devices.
const RW: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV);
/// Device nodes: usable, writable, nothing else.
const DEV: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC);

/// Bind-mounts `src` on `dst` (created as a dir or file to match) and
/// remounts it with `flags`.
fn bind(src: &Path, dst: &Path, flags: MsFlags) -> Result<(), JailerError> {
    let meta = fs::metadata(src).ctx("mounts", || format!("bind source {}", src.display()))?;
    if meta.is_dir() {
        mkdir("mounts", dst, 0o755)?;
    } else if !dst.exists() {
        fs::write(dst, b"").ctx("mounts", || format!("creating {}", dst.display()))?;
    }
    mount(
        Some(src),
        dst,
        NONE,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        NONE,
    )
    .ctx("mounts", || {
        format!("binding {} on {}", src.display(), dst.display())
    })?;
    let remount = |flags: MsFlags| {
        mount(
            NONE,
            dst,
            NONE,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags,
            NONE,
        )
    };
    match remount(flags) {
        // In a user namespace (rootless) the flags the source mount already
        // has are locked: they may be added to, never dropped.
        Err(Errno::EPERM) => remount(flags | locked_flags(src)),
        other => other,
    }
    .ctx("mounts", || format!("remounting {}", dst.display()))
}

/// The flags of the mount `path` is on that a user namespace cannot clear.
fn locked_flags(path: &Path) -> MsFlags {
    use nix::sys::statvfs::FsFlags;
    let Ok(st) = nix::sys::statvfs::statvfs(path) else {
        return MsFlags::empty();
    };
    let f = st.flags();
    [
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
    ]
    .into_iter()
    .filter(|(st, _)| f.contains(*st))
    .fold(MsFlags::empty(), |acc, (_, ms)| acc | ms)
}

/// Assembles the sandbox's root filesystem on a fresh tmpfs and pivots into it.
fn build_root(cfg: &JailerConfig) -> Result<(), JailerError> {
    mount(NONE, "/", NONE, MsFlags::MS_REC | MsFlags::MS_PRIVATE, NONE)
        .ctx("mounts", || "making / private".into())?;
    let root = cfg.root_dir.as_path();
    mount(
        Some("tmpfs"),
        root,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755,size=1m,nr_inodes=256"),
    )
    .ctx("mounts", || {
        format!("mounting the root tmpfs on {}", root.display())
    })?;

    bind(Path::new("/usr"), &root.join("usr"), RO)?;
    // Mirror the host's top-level library/binary links (usrmerge) or bind real dirs.
    for name in ["bin", "sbin", "lib", "lib64", "lib32", "libx32"] {
        let host = Path::new("/").join(name);
        match fs::read_link(&host) {
            Ok(target) => {
                symlink(&target, root.join(name)).ctx("mounts", || format!("linking /{name}"))?
            }
            Err(_) if host.is_dir() => bind(&host, &root.join(name), RO)?,
            Err(_) => {}
        }
    }
    if cfg.preinit {
        // Mount points for the function's code and layers, which come with
        // Command::Specialise.
        mkdir("mounts", &root.join("var/task"), 0o755)?;
        mkdir("mounts", &root.join("opt"), 0o755)?;
    } else {
        bind(&cfg.code_dir, &root.join("var/task"), RO)?;
        if let Some(dir) = &cfg.opt_dir {
            bind(dir, &root.join("opt"), RO)?;
        }
    }
    if let Some(dir) = &cfg.runtime_dir {
        bind(dir, &root.join("var/runtime"), RO)?;
    }
    match (&cfg.tmp_device, cfg.tmp_tmpfs_bytes) {
        (Some(device), _) => mount_tmp_disk(device, &root.join("tmp"), cfg.host_uid)?,
        (None, Some(bytes)) => mount_tmp_tmpfs(bytes, &root.join("tmp"), cfg.host_uid)?,
        (None, None) => match &cfg.tmp_dir {
            Some(dir) => bind(dir, &root.join("tmp"), RW)?,
            None => {
                return Err(JailerError::Invalid {
                    step: "mounts",
                    message: "no /tmp: neither a disk, a tmpfs size nor a host directory".into(),
                });
            }
        },
    }

    // /proc of the new pid namespace (we are its pid 1).
    let proc_dir = root.join("proc");
    mkdir("mounts", &proc_dir, 0o555)?;
    mount(
        Some("proc"),
        &proc_dir,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        NONE,
    )
    .ctx("mounts", || "mounting /proc".into())?;

    build_dev(cfg, &root.join("dev"))?;
    build_etc(cfg, &root.join("etc"))?;

    // Nothing else is written to the root tmpfs from here on.
    mount(
        NONE,
        root,
        NONE,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        NONE,
    )
    .ctx("mounts", || "remounting the root read-only".into())?;

    chdir(root).ctx("pivot_root", || format!("chdir {}", root.display()))?;
    pivot_root(".", ".").ctx("pivot_root", || "pivot_root".into())?;
    umount2(".", MntFlags::MNT_DETACH).ctx("pivot_root", || "detaching the old root".into())?;
    chdir("/").ctx("pivot_root", || "chdir /".into())?;
    Ok(())
}

/// Mounts the sandbox's fresh ext4 `/tmp` and hands it to the sandbox uid.
fn mount_tmp_disk(device: &Path, tmp: &Path, host_uid: u32) -> Result<(), JailerError> {
    mkdir("tmp", tmp, 0o755)?;
    mount(
        Some(device),
        tmp,
        Some("ext4"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOATIME,
        // No background thread zeroing the inode tables after mount (ext4
        // does it lazily otherwise: megabytes of writes per sandbox); the
        // tables of a fresh filesystem are marked unused and never read.
        Some("noinit_itable"),
    )
    .ctx("tmp", || {
        format!("mounting {} on {}", device.display(), tmp.display())
    })?;
    // Lambda's /tmp starts empty.
    match fs::remove_dir(tmp.join("lost+found")) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(e).ctx("tmp", || "removing lost+found".into());
        }
        _ => {}
    }
    nix::unistd::chown(
        tmp,
        Some(Uid::from_raw(host_uid)),
        Some(Gid::from_raw(host_uid)),
    )
    .ctx("tmp", || format!("chown {}", tmp.display()))?;
    fs::set_permissions(tmp, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .ctx("tmp", || format!("chmod {}", tmp.display()))
}

/// Mounts a fresh tmpfs of `bytes` at `tmp`, owned by the sandbox uid
/// (rootless mode: a size cap without loop devices, paid for in memory).
fn mount_tmp_tmpfs(bytes: u64, tmp: &Path, uid: u32) -> Result<(), JailerError> {
    mkdir("tmp", tmp, 0o755)?;
    mount(
        Some("tmpfs"),
        tmp,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(format!("mode=0700,uid={uid},gid={uid},size={}", bytes.max(4096)).as_str()),
    )
    .ctx("tmp", || format!("mounting a tmpfs on {}", tmp.display()))
}

fn build_dev(cfg: &JailerConfig, dev: &Path) -> Result<(), JailerError> {
    mkdir("mounts", dev, 0o755)?;
    mount(
        Some("tmpfs"),
        dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0755,size=64k,nr_inodes=64"),
    )
    .ctx("mounts", || "mounting /dev".into())?;
    for node in ["null", "zero", "full", "random", "urandom", "tty"] {
        let host = Path::new("/dev").join(node);
        if host.exists() {
            bind(&host, &dev.join(node), DEV)?;
        }
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(target, dev.join(name)).ctx("mounts", || format!("linking /dev/{name}"))?;
    }
    let shm = dev.join("shm");
    mkdir("mounts", &shm, 0o1777)?;
    mount(
        Some("tmpfs"),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(format!("mode=1777,size={}", cfg.shm_bytes.max(4096)).as_str()),
    )
    .ctx("mounts", || "mounting /dev/shm".into())
}

/// `/etc/hosts` and `/etc/hostname` for the sandbox's host name.
fn write_host_files(cfg: &JailerConfig, etc: &Path) -> Result<(), JailerError> {
    let hostname = clean_hostname(&cfg.hostname);
    for (name, content) in [
        (
            "hosts",
            format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost\n"),
        ),
        ("hostname", format!("{hostname}\n")),
    ] {
        let path = etc.join(name);
        fs::write(&path, content).ctx("mounts", || format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn clean_hostname(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
        .collect()
}

fn build_etc(cfg: &JailerConfig, etc: &Path) -> Result<(), JailerError> {
    mkdir("mounts", etc, 0o755)?;
    write_host_files(cfg, etc)?;
    let files = [
        (
            "passwd",
            format!(
                "root:x:0:0:root:/root:/sbin/nologin\n\
                 sbx_user1051:x:{SANDBOX_UID}:{SANDBOX_GID}::/tmp:/sbin/nologin\n\
                 nobody:x:65534:65534:nobody:/:/sbin/nologin\n"
            ),
        ),
        (
            "group",
            format!("root:x:0:\nsbx_user1051:x:{SANDBOX_GID}:\nnobody:x:65534:\n"),
        ),
        ("resolv.conf", crate::net::resolv_conf(cfg.network.as_ref())),
        (
            "nsswitch.conf",
            "passwd: files\ngroup: files\nhosts: files dns\n".to_owned(),
        ),
    ];
    for (name, content) in files {
        let path = etc.join(name);
        fs::write(&path, content).ctx("mounts", || format!("writing {}", path.display()))?;
    }
    for name in [
        "ssl",
        "alternatives",
        "ca-certificates",
        "ld.so.cache",
        "localtime",
        "mime.types",
    ] {
        let host = Path::new("/etc").join(name);
        if host.exists() {
            bind(&host, &etc.join(name), RO)?;
        }
    }
    Ok(())
}

/// Sets soft and hard limit to `value`; without CAP_SYS_RESOURCE (some
/// containers drop it) a limit above the inherited hard limit is clamped to it.
fn set_limit(resource: Resource, name: &str, value: u64) -> Result<(), JailerError> {
    match setrlimit(resource, value, value) {
        Err(Errno::EPERM) => {
            let (_, hard) = nix::sys::resource::getrlimit(resource)
                .ctx("rlimits", || format!("getrlimit {name}"))?;
            let value = value.min(hard);
            setrlimit(resource, value, value).ctx("rlimits", || format!("{name} {value}"))
        }
        other => other.ctx("rlimits", || format!("{name} {value}")),
    }
}

fn cstring(step: &'static str, s: &str) -> Result<CString, JailerError> {
    CString::new(s).map_err(|_| JailerError::Invalid {
        step,
        message: format!("{s:?} contains a NUL byte"),
    })
}

/// R: becomes the runtime. Returns only on error.
fn exec_runtime(
    cfg: &JailerConfig,
    policy: &Policy,
    wait: Wait<'_>,
) -> Result<Infallible, JailerError> {
    let preinit_fd = match &wait {
        Wait::InRuntime(fd) => Some(*fd),
        Wait::No | Wait::BeforeExec { .. } => None,
    };
    // Undo J's -1000 (raising is always allowed; fails harmlessly if J could not lower it).
    let _ = fs::write("/proc/self/oom_score_adj", "0");
    // C blocks SIGCHLD for its signalfd; the mask survives exec.
    SigSet::empty()
        .thread_set_mask()
        .ctx("exec", || "unblocking signals".into())?;
    let argv = cfg
        .argv
        .iter()
        .map(|a| cstring("exec", a))
        .collect::<Result<Vec<_>, _>>()?;
    let preinit_var = preinit_fd.map(|fd| (PREINIT_FD_ENV.to_owned(), fd.as_raw_fd().to_string()));
    let env = cfg
        .env
        .iter()
        .filter(|(k, _)| preinit_var.is_none() || k.as_str() != PREINIT_FD_ENV)
        .chain(preinit_var.as_ref().map(|(k, v)| (k, v)))
        .map(|(k, v)| cstring("exec", &format!("{k}={v}")))
        .collect::<Result<Vec<_>, _>>()?;
    // Limits first, while we may still raise them.
    set_limit(Resource::RLIMIT_NOFILE, "RLIMIT_NOFILE", cfg.max_fds)?;
    // A backstop only (counted per host uid, which is the sandbox's own); +1 for C.
    set_limit(
        Resource::RLIMIT_NPROC,
        "RLIMIT_NPROC",
        cfg.max_pids.saturating_add(1),
    )?;
    give_output_to(cfg.host_uid)?;
    drop_privileges(cfg.host_uid)?;
    // Changing uid made us non-dumpable, which makes /proc/self root-owned;
    // we need to write our own id maps below (exec resets this anyway).
    let with = |p: Protection| !cfg.without.contains(&p);
    if with(Protection::UserNamespace) {
        nix::sys::prctl::set_dumpable(true).ctx("userns", || "PR_SET_DUMPABLE".into())?;
        unshare(CloneFlags::CLONE_NEWUSER).ctx("userns", || "unshare(CLONE_NEWUSER)".into())?;
        write_file("userns", "/proc/self/setgroups", "deny")?;
        write_file(
            "userns",
            "/proc/self/uid_map",
            &format!("{SANDBOX_UID} {} 1\n", cfg.host_uid),
        )?;
        write_file(
            "userns",
            "/proc/self/gid_map",
            &format!("{SANDBOX_GID} {} 1\n", cfg.host_uid),
        )?;
    }
    chdir(&cfg.cwd).ctx("chdir", || format!("chdir {}", cfg.cwd.display()))?;
    if with(Protection::Capabilities) && with(Protection::UserNamespace) {
        drop_capabilities()?;
    }
    nix::sys::prctl::set_no_new_privs().ctx("seccomp", || "PR_SET_NO_NEW_PRIVS".into())?;
    if with(Protection::Landlock) {
        landlock()?;
    }
    if with(Protection::Seccomp) {
        policy.install().map_err(|e| JailerError::Invalid {
            step: "seccomp",
            message: e.to_string(),
        })?;
    }
    let (argv, env) = match wait {
        Wait::BeforeExec { pipe, ready } => {
            // Everything above applies to the function's program as it
            // would at a normal start; nothing of the function has run.
            nix::unistd::write(ready, &[WAITING])
                .ctx("exec", || "saying the runtime waits".into())?;
            let s = read_specialisation(pipe)?;
            // The code is mounted on /var/task now: look it up again.
            chdir(&s.cwd).ctx("chdir", || format!("chdir {}", s.cwd.display()))?;
            let argv = s
                .argv
                .iter()
                .map(|a| cstring("exec", a))
                .collect::<Result<Vec<_>, _>>()?;
            let env = s
                .env
                .iter()
                .map(|(k, v)| cstring("exec", &format!("{k}={v}")))
                .collect::<Result<Vec<_>, _>>()?;
            (argv, env)
        }
        Wait::No | Wait::InRuntime(_) => (argv, env),
    };
    let Some(program) = argv.first() else {
        return Err(JailerError::Invalid {
            step: "exec",
            message: "argv is empty".into(),
        });
    };
    let err = execve(program, &argv, &env).map_or_else(|e| e, |never| match never {});
    Err(JailerError::Sys {
        step: "exec",
        what: format!("executing {}", program.to_string_lossy()),
        source: err,
    })
}

/// R, waiting before `execve`: reads its [`Specialisation`] (one JSON
/// document, then EOF) from C.
fn read_specialisation(pipe: &OwnedFd) -> Result<Specialisation, JailerError> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match nix::unistd::read(pipe.as_raw_fd(), &mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e).ctx("exec", || "reading the function".into()),
        }
    }
    serde_json::from_slice(&raw).map_err(|e| JailerError::Invalid {
        step: "exec",
        message: format!("reading the function: {e}"),
    })
}
