//! The one long-lived thread that makes network namespaces and starts `runsc`.
//!
//! Two things need a thread of their own. A parent-death signal fires when
//! the *thread* that forked a child ends, so `runsc` must be forked by a
//! thread that lives as long as the server (then a crashed server takes
//! every sandbox with it). And a network namespace is entered per thread:
//! this thread enters a fresh one, brings up its `lo`, binds the Runtime API
//! listener there, keeps a descriptor of the namespace and returns to the
//! host's, without disturbing any other thread of the server.
//!
//! `runsc` itself starts (in `pre_exec`, between fork and exec, where only
//! async-signal-safe calls are allowed) by joining the sandbox's cgroups,
//! entering the sandbox's network namespace and, when `/tmp` is a disk,
//! mounting it in a private mount namespace of its own, so the host's mount
//! table never holds it and it goes away with `runsc`'s processes.

use std::ffi::CString;
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::sync::mpsc::{Sender, SyncSender, channel, sync_channel};

use stratus_sandbox_process::{SANDBOX_GID, SANDBOX_UID};

/// What the launcher thread is asked to do.
enum Request {
    /// A new network namespace with `lo` up and a listener on 127.0.0.1:port.
    Netns(u16, SyncSender<io::Result<(OwnedFd, TcpListener)>>),
    /// Fork and exec this command.
    Spawn(Box<Command>, SyncSender<io::Result<Child>>),
}

fn launcher() -> io::Result<&'static Sender<Request>> {
    static LAUNCHER: OnceLock<Option<Sender<Request>>> = OnceLock::new();
    LAUNCHER
        .get_or_init(|| {
            let (tx, rx) = channel::<Request>();
            std::thread::Builder::new()
                .name("stratus-runsc-launcher".into())
                .spawn(move || {
                    let host = match std::fs::File::open("/proc/thread-self/ns/net") {
                        Ok(f) => OwnedFd::from(f),
                        Err(e) => {
                            tracing::error!(error = %e, "cannot open the host network namespace");
                            return;
                        }
                    };
                    // The static sender never drops, so this loop only ends
                    // if the thread could not return to the host namespace.
                    for request in rx {
                        match request {
                            Request::Netns(port, reply) => {
                                let (result, back) = new_netns(&host, port);
                                let _ = reply.send(result);
                                if let Err(e) = back {
                                    tracing::error!(error = %e, "cannot return to the host network namespace; no more gVisor sandboxes");
                                    return;
                                }
                            }
                            Request::Spawn(mut cmd, reply) => {
                                let child = cmd.spawn();
                                // Closes the parent's copies of the child's stdio first.
                                drop(cmd);
                                let _ = reply.send(child);
                            }
                        }
                    }
                })
                .ok()
                .map(|_| tx)
        })
        .as_ref()
        .ok_or_else(|| io::Error::other("the runsc launcher thread could not be started"))
}

fn gone() -> io::Error {
    io::Error::other("the runsc launcher thread is gone")
}

/// A fresh network namespace holding only `lo` (up) and a listener bound to
/// 127.0.0.1:`port` inside it.
pub fn netns_with_listener(port: u16) -> io::Result<(OwnedFd, TcpListener)> {
    let (tx, rx) = sync_channel(1);
    launcher()?
        .send(Request::Netns(port, tx))
        .map_err(|_| gone())?;
    rx.recv().map_err(|_| gone())?
}

/// Starts `cmd` from the launcher thread.
pub fn spawn(cmd: Command) -> io::Result<Child> {
    let (tx, rx) = sync_channel(1);
    launcher()?
        .send(Request::Spawn(Box::new(cmd), tx))
        .map_err(|_| gone())?;
    rx.recv().map_err(|_| gone())?
}

