//! Capture of a sandbox's output into per-invocation logs.
//!
//! The runtime's stdout and stderr arrive on one pipe. A background task
//! reads it as data arrives; when an invocation ends, [`LogPump::drain`]
//! reads whatever is still in the pipe *synchronously* (under the same lock),
//! so every byte the function wrote before posting its response is part of
//! that invocation's log, in order. The buffer is bounded: a function that
//! prints without end costs at most [`MAX_BUFFER`] bytes of server memory.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use tokio::net::unix::pipe;

/// Most bytes of output kept per sandbox between two invocation boundaries.
pub const MAX_BUFFER: usize = 256 * 1024;

#[derive(Debug)]
pub struct LogPump {
    pipe: pipe::Receiver,
    buf: Mutex<Vec<u8>>,
}

impl LogPump {
    /// Wraps the read end of the output pipe (made non-blocking by tokio).
    pub fn new(fd: OwnedFd) -> std::io::Result<Arc<Self>> {
        Ok(Arc::new(LogPump {
            pipe: pipe::Receiver::from_owned_fd(fd)?,
            buf: Mutex::new(Vec::new()),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.buf.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads until the pipe is empty. Returns false at end of file.
    fn read_available(&self, buf: &mut Vec<u8>) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            // A plain read(2): it sees bytes the reactor has not reported yet.
            match nix::unistd::read(self.pipe.as_raw_fd(), &mut chunk) {
                Ok(0) => return false,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if buf.len() > MAX_BUFFER {
                        let cut = buf.len() - MAX_BUFFER;
                        buf.drain(..cut);
                    }
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::EAGAIN) => return true,
                Err(_) => return false,
            }
        }
    }

    /// Reads the pipe until the runtime closes it.
    pub async fn run(self: Arc<Self>) {
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            if self.pipe.readable().await.is_err() {
                return;
            }
            let mut buf = self.lock();
            // try_read clears tokio's readiness when the pipe is empty.
            match self.pipe.try_read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if !self.read_available(&mut buf) {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    }

    /// Reads everything already written to the pipe into the buffer.
    pub fn drain(&self) {
        let mut buf = self.lock();
        self.read_available(&mut buf);
    }

    /// Appends a line the platform writes (START, END, REPORT...).
    pub fn push_line(&self, line: &str) {
        let mut buf = self.lock();
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
    }

    /// Takes the buffered log, leaving it empty.
    pub fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.lock())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[tokio::test]
    async fn drain_sees_everything_written_before_it() {
        let (r, w) = nix::unistd::pipe().expect("pipe");
        let pump = LogPump::new(r).expect("pump");
        let task = tokio::spawn(Arc::clone(&pump).run());
        let mut wf = std::fs::File::from(w);
        for i in 0..100 {
            writeln!(wf, "line {i}").expect("write");
        }
        pump.drain();
        let text = String::from_utf8(pump.take()).expect("utf8");
        assert_eq!(text.lines().count(), 100);
        assert!(text.ends_with("line 99\n"));
        drop(wf);
        task.await.expect("pump ends at EOF");
    }

    #[tokio::test]
    async fn buffer_is_bounded() {
        let (r, w) = nix::unistd::pipe().expect("pipe");
        let pump = LogPump::new(r).expect("pump");
        let mut wf = std::fs::File::from(w);
        let writer = std::thread::spawn(move || {
            let block = vec![b'x'; 64 * 1024];
            for _ in 0..32 {
                wf.write_all(&block).expect("write");
            }
        });
        let task = tokio::spawn(Arc::clone(&pump).run());
        // Join off the runtime thread: the pump must keep reading meanwhile.
        tokio::task::spawn_blocking(move || writer.join())
            .await
            .expect("join task")
            .expect("writer");
        task.await.expect("pump ends");
        assert!(pump.take().len() <= MAX_BUFFER);
    }
}
