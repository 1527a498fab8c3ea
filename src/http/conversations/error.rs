//! This dialect's error envelope: `{"error": code, "message": text, "field"?: name}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::Error;

/// This dialect's error body.
#[derive(Serialize, ToSchema)]
#[schema(as = ConversationsError)]
pub struct ErrorBody {
    /// A stable code: `not_found`, `bad_request`, `validation_error`, `unauthorized`,
    /// `forbidden`, `payload_too_large`, `unsupported_media_type`, `shutting_down`, …
    #[schema(value_type = String)]
    pub error: &'static str,
    pub message: String,
    /// The field, query parameter or header at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// With `rate_limited`: seconds until the key's window resets.
    #[serde(rename = "retryAfter", skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// With a publishable key outside its scope: the endpoints such a key may use.
    #[serde(rename = "allowedEndpoints", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<String>>)]
    pub allowed_endpoints: Option<&'static [&'static str]>,
}

/// The domain error, rendered for the conversations API.
#[derive(Debug)]
pub struct ConvError(pub Error);

impl From<Error> for ConvError {
    fn from(e: Error) -> Self {
        ConvError(e)
    }
}

impl From<sea_orm::DbErr> for ConvError {
    fn from(e: sea_orm::DbErr) -> Self {
        ConvError(Error::Database(e))
    }
}

/// The one place where this dialect maps errors to status codes.
pub fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::NotFound(_) | Error::ModelNotFound(_) => StatusCode::NOT_FOUND,
        Error::BadRequest { .. } => StatusCode::BAD_REQUEST,
        Error::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
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

impl IntoResponse for ConvError {
    fn into_response(self) -> Response {
        let status = status_of(&self.0);
        if status.is_server_error() {
            tracing::error!(error = %self.0, "request failed");
        }
        let body = ErrorBody {
            error: self.0.code(),
            message: self.0.public_message(),
            field: self.0.field().map(str::to_owned),
            retry_after: match &self.0 {
                Error::RateLimited { .. } => self.0.retry_after_secs(),
                _ => None,
            },
            allowed_endpoints: matches!(self.0, Error::PublishableNotAllowed)
                .then_some(super::PUBLISHABLE_ENDPOINTS),
        };
        let response = (status, Json(body)).into_response();
        crate::http::with_retry_after(response, self.0.retry_after_secs())
    }
}
