//! AWS Signature Version 4, as a verifier recomputes it.
//!
//! Pure functions, no I/O and no clock: parse an `Authorization` header
//! ([`AuthHeader::parse`]), rebuild the canonical request the client signed
//! ([`canonical_request`]), the string to sign and the signature, and
//! compare in constant time ([`signature_matches`]). [`sign`] is the same
//! computation from the client's side, for tests and tools.
//!
//! The canonical URI is that of every AWS service but S3: the path as it
//! was sent on the wire (still percent-encoded), with dot segments and
//! empty segments removed, then URI-encoded once more. So a Lambda ARN in a
//! path, sent as `arn%3Aaws%3Alambda...`, is signed as `arn%253Aaws...`
//! (what botocore and the AWS SDKs compute).
//!
//! ```
//! use stratus_frontend::sigv4::{Credentials, Scope, sign_request, verify_request};
//! # use axum::http::{HeaderMap, Method};
//! let creds = Credentials { access_key_id: "AK".into(), secret: "secret".into() };
//! let scope = Scope { date: "20260101".into(), region: "us-east-1".into(), service: "lambda".into() };
//! let mut headers = HeaderMap::new();
//! headers.insert("host", "localhost:9000".parse().expect("header"));
//! sign_request(&creds, &scope, "20260101T000000Z", &Method::GET, "/2015-03-31/functions", "", &mut headers, b"");
//! assert!(verify_request("secret", &Method::GET, "/2015-03-31/functions", "", &headers, b"").is_ok());
//! ```

use axum::http::{HeaderMap, HeaderValue, Method};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The only algorithm accepted.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// The parts of an `Authorization: AWS4-HMAC-SHA256 ...` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthHeader {
    pub access_key_id: String,
    pub scope: Scope,
    /// Lowercase header names, in the order given (`host;x-amz-date`).
    pub signed_headers: Vec<String>,
    /// The signature as sent (hex).
    pub signature: String,
}

/// A credential scope: `DATE/REGION/SERVICE/aws4_request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// `YYYYMMDD`.
    pub date: String,
    pub region: String,
    pub service: String,
}

impl Scope {
    fn to_line(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.date, self.region, self.service
        )
    }
}

/// An access key and its secret.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Why an `Authorization` header could not be read. The message is for
/// tests and logs at debug level; clients get no detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the algorithm is not {ALGORITHM}")]
    Algorithm,
    #[error("the header lacks {0}")]
    Missing(&'static str),
    #[error("{0} is given twice")]
    Duplicate(&'static str),
    #[error("the credential is not KEY/DATE/REGION/SERVICE/aws4_request")]
    Credential,
    #[error("the signed headers are not lowercase names separated by ';'")]
    SignedHeaders,
    #[error("the signature is not 64 hex digits")]
    Signature,
}

impl AuthHeader {
    /// Parses `AWS4-HMAC-SHA256 Credential=AK/20260101/us-east-1/lambda/aws4_request,
    /// SignedHeaders=host;x-amz-date, Signature=<64 hex>`.
    pub fn parse(value: &str) -> Result<AuthHeader, ParseError> {
        let rest = value
            .strip_prefix(ALGORITHM)
            .filter(|r| r.starts_with(' '))
            .ok_or(ParseError::Algorithm)?;
        let (mut credential, mut signed, mut signature) = (None, None, None);
        for part in rest.split(',').map(str::trim) {
            let (name, v) = part.split_once('=').ok_or(ParseError::Credential)?;
            let (slot, name) = match name {
                "Credential" => (&mut credential, "Credential"),
                "SignedHeaders" => (&mut signed, "SignedHeaders"),
                "Signature" => (&mut signature, "Signature"),
                _ => continue,
            };
            if slot.replace(v).is_some() {
                return Err(ParseError::Duplicate(name));
            }
        }
        let credential = credential.ok_or(ParseError::Missing("Credential"))?;
        let signed = signed.ok_or(ParseError::Missing("SignedHeaders"))?;
        let signature = signature.ok_or(ParseError::Missing("Signature"))?;

        let parts: Vec<&str> = credential.split('/').collect();
        let [key, date, region, service, "aws4_request"] = parts.as_slice() else {
            return Err(ParseError::Credential);
        };
        if key.is_empty()
            || date.len() != 8
            || !date.bytes().all(|b| b.is_ascii_digit())
            || region.is_empty()
            || service.is_empty()
        {
            return Err(ParseError::Credential);
        }
        let signed_headers: Vec<String> = signed.split(';').map(str::to_owned).collect();
        if signed_headers.iter().any(|h| {
            h.is_empty()
                || !h
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        }) {
            return Err(ParseError::SignedHeaders);
        }
        if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ParseError::Signature);
        }
        Ok(AuthHeader {
            access_key_id: (*key).to_owned(),
            scope: Scope {
                date: (*date).to_owned(),
                region: (*region).to_owned(),
                service: (*service).to_owned(),
            },
            signed_headers,
            signature: signature.to_ascii_lowercase(),
        })
    }
}

