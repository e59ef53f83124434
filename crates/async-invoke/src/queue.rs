//! The durable event queue: [`EventQueue`], and [`StoreQueue`], which keeps
//! it in a [`MetaStore`].
//!
//! Layout: one key per queued event, `async/queue/<due ms, 20 digits>/<id>`,
//! the value a JSON [`QueuedEvent`]. Keys sort by due time, so the events
//! due first are the first of a scan. Moving an event to a later time
//! writes the new key before deleting the old one: a crash in between
//! leaves it twice (it runs twice, at least once), never zero times.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use stratus_store::{MetaStore, Precondition, StoreError};
use stratus_types::AccountId;
use tokio::sync::Notify;

/// The key prefix of queued events.
pub const QUEUE_PREFIX: &str = "async/queue/";

/// One asynchronous invocation waiting to run (or to be retried).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedEvent {
    /// The invocation's request id (answered with the 202; the handler's
    /// `aws_request_id` on every attempt).
    pub id: String,
    pub account: AccountId,
    pub function: String,
    /// The qualifier invoked (`None`: unqualified).
    pub qualifier: Option<String>,
    /// The payload, JSON text.
    pub payload: String,
    /// Decoded `X-Amz-Client-Context`.
    #[serde(default)]
    pub client_context: Option<String>,
    /// Wall-clock milliseconds since the epoch when it was accepted.
    pub enqueued_ms: u64,
    /// Times the function ran it and failed (function errors, timeouts).
    #[serde(default)]
    pub attempts: u32,
    /// Times it was throttled or hit a system error in a row (the backoff).
    #[serde(default)]
    pub throttles: u32,
}

/// A queued event and where it sits in the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The queue's own handle (the store key).
    pub key: String,
    /// When it is due, wall-clock milliseconds since the epoch.
    pub due_ms: u64,
    pub event: QueuedEvent,
}

/// Errors of the queue.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue store failed")]
    Store(#[from] StoreError),
    #[error("queued event {key} is unreadable: {message}")]
    Corrupt { key: String, message: String },
}

/// The durable queue of asynchronous invocations. A cluster backend
/// (a replicated log, shards by function) implements the same calls.
#[async_trait]
pub trait EventQueue: Send + Sync + std::fmt::Debug {
    /// Stores `event`, due at `due_ms`; returns once it survives a crash.
    async fn enqueue(&self, event: &QueuedEvent, due_ms: u64) -> Result<Entry, QueueError>;

    /// Up to `limit` events, due first first (also those not yet due).
    async fn peek(&self, limit: usize) -> Result<Vec<Entry>, QueueError>;

    /// Stores `event` (an updated copy of `entry`'s) due at `due_ms`, then
    /// removes `entry`. Never loses the event; a crash may leave both.
    async fn reschedule(
        &self,
        entry: &Entry,
        event: &QueuedEvent,
        due_ms: u64,
    ) -> Result<Entry, QueueError>;

    /// Removes an event that is done.
    async fn remove(&self, entry: &Entry) -> Result<(), QueueError>;

    /// Waits until something is enqueued, or `timeout` passes.
    async fn wait(&self, timeout: Duration);
}

/// The queue in a [`MetaStore`] (on one machine: the embedded store, one
/// durable transaction per write).
#[derive(Debug, Clone)]
pub struct StoreQueue {
    store: Arc<dyn MetaStore>,
    new_event: Arc<Notify>,
}

impl StoreQueue {
    pub fn new(store: Arc<dyn MetaStore>) -> Self {
        StoreQueue {
            store,
            new_event: Arc::new(Notify::new()),
        }
    }
}

fn key_of(due_ms: u64, id: &str) -> String {
    format!("{QUEUE_PREFIX}{due_ms:020}/{id}")
}

fn due_of(key: &str) -> Option<u64> {
    key.strip_prefix(QUEUE_PREFIX)?
        .split('/')
        .next()?
        .parse()
        .ok()
}

#[async_trait]
impl EventQueue for StoreQueue {
    async fn enqueue(&self, event: &QueuedEvent, due_ms: u64) -> Result<Entry, QueueError> {
        let key = key_of(due_ms, &event.id);
        let value = serde_json::to_vec(event).map_err(|e| QueueError::Corrupt {
            key: key.clone(),
            message: e.to_string(),
        })?;
        self.store
            .put(&key, Bytes::from(value), Precondition::None)
            .await?;
        // One dispatcher per queue: a wake-up it is not waiting for yet is kept.
        self.new_event.notify_one();
        Ok(Entry {
            key,
            due_ms,
            event: event.clone(),
        })
    }

    /// An entry that cannot be read is logged and skipped (it stays in
    /// the store for an operator to look at), so it never blocks the rest.
    async fn peek(&self, limit: usize) -> Result<Vec<Entry>, QueueError> {
        let page = self.store.scan(QUEUE_PREFIX, None, limit).await?;
        let mut out = Vec::with_capacity(page.len());
        for (key, v) in page {
            let parsed = due_of(&key)
                .ok_or_else(|| "no due time in the key".to_owned())
                .and_then(|due_ms| {
                    serde_json::from_slice::<QueuedEvent>(&v.value)
                        .map(|event| (due_ms, event))
                        .map_err(|e| e.to_string())
                });
            match parsed {
                Ok((due_ms, event)) => out.push(Entry { key, due_ms, event }),
                Err(message) => {
                    tracing::error!(key, message, "unreadable queued event skipped");
                }
            }
        }
        Ok(out)
    }

