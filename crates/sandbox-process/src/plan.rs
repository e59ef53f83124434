//! Which protections a server started by *this* user can give sandboxes on
//! *this* host: the plan is chosen once, at start, from facts about the
//! host ([`Facts`]), and said out loud ([`Plan::protections`]) by the server
//! at start and by `stratus doctor`.
//!
//! - **root**: everything as designed: a host uid per sandbox from the
//!   configured range, the host's cgroups, `/tmp` on a loop device.
//! - **rootless** (any other user): the jailer first enters a user namespace
//!   in which the server's uid is 0, and builds the sandbox from there.
//!   - Sandbox uids: with `newuidmap`/`newgidmap` and a range for the user in
//!     `/etc/subuid` and `/etc/subgid`, each sandbox runs as its own
//!     subordinate uid ([`Ids::Subordinate`]); otherwise every sandbox runs as
//!     the server's own uid ([`Ids::Shared`]).
//!   - Cgroups: a cgroup v2 subtree delegated to the user (systemd's
//!     `user@UID.service`) if there is one, else none: memory, pids and CPU
//!     are then not limited.
//!   - `/tmp`: a tmpfs of EphemeralStorage's size in the sandbox's own mount
//!     namespace (loop devices need root). Capped, but counted as memory.
//!
//! The selection ([`select`]) is a pure function of [`Facts`], so every
//! combination is tested with made-up facts.

use std::path::{Path, PathBuf};

use crate::cgroup::{self, CgroupVersion};

/// What the plan is chosen from. [`Facts::gather`] reads them from the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// Effective uid of the server.
    pub euid: u32,
    /// Effective gid of the server.
    pub egid: u32,
    /// The server user's name (for `/etc/subuid`, which may name users either way).
    pub user: Option<String>,
    /// Contents of `/etc/subuid` (empty if absent).
    pub subuid: String,
    /// Contents of `/etc/subgid` (empty if absent).
    pub subgid: String,
    /// `newuidmap`, if installed.
    pub newuidmap: Option<PathBuf>,
    /// `newgidmap`, if installed.
    pub newgidmap: Option<PathBuf>,
    /// Where cgroup filesystems are mounted (`/sys/fs/cgroup`).
    pub cgroup_root: PathBuf,
    /// The host's cgroup version, if a usable hierarchy is mounted.
    pub cgroup_version: Option<CgroupVersion>,
    /// A cgroup v2 directory delegated to this user (see [`find_delegated`]).
    pub delegated_cgroup: Option<PathBuf>,
}

impl Facts {
    /// Reads the facts of this process and host. Changes nothing.
    pub fn gather() -> Self {
        let euid = nix::unistd::geteuid().as_raw();
        let egid = nix::unistd::getegid().as_raw();
        let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(euid))
            .ok()
            .flatten()
            .map(|u| u.name);
        let cgroup_root = PathBuf::from(crate::CGROUP_ROOT);
        let cgroup_version = cgroup::detect(&cgroup_root);
        let delegated_cgroup = if euid != 0 && cgroup_version == Some(CgroupVersion::V2) {
            std::fs::read_to_string("/proc/self/cgroup")
                .ok()
                .and_then(|s| own_v2_cgroup(&s))
                .and_then(|own| find_delegated(&cgroup_root, &own, euid))
        } else {
            None
        };
        Self {
            euid,
            egid,
            user,
            subuid: std::fs::read_to_string("/etc/subuid").unwrap_or_default(),
            subgid: std::fs::read_to_string("/etc/subgid").unwrap_or_default(),
            newuidmap: find_program("newuidmap"),
            newgidmap: find_program("newgidmap"),
            cgroup_root,
            cgroup_version,
            delegated_cgroup,
        }
    }
}

