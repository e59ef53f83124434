//! Reading a function's log: its streams' segments merged by `seq`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::PathBuf;
use std::sync::Arc;

use stratus_api::LambdaError;
use stratus_api::service::LogEvent;
use stratus_types::LogStreamName;

use super::segment::{Cursor, Record};
use super::{FnKey, MAX_LINE_BYTES, READ_MAX_BYTES, Shared, segment_path};

/// A segment that may hold events after the reader's position.
#[derive(Debug)]
struct Candidate {
    path: PathBuf,
    stream: Arc<LogStreamName>,
    /// No event in it has a smaller seq.
    lower_bound: u64,
    offset: u64,
    len: u64,
}

/// Events of `f` with `seq > after`, at most `limit` and about
/// [`READ_MAX_BYTES`] of messages.
pub(super) async fn collect(
    shared: &Arc<Shared>,
    f: &FnKey,
    after: Option<u64>,
    limit: usize,
) -> Result<Vec<LogEvent>, LambdaError> {
    let after = after.unwrap_or(0);
    let candidates = candidates(shared, f, after);
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let max_record = (shared.cfg.max_line_bytes.max(MAX_LINE_BYTES) + 64) as u64;
    let function = f.function.clone();
    tokio::task::spawn_blocking(move || merge(candidates, after, limit, max_record))
        .await
        .map_err(|e| LambdaError::service(format!("reading the log of {function}: {e}")))?
        .map_err(|e| LambdaError::service(format!("reading the log of {}: {e}", f.function)))
}

/// The segments (oldest first) that may hold events after `after`, with
/// where to start reading each.
fn candidates(shared: &Shared, f: &FnKey, after: u64) -> Vec<Candidate> {
    let idx = shared.lock();
    let Some(log) = idx.functions.get(f) else {
        return Vec::new();
    };
    if log.last_seq <= after {
        return Vec::new();
    }
    log.segments
        .iter()
        .filter(|(_, s)| s.len > 0 && s.last_seq > after)
        .map(|(&first, s)| {
            // The last checkpoint at or before `after` (records before it are older).
            let (lower_bound, offset) = s
                .checkpoints
                .iter()
                .take_while(|(seq, _)| *seq <= after)
                .last()
                .copied()
                .unwrap_or((first, 0));
            Candidate {
                path: segment_path(&shared.root, f, &s.stream, first),
                stream: Arc::clone(&s.stream),
                lower_bound: lower_bound.max(after.saturating_add(1)),
                offset,
                len: s.len,
            }
        })
        .collect()
}

/// A k-way merge that opens a segment only when it may hold the next
/// event, so files are open only while their ranges overlap.
fn merge(
    candidates: Vec<Candidate>,
    after: u64,
    limit: usize,
    max_record: u64,
) -> std::io::Result<Vec<LogEvent>> {
    // (seq or lower bound, 0 = not opened yet / 1 = record ready, candidate)
    let mut heap: BinaryHeap<Reverse<(u64, u8, usize)>> = candidates
        .iter()
        .enumerate()
        .map(|(i, c)| Reverse((c.lower_bound, 0, i)))
        .collect();
    let mut cursors: Vec<Option<Cursor>> = candidates.iter().map(|_| None).collect();
    let mut ready: Vec<Option<Record>> = candidates.iter().map(|_| None).collect();
    let mut out = Vec::new();
    let mut bytes = 0usize;
    while let Some(Reverse((_, state, i))) = heap.pop() {
        if state == 1 {
            let Some(r) = ready[i].take() else { continue };
            bytes += r.message.len();
            out.push(LogEvent {
                seq: r.seq,
                timestamp: r.timestamp,
                log_stream_name: candidates[i].stream.as_str().to_owned(),
                message: r.message,
            });
            if out.len() >= limit || bytes >= READ_MAX_BYTES {
                break;
            }
        } else {
            let c = &candidates[i];
            cursors[i] = Cursor::open(&c.path, c.offset, c.len, max_record)?;
        }
        // Queue the segment's next event after `after`, if any.
        let Some(cursor) = cursors[i].as_mut() else {
            continue;
        };
        loop {
            match cursor.next_record()? {
                Some(r) if r.seq <= after => continue,
                Some(r) => {
                    heap.push(Reverse((r.seq, 1, i)));
                    ready[i] = Some(r);
                    break;
                }
                None => {
                    cursors[i] = None;
                    break;
                }
            }
        }
    }
    Ok(out)
}
