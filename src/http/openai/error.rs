//! OpenAI's error envelope, `{"error": {"message", "type", "param", "code"}}`, with OpenAI's
//! status codes, so SDKs raise their own exception types.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::StreamFailure;
use crate::error::Error;
use crate::providers::ProviderError;

/// The domain error, rendered for the OpenAI-compatible API.
#[derive(Debug)]
pub struct OpenAiError(pub Error);

impl From<Error> for OpenAiError {
    fn from(e: Error) -> Self {
        OpenAiError(e)
    }
}

/// The one place where this dialect maps errors to status, type and code.
fn classify(e: &Error) -> (StatusCode, &'static str, Option<&'static str>) {
    match e {
        Error::BadRequest { .. } | Error::Unprocessable { .. } => {
            (StatusCode::BAD_REQUEST, "invalid_request_error", None)
        }
        Error::Unauthenticated | Error::UnauthenticatedBecause(_) => (
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            Some("invalid_api_key"),
        ),
        Error::Forbidden(_) | Error::PublishableNotAllowed => {
            (StatusCode::FORBIDDEN, "permission_error", None)
        }
        Error::NotFound(_) => (
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("not_found"),
        ),
        Error::ModelNotFound(_) => (
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("model_not_found"),
        ),
        Error::Conflict { .. } => (StatusCode::CONFLICT, "invalid_request_error", None),
        // OpenAI's own answer to a spent quota, which the SDKs raise as a rate-limit error.
        Error::InsufficientCredits { .. } => (
            StatusCode::TOO_MANY_REQUESTS,
            "insufficient_quota",
            Some("insufficient_quota"),
        ),
        Error::RateLimited { .. } => (
            StatusCode::TOO_MANY_REQUESTS,
            "requests",
            Some("rate_limit_exceeded"),
        ),
        Error::PayloadTooLarge { .. } => {
            (StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error", None)
        }
        Error::RequestTimeout => (StatusCode::REQUEST_TIMEOUT, "invalid_request_error", None),
        Error::UnsupportedMediaType(_) => (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request_error",
            None,
        ),
        Error::Upstream(p) => upstream_status(p),
        Error::ShuttingDown => (
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            Some("shutting_down"),
        ),
        Error::Unavailable { code, .. } => {
            (StatusCode::SERVICE_UNAVAILABLE, "server_error", Some(*code))
        }
        Error::Database(_) | Error::Internal(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "server_error", None)
        }
    }
}

fn upstream_status(e: &ProviderError) -> (StatusCode, &'static str, Option<&'static str>) {
    match e {
        ProviderError::Timeout(..) => (
            StatusCode::GATEWAY_TIMEOUT,
            "api_error",
            Some("upstream_timeout"),
        ),
        _ => (StatusCode::BAD_GATEWAY, "api_error", Some("upstream_error")),
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let (status, kind, code) = classify(&self.0);
        if status.is_server_error() {
            tracing::error!(error = %self.0, "request failed");
        }
        let param = match &self.0 {
            Error::ModelNotFound(_) => Some("model"),
            other => other.field(),
        };
        let mut body = envelope(
            &self.0.public_message(),
            kind,
            param,
            code.or(Some(self.0.code())),
        );
        let retry_after = self.0.retry_after_secs();
        if matches!(self.0, Error::RateLimited { .. }) {
            body.retry_after = retry_after;
        }
        let response = (status, Json(body)).into_response();
        crate::http::with_retry_after(response, retry_after)
    }
}

/// OpenAI's error envelope, as the SDKs parse it.
#[derive(Serialize, ToSchema)]
#[schema(as = OpenAIError)]
pub struct ErrorEnvelope {
    pub error: ErrorObject,
    /// With a rate-limit refusal: seconds until the key's window resets.
    #[serde(rename = "retryAfter", skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = OpenAIErrorObject)]
pub struct ErrorObject {
    pub message: String,
    /// `invalid_request_error`, `permission_error`, `api_error` or `server_error`.
    #[serde(rename = "type")]
    #[schema(examples("invalid_request_error"))]
    pub kind: String,
    /// The request field at fault (`messages[1].role`), when there is one.
    pub param: Option<String>,
    /// A stable code: `invalid_api_key`, `model_not_found`, `upstream_error`, …
    pub code: Option<String>,
}

impl ErrorEnvelope {
    /// The envelope as a JSON string, for an SSE event's data.
    pub fn to_json(&self) -> String {
        // Strings and nulls only: serialisation cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

pub fn envelope(
    message: &str,
    kind: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> ErrorEnvelope {
    ErrorEnvelope {
        error: ErrorObject {
            message: message.to_owned(),
            kind: kind.to_owned(),
            param: param.map(str::to_owned),
            code: code.map(str::to_owned),
        },
        retry_after: None,
    }
}

/// A generation's failure as an HTTP answer (before anything was streamed) …
pub fn failure_response(failure: &StreamFailure) -> Response {
    let status = failure_status(failure);
    let kind = if status.is_server_error() {
        "api_error"
    } else {
        "invalid_request_error"
    };
    (
        status,
        Json(envelope(&failure.message, kind, None, Some(&failure.code))),
    )
        .into_response()
}

/// … and as the error object that ends a stream that already started.
pub fn failure_chunk(failure: &StreamFailure) -> ErrorEnvelope {
    envelope(&failure.message, "api_error", None, Some(&failure.code))
}

/// Mirrors an upstream refusal of the request (400, 404, 413, 422, 429); anything else the
/// gateway could not get an answer for is 502, or 504 for a deadline.
fn failure_status(failure: &StreamFailure) -> StatusCode {
    if failure.code == "upstream_timeout" {
        return StatusCode::GATEWAY_TIMEOUT;
    }
    match failure.upstream_status {
        Some(s @ (400 | 404 | 413 | 422 | 429)) => {
            StatusCode::from_u16(s).unwrap_or(StatusCode::BAD_GATEWAY)
        }
        _ if failure.code == "server_shutdown" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_GATEWAY,
    }
}
