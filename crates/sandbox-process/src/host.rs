//! What this host offers the process backend, for `stratus doctor`.
//!
//! Each check says what it found and what it means for sandboxes, without
//! changing anything on the host.

use std::path::Path;

use crate::cgroup::{self, CgroupVersion};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Available.
    Ok,
    /// Stratus runs, with the limitation the detail names.
    Warn,
    /// Sandboxes cannot start here.
    Fail,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// The outcome.
    pub status: Status,
    /// What was found, and what it means for sandboxes.
    pub detail: String,
}

fn check(name: &'static str, status: Status, detail: impl Into<String>) -> Check {
    Check {
        name,
        status,
        detail: detail.into(),
    }
}

/// Checks the host as the process backend would use it.
pub fn checks() -> Vec<Check> {
    let mut out = Vec::new();
    let plan = crate::plan::select_checked(&crate::plan::Facts::gather());
    if plan.rootless() {
        out.push(check(
            "root",
            Status::Warn,
            "not root: rootless mode (the jailer enters a user namespace first); the lines below say what it can and cannot apply",
        ));
        for p in plan.protections() {
            if matches!(p.name, "sandbox uids" | "cgroups" | "/tmp") {
                let name = if p.name == "/tmp" {
                    "/tmp size"
                } else {
                    p.name
                };
                let status = if p.applied { Status::Ok } else { Status::Warn };
                out.push(check(name, status, p.detail));
            }
        }
    } else {
        out.push(check("root", Status::Ok, "running as root"));
        out.push(cgroups(Path::new(crate::CGROUP_ROOT)));
    }
    let userns = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let blocked = plan.rootless().then(crate::plan::userns_blocked).flatten();
    out.push(match (blocked, userns) {
        (Some(why), _) => check(
            "user namespaces",
            Status::Fail,
            format!("{why}: a rootless server cannot make its sandboxes' user namespaces"),
        ),
        (None, Some(0)) => check(
            "user namespaces",
            Status::Fail,
            "user.max_user_namespaces is 0: the runtime cannot get its own user namespace",
        ),
        (None, Some(n)) => check(
            "user namespaces",
            Status::Ok,
            format!("allowed (up to {n})"),
        ),
        (None, None) => check(
            "user namespaces",
            Status::Warn,
            "cannot read /proc/sys/user/max_user_namespaces",
        ),
    });
    let seccomp = std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("Seccomp:")));
    out.push(if seccomp {
        check("seccomp", Status::Ok, "filters available")
    } else {
        check(
            "seccomp",
            Status::Fail,
            "the kernel has no seccomp: the sandbox filter cannot be installed",
        )
    });
    out.push(landlock());
    if !plan.rootless() {
        out.push(tmp_disks());
    }
    out.push(outbound_network());
    out
}

/// Landlock's ABI version, asked of the kernel as its documentation says
/// (`landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)`).
fn landlock() -> Check {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_long = 1;
    // SAFETY: a null attribute pointer with size 0 is the documented query.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0 as libc::size_t,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if abi > 0 {
        check(
            "landlock",
            Status::Ok,
            format!("ABI {abi}: runtimes may write only /tmp and /dev"),
        )
    } else {
        check(
            "landlock",
            Status::Warn,
            "not available (kernel older than 5.13 or not enabled): file access is limited by read-only mounts alone",
        )
    }
}

/// `--network outbound` loads its firewall with `nft`; the default mode
/// needs nothing.
fn outbound_network() -> Check {
    match std::process::Command::new("nft")
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => check(
            "outbound network",
            Status::Ok,
            format!(
                "{} (used only with --network outbound)",
                String::from_utf8_lossy(&out.stdout).trim()
            ),
        ),
        _ => check(
            "outbound network",
            Status::Warn,
            "no working nft command: --network outbound will refuse to start (Debian package nftables); the default --network none needs nothing",
        ),
    }
}

