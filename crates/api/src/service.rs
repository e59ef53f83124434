//! The interfaces between components, as in Lambda's own architecture:
//! front end → counting ([`Counting`]) → assignment ([`Invoker`]) →
//! worker ([`Worker`], [`WarmSandbox`]).
//!
//! On one machine every trait is implemented in-process and the invoke path
//! is plain function calls and channels. In a cluster each gets a network
//! implementation behind the same signature.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use stratus_types::{AccountId, LogStreamName, Runtime};

use crate::LambdaError;

/// Everything needed to run one function version: the immutable snapshot a
/// sandbox is created from. A sandbox serves exactly one spec for its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionVersionSpec {
    pub account: AccountId,
    pub region: String,
    pub name: String,
    /// `$LATEST` or a published version number.
    pub version: String,
    /// Changes on every code or configuration change; sandboxes of an older
    /// revision are never reused.
    pub revision_id: String,
    pub runtime: Runtime,
    pub handler: String,
    pub memory_mb: u32,
    pub timeout_s: u32,
    pub ephemeral_mb: u32,
    pub env: BTreeMap<String, String>,
    /// Hex SHA-256 of the code zip (the blob key).
    pub code_digest: String,
    /// Hex SHA-256 of each layer's zip, in order: extracted into one
    /// read-only `/opt`, a later layer's files over an earlier one's.
    pub layers: Vec<String>,
}

impl FunctionVersionSpec {
    /// The key sandboxes are pooled under.
    pub fn key(&self) -> VersionKey {
        VersionKey {
            account: self.account.clone(),
            name: self.name.clone(),
            version: self.version.clone(),
            revision_id: self.revision_id.clone(),
        }
    }

    /// The unqualified function ARN.
    pub fn arn(&self) -> String {
        stratus_types::function_arn(&self.region, &self.account, &self.name, None)
    }
}

/// Identifies the pool of interchangeable sandboxes of one function revision.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VersionKey {
    pub account: AccountId,
    pub name: String,
    pub version: String,
    pub revision_id: String,
}

/// One invocation as the front end hands it on.
#[derive(Debug, Clone)]
pub struct InvokeRequest {
    /// The request id (also the handler's `aws_request_id`).
    pub request_id: String,
    pub payload: Bytes,
    /// The ARN the caller used (qualified or not), for `invoked_function_arn`.
    pub invoked_arn: String,
    /// Decoded `X-Amz-Client-Context`, passed to the runtime.
    pub client_context: Option<String>,
    pub trace_id: String,
}

/// One piece of a streamed response, on its way from the runtime's
/// `POST .../response` (streaming mode) to the caller, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamPart {
    /// The runtime began a streamed response, with this `Content-Type`
    /// (`application/vnd.awslambda.http-integration-response` when the body
    /// starts with a JSON prelude and eight NUL bytes).
    Begin { content_type: Option<String> },
    /// The next bytes of the body.
    Chunk(Bytes),
}

/// Where a streamed response goes: a bounded channel, so a slow reader
/// slows the runtime down (back-pressure) instead of filling memory. When
/// the receiver is gone (the client disconnected) the rest of the response
/// is read and dropped.
pub type ResponseSink = tokio::sync::mpsc::Sender<StreamPart>;

/// How many parts a [`ResponseSink`] holds before the runtime waits.
pub const RESPONSE_SINK_CAPACITY: usize = 16;

/// What came back from a sandbox.
#[derive(Debug, Clone)]
pub struct InvokeResponse {
    pub payload: Bytes,
    /// Set when the function failed (the payload is then the error document).
    pub function_error: Option<FunctionError>,
    pub executed_version: String,
    /// The invocation's log (START..REPORT), for `X-Amz-Log-Type: Tail`.
    pub log: String,
    /// Whether this invoke started a new sandbox.
    pub cold_start: bool,
    /// The REPORT line's `Duration`: from the runtime taking the event to
    /// its answer (zero when the runtime never took it).
    pub duration: Duration,
    /// The REPORT line's `Init Duration`: set on the invoke that initialised
    /// the sandbox's runtime (never on a provisioned sandbox, initialised
    /// before any invoke).
    pub init_duration: Option<Duration>,
    /// Whether a provisioned-concurrency sandbox served it (set by the
    /// assignment service; sandboxes leave it false).
    pub provisioned: bool,
}

