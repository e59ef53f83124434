//! Runs one command in a process sandbox and prints its output and timings.
//!
//! `cargo run -p stratus-sandbox-process --example run-in-sandbox -- /usr/bin/python3 -c 'print(1)'`
//! (as root; the code dir is an empty temp dir mounted at /var/task).

use std::collections::BTreeMap;
use std::io::Read;
use std::time::Instant;

use stratus_sandbox::{SandboxBackend, SandboxLimits, SandboxSpec};
use stratus_sandbox_process::{ProcessBackend, ProcessBackendConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let jailer = std::env::current_exe()?
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("stratus-jailer"))
        .ok_or("no target dir")?;
    let state = std::env::temp_dir().join("stratus-example-state");
    let backend = ProcessBackend::new(ProcessBackendConfig {
        jailer: vec![jailer.display().to_string()],
        state_dir: state,
        cgroup_parent: "stratus-example".into(),
        uid_base: 2_920_000,
        uid_count: 10,
        prewarm: 1,
        tmp_disk_pool: 1,
        ..ProcessBackendConfig::default()
    })?;
    let code = std::env::temp_dir().join("stratus-example-code");
    std::fs::create_dir_all(&code)?;
    let spec = SandboxSpec {
        id: format!("example-{}", std::process::id()),
        code_dir: code,
        runtime_dir: None,
        opt_dir: None,
        argv,
        env: BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]),
        cwd: "/var/task".into(),
        limits: SandboxLimits {
            memory_mb: 256,
            tmp_mb: 512,
            max_pids: 64,
            max_fds: 1024,
        },
        runtime_api_port: 9001,
        hostname: "example".into(),
        preinit: None,
    };
    // Fill the pool first, as a long-running server would have.
    backend.prewarm();
    let t0 = Instant::now();
    let mut sb = backend.spawn(spec).await?;
    let spawned = t0.elapsed();
    let out = sb.take_output().ok_or("no output")?;
    let status = sb.wait().await;
    let ended = t0.elapsed();
    let mut text = String::new();
    std::fs::File::from(out).read_to_string(&mut text)?;
    print!("{text}");
    eprintln!("status: {status}; spawn {spawned:?}; ended after {ended:?}");
    Ok(())
}
