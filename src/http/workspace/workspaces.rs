//! Workspaces and their keys. Each handler converts, calls one service method, converts back.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use secrecy::ExposeSecret;

use super::dto::{
    CreateKey, CreateWorkspace, CreditUsageDto, KeyDto, NewKeyDto, UpdateWorkspace, WorkspaceDto,
};
use super::error::{ErrorBody, WsError};
use super::{Body, Caller};
use crate::domain::KeyKind;
use crate::error::Error;
use crate::http::AppState;
use crate::http::extract::{Auth, JsonBody, parse_id};
use crate::service::{KeyRequest, NewWorkspace, WorkspaceChanges};

/// Create a workspace
///
/// Admin keys only.
#[utoipa::path(
    post,
    path = "/api/workspaces/",
    tag = "workspaces",
    request_body = CreateWorkspace,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 201, description = "The created workspace", body = WorkspaceDto),
        (status = 400, description = "An invalid field, named in `field`", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 403, description = "Not an admin key", body = ErrorBody),
        (status = 409, description = "The slug is taken", body = ErrorBody),
    ),
)]
pub async fn create_workspace(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    JsonBody(body, _): Body<CreateWorkspace>,
) -> Result<(StatusCode, Json<WorkspaceDto>), WsError> {
    let new = NewWorkspace {
        slug: body.slug,
        name: body.name,
        credit_limit: body.credit_limit,
    };
    let created = state.services.create_workspace(&who, new).await?;
    Ok((StatusCode::CREATED, Json(created.into())))
}

/// Get a workspace
///
/// `{ws}` is its UUID or slug: the key's own workspace, or any for an admin key.
#[utoipa::path(
    get,
    path = "/api/workspaces/{ws}/",
    tag = "workspaces",
    params(("ws" = String, Path, description = "Workspace UUID or slug")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The workspace", body = WorkspaceDto),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 404, description = "No such workspace for this key", body = ErrorBody),
    ),
)]
pub async fn get_workspace(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    Path(ws): Path<String>,
) -> Result<Json<WorkspaceDto>, WsError> {
    Ok(Json(state.services.workspace(&who, &ws).await?.into()))
}

/// Update a workspace
///
/// Admin keys only. Absent fields stay; `credit_limit: null` lifts the limit.
#[utoipa::path(
    patch,
    path = "/api/workspaces/{ws}/",
    tag = "workspaces",
    params(("ws" = String, Path, description = "Workspace UUID or slug")),
    request_body = UpdateWorkspace,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The updated workspace", body = WorkspaceDto),
        (status = 400, description = "An invalid field, named in `field`", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 403, description = "Not an admin key", body = ErrorBody),
        (status = 404, description = "No such workspace for this key", body = ErrorBody),
    ),
)]
pub async fn update_workspace(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    Path(ws): Path<String>,
    JsonBody(body, _): Body<UpdateWorkspace>,
) -> Result<Json<WorkspaceDto>, WsError> {
    let changes = WorkspaceChanges {
        name: body.name,
        credit_limit: body.credit_limit,
    };
    let updated = state.services.update_workspace(&who, &ws, changes).await?;
    Ok(Json(updated.into()))
}

/// Create a key
///
/// A secret key of the workspace (or an admin key). The key is in the answer this once.
#[utoipa::path(
    post,
    path = "/api/workspaces/{ws}/keys/",
    tag = "workspaces",
    params(("ws" = String, Path, description = "Workspace UUID or slug")),
    request_body = CreateKey,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 201, description = "The key, shown once", body = NewKeyDto),
        (status = 400, description = "An invalid field, named in `field`", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 403, description = "A publishable key", body = ErrorBody),
        (status = 404, description = "No such workspace for this key", body = ErrorBody),
    ),
)]
pub async fn create_key(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    Path(ws): Path<String>,
    JsonBody(body, _): Body<CreateKey>,
) -> Result<(StatusCode, Json<NewKeyDto>), WsError> {
    let kind = KeyKind::parse(&body.kind)
        .ok_or_else(|| Error::bad_request("kind", "kind must be `secret` or `publishable`"))?;
    let request = KeyRequest {
        kind,
        name: body.name,
        origins: body.origins,
        rate_limit: body.rate_limit,
    };
    let (key, value) = state.services.create_api_key(&who, &ws, request).await?;
    let body = NewKeyDto {
        object: key.into(),
        key: value.expose_secret().to_owned(),
    };
    Ok((StatusCode::CREATED, Json(body)))
}

/// List keys
///
/// Every key of the workspace, revoked ones included; never their values.
#[utoipa::path(
    get,
    path = "/api/workspaces/{ws}/keys/",
    tag = "workspaces",
    params(("ws" = String, Path, description = "Workspace UUID or slug")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The keys", body = [KeyDto]),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 403, description = "A publishable key", body = ErrorBody),
        (status = 404, description = "No such workspace for this key", body = ErrorBody),
    ),
)]
pub async fn list_keys(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    Path(ws): Path<String>,
) -> Result<Json<Vec<KeyDto>>, WsError> {
    let keys = state.services.list_api_keys(&who, &ws).await?;
    Ok(Json(keys.into_iter().map(KeyDto::from).collect()))
}

/// Revoke a key
///
/// Every request with it is refused from the next one on.
#[utoipa::path(
    delete,
    path = "/api/workspaces/{ws}/keys/{id}/",
    tag = "workspaces",
    params(
        ("ws" = String, Path, description = "Workspace UUID or slug"),
        ("id" = Uuid, Path, description = "The key"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 204, description = "Revoked"),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 403, description = "A publishable key", body = ErrorBody),
        (status = 404, description = "No such workspace or key for this key", body = ErrorBody),
    ),
)]
pub async fn revoke_key(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    Path((ws, id)): Path<(String, String)>,
) -> Result<StatusCode, WsError> {
    let id = parse_id("id", &id)?;
    state.services.revoke_api_key(&who, &ws, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Credit usage
///
/// What the workspace's answers cost so far (every dialect's), against its limit.
#[utoipa::path(
    get,
    path = "/api/workspaces/{ws}/credit-usage/",
    tag = "workspaces",
    params(("ws" = String, Path, description = "Workspace UUID or slug")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Spending against the limit", body = CreditUsageDto),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 403, description = "A publishable key", body = ErrorBody),
        (status = 404, description = "No such workspace for this key", body = ErrorBody),
    ),
)]
pub async fn credit_usage(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    Path(ws): Path<String>,
) -> Result<Json<CreditUsageDto>, WsError> {
    let services = &state.services;
    let workspace = services.workspace(&who, &ws).await?;
    Ok(Json(services.credit_usage(&who, &workspace).await?.into()))
}
