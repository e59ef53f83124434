//! Spawns real sandboxes (needs root, as on CI) and checks isolation from the inside.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use stratus_sandbox::{
    ExitStatus, RuntimeApiListener, Sandbox, SandboxBackend, SandboxError, SandboxLimits,
    SandboxSpec,
};
use stratus_sandbox_process::net::Names;
use stratus_sandbox_process::{
    Ipv4Cidr, OutboundConfig, ProcessBackend, ProcessBackendConfig, make_world_readable,
};
use tokio::io::AsyncReadExt;

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// A backend with its own state dir, cgroup parent (tests run in parallel and
/// a dropped backend removes its parent) and a single uid, so the uid a test's
/// sandbox runs as is known (`uid_base`). With `prewarm`, the pool is filled
/// first so the pre-warmed path is what gets tested (on cgroup v1).
fn backend(uid_base: u32, prewarm: usize) -> (ProcessBackend, tempfile::TempDir) {
    backend_with(uid_base, prewarm, None)
}

/// [`backend`] with outbound networking (`network`) or without.
fn backend_with(
    uid_base: u32,
    prewarm: usize,
    network: Option<OutboundConfig>,
) -> (ProcessBackend, tempfile::TempDir) {
    let state = tempfile::tempdir().expect("state dir");
    let backend = ProcessBackend::new(ProcessBackendConfig {
        jailer: vec![env!("CARGO_BIN_EXE_stratus-jailer").to_owned()],
        state_dir: state.path().to_owned(),
        cgroup_parent: format!("stratus-test-{uid_base}"),
        uid_base,
        uid_count: 1,
        prewarm,
        tmp_disk_pool: prewarm,
        network,
        ..ProcessBackendConfig::default()
    })
    .expect("backend");
    backend.prewarm();
    (backend, state)
}

fn code_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("code dir");
    for (name, body) in files {
        std::fs::write(dir.path().join(name), body).expect("write code");
    }
    make_world_readable(dir.path()).expect("chmod");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod dir");
    dir
}

fn spec(id: &str, code: &Path, argv: &[&str]) -> SandboxSpec {
    let env = BTreeMap::from([
        ("PATH".to_owned(), "/usr/local/bin:/usr/bin:/bin".to_owned()),
        ("LANG".to_owned(), "C.UTF-8".to_owned()),
        (
            "AWS_LAMBDA_RUNTIME_API".to_owned(),
            "127.0.0.1:9001".to_owned(),
        ),
    ]);
    SandboxSpec {
        id: format!("{id}-{}", std::process::id()),
        code_dir: code.to_owned(),
        runtime_dir: None,
        opt_dir: None,
        argv: argv.iter().map(|s| (*s).to_owned()).collect(),
        env,
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

async fn read_all(fd: OwnedFd) -> String {
    let mut rx = tokio::net::unix::pipe::Receiver::from_owned_fd(fd).expect("pipe");
    let mut out = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), rx.read_to_string(&mut out)).await;
    out
}

fn listener(sb: &mut Box<dyn Sandbox>) -> tokio::net::TcpListener {
    match sb.take_runtime_api_listener().expect("listener") {
        RuntimeApiListener::Tcp(l) => tokio::net::TcpListener::from_std(l).expect("tokio listener"),
    }
}

/// Pids of host processes running as `uid`.
fn processes_of(uid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let owned = status
            .lines()
            .filter(|l| l.starts_with("Uid:") || l.starts_with("Gid:"))
            .any(|l| l.split_whitespace().skip(1).any(|v| v == uid.to_string()));
        if owned {
            found.push(pid);
        }
    }
    found
}

const PROBE: &str = r#"
import os, socket, json, ctypes, errno
r = {}
r['pids'] = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())
r['mypid'] = os.getpid()
r['visible'] = [p for p in ['/root', '/home', '/work', '/etc/shadow', '/old_root', '/sys', '/var/lib'] if os.path.exists(p)]
def try_write(path):
    try:
        with open(path, 'w') as f:
            f.write('x')
        return 'ok'
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e))
r['task_write'] = try_write('/var/task/new-file')
r['tmp_before'] = sorted(os.listdir('/tmp'))
r['tmp_write'] = try_write('/tmp/new-file')
r['tmp_owner'] = os.stat('/tmp').st_uid
st = os.statvfs('/tmp')
r['tmp_mb'] = st.f_blocks * st.f_frsize // (1 << 20)
r['tmp_fs'] = [l.split()[2] for l in open('/proc/self/mounts') if l.split()[1] == '/tmp']
r['uid'], r['euid'], r['gid'] = os.getuid(), os.geteuid(), os.getgid()
status = {l.split(':')[0]: l.split()[1] for l in open('/proc/self/status') if l.startswith('Cap')}
r['capeff'] = status['CapEff']
r['caps'] = [status[k] for k in ('CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb')]
r['proc_write'] = try_write('/proc/self/comm')
r['dev_write'] = try_write('/dev/null')
with open('/dev/stdout', 'w') as out:
    out.write('reopened stdout\n')
r['shm_write'] = try_write('/dev/shm/x')
libc = ctypes.CDLL(None, use_errno=True)
rc = libc.mount(b'none', b'/tmp', b'tmpfs', 0, None)
r['mount'] = errno.errorcode.get(ctypes.get_errno()) if rc else 'ok'
rc = libc.unshare(0x40000000)
r['unshare'] = errno.errorcode.get(ctypes.get_errno()) if rc else 'ok'
rc = libc.unshare(0x10000000)
r['unshare_user'] = errno.errorcode.get(ctypes.get_errno()) if rc else 'ok'
r['ifaces'] = [n for _, n in socket.if_nameindex()]
s = socket.socket()
s.settimeout(2)
try:
    s.connect(('127.0.0.1', int(os.environ['HOST_PORT'])))
    r['host_connect'] = 'ok'
except OSError as e:
    r['host_connect'] = errno.errorcode.get(e.errno, str(e))
r['hostname'] = socket.gethostname()
r['env'] = sorted(os.environ)
r['cwd'] = os.getcwd()
r['cgroup'] = open('/proc/self/cgroup').read()
print('probe done', flush=True)
host, port = os.environ['AWS_LAMBDA_RUNTIME_API'].split(':')
c = socket.create_connection((host, int(port)))
c.sendall(json.dumps(r).encode())
c.close()
"#;

