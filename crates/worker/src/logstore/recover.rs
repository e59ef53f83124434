//! Opening a store: the index rebuilt from the files on disk.
//!
//! Only names the store itself writes are taken (a 12-digit account, a
//! function name, a Lambda stream name, a 20-digit segment name); anything
//! else is left alone and not counted. Each segment's last line is read to
//! learn its last sequence number; a torn last line (the server stopped
//! mid-write) is cut off, and a segment left with nothing is deleted.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use stratus_types::{AccountId, LogStreamName};

use super::{
    FUNCTION_DIR_BYTES, FnKey, FunctionLog, Index, LogStoreConfig, LogStoreError, MAX_LINE_BYTES,
    Segment, StreamState, segment, segment_disk_bytes,
};

#[derive(Debug)]
pub(super) struct Recovered {
    pub index: Index,
    pub max_seq: u64,
}

/// Subdirectories (or files, with `files`) of `dir` whose names pass `ok`.
fn entries(dir: &Path, files: bool) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() == files || ft.is_symlink() {
            continue;
        }
        if let Ok(name) = e.file_name().into_string() {
            out.push((name, e.path()));
        }
    }
    Ok(out)
}

fn digits(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_digit())
}

/// Every `<account>/<function>/<YYYY>/<MM>/<DD>/<leaf>` stream directory.
fn stream_dirs(root: &Path) -> Result<Vec<(FnKey, LogStreamName, PathBuf)>, LogStoreError> {
    let read_err = |path: &Path, source| LogStoreError::ReadDir {
        path: path.to_owned(),
        source,
    };
    let skip = |path: &Path, e: std::io::Error| {
        tracing::warn!(path = %path.display(), error = %e, "log store: cannot read a directory; its logs are not counted");
        Vec::new()
    };
    let mut out = Vec::new();
    for (account, adir) in entries(root, false).map_err(|e| read_err(root, e))? {
        let Ok(account) = AccountId::parse(&account) else {
            continue;
        };
        for (function, fdir) in entries(&adir, false).unwrap_or_else(|e| skip(&adir, e)) {
            if stratus_types::validate_function_name(&function).is_err() {
                continue;
            }
            let fkey = FnKey {
                account: account.clone(),
                function,
            };
            for (y, ydir) in entries(&fdir, false).unwrap_or_else(|e| skip(&fdir, e)) {
                if !digits(&y, 4) {
                    continue;
                }
                for (m, mdir) in entries(&ydir, false).unwrap_or_else(|e| skip(&ydir, e)) {
                    if !digits(&m, 2) {
                        continue;
                    }
                    for (d, ddir) in entries(&mdir, false).unwrap_or_else(|e| skip(&mdir, e)) {
                        if !digits(&d, 2) {
                            continue;
                        }
                        for (leaf, sdir) in entries(&ddir, false).unwrap_or_else(|e| skip(&ddir, e))
                        {
                            if let Ok(name) = LogStreamName::parse(&format!("{y}/{m}/{d}/{leaf}")) {
                                out.push((fkey.clone(), name, sdir));
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

pub(super) fn recover(root: &Path, cfg: &LogStoreConfig) -> Result<Recovered, LogStoreError> {
    let max_record = (cfg.max_line_bytes.max(MAX_LINE_BYTES) + 64) as u64;
    let mut index = Index::default();
    let mut max_seq = 0;
    let mut functions: HashMap<FnKey, FunctionLog> = HashMap::new();
    for (fkey, stream, sdir) in stream_dirs(root)? {
        let files = match entries(&sdir, true) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(path = %sdir.display(), error = %e, "log store: cannot read a stream directory");
                continue;
            }
        };
        let name = Arc::new(stream);
        let mut count = 0;
        let f = functions.entry(fkey).or_default();
        for (file, path) in files {
            let Some(first) = segment::parse_file_name(&file) else {
                continue;
            };
            match recover_segment(&path, first, max_record) {
                Ok(Some(r)) => {
                    max_seq = max_seq.max(r.last_seq);
                    f.last_seq = f.last_seq.max(r.last_seq);
                    f.last_write_ms = f.last_write_ms.max(r.mtime_ms);
                    f.bytes += segment_disk_bytes(r.len);
                    f.segments.insert(
                        first,
                        Segment {
                            stream: Arc::clone(&name),
                            last_seq: r.last_seq,
                            len: r.len,
                            checkpoints: Vec::new(),
                        },
                    );
                    count += 1;
                }
                Ok(None) => {
                    let _ = std::fs::remove_file(&path);
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "log store: cannot read a segment; it is not counted");
                }
            }
        }
        if count == 0 {
            let _ = std::fs::remove_dir(&sdir);
            continue;
        }
        f.bytes += f.stream_filled(&name);
        f.streams.insert(
            (*name).clone(),
            StreamState {
                name,
                segments: count,
                active: None,
                open: false,
            },
        );
    }
    for (k, mut f) in functions {
        if f.segments.is_empty() {
            continue;
        }
        f.bytes += FUNCTION_DIR_BYTES;
        index.total += f.bytes;
        index.functions.insert(k, f);
    }
    Ok(Recovered { index, max_seq })
}

#[derive(Debug, PartialEq, Eq)]
pub(super) struct RecoveredSegment {
    pub last_seq: u64,
    pub len: u64,
    pub mtime_ms: u64,
}

/// Reads a segment's last record, cutting off a torn or unreadable tail.
/// `None`: nothing usable is left (the caller deletes the file).
pub(super) fn recover_segment(
    path: &Path,
    first: u64,
    max_record: u64,
) -> std::io::Result<Option<RecoveredSegment>> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    let meta = file.metadata()?;
    let mtime_ms = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64);
    let mut len = meta.len();
    // Each round drops one bad last record; a few bad ones in a row mean
    // the file is not ours.
    for _ in 0..4 {
        if len == 0 {
            return Ok(None);
        }
        let window = len.min(2 * max_record + 2);
        let start = len - window;
        let mut buf = vec![0u8; window as usize];
        file.read_exact_at(&mut buf, start)?;
        let Some(end) = buf.iter().rposition(|&b| b == b'\n') else {
            if start == 0 {
                file.set_len(0)?;
            }
            return Ok(None);
        };
        let rec_start = match buf[..end].iter().rposition(|&b| b == b'\n') {
            Some(p) => p + 1,
            None if start == 0 => 0,
            None => return Ok(None),
        };
        let keep = start + end as u64 + 1;
        if keep < len {
            file.set_len(keep)?;
            len = keep;
        }
        match segment::parse_record(&buf[rec_start..end]) {
            Some((seq, _, _)) if seq >= first => {
                return Ok(Some(RecoveredSegment {
                    last_seq: seq,
                    len,
                    mtime_ms,
                }));
            }
            _ => {
                len = start + rec_start as u64;
                file.set_len(len)?;
            }
        }
    }
    Ok(None)
}
