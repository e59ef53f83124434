//! Asynchronous invocation (`X-Amz-Invocation-Type: Event`): the durable
//! event queue, the dispatcher that runs queued events with retries, and
//! the destinations and dead-letter targets of events that finish.
//!
//! What it owns: queued events (on one machine in the `MetaStore`, keys
//! under `async/queue/`), each function's event invoke configuration (keys
//! under `async/config/`), the retry and event-age policy, and the
//! destination record. What it must not touch: functions, counting or
//! sandboxes. It runs an event through an [`EventTarget`], which the front
//! end implements with its own invoke path (resolve, counting, assignment),
//! so an asynchronous invoke obeys exactly the rules of a synchronous one.
//!
//! The queue is a trait ([`EventQueue`]); [`StoreQueue`] keeps it in any
//! [`stratus_store::MetaStore`] (the embedded redb store on one machine). An
//! event is written durably before the front end answers 202, and removed
//! only after its outcome (success, destination, dead letter) is itself
//! durable, so delivery is at least once: a crash re-runs what was running.
//!
//! ```text
//! Invoke(Event) ─▶ EventQueue::enqueue ─▶ 202
//!                        │
//!                 Dispatcher (due events, at most N at once)
//!                        │ EventTarget::invoke (counting + assignment)
//!        success ────────┼──── function error ─── throttle / system error
//!   OnSuccess dest.      │  retry after d, 2d       backoff 1 s .. 5 min
//!                        ▼  (MaximumRetryAttempts)  (until MaximumEventAge)
//!               OnFailure destination / DeadLetterConfig
//! ```

pub mod config;
pub mod dispatch;
pub mod queue;
pub mod record;

pub use config::{
    AsyncSettings, ConfigError, DestinationConfig, EventInvokeConfig, OnTarget, Target,
    check_target_arn,
};
pub use dispatch::{Attempt, Clock, Dispatcher, DispatcherConfig, EventTarget};
pub use queue::{Entry, EventQueue, QueueError, QueuedEvent, StoreQueue};
pub use record::Condition;

/// The largest asynchronous invoke payload (Lambda's limit since late 2025:
/// 1 MB; it was 256 KB before).
pub const EVENT_PAYLOAD_MAX_BYTES: usize = 1_048_576;
