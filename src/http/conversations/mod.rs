//! The conversations API (seed 003): chats, conversations and SSE inference.

pub(crate) mod dto;
mod error;
mod handlers;
mod inference;

use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use dto::{UsageDto, timestamp};
pub use error::{ConvError, ErrorBody};

use super::{AppState, both};

/// Endpoints a publishable key may use in this dialect.
pub const PUBLISHABLE_ENDPOINTS: &[&str] = &[
    "POST /chats/create",
    "GET /chats/{id}",
    "POST /conversations/create",
    "GET /conversations/?chat_id=",
    "GET /conversations/inference/{id}",
    "GET /conversations/inference_internet/{id}",
];

/// The schemas of the SSE events' data, which no request or response names.
#[derive(utoipa::OpenApi)]
#[openapi(components(schemas(dto::DoneEvent, dto::ErrorEvent)))]
struct EventSchemas;

/// Every route is served with and without a trailing slash (`both`); the description names the
/// form written in each handler's `#[utoipa::path]`.
pub fn router() -> OpenApiRouter<AppState> {
    [
        routes!(handlers::list_chats),
        routes!(handlers::create_chat),
        routes!(handlers::get_chat),
        routes!(handlers::update_chat),
        routes!(handlers::delete_chat),
        routes!(handlers::list_conversations),
        routes!(handlers::create_conversation),
        routes!(inference::inference),
        routes!(inference::inference_internet),
        routes!(inference::stop),
    ]
    .into_iter()
    .fold(OpenApiRouter::with_openapi(EventSchemas::openapi()), both)
}
