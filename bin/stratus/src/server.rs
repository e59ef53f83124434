//! `stratus server`: the composition root.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{CpuMode, GvisorPlatform, NetworkMode, Options, ServerConfig};
use anyhow::Context;
use axum::serve::ListenerExt;
use stratus_api::service::{Counting, Invoker, Logs, Worker};
use stratus_assignment::{AssignmentConfig, KeepAlivePolicy, LocalAssignment, keepalive};
use stratus_async_invoke::{
    Clock, Dispatcher, DispatcherConfig, EventQueue, EventTarget, StoreQueue,
};
use stratus_counting::{CountingConfig, LocalCounting};
use stratus_frontend::{
    AdminKey, Frontend, FrontendDeps, Interpreters as FrontendInterpreters, Readiness,
};
use stratus_sandbox::SandboxBackend;
use stratus_sandbox_gvisor::{GvisorBackend, GvisorConfig, Platform};
use stratus_sandbox_process::{CpuLimit, OutboundConfig, ProcessBackend, ProcessBackendConfig};
use stratus_store_embedded::{EmbeddedMetaStore, FileBlobStore};
use stratus_types::limits::MEMORY_MIN_MB;
use stratus_types::{AccountId, Isolation};
use stratus_worker::{
    DiskLogStore, Interpreters, IsolationPolicy, LocalWorker, LogStoreConfig, RuntimePool, Tiers,
    WorkerConfig,
};

/// `stratus server`: options come from `--config FILE`, overridden by flags.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// A TOML configuration file (keys named like the flags: `keep-alive-secs = 60`).
    /// A flag given on the command line overrides the file's value; unknown
    /// keys are warned about and ignored.
    #[arg(long, env = "STRATUS_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the effective configuration (defaults, then the file, then the
    /// flags) as TOML and exit without starting anything.
    #[arg(long)]
    print_config: bool,
    #[command(flatten)]
    options: Options,
}

impl CpuMode {
    fn backend(self) -> CpuLimit {
        match self {
            CpuMode::Weight => CpuLimit::Weight,
            CpuMode::Quota => CpuLimit::Quota,
        }
    }
}

/// The effective configuration, and the unknown keys of the file (to warn
/// about once logging is set up).
fn effective_config(a: ServerArgs) -> anyhow::Result<(ServerConfig, Vec<String>)> {
    let (file, unknown) = match &a.config {
        Some(path) => {
            let f = Options::from_file(path)?;
            let unknown = f
                .unknown_keys
                .iter()
                .map(|k| format!("{}: unknown key `{k}` ignored", path.display()))
                .collect();
            (f.options, unknown)
        }
        None => (Options::default(), Vec::new()),
    };
    Ok((ServerConfig::resolve(a.options.over(file)), unknown))
}

/// Makes a file readable and writable by its owner only (mode 0600).
fn restrict_to_owner(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("making {} readable by its owner only", path.display()))
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

/// Says, once at start, which protections sandboxes get and which they do
/// not (rootless mode can lose some: see docs/design/rootless.md).
fn log_protections(all: &[stratus_sandbox_process::ProtectionStatus], rootless: bool) {
    let lost = all.iter().filter(|p| !p.applied).count();
    if rootless {
        tracing::warn!(
            lost,
            "rootless mode: the server is not root; sandbox protections follow, {lost} of them NOT applied"
        );
    } else {
        tracing::info!(lost, "sandbox protections follow");
    }
    for p in all {
        if p.applied {
            tracing::info!("protection applied: {}: {}", p.name, p.detail);
        } else {
            tracing::warn!("protection NOT applied: {}: {}", p.name, p.detail);
        }
    }
}

/// What `stratus server` was asked to do, decided before the async runtime
/// exists (its size is part of the configuration).
#[derive(Debug)]
pub enum Start {
    /// `--print-config`: the effective configuration was printed.
    Printed,
    /// Serve with this configuration; the file's warnings are logged once
    /// logging is set up.
    Serve(Box<ServerConfig>, Vec<String>),
}

/// Resolves the configuration (defaults, the file, the flags); with
/// `--print-config`, prints it.
pub fn configure(a: ServerArgs) -> anyhow::Result<Start> {
    let print = a.print_config;
    let (config, warnings) = effective_config(a)?;
    if print {
        for w in &warnings {
            eprintln!("warning: {w}");
        }
        print!("{}", config.to_toml()?);
        return Ok(Start::Printed);
    }
    Ok(Start::Serve(Box::new(config), warnings))
}

