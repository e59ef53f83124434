//! One running sandbox as the assignment service sees it: a [`WarmSandbox`]
//! that takes one invocation at a time.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::json;
use stratus_api::LambdaError;
use stratus_api::service::{
    FunctionError, FunctionVersionSpec, InitializationType, InvokeRequest, InvokeResponse,
    LogStreamKey, Logs, ResponseSink, WarmSandbox,
};
use stratus_sandbox::{
    ExitStatus, RuntimeApiListener, Sandbox, SandboxBackend, SandboxLimits, SandboxSpec,
};
use stratus_types::LogStreamName;
use stratus_types::limits::{
    RUNTIME_API_PORT, SANDBOX_MAX_FDS, SANDBOX_MAX_PIDS, STREAMED_RESPONSE_MAX_BYTES,
    SYNC_RESPONSE_MAX_BYTES,
};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tracing::Instrument;

use crate::code_cache::{CodeLease, OptLease};
use crate::logs::LogPump;
use crate::runtime_api::{self, Dispatch, RuntimeApiState, RuntimeReply};
use crate::runtimes::{self, Interpreters};

/// How long a runtime may take to initialise (Lambda's init phase limit).
const INIT_TIMEOUT: Duration = Duration::from_secs(10);

/// A sandbox running a function's runtime.
#[derive(Debug)]
pub struct ProcessSandbox {
    id: String,
    spec: Arc<FunctionVersionSpec>,
    dispatch_tx: mpsc::Sender<Dispatch>,
    api: Arc<RuntimeApiState>,
    /// The sandbox's output on its way to its log stream.
    logs: LogPump,
    exit: watch::Receiver<Option<ExitStatus>>,
    kill: Arc<Notify>,
    alive: AtomicBool,
    invoked: AtomicBool,
    /// When the current runtime process was started (for Init Duration).
    created: std::sync::Mutex<Instant>,
    /// How long the current runtime's init took, once it asked for an event.
    init_took: std::sync::Mutex<Option<Duration>>,
    sandbox: Arc<dyn Sandbox>,
    tasks: Vec<tokio::task::AbortHandle>,
}

/// A sandbox that could not start because the function package is unusable
/// (e.g. a `provided` zip without `bootstrap`): every invoke reports why.
#[derive(Debug)]
struct FailedSandbox {
    id: String,
    version: String,
    error: FunctionError,
    message: String,
}

#[async_trait]
impl WarmSandbox for FailedSandbox {
    fn id(&self) -> &str {
        &self.id
    }
    fn is_alive(&self) -> bool {
        false
    }
    async fn ready(&self) -> Result<(), LambdaError> {
        Err(LambdaError::new(
            stratus_api::ErrorCode::InvalidParameterValue,
            format!("{}: {}", self.error.error_type(), self.message),
        ))
    }
    async fn invoke(&self, req: InvokeRequest) -> Result<InvokeResponse, LambdaError> {
        let doc = json!({
            "errorType": self.error.error_type(),
            "errorMessage": format!("RequestId: {} Error: {}", req.request_id, self.message),
        });
        Ok(InvokeResponse {
            payload: Bytes::from(doc.to_string()),
            function_error: Some(self.error),
            executed_version: self.version.clone(),
            log: format!(
                "START RequestId: {id} Version: {v}\n{msg}\nEND RequestId: {id}\n",
                id = req.request_id,
                v = self.version,
                msg = self.message
            ),
            cold_start: true,
            duration: Duration::ZERO,
            init_duration: None,
            provisioned: false,
        })
    }
    fn shutdown(&self) {}
}

fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Lambda's log stream name: `YYYY/MM/DD/[version]<32 hex>`.
fn log_stream_name(version: &str, sandbox_id: &str) -> Result<LogStreamName, LambdaError> {
    let d = time::OffsetDateTime::now_utc().date();
    LogStreamName::new(d.year(), u8::from(d.month()), d.day(), version, sandbox_id)
        .map_err(|e| LambdaError::service(format!("naming the sandbox's log stream: {e}")))
}

