//! The host's log store: each function's recent log lines, bounded.
//!
//! Lambda ships logs to CloudWatch Logs, one log group per function and one
//! stream per sandbox. Stratus keeps the same shape in memory on the host:
//! a ring of lines per function, capped in bytes (oldest dropped first) and
//! in the number of functions kept, so a function printing without end costs
//! a bounded amount of memory and no disk.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use stratus_api::service::{LogEvent, Logs};
use stratus_types::AccountId;
use tokio::sync::Notify;

/// Limits of the log store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogStoreConfig {
    /// Bytes of messages kept per function.
    pub max_bytes_per_function: usize,
    /// Functions whose logs are kept (least recently written dropped first).
    pub max_functions: usize,
    /// Longest line kept; longer lines are cut.
    pub max_line_bytes: usize,
}

impl Default for LogStoreConfig {
    fn default() -> Self {
        LogStoreConfig {
            max_bytes_per_function: 1024 * 1024,
            max_functions: 1024,
            max_line_bytes: 256 * 1024,
        }
    }
}

#[derive(Debug, Default)]
struct FunctionLog {
    events: VecDeque<LogEvent>,
    bytes: usize,
    last_write: u64,
}

#[derive(Debug, Default)]
struct State {
    logs: HashMap<(AccountId, String), FunctionLog>,
    next_seq: u64,
    writes: u64,
}

/// In-memory, bounded [`Logs`].
#[derive(Debug)]
pub struct MemoryLogStore {
    cfg: LogStoreConfig,
    state: Mutex<State>,
    appended: Notify,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl MemoryLogStore {
    pub fn new(cfg: LogStoreConfig) -> Self {
        MemoryLogStore {
            cfg,
            state: Mutex::new(State::default()),
            appended: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn collect(
        &self,
        account: &AccountId,
        function: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Vec<LogEvent> {
        let st = self.lock();
        let Some(log) = st.logs.get(&(account.clone(), function.to_owned())) else {
            return Vec::new();
        };
        log.events
            .iter()
            .filter(|e| after.is_none_or(|a| e.seq > a))
            .take(limit)
            .cloned()
            .collect()
    }
}

impl Default for MemoryLogStore {
    fn default() -> Self {
        Self::new(LogStoreConfig::default())
    }
}

fn cut(line: &str, max: usize) -> &str {
    if line.len() <= max {
        return line;
    }
    let mut end = max;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    &line[..end]
}

#[async_trait]
impl Logs for MemoryLogStore {
    fn append(&self, account: &AccountId, function: &str, stream: &str, text: &str) {
        let timestamp = now_ms();
        {
            let mut guard = self.lock();
            let st = &mut *guard;
            st.writes += 1;
            let key = (account.clone(), function.to_owned());
            if !st.logs.contains_key(&key) && st.logs.len() >= self.cfg.max_functions {
                let oldest = st
                    .logs
                    .iter()
                    .min_by_key(|(_, l)| l.last_write)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    st.logs.remove(&k);
                }
            }
            let log = st.logs.entry(key).or_default();
            log.last_write = st.writes;
            for line in text.lines() {
                let message = cut(line, self.cfg.max_line_bytes).to_owned();
                st.next_seq += 1;
                log.bytes += message.len();
                log.events.push_back(LogEvent {
                    seq: st.next_seq,
                    timestamp,
                    log_stream_name: stream.to_owned(),
                    message,
                });
            }
            while log.bytes > self.cfg.max_bytes_per_function {
                match log.events.pop_front() {
                    Some(e) => log.bytes -= e.message.len(),
                    None => break,
                }
            }
        }
        self.appended.notify_waiters();
    }

    async fn read(
        &self,
        account: &AccountId,
        function: &str,
        after: Option<u64>,
        limit: usize,
        wait: Duration,
    ) -> Vec<LogEvent> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Register interest before looking, so an append in between wakes us.
            let notified = self.appended.notified();
            let events = self.collect(account, function, after, limit);
            if !events.is_empty() || tokio::time::Instant::now() >= deadline {
                return events;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.collect(account, function, after, limit);
            }
        }
    }

    fn remove(&self, account: &AccountId, function: &str) {
        self.lock()
            .logs
            .remove(&(account.clone(), function.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acct() -> AccountId {
        AccountId::default_local()
    }

    #[tokio::test]
    async fn lines_are_numbered_and_paged() {
        let s = MemoryLogStore::default();
        s.append(&acct(), "f", "st", "a\nb\nc\n");
        let all = s.read(&acct(), "f", None, 10, Duration::ZERO).await;
        assert_eq!(
            all.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
        let rest = s
            .read(&acct(), "f", Some(all[0].seq), 1, Duration::ZERO)
            .await;
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].message, "b");
        assert!(
            s.read(&acct(), "g", None, 10, Duration::ZERO)
                .await
                .is_empty()
        );
    }

    #[tokio::test]
    async fn bounded_per_function_and_in_functions() {
        let s = MemoryLogStore::new(LogStoreConfig {
            max_bytes_per_function: 100,
            max_functions: 2,
            max_line_bytes: 30,
        });
        for i in 0..50 {
            s.append(
                &acct(),
                "f",
                "st",
                &format!("line {i:04} {}", "x".repeat(100)),
            );
        }
        let kept = s.read(&acct(), "f", None, 1000, Duration::ZERO).await;
        let bytes: usize = kept.iter().map(|e| e.message.len()).sum();
        assert!(bytes <= 100, "{bytes}");
        assert!(kept.iter().all(|e| e.message.len() <= 30));
        assert!(
            kept.last()
                .is_some_and(|e| e.message.starts_with("line 0049")),
            "newest kept"
        );
        s.append(&acct(), "g", "st", "g");
        s.append(&acct(), "h", "st", "h");
        assert!(
            s.read(&acct(), "f", None, 10, Duration::ZERO)
                .await
                .is_empty(),
            "least recently written function dropped"
        );
        assert_eq!(
            s.read(&acct(), "h", None, 10, Duration::ZERO).await.len(),
            1
        );
    }

    #[tokio::test(start_paused = true)]
    async fn readers_wait_for_new_lines() {
        let s = std::sync::Arc::new(MemoryLogStore::default());
        let r = {
            let s = std::sync::Arc::clone(&s);
            tokio::spawn(async move {
                s.read(&acct(), "f", None, 10, Duration::from_secs(20))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        s.append(&acct(), "f", "st", "late");
        let got = r.await.expect("reader");
        assert_eq!(got.len(), 1);
        let none = s
            .read(&acct(), "f", Some(got[0].seq), 10, Duration::from_secs(5))
            .await;
        assert!(none.is_empty(), "times out empty");
    }

    #[tokio::test]
    async fn remove_forgets() {
        let s = MemoryLogStore::default();
        s.append(&acct(), "f", "st", "x");
        s.remove(&acct(), "f");
        assert!(
            s.read(&acct(), "f", None, 10, Duration::ZERO)
                .await
                .is_empty()
        );
    }
}
