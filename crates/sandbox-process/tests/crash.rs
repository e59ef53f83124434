//! What a crashed server leaves behind, and that the next backend on the same
//! state dir and cgroup parent removes it (needs root, as on CI).
//!
//! A crash is simulated twice: in-process, by leaking sandboxes and the
//! backend (their processes keep running, as after a kill -9 of an older
//! server), and for real, by SIGKILLing a child process that runs a backend
//! (this test binary re-run with [`HELPER_ENV`] set).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use stratus_sandbox::{SandboxBackend, SandboxLimits, SandboxSpec};
use stratus_sandbox_process::{ProcessBackend, ProcessBackendConfig, make_world_readable};

/// Set in the environment of the helper process: the state dir to use.
const HELPER_ENV: &str = "STRATUS_CRASH_HELPER_STATE";
/// Sandboxes each crashed backend leaves running.
const SANDBOXES: u32 = 3;

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

fn config(state: &Path, uid_base: u32, prewarm: usize) -> ProcessBackendConfig {
    ProcessBackendConfig {
        jailer: vec![env!("CARGO_BIN_EXE_stratus-jailer").to_owned()],
        state_dir: state.to_owned(),
        cgroup_parent: format!("stratus-test-{uid_base}"),
        uid_base,
        uid_count: SANDBOXES + 1,
        prewarm,
        tmp_disk_pool: prewarm,
        ..ProcessBackendConfig::default()
    }
}

fn spec(id: &str, code: &Path) -> SandboxSpec {
    SandboxSpec {
        id: id.to_owned(),
        code_dir: code.to_owned(),
        runtime_dir: None,
        opt_dir: None,
        argv: ["/bin/sh", "-c", "sleep 600 & sleep 600"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        env: BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]),
        cwd: PathBuf::from("/var/task"),
        limits: SandboxLimits {
            memory_mb: 128,
            tmp_mb: 512,
            max_pids: 64,
            max_fds: 1024,
        },
        runtime_api_port: 9001,
        hostname: "sandbox-host".into(),
        preinit: None,
    }
}

fn code_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("code dir");
    make_world_readable(dir.path()).expect("chmod");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod dir");
    dir
}

/// Starts [`SANDBOXES`] sandboxes and leaks them and the backend.
async fn start_and_leak(state: &Path, uid_base: u32, prewarm: usize, code: &Path) {
    let backend = ProcessBackend::new(config(state, uid_base, prewarm)).expect("backend");
    backend.prewarm();
    for n in 0..SANDBOXES {
        let sb = backend
            .spawn(spec(&format!("leak-{n}"), code))
            .await
            .expect("spawn");
        std::mem::forget(sb);
    }
    std::mem::forget(backend);
}

/// Pids of host processes whose real uid is in `uid_base..+SANDBOXES+1`.
fn processes_in_range(uid_base: u32) -> Vec<u32> {
    let range = uid_base..uid_base + SANDBOXES + 1;
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let uid = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|u| u.parse::<u32>().ok());
        // A zombie holds nothing but its pid until the host's init reaps it.
        let zombie = status.lines().any(|l| l.starts_with("State:\tZ"));
        if uid.is_some_and(|u| range.contains(&u)) && !zombie {
            found.push(pid);
        }
    }
    found
}