#[tokio::test]
async fn isolation_seen_from_inside() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let (backend, _state) = backend(2_910_001, 1);
    let code = code_dir(&[("probe.py", PROBE)]);
    let host = std::net::TcpListener::bind("127.0.0.1:0").expect("host listener");
    let host_port = host.local_addr().expect("addr").port();
    let mut spec = spec(
        "probe",
        code.path(),
        &["/usr/bin/python3", "/var/task/probe.py"],
    );
    spec.env.insert("HOST_PORT".into(), host_port.to_string());
    let id = spec.id.clone();
    let mut sb = backend.spawn(spec).await.expect("spawn");
    let api = listener(&mut sb);
    let output = tokio::spawn(read_all(sb.take_output().expect("output")));

    let Ok(accepted) = tokio::time::timeout(Duration::from_secs(20), api.accept()).await else {
        drop(sb);
        panic!(
            "the probe never reported; its output: {}",
            output.await.expect("output")
        );
    };
    let (mut conn, _) = accepted.expect("accept");
    let mut body = String::new();
    conn.read_to_string(&mut body).await.expect("read report");
    let r: serde_json::Value = serde_json::from_str(&body).expect("probe json");

    assert_eq!(
        r["pids"],
        serde_json::json!([1, 2]),
        "only init and the runtime are visible"
    );
    assert_eq!(r["mypid"], 2);
    assert_eq!(r["visible"], serde_json::json!([]), "host paths leaked in");
    assert_eq!(r["task_write"], "EROFS");
    assert_eq!(r["tmp_write"], "ok");
    assert_eq!(r["uid"], 993);
    assert_eq!(r["euid"], 993);
    assert_eq!(r["gid"], 990);
    assert_eq!(r["capeff"], "0000000000000000");
    assert_eq!(
        r["caps"],
        serde_json::json!(vec!["0000000000000000"; 5]),
        "no capability in any set, bounding and ambient included"
    );
    // Landlock: /proc/self/comm is writable by its owner without it.
    assert_eq!(r["proc_write"], "EACCES", "{r}");
    assert_eq!(r["dev_write"], "ok", "{r}");
    assert_eq!(r["shm_write"], "ok", "{r}");
    assert_eq!(r["mount"], "EPERM");
    assert_eq!(r["unshare"], "EPERM");
    assert_eq!(r["unshare_user"], "EPERM");
    assert_eq!(r["ifaces"], serde_json::json!(["lo"]));
    assert_eq!(
        r["host_connect"], "ECONNREFUSED",
        "host loopback must be unreachable"
    );
    assert_eq!(r["hostname"], "sandbox-host");
    assert_eq!(r["cwd"], "/var/task");
    let cgroup = r["cgroup"].as_str().expect("cgroup text");
    assert!(
        !cgroup.contains("stratus") && !cgroup.contains("pool"),
        "cgroup paths are hidden: {cgroup}"
    );
    assert_eq!(
        r["env"],
        serde_json::json!(["AWS_LAMBDA_RUNTIME_API", "HOST_PORT", "LANG", "PATH"]),
        "environment is exactly the spec's"
    );
    assert_eq!(sb.wait().await, ExitStatus::Code(0));
    assert_eq!(sb.wait().await, ExitStatus::Code(0), "wait is repeatable");
    let out = output.await.expect("output task");
    assert!(out.contains("probe done"), "output: {out}");
    assert!(out.contains("reopened stdout"), "output: {out}");
    assert!(!out.contains("stratus-jailer"), "jailer warnings: {out}");
    // /tmp: an empty ext4 of the spec's size, owned by the sandbox user.
    assert_eq!(r["tmp_before"], serde_json::json!([]), "{r}");
    assert_eq!(r["tmp_owner"], 993, "{r}");
    assert_eq!(r["tmp_fs"], serde_json::json!(["ext4"]), "{r}");
    let tmp_mb = r["tmp_mb"].as_u64().expect("tmp size");
    assert!((480..=512).contains(&tmp_mb), "{r}");

    // With a /tmp disk, the start made no directory of its own.
    assert!(!backend.sandbox_dir(&id).exists(), "no scratch dir");
    drop(sb);
    assert!(!backend.sandbox_dir(&id).exists(), "no scratch dir");
    for dir in backend.cgroup_dirs(&id) {
        assert!(!dir.exists(), "{} removed", dir.display());
    }
    assert!(processes_of(2_910_001).is_empty());
    assert_eq!(backend.live_sandboxes(), 0);
}

#[tokio::test]
async fn exit_code_and_output_are_reported() {
    if !is_root() {
        return;
    }
    let (backend, _state) = backend(2_910_002, 0);
    let code = code_dir(&[]);
    let mut sb = backend
        .spawn(spec(
            "exit",
            code.path(),
            &[
                "/bin/sh",
                "-c",
                "echo to-stdout; echo to-stderr >&2; exit 3",
            ],
        ))
        .await
        .expect("spawn");
    let out = read_all(sb.take_output().expect("output")).await;
    assert_eq!(sb.wait().await, ExitStatus::Code(3));
    assert!(
        out.contains("to-stdout") && out.contains("to-stderr"),
        "output: {out}"
    );
}

#[tokio::test]
async fn memory_limit_kills_the_runtime_and_next_sandbox_works() {
    if !is_root() {
        return;
    }
    // Pre-warmed: the limit must reach a cgroup created before the spec was known.
    let (backend, _state) = backend(2_910_003, 1);
    let code = code_dir(&[(
        "hog.py",
        "x = b'x' * (300 << 20)\nprint('survived', flush=True)\n",
    )]);
    let pooled = backend.prewarmed();
    let sb = backend
        .spawn(spec(
            "oom",
            code.path(),
            &["/usr/bin/python3", "/var/task/hog.py"],
        ))
        .await
        .expect("spawn");
    let status = tokio::time::timeout(Duration::from_secs(30), sb.wait())
        .await
        .expect("ended");
    assert_eq!(
        status,
        ExitStatus::Signal(9),
        "pre-warmed jailers used: {pooled}"
    );
    assert!(
        sb.usage().memory_peak_bytes > 64 << 20,
        "peak recorded: {:?}",
        sb.usage()
    );
    drop(sb);

    let mut sb = backend
        .spawn(spec(
            "after-oom",
            code.path(),
            &["/usr/bin/python3", "-c", "print('fine')"],
        ))
        .await
        .expect("spawn after oom");
    let out = read_all(sb.take_output().expect("output")).await;
    assert_eq!(sb.wait().await, ExitStatus::Code(0));
    assert!(out.contains("fine"));
}

#[tokio::test]
async fn kill_and_drop_leave_nothing_behind() {
    if !is_root() {
        return;
    }
    let uid = 2_910_004;
    let (backend, _state) = backend(uid, 1);
    let code = code_dir(&[]);
    let spec = spec(
        "kill",
        code.path(),
        &["/bin/sh", "-c", "sleep 100 & sleep 100 & echo up; wait"],
    );
    let id = spec.id.clone();
    let mut sb = backend.spawn(spec).await.expect("spawn");
    let mut out =
        tokio::net::unix::pipe::Receiver::from_owned_fd(sb.take_output().expect("output"))
            .expect("pipe");
    let mut buf = [0u8; 3];
    out.read_exact(&mut buf).await.expect("runtime is up");
    let mut in_sandbox = processes_of(uid);
    in_sandbox.sort_unstable();
    assert!(
        in_sandbox.len() >= 4,
        "init, sh and two sleeps run as the sandbox uid: {in_sandbox:?}"
    );
    // Exactly those are in the cgroup: the jailer (host root) stays outside.
    let procs =
        std::fs::read_to_string(backend.cgroup_dirs(&id)[0].join("cgroup.procs")).expect("procs");
    let mut in_cgroup: Vec<u32> = procs.lines().filter_map(|l| l.parse().ok()).collect();
    in_cgroup.sort_unstable();
    assert_eq!(in_cgroup, in_sandbox);
    assert!(backend.cgroup_dirs(&id).iter().all(|d| d.exists()));
    assert!(sb.usage().memory_current_bytes > 0);
    sb.reset_peak();

    let started = Instant::now();
    sb.kill();
    sb.kill();
    let status = tokio::time::timeout(Duration::from_secs(5), sb.wait())
        .await
        .expect("killed in time");
    assert_eq!(status, ExitStatus::Signal(9));
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(sb);
    assert!(
        processes_of(uid).is_empty(),
        "no process left: {:?}",
        processes_of(uid)
    );
    assert!(!backend.sandbox_dir(&id).exists());
    for dir in backend.cgroup_dirs(&id) {
        assert!(!dir.exists(), "{} removed", dir.display());
    }
}