/// Lowercase hex SHA-256 of `data` (the payload hash of a canonical request).
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Percent-encodes every byte but the unreserved characters
/// (`A-Z a-z 0-9 - _ . ~`) and, if `keep_slash`, `/`.
fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (keep_slash && b == b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes (a `%` not followed by two hex digits stays as is;
/// `+` is not a space).
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(hex) = b.get(i + 1..i + 3)
            && let Ok(text) = std::str::from_utf8(hex)
            && let Ok(v) = u8::from_str_radix(text, 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// The canonical URI of a path as sent: dot and empty segments removed
/// (RFC 3986 section 5.2.4, plus AWS's collapsing of `//`), then encoded.
pub fn canonical_uri(raw_path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for s in raw_path.split('/') {
        match s {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut path = String::from("/");
    path.push_str(&segments.join("/"));
    if raw_path.ends_with('/') && !segments.is_empty() {
        path.push('/');
    }
    uri_encode(&path, true)
}

/// The canonical query string: each `name=value` decoded then encoded the
/// AWS way, sorted by name then value.
pub fn canonical_query(raw_query: &str) -> String {
    let mut pairs: Vec<(String, String)> = raw_query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let enc = |s: &str| uri_encode(&String::from_utf8_lossy(&percent_decode(s)), false);
            (enc(k), enc(v))
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// `name:value` of one signed header: every value of that name, trimmed,
/// inner runs of spaces collapsed, joined with `,`. `None` if the request
/// does not carry it.
fn canonical_header(headers: &HeaderMap, name: &str) -> Option<String> {
    let values: Vec<String> = headers
        .get_all(name)
        .iter()
        .map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .split_ascii_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// The canonical request, or `None` if a signed header is absent.
pub fn canonical_request(
    method: &Method,
    raw_path: &str,
    raw_query: &str,
    headers: &HeaderMap,
    signed_headers: &[String],
    payload_hash: &str,
) -> Option<String> {
    let mut lines = String::new();
    for name in signed_headers {
        lines.push_str(name);
        lines.push(':');
        lines.push_str(&canonical_header(headers, name)?);
        lines.push('\n');
    }
    Some(format!(
        "{method}\n{}\n{}\n{lines}\n{}\n{payload_hash}",
        canonical_uri(raw_path),
        canonical_query(raw_query),
        signed_headers.join(";"),
    ))
}

/// The string to sign for a canonical request.
pub fn string_to_sign(amz_date: &str, scope: &Scope, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{}\n{}",
        scope.to_line(),
        sha256_hex(canonical_request.as_bytes())
    )
}

fn hmac(key: &[u8], data: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    m.update(data);
    m
}

/// The HMAC of `string_to_sign` under the key derived from `secret` and
/// `scope`, ready to be finalized or verified.
fn signing_mac(secret: &str, scope: &Scope, string_to_sign: &str) -> Hmac<Sha256> {
    let mut key = format!("AWS4{secret}").into_bytes();
    for part in [
        scope.date.as_str(),
        scope.region.as_str(),
        scope.service.as_str(),
        "aws4_request",
    ] {
        key = hmac(&key, part.as_bytes()).finalize().into_bytes().to_vec();
    }
    hmac(&key, string_to_sign.as_bytes())
}

/// The signature (lowercase hex) of a string to sign.
pub fn signature(secret: &str, scope: &Scope, string_to_sign: &str) -> String {
    hex::encode(
        signing_mac(secret, scope, string_to_sign)
            .finalize()
            .into_bytes(),
    )
}

/// Whether `given` (hex) is the signature of `string_to_sign`; the bytes
/// are compared in constant time.
pub fn signature_matches(secret: &str, scope: &Scope, string_to_sign: &str, given: &str) -> bool {
    let Ok(given) = hex::decode(given) else {
        return false;
    };
    signing_mac(secret, scope, string_to_sign)
        .verify_slice(&given)
        .is_ok()
}

/// Why a signed request was refused by [`verify_request`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("no Authorization header")]
    Missing,
    #[error("malformed Authorization header: {0}")]
    Malformed(#[from] ParseError),
    #[error("no X-Amz-Date header, or not YYYYMMDDTHHMMSSZ on the credential's date")]
    Date,
    #[error("host or x-amz-date is not among the signed headers")]
    Unsigned,
    #[error("x-amz-content-sha256 does not match the body")]
    PayloadHash,
    #[error("a signed header is missing from the request")]
    SignedHeaderMissing,
    #[error("the signature does not match")]
    Mismatch,
}

/// The `Authorization` header of a request, parsed.
pub fn auth_header(headers: &HeaderMap) -> Result<AuthHeader, VerifyError> {
    let v = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or(VerifyError::Missing)?;
    let v = v.to_str().map_err(|_| ParseError::Algorithm)?;
    Ok(AuthHeader::parse(v)?)
}

/// The request's `X-Amz-Date`, checked against the credential scope's date.
pub fn amz_date<'h>(headers: &'h HeaderMap, scope: &Scope) -> Result<&'h str, VerifyError> {
    let d = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or(VerifyError::Date)?;
    let b = d.as_bytes();
    let well_formed = b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit);
    if !well_formed || d[..8] != scope.date {
        return Err(VerifyError::Date);
    }
    Ok(d)
}

/// Checks a request's signature with `secret` (the key named in its
/// `Authorization` header, looked up by the caller). The date window, the
/// scope's region and service and the key's owner are the caller's checks.
pub fn verify_request(
    secret: &str,
    method: &Method,
    raw_path: &str,
    raw_query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<AuthHeader, VerifyError> {
    let auth = auth_header(headers)?;
    let date = amz_date(headers, &auth.scope)?;
    if !auth.signed_headers.iter().any(|h| h == "host")
        || !auth.signed_headers.iter().any(|h| h == "x-amz-date")
    {
        return Err(VerifyError::Unsigned);
    }
    let payload_hash = sha256_hex(body);
    if let Some(claimed) = headers.get("x-amz-content-sha256")
        && claimed.as_bytes() != payload_hash.as_bytes()
    {
        return Err(VerifyError::PayloadHash);
    }
    let creq = canonical_request(
        method,
        raw_path,
        raw_query,
        headers,
        &auth.signed_headers,
        &payload_hash,
    )
    .ok_or(VerifyError::SignedHeaderMissing)?;
    let sts = string_to_sign(date, &auth.scope, &creq);
    if !signature_matches(secret, &auth.scope, &sts, &auth.signature) {
        return Err(VerifyError::Mismatch);
    }
    Ok(auth)
}

/// Signs a request the way an AWS SDK does: sets `x-amz-date` and
/// `Authorization` in `headers`, signing every header present (which must
/// include `host`).
#[allow(clippy::too_many_arguments)]
pub fn sign_request(
    creds: &Credentials,
    scope: &Scope,
    amz_date: &str,
    method: &Method,
    raw_path: &str,
    raw_query: &str,
    headers: &mut HeaderMap,
    body: &[u8],
) {
    if let Ok(v) = HeaderValue::from_str(amz_date) {
        headers.insert("x-amz-date", v);
    }
    headers.remove(axum::http::header::AUTHORIZATION);
    let mut names: Vec<String> = headers.keys().map(|k| k.as_str().to_owned()).collect();
    names.sort();
    names.dedup();
    let creq = canonical_request(
        method,
        raw_path,
        raw_query,
        headers,
        &names,
        &sha256_hex(body),
    )
    .unwrap_or_default();
    let sig = signature(
        &creds.secret,
        scope,
        &string_to_sign(amz_date, scope, &creq),
    );
    let value = format!(
        "{ALGORITHM} Credential={}/{}, SignedHeaders={}, Signature={sig}",
        creds.access_key_id,
        scope.to_line(),
        names.join(";")
    );
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(axum::http::header::AUTHORIZATION, v);
    }
}

#[cfg(test)]
mod tests;