pub async fn run(a: ServerConfig, warnings: Vec<String>) -> anyhow::Result<()> {
    init_tracing();
    for w in &warnings {
        tracing::warn!("configuration: {w}");
    }
    tracing::info!(
        worker_threads = tokio::runtime::Handle::current().metrics().num_workers(),
        "async runtime ready"
    );
    let admin = a.admin_credentials()?;
    let data = a.data_dir.clone();
    std::fs::create_dir_all(&data)
        .with_context(|| format!("creating data dir {}", data.display()))?;
    // Before anything in the data dir or under the cgroup parent is touched
    // (format upgrade, crash clean-up, code GC): they must be this server's
    // alone. Held until the process exits.
    let _locks = crate::lock::lock_server(&data, &a.cgroup_parent)?;
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
    // It holds access keys' secrets: only the server's user may read it.
    restrict_to_owner(&data.join("meta.redb"))?;
    let blobs = FileBlobStore::open(data.join("blobs")).context("opening the code store")?;
    let meta: Arc<dyn stratus_store::MetaStore> = Arc::new(meta);
    let blobs: Arc<dyn stratus_store::BlobStore> = Arc::new(blobs);

    let network = match a.network {
        NetworkMode::None => {
            if !a.network_allow_host.is_empty() {
                tracing::warn!(
                    allow_host = ?a.network_allow_host,
                    "network-allow-host is ignored: sandboxes have no network (network = none)"
                );
            }
            None
        }
        NetworkMode::Outbound => Some(OutboundConfig {
            cidr: a.network_bridge_cidr,
            allow_host: a.network_allow_host.clone(),
        }),
    };
    let exe = std::env::current_exe().context("locating the stratus binary")?;
    let backend = Arc::new(
        ProcessBackend::new(ProcessBackendConfig {
            jailer: vec![exe.display().to_string(), "__sandbox-init".into()],
            state_dir: data.join("sandboxes"),
            cgroup_parent: a.cgroup_parent.clone(),
            uid_base: a.uid_base,
            cpu_limit: a.cpu_limit.backend(),
            network,
            ..ProcessBackendConfig::default()
        })
        .context("starting the process sandbox backend")?,
    );
    tracing::info!(
        cgroups = ?backend.cgroup_version(),
        tmp_capped = backend.tmp_is_capped(),
        cpu_limit = ?a.cpu_limit,
        network = ?a.network,
        rootless = backend.plan().rootless(),
        "process sandbox backend ready"
    );
    log_protections(&backend.protections(), backend.plan().rootless());
    let pools_backend = Arc::clone(&backend);

    let policy = IsolationPolicy {
        default: a.isolation,
        accounts: a
            .isolation_account
            .iter()
            .map(|t| (t.account.clone(), t.tier))
            .collect(),
        shared_host: a.isolation_shared_host,
    };
    let gvisor = start_gvisor(&a, &data, policy.requires(Isolation::Gvisor))?;

    let python = a.python.is_file().then(|| a.python.clone());
    let node = a.node.is_file().then(|| a.node.clone());
    tracing::info!(
        python = %python.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| "missing".into()),
        node = %node.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| "missing".into()),
        "runtime mapping: every python3.x id runs on the python interpreter, every nodejs*.x id on node"
    );
    let capacity = a.worker_memory_mb;
    let log_dir = data.join("logs");
    let log_store = DiskLogStore::open(
        &log_dir,
        LogStoreConfig::with_caps(a.log_max_bytes_per_function.0, a.log_max_bytes_total.0)
            .with_max_age(a.log_max_age.0),
    )
    .context("opening the log store")?;
    tracing::info!(
        dir = %log_dir.display(),
        bytes = log_store.total_bytes(),
        max_bytes_per_function = a.log_max_bytes_per_function.0,
        max_bytes_total = a.log_max_bytes_total.0,
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
            // Pooled sandboxes are process sandboxes: none when every
            // sandbox runs in gVisor.
            runtime_pool: if a.isolation == Isolation::Gvisor {
                0
            } else {
                a.runtime_pool
            },
        },
        Arc::clone(&backend) as Arc<dyn SandboxBackend>,
        Arc::clone(&blobs),
        Arc::clone(&logs),
    )
    .context("preparing the worker")?
    .with_tiers(Tiers::new(
        Arc::clone(&backend) as Arc<dyn SandboxBackend>,
        gvisor
            .clone()
            .map(|g| Arc::new(g) as Arc<dyn SandboxBackend>),
        policy,
    ));
    let runtime_pool = match worker.runtime_pool() {
        RuntimePool::Off(_) if a.isolation == Isolation::Gvisor && a.runtime_pool > 0 => {
            "off (every sandbox runs in gVisor)".to_owned()
        }
        pool => pool.to_string(),
    };
    tracing::info!(runtime_pool = %runtime_pool, worker_memory_mb = capacity, "runtime pool");
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
            keep_alive_policy: if a.keep_alive_policy == "adaptive" {
                KeepAlivePolicy::Adaptive(keepalive::PolicyConfig {
                    bin: Duration::from_millis(a.keep_alive_bin_ms),
                    ..keepalive::PolicyConfig::default()
                })
            } else {
                KeepAlivePolicy::Fixed
            },
            lease: Duration::from_secs(a.sandbox_lease_secs),
        },
        Arc::clone(&counting),
    );
    let invoker: Arc<dyn Invoker> = assignment.clone();
    // Asynchronous invocations: queued durably in the metadata store.
    let events: Arc<dyn EventQueue> = Arc::new(StoreQueue::new(Arc::clone(&meta)));
    let frontend = Frontend::new(FrontendDeps {
        events: Arc::clone(&events),
        meta,
        blobs,
        counting,
        invoker,
        worker,
        logs: Arc::clone(&logs),
        presign_key: presign_key(&data)?,
        admin_key: AdminKey {
            credentials: stratus_frontend::sigv4::Credentials {
                access_key_id: admin.access_key_id.clone(),
                secret: admin.secret.0.clone(),
            },
            account: AccountId::default_local(),
        },
        interpreters: FrontendInterpreters { python, node },
        readiness: readiness(backend, gvisor.ok(), Arc::clone(&assignment), capacity),
    })
    .await
    .context("loading functions")?;
    tracing::info!(functions = frontend.function_count(), data_dir = %data.display(), worker_memory_mb = capacity, "state loaded");
    if admin.documented_default {
        tracing::info!(
            access_key_id = stratus_types::LOCAL_ACCESS_KEY_ID,
            secret_access_key = stratus_types::LOCAL_SECRET_ACCESS_KEY,
            account = stratus_types::DEFAULT_ACCOUNT,
            "admin key: the documented local pair (loopback only); set STRATUS_ACCESS_KEY_ID and STRATUS_SECRET_ACCESS_KEY to choose another"
        );
    } else {
        tracing::info!(
            access_key_id = %admin.access_key_id,
            account = stratus_types::DEFAULT_ACCOUNT,
            "admin key: configured"
        );
    }
    // Before the API listens (no upload in flight) and before any sandbox
    // mounts code: drop code no function uses any more.
    let in_use = frontend.code_digests();
    let blobs_removed = frontend
        .remove_unused_code(&in_use)
        .await
        .context("removing unused code archives")?;
    let unpacked_removed = local_worker.remove_unused_code(&in_use);
    if blobs_removed + unpacked_removed > 0 {
        tracing::info!(
            archives = blobs_removed,
            unpacked = unpacked_removed,
            "removed code no function uses"
        );
    }

    // Events queued before a crash or restart run again from here.
    let dispatcher = Dispatcher::new(
        events,
        Arc::clone(&frontend) as Arc<dyn EventTarget>,
        DispatcherConfig {
            retry_delay: Duration::from_secs(a.async_retry_delay_secs),
            ..DispatcherConfig::default()
        },
        Clock::new(),
    );
    let dispatching = dispatcher.spawn();
    tracing::info!(
        retry_delay_secs = a.async_retry_delay_secs,
        "asynchronous invocation: dispatcher started"
    );
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("binding {}", a.listen))?
        .tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
    tracing::info!(
        listen = %a.listen,
        "Stratus is ready: Lambda API at http://{} (requests must be SigV4-signed by a known key), Prometheus metrics at http://{}/metrics, readiness at http://{}/ready",
        a.listen,
        a.listen,
        a.listen
    );
    // On SIGTERM/SIGINT: stop accepting connections, let requests in flight
    // finish (keep-alive connections close after their current response),
    // but no longer than the grace period.
    let (stopping_tx, mut stopping) = tokio::sync::watch::channel(false);
    // The peer address reaches handlers (a function URL event's sourceIp).
    let app = stratus_frontend::router(frontend)
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    let serve = axum::serve(listener, app)
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
    // Events not finished stay queued and run after the next start.
    dispatching.abort();
    tracing::info!("shutting down: stopping sandboxes");
    assignment.shutdown_all();
    pools_backend.stop_runtime_pools();
    // Give the waiters a moment to reap sandboxes and release their cgroups.
    tokio::time::sleep(Duration::from_millis(300)).await;
    logs.flush().await;
    Ok(())
}

