//! Identifiers, names and limits of Stratus, as plain values.
//!
//! Everything here is pure: parsing and validating what a user typed (function
//! names, ARNs, qualifiers, runtime ids) and the numeric limits Lambda
//! documents. No I/O, no async, no knowledge of HTTP. Other crates turn the
//! errors returned here into Lambda error documents.

use std::fmt;

pub mod isolation;
pub mod limits;
pub mod runtime;

pub use isolation::{ISOLATION_ENV, Isolation};
pub use runtime::{Runtime, RuntimeFamily};

/// A 12-digit AWS-style account id.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct AccountId(String);

/// The account a local server uses when no other is configured.
pub const DEFAULT_ACCOUNT: &str = "000000000000";
/// The access key id of the documented local key pair: the admin key of a
/// server bound to a loopback address without configured credentials.
pub const LOCAL_ACCESS_KEY_ID: &str = "STRATUSLOCALADMINKEY";
/// The secret of the documented local key pair. Public, so a server that
/// listens beyond loopback refuses it.
pub const LOCAL_SECRET_ACCESS_KEY: &str = "stratus-local-secret";
/// The region used when a request's credential scope names none.
pub const DEFAULT_REGION: &str = "us-east-1";

impl AccountId {
    /// Parses a 12-digit account id.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit()) {
            Ok(AccountId(s.to_owned()))
        } else {
            Err(NameError::Account(s.to_owned()))
        }
    }

    /// The default local account.
    pub fn default_local() -> Self {
        AccountId(DEFAULT_ACCOUNT.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AccountId {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        AccountId::parse(&s)
    }
}

impl From<AccountId> for String {
    fn from(a: AccountId) -> String {
        a.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a name, ARN or id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("account id {0:?} is not 12 digits")]
    Account(String),
    /// Does not match Lambda's FunctionName pattern.
    #[error("function name {0:?} does not match the FunctionName pattern")]
    FunctionPattern(String),
    /// Longer than the 64 characters a plain function name may have.
    #[error("function name {0:?} is longer than 64 characters")]
    FunctionTooLong(String),
    /// An ARN naming another account than the caller's.
    #[error("ARN {arn:?} belongs to account {account}, not the caller's")]
    ForeignAccount { arn: String, account: String },
    /// A qualifier that does not match `$LATEST|[a-zA-Z0-9-_]+`.
    #[error("qualifier {0:?} does not match the Qualifier pattern")]
    Qualifier(String),
    /// Not a log stream name of the form `YYYY/MM/DD/[version]<32 hex>`.
    #[error("log stream name {0:?} is not of the form YYYY/MM/DD/[version]<32 lowercase hex>")]
    LogStream(String),
}

/// The regular expression Lambda's model gives for FunctionName parameters,
/// quoted in validation messages.
pub const FUNCTION_NAME_PATTERN: &str = "(arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{2}(-gov)?-[a-z]+-\\d{1}:)?(\\d{12}:)?(function:)?([a-zA-Z0-9-_\\.]+)(:(\\$LATEST|[a-zA-Z0-9-_]+))?";
/// The pattern for Qualifier parameters.
pub const QUALIFIER_PATTERN: &str = "(|[a-zA-Z0-9$_-]+)";

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// Validates a plain function name as CreateFunction requires it:
/// 1-64 characters of `[a-zA-Z0-9-_]`.
pub fn validate_function_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() || !name.chars().all(is_name_char) {
        return Err(NameError::FunctionPattern(name.to_owned()));
    }
    if name.len() > 64 {
        return Err(NameError::FunctionTooLong(name.to_owned()));
    }
    Ok(())
}

/// Validates a `Qualifier` parameter against the model's pattern
/// `(|[a-zA-Z0-9$_-]+)`, max 128. (`$latest` passes: it is then simply not
/// found, as on Lambda.)
pub fn validate_qualifier_param(q: &str) -> Result<(), NameError> {
    if q.len() <= 128 && q.chars().all(|c| is_name_char(c) || c == '$') {
        Ok(())
    } else {
        Err(NameError::Qualifier(q.to_owned()))
    }
}

/// Validates the qualifier part of a function ARN: `$LATEST|[a-zA-Z0-9-_]+`.
pub fn validate_qualifier(q: &str) -> Result<(), NameError> {
    if q == "$LATEST" || (!q.is_empty() && q.len() <= 128 && q.chars().all(is_name_char)) {
        Ok(())
    } else {
        Err(NameError::Qualifier(q.to_owned()))
    }
}

/// A FunctionName parameter as the API accepts it: a name, a full ARN or a
/// partial ARN (`123456789012:function:name`), each optionally with a qualifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionRef {
    pub name: String,
    pub account: Option<AccountId>,
    pub region: Option<String>,
    pub qualifier: Option<String>,
}

