//! Prints spawn → first Runtime API connection times of gVisor sandboxes:
//! `cargo test -p stratus-sandbox-gvisor --release --test bench -- --ignored --nocapture`
//! (`STRATUS_RUNSC` and `STRATUS_GVISOR_PLATFORM` pick the build and platform).

mod common;

use std::time::{Duration, Instant};

use stratus_sandbox::conformance::Suite;
use stratus_sandbox::{RuntimeApiListener, SandboxBackend};
use stratus_sandbox_gvisor::GvisorBackend;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run explicitly"]
async fn startup_latency() {
    if !nix::unistd::Uid::effective().is_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let Some(config) = common::config(
        dir.path().join("state"),
        format!("stratus-gvisor-bench-{}", std::process::id()),
    ) else {
        return;
    };
    let platform = config.platform;
    let backend = GvisorBackend::new(config).expect("backend");
    let suite = Suite::new(&dir.path().join("code"), "bench");
    let code = suite.code_dir("empty", &[]);
    let cases: [(&str, &[&str]); 2] = [
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
    ];
    let runs = 20;
    for (name, argv) in cases {
        let mut spawn_times = Vec::new();
        let mut connect_times = Vec::new();
        let mut drop_times = Vec::new();
        for i in 0..runs {
            let spec = suite.spec(&format!("b{i}"), &code, argv);
            let t0 = Instant::now();
            let mut sb = backend.spawn(spec).await.expect("spawn");
            spawn_times.push(t0.elapsed());
            let RuntimeApiListener::Tcp(l) = sb.take_runtime_api_listener().expect("listener");
            let l = tokio::net::TcpListener::from_std(l).expect("listener");
            let _conn = l.accept().await.expect("accept");
            connect_times.push(t0.elapsed());
            let t1 = Instant::now();
            drop(sb);
            drop_times.push(t1.elapsed());
        }
        println!(
            "{} {}, {name}: spawn() median {:?}, spawn -> runtime connected median {:?}, drop median {:?} (n={runs})",
            backend.runsc_version(),
            platform.as_str(),
            median(spawn_times),
            median(connect_times),
            median(drop_times),
        );
    }
}
