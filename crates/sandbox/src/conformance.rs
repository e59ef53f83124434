//! The conformance suite every [`SandboxBackend`] runs.
//!
//! Each backend crate calls these checks from its own tests against a real
//! backend (one `#[tokio::test]` per check, so a failure names the broken
//! contract point), so every isolation technology is held to one contract, as
//! `stratus_store::conformance` does for stores. The checks are test code,
//! shipped in the library so that out-of-tree backends can run them too.
//!
//! What is checked is only what the worker relies on, seen from the inside
//! with `/usr/bin/python3` probes: the Runtime API listener is reachable at
//! `AWS_LAMBDA_RUNTIME_API` and each sandbox's listener hears only that
//! sandbox; the output pipe carries stdout and stderr; the environment is
//! exactly the spec's; the code dir is read-only and `/tmp` empty, writable and
//! capped at `tmp_mb`; memory and process limits hold; the network holds only
//! loopback and the host's loopback is not reachable; `wait` is repeatable,
//! `kill` idempotent and prompt; `restart_runtime` keeps `/tmp` and drops
//! processes; memory usage is readable. How a backend cleans up (cgroups,
//! uids, state dirs) is backend-specific and stays in each backend's tests.
//!
//! ```no_run
//! # async fn demo(backend: &dyn stratus_sandbox::SandboxBackend) {
//! use stratus_sandbox::conformance::{self, Suite};
//! let suite = Suite::new(std::path::Path::new("/var/tmp/suite"), "proc");
//! conformance::spawn_reaches_runtime_api(backend, &suite).await;
//! # }
//! ```

use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{
    ExitStatus, RuntimeApiListener, Sandbox, SandboxBackend, SandboxError, SandboxLimits,
    SandboxSpec,
};

/// How long a check waits for a sandbox to do what it was started for.
const PATIENCE: Duration = Duration::from_secs(30);

/// Where a run of the suite keeps its code dirs and how it names sandboxes.
#[derive(Debug, Clone)]
pub struct Suite {
    scratch: PathBuf,
    prefix: String,
}

impl Suite {
    /// `scratch` is a directory the suite may fill (code dirs, made readable
    /// by everyone); `prefix` starts every sandbox id, so suites run in
    /// parallel against one backend do not collide.
    pub fn new(scratch: &Path, prefix: &str) -> Self {
        Self {
            scratch: scratch.to_owned(),
            prefix: format!("{prefix}-{}", std::process::id()),
        }
    }

    /// A spec with the suite's defaults: 128 MB, 64 MiB `/tmp`, 64 pids,
    /// port 9001, hostname `sandbox-host`, and exactly `PATH`, `LANG` and
    /// `AWS_LAMBDA_RUNTIME_API` in the environment.
    pub fn spec(&self, name: &str, code: &Path, argv: &[&str]) -> SandboxSpec {
        SandboxSpec {
            id: format!("{}-{name}", self.prefix),
            code_dir: code.to_owned(),
            runtime_dir: None,
            opt_dir: None,
            argv: argv.iter().map(|s| (*s).to_owned()).collect(),
            env: BTreeMap::from([
                ("PATH".to_owned(), "/usr/local/bin:/usr/bin:/bin".to_owned()),
                ("LANG".to_owned(), "C.UTF-8".to_owned()),
                (
                    "AWS_LAMBDA_RUNTIME_API".to_owned(),
                    "127.0.0.1:9001".to_owned(),
                ),
            ]),
            cwd: PathBuf::from("/var/task"),
            limits: SandboxLimits {
                memory_mb: 128,
                tmp_mb: 64,
                max_pids: 64,
                max_fds: 1024,
            },
            runtime_api_port: 9001,
            hostname: "sandbox-host".into(),
            preinit: None,
        }
    }

    /// A code dir named `name` holding `files`, readable by every sandbox uid.
    pub fn code_dir(&self, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = self.scratch.join(format!("{}-{name}", self.prefix));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating a code dir");
        for (file, body) in files {
            let path = dir.join(file);
            std::fs::write(&path, body).expect("writing code");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
                .expect("chmod code");
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .expect("chmod code dir");
        let mut up = dir.parent();
        while let Some(p) = up {
            // Every parent must be searchable by the sandbox uid.
            if let Ok(meta) = std::fs::metadata(p) {
                let mode = meta.permissions().mode();
                if mode & 0o001 == 0 {
                    let _ =
                        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode | 0o001));
                }
            }
            up = p.parent();
        }
        dir
    }
}