#[tokio::test]
async fn drop_while_running_cleans_up() {
    if !is_root() {
        return;
    }
    let uid = 2_910_005;
    let (backend, _state) = backend(uid, 0);
    let code = code_dir(&[]);
    let spec = spec("drop", code.path(), &["/bin/sleep", "100"]);
    let id = spec.id.clone();
    let sb = backend.spawn(spec).await.expect("spawn");
    drop(sb);
    assert!(processes_of(uid).is_empty());
    assert!(!backend.sandbox_dir(&id).exists());
    for dir in backend.cgroup_dirs(&id) {
        assert!(!dir.exists(), "{} removed", dir.display());
    }
    assert_eq!(backend.live_sandboxes(), 0);
}

#[tokio::test]
async fn setup_failures_are_reported_with_their_step() {
    if !is_root() {
        return;
    }
    let (backend, _state) = backend(2_910_006, 0);
    let code = code_dir(&[]);
    let spec = spec("noexec", code.path(), &["/var/task/does-not-exist"]);
    let id = spec.id.clone();
    match backend.spawn(spec).await {
        Err(SandboxError::Create { step, message, .. }) => {
            assert_eq!(step, "exec");
            assert!(message.contains("does-not-exist"), "{message}");
        }
        other => panic!("expected a create error, got {other:?}"),
    }
    assert!(!backend.sandbox_dir(&id).exists());
    for dir in backend.cgroup_dirs(&id) {
        assert!(!dir.exists(), "{} removed", dir.display());
    }
    let mut bad = self::spec(
        "badcode",
        Path::new("/nonexistent-code-dir"),
        &["/bin/true"],
    );
    bad.id = "bad/id".into();
    assert!(matches!(
        backend.spawn(bad).await,
        Err(SandboxError::Create {
            step: "validate",
            ..
        })
    ));
    let bad = self::spec(
        "badcode",
        Path::new("/nonexistent-code-dir"),
        &["/bin/true"],
    );
    assert!(matches!(
        backend.spawn(bad).await,
        Err(SandboxError::Create { step: "mounts", .. })
    ));
}

