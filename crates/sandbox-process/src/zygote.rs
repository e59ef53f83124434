//! The jailer zygote: one small single-threaded process, started once per
//! backend, that forks every jailer (J) instead of the server starting the
//! jailer program for each sandbox.
//!
//! Starting J as a new program cost 1.0–1.3 ms of CPU on the project's
//! hosts (exec, the dynamic loader's relocations of the server binary,
//! glibc's start-up, whose `cpuid` queries each trap to the hypervisor, and
//! the page faults of a fresh image): about 15% of the CPU of a burst of
//! sandbox starts. A fork of the idle zygote costs a fraction of that: its
//! few touched pages are shared copy-on-write, and J runs the same code
//! from the same image ([`crate::jailer::run`]).
//!
//! Protocol (`SOCK_SEQPACKET`, the zygote's stdin): the server sends a
//! [`ZygoteRequest`] with J's three descriptors (config pipe, control
//! socket, output pipe) as `SCM_RIGHTS`; the zygote forks, and answers a
//! [`ZygoteReply`] with J's pid and a pidfd for it (opened before J could be
//! reaped, so it always names J). The zygote reaps its children (a SIGCHLD
//! signalfd) and exits when the server closes the socket.
//!
//! Lifetime: the zygote arms its parent-death signal against the server's
//! launcher thread, J against the zygote; so a dead server takes the
//! zygote, every J, every sandbox init (C, whose signal is tied to J) and
//! every runtime (pid 1 of its namespace is C) with it.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::Stdio;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockType, setsockopt, socketpair, sockopt,
};
use nix::sys::time::TimeVal;
use nix::unistd::{ForkResult, Pid, dup2, fork, getpid};

use crate::jailer;
use crate::protocol::{
    CONTROL_FD, PARENT_PID_ENV, UsernsSetup, ZygoteReply, ZygoteRequest, recv_datagram_in,
    send_datagram,
};
use crate::seccomp::Policy;

/// Largest request or reply (a user namespace setup is a few hundred bytes).
const MAX_MESSAGE: usize = 64 * 1024;

/// How long the server waits for the zygote's answer: a fork, not more.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------- server side

/// The server's handle on a running zygote.
#[derive(Debug)]
pub(crate) struct Zygote {
    sock: OwnedFd,
    process: std::process::Child,
}

impl Zygote {
    /// Starts the zygote (`jailer` is the jailer program's argv) through
    /// `launch`, the server's long-lived launcher thread.
    pub(crate) fn start(
        jailer: &[String],
        launch: impl FnOnce(std::process::Command) -> io::Result<std::process::Child>,
    ) -> io::Result<Self> {
        let program = jailer
            .first()
            .ok_or_else(|| io::Error::other("no jailer command configured"))?;
        let (sock, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        setsockopt(
            &sock,
            sockopt::ReceiveTimeout,
            &TimeVal::new(REPLY_TIMEOUT.as_secs() as _, 0),
        )?;
        let mut cmd = std::process::Command::new(program);
        // J and the sandbox's pid 1 are forks of the zygote: a neutral
        // argv[0] keeps the host path of the server binary out of their
        // /proc cmdline.
        std::os::unix::process::CommandExt::arg0(&mut cmd, "/init");
        cmd.args(&jailer[1..])
            .env_clear()
            .env(PARENT_PID_ENV, std::process::id().to_string())
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null());
        let process = launch(cmd)
            .map_err(|e| io::Error::new(e.kind(), format!("starting {program}: {e}")))?;
        Ok(Self { sock, process })
    }