async fn spawn(backend: &dyn SandboxBackend, spec: SandboxSpec) -> Box<dyn Sandbox> {
    let id = spec.id.clone();
    match backend.spawn(spec).await {
        Ok(sb) => sb,
        Err(e) => panic!("{}: spawning {id} failed: {e}", backend.name()),
    }
}

fn listener(sb: &mut Box<dyn Sandbox>) -> tokio::net::TcpListener {
    let l = sb
        .take_runtime_api_listener()
        .expect("a Runtime API listener");
    assert!(
        sb.take_runtime_api_listener().is_none(),
        "the listener is taken once"
    );
    match l {
        RuntimeApiListener::Tcp(l) => {
            l.set_nonblocking(true).expect("nonblocking listener");
            tokio::net::TcpListener::from_std(l).expect("tokio listener")
        }
    }
}

/// Reads the output pipe to its end (or for at most [`PATIENCE`]) on a thread.
fn read_output(sb: &mut Box<dyn Sandbox>) -> tokio::task::JoinHandle<String> {
    let fd: OwnedFd = sb.take_output().expect("an output pipe");
    assert!(sb.take_output().is_none(), "the output is taken once");
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::from(fd);
        let mut out = Vec::new();
        let _ = file.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    })
}

/// Accepts one connection and reads it to its end.
async fn accept_text(l: &tokio::net::TcpListener, what: &str) -> String {
    use tokio::io::AsyncReadExt;
    let (mut conn, _) = tokio::time::timeout(PATIENCE, l.accept())
        .await
        .unwrap_or_else(|_| panic!("{what}: the runtime did not connect in time"))
        .expect("accept");
    let mut body = String::new();
    tokio::time::timeout(PATIENCE, conn.read_to_string(&mut body))
        .await
        .unwrap_or_else(|_| panic!("{what}: the runtime did not finish writing"))
        .expect("read");
    body
}

async fn wait_for(sb: &dyn Sandbox, what: &str) -> ExitStatus {
    tokio::time::timeout(PATIENCE, sb.wait())
        .await
        .unwrap_or_else(|_| panic!("{what}: the sandbox did not end in time"))
}

const PROBE: &str = r#"
import os, socket, json, errno
r = {}
def try_write(path):
    try:
        with open(path, 'w') as f:
            f.write('x')
        return 'ok'
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e))
r['task_write'] = try_write('/var/task/open/new-file')
r['tmp_before'] = sorted(os.listdir('/tmp'))
r['tmp_write'] = try_write('/tmp/new-file')
r['task_files'] = sorted(os.listdir('/var/task'))
r['uid'] = os.getuid()
r['capeff'] = [l.split()[1] for l in open('/proc/self/status') if l.startswith('CapEff')][0]
r['ifaces'] = sorted(n for _, n in socket.if_nameindex())
s = socket.socket()
s.settimeout(2)
try:
    s.connect(('127.0.0.1', int(os.environ['HOST_PORT'])))
    r['host_connect'] = 'ok'
except OSError as e:
    r['host_connect'] = errno.errorcode.get(e.errno, str(e))
r['hostname'] = socket.gethostname()
r['env'] = dict(os.environ)
r['cwd'] = os.getcwd()
print('to-stdout', flush=True)
import sys
print('to-stderr', file=sys.stderr, flush=True)
host, port = os.environ['AWS_LAMBDA_RUNTIME_API'].split(':')
c = socket.create_connection((host, int(port)))
c.sendall(json.dumps(r).encode())
c.close()
"#;

