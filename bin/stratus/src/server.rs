//! `stratus server`: the composition root.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::serve::ListenerExt;
use stratus_api::service::{Counting, Invoker, Logs, Worker};
use stratus_assignment::{AssignmentConfig, LocalAssignment};
use stratus_counting::{CountingConfig, LocalCounting};
use stratus_frontend::{Frontend, FrontendDeps, Interpreters as FrontendInterpreters};
use stratus_sandbox_process::{CpuLimit, ProcessBackend, ProcessBackendConfig};
use stratus_store_embedded::{EmbeddedMetaStore, FileBlobStore};
use stratus_worker::{DiskLogStore, Interpreters, LocalWorker, LogStoreConfig, WorkerConfig};

#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// Address of the Lambda API.
    #[arg(long, default_value = "127.0.0.1:9000", env = "STRATUS_LISTEN")]
    listen: SocketAddr,
    /// Where functions, code and sandbox scratch space live
    /// [default: $XDG_DATA_HOME/stratus or ~/.local/share/stratus].
    #[arg(long, env = "STRATUS_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Seconds an idle sandbox is kept warm before it is shut down.
    #[arg(long, default_value_t = 300)]
    keep_alive_secs: u64,
    /// On SIGTERM/SIGINT, seconds in-flight requests (invokes) may take to
    /// finish before their sandboxes are stopped anyway.
    #[arg(long, default_value_t = 60)]
    shutdown_grace_secs: u64,
    /// Seconds a sandbox lives at most (its lease, less a jitter of up to
    /// 10%); then it takes no new invoke and is replaced on demand. An invoke
    /// running when the lease ends finishes normally. Lambda: 6 hours.
    #[arg(
        long,
        default_value_t = stratus_assignment::DEFAULT_LEASE.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..),
    )]
    sandbox_lease_secs: u64,
    /// Memory (MB) the worker offers to sandboxes [default: half of the host's RAM].
    #[arg(long)]
    worker_memory_mb: Option<u64>,
    /// Concurrent executions allowed per account (at least 1).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    account_concurrency: u32,
    /// New sandboxes (cold starts) one function may start at once: the size
    /// of its scaling token bucket. Lambda: 1,000 per 10 s.
    #[arg(
        long,
        default_value_t = CountingConfig::default().burst_capacity,
        value_parser = clap::value_parser!(u32).range(1..),
    )]
    scale_burst: u32,
    /// Scaling tokens added back to each function's bucket per second,
    /// continuously (fractions allowed, e.g. 0.5). Lambda: 100.
    #[arg(
        long,
        default_value_t = CountingConfig::default().burst_refill_per_s,
        value_parser = parse_refill_rate,
    )]
    scale_refill_per_sec: f64,
    /// Interpreter for every python3.x runtime id.
    #[arg(long, default_value = "/usr/bin/python3")]
    python: PathBuf,
    /// Interpreter for every nodejs*.x runtime id.
    #[arg(long, default_value = "/usr/bin/node")]
    node: PathBuf,
    /// Cgroup under which sandbox cgroups are created (one per server).
    #[arg(long, default_value = "stratus")]
    cgroup_parent: String,
    /// First host uid given to sandboxes (each live sandbox gets its own).
    #[arg(long, default_value_t = 1_500_000)]
    uid_base: u32,
    /// How CPU in proportion to MemorySize (1,769 MB = one vCPU) is enforced.
    #[arg(long, value_enum, default_value_t = CpuMode::Weight)]
    cpu_limit: CpuMode,
    /// Disk space for one function's logs (its oldest lines are deleted
    /// first). A number of bytes, or with K, M, G (KiB, MiB, GiB).
    #[arg(long, default_value = "16MiB", value_parser = parse_bytes)]
    log_max_bytes_per_function: u64,
    /// Disk space for all functions' logs (the function written least
    /// recently loses its oldest lines first). Same units.
    #[arg(long, default_value = "1GiB", value_parser = parse_bytes)]
    log_max_bytes_total: u64,
    /// Function log lines older than this are deleted, oldest first: a
    /// number with `s`, `m`, `h` or `d`, or `never`.
    #[arg(long, default_value = "30d", value_parser = parse_age)]
    log_max_age: MaxAge,
}

/// `--cpu-limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum CpuMode {
    /// A scheduling weight only: shares under contention, and a small
    /// function still runs at full speed on an idle machine.
    Weight,
    /// The weight plus a hard CFS quota in the same proportion (a 128 MB
    /// function gets at most 128/1,769 of one CPU, even when the machine is idle).
    Quota,
}

