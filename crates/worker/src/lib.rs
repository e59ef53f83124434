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
    /// Pre-initialised sandboxes the backend keeps ready per managed
    /// runtime (python, node), specialised to a function at its cold start;
    /// 0: none. A backend that cannot keep them ignores it.
    pub runtime_pool: usize,
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
        let profiles = [
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
        .map(|p| (p, cfg.runtime_pool))
        .collect();
        backend.prepare_runtimes(profiles);
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
        })
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

    fn capacity_mb(&self) -> u64 {
        self.cfg.capacity_mb
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
