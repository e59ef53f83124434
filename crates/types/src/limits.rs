//! Lambda's documented limits, as constants.

/// MemorySize bounds in MB.
pub const MEMORY_MIN_MB: u32 = 128;
pub const MEMORY_MAX_MB: u32 = 10_240;
pub const MEMORY_DEFAULT_MB: u32 = 128;

/// Timeout bounds in seconds.
pub const TIMEOUT_MIN_S: u32 = 1;
pub const TIMEOUT_MAX_S: u32 = 900;
pub const TIMEOUT_DEFAULT_S: u32 = 3;

/// EphemeralStorage (/tmp) bounds in MB.
pub const EPHEMERAL_MIN_MB: u32 = 512;
pub const EPHEMERAL_MAX_MB: u32 = 10_240;
pub const EPHEMERAL_DEFAULT_MB: u32 = 512;

/// Largest synchronous invoke request body.
pub const SYNC_REQUEST_MAX_BYTES: usize = 6_291_456;
/// Largest function response (6 MiB + 100 bytes).
pub const SYNC_RESPONSE_MAX_BYTES: usize = 6_291_556;
/// Largest streamed function response (20 MiB; AWS's soft limit is 20 MB).
pub const STREAMED_RESPONSE_MAX_BYTES: usize = 20 * 1024 * 1024;
/// Largest zip uploaded directly.
pub const ZIP_MAX_BYTES: usize = 52_428_800;
/// Largest unzipped code size.
pub const UNZIPPED_MAX_BYTES: u64 = 262_144_000;
/// Largest total size of environment variables (keys + values).
pub const ENV_MAX_BYTES: usize = 4_096;
/// Largest Description.
pub const DESCRIPTION_MAX_CHARS: usize = 256;
/// Largest Handler.
pub const HANDLER_MAX_CHARS: usize = 128;

/// File descriptors and processes per sandbox.
pub const SANDBOX_MAX_FDS: u64 = 1_024;
pub const SANDBOX_MAX_PIDS: u64 = 1_024;

/// Default account concurrency limit.
pub const ACCOUNT_CONCURRENCY_DEFAULT: u32 = 1_000;

/// Port of the Runtime API inside a sandbox (what AWS environments use).
pub const RUNTIME_API_PORT: u16 = 9001;
