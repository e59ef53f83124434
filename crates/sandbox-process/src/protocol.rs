//! What the server and the jailer say to each other.
//!
//! The server writes one [`JailerConfig`] as JSON to the jailer's stdin. The
//! jailer side (jailer J, init C, runtime R before exec) sends [`Report`]s
//! back, one JSON document per datagram on a `SOCK_SEQPACKET` socket at fd
//! [`CONTROL_FD`]; the `Listening` report carries the Runtime API listener
//! as `SCM_RIGHTS`. The server sends [`Command`]s the other way on the same
//! socket; only the sandbox init (C) reads them.

use std::collections::BTreeMap;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use serde::{Deserialize, Serialize};
use stratus_sandbox::ExitStatus;

/// File descriptor number of the control socket in the jailer (J).
pub const CONTROL_FD: RawFd = 3;

/// Environment variable with the server's pid, for the jailer zygote. It
/// arms its parent-death signal and then checks that its parent is still
/// that process: a zygote whose server died before the signal was armed
/// exits.
pub const PARENT_PID_ENV: &str = "STRATUS_JAILER_PARENT";

/// What the server asks the jailer zygote for: one jailer (J). Sent with
/// three descriptors (`SCM_RIGHTS`): J's stdin (the config pipe), the
/// control socket and the sandbox's output pipe.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ZygoteRequest {
    /// The user namespace J enters first (a rootless server), if any.
    pub userns: Option<UsernsSetup>,
}

/// The zygote's answer: J's pid and, as `SCM_RIGHTS`, a pidfd for it; or
/// why there is none.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ZygoteReply {
    /// J's pid.
    pub pid: Option<i32>,
    /// What failed (fork, pidfd_open, a malformed request).
    pub error: Option<String>,
}

/// Largest report the server accepts (error messages are truncated to fit).
pub const MAX_REPORT: usize = 16 * 1024;

/// Uid the runtime sees itself as (Lambda's `sbx_user1051`).
pub const SANDBOX_UID: u32 = 993;
/// Gid the runtime sees itself as.
pub const SANDBOX_GID: u32 = 990;

/// Everything the jailer needs; written by the server to the jailer's stdin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JailerConfig {
    /// Sandbox id (for messages only).
    pub id: String,
    /// Host directory mounted read-only at `/var/task`.
    pub code_dir: PathBuf,
    /// Host directory mounted read-only at `/var/runtime`.
    pub runtime_dir: Option<PathBuf>,
    /// Host directory mounted read-only at `/opt`.
    pub opt_dir: Option<PathBuf>,
    /// Program and arguments (inside paths).
    pub argv: Vec<String>,
    /// Complete environment of the runtime.
    pub env: BTreeMap<String, String>,
    /// Working directory inside.
    pub cwd: PathBuf,
    /// Host name inside.
    pub hostname: String,
    /// Port of the Runtime API on the sandbox's loopback.
    pub runtime_api_port: u16,
    /// RLIMIT_NOFILE of the runtime.
    pub max_fds: u64,
    /// RLIMIT_NPROC of the runtime (the pids cgroup is the real limit).
    pub max_pids: u64,
    /// Size of `/dev/shm` in bytes (counted against the memory cgroup anyway).
    pub shm_bytes: u64,
    /// `cgroup.procs` files the sandbox init writes `0` to (empty when the
    /// server already moved the init into the sandbox's cgroup).
    pub cgroup_procs: Vec<PathBuf>,
    /// Uid (and gid) the sandbox runs as, in the jailer's user namespace:
    /// the host's when the server is root; 0 (the server's own uid) or 1 (a
    /// subordinate uid) in rootless mode (see [`UsernsSetup`]).
    pub host_uid: u32,
    /// Host directory bind-mounted read-write at `/tmp` when there is
    /// neither a `tmp_device` nor a `tmp_tmpfs_bytes`.
    pub tmp_dir: Option<PathBuf>,
    /// Block device with a fresh ext4 filesystem to mount at `/tmp`.
    pub tmp_device: Option<PathBuf>,
    /// Size of a fresh tmpfs to mount at `/tmp` instead (rootless mode,
    /// where loop devices cannot be had).
    pub tmp_tmpfs_bytes: Option<u64>,
    /// Empty host directory on which the new root is assembled (in the
    /// jailer's mount namespace only): the same for every sandbox.
    pub root_dir: PathBuf,
    /// Protections the runtime starts without: for the protection-cost
    /// benchmark only (`ProcessBackendConfig::benchmark_without`); empty
    /// whenever the server starts a sandbox.
    #[serde(default)]
    pub without: Vec<Protection>,
    /// Outbound networking: how to configure `eth0`, which the server put
    /// into the jailer's network namespace (`None`: only `lo`).
    pub network: Option<crate::net::SandboxNet>,
    /// A pre-initialised runtime sandbox for the pool: `/var/task` and
    /// `/opt` stay empty mount points, C keeps its privileges and R is
    /// exec'd with a pipe ([`PREINIT_FD_ENV`]) on which it waits for its
    /// function; both wait for [`Command::Specialise`]. With an empty
    /// `argv` (a custom runtime, whose program is the function's own) R
    /// execs nothing yet: it waits on that pipe *before* `execve`, fully
    /// confined, and then execs the [`Specialisation`]'s `argv`.
    #[serde(default)]
    pub preinit: bool,
}

