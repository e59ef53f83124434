//! The segment file format: one text line per event,
//! `<seq> <timestamp ms> <message>\n`, named `<first seq, 20 digits>.log`.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Take};
use std::path::Path;

/// Bytes a record adds to its message (two numbers, two spaces, a newline),
/// at most.
pub(super) const RECORD_OVERHEAD: usize = 20 + 1 + 20 + 1 + 1;

const SUFFIX: &str = ".log";

pub(super) fn file_name(first: u64) -> String {
    format!("{first:020}{SUFFIX}")
}

/// The first sequence number a segment file name stands for.
pub(super) fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// The length of the record [`write_record`] writes.
pub(super) fn record_len(seq: u64, timestamp: u64, message: &str) -> usize {
    digits(seq) + 1 + digits(timestamp) + 1 + message.len() + 1
}

pub(super) fn write_record(buf: &mut Vec<u8>, seq: u64, timestamp: u64, message: &str) {
    use std::io::Write;
    // Writing to a Vec cannot fail.
    let _ = write!(buf, "{seq} {timestamp} ");
    buf.extend_from_slice(message.as_bytes());
    buf.push(b'\n');
}

fn number(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 20 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// Splits a record (without its newline) into (seq, timestamp, message).
pub(super) fn parse_record(line: &[u8]) -> Option<(u64, u64, &[u8])> {
    let sp = line.iter().position(|&b| b == b' ')?;
    let seq = number(&line[..sp])?;
    let rest = &line[sp + 1..];
    let sp = rest.iter().position(|&b| b == b' ')?;
    let ts = number(&rest[..sp])?;
    Some((seq, ts, &rest[sp + 1..]))
}

/// The pieces of `message` a store keeps: split at newlines, each cut to
/// `max` bytes on a character boundary.
pub(super) fn pieces(message: &str, max: usize) -> impl Iterator<Item = &str> {
    message.split('\n').map(move |line| {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.len() <= max {
            return line;
        }
        let mut end = max;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        &line[..end]
    })
}

/// Reads records of one segment from an offset up to its written length.
#[derive(Debug)]
pub(super) struct Cursor {
    reader: BufReader<Take<File>>,
    buf: Vec<u8>,
    max_record: u64,
}

/// One record read back.
#[derive(Debug)]
pub(super) struct Record {
    pub seq: u64,
    pub timestamp: u64,
    pub message: String,
}

impl Cursor {
    /// `None` when the file is gone (deleted since the index was read).
    pub(super) fn open(
        path: &Path,
        offset: u64,
        len: u64,
        max_record: u64,
    ) -> std::io::Result<Option<Cursor>> {
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        file.seek(SeekFrom::Start(offset))?;
        Ok(Some(Cursor {
            reader: BufReader::with_capacity(16 * 1024, file.take(len.saturating_sub(offset))),
            buf: Vec::new(),
            max_record,
        }))
    }

    /// The next well-formed record; `None` at the end. A record that does
    /// not parse is skipped; one longer than any the store writes ends the
    /// segment (it is not ours).
    pub(super) fn next_record(&mut self) -> std::io::Result<Option<Record>> {
        loop {
            self.buf.clear();
            let n = (&mut self.reader)
                .take(self.max_record)
                .read_until(b'\n', &mut self.buf)?;
            if n == 0 || self.buf.last() != Some(&b'\n') {
                return Ok(None);
            }
            if let Some((seq, timestamp, msg)) = parse_record(&self.buf[..n - 1]) {
                return Ok(Some(Record {
                    seq,
                    timestamp,
                    message: String::from_utf8_lossy(msg).into_owned(),
                }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let mut buf = Vec::new();
        write_record(&mut buf, 42, 1_700_000_000_123, "hello  world ");
        assert_eq!(buf, b"42 1700000000123 hello  world \n");
        let (seq, ts, msg) = parse_record(&buf[..buf.len() - 1]).expect("parses");
        assert_eq!(
            (seq, ts, msg),
            (42, 1_700_000_000_123, &b"hello  world "[..])
        );
        assert_eq!(
            record_len(42, 1_700_000_000_123, "hello  world "),
            buf.len()
        );
        assert_eq!(record_len(0, 9, "ab"), "0 9 ab\n".len());
        write_record(&mut buf, 43, 1, "");
        assert_eq!(parse_record(b"43 1 "), Some((43, 1, &b""[..])));
        for bad in [&b""[..], b"x 1 m", b"1", b"1 2", b"+1 2 m", b"1 -2 m"] {
            assert_eq!(parse_record(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn file_names() {
        assert_eq!(file_name(7), "00000000000000000007.log");
        assert_eq!(parse_file_name(&file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_file_name("7.log"), None);
        assert_eq!(parse_file_name("0000000000000000000a.log"), None);
        assert_eq!(parse_file_name("00000000000000000007.txt"), None);
    }

    #[test]
    fn pieces_split_and_cut() {
        let v: Vec<&str> = pieces("a\r\nbb\ncccc", 3).collect();
        assert_eq!(v, ["a", "bb", "ccc"]);
        let v: Vec<&str> = pieces("ééé", 5).collect();
        assert_eq!(v, ["éé"]);
    }
}
