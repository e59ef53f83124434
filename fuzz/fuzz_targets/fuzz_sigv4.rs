//! Fuzzes the SigV4 verifier (`stratus_frontend::sigv4`) with arbitrary
//! `Authorization` headers, paths, queries and bodies.
//!
//! Beyond "never panics": a request is never accepted with a secret other
//! than the one it was signed with, and whatever `sign_request` signs
//! verifies.

#![no_main]

use axum::http::{HeaderMap, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;
use stratus_frontend::sigv4::{AuthHeader, Credentials, Scope, sign_request, verify_request};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(4, '\n');
    let auth = parts.next().unwrap_or_default();
    let path = format!("/{}", parts.next().unwrap_or_default());
    let query = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default().as_bytes();

    let _ = AuthHeader::parse(auth);

    // An arbitrary header, as sent, against a fixed secret.
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("localhost"));
    headers.insert("x-amz-date", HeaderValue::from_static("20260102T000000Z"));
    if let Ok(v) = HeaderValue::from_str(auth) {
        headers.insert("authorization", v);
    }
    let _ = verify_request("secret", &Method::POST, &path, query, &headers, body);

    // What is signed verifies with its secret only.
    let creds = Credentials {
        access_key_id: "AK".into(),
        secret: "secret".into(),
    };
    let scope = Scope {
        date: "20260102".into(),
        region: "us-east-1".into(),
        service: "lambda".into(),
    };
    let mut signed = HeaderMap::new();
    signed.insert("host", HeaderValue::from_static("localhost"));
    sign_request(
        &creds,
        &scope,
        "20260102T000000Z",
        &Method::POST,
        &path,
        query,
        &mut signed,
        body,
    );
    assert!(verify_request("secret", &Method::POST, &path, query, &signed, body).is_ok());
    assert!(verify_request("other", &Method::POST, &path, query, &signed, body).is_err());
});
