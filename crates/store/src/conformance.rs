//! The conformance suite every [`MetaStore`] and [`BlobStore`] backend runs.
//!
//! Each backend crate calls [`run_meta_store_suite`] and
//! [`run_blob_store_suite`] from its own tests against a real instance, so
//! every backend is held to one contract (as neon's `remote_storage` suite
//! does). The suites panic with a message naming the broken contract point;
//! they are test code, shipped in the library so that out-of-tree backends can
//! run them too.
//!
//! The meta suite only touches keys under [`META_SUITE_PREFIX`] and clears
//! them first, so it may run more than once against the same store (for
//! example before and after a reopen). The blob suite only adds and removes
//! blobs it derives from its own data, so other blobs may be present.
//!
//! ```no_run
//! # async fn demo(meta: &dyn stratus_store::MetaStore, blobs: &dyn stratus_store::BlobStore) {
//! stratus_store::conformance::run_meta_store_suite(meta).await;
//! stratus_store::conformance::run_blob_store_suite(blobs).await;
//! # }
//! ```

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::{BlobError, BlobStore, MetaStore, Precondition, StoreError, Versioned};

/// Every key the meta suite writes starts with this prefix.
pub const META_SUITE_PREFIX: &str = "conformance/";

fn key(rest: &str) -> String {
    format!("{META_SUITE_PREFIX}{rest}")
}

fn expect_conflict<T: std::fmt::Debug>(result: Result<T, StoreError>, key: &str, what: &str) {
    match result {
        Err(StoreError::Conflict { key: k }) => {
            assert_eq!(k, key, "{what}: Conflict must name the key");
        }
        other => panic!("{what}: expected Conflict for {key}, got {other:?}"),
    }
}

async fn must_get(store: &dyn MetaStore, key: &str) -> Option<Versioned> {
    match store.get(key).await {
        Ok(v) => v,
        Err(e) => panic!("get {key} failed: {e}"),
    }
}

async fn must_put(store: &dyn MetaStore, key: &str, value: &[u8], pre: Precondition) -> u64 {
    match store.put(key, Bytes::copy_from_slice(value), pre).await {
        Ok(v) => v,
        Err(e) => panic!("put {key} with {pre:?} failed: {e}"),
    }
}

async fn must_delete(store: &dyn MetaStore, key: &str, pre: Precondition) -> bool {
    match store.delete(key, pre).await {
        Ok(existed) => existed,
        Err(e) => panic!("delete {key} with {pre:?} failed: {e}"),
    }
}

