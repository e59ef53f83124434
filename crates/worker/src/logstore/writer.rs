//! The writer thread: the one owner of the log files. It numbers lines,
//! appends them to their stream's segment, rotates segments, applies the
//! caps and deletes what they drop, and publishes every change to the index
//! readers look at.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stratus_api::service::{LogLine, LogStreamKey};
use tokio::sync::mpsc;

use super::{
    Cmd, DATE_DIRS_BYTES, FUNCTION_DIR_BYTES, FnKey, FunctionLog, Index, STREAM_DIR_BYTES, Segment,
    Shared, StreamState, function_dir, now_ms, segment, segment_disk_bytes, segment_path,
    stream_dir,
};

/// Segment files kept open for appending, at most.
const MAX_OPEN_FILES: usize = 128;
/// A checkpoint (seq, offset) is recorded every this many bytes of a segment.
const CHECKPOINT_BYTES: u64 = 64 * 1024;
/// Failures are reported at most this often (tenants can cause them).
const WARN_EVERY: Duration = Duration::from_secs(10);
/// How long the writer lets appends gather after one arrives. A reader
/// (`flush`) waits at most this much longer; the writer wakes at most once
/// per this while invocations keep coming, not once per invocation.
const LINGER: Duration = Duration::from_millis(2);

#[derive(Debug)]
struct OpenFile {
    first: u64,
    file: File,
    used: u64,
}

/// What the caps removed, to delete once the index lock is released.
#[derive(Debug, Default)]
struct Doomed {
    files: Vec<PathBuf>,
    /// Stream directories left without segments (with their date parents).
    stream_dirs: Vec<PathBuf>,
    function_dirs: Vec<PathBuf>,
}

/// Counts failures and reports them at most every [`WARN_EVERY`].
#[derive(Debug)]
struct RateLimited {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimited {
    fn warn(&mut self, what: &str, path: &std::path::Path, error: &std::io::Error) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < WARN_EVERY)
        {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(path = %path.display(), %error, suppressed = self.suppressed, "log store: {what} failed; lines dropped");
        self.last = Some(now);
        self.suppressed = 0;
    }
}

#[derive(Debug)]
pub(super) struct Writer {
    shared: Arc<Shared>,
    next_seq: u64,
    files: HashMap<LogStreamKey, OpenFile>,
    /// Streams of removed functions whose sandboxes have not closed yet:
    /// their lines are dropped.
    removed: HashSet<LogStreamKey>,
    tick: u64,
    errors: RateLimited,
}