/// Spawns a probe that reports what it sees over the Runtime API listener:
/// the environment is exactly the spec's (a backend may add `HOME`, as OCI
/// runtimes do), the code dir is read-only, `/tmp`
/// writable, the runtime is not root and has no capabilities, the network
/// holds only loopback and the host's loopback is unreachable; stdout and
/// stderr both reach the output pipe; `wait` returns the exit status twice.
pub async fn spawn_reaches_runtime_api(backend: &dyn SandboxBackend, suite: &Suite) {
    let code = suite.code_dir("probe", &[("probe.py", PROBE)]);
    // Writable by everyone on the host: only the read-only mount stops a write.
    let open = code.join("open");
    std::fs::create_dir(&open).expect("mkdir open");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod open");
    // Something listening on the host's loopback the sandbox must not reach.
    let host = std::net::TcpListener::bind("127.0.0.1:0").expect("host listener");
    let host_port = host.local_addr().expect("addr").port();
    let mut spec = suite.spec("probe", &code, &["/usr/bin/python3", "probe.py"]);
    spec.env.insert("HOST_PORT".into(), host_port.to_string());
    spec.env.insert("WITH SPACE".into(), "a=b c\u{e9}".into());
    let expected_env = spec.env.clone();
    let mut sb = spawn(backend, spec).await;
    assert!(sb.id().ends_with("-probe"), "id() is the spec's");
    let api = listener(&mut sb);
    let output = read_output(&mut sb);
    let body = accept_text(&api, "probe").await;
    let r: serde_json::Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("probe report is JSON ({e}): {body}"));

    let mut env: BTreeMap<String, String> =
        serde_json::from_value(r["env"].clone()).expect("env map");
    // OCI runtimes (runc, runsc) add HOME from /etc/passwd when it is not
    // given; nothing else may be added.
    if !expected_env.contains_key("HOME") {
        env.remove("HOME");
    }
    assert_eq!(env, expected_env, "the environment is exactly the spec's");
    assert_eq!(r["cwd"], "/var/task", "{r}");
    assert_eq!(r["hostname"], "sandbox-host", "{r}");
    assert_eq!(
        r["task_files"],
        serde_json::json!(["open", "probe.py"]),
        "{r}"
    );
    assert_eq!(r["task_write"], "EROFS", "code dir is read-only: {r}");
    assert_eq!(
        r["tmp_before"],
        serde_json::json!([]),
        "/tmp starts empty: {r}"
    );
    assert_eq!(r["tmp_write"], "ok", "/tmp is writable: {r}");
    assert_ne!(r["uid"], 0, "the runtime is not root: {r}");
    assert_eq!(r["capeff"], "0000000000000000", "no capabilities: {r}");
    assert_eq!(r["ifaces"], serde_json::json!(["lo"]), "only loopback: {r}");
    assert_eq!(
        r["host_connect"], "ECONNREFUSED",
        "the host's loopback must be unreachable: {r}"
    );
    assert_eq!(wait_for(&*sb, "probe").await, ExitStatus::Code(0));
    assert_eq!(sb.wait().await, ExitStatus::Code(0), "wait is repeatable");
    drop(sb);
    let out = output.await.expect("output reader");
    assert!(
        out.contains("to-stdout") && out.contains("to-stderr"),
        "stdout and stderr reach the output pipe: {out:?}"
    );
    drop(host);
}

/// The exit code and output of a runtime that exits on its own.
pub async fn exit_code_and_output(backend: &dyn SandboxBackend, suite: &Suite) {
    let code = suite.code_dir("exit", &[]);
    let mut sb = spawn(
        backend,
        suite.spec(
            "exit",
            &code,
            &[
                "/bin/sh",
                "-c",
                "echo to-stdout; echo to-stderr >&2; exit 3",
            ],
        ),
    )
    .await;
    let output = read_output(&mut sb);
    assert_eq!(wait_for(&*sb, "exit").await, ExitStatus::Code(3));
    drop(sb);
    let out = output.await.expect("output reader");
    assert!(
        out.contains("to-stdout") && out.contains("to-stderr"),
        "output: {out:?}"
    );
}

