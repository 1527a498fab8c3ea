//! This dialect's error envelope: `{"error": code, "message": text, "detail": text, "field"?}`;
//! `detail` repeats the message for clients written against Django REST framework.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::Error;

/// This dialect's error body.
#[derive(Serialize, ToSchema)]
#[schema(as = WorkspaceError)]
pub struct ErrorBody {
    /// A stable code: `not_found`, `bad_request`, `unauthorized`, `forbidden`, `slug_taken`,
    /// `insufficient_credits`, …
    #[schema(value_type = String)]
    pub error: &'static str,
    pub message: String,
    /// The message again.
    pub detail: String,
    /// The field, query parameter or header at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// With `rate_limited`: seconds until the key's window resets.
    #[serde(rename = "retryAfter", skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

/// The domain error, rendered for the workspace API.
#[derive(Debug)]
pub struct WsError(pub Error);

impl From<Error> for WsError {
    fn from(e: Error) -> Self {
        WsError(e)
    }
}

/// The one place where this dialect maps errors to status codes. Invalid input, malformed or
/// breaking a rule, is 400 here.
pub fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::NotFound(_) | Error::ModelNotFound(_) => StatusCode::NOT_FOUND,
        Error::BadRequest { .. } | Error::Unprocessable { .. } => StatusCode::BAD_REQUEST,
        Error::Unauthenticated | Error::UnauthenticatedBecause(_) => StatusCode::UNAUTHORIZED,
        Error::Forbidden(_) | Error::PublishableNotAllowed => StatusCode::FORBIDDEN,
        Error::Conflict { .. } => StatusCode::CONFLICT,
        Error::InsufficientCredits { .. } => StatusCode::PAYMENT_REQUIRED,
        Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        Error::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        Error::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Error::Upstream(_) => StatusCode::BAD_GATEWAY,
        Error::ShuttingDown | Error::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        Error::Database(_) | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for WsError {
    fn into_response(self) -> Response {
        let status = status_of(&self.0);
        if status.is_server_error() {
            tracing::error!(error = %self.0, "request failed");
        }
        let message = self.0.public_message();
        let retry_after = self.0.retry_after_secs();
        let body = ErrorBody {
            error: self.0.code(),
            detail: message.clone(),
            message,
            field: self.0.field().map(str::to_owned),
            retry_after: retry_after.filter(|_| matches!(self.0, Error::RateLimited { .. })),
        };
        let response = (status, Json(body)).into_response();
        crate::http::with_retry_after(response, retry_after)
    }
}