/// Environment variable naming the descriptor on which a pre-initialised
/// runtime (R, exec'd with [`JailerConfig::preinit`]) reads its
/// [`Specialisation`] (then EOF).
pub const PREINIT_FD_ENV: &str = "_STRATUS_PREINIT_FD";

/// What C writes to a pre-initialised runtime when the sandbox is handed
/// to a function: one JSON document, then EOF.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Specialisation {
    /// The runtime's complete environment from now on.
    pub env: BTreeMap<String, String>,
    /// Working directory (the code at `/var/task`).
    pub cwd: PathBuf,
    /// The program to exec, for a runtime waiting before `execve` (a
    /// pre-initialised sandbox started with an empty `argv`); empty, and
    /// not sent, for one that already runs its interpreter.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub argv: Vec<String>,
}

/// A protection that the protection-cost benchmark can leave out, one at a
/// time, to measure what it adds to a cold start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protection {
    /// The runtime's seccomp allowlist.
    Seccomp,
    /// The runtime's Landlock domain.
    Landlock,
    /// Emptying the bounding and ambient sets and locking the securebits.
    Capabilities,
    /// The runtime's own user namespace (uid 993 inside).
    UserNamespace,
    /// `/tmp` on its own capped ext4 disk (without: a host directory).
    TmpDisk,
}

impl Protection {
    /// Every protection the benchmark can leave out.
    pub const ALL: [Protection; 5] = [
        Protection::Seccomp,
        Protection::Landlock,
        Protection::Capabilities,
        Protection::UserNamespace,
        Protection::TmpDisk,
    ];
}

/// How the jailer of a rootless server maps ids in its user namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsernsSetup {
    /// `uid_map` lines: inside, outside, count.
    pub uid_map: Vec<[u32; 3]>,
    /// `gid_map` lines: inside, outside, count.
    pub gid_map: Vec<[u32; 3]>,
    /// `newuidmap` and `newgidmap`, needed for more than the caller's own
    /// id; without them the jailer writes the maps itself (own ids only).
    pub helpers: Option<(PathBuf, PathBuf)>,
}

/// One message from the jailer side to the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Report {
    /// J forked the sandbox init C; `pid` is C's pid in the server's pid namespace.
    Forked {
        /// C's pid.
        pid: i32,
    },
    /// The Runtime API listener is attached (SCM_RIGHTS).
    Listening,
    /// The runtime process has been exec'd.
    Started,
    /// The runtime process ended.
    Exited {
        /// How.
        status: ExitStatus,
    },
    /// A setup step failed; the sandbox is going away.
    Error {
        /// Which step (see [`step_name`]).
        step: String,
        /// What went wrong.
        message: String,
    },
}

/// One message from the server to the sandbox init (C).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Kill the runtime and everything it started, then start the runtime
    /// again in the same sandbox (same mounts, `/tmp`, cgroup and network).
    /// C answers with [`Report::Started`], or [`Report::Error`] and exits.
    RestartRuntime,
    /// Hand a pre-initialised sandbox ([`JailerConfig::preinit`]) to one
    /// function, for good. Comes with the function's code tree and, if
    /// `config.opt_dir` is set, its layers' tree as detached mount
    /// descriptors (`SCM_RIGHTS`, in that order; `open_tree` clones made by
    /// the server). C mounts them at `/var/task` and `/opt`, sets the host
    /// name and `/dev/shm` size, writes the runtime's [`Specialisation`],
    /// drops its privileges and from then on restarts the runtime with
    /// `config` (a normal start). Answers [`Report::Started`], or
    /// [`Report::Error`] and exits.
    Specialise {
        /// The sandbox's whole configuration from now on.
        config: Box<JailerConfig>,
    },
}