/// On the launcher thread: enter a new namespace, set it up, come back.
/// The second result is the way back, whose failure is fatal for the thread.
fn new_netns(host: &OwnedFd, port: u16) -> (io::Result<(OwnedFd, TcpListener)>, io::Result<()>) {
    // SAFETY: unshare with a flag only changes this thread's namespaces.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } < 0 {
        return (Err(io::Error::last_os_error()), Ok(()));
    }
    let made = (|| {
        let ns = OwnedFd::from(std::fs::File::open("/proc/thread-self/ns/net")?);
        loopback_up()?;
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        listener.set_nonblocking(true)?;
        Ok((ns, listener))
    })();
    // SAFETY: setns with an open namespace descriptor and its type.
    let back = if unsafe { libc::setns(host.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    };
    (made, back)
}

fn loopback_up() -> io::Result<()> {
    // SAFETY: socket() returns a new descriptor or -1.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor; we are its only owner.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `sock` is an open socket and `ifr` a valid, NUL-terminated
    // ifreq the kernel reads and writes within its size.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe {
        ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: as above; the kernel only reads `ifr`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Where `runsc` must be before it runs: everything here is prepared in the
/// server, so the `pre_exec` hook only makes system calls.
#[derive(Debug)]
pub struct Placement<'a> {
    /// Opened `cgroup.procs` files of the sandbox's cgroups.
    pub cgroup_procs: &'a [OwnedFd],
    /// The sandbox's network namespace.
    pub netns: &'a OwnedFd,
    /// A `/tmp` disk to mount on `tmp_dir`, if any.
    pub tmp_device: Option<&'a Path>,
    /// The host directory the bundle binds at `/tmp`.
    pub tmp_dir: &'a Path,
    /// The disk is fresh (first start): remove mkfs's empty `lost+found`,
    /// so `/tmp` starts empty as on Lambda.
    pub fresh_disk: bool,
}

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)
}

/// Adds the `pre_exec` hook that places the child as `placement` says.
pub fn place(cmd: &mut Command, placement: &Placement<'_>) -> io::Result<()> {
    let procs: Vec<RawFd> = placement
        .cgroup_procs
        .iter()
        .map(AsRawFd::as_raw_fd)
        .collect();
    let netns = placement.netns.as_raw_fd();
    let disk = match placement.tmp_device {
        Some(device) => Some((
            cstring(device)?,
            cstring(placement.tmp_dir)?,
            cstring(&placement.tmp_dir.join("lost+found"))?,
        )),
        None => None,
    };
    let fresh = placement.fresh_disk;
    let server_pid = std::process::id() as libc::pid_t;
    // SAFETY: the hook runs between fork and exec and only makes system
    // calls (prctl, getppid, write, setns, unshare, mount, chown, rmdir), which are
    // async-signal-safe; it reads only the integers and C strings moved into
    // it and allocates nothing.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != server_pid {
                return Err(io::Error::other("the server exited"));
            }
            for &fd in &procs {
                if libc::write(fd, b"0".as_ptr().cast(), 1) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if libc::setns(netns, libc::CLONE_NEWNET) < 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some((device, dir, lost_found)) = &disk {
                if libc::unshare(libc::CLONE_NEWNS) < 0 {
                    return Err(io::Error::last_os_error());
                }
                let root = c"/";
                let flags = (libc::MS_REC | libc::MS_SLAVE) as libc::c_ulong;
                if libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    flags,
                    std::ptr::null(),
                ) < 0
                {
                    return Err(io::Error::last_os_error());
                }
                let flags = (libc::MS_NOSUID | libc::MS_NODEV) as libc::c_ulong;
                if libc::mount(
                    device.as_ptr(),
                    dir.as_ptr(),
                    c"ext4".as_ptr(),
                    flags,
                    std::ptr::null(),
                ) < 0
                {
                    return Err(io::Error::last_os_error());
                }
                if libc::chown(dir.as_ptr(), SANDBOX_UID, SANDBOX_GID) < 0 {
                    return Err(io::Error::last_os_error());
                }
                if fresh {
                    // Empty right after mkfs; nothing to do if it is gone.
                    libc::rmdir(lost_found.as_ptr());
                }
            }
            Ok(())
        });
    }
    Ok(())
}
