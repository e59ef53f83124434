//! The host's log store: every function's log, on disk, bounded.
//!
//! Lambda ships what a function prints to CloudWatch Logs: one log group per
//! function (`/aws/lambda/<name>`) and one log stream per execution
//! environment (`YYYY/MM/DD/[$LATEST]<32 hex>`). [`DiskLogStore`] keeps the
//! same shape in files under the server's data dir, one directory per stream
//! named exactly as the stream is:
//!
//! ```text
//! <root>/<account>/<function>/<YYYY>/<MM>/<DD>/[<version>]<sandbox id>/<first seq>.log
//! ```
//!
//! A stream is a series of append-only *segments*, each named by the
//! sequence number of its first line (20 digits) and holding one line per
//! event: `<seq> <timestamp ms> <message>\n` (a message never contains a
//! newline). Sequence numbers are global to the store and strictly
//! increasing, also across restarts, so a function's streams merge into one
//! order by `seq`.
//!
//! # Bounds
//! - Each function's bytes on disk (segments rounded up to whole 4 KiB
//!   blocks, plus its directories) are capped: its oldest segments are
//!   deleted first. A segment is closed once it reaches
//!   [`LogStoreConfig::segment_bytes`], so a stream that never stops printing
//!   still loses its oldest lines first.
//! - The whole store is capped: when over, the function written least
//!   recently loses its oldest segments first.
//! - Lines longer than [`LogStoreConfig::max_line_bytes`] are cut.
//! - Memory does not grow with log volume: what stays in memory is an index
//!   of segments (a few numbers each) and at most
//!   [`LogStoreConfig::max_pending_bytes`] of lines on their way to disk.
//!
//! # Writing
//! One writer thread owns every file. [`Logs::append`] takes a share of the
//! pending-bytes budget, then queues the lines for that thread; while the
//! budget is spent, appenders wait (so a sandbox printing faster than the
//! disk takes it is slowed down, through its full output pipe). The budget
//! is handed out first come, first served, so a flooding function delays
//! others' lines by at most about one budget's worth of writing.
//! Nothing is `fsync`ed: after a crash the last lines may be missing, and a
//! torn last line is cut off when the store is opened again.
//!
//! # Reading
//! Readers take a snapshot of the function's segments from the index (under
//! a short-held lock), then read files outside it, on the blocking pool,
//! merging the streams by `seq`. A segment deleted meanwhile simply
//! contributes nothing. [`Logs::read`] first waits for the writer to write
//! what was queued before it, so a read after an invoke sees that invoke.

mod read;
mod recover;
mod segment;
mod writer;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use stratus_api::LambdaError;
use stratus_api::service::{LogEvent, LogLine, LogStreamKey, Logs};
use stratus_types::{AccountId, LogStreamName};
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};

/// Longest line kept (CloudWatch's limit for one event); longer lines are cut.
pub const MAX_LINE_BYTES: usize = 256 * 1024;

/// Disk space is counted in blocks of this size.
const BLOCK: u64 = 4096;
/// Counted for a stream's directory.
const STREAM_DIR_BYTES: u64 = BLOCK;
/// Counted for a date's directories (`YYYY/MM/DD`) under a function.
const DATE_DIRS_BYTES: u64 = 3 * BLOCK;
/// Counted for a function's own directory.
const FUNCTION_DIR_BYTES: u64 = BLOCK;
/// The most a read returns in messages (at least one event).
const READ_MAX_BYTES: usize = 1024 * 1024;

/// Limits of the log store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogStoreConfig {
    /// Bytes on disk per function (oldest segments deleted first).
    pub max_bytes_per_function: u64,
    /// Bytes on disk for all functions (the least recently written
    /// function's oldest segments deleted first).
    pub max_bytes_total: u64,
    /// Longest line kept; longer lines are cut.
    pub max_line_bytes: usize,
    /// A segment is closed and a new one started once it is this large.
    pub segment_bytes: u64,
    /// Lines accepted but not yet written, at most (the backpressure budget).
    pub max_pending_bytes: usize,
    /// Segments last written longer ago than this are deleted, oldest first
    /// (checked every [`LogStoreConfig::expiry_interval`]). `None` keeps
    /// lines until the size caps take them.
    pub max_age: Option<std::time::Duration>,
}

impl LogStoreConfig {
    /// The limits for the given caps; segments are an eighth of the
    /// per-function cap (between 64 KiB and 8 MiB), so trimming a function
    /// keeps most of its newest lines.
    pub fn with_caps(max_bytes_per_function: u64, max_bytes_total: u64) -> Self {
        LogStoreConfig {
            max_bytes_per_function,
            max_bytes_total,
            max_line_bytes: MAX_LINE_BYTES,
            segment_bytes: (max_bytes_per_function / 8).clamp(64 * 1024, 8 * 1024 * 1024),
            max_pending_bytes: 2 * 1024 * 1024,
            max_age: None,
        }
    }

