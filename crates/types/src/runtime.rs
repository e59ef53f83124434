//! Runtime identifiers (`python3.12`, `nodejs20.x`, `provided.al2023`).

use std::fmt;

/// The language family of a runtime id, which decides how its sandbox starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuntimeFamily {
    /// `python3.x`: Stratus's Python bootstrap on the host's python interpreter.
    Python,
    /// `nodejs*.x`: Stratus's Node bootstrap on the host's node interpreter.
    Node,
    /// `provided*`: the zip's executable `bootstrap` is the runtime.
    Provided,
}

/// Every runtime id the Lambda API model (2026) accepts for Zip functions.
/// Ids outside [`SUPPORTED`] are valid for the API but Stratus refuses them
/// at create time with a clear message.
pub const ALL_IDS: &[&str] = &[
    "nodejs18.x",
    "nodejs20.x",
    "nodejs22.x",
    "nodejs24.x",
    "nodejs26.x",
    "python3.9",
    "python3.10",
    "python3.11",
    "python3.12",
    "python3.13",
    "python3.14",
    "python3.15",
    "java8.al2",
    "java11",
    "java17",
    "java21",
    "java25",
    "dotnet8",
    "dotnet10",
    "ruby3.2",
    "ruby3.3",
    "ruby3.4",
    "ruby4.0",
    "provided",
    "provided.al2",
    "provided.al2023",
];

/// Environment variables the Lambda execution environment defines itself:
/// a function configuration may not set them, and a sandbox's environment
/// always carries the platform's values.
pub const RESERVED_ENV: &[&str] = &[
    "_HANDLER",
    "_X_AMZN_TRACE_ID",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
];

/// A runtime id Stratus can run.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Runtime {
    id: String,
    family: RuntimeFamily,
}

/// Why a runtime id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// Not a Lambda runtime id at all.
    #[error("unknown runtime {0:?}")]
    Unknown(String),
    /// A Lambda runtime id whose language Stratus does not run.
    #[error(
        "runtime {0:?} is not supported by Stratus (supported: python3.x, nodejs*.x, provided, provided.al2, provided.al2023)"
    )]
    Unsupported(String),
}

impl Runtime {
    /// Parses a runtime id exactly as Lambda spells it (case-sensitive).
    pub fn parse(id: &str) -> Result<Self, RuntimeError> {
        if !ALL_IDS.contains(&id) {
            return Err(RuntimeError::Unknown(id.to_owned()));
        }
        let family = if id.starts_with("python3.") {
            RuntimeFamily::Python
        } else if id.starts_with("nodejs") {
            RuntimeFamily::Node
        } else if id.starts_with("provided") {
            RuntimeFamily::Provided
        } else {
            return Err(RuntimeError::Unsupported(id.to_owned()));
        };
        Ok(Runtime {
            id: id.to_owned(),
            family,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn family(&self) -> RuntimeFamily {
        self.family
    }

    /// The value of `AWS_EXECUTION_ENV` for this runtime (none for `provided*`).
    pub fn execution_env(&self) -> Option<String> {
        match self.family {
            RuntimeFamily::Provided => None,
            _ => Some(format!("AWS_Lambda_{}", self.id)),
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families() {
        assert_eq!(
            Runtime::parse("python3.12").map(|r| r.family()),
            Ok(RuntimeFamily::Python)
        );
        assert_eq!(
            Runtime::parse("nodejs20.x").map(|r| r.family()),
            Ok(RuntimeFamily::Node)
        );
        assert_eq!(
            Runtime::parse("provided.al2023").map(|r| r.family()),
            Ok(RuntimeFamily::Provided)
        );
    }

    #[test]
    fn refuses_unknown_and_unsupported() {
        assert!(matches!(
            Runtime::parse("PYTHON3.9"),
            Err(RuntimeError::Unknown(_))
        ));
        assert!(matches!(
            Runtime::parse("python2.7"),
            Err(RuntimeError::Unknown(_))
        ));
        assert!(matches!(
            Runtime::parse("java21"),
            Err(RuntimeError::Unsupported(_))
        ));
    }

    #[test]
    fn execution_env() {
        let r = Runtime::parse("python3.12").expect("valid");
        assert_eq!(r.execution_env().as_deref(), Some("AWS_Lambda_python3.12"));
        let r = Runtime::parse("provided.al2").expect("valid");
        assert_eq!(r.execution_env(), None);
    }
}