#[tokio::test]
async fn concurrent_sandboxes_each_get_their_own_runtime_api() {
    if !is_root() {
        return;
    }
    let state = tempfile::tempdir().expect("state dir");
    let backend = ProcessBackend::new(ProcessBackendConfig {
        jailer: vec![env!("CARGO_BIN_EXE_stratus-jailer").to_owned()],
        state_dir: state.path().to_owned(),
        cgroup_parent: "stratus-test-2910010".into(),
        uid_base: 2_910_010,
        uid_count: 3,
        prewarm: 0,
        tmp_disk_pool: 0,
        ..ProcessBackendConfig::default()
    })
    .expect("backend");
    let code = code_dir(&[(
        "hello.py",
        "import socket\nc = socket.create_connection(('127.0.0.1', 9001))\nc.sendall(socket.gethostname().encode())\n",
    )]);
    let specs: Vec<SandboxSpec> = (0..3)
        .map(|i| {
            let mut spec = spec(
                &format!("conc{i}"),
                code.path(),
                &["/usr/bin/python3", "/var/task/hello.py"],
            );
            spec.hostname = format!("host-{i}");
            spec
        })
        .collect();
    let [s0, s1, s2]: [SandboxSpec; 3] = specs.try_into().expect("three specs");
    let (a, b, c) = tokio::join!(backend.spawn(s0), backend.spawn(s1), backend.spawn(s2));
    let mut sandboxes = vec![
        a.expect("spawn 0"),
        b.expect("spawn 1"),
        c.expect("spawn 2"),
    ];
    assert_eq!(backend.live_sandboxes(), 3);
    for (i, sb) in sandboxes.iter_mut().enumerate() {
        let api = listener(sb);
        let (mut conn, _) = tokio::time::timeout(Duration::from_secs(20), api.accept())
            .await
            .expect("connected in time")
            .expect("accept");
        let mut name = String::new();
        conn.read_to_string(&mut name).await.expect("read");
        assert_eq!(
            name,
            format!("host-{i}"),
            "each listener only hears its own sandbox"
        );
        assert_eq!(sb.wait().await, ExitStatus::Code(0));
    }
    let fourth = backend
        .spawn(spec("conc3", code.path(), &["/bin/true"]))
        .await;
    assert!(
        matches!(fourth, Err(SandboxError::Create { step: "uid", .. })),
        "uid range exhausted"
    );
    drop(sandboxes);
    assert_eq!(backend.live_sandboxes(), 0);
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Prints spawn → first Runtime API connection times:
/// `cargo test -p stratus-sandbox-process --release --test sandbox -- --ignored --nocapture startup_latency`
#[tokio::test]
#[ignore = "benchmark; run explicitly"]
async fn startup_latency() {
    if !is_root() {
        return;
    }
    let code = code_dir(&[]);
    let cases: [(&str, &[&str]); 3] = [
        (
            "bash /dev/tcp",
            &["/bin/bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9001"],
        ),
        (
            "python3",
            &[
                "/usr/bin/python3",
                "-c",
                "import socket; socket.create_connection(('127.0.0.1', 9001))",
            ],
        ),
        (
            "node",
            &[
                "/usr/bin/node",
                "-e",
                "require('net').connect(9001, '127.0.0.1')",
            ],
        ),
    ];
    let gap_ms: u64 = std::env::var("STRATUS_BENCH_GAP_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    // STRATUS_LOG=stratus_sandbox_process=debug prints each start's phases.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("STRATUS_LOG"))
        .try_init();
    // STRATUS_BENCH_NETWORK=outbound: each sandbox also gets a veth.
    let network =
        (std::env::var("STRATUS_BENCH_NETWORK").as_deref() == Ok("outbound")).then(|| {
            OutboundConfig {
                cidr: "172.31.251.0/24".parse().expect("cidr"),
                allow_host: Vec::new(),
            }
        });
    println!("network: {network:?}");
    for prewarm in [2, 0] {
        let (backend, _state) = backend_with(2_910_007, prewarm, network.clone());
        for (name, argv) in cases {
            let mut spawn_times = Vec::new();
            let mut connect_times = Vec::new();
            let mut drop_times = Vec::new();
            for i in 0..30 {
                let spec = spec(&format!("bench-{i}"), code.path(), argv);
                let t0 = Instant::now();
                let mut sb = backend.spawn(spec).await.expect("spawn");
                let t1 = t0.elapsed();
                let api = listener(&mut sb);
                let _conn = api.accept().await.expect("accept");
                connect_times.push(t0.elapsed());
                spawn_times.push(t1);
                let t2 = Instant::now();
                drop(sb);
                drop_times.push(t2.elapsed());
                // Let the pool refill, as between cold starts on a real worker
                // (STRATUS_BENCH_GAP_MS=0 measures back-to-back bursts instead).
                tokio::time::sleep(Duration::from_millis(gap_ms)).await;
            }
            println!(
                "prewarm={prewarm} {name}: spawn() median {:?}, spawn -> runtime connected median {:?}, drop median {:?} (n=30)",
                median(spawn_times),
                median(connect_times),
                median(drop_times),
            );
        }
    }
}

/// What each protection adds to a cold start: the median spawn → Runtime API
/// connection time with every protection, and with each one left out in
/// turn (n starts each, interleaved so load drifts hit all variants alike):
/// `cargo test -p stratus-sandbox-process --release --test sandbox -- --ignored --nocapture protection_costs`
/// (`STRATUS_BENCH_STARTS`, default 100).
#[tokio::test]
#[ignore = "benchmark; run explicitly"]
async fn protection_costs() {
    use stratus_sandbox_process::Protection;
    if !is_root() {
        return;
    }
    let starts: usize = std::env::var("STRATUS_BENCH_STARTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let code = code_dir(&[]);
    let argv: &[&str] = &["/bin/bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9001"];
    let mut variants: Vec<(String, Vec<Protection>)> = vec![("all".into(), Vec::new())];
    for p in Protection::ALL {
        variants.push((format!("without {p:?}"), vec![p]));
    }
    let mut backends = Vec::new();
    for (i, (_, without)) in variants.iter().enumerate() {
        let state = tempfile::tempdir().expect("state dir");
        let config = ProcessBackendConfig {
            jailer: vec![env!("CARGO_BIN_EXE_stratus-jailer").to_owned()],
            state_dir: state.path().to_owned(),
            cgroup_parent: format!("stratus-test-costs-{}-{i}", std::process::id()),
            uid_base: 2_920_000 + i as u32 * 100,
            uid_count: 100,
            prewarm: 2,
            tmp_disk_pool: 2,
            benchmark_without: without.clone(),
            ..ProcessBackendConfig::default()
        };
        let backend = ProcessBackend::new(config).expect("backend");
        backend.prewarm();
        backends.push((backend, state));
    }
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); variants.len()];
    for n in 0..starts {
        for (i, (backend, _)) in backends.iter().enumerate() {
            let spec = spec(&format!("cost-{i}-{n}"), code.path(), argv);
            let t0 = Instant::now();
            let mut sb = backend.spawn(spec).await.expect("spawn");
            let api = listener(&mut sb);
            let _conn = api.accept().await.expect("accept");
            times[i].push(t0.elapsed());
            drop(sb);
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
    let all = median(times[0].clone());
    println!("protection costs, spawn -> runtime connected, median of {starts} starts");
    println!("{:<28} {:>10} {:>10}", "variant", "median", "cost");
    for (i, (name, _)) in variants.iter().enumerate() {
        let m = median(times[i].clone());
        let cost = all.as_secs_f64() - m.as_secs_f64();
        println!(
            "{name:<28} {:>8.2}ms {:>8.2}ms",
            m.as_secs_f64() * 1e3,
            if i == 0 { 0.0 } else { cost * 1e3 }
        );
    }
}

/// Without a /tmp disk, `/tmp` is a host directory of the sandbox's own,
/// `<state>/<id>/tmp`, removed with it; the root is still assembled on the
/// state dir's shared, empty mountpoint.
#[tokio::test]
async fn a_host_directory_tmp_is_the_sandbox_s_own_and_removed_with_it() {
    use stratus_sandbox_process::Protection;
    if !is_root() {
        return;
    }
    let uid = 2_910_050;
    let state = tempfile::tempdir().expect("state dir");
    let backend = ProcessBackend::new(ProcessBackendConfig {
        jailer: vec![env!("CARGO_BIN_EXE_stratus-jailer").to_owned()],
        state_dir: state.path().to_owned(),
        cgroup_parent: format!("stratus-test-{uid}"),
        uid_base: uid,
        uid_count: 2,
        prewarm: 0,
        tmp_disk_pool: 0,
        benchmark_without: vec![Protection::TmpDisk],
        ..ProcessBackendConfig::default()
    })
    .expect("backend");
    let code = code_dir(&[]);
    let argv = ["/bin/sh", "-c", "echo written > /tmp/f && exec sleep 100"];
    let (a, b) = (
        spec("hosttmp-a", code.path(), &argv),
        spec("hosttmp-b", code.path(), &argv),
    );
    let (id_a, id_b) = (a.id.clone(), b.id.clone());
    let sb_a = backend.spawn(a).await.expect("spawn a");
    let sb_b = backend.spawn(b).await.expect("spawn b");
    for id in [&id_a, &id_b] {
        let file = backend.sandbox_dir(id).join("tmp/f");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !file.exists() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            std::fs::read_to_string(&file).expect("the sandbox wrote its /tmp"),
            "written\n"
        );
    }
    let root = state.path().join(".root");
    assert_eq!(std::fs::read_dir(&root).expect("mountpoint").count(), 0);
    drop(sb_a);
    assert!(!backend.sandbox_dir(&id_a).exists(), "scratch dir removed");
    assert!(backend.sandbox_dir(&id_b).exists(), "the other's is kept");
    drop(sb_b);
    assert!(!backend.sandbox_dir(&id_b).exists(), "scratch dir removed");
    assert_eq!(std::fs::read_dir(&root).expect("mountpoint").count(), 0);
    assert!(processes_of(uid).is_empty() && processes_of(uid + 1).is_empty());
}

/// Counts its starts in /tmp, leaves children behind and reports
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

async fn accept_line(l: &tokio::net::TcpListener) -> String {
    let (mut conn, _) = tokio::time::timeout(Duration::from_secs(20), l.accept())
        .await
        .expect("the runtime connects")
        .expect("accept");
    let mut got = String::new();
    conn.read_to_string(&mut got).await.expect("read");
    got
}

#[tokio::test]
async fn restart_runtime_keeps_tmp_and_kills_everything_else() {
    if !is_root() {
        return;
    }
    let uid = 2_910_009;
    let (backend, _state) = backend(uid, 1);
    let code = code_dir(&[("run.py", RESTARTABLE)]);
    let mut sb = backend
        .spawn(spec(
            "restart",
            code.path(),
            &["/usr/bin/python3", "/var/task/run.py"],
        ))
        .await
        .expect("spawn");
    let l = listener(&mut sb);
    // First start: init (pid 1) and the runtime.
    assert_eq!(accept_line(&l).await, "1 2");
    // Runtime plus its three children, plus the init, all as the sandbox uid.
    assert!(processes_of(uid).len() >= 5, "{:?}", processes_of(uid));

    sb.restart_runtime().await.expect("restart");
    // /tmp survived; the old runtime's children are gone.
    assert_eq!(accept_line(&l).await, "2 2");
    sb.restart_runtime().await.expect("second restart");
    assert_eq!(accept_line(&l).await, "3 2");

    sb.kill();
    assert_eq!(sb.wait().await, ExitStatus::Signal(9));
    // A restart of an ended sandbox fails cleanly.
    assert!(matches!(
        sb.restart_runtime().await,
        Err(SandboxError::Io { .. })
    ));
    drop(sb);
    assert!(processes_of(uid).is_empty(), "{:?}", processes_of(uid));
}

#[tokio::test]
async fn check_usable_notices_a_missing_state_dir() {
    if !is_root() {
        return;
    }
    let (backend, state) = backend(2_910_031, 0);
    backend.check_usable().expect("a fresh backend is usable");
    std::fs::remove_dir_all(state.path()).expect("remove state dir");
    let err = backend.check_usable().expect_err("state dir gone");
    assert!(
        matches!(&err, SandboxError::Unavailable(m) if m.contains("state dir")),
        "{err}"
    );
}

/// What a sandbox with outbound networking sees of its network.
const NET_PROBE: &str = r#"
import socket, json
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(('172.31.252.1', 9))
r = {'interfaces': sorted(n for _, n in socket.if_nameindex()), 'address': s.getsockname()[0],
     'route': open('/proc/net/route').read().splitlines()[1:], 'resolv': open('/etc/resolv.conf').read()}
c = socket.create_connection(('127.0.0.1', 9001))
c.sendall(json.dumps(r).encode())
"#;

#[tokio::test]
async fn outbound_network_gives_each_sandbox_an_address_and_is_removed_with_the_backend() {
    if !is_root() {
        return;
    }
    if std::process::Command::new("nft")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no nft on this host (Debian package nftables; .ci/run installs it)");
        return;
    }
    let cidr: Ipv4Cidr = "172.31.252.0/24".parse().expect("cidr");
    let names = Names::for_parent("stratus-test-2910020");
    let veths = || -> Vec<String> {
        std::fs::read_dir("/sys/class/net")
            .expect("sysfs")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&names.veth_prefix))
            .collect()
    };
    let code = code_dir(&[("probe.py", NET_PROBE)]);
    // One pooled start (its veth made ahead of time) and one made on demand.
    for prewarm in [1, 0] {
        let (backend, _state) = backend_with(
            2_910_020,
            prewarm,
            Some(OutboundConfig {
                cidr,
                allow_host: Vec::new(),
            }),
        );
        assert!(Path::new("/sys/class/net").join(&names.bridge).exists());
        let mut sb = backend
            .spawn(spec(
                &format!("net-{prewarm}"),
                code.path(),
                &["/usr/bin/python3", "/var/task/probe.py"],
            ))
            .await
            .expect("spawn");
        let api = listener(&mut sb);
        let (mut conn, _) = tokio::time::timeout(Duration::from_secs(20), api.accept())
            .await
            .expect("the probe connects within 20 s")
            .expect("accept");
        let mut body = String::new();
        conn.read_to_string(&mut body).await.expect("read");
        let r: serde_json::Value = serde_json::from_str(&body).expect("the probe's JSON");
        assert_eq!(r["interfaces"], serde_json::json!(["eth0", "lo"]), "{r}");
        let addr = r["address"].as_str().expect("address");
        assert!(
            addr.starts_with("172.31.252.") && addr != "172.31.252.1",
            "{r}"
        );
        // A default route (destination 00000000) via the gateway (172.31.252.1, little-endian hex).
        let routes = r["route"].as_array().expect("routes");
        assert!(
            routes.iter().any(|l| {
                let f: Vec<&str> = l.as_str().unwrap_or("").split_whitespace().collect();
                f.len() > 2 && f[0] == "eth0" && f[1] == "00000000" && f[2] == "01FC1FAC"
            }),
            "{r}"
        );
        assert_eq!(veths().len(), 1 + prewarm, "{:?}", veths());
        // The Runtime API sockets hold the sandbox's network namespace too.
        drop((conn, api));
        drop(sb);
        drop(backend);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !veths().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            veths(),
            Vec::<String>::new(),
            "veths outlived their sandboxes"
        );
        assert!(!Path::new("/sys/class/net").join(&names.bridge).exists());
        let tables = std::process::Command::new("nft")
            .args(["list", "tables"])
            .output()
            .expect("nft");
        assert!(
            !String::from_utf8_lossy(&tables.stdout).contains(&names.table),
            "the firewall tables outlived the backend"
        );
    }
}

