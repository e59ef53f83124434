//! The data directory's format version, checked before anything opens it.
//!
//! `<data-dir>/FORMAT` holds one number. A directory without it was written
//! before formats were versioned (format 0: the same layout as format 1,
//! which only adds this file), and is upgraded in place. A directory from a
//! newer Stratus is refused with a clear message rather than misread.

use std::path::Path;

use anyhow::{Context, bail};

/// The format this binary writes and reads.
pub const FORMAT: u32 = 1;

const FILE: &str = "FORMAT";

/// What [`check_format`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// An empty (new) directory, now marked with [`FORMAT`].
    Created,
    /// Already at [`FORMAT`].
    Current,
    /// Upgraded in place from this older format.
    Upgraded { from: u32 },
}

/// Checks (and if needed upgrades or creates) the format of `data`.
pub fn check_format(data: &Path) -> anyhow::Result<Format> {
    let path = data.join(FILE);
    let found = match std::fs::read_to_string(&path) {
        Ok(text) => Some(text.trim().parse::<u32>().with_context(|| {
            format!(
                "{} should hold a data format number, not {:?}",
                path.display(),
                text.trim()
            )
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let outcome = match found {
        Some(n) if n == FORMAT => return Ok(Format::Current),
        Some(n) if n > FORMAT => bail!(
            "the data directory {} is in format {n}, written by a newer Stratus; this one reads format {FORMAT} and older. Use the newer binary (or another --data-dir).",
            data.display()
        ),
        // No format file: new if nothing is there yet, else format 0.
        None if !data.join("meta.redb").exists() => Format::Created,
        None => Format::Upgraded { from: 0 },
        Some(n) => Format::Upgraded { from: n },
    };
    // Format 0 -> 1 changes no existing file: only the marker is new.
    write_atomically(&path, &format!("{FORMAT}\n"))?;
    Ok(outcome)
}

fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_directory_is_marked_with_the_current_format() {
        let d = tempfile::tempdir().expect("dir");
        assert_eq!(check_format(d.path()).expect("ok"), Format::Created);
        assert_eq!(
            std::fs::read_to_string(d.path().join(FILE)).expect("file"),
            "1\n"
        );
        assert_eq!(check_format(d.path()).expect("ok"), Format::Current);
    }

    #[test]
    fn an_unversioned_directory_with_data_is_upgraded_from_format_0() {
        let d = tempfile::tempdir().expect("dir");
        std::fs::write(d.path().join("meta.redb"), b"x").expect("meta");
        assert_eq!(
            check_format(d.path()).expect("ok"),
            Format::Upgraded { from: 0 }
        );
        assert_eq!(check_format(d.path()).expect("ok"), Format::Current);
        assert_eq!(
            std::fs::read(d.path().join("meta.redb")).expect("kept"),
            b"x"
        );
    }

    #[test]
    fn a_newer_or_garbled_format_is_refused_clearly() {
        let d = tempfile::tempdir().expect("dir");
        std::fs::write(d.path().join(FILE), "7\n").expect("write");
        let e = check_format(d.path()).expect_err("newer");
        assert!(e.to_string().contains("format 7"), "{e}");
        assert!(e.to_string().contains("newer Stratus"), "{e}");
        std::fs::write(d.path().join(FILE), "seven").expect("write");
        let e = format!("{:#}", check_format(d.path()).expect_err("garbled"));
        assert!(e.contains("data format number"), "{e}");
    }
}
