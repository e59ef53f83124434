//! Fuzzes `stratus_code::extract_zip` with arbitrary bytes as the zip.
//!
//! Beyond "never panics", each run checks the promises callers rely on: a
//! failed extraction leaves neither `dest` nor a temporary directory behind,
//! and a successful one never wrote more than the cap nor anything outside
//! the scratch directory.

#![no_main]

use std::fs;

use libfuzzer_sys::fuzz_target;

const CAP: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let work = tempfile::tempdir().expect("scratch dir");
    let root = work.path().join("root");
    fs::create_dir(&root).expect("mkdir root");
    let zip = work.path().join("in.zip");
    fs::write(&zip, data).expect("write input");
    let dest = root.join("dest");

    match stratus_code::extract_zip(&zip, &dest, CAP) {
        Ok(stats) => {
            assert!(
                stats.bytes <= CAP,
                "wrote {} bytes over the cap",
                stats.bytes
            );
            assert!(dest.is_dir(), "success leaves a directory");
        }
        Err(_) => assert!(!dest.exists(), "failure left dest behind"),
    }
    // Nothing but `dest` may appear next to it, and nothing outside `root`.
    let beside: Vec<_> = fs::read_dir(&root)
        .expect("ls root")
        .map(|e| e.expect("entry").file_name())
        .filter(|n| n != "dest")
        .collect();
    assert!(beside.is_empty(), "left behind: {beside:?}");
    let outside: Vec<_> = fs::read_dir(work.path())
        .expect("ls work")
        .map(|e| e.expect("entry").file_name())
        .filter(|n| n != "root" && n != "in.zip")
        .collect();
    assert!(outside.is_empty(), "escaped into: {outside:?}");
});