/// The cgroup v2 delegation path, against a fake tree (the project's hosts
/// are cgroup v1): a rootless plan with a delegated subtree makes the
/// cgroup parent under that subtree, and sandbox cgroups go below it. No
/// sandbox is started (it would write a real pid into a plain file).
#[test]
fn a_delegated_v2_subtree_is_the_rootless_cgroup_root() {
    use stratus_sandbox_process::plan::{Cgroups, Ids, Plan, Tmp};
    use stratus_sandbox_process::{CgroupVersion, CpuLimit};
    let tree = tempfile::tempdir().expect("tree");
    let svc = tree
        .path()
        .join("user.slice/user-1000.slice/user@1000.service");
    std::fs::create_dir_all(&svc).expect("dirs");
    std::fs::write(svc.join("cgroup.controllers"), "cpu memory pids\n").expect("file");
    std::fs::write(svc.join("cgroup.subtree_control"), "").expect("file");
    std::fs::write(svc.join("cgroup.procs"), "").expect("file");
    let state = tempfile::tempdir().expect("state dir");
    let plan = Plan {
        ids: Ids::Shared {
            uid: 1000,
            gid: 1000,
            reason: "test".into(),
        },
        cgroups: Cgroups::Use {
            root: svc.clone(),
            version: CgroupVersion::V2,
            delegated: true,
        },
        tmp: Tmp::Tmpfs,
    };
    let config = ProcessBackendConfig {
        jailer: vec![env!("CARGO_BIN_EXE_stratus-jailer").to_owned()],
        state_dir: state.path().to_owned(),
        cgroup_parent: "stratus".into(),
        uid_base: 1_000_000,
        uid_count: 4,
        prewarm: 2,
        tmp_disk_pool: 2,
        cpu_limit: CpuLimit::Weight,
        benchmark_without: Vec::new(),
        network: None,
    };
    let backend = ProcessBackend::with_plan(config.clone(), plan.clone()).expect("backend");
    assert_eq!(backend.cgroup_version(), Some(CgroupVersion::V2));
    assert_eq!(
        std::fs::read_to_string(svc.join("cgroup.subtree_control")).expect("read"),
        "+memory +pids +cpu"
    );
    assert!(svc.join("stratus/cgroup.subtree_control").is_file());
    assert_eq!(
        backend.cgroup_dirs("sbx-1"),
        vec![svc.join("stratus").join("sbx-1")]
    );
    backend.check_usable().expect("usable");
    // Rootless: no pre-warmed jailers (their uid maps are known only at spawn).
    backend.prewarm();
    assert_eq!(backend.prewarmed(), 0);
    assert!(
        backend
            .protections()
            .iter()
            .all(|p| p.applied || p.name == "sandbox uids"),
        "{:?}",
        backend.protections()
    );

    // Without cgroups a CPU quota cannot be had: refused at start.
    let none = Plan {
        cgroups: Cgroups::None {
            reason: "cgroup v1 without delegation".into(),
        },
        ..plan
    };
    let err = ProcessBackend::with_plan(
        ProcessBackendConfig {
            cpu_limit: CpuLimit::Quota,
            ..config
        },
        none,
    )
    .expect_err("quota without cgroups");
    assert!(err.to_string().contains("CPU quota"), "{err}");
}