impl FunctionRef {
    /// Parses a FunctionName path parameter.
    pub fn parse(input: &str) -> Result<Self, NameError> {
        let bad = || NameError::FunctionPattern(input.to_owned());
        if input.is_empty() || input.len() > 170 {
            return Err(bad());
        }
        let parts: Vec<&str> = input.split(':').collect();
        let (account, region, rest): (Option<&str>, Option<&str>, &[&str]) =
            if parts.first() == Some(&"arn") {
                // arn:aws:lambda:region:account:function:name[:qualifier]
                if parts.len() < 7
                    || parts.len() > 8
                    || !parts[1].starts_with("aws")
                    || parts[2] != "lambda"
                    || parts[5] != "function"
                {
                    return Err(bad());
                }
                (Some(parts[4]), Some(parts[3]), &parts[6..])
            } else if parts.len() >= 3 && parts[1] == "function" {
                // account:function:name[:qualifier]
                if parts.len() > 4 {
                    return Err(bad());
                }
                (Some(parts[0]), None, &parts[2..])
            } else {
                if parts.len() > 2 {
                    return Err(bad());
                }
                (None, None, &parts[..])
            };
        let name = rest.first().copied().unwrap_or_default();
        if name.is_empty() || !name.chars().all(|c| is_name_char(c) || c == '.') {
            return Err(bad());
        }
        let qualifier = match rest.get(1) {
            Some(q) => {
                validate_qualifier(q).map_err(|_| bad())?;
                Some((*q).to_owned())
            }
            None => None,
        };
        let account = match account {
            Some(a) => Some(AccountId::parse(a).map_err(|_| bad())?),
            None => None,
        };
        if let Some(r) = region
            && !r.is_empty()
            && !is_region(r)
        {
            return Err(bad());
        }
        Ok(FunctionRef {
            name: name.to_owned(),
            account,
            region: region.map(str::to_owned),
            qualifier,
        })
    }
}

/// Whether `s` looks like an AWS region id (`us-east-1`, `us-gov-west-1`).
pub fn is_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let (head, tail) = match parts.as_slice() {
        [a, b, n] => (vec![*a, *b], *n),
        [a, "gov", b, n] => (vec![*a, *b], *n),
        _ => return false,
    };
    head[0].len() == 2
        && head
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && tail.len() == 1
        && tail.bytes().all(|b| b.is_ascii_digit())
}

/// A log stream name as Lambda gives one to each execution environment:
/// `YYYY/MM/DD/[version]<32 lowercase hex>`, the UTC date the sandbox
/// started, the function version it runs (`$LATEST` or a number) and the
/// sandbox id, e.g. `2026/05/02/[$LATEST]0f1e2d3c4b5a69788796a5b4c3d2e1f0`.
///
/// A parsed name is safe to use as a relative path: its only `/` separate
/// the date parts and the last component is `[version]hex`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LogStreamName(String);

impl LogStreamName {
    /// The name of the stream of sandbox `id` (32 lowercase hex digits)
    /// running `version`, started on the given UTC date.
    pub fn new(year: i32, month: u8, day: u8, version: &str, id: &str) -> Result<Self, NameError> {
        Self::parse(&format!("{year:04}/{month:02}/{day:02}/[{version}]{id}"))
    }

