//! Capture of a sandbox's output into its log stream.
//!
//! The runtime's stdout and stderr arrive on one pipe. One task per sandbox
//! (the pump) owns that pipe: it reads output as it arrives, splits it into
//! lines (a line longer than the store's limit is cut; bytes that are not
//! UTF-8 become U+FFFD; a line still without newline when an invocation ends
//! is ended there) and hands them to the [`Logs`] store in batches, as the
//! function prints, so `stratus logs --follow` shows a running invocation.
//!
//! The pump task and the sandbox share the line state behind one lock: the
//! sandbox writes the platform's lines (START, END, REPORT) and drains the
//! pipe itself, in its own task, so the order of those lines and the
//! function's output is the order in which they took the lock, and a warm
//! invoke wakes no other task for its log. When an invocation ends,
//! [`LogPump::drain`] reads whatever is still in the pipe *before* END is
//! written, so every byte the function wrote before posting its response is
//! part of that invocation's log.
//!
//! Memory is bounded: the pump holds at most one cut line, one batch and the
//! current invocation's last [`TAIL_BYTES`] (for `X-Amz-Log-Type: Tail`).
//! When the store is behind, the pump waits and stops reading; the pipe
//! fills and the function blocks in `write` until the store catches up.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use stratus_api::service::{LogLine, LogStreamKey, Logs};
use tokio::net::unix::pipe;
use tokio::sync::{Mutex, oneshot};
use tracing::Instrument;

use crate::logstore::MAX_LINE_BYTES;

/// The end of an invocation's log kept for its `Tail` (the front end returns
/// the last 4 KB of it).
pub const TAIL_BYTES: usize = 8 * 1024;
/// A batch is handed to the store once it holds this many bytes (and
/// whenever the pipe is empty).
const BATCH_BYTES: usize = 64 * 1024;
/// Most bytes read in one go before handing lines on.
const READ_BURST: usize = 256 * 1024;
/// Most bytes [`LogPump::drain`] reads: more than a pipe holds (1 MiB at
/// most), so it ends even if the function never stops writing.
const DRAIN_MAX: usize = 2 * 1024 * 1024;

/// What the pump task and the sandbox's handle share: the pipe, and the
/// line state behind one lock, so the order of platform lines and output
/// is the order in which they took it.
struct Shared {
    pipe: pipe::Receiver,
    state: Mutex<State>,
}

struct State {
    lines: Lines,
    chunk: Vec<u8>,
    /// Every writer is gone.
    eof: bool,
}

/// The sandbox's handle on its pump. Dropping it stops the pump (after a
/// last read of the pipe) and closes the stream.
///
/// The invocation's own steps (START, the drain, END and REPORT) run in
/// the caller's task under the shared lock, not as messages to the pump
/// task: a warm invoke wakes no other task for its log.
pub struct LogPump {
    shared: Arc<Shared>,
    /// Dropped with the handle: tells the pump task to stop.
    _stop: oneshot::Sender<()>,
}

impl std::fmt::Debug for LogPump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogPump").finish_non_exhaustive()
    }
}

impl LogPump {
    /// Starts the pump on the read end of the output pipe.
    pub fn start(
        fd: OwnedFd,
        stream: LogStreamKey,
        store: Arc<dyn Logs>,
        span: tracing::Span,
    ) -> std::io::Result<Self> {
        let pipe = pipe::Receiver::from_owned_fd(fd)?;
        let (stop, stopped) = oneshot::channel();
        let lines = Lines {
            stream,
            store,
            max_line: MAX_LINE_BYTES,
            partial: Vec::new(),
            cutting: false,
            batch: Vec::new(),
            batch_bytes: 0,
            tail: String::new(),
        };
        let shared = Arc::new(Shared {
            pipe,
            state: Mutex::new(State {
                lines,
                chunk: vec![0u8; 16 * 1024],
                eof: false,
            }),
        });
        tokio::spawn(run(Arc::clone(&shared), stopped).instrument(span));
        Ok(LogPump {
            shared,
            _stop: stop,
        })
    }

    async fn platform_line(&self, text: String, begin: bool) {
        let mut st = self.shared.state.lock().await;
        let lines = &mut st.lines;
        lines.end_partial();
        if begin {
            lines.tail.clear();
        }
        lines.push(text);
        lines.send_if_full().await;
    }

    /// Starts an invocation's log with its START line. Output read before
    /// this belongs to the time before.
    pub async fn begin(&self, start_line: String) {
        self.platform_line(start_line, true).await;
    }

    /// Appends a platform line.
    pub async fn line(&self, text: String) {
        self.platform_line(text, false).await;
    }