impl Writer {
    pub(super) fn new(shared: Arc<Shared>, next_seq: u64) -> Self {
        Writer {
            shared,
            next_seq,
            files: HashMap::new(),
            removed: HashSet::new(),
            tick: 0,
            errors: RateLimited {
                last: None,
                suppressed: 0,
            },
        }
    }

    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        while let Some(cmd) = rx.blocking_recv() {
            let append = matches!(cmd, Cmd::Append { .. });
            self.handle(cmd);
            if append {
                // Lines come a few at a time (START, END and REPORT of each
                // invocation, from every sandbox): let them gather for a
                // moment and write them in one go, instead of waking this
                // thread for every batch while invocations are running.
                std::thread::sleep(LINGER);
                while let Ok(cmd) = rx.try_recv() {
                    self.handle(cmd);
                }
            }
        }
    }

    fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Append { key, lines, .. } => {
                self.append(&key, lines);
                self.shared.appended.notify_waiters();
            }
            Cmd::Close(key) => self.close(&key),
            Cmd::Remove { function, done } => {
                self.remove(&function);
                let _ = done.send(());
            }
            Cmd::Flush(done) => {
                let _ = done.send(());
            }
            Cmd::Expire => {
                if let Some(max_age) = self.shared.cfg.max_age {
                    self.expire(max_age);
                }
            }
        }
    }

    /// Applies both caps to every function (after opening, when the caps
    /// may have been lowered).
    pub(super) fn enforce_all(&mut self) {
        let keys: Vec<FnKey> = self.shared.lock().functions.keys().cloned().collect();
        for k in keys {
            self.enforce(Some(&k));
        }
        self.enforce(None);
    }

    fn append(&mut self, key: &LogStreamKey, lines: Vec<LogLine>) {
        if self.removed.contains(key) {
            return;
        }
        if stratus_types::validate_function_name(&key.function).is_err() {
            tracing::warn!(function = %key.function, "log store: not a function name; lines dropped");
            return;
        }
        let fkey = FnKey::of(key);
        let max_line = self.shared.cfg.max_line_bytes;
        let mut buf: Vec<u8> = Vec::new();
        let mut checkpoints = Vec::new();
        let mut seg: Option<(u64, u64)> = None; // (first, len before buf)
        let mut last_seq = 0;
        let mut last_checkpoint = 0;
        let segment_bytes = self.shared.cfg.segment_bytes;
        for line in &lines {
            for piece in segment::pieces(&line.message, max_line) {
                let size = segment::record_len(self.next_seq, line.timestamp, piece) as u64;
                let (first, len) = match seg {
                    Some(s) => s,
                    None => match self.active_segment(key, &fkey) {
                        Some(s) => {
                            last_checkpoint = s.1;
                            s
                        }
                        None => return,
                    },
                };
                // A segment is closed before it would grow past its size (a
                // record larger than that gets a segment of its own).
                let used = len + buf.len() as u64;
                let (first, len) = if used > 0 && used + size > segment_bytes {
                    if !buf.is_empty() {
                        self.write(key, &fkey, first, &buf, last_seq, &mut checkpoints);
                        buf.clear();
                    }
                    self.rotate(key, &fkey);
                    match self.active_segment(key, &fkey) {
                        Some(s) => {
                            last_checkpoint = 0;
                            s
                        }
                        None => return,
                    }
                } else {
                    (first, len)
                };
                seg = Some((first, len));
                let offset = len + buf.len() as u64;
                if offset == 0 || offset - last_checkpoint >= CHECKPOINT_BYTES {
                    checkpoints.push((self.next_seq, offset));
                    last_checkpoint = offset;
                }
                last_seq = self.next_seq;
                segment::write_record(&mut buf, self.next_seq, line.timestamp, piece);
                self.next_seq += 1;
            }
        }
        if let Some((first, _)) = seg
            && !buf.is_empty()
        {
            self.write(key, &fkey, first, &buf, last_seq, &mut checkpoints);
        }
        self.enforce(Some(&fkey));
        self.enforce(None);
    }

    /// The segment `key` appends to, opening or creating it: (first, len).
    fn active_segment(&mut self, key: &LogStreamKey, fkey: &FnKey) -> Option<(u64, u64)> {
        self.tick += 1;
        let tick = self.tick;
        let current = {
            let idx = self.shared.lock();
            idx.functions.get(fkey).and_then(|f| {
                let first = f.streams.get(&key.stream)?.active?;
                Some((first, f.segments.get(&first)?.len))
            })
        };
        if let Some((first, len)) = current {
            if let Some(of) = self.files.get_mut(key)
                && of.first == first
            {
                of.used = tick;
                return Some((first, len));
            }
            let path = segment_path(&self.shared.root, fkey, &key.stream, first);
            match OpenOptions::new().append(true).open(&path) {
                Ok(file) => {
                    self.keep_open(key, first, file);
                    return Some((first, len));
                }
                Err(e) => {
                    // Start a new segment instead.
                    self.errors.warn("reopening a segment", &path, &e);
                }
            }
        }
        let first = self.next_seq;
        // Room for the new file and, at most, the directories above it.
        self.make_room(
            fkey,
            None,
            segment_disk_bytes(0) + STREAM_DIR_BYTES + DATE_DIRS_BYTES + FUNCTION_DIR_BYTES,
        );
        let dir = stream_dir(&self.shared.root, fkey, &key.stream);
        let path = dir.join(segment::file_name(first));
        let opened = std::fs::create_dir_all(&dir)
            .and_then(|()| OpenOptions::new().append(true).create_new(true).open(&path));
        let file = match opened {
            Ok(f) => f,
            Err(e) => {
                self.errors.warn("creating a segment", &path, &e);
                return None;
            }
        };
        self.keep_open(key, first, file);
        let mut guard = self.shared.lock();
        let idx = &mut *guard;
        let f = idx.functions.entry(fkey.clone()).or_default();
        let st = f
            .streams
            .entry(key.stream.clone())
            .or_insert_with(|| StreamState {
                name: Arc::new(key.stream.clone()),
                segments: 0,
                active: None,
                open: true,
            });
        st.open = true;
        st.active = Some(first);
        let filled = st.segments == 0;
        st.segments += 1;
        let name = Arc::clone(&st.name);
        let mut added = segment_disk_bytes(0);
        if filled {
            added += f.stream_filled(&name);
        }
        if f.segments.is_empty() {
            added += FUNCTION_DIR_BYTES;
        }
        f.segments.insert(
            first,
            Segment {
                stream: name,
                last_seq: 0,
                len: 0,
                checkpoints: Vec::new(),
            },
        );
        f.bytes += added;
        idx.total += added;
        Some((first, 0))
    }

    fn keep_open(&mut self, key: &LogStreamKey, first: u64, file: File) {
        if self.files.len() >= MAX_OPEN_FILES && !self.files.contains_key(key) {
            let lru = self
                .files
                .iter()
                .min_by_key(|(_, of)| of.used)
                .map(|(k, _)| k.clone());
            if let Some(k) = lru {
                self.files.remove(&k);
            }
        }
        self.files.insert(
            key.clone(),
            OpenFile {
                first,
                file,
                used: self.tick,
            },
        );
    }

    /// Closes the segment `key` appends to; the next line starts a new one.
    fn rotate(&mut self, key: &LogStreamKey, fkey: &FnKey) {
        self.files.remove(key);
        let mut idx = self.shared.lock();
        if let Some(st) = idx
            .functions
            .get_mut(fkey)
            .and_then(|f| f.streams.get_mut(&key.stream))
        {
            st.active = None;
        }
    }

    /// Appends `buf` (whole records up to `last_seq`) to segment `first` of
    /// `key` and publishes it. A failed write closes the segment.
    fn write(
        &mut self,
        key: &LogStreamKey,
        fkey: &FnKey,
        first: u64,
        buf: &[u8],
        last_seq: u64,
        checkpoints: &mut Vec<(u64, u64)>,
    ) {
        let grow = {
            let idx = self.shared.lock();
            let len = idx
                .functions
                .get(fkey)
                .and_then(|f| f.segments.get(&first))
                .map_or(0, |s| s.len);
            segment_disk_bytes(len + buf.len() as u64) - segment_disk_bytes(len)
        };
        self.make_room(fkey, Some(first), grow);
        let Some(of) = self.files.get_mut(key).filter(|of| of.first == first) else {
            return;
        };
        let result = of.file.write_all(buf);
        let mut guard = self.shared.lock();
        let idx = &mut *guard;
        let Some(f) = idx.functions.get_mut(fkey) else {
            return;
        };
        let Some(seg) = f.segments.get_mut(&first) else {
            return;
        };
        let old_len = seg.len;
        let mut failed = None;
        match result {
            Ok(()) => {
                seg.len += buf.len() as u64;
                seg.last_seq = last_seq;
                seg.checkpoints.append(checkpoints);
                f.last_seq = f.last_seq.max(last_seq);
                f.last_write_ms = now_ms();
            }
            Err(e) => {
                // Keep whole records only: cut what part of the batch landed.
                let _ = of.file.set_len(old_len);
                checkpoints.clear();
                failed = Some(e);
            }
        }
        let (before, after) = (segment_disk_bytes(old_len), segment_disk_bytes(seg.len));
        f.bytes = f.bytes + after - before;
        idx.total = idx.total + after - before;
        let close = failed.is_some();
        if close && let Some(st) = f.streams.get_mut(&key.stream) {
            st.active = None;
        }
        drop(guard);
        if close {
            self.files.remove(key);
        }
        if let Some(e) = failed {
            let path = segment_path(&self.shared.root, fkey, &key.stream, first);
            self.errors.warn("appending to a segment", &path, &e);
        }
    }

    /// Deletes, per function and oldest first, the segments last written
    /// (file modification time) more than `max_age` ago.
    pub(super) fn expire(&mut self, max_age: Duration) {
        let Some(cutoff) = std::time::SystemTime::now().checked_sub(max_age) else {
            return;
        };
        let root = self.shared.root.clone();
        let mut doomed = Doomed::default();
        {
            let shared = Arc::clone(&self.shared);
            let mut guard = shared.lock();
            let idx = &mut *guard;
            let keys: Vec<FnKey> = idx.functions.keys().cloned().collect();
            for k in keys {
                loop {
                    let oldest = idx.functions.get(&k).and_then(|f| {
                        f.segments
                            .first_key_value()
                            .map(|(first, seg)| segment_path(&root, &k, &seg.stream, *first))
                    });
                    let Some(path) = oldest else { break };
                    let expired = std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        // A segment whose file is gone is dropped from the index too.
                        .map_or(true, |t| t < cutoff);
                    if !expired || !self.drop_oldest(idx, &k, &mut doomed) {
                        break;
                    }
                }
            }
        }
        self.delete(doomed);
    }

    /// Trims one function to its cap (`Some`) or the store to its total
    /// (`None`), oldest segments first, then deletes what was dropped.
    fn enforce(&mut self, only: Option<&FnKey>) {
        let cfg = self.shared.cfg;
        let mut doomed = Doomed::default();
        {
            let shared = Arc::clone(&self.shared);
            let mut guard = shared.lock();
            let idx = &mut *guard;
            loop {
                let victim = match only {
                    Some(k) => match idx.functions.get(k) {
                        Some(f) if f.bytes > cfg.max_bytes_per_function => k.clone(),
                        _ => break,
                    },
                    None => {
                        if idx.total <= cfg.max_bytes_total {
                            break;
                        }
                        match least_recently_written(idx) {
                            Some(k) => k,
                            None => break,
                        }
                    }
                };
                if !self.drop_oldest(idx, &victim, &mut doomed) {
                    break;
                }
            }
        }
        self.delete(doomed);
    }

    /// Before `fkey` grows by `grow` bytes: deletes oldest segments so both
    /// caps hold after the write too. Never deletes segment `keep` (the one
    /// being written); if that alone is over, [`Writer::enforce`] after the
    /// write takes it.
    fn make_room(&mut self, fkey: &FnKey, keep: Option<u64>, grow: u64) {
        let cfg = self.shared.cfg;
        let mut doomed = Doomed::default();
        {
            let shared = Arc::clone(&self.shared);
            let mut guard = shared.lock();
            let idx = &mut *guard;
            loop {
                let mine = idx.functions.get(fkey).map_or(0, |f| f.bytes);
                let victim = if mine + grow > cfg.max_bytes_per_function {
                    fkey.clone()
                } else if idx.total + grow > cfg.max_bytes_total {
                    match least_recently_written(idx) {
                        Some(k) => k,
                        None => break,
                    }
                } else {
                    break;
                };
                let oldest = idx
                    .functions
                    .get(&victim)
                    .and_then(|f| f.segments.first_key_value())
                    .map(|(k, _)| *k);
                if oldest.is_none() || (victim == *fkey && oldest == keep) {
                    break;
                }
                if !self.drop_oldest(idx, &victim, &mut doomed) {
                    break;
                }
            }
        }
        self.delete(doomed);
    }

    /// Removes a function's oldest segment from the index; false if it had none.
    fn drop_oldest(&mut self, idx: &mut Index, fkey: &FnKey, doomed: &mut Doomed) -> bool {
        let root = &self.shared.root;
        let Some(f) = idx.functions.get_mut(fkey) else {
            return false;
        };
        let Some((first, seg)) = f.segments.pop_first() else {
            return false;
        };
        let mut freed = segment_disk_bytes(seg.len);
        doomed
            .files
            .push(segment_path(root, fkey, &seg.stream, first));
        let stream_key = LogStreamKey {
            account: fkey.account.clone(),
            function: fkey.function.clone(),
            stream: (*seg.stream).clone(),
        };
        let mut emptied = false;
        if let Some(st) = f.streams.get_mut(&*seg.stream) {
            st.segments = st.segments.saturating_sub(1);
            if st.active == Some(first) {
                st.active = None;
                self.files.remove(&stream_key);
            }
            if st.segments == 0 {
                emptied = true;
                if !st.open {
                    f.streams.remove(&*seg.stream);
                }
            }
        }
        if emptied {
            freed += f.stream_emptied(&seg.stream);
            doomed.stream_dirs.push(stream_dir(root, fkey, &seg.stream));
        }
        if f.segments.is_empty() {
            freed += FUNCTION_DIR_BYTES;
        }
        f.bytes = f.bytes.saturating_sub(freed);
        idx.total = idx.total.saturating_sub(freed);
        if f.segments.is_empty() {
            doomed.function_dirs.push(function_dir(root, fkey));
            if f.streams.is_empty() {
                idx.functions.remove(fkey);
            }
        }
        true
    }

    fn delete(&mut self, doomed: Doomed) {
        for p in &doomed.files {
            if let Err(e) = std::fs::remove_file(p)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                self.errors.warn("deleting a segment", p, &e);
            }
        }
        // Empty directories only: remove_dir fails on anything else.
        for d in &doomed.stream_dirs {
            let mut dir = Some(d.as_path());
            for _ in 0..4 {
                let Some(p) = dir else { break };
                if std::fs::remove_dir(p).is_err() {
                    break;
                }
                dir = p.parent();
            }
        }
        for d in &doomed.function_dirs {
            let _ = std::fs::remove_dir(d);
        }
    }

    fn close(&mut self, key: &LogStreamKey) {
        if self.removed.remove(key) {
            return;
        }
        self.files.remove(key);
        let fkey = FnKey::of(key);
        let mut guard = self.shared.lock();
        let idx = &mut *guard;
        let Some(f) = idx.functions.get_mut(&fkey) else {
            return;
        };
        if let Some(st) = f.streams.get_mut(&key.stream) {
            st.open = false;
            st.active = None;
            if st.segments == 0 {
                f.streams.remove(&key.stream);
            }
        }
        if f.segments.is_empty() && f.streams.is_empty() {
            idx.functions.remove(&fkey);
        }
    }

    fn remove(&mut self, fkey: &FnKey) {
        let removed: Option<FunctionLog> = {
            let mut idx = self.shared.lock();
            let f = idx.functions.remove(fkey);
            if let Some(f) = &f {
                idx.total = idx.total.saturating_sub(f.bytes);
            }
            f
        };
        if let Some(f) = removed {
            for (name, st) in f.streams {
                let key = LogStreamKey {
                    account: fkey.account.clone(),
                    function: fkey.function.clone(),
                    stream: name,
                };
                if st.open {
                    self.removed.insert(key);
                }
            }
        }
        self.files
            .retain(|k, _| !(k.account == fkey.account && k.function == fkey.function));
        if stratus_types::validate_function_name(&fkey.function).is_err() {
            return;
        }
        let dir = function_dir(&self.shared.root, fkey);
        if let Err(e) = std::fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            self.errors.warn("deleting a function's log", &dir, &e);
        }
    }
}

/// The function with segments that was written least recently.
fn least_recently_written(idx: &Index) -> Option<FnKey> {
    idx.functions
        .iter()
        .filter(|(_, f)| !f.segments.is_empty())
        .min_by(|a, b| (a.1.last_write_ms, a.0).cmp(&(b.1.last_write_ms, b.0)))
        .map(|(k, _)| k.clone())
}
