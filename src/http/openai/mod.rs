//! The OpenAI-compatible dialect under `/v1`: a thin adapter from OpenAI's request, chunk and
//! error formats onto the same generation core, so the official SDKs work unchanged.

mod completions;
mod dto;
mod error;
mod request;

use axum::Json;
use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::OpenAiError;

use super::AppState;
use super::extract::Auth;
use crate::error::Error;
use dto::{Model, ModelList};
use error::ErrorEnvelope;

/// The dialect's routes, with its own fallbacks so that unknown paths and methods under `/v1`
/// answer in OpenAI's envelope.
pub fn router() -> OpenApiRouter<AppState> {
    let (routes, api) = OpenApiRouter::new()
        .routes(routes!(completions::create))
        .routes(routes!(models))
        .split_for_parts();
    // `OpenApiRouter` has no `method_not_allowed_fallback`: set both fallbacks on the axum
    // router, then put the description back.
    let routes = routes
        .fallback(|| async { OpenAiError(Error::NotFound("route")) })
        .method_not_allowed_fallback(|| async {
            let body = error::envelope(
                "this route does not accept that method",
                "invalid_request_error",
                None,
                Some("method_not_allowed"),
            );
            (axum::http::StatusCode::METHOD_NOT_ALLOWED, Json(body))
        });
    let mut router = OpenApiRouter::from(routes);
    *router.get_openapi_mut() = api;
    router
}

/// List models
///
/// Every listed model as `provider/model`, the default first (`demo` alone while no provider
/// is configured).
#[utoipa::path(
    get,
    path = "/models",
    tag = "openai",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The models", body = ModelList),
        (status = 401, description = "Missing or invalid key", body = ErrorEnvelope),
        (status = 403, description = "A publishable key", body = ErrorEnvelope),
    ),
)]
async fn models(
    State(state): State<AppState>,
    Auth(who, _): Auth<OpenAiError>,
) -> Result<Json<ModelList>, OpenAiError> {
    let data = state
        .services
        .models(&who)?
        .into_iter()
        .map(Model::new)
        .collect();
    Ok(Json(ModelList {
        object: "list",
        data,
    }))
}
