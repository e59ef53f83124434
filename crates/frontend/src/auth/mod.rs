//! Who is calling: every Lambda API request is signed with AWS Signature
//! Version 4, and verified here before any handler runs.
//!
//! [`authenticate`] is a middleware on the API routes (never on the open
//! ones: probes, metrics, presigned code downloads). It looks the access key
//! up in [`keys::Keys`], recomputes the signature over the request as it was
//! sent (method, raw path, query, the signed headers, the SHA-256 of the
//! body), and checks the credential scope (`DATE/REGION/lambda/aws4_request`)
//! and that `X-Amz-Date` is within 15 minutes of the server's clock. The
//! verified [`Caller`] (account, region, admin or not) goes into the
//! request's extensions, where handlers take it as an extractor.
//!
//! Failures are 403 with AWS's error types and no hint which check failed:
//! `MissingAuthenticationTokenException` (no `Authorization` header),
//! `IncompleteSignatureException` (a malformed one),
//! `UnrecognizedClientException` (unknown or revoked key) and
//! `InvalidSignatureException` (anything else: wrong secret, tampered
//! request, wrong scope; "Signature expired" once the signature is right
//! but the date is out of the window).

pub mod keys;
pub mod sigv4;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use stratus_api::{ErrorCode, LambdaError};
use stratus_types::AccountId;

use crate::Frontend;
use crate::error::ApiError;

/// How far `X-Amz-Date` may be from the server's clock, either way.
pub const MAX_SKEW_SECS: i64 = 15 * 60;

/// The service name a Lambda request's credential scope must carry.
pub const SERVICE: &str = "lambda";

/// The caller of one request, as verified by [`authenticate`].
#[derive(Debug, Clone)]
pub struct Caller {
    pub account: AccountId,
    pub region: String,
    /// The server's admin key (may call the admin API).
    pub admin: bool,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ApiError(LambdaError::service(
                "the request reached a handler without being authenticated",
            ))
        })
    }
}

fn missing() -> LambdaError {
    LambdaError::new(
        ErrorCode::MissingAuthenticationToken,
        "Missing Authentication Token",
    )
}

fn incomplete() -> LambdaError {
    LambdaError::new(
        ErrorCode::IncompleteSignature,
        "Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters, in AWS Signature Version 4 form.",
    )
}

fn unrecognized() -> LambdaError {
    LambdaError::new(
        ErrorCode::UnrecognizedClient,
        "The security token included in the request is invalid.",
    )
}

fn invalid() -> LambdaError {
    LambdaError::new(
        ErrorCode::InvalidSignature,
        "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
    )
}

fn expired() -> LambdaError {
    LambdaError::new(
        ErrorCode::InvalidSignature,
        "Signature expired: the request's X-Amz-Date is more than 15 minutes away from the server's time.",
    )
}

