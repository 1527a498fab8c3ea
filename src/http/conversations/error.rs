//! This dialect's error envelope: `{"error": code, "message": text, "field"?: name}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::Error;

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
        Error::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Error::Upstream(_) => StatusCode::BAD_GATEWAY,
        Error::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        Error::Database(_) | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ConvError {
    fn into_response(self) -> Response {
        let status = status_of(&self.0);
        if status.is_server_error() {
            tracing::error!(error = %self.0, "request failed");
        }
        let mut body = json!({"error": self.0.code(), "message": self.0.public_message()});
        if let Some(field) = self.0.field() {
            body["field"] = json!(field);
        }
        if matches!(self.0, Error::PublishableNotAllowed) {
            body["allowedEndpoints"] = json!(super::PUBLISHABLE_ENDPOINTS);
        }
        let mut response = (status, Json(body)).into_response();
        if matches!(self.0, Error::ShuttingDown) {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}
