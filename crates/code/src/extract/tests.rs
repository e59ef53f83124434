//! Tests of [`extract_zip`]: every rejection built with the zip writer, the
//! mode rules, and property tests that hostile bytes never panic.

use std::io::Cursor;
use std::os::unix::fs::PermissionsExt;

use proptest::prelude::*;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use super::*;
use crate::CodeErrorKind;

enum E<'a> {
    File(&'a str, &'a [u8], u32),
    Dir(&'a str),
    Link(&'a str, &'a str),
}

fn build(entries: &[E<'_>]) -> Vec<u8> {
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
    for e in entries {
        match e {
            E::File(name, data, mode) => {
                zip.start_file(*name, opts.unix_permissions(*mode))
                    .expect("start_file");
                zip.write_all(data).expect("write");
            }
            E::Dir(name) => zip.add_directory(*name, opts).expect("add_directory"),
            E::Link(name, target) => zip.add_symlink(*name, *target, opts).expect("add_symlink"),
        }
    }
    zip.finish().expect("finish").into_inner()
}

struct Run {
    work: tempfile::TempDir,
    dest: PathBuf,
    result: Result<ExtractStats, CodeError>,
}

impl Run {
    fn err(&self) -> &CodeError {
        match &self.result {
            Err(e) => e,
            Ok(s) => panic!("expected an error, extracted {s:?}"),
        }
    }

    /// After a failure nothing is left but the input zip: no dest, no temp.
    fn assert_clean(&self) {
        assert!(!self.dest.exists(), "dest must not exist after a failure");
        let left: Vec<_> = fs::read_dir(self.work.path())
            .expect("read work dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(
            left,
            vec![OsString::from("in.zip")],
            "only the input remains"
        );
    }
}

fn run(bytes: &[u8], cap: u64) -> Run {
    let work = tempfile::tempdir().expect("tempdir");
    let zip_path = work.path().join("in.zip");
    fs::write(&zip_path, bytes).expect("write zip");
    let dest = work.path().join("out");
    let result = extract_zip(&zip_path, &dest, cap);
    Run { work, dest, result }
}

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .expect("stat")
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn extracts_files_dirs_and_inside_links() {
    let zip = build(&[
        E::Dir("lib/"),
        E::File("lib/a.txt", b"alpha", 0o644),
        E::File("bin/tool", b"#!/bin/sh\n", 0o755),
        E::Link("lib/link-to-tool", "../bin/tool"),
        E::Link("bin-alias", "bin"),
        E::Link("self", "."),
        E::Link("lib/nested/deeper/up", "../../a.txt"),
        E::Link("dangling", "not/there"),
    ]);
    let r = run(&zip, 1 << 20);
    let stats = r.result.as_ref().expect("extract");
    assert_eq!(stats.files, 2);
    assert_eq!(stats.dirs, 1);
    assert_eq!(stats.symlinks, 5);
    assert!(!stats.already_present);
    assert_eq!(fs::read(r.dest.join("lib/a.txt")).expect("read"), b"alpha");
    assert_eq!(
        fs::read(r.dest.join("lib/link-to-tool")).expect("via link"),
        b"#!/bin/sh\n"
    );
    assert_eq!(
        fs::read(r.dest.join("bin-alias/tool")).expect("via dir link"),
        b"#!/bin/sh\n"
    );
    assert_eq!(
        fs::read(r.dest.join("lib/nested/deeper/up")).expect("up"),
        b"alpha"
    );
    let leftovers: Vec<_> = fs::read_dir(r.work.path())
        .expect("ls")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(leftovers.len(), 2, "no temp dir left behind: {leftovers:?}");
}

#[test]
fn modes_are_normalised() {
    let zip = build(&[
        E::File("bootstrap", b"#!/bin/sh\n", 0o700),
        E::File("private", b"p", 0o600),
        E::File("user-exec-only", b"x", 0o100),
        E::File("setuid", b"s", 0o4755),
        E::File("plain", b"p", 0o644),
        E::File("sub/dir/f", b"f", 0o640),
    ]);
    let r = run(&zip, 1 << 20);
    r.result.as_ref().expect("extract");
    assert_eq!(mode_of(&r.dest.join("bootstrap")), 0o755);
    assert_eq!(mode_of(&r.dest.join("private")), 0o644);
    assert_eq!(mode_of(&r.dest.join("user-exec-only")), 0o755);
    assert_eq!(mode_of(&r.dest.join("setuid")), 0o755, "no setuid survives");
    assert_eq!(mode_of(&r.dest.join("plain")), 0o644);
    assert_eq!(mode_of(&r.dest.join("sub/dir/f")), 0o644);
    assert_eq!(mode_of(&r.dest), 0o755);
    assert_eq!(mode_of(&r.dest.join("sub")), 0o755);
    assert_eq!(mode_of(&r.dest.join("sub/dir")), 0o755);
}

#[test]
fn empty_zip_gives_empty_dir() {
    let r = run(&build(&[]), 1 << 20);
    let stats = r.result.as_ref().expect("extract");
    assert_eq!(stats, &ExtractStats::default());
    assert!(r.dest.is_dir());
    assert_eq!(fs::read_dir(&r.dest).expect("ls").count(), 0);
}

#[test]
fn existing_dest_is_taken_as_extracted() {
    let work = tempfile::tempdir().expect("tempdir");
    let zip_path = work.path().join("in.zip");
    fs::write(&zip_path, build(&[E::File("a", b"new", 0o644)])).expect("write");
    let dest = work.path().join("out");
    fs::create_dir(&dest).expect("mkdir");
    fs::write(dest.join("a"), b"old").expect("write");
    let stats = extract_zip(&zip_path, &dest, 1 << 20).expect("extract");
    assert!(stats.already_present);
    assert_eq!(fs::read(dest.join("a")).expect("read"), b"old");
}

#[test]
fn creates_missing_parents_of_dest() {
    let work = tempfile::tempdir().expect("tempdir");
    let zip_path = work.path().join("in.zip");
    fs::write(&zip_path, build(&[E::File("a", b"x", 0o644)])).expect("write");
    let dest = work.path().join("cache/ab/abcdef");
    extract_zip(&zip_path, &dest, 1 << 20).expect("extract");
    assert_eq!(fs::read(dest.join("a")).expect("read"), b"x");
}

fn assert_unsafe(entries: &[E<'_>]) -> Run {
    let r = run(&build(entries), 1 << 20);
    assert_eq!(r.err().kind(), CodeErrorKind::Unsafe, "{}", r.err());
    r.assert_clean();
    r
}

#[test]
fn rejects_zip_slip() {
    let r = assert_unsafe(&[
        E::File("ok", b"fine", 0o644),
        E::File("../evil", b"x", 0o644),
    ]);
    assert!(
        matches!(r.err(), CodeError::UnsafePath { entry, .. } if entry == "../evil"),
        "{:?}",
        r.err()
    );
    assert_unsafe(&[E::File("a/../../evil", b"x", 0o644)]);
    assert_unsafe(&[E::File("a/./../../../evil", b"x", 0o644)]);
    assert_unsafe(&[E::Dir("../evil-dir/")]);
    assert!(!r.work.path().join("../evil").exists());
}

#[test]
fn rejects_absolute_paths() {
    let r = assert_unsafe(&[E::File("/etc/x", b"x", 0o644)]);
    assert!(
        matches!(r.err(), CodeError::UnsafePath { entry, .. } if entry == "/etc/x"),
        "{:?}",
        r.err()
    );
    assert_unsafe(&[E::Dir("/tmp/")]);
}

#[test]
fn rejects_escaping_symlinks() {
    for (name, target) in [
        ("link", "/etc/passwd"),
        ("link", ".."),
        ("link", "../outside"),
        ("sub/link", "../../x"),
        ("sub/link", "./../.."),
        ("a/b/c", "../../../etc"),
    ] {
        let r = assert_unsafe(&[E::Link(name, target)]);
        assert!(
            matches!(r.err(), CodeError::UnsafeSymlink { entry, .. } if entry == name),
            "{name} -> {target}: {:?}",
            r.err()
        );
    }
}

#[test]
fn rejects_symlinks_escaping_through_other_symlinks() {
    // Each target looks inside on its own; followed, `here/..` is `dest/..`.
    assert_unsafe(&[E::Link("here", "."), E::Link("out", "here/..")]);
    assert_unsafe(&[
        E::Dir("d/"),
        E::Link("d/root", ".."),
        E::Link("d/up", "root/../x"),
    ]);
    // Chains declared in the "wrong" order are resolved the same way.
    assert_unsafe(&[E::Link("z", "y/.."), E::Link("y", ".")]);
    // Loops are refused rather than followed forever.
    assert_unsafe(&[E::Link("l1", "l2/x"), E::Link("l2", "l1/x")]);
}

#[test]
fn rejects_writing_through_or_over_symlinks() {
    // A file whose parent is also a symlink entry: the directory made for
    // the file and the link collide.
    assert_unsafe(&[
        E::Link("d", "sub"),
        E::Dir("sub/"),
        E::File("d/x", b"x", 0o644),
    ]);
    // A link placed under another link.
    assert_unsafe(&[E::Dir("sub/"), E::Link("d", "sub"), E::Link("d/l", "x")]);
    // Two names for one path.
    assert_unsafe(&[E::File("a", b"1", 0o644), E::File("./a", b"2", 0o644)]);
    assert_unsafe(&[E::File("a", b"1", 0o644), E::File("a/b", b"2", 0o644)]);
}

#[test]
fn rejects_declared_size_over_cap_before_writing() {
    let big = vec![0u8; 10_000];
    let zip = build(&[E::File("small", b"s", 0o644), E::File("big", &big, 0o644)]);
    let r = run(&zip, 5_000);
    assert!(
        matches!(r.err(), CodeError::TooLarge { entry, limit: 5_000 } if entry == "big"),
        "{:?}",
        r.err()
    );
    r.assert_clean();
    // The cap is inclusive.
    let exact = run(&zip, 10_001);
    assert_eq!(exact.result.as_ref().expect("at cap").bytes, 10_001);
}

/// Overwrites the uncompressed size in every local and central header.
fn lie_about_sizes(zip: &mut [u8], size: u32) {
    let le = size.to_le_bytes();
    let mut i = 0;
    while i + 4 <= zip.len() {
        let sig = zip.get(i..i + 4).expect("in range");
        let offset = match sig {
            b"PK\x03\x04" => Some(22),
            b"PK\x01\x02" => Some(24),
            _ => None,
        };
        if let Some(off) = offset {
            zip.get_mut(i + off..i + off + 4)
                .expect("header in range")
                .copy_from_slice(&le);
        }
        i += 1;
    }
}

#[test]
fn rejects_bomb_that_lies_in_its_headers() {
    let payload = vec![0u8; 2_000_000];
    let mut zip = build(&[E::File("bomb", &payload, 0o644)]);
    assert!(zip.len() < 10_000, "zeros compress well");
    lie_about_sizes(&mut zip, 10);
    let r = run(&zip, 100_000);
    assert_eq!(r.err().kind(), CodeErrorKind::TooLarge, "{}", r.err());
    r.assert_clean();
}

#[test]
fn rejects_too_many_entries() {
    let zip = build(&[
        E::File("a", b"", 0o644),
        E::File("b", b"", 0o644),
        E::File("c", b"", 0o644),
    ]);
    let mut archive = ZipArchive::new(Cursor::new(zip)).expect("zip");
    let err = check_declared(&mut archive, 1 << 20, 2).expect_err("over the entry cap");
    assert!(
        matches!(err, CodeError::TooManyEntries { count: 3, limit: 2 }),
        "{err:?}"
    );
    assert_eq!(err.kind(), CodeErrorKind::TooLarge);
    check_declared(&mut archive, 1 << 20, 3).expect("at the entry cap");
}

#[test]
fn rejects_corrupt_input() {
    let r = run(b"this is not a zip file at all", 1 << 20);
    assert!(
        matches!(r.err(), CodeError::CorruptArchive { .. }),
        "{:?}",
        r.err()
    );
    r.assert_clean();

    let r = run(b"", 1 << 20);
    assert_eq!(r.err().kind(), CodeErrorKind::Corrupt);

    let good = build(&[E::File("a.txt", &[b'x'; 50_000], 0o644)]);
    let r = run(good.get(..good.len() / 2).expect("half"), 1 << 20);
    assert_eq!(
        r.err().kind(),
        CodeErrorKind::Corrupt,
        "truncated: {}",
        r.err()
    );
    r.assert_clean();

    // Damage the compressed data (after the 30-byte local header and name).
    let mut damaged = build(&[E::File(
        "a.txt",
        &(0..50_000u32)
            .map(|i| (i * 7 % 256) as u8)
            .collect::<Vec<_>>(),
        0o644,
    )]);
    for b in damaged.iter_mut().skip(60).take(40) {
        *b ^= 0x5a;
    }
    let r = run(&damaged, 1 << 20);
    assert_eq!(
        r.err().kind(),
        CodeErrorKind::Corrupt,
        "damaged: {}",
        r.err()
    );
    assert!(
        matches!(r.err(), CodeError::CorruptEntry { entry, .. } if entry == "a.txt"),
        "{:?}",
        r.err()
    );
    r.assert_clean();
}

#[test]
fn missing_input_is_io() {
    let work = tempfile::tempdir().expect("tempdir");
    let err = extract_zip(&work.path().join("nope.zip"), &work.path().join("out"), 1)
        .expect_err("missing input");
    assert_eq!(err.kind(), CodeErrorKind::Io);
}

#[test]
fn relative_path_rules() {
    assert_eq!(
        relative_path("a/b").expect("ok"),
        Some(PathBuf::from("a/b"))
    );
    assert_eq!(
        relative_path("./a//b/").expect("ok"),
        Some(PathBuf::from("a/b"))
    );
    assert_eq!(relative_path("./").expect("ok"), None);
    assert_eq!(
        relative_path("a\\..\\b").expect("literal backslashes"),
        Some(PathBuf::from("a\\..\\b"))
    );
    for bad in [
        "../a",
        "a/../../b",
        "/abs",
        "a\0b",
        &"x".repeat(300),
        &"a/".repeat(2100),
    ] {
        assert!(relative_path(bad).is_err(), "{bad:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let r = run(&bytes, 1 << 16);
        if r.result.is_err() {
            r.assert_clean();
        }
    }

    #[test]
    fn damaged_zips_never_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut zip = build(&[
            E::Dir("d/"),
            E::File("d/f", b"hello hello hello hello", 0o755),
            E::Link("l", "d/f"),
        ]);
        for (at, value) in flips {
            let i = at.index(zip.len());
            if let Some(b) = zip.get_mut(i) {
                *b = value;
            }
        }
        let r = run(&zip, 1 << 16);
        if r.result.is_err() {
            r.assert_clean();
        }
    }
}