    /// Parses and validates a stream name.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let bad = || NameError::LogStream(s.to_owned());
        let (date, leaf) = s.split_at_checked(10).ok_or_else(bad)?;
        let d = date.as_bytes();
        let digits = |r: std::ops::Range<usize>| d[r].iter().all(u8::is_ascii_digit);
        let number = |r: std::ops::Range<usize>| date[r].parse::<u8>().unwrap_or(0);
        let date_ok = digits(0..4)
            && d[4] == b'/'
            && digits(5..7)
            && d[7] == b'/'
            && digits(8..10)
            && (1..=12).contains(&number(5..7))
            && (1..=31).contains(&number(8..10));
        if !date_ok {
            return Err(bad());
        }
        let rest = leaf
            .strip_prefix("/[")
            .and_then(|r| r.split_once(']'))
            .ok_or_else(bad)?;
        let (version, id) = rest;
        let version_ok = version == "$LATEST"
            || (!version.is_empty()
                && version.len() <= 20
                && version.bytes().all(|b| b.is_ascii_digit()));
        let id_ok = id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !version_ok || !id_ok {
            return Err(bad());
        }
        Ok(LogStreamName(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `YYYY/MM/DD`.
    pub fn date(&self) -> &str {
        &self.0[..10]
    }

    /// `[version]<hex>`, the part after the date.
    pub fn leaf(&self) -> &str {
        &self.0[11..]
    }
}

impl fmt::Display for LogStreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Builds a function ARN.
pub fn function_arn(
    region: &str,
    account: &AccountId,
    name: &str,
    qualifier: Option<&str>,
) -> String {
    match qualifier {
        Some(q) => format!("arn:aws:lambda:{region}:{account}:function:{name}:{q}"),
        None => format!("arn:aws:lambda:{region}:{account}:function:{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_plain_name() {
        let r = FunctionRef::parse("my-fn").expect("valid");
        assert_eq!(r.name, "my-fn");
        assert_eq!(r.qualifier, None);
        assert_eq!(r.account, None);
    }

    #[test]
    fn parses_name_with_qualifier() {
        let r = FunctionRef::parse("my-fn:$LATEST").expect("valid");
        assert_eq!(r.qualifier.as_deref(), Some("$LATEST"));
        let r = FunctionRef::parse("my-fn:prod").expect("valid");
        assert_eq!(r.qualifier.as_deref(), Some("prod"));
    }

    #[test]
    fn parses_full_and_partial_arns() {
        let r = FunctionRef::parse("arn:aws:lambda:eu-west-1:123456789012:function:f:7")
            .expect("valid");
        assert_eq!(r.name, "f");
        assert_eq!(r.region.as_deref(), Some("eu-west-1"));
        assert_eq!(
            r.account.as_ref().map(AccountId::as_str),
            Some("123456789012")
        );
        assert_eq!(r.qualifier.as_deref(), Some("7"));
        let r = FunctionRef::parse("123456789012:function:f").expect("valid");
        assert_eq!(r.name, "f");
        assert_eq!(r.qualifier, None);
    }

    #[test]
    fn rejects_bad_names() {
        for bad in [
            "",
            "my-function!",
            "a:b:c",
            "arn:aws:s3:::bucket",
            "12:function:f",
            "f:",
            "f:bad!q",
            "arn:aws:lambda:nowhere:123456789012:function:f",
        ] {
            assert!(FunctionRef::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn create_names_are_stricter() {
        assert!(validate_function_name("ok_Name-1").is_ok());
        assert!(matches!(
            validate_function_name("a.b"),
            Err(NameError::FunctionPattern(_))
        ));
        assert!(matches!(
            validate_function_name(&"a".repeat(65)),
            Err(NameError::FunctionTooLong(_))
        ));
    }

    #[test]
    fn qualifier_parameters_allow_dollar_anywhere() {
        assert!(validate_qualifier_param("$latest").is_ok());
        assert!(validate_qualifier_param("").is_ok());
        assert!(validate_qualifier_param("bad!").is_err());
        assert!(validate_qualifier("$latest").is_err());
    }

    #[test]
    fn regions() {
        assert!(is_region("us-east-1"));
        assert!(is_region("us-gov-west-1"));
        assert!(!is_region("useast1"));
        assert!(!is_region("US-east-1"));
    }

    #[test]
    fn arn_roundtrip() {
        let acct = AccountId::parse("123456789012").expect("valid");
        let arn = function_arn("us-east-1", &acct, "f", Some("$LATEST"));
        let r = FunctionRef::parse(&arn).expect("valid");
        assert_eq!(r.name, "f");
        assert_eq!(r.qualifier.as_deref(), Some("$LATEST"));
    }

    #[test]
    fn log_stream_names() {
        let id = "0123456789abcdef0123456789abcdef";
        let n = LogStreamName::new(2026, 5, 2, "$LATEST", id).expect("valid");
        assert_eq!(n.as_str(), format!("2026/05/02/[$LATEST]{id}"));
        assert_eq!(n.date(), "2026/05/02");
        assert_eq!(n.leaf(), format!("[$LATEST]{id}"));
        assert!(LogStreamName::new(2026, 12, 31, "17", id).is_ok());
        for bad in [
            String::new(),
            "2026/05/02".to_owned(),
            format!("2026/05/02/[$LATEST]{}", &id[..31]),
            format!("2026/05/02/[$LATEST]{}", id.to_uppercase()),
            format!("2026/13/02/[$LATEST]{id}"),
            format!("2026/05/00/[$LATEST]{id}"),
            format!("2026/05/02/[latest]{id}"),
            format!("2026/05/02/[../x]{id}"),
            format!("2026/05/02/[$LATEST]{id}/x"),
            format!("2026-05-02/[$LATEST]{id}"),
            format!("2026/05/02/[]{id}"),
            format!("é026/05/02/[$LATEST]{id}"),
        ] {
            assert!(
                LogStreamName::parse(&bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,200}") {
            let _ = FunctionRef::parse(&s);
        }

        #[test]
        fn log_stream_parse_never_panics(s in "\\PC{0,80}") {
            let _ = LogStreamName::parse(&s);
        }

        #[test]
        fn valid_names_parse_back(name in "[a-zA-Z0-9_-]{1,64}") {
            let r = FunctionRef::parse(&name).expect("valid name");
            prop_assert_eq!(r.name, name);
        }
    }
}