/// What a sandbox is started for: the version it runs and how it came to
/// exist (`AWS_LAMBDA_INITIALIZATION_TYPE`).
#[derive(Debug, Clone)]
pub struct Wanted {
    pub spec: Arc<FunctionVersionSpec>,
    pub init: InitializationType,
}

/// Starts a sandbox for `wanted.spec`.
pub async fn start(
    backend: &dyn SandboxBackend,
    wanted: Wanted,
    code: CodeLease,
    opt: Option<OptLease>,
    runtime_dir: PathBuf,
    interpreters: &Interpreters,
    store: Arc<dyn Logs>,
) -> Result<Arc<dyn WarmSandbox>, LambdaError> {
    let Wanted { spec, init } = wanted;
    let id = new_id();
    let mut argv = runtimes::argv(&spec, interpreters);
    if spec.runtime.family() == stratus_types::RuntimeFamily::Provided {
        use std::os::unix::fs::PermissionsExt;
        let runnable = |dir: &std::path::Path| {
            std::fs::metadata(dir.join("bootstrap"))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        };
        // As on Lambda: the function's own bootstrap, else a layer's.
        let own = runnable(code.path());
        let layer = !own && opt.as_ref().is_some_and(|o| runnable(o.path()));
        if layer {
            argv = vec!["/opt/bootstrap".into()];
        }
        if !own && !layer {
            return Ok(Arc::new(FailedSandbox {
                id,
                version: spec.version.clone(),
                error: FunctionError::InvalidEntrypoint,
                message: "Couldn't find valid bootstrap(s): [/var/task/bootstrap /opt/bootstrap]"
                    .into(),
            }));
        }
    }
    let runtime_api = format!("127.0.0.1:{RUNTIME_API_PORT}");
    let log_stream = log_stream_name(&spec.version, &id)?;
    let preinit = runtimes::preinit(&spec, interpreters, &runtime_dir);
    let sb_spec = SandboxSpec {
        id: id.clone(),
        code_dir: code.path().to_owned(),
        runtime_dir: Some(runtime_dir),
        opt_dir: opt.as_ref().map(|o| o.path().to_owned()),
        argv,
        env: runtimes::environment(&spec, &runtime_api, log_stream.as_str(), init),
        cwd: PathBuf::from("/var/task"),
        limits: SandboxLimits {
            memory_mb: u64::from(spec.memory_mb),
            tmp_mb: u64::from(spec.ephemeral_mb),
            max_pids: SANDBOX_MAX_PIDS,
            max_fds: SANDBOX_MAX_FDS,
        },
        runtime_api_port: RUNTIME_API_PORT,
        hostname: format!("sandbox-{}", &id[..12]),
        preinit,
    };
    let created = Instant::now();
    let mut sandbox = backend
        .spawn(sb_spec)
        .await
        .map_err(|e| LambdaError::service(format!("could not start a sandbox: {e}")))?;
    let span = tracing::info_span!("sandbox", sandbox = %id, function = %spec.name, version = %spec.version);

    let listener = sandbox
        .take_runtime_api_listener()
        .ok_or_else(|| LambdaError::service("sandbox backend gave no Runtime API listener"))?;
    let output = sandbox
        .take_output()
        .ok_or_else(|| LambdaError::service("sandbox backend gave no output pipe"))?;
    let stream = LogStreamKey {
        account: spec.account.clone(),
        function: spec.name.clone(),
        stream: log_stream,
    };
    let logs = LogPump::start(output, stream, store, span.clone())
        .map_err(|e| LambdaError::service(format!("sandbox output: {e}")))?;
    let (dispatch_tx, dispatch_rx) = mpsc::channel(1);
    let api = Arc::new(RuntimeApiState::new(dispatch_rx));
    let mut tasks = Vec::new();

    // Runtime API server on the listener inside the sandbox.
    let RuntimeApiListener::Tcp(std_listener) = listener;
    std_listener
        .set_nonblocking(true)
        .map_err(|e| LambdaError::service(format!("runtime API listener: {e}")))?;
    let listener = tokio::net::TcpListener::from_std(std_listener)
        .map_err(|e| LambdaError::service(format!("runtime API listener: {e}")))?;
    let router = runtime_api::router(Arc::clone(&api));
    tasks.push(tokio::spawn(serve(listener, router).instrument(span.clone())).abort_handle());

    // The waiter reaps the sandbox and publishes how it ended; the last
    // reference to the backend's handle releases its kernel objects. It
    // holds the code's lease: the code mounted at `/var/task` stays on disk
    // until the sandbox is gone.
    let sandbox: Arc<dyn Sandbox> = Arc::from(sandbox);
    let (exit_tx, exit_rx) = watch::channel(None);
    let kill = Arc::new(Notify::new());
    {
        let kill = Arc::clone(&kill);
        let sandbox = Arc::clone(&sandbox);
        tokio::spawn(
            async move {
                let status = tokio::select! {
                    s = sandbox.wait() => s,
                    _ = kill.notified() => {
                        sandbox.kill();
                        sandbox.wait().await
                    }
                };
                drop(code);
                drop(opt);
                tracing::debug!(%status, "sandbox ended");
                exit_tx.send_replace(Some(status));
            }
            .instrument(span.clone()),
        );
    }

    Ok(Arc::new(ProcessSandbox {
        id,
        spec,
        dispatch_tx,
        api,
        logs,
        exit: exit_rx,
        kill,
        alive: AtomicBool::new(true),
        invoked: AtomicBool::new(false),
        created: std::sync::Mutex::new(created),
        init_took: std::sync::Mutex::new(None),
        sandbox,
        tasks,
    }))
}