/// A runtime that allocates far beyond `memory_mb` does not survive, the
/// peak is visible in `usage()`, and the next sandbox runs normally.
pub async fn memory_limit_is_enforced(backend: &dyn SandboxBackend, suite: &Suite) {
    let code = suite.code_dir(
        "oom",
        &[(
            "hog.py",
            "x = bytearray(300 << 20)\nfor i in range(0, len(x), 4096):\n    x[i] = 1\nprint('survived', flush=True)\n",
        )],
    );
    let mut sb = spawn(
        backend,
        suite.spec("oom", &code, &["/usr/bin/python3", "hog.py"]),
    )
    .await;
    let output = read_output(&mut sb);
    let status = wait_for(&*sb, "oom").await;
    assert_ne!(status, ExitStatus::Code(0), "the hog must not succeed");
    let usage = sb.usage();
    drop(sb);
    let out = output.await.expect("output reader");
    assert!(!out.contains("survived"), "status {status}, output {out:?}");
    assert!(
        usage.memory_peak_bytes == 0 || usage.memory_peak_bytes > 64 << 20,
        "a recorded peak shows the allocation: {usage:?}"
    );

    let mut sb = spawn(
        backend,
        suite.spec(
            "after-oom",
            &code,
            &["/usr/bin/python3", "-c", "print('fine')"],
        ),
    )
    .await;
    let output = read_output(&mut sb);
    assert_eq!(wait_for(&*sb, "after-oom").await, ExitStatus::Code(0));
    drop(sb);
    assert!(output.await.expect("output reader").contains("fine"));
}

/// A runtime can start no more than `max_pids` processes and threads.
pub async fn pids_limit_is_enforced(backend: &dyn SandboxBackend, suite: &Suite) {
    let code = suite.code_dir(
        "pids",
        &[(
            "forks.py",
            r#"
import os, socket, time
started = 0
for _ in range(200):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    started += 1
c = socket.create_connection(('127.0.0.1', 9001))
c.sendall(str(started).encode())
c.close()
# Stay up: the test's kill, not this process's own exit, ends the sandbox.
time.sleep(60)
"#,
        )],
    );
    let mut spec = suite.spec("pids", &code, &["/usr/bin/python3", "forks.py"]);
    spec.limits.max_pids = 16;
    let mut sb = spawn(backend, spec).await;
    let api = listener(&mut sb);
    let started: u32 = accept_text(&api, "pids")
        .await
        .trim()
        .parse()
        .expect("a count");
    assert!(
        (1..16).contains(&started),
        "{started} children started under a limit of 16"
    );
    sb.kill();
    assert_eq!(wait_for(&*sb, "pids").await, ExitStatus::Signal(9));
}

/// `/tmp` holds at most `tmp_mb` (a write beyond it fails with ENOSPC).
pub async fn tmp_is_capped(backend: &dyn SandboxBackend, suite: &Suite) {
    let code = suite.code_dir(
        "tmpcap",
        &[(
            "fill.py",
            r#"
import errno, socket
written, error = 0, 'none'
chunk = b'x' * (1 << 20)
try:
    with open('/tmp/fill', 'wb') as f:
        for _ in range(128):
            f.write(chunk)
            f.flush()
            written += 1
except OSError as e:
    error = errno.errorcode.get(e.errno, str(e))
c = socket.create_connection(('127.0.0.1', 9001))
c.sendall(f'{written} {error}'.encode())
c.close()
"#,
        )],
    );
    let mut spec = suite.spec("tmpcap", &code, &["/usr/bin/python3", "fill.py"]);
    spec.limits.tmp_mb = 32;
    spec.limits.memory_mb = 256;
    let mut sb = spawn(backend, spec).await;
    let api = listener(&mut sb);
    let got = accept_text(&api, "tmpcap").await;
    let (written, error) = got.split_once(' ').expect("'<MiB> <error>'");
    let written: u64 = written.parse().expect("a count");
    assert_eq!(error, "ENOSPC", "/tmp is capped: {got}");
    assert!(
        (16..=32).contains(&written),
        "{written} MiB fit in a 32 MiB /tmp"
    );
    assert_eq!(wait_for(&*sb, "tmpcap").await, ExitStatus::Code(0));
}