/// How an invocation failed in its sandbox. A closed set, decided by the
/// platform (never read from what the function posted), so it can label
/// metrics; the tenant's own `errorType` stays in the error document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FunctionError {
    /// The handler failed and the runtime reported it (`/invocation/{id}/error`).
    Unhandled,
    /// The runtime failed to initialise (`/runtime/init/error`).
    InitError,
    /// The invocation ran past the function's timeout; the sandbox was killed.
    Timedout,
    /// The runtime process exited (crash, `exit`, out-of-memory kill).
    RuntimeExit,
    /// The response was larger than Lambda's synchronous limit.
    ResponseTooLarge,
    /// The package has no runnable entry point (a `provided` zip without `bootstrap`).
    InvalidEntrypoint,
}

impl FunctionError {
    /// `X-Amz-Function-Error`: Lambda sends `Unhandled` for every kind.
    pub fn header(self) -> &'static str {
        "Unhandled"
    }

    /// The Lambda error type: the `errorType` of the documents the platform
    /// writes itself, `Unhandled` for errors the handler reported, and
    /// `Runtime.InitError` for a failed init (whose document is the runtime's).
    pub fn error_type(self) -> &'static str {
        match self {
            FunctionError::Unhandled => "Unhandled",
            FunctionError::InitError => "Runtime.InitError",
            FunctionError::Timedout => "Sandbox.Timedout",
            FunctionError::RuntimeExit => "Runtime.ExitError",
            FunctionError::ResponseTooLarge => "Function.ResponseSizeTooLarge",
            FunctionError::InvalidEntrypoint => "Runtime.InvalidEntrypoint",
        }
    }
}

/// Releases one unit of concurrency when dropped.
pub struct ConcurrencyPermit {
    _release: Box<dyn Send + Sync>,
}

impl ConcurrencyPermit {
    pub fn new(release: impl Send + Sync + 'static) -> Self {
        ConcurrencyPermit {
            _release: Box::new(release),
        }
    }
}

impl std::fmt::Debug for ConcurrencyPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConcurrencyPermit")
    }
}

/// An account's concurrency as GetAccountSettings reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountConcurrency {
    /// ConcurrentExecutions: the account limit.
    pub limit: u32,
    /// UnreservedConcurrentExecutions: the limit minus every reservation.
    pub unreserved: u32,
}

/// The counting service: admits or throttles each invoke. Async because in
/// a cluster it is a network call to the counting shard owning the account.
#[async_trait]
pub trait Counting: Send + Sync + std::fmt::Debug {
    /// Takes one unit of the account's (and function's) concurrency, or
    /// returns a TooManyRequestsException.
    async fn acquire(
        &self,
        account: &AccountId,
        function: &str,
    ) -> Result<ConcurrencyPermit, LambdaError>;

    /// Asks for one new execution environment (a cold start) of `function`:
    /// the per-function scaling rate (burst token bucket). Warm invokes never
    /// call this. Returns a TooManyRequestsException when the function scales
    /// faster than allowed.
    async fn try_scale_up(&self, account: &AccountId, function: &str) -> Result<(), LambdaError>;

    /// Sets (`Some`) or clears (`None`) the reserved concurrency of
    /// `function`, atomically checking that the account keeps its minimum
    /// unreserved concurrency (InvalidParameterValueException otherwise).
    async fn set_reserved(
        &self,
        account: &AccountId,
        function: &str,
        reserved: Option<u32>,
    ) -> Result<(), LambdaError>;

