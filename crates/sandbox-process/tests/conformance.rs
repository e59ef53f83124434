//! The sandbox conformance suite against the process backend (needs root, as on CI).

use stratus_sandbox::conformance::Suite;
use stratus_sandbox_process::{ProcessBackend, ProcessBackendConfig};

/// One backend per check (own state dir, cgroup parent and uid range, as
/// checks run in parallel), pre-warmed so the pooled path is what runs.
async fn setup(check: &'static str) -> Option<(Box<ProcessBackend>, Suite, tempfile::TempDir)> {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped {check}: the process backend needs root");
        return None;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    // A stable uid range per check, away from the other tests' (2_910_xxx).
    let index = CHECKS
        .iter()
        .position(|c| *c == check)
        .expect("a known check") as u32;
    let uid_base = 2_920_000 + index * 8;
    let backend = ProcessBackend::new(ProcessBackendConfig {
        jailer: vec![env!("CARGO_BIN_EXE_stratus-jailer").to_owned()],
        state_dir: dir.path().join("state"),
        cgroup_parent: format!("stratus-conformance-{uid_base}"),
        uid_base,
        uid_count: 4,
        prewarm: 1,
        tmp_disk_pool: 1,
        ..ProcessBackendConfig::default()
    })
    .expect("process backend");
    backend.prewarm();
    let suite = Suite::new(&dir.path().join("code"), check);
    Some((Box::new(backend), suite, dir))
}

const CHECKS: &[&str] = &[
    "spawn_reaches_runtime_api",
    "exit_code_and_output",
    "memory_limit_is_enforced",
    "pids_limit_is_enforced",
    "tmp_is_capped",
    "kill_ends_the_sandbox",
    "drop_while_running",
    "restart_runtime_in_place",
    "usage_reads_memory",
    "concurrent_sandboxes_are_separate",
    "bad_specs_are_refused",
];

stratus_sandbox::conformance_tests!(setup);