/// `kill` ends everything promptly and is idempotent; `wait` then reports
/// SIGKILL, repeatedly; `usage` reads non-zero memory while it runs.
pub async fn kill_ends_the_sandbox(backend: &dyn SandboxBackend, suite: &Suite) {
    let code = suite.code_dir("kill", &[]);
    let mut sb = spawn(
        backend,
        suite.spec(
            "kill",
            &code,
            &["/bin/sh", "-c", "sleep 100 & sleep 100 & echo up; wait"],
        ),
    )
    .await;
    let fd = sb.take_output().expect("output");
    let up = tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::from(fd);
        let mut buf = [0u8; 3];
        file.read_exact(&mut buf).map(|()| buf)
    });
    let up = tokio::time::timeout(PATIENCE, up)
        .await
        .expect("the runtime printed in time")
        .expect("reader")
        .expect("read");
    assert_eq!(&up, b"up\n");
    assert!(
        sb.usage().memory_current_bytes > 0,
        "usage reads the sandbox's memory: {:?}",
        sb.usage()
    );
    sb.reset_peak();
    let started = Instant::now();
    sb.kill();
    sb.kill();
    let status = tokio::time::timeout(Duration::from_secs(5), sb.wait())
        .await
        .expect("killed in time");
    assert_eq!(status, ExitStatus::Signal(9));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "kill took {:?}",
        started.elapsed()
    );
    assert_eq!(sb.wait().await, ExitStatus::Signal(9), "wait is repeatable");
    sb.kill();
}

/// Dropping a running sandbox returns promptly (and, as each backend's own
/// tests check, releases what it held).
pub async fn drop_while_running(backend: &dyn SandboxBackend, suite: &Suite) {
    let code = suite.code_dir("drop", &[]);
    let sb = spawn(backend, suite.spec("drop", &code, &["/bin/sleep", "100"])).await;
    let started = Instant::now();
    drop(sb);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "drop took {:?}",
        started.elapsed()
    );
}

/// Counts its starts in `/tmp`, leaves children behind and reports
/// "<starts> <processes visible>" on the Runtime API port.
const RESTARTABLE: &str = r#"
import os, socket, time
with open('/tmp/starts', 'a') as f:
    f.write('x')
starts = len(open('/tmp/starts').read())
visible = len([p for p in os.listdir('/proc') if p.isdigit()])
for _ in range(3):
    if os.fork() == 0:
        time.sleep(1000)
        os._exit(0)
c = socket.create_connection(('127.0.0.1', 9001))
c.sendall(f'{starts} {visible}'.encode())
c.close()
time.sleep(1000)
"#;

/// `restart_runtime` starts the runtime again in the same sandbox: `/tmp`
/// and the listener stay, the old runtime's processes are gone. On an ended
/// sandbox it fails with [`SandboxError::Io`].
pub async fn restart_runtime_in_place(backend: &dyn SandboxBackend, suite: &Suite) {
    let code = suite.code_dir("restart", &[("run.py", RESTARTABLE)]);
    let mut sb = spawn(
        backend,
        suite.spec("restart", &code, &["/usr/bin/python3", "run.py"]),
    )
    .await;
    let l = listener(&mut sb);
    let first = accept_text(&l, "first start").await;
    let (starts, visible) = first.split_once(' ').expect("'<starts> <visible>'");
    assert_eq!(starts, "1", "{first}");
    sb.restart_runtime().await.expect("restart");
    assert_eq!(
        accept_text(&l, "after a restart").await,
        format!("2 {visible}"),
        "/tmp survives, the old processes do not"
    );
    sb.restart_runtime().await.expect("second restart");
    assert_eq!(
        accept_text(&l, "after a second restart").await,
        format!("3 {visible}")
    );
    sb.kill();
    assert_eq!(wait_for(&*sb, "restart").await, ExitStatus::Signal(9));
    match sb.restart_runtime().await {
        Err(SandboxError::Io { .. }) => {}
        other => panic!("restarting an ended sandbox must fail with Io, got {other:?}"),
    }
}

/// Memory usage: the current figure follows an allocation, the peak keeps it.
pub async fn usage_reads_memory(backend: &dyn SandboxBackend, suite: &Suite) {
    let code = suite.code_dir(
        "usage",
        &[(
            "hold.py",
            r#"
import socket, time
x = bytearray(64 << 20)
for i in range(0, len(x), 4096):
    x[i] = 1
c = socket.create_connection(('127.0.0.1', 9001))
c.sendall(b'held')
c.close()
time.sleep(1000)
"#,
        )],
    );
    let mut spec = suite.spec("usage", &code, &["/usr/bin/python3", "hold.py"]);
    spec.limits.memory_mb = 256;
    let mut sb = spawn(backend, spec).await;
    let api = listener(&mut sb);
    assert_eq!(accept_text(&api, "usage").await, "held");
    let usage = sb.usage();
    assert!(
        usage.memory_current_bytes >= 60 << 20,
        "64 MiB held: {usage:?}"
    );
    assert!(
        usage.memory_peak_bytes >= usage.memory_current_bytes,
        "the peak is at least the current use: {usage:?}"
    );
    sb.kill();
    wait_for(&*sb, "usage").await;
}