    /// These limits, keeping lines at most `max_age`.
    pub fn with_max_age(self, max_age: Option<std::time::Duration>) -> Self {
        LogStoreConfig { max_age, ..self }
    }

    /// How often expired segments are looked for: a quarter of the age,
    /// between one second and one minute.
    pub fn expiry_interval(&self) -> Option<std::time::Duration> {
        self.max_age.map(|a| {
            (a / 4).clamp(
                std::time::Duration::from_secs(1),
                std::time::Duration::from_secs(60),
            )
        })
    }
}

impl Default for LogStoreConfig {
    fn default() -> Self {
        Self::with_caps(16 * 1024 * 1024, 1024 * 1024 * 1024)
    }
}

/// Errors opening the log store.
#[derive(Debug, thiserror::Error)]
pub enum LogStoreError {
    #[error("creating the log directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the log directory {path}")]
    ReadDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting the log writer thread")]
    Thread(#[source] std::io::Error),
}

/// A function's log group: (account, function name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct FnKey {
    account: AccountId,
    function: String,
}

impl FnKey {
    fn of(k: &LogStreamKey) -> Self {
        FnKey {
            account: k.account.clone(),
            function: k.function.clone(),
        }
    }
}

/// What is on disk, as the writer last left it. Readers take snapshots.
#[derive(Debug, Default)]
struct Index {
    functions: HashMap<FnKey, FunctionLog>,
    /// Sum of every function's `bytes`.
    total: u64,
}

#[derive(Debug, Default)]
struct FunctionLog {
    /// By first sequence number: oldest first.
    segments: BTreeMap<u64, Segment>,
    streams: HashMap<LogStreamName, StreamState>,
    /// Streams with segments, per date (`YYYY/MM/DD`).
    dates: HashMap<String, usize>,
    /// Bytes counted against the caps.
    bytes: u64,
    last_write_ms: u64,
    last_seq: u64,
}

impl FunctionLog {
    /// A stream got its first segment: the bytes its directories add.
    fn stream_filled(&mut self, stream: &LogStreamName) -> u64 {
        let n = self.dates.entry(stream.date().to_owned()).or_insert(0);
        *n += 1;
        STREAM_DIR_BYTES + if *n == 1 { DATE_DIRS_BYTES } else { 0 }
    }

    /// A stream lost its last segment: the bytes its directories free.
    fn stream_emptied(&mut self, stream: &LogStreamName) -> u64 {
        let Some(n) = self.dates.get_mut(stream.date()) else {
            return STREAM_DIR_BYTES;
        };
        *n = n.saturating_sub(1);
        if *n > 0 {
            return STREAM_DIR_BYTES;
        }
        self.dates.remove(stream.date());
        STREAM_DIR_BYTES + DATE_DIRS_BYTES
    }
}

#[derive(Debug)]
struct Segment {
    stream: Arc<LogStreamName>,
    last_seq: u64,
    /// Bytes written (readers read no further).
    len: u64,
    /// (seq, offset) of a record every so often, for readers to seek to.
    checkpoints: Vec<(u64, u64)>,
}

#[derive(Debug)]
struct StreamState {
    name: Arc<LogStreamName>,
    segments: usize,
    /// First seq of the segment being appended to.
    active: Option<u64>,
    /// Its sandbox may still append.
    open: bool,
}

/// Disk space counted for a segment of `len` bytes.
fn segment_disk_bytes(len: u64) -> u64 {
    len.div_ceil(BLOCK).max(1) * BLOCK
}

fn function_dir(root: &Path, f: &FnKey) -> PathBuf {
    root.join(f.account.as_str()).join(&f.function)
}

fn stream_dir(root: &Path, f: &FnKey, stream: &LogStreamName) -> PathBuf {
    function_dir(root, f)
        .join(stream.date())
        .join(stream.leaf())
}

fn segment_path(root: &Path, f: &FnKey, stream: &LogStreamName, first: u64) -> PathBuf {
    stream_dir(root, f, stream).join(segment::file_name(first))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Debug)]
