use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use proptest::prelude::*;

use super::*;

const SUITE_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const SUITE_DATE: &str = "20150830T123600Z";

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).expect("name"),
            HeaderValue::from_str(v).expect("value"),
        );
    }
    h
}

/// A case of AWS's SigV4 test suite (`aws-sig-v4-test-suite`, credentials
/// AKIDEXAMPLE, scope 20150830/us-east-1/service): the request as given
/// there and the published signature. The same values come out of
/// botocore's signer.
fn suite_case(
    method: Method,
    path: &str,
    query: &str,
    extra: &[(&str, &str)],
    signed: &str,
    body: &[u8],
    expected: &str,
) {
    let mut pairs = vec![
        ("host", "example.amazonaws.com"),
        ("x-amz-date", SUITE_DATE),
    ];
    pairs.extend_from_slice(extra);
    let mut h = headers(&pairs);
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders={signed}, Signature={expected}"
    );
    h.insert("authorization", HeaderValue::from_str(&auth).expect("auth"));
    let got = verify_request(SUITE_SECRET, &method, path, query, &h, body);
    assert!(got.is_ok(), "{method} {path}?{query}: {got:?}");
    // One byte more in the body, or another secret: refused.
    let mut other = body.to_vec();
    other.push(b' ');
    assert_eq!(
        verify_request(SUITE_SECRET, &method, path, query, &h, &other).err(),
        Some(VerifyError::Mismatch)
    );
    assert_eq!(
        verify_request("wrong", &method, path, query, &h, body).err(),
        Some(VerifyError::Mismatch)
    );
}

#[test]
fn aws_test_suite_vectors() {
    let hd = "host;x-amz-date";
    // get-vanilla, post-vanilla
    let vanilla = "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";
    suite_case(Method::GET, "/", "", &[], hd, b"", vanilla);
    suite_case(
        Method::POST,
        "/",
        "",
        &[],
        hd,
        b"",
        "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
    );
    // get-vanilla-query-order-key-case
    suite_case(
        Method::GET,
        "/",
        "Param2=value2&Param1=value1",
        &[],
        hd,
        b"",
        "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
    );
    // get-vanilla-utf8-query
    suite_case(
        Method::GET,
        "/",
        "%E1%88%B4=bar",
        &[],
        hd,
        b"",
        "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04",
    );
    // normalize-path: get-slash-dot-slash, get-relative-relative
    suite_case(Method::GET, "/./", "", &[], hd, b"", vanilla);
    suite_case(
        Method::GET,
        "/example1/example2/../..",
        "",
        &[],
        hd,
        b"",
        vanilla,
    );
    // normalize-path: get-space (the path is given unencoded there)
    suite_case(
        Method::GET,
        "/example space/",
        "",
        &[],
        hd,
        b"",
        "652487583200325589f1fba4c7e578f72c47cb61beeca81406b39ddec1366741",
    );
    // post-x-www-form-urlencoded
    suite_case(
        Method::POST,
        "/",
        "",
        &[("content-type", "application/x-www-form-urlencoded")],
        "content-type;host;x-amz-date",
        b"Param1=value1",
        "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a",
    );
}

/// A request boto3 (botocore 1.43) signed: Invoke by ARN, whose `:` are
/// `%3A` on the wire and `%253A` in the canonical URI.
#[test]
fn a_boto3_invoke_by_arn_verifies() {
    let path = "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aeu-west-3%3A000000000000%3Afunction%3Af/invocations";
    let h = headers(&[
        ("host", "127.0.0.1:9000"),
        ("x-amz-date", "20261127T083928Z"),
        ("x-amz-invocation-type", "RequestResponse"),
        ("content-length", "8"),
        (
            "authorization",
            "AWS4-HMAC-SHA256 Credential=test/20261127/eu-west-3/lambda/aws4_request, SignedHeaders=host;x-amz-date;x-amz-invocation-type, Signature=6bcbe0e7fa9a1d348a3ffb07a755351a66ded585022fe261f6ad1f6f3dfd2297",
        ),
    ]);
    let body = br#"{"a": 1}"#;
    let query = "Qualifier=%24LATEST";
    let auth = verify_request("test", &Method::POST, path, query, &h, body).expect("verifies");
    assert_eq!(auth.access_key_id, "test");
    assert_eq!(auth.scope.region, "eu-west-3");
    assert_eq!(auth.scope.service, "lambda");
    // The same path decoded (what a router hands handlers) is another request.
    let decoded =
        "/2015-03-31/functions/arn:aws:lambda:eu-west-3:000000000000:function:f/invocations";
    assert_eq!(
        verify_request("test", &Method::POST, decoded, query, &h, body).err(),
        Some(VerifyError::Mismatch)
    );
}

