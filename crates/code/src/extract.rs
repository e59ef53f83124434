//! [`extract_zip`]: unpacking an untrusted code zip into a directory.
//!
//! The archive is unpacked into a fresh sibling directory
//! (`<dest>.tmp-<random>`) and renamed onto `dest` only when complete and
//! checked, so `dest` is either absent or whole. Because `dest` is named by
//! the archive's digest, an existing `dest` is taken as already extracted.
//!
//! Order of work, each step refusing what the next could be fooled by:
//! 1. entry count and the sum of declared sizes against the caps;
//! 2. directories and regular files, each path checked to stay inside the
//!    tree, each byte counted as written (headers may lie);
//! 3. symlinks last, so no file is ever written through one; each link is
//!    then resolved hop by hop, as the kernel would, and must stay inside.
//!
//! Files get mode 0755 if any executable bit is set in the zip, else 0644;
//! directories get 0755. Sandboxes read the tree as another uid.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{BufReader, Read, Write};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use zip::ZipArchive;

use crate::CodeError;

/// The most entries an archive may have.
pub const MAX_ENTRIES: usize = 100_000;
/// The longest symlink target accepted, in bytes.
const MAX_LINK_TARGET: u64 = 4096;
/// The most symlinks followed while resolving one link (as Linux's ELOOP).
const MAX_LINK_HOPS: usize = 40;
/// Longest path component and whole relative path accepted.
const MAX_COMPONENT: usize = 255;
const MAX_PATH: usize = 4000;

const FILE_MODE: u32 = 0o644;
const EXEC_MODE: u32 = 0o755;
const DIR_MODE: u32 = 0o755;

/// What an extraction produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtractStats {
    /// Regular files written.
    pub files: u64,
    /// Directory entries in the archive (parents made implicitly not counted).
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Uncompressed bytes written (file contents and link targets).
    pub bytes: u64,
    /// `dest` existed already, so nothing was extracted.
    pub already_present: bool,
}

/// Extracts the zip at `zip_path` into `dest`, which must not exist yet
/// (if it does, returns at once with [`ExtractStats::already_present`]).
/// At most `max_unzipped_bytes` of content are written.
pub fn extract_zip(
    zip_path: &Path,
    dest: &Path,
    max_unzipped_bytes: u64,
) -> Result<ExtractStats, CodeError> {
    if fs::symlink_metadata(dest).is_ok() {
        return Ok(present());
    }
    let file = File::open(zip_path).map_err(|e| CodeError::io(zip_path, e))?;
    let mut archive =
        ZipArchive::new(BufReader::new(file)).map_err(|source| CodeError::CorruptArchive {
            path: zip_path.to_path_buf(),
            source,
        })?;
    check_declared(&mut archive, max_unzipped_bytes, MAX_ENTRIES)?;

    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = dest.file_name().ok_or_else(|| {
        CodeError::io(
            dest,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "destination has no name"),
        )
    })?;
    fs::create_dir_all(parent).map_err(|e| CodeError::io(parent, e))?;
    let mut prefix = name.to_os_string();
    prefix.push(".tmp-");
    let tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .tempdir_in(parent)
        .map_err(|e| CodeError::io(parent, e))?;

    let mut stats = unpack(&mut archive, tmp.path(), max_unzipped_bytes)?;
    finish_tree(tmp.path())?;

    if let Err(e) = fs::rename(tmp.path(), dest) {
        // Another extractor of the same archive may have won the race.
        if fs::symlink_metadata(dest).is_ok() {
            return Ok(present());
        }
        return Err(CodeError::io(dest, e));
    }
    let _kept = tmp.keep();
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| CodeError::io(parent, e))?;
    stats.already_present = false;
    Ok(stats)
}

/// The sum of the uncompressed sizes a zip (in memory) declares for its
/// entries, from its central directory alone: what the control plane adds
/// up to check a function's code and layers against the unzipped limit.
/// (Extraction counts the bytes really written, [`extract_zip`].)
pub fn declared_size(zip: &[u8]) -> Result<u64, CodeError> {
    let mut archive =
        ZipArchive::new(std::io::Cursor::new(zip)).map_err(|source| CodeError::CorruptArchive {
            path: PathBuf::from("<upload>"),
            source,
        })?;
    let mut declared: u64 = 0;
    for i in 0..archive.len() {
        let label = entry_label(&archive, i);
        let entry = archive
            .by_index_raw(i)
            .map_err(|e| CodeError::CorruptEntry {
                entry: label,
                reason: e.to_string(),
            })?;
        declared = declared.saturating_add(entry.size());
    }
    Ok(declared)
}

fn present() -> ExtractStats {
    ExtractStats {
        already_present: true,
        ..ExtractStats::default()
    }
}