impl CpuMode {
    fn backend(self) -> CpuLimit {
        match self {
            CpuMode::Weight => CpuLimit::Weight,
            CpuMode::Quota => CpuLimit::Quota,
        }
    }
}

/// A refill rate: a finite number of tokens per second above zero.
fn parse_refill_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        Ok(_) => Err(format!(
            "{s:?} is not a positive, finite number of tokens per second"
        )),
        Err(e) => Err(format!("{s:?} is not a number ({e})")),
    }
}

/// `--log-max-age`: `None` is `never`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MaxAge(Option<Duration>);

/// Parses an age: `90s`, `15m`, `12h`, `30d`, or `never` (no limit).
fn parse_age(s: &str) -> Result<MaxAge, String> {
    let t = s.trim();
    if t == "never" {
        return Ok(MaxAge(None));
    }
    let bad =
        || format!("{s:?} is not an age: write a number with s, m, h or d (e.g. 30d), or never");
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    match n.checked_mul(secs) {
        Some(0) => Err(format!("{s:?}: the age must be more than zero (or never)")),
        Some(v) => Ok(MaxAge(Some(Duration::from_secs(v)))),
        None => Err(bad()),
    }
}

/// Parses a size: `65536`, `64K`, `16MiB`, `1G`... (powers of 1024), at
/// least 64 KiB.
fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad =
        || format!("{s:?} is not a size: write bytes, or a number with K, M or G (KiB, MiB, GiB)");
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        _ => return Err(bad()),
    };
    let v = n.checked_mul(mult).ok_or_else(bad)?;
    if v < 64 * 1024 {
        return Err(format!("{s:?} is less than the smallest log cap, 64KiB"));
    }
    Ok(v)
}

pub(crate) fn default_data_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(x).join("stratus");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/share/stratus"),
        None => PathBuf::from("/var/lib/stratus"),
    }
}

fn host_memory_mb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb / 1024)
        .unwrap_or(4096)
}

/// Reads the presign secret, creating it (mode 0600) on first start.
fn presign_key(dir: &Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("presign.key");
    if let Ok(k) = std::fs::read(&path)
        && k.len() == 32
    {
        return Ok(k);
    }
    let key: [u8; 32] = rand::random();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(&key)?;
    f.sync_all()?;
    Ok(key.to_vec())
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STRATUS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .try_init();
}