#[test]
fn signing_and_verifying_agree_and_tampering_is_caught() {
    let creds = Credentials {
        access_key_id: "AK".into(),
        secret: "s3cret".into(),
    };
    let scope = Scope {
        date: "20260102".into(),
        region: "us-east-1".into(),
        service: "lambda".into(),
    };
    let mut h = headers(&[("host", "localhost"), ("content-type", "application/json")]);
    let (path, body) = ("/2015-03-31/functions/f/invocations", b"{}");
    let post = Method::POST;
    sign_request(
        &creds,
        &scope,
        "20260102T030405Z",
        &post,
        path,
        "",
        &mut h,
        body,
    );
    assert!(verify_request("s3cret", &post, path, "", &h, body).is_ok());
    let refused =
        |m: &Method, p: &str, h: &HeaderMap| verify_request("s3cret", m, p, "", h, body).err();
    assert_eq!(refused(&Method::PUT, path, &h), Some(VerifyError::Mismatch));
    let other_path = "/2015-03-31/functions/g/invocations";
    assert_eq!(refused(&post, other_path, &h), Some(VerifyError::Mismatch));
    let mut changed = h.clone();
    changed.insert("content-type", HeaderValue::from_static("text/plain"));
    assert_eq!(refused(&post, path, &changed), Some(VerifyError::Mismatch));
    // A claimed payload hash must be the body's.
    let mut claimed = h.clone();
    claimed.insert(
        "x-amz-content-sha256",
        HeaderValue::from_static("UNSIGNED-PAYLOAD"),
    );
    assert_eq!(
        refused(&post, path, &claimed),
        Some(VerifyError::PayloadHash)
    );
    // A signed header that is gone.
    let mut gone = h.clone();
    gone.remove("content-type");
    assert_eq!(
        refused(&post, path, &gone),
        Some(VerifyError::SignedHeaderMissing)
    );
    // The date must be on the scope's day.
    let mut other_day = h.clone();
    other_day.insert("x-amz-date", HeaderValue::from_static("20260103T030405Z"));
    assert_eq!(refused(&post, path, &other_day), Some(VerifyError::Date));
}

#[test]
fn host_and_date_must_be_signed() {
    let h = headers(&[
        ("host", "localhost"),
        ("x-amz-date", "20260102T030405Z"),
        (
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AK/20260102/us-east-1/lambda/aws4_request, SignedHeaders=host, Signature=0000000000000000000000000000000000000000000000000000000000000000",
        ),
    ]);
    assert_eq!(
        verify_request("s", &Method::GET, "/", "", &h, b"").err(),
        Some(VerifyError::Unsigned)
    );
    assert_eq!(
        verify_request("s", &Method::GET, "/", "", &HeaderMap::new(), b"").err(),
        Some(VerifyError::Missing)
    );
}

#[test]
fn canonical_uris_and_queries() {
    assert_eq!(canonical_uri(""), "/");
    assert_eq!(canonical_uri("//a//b/"), "/a/b/");
    assert_eq!(canonical_uri("/a/./b/../c"), "/a/c");
    assert_eq!(canonical_uri("/../.."), "/");
    assert_eq!(canonical_uri("/f%3Ax"), "/f%253Ax");
    assert_eq!(canonical_query(""), "");
    assert_eq!(canonical_query("b=2&a=1&a=0"), "a=0&a=1&b=2");
    assert_eq!(canonical_query("Marker&x=a%2Fb"), "Marker=&x=a%2Fb");
    assert_eq!(canonical_query("q=%7e%"), "q=~%25");
}

