//! Public links: a session anyone may read, without a key, until its link is turned off.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::{Extension, Json};

use axum::http::StatusCode;

use super::dto::{PublicLink, PublicSession, RevokeShare, ShareDto, ShareRequest};
use super::error::{ErrorBody, WsError};
use super::{Body, Caller};
use crate::error::Error;
use crate::http::AppState;
use crate::http::extract::{Auth, JsonBody, parse_id};

/// Toggle the public link
///
/// Turning it on issues a new random link id every time (a link handed out before dies at
/// once); turning it off removes it.
#[utoipa::path(
    post,
    path = "/api/workspaces/{ws}/chats/{id}/toggle-public/",
    tag = "sharing",
    params(
        ("ws" = String, Path, description = "Workspace UUID or slug"),
        ("id" = Uuid, Path, description = "The session"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The link as it is now", body = PublicLink),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 403, description = "A publishable key", body = ErrorBody),
        (status = 404, description = "No such workspace or session for this key", body = ErrorBody),
    ),
)]
pub async fn toggle_public(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    Path((ws, id)): Path<(String, String)>,
) -> Result<Json<PublicLink>, WsError> {
    let chat_id = parse_id("id", &id)?;
    let services = &state.services;
    let workspace = services.workspace(&who, &ws).await?;
    let chat = services.toggle_public(&who, &workspace, chat_id).await?;
    Ok(Json(chat.into()))
}

/// Read a public session
///
/// No key. The session's name and its questions and complete answers: never its system prompt,
/// settings, user ids, usage, or an answer still being written. Unknown and turned-off links are
/// 404. Each client address may read this many times per rate-limit window (429 beyond).
#[utoipa::path(
    get,
    path = "/api/chats/shared/{link}/",
    tag = "sharing",
    params(("link" = Uuid, Path, description = "The public link id")),
    responses(
        (status = 200, description = "The public view", body = PublicSession),
        (status = 404, description = "No such link, or it was turned off", body = ErrorBody),
        (status = 429, description = "Too many reads from this address", body = ErrorBody),
    ),
)]
pub async fn public_session(
    State(state): State<AppState>,
    Path(link): Path<String>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
) -> Result<Json<PublicSession>, WsError> {
    // A malformed link names nothing, like an unknown one.
    let link = uuid::Uuid::parse_str(&link).map_err(|_| Error::NotFound("shared chat"))?;
    let address = peer.map(|Extension(ConnectInfo(addr))| addr.ip());
    let view = state.services.public_view(link, address).await?;
    Ok(Json(view.into()))
}

/// Share with a user
///
/// The end user (a secret key with `X-User-Id: <user_id>`) may then read the session and its
/// messages and change nothing (403). Sharing again is 200 with the existing share.
#[utoipa::path(
    post,
    path = "/api/workspaces/{ws}/chats/{id}/share/",
    tag = "sharing",
    params(
        ("ws" = String, Path, description = "Workspace UUID or slug"),
        ("id" = Uuid, Path, description = "The session"),
    ),
    request_body = ShareRequest,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 201, description = "Shared", body = ShareDto),
        (status = 200, description = "Already shared with that user", body = ShareDto),
        (status = 400, description = "An invalid field, named in `field`", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 403, description = "A publishable key, or a user it is only shared with", body = ErrorBody),
        (status = 404, description = "No such workspace or session for this key", body = ErrorBody),
    ),
)]
pub async fn share(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    Path((ws, id)): Path<(String, String)>,
    JsonBody(body, _): Body<ShareRequest>,
) -> Result<(StatusCode, Json<ShareDto>), WsError> {
    let chat_id = parse_id("id", &id)?;
    let services = &state.services;
    let workspace = services.workspace(&who, &ws).await?;
    let (share, created) = services
        .share_chat(
            &who,
            &workspace,
            chat_id,
            &body.user_id,
            body.permission.as_deref(),
        )
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(share.into())))
}

/// List shares
#[utoipa::path(
    get,
    path = "/api/workspaces/{ws}/chats/{id}/shares/",
    tag = "sharing",
    params(
        ("ws" = String, Path, description = "Workspace UUID or slug"),
        ("id" = Uuid, Path, description = "The session"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The users it is shared with", body = [ShareDto]),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 403, description = "A publishable key, or a user it is only shared with", body = ErrorBody),
        (status = 404, description = "No such workspace or session for this key", body = ErrorBody),
    ),
)]
pub async fn shares(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    Path((ws, id)): Path<(String, String)>,
) -> Result<Json<Vec<ShareDto>>, WsError> {
    let chat_id = parse_id("id", &id)?;
    let services = &state.services;
    let workspace = services.workspace(&who, &ws).await?;
    let shares = services.shares(&who, &workspace, chat_id).await?;
    Ok(Json(shares.into_iter().map(ShareDto::from).collect()))
}

/// Revoke a share
///
/// The user loses the session on their next request.
#[utoipa::path(
    post,
    path = "/api/workspaces/{ws}/chats/{id}/revoke-share/",
    tag = "sharing",
    params(
        ("ws" = String, Path, description = "Workspace UUID or slug"),
        ("id" = Uuid, Path, description = "The session"),
    ),
    request_body = RevokeShare,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Revoked", body = Object),
        (status = 400, description = "An invalid field, named in `field`", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 403, description = "A publishable key, or a user it is only shared with", body = ErrorBody),
        (status = 404, description = "No such workspace, session or share for this key", body = ErrorBody),
    ),
)]
pub async fn revoke_share(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    Path((ws, id)): Path<(String, String)>,
    JsonBody(body, _): Body<RevokeShare>,
) -> Result<Json<serde_json::Value>, WsError> {
    let chat_id = parse_id("id", &id)?;
    let services = &state.services;
    let workspace = services.workspace(&who, &ws).await?;
    services
        .revoke_share(&who, &workspace, chat_id, &body.user_id)
        .await?;
    Ok(Json(
        serde_json::json!({"user_id": body.user_id.trim(), "revoked": true}),
    ))
}