/// Waits until init, sh and both sleeps run in every sandbox.
fn wait_all_running(uid_base: u32) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let running = processes_in_range(uid_base);
        if running.len() >= 4 * SANDBOXES as usize || Instant::now() >= deadline {
            return running;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Every directory below the cgroup parent, in every hierarchy.
fn cgroups_under(uid_base: u32) -> Vec<PathBuf> {
    let parent = format!("stratus-test-{uid_base}");
    let mut found = Vec::new();
    let hierarchies = std::fs::read_dir("/sys/fs/cgroup").expect("cgroup root");
    for h in hierarchies.flatten() {
        // v1: <root>/<hierarchy>/<parent>; v2: <root>/<parent>.
        for base in [h.path().join(&parent), h.path()] {
            if base.file_name() != Some(parent.as_ref()) {
                continue;
            }
            if let Ok(entries) = std::fs::read_dir(&base) {
                found.extend(
                    entries
                        .flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
        }
    }
    found
}

/// Entries of the state dir but the disks dir and the shared root
/// mountpoint: per-sandbox scratch dirs, which a sandbox with a `/tmp` disk
/// does not have.
fn scratch_dirs(state: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(state)
        .expect("state dir")
        .flatten()
        .filter(|e| e.file_name() != "disks" && e.file_name() != ".root")
        .map(|e| e.path())
        .collect()
}

/// The `/tmp` disk images' dir of the server with process id `pid`.
fn disks_of(state: &Path, pid: u32) -> PathBuf {
    state.join("disks").join(format!("server-{pid}"))
}

/// Checks that a new backend on the same state dir and cgroup parent removes
/// everything left, and that sandboxes then work again.
async fn restart_cleans_up(state: &Path, uid_base: u32, code: &Path) {
    let backend = ProcessBackend::new(config(state, uid_base, 0)).expect("backend after crash");
    assert_eq!(processes_in_range(uid_base), Vec::<u32>::new());
    assert_eq!(cgroups_under(uid_base), Vec::<PathBuf>::new());
    assert_eq!(scratch_dirs(state), Vec::<PathBuf>::new());
    let disks: Vec<PathBuf> = std::fs::read_dir(state.join("disks"))
        .expect("disks dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(
        disks
            .iter()
            .all(|d| *d == disks_of(state, std::process::id())),
        "only this server's disks are left: {disks:?}"
    );
    // The ids of the crashed run can be used again.
    let sb = backend.spawn(spec("leak-0", code)).await.expect("spawn");
    assert!(!processes_in_range(uid_base).is_empty());
    drop(sb);
    assert_eq!(processes_in_range(uid_base), Vec::<u32>::new());
}

#[tokio::test]
async fn leaked_sandboxes_are_removed_by_the_next_backend() {
    if !is_root() {
        return;
    }
    let uid_base = 2_920_000;
    let state = tempfile::tempdir().expect("state dir");
    let code = code_dir();
    start_and_leak(state.path(), uid_base, 0, code.path()).await;
    let running = wait_all_running(uid_base);
    // Per sandbox: init, sh and two sleeps.
    assert!(
        running.len() >= 4 * SANDBOXES as usize,
        "the leaked sandboxes run: {running:?}"
    );
    assert!(cgroups_under(uid_base).len() >= SANDBOXES as usize);
    // Each has a /tmp disk, so none made a directory of its own.
    assert_eq!(scratch_dirs(state.path()), Vec::<PathBuf>::new());
    assert!(state.path().join(".root").is_dir());
    restart_cleans_up(state.path(), uid_base, code.path()).await;
}

/// The body of the helper process: a backend with running sandboxes that
/// reports "ready" and waits to be killed. A no-op in a normal test run.
#[tokio::test]
async fn crash_helper() {
    let Ok(state) = std::env::var(HELPER_ENV) else {
        return;
    };
    let uid_base = 2_920_010;
    let code = code_dir();
    start_and_leak(Path::new(&state), uid_base, 1, code.path()).await;
    println!("ready");
    tokio::time::sleep(Duration::from_secs(600)).await;
}

/// The helper process, killed if the test fails before it does.
struct Helper(std::process::Child);

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn sandboxes_die_with_a_killed_server_and_the_rest_is_removed_at_restart() {
    if !is_root() {
        return;
    }
    let uid_base = 2_920_010;
    let state = tempfile::tempdir().expect("state dir");
    let mut helper = Helper(
        std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", "crash_helper", "--nocapture", "--test-threads=1"])
            .env(HELPER_ENV, state.path())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start helper"),
    );
    let helper_pid = helper.0.id();
    let stdout = helper.0.stdout.take().expect("stdout");
    let ready = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.contains("ready"));
    assert!(ready, "the helper started its sandboxes");
    let running = wait_all_running(uid_base);
    assert!(
        running.len() >= 4 * SANDBOXES as usize,
        "the helper's sandboxes run: {running:?}"
    );

    // kill -9 of the "server": its jailers get their parent-death signal,
    // the inits die with them and the runtimes with their pid namespaces.
    helper.0.kill().expect("SIGKILL");
    helper.0.wait().expect("reap");
    let deadline = Instant::now() + Duration::from_secs(2);
    while !processes_in_range(uid_base).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        processes_in_range(uid_base),
        Vec::<u32>::new(),
        "no sandbox process outlives the server"
    );
    // The disks' dir and (empty) cgroups remain, as after a machine crash.
    assert!(disks_of(state.path(), helper_pid).is_dir());
    assert!(cgroups_under(uid_base).len() >= SANDBOXES as usize);

    let code = code_dir();
    restart_cleans_up(state.path(), uid_base, code.path()).await;
}
