//! The sandbox interface: what the worker asks of an isolation backend.
//!
//! A sandbox runs exactly one function version's runtime process, isolated
//! from the host and from every other sandbox. This crate owns the *contract*
//! (what a sandbox must provide, what the worker may ask of it) and nothing
//! else: it does no I/O and holds no `unsafe`. Each isolation technology is a
//! crate of its own implementing [`SandboxBackend`] (`stratus-sandbox-process`
//! for Linux namespaces today; a microVM backend fits the same trait).
//!
//! The one thing a backend must get right beyond isolation is the Runtime API
//! channel: the runtime inside must reach `AWS_LAMBDA_RUNTIME_API` and nothing
//! else on the host. A backend therefore hands the worker a listener that
//! lives *inside* the sandbox's network ([`RuntimeApiListener`]); the worker
//! serves that sandbox's Runtime API on it, so every connection accepted there
//! is known to come from that sandbox.

pub mod conformance;

use std::collections::BTreeMap;
use std::path::PathBuf;

use async_trait::async_trait;

/// Everything a backend needs to start one sandbox.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    /// Unique id of this sandbox (also used to name its cgroup and scratch dir).
    pub id: String,
    /// Host directory holding the unzipped function code, mounted read-only at `/var/task`.
    pub code_dir: PathBuf,
    /// Host directory with the runtime's own files (bootstraps), mounted read-only at `/var/runtime`.
    pub runtime_dir: Option<PathBuf>,
    /// Host directory to mount read-only at `/opt` (layers), if any.
    pub opt_dir: Option<PathBuf>,
    /// Program and arguments, as seen inside the sandbox (e.g. `/usr/bin/python3 /var/runtime/bootstrap.py`).
    pub argv: Vec<String>,
    /// Complete environment of the runtime process (nothing is inherited from the host).
    pub env: BTreeMap<String, String>,
    /// Working directory inside the sandbox.
    pub cwd: PathBuf,
    /// Limits the backend enforces.
    pub limits: SandboxLimits,
    /// TCP port on the sandbox's own loopback where the Runtime API is served.
    pub runtime_api_port: u16,
    /// Host name the sandbox sees.
    pub hostname: String,
    /// How this sandbox may instead be made from a pre-initialised runtime
    /// sandbox of the backend's pool (see [`PreInit`]); `None`: always start
    /// the runtime from scratch with `argv` and `env`.
    pub preinit: Option<PreInit>,
}

/// A generic, pre-initialised runtime: what a backend may start *before*
/// any function is known, and later specialise to one function.
///
/// A backend that keeps such sandboxes ([`SandboxBackend::prepare_runtimes`])
/// starts one all the way (namespaces, cgroup, uid, seccomp, the
/// interpreter with its imports done) but with an empty `/var/task` and
/// `/opt`, the runtime blocked on a specialisation message. `spawn` of a
/// spec whose `preinit` matches a ready one hands it the function (code,
/// layers, environment, host name, limits) instead of starting a new one.
/// Each such sandbox serves exactly one function version and is never
/// returned to a pool, so nothing is shared between functions or accounts.
///
/// The caller only sets `preinit` when `argv`/`env` and this profile start
/// the same program: the runtime must be able to take the rest of `env`
/// after start-up (a variable the interpreter reads only at start, such
/// as `PYTHONPATH` or `NODE_OPTIONS`, rules the pool out). A profile
/// without a program (empty `argv`) takes any `argv` and `env`: they are
/// only used at the `execve` after specialisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreInit {
    /// Pool name (one pool per profile), e.g. `python`.
    pub pool: String,
    /// Program and arguments of the pre-initialised runtime. Empty: no
    /// program runs before specialisation (a custom runtime, whose program
    /// is the function's own): the sandbox is made all the way up to the
    /// `execve`, which then runs the spec's `argv` with the spec's `env`.
    pub argv: Vec<String>,
    /// Its environment before specialisation (no function data in it);
    /// unused without `argv`.
    pub env: BTreeMap<String, String>,
    /// Host directory mounted at `/var/runtime` (the bootstraps).
    pub runtime_dir: PathBuf,
    /// Port of the Runtime API on the sandbox's loopback.
    pub runtime_api_port: u16,
    /// The limits the pooled sandbox is started with: `tmp_mb`, `max_pids`
    /// and `max_fds` must equal the spec's; memory only grows at spawn.
    pub limits: SandboxLimits,
}

/// Resource limits of one sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxLimits {
    /// Memory limit in MiB (the function's MemorySize).
    pub memory_mb: u64,
    /// Size of the writable `/tmp` in MiB (the function's EphemeralStorage).
    pub tmp_mb: u64,
    /// Maximum number of processes/threads.
    pub max_pids: u64,
    /// Maximum number of open file descriptors.
    pub max_fds: u64,
}

/// How a sandboxed runtime process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ExitStatus {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal number.
    Signal(i32),
}