fn cgroups(root: &Path) -> Check {
    match cgroup::detect(root) {
        Some(CgroupVersion::V1) => {
            let cpu = root.join("cpu").join("cpu.shares").is_file();
            if cpu {
                check(
                    "cgroups",
                    Status::Ok,
                    "v1: memory, pids and cpu (MemorySize, 1,024 processes, CPU weight or quota)",
                )
            } else {
                check(
                    "cgroups",
                    Status::Warn,
                    "v1: memory and pids, but no cpu controller: CPU is not shared in proportion to MemorySize",
                )
            }
        }
        Some(CgroupVersion::V2) => {
            let controllers =
                std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
            let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
            match (has("memory") && has("pids"), has("cpu")) {
                (true, true) => check(
                    "cgroups",
                    Status::Ok,
                    "v2: memory, pids and cpu (MemorySize, 1,024 processes, CPU weight or quota)",
                ),
                (true, false) => check(
                    "cgroups",
                    Status::Warn,
                    "v2 without the cpu controller: CPU is not shared in proportion to MemorySize",
                ),
                (false, _) => check(
                    "cgroups",
                    Status::Fail,
                    format!(
                        "v2 without the memory and pids controllers (has: {})",
                        controllers.trim()
                    ),
                ),
            }
        }
        None => check(
            "cgroups",
            Status::Fail,
            format!(
                "no usable cgroup v1 (memory, pids) or v2 hierarchy under {}",
                root.display()
            ),
        ),
    }
}

fn tmp_disks() -> Check {
    let tool = |name: &str| {
        ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
            .iter()
            .any(|d| Path::new(d).join(name).is_file())
    };
    let mut missing = Vec::new();
    if !Path::new("/dev/loop-control").exists() {
        missing.push("/dev/loop-control");
    }
    if !tool("mkfs.ext4") {
        missing.push("mkfs.ext4 (e2fsprogs)");
    }
    if !tool("losetup") {
        missing.push("losetup (mount)");
    }
    if missing.is_empty() {
        check(
            "/tmp size",
            Status::Ok,
            "loop devices, mkfs.ext4 and losetup: /tmp is a disk of exactly EphemeralStorage",
        )
    } else {
        check(
            "/tmp size",
            Status::Warn,
            format!(
                "missing {}: /tmp will be an uncapped host directory",
                missing.join(", ")
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_findings_follow_the_hierarchy() {
        let d = tempfile::tempdir().expect("dir");
        assert_eq!(cgroups(d.path()).status, Status::Fail);
        for c in ["memory", "pids"] {
            std::fs::create_dir_all(d.path().join(c)).expect("dir");
            std::fs::write(d.path().join(c).join("cgroup.procs"), "").expect("file");
        }
        let v1 = cgroups(d.path());
        assert_eq!(v1.status, Status::Warn, "{v1:?}");
        std::fs::create_dir_all(d.path().join("cpu")).expect("dir");
        std::fs::write(d.path().join("cpu/cpu.shares"), "1024").expect("file");
        assert_eq!(cgroups(d.path()).status, Status::Ok);

        let v2 = tempfile::tempdir().expect("dir");
        std::fs::write(v2.path().join("cgroup.controllers"), "cpuset io\n").expect("file");
        assert_eq!(cgroups(v2.path()).status, Status::Fail);
        std::fs::write(v2.path().join("cgroup.controllers"), "memory pids io\n").expect("file");
        assert_eq!(cgroups(v2.path()).status, Status::Warn);
        std::fs::write(v2.path().join("cgroup.controllers"), "cpu memory pids\n").expect("file");
        assert_eq!(cgroups(v2.path()).status, Status::Ok);
    }

    #[test]
    fn every_check_has_a_name_and_a_detail() {
        let all = checks();
        assert!(all.len() >= 5);
        assert!(
            all.iter()
                .all(|c| !c.name.is_empty() && !c.detail.is_empty())
        );
    }
}
