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
//!   parent percent-encoded); for a rootless server under its user's
//!   runtime dir instead (see `cgroup_lock_dir`). A file rather than a lock on the cgroup
//!   directory itself: on cgroup v1 the parent is one directory per
//!   hierarchy, the backend removes it when the server stops (a lock taken on
//!   a directory another server is removing would protect nothing), and a
//!   directory cannot hold the owner's pid. `/run` is a tmpfs emptied at boot.
//!   Its limit: servers in separate mount namespaces (private `/run`) that
//!   share a cgroup hierarchy are not kept apart; give each its own parent.
//!
//! Parents nest: the clean-up under `a` would take the cgroups of a server
//! on `a/b` for leftovers. So a server also takes a *shared* lock on the
//! file of every ancestor of its parent (`a` for `a/b`): servers on `a/b`
//! and `a/c` run side by side, but one on `a` and one inside it refuse each
//! other whichever starts second.

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

/// Opens (creating) a lock file. std opens with O_CLOEXEC: no jailer or
/// sandbox inherits the lock.
fn open(path: &Path) -> Result<File, LockError> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(path)
        .map_err(|source| LockError::Io {
            path: path.to_owned(),
            source,
        })
}

impl PidLock {
    /// Takes the lock on `path` (created if missing) exclusively without
    /// waiting, and writes this process's pid into it.
    pub fn acquire(path: &Path) -> Result<Self, LockError> {
        let file = Self::lock(path, FlockArg::LockExclusiveNonblock)?;
        let mut f: &File = &file._file;
        f.set_len(0)
            .and_then(|()| writeln!(f, "{}", std::process::id()))
            .map_err(|source| LockError::Io {
                path: path.to_owned(),
                source,
            })?;
        Ok(file)
    }

    /// Takes a shared lock on `path` without waiting (refused only while
    /// someone holds it exclusively); writes nothing.
    pub fn share(path: &Path) -> Result<Self, LockError> {
        Self::lock(path, FlockArg::LockSharedNonblock)
    }

    fn lock(path: &Path, how: FlockArg) -> Result<Self, LockError> {
        match Flock::lock(open(path)?, how) {
            Ok(file) => Ok(PidLock { _file: file }),
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
            Err((_, e)) => Err(LockError::Io {
                path: path.to_owned(),
                source: std::io::Error::from(e),
            }),
        }
    }
}

/// The locks of one server: its data directory and its cgroup parent (with
/// the parent's ancestors, shared).
#[derive(Debug)]
pub struct ServerLocks {
    _data: PidLock,
    _cgroup: Vec<PidLock>,
}

/// Takes both locks of a server, or says which one another server holds.
pub fn lock_server(data: &Path, cgroup_parent: &str) -> anyhow::Result<ServerLocks> {
    lock_server_in(data, cgroup_parent, &cgroup_lock_dir(data))
}

/// Where the cgroup parents' lock files live: [`CGROUP_LOCK_DIR`] for root.
/// A rootless server cannot write there; its cgroups, if any, are in a
/// subtree delegated to its user, so its locks go to the user's runtime dir
/// (`$XDG_RUNTIME_DIR`, else `/run/user/UID`), or, without one (no session,
/// so no delegation either), to the data dir.
fn cgroup_lock_dir(data: &Path) -> PathBuf {
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        return PathBuf::from(CGROUP_LOCK_DIR);
    }
    use std::os::unix::fs::MetadataExt;
    // The user's own: an inherited variable (e.g. from `sudo -u`) may name root's.
    let mine = |d: &PathBuf| {
        d.is_absolute() && std::fs::metadata(d).is_ok_and(|m| m.is_dir() && m.uid() == uid.as_raw())
    };
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(mine)
        .or_else(|| Some(PathBuf::from(format!("/run/user/{uid}"))).filter(mine))
        .map_or_else(|| data.join("cgroup-locks"), |d| d.join("stratus"))
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
    let cgroup_locks = lock_cgroup_parent(cgroup_lock_dir, cgroup_parent)?;
    Ok(ServerLocks {
        _data: data_lock,
        _cgroup: cgroup_locks,
    })
}

const ADVICE: &str =
    "Stop that server, or give this one a --cgroup-parent apart from (not inside or around) its";

