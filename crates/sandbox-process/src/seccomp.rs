//! The runtime's seccomp policy, kept as data in `seccomp/<arch>.json`
//! (seccompiler's JSON format) and compiled when the jailer starts.
//!
//! The policy is an allowlist (`allowlist`): any syscall it does not name
//! fails with `EPERM`, in the spirit of Docker's default profile (its
//! unconditional list, less io_uring and file handles; see
//! `seccomp/README.md`). `clone` is allowed only without namespace flags,
//! `socket` for any family but vsock. `clone3` is answered `ENOSYS` by a
//! second filter (`deny_enosys`): its flags live in memory a filter cannot
//! read, and libc then falls back to `clone`. Every filter in the file is
//! installed, in name order; `ENOSYS` wins over the allowlist's `ALLOW`
//! because the kernel returns the most restrictive answer of all filters.

use seccompiler::{BpfProgram, TargetArch};

/// The policy installed in every sandbox on this architecture (`None` where
/// the repository has none yet: sandboxes refuse to start there).
pub const DEFAULT_POLICY: Option<&str> = if cfg!(target_arch = "x86_64") {
    Some(include_str!("../seccomp/x86_64.json"))
} else {
    None
};

/// Errors of policy compilation and installation.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The host architecture has no seccompiler support.
    #[error("unsupported architecture {0}")]
    Arch(&'static str),
    /// The JSON policy does not compile.
    #[error("compiling seccomp policy: {0}")]
    Compile(seccompiler::Error),
    /// The kernel refused a filter.
    #[error("installing seccomp filter {name}: {source}")]
    Install {
        /// The filter's name in the policy.
        name: String,
        /// What seccompiler reported.
        source: seccompiler::Error,
    },
}

/// Compiled filters, ready to install.
#[derive(Debug)]
pub struct Policy {
    filters: Vec<(String, BpfProgram)>,
}

impl Policy {
    /// Compiles a JSON policy for the running architecture.
    pub fn compile(json: &str) -> Result<Self, SeccompError> {
        let arch = TargetArch::try_from(std::env::consts::ARCH)
            .map_err(|_| SeccompError::Arch(std::env::consts::ARCH))?;
        let map =
            seccompiler::compile_from_json(json.as_bytes(), arch).map_err(SeccompError::Compile)?;
        let mut filters: Vec<(String, BpfProgram)> = map.into_iter().collect();
        filters.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Self { filters })
    }

    /// Installs every filter on the calling thread (sets `no_new_privs` first).
    pub fn install(&self) -> Result<(), SeccompError> {
        for (name, prog) in &self.filters {
            seccompiler::apply_filter(prog).map_err(|source| SeccompError::Install {
                name: name.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Names of the filters, in installation order.
    pub fn names(&self) -> Vec<&str> {
        self.filters.iter().map(|(n, _)| n.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy_json() -> serde_json::Value {
        serde_json::from_str(DEFAULT_POLICY.expect("a policy for this arch")).expect("json")
    }

    /// The syscalls the allowlist lets through, with or without conditions.
    fn allowed() -> Vec<String> {
        policy_json()["allowlist"]["filter"]
            .as_array()
            .expect("filter")
            .iter()
            .map(|r| r["syscall"].as_str().expect("name").to_owned())
            .collect()
    }

    #[test]
    fn default_policy_compiles() {
        let policy = Policy::compile(DEFAULT_POLICY.expect("policy")).expect("policy compiles");
        assert_eq!(policy.names(), vec!["allowlist", "deny_enosys"]);
    }

    #[test]
    fn default_policy_denies_by_default() {
        let p = policy_json();
        assert_eq!(
            p["allowlist"]["mismatch_action"],
            serde_json::json!({"errno": 1})
        );
        assert_eq!(p["allowlist"]["filter_action"], "allow");
        assert_eq!(
            p["deny_enosys"]["filter_action"],
            serde_json::json!({"errno": 38})
        );
    }

    #[test]
    fn default_policy_leaves_out_the_dangerous_syscalls() {
        let allowed = allowed();
        for syscall in [
            "mount",
            "umount2",
            "pivot_root",
            "chroot",
            "unshare",
            "setns",
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "bpf",
            "perf_event_open",
            "kexec_load",
            "kexec_file_load",
            "init_module",
            "finit_module",
            "delete_module",
            "keyctl",
            "add_key",
            "request_key",
            "swapon",
            "reboot",
            "open_by_handle_at",
            "name_to_handle_at",
            "userfaultfd",
            "fsopen",
            "fsmount",
            "move_mount",
            "open_tree",
            "io_uring_setup",
            "acct",
            "quotactl",
            "syslog",
            "sethostname",
            "settimeofday",
            "iopl",
            "ioperm",
            "kcmp",
            "pidfd_getfd",
            "modify_ldt",
        ] {
            assert!(
                !allowed.iter().any(|a| a == syscall),
                "{syscall} is allowed"
            );
        }
    }

    #[test]
    fn clone_is_allowed_only_without_namespace_flags() {
        let p = policy_json();
        let rules: Vec<&serde_json::Value> = p["allowlist"]["filter"]
            .as_array()
            .expect("filter")
            .iter()
            .filter(|r| r["syscall"] == "clone")
            .collect();
        assert_eq!(rules.len(), 1);
        let arg = &rules[0]["args"][0];
        let mask = arg["op"]["masked_eq"].as_u64().expect("mask");
        assert_eq!(arg["val"], 0);
        for flag in [
            libc::CLONE_NEWNS,
            libc::CLONE_NEWCGROUP,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWNET,
        ] {
            assert_ne!(mask & flag as u64, 0, "flag {flag:#x} not masked");
        }
        assert_eq!(mask & (libc::CLONE_VM | libc::CLONE_THREAD) as u64, 0);
    }

    #[test]
    fn what_runtimes_need_is_allowed() {
        let allowed = allowed();
        for syscall in [
            "read",
            "write",
            "openat",
            "mmap",
            "futex",
            "epoll_wait",
            "clone",
            "execve",
            "arch_prctl",
            "rseq",
            "getrandom",
            "socket",
            "connect",
            "statx",
            "prlimit64",
        ] {
            assert!(allowed.iter().any(|a| a == syscall), "{syscall} is denied");
        }
    }
}
