use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use stratus_api::service::{LogEvent, LogLine, LogStreamKey, Logs};
use stratus_types::{AccountId, LogStreamName};

use super::*;

fn acct() -> AccountId {
    AccountId::default_local()
}

fn key(function: &str, n: u32) -> LogStreamKey {
    LogStreamKey {
        account: acct(),
        function: function.to_owned(),
        stream: LogStreamName::new(2026, 5, 2, "$LATEST", &format!("{n:032x}")).expect("name"),
    }
}

fn lines<S: AsRef<str>>(texts: &[S]) -> Vec<LogLine> {
    texts
        .iter()
        .map(|t| LogLine {
            timestamp: now_ms(),
            message: t.as_ref().to_owned(),
        })
        .collect()
}

fn small(per_function: u64, total: u64) -> LogStoreConfig {
    LogStoreConfig {
        max_bytes_per_function: per_function,
        max_bytes_total: total,
        max_line_bytes: 1000,
        segment_bytes: 8 * 1024,
        max_pending_bytes: 64 * 1024,
        max_age: None,
    }
}

async fn all(s: &DiskLogStore, function: &str) -> Vec<LogEvent> {
    let mut out: Vec<LogEvent> = Vec::new();
    loop {
        let after = out.last().map(|e| e.seq);
        let page = s
            .read(&acct(), function, after, 10_000, Duration::ZERO)
            .await
            .expect("read");
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

fn messages(events: &[LogEvent]) -> Vec<&str> {
    events.iter().map(|e| e.message.as_str()).collect()
}

/// Bytes the files and directories under `p` take on disk.
fn du(p: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(p) else {
        return 0;
    };
    let mut n = meta.blocks() * 512;
    if meta.is_dir() {
        for e in std::fs::read_dir(p).expect("read_dir").flatten() {
            n += du(&e.path());
        }
    }
    n
}

fn files_under(p: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                out.extend(files_under(&path));
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn lines_are_numbered_paged_and_merged_across_streams() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = DiskLogStore::open(dir.path(), LogStoreConfig::default()).expect("open");
    s.append(&key("f", 1), lines(&["a1", "a2"])).await;
    s.append(&key("f", 2), lines(&["b1"])).await;
    s.append(&key("f", 1), lines(&["a3"])).await;
    s.append(&key("g", 1), lines(&["other"])).await;
    let got = all(&s, "f").await;
    assert_eq!(messages(&got), ["a1", "a2", "b1", "a3"]);
    assert!(got.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(got[2].log_stream_name, key("f", 2).stream.as_str());
    assert_eq!(got[3].log_stream_name, key("f", 1).stream.as_str());
    let page = s
        .read(&acct(), "f", Some(got[0].seq), 2, Duration::ZERO)
        .await
        .expect("read");
    assert_eq!(messages(&page), ["a2", "b1"]);
    let none = s
        .read(&acct(), "f", Some(got[3].seq), 10, Duration::ZERO)
        .await
        .expect("read");
    assert!(none.is_empty());
    assert!(all(&s, "nothing").await.is_empty());
    assert!(all(&s, "../etc").await.is_empty(), "not a function name");
}

#[tokio::test]
async fn streams_are_directories_named_as_lambda_names_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = DiskLogStore::open(dir.path(), LogStoreConfig::default()).expect("open");
    s.append(&key("f", 7), lines(&["hello world", " x "])).await;
    s.flush().await;
    let files = files_under(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let rel = files[0].strip_prefix(dir.path()).expect("under root");
    let rel = rel.to_str().expect("utf8");
    let (stream_path, file) = rel.rsplit_once('/').expect("file name");
    assert_eq!(
        stream_path,
        format!("000000000000/f/2026/05/02/[$LATEST]{:032x}", 7)
    );
    assert!(segment::parse_file_name(file).is_some(), "{file}");
    let text = std::fs::read_to_string(&files[0]).expect("read");
    let events = all(&s, "f").await;
    assert_eq!(
        text,
        format!(
            "{} {} hello world\n{} {}  x \n",
            events[0].seq, events[0].timestamp, events[1].seq, events[1].timestamp
        )
    );
}

#[tokio::test]
async fn hostile_lines_are_split_cut_and_kept_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = DiskLogStore::open(dir.path(), small(1 << 20, 1 << 30)).expect("open");
    let giant = "é".repeat(2000); // 4,000 bytes; cut to 1,000 on a char boundary
    let odd = "nul\0 tab\t \u{fffd} bell\u{7}";
    s.append(
        &key("f", 1),
        lines(&["two\nlines", "crlf\r", "", &giant, odd, "   "]),
    )
    .await;
    let got = all(&s, "f").await;
    assert_eq!(
        messages(&got),
        [
            "two",
            "lines",
            "crlf",
            "",
            "é".repeat(500).as_str(),
            odd,
            "   "
        ]
    );
}

#[tokio::test]
async fn each_function_keeps_its_newest_bytes_within_its_cap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cap = 128 * 1024;
    let s = DiskLogStore::open(dir.path(), small(cap, 1 << 30)).expect("open");
    let n = 2000;
    for i in 0..n {
        let line = format!("line {i:05} {}", "x".repeat(90 + i % 50));
        s.append(&key("f", 1 + (i as u32 % 3)), lines(&[line]))
            .await;
        if i % 97 == 0 {
            s.flush().await;
            let fdir = dir.path().join("000000000000/f");
            assert!(du(&fdir) <= cap, "du {} at {i}", du(&fdir));
            assert!(s.function_bytes(&acct(), "f") <= cap);
        }
    }
    s.flush().await;
    let kept = all(&s, "f").await;
    assert!(s.function_bytes(&acct(), "f") <= cap);
    let fdir = dir.path().join("000000000000/f");
    assert!(du(&fdir) <= cap, "on disk {} > cap {cap}", du(&fdir));
    for f in files_under(&fdir) {
        let len = std::fs::metadata(&f).expect("stat").len();
        assert!(
            len <= 8 * 1024,
            "{f:?} is {len} bytes, over the segment size"
        );
    }
    let bytes: usize = kept.iter().map(|e| e.message.len()).sum();
    assert!(bytes > 48 * 1024, "keeps most of the cap: {bytes}");
    assert!(kept.windows(2).all(|w| w[0].seq < w[1].seq));
    // Oldest dropped first: what is kept is everything from some line on,
    // except lines of a stream whose older segment went first.
    let last = kept.last().expect("kept");
    assert!(last.message.starts_with(&format!("line {:05}", n - 1)));
    let first_kept: usize = kept
        .iter()
        .map(|e| e.message[5..10].parse::<usize>().expect("number"))
        .min()
        .expect("some");
    assert!(first_kept > 0, "the oldest lines are gone");
    let numbers: Vec<usize> = kept
        .iter()
        .map(|e| e.message[5..10].parse().expect("number"))
        .collect();
    let newest_missing = (first_kept..n).rev().find(|i| !numbers.contains(i));
    assert!(
        newest_missing.is_none_or(|m| m < n - 100),
        "only old lines are missing: {newest_missing:?}"
    );
}

#[tokio::test]
async fn the_total_cap_trims_the_least_recently_written_function_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let total = 96 * 1024;
    let s = DiskLogStore::open(dir.path(), small(1 << 20, total)).expect("open");
    let chunk: Vec<String> = (0..40)
        .map(|i| format!("{i} {}", "y".repeat(900)))
        .collect();
    for f in ["old", "mid", "new"] {
        s.append(&key(f, 1), lines(&chunk)).await;
        s.flush().await;
        // Distinct last-write times.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    s.append(&key("new", 1), lines(&chunk)).await;
    s.flush().await;
    assert!(s.total_bytes() <= total, "{}", s.total_bytes());
    assert!(du(dir.path()) <= total + 4 * 4096, "{}", du(dir.path()));
    let old = all(&s, "old").await;
    let new = all(&s, "new").await;
    assert!(
        old.is_empty(),
        "the least recently written function goes first"
    );
    assert!(!dir.path().join("000000000000/old").exists());
    assert!(
        new.len() >= 40,
        "the newest function keeps its lines: {}",
        new.len()
    );
}

#[tokio::test]
async fn logs_survive_a_restart_and_numbers_keep_increasing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let before = {
        let s = DiskLogStore::open(dir.path(), LogStoreConfig::default()).expect("open");
        s.append(&key("f", 1), lines(&["one", "two"])).await;
        s.append(&key("f", 2), lines(&["three"])).await;
        s.close_stream(&key("f", 1)).await;
        let got = all(&s, "f").await;
        s.flush().await;
        got
    };
    // A torn last line (the server stopped mid-write) is cut off.
    let seg = files_under(dir.path())
        .into_iter()
        .find(|p| p.to_string_lossy().contains(&format!("{:032x}", 2)))
        .expect("segment of stream 2");
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&seg)
            .expect("open");
        f.write_all(b"99999999999999999999 1 torn").expect("write");
    }
    let s = DiskLogStore::open(dir.path(), LogStoreConfig::default()).expect("reopen");
    let after = all(&s, "f").await;
    assert_eq!(after, before);
    assert!(
        std::fs::read(&seg).expect("read").ends_with(b"three\n"),
        "torn tail cut"
    );
    s.append(&key("f", 3), lines(&["four"])).await;
    let got = all(&s, "f").await;
    assert_eq!(messages(&got), ["one", "two", "three", "four"]);
    assert!(got[3].seq > got[2].seq);
    assert_eq!(s.function_bytes(&acct(), "f"), {
        // 3 segments of one block, 3 streams of one date, the function's directory.
        3 * BLOCK + 3 * STREAM_DIR_BYTES + DATE_DIRS_BYTES + FUNCTION_DIR_BYTES
    });
}