/// Creation rate under a burst: N sandboxes started at once through the
/// backend (as the server's worker does, with the server's default pools:
/// 2 pre-warmed jailers, 4 ready `/tmp` disks), each timed until its runtime
/// has sent its first Runtime API request (`GET .../invocation/next`).
/// Prints one JSON line per burst, prefixed `creation_rate_json `, for
/// `bench/creation.py`:
/// `cargo test -p stratus-sandbox-process --release --test sandbox -- --ignored --nocapture creation_rate`
/// `STRATUS_BENCH_BURSTS` (default `50,200`); `STRATUS_BENCH_RUNTIME`: a
/// static executable run as `/var/task/bootstrap` with `AWS_LAMBDA_RUNTIME_API`
/// set (bench/static_bootstrap.c), else bash sends the request itself;
/// `STRATUS_BENCH_UID_BASE` (default 2,930,000); `STRATUS_LOG=stratus_sandbox_process=debug`
/// also prints each start's phases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run explicitly"]
async fn creation_rate() {
    if !is_root() {
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("STRATUS_LOG"))
        .try_init();
    let bursts: Vec<usize> = std::env::var("STRATUS_BENCH_BURSTS")
        .unwrap_or_else(|_| "50,200".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let uid_base: u32 = std::env::var("STRATUS_BENCH_UID_BASE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_930_000);
    let code = tempfile::tempdir().expect("code dir");
    let argv: Vec<String> = match std::env::var("STRATUS_BENCH_RUNTIME") {
        Ok(runtime) => {
            std::fs::copy(&runtime, code.path().join("bootstrap")).expect("copy the runtime");
            vec!["/var/task/bootstrap".into()]
        }
        Err(_) => vec![
            "/bin/bash".into(),
            "-c".into(),
            "exec 3<>/dev/tcp/127.0.0.1/9001; printf 'GET /2018-06-01/runtime/invocation/next HTTP/1.1\\r\\n\\r\\n' >&3; read -r _ <&3".into(),
        ],
    };
    make_world_readable(code.path()).expect("chmod");
    std::fs::set_permissions(code.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod dir");
    let max = bursts.iter().copied().max().unwrap_or(1);
    let state = tempfile::tempdir().expect("state dir");
    let backend = std::sync::Arc::new(
        ProcessBackend::new(ProcessBackendConfig {
            jailer: vec![env!("CARGO_BIN_EXE_stratus-jailer").to_owned()],
            state_dir: state.path().to_owned(),
            cgroup_parent: format!("stratus-bench-creation-{}", std::process::id()),
            uid_base,
            uid_count: u32::try_from(max).expect("burst size"),
            ..ProcessBackendConfig::default()
        })
        .expect("backend"),
    );
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    for (round, &n) in bursts.iter().enumerate() {
        backend.prewarm();
        // Let the pools fill, as on a worker that was idle before the burst.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..n {
            let backend = std::sync::Arc::clone(&backend);
            let spec = spec(&format!("rate-{round}-{i}"), code.path(), &argv);
            tasks.spawn(async move {
                let t0 = start.elapsed();
                let mut sb = backend.spawn(spec).await.expect("spawn");
                let spawned = start.elapsed();
                let api = listener(&mut sb);
                let (mut conn, _) = tokio::time::timeout(Duration::from_secs(60), api.accept())
                    .await
                    .expect("the runtime connects")
                    .expect("accept");
                let connected = start.elapsed();
                let mut head = Vec::new();
                let mut chunk = [0u8; 512];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let got = tokio::time::timeout(Duration::from_secs(60), conn.read(&mut chunk))
                        .await
                        .expect("the runtime sends its request")
                        .expect("read");
                    assert!(got > 0, "the runtime closed before asking for an event");
                    head.extend_from_slice(&chunk[..got]);
                }
                assert!(head.starts_with(b"GET /2018-06-01/runtime/invocation/next"));
                let ready = start.elapsed();
                (sb, conn, [t0, spawned, connected, ready])
            });
        }
        let mut held = Vec::with_capacity(n);
        let mut times = Vec::with_capacity(n);
        while let Some(done) = tasks.join_next().await {
            let (sb, conn, t) = done.expect("task");
            held.push((sb, conn));
            times.push(t);
        }
        let wall = start.elapsed();
        let t_drop = Instant::now();
        drop(held);
        let dropped = t_drop.elapsed();
        let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
        let each = |k: usize| -> Vec<f64> { times.iter().map(|t| ms(t[k] - t[0])).collect() };
        let doc = serde_json::json!({
            "burst": n,
            "wall_ms": ms(wall),
            "per_second": (n as f64 / wall.as_secs_f64() * 10.0).round() / 10.0,
            "spawn_returned_ms": each(1),
            "connected_ms": each(2),
            "ready_ms": each(3),
            "drop_all_ms": ms(dropped),
            "runtime": argv.join(" "),
        });
        println!("creation_rate_json {doc}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(backend.live_sandboxes(), 0);
}

/// A pre-initialised "runtime": waits for its function on the pipe the
/// jailer names, then reports what it sees to the Runtime API port.
const PREINIT: &str = r#"
import os, socket, json
fd = int(os.environ["_STRATUS_PREINIT_FD"])
before = {"task": os.listdir("/var/task"), "opt": os.listdir("/opt"), "uid": os.getuid()}
c = socket.create_connection(("127.0.0.1", 9001))
raw = b""
while True:
    chunk = os.read(fd, 65536)
    if not chunk:
        break
    raw += chunk
spec = json.loads(raw)
os.chdir(spec["cwd"])
r = {"before": before, "env": spec["env"], "task": sorted(os.listdir("/var/task")),
     "opt": sorted(os.listdir("/opt")), "code": open("/var/task/code.txt").read(),
     "hostname": socket.gethostname(), "etc_hostname": open("/etc/hostname").read().strip(),
     "uid": os.getuid(), "shm": os.statvfs("/dev/shm").f_blocks * os.statvfs("/dev/shm").f_frsize}
try:
    open("/var/task/x", "w")
    r["task_writable"] = True
except OSError:
    r["task_writable"] = False
c.sendall(json.dumps(r).encode())
c.close()
"#;

#[tokio::test]
async fn a_pre_initialised_sandbox_is_specialised_to_one_function() {
    if !is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    let runtime = code_dir(&[("pre.py", PREINIT)]);
    let code = code_dir(&[("code.txt", "the function's code")]);
    let opt = code_dir(&[("layer.txt", "a layer")]);
    let (backend, _state) = backend_with_uids(2_930_000, 2);
    let generic_env = BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]);
    let profile = stratus_sandbox::PreInit {
        pool: "py".into(),
        argv: vec!["/usr/bin/python3".into(), "/var/runtime/pre.py".into()],
        env: generic_env,
        runtime_dir: runtime.path().to_owned(),
        runtime_api_port: 9001,
        limits: SandboxLimits {
            memory_mb: 128,
            tmp_mb: 512,
            max_pids: 64,
            max_fds: 1024,
        },
    };
    backend.prepare_runtimes(vec![(profile.clone(), 1)]);
    backend.prewarm_runtimes().await;
    assert_eq!(backend.runtimes_ready(), 1);
    assert_eq!(
        backend.live_sandboxes(),
        0,
        "pooled sandboxes are not live ones"
    );
    // The interpreter has been exec'd; let it reach its wait (and record
    // what it sees before it has a function).
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut s = spec(
        "pooled",
        code.path(),
        &["/usr/bin/python3", "/never/run.py"],
    );
    s.runtime_dir = Some(runtime.path().to_owned());
    s.opt_dir = Some(opt.path().to_owned());
    s.limits.memory_mb = 256;
    s.hostname = "sandbox-mine".into();
    s.env.insert("SECRET".into(), "only-mine".into());
    s.preinit = Some(profile.clone());
    let started = Instant::now();
    let mut sb = backend.spawn(s.clone()).await.expect("spawn");
    let took = started.elapsed();
    assert_eq!(backend.runtimes_ready(), 0, "the pooled sandbox was taken");
    assert!(took < Duration::from_secs(1), "{took:?}");
    let l = listener(&mut sb);
    let (mut conn, _) = tokio::time::timeout(Duration::from_secs(20), l.accept())
        .await
        .expect("runtime connected")
        .expect("accept");
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(20), conn.read_to_string(&mut out))
        .await
        .expect("report")
        .expect("read");
    let r: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(r["before"]["task"], serde_json::json!([]), "{r}");
    assert_eq!(r["before"]["opt"], serde_json::json!([]), "{r}");
    assert_eq!(r["task"], serde_json::json!(["code.txt"]), "{r}");
    assert_eq!(r["opt"], serde_json::json!(["layer.txt"]), "{r}");
    assert_eq!(r["code"], "the function's code");
    assert_eq!(r["env"]["SECRET"], "only-mine");
    assert_eq!(r["hostname"], "sandbox-mine");
    assert_eq!(r["etc_hostname"], "sandbox-mine");
    assert_eq!(r["task_writable"], false, "code must be read-only");
    assert_eq!(r["uid"], 993);
    assert_eq!(
        r["shm"],
        256 << 20,
        "/dev/shm follows the function's memory"
    );
    // Its cgroup carries the sandbox id and the function's memory limit.
    let dirs = backend.cgroup_dirs(&s.id);
    let mem = dirs
        .iter()
        .find(|d| d.to_string_lossy().contains("memory"))
        .map(|d| std::fs::read_to_string(d.join("memory.limit_in_bytes")).expect("limit"));
    if let Some(mem) = mem {
        assert_eq!(mem.trim(), (256u64 << 20).to_string());
    }
    let _ = sb.wait().await;
    drop(sb);
    // A spec that does not match the profile (another /tmp size) starts
    // from scratch; the refilled pool is left alone.
    tokio::time::sleep(Duration::from_millis(300)).await;
    backend.prewarm_runtimes().await;
    assert_eq!(backend.runtimes_ready(), 1);
    let mut other = spec("scratch", code.path(), &["/bin/true"]);
    other.runtime_dir = Some(runtime.path().to_owned());
    other.limits.tmp_mb = 1024;
    other.preinit = Some(profile);
    let sb = backend.spawn(other).await.expect("spawn from scratch");
    assert_eq!(backend.runtimes_ready(), 1);
    assert_eq!(sb.wait().await, ExitStatus::Code(0));
    drop(sb);
    backend.stop_runtime_pools();
    assert_eq!(backend.runtimes_ready(), 0);
    assert_eq!(backend.live_sandboxes(), 0);
}

