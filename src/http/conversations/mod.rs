//! The conversations API (seed 003): chats, conversations and SSE inference.

mod dto;
mod error;
mod handlers;
mod inference;

use axum::Router;
use axum::routing::{delete, get, post, put};

pub use error::ConvError;

use super::{AppState, both};

/// Endpoints a publishable key may use in this dialect.
pub const PUBLISHABLE_ENDPOINTS: &[&str] = &[
    "POST /chats/create",
    "GET /chats/{id}",
    "POST /conversations/create",
    "GET /conversations/?chat_id=",
    "GET /conversations/inference/{id}",
];

pub fn router() -> Router<AppState> {
    let mut r = Router::new();
    r = both(r, "/chats/", get(handlers::list_chats));
    r = both(r, "/chats/create", post(handlers::create_chat));
    r = both(r, "/chats/{id}", get(handlers::get_chat));
    r = both(r, "/chats/update/{id}", put(handlers::update_chat));
    r = both(r, "/chats/delete/{id}", delete(handlers::delete_chat));
    r = both(r, "/conversations/", get(handlers::list_conversations));
    r = both(
        r,
        "/conversations/create",
        post(handlers::create_conversation),
    );
    r = both(
        r,
        "/conversations/inference/{id}",
        get(inference::inference),
    );
    r = both(r, "/conversations/stop/{id}", post(inference::stop));
    r
}
