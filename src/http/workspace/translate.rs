//! `translate/`: text into another language by the server's default model.

use axum::Json;
use axum::extract::{Path, RawQuery, State};

use super::Caller;
use super::dto::Translation;
use super::error::{ErrorBody, WsError};
use crate::error::Error;
use crate::http::AppState;
use crate::http::extract::{Auth, query_pairs};

/// Translate text
///
/// `?text=…&target=…` (a BCP 47 / ISO 639-1 code such as `es` or `pt-BR`): one answer of the
/// server's default model with a fixed instruction, charged to the workspace like any answer.
#[utoipa::path(
    get,
    path = "/api/workspaces/{ws}/translate/",
    tag = "workspaces",
    params(
        ("ws" = String, Path, description = "Workspace UUID or slug"),
        ("text" = String, Query, format = "message-text", description = "What to translate"),
        ("target" = String, Query, format = "language-tag", description = "The language to translate into: `es`, `pt-BR`, …"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The translation", body = Translation),
        (status = 400, description = "Empty or over-long text, or a target that is not a language code", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 402, description = "The workspace's credit is used up", body = ErrorBody),
        (status = 403, description = "A publishable key", body = ErrorBody),
        (status = 404, description = "No such workspace for this key", body = ErrorBody),
        (status = 502, description = "The provider failed", body = ErrorBody),
    ),
)]
pub async fn translate(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    Path(ws): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Translation>, WsError> {
    let pairs = query_pairs(query.as_deref())?;
    let value = |name: &'static str| {
        pairs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| {
                Error::bad_request(name, format!("the `{name}` query parameter is required"))
            })
    };
    let (text, target) = (value("text")?, value("target")?);
    let services = &state.services;
    let workspace = services.workspace(&who, &ws).await?;
    let translation = services.translate(&who, &workspace, &text, &target).await?;
    Ok(Json(Translation {
        text,
        target,
        translation,
    }))
}