/// Sandboxes started at once each get their own listener, which hears only
/// its own sandbox (all on the same port inside).
pub async fn concurrent_sandboxes_are_separate(backend: &dyn SandboxBackend, suite: &Suite) {
    let code = suite.code_dir(
        "conc",
        &[(
            "hello.py",
            "import socket\nc = socket.create_connection(('127.0.0.1', 9001))\nc.sendall(socket.gethostname().encode())\n",
        )],
    );
    let spec = |i: usize| {
        let mut spec = suite.spec(
            &format!("conc{i}"),
            &code,
            &["/usr/bin/python3", "hello.py"],
        );
        spec.hostname = format!("host-{i}");
        spec
    };
    let (a, b, c) = tokio::join!(
        spawn(backend, spec(0)),
        spawn(backend, spec(1)),
        spawn(backend, spec(2))
    );
    for (i, mut sb) in [a, b, c].into_iter().enumerate() {
        let api = listener(&mut sb);
        assert_eq!(
            accept_text(&api, "concurrent").await,
            format!("host-{i}"),
            "each listener hears only its own sandbox"
        );
        assert_eq!(wait_for(&*sb, "concurrent").await, ExitStatus::Code(0));
    }
}

/// A bad id is refused with [`SandboxError::Create`]; a missing program is
/// refused at spawn or ends the sandbox with a non-zero status.
pub async fn bad_specs_are_refused(backend: &dyn SandboxBackend, suite: &Suite) {
    let code = suite.code_dir("bad", &[]);
    let mut bad = suite.spec("bad", &code, &["/bin/true"]);
    bad.id = "bad/id".into();
    match backend.spawn(bad).await {
        Err(SandboxError::Create { .. }) => {}
        other => panic!("an id with a slash must be refused, got {other:?}"),
    }
    let mut empty = suite.spec("empty", &code, &[]);
    empty.argv.clear();
    match backend.spawn(empty).await {
        Err(SandboxError::Create { .. }) => {}
        other => panic!("an empty argv must be refused, got {other:?}"),
    }
    let missing = suite.spec("noexec", &code, &["/var/task/does-not-exist"]);
    match backend.spawn(missing).await {
        Err(SandboxError::Create { .. }) => {}
        Ok(sb) => {
            let status = wait_for(&*sb, "noexec").await;
            assert_ne!(
                status,
                ExitStatus::Code(0),
                "a missing program cannot succeed"
            );
        }
        Err(other) => panic!("a missing program is a Create error, got {other}"),
    }
}

/// Declares one `#[tokio::test]` per conformance check.
///
/// `$setup` is an `async fn(&'static str) -> Option<(B, Suite, G)>` given
/// the check's name: `B` derefs to a [`SandboxBackend`] (a `Box`/`Arc` or
/// the backend itself through `&`), `G` is kept alive until the check ends
/// (temporary dirs), and `None` skips the check (the setup says why).
///
/// ```ignore
/// stratus_sandbox::conformance_tests!(setup);
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($setup:path) => {
        $crate::conformance_tests!(@each $setup;
            spawn_reaches_runtime_api, exit_code_and_output, memory_limit_is_enforced,
            pids_limit_is_enforced, tmp_is_capped, kill_ends_the_sandbox, drop_while_running,
            restart_runtime_in_place, usage_reads_memory, concurrent_sandboxes_are_separate,
            bad_specs_are_refused);
    };
    (@each $setup:path; $($check:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let Some((backend, suite, _guard)) = $setup(stringify!($check)).await else {
                    return;
                };
                $crate::conformance::$check(&*backend, &suite).await;
            }
        )*
    };
}