    /// The zygote's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.process.id()
    }

    /// Has the zygote fork one jailer with these descriptors; returns J's
    /// pid and a pidfd for it.
    pub(crate) fn spawn(
        &self,
        stdin: &OwnedFd,
        control: &OwnedFd,
        output: &OwnedFd,
        userns: Option<&UsernsSetup>,
    ) -> Result<(u32, OwnedFd), SpawnError> {
        let request = serde_json::to_vec(&ZygoteRequest {
            userns: userns.cloned(),
        })
        .map_err(|e| SpawnError::Refused(e.to_string()))?;
        let fds = [stdin.as_raw_fd(), control.as_raw_fd(), output.as_raw_fd()];
        send_datagram(self.sock.as_raw_fd(), &request, &fds, MsgFlags::empty())
            .map_err(|e| SpawnError::NotSent(io::Error::from(e)))?;
        let (raw, mut fds) = receive(&self.sock, &mut vec![0u8; MAX_MESSAGE], 1)
            .map_err(SpawnError::Lost)?
            .ok_or_else(|| {
                SpawnError::Lost(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the zygote exited",
                ))
            })?;
        let reply: ZygoteReply = serde_json::from_slice(&raw)
            .map_err(|e| SpawnError::Lost(io::Error::other(format!("the zygote's reply: {e}"))))?;
        if let Some(error) = reply.error {
            return Err(SpawnError::Refused(error));
        }
        let pid = reply
            .pid
            .and_then(|p| u32::try_from(p).ok())
            .ok_or_else(|| SpawnError::Lost(io::Error::other("the zygote's reply has no pid")))?;
        let pidfd = fds
            .pop()
            .ok_or_else(|| SpawnError::Lost(io::Error::other("the zygote's reply has no pidfd")))?;
        Ok((pid, pidfd))
    }
}

/// Why the zygote forked no jailer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SpawnError {
    /// The request did not reach it (it had died): a new zygote may be
    /// asked with the same descriptors.
    #[error("the jailer zygote is gone: {0}")]
    NotSent(io::Error),
    /// It took the request but gave no usable answer (it died or hung):
    /// it must be replaced, but a jailer may have been forked with these
    /// descriptors, so they must not be used again.
    #[error("the jailer zygote gave no answer: {0}")]
    Lost(io::Error),
    /// It answered that it could not fork one (it is fine otherwise).
    #[error("the jailer zygote: {0}")]
    Refused(String),
}

