//! The agent API (seed 002) at the root: agents (versioned presets) under `/agent`, their
//! chats and messages under `/chat`. camelCase JSON; `teamId` is the workspace. Chats,
//! messages, streams and credits are the service layer's, shared with every dialect.

mod agents;
mod chats;
mod dto;
mod error;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::{AgentError, ErrorBody};

use super::extract::{Auth, JsonBody, query_pairs};
use super::{AppState, both};
use crate::error::Error;

/// Endpoints a publishable key may use in this dialect (every other one is 403).
pub const PUBLISHABLE_ENDPOINTS: &[&str] = &[
    "POST /chat",
    "GET /chat/{chatId}",
    "POST /chat/{chatId}/message",
    "GET /chat/{chatId}/message",
    "GET /chat/{chatId}/message/{messageId}/stream",
];

type Caller = Auth<AgentError>;
type Body<T> = JsonBody<T, AgentError>;

/// `?agentType=`, if given.
fn agent_type_filter(query: Option<&str>) -> Result<Option<String>, Error> {
    Ok(query_pairs(query)?
        .into_iter()
        .rev()
        .find(|(k, _)| k == "agentType")
        .map(|(_, v)| v))
}

/// Every route is served with and without a trailing slash (`both`).
pub fn router() -> OpenApiRouter<AppState> {
    [
        routes!(agents::create_agent, agents::list_agents),
        routes!(
            agents::get_agent,
            agents::update_agent,
            agents::delete_agent
        ),
        routes!(agents::versions),
        routes!(agents::rollback),
        routes!(chats::create_chat, chats::list_chats),
        routes!(chats::get_chat, chats::delete_chat),
        routes!(chats::post_message, chats::list_messages),
        routes!(chats::follow),
    ]
    .into_iter()
    .fold(OpenApiRouter::new(), both)
}
