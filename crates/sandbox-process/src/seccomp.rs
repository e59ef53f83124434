//! The runtime's seccomp policy, kept as data in `seccomp/default.json`
//! (seccompiler's JSON format) and compiled when the jailer starts.
//!
//! Today the policy is a deny list: syscalls that could undo the sandbox or
//! reach the kernel's riskier corners fail with `EPERM`, and `clone3` fails
//! with `ENOSYS` (its flags live in memory a filter cannot inspect; libc then
//! falls back to `clone`, whose namespace flags the policy does inspect).
//! Every filter in the file is installed, in name order.

use seccompiler::{BpfProgram, TargetArch};

/// The policy installed in every sandbox.
pub const DEFAULT_POLICY: &str = include_str!("../seccomp/default.json");

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

    #[test]
    fn default_policy_compiles() {
        let policy = Policy::compile(DEFAULT_POLICY).expect("policy compiles");
        assert_eq!(policy.names(), vec!["deny_enosys", "deny_eperm"]);
    }

    #[test]
    fn default_policy_names_the_dangerous_syscalls() {
        for syscall in [
            "\"mount\"",
            "\"unshare\"",
            "\"setns\"",
            "\"ptrace\"",
            "\"bpf\"",
            "\"clone3\"",
            "\"fsopen\"",
        ] {
            assert!(
                DEFAULT_POLICY.contains(syscall),
                "{syscall} missing from policy"
            );
        }
    }
}
