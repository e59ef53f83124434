//! Lambda's client-visible errors: one place maps each to its HTTP status,
//! `x-amzn-ErrorType` and body shape.

use http::StatusCode;
use serde_json::json;

/// The error codes Lambda clients understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    ResourceNotFound,
    /// GetProvisionedConcurrencyConfig of a version or alias without one.
    ProvisionedConcurrencyConfigNotFound,
    ResourceConflict,
    InvalidParameterValue,
    Validation,
    PreconditionFailed,
    TooManyRequests,
    RequestEntityTooLarge,
    InvalidRequestContent,
    UnsupportedMediaType,
    Service,
    ResourceNotReady,
    /// No route matched the request path/method (API Gateway's answer).
    UnknownOperation,
    /// No credentials: no `Authorization` header.
    MissingAuthenticationToken,
    /// A malformed `Authorization` header.
    IncompleteSignature,
    /// An access key the server does not know (or revoked).
    UnrecognizedClient,
    /// A signature that does not match, or is outside the 15-minute window.
    InvalidSignature,
    /// Authenticated, but not allowed (a non-admin key on the admin API).
    AccessDenied,
}

impl ErrorCode {
    /// The `x-amzn-ErrorType` value.
    pub fn type_name(self) -> &'static str {
        match self {
            ErrorCode::ResourceNotFound => "ResourceNotFoundException",
            ErrorCode::ProvisionedConcurrencyConfigNotFound => {
                "ProvisionedConcurrencyConfigNotFoundException"
            }
            ErrorCode::ResourceConflict => "ResourceConflictException",
            ErrorCode::InvalidParameterValue => "InvalidParameterValueException",
            ErrorCode::Validation => "ValidationException",
            ErrorCode::PreconditionFailed => "PreconditionFailedException",
            ErrorCode::TooManyRequests => "TooManyRequestsException",
            ErrorCode::RequestEntityTooLarge => "RequestEntityTooLargeException",
            ErrorCode::InvalidRequestContent => "InvalidRequestContentException",
            ErrorCode::UnsupportedMediaType => "UnsupportedMediaTypeException",
            ErrorCode::Service => "ServiceException",
            ErrorCode::ResourceNotReady => "ResourceNotReadyException",
            ErrorCode::UnknownOperation => "UnknownOperationException",
            ErrorCode::MissingAuthenticationToken => "MissingAuthenticationTokenException",
            ErrorCode::IncompleteSignature => "IncompleteSignatureException",
            ErrorCode::UnrecognizedClient => "UnrecognizedClientException",
            ErrorCode::InvalidSignature => "InvalidSignatureException",
            ErrorCode::AccessDenied => "AccessDeniedException",
        }
    }

    /// The HTTP status Lambda sends with this error.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::ResourceNotFound
            | ErrorCode::ProvisionedConcurrencyConfigNotFound
            | ErrorCode::UnknownOperation => StatusCode::NOT_FOUND,
            ErrorCode::ResourceConflict => StatusCode::CONFLICT,
            ErrorCode::InvalidParameterValue
            | ErrorCode::Validation
            | ErrorCode::InvalidRequestContent => StatusCode::BAD_REQUEST,
            ErrorCode::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RequestEntityTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::Service => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::ResourceNotReady => StatusCode::BAD_GATEWAY,
            ErrorCode::MissingAuthenticationToken
            | ErrorCode::IncompleteSignature
            | ErrorCode::UnrecognizedClient
            | ErrorCode::InvalidSignature
            | ErrorCode::AccessDenied => StatusCode::FORBIDDEN,
        }
    }
}

/// A client-visible Lambda error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.type_name())]
pub struct LambdaError {
    pub code: ErrorCode,
    pub message: String,
    /// `Reason` member of throttling errors.
    pub reason: Option<&'static str>,
    /// Seconds for the `Retry-After` header of throttling errors.
    pub retry_after_s: Option<u64>,
}

impl LambdaError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        LambdaError {
            code,
            message: message.into(),
            reason: None,
            retry_after_s: None,
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ResourceNotFound, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ResourceConflict, message)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidParameterValue, message)
    }

    /// A model-level validation failure, in the `1 validation error detected`
    /// wording the SDKs show.
    pub fn validation(value: &str, field: &str, constraint: &str) -> Self {
        Self::new(
            ErrorCode::Validation,
            format!(
                "1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: {constraint}"
            ),
        )
    }

    pub fn service(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Service, message)
    }

    /// A throttle with Lambda's `Reason`.
    pub fn throttled(reason: &'static str, message: impl Into<String>) -> Self {
        LambdaError {
            code: ErrorCode::TooManyRequests,
            message: message.into(),
            reason: Some(reason),
            retry_after_s: Some(1),
        }
    }

    /// The JSON body as Lambda sends it.
    pub fn body(&self) -> serde_json::Value {
        match (self.code, self.reason) {
            (ErrorCode::TooManyRequests, Some(reason)) => {
                json!({"Reason": reason, "Type": "User", "message": self.message})
            }
            (
                ErrorCode::Validation
                | ErrorCode::MissingAuthenticationToken
                | ErrorCode::IncompleteSignature
                | ErrorCode::UnrecognizedClient
                | ErrorCode::InvalidSignature
                | ErrorCode::AccessDenied,
                _,
            ) => json!({"message": self.message}),
            (ErrorCode::Service, _) => json!({"Type": "Service", "Message": self.message}),
            _ => json!({"Type": "User", "Message": self.message}),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_body_has_reason() {
        let e = LambdaError::throttled("ConcurrentInvocationLimitExceeded", "Rate Exceeded.");
        assert_eq!(e.code.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.body()["Reason"], "ConcurrentInvocationLimitExceeded");
        assert_eq!(e.body()["message"], "Rate Exceeded.");
    }

    #[test]
    fn statuses() {
        assert_eq!(ErrorCode::ResourceNotFound.status(), 404);
        assert_eq!(ErrorCode::PreconditionFailed.status(), 412);
        assert_eq!(ErrorCode::RequestEntityTooLarge.status(), 413);
        assert_eq!(ErrorCode::InvalidSignature.status(), 403);
        assert_eq!(
            ErrorCode::MissingAuthenticationToken.type_name(),
            "MissingAuthenticationTokenException"
        );
        assert_eq!(
            ErrorCode::InvalidRequestContent.type_name(),
            "InvalidRequestContentException"
        );
    }

    #[test]
    fn validation_wording() {
        let e = LambdaError::validation(
            "x!",
            "functionName",
            "Member must satisfy regular expression pattern: p",
        );
        assert!(
            e.message
                .starts_with("1 validation error detected: Value 'x!' at 'functionName'")
        );
        assert_eq!(e.body()["message"], e.message.as_str());
    }
}