/// Largest command C accepts (a `Specialise` carries the environment:
/// Lambda allows 4 KiB of user variables, JSON escaping can grow them 6x).
pub const MAX_COMMAND: usize = 128 * 1024;

/// Sends one command with descriptors (never blocks: the socket buffer
/// holds many).
pub fn send_command(sock: BorrowedFd<'_>, command: &Command, fds: &[RawFd]) -> nix::Result<()> {
    let body = serde_json::to_vec(command).map_err(|_| nix::errno::Errno::EINVAL)?;
    if body.len() > MAX_COMMAND {
        return Err(nix::errno::Errno::E2BIG);
    }
    send_datagram(sock.as_raw_fd(), &body, fds, MsgFlags::MSG_DONTWAIT)
}

/// Maps a step name from a report to the `'static` names `SandboxError::Create` carries.
pub fn step_name(step: &str) -> &'static str {
    const STEPS: [&str; 21] = [
        "config",
        "stdio",
        "oom",
        "seccomp",
        "cgroup",
        "namespaces",
        "network",
        "listener",
        "fork",
        "mounts",
        "pivot_root",
        "hostname",
        "credentials",
        "userns",
        "rlimits",
        "chdir",
        "exec",
        "tmp",
        "capabilities",
        "landlock",
        "specialise",
    ];
    STEPS
        .iter()
        .find(|s| **s == step)
        .copied()
        .unwrap_or("jailer")
}

/// Sends one report, optionally passing a file descriptor along.
pub fn send_report(sock: BorrowedFd<'_>, report: &Report, fd: Option<RawFd>) -> nix::Result<()> {
    let body = serde_json::to_vec(report).map_err(|_| nix::errno::Errno::EINVAL)?;
    send_datagram(sock.as_raw_fd(), &body, fd.as_slice(), MsgFlags::empty())
}

/// Sends one datagram with `fds` as `SCM_RIGHTS` (`MSG_NOSIGNAL` and `flags`).
pub fn send_datagram(sock: RawFd, body: &[u8], fds: &[RawFd], flags: MsgFlags) -> nix::Result<()> {
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &rights };
    sendmsg::<()>(
        sock,
        &[IoSlice::new(body)],
        cmsgs,
        MsgFlags::MSG_NOSIGNAL | flags,
        None,
    )?;
    Ok(())
}

/// One datagram read by [`recv_datagram`].
#[derive(Debug)]
pub struct Datagram {
    /// Its body (empty at EOF), at most the size asked for.
    pub bytes: Vec<u8>,
    /// The descriptors that came with it, owned, close-on-exec.
    pub fds: Vec<OwnedFd>,
    /// The body was longer than the size asked for, and was cut.
    pub body_cut: bool,
    /// More descriptors came than fit (the kernel closed the rest).
    pub fds_cut: bool,
}

/// Receives one datagram of at most `max` bytes and up to 4 descriptors
/// (`MSG_CMSG_CLOEXEC` and `flags`).
pub fn recv_datagram(sock: RawFd, max: usize, flags: MsgFlags) -> nix::Result<Datagram> {
    recv_datagram_in(sock, &mut vec![0u8; max], flags)
}

