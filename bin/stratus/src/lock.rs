//! What a server owns alone: its data directory and its cgroup parent.
//!
//! A second `stratus server` on the same `--data-dir` or `--cgroup-parent`
//! would, at start-up, remove what it takes for a crashed server's leftovers
//! (the first server's sandboxes, cgroups, scratch dirs, `/tmp` disks,
//! uploads). So before any clean-up the server takes an exclusive,
//! non-blocking `flock` on a lock file for each, held until the process
//! exits. The kernel drops the lock with the last open descriptor, so a
//! server killed with `kill -9` leaves nothing that blocks the next one. The
//! file holds the owner's pid, for the error message; it is never removed
//! (removing a lock file races with a process about to lock it).
//!
//! - data directory: `<data>/LOCK`.
//! - cgroup parent: `/run/stratus/cgroup-<parent>.lock` (`/` and `%` in the
//!   parent percent-encoded). A file rather than a lock on the cgroup
//!   directory itself: on cgroup v1 the parent is one directory per
//!   hierarchy, the backend removes it when the server stops (a lock taken on
//!   a directory another server is removing would protect nothing), and a
//!   directory cannot hold the owner's pid. `/run` is a tmpfs emptied at boot.
//!   Its limit: servers in separate mount namespaces (private `/run`) that
//!   share a cgroup hierarchy are not kept apart; give each its own parent.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// Where the cgroup parents' lock files live.
const CGROUP_LOCK_DIR: &str = "/run/stratus";

/// An exclusive lock on a file, held until dropped (or the process exits).
#[derive(Debug)]
pub struct PidLock {
    _file: Flock<File>,
}

/// Why [`PidLock::acquire`] failed.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock.
    #[error("{} is locked by {}", .path.display(), holder(*.pid))]
    Held {
        path: PathBuf,
        /// The pid written in the file, if it could be read.
        pid: Option<u32>,
    },
    /// The file could not be opened, locked or written.
    #[error("locking {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn holder(pid: Option<u32>) -> String {
    match pid {
        Some(p) => format!("another stratus server (pid {p})"),
        None => "another stratus server (pid unknown)".into(),
    }
}

impl PidLock {
    /// Takes the lock on `path` (created if missing) without waiting, and
    /// writes this process's pid into it.
    pub fn acquire(path: &Path) -> Result<Self, LockError> {
        let io = |source| LockError::Io {
            path: path.to_owned(),
            source,
        };
        // std opens with O_CLOEXEC: no jailer or sandbox inherits the lock.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)
            .map_err(io)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(file) => {
                let mut f: &File = &file;
                f.set_len(0)
                    .and_then(|()| writeln!(f, "{}", std::process::id()))
                    .map_err(io)?;
                Ok(PidLock { _file: file })
            }
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut text = String::new();
                let pid = file
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| text.trim().parse().ok());
                Err(LockError::Held {
                    path: path.to_owned(),
                    pid,
                })
            }
            Err((_, e)) => Err(io(std::io::Error::from(e))),
        }
    }
}

/// The locks of one server: its data directory and its cgroup parent.
#[derive(Debug)]
pub struct ServerLocks {
    _data: PidLock,
    _cgroup: PidLock,
}

/// Takes both locks of a server, or says which one another server holds.
pub fn lock_server(data: &Path, cgroup_parent: &str) -> anyhow::Result<ServerLocks> {
    lock_server_in(data, cgroup_parent, Path::new(CGROUP_LOCK_DIR))
}

fn lock_server_in(
    data: &Path,
    cgroup_parent: &str,
    cgroup_lock_dir: &Path,
) -> anyhow::Result<ServerLocks> {
    let data_lock = PidLock::acquire(&data.join("LOCK")).map_err(|e| match e {
        LockError::Held { pid, .. } => anyhow::anyhow!(
            "the data directory {} is in use by {}: two servers must not share one. Stop that server, or give this one another --data-dir",
            data.display(),
            holder(pid)
        ),
        e => anyhow::Error::new(e).context("locking the data directory"),
    })?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(cgroup_lock_dir)
        .with_context(|| format!("creating {}", cgroup_lock_dir.display()))?;
    let path = cgroup_lock_dir.join(cgroup_lock_name(cgroup_parent));
    let cgroup_lock = PidLock::acquire(&path).map_err(|e| match e {
        LockError::Held { pid, .. } => anyhow::anyhow!(
            "the cgroup parent `{cgroup_parent}` is in use by {} (lock {}): two servers must not share one. Stop that server, or give this one another --cgroup-parent",
            holder(pid),
            path.display()
        ),
        e => anyhow::Error::new(e).context("locking the cgroup parent"),
    })?;
    Ok(ServerLocks {
        _data: data_lock,
        _cgroup: cgroup_lock,
    })
}

/// `cgroup-<parent>.lock`, with `%` and `/` percent-encoded (so `a/b` and
/// `a%2Fb` get different files).
fn cgroup_lock_name(parent: &str) -> String {
    let escaped = parent.replace('%', "%25").replace('/', "%2F");
    format!("cgroup-{escaped}.lock")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_with_the_owner_pid_until_the_first_goes() {
        let d = tempfile::tempdir().expect("dir");
        let path = d.path().join("LOCK");
        let first = PidLock::acquire(&path).expect("first");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            format!("{}\n", std::process::id())
        );
        // flock locks belong to open file descriptions: a second open in the
        // same process conflicts as another process would.
        match PidLock::acquire(&path) {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected Held, got {other:?}"),
        }
        drop(first);
        let _again = PidLock::acquire(&path).expect("free once dropped");
    }

    #[test]
    fn a_server_is_refused_a_data_dir_or_cgroup_parent_in_use() {
        let data = tempfile::tempdir().expect("data");
        let other_data = tempfile::tempdir().expect("other data");
        let run = tempfile::tempdir().expect("run");
        let locks = run.path().join("locks");
        let first = lock_server_in(data.path(), "stratus/a", &locks).expect("first server");

        let e = lock_server_in(data.path(), "other", &locks).expect_err("same data dir");
        let msg = format!("{e:#}");
        assert!(msg.contains("data directory"), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        assert!(msg.contains("--data-dir"), "{msg}");

        let e = lock_server_in(other_data.path(), "stratus/a", &locks).expect_err("same parent");
        let msg = format!("{e:#}");
        assert!(msg.contains("cgroup parent `stratus/a`"), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        assert!(msg.contains("--cgroup-parent"), "{msg}");

        // The refused attempt on the cgroup parent released its data lock.
        let _second = lock_server_in(other_data.path(), "stratus%2Fa", &locks)
            .expect("another data dir and parent");
        drop(first);
        let _third = lock_server_in(data.path(), "stratus/a", &locks).expect("free again");
    }

    #[test]
    fn cgroup_lock_names_are_distinct_and_flat() {
        assert_eq!(cgroup_lock_name("stratus"), "cgroup-stratus.lock");
        assert_eq!(cgroup_lock_name("a/b"), "cgroup-a%2Fb.lock");
        assert_ne!(cgroup_lock_name("a/b"), cgroup_lock_name("a%2Fb"));
    }
}