#[test]
fn header_parser_cases() {
    let ok = "AWS4-HMAC-SHA256 Credential=AK/20260101/eu-west-3/lambda/aws4_request, SignedHeaders=host;x-amz-date, Signature=ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789";
    let a = AuthHeader::parse(ok).expect("parses");
    assert_eq!(a.access_key_id, "AK");
    assert_eq!(a.scope.region, "eu-west-3");
    assert_eq!(a.signed_headers, ["host", "x-amz-date"]);
    assert_eq!(
        a.signature,
        "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789"
    );
    let scope = "AK/20260101/r/lambda/aws4_request";
    for (bad, why) in [
        ("".to_owned(), ParseError::Algorithm),
        ("AWS4-HMAC-SHA1 Credential=x".to_owned(), ParseError::Algorithm),
        ("AWS4-HMAC-SHA256Credential=AK".to_owned(), ParseError::Algorithm),
        (
            "AWS4-HMAC-SHA256 SignedHeaders=host, Signature=00".to_owned(),
            ParseError::Missing("Credential"),
        ),
        (
            "AWS4-HMAC-SHA256 Credential=AK/20260101/r/lambda, SignedHeaders=host, Signature=00"
                .to_owned(),
            ParseError::Credential,
        ),
        (
            "AWS4-HMAC-SHA256 Credential=AK/2026/r/lambda/aws4_request, SignedHeaders=host, Signature=00"
                .to_owned(),
            ParseError::Credential,
        ),
        (
            format!("AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=Host, Signature=00"),
            ParseError::SignedHeaders,
        ),
        (
            format!("AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=host, Signature=00"),
            ParseError::Signature,
        ),
        (
            format!("AWS4-HMAC-SHA256 Credential={scope}, Credential={scope}"),
            ParseError::Duplicate("Credential"),
        ),
    ] {
        assert_eq!(AuthHeader::parse(&bad), Err(why), "{bad:?}");
    }
}

proptest! {
    /// The parser never panics on any input, and what it accepts has a
    /// well-formed scope and signature.
    #[test]
    fn the_header_parser_takes_anything(s in ".{0,300}") {
        if let Ok(a) = AuthHeader::parse(&s) {
            prop_assert_eq!(a.scope.date.len(), 8);
            prop_assert_eq!(a.signature.len(), 64);
        }
    }

    /// Near-valid headers (fields mangled) never panic either.
    #[test]
    fn the_header_parser_takes_near_misses(
        key in "[A-Za-z0-9/=]{0,12}",
        date in "[0-9]{0,9}",
        region in "[a-z0-9-]{0,12}",
        signed in "[a-zA-Z;-]{0,20}",
        sig in "[0-9a-fA-Fg]{60,66}",
        sep in prop::sample::select(vec![",", ", ", " ,", ",,"]),
    ) {
        let s = format!("AWS4-HMAC-SHA256 Credential={key}/{date}/{region}/lambda/aws4_request{sep}SignedHeaders={signed}{sep}Signature={sig}");
        let _ = AuthHeader::parse(&s);
    }

    /// Whatever is signed verifies, for any path, query and body.
    #[test]
    fn sign_then_verify(
        path in "/[ -~]{0,40}",
        query in "[a-zA-Z0-9=&%._~-]{0,30}",
        body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let creds = Credentials { access_key_id: "AK".into(), secret: "s".into() };
        let scope = Scope { date: "20260102".into(), region: "us-east-1".into(), service: "lambda".into() };
        let mut h = headers(&[("host", "localhost")]);
        sign_request(&creds, &scope, "20260102T000000Z", &Method::GET, &path, &query, &mut h, &body);
        prop_assert!(verify_request("s", &Method::GET, &path, &query, &h, &body).is_ok());
    }
}
