//! Who is calling: account and region of a request.
//!
//! Today every request acts for the server's local account, and the region
//! is read from the SigV4 credential scope (`Credential=AK/date/REGION/lambda/aws4_request`)
//! when there is one. Signatures are NOT verified yet: that, access keys and
//! accounts come with the isolation and access-control work.

use axum::http::HeaderMap;
use stratus_types::{AccountId, DEFAULT_REGION};

/// The caller of one request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub account: AccountId,
    pub region: String,
}

/// Reads the caller from the request headers.
pub fn caller(headers: &HeaderMap) -> Caller {
    Caller {
        account: AccountId::default_local(),
        region: region_from_authorization(headers).unwrap_or_else(|| DEFAULT_REGION.to_owned()),
    }
}

fn region_from_authorization(headers: &HeaderMap) -> Option<String> {
    let auth = headers.get("authorization")?.to_str().ok()?;
    let rest = auth.strip_prefix("AWS4-HMAC-SHA256")?;
    let cred = rest
        .split(',')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("Credential="))?;
    let mut parts = cred.split('/');
    let _key = parts.next()?;
    let _date = parts.next()?;
    let region = parts.next()?;
    stratus_types::is_region(region).then(|| region.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn region_comes_from_the_credential_scope() {
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            HeaderValue::from_static("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/eu-west-3/lambda/aws4_request, SignedHeaders=host;x-amz-date, Signature=abc"),
        );
        assert_eq!(caller(&h).region, "eu-west-3");
    }

    #[test]
    fn default_region_without_or_with_bad_credentials() {
        assert_eq!(caller(&HeaderMap::new()).region, "us-east-1");
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            HeaderValue::from_static("AWS4-HMAC-SHA256 Credential=AK/2026/../lambda"),
        );
        assert_eq!(caller(&h).region, "us-east-1");
    }
}
