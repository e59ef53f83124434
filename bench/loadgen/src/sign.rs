//! SigV4 signing of each request, with AWS's own `aws-sigv4` crate (the
//! signer the `stratus` CLI uses), so the server verifies real SDK-style
//! signatures.

use std::time::SystemTime;

use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_smithy_runtime_api::client::identity::Identity;

/// Why a request could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("building the signing parameters for region {region}")]
    Params {
        region: String,
        #[source]
        source: aws_sigv4::sign::v4::signing_params::BuildError,
    },
    #[error("signing {method} {uri}")]
    Sign {
        method: String,
        uri: String,
        #[source]
        source: aws_sigv4::http_request::SigningError,
    },
}

/// Signs requests as one key for one region and service.
#[derive(Debug)]
pub struct Signer {
    identity: Identity,
    region: String,
    service: String,
}

impl Signer {
    pub fn new(access_key_id: &str, secret_access_key: &str, region: &str, service: &str) -> Self {
        let identity = aws_credential_types::Credentials::new(
            access_key_id,
            secret_access_key,
            None,
            None,
            "stratus-loadgen",
        )
        .into();
        Signer {
            identity,
            region: region.to_owned(),
            service: service.to_owned(),
        }
    }

    /// Adds `x-amz-date` and `Authorization` to `req`, signing every header
    /// it already has (it must carry `host`) and the SHA-256 of `body`.
    pub fn sign<B>(&self, req: &mut http::Request<B>, body: &[u8]) -> Result<(), SignError> {
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&self.identity)
            .region(&self.region)
            .name(&self.service)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|source| SignError::Params {
                region: self.region.clone(),
                source,
            })?
            .into();
        let uri = req.uri().to_string();
        let sign_err = |source| SignError::Sign {
            method: req.method().to_string(),
            uri: uri.clone(),
            source,
        };
        let headers = req
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)));
        let signable = SignableRequest::new(
            req.method().as_str(),
            uri.as_str(),
            headers,
            SignableBody::Bytes(body),
        )
        .map_err(sign_err)?;
        let (instructions, _) = sign(signable, &params).map_err(sign_err)?.into_parts();
        instructions.apply_to_request_http1x(req);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the loadgen signs, Stratus's own verifier accepts.
    #[test]
    fn stratus_verifies_the_signature() {
        let signer = Signer::new("AKIDEXAMPLE", "secret", "us-east-1", "lambda");
        let body = br#"{"a":1}"#;
        let mut req = http::Request::builder()
            .method("POST")
            .uri("http://127.0.0.1:9000/2015-03-31/functions/f/invocations")
            .header("host", "127.0.0.1:9000")
            .header("content-type", "application/json")
            .body(())
            .expect("request");
        signer.sign(&mut req, body).expect("signed");
        let auth = stratus_frontend::sigv4::verify_request(
            "secret",
            req.method(),
            req.uri().path(),
            "",
            req.headers(),
            body,
        )
        .expect("verifies");
        assert_eq!(auth.scope.region, "us-east-1");
        assert!(
            stratus_frontend::sigv4::verify_request(
                "other",
                req.method(),
                req.uri().path(),
                "",
                req.headers(),
                body,
            )
            .is_err()
        );
    }
}