/// [`recv_datagram`] into `buf` (at most its length), which the caller
/// keeps: the zygote receives into one buffer made before its first fork,
/// so that a request writes (and, shared with every jailer forked since,
/// copies) only the page the kernel fills, instead of zeroing a fresh one.
pub fn recv_datagram_in(sock: RawFd, buf: &mut [u8], flags: MsgFlags) -> nix::Result<Datagram> {
    let mut cmsg = nix::cmsg_space!([RawFd; 4]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        sock,
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC | flags,
    )?;
    let mut fds = Vec::new();
    let cmsgs = msg.cmsgs();
    let fds_cut = cmsgs.is_err() || msg.flags.contains(MsgFlags::MSG_CTRUNC);
    for c in cmsgs.into_iter().flatten() {
        if let ControlMessageOwned::ScmRights(raw) = c {
            // SAFETY: SCM_RIGHTS just installed these descriptors in our
            // table for this message; nothing else refers to them.
            fds.extend(
                raw.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    let body_cut = msg.flags.contains(MsgFlags::MSG_TRUNC);
    let len = msg.bytes;
    Ok(Datagram {
        bytes: buf[..len].to_vec(),
        fds,
        body_cut,
        fds_cut,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_carry_their_descriptors_and_say_when_cut() {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .expect("socketpair");
        let (r, w) = nix::unistd::pipe().expect("pipe");
        send_datagram(
            a.as_raw_fd(),
            b"hello",
            &[r.as_raw_fd(), w.as_raw_fd()],
            MsgFlags::empty(),
        )
        .expect("send");
        let d = recv_datagram(b.as_raw_fd(), 64, MsgFlags::empty()).expect("receive");
        assert_eq!(d.bytes, b"hello");
        assert_eq!(d.fds.len(), 2);
        assert!(!d.body_cut && !d.fds_cut);
        // The descriptors came close-on-exec and work: a write on the
        // received write end reads back on the original read end.
        let flags = nix::fcntl::fcntl(d.fds[1].as_raw_fd(), nix::fcntl::FcntlArg::F_GETFD)
            .expect("F_GETFD");
        assert_ne!(flags & libc::FD_CLOEXEC, 0);
        nix::unistd::write(&d.fds[1], b"x").expect("write");
        let mut buf = [0u8; 1];
        assert_eq!(nix::unistd::read(r.as_raw_fd(), &mut buf).expect("read"), 1);
        // Longer than asked for: cut, and said so.
        send_datagram(a.as_raw_fd(), b"0123456789", &[], MsgFlags::empty()).expect("send");
        let d = recv_datagram(b.as_raw_fd(), 4, MsgFlags::empty()).expect("receive");
        assert_eq!(d.bytes, b"0123");
        assert!(d.body_cut && d.fds.is_empty());
        // A buffer used again gives each datagram's own bytes only.
        let mut kept = [0u8; 16];
        for body in [&b"a longer body"[..], b"short"] {
            send_datagram(a.as_raw_fd(), body, &[], MsgFlags::empty()).expect("send");
            let d = recv_datagram_in(b.as_raw_fd(), &mut kept, MsgFlags::empty()).expect("receive");
            assert_eq!(d.bytes, body);
            assert!(!d.body_cut);
        }
        // More descriptors than fit: the ones that fit, and said so.
        let many: Vec<RawFd> = std::iter::repeat_n(r.as_raw_fd(), 6).collect();
        send_datagram(a.as_raw_fd(), b"many", &many, MsgFlags::empty()).expect("send");
        let d = recv_datagram(b.as_raw_fd(), 64, MsgFlags::empty()).expect("receive");
        assert_eq!(d.bytes, b"many");
        assert!(d.fds_cut && d.fds.len() <= 4, "{} fds", d.fds.len());
        // Nothing waiting: EAGAIN with MSG_DONTWAIT; EOF once the peer is gone.
        assert_eq!(
            recv_datagram(b.as_raw_fd(), 64, MsgFlags::MSG_DONTWAIT).map(|_| ()),
            Err(nix::errno::Errno::EAGAIN)
        );
        drop(a);
        let d = recv_datagram(b.as_raw_fd(), 64, MsgFlags::empty()).expect("eof");
        assert!(d.bytes.is_empty() && d.fds.is_empty());
    }

    #[test]
    fn config_round_trips_as_json() {
        let cfg = JailerConfig {
            id: "sbx-1".into(),
            code_dir: "/srv/code".into(),
            runtime_dir: None,
            opt_dir: Some("/srv/opt".into()),
            argv: vec!["/var/runtime/bootstrap".into()],
            env: BTreeMap::from([("AWS_LAMBDA_RUNTIME_API".into(), "127.0.0.1:9001".into())]),
            cwd: "/var/task".into(),
            hostname: "localhost".into(),
            runtime_api_port: 9001,
            max_fds: 1024,
            max_pids: 64,
            shm_bytes: 1 << 20,
            cgroup_procs: vec!["/sys/fs/cgroup/memory/stratus/sbx-1/cgroup.procs".into()],
            host_uid: 200_000,
            tmp_dir: Some("/tmp/s/sbx-1/tmp".into()),
            tmp_device: Some("/dev/loop7".into()),
            tmp_tmpfs_bytes: None,
            root_dir: "/tmp/s/.root".into(),
            without: vec![Protection::Landlock],
            network: Some(crate::net::SandboxNet {
                address: std::net::Ipv4Addr::new(172, 31, 250, 2),
                prefix: 24,
                gateway: std::net::Ipv4Addr::new(172, 31, 250, 1),
                nameservers: vec![std::net::Ipv4Addr::new(192, 0, 2, 53)],
            }),
            preinit: false,
        };
        let json = serde_json::to_string(&cfg).expect("serialise");
        assert!(json.contains(r#""without":["landlock"]"#), "{json}");
        let back: JailerConfig = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, cfg);
        let setup = UsernsSetup {
            uid_map: vec![[0, 1000, 1], [1, 100_000, 1]],
            gid_map: vec![[0, 1000, 1], [1, 100_000, 1]],
            helpers: Some(("/usr/bin/newuidmap".into(), "/usr/bin/newgidmap".into())),
        };
        let text = serde_json::to_string(&setup).expect("serialise");
        assert_eq!(
            serde_json::from_str::<UsernsSetup>(&text).expect("parse"),
            setup
        );
        // Every protection applies unless the config names it.
        let all = json.replace(r#","without":["landlock"]"#, "");
        let back: JailerConfig = serde_json::from_str(&all).expect("parse");
        assert!(back.without.is_empty());
        assert!(
            crate::ProcessBackendConfig::default()
                .benchmark_without
                .is_empty()
        );
        assert!(
            serde_json::from_str::<JailerConfig>(&json.replace("\"id\"", "\"bogus\"")).is_err()
        );
    }

    #[test]
    fn reports_have_a_stable_wire_form() {
        let r = Report::Exited {
            status: ExitStatus::Signal(9),
        };
        assert_eq!(
            serde_json::to_string(&r).expect("serialise"),
            r#"{"type":"exited","status":{"Signal":9}}"#
        );
        let e: Report = serde_json::from_str(r#"{"type":"error","step":"mounts","message":"x"}"#)
            .expect("parse");
        assert_eq!(
            e,
            Report::Error {
                step: "mounts".into(),
                message: "x".into()
            }
        );
    }

    #[test]
    fn commands_have_a_stable_wire_form() {
        let json = serde_json::to_string(&Command::RestartRuntime).expect("serialise");
        assert_eq!(json, r#"{"type":"restart_runtime"}"#);
        assert!(json.len() <= MAX_COMMAND);
        assert!(serde_json::from_str::<Command>(r#"{"type":"reboot"}"#).is_err());
        // A specialisation with Lambda's largest environment (4 KiB of user
        // variables, each byte escaped as \u00XX) still fits one command.
        let raw = r#"{"id":"s","code_dir":"/c","runtime_dir":null,"opt_dir":null,"argv":["x"],"env":{},"cwd":"/var/task","hostname":"h","runtime_api_port":9001,"max_fds":1,"max_pids":1,"shm_bytes":1,"cgroup_procs":[],"host_uid":5,"tmp_dir":"/t","tmp_device":null,"tmp_tmpfs_bytes":null,"root_dir":"/r","network":null}"#;
        let mut config: JailerConfig = serde_json::from_str(raw).expect("parse");
        assert!(!config.preinit, "preinit defaults to off");
        config.env.insert("BIG".into(), "\u{1}".repeat(4096));
        let cmd = Command::Specialise {
            config: Box::new(config),
        };
        let json = serde_json::to_string(&cmd).expect("serialise");
        assert!(
            json.starts_with(r#"{"type":"specialise","config":{"#),
            "{json}"
        );
        assert!(json.len() <= MAX_COMMAND, "{}", json.len());
        assert_eq!(serde_json::from_str::<Command>(&json).expect("parse"), cmd);
    }

    #[test]
    fn a_specialisation_names_a_program_only_for_a_runtime_waiting_before_exec() {
        let mut s = Specialisation {
            env: BTreeMap::from([("A".to_owned(), "b".to_owned())]),
            cwd: "/var/task".into(),
            argv: Vec::new(),
        };
        // What the python and node bootstraps read: no argv.
        let json = serde_json::to_string(&s).expect("serialise");
        assert_eq!(json, r#"{"env":{"A":"b"},"cwd":"/var/task"}"#);
        assert_eq!(
            serde_json::from_str::<Specialisation>(&json).expect("parse"),
            s
        );
        s.argv = vec!["/var/task/bootstrap".into()];
        let json = serde_json::to_string(&s).expect("serialise");
        assert!(
            json.ends_with(r#","argv":["/var/task/bootstrap"]}"#),
            "{json}"
        );
        assert_eq!(
            serde_json::from_str::<Specialisation>(&json).expect("parse"),
            s
        );
    }

    #[test]
    fn unknown_steps_map_to_jailer() {
        assert_eq!(step_name("mounts"), "mounts");
        assert_eq!(step_name("something else"), "jailer");
    }
}
