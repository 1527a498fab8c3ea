//! The workspace API (seed 001): workspaces and their keys, under `/api/workspaces/`.

mod dto;
mod error;
mod workspaces;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::{ErrorBody, WsError};

use super::extract::{Auth, JsonBody};
use super::{AppState, both};

type Caller = Auth<WsError>;
type Body<T> = JsonBody<T, WsError>;

/// Every route is served with and without its trailing slash (`both`).
pub fn router() -> OpenApiRouter<AppState> {
    [
        routes!(workspaces::create_workspace),
        routes!(workspaces::get_workspace, workspaces::update_workspace),
        routes!(workspaces::create_key, workspaces::list_keys),
        routes!(workspaces::revoke_key),
    ]
    .into_iter()
    .fold(OpenApiRouter::new(), both)
}
