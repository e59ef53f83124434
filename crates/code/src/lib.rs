//! Function code archives: unpacking untrusted zips safely
//! ([`extract_zip`], used by the worker) and packing a directory
//! deterministically ([`zip_directory`], used by the CLI), plus the digests
//! Lambda reports ([`code_sha256_b64`]) and blobs are keyed by
//! ([`sha256_hex`]).
//!
//! This crate owns the rules for what a code zip may contain; it does no
//! network or store I/O and knows nothing of functions or versions. Every
//! zip is treated as hostile: entry paths are confined to the destination,
//! symlinks must resolve inside the tree, sizes are counted as bytes are
//! written (headers are not trusted) and the number of entries is capped.
//! Callers map every [`CodeError`] of kind [`CodeErrorKind::Corrupt`],
//! [`CodeErrorKind::Unsafe`] or [`CodeErrorKind::TooLarge`] to Lambda's
//! "Could not unzip uploaded file. Please check your file, then try to upload
//! again." and treat [`CodeErrorKind::Io`] as a server fault.
//!
//! ```no_run
//! # fn demo() -> Result<(), stratus_code::CodeError> {
//! use std::path::Path;
//! let zip = stratus_code::zip_directory(Path::new("my-function"))?;
//! println!("CodeSha256: {}", stratus_code::code_sha256_b64(&zip));
//! # let blob = Path::new("blob.zip");
//! let stats = stratus_code::extract_zip(blob, Path::new("/srv/code/abc"), 250 << 20)?;
//! println!("{} files, {} bytes", stats.files, stats.bytes);
//! # Ok(()) }
//! ```

use std::path::PathBuf;

use base64::Engine as _;
use sha2::{Digest, Sha256};

mod extract;
mod pack;

pub use extract::{ExtractStats, MAX_ENTRIES, declared_size, extract_zip};
pub use pack::zip_directory;

/// What the caller should do about a [`CodeError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeErrorKind {
    /// The archive is not a readable zip: the client's fault.
    Corrupt,
    /// The archive tries to place something outside its tree: the client's
    /// fault (and possibly an attack).
    Unsafe,
    /// The archive is over a size or entry-count limit: the client's fault.
    TooLarge,
    /// Local disk trouble: the server's fault; retrying may help.
    Io,
}

/// Errors of packing and unpacking code archives.
#[derive(Debug, thiserror::Error)]
pub enum CodeError {
    /// The archive as a whole cannot be read as a zip.
    #[error("{path} is not a readable zip archive")]
    CorruptArchive {
        path: PathBuf,
        #[source]
        source: zip::result::ZipError,
    },
    /// One entry cannot be read (bad header, bad compressed data, checksum).
    #[error("zip entry {entry} is corrupt: {reason}")]
    CorruptEntry { entry: String, reason: String },
    /// An entry's path would land outside the destination.
    #[error("zip entry {entry} has an unsafe path: {reason}")]
    UnsafePath { entry: String, reason: &'static str },
    /// A symlink entry points outside the extracted tree.
    #[error("zip entry {entry} is a symlink to {target}, which leaves the archive")]
    UnsafeSymlink { entry: String, target: String },
    /// Uncompressed content (declared or actual) exceeds the cap.
    #[error("zip content exceeds {limit} uncompressed bytes at entry {entry}")]
    TooLarge { entry: String, limit: u64 },
    /// The archive has more entries than allowed.
    #[error("zip has {count} entries, more than the limit of {limit}")]
    TooManyEntries { count: usize, limit: usize },
    /// A local file operation failed.
    #[error("i/o error on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Writing an archive failed.
    #[error("cannot add {entry} to the zip")]
    Pack {
        entry: String,
        #[source]
        source: zip::result::ZipError,
    },
}

impl CodeError {
    /// Classifies the error by what the caller should do about it.
    pub fn kind(&self) -> CodeErrorKind {
        match self {
            CodeError::CorruptArchive { .. } | CodeError::CorruptEntry { .. } => {
                CodeErrorKind::Corrupt
            }
            CodeError::UnsafePath { .. } | CodeError::UnsafeSymlink { .. } => CodeErrorKind::Unsafe,
            CodeError::TooLarge { .. } | CodeError::TooManyEntries { .. } => {
                CodeErrorKind::TooLarge
            }
            CodeError::Io { .. } | CodeError::Pack { .. } => CodeErrorKind::Io,
        }
    }

    /// Whether the uploaded archive is at fault (as opposed to the server).
    pub fn is_client_error(&self) -> bool {
        self.kind() != CodeErrorKind::Io
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CodeError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Base64 of the SHA-256 of `bytes`: Lambda's `CodeSha256`.
pub fn code_sha256_b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(bytes))
}

/// Lowercase hex of the SHA-256 of `bytes`: the blob store's key.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Both names of an archive from one hash: [`sha256_hex`] and
/// [`code_sha256_b64`].
pub fn digests(bytes: &[u8]) -> (String, String) {
    let sha = Sha256::digest(bytes);
    (
        hex::encode(sha),
        base64::engine::general_purpose::STANDARD.encode(sha),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_of_known_input() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            code_sha256_b64(b"abc"),
            "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
        );
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            digests(b"abc"),
            (sha256_hex(b"abc"), code_sha256_b64(b"abc")),
            "one hash, both names"
        );
    }

    #[test]
    fn declared_size_sums_the_central_directory() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("a.py"), "x".repeat(1000)).expect("write");
        std::fs::write(dir.path().join("b.py"), "y".repeat(24)).expect("write");
        let zip = zip_directory(dir.path()).expect("zip");
        assert_eq!(declared_size(&zip).expect("size"), 1024);
        assert!(declared_size(b"PK\x03\x04 not a zip").is_err());
    }

    #[test]
    fn kinds_split_client_from_server_faults() {
        let unsafe_path = CodeError::UnsafePath {
            entry: "../x".into(),
            reason: "parent",
        };
        assert_eq!(unsafe_path.kind(), CodeErrorKind::Unsafe);
        assert!(unsafe_path.is_client_error());
        let io = CodeError::io("/x", std::io::Error::other("disk"));
        assert_eq!(io.kind(), CodeErrorKind::Io);
        assert!(!io.is_client_error());
    }
}