#[tokio::test]
async fn lowered_caps_apply_when_the_store_opens() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = DiskLogStore::open(dir.path(), small(1 << 20, 1 << 30)).expect("open");
        for i in 0..200 {
            s.append(&key("f", 1), lines(&[format!("{i} {}", "z".repeat(500))]))
                .await;
        }
        s.flush().await;
        assert!(s.function_bytes(&acct(), "f") > 64 * 1024);
    }
    let s = DiskLogStore::open(dir.path(), small(32 * 1024, 1 << 30)).expect("reopen");
    assert!(s.function_bytes(&acct(), "f") <= 32 * 1024);
    assert!(du(&dir.path().join("000000000000/f")) <= 32 * 1024);
    let got = all(&s, "f").await;
    assert!(
        got.last().is_some_and(|e| e.message.starts_with("199 ")),
        "{} events, bytes {}, files {:?}",
        got.len(),
        s.function_bytes(&acct(), "f"),
        files_under(dir.path())
    );
}

#[tokio::test]
async fn files_the_store_did_not_write_are_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stray = [
        "README",
        "000000000000/f/notes.txt",
        "000000000000/f/2026/05/02/not-a-stream/00000000000000000001.log",
        "not-an-account/f/2026/05/02/x",
    ];
    for p in stray {
        let p = dir.path().join(p);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, "1 2 three\n").expect("write");
    }
    let s = DiskLogStore::open(dir.path(), LogStoreConfig::default()).expect("open");
    assert_eq!(s.total_bytes(), 0);
    assert!(all(&s, "f").await.is_empty());
    for p in stray {
        assert!(dir.path().join(p).exists(), "{p} kept");
    }
}

