//! Agents: create, list, read, change (a new version each time), delete, versions, rollback.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;

use super::dto::{AgentBody, AgentDto, AgentList, NewAgent, Rollback, RolledBack, VersionList};
use super::error::{AgentError, ErrorBody};
use super::{Body, Caller, agent_type_filter};
use crate::http::AppState;
use crate::http::conversations::dto::timestamp;
use crate::http::extract::JsonBody;
use crate::http::extract::{Auth, parse_id, parse_json};

/// Create an agent
///
/// A named preset: provider, model, system prompt, temperature, maxTokens, tools (`web_search`)
/// and a free-form `agentType`. It starts at version 1.
#[utoipa::path(
    post,
    path = "/agent",
    tag = "agents",
    request_body = NewAgent,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 201, description = "The agent", body = AgentDto),
        (status = 400, description = "An invalid field, named in `field`", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 403, description = "A publishable key", body = ErrorBody),
    ),
)]
pub async fn create_agent(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    JsonBody(body, _): Body<AgentBody>,
) -> Result<(StatusCode, Json<AgentDto>), AgentError> {
    let agent = state.services.create_agent(&who, body.into()).await?;
    Ok((StatusCode::CREATED, Json(agent.into())))
}

/// List agents
///
/// Newest first; `?agentType=` keeps one type.
#[utoipa::path(
    get,
    path = "/agent",
    tag = "agents",
    params(("agentType" = Option<String>, Query, description = "Only agents of this type")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The agents", body = AgentList),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 403, description = "A publishable key", body = ErrorBody),
    ),
)]
pub async fn list_agents(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<AgentList>, AgentError> {
    let kind = agent_type_filter(query.as_deref())?;
    let agents = state.services.agents(&who, kind.as_deref()).await?;
    Ok(Json(AgentList {
        agents: agents.into_iter().map(AgentDto::from).collect(),
    }))
}

/// Get an agent
#[utoipa::path(
    get,
    path = "/agent/{id}",
    tag = "agents",
    params(("id" = Uuid, Path, description = "The agent")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The agent", body = AgentDto),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 403, description = "A publishable key", body = ErrorBody),
        (status = 404, description = "No such agent", body = ErrorBody),
    ),
)]
pub async fn get_agent(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    Path(id): Path<String>,
) -> Result<Json<AgentDto>, AgentError> {
    let agent = state.services.agent(&who, parse_id("id", &id)?).await?;
    Ok(Json(agent.into()))
}

/// Update an agent
///
/// Partial: the fields given change (`null` clears one), the rest stay; the result is the
/// agent's next version. Its chats answer with it from their next message on.
#[utoipa::path(
    put,
    path = "/agent/{id}",
    tag = "agents",
    params(("id" = Uuid, Path, description = "The agent")),
    request_body = AgentBody,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The agent at its new version", body = AgentDto),
        (status = 400, description = "An invalid field, named in `field`", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 403, description = "A publishable key", body = ErrorBody),
        (status = 404, description = "No such agent", body = ErrorBody),
        (status = 409, description = "Changed by another request at the same time, or the stored provider or model does not go with the change (`settings_conflict`)", body = ErrorBody),
    ),
)]
pub async fn update_agent(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    Path(id): Path<String>,
    JsonBody(body, _): Body<AgentBody>,
) -> Result<Json<AgentDto>, AgentError> {
    let id = parse_id("id", &id)?;
    let agent = state.services.update_agent(&who, id, body.into()).await?;
    Ok(Json(agent.into()))
}

/// Delete an agent
///
/// Its chats stay readable; new chats with it, and new messages in its chats, are 404.
#[utoipa::path(
    delete,
    path = "/agent/{id}",
    tag = "agents",
    params(("id" = Uuid, Path, description = "The agent")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 403, description = "A publishable key", body = ErrorBody),
        (status = 404, description = "No such agent", body = ErrorBody),
    ),
)]
pub async fn delete_agent(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, AgentError> {
    state
        .services
        .delete_agent(&who, parse_id("id", &id)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// List an agent's versions
///
/// Every version ever made, newest first, with its fields.
#[utoipa::path(
    get,
    path = "/agent/{id}/versions",
    tag = "agents",
    params(("id" = Uuid, Path, description = "The agent")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The versions", body = VersionList),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 403, description = "A publishable key", body = ErrorBody),
        (status = 404, description = "No such agent", body = ErrorBody),
    ),
)]
pub async fn versions(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    Path(id): Path<String>,
) -> Result<Json<VersionList>, AgentError> {
    let versions = state
        .services
        .agent_versions(&who, parse_id("id", &id)?)
        .await?;
    Ok(Json(VersionList {
        versions: versions.into_iter().map(Into::into).collect(),
    }))
}

/// Roll an agent back
///
/// Makes an earlier version's fields current again (`version`, default the one before the
/// current), recorded as a new version: history is never rewritten.
#[utoipa::path(
    put,
    path = "/agent/{id}/rollback",
    tag = "agents",
    params(("id" = Uuid, Path, description = "The agent")),
    request_body = Rollback,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The new version", body = RolledBack),
        (status = 400, description = "An invalid body", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 403, description = "A publishable key", body = ErrorBody),
        (status = 404, description = "No such agent or version", body = ErrorBody),
        (status = 409, description = "The agent has only one version", body = ErrorBody),
    ),
)]
pub async fn rollback(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<RolledBack>, AgentError> {
    // No body at all means the version before the current one.
    let version = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        parse_json::<Rollback>(&body)?.version
    };
    let agent = state
        .services
        .rollback_agent(&who, parse_id("id", &id)?, version)
        .await?;
    Ok(Json(RolledBack {
        id: agent.id,
        name: agent.fields.name,
        version: agent.version,
        rolled_back_at: timestamp(&agent.updated_at),
    }))
}
