//! This dialect's error envelope: `{"error": <HTTP reason phrase>, "message": text}`, with
//! `field` on invalid input, `allowedEndpoints` on a publishable key's 403 and `retryAfter` on
//! a 429.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::Error;

/// This dialect's error body.
#[derive(Serialize, ToSchema)]
#[schema(as = AgentApiError)]
pub struct ErrorBody {
    /// The HTTP reason phrase: `Not Found`, `Unauthorized`, `Bad Request`, …
    pub error: &'static str,
    pub message: String,
    /// The request field at fault (camelCase), on a 400.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// With a publishable key's 403: what it may use.
    #[serde(rename = "allowedEndpoints", skip_serializing_if = "Option::is_none")]
    pub allowed_endpoints: Option<&'static [&'static str]>,
    /// With a 429: seconds until the key's window resets.
    #[serde(rename = "retryAfter", skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

/// The domain error, rendered for the agent API.
#[derive(Debug)]
pub struct AgentError(pub Error);

impl From<Error> for AgentError {
    fn from(e: Error) -> Self {
        AgentError(e)
    }
}

/// The one place where this dialect maps errors to status codes: invalid input is 400.
pub fn status_of(e: &Error) -> StatusCode {
    crate::http::workspace::status_of(e)
}

/// `chat` → `Chat not found`.
fn not_found(what: &str) -> String {
    let mut chars = what.chars();
    match chars.next() {
        Some(first) => format!("{}{} not found", first.to_uppercase(), chars.as_str()),
        None => "Not found".to_owned(),
    }
}

impl IntoResponse for AgentError {
    fn into_response(self) -> Response {
        let status = status_of(&self.0);
        if status.is_server_error() {
            tracing::error!(error = %self.0, "request failed");
        }
        let message = match &self.0 {
            Error::NotFound(what) => not_found(what),
            Error::Unauthenticated => "Unauthorized: Invalid API key.".to_owned(),
            Error::UnauthenticatedBecause(why) => format!("Unauthorized: {why}"),
            other => other.public_message(),
        };
        let retry_after = self.0.retry_after_secs();
        let body = ErrorBody {
            error: status.canonical_reason().unwrap_or("Error"),
            message,
            field: self.0.field().map(str::to_owned),
            allowed_endpoints: matches!(self.0, Error::PublishableNotAllowed)
                .then_some(super::PUBLISHABLE_ENDPOINTS),
            retry_after: retry_after.filter(|_| matches!(self.0, Error::RateLimited { .. })),
        };
        let response = (status, Json(body)).into_response();
        crate::http::with_retry_after(response, retry_after)
    }
}