    /// Reads everything already written to the pipe (bounded by
    /// [`DRAIN_MAX`]) and passes it on.
    pub async fn drain(&self) {
        let mut guard = self.shared.state.lock().await;
        let st = &mut *guard;
        if !st.eof
            && read_available(&self.shared.pipe, &mut st.lines, &mut st.chunk, DRAIN_MAX).await
                == Read::Eof
        {
            st.eof = true;
        }
    }

    /// Ends the invocation's log with `lines` (END, REPORT) and returns its
    /// last [`TAIL_BYTES`].
    pub async fn finish(&self, closing: Vec<String>) -> String {
        let mut st = self.shared.state.lock().await;
        let lines = &mut st.lines;
        lines.end_partial();
        for l in closing {
            lines.push(l);
        }
        lines.send().await;
        lines.take_tail()
    }
}

/// Turns bytes into lines and lines into batches for the store.
struct Lines {
    stream: LogStreamKey,
    store: Arc<dyn Logs>,
    max_line: usize,
    /// The line being received (at most `max_line` bytes).
    partial: Vec<u8>,
    /// The current line was cut: drop bytes up to its newline.
    cutting: bool,
    batch: Vec<LogLine>,
    batch_bytes: usize,
    /// The current invocation's log so far, its last [`TAIL_BYTES`] or a bit more.
    tail: String,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Lines {
    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let nl = data.iter().position(|&b| b == b'\n');
            let (piece, rest) = match nl {
                Some(i) => (&data[..i], Some(&data[i + 1..])),
                None => (data, None),
            };
            if !self.cutting {
                let room = self.max_line.saturating_sub(self.partial.len());
                if piece.len() > room {
                    self.partial.extend_from_slice(&piece[..room]);
                    self.cutting = true;
                } else {
                    self.partial.extend_from_slice(piece);
                }
            }
            match rest {
                Some(rest) => {
                    self.end_line();
                    data = rest;
                }
                None => break,
            }
        }
    }

    /// Ends the line being received.
    fn end_line(&mut self) {
        let mut bytes = std::mem::take(&mut self.partial);
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        let mut text = match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
        if text.len() > self.max_line {
            let mut end = self.max_line;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
        self.cutting = false;
        self.push(text);
    }

    /// Ends a line left without newline, if any.
    fn end_partial(&mut self) {
        if !self.partial.is_empty() || self.cutting {
            self.end_line();
        }
    }

    fn push(&mut self, text: String) {
        self.tail.push_str(&text);
        self.tail.push('\n');
        if self.tail.len() > 2 * TAIL_BYTES {
            let mut cut = self.tail.len() - TAIL_BYTES;
            while !self.tail.is_char_boundary(cut) {
                cut += 1;
            }
            self.tail.drain(..cut);
        }
        self.batch_bytes += text.len();
        self.batch.push(LogLine {
            timestamp: now_ms(),
            message: text,
        });
    }

    /// Hands the batch to the store (waiting while the store is behind).
    async fn send(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let lines = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        self.store.append(&self.stream, lines).await;
    }

    async fn send_if_full(&mut self) {
        if self.batch_bytes >= BATCH_BYTES {
            self.send().await;
        }
    }

    fn take_tail(&mut self) -> String {
        let mut t = std::mem::take(&mut self.tail);
        if t.len() > TAIL_BYTES {
            let mut cut = t.len() - TAIL_BYTES;
            while !t.is_char_boundary(cut) {
                cut += 1;
            }
            t.drain(..cut);
        }
        t
    }
}

/// How a read of the pipe ended.
#[derive(Debug, PartialEq, Eq)]
enum Read {
    /// Nothing more for now.
    Empty,
    /// The byte budget of this read is spent; more may be there.
    More,
    /// End of file: every writer is gone.
    Eof,
}

/// Reads with plain read(2) (it sees bytes the reactor has not reported
/// yet) until the pipe is empty or `budget` bytes were read.
async fn read_available(
    pipe: &pipe::Receiver,
    lines: &mut Lines,
    chunk: &mut [u8],
    budget: usize,
) -> Read {
    let mut total = 0;
    loop {
        match nix::unistd::read(pipe.as_raw_fd(), chunk) {
            Ok(0) => return Read::Eof,
            Ok(n) => {
                lines.feed(&chunk[..n]);
                lines.send_if_full().await;
                total += n;
                if total >= budget {
                    return Read::More;
                }
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::EAGAIN) => return Read::Empty,
            Err(_) => return Read::Eof,
        }
    }
}