impl Drop for Zygote {
    fn drop(&mut self) {
        // EOF on its socket ends the zygote; its jailers (none should be
        // left: sandboxes hold the backend) die with it.
        let _ = nix::sys::socket::shutdown(self.sock.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        for _ in 0..200 {
            if !matches!(self.process.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// One datagram and up to `max_fds` descriptors; `None` at EOF.
fn receive(
    sock: &OwnedFd,
    buf: &mut [u8],
    max_fds: usize,
) -> io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    let d = loop {
        match recv_datagram_in(sock.as_raw_fd(), buf, MsgFlags::empty()) {
            Ok(d) => break d,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    if d.bytes.is_empty() && d.fds.is_empty() {
        return Ok(None);
    }
    if d.body_cut || d.fds_cut || d.fds.len() > max_fds {
        return Err(io::Error::other(
            "an oversized message on the zygote socket",
        ));
    }
    Ok(Some((d.bytes, d.fds)))
}

// ---------------------------------------------------------------- zygote side

/// Entry point of the zygote (the jailer program, see [`crate::jailer_main`]).
pub(crate) fn zygote_main() -> ! {
    match serve() {
        Ok(()) => std::process::exit(0),
        Err(message) => {
            eprintln!("stratus-jailer zygote: {message}");
            std::process::exit(2)
        }
    }
}

fn serve() -> Result<(), String> {
    let server = jailer::parent_pid_from_env()?;
    jailer::arm_parent_death(server)?;
    let kind = nix::sys::socket::getsockopt(&io::stdin(), sockopt::SockType)
        .map_err(|e| format!("no request socket on stdin ({e})"))?;
    if kind != SockType::SeqPacket {
        return Err(format!(
            "stdin is a {kind:?} socket, not the request socket"
        ));
    }
    // The socket moves above the descriptor numbers J's setup uses; stdin
    // becomes /dev/null.
    let sock = dup_high(0).map_err(|e| format!("moving the request socket: {e}"))?;
    jailer::stdin_to_null().map_err(|e| e.to_string())?;
    // Compiled once here, not in every jailer; a failure is reported by
    // each jailer as its "seccomp" step, as before.
    let policy = jailer::compile_policy();

    let mut sigchld = SigSet::empty();
    sigchld.add(Signal::SIGCHLD);
    sigchld
        .thread_block()
        .map_err(|e| format!("blocking SIGCHLD: {e}"))?;
    let signals = SignalFd::with_flags(&sigchld, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| format!("creating the SIGCHLD signalfd: {e}"))?;
    let me = getpid();
    // Made (and zeroed) once, before the first fork: see `recv_datagram_in`.
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let (request_ready, child_exited) = {
            let mut fds = [
                PollFd::new(sock.as_fd(), PollFlags::POLLIN),
                PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(format!("poll: {e}")),
            }
            let ready = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
            (ready(&fds[0]), ready(&fds[1]))
        };
        if child_exited {
            while let Ok(Some(_)) = signals.read_signal() {}
            jailer::reap_all(Duration::ZERO);
        }
        if !request_ready {
            continue;
        }
        let (raw, fds) = match receive(&sock, &mut buf, 3) {
            Ok(Some(m)) => m,
            // The server closed the socket: its backend is gone.
            Ok(None) => return Ok(()),
            Err(e) => {
                reply(&sock, None, Some(e.to_string()));
                continue;
            }
        };
        let request = serde_json::from_slice::<ZygoteRequest>(&raw);
        let (request, fds): (ZygoteRequest, [OwnedFd; 3]) = match (request, fds.try_into()) {
            (Ok(r), Ok(fds)) => (r, fds),
            (Err(e), _) => {
                reply(&sock, None, Some(format!("malformed request: {e}")));
                continue;
            }
            (_, Err(fds)) => {
                let n = fds.len();
                reply(&sock, None, Some(format!("{n} descriptors, not 3")));
                continue;
            }
        };
        // SAFETY: the zygote is single-threaded (it runs before any thread
        // is started and starts none), so the child may run arbitrary code.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                drop(sock);
                drop(signals);
                become_jailer(
                    me,
                    fds,
                    request.userns,
                    policy.as_ref().map_err(String::as_str),
                )
            }
            Ok(ForkResult::Parent { child }) => {
                drop(fds);
                match pidfd_open(child) {
                    Ok(pidfd) => reply(&sock, Some((child, pidfd)), None),
                    Err(e) => {
                        // Without a pidfd the server could not watch it.
                        let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
                        reply(&sock, None, Some(format!("pidfd_open: {e}")));
                    }
                }
            }
            Err(e) => reply(&sock, None, Some(format!("fork: {e}"))),
        }
    }
}

fn reply(sock: &OwnedFd, jailer: Option<(Pid, OwnedFd)>, error: Option<String>) {
    let body = ZygoteReply {
        pid: jailer.as_ref().map(|(pid, _)| pid.as_raw()),
        error,
    };
    let Ok(raw) = serde_json::to_vec(&body) else {
        return;
    };
    let fds: Vec<RawFd> = jailer.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
    // A server that went away is noticed at the next receive.
    let _ = send_datagram(sock.as_raw_fd(), &raw, &fds, MsgFlags::empty());
}

/// The forked child: takes its descriptors as J expects them and runs J.
fn become_jailer(
    zygote: Pid,
    fds: [OwnedFd; 3],
    userns: Option<UsernsSetup>,
    policy: Result<&Policy, &str>,
) -> ! {
    let fail = |message: String| -> ! {
        eprintln!("stratus-jailer: {message}");
        // SAFETY: _exit ends this forked child at once.
        unsafe { libc::_exit(127) }
    };
    // J's own children (C) are reported to it by SIGCHLD as usual.
    if let Err(e) = SigSet::empty().thread_set_mask() {
        fail(format!("restoring the signal mask: {e}"));
    }
    if let Err(e) = jailer::arm_parent_death(zygote.as_raw()) {
        fail(e);
    }
    let [stdin, control, output] = fds;
    // The received descriptors may sit on 0-3: move them above first.
    let high: Vec<OwnedFd> = match [&stdin, &control, &output]
        .into_iter()
        .map(|fd| dup_high(fd.as_raw_fd()))
        .collect()
    {
        Ok(high) => high,
        Err(e) => fail(format!("duplicating the jailer's descriptors: {e}")),
    };
    drop((stdin, control, output));
    for (from, to) in [(0, 0), (2, 1), (2, 2), (1, CONTROL_FD)] {
        if let Err(e) = dup2(high[from].as_raw_fd(), to) {
            fail(format!("placing descriptor {to}: {e}"));
        }
    }
    drop(high);
    jailer::run(userns, policy)
}

/// A close-on-exec duplicate of `fd` numbered 10 or above.
fn dup_high(fd: RawFd) -> nix::Result<OwnedFd> {
    let new = fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(10))?;
    // SAFETY: fcntl just returned this new descriptor; we are its only owner.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

fn pidfd_open(pid: Pid) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this new descriptor; we are its only owner.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}