async fn serve(listener: tokio::net::TcpListener, router: axum::Router) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors or similar: back off instead of spinning.
                tracing::warn!(error = %e, "runtime API accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let svc = hyper_util::service::TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await;
        });
    }
}

fn error_payload(error: FunctionError, message: String) -> Bytes {
    Bytes::from(json!({"errorType": error.error_type(), "errorMessage": message}).to_string())
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl ProcessSandbox {
    async fn exited(&self) -> ExitStatus {
        let mut rx = self.exit.clone();
        loop {
            if let Some(s) = *rx.borrow_and_update() {
                return s;
            }
            if rx.changed().await.is_err() {
                return ExitStatus::Signal(9);
            }
        }
    }

    async fn init_failed(&self) -> Bytes {
        let mut rx = self.api.init_error.subscribe();
        loop {
            if let Some(doc) = rx.borrow_and_update().clone() {
                return doc;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    fn die(&self) {
        self.alive.store(false, Ordering::SeqCst);
        self.kill.notify_one();
    }

    fn created(&self) -> Instant {
        *self.created.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// After a timeout: a fresh runtime process in the same sandbox (module
    /// state is gone, `/tmp` stays), as Lambda does. The next invoke runs
    /// the function's init again and reports its Init Duration.
    async fn restart_runtime(&self) {
        // Forget the timed-out invocation first, so that a late answer from
        // the dying runtime is refused and the new runtime starts clean.
        self.api.reset();
        let restarted_at = Instant::now();
        match self.sandbox.restart_runtime().await {
            Ok(()) => {
                *self.created.lock().unwrap_or_else(|e| e.into_inner()) = restarted_at;
                self.invoked.store(false, Ordering::SeqCst);
                tracing::debug!(
                    elapsed_us = restarted_at.elapsed().as_micros() as u64,
                    "runtime restarted after a timeout"
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not restart the runtime; replacing the sandbox");
                self.die();
            }
        }
    }

    /// Runs one invocation to its outcome: the payload, how it failed if it
    /// did, and when the runtime took the event.
    async fn run(
        &self,
        req: &InvokeRequest,
        timeout: Duration,
        sink: Option<ResponseSink>,
    ) -> (Bytes, Option<FunctionError>, Option<Instant>) {
        let (dispatched_tx, dispatched_rx) = oneshot::channel();
        let (reply_tx, reply_rx) = oneshot::channel();
        let dispatch = Dispatch {
            req: req.clone(),
            timeout_ms: timeout.as_millis() as u64,
            dispatched: dispatched_tx,
            reply: reply_tx,
            sink,
        };
        let exit_error = |s: ExitStatus| {
            let message = match s {
                ExitStatus::Code(0) => format!(
                    "RequestId: {} Error: Runtime exited without providing a reason",
                    req.request_id
                ),
                s => format!(
                    "RequestId: {} Error: Runtime exited with error: {s}",
                    req.request_id
                ),
            };
            error_payload(FunctionError::RuntimeExit, message)
        };
        let timed_out = || {
            error_payload(
                FunctionError::Timedout,
                format!(
                    "RequestId: {} Error: Task timed out after {:.2} seconds",
                    req.request_id,
                    timeout.as_secs_f64()
                ),
            )
        };
        if self.dispatch_tx.send(dispatch).await.is_err() {
            // The runtime API server is gone with the runtime.
            self.die();
            return (
                exit_error(ExitStatus::Code(0)),
                Some(FunctionError::RuntimeExit),
                None,
            );
        }
        // Phase 1: the runtime takes the event (after its init on a cold start).
        let started = tokio::select! {
            d = dispatched_rx => match d {
                Ok((at, _deadline)) => at,
                Err(_) => {
                    self.die();
                    return (exit_error(self.exited().await), Some(FunctionError::RuntimeExit), None);
                }
            },
            doc = self.init_failed() => {
                self.die();
                return (doc, Some(FunctionError::InitError), None);
            }
            s = self.exited() => {
                self.die();
                return (exit_error(s), Some(FunctionError::RuntimeExit), None);
            }
            _ = tokio::time::sleep(INIT_TIMEOUT.max(timeout)) => {
                self.die();
                return (timed_out(), Some(FunctionError::Timedout), None);
            }
        };
        // Init ended when the runtime first asked for an event; kept now,
        // before a timeout's restart resets the Runtime API state.
        if let Some(ready) = *self.api.ready.borrow() {
            *self.init_took.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(ready.saturating_duration_since(self.created()));
        }
        // Phase 2: the handler runs under the function's timeout.
        tokio::select! {
            r = reply_rx => match r {
                Ok(RuntimeReply::Response(b)) => (b, None, Some(started)),
                Ok(RuntimeReply::Error { body }) => (body, Some(FunctionError::Unhandled), Some(started)),
                Ok(RuntimeReply::TooLarge) => (
                    error_payload(FunctionError::ResponseTooLarge, format!("Response payload size exceeded maximum allowed payload size ({SYNC_RESPONSE_MAX_BYTES} bytes).")),
                    Some(FunctionError::ResponseTooLarge),
                    Some(started),
                ),
                Ok(RuntimeReply::Streamed { error: None }) => (Bytes::new(), None, Some(started)),
                Ok(RuntimeReply::Streamed { error: Some(body) }) => (body, Some(FunctionError::Unhandled), Some(started)),
                Ok(RuntimeReply::StreamTooLarge) => (
                    error_payload(FunctionError::ResponseTooLarge, format!("Response payload size exceeded maximum allowed payload size ({STREAMED_RESPONSE_MAX_BYTES} bytes).")),
                    Some(FunctionError::ResponseTooLarge),
                    Some(started),
                ),
                Err(_) => {
                    self.die();
                    (exit_error(self.exited().await), Some(FunctionError::RuntimeExit), Some(started))
                }
            },
            s = self.exited() => {
                self.die();
                (exit_error(s), Some(FunctionError::RuntimeExit), Some(started))
            }
            _ = tokio::time::sleep_until((started + timeout).into()) => {
                // The runtime is killed (and a fresh one started in the
                // same sandbox); everything it printed before comes first.
                self.restart_runtime().await;
                self.logs.drain().await;
                self.logs.line(format!("{} {} Task timed out after {:.2} seconds", time_stamp(), req.request_id, timeout.as_secs_f64())).await;
                (timed_out(), Some(FunctionError::Timedout), Some(started))
            }
        }
    }
}

fn time_stamp() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[async_trait]
impl WarmSandbox for ProcessSandbox {
    fn id(&self) -> &str {
        &self.id
    }

    fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst) && self.exit.borrow().is_none()
    }

    async fn ready(&self) -> Result<(), LambdaError> {
        let mut ready = self.api.ready.subscribe();
        let initialised = async {
            loop {
                if ready.borrow_and_update().is_some() {
                    return;
                }
                if ready.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        let failed = |error: FunctionError, detail: String| {
            self.die();
            LambdaError::service(format!("{}: {detail}", error.error_type()))
        };
        tokio::select! {
            () = initialised => {}
            doc = self.init_failed() => {
                return Err(failed(FunctionError::InitError, String::from_utf8_lossy(&doc).into_owned()));
            }
            s = self.exited() => {
                return Err(failed(FunctionError::RuntimeExit, format!("Runtime exited with error: {s}")));
            }
            _ = tokio::time::sleep(INIT_TIMEOUT) => {
                return Err(failed(FunctionError::Timedout, format!("init did not finish within {} seconds", INIT_TIMEOUT.as_secs())));
            }
        }
        // The init is done and was not part of any invoke: the first invoke
        // is warm and its REPORT has no Init Duration (as on Lambda).
        self.invoked.store(true, Ordering::SeqCst);
        if let Some(at) = *self.api.ready.borrow() {
            tracing::debug!(
                init_ms = millis(at.saturating_duration_since(self.created())),
                "sandbox initialised ahead of its first invoke (provisioned or pre-warmed)"
            );
        }
        Ok(())
    }

    async fn invoke(&self, req: InvokeRequest) -> Result<InvokeResponse, LambdaError> {
        self.invoke_with(req, None).await
    }

    async fn invoke_streaming(
        &self,
        req: InvokeRequest,
        sink: ResponseSink,
    ) -> Result<InvokeResponse, LambdaError> {
        self.invoke_with(req, Some(sink)).await
    }

    fn shutdown(&self) {
        self.die();
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl ProcessSandbox {
    /// One invocation, buffered (`sink: None`) or streamed to `sink`.
    async fn invoke_with(
        &self,
        req: InvokeRequest,
        sink: Option<ResponseSink>,
    ) -> Result<InvokeResponse, LambdaError> {
        let cold = !self.invoked.swap(true, Ordering::SeqCst);
        let version = self.spec.version.clone();
        self.sandbox.reset_peak();
        self.logs
            .begin(format!(
                "START RequestId: {} Version: {}",
                req.request_id, version
            ))
            .await;
        let timeout = Duration::from_secs(u64::from(self.spec.timeout_s));
        let (payload, error, started) = self.run(&req, timeout, sink).await;
        let failed = error.is_some();
        let ended = Instant::now();
        self.logs.drain().await;
        // A timed-out invoke lasted its timeout (not the moments spent
        // stopping the sandbox and reading its last output).
        let duration = started
            .map(|s| (ended - s).min(timeout))
            .unwrap_or_default();
        let billed = (millis(duration).ceil() as u64).max(1);
        let peak_mb = self.sandbox.usage().memory_peak_bytes.div_ceil(1024 * 1024);
        let max_used = if failed && !self.is_alive() && peak_mb == 0 {
            u64::from(self.spec.memory_mb)
        } else {
            peak_mb
        };
        let mut report = format!(
            "REPORT RequestId: {}\tDuration: {:.2} ms\tBilled Duration: {} ms\tMemory Size: {} MB\tMax Memory Used: {} MB\t",
            req.request_id,
            millis(duration),
            billed,
            self.spec.memory_mb,
            max_used
        );
        let init_took = self
            .init_took
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let init_duration = cold
            .then(|| init_took.unwrap_or_else(|| ended.saturating_duration_since(self.created())));
        if let Some(init) = init_duration {
            report.push_str(&format!("Init Duration: {:.2} ms\t", millis(init)));
        }
        let log = self
            .logs
            .finish(vec![format!("END RequestId: {}", req.request_id), report])
            .await;
        Ok(InvokeResponse {
            payload,
            function_error: error,
            executed_version: version,
            log,
            cold_start: cold,
            duration,
            init_duration,
            provisioned: false,
        })
    }
}

impl Drop for ProcessSandbox {
    fn drop(&mut self) {
        self.shutdown();
    }
}
