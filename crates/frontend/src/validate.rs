//! Validation of control-plane input, with Lambda's error types and wording.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use stratus_api::LambdaError;
use stratus_api::model::{
    Environment, EphemeralStorage, LoggingConfig, TracingConfig, is_empty_value,
};
use stratus_types::limits::*;
use stratus_types::runtime::{ALL_IDS, RESERVED_ENV, RuntimeError};
use stratus_types::{FUNCTION_NAME_PATTERN, NameError, Runtime, RuntimeFamily};

use crate::Interpreters;

const ROLE_PATTERN: &str = "arn:(aws[a-zA-Z-]*)?:iam::\\d{12}:role/?[a-zA-Z_0-9+=,.@\\-_/]+";

/// A function name as CreateFunction takes it.
pub fn function_name(name: &str) -> Result<(), LambdaError> {
    match stratus_types::validate_function_name(name) {
        Ok(()) => Ok(()),
        Err(NameError::FunctionTooLong(_))
            if name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
        {
            // The model allows 140 characters (ARNs); the service refuses
            // plain names over 64 itself, as InvalidParameterValueException.
            Err(LambdaError::invalid(format!(
                "The function name {name} is longer than 64 characters: function names can have at most 64 characters."
            )))
        }
        Err(_) => Err(LambdaError::validation(
            name,
            "functionName",
            &format!("Member must satisfy regular expression pattern: {FUNCTION_NAME_PATTERN}"),
        )),
    }
}

/// A runtime id: known to Lambda, run by Stratus, and its interpreter present.
pub fn runtime(id: &str, interpreters: &Interpreters) -> Result<Runtime, LambdaError> {
    let rt = Runtime::parse(id).map_err(|e| match e {
        RuntimeError::Unknown(_) => LambdaError::invalid(format!(
            "Value {id} at 'runtime' failed to satisfy constraint: Member must satisfy enum value set: [{}] or be a valid ARN",
            ALL_IDS.join(", ")
        )),
        RuntimeError::Unsupported(_) => LambdaError::invalid(format!(
            "The runtime parameter of {id} is not supported by Stratus. Supported runtimes: python3.x, nodejs*.x, provided, provided.al2, provided.al2023."
        )),
    })?;
    let interp = match rt.family() {
        RuntimeFamily::Python => Some(&interpreters.python),
        RuntimeFamily::Node => Some(&interpreters.node),
        RuntimeFamily::Provided => None,
    };
    if let Some(None) = interp {
        return Err(LambdaError::invalid(format!(
            "The runtime parameter of {id} is not available on this Stratus server: its interpreter is not installed or not configured."
        )));
    }
    Ok(rt)
}

pub fn role(role: &str) -> Result<(), LambdaError> {
    let ok = role.starts_with("arn:aws") && role.contains(":iam::") && {
        let after = role.split(":iam::").nth(1).unwrap_or("");
        let (acct, rest) = after.split_at(after.len().min(12));
        acct.len() == 12
            && acct.bytes().all(|b| b.is_ascii_digit())
            && rest.starts_with(":role/")
            && rest.len() > 6
    };
    if ok {
        Ok(())
    } else {
        Err(LambdaError::validation(
            role,
            "role",
            &format!("Member must satisfy regular expression pattern: {ROLE_PATTERN}"),
        ))
    }
}

pub fn handler(h: &str) -> Result<(), LambdaError> {
    if h.is_empty() || h.len() > HANDLER_MAX_CHARS || h.chars().any(char::is_whitespace) {
        return Err(LambdaError::validation(
            h,
            "handler",
            "Member must satisfy regular expression pattern: [^\\s]+",
        ));
    }
    Ok(())
}

pub fn description(d: &str) -> Result<(), LambdaError> {
    if d.chars().count() > DESCRIPTION_MAX_CHARS {
        return Err(LambdaError::validation(
            d,
            "description",
            "Member must have length less than or equal to 256",
        ));
    }
    Ok(())
}

pub fn memory(m: i64) -> Result<u32, LambdaError> {
    if m < i64::from(MEMORY_MIN_MB) {
        return Err(LambdaError::validation(
            &m.to_string(),
            "memorySize",
            "Member must have value greater than or equal to 128",
        ));
    }
    if m > i64::from(MEMORY_MAX_MB) {
        return Err(LambdaError::invalid(
            "'MemorySize' value failed to satisfy constraint: Member must have value less than or equal to 10240",
        ));
    }
    u32::try_from(m).map_err(|_| LambdaError::invalid("MemorySize is out of range"))
}