/// Starts the gVisor backend. When the configuration requires it, failing
/// is fatal; otherwise it is started if `runsc` is there, and a sandbox of a
/// function that asks for it fails with the reason it is not.
fn start_gvisor(
    a: &ServerConfig,
    data: &Path,
    required: bool,
) -> anyhow::Result<Result<GvisorBackend, String>> {
    if !required && !a.runsc.is_file() {
        let reason = format!(
            "runsc is not installed at {} (apt-get install runsc)",
            a.runsc.display()
        );
        tracing::info!(%reason, "gVisor isolation unavailable; functions asking for it cannot run");
        return Ok(Err(reason));
    }
    let started = GvisorBackend::new(GvisorConfig {
        runsc: a.runsc.clone(),
        platform: match a.gvisor_platform {
            GvisorPlatform::Systrap => Platform::Systrap,
            GvisorPlatform::Ptrace => Platform::Ptrace,
        },
        state_dir: data.join("gvisor"),
        cgroup_parent: format!("{}-gvisor", a.cgroup_parent),
        cpu_limit: a.cpu_limit.backend(),
        ..GvisorConfig::default()
    });
    match started {
        Ok(g) => {
            tracing::info!(
                runsc = %a.runsc.display(),
                version = g.runsc_version(),
                platform = g.platform().as_str(),
                tmp_capped = g.tmp_is_capped(),
                "gVisor sandbox backend ready"
            );
            Ok(Ok(g))
        }
        Err(e) if required => Err(anyhow::Error::new(e).context(
            "starting the gVisor sandbox backend, which --isolation, --isolation-account or --isolation-shared-host requires",
        )),
        Err(e) => {
            tracing::warn!(error = %e, "gVisor isolation unavailable; functions asking for it cannot run");
            Ok(Err(e.to_string()))
        }
    }
}

