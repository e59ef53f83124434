//! The worker: creates sandboxes on one host and serves each its Runtime API.
//!
//! Owns, on its host: the code cache (each code digest unpacked once, shared
//! read-only by every sandbox of that code, removed when the front end says
//! no function uses it and no sandbox runs it), the runtimes' own files (the
//! Python and Node bootstraps, mounted at `/var/runtime`), and the running
//! sandboxes' data plane: the Runtime API server of each sandbox, the
//! hand-over of invocations to it, the capture of its logs and the
//! accounting of its REPORT line. It does not decide *which* sandbox serves
//! an invoke (that is the assignment service) nor *whether* an invoke may run
//! (the counting service). It never touches kernel objects directly: that is
//! the [`SandboxBackend`]'s job.

mod code_cache;
mod isolation;
mod logs;
mod logstore;
mod runtime_api;
mod runtimes;
mod sandbox;

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use stratus_api::LambdaError;
use stratus_api::service::{FunctionVersionSpec, InitializationType, Logs, WarmSandbox, Worker};
use stratus_sandbox::SandboxBackend;
use stratus_types::RuntimeFamily;

use stratus_store::BlobStore;

pub use isolation::{IsolationPolicy, Tiers};
pub use logstore::{DiskLogStore, LogStoreConfig, LogStoreError, MAX_LINE_BYTES};
pub use runtimes::Interpreters;

/// Configuration of a local worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Stable id of this worker.
    pub id: String,
    /// Memory (MB) offered to sandboxes.
    pub capacity_mb: u64,
    /// Directory the worker owns (code cache, runtime files).
    pub dir: PathBuf,
    /// Host interpreters for the managed runtimes.
    pub interpreters: Interpreters,
    /// Pre-initialised sandboxes the backend keeps ready per runtime
    /// family (python, node, provided), specialised to a function at its
    /// cold start; 0: none. A backend that cannot keep them ignores it. The
    /// worker keeps fewer if so many would hold more than a quarter of
    /// `capacity_mb` (see [`pool_fit`]).
    pub runtime_pool: usize,
}

/// Pre-initialised sandboxes hold at most this share of a worker's memory
/// (one quarter).
const POOL_SHARE_DIVISOR: u64 = 4;

/// How many pre-initialised sandboxes per runtime family a worker of
/// `capacity_mb` keeps when `wanted` are asked for and one of each family
/// together hold `round_mb` (the sum of their memory limits): at most
/// `wanted`, and all of them together at most a quarter of the capacity,
/// so that the pool never takes the room functions need.
pub fn pool_fit(capacity_mb: u64, wanted: usize, round_mb: u64) -> usize {
    if round_mb == 0 {
        return wanted;
    }
    let fit = capacity_mb / POOL_SHARE_DIVISOR / round_mb;
    wanted.min(usize::try_from(fit).unwrap_or(usize::MAX))
}

/// The runtime pool a worker keeps, as it reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimePool {
    /// None; why, as it follows "off" (`: reason` or ` (reason)`).
    Off(String),
    /// `per_family` ready sandboxes of each of `families`, holding
    /// `reserved_mb` of the worker's memory (taken from what placement may
    /// give to functions).
    Kept {
        per_family: usize,
        families: Vec<String>,
        reserved_mb: u64,
    },
}

impl std::fmt::Display for RuntimePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RuntimePool::Off(why) => write!(f, "off{why}"),
            RuntimePool::Kept {
                per_family,
                families,
                reserved_mb,
            } => write!(
                f,
                "{per_family} pre-initialised sandbox(es) per runtime family ({}), holding {reserved_mb} MB of the worker's memory",
                families.join(", ")
            ),
        }
    }
}

/// Errors of the worker's own operations.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("preparing worker directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A worker running sandboxes on this host.
#[derive(Debug)]
pub struct LocalWorker {
    cfg: WorkerConfig,
    tiers: Tiers,
    code: code_cache::CodeCache,
    runtime_dir: PathBuf,
    logs: Arc<dyn Logs>,
    pool: RuntimePool,
}

