//! What only the gVisor backend promises: clean-up on drop and after a
//! crash, and a clear error when `runsc` is missing (needs root and `runsc`,
//! as on CI; skipped with a message otherwise).

use std::path::{Path, PathBuf};
use std::time::Duration;

use stratus_sandbox::conformance::Suite;
use stratus_sandbox::{SandboxBackend, SandboxError};
use stratus_sandbox_gvisor::{GvisorBackend, GvisorConfig};

mod common;

fn loop_devices_under(dir: &Path) -> usize {
    let out = std::process::Command::new("losetup")
        .arg("-a")
        .output()
        .expect("losetup");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&dir.display().to_string()))
        .count()
}

/// `runsc list` once it shows `n` containers (runsc records one as it starts it).
async fn until_listed(backend: &GvisorBackend, n: usize) -> Vec<String> {
    for _ in 0..100 {
        let listed = backend.runsc_containers();
        if listed.len() >= n {
            return listed;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    backend.runsc_containers()
}

fn config(dir: &Path, name: &str) -> Option<GvisorConfig> {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: the gvisor backend needs root");
        return None;
    }
    common::config(
        dir.join("state"),
        format!("stratus-gvisor-test-{}-{name}", std::process::id()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_releases_everything() {
    let dir = tempfile::tempdir().expect("dir");
    let Some(config) = config(dir.path(), "drop") else {
        return;
    };
    // No pooled /tmp disks: every loop device left would be a leak.
    let backend = GvisorBackend::new(GvisorConfig {
        tmp_disk_pool: 0,
        ..config
    })
    .expect("backend");
    let suite = Suite::new(&dir.path().join("code"), "drop");
    let code = suite.code_dir("sleep", &[]);
    let spec = suite.spec("sleep", &code, &["/bin/sleep", "100"]);
    let id = spec.id.clone();
    let sb = backend.spawn(spec).await.expect("spawn");
    assert_eq!(backend.live_sandboxes(), 1);
    assert!(backend.sandbox_dir(&id).is_dir());
    assert!(backend.cgroup_dirs(&id).iter().all(|d| d.exists()));
    assert_eq!(until_listed(&backend, 1).await, vec![id.clone()]);
    drop(sb);
    assert_eq!(backend.live_sandboxes(), 0);
    assert!(!backend.sandbox_dir(&id).exists(), "bundle removed");
    for d in backend.cgroup_dirs(&id) {
        assert!(!d.exists(), "{} removed", d.display());
    }
    assert!(backend.runsc_containers().is_empty(), "runsc forgot it");
    assert_eq!(loop_devices_under(&dir.path().join("state")), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_backend_removes_what_a_crashed_one_left() {
    let dir = tempfile::tempdir().expect("dir");
    let Some(config) = config(dir.path(), "crash") else {
        return;
    };
    let backend = GvisorBackend::new(config.clone()).expect("backend");
    let suite = Suite::new(&dir.path().join("code"), "crash");
    let code = suite.code_dir("sleep", &[]);
    let mut ids = Vec::new();
    for i in 0..2 {
        let spec = suite.spec(&format!("left{i}"), &code, &["/bin/sleep", "100"]);
        ids.push(spec.id.clone());
        // Leaked: as after a kill -9 of the server, everything keeps running.
        std::mem::forget(backend.spawn(spec).await.expect("spawn"));
    }
    assert_eq!(until_listed(&backend, 2).await.len(), 2);
    std::mem::forget(backend);

    // No disk pool this time, so any loop device left is the crashed one's.
    let backend = GvisorBackend::new(GvisorConfig {
        tmp_disk_pool: 0,
        ..config
    })
    .expect("backend after a crash");
    assert!(backend.runsc_containers().is_empty(), "runsc state swept");
    for id in &ids {
        assert!(!backend.sandbox_dir(id).exists(), "bundle {id} removed");
        for d in backend.cgroup_dirs(id) {
            assert!(!d.exists(), "{} removed", d.display());
        }
    }
    assert_eq!(loop_devices_under(&dir.path().join("state")), 0);
}

#[test]
fn a_missing_runsc_is_a_clear_error() {
    if !nix::unistd::Uid::effective().is_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let err = GvisorBackend::new(GvisorConfig {
        runsc: PathBuf::from("/nonexistent/runsc"),
        state_dir: dir.path().to_owned(),
        ..GvisorConfig::default()
    })
    .expect_err("no runsc");
    match err {
        SandboxError::Unavailable(m) => {
            assert!(
                m.contains("/nonexistent/runsc") && m.contains("apt-get install runsc"),
                "{m}"
            )
        }
        other => panic!("expected Unavailable, got {other}"),
    }
}
