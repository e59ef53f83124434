//! Conformance suite every `MetaStore`/`BlobStore` backend runs (filled in by the store work).