/// Seconds since the epoch of an `X-Amz-Date` (`YYYYMMDDTHHMMSSZ`, already
/// checked for shape by [`sigv4::amz_date`]).
fn amz_date_secs(d: &str) -> Option<i64> {
    let n = |r: std::ops::Range<usize>| d.get(r)?.parse::<i64>().ok();
    let (y, m, day) = (n(0..4)?, n(4..6)?, n(6..8)?);
    let (h, min, s) = (n(9..11)?, n(11..13)?, n(13..15)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || min > 59 || s > 60 {
        return None;
    }
    // Days from the civil date (H. Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + min * 60 + s)
}

pub(crate) fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Verifies a request's signature against the server's keys, at `now`
/// (seconds since the epoch). The body is the request's whole body.
pub fn verify(
    keys: &keys::Keys,
    parts: &Parts,
    body: &[u8],
    now: i64,
) -> Result<Caller, LambdaError> {
    let auth = sigv4::auth_header(&parts.headers).map_err(|e| match e {
        sigv4::VerifyError::Missing => missing(),
        _ => incomplete(),
    })?;
    let owner = keys.lookup(&auth.access_key_id).ok_or_else(unrecognized)?;
    if auth.scope.service != SERVICE || !stratus_types::is_region(&auth.scope.region) {
        return Err(invalid());
    }
    let path = parts.uri.path();
    let query = parts.uri.query().unwrap_or("");
    let verified = sigv4::verify_request(
        &owner.secret,
        &parts.method,
        path,
        query,
        &parts.headers,
        body,
    );
    if let Err(e) = verified {
        tracing::debug!(access_key_id = %auth.access_key_id, error = %e, "signature refused");
        return Err(invalid());
    }
    let date = sigv4::amz_date(&parts.headers, &auth.scope).map_err(|_| invalid())?;
    let signed_at = amz_date_secs(date).ok_or_else(invalid)?;
    if (now - signed_at).abs() > MAX_SKEW_SECS {
        return Err(expired());
    }
    Ok(Caller {
        account: owner.account,
        region: auth.scope.region,
        admin: owner.admin,
    })
}

/// [`verify`] of a request taken by value, hashing a large body on the
/// blocking pool ([`crate::offload`]); gives the parts and body back.
pub async fn verify_owned(
    fe: &Arc<Frontend>,
    parts: Parts,
    body: Bytes,
    now: i64,
) -> Result<(Parts, Bytes, Caller), LambdaError> {
    let fe = Arc::clone(fe);
    crate::offload::cpu_bound(body.len(), move || {
        verify(&fe.keys, &parts, &body, now).map(|caller| (parts, body, caller))
    })
    .await?
}

/// The middleware: verifies the signature, then hands the request (body
/// restored) with its [`Caller`] to the handler.
pub async fn authenticate(State(fe): State<Arc<Frontend>>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    // Cheap checks first, so an anonymous client cannot make the server
    // buffer a body.
    let known = match sigv4::auth_header(&parts.headers) {
        Ok(a) => fe.keys.lookup(&a.access_key_id).is_some(),
        Err(sigv4::VerifyError::Missing) => return ApiError(missing()).into_response(),
        Err(_) => return ApiError(incomplete()).into_response(),
    };
    if !known {
        return ApiError(unrecognized()).into_response();
    }
    // The body is hashed, so read whole, within the route's own limit.
    let invoke = parts.uri.path().ends_with("/invocations");
    let limit = if invoke {
        stratus_types::limits::SYNC_REQUEST_MAX_BYTES
    } else {
        crate::CONTROL_BODY_LIMIT
    };
    let body = match read_body(&parts, body, limit).await {
        Ok(b) => b,
        Err(e) if !e.is::<http_body_util::LengthLimitError>() => {
            return ApiError(LambdaError::new(
                ErrorCode::InvalidRequestContent,
                format!("Could not read request body: {e}"),
            ))
            .into_response();
        }
        Err(_) if invoke => return ApiError(crate::invoke::too_large()).into_response(),
        Err(_) => {
            return ApiError(LambdaError::new(
                ErrorCode::RequestEntityTooLarge,
                format!("Request must be smaller than {limit} bytes."),
            ))
            .into_response();
        }
    };
    match verify_owned(&fe, parts, body, now_secs()).await {
        Ok((mut parts, body, caller)) => {
            parts.extensions.insert(caller);
            next.run(Request::from_parts(parts, Body::from(body))).await
        }
        Err(e) => ApiError(e).into_response(),
    }
}

/// A request's whole body, at most `limit` bytes, copied frame by frame
/// into one buffer sized by `Content-Length` (collecting the frames and
/// joining them at the end would copy a 70 MB upload in one go, holding
/// the async thread that long).
async fn read_body(
    parts: &Parts,
    body: Body,
    limit: usize,
) -> Result<Bytes, Box<dyn std::error::Error + Send + Sync>> {
    let declared = parts
        .headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = http_body_util::Limited::new(body, limit);
    let mut buf = bytes::BytesMut::with_capacity(declared.min(limit));
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// Refuses callers other than the admin key (for the admin API).
pub fn require_admin(c: &Caller) -> Result<(), LambdaError> {
    if c.admin {
        Ok(())
    } else {
        Err(LambdaError::new(
            ErrorCode::AccessDenied,
            "Only the server's admin key may manage accounts and keys.",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amz_dates_become_epoch_seconds() {
        assert_eq!(amz_date_secs("19700101T000000Z"), Some(0));
        assert_eq!(amz_date_secs("20150830T123600Z"), Some(1_440_938_160));
        assert_eq!(amz_date_secs("20240229T235959Z"), Some(1_709_251_199));
        assert_eq!(amz_date_secs("20261301T000000Z"), None);
        assert_eq!(amz_date_secs("2026"), None);
    }

    /// A body of the given frames, one per poll.
    struct Frames(std::collections::VecDeque<Bytes>);

    impl http_body::Body for Frames {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
            std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(http_body::Frame::data(b))))
        }
    }

    fn request(content_length: Option<&str>, frames: &[&'static [u8]]) -> (Parts, Body) {
        let mut b = axum::http::Request::builder();
        if let Some(n) = content_length {
            b = b.header("content-length", n);
        }
        let frames = Frames(frames.iter().map(|f| Bytes::from_static(f)).collect());
        b.body(Body::new(frames)).expect("request").into_parts()
    }

    #[tokio::test]
    async fn a_body_is_read_whole_whatever_its_declared_length() {
        for declared in [Some("9"), None, Some("2"), Some("99999999999"), Some("x")] {
            let (parts, body) = request(declared, &[b"abc", b"", b"defghi"]);
            let got = read_body(&parts, body, 100).await.expect("read");
            assert_eq!(&got[..], b"abcdefghi", "{declared:?}");
        }
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_a_length_limit_error() {
        let (parts, body) = request(Some("9"), &[b"abcd", b"efghi"]);
        let e = read_body(&parts, body, 8).await.expect_err("too long");
        assert!(e.is::<http_body_util::LengthLimitError>(), "{e}");
        let (parts, body) = request(None, &[b"abcdefgh"]);
        assert_eq!(
            &read_body(&parts, body, 8).await.expect("at the limit")[..],
            b"abcdefgh"
        );
    }
}
