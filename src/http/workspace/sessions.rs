//! Sessions: a workspace's chats with their own settings.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;

use super::dto::{SessionDto, SessionFields};
use super::error::{ErrorBody, WsError};
use super::{Body, Caller};
use crate::http::AppState;
use crate::http::extract::{Auth, JsonBody, Page, parse_id};

/// One session as this dialect shows it.
async fn session(
    services: &crate::service::Services,
    chat: crate::domain::Chat,
) -> Result<SessionDto, WsError> {
    let shared = services.shared_among(&[chat.id]).await?.contains(&chat.id);
    Ok(SessionDto::new(chat, shared))
}

/// List sessions
///
/// Newest first. With `X-User-Id`, that user's sessions only.
#[utoipa::path(
    get,
    path = "/api/workspaces/{ws}/chats/",
    tag = "sessions",
    params(
        ("ws" = String, Path, description = "Workspace UUID or slug"),
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 200, description = "Page size, 50 by default"),
        ("offset" = Option<u64>, Query, description = "Sessions to skip"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The sessions", body = [SessionDto]),
        (status = 400, description = "A malformed `limit` or `offset`", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 403, description = "A publishable key", body = ErrorBody),
        (status = 404, description = "No such workspace for this key", body = ErrorBody),
    ),
)]
pub async fn list_sessions(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    Path(ws): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Vec<SessionDto>>, WsError> {
    let page = Page::from_query(query.as_deref())?;
    let services = &state.services;
    let workspace = services.workspace(&who, &ws).await?;
    let chats = services
        .list_chats_in(&who, &workspace, page.limit, page.offset)
        .await?;
    let ids: Vec<uuid::Uuid> = chats.iter().map(|c| c.id).collect();
    let shared = services.shared_among(&ids).await?;
    Ok(Json(
        chats
            .into_iter()
            .map(|c| {
                let is_shared = shared.contains(&c.id);
                SessionDto::new(c, is_shared)
            })
            .collect(),
    ))
}

/// Create a session
///
/// Checks the workspace's credit first (402 `insufficient_credits`).
#[utoipa::path(
    post,
    path = "/api/workspaces/{ws}/chats/",
    tag = "sessions",
    params(("ws" = String, Path, description = "Workspace UUID or slug")),
    request_body = SessionFields,
    security(("bearer" = []), ("api_key" = []), ("publishable_key" = [])),
    responses(
        (status = 201, description = "The created session", body = SessionDto),
        (status = 400, description = "An invalid field, named in `field`", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 402, description = "The workspace's credit is used up", body = ErrorBody),
        (status = 404, description = "No such workspace for this key", body = ErrorBody),
    ),
)]
pub async fn create_session(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    Path(ws): Path<String>,
    JsonBody(body, _): Body<SessionFields>,
) -> Result<(StatusCode, Json<SessionDto>), WsError> {
    let services = &state.services;
    let workspace = services.workspace(&who, &ws).await?;
    let chat = services
        .create_chat_in(&who, &workspace, body.into())
        .await?;
    Ok((StatusCode::CREATED, Json(SessionDto::new(chat, false))))
}

/// Get a session
#[utoipa::path(
    get,
    path = "/api/workspaces/{ws}/chats/{id}/",
    tag = "sessions",
    params(
        ("ws" = String, Path, description = "Workspace UUID or slug"),
        ("id" = Uuid, Path, description = "The session"),
    ),
    security(("bearer" = []), ("api_key" = []), ("publishable_key" = [])),
    responses(
        (status = 200, description = "The session", body = SessionDto),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 404, description = "No such workspace or session for this key", body = ErrorBody),
    ),
)]
pub async fn get_session(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    Path((ws, id)): Path<(String, String)>,
) -> Result<Json<SessionDto>, WsError> {
    let id = parse_id("id", &id)?;
    let services = &state.services;
    let workspace = services.workspace(&who, &ws).await?;
    let chat = services.chat_in(&who, &workspace, id).await?;
    Ok(Json(session(services, chat).await?))
}

/// Update a session
///
/// Partial: absent fields stay, `null` clears a setting. The settings drive its next answers.
#[utoipa::path(
    put,
    path = "/api/workspaces/{ws}/chats/{id}/",
    tag = "sessions",
    params(
        ("ws" = String, Path, description = "Workspace UUID or slug"),
        ("id" = Uuid, Path, description = "The session"),
    ),
    request_body = SessionFields,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The updated session", body = SessionDto),
        (status = 400, description = "An invalid field, named in `field`", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 403, description = "A publishable key", body = ErrorBody),
        (status = 404, description = "No such workspace or session for this key", body = ErrorBody),
        (status = 409, description = "The stored provider or model does not go with the change (`settings_conflict`): send both", body = ErrorBody),
    ),
)]
pub async fn update_session(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    Path((ws, id)): Path<(String, String)>,
    JsonBody(body, _): Body<SessionFields>,
) -> Result<Json<SessionDto>, WsError> {
    let id = parse_id("id", &id)?;
    let services = &state.services;
    let workspace = services.workspace(&who, &ws).await?;
    let chat = services
        .update_chat_in(&who, &workspace, id, body.into())
        .await?;
    Ok(Json(session(services, chat).await?))
}

/// Delete a session
///
/// Stops its running answer, then deletes it with its messages.
#[utoipa::path(
    delete,
    path = "/api/workspaces/{ws}/chats/{id}/",
    tag = "sessions",
    params(
        ("ws" = String, Path, description = "Workspace UUID or slug"),
        ("id" = Uuid, Path, description = "The session"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 403, description = "A publishable key", body = ErrorBody),
        (status = 404, description = "No such workspace or session for this key", body = ErrorBody),
    ),
)]
pub async fn delete_session(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    Path((ws, id)): Path<(String, String)>,
) -> Result<StatusCode, WsError> {
    let id = parse_id("id", &id)?;
    let services = &state.services;
    let workspace = services.workspace(&who, &ws).await?;
    services.delete_chat_in(&who, &workspace, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