async fn must_scan(
    store: &dyn MetaStore,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> Vec<(String, Versioned)> {
    match store.scan(prefix, after, limit).await {
        Ok(v) => v,
        Err(e) => panic!("scan {prefix} after {after:?} limit {limit} failed: {e}"),
    }
}

fn keys_of(entries: &[(String, Versioned)]) -> Vec<&str> {
    entries.iter().map(|(k, _)| k.as_str()).collect()
}

/// Deletes every key under [`META_SUITE_PREFIX`].
async fn clear_suite_keys(store: &dyn MetaStore) {
    loop {
        let batch = must_scan(store, META_SUITE_PREFIX, None, 100).await;
        if batch.is_empty() {
            return;
        }
        for (k, _) in batch {
            must_delete(store, &k, Precondition::None).await;
        }
    }
}

/// Runs every contract point of [`MetaStore`] against `store`.
pub async fn run_meta_store_suite(store: &dyn MetaStore) {
    clear_suite_keys(store).await;
    meta_get_missing(store).await;
    meta_create_and_conflict(store).await;
    meta_version_precondition(store).await;
    meta_versions_store_wide(store).await;
    meta_delete(store).await;
    meta_values_roundtrip(store).await;
    meta_scan(store).await;
    meta_scan_paging(store).await;
    meta_racing_cas(store).await;
    clear_suite_keys(store).await;
}

async fn meta_get_missing(store: &dyn MetaStore) {
    assert_eq!(
        must_get(store, &key("missing")).await,
        None,
        "get of a missing key"
    );
    assert_eq!(
        must_get(store, META_SUITE_PREFIX).await,
        None,
        "get of the bare prefix"
    );
}

async fn meta_create_and_conflict(store: &dyn MetaStore) {
    let k = key("create");
    let v1 = must_put(store, &k, b"one", Precondition::Absent).await;
    assert!(v1 > 0, "versions start above zero");
    let got = must_get(store, &k).await;
    assert_eq!(
        got,
        Some(Versioned {
            value: Bytes::from_static(b"one"),
            version: v1
        }),
        "get returns what create wrote, with its version"
    );

    expect_conflict(
        store
            .put(&k, Bytes::from_static(b"two"), Precondition::Absent)
            .await,
        &k,
        "create of an existing key",
    );
    let after = must_get(store, &k).await.map(|v| v.value);
    assert_eq!(
        after,
        Some(Bytes::from_static(b"one")),
        "a failed create leaves the value alone"
    );
}

async fn meta_version_precondition(store: &dyn MetaStore) {
    let k = key("cas");
    let v1 = must_put(store, &k, b"a", Precondition::Absent).await;
    let v2 = must_put(store, &k, b"b", Precondition::Version(v1)).await;
    assert!(v2 > v1, "an update gets a higher version ({v2} > {v1})");

    expect_conflict(
        store
            .put(&k, Bytes::from_static(b"c"), Precondition::Version(v1))
            .await,
        &k,
        "update with a stale version",
    );
    expect_conflict(
        store
            .put(
                &k,
                Bytes::from_static(b"c"),
                Precondition::Version(v2 + 1000),
            )
            .await,
        &k,
        "update with a future version",
    );
    let now = must_get(store, &k).await;
    assert_eq!(
        now,
        Some(Versioned {
            value: Bytes::from_static(b"b"),
            version: v2
        }),
        "failed updates change nothing"
    );

    let missing = key("cas-missing");
    expect_conflict(
        store
            .put(
                &missing,
                Bytes::from_static(b"x"),
                Precondition::Version(v2),
            )
            .await,
        &missing,
        "update of a missing key",
    );
    assert_eq!(
        must_get(store, &missing).await,
        None,
        "failed update creates nothing"
    );

    let v3 = must_put(store, &k, b"d", Precondition::None).await;
    assert!(v3 > v2, "an unconditional write gets a higher version");
    let fresh = key("cas-unconditional");
    let v4 = must_put(store, &fresh, b"e", Precondition::None).await;
    assert!(v4 > v3, "an unconditional create gets a higher version");
}

async fn meta_versions_store_wide(store: &dyn MetaStore) {
    let a = key("wide/a");
    let b = key("wide/b");
    let va = must_put(store, &a, b"1", Precondition::None).await;
    let vb = must_put(store, &b, b"1", Precondition::None).await;
    assert!(
        vb > va,
        "the version is store-wide: a write to another key is later"
    );
    let va2 = must_put(store, &a, b"2", Precondition::Version(va)).await;
    assert!(va2 > vb, "the version is store-wide: it never goes back");
    let got_b = must_get(store, &b).await.map(|v| v.version);
    assert_eq!(
        got_b,
        Some(vb),
        "writing one key leaves another's version alone"
    );

    let before_delete = va2;
    assert!(must_delete(store, &b, Precondition::None).await);
    let vc = must_put(store, &key("wide/c"), b"1", Precondition::None).await;
    assert!(vc > before_delete, "versions keep rising across deletes");
}

async fn meta_delete(store: &dyn MetaStore) {
    let k = key("delete");
    let v = must_put(store, &k, b"x", Precondition::Absent).await;

    expect_conflict(
        store.delete(&k, Precondition::Version(v + 1000)).await,
        &k,
        "delete with the wrong version",
    );
    expect_conflict(
        store.delete(&k, Precondition::Absent).await,
        &k,
        "delete with Absent of a present key",
    );
    assert!(
        must_get(store, &k).await.is_some(),
        "a failed delete leaves the key"
    );

    assert!(
        must_delete(store, &k, Precondition::Version(v)).await,
        "delete with the right version reports the key existed"
    );
    assert_eq!(must_get(store, &k).await, None, "deleted key is gone");
    assert!(
        !must_delete(store, &k, Precondition::None).await,
        "deleting a missing key unconditionally reports false"
    );
    assert!(
        !must_delete(store, &k, Precondition::Absent).await,
        "deleting a missing key with Absent reports false"
    );
    expect_conflict(
        store.delete(&k, Precondition::Version(v)).await,
        &k,
        "delete with a version of a missing key",
    );

    let v2 = must_put(store, &k, b"again", Precondition::Absent).await;
    assert!(v2 > v, "a re-created key gets a new, higher version");
    assert!(must_delete(store, &k, Precondition::None).await);
}

async fn meta_values_roundtrip(store: &dyn MetaStore) {
    let empty = key("values/empty");
    must_put(store, &empty, b"", Precondition::None).await;
    assert_eq!(
        must_get(store, &empty).await.map(|v| v.value),
        Some(Bytes::new()),
        "an empty value is stored, distinct from absence"
    );

    let binary: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let bin_key = key("values/binary");
    must_put(store, &bin_key, &binary, Precondition::None).await;
    assert_eq!(
        must_get(store, &bin_key).await.map(|v| v.value.to_vec()),
        Some(binary),
        "a binary value of 70 KB roundtrips"
    );

    let unicode = key("values/ключ 🔑");
    must_put(store, &unicode, b"u", Precondition::None).await;
    assert_eq!(
        must_get(store, &unicode).await.map(|v| v.value),
        Some(Bytes::from_static(b"u")),
        "unicode keys roundtrip"
    );
}

async fn meta_scan(store: &dyn MetaStore) {
    let prefix = key("scan/");
    // Written out of order; neighbours of the prefix must not leak in.
    let inside = ["d/x", "b", "a", "c", "d", "b0", "~"];
    let mut versions = Vec::new();
    for name in inside {
        let k = format!("{prefix}{name}");
        let v = must_put(store, &k, name.as_bytes(), Precondition::None).await;
        versions.push((k, v));
    }
    must_put(store, &key("scan"), b"no", Precondition::None).await;
    must_put(store, &key("scan."), b"no", Precondition::None).await;
    must_put(store, &key("scan0"), b"no", Precondition::None).await;
    must_put(store, &key("sca"), b"no", Precondition::None).await;

    let mut want: Vec<String> = inside.iter().map(|n| format!("{prefix}{n}")).collect();
    want.sort();

    let all = must_scan(store, &prefix, None, 100).await;
    assert_eq!(
        keys_of(&all),
        want.iter().map(String::as_str).collect::<Vec<_>>(),
        "scan lists exactly the prefixed keys, in byte order"
    );
    for (k, got) in &all {
        let expected = versions.iter().find(|(vk, _)| vk == k).map(|(_, v)| *v);
        assert_eq!(
            Some(got.version),
            expected,
            "scan reports each key's version"
        );
        let name = k.strip_prefix(&prefix).unwrap_or_default();
        assert_eq!(
            got.value.as_ref(),
            name.as_bytes(),
            "scan reports each value"
        );
    }

    let first_two = must_scan(store, &prefix, None, 2).await;
    assert_eq!(keys_of(&first_two), &want[..2], "limit cuts the listing");
    assert!(
        must_scan(store, &prefix, None, 0).await.is_empty(),
        "limit 0 lists nothing"
    );

    let after_b = must_scan(store, &prefix, Some(&format!("{prefix}b")), 100).await;
    assert_eq!(
        keys_of(&after_b),
        &want[2..],
        "after is exclusive of the key itself"
    );

    let between = must_scan(store, &prefix, Some(&format!("{prefix}b00")), 2).await;
    assert_eq!(
        keys_of(&between),
        &want[3..5],
        "after may name a key that does not exist"
    );

    let before_prefix = must_scan(store, &prefix, Some(META_SUITE_PREFIX), 100).await;
    assert_eq!(
        keys_of(&before_prefix),
        want.iter().map(String::as_str).collect::<Vec<_>>(),
        "an after sorting before the prefix lists from the start"
    );

    let past_end = must_scan(store, &prefix, Some(&format!("{prefix}~~")), 100).await;
    assert!(
        past_end.is_empty(),
        "an after past the prefix lists nothing"
    );

    let nothing = must_scan(store, &key("scan-none/"), None, 100).await;
    assert!(nothing.is_empty(), "an unused prefix lists nothing");

    let everything = must_scan(store, META_SUITE_PREFIX, None, 1000).await;
    let mut sorted = keys_of(&everything);
    sorted.sort();
    assert_eq!(
        keys_of(&everything),
        sorted,
        "a wide scan is in key order too"
    );
    assert!(
        keys_of(&everything).contains(&key("sca").as_str()),
        "a wide scan includes the neighbours"
    );
}

async fn meta_scan_paging(store: &dyn MetaStore) {
    let prefix = key("paging/");
    let mut want = Vec::new();
    for i in 0..25 {
        let k = format!("{prefix}{i:03}");
        must_put(store, &k, b"p", Precondition::None).await;
        want.push(k);
    }
    for page_size in [1, 3, 7, 25, 100] {
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = must_scan(store, &prefix, after.as_deref(), page_size).await;
            assert!(page.len() <= page_size, "a page never exceeds the limit");
            let Some((last, _)) = page.last() else {
                break;
            };
            after = Some(last.clone());
            seen.extend(page.into_iter().map(|(k, _)| k));
        }
        assert_eq!(
            seen, want,
            "paging with size {page_size} sees every key once"
        );
    }
}