#[tokio::test]
async fn removing_a_function_deletes_its_log_and_drops_late_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = DiskLogStore::open(dir.path(), LogStoreConfig::default()).expect("open");
    s.append(&key("f", 1), lines(&["before"])).await;
    s.append(&key("g", 1), lines(&["kept"])).await;
    s.remove(&acct(), "f").await;
    assert!(!dir.path().join("000000000000/f").exists());
    assert!(all(&s, "f").await.is_empty());
    assert_eq!(s.function_bytes(&acct(), "f"), 0);
    // The deleted function's sandbox is still printing: dropped.
    s.append(&key("f", 1), lines(&["late"])).await;
    s.flush().await;
    assert!(all(&s, "f").await.is_empty());
    assert!(!dir.path().join("000000000000/f").exists());
    s.close_stream(&key("f", 1)).await;
    // A function created again under the name starts a new log.
    s.append(&key("f", 2), lines(&["again"])).await;
    assert_eq!(messages(&all(&s, "f").await), ["again"]);
    assert_eq!(messages(&all(&s, "g").await), ["kept"]);
    assert_eq!(
        s.total_bytes(),
        s.function_bytes(&acct(), "f") + s.function_bytes(&acct(), "g")
    );
}

#[tokio::test]
async fn readers_wait_for_new_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Arc::new(DiskLogStore::open(dir.path(), LogStoreConfig::default()).expect("open"));
    let reader = {
        let s = Arc::clone(&s);
        tokio::spawn(async move {
            s.read(&acct(), "f", None, 10, Duration::from_secs(20))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = std::time::Instant::now();
    s.append(&key("f", 1), lines(&["late"])).await;
    let got = reader.await.expect("reader").expect("read");
    assert_eq!(messages(&got), ["late"]);
    assert!(t0.elapsed() < Duration::from_secs(5), "woken by the write");
    let t0 = std::time::Instant::now();
    let none = s
        .read(
            &acct(),
            "f",
            Some(got[0].seq),
            10,
            Duration::from_millis(300),
        )
        .await
        .expect("read");
    assert!(none.is_empty(), "times out empty");
    assert!(t0.elapsed() >= Duration::from_millis(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_keep_every_line_and_each_streams_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Arc::new(DiskLogStore::open(dir.path(), LogStoreConfig::default()).expect("open"));
    let streams = 8u32;
    let batches = 100;
    let mut tasks = Vec::new();
    for st in 0..streams {
        let s = Arc::clone(&s);
        tasks.push(tokio::spawn(async move {
            for b in 0..batches {
                let batch: Vec<String> = (0..10).map(|i| format!("{st} {b} {i}")).collect();
                s.append(&key("f", st), lines(&batch)).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let got = all(&s, "f").await;
    assert_eq!(got.len(), (streams * batches * 10) as usize);
    assert!(got.windows(2).all(|w| w[0].seq < w[1].seq));
    for st in 0..streams {
        let name = key("f", st).stream;
        let mine: Vec<&str> = got
            .iter()
            .filter(|e| e.log_stream_name == name.as_str())
            .map(|e| e.message.as_str())
            .collect();
        let want: Vec<String> = (0..batches)
            .flat_map(|b| (0..10).map(move |i| format!("{st} {b} {i}")))
            .collect();
        assert_eq!(mine, want, "stream {st} in order");
    }
}

#[tokio::test]
async fn a_page_holds_about_a_mebibyte_and_many_streams_stay_readable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = DiskLogStore::open(dir.path(), LogStoreConfig::default()).expect("open");
    // More streams than the writer keeps files open for.
    for round in 0..3 {
        for st in 0..300u32 {
            let batch: Vec<String> = (0..4)
                .map(|i| format!("{round} {st} {i} {}", "q".repeat(1000)))
                .collect();
            s.append(&key("f", st), lines(&batch)).await;
        }
    }
    let page = s
        .read(&acct(), "f", None, 10_000, Duration::ZERO)
        .await
        .expect("read");
    let bytes: usize = page.iter().map(|e| e.message.len()).sum();
    assert!(
        (READ_MAX_BYTES..READ_MAX_BYTES + 2000).contains(&bytes),
        "{bytes}"
    );
    let got = all(&s, "f").await;
    assert_eq!(got.len(), 3 * 300 * 4);
    assert!(got.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(got[0].message.starts_with("0 0 0 "));
    assert!(got[got.len() - 1].message.starts_with("2 299 3 "));
}

#[test]
fn recovering_a_segment_cuts_torn_and_foreign_tails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join(segment::file_name(10));
    let check = |content: &[u8], want: Option<(u64, &[u8])>| {
        std::fs::write(&p, content).expect("write");
        let got = recover::recover_segment(&p, 10, 1000).expect("recover");
        match want {
            None => assert!(got.is_none(), "{content:?} -> {got:?}"),
            Some((last, kept)) => {
                let got = got.expect("usable");
                assert_eq!(got.last_seq, last);
                assert_eq!(got.len, kept.len() as u64);
                assert_eq!(std::fs::read(&p).expect("read"), kept);
            }
        }
    };
    check(b"10 1 a\n11 1 b\n", Some((11, b"10 1 a\n11 1 b\n")));
    check(b"10 1 a\n11 1 b", Some((10, b"10 1 a\n")));
    check(b"10 1 a\ngarbage\n", Some((10, b"10 1 a\n")));
    check(b"10 1 a\n9 1 before first\n", Some((10, b"10 1 a\n")));
    check(b"torn", None);
    check(b"", None);
    let mut long = b"10 1 a\n".to_vec();
    long.extend(std::iter::repeat_n(b'x', 5000));
    long.push(b'\n');
    check(&long, None);
}

fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    fn walk(p: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|x| x == "log") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out
}

#[tokio::test]
async fn segments_older_than_the_max_age_are_deleted_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = DiskLogStore::open(dir.path(), small(1 << 20, 1 << 30)).expect("open");
        s.append(&key("old", 1), lines(&["from long ago"])).await;
        s.append(&key("new", 2), lines(&["recent"])).await;
        s.flush().await;
    }
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
    for f in segment_files(&dir.path().join(acct().as_str()).join("old")) {
        std::fs::File::options()
            .write(true)
            .open(&f)
            .and_then(|h| h.set_modified(two_hours_ago))
            .expect("age the segment");
    }
    let cfg = small(1 << 20, 1 << 30).with_max_age(Some(Duration::from_secs(3600)));
    let s = DiskLogStore::open(dir.path(), cfg).expect("reopen");
    assert!(all(&s, "old").await.is_empty());
    assert_eq!(messages(&all(&s, "new").await), ["recent"]);
    assert!(!dir.path().join(acct().as_str()).join("old").exists());
}

#[tokio::test]
async fn the_expiry_ticker_deletes_lines_once_they_are_too_old() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = small(1 << 20, 1 << 30).with_max_age(Some(Duration::from_secs(1)));
    assert_eq!(cfg.expiry_interval(), Some(Duration::from_secs(1)));
    let s = DiskLogStore::open(dir.path(), cfg).expect("open");
    s.append(&key("f", 1), lines(&["short-lived"])).await;
    s.flush().await;
    assert_eq!(messages(&all(&s, "f").await), ["short-lived"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !all(&s, "f").await.is_empty() {
        assert!(std::time::Instant::now() < deadline, "never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(s.total_bytes(), 0);
}