pub fn timeout(t: i64) -> Result<u32, LambdaError> {
    if t < i64::from(TIMEOUT_MIN_S) {
        return Err(LambdaError::validation(
            &t.to_string(),
            "timeout",
            "Member must have value greater than or equal to 1",
        ));
    }
    if t > i64::from(TIMEOUT_MAX_S) {
        return Err(LambdaError::invalid(
            "'Timeout' value failed to satisfy constraint: Member must have value less than or equal to 900",
        ));
    }
    u32::try_from(t).map_err(|_| LambdaError::invalid("Timeout is out of range"))
}

pub fn ephemeral(e: &EphemeralStorage) -> Result<u32, LambdaError> {
    if e.size < i64::from(EPHEMERAL_MIN_MB) || e.size > i64::from(EPHEMERAL_MAX_MB) {
        return Err(LambdaError::validation(
            &e.size.to_string(),
            "ephemeralStorage.size",
            "Member must have value between 512 and 10240",
        ));
    }
    u32::try_from(e.size).map_err(|_| LambdaError::invalid("EphemeralStorage is out of range"))
}

/// Environment variables: names, reserved keys, the 4 KB limit.
pub fn environment(env: &Environment) -> Result<BTreeMap<String, String>, LambdaError> {
    let vars = &env.variables;
    for k in vars.keys() {
        let mut chars = k.chars();
        let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(LambdaError::validation(
                k,
                "environment.variables",
                "Member must satisfy regular expression pattern: [a-zA-Z]([a-zA-Z0-9_])+",
            ));
        }
    }
    let reserved: Vec<&str> = vars
        .keys()
        .map(String::as_str)
        .filter(|k| RESERVED_ENV.contains(k))
        .collect();
    if !reserved.is_empty() {
        return Err(LambdaError::invalid(format!(
            "Lambda was unable to configure your environment variables because the environment variables you have provided contains reserved keys that are currently not supported for modification. Reserved keys used in this request: {}",
            reserved.join(",")
        )));
    }
    // Stratus's extension: the isolation tier this function asks for.
    if let Some(tier) = vars.get(stratus_types::ISOLATION_ENV) {
        stratus_types::Isolation::parse(tier).map_err(|e| {
            LambdaError::invalid(format!(
                "Environment variable {}: {e}",
                stratus_types::ISOLATION_ENV
            ))
        })?;
    }
    let measured = serde_json::to_string(vars).unwrap_or_default();
    let size: usize = vars.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > ENV_MAX_BYTES {
        return Err(LambdaError::invalid(format!(
            "Lambda was unable to configure your environment variables because the environment variables you have provided exceeded the 4KB limit. String measured: {measured}"
        )));
    }
    Ok(vars.clone())
}

pub fn architectures(a: &Option<Vec<String>>) -> Result<Vec<String>, LambdaError> {
    let host = if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "x86_64"
    };
    match a.as_deref() {
        None | Some([]) => Ok(vec![host.to_owned()]),
        Some([one]) if one == host => Ok(vec![host.to_owned()]),
        Some([one]) if one == "x86_64" || one == "arm64" => Err(LambdaError::invalid(format!(
            "Stratus runs functions on the host's architecture ({host}); Architectures [{one}] cannot run on this server."
        ))),
        Some(other) => Err(LambdaError::validation(
            &format!("[{}]", other.join(", ")),
            "architectures",
            "Member must have length less than or equal to 1, Member must satisfy enum value set: [x86_64, arm64]",
        )),
    }
}

pub fn tracing_config(t: &Option<TracingConfig>) -> Result<(), LambdaError> {
    match t.as_ref().and_then(|t| t.mode.as_deref()) {
        None | Some("PassThrough") => Ok(()),
        Some(m) => Err(unsupported(&format!("TracingConfig.Mode {m}"))),
    }
}

pub fn logging_config(l: &Option<LoggingConfig>, name: &str) -> Result<(), LambdaError> {
    let Some(l) = l else { return Ok(()) };
    if l.log_format.as_deref().is_some_and(|f| f != "Text") {
        return Err(unsupported("LoggingConfig.LogFormat other than Text"));
    }
    if l.log_group
        .as_deref()
        .is_some_and(|g| g != format!("/aws/lambda/{name}"))
    {
        return Err(unsupported("LoggingConfig.LogGroup"));
    }
    if l.application_log_level.is_some() || l.system_log_level.is_some() {
        return Err(unsupported("LoggingConfig log levels"));
    }
    Ok(())
}