/// A custom runtime's pre-initialised sandbox runs no program: R is
/// confined all the way (uid, user namespace, rlimits, Landlock, seccomp)
/// and waits right before `execve`. Specialised, it execs the function's
/// own `bootstrap` from the code mounted on `/var/task` only then, with
/// exactly the function's environment, and the Landlock domain and seccomp
/// filter installed before that mount still hold it.
#[tokio::test]
async fn a_custom_runtime_waits_before_exec_then_runs_the_functions_bootstrap() {
    if !is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    const UID_BASE: u32 = 2_960_000;
    let runtime = code_dir(&[]);
    let probe = format!("#!/usr/bin/python3\n{PROBE}");
    let code = code_dir(&[("bootstrap", &probe)]);
    let opt = code_dir(&[("bootstrap", &probe)]);
    for dir in [&code, &opt] {
        std::fs::set_permissions(
            dir.path().join("bootstrap"),
            std::fs::Permissions::from_mode(0o755),
        )
        .expect("chmod bootstrap");
    }
    let (backend, _state) = backend_with_uids(UID_BASE, 2);
    let profile = stratus_sandbox::PreInit {
        pool: "provided".into(),
        argv: Vec::new(),
        env: BTreeMap::new(),
        runtime_dir: runtime.path().to_owned(),
        runtime_api_port: 9001,
        limits: SandboxLimits {
            memory_mb: 128,
            tmp_mb: 512,
            max_pids: 64,
            max_fds: 1024,
        },
    };
    backend.prepare_runtimes(vec![(profile.clone(), 1)]);
    backend.prewarm_runtimes().await;
    assert_eq!(backend.runtimes_ready(), 1);
    // The waiting R is still the jailer's code (no program was exec'd),
    // already under its seccomp filter.
    let waiting: Vec<u32> = (UID_BASE..UID_BASE + 2).flat_map(processes_of).collect();
    assert_eq!(
        waiting.len(),
        1,
        "R alone runs as the sandbox uid: {waiting:?}"
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", waiting[0])).expect("status");
    assert!(status.contains("Seccomp:\t2"), "{status}");
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    let exe = std::fs::read_link(format!("/proc/{}/exe", waiting[0])).expect("exe");
    assert!(
        exe.to_string_lossy().contains("stratus-jailer"),
        "{}",
        exe.display()
    );

    let host = std::net::TcpListener::bind("127.0.0.1:0").expect("host listener");
    let host_port = host.local_addr().expect("addr").port();
    let run = |s: SandboxSpec| {
        let backend = &backend;
        async move {
            let mut sb = backend.spawn(s).await.expect("spawn");
            assert_eq!(backend.runtimes_ready(), 0, "the pooled sandbox was taken");
            let api = listener(&mut sb);
            let output = tokio::spawn(read_all(sb.take_output().expect("output")));
            let Ok(accepted) = tokio::time::timeout(Duration::from_secs(20), api.accept()).await
            else {
                drop(sb);
                panic!("no report; output: {}", output.await.expect("output"));
            };
            let (mut conn, _) = accepted.expect("accept");
            let mut body = String::new();
            conn.read_to_string(&mut body).await.expect("read report");
            assert_eq!(sb.wait().await, ExitStatus::Code(0));
            drop(sb);
            serde_json::from_str::<serde_json::Value>(&body).expect("probe json")
        }
    };

    let mut s = spec("provided", code.path(), &["/var/task/bootstrap"]);
    s.runtime_dir = Some(runtime.path().to_owned());
    s.opt_dir = Some(opt.path().to_owned());
    s.limits.memory_mb = 256;
    s.env.insert("HOST_PORT".into(), host_port.to_string());
    // Read by the dynamic loader at exec: fine, the exec comes after.
    s.env
        .insert("LD_LIBRARY_PATH".into(), "/var/task/lib".into());
    s.preinit = Some(profile.clone());
    let r = run(s).await;
    assert_eq!(r["pids"], serde_json::json!([1, 2]), "{r}");
    assert_eq!(r["uid"], 993);
    assert_eq!(r["capeff"], "0000000000000000");
    assert_eq!(r["task_write"], "EROFS");
    assert_eq!(r["tmp_write"], "ok");
    assert_eq!(r["tmp_before"], serde_json::json!([]), "{r}");
    // Landlock, set up before the code was mounted, still confines it.
    assert_eq!(r["proc_write"], "EACCES", "{r}");
    assert_eq!(r["mount"], "EPERM");
    assert_eq!(r["unshare_user"], "EPERM");
    assert_eq!(r["host_connect"], "ECONNREFUSED");
    assert_eq!(r["hostname"], "sandbox-host");
    assert_eq!(r["cwd"], "/var/task");
    assert_eq!(
        r["env"],
        serde_json::json!([
            "AWS_LAMBDA_RUNTIME_API",
            "HOST_PORT",
            "LANG",
            "LD_LIBRARY_PATH",
            "PATH"
        ]),
        "environment is exactly the spec's"
    );

    // A layer's bootstrap (the code has none), from the refilled pool.
    tokio::time::sleep(Duration::from_millis(300)).await;
    backend.prewarm_runtimes().await;
    assert_eq!(backend.runtimes_ready(), 1);
    let empty = code_dir(&[]);
    let mut s = spec("provided-opt", empty.path(), &["/opt/bootstrap"]);
    s.runtime_dir = Some(runtime.path().to_owned());
    s.opt_dir = Some(opt.path().to_owned());
    s.env.insert("HOST_PORT".into(), host_port.to_string());
    s.preinit = Some(profile.clone());
    let r = run(s).await;
    assert_eq!(r["uid"], 993);
    assert_eq!(r["proc_write"], "EACCES", "{r}");
    assert_eq!(r["cwd"], "/var/task");

    // A program that cannot be exec'd fails as it does from scratch.
    tokio::time::sleep(Duration::from_millis(300)).await;
    backend.prewarm_runtimes().await;
    assert_eq!(backend.runtimes_ready(), 1);
    let mut s = spec("provided-missing", empty.path(), &["/var/task/bootstrap"]);
    s.runtime_dir = Some(runtime.path().to_owned());
    s.preinit = Some(profile);
    let err = backend.spawn(s).await.expect_err("nothing to exec");
    assert!(err.to_string().contains("exec"), "{err}");
    // Let the refill the take scheduled finish before stopping the pool.
    tokio::time::sleep(Duration::from_millis(300)).await;
    backend.prewarm_runtimes().await;
    backend.stop_runtime_pools();
    assert_eq!(backend.live_sandboxes(), 0);
    assert!((UID_BASE..UID_BASE + 2).all(|u| processes_of(u).is_empty()));
}

/// [`backend`] with room for `uids` sandboxes (a pooled one holds a uid).
fn backend_with_uids(uid_base: u32, uids: u32) -> (ProcessBackend, tempfile::TempDir) {
    let state = tempfile::tempdir().expect("state dir");
    let backend = ProcessBackend::new(ProcessBackendConfig {
        jailer: vec![env!("CARGO_BIN_EXE_stratus-jailer").to_owned()],
        state_dir: state.path().to_owned(),
        cgroup_parent: format!("stratus-test-{uid_base}"),
        uid_base,
        uid_count: uids,
        prewarm: 1,
        tmp_disk_pool: 1,
        ..ProcessBackendConfig::default()
    })
    .expect("backend");
    backend.prewarm();
    (backend, state)
}

/// The jailer program (the jailer zygote) refuses to run unless it was
/// started as the server starts it: its parent's pid in
/// `STRATUS_JAILER_PARENT` and its request socket (`SOCK_SEQPACKET`) as
/// stdin. Needs no privileges.
#[test]
fn jailer_started_by_hand_refuses_to_run() {
    use std::process::{Command, Stdio};
    let jailer = env!("CARGO_BIN_EXE_stratus-jailer");
    let run = |parent: Option<String>, stdin: Stdio| {
        let mut cmd = Command::new(jailer);
        cmd.env_clear().stdin(stdin).stdout(Stdio::null());
        if let Some(p) = parent {
            cmd.env("STRATUS_JAILER_PARENT", p);
        }
        let out = cmd.stderr(Stdio::piped()).output().expect("run the jailer");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(None, Stdio::null());
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("no parent pid in STRATUS_JAILER_PARENT"),
        "{err}"
    );
    // Some other process as the parent: as if the server had died.
    let (code, err) = run(Some("1".into()), Stdio::null());
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("the server (pid 1) exited"), "{err}");
    // The right parent, but stdin is no request socket.
    let me = std::process::id().to_string();
    let (code, err) = run(Some(me.clone()), Stdio::null());
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no request socket on stdin"), "{err}");
    let (stream, _peer) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    let (code, err) = run(Some(me), Stdio::from(OwnedFd::from(stream)));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not the request socket"), "{err}");
}

