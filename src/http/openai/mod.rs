//! The OpenAI-compatible dialect under `/v1`: a thin adapter from OpenAI's request, chunk and
//! error formats onto the same generation core, so the official SDKs work unchanged.

mod completions;
mod error;
mod request;

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, response::IntoResponse};
use serde_json::json;

pub use error::OpenAiError;

use super::AppState;
use super::extract::Auth;
use crate::error::Error;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/chat/completions", post(completions::create))
        .route("/models", get(models))
        .fallback(|| async { OpenAiError(Error::NotFound("route")) })
        .method_not_allowed_fallback(|| async {
            let body = error::envelope(
                "this route does not accept that method",
                "invalid_request_error",
                None,
                Some("method_not_allowed"),
            );
            (axum::http::StatusCode::METHOD_NOT_ALLOWED, Json(body))
        })
}

/// `GET /v1/models`: every listed model as `provider/model`, the default first.
async fn models(
    State(state): State<AppState>,
    Auth(_who, _): Auth<OpenAiError>,
) -> impl IntoResponse {
    let data: Vec<_> = state
        .services
        .providers
        .model_ids()
        .into_iter()
        .map(|id| {
            let owner = id.split_once('/').map_or("sluice", |(p, _)| p).to_owned();
            json!({"id": id, "object": "model", "created": 0, "owned_by": owner})
        })
        .collect();
    Json(json!({"object": "list", "data": data}))
}
