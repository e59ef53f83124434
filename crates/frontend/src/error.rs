//! The one place a [`LambdaError`] becomes an HTTP response.

use axum::http::{HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use stratus_api::{ErrorCode, LambdaError};

/// A handler's error, rendered as Lambda renders it.
#[derive(Debug)]
pub struct ApiError(pub LambdaError);

impl From<LambdaError> for ApiError {
    fn from(e: LambdaError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = self.0;
        if e.code == ErrorCode::Service {
            tracing::error!(message = %e.message, "internal error");
        }
        let mut resp = (e.code.status(), axum::Json(e.body())).into_response();
        let h = resp.headers_mut();
        h.insert(
            "x-amzn-errortype",
            HeaderValue::from_static(e.code.type_name()),
        );
        if let Some(s) = e.retry_after_s
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            h.insert("retry-after", v);
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Any path or method the API does not have.
pub async fn unknown_operation(method: Method, uri: Uri) -> Response {
    let mut resp = ApiError(LambdaError::new(
        ErrorCode::UnknownOperation,
        format!("Unknown operation {method} {}", uri.path()),
    ))
    .into_response();
    *resp.status_mut() = StatusCode::NOT_FOUND;
    resp
}