/// A zygote that takes a request and never answers (stopped here) fails
/// that one start, within the reply timeout, with a clear error; it is
/// killed, and the next start gets a new zygote.
#[tokio::test]
async fn a_zygote_that_does_not_answer_fails_one_start_and_is_replaced() {
    if !is_root() {
        return;
    }
    let uid = 2_910_060;
    let (backend, _state) = backend(uid, 0);
    let code = code_dir(&[]);
    drop(
        backend
            .spawn(spec("hung-a", code.path(), &["/bin/true"]))
            .await
            .expect("spawn"),
    );
    let zygote = backend
        .zygote_pid()
        .expect("a zygote after the first spawn");
    let zygote_pid = nix::unistd::Pid::from_raw(i32::try_from(zygote).expect("pid"));
    nix::sys::signal::kill(zygote_pid, nix::sys::signal::Signal::SIGSTOP).expect("stop it");
    let started = Instant::now();
    match backend
        .spawn(spec("hung-b", code.path(), &["/bin/true"]))
        .await
    {
        Err(SandboxError::Create { step, message, .. }) => {
            assert_eq!(step, "jailer", "{message}");
            assert!(message.contains("gave no answer"), "{message}");
        }
        other => panic!("expected a create error, got {other:?}"),
    }
    let took = started.elapsed();
    assert!(
        (Duration::from_secs(4)..Duration::from_secs(15)).contains(&took),
        "failed after {took:?}: the reply timeout is 5 s"
    );
    // The stopped zygote was killed and reaped, not left behind.
    assert!(
        !Path::new(&format!("/proc/{zygote}")).exists(),
        "the old zygote is still there"
    );
    assert!(processes_of(uid).is_empty(), "{:?}", processes_of(uid));
    says_and_exits(&backend, code.path(), "hung-c", 3).await;
    assert_ne!(backend.zygote_pid().expect("a new zygote"), zygote);
}

/// Spawns `echo <name>; exit <status>` as sandbox `name` and checks both:
/// a start that works from beginning to end.
async fn says_and_exits(backend: &ProcessBackend, code: &Path, name: &str, status: i32) {
    let script = format!("echo {name}; exit {status}");
    let mut sb = backend
        .spawn(spec(name, code, &["/bin/sh", "-c", &script]))
        .await
        .expect("spawn");
    let out = read_all(sb.take_output().expect("output")).await;
    assert_eq!(sb.wait().await, ExitStatus::Code(status));
    assert!(out.contains(name), "output: {out}");
}

/// Every jailer is forked by one jailer zygote. A sandbox does not need
/// it once started (its init reports to the server directly): killing the
/// zygote leaves running sandboxes alone, and the next spawn starts a new
/// zygote and works.
#[tokio::test]
async fn a_killed_zygote_is_replaced() {
    if !is_root() {
        return;
    }
    let (backend, _state) = backend(2_910_040, 0);
    let code = code_dir(&[]);
    let first = backend
        .spawn(spec("zygote-a", code.path(), &["/bin/sleep", "60"]))
        .await
        .expect("spawn");
    let zygote = backend
        .zygote_pid()
        .expect("a zygote after the first spawn");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(zygote).expect("pid")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the zygote");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), first.wait())
            .await
            .is_err(),
        "the running sandbox ended with the zygote"
    );
    // It still answers to the server (one uid here: it goes first).
    first.kill();
    let ended = tokio::time::timeout(Duration::from_secs(5), first.wait())
        .await
        .expect("the first sandbox ends when killed");
    assert_eq!(ended, ExitStatus::Signal(9));
    drop(first);
    says_and_exits(&backend, code.path(), "zygote-b", 4).await;
    let replaced = backend.zygote_pid().expect("a new zygote");
    assert_ne!(replaced, zygote);
}