    /// The account's limit and what is left unreserved.
    async fn account_concurrency(&self, account: &AccountId) -> AccountConcurrency;

    /// Invokes running now, per function that has any (for metrics).
    async fn in_flight_snapshot(&self) -> Vec<FunctionInFlight>;
}

/// One function's invokes running now, as the counting service counts them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionInFlight {
    pub account: AccountId,
    pub function: String,
    pub in_flight: u32,
}

/// Sandboxes by state, as the assignment service sees them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SandboxCounts {
    /// Being created (a cold start in progress).
    pub starting: usize,
    /// Warm, waiting for an invoke.
    pub idle: usize,
    /// Running an invoke.
    pub busy: usize,
    /// The adaptive keep-alive's pre-warms since the service started.
    pub prewarms: PrewarmCounts,
    /// Live sandboxes shut down because their lease was over (recycled
    /// however warm they were), since the service started.
    pub lease_expiries: u64,
}

/// What the adaptive keep-alive's pre-warms came to (counters since start).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrewarmCounts {
    /// Pre-warms placed and started (creation and init).
    pub started: u64,
    /// Of those, failed to create or initialise (not retried: the next
    /// invoke is a cold start and schedules the next pre-warm).
    pub failed: u64,
    /// Pre-warmed sandboxes that served an invoke (warm).
    pub used: u64,
    /// Pre-warms due when placement had no room (skipped, nothing evicted
    /// but idle on-demand sandboxes).
    pub no_room: u64,
}

/// The assignment service (worker manager): runs an invocation in a warm
/// sandbox of the right function version, or a new one.
#[async_trait]
pub trait Invoker: Send + Sync + std::fmt::Debug {
    async fn invoke(
        &self,
        spec: Arc<FunctionVersionSpec>,
        req: InvokeRequest,
    ) -> Result<InvokeResponse, LambdaError>;

    /// Like [`Invoker::invoke`], for a caller that takes a streamed answer:
    /// if the runtime streams, its parts go to `sink` as they come and the
    /// returned payload is empty (an error document if the stream failed);
    /// a buffered answer comes back in the payload as from `invoke`. The
    /// future ends when the invocation does (REPORT written, sandbox
    /// released). Implementations that cannot stream answer buffered.
    async fn invoke_streaming(
        &self,
        spec: Arc<FunctionVersionSpec>,
        req: InvokeRequest,
        sink: ResponseSink,
    ) -> Result<InvokeResponse, LambdaError> {
        let _ = sink;
        self.invoke(spec, req).await
    }

    /// Retires sandboxes of `account`/`name`: with `version`, those of that
    /// version (`$LATEST` or a number) whose revision is not `keep_revision`
    /// (all of them when `None`); without, every sandbox of every version
    /// (the function was deleted). Idle ones stop now, busy ones after their
    /// invoke. Other versions' sandboxes are untouched.
    fn retire(
        &self,
        account: &AccountId,
        name: &str,
        version: Option<&str>,
        keep_revision: Option<&str>,
    );

    /// How many sandboxes are starting, idle and busy now (for metrics).
    async fn sandbox_counts(&self) -> SandboxCounts;

    /// The live sandboxes of `account`/`name` (for `stratus function
    /// sandboxes`), busy ones first, then by id.
    fn sandboxes_of(&self, account: &AccountId, name: &str) -> Vec<SandboxInfo>;

    /// Keeps `count` sandboxes of `spec` (a published version) created and
    /// initialised ahead of invokes for the provisioned concurrency config
    /// `id`, replacing any earlier goal of `id` (its sandboxes of another
    /// version stop being provisioned). Returns at once; progress is read
    /// with [`Invoker::provisioned_status`].
    fn set_provisioned(&self, id: ProvisionId, spec: Arc<FunctionVersionSpec>, count: u32);

    /// Drops the provisioned concurrency config `id`, or with no qualifier
    /// every config of the function: idle provisioned sandboxes stop now,
    /// busy ones after their invoke.
    fn remove_provisioned(&self, account: &AccountId, name: &str, qualifier: Option<&str>);

