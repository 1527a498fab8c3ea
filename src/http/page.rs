//! The chat page at `GET /`: static assets compiled into the binary.

use axum::Router;

use super::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
}