/// A setuid helper in the usual places (not `$PATH`: the server's
/// environment should not choose what runs with privileges).
fn find_program(name: &str) -> Option<PathBuf> {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Why an unprivileged process cannot make a user namespace on this host,
/// if a sysctl says so (rootless mode needs one for every sandbox).
pub fn userns_blocked() -> Option<String> {
    userns_blocked_by(|p| std::fs::read_to_string(p).ok())
}

/// [`userns_blocked`] with the sysctls read by `read`.
fn userns_blocked_by(read: impl Fn(&str) -> Option<String>) -> Option<String> {
    [
        ("/proc/sys/user/max_user_namespaces", "0"),
        ("/proc/sys/kernel/unprivileged_userns_clone", "0"),
        (
            "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
            "1",
        ),
    ]
    .into_iter()
    .find(|(path, blocking)| read(path).is_some_and(|v| v.trim() == *blocking))
    .map(|(path, value)| format!("{path} is {value}"))
}

/// The cgroup v2 path of this process (`0::/a/b` in `/proc/self/cgroup`).
pub fn own_v2_cgroup(proc_self_cgroup: &str) -> Option<String> {
    proc_self_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim().to_owned())
}

/// The highest cgroup v2 directory on the way from `root` to `own` (the
/// server's cgroup) that `uid` may manage: the directory and its
/// `cgroup.procs` and `cgroup.subtree_control` belong to `uid`, it offers
/// the memory and pids controllers, and no process sits in it directly
/// (cgroup v2 lets only such a cgroup enable controllers for children).
/// systemd delegates `user@UID.service` this way.
pub fn find_delegated(root: &Path, own: &str, uid: u32) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    find_delegated_by(root, own, |p| {
        std::fs::metadata(p).is_ok_and(|m| m.uid() == uid)
    })
}

/// [`find_delegated`] with the ownership test given (`mine`).
fn find_delegated_by(root: &Path, own: &str, mine: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    let mut dir = root.to_path_buf();
    for part in own
        .split('/')
        .filter(|p| !p.is_empty() && *p != "." && *p != "..")
    {
        dir.push(part);
        let controllers =
            std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
        let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
        let empty =
            std::fs::read_to_string(dir.join("cgroup.procs")).is_ok_and(|s| s.trim().is_empty());
        if mine(&dir)
            && mine(&dir.join("cgroup.procs"))
            && mine(&dir.join("cgroup.subtree_control"))
            && has("memory")
            && has("pids")
            && empty
        {
            return Some(dir);
        }
    }
    None
}

/// One range of `/etc/subuid` or `/etc/subgid`: the first id and how many.
pub fn subordinate_range(text: &str, user: Option<&str>, uid: u32) -> Option<(u32, u32)> {
    text.lines().find_map(|line| {
        let mut f = line.trim().split(':');
        let (who, start, count) = (f.next()?, f.next()?, f.next()?);
        let me = Some(who) == user || who.parse::<u32>().ok() == Some(uid);
        let start = start.trim().parse::<u32>().ok()?;
        let count = count.trim().parse::<u32>().ok()?;
        (me && count > 0 && start > 0).then_some((start, count))
    })
}

/// Whose uids the sandboxes run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ids {
    /// The server is root: one host uid per sandbox from the configured range.
    Root,
    /// Rootless, one subordinate uid (and gid) per sandbox, mapped by the
    /// setuid `newuidmap`/`newgidmap`.
    Subordinate {
        /// The server's uid (0 in the jailer's user namespace).
        uid: u32,
        /// The server's gid.
        gid: u32,
        /// First subordinate uid and how many (from `/etc/subuid`).
        uids: (u32, u32),
        /// First subordinate gid and how many (from `/etc/subgid`).
        gids: (u32, u32),
        /// The `newuidmap` program.
        newuidmap: PathBuf,
        /// The `newgidmap` program.
        newgidmap: PathBuf,
    },
    /// Rootless without subordinate ids: every sandbox runs as the server's uid.
    Shared {
        /// The server's uid.
        uid: u32,
        /// The server's gid.
        gid: u32,
        /// Why subordinate ids cannot be used.
        reason: String,
    },
}