/// The error for a Lambda feature Stratus does not implement.
pub fn unsupported(field: &str) -> LambdaError {
    LambdaError::invalid(format!(
        "Stratus does not support {field} yet; omit it (or leave it empty) and try again."
    ))
}

/// Refuses any member Stratus does not implement unless it asks for nothing.
pub fn other_fields(other: &Map<String, Value>, prefix: &str) -> Result<(), LambdaError> {
    for (k, v) in other {
        let harmless = is_empty_value(v)
            || (k == "Publish" && v == &Value::Bool(false))
            || (k == "DryRun" && v == &Value::Bool(false))
            || (k == "SnapStart" && v.get("ApplyOn").is_some_and(|a| a == "None"));
        if !harmless {
            return Err(unsupported(&format!("{prefix}{k}")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratus_api::ErrorCode;

    fn interps() -> Interpreters {
        Interpreters {
            python: Some("/usr/bin/python3".into()),
            node: None,
        }
    }

    #[test]
    fn names() {
        assert!(function_name("ok-name_1").is_ok());
        assert_eq!(
            function_name("bad!").expect_err("bad").code,
            ErrorCode::Validation
        );
        let long = function_name(&"a".repeat(65)).expect_err("long");
        assert_eq!(long.code, ErrorCode::InvalidParameterValue);
        assert!(long.message.contains("64"));
    }

    #[test]
    fn runtimes() {
        assert!(runtime("python3.12", &interps()).is_ok());
        let e = runtime("PYTHON3.9", &interps()).expect_err("case matters");
        assert_eq!(e.code, ErrorCode::InvalidParameterValue);
        assert!(e.message.contains("Member must satisfy enum value set"));
        let e = runtime("nodejs20.x", &interps()).expect_err("no node here");
        assert!(e.message.contains("not available"));
        assert!(
            runtime("java21", &interps())
                .expect_err("java")
                .message
                .contains("not supported")
        );
        assert!(runtime("provided.al2023", &interps()).is_ok());
    }

    #[test]
    fn memory_and_timeout_limits() {
        assert_eq!(memory(127).expect_err("low").code, ErrorCode::Validation);
        assert_eq!(
            memory(10241).expect_err("high").code,
            ErrorCode::InvalidParameterValue
        );
        assert_eq!(memory(10240).expect("max"), 10240);
        assert_eq!(timeout(0).expect_err("low").code, ErrorCode::Validation);
        assert_eq!(
            timeout(901).expect_err("high").code,
            ErrorCode::InvalidParameterValue
        );
    }

    #[test]
    fn environment_rules() {
        let env = |pairs: &[(&str, &str)]| Environment {
            variables: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        assert!(environment(&env(&[("GREETING", "hi")])).is_ok());
        let e = environment(&env(&[("STRATUS_ISOLATION", "vm")])).expect_err("bad tier");
        assert!(e.to_string().contains("STRATUS_ISOLATION"), "{e}");
        environment(&env(&[("STRATUS_ISOLATION", "gvisor")])).expect("a tier");
        let e = environment(&env(&[("AWS_REGION", "x")])).expect_err("reserved");
        assert!(
            e.message
                .contains("Reserved keys used in this request: AWS_REGION")
        );
        let big = "x".repeat(4100);
        let e = environment(&env(&[("BIG", &big)])).expect_err("too big");
        assert!(e.message.contains("exceeded the 4KB limit"));
        assert_eq!(
            environment(&env(&[("1BAD", "x")])).expect_err("name").code,
            ErrorCode::Validation
        );
    }

    #[test]
    fn roles() {
        assert!(role("arn:aws:iam::123456789012:role/lambda-role").is_ok());
        assert_eq!(
            role("not-a-role").expect_err("bad").code,
            ErrorCode::Validation
        );
    }

    #[test]
    fn unsupported_fields_are_named() {
        let mut m = Map::new();
        m.insert(
            "VpcConfig".into(),
            serde_json::json!({"SubnetIds": [], "SecurityGroupIds": []}),
        );
        m.insert("Publish".into(), Value::Bool(false));
        assert!(other_fields(&m, "").is_ok());
        m.insert("KMSKeyArn".into(), Value::String("arn:aws:kms:x".into()));
        let e = other_fields(&m, "").expect_err("kms");
        assert!(e.message.contains("KMSKeyArn"));
    }
}