    /// How far config `id` got (`None`: no such goal).
    fn provisioned_status(&self, id: &ProvisionId) -> Option<ProvisionedStatus>;

    /// Provisioned sandboxes per function and state (for metrics).
    fn provisioned_counts(&self) -> Vec<FunctionProvisioned>;
}

/// Names one provisioned concurrency config: a function's published version
/// or alias.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProvisionId {
    pub account: AccountId,
    pub name: String,
    /// A version number or an alias name (never `$LATEST`).
    pub qualifier: String,
}

/// Lambda's `Status` of a provisioned concurrency config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProvisionState {
    /// Sandboxes are still being created or initialised.
    InProgress,
    /// Every requested sandbox was initialised (it stays so while dead or
    /// expired ones are being replaced).
    Ready,
    /// A sandbox failed to initialise, or there was no room for it.
    Failed,
}

impl ProvisionState {
    pub fn as_str(self) -> &'static str {
        match self {
            ProvisionState::InProgress => "IN_PROGRESS",
            ProvisionState::Ready => "READY",
            ProvisionState::Failed => "FAILED",
        }
    }
}

/// Progress of one provisioned concurrency config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionedStatus {
    pub requested: u32,
    /// Sandboxes created or being created for it (at most `requested`).
    pub allocated: u32,
    /// Sandboxes initialised and ready for invokes (at most `requested`).
    pub available: u32,
    pub state: ProvisionState,
    /// Why it failed (`Failed` only).
    pub reason: Option<String>,
}

/// One function's provisioned sandboxes by state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionProvisioned {
    pub account: AccountId,
    pub function: String,
    /// Created, runtime still initialising.
    pub initializing: usize,
    pub idle: usize,
    pub busy: usize,
}

/// `AWS_LAMBDA_INITIALIZATION_TYPE` of a sandbox: how it came to exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitializationType {
    /// Created for an invoke that found no idle sandbox (a cold start).
    OnDemand,
    /// Created and initialised ahead of invokes for provisioned concurrency.
    ProvisionedConcurrency,
}

impl InitializationType {
    /// The value of `AWS_LAMBDA_INITIALIZATION_TYPE`.
    pub fn as_str(self) -> &'static str {
        match self {
            InitializationType::OnDemand => "on-demand",
            InitializationType::ProvisionedConcurrency => "provisioned-concurrency",
        }
    }
}

/// One live sandbox of a function, as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SandboxInfo {
    pub id: String,
    /// The function version it runs (`$LATEST`).
    pub version: String,
    /// The function revision it runs (a new one replaces its sandboxes).
    pub revision_id: String,
    /// `busy` (running an invoke) or `idle`.
    pub state: &'static str,
    pub memory_mb: u64,
    /// Milliseconds since its last invoke ended (idle sandboxes).
    pub idle_ms: Option<u64>,
    /// Milliseconds until its lease runs out (`None`: no expiry).
    pub lease_left_ms: Option<u64>,
    /// Whether it is kept for provisioned concurrency.
    pub provisioned: bool,
}

/// A sandbox ready to take invocations, one at a time.
#[async_trait]
pub trait WarmSandbox: Send + Sync + std::fmt::Debug {
    fn id(&self) -> &str;
    /// False once the runtime has exited or the sandbox was shut down.
    fn is_alive(&self) -> bool;
    /// Waits until the runtime has initialised (run its init and asked the
    /// Runtime API for an event) without invoking it; an error says why it
    /// never will (init error, exit, init timeout) and leaves it dead. The
    /// first invoke after this reports no `Init Duration`.
    async fn ready(&self) -> Result<(), LambdaError>;
    /// Runs one invocation. Callers never run two at once on one sandbox.
    async fn invoke(&self, req: InvokeRequest) -> Result<InvokeResponse, LambdaError>;
    /// Runs one invocation whose caller takes a streamed answer (see
    /// [`Invoker::invoke_streaming`]). By default, answers buffered.
    async fn invoke_streaming(
        &self,
        req: InvokeRequest,
        sink: ResponseSink,
    ) -> Result<InvokeResponse, LambdaError> {
        let _ = sink;
        self.invoke(req).await
    }
    /// Stops the sandbox and releases everything it holds.
    fn shutdown(&self);
}