/// Which cgroups sandboxes get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroups {
    /// The hierarchy at `root` (the host's, or a v2 subtree delegated to the user).
    Use {
        /// Directory under which the cgroup parent is made.
        root: PathBuf,
        /// v1 or v2.
        version: CgroupVersion,
        /// A delegated v2 subtree (rootless), not the host's root.
        delegated: bool,
    },
    /// None: memory, pids and CPU are not limited by a cgroup.
    None {
        /// Why.
        reason: String,
    },
}

/// What `/tmp` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tmp {
    /// An ext4 disk of EphemeralStorage's size on a loop device (root; the
    /// backend falls back to an uncapped directory if the host cannot).
    Disk,
    /// A tmpfs of EphemeralStorage's size mounted in the sandbox's mount
    /// namespace: capped, but its contents are memory.
    Tmpfs,
}

/// The plan for this server; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Sandbox uids.
    pub ids: Ids,
    /// Sandbox cgroups.
    pub cgroups: Cgroups,
    /// Sandbox `/tmp`.
    pub tmp: Tmp,
}

/// Chooses the plan for `f`.
pub fn select(f: &Facts) -> Plan {
    if f.euid == 0 {
        let cgroups = match f.cgroup_version {
            Some(version) => Cgroups::Use {
                root: f.cgroup_root.clone(),
                version,
                delegated: false,
            },
            None => Cgroups::None {
                reason: format!(
                    "no usable cgroup v1 (memory, pids) or v2 hierarchy under {}",
                    f.cgroup_root.display()
                ),
            },
        };
        return Plan {
            ids: Ids::Root,
            cgroups,
            tmp: Tmp::Disk,
        };
    }
    let uids = subordinate_range(&f.subuid, f.user.as_deref(), f.euid);
    let gids = subordinate_range(&f.subgid, f.user.as_deref(), f.euid);
    let ids = match (&f.newuidmap, &f.newgidmap, uids, gids) {
        (Some(nu), Some(ng), Some(uids), Some(gids)) => Ids::Subordinate {
            uid: f.euid,
            gid: f.egid,
            uids,
            gids,
            newuidmap: nu.clone(),
            newgidmap: ng.clone(),
        },
        (nu, ng, uids, gids) => {
            let mut missing = Vec::new();
            if nu.is_none() || ng.is_none() {
                missing.push("no newuidmap/newgidmap (Debian package uidmap)".to_owned());
            }
            let who = f.user.clone().unwrap_or_else(|| f.euid.to_string());
            if uids.is_none() {
                missing.push(format!("no range for {who} in /etc/subuid"));
            }
            if gids.is_none() {
                missing.push(format!("no range for {who} in /etc/subgid"));
            }
            Ids::Shared {
                uid: f.euid,
                gid: f.egid,
                reason: missing.join("; "),
            }
        }
    };
    let cgroups = match (&f.delegated_cgroup, f.cgroup_version) {
        (Some(dir), _) => Cgroups::Use {
            root: dir.clone(),
            version: CgroupVersion::V2,
            delegated: true,
        },
        (None, Some(CgroupVersion::V1)) => Cgroups::None {
            reason: "cgroup v1 without delegation".into(),
        },
        (None, Some(CgroupVersion::V2)) => Cgroups::None {
            reason: "cgroup v2, but no subtree delegated to this user".into(),
        },
        (None, None) => Cgroups::None {
            reason: "no usable cgroup hierarchy".into(),
        },
    };
    Plan {
        ids,
        cgroups,
        tmp: Tmp::Tmpfs,
    }
}