struct Shared {
    root: PathBuf,
    cfg: LogStoreConfig,
    index: Mutex<Index>,
    /// Woken after every write.
    appended: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A command to the writer thread.
#[derive(Debug)]
enum Cmd {
    Append {
        key: LogStreamKey,
        lines: Vec<LogLine>,
        /// Returned to the budget once written.
        _permit: tokio::sync::OwnedSemaphorePermit,
    },
    Close(LogStreamKey),
    Remove {
        function: FnKey,
        done: oneshot::Sender<()>,
    },
    Flush(oneshot::Sender<()>),
    /// Delete segments older than the configured age.
    Expire,
}

/// Commands queued for the writer, at most (the byte budget binds first).
const QUEUE: usize = 1024;

/// [`Logs`] on disk under one directory (see the module docs).
#[derive(Debug)]
pub struct DiskLogStore {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Cmd>,
    budget: Arc<Semaphore>,
}

impl DiskLogStore {
    /// Opens (creating it if needed) the store under `root`: recovers the
    /// index from the files there, cuts torn last lines, applies the caps,
    /// and starts the writer thread.
    pub fn open(root: impl Into<PathBuf>, cfg: LogStoreConfig) -> Result<Self, LogStoreError> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|source| LogStoreError::CreateDir {
            path: root.clone(),
            source,
        })?;
        let recovered = recover::recover(&root, &cfg)?;
        let shared = Arc::new(Shared {
            root,
            cfg,
            index: Mutex::new(recovered.index),
            appended: Notify::new(),
        });
        // Time-seeded, so numbers keep increasing even if every file is gone.
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let next_seq = recovered.max_seq.saturating_add(1).max(now_us).max(1);
        let mut writer = writer::Writer::new(Arc::clone(&shared), next_seq);
        writer.enforce_all();
        let (tx, rx) = mpsc::channel(QUEUE);
        if let Some(max_age) = cfg.max_age {
            writer.expire(max_age);
        }
        std::thread::Builder::new()
            .name("stratus-logs".into())
            .spawn(move || writer.run(rx))
            .map_err(LogStoreError::Thread)?;
        if let Some(every) = cfg.expiry_interval() {
            // Holds only a weak sender: the ticker ends with the store.
            let weak = tx.downgrade();
            std::thread::Builder::new()
                .name("stratus-logs-expiry".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(every);
                        let Some(tx) = weak.upgrade() else { break };
                        if tx.blocking_send(Cmd::Expire).is_err() {
                            break;
                        }
                    }
                })
                .map_err(LogStoreError::Thread)?;
        }
        Ok(DiskLogStore {
            budget: Arc::new(Semaphore::new(cfg.max_pending_bytes.max(1))),
            shared,
            tx,
        })
    }

    /// The directory the store lives in.
    pub fn root(&self) -> &Path {
        &self.shared.root
    }

    /// Bytes counted against the caps for one function (0 when it has none).
    pub fn function_bytes(&self, account: &AccountId, function: &str) -> u64 {
        let key = FnKey {
            account: account.clone(),
            function: function.to_owned(),
        };
        self.shared
            .lock()
            .functions
            .get(&key)
            .map_or(0, |f| f.bytes)
    }

    /// Bytes counted against the total cap.
    pub fn total_bytes(&self) -> u64 {
        self.shared.lock().total
    }
}

#[async_trait]
impl Logs for DiskLogStore {
    async fn append(&self, stream: &LogStreamKey, lines: Vec<LogLine>) {
        if lines.is_empty() {
            return;
        }
        let cap = self.shared.cfg.max_pending_bytes.max(1);
        let bytes: usize = lines
            .iter()
            .map(|l| l.message.len().saturating_add(segment::RECORD_OVERHEAD))
            .fold(0usize, usize::saturating_add);
        let want = u32::try_from(bytes.clamp(1, cap)).unwrap_or(u32::MAX);
        let Ok(permit) = Arc::clone(&self.budget).acquire_many_owned(want).await else {
            return;
        };
        let _ = self
            .tx
            .send(Cmd::Append {
                key: stream.clone(),
                lines,
                _permit: permit,
            })
            .await;
    }

    async fn close_stream(&self, stream: &LogStreamKey) {
        let _ = self.tx.send(Cmd::Close(stream.clone())).await;
    }

    async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Cmd::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    async fn read(
        &self,
        account: &AccountId,
        function: &str,
        after: Option<u64>,
        limit: usize,
        wait: Duration,
    ) -> Result<Vec<LogEvent>, LambdaError> {
        if stratus_types::validate_function_name(function).is_err() || limit == 0 {
            return Ok(Vec::new());
        }
        let key = FnKey {
            account: account.clone(),
            function: function.to_owned(),
        };
        self.flush().await;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Register interest before looking, so a write in between wakes us.
            let notified = self.shared.appended.notified();
            let events = read::collect(&self.shared, &key, after, limit).await?;
            if !events.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(events);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return read::collect(&self.shared, &key, after, limit).await;
            }
        }
    }

    async fn remove(&self, account: &AccountId, function: &str) {
        let (done, rx) = oneshot::channel();
        let cmd = Cmd::Remove {
            function: FnKey {
                account: account.clone(),
                function: function.to_owned(),
            },
            done,
        };
        if self.tx.send(cmd).await.is_ok() {
            let _ = rx.await;
        }
    }
}
