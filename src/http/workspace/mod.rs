//! The workspace API (seed 001) under `/api/workspaces/`: workspaces and their keys, sessions,
//! their messages and answers.

pub(crate) mod dto;
mod error;
mod messages;
mod sessions;
mod sharing;
pub(crate) mod stream;
mod transcribe;
mod translate;
mod workspaces;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::{ErrorBody, WsError, status_of};

use super::extract::{Auth, JsonBody};
use super::{AppState, both};

/// Endpoints a publishable key may use in this dialect (every other one is 403).
pub const PUBLISHABLE_ENDPOINTS: &[&str] = &[
    "POST /api/workspaces/{ws}/chats/",
    "GET /api/workspaces/{ws}/chats/{id}/",
    "GET /api/workspaces/{ws}/chats/{id}/messages/",
    "POST /api/workspaces/{ws}/chats/{id}/messages/",
    "GET /api/workspaces/{ws}/chats/{id}/messages/{message}/",
    "GET /api/workspaces/{ws}/chats/{id}/messages/{message}/stream/",
    "GET /api/workspaces/{ws}/chats/{id}/messages/agent-task-status/{task}/",
];

type Caller = Auth<WsError>;
type Body<T> = JsonBody<T, WsError>;

/// Every route is served with and without its trailing slash (`both`).
pub fn router() -> OpenApiRouter<AppState> {
    [
        routes!(workspaces::create_workspace),
        routes!(workspaces::get_workspace, workspaces::update_workspace),
        routes!(workspaces::create_key, workspaces::list_keys),
        routes!(workspaces::revoke_key),
        routes!(sessions::list_sessions, sessions::create_session),
        routes!(
            sessions::get_session,
            sessions::update_session,
            sessions::delete_session
        ),
        routes!(messages::list_messages, messages::post_message),
        routes!(messages::get_message, messages::delete_message),
        routes!(messages::follow),
        routes!(messages::task_status),
        routes!(messages::regenerate),
        routes!(messages::stop),
        routes!(workspaces::credit_usage),
        routes!(sharing::toggle_public),
        routes!(sharing::public_session),
        routes!(sharing::share),
        routes!(sharing::shares),
        routes!(sharing::revoke_share),
        routes!(translate::translate),
        routes!(transcribe::transcribe_audio),
    ]
    .into_iter()
    .fold(OpenApiRouter::new(), both)
}
