//! API errors: every failure becomes `{"error": {"code", "message"}}` with its HTTP status.

use lambda_http::http::StatusCode;

use crm_shared::store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for a `Retry-After` header (a `429`).
    pub retry_after_secs: Option<u64>,
    /// More about the error under `error` (field errors, Meta's answer, a message id).
    pub extra: Option<serde_json::Map<String, serde_json::Value>>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
            extra: None,
        }
    }

    /// Adds `key: value` beside `code` and `message`.
    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.extra
            .get_or_insert_with(Default::default)
            .insert(key.to_owned(), value.into());
        self
    }

    /// `429`: the tenant is over its request quota; retry after `retry_after_secs`.
    pub fn rate_limited(retry_after_secs: u64) -> Self {
        ApiError {
            retry_after_secs: Some(retry_after_secs),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("the tenant's request quota is used up; retry after {retry_after_secs} s"),
            )
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn route_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "route_not_found", "no such route")
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this route does not accept that method",
        )
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "the request could not be completed; retry later",
        )
    }

    pub fn body(&self) -> serde_json::Value {
        let mut error = serde_json::json!({"code": self.code, "message": self.message});
        for (k, v) in self.extra.iter().flatten() {
            error[k] = v.clone();
        }
        serde_json::json!({ "error": error })
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict(message) => ApiError::new(StatusCode::CONFLICT, "conflict", message),
            StoreError::NotFound => ApiError::not_found("not found"),
            StoreError::VersionMismatch => ApiError::new(
                StatusCode::CONFLICT,
                "concurrent_modification",
                "the resource changed while this request was processed; retry",
            ),
            StoreError::Backend(_) | StoreError::Rejected(_) | StoreError::Corrupt(_) => {
                // The detail stays in the log (it carries no personal data), not in the response.
                tracing::error!(error = %err, "storage failure");
                ApiError::internal()
            }
        }
    }
}
