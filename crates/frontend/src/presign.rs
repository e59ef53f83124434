//! Presigned, expiring code download URLs (GetFunction's `Code.Location`).
//!
//! The URL names the account and code digest and carries an expiry time and
//! an HMAC-SHA256 over all three with the server's secret: it downloads the
//! zip without credentials until it expires, and any change to it is refused.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::Frontend;

/// How long a presigned URL stays valid (as Lambda's: 10 minutes).
pub const VALIDITY_S: u64 = 600;

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn signed_text(account: &str, digest: &str, expires: u64) -> String {
    format!("{account}\n{digest}\n{expires}")
}

fn signature(key: &[u8], account: &str, digest: &str, expires: u64) -> Option<String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).ok()?;
    mac.update(signed_text(account, digest, expires).as_bytes());
    Some(hex::encode(mac.finalize().into_bytes()))
}

/// Builds the download URL for `digest`, valid for [`VALIDITY_S`].
pub fn url(key: &[u8], host: &str, account: &str, digest: &str) -> String {
    let expires = now_s() + VALIDITY_S;
    let sig = signature(key, account, digest, expires).unwrap_or_default();
    format!("http://{host}/_stratus/code/{account}/{digest}?Expires={expires}&Signature={sig}")
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Params {
    expires: Option<u64>,
    signature: Option<String>,
}

fn denied(message: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        [(header::CONTENT_TYPE, "application/xml")],
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code><Message>{message}</Message></Error>"),
    )
        .into_response()
}

/// Serves a presigned download.
pub async fn download(
    State(fe): State<Arc<Frontend>>,
    Path((account, digest)): Path<(String, String)>,
    Query(p): Query<Params>,
) -> Response {
    let (Some(expires), Some(sig)) = (p.expires, p.signature) else {
        return denied("Query-string authentication requires the Signature and Expires parameters");
    };
    // Only the exact lowercase form we issue is accepted: `...A` instead of
    // `...a` is another URL, even though it decodes to the same bytes.
    let canonical = sig
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let valid = canonical
        && hex::decode(&sig).is_ok_and(|sig| {
            Hmac::<Sha256>::new_from_slice(&fe.deps.presign_key).is_ok_and(|mut m| {
                m.update(signed_text(&account, &digest, expires).as_bytes());
                // verify_slice compares in constant time.
                m.verify_slice(&sig).is_ok()
            })
        });
    if !valid {
        return denied(
            "The request signature we calculated does not match the signature you provided.",
        );
    }
    if now_s() > expires {
        return denied("Request has expired");
    }
    match fe.deps.blobs.get(&digest).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/zip")], bytes).into_response(),
        Err(_) => (StatusCode::NOT_FOUND, "NoSuchKey").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_bind_every_field() {
        let k = b"key";
        let s = signature(k, "000000000000", "ab", 10).expect("mac");
        assert_ne!(Some(s.clone()), signature(k, "000000000001", "ab", 10));
        assert_ne!(Some(s.clone()), signature(k, "000000000000", "ac", 10));
        assert_ne!(Some(s.clone()), signature(k, "000000000000", "ab", 11));
        assert_ne!(Some(s), signature(b"other", "000000000000", "ab", 10));
    }

    #[test]
    fn url_shape() {
        let u = url(b"k", "127.0.0.1:9000", "000000000000", "ab");
        assert!(u.starts_with("http://127.0.0.1:9000/_stratus/code/000000000000/ab?Expires="));
        assert!(u.contains("&Signature="));
    }
}