/// [`select`], with subordinate ids tried first: `newuidmap` and
/// `newgidmap` map the ids for a throwaway process in a new user namespace,
/// as the jailer will have them map ids for every sandbox. If they refuse
/// (a stale `/etc/subuid`, helpers that lost their setuid bit, a `nosuid`
/// mount), every sandbox would fail to start: the plan falls back to the
/// server's own uid, and says why.
pub fn select_checked(f: &Facts) -> Plan {
    let mut plan = select(f);
    if let Err(why) = try_id_mapping(&plan.ids) {
        plan.ids = Ids::Shared {
            uid: f.euid,
            gid: f.egid,
            reason: format!("newuidmap/newgidmap refused a test mapping: {why}"),
        };
    }
    plan
}

/// Maps the server's ids and the first subordinate ids for a `cat` that
/// waits in a new user namespace; `Ok` for plans without subordinate ids.
fn try_id_mapping(ids: &Ids) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let Ids::Subordinate {
        uid,
        gid,
        uids,
        gids,
        newuidmap,
        newgidmap,
    } = ids
    else {
        return Ok(());
    };
    let cat = ["/usr/bin/cat", "/bin/cat"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .ok_or("no cat to try the mapping on")?;
    let mut cmd = Command::new(cat);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: the hook runs between fork and exec and only calls unshare,
    // which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWUSER) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting {cat} in a new user namespace: {e}"))?;
    let pid = child.id().to_string();
    let run = |program: &Path, outside: u32, sub: u32| -> Result<(), String> {
        let out = Command::new(program)
            .args([pid.as_str(), "0", &outside.to_string(), "1"])
            .args(["1", &sub.to_string(), "1"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running {}: {e}", program.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} {}: {}",
                program.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    };
    let result = run(newuidmap, *uid, uids.0).and_then(|()| run(newgidmap, *gid, gids.0));
    // EOF ends the cat; killed too, should it not end (not yet reaped, so
    // the pid is still this child's).
    drop(child.stdin.take());
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// One protection a sandbox gets, or does not.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProtectionStatus {
    /// Short name (`cgroups`, `sandbox uids`, ...).
    pub name: &'static str,
    /// Whether it is applied.
    pub applied: bool,
    /// What it is, or what is lost and why.
    pub detail: String,
}

fn protection(name: &'static str, applied: bool, detail: impl Into<String>) -> ProtectionStatus {
    ProtectionStatus {
        name,
        applied,
        detail: detail.into(),
    }
}

impl Plan {
    /// Whether the server is not root.
    pub fn rootless(&self) -> bool {
        self.ids != Ids::Root
    }

    /// The cgroup hierarchy sandboxes use, if any.
    pub fn cgroup_hierarchy(&self) -> Option<(&Path, CgroupVersion)> {
        match &self.cgroups {
            Cgroups::Use { root, version, .. } => Some((root, *version)),
            Cgroups::None { .. } => None,
        }
    }

    /// Every protection and whether it applies under this plan. `/tmp` on a
    /// root server is the disk the backend plans; whether this host can
    /// make such disks is told by the backend (`tmp_is_capped`).
    pub fn protections(&self) -> Vec<ProtectionStatus> {
        let prefix = if self.rootless() { "rootless: " } else { "" };
        let mut out = vec![protection(
            "namespaces",
            true,
            "own mount, pid, network (lo only), UTS, IPC, cgroup and user namespaces; read-only root; seccomp allowlist, no capabilities, no_new_privs, Landlock where the kernel has it",
        )];
        if self.rootless() {
            out.push(protection(
                "privileges",
                true,
                "rootless: the server is not root; the jailer builds each sandbox inside a user namespace where the server's uid is 0",
            ));
        }
        out.push(match &self.ids {
            Ids::Root => protection(
                "sandbox uids",
                true,
                "one host uid per sandbox (from --uid-base); RLIMIT_NPROC counts per sandbox",
            ),
            Ids::Subordinate { uids, .. } => protection(
                "sandbox uids",
                true,
                format!(
                    "rootless: one subordinate uid per sandbox from /etc/subuid ({}..{}), mapped by newuidmap; RLIMIT_NPROC counts per sandbox",
                    uids.0,
                    uids.0.saturating_add(uids.1 - 1)
                ),
            ),
            Ids::Shared { uid, reason, .. } => protection(
                "sandbox uids",
                false,
                format!(
                    "rootless: every sandbox runs as the server's own uid {uid} ({reason}): a sandbox that escaped its namespaces could reach the server's files, processes and other sandboxes; and it keeps the user's supplementary groups. Install uidmap and give the user a range in /etc/subuid and /etc/subgid"
                ),
            ),
        });
        out.push(match &self.cgroups {
            Cgroups::Use {
                root,
                version,
                delegated: true,
            } => protection(
                "cgroups",
                true,
                format!(
                    "rootless: {version:?} subtree delegated to this user at {}: memory, pids and CPU limits",
                    root.display()
                ),
            ),
            Cgroups::Use { version, .. } => protection(
                "cgroups",
                true,
                format!("{version:?}: memory, pids and CPU limits"),
            ),
            Cgroups::None { reason } => protection(
                "cgroups",
                false,
                format!(
                    "{prefix}no cgroup limits ({reason}): memory, pids and CPU are not limited; MemorySize is not enforced (a function may use the host's memory), memory use is not measured, CPU is not shared in proportion to memory{}",
                    if self.rootless() {
                        "; processes are still bounded by RLIMIT_NPROC, which the kernel (5.14 and later) counts per user namespace, so per sandbox"
                    } else {
                        "; processes are still bounded by RLIMIT_NPROC of each sandbox's own uid"
                    }
                ),
            ),
        });
        out.push(match self.tmp {
            Tmp::Disk => protection(
                "/tmp",
                true,
                "an ext4 disk of EphemeralStorage's size on a loop device, page cache not memory",
            ),
            Tmp::Tmpfs => protection(
                "/tmp",
                true,
                "rootless: a tmpfs of EphemeralStorage's size (loop devices need root): capped, but what a function writes there is memory",
            ),
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(euid: u32) -> Facts {
        Facts {
            euid,
            egid: euid,
            user: Some("alice".into()),
            subuid: String::new(),
            subgid: String::new(),
            newuidmap: None,
            newgidmap: None,
            cgroup_root: "/sys/fs/cgroup".into(),
            cgroup_version: Some(CgroupVersion::V1),
            delegated_cgroup: None,
        }
    }

    fn with_subids(mut f: Facts) -> Facts {
        f.subuid = "bob:200000:65536\nalice:100000:65536\n".into();
        f.subgid = "1000:300000:65536\n".into();
        f.newuidmap = Some("/usr/bin/newuidmap".into());
        f.newgidmap = Some("/usr/bin/newgidmap".into());
        f
    }

    #[test]
    fn root_uses_the_host_cgroups_uid_range_and_disks() {
        let p = select(&with_subids(facts(0)));
        assert_eq!(p.ids, Ids::Root);
        assert!(!p.rootless());
        assert_eq!(p.tmp, Tmp::Disk);
        assert_eq!(
            p.cgroup_hierarchy(),
            Some((Path::new("/sys/fs/cgroup"), CgroupVersion::V1))
        );
        assert!(p.protections().iter().all(|x| x.applied), "{p:?}");
    }

    #[test]
    fn rootless_with_subordinate_ids_maps_a_uid_per_sandbox() {
        let p = select(&with_subids(facts(1000)));
        match &p.ids {
            Ids::Subordinate { uids, gids, .. } => {
                // By name in subuid, by number in subgid.
                assert_eq!(*uids, (100_000, 65_536));
                assert_eq!(*gids, (300_000, 65_536));
            }
            other => panic!("expected subordinate ids, got {other:?}"),
        }
        assert_eq!(p.tmp, Tmp::Tmpfs);
        let uids = p
            .protections()
            .into_iter()
            .find(|x| x.name == "sandbox uids");
        assert!(uids.is_some_and(|u| u.applied));
    }

    #[test]
    fn rootless_without_helpers_or_ranges_shares_the_server_uid_and_says_why() {
        let mut no_helper = with_subids(facts(1000));
        no_helper.newgidmap = None;
        let mut no_range = with_subids(facts(1000));
        no_range.subuid = "bob:200000:65536\n".into();
        for (f, why) in [
            (facts(1000), "uidmap"),
            (no_helper, "uidmap"),
            (no_range, "alice in /etc/subuid"),
        ] {
            let p = select(&f);
            match &p.ids {
                Ids::Shared { uid, reason, .. } => {
                    assert_eq!(*uid, 1000);
                    assert!(reason.contains(why), "{reason}");
                }
                other => panic!("expected shared ids, got {other:?}"),
            }
            let lost: Vec<_> = p.protections().into_iter().filter(|x| !x.applied).collect();
            assert!(
                lost.iter().any(|x| x.name == "sandbox uids"
                    && x.detail.contains("server's own uid 1000")),
                "{lost:?}"
            );
        }
    }

    #[test]
    fn rootless_on_cgroup_v1_has_no_cgroup_limits_and_says_so() {
        let p = select(&with_subids(facts(1000)));
        assert_eq!(p.cgroup_hierarchy(), None);
        let cg = p
            .protections()
            .into_iter()
            .find(|x| x.name == "cgroups")
            .expect("a cgroups line");
        assert!(!cg.applied);
        assert!(
            cg.detail.starts_with(
                "rootless: no cgroup limits (cgroup v1 without delegation): memory, pids and CPU are not limited"
            ),
            "{}",
            cg.detail
        );
    }

    #[test]
    fn rootless_uses_a_delegated_v2_subtree() {
        let mut f = facts(1000);
        f.cgroup_version = Some(CgroupVersion::V2);
        assert!(matches!(
            select(&f).cgroups,
            Cgroups::None { ref reason } if reason.contains("no subtree delegated")
        ));
        f.delegated_cgroup =
            Some("/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service".into());
        let p = select(&f);
        assert_eq!(
            p.cgroup_hierarchy(),
            Some((
                Path::new("/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service"),
                CgroupVersion::V2
            ))
        );
        assert!(
            p.protections()
                .iter()
                .any(|x| x.name == "cgroups" && x.applied)
        );
    }

    /// A fake v2 tree as systemd lays it out: `user-1000.slice` is root's,
    /// `user@1000.service` is delegated (the user's, no process directly in
    /// it), the server runs in a scope below it.
    #[test]
    fn the_delegated_subtree_is_the_highest_one_the_user_may_manage() {
        let d = tempfile::tempdir().expect("dir");
        let root = d.path();
        let slice = root.join("user.slice/user-1000.slice");
        let svc = slice.join("user@1000.service");
        let scope = svc.join("app.slice/stratus.scope");
        std::fs::create_dir_all(&scope).expect("dirs");
        let files = |dir: &Path, controllers: &str, procs: &str| {
            std::fs::write(dir.join("cgroup.controllers"), controllers).expect("file");
            std::fs::write(dir.join("cgroup.subtree_control"), "").expect("file");
            std::fs::write(dir.join("cgroup.procs"), procs).expect("file");
        };
        files(root, "cpu memory pids\n", "1\n");
        files(&root.join("user.slice"), "cpu memory pids\n", "");
        files(&slice, "cpu memory pids\n", "");
        files(&svc, "cpu memory pids\n", "");
        files(&svc.join("app.slice"), "cpu memory pids\n", "");
        files(&scope, "cpu memory pids\n", "4242\n");
        let own = "/user.slice/user-1000.slice/user@1000.service/app.slice/stratus.scope";
        let users = |p: &Path| p.starts_with(&svc);
        assert_eq!(find_delegated_by(root, own, users), Some(svc.clone()));
        // The real ownership test: the tree belongs to whoever runs the test.
        use std::os::unix::fs::MetadataExt;
        let me = std::fs::metadata(root).expect("meta").uid();
        assert_eq!(find_delegated(root, own, me), Some(root.join("user.slice")));
        assert_eq!(find_delegated(root, own, me.wrapping_add(1)), None);
        // Not delegated at all (a login session's scope is root's).
        assert_eq!(find_delegated_by(root, own, |_| false), None);
        // Without the memory controller offered, no level is usable.
        files(&svc, "cpu pids\n", "");
        files(&svc.join("app.slice"), "cpu pids\n", "");
        files(&scope, "cpu pids\n", "4242\n");
        assert_eq!(find_delegated_by(root, own, users), None);
        // A level with processes directly in it cannot enable controllers.
        files(&svc, "cpu memory pids\n", "77\n");
        files(&svc.join("app.slice"), "cpu memory pids\n", "88\n");
        assert_eq!(find_delegated_by(root, own, users), None);
    }

    #[test]
    fn sysctls_that_forbid_unprivileged_user_namespaces_are_named() {
        let host = |vals: &'static [(&'static str, &'static str)]| {
            move |p: &str| {
                vals.iter()
                    .find(|(k, _)| *k == p)
                    .map(|(_, v)| format!("{v}\n"))
            }
        };
        assert_eq!(userns_blocked_by(host(&[])), None);
        assert_eq!(
            userns_blocked_by(host(&[
                ("/proc/sys/user/max_user_namespaces", "63000"),
                ("/proc/sys/kernel/unprivileged_userns_clone", "1"),
                (
                    "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
                    "0"
                ),
            ])),
            None
        );
        let why = userns_blocked_by(host(&[(
            "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
            "1",
        )]));
        assert_eq!(
            why.as_deref(),
            Some("/proc/sys/kernel/apparmor_restrict_unprivileged_userns is 1")
        );
        assert!(
            userns_blocked_by(host(&[("/proc/sys/user/max_user_namespaces", "0")]))
                .is_some_and(|w| w.contains("max_user_namespaces"))
        );
    }

    #[test]
    fn subordinate_ids_fall_back_to_the_servers_uid_when_the_helpers_refuse() {
        let mut f = with_subids(facts(1000));
        f.newuidmap = Some("/bin/false".into());
        f.newgidmap = Some("/bin/true".into());
        let p = select_checked(&f);
        match &p.ids {
            Ids::Shared { uid, reason, .. } => {
                assert_eq!(*uid, 1000);
                assert!(
                    reason.starts_with("newuidmap/newgidmap refused a test mapping: /bin/false"),
                    "{reason}"
                );
            }
            other => panic!("expected the fallback, got {other:?}"),
        }
        // Helpers that succeed keep the subordinate plan.
        f.newuidmap = Some("/bin/true".into());
        assert!(matches!(select_checked(&f).ids, Ids::Subordinate { .. }));
        // Root is never tried.
        assert_eq!(select_checked(&with_subids(facts(0))).ids, Ids::Root);
    }

    #[test]
    fn own_cgroup_is_read_from_the_unified_line() {
        let text = "12:pids:/user.slice\n0::/user.slice/user-1000.slice/session-3.scope\n";
        assert_eq!(
            own_v2_cgroup(text).as_deref(),
            Some("/user.slice/user-1000.slice/session-3.scope")
        );
        assert_eq!(own_v2_cgroup("4:memory:/\n"), None);
    }

    #[test]
    fn subordinate_ranges_match_by_name_or_uid() {
        let text = "# comment\nalice:100000:65536\n1001:165536:1000\nbad:line\nzero:1:0\n";
        assert_eq!(
            subordinate_range(text, Some("alice"), 1000),
            Some((100_000, 65_536))
        );
        assert_eq!(subordinate_range(text, None, 1001), Some((165_536, 1000)));
        assert_eq!(subordinate_range(text, Some("zero"), 5), None);
        assert_eq!(subordinate_range("", Some("alice"), 1000), None);
    }
}
