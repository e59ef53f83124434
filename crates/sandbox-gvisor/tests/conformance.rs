//! The sandbox conformance suite against the gVisor backend (needs root and
//! `runsc`, as on CI; skipped with a message otherwise).
//! See `common` for choosing `runsc` and the platform.

mod common;

use stratus_sandbox::conformance::Suite;
use stratus_sandbox_gvisor::GvisorBackend;

async fn setup(check: &'static str) -> Option<(Box<GvisorBackend>, Suite, tempfile::TempDir)> {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped {check}: the gvisor backend needs root");
        return None;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let config = common::config(
        dir.path().join("state"),
        format!("stratus-gvisor-conformance-{}-{check}", std::process::id()),
    )?;
    let backend = GvisorBackend::new(config).expect("gvisor backend");
    let suite = Suite::new(&dir.path().join("code"), check);
    Some((Box::new(backend), suite, dir))
}

stratus_sandbox::conformance_tests!(setup);