/// A worker host: creates sandboxes and prepares code.
#[async_trait]
pub trait Worker: Send + Sync + std::fmt::Debug {
    fn id(&self) -> &str;
    /// Memory (MB) this worker offers to sandboxes.
    fn capacity_mb(&self) -> u64;
    /// Makes the code available (fetched and unpacked) so sandboxes start fast.
    async fn prepare_code(&self, digest: &str) -> Result<(), LambdaError>;
    /// Forgets code no function uses any more (its blob is gone): its
    /// unpacked copy is removed once no sandbox runs it.
    fn remove_code(&self, digest: &str);
    /// Creates a sandbox for `spec` and starts its runtime, telling it how
    /// it was created (`AWS_LAMBDA_INITIALIZATION_TYPE`).
    async fn create_sandbox(
        &self,
        spec: Arc<FunctionVersionSpec>,
        init: InitializationType,
    ) -> Result<Arc<dyn WarmSandbox>, LambdaError>;
}

/// One line of a function's log, as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LogEvent {
    /// Position in the function's log; strictly increasing, also across
    /// streams and server restarts (not dense: numbers may be skipped).
    pub seq: u64,
    /// Milliseconds since the epoch when the worker read the line.
    pub timestamp: u64,
    /// The log stream (one per sandbox, named as Lambda names them).
    pub log_stream_name: String,
    pub message: String,
}

/// One line a sandbox printed, before the log store numbers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Milliseconds since the epoch when the worker read the line.
    pub timestamp: u64,
    /// The line without its newline. A store splits a message that contains
    /// `\n` and cuts lines longer than its line limit.
    pub message: String,
}

/// The stream a sandbox writes to: Lambda's log group `/aws/lambda/<function>`
/// of one account, and the sandbox's log stream in it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LogStreamKey {
    pub account: AccountId,
    pub function: String,
    pub stream: LogStreamName,
}

/// Per-function logs (Lambda's log groups `/aws/lambda/<name>`, one stream
/// per sandbox): workers append what sandboxes print; readers page through a
/// function's log across its streams, in `seq` order, or wait for more.
///
/// Stores are bounded: they drop a function's oldest lines first, and may
/// drop whole functions' logs (least recently written first) to stay within
/// a total. Appending never fails the invocation: a store that cannot write
/// drops lines and says so in the server's own log.
#[async_trait]
pub trait Logs: Send + Sync + std::fmt::Debug {
    /// Appends lines to a stream, in order. Waits while the store is behind
    /// (so a sandbox printing faster than the store writes is slowed down,
    /// never buffered without bound). Once this returns, the lines are
    /// visible to every later [`Logs::read`].
    async fn append(&self, stream: &LogStreamKey, lines: Vec<LogLine>);

    /// The sandbox of this stream is gone: no more lines will come.
    async fn close_stream(&self, stream: &LogStreamKey);

    /// Returns once everything appended before is written.
    async fn flush(&self);

    /// Events with `seq > after` (from the oldest kept when `None`), in `seq`
    /// order, at most `limit` and about one MiB of messages; when there are
    /// none yet, waits up to `wait` for some.
    async fn read(
        &self,
        account: &AccountId,
        function: &str,
        after: Option<u64>,
        limit: usize,
        wait: std::time::Duration,
    ) -> Result<Vec<LogEvent>, LambdaError>;

    /// Deletes a function's log (the function was deleted). Lines its
    /// still-running sandboxes print afterwards are dropped.
    async fn remove(&self, account: &AccountId, function: &str);
}
