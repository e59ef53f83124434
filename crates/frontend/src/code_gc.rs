//! Removing code no function uses while the server runs.
//!
//! DeleteFunction and UpdateFunctionCode leave an archive (and its unpacked
//! copy on the worker) that may no longer be referenced. It is removed
//! right away, but two things must not be lost:
//!
//! - An upload in flight. A create or update stores the archive *before* the
//!   function record that refers to it, so between the two nothing in the
//!   registry names the digest. Each upload therefore holds an [`Upload`]
//!   guard for its digest from before the blob is stored until its record is
//!   written (or the request fails); a digest with an upload in flight is
//!   never removed.
//! - An upload of a digest being removed: it waits until the removal is
//!   over, then stores the archive again ([`CodeGc::upload`]).
//!
//! The check ("no upload, no record uses it") and marking the digest as
//! being removed happen under one short lock; the removal itself (file
//! I/O) runs outside it. Sandboxes still running removed code keep their
//! unpacked copy: the worker's code cache removes it after the last one.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use tokio::sync::Notify;

/// Uploads in flight and removals in progress, by digest.
#[derive(Debug, Default)]
pub(crate) struct CodeGc {
    state: Mutex<State>,
    /// Signalled whenever a removal ends.
    removal_over: Notify,
}

#[derive(Debug, Default)]
struct State {
    uploads: HashMap<String, usize>,
    removing: HashSet<String>,
}

/// An upload of one digest in flight: its archive is not removed while
/// this lives. Drop it once the record naming the digest is written.
#[derive(Debug)]
pub(crate) struct Upload<'a> {
    gc: &'a CodeGc,
    digest: String,
}

/// A removal of one digest in progress: uploads of it wait until this is
/// dropped.
#[derive(Debug)]
pub(crate) struct Removal<'a> {
    gc: &'a CodeGc,
    digest: String,
}

impl CodeGc {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers an upload of `digest`, after any removal of it in progress.
    pub(crate) async fn upload(&self, digest: &str) -> Upload<'_> {
        loop {
            // Created before the check, so a removal ending in between
            // still wakes it.
            let over = self.removal_over.notified();
            {
                let mut s = self.lock();
                if !s.removing.contains(digest) {
                    *s.uploads.entry(digest.to_owned()).or_default() += 1;
                    return Upload {
                        gc: self,
                        digest: digest.to_owned(),
                    };
                }
            }
            over.await;
        }
    }

    /// Starts removing `digest`, unless an upload of it is in flight, it is
    /// already being removed, or `in_use` (asked under the lock) says a
    /// function record names it.
    pub(crate) fn begin_removal(
        &self,
        digest: &str,
        in_use: impl FnOnce(&str) -> bool,
    ) -> Option<Removal<'_>> {
        let mut s = self.lock();
        if s.uploads.contains_key(digest) || s.removing.contains(digest) || in_use(digest) {
            return None;
        }
        s.removing.insert(digest.to_owned());
        Some(Removal {
            gc: self,
            digest: digest.to_owned(),
        })
    }
}

impl Drop for Upload<'_> {
    fn drop(&mut self) {
        let mut s = self.gc.lock();
        if let Some(n) = s.uploads.get_mut(&self.digest) {
            *n -= 1;
            if *n == 0 {
                s.uploads.remove(&self.digest);
            }
        }
    }
}

impl Drop for Removal<'_> {
    fn drop(&mut self) {
        self.gc.lock().removing.remove(&self.digest);
        self.gc.removal_over.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_digest_is_not_removed_while_an_upload_of_it_is_in_flight() {
        let gc = CodeGc::default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let first = rt.block_on(gc.upload("d"));
        let second = rt.block_on(gc.upload("d"));
        assert!(gc.begin_removal("d", |_| false).is_none(), "two uploads");
        drop(first);
        assert!(gc.begin_removal("d", |_| false).is_none(), "one upload");
        drop(second);
        assert!(
            gc.begin_removal("d", |_| true).is_none(),
            "a record names it"
        );
        let removal = gc.begin_removal("d", |_| false).expect("unused");
        assert!(
            gc.begin_removal("d", |_| false).is_none(),
            "one removal at a time"
        );
        assert!(gc.begin_removal("other", |_| false).is_some(), "per digest");
        drop(removal);
        assert!(gc.begin_removal("d", |_| false).is_some());
    }

    #[tokio::test]
    async fn an_upload_waits_for_a_removal_of_its_digest() {
        let gc = std::sync::Arc::new(CodeGc::default());
        let removal = gc.begin_removal("d", |_| false).expect("unused");
        let waiting = {
            let gc = std::sync::Arc::clone(&gc);
            tokio::spawn(async move {
                let _upload = gc.upload("d").await;
                // Registered: the digest cannot be removed now.
                gc.begin_removal("d", |_| false).is_none()
            })
        };
        // Another digest is not held up.
        drop(gc.upload("e").await);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "waits while the removal runs");
        drop(removal);
        let protected = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("goes on once the removal is over")
            .expect("task");
        assert!(protected);
    }
}