impl LocalWorker {
    /// Creates the worker's directories and writes the runtime files.
    pub fn new(
        cfg: WorkerConfig,
        backend: Arc<dyn SandboxBackend>,
        blobs: Arc<dyn BlobStore>,
        logs: Arc<dyn Logs>,
    ) -> Result<Self, WorkerError> {
        let runtime_dir = cfg.dir.join("runtime");
        runtimes::install(&runtime_dir).map_err(|source| WorkerError::Dir {
            path: runtime_dir.clone(),
            source,
        })?;
        // Custom runtimes need no interpreter: their program is the function's.
        let profiles: Vec<_> = [
            RuntimeFamily::Python,
            RuntimeFamily::Node,
            RuntimeFamily::Provided,
        ]
        .into_iter()
        .filter(|f| {
            cfg.interpreters
                .for_family(*f)
                .is_none_or(std::path::Path::is_file)
        })
        .filter_map(|f| runtimes::preinit_profile(f, &cfg.interpreters, &runtime_dir))
        .collect();
        // One sandbox of each family, together.
        let round_mb: u64 = profiles.iter().map(|p| p.limits.memory_mb).sum();
        let per_family = pool_fit(cfg.capacity_mb, cfg.runtime_pool, round_mb);
        let pool = match backend.runtime_pool_unavailable() {
            Some(why) => RuntimePool::Off(format!(": {why}")),
            None if cfg.runtime_pool == 0 => RuntimePool::Off(" (runtime-pool = 0)".into()),
            None if profiles.is_empty() => RuntimePool::Off(" (no runtime family to keep)".into()),
            None if per_family == 0 => RuntimePool::Off(format!(
                " (one sandbox per runtime family, {} MB, would be more than a quarter of the worker's {} MB)",
                round_mb, cfg.capacity_mb
            )),
            None => RuntimePool::Kept {
                per_family,
                families: profiles.iter().map(|p| p.pool.clone()).collect(),
                reserved_mb: round_mb * per_family as u64,
            },
        };
        if per_family < cfg.runtime_pool && matches!(pool, RuntimePool::Kept { .. }) {
            tracing::warn!(
                wanted = cfg.runtime_pool,
                kept = per_family,
                capacity_mb = cfg.capacity_mb,
                "fewer pre-initialised runtime sandboxes than asked for: the pool holds at most a quarter of the worker's memory"
            );
        }
        backend.prepare_runtimes(profiles.into_iter().map(|p| (p, per_family)).collect());
        let code_dir = cfg.dir.join("code");
        std::fs::create_dir_all(&code_dir).map_err(|source| WorkerError::Dir {
            path: code_dir.clone(),
            source,
        })?;
        Ok(LocalWorker {
            code: code_cache::CodeCache::new(code_dir, blobs),
            cfg,
            tiers: Tiers::process_only(backend),
            runtime_dir,
            logs,
            pool,
        })
    }

    /// The runtime pool this worker keeps (for the server's start-up line).
    pub fn runtime_pool(&self) -> &RuntimePool {
        &self.pool
    }

    /// Serves sandboxes from these tiers under this policy (instead of the
    /// process backend alone).
    pub fn with_tiers(mut self, tiers: Tiers) -> Self {
        self.tiers = tiers;
        self
    }

    /// Removes unpacked code whose digest is not in `keep`, and staged or
    /// half-unpacked leftovers. Call it before any sandbox starts: a sandbox
    /// mounts its code directory. Returns how many entries were removed.
    pub fn remove_unused_code(&self, keep: &std::collections::BTreeSet<String>) -> usize {
        self.code.remove_unused(keep)
    }
}

#[async_trait]
impl Worker for LocalWorker {
    fn id(&self) -> &str {
        &self.cfg.id
    }

    /// The configured memory less what the runtime pool holds: a pooled
    /// sandbox taken by a function becomes that function's (placement
    /// reserved its MemorySize) and the pool starts another, so the pool's
    /// share stays taken.
    fn capacity_mb(&self) -> u64 {
        let pool = match &self.pool {
            RuntimePool::Kept { reserved_mb, .. } => *reserved_mb,
            RuntimePool::Off(_) => 0,
        };
        self.cfg.capacity_mb.saturating_sub(pool)
    }

    async fn prepare_code(&self, digest: &str) -> Result<(), LambdaError> {
        self.code.prepare(digest).await.map(drop)
    }

    fn remove_code(&self, digest: &str) {
        self.code.remove(digest);
    }

    async fn create_sandbox(
        &self,
        spec: Arc<FunctionVersionSpec>,
        init: InitializationType,
    ) -> Result<Arc<dyn WarmSandbox>, LambdaError> {
        let code = self.code.prepare(&spec.code_digest).await?;
        let opt = self.code.prepare_opt(&spec.layers).await?;
        let backend = self.tiers.backend_for(&spec);
        sandbox::start(
            &backend,
            sandbox::Wanted { spec, init },
            code,
            opt,
            self.runtime_dir.clone(),
            &self.cfg.interpreters,
            Arc::clone(&self.logs),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_holds_at_most_a_quarter_of_the_worker() {
        // Three families of 128 MB: 384 MB for one sandbox of each.
        let round = 3 * 128;
        assert_eq!(pool_fit(12 * 1024, 2, round), 2);
        // A quarter of 1,536 MB is exactly one round.
        assert_eq!(pool_fit(1536, 2, round), 1);
        assert_eq!(pool_fit(1535, 2, round), 0);
        assert_eq!(pool_fit(256, 2, round), 0);
        assert_eq!(pool_fit(1 << 40, 5, round), 5);
        assert_eq!(pool_fit(0, 0, round), 0);
        // Nothing to hold: as many as asked.
        assert_eq!(pool_fit(0, 3, 0), 3);
    }

    #[test]
    fn the_start_up_text_names_size_families_and_memory() {
        let kept = RuntimePool::Kept {
            per_family: 2,
            families: vec!["python".into(), "node".into(), "provided".into()],
            reserved_mb: 768,
        };
        assert_eq!(
            kept.to_string(),
            "2 pre-initialised sandbox(es) per runtime family (python, node, provided), holding 768 MB of the worker's memory"
        );
        assert_eq!(
            RuntimePool::Off(" (runtime-pool = 0)".into()).to_string(),
            "off (runtime-pool = 0)"
        );
        assert_eq!(
            RuntimePool::Off(": rootless mode".into()).to_string(),
            "off: rootless mode"
        );
    }
}