pub async fn run(a: ServerArgs) -> anyhow::Result<()> {
    init_tracing();
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "stratus server must run as root: sandboxes use namespaces and cgroups (rootless mode is not implemented yet)"
        );
    }
    let data = a.data_dir.clone().unwrap_or_else(default_data_dir);
    std::fs::create_dir_all(&data)
        .with_context(|| format!("creating data dir {}", data.display()))?;
    match crate::datadir::check_format(&data)? {
        crate::datadir::Format::Upgraded { from } => tracing::info!(
            data_dir = %data.display(),
            from,
            to = crate::datadir::FORMAT,
            "upgraded the data directory's format in place"
        ),
        crate::datadir::Format::Created | crate::datadir::Format::Current => {}
    }
    let meta =
        EmbeddedMetaStore::open(data.join("meta.redb")).context("opening the metadata store")?;
    let blobs = FileBlobStore::open(data.join("blobs")).context("opening the code store")?;
    let meta: Arc<dyn stratus_store::MetaStore> = Arc::new(meta);
    let blobs: Arc<dyn stratus_store::BlobStore> = Arc::new(blobs);

    let exe = std::env::current_exe().context("locating the stratus binary")?;
    let backend = ProcessBackend::new(ProcessBackendConfig {
        jailer: vec![exe.display().to_string(), "__sandbox-init".into()],
        state_dir: data.join("sandboxes"),
        cgroup_parent: a.cgroup_parent.clone(),
        uid_base: a.uid_base,
        cpu_limit: a.cpu_limit.backend(),
        ..ProcessBackendConfig::default()
    })
    .context("starting the process sandbox backend")?;
    tracing::info!(
        cgroups = ?backend.cgroup_version(),
        tmp_capped = backend.tmp_is_capped(),
        cpu_limit = ?a.cpu_limit,
        "process sandbox backend ready"
    );

    let python = a.python.is_file().then(|| a.python.clone());
    let node = a.node.is_file().then(|| a.node.clone());
    tracing::info!(
        python = %python.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| "missing".into()),
        node = %node.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| "missing".into()),
        "runtime mapping: every python3.x id runs on the python interpreter, every nodejs*.x id on node"
    );
    let capacity = a.worker_memory_mb.unwrap_or_else(|| host_memory_mb() / 2);
    let log_dir = data.join("logs");
    let log_store = DiskLogStore::open(
        &log_dir,
        LogStoreConfig::with_caps(a.log_max_bytes_per_function, a.log_max_bytes_total)
            .with_max_age(a.log_max_age.0),
    )
    .context("opening the log store")?;
    tracing::info!(
        dir = %log_dir.display(),
        bytes = log_store.total_bytes(),
        max_bytes_per_function = a.log_max_bytes_per_function,
        max_bytes_total = a.log_max_bytes_total,
        max_age_secs = a.log_max_age.0.map(|d| d.as_secs()),
        "function logs"
    );
    let logs: Arc<dyn Logs> = Arc::new(log_store);
    let worker = LocalWorker::new(
        WorkerConfig {
            id: "local".into(),
            capacity_mb: capacity,
            dir: data.join("worker"),
            interpreters: Interpreters {
                python: a.python.clone(),
                node: a.node.clone(),
            },
        },
        Arc::new(backend),
        Arc::clone(&blobs),
        Arc::clone(&logs),
    )
    .context("preparing the worker")?;
    let local_worker = Arc::new(worker);
    let worker: Arc<dyn Worker> = Arc::clone(&local_worker) as Arc<dyn Worker>;
    let counting_config = CountingConfig {
        account_limit: a.account_concurrency,
        burst_capacity: a.scale_burst,
        burst_refill_per_s: a.scale_refill_per_sec,
    };
    tracing::info!(
        account_concurrency = counting_config.account_limit,
        scale_burst = counting_config.burst_capacity,
        scale_refill_per_sec = counting_config.burst_refill_per_s,
        "counting: concurrency limit and per-function scaling bucket"
    );
    let counting: Arc<dyn Counting> = Arc::new(LocalCounting::with_config(counting_config));
    // Every cold start takes a token from the function's scaling bucket.
    let assignment = LocalAssignment::with_scaling(
        vec![Arc::clone(&worker)],
        AssignmentConfig {
            keep_alive: Duration::from_secs(a.keep_alive_secs),
            lease: Duration::from_secs(a.sandbox_lease_secs),
        },
        Arc::clone(&counting),
    );
    let invoker: Arc<dyn Invoker> = assignment.clone();
    let frontend = Frontend::new(FrontendDeps {
        meta,
        blobs,
        counting,
        invoker,
        worker,
        logs: Arc::clone(&logs),
        presign_key: presign_key(&data)?,
        interpreters: FrontendInterpreters { python, node },
    })
    .await
    .context("loading functions")?;
    tracing::info!(functions = frontend.function_count(), data_dir = %data.display(), worker_memory_mb = capacity, "state loaded");
    // Before the API listens (no upload in flight) and before any sandbox
    // mounts code: drop code no function uses any more.
    let blobs_removed = frontend
        .remove_unused_code()
        .await
        .context("removing unused code archives")?;
    let unpacked_removed = local_worker.remove_unused_code(&frontend.code_digests());
    if blobs_removed + unpacked_removed > 0 {
        tracing::info!(
            archives = blobs_removed,
            unpacked = unpacked_removed,
            "removed code no function uses"
        );
    }

    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("binding {}", a.listen))?
        .tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
    tracing::info!(
        listen = %a.listen,
        "Stratus is ready: Lambda API at http://{} (any credentials are accepted: signatures are not verified yet), Prometheus metrics at http://{}/metrics",
        a.listen,
        a.listen
    );
    // On SIGTERM/SIGINT: stop accepting connections, let requests in flight
    // finish (keep-alive connections close after their current response),
    // but no longer than the grace period.
    let (stopping_tx, mut stopping) = tokio::sync::watch::channel(false);
    let serve = axum::serve(listener, stratus_frontend::router(frontend))
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            tracing::info!("shutting down: no new requests; waiting for the ones in flight");
            let _ = stopping_tx.send(true);
        })
        .into_future();
    let grace = Duration::from_secs(a.shutdown_grace_secs);
    tokio::select! {
        served = serve => served.context("serving the API")?,
        _ = async {
            let _ = stopping.wait_for(|s| *s).await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(
                grace_secs = a.shutdown_grace_secs,
                "requests still in flight after the grace period: stopping them"
            );
        }
    }
    tracing::info!("shutting down: stopping sandboxes");
    assignment.shutdown_all();
    // Give the waiters a moment to reap sandboxes and release their cgroups.
    tokio::time::sleep(Duration::from_millis(300)).await;
    logs.flush().await;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        server: ServerArgs,
    }

    fn parse(args: &[&str]) -> Result<ServerArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("stratus").chain(args.iter().copied()))
            .map(|c| c.server)
    }

    #[test]
    fn scaling_flags_default_to_lambdas_bucket() {
        let a = parse(&[]).expect("defaults parse");
        assert_eq!(a.scale_burst, 1000);
        assert!((a.scale_refill_per_sec - 100.0).abs() < f64::EPSILON);
        let a = parse(&["--scale-burst", "2", "--scale-refill-per-sec", "0.001"])
            .expect("small bucket");
        assert_eq!(a.scale_burst, 2);
        assert!((a.scale_refill_per_sec - 0.001).abs() < f64::EPSILON);
    }

    #[test]
    fn cpu_limit_is_a_weight_unless_quota_is_asked_for() {
        assert_eq!(parse(&[]).expect("default").cpu_limit, CpuMode::Weight);
        let a = parse(&["--cpu-limit", "quota"]).expect("quota");
        assert_eq!(a.cpu_limit.backend(), CpuLimit::Quota);
        assert_eq!(
            parse(&["--cpu-limit", "weight"])
                .expect("weight")
                .cpu_limit
                .backend(),
            CpuLimit::Weight
        );
        assert!(parse(&["--cpu-limit", "hard"]).is_err());
        assert!(parse(&["--account-concurrency", "0"]).is_err());
        assert_eq!(
            parse(&["--account-concurrency", "1"])
                .expect("one")
                .account_concurrency,
            1
        );
    }

    #[test]
    fn scaling_flags_refuse_zero_and_nonsense() {
        for bad in [
            &["--scale-burst", "0"][..],
            &["--scale-burst=-1"],
            &["--scale-burst", "many"],
            &["--scale-refill-per-sec", "0"],
            &["--scale-refill-per-sec=-5"],
            &["--scale-refill-per-sec", "NaN"],
            &["--scale-refill-per-sec", "inf"],
            &["--scale-refill-per-sec", "fast"],
        ] {
            let err = parse(bad).expect_err("refused");
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn ages() {
        let age = |s| parse_age(s).map(|a| a.0);
        assert_eq!(age("90s"), Ok(Some(Duration::from_secs(90))));
        assert_eq!(age("15m"), Ok(Some(Duration::from_secs(900))));
        assert_eq!(age("12h"), Ok(Some(Duration::from_secs(43_200))));
        assert_eq!(age("30d"), Ok(Some(Duration::from_secs(2_592_000))));
        assert_eq!(age("never"), Ok(None));
        for bad in [
            "",
            "30",
            "d",
            "0s",
            "1w",
            "-1d",
            "1.5h",
            "99999999999999999999d",
        ] {
            assert!(parse_age(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse(&[]).expect("default").log_max_age.0,
            Some(Duration::from_secs(30 * 86_400))
        );
    }

    #[test]
    fn sandbox_lease_defaults_to_six_hours_and_refuses_zero() {
        assert_eq!(parse(&[]).expect("default").sandbox_lease_secs, 21_600);
        assert_eq!(
            parse(&["--sandbox-lease-secs", "2"])
                .expect("short lease")
                .sandbox_lease_secs,
            2
        );
        for bad in [
            &["--sandbox-lease-secs", "0"][..],
            &["--sandbox-lease-secs=-1"],
            &["--sandbox-lease-secs", "forever"],
        ] {
            let err = parse(bad).expect_err("refused");
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("65536"), Ok(65536));
        assert_eq!(parse_bytes("64K"), Ok(65536));
        assert_eq!(parse_bytes("16MiB"), Ok(16 << 20));
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
        assert_eq!(parse_bytes(" 2 GiB "), Ok(2 << 30));
        for bad in [
            "",
            "MiB",
            "16MB",
            "16 mib",
            "-1",
            "1.5G",
            "99999999999999999999G",
            "4K",
        ] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }
}
