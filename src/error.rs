//! The one domain error. It knows nothing of HTTP: each dialect maps it to its own envelope,
//! and the status codes are decided in one match per dialect.

use sea_orm::DbErr;

use crate::providers::ProviderError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object does not exist, or belongs to another workspace (indistinguishable on purpose).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// No configured provider serves this model.
    #[error("the model `{0}` does not exist or is not served here")]
    ModelNotFound(String),
    /// Malformed input: a bad id, a bad query parameter, a malformed body.
    #[error("{message}")]
    BadRequest {
        field: Option<String>,
        message: String,
    },
    /// Well-formed input that breaks a rule (a role that does not exist, an empty name).
    #[error("{message}")]
    Unprocessable {
        field: Option<String>,
        message: String,
    },
    /// Missing, malformed, unknown or revoked key: one error, one body.
    #[error("missing or invalid API key")]
    Unauthenticated,
    /// A key presented in a way that is refused, with the reason.
    #[error("{0}")]
    UnauthenticatedBecause(String),
    #[error("{0}")]
    Forbidden(String),
    /// A publishable key used on an endpoint outside its scope.
    #[error("publishable keys may not use this endpoint")]
    PublishableNotAllowed,
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// The workspace's spending, with what its running answers hold, is at or over its limit.
    #[error("the workspace's credit is used up: its limit is {}, and {} is spent or held by running answers", usd(*limit_micros), usd(*committed_micros))]
    InsufficientCredits {
        limit_micros: i64,
        committed_micros: i64,
    },
    /// The key made its window's requests.
    #[error("rate limit exceeded: at most {limit} requests per window; retry in {} s", retry_after.as_secs().max(1))]
    RateLimited {
        limit: u32,
        retry_after: std::time::Duration,
    },
    /// `what` (the request body, an uploaded file) is over `limit` bytes.
    #[error("{what} is larger than {limit} bytes")]
    PayloadTooLarge { what: &'static str, limit: usize },
    /// The request body stopped arriving for longer than the body timeout.
    #[error("the request body stopped arriving before it was complete")]
    RequestTimeout,
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    /// The upstream provider failed before anything was streamed.
    #[error("upstream provider failed: {0}")]
    Upstream(#[from] ProviderError),
    #[error("the server is shutting down")]
    ShuttingDown,
    /// A capability this server is not configured for (no transcription provider, …).
    #[error("{message}")]
    Unavailable { code: &'static str, message: String },
    #[error("database error: {0}")]
    Database(#[from] DbErr),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn bad_request(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::BadRequest {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    pub fn unprocessable(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Unprocessable {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    /// A machine-readable code shared by every dialect's envelope.
    pub fn code(&self) -> &'static str {
        match self {
            Error::NotFound(_) => "not_found",
            Error::ModelNotFound(_) => "model_not_found",
            Error::BadRequest { .. } => "bad_request",
            Error::Unprocessable { .. } => "validation_error",
            Error::Unauthenticated | Error::UnauthenticatedBecause(_) => "unauthorized",
            Error::Forbidden(_) | Error::PublishableNotAllowed => "forbidden",
            Error::Conflict { code, .. } => code,
            Error::InsufficientCredits { .. } => "insufficient_credits",
            Error::RateLimited { .. } => "rate_limited",
            Error::PayloadTooLarge { .. } => "payload_too_large",
            Error::RequestTimeout => "request_timeout",
            Error::UnsupportedMediaType(_) => "unsupported_media_type",
            Error::Upstream(_) => "upstream_error",
            Error::ShuttingDown => "shutting_down",
            Error::Unavailable { code, .. } => code,
            Error::Database(_) | Error::Internal(_) => "internal_error",
        }
    }

    /// Seconds a client should wait before trying again (`Retry-After`), for the errors that
    /// say so: rounded up, at least 1.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Error::ShuttingDown => Some(1),
            Error::RateLimited { retry_after, .. } => Some(
                u64::try_from(retry_after.as_millis().div_ceil(1000))
                    .unwrap_or(u64::MAX)
                    .max(1),
            ),
            _ => None,
        }
    }

    /// The message a client may see. Internal causes stay in the log.
    pub fn public_message(&self) -> String {
        match self {
            Error::Database(_) | Error::Internal(_) => "internal server error".to_owned(),
            Error::Upstream(e) => e.public_message(),
            other => other.to_string(),
        }
    }

    pub fn field(&self) -> Option<&str> {
        match self {
            Error::BadRequest { field, .. } | Error::Unprocessable { field, .. } => {
                field.as_deref()
            }
            _ => None,
        }
    }
}

/// Micro-dollars as US dollars with cents (`$10.00`).
fn usd(micros: i64) -> String {
    let cents = micros.div_euclid(10_000);
    format!("${}.{:02}", cents.div_euclid(100), cents.rem_euclid(100))
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_errors_speak_in_dollars() {
        let e = Error::InsufficientCredits {
            limit_micros: 10_000_000,
            committed_micros: 10_250_000,
        };
        assert_eq!(e.code(), "insufficient_credits");
        assert!(e.to_string().contains("$10.00"), "{e}");
        assert!(e.to_string().contains("$10.25"), "{e}");
    }
}
