//! The one error type of the HTTP surface: a status and a message, answered
//! as the Hub answers, `{"error": "…"}` with an `X-Error-Code` where the Hub
//! sends one (the Python client maps those to its own exception types).

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug, Clone, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub code: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), code: None }
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    pub fn repo_not_found() -> Self {
        Self::not_found("Repository not found").with_code("RepoNotFound")
    }

    pub fn revision_not_found(revision: &str) -> Self {
        Self::not_found(format!("Invalid rev id: {revision}")).with_code("RevisionNotFound")
    }

    pub fn entry_not_found(path: &str) -> Self {
        Self::not_found(format!("Entry not found: {path}")).with_code("EntryNotFound")
    }

    pub fn bucket_not_found() -> Self {
        Self::not_found("Bucket not found").with_code("BucketNotFound")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(serde_json::json!({ "error": self.message }))).into_response();
        if let Some(code) = self.code {
            resp.headers_mut().insert("x-error-code", HeaderValue::from_static(code));
            resp.headers_mut().insert(
                "x-error-message",
                HeaderValue::from_str(&self.message).unwrap_or(HeaderValue::from_static("error")),
            );
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