/// Shared locks on the ancestors of `parent`, then an exclusive one on it.
fn lock_cgroup_parent(dir: &Path, parent: &str) -> anyhow::Result<Vec<PidLock>> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let parts: Vec<&str> = parent.split('/').collect();
    let mut held = Vec::with_capacity(parts.len());
    for n in 1..parts.len() {
        let ancestor = parts[..n].join("/");
        match PidLock::share(&dir.join(cgroup_lock_name(&ancestor))) {
            Ok(lock) => held.push(lock),
            Err(LockError::Held { pid, .. }) => anyhow::bail!(
                "the cgroup parent `{parent}` is inside `{ancestor}`, the cgroup parent of {}, whose start-up clean-up would remove this one's sandboxes. {ADVICE}",
                holder(pid)
            ),
            Err(e) => return Err(anyhow::Error::new(e).context("locking the cgroup parent")),
        }
    }
    match PidLock::acquire(&dir.join(cgroup_lock_name(parent))) {
        Ok(lock) => held.push(lock),
        // Held exclusively by a server on the same parent, or shared by
        // servers on parents inside it.
        Err(LockError::Held { pid, .. }) => match server_inside(dir, parent) {
            Some((inner, pid)) => anyhow::bail!(
                "the cgroup parent `{parent}` holds `{inner}`, the cgroup parent of {}, whose sandboxes this one's start-up clean-up would remove. {ADVICE}",
                holder(pid)
            ),
            None => anyhow::bail!(
                "the cgroup parent `{parent}` is in use by {}: two servers must not share one. {ADVICE}",
                holder(pid)
            ),
        },
        Err(e) => return Err(anyhow::Error::new(e).context("locking the cgroup parent")),
    }
    Ok(held)
}

/// A parent inside `parent` that a live server holds, and that server's pid.
fn server_inside(dir: &Path, parent: &str) -> Option<(String, Option<u32>)> {
    let prefix = cgroup_lock_name(&format!("{parent}/"));
    let prefix = prefix.strip_suffix(".lock")?;
    std::fs::read_dir(dir).ok()?.flatten().find_map(|entry| {
        let name = entry.file_name().into_string().ok()?;
        let inner = name.strip_prefix(prefix)?.strip_suffix(".lock")?;
        match PidLock::share(&entry.path()) {
            Err(LockError::Held { pid, .. }) => {
                let inner = format!("{parent}/{inner}").replace("%2F", "/");
                Some((inner.replace("%25", "%"), pid))
            }
            _ => None,
        }
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
    fn nested_cgroup_parents_refuse_each_other_siblings_do_not() {
        let run = tempfile::tempdir().expect("run");
        let dir = run.path();
        let pid = format!("pid {}", std::process::id());

        let outer = lock_cgroup_parent(dir, "a").expect("a");
        let e = lock_cgroup_parent(dir, "a/b/c").expect_err("inside a");
        let msg = format!("{e:#}");
        assert!(msg.contains("`a/b/c` is inside `a`"), "{msg}");
        assert!(msg.contains(&pid), "{msg}");
        drop(outer);

        let inner = lock_cgroup_parent(dir, "a/b/c").expect("a/b/c");
        let sibling = lock_cgroup_parent(dir, "a/b/d").expect("a sibling");
        let beside = lock_cgroup_parent(dir, "ab").expect("a name that only starts alike");
        for around in ["a", "a/b"] {
            let e = lock_cgroup_parent(dir, around).expect_err("around a/b/c");
            let msg = format!("{e:#}");
            assert!(msg.contains(&format!("`{around}` holds `a/b/")), "{msg}");
            assert!(msg.contains(&pid), "{msg}");
        }
        let e = lock_cgroup_parent(dir, "a/b/c").expect_err("the same");
        assert!(format!("{e:#}").contains("`a/b/c` is in use by"), "{e:#}");
        drop((inner, sibling, beside));
        let _outer = lock_cgroup_parent(dir, "a").expect("a, once the inner ones are gone");
    }

    #[test]
    fn cgroup_lock_names_are_distinct_and_flat() {
        assert_eq!(cgroup_lock_name("stratus"), "cgroup-stratus.lock");
        assert_eq!(cgroup_lock_name("a/b"), "cgroup-a%2Fb.lock");
        assert_ne!(cgroup_lock_name("a/b"), cgroup_lock_name("a%2Fb"));
    }
}