async fn meta_racing_cas(store: &dyn MetaStore) {
    let k = key("race");
    let v = must_put(store, &k, b"0", Precondition::Absent).await;
    let pre = Precondition::Version(v);
    let (a, b, c, d) = tokio::join!(
        store.put(&k, Bytes::from_static(b"a"), pre),
        store.put(&k, Bytes::from_static(b"b"), pre),
        store.put(&k, Bytes::from_static(b"c"), pre),
        store.put(&k, Bytes::from_static(b"d"), pre),
    );
    let results = [a, b, c, d];
    let winners = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(
        winners, 1,
        "exactly one of racing writers with the same version wins: {results:?}"
    );
    for r in &results {
        if let Err(e) = r {
            assert!(
                matches!(e, StoreError::Conflict { .. }),
                "losers of a race get Conflict, got {e}"
            );
        }
    }

    let create = key("race-create");
    let (x, y) = tokio::join!(
        store.put(&create, Bytes::from_static(b"x"), Precondition::Absent),
        store.put(&create, Bytes::from_static(b"y"), Precondition::Absent),
    );
    assert!(
        x.is_ok() != y.is_ok(),
        "exactly one of racing creates wins: {x:?} {y:?}"
    );
}

/// Hex SHA-256 of `data`, as blob digests are spelled.
fn digest_of(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn expect_not_found<T: std::fmt::Debug>(result: Result<T, BlobError>, digest: &str, what: &str) {
    match result {
        Err(BlobError::NotFound { digest: d }) => {
            assert_eq!(d, digest, "{what}: NotFound must name the digest");
        }
        other => panic!("{what}: expected NotFound for {digest}, got {other:?}"),
    }
}

async fn must_list(store: &dyn BlobStore) -> Vec<String> {
    match store.list().await {
        Ok(l) => l,
        Err(e) => panic!("list failed: {e}"),
    }
}

async fn must_put_blob(store: &dyn BlobStore, data: &[u8]) -> String {
    match store.put(Bytes::copy_from_slice(data)).await {
        Ok(d) => d,
        Err(e) => panic!("put of {} bytes failed: {e}", data.len()),
    }
}

/// Runs every contract point of [`BlobStore`] against `store`.
pub async fn run_blob_store_suite(store: &dyn BlobStore) {
    let small = b"PK\x05\x06 conformance blob".as_slice();
    let large: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let empty: &[u8] = b"";

    for data in [small, large.as_slice(), empty] {
        let digest = must_put_blob(store, data).await;
        assert_eq!(digest, digest_of(data), "put returns the hex SHA-256");
        assert_eq!(digest.len(), 64, "digests are 64 hex characters");
        assert!(
            digest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "digests are lowercase hex"
        );

        let again = must_put_blob(store, data).await;
        assert_eq!(again, digest, "put is idempotent");

        match store.get(&digest).await {
            Ok(got) => assert!(got.as_ref() == data, "get returns the stored bytes"),
            Err(e) => panic!("get {digest} failed: {e}"),
        }
        match store.local_path(&digest).await {
            Ok(Some(path)) => match std::fs::read(&path) {
                Ok(on_disk) => assert!(on_disk == data, "local_path holds the blob"),
                Err(e) => panic!("local_path {} unreadable: {e}", path.display()),
            },
            Ok(None) => {}
            Err(e) => panic!("local_path {digest} failed: {e}"),
        }
        assert!(
            must_list(store).await.contains(&digest),
            "list includes a stored blob"
        );
    }

    // Deleting.
    let small_digest = digest_of(small);
    if let Err(e) = store.delete(&small_digest).await {
        panic!("delete {small_digest} failed: {e}");
    }
    expect_not_found(
        store.get(&small_digest).await,
        &small_digest,
        "get after delete",
    );
    assert!(
        !must_list(store).await.contains(&small_digest),
        "list omits a deleted blob"
    );
    if let Err(e) = store.delete(&small_digest).await {
        panic!("deleting a missing blob must succeed, got {e}");
    }
    let large_digest = digest_of(&large);
    assert!(
        must_list(store).await.contains(&large_digest),
        "deleting one blob leaves the others"
    );

    // Missing and malformed digests.
    let never = digest_of(b"never stored by the conformance suite");
    expect_not_found(store.get(&never).await, &never, "get of a missing blob");
    match store.local_path(&never).await {
        Err(BlobError::NotFound { .. }) | Ok(None) => {}
        other => panic!("local_path of a missing blob: expected NotFound or None, got {other:?}"),
    }
    for bad in ["", "../../etc/passwd", "ZZ", &never.to_uppercase()] {
        assert!(
            store.get(bad).await.is_err(),
            "get of a malformed digest {bad:?} fails"
        );
    }

    // Storing bytes the caller has hashed.
    let hashed = b"PK\x05\x06 hashed by the caller".as_slice();
    let hashed_digest = digest_of(hashed);
    if let Err(e) = store
        .put_hashed(&hashed_digest, Bytes::copy_from_slice(hashed))
        .await
    {
        panic!("put_hashed {hashed_digest} failed: {e}");
    }
    match store.get(&hashed_digest).await {
        Ok(got) => assert!(got.as_ref() == hashed, "put_hashed stores the bytes"),
        Err(e) => panic!("get {hashed_digest} after put_hashed failed: {e}"),
    }
    assert_eq!(
        must_put_blob(store, hashed).await,
        hashed_digest,
        "put after put_hashed names the same blob"
    );
    for bad in ["", "../../etc/passwd", "ZZ", &hashed_digest.to_uppercase()] {
        assert!(
            store
                .put_hashed(bad, Bytes::copy_from_slice(hashed))
                .await
                .is_err(),
            "put_hashed with a malformed digest {bad:?} fails"
        );
    }

    // Leave the store as we found it (apart from blobs others stored).
    for digest in [large_digest, digest_of(empty), hashed_digest] {
        if let Err(e) = store.delete(&digest).await {
            panic!("delete {digest} failed: {e}");
        }
    }
}
