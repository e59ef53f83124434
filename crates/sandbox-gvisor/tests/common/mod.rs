//! Shared by the gVisor backend's tests: which `runsc` and platform to use.
//!
//! `STRATUS_RUNSC` picks the binary (default `/usr/bin/runsc`) and
//! `STRATUS_GVISOR_PLATFORM` the platform (`systrap`, the default, or `ptrace`).

use std::path::PathBuf;

use stratus_sandbox_gvisor::{GvisorConfig, Platform};

/// A config for `state` and `cgroup_parent`, or `None` (with a message) when
/// there is no `runsc` to test.
pub fn config(state: PathBuf, cgroup_parent: String) -> Option<GvisorConfig> {
    let runsc = std::env::var_os("STRATUS_RUNSC")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/runsc"));
    if !runsc.is_file() {
        eprintln!(
            "skipped: no runsc at {} (apt-get install runsc, or set STRATUS_RUNSC)",
            runsc.display()
        );
        return None;
    }
    let platform = match std::env::var("STRATUS_GVISOR_PLATFORM").as_deref() {
        Ok("ptrace") => Platform::Ptrace,
        _ => Platform::Systrap,
    };
    Some(GvisorConfig {
        runsc,
        platform,
        state_dir: state,
        cgroup_parent,
        ..GvisorConfig::default()
    })
}
