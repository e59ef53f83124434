//! [`zip_directory`]: a deterministic zip of a function's directory.
//!
//! The same tree always gives the same bytes (so the same `CodeSha256`):
//! entries sorted by path, every timestamp 1980-01-01 00:00, unix modes kept
//! (an executable `bootstrap` stays executable), deflate. `__pycache__`
//! directories are skipped; symlinks are stored as symlinks (extraction
//! refuses ones that point outside the tree).

use std::fs::{self, File};
use std::io::{Cursor, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipWriter};

use crate::CodeError;

const SKIPPED_DIRS: &[&str] = &["__pycache__"];

enum Item {
    Dir,
    File { path: PathBuf, mode: u32, len: u64 },
    Symlink { target: String },
}

/// Zips the contents of `dir` (not `dir` itself) deterministically.
pub fn zip_directory(dir: &Path) -> Result<Vec<u8>, CodeError> {
    let mut items = Vec::new();
    collect(dir, "", &mut items)?;
    items.sort_by(|a, b| a.0.cmp(&b.0));

    let base = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .last_modified_time(DateTime::default());
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    for (name, item) in items {
        let pack_err = |source| CodeError::Pack {
            entry: name.clone(),
            source,
        };
        match item {
            Item::Dir => zip
                .add_directory(name.as_str(), base.unix_permissions(0o755))
                .map_err(pack_err)?,
            Item::Symlink { target } => zip
                .add_symlink(name.as_str(), target, base.unix_permissions(0o777))
                .map_err(pack_err)?,
            Item::File { path, mode, len } => {
                let options = base
                    .unix_permissions(mode & 0o777)
                    .large_file(len >= u64::from(u32::MAX));
                zip.start_file(name.as_str(), options).map_err(pack_err)?;
                let mut src = File::open(&path).map_err(|e| CodeError::io(&path, e))?;
                std::io::copy(&mut src, &mut zip).map_err(|e| CodeError::io(&path, e))?;
                zip.flush().map_err(|e| CodeError::io(&path, e))?;
            }
        }
    }
    let cursor = zip.finish().map_err(|source| CodeError::Pack {
        entry: dir.display().to_string(),
        source,
    })?;
    Ok(cursor.into_inner())
}

/// Lists `dir/rel` recursively into `out` as (zip name, item), without
/// following symlinks.
fn collect(root: &Path, rel: &str, out: &mut Vec<(String, Item)>) -> Result<(), CodeError> {
    let dir = root.join(rel);
    for entry in fs::read_dir(&dir).map_err(|e| CodeError::io(&dir, e))? {
        let entry = entry.map_err(|e| CodeError::io(&dir, e))?;
        let path = entry.path();
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            return Err(CodeError::io(
                &path,
                std::io::Error::new(std::io::ErrorKind::InvalidData, "file name is not UTF-8"),
            ));
        };
        let name = format!("{rel}{file_name}");
        let meta = fs::symlink_metadata(&path).map_err(|e| CodeError::io(&path, e))?;
        let kind = meta.file_type();
        if kind.is_dir() {
            if SKIPPED_DIRS.contains(&file_name) {
                continue;
            }
            let dir_name = format!("{name}/");
            collect(root, &dir_name, out)?;
            out.push((dir_name, Item::Dir));
        } else if kind.is_symlink() {
            let target = fs::read_link(&path).map_err(|e| CodeError::io(&path, e))?;
            let Some(target) = target.to_str() else {
                return Err(CodeError::io(
                    &path,
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "link target is not UTF-8",
                    ),
                ));
            };
            out.push((
                name,
                Item::Symlink {
                    target: target.to_owned(),
                },
            ));
        } else if kind.is_file() {
            out.push((
                name,
                Item::File {
                    path,
                    mode: meta.permissions().mode(),
                    len: meta.len(),
                },
            ));
        } else {
            return Err(CodeError::io(
                &path,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "not a file, directory or symlink",
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract_zip;

    fn write(path: &Path, data: &[u8], mode: u32) {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("mkdir");
        }
        fs::write(path, data).expect("write");
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    }

    fn sample_tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        write(&root.join("bootstrap"), b"#!/bin/sh\necho hi\n", 0o755);
        write(
            &root.join("lib/handler.py"),
            b"def handler(e, c):\n    return e\n",
            0o644,
        );
        write(
            &root.join("lib/__pycache__/handler.cpython-312.pyc"),
            b"junk",
            0o644,
        );
        write(&root.join("lib/deep/data.bin"), &[7u8; 100_000], 0o600);
        fs::create_dir_all(root.join("empty")).expect("mkdir");
        std::os::unix::fs::symlink("lib/handler.py", root.join("handler.py")).expect("symlink");
        dir
    }

    fn names(zip: &[u8]) -> Vec<String> {
        let archive = zip::ZipArchive::new(Cursor::new(zip)).expect("readable zip");
        archive.file_names().map(str::to_owned).collect()
    }

    #[test]
    fn deterministic_sorted_and_skips_pycache() {
        let tree = sample_tree();
        let first = zip_directory(tree.path()).expect("zip");
        let second = zip_directory(tree.path()).expect("zip again");
        assert_eq!(first, second, "same tree, same bytes");
        assert_eq!(
            names(&first),
            vec![
                "bootstrap",
                "empty/",
                "handler.py",
                "lib/",
                "lib/deep/",
                "lib/deep/data.bin",
                "lib/handler.py",
            ]
        );

        // Touching mtimes must not change the bytes.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(tree.path().join("bootstrap"), b"#!/bin/sh\necho hi\n").expect("rewrite");
        assert_eq!(zip_directory(tree.path()).expect("zip"), first);
    }

    #[test]
    fn roundtrip_through_extract_keeps_content_modes_and_links() {
        let tree = sample_tree();
        let zip = zip_directory(tree.path()).expect("zip");
        let work = tempfile::tempdir().expect("tempdir");
        let blob = work.path().join("code.zip");
        fs::write(&blob, &zip).expect("write zip");
        let dest = work.path().join("out");
        let stats = extract_zip(&blob, &dest, 10 << 20).expect("extract");
        assert_eq!(stats.files, 3);
        assert_eq!(stats.symlinks, 1);

        let mode = |p: &str| {
            fs::symlink_metadata(dest.join(p))
                .expect("stat")
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("bootstrap"), 0o755, "executables stay executable");
        assert_eq!(mode("lib/handler.py"), 0o644);
        assert_eq!(
            mode("lib/deep/data.bin"),
            0o644,
            "0600 becomes world-readable"
        );
        assert_eq!(mode("empty"), 0o755);
        assert!(!dest.join("lib/__pycache__").exists());
        assert_eq!(
            fs::read(dest.join("lib/deep/data.bin")).expect("read"),
            vec![7u8; 100_000]
        );
        assert_eq!(
            fs::read_link(dest.join("handler.py")).expect("link"),
            PathBuf::from("lib/handler.py")
        );
        assert_eq!(
            fs::read(dest.join("handler.py")).expect("through link"),
            b"def handler(e, c):\n    return e\n"
        );

        // Re-zipping the extracted tree lists the same entries.
        assert_eq!(names(&zip_directory(&dest).expect("rezip")), names(&zip));
    }

    #[test]
    fn empty_directory_zips_and_extracts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let zip = zip_directory(dir.path()).expect("zip");
        assert!(names(&zip).is_empty());
    }

    #[test]
    fn missing_directory_is_an_io_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = zip_directory(&dir.path().join("nope")).expect_err("missing dir");
        assert_eq!(err.kind(), crate::CodeErrorKind::Io);
    }
}