/// What `/ready` checks besides the store: the sandbox backend can still make
/// sandboxes, and placement would find room for the smallest sandbox
/// (Lambda's minimum MemorySize), evicting idle ones if it must: memory held
/// by idle warm sandboxes counts as free, as placement treats it.
fn readiness(
    backend: Arc<ProcessBackend>,
    gvisor: Option<GvisorBackend>,
    assignment: Arc<LocalAssignment>,
    capacity_mb: u64,
) -> Readiness {
    let readiness = match gvisor {
        Some(g) => Readiness::default().with(
            "sandbox-backend-gvisor",
            Arc::new(move || g.check_usable().map_err(|e| e.to_string())),
        ),
        None => Readiness::default(),
    };
    readiness
        .with(
            "sandbox-backend",
            Arc::new(move || backend.check_usable().map_err(|e| e.to_string())),
        )
        .with(
            "capacity",
            Arc::new(move || {
                let smallest = u64::from(MEMORY_MIN_MB);
                if assignment.room_for(smallest) {
                    return Ok(());
                }
                let st = assignment.stats();
                Err(format!(
                    "no room for a {smallest} MB sandbox: {} of {capacity_mb} MB of worker memory are held by busy or starting sandboxes",
                    st.reserved_mb.saturating_sub(st.idle_mb)
                ))
            }),
        )
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

    fn parse(args: &[&str]) -> ServerArgs {
        Cli::try_parse_from(std::iter::once("stratus").chain(args.iter().copied()))
            .map(|c| c.server)
            .expect("flags parse")
    }

    #[test]
    fn cpu_modes_map_to_the_backend() {
        assert_eq!(CpuMode::Weight.backend(), CpuLimit::Weight);
        assert_eq!(CpuMode::Quota.backend(), CpuLimit::Quota);
    }

    #[test]
    fn the_config_file_sits_under_the_flags() {
        let dir = std::env::temp_dir().join(format!("stratus-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("s.toml");
        std::fs::write(&file, "keep-alive-secs = 42\nuid-base = 7\nsurprise = 1\n").expect("write");
        let f = file.display().to_string();
        let (c, warnings) =
            effective_config(parse(&["--config", &f, "--uid-base", "9"])).expect("config");
        assert_eq!(c.keep_alive_secs, 42);
        assert_eq!(c.uid_base, 9);
        assert_eq!(
            warnings,
            vec![format!("{f}: unknown key `surprise` ignored")]
        );
        let e = effective_config(parse(&[
            "--config",
            &dir.join("missing.toml").display().to_string(),
        ]))
        .expect_err("missing file");
        assert!(format!("{e:#}").contains("missing.toml"), "{e:#}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