fn entry_label<R: Read + std::io::Seek>(archive: &ZipArchive<R>, index: usize) -> String {
    archive
        .name_for_index(index)
        .map_or_else(|| format!("#{index}"), str::to_owned)
}

/// Refuses archives whose central directory alone breaks the caps.
fn check_declared<R: Read + std::io::Seek>(
    archive: &mut ZipArchive<R>,
    max: u64,
    max_entries: usize,
) -> Result<(), CodeError> {
    if archive.len() > max_entries {
        return Err(CodeError::TooManyEntries {
            count: archive.len(),
            limit: max_entries,
        });
    }
    let mut declared: u64 = 0;
    for i in 0..archive.len() {
        let label = entry_label(archive, i);
        let entry = archive
            .by_index_raw(i)
            .map_err(|e| CodeError::CorruptEntry {
                entry: label,
                reason: e.to_string(),
            })?;
        declared = declared.saturating_add(entry.size());
        if declared > max {
            return Err(CodeError::TooLarge {
                entry: entry.name().to_owned(),
                limit: max,
            });
        }
    }
    Ok(())
}

/// The path of entry `name` relative to the tree, or `None` for the tree
/// itself (`./`). Refuses anything that could land outside.
fn relative_path(name: &str) -> Result<Option<PathBuf>, CodeError> {
    let unsafe_path = |reason| CodeError::UnsafePath {
        entry: name.to_owned(),
        reason,
    };
    if name.contains('\0') {
        return Err(unsafe_path("NUL byte in name"));
    }
    if name.len() > MAX_PATH {
        return Err(unsafe_path("path too long"));
    }
    let mut out = PathBuf::new();
    for component in Path::new(name).components() {
        match component {
            Component::Normal(c) if c.len() > MAX_COMPONENT => {
                return Err(unsafe_path("path component too long"));
            }
            Component::Normal(c) => out.push(c),
            Component::CurDir => {}
            Component::ParentDir => return Err(unsafe_path("contains a `..` component")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(unsafe_path("absolute path"));
            }
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// Maps an error creating `path` for `entry`: a clash with another entry is
/// the archive's fault, anything else the disk's.
fn create_error(entry: &str, path: &Path, e: std::io::Error) -> CodeError {
    use std::io::ErrorKind::{AlreadyExists, IsADirectory, NotADirectory};
    match e.kind() {
        AlreadyExists | NotADirectory | IsADirectory => CodeError::UnsafePath {
            entry: entry.to_owned(),
            reason: "collides with another entry",
        },
        _ => CodeError::io(path, e),
    }
}

struct PendingLink {
    entry: String,
    rel: PathBuf,
    target: PathBuf,
}

fn unpack<R: Read + std::io::Seek>(
    archive: &mut ZipArchive<R>,
    root: &Path,
    max: u64,
) -> Result<ExtractStats, CodeError> {
    let mut stats = ExtractStats::default();
    let mut links = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    for i in 0..archive.len() {
        let label = entry_label(archive, i);
        let mut entry = archive.by_index(i).map_err(|e| CodeError::CorruptEntry {
            entry: label,
            reason: e.to_string(),
        })?;
        let name = entry.name().to_owned();
        let rel = relative_path(&name)?;

        if entry.is_dir() {
            if let Some(rel) = rel {
                let path = root.join(rel);
                fs::create_dir_all(&path).map_err(|e| create_error(&name, &path, e))?;
                stats.dirs += 1;
            }
            continue;
        }
        let Some(rel) = rel else {
            return Err(CodeError::UnsafePath {
                entry: name,
                reason: "empty path",
            });
        };

        if entry.is_symlink() {
            let mut raw = Vec::new();
            (&mut entry)
                .take(MAX_LINK_TARGET + 1)
                .read_to_end(&mut raw)
                .map_err(|e| CodeError::CorruptEntry {
                    entry: name.clone(),
                    reason: e.to_string(),
                })?;
            if raw.is_empty() || raw.len() as u64 > MAX_LINK_TARGET || raw.contains(&0) {
                return Err(CodeError::UnsafeSymlink {
                    entry: name,
                    target: String::from_utf8_lossy(&raw).into_owned(),
                });
            }
            stats.bytes += raw.len() as u64;
            if stats.bytes > max {
                return Err(CodeError::TooLarge {
                    entry: name,
                    limit: max,
                });
            }
            links.push(PendingLink {
                entry: name,
                rel,
                target: PathBuf::from(OsString::from_vec(raw)),
            });
            continue;
        }

        let path = root.join(&rel);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|e| create_error(&name, dir, e))?;
        }
        let mode = if entry.unix_mode().is_some_and(|m| m & 0o111 != 0) {
            EXEC_MODE
        } else {
            FILE_MODE
        };
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .map_err(|e| create_error(&name, &path, e))?;
        loop {
            let n = entry.read(&mut buf).map_err(|e| CodeError::CorruptEntry {
                entry: name.clone(),
                reason: e.to_string(),
            })?;
            if n == 0 {
                break;
            }
            stats.bytes += n as u64;
            if stats.bytes > max {
                return Err(CodeError::TooLarge {
                    entry: name,
                    limit: max,
                });
            }
            let chunk = buf.get(..n).unwrap_or_default();
            out.write_all(chunk).map_err(|e| CodeError::io(&path, e))?;
        }
        // Set explicitly: the process umask must not decide what sandboxes see.
        out.set_permissions(Permissions::from_mode(mode))
            .and_then(|()| out.sync_all())
            .map_err(|e| CodeError::io(&path, e))?;
        stats.files += 1;
    }

    for link in &links {
        make_link(root, link)?;
        stats.symlinks += 1;
    }
    for link in &links {
        if !resolves_inside(root, &link.rel, &link.target) {
            return Err(CodeError::UnsafeSymlink {
                entry: link.entry.clone(),
                target: link.target.display().to_string(),
            });
        }
    }
    Ok(stats)
}

/// Creates one symlink, refusing to place it through another symlink.
fn make_link(root: &Path, link: &PendingLink) -> Result<(), CodeError> {
    let mut at = root.to_path_buf();
    if let Some(parent) = link.rel.parent() {
        for component in parent.components() {
            at.push(component);
            match fs::symlink_metadata(&at) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(CodeError::UnsafePath {
                        entry: link.entry.clone(),
                        reason: "path goes through a symlink",
                    });
                }
                Ok(_) => {
                    return Err(CodeError::UnsafePath {
                        entry: link.entry.clone(),
                        reason: "collides with another entry",
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    fs::create_dir(&at).map_err(|e| create_error(&link.entry, &at, e))?;
                }
                Err(e) => return Err(CodeError::io(&at, e)),
            }
        }
    }
    let path = root.join(&link.rel);
    std::os::unix::fs::symlink(&link.target, &path).map_err(|e| create_error(&link.entry, &path, e))
}

/// Whether the link at `link_rel` (relative to `root`) pointing at `target`
/// resolves inside `root`, following links inside the tree as the kernel
/// would. Lexical checks alone are not enough: with `a -> .`, the target
/// `a/..` looks inside but is `root/..`.
fn resolves_inside(root: &Path, link_rel: &Path, target: &Path) -> bool {
    let mut stack: Vec<OsString> = link_rel
        .parent()
        .map(|p| p.iter().map(|c| c.to_os_string()).collect())
        .unwrap_or_default();
    let mut queue: VecDeque<OsString> = VecDeque::new();
    if target.has_root() {
        return false;
    }
    queue.extend(target.iter().map(|c| c.to_os_string()));
    let mut hops = 0;
    while let Some(part) = queue.pop_front() {
        match Path::new(&part).components().next() {
            None | Some(Component::CurDir) => {}
            Some(Component::ParentDir) => {
                if stack.pop().is_none() {
                    return false;
                }
            }
            Some(Component::RootDir | Component::Prefix(_)) => return false,
            Some(Component::Normal(_)) => {
                stack.push(part);
                let here: PathBuf = stack.iter().fold(root.to_path_buf(), |p, c| p.join(c));
                let Ok(meta) = fs::symlink_metadata(&here) else {
                    // Missing: the kernel stops here too (dangling link).
                    continue;
                };
                if !meta.file_type().is_symlink() {
                    continue;
                }
                hops += 1;
                if hops > MAX_LINK_HOPS {
                    return false;
                }
                let Ok(next) = fs::read_link(&here) else {
                    return false;
                };
                if next.has_root() {
                    return false;
                }
                stack.pop();
                for c in next.iter().rev() {
                    queue.push_front(c.to_os_string());
                }
            }
        }
    }
    true
}

/// Gives every directory mode 0755 and makes the tree durable.
fn finish_tree(dir: &Path) -> Result<(), CodeError> {
    fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))
        .map_err(|e| CodeError::io(dir, e))?;
    for entry in fs::read_dir(dir).map_err(|e| CodeError::io(dir, e))? {
        let entry = entry.map_err(|e| CodeError::io(dir, e))?;
        let kind = entry
            .file_type()
            .map_err(|e| CodeError::io(entry.path(), e))?;
        if kind.is_dir() {
            finish_tree(&entry.path())?;
        }
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| CodeError::io(dir, e))
}

#[cfg(test)]
mod tests;