impl std::fmt::Display for ExitStatus {
    /// Formats like Go's `os.ProcessState`, which is what Lambda's error messages print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit status {c}"),
            ExitStatus::Signal(9) => f.write_str("signal: killed"),
            ExitStatus::Signal(15) => f.write_str("signal: terminated"),
            ExitStatus::Signal(11) => f.write_str("signal: segmentation fault"),
            ExitStatus::Signal(6) => f.write_str("signal: aborted"),
            ExitStatus::Signal(s) => write!(f, "signal: {s}"),
        }
    }
}

/// The listener on which the worker serves one sandbox's Runtime API.
#[derive(Debug)]
pub enum RuntimeApiListener {
    /// A TCP socket bound inside the sandbox's network namespace. Connections
    /// accepted on it can only come from inside that sandbox.
    Tcp(std::net::TcpListener),
}

/// Resource usage of a sandbox, read from the backend's accounting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SandboxUsage {
    /// Peak memory use in bytes since the sandbox started (or since the last reset).
    pub memory_peak_bytes: u64,
    /// Current memory use in bytes.
    pub memory_current_bytes: u64,
}

/// Errors a backend reports.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The sandbox could not be created; the message says which step failed.
    #[error("creating sandbox {id}: {step}: {message}")]
    Create {
        id: String,
        step: &'static str,
        message: String,
    },
    /// The host lacks something the backend needs.
    #[error("sandbox backend unavailable: {0}")]
    Unavailable(String),
    /// Reading or changing a running sandbox failed.
    #[error("sandbox {id}: {message}")]
    Io { id: String, message: String },
}

/// A running sandbox. Dropping it must kill everything inside and release
/// every kernel object the backend created for it.
#[async_trait]
pub trait Sandbox: Send + Sync + std::fmt::Debug {
    /// The id from the spec.
    fn id(&self) -> &str;

    /// Takes the listener the worker serves this sandbox's Runtime API on.
    /// Returns `None` after the first call.
    fn take_runtime_api_listener(&mut self) -> Option<RuntimeApiListener>;

    /// Takes the read end of the pipe carrying the runtime's combined stdout
    /// and stderr. `None` after the first call. The worker sets it
    /// non-blocking and reads it itself: it must be able to drain it
    /// synchronously (with `read(2)` until `EAGAIN`) when a response arrives,
    /// so that everything the function printed before responding lands in
    /// that invocation's log.
    fn take_output(&mut self) -> Option<std::os::fd::OwnedFd>;

    /// Waits until the runtime process (and with it the sandbox) has ended.
    /// Takes `&self` so the worker can wait while it also reads usage or
    /// kills from elsewhere; may be called again (or concurrently) and then
    /// returns the same status. Must be cancel-safe.
    async fn wait(&self) -> ExitStatus;

    /// Kills everything in the sandbox at once. Idempotent.
    fn kill(&self);

    /// Kills the runtime process and everything it started, then starts the
    /// runtime again in the same sandbox: `/tmp`, the limits, the output pipe
    /// and the Runtime API listener stay; memory and processes do not. This
    /// is what Lambda does after a timeout. Returns once the new runtime
    /// process runs. On error the sandbox is unusable and must be dropped.
    async fn restart_runtime(&self) -> Result<(), SandboxError>;

    /// Current resource usage.
    fn usage(&self) -> SandboxUsage;

    /// Resets the peak-memory counter (called before each invoke so the REPORT
    /// line shows that invoke's peak). Backends that cannot reset do nothing.
    fn reset_peak(&self) {}
}

/// An isolation technology that can create sandboxes.
#[async_trait]
pub trait SandboxBackend: Send + Sync + std::fmt::Debug {
    /// Short name for logs and `stratus doctor` (e.g. `process`).
    fn name(&self) -> &'static str;

    /// Creates and starts a sandbox. When this returns, the runtime process has
    /// been started inside the sandbox (it may not have called the Runtime API yet).
    async fn spawn(&self, spec: SandboxSpec) -> Result<Box<dyn Sandbox>, SandboxError>;

    /// Offers the runtime profiles the caller will ask for in
    /// [`SandboxSpec::preinit`], each with the number of sandboxes to keep
    /// ready. A backend that cannot pre-initialise (or is configured not
    /// to) ignores it: `spawn` then always starts from scratch.
    fn prepare_runtimes(&self, profiles: Vec<(PreInit, usize)>) {
        drop(profiles);
    }

    /// Why this backend does not keep pre-initialised runtimes, if it does
    /// not (for the server's start-up line and `stratus doctor`).
    fn runtime_pool_unavailable(&self) -> Option<String> {
        Some(format!("the {} backend has no runtime pool", self.name()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_formats_like_lambda() {
        assert_eq!(ExitStatus::Code(127).to_string(), "exit status 127");
        assert_eq!(ExitStatus::Signal(9).to_string(), "signal: killed");
        assert_eq!(ExitStatus::Signal(10).to_string(), "signal: 10");
    }
}
