//! The embedded, single-machine backend of the state store: metadata in one
//! [redb](https://docs.rs/redb) file ([`EmbeddedMetaStore`]) and code blobs as
//! content-addressed files in a directory ([`FileBlobStore`]).
//!
//! This crate owns the on-disk layout of those two places and nothing else:
//! it does not interpret the values it stores (callers serialise their own
//! records), and it must not be reached except through the
//! [`stratus_store::MetaStore`] and [`stratus_store::BlobStore`] traits, so
//! that a cluster backend can replace it. Both types pass the shared
//! conformance suite in [`stratus_store::conformance`].
//!
//! ```no_run
//! # fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use stratus_store_embedded::{EmbeddedMetaStore, FileBlobStore};
//! let meta = EmbeddedMetaStore::open("/var/lib/stratus/meta.redb")?;
//! let blobs = FileBlobStore::open("/var/lib/stratus/blobs")?;
//! # let _ = (meta, blobs); Ok(()) }
//! ```

mod blob;
mod meta;

pub use blob::{BlobOpenError, FileBlobStore};
pub use meta::{EmbeddedMetaStore, FORMAT_VERSION, MetaOpenError};
