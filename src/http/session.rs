//! Browser sessions: sign in once with a key, then an HttpOnly cookie plus a CSRF token.

use axum::Router;

use super::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
}