    async fn reschedule(
        &self,
        entry: &Entry,
        event: &QueuedEvent,
        due_ms: u64,
    ) -> Result<Entry, QueueError> {
        let next = self.enqueue(event, due_ms).await?;
        if next.key != entry.key {
            self.remove(entry).await?;
        }
        Ok(next)
    }

    async fn remove(&self, entry: &Entry) -> Result<(), QueueError> {
        self.store.delete(&entry.key, Precondition::None).await?;
        Ok(())
    }

    async fn wait(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.new_event.notified()).await;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use stratus_store::Versioned;

    /// A `MetaStore` in memory, for tests on paused time.
    #[derive(Debug, Default)]
    pub struct MemStore {
        kv: Mutex<(u64, BTreeMap<String, Versioned>)>,
    }

    #[async_trait]
    impl MetaStore for MemStore {
        async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
            Ok(self.kv.lock().expect("lock").1.get(key).cloned())
        }
        async fn put(&self, key: &str, value: Bytes, _: Precondition) -> Result<u64, StoreError> {
            let mut g = self.kv.lock().expect("lock");
            g.0 += 1;
            let version = g.0;
            g.1.insert(key.to_owned(), Versioned { value, version });
            Ok(version)
        }
        async fn delete(&self, key: &str, _: Precondition) -> Result<bool, StoreError> {
            Ok(self.kv.lock().expect("lock").1.remove(key).is_some())
        }
        async fn scan(
            &self,
            prefix: &str,
            after: Option<&str>,
            limit: usize,
        ) -> Result<Vec<(String, Versioned)>, StoreError> {
            let g = self.kv.lock().expect("lock");
            Ok(g.1
                .iter()
                .filter(|(k, _)| k.starts_with(prefix) && after.is_none_or(|a| k.as_str() > a))
                .take(limit)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect())
        }
    }

    pub fn event(id: &str) -> QueuedEvent {
        QueuedEvent {
            id: id.into(),
            account: AccountId::default_local(),
            function: "f".into(),
            qualifier: None,
            payload: "{}".into(),
            client_context: None,
            enqueued_ms: 1_000,
            attempts: 0,
            throttles: 0,
        }
    }

    #[tokio::test]
    async fn events_come_out_in_due_order() {
        let q = StoreQueue::new(Arc::new(MemStore::default()));
        for (id, due) in [
            ("c", 30u64),
            ("a", 10),
            ("b", 20),
            ("late", 1_000_000_000_000),
        ] {
            q.enqueue(&event(id), due).await.expect("enqueue");
        }
        let ids: Vec<String> = q
            .peek(10)
            .await
            .expect("peek")
            .into_iter()
            .map(|e| e.event.id)
            .collect();
        assert_eq!(ids, ["a", "b", "c", "late"]);
        let first = q.peek(1).await.expect("peek").remove(0);
        assert_eq!(first.due_ms, 10);
        // Moved behind the others, with its new attempt count.
        let mut ev = first.event.clone();
        ev.attempts = 1;
        q.reschedule(&first, &ev, 40).await.expect("reschedule");
        let all = q.peek(10).await.expect("peek");
        let ids: Vec<&str> = all.iter().map(|e| e.event.id.as_str()).collect();
        assert_eq!(ids, ["b", "c", "a", "late"]);
        assert_eq!(all[2].event.attempts, 1);
        // Rescheduling to the same time keeps it (no delete of the new key).
        let same = q
            .reschedule(&all[0], &all[0].event, 20)
            .await
            .expect("same");
        assert_eq!(same.key, all[0].key);
        assert_eq!(q.peek(10).await.expect("peek").len(), 4);
        q.remove(&all[0]).await.expect("remove");
        assert_eq!(q.peek(10).await.expect("peek").len(), 3);
    }

    #[tokio::test]
    async fn an_unreadable_entry_is_skipped() {
        let store = Arc::new(MemStore::default());
        let q = StoreQueue::new(store.clone());
        q.enqueue(&event("good"), 2).await.expect("enqueue");
        store
            .put(
                &format!("{QUEUE_PREFIX}{:020}/bad", 1),
                Bytes::from_static(b"not json"),
                Precondition::None,
            )
            .await
            .expect("put");
        let all = q.peek(10).await.expect("peek");
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].event.id, "good");
    }

    #[tokio::test]
    async fn queued_events_survive_reopening_the_embedded_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("meta.redb");
        {
            let store = stratus_store_embedded::EmbeddedMetaStore::open(&path).expect("open");
            let q = StoreQueue::new(Arc::new(store));
            q.enqueue(&event("kept"), 5).await.expect("enqueue");
            let gone = q.enqueue(&event("done"), 6).await.expect("enqueue");
            q.remove(&gone).await.expect("remove");
        }
        let store = stratus_store_embedded::EmbeddedMetaStore::open(&path).expect("reopen");
        let q = StoreQueue::new(Arc::new(store));
        let all = q.peek(10).await.expect("peek");
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].event, event("kept"));
        assert_eq!(all[0].due_ms, 5);
    }
}