async fn run(shared: Arc<Shared>, mut stop: oneshot::Receiver<()>) {
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            ready = shared.pipe.readable() => {
                let mut guard = shared.state.lock().await;
                let st = &mut *guard;
                if st.eof {
                    // Nothing more will come; wait for the handle to go.
                    drop(guard);
                    let _ = (&mut stop).await;
                    break;
                }
                if ready.is_err() {
                    st.eof = true;
                } else {
                    // try_read clears tokio's readiness when the pipe is empty.
                    match shared.pipe.try_read(&mut st.chunk) {
                        Ok(0) => st.eof = true,
                        Ok(n) => {
                            st.lines.feed(&st.chunk[..n]);
                            if read_available(&shared.pipe, &mut st.lines, &mut st.chunk, READ_BURST).await
                                == Read::Eof
                            {
                                st.eof = true;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => st.eof = true,
                    }
                }
                if st.eof {
                    st.lines.end_partial();
                }
                st.lines.send().await;
            }
        }
    }
    // The sandbox is gone: what is left in the pipe, then close the stream.
    let mut guard = shared.state.lock().await;
    let st = &mut *guard;
    if !st.eof {
        read_available(&shared.pipe, &mut st.lines, &mut st.chunk, DRAIN_MAX).await;
    }
    st.lines.end_partial();
    st.lines.send().await;
    st.lines.store.close_stream(&st.lines.stream).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::Mutex;
    use std::time::Duration;

    use async_trait::async_trait;
    use stratus_api::LambdaError;
    use stratus_api::service::LogEvent;
    use stratus_types::{AccountId, LogStreamName};
    use tokio::sync::Semaphore;

    /// A store that records what it is given; `gate` (when set) holds every
    /// append until a permit is added.
    #[derive(Debug, Default)]
    struct Recorder {
        lines: Mutex<Vec<String>>,
        closed: Mutex<Vec<LogStreamKey>>,
        gate: Option<Semaphore>,
    }

    impl Recorder {
        fn lines(&self) -> Vec<String> {
            self.lines.lock().expect("lock").clone()
        }
    }

    #[async_trait]
    impl Logs for Recorder {
        async fn append(&self, _stream: &LogStreamKey, lines: Vec<LogLine>) {
            if let Some(g) = &self.gate {
                g.acquire().await.expect("gate").forget();
            }
            self.lines
                .lock()
                .expect("lock")
                .extend(lines.into_iter().map(|l| l.message));
        }
        async fn close_stream(&self, stream: &LogStreamKey) {
            self.closed.lock().expect("lock").push(stream.clone());
        }
        async fn flush(&self) {}
        async fn read(
            &self,
            _: &AccountId,
            _: &str,
            _: Option<u64>,
            _: usize,
            _: Duration,
        ) -> Result<Vec<LogEvent>, LambdaError> {
            Ok(Vec::new())
        }
        async fn remove(&self, _: &AccountId, _: &str) {}
    }

    fn stream() -> LogStreamKey {
        LogStreamKey {
            account: AccountId::default_local(),
            function: "f".into(),
            stream: LogStreamName::new(2026, 1, 1, "$LATEST", &"a".repeat(32)).expect("name"),
        }
    }

    fn pump(store: &Arc<Recorder>) -> (LogPump, std::fs::File) {
        let (r, w) = nix::unistd::pipe().expect("pipe");
        let store: Arc<dyn Logs> = Arc::clone(store) as Arc<dyn Logs>;
        let p = LogPump::start(r, stream(), store, tracing::Span::none()).expect("pump");
        (p, std::fs::File::from(w))
    }

    #[tokio::test]
    async fn drain_sees_everything_written_before_it_in_order() {
        let store = Arc::new(Recorder::default());
        let (p, mut w) = pump(&store);
        p.begin("START".into()).await;
        for i in 0..100 {
            writeln!(w, "line {i}").expect("write");
        }
        p.drain().await;
        let tail = p.finish(vec!["END".into(), "REPORT".into()]).await;
        let lines = store.lines();
        assert_eq!(lines.len(), 103);
        assert_eq!(lines[0], "START");
        assert_eq!(lines[100], "line 99");
        assert_eq!(lines[101..], ["END", "REPORT"]);
        assert!(tail.starts_with("START\nline 0\n"), "{tail}");
        assert!(tail.ends_with("line 99\nEND\nREPORT\n"));
    }

    #[tokio::test]
    async fn hostile_output_becomes_whole_bounded_lines() {
        let store = Arc::new(Recorder::default());
        let (p, mut w) = pump(&store);
        p.begin("START".into()).await;
        let mut out = vec![b'a'; MAX_LINE_BYTES + 5000];
        out.extend_from_slice(b"\n\xff\xfe binary\r\n\nno newline at the end");
        let writer = std::thread::spawn(move || {
            w.write_all(&out).expect("write");
            w
        });
        let w = tokio::task::spawn_blocking(move || writer.join())
            .await
            .expect("join")
            .expect("writer");
        p.drain().await;
        let tail = p.finish(vec!["END".into()]).await;
        let lines = store.lines();
        assert_eq!(
            lines.len(),
            6,
            "{:?}",
            lines.iter().map(String::len).collect::<Vec<_>>()
        );
        assert_eq!(lines[1], "a".repeat(MAX_LINE_BYTES), "cut to the limit");
        assert_eq!(lines[2], "\u{fffd}\u{fffd} binary");
        assert_eq!(lines[3], "");
        assert_eq!(
            lines[4], "no newline at the end",
            "ended with the invocation"
        );
        assert_eq!(lines[5], "END");
        assert!(tail.len() <= TAIL_BYTES);
        assert!(tail.ends_with("no newline at the end\nEND\n"));
        drop(w);
    }

    #[tokio::test]
    async fn the_tail_is_the_current_invocation_and_bounded() {
        let store = Arc::new(Recorder::default());
        let (p, mut w) = pump(&store);
        p.begin("START 1".into()).await;
        writeln!(w, "first").expect("write");
        p.drain().await;
        let t1 = p.finish(vec!["END 1".into()]).await;
        assert_eq!(t1, "START 1\nfirst\nEND 1\n");
        p.begin("START 2".into()).await;
        let writer = std::thread::spawn(move || {
            for i in 0..2000 {
                writeln!(w, "second {i:04} {}", "é".repeat(20)).expect("write");
            }
            w
        });
        let _w = tokio::task::spawn_blocking(move || writer.join())
            .await
            .expect("join")
            .expect("writer");
        p.drain().await;
        let t2 = p.finish(vec!["END 2".into()]).await;
        assert!(t2.len() <= TAIL_BYTES);
        assert!(
            !t2.contains("START 1") && !t2.contains("first"),
            "nothing of the first invocation"
        );
        assert!(t2.ends_with("END 2\n"));
        assert_eq!(store.lines().len(), 3 + 2002);
    }

    #[tokio::test]
    async fn a_store_that_is_behind_stops_the_reading_not_the_server() {
        let store = Arc::new(Recorder {
            gate: Some(Semaphore::new(0)),
            ..Recorder::default()
        });
        let (p, w) = pump(&store);
        nix::fcntl::fcntl(
            w.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .expect("nonblocking");
        // The function floods; nobody takes its lines.
        let writer = std::thread::spawn(move || {
            let mut w = w;
            let block = [b'x'; 4095]
                .iter()
                .chain(b"\n")
                .copied()
                .collect::<Vec<u8>>();
            let mut written = 0usize;
            let mut stuck_since = None;
            loop {
                match w.write(&block) {
                    Ok(n) => {
                        written += n;
                        stuck_since = None;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        let t = *stuck_since.get_or_insert_with(std::time::Instant::now);
                        if t.elapsed() > Duration::from_millis(500) {
                            return (written, w);
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => panic!("write: {e}"),
                }
                assert!(written < 64 * 1024 * 1024, "the pump never pushed back");
            }
        });
        let (written, w) = tokio::task::spawn_blocking(move || writer.join())
            .await
            .expect("join")
            .expect("writer");
        // What the pipe holds plus what the pump holds: one burst and one batch.
        assert!(
            written <= 1024 * 1024 + READ_BURST + BATCH_BYTES,
            "{written} bytes taken while the store was stuck"
        );
        // Once the store catches up, everything arrives.
        store.gate.as_ref().expect("gate").add_permits(1 << 20);
        drop(w);
        drop(p);
        tokio::time::timeout(Duration::from_secs(10), async {
            while store.closed.lock().expect("lock").is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the pump closes the stream");
        let lines = store.lines();
        assert_eq!(lines.len() * 4096, written, "no line lost");
    }

    #[tokio::test]
    async fn dropping_the_handle_closes_the_stream_after_a_last_read() {
        let store = Arc::new(Recorder::default());
        let (p, mut w) = pump(&store);
        write!(w, "last words").expect("write");
        drop(p);
        tokio::time::timeout(Duration::from_secs(10), async {
            while store.closed.lock().expect("lock").is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("closed");
        assert_eq!(store.lines(), ["last words"]);
        assert_eq!(store.closed.lock().expect("lock")[0], stream());
    }
}
