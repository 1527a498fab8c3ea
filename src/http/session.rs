//! Browser sessions for the chat page: `POST /session` with a key sets an HttpOnly,
//! `SameSite=Strict` cookie and returns a CSRF token; from then on the page's requests and its
//! `EventSource` authenticate by the cookie, so no key sits in its script or its URLs.

use axum::Json;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::conversations::{ConvError, ErrorBody};
use super::extract::{CSRF_HEADER, HOST_SESSION_COOKIE, JsonBody, SESSION_COOKIE, session_cookie};
use crate::config::AuthMode;
use crate::error::Error;
use crate::service::{WebSession, tokens_match};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(current, sign_in, sign_out))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    /// A secret or publishable key; used once, never stored in the browser.
    #[schema(value_type = String, example = "sk_live_…")]
    key: SecretString,
}

/// A signed-in browser, as its page sees it.
#[derive(Serialize, ToSchema)]
pub struct SessionDto {
    /// `secret` or `publishable`: the kind of key that signed in, which decides what it may do.
    kind: &'static str,
    workspace: uuid::Uuid,
    /// Send it back in `X-CSRF-Token` on every request other than GET and HEAD.
    csrf_token: String,
    /// RFC 3339; absent when authentication is off.
    expires_at: Option<String>,
    /// `off` when the server runs with `SLUICE_AUTH=off` (no sign-in needed).
    #[serde(skip_serializing_if = "Option::is_none")]
    auth: Option<&'static str>,
}

fn body(session: &WebSession) -> SessionDto {
    SessionDto {
        kind: session.principal.kind.as_str(),
        workspace: session.principal.workspace_id,
        csrf_token: session.csrf_token.clone(),
        expires_at: Some(
            session
                .expires_at
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        ),
        auth: None,
    }
}

/// The path the cookie is scoped to: the prefix sluice is mounted under (`/` when it is not).
fn cookie_path(original: &Uri, uri: &Uri) -> String {
    let prefix = original
        .path()
        .strip_suffix(uri.path())
        .unwrap_or_default()
        .trim_end_matches('/');
    format!("{prefix}/")
}

/// `Secure` when the settings say so, or when the request reached a TLS-terminating proxy that
/// says it came over HTTPS.
fn secure(state: &AppState, headers: &HeaderMap) -> bool {
    state.secure_cookies
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

/// The session cookie: `__Host-sluice_session` when it is `Secure` at the root path (what the
/// prefix requires), `sluice_session` otherwise.
fn set_cookie(value: &str, max_age: i64, path: &str, secure: bool) -> Result<HeaderValue, Error> {
    let (name, secure) = match (secure, path == "/") {
        (true, true) => (HOST_SESSION_COOKIE, "; Secure"),
        (true, false) => (SESSION_COOKIE, "; Secure"),
        (false, _) => (SESSION_COOKIE, ""),
    };
    HeaderValue::from_str(&format!(
        "{name}={value}; Max-Age={max_age}; Path={path}; HttpOnly; SameSite=Strict{secure}"
    ))
    .map_err(|_| Error::Internal("unrepresentable cookie".into()))
}

/// Sign a browser in
///
/// Presents a key once; the answer sets the `sluice_session` cookie (HttpOnly,
/// `SameSite=Strict`, 7 days) that authenticates the page's requests and its `EventSource`
/// from then on, and returns the CSRF token those requests must echo in `X-CSRF-Token` when
/// they change state. A publishable key bound to origins must sign in from one of them.
#[utoipa::path(
    post,
    path = "/session",
    tag = "session",
    request_body = SignIn,
    responses(
        (status = 201, description = "Signed in; `Set-Cookie: sluice_session=…`", body = SessionDto),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 403, description = "A publishable key bound to other origins", body = ErrorBody),
        (status = 422, description = "No `key` in the body", body = ErrorBody),
    ),
)]
async fn sign_in(
    State(state): State<AppState>,
    OriginalUri(original): OriginalUri,
    uri: Uri,
    headers: HeaderMap,
    JsonBody(input, _): JsonBody<SignIn, ConvError>,
) -> Result<Response, ConvError> {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let created = state
        .services
        .sign_in(input.key.expose_secret().trim(), origin)
        .await?;
    let cookie = set_cookie(
        created.token.expose_secret(),
        crate::service::SESSION_TTL.num_seconds(),
        &cookie_path(&original, &uri),
        secure(&state, &headers),
    )?;
    let mut response = (StatusCode::CREATED, Json(body(&created.session))).into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The signed-in session
///
/// What the session cookie stands for, with its CSRF token (so a reloaded page can recover it).
#[utoipa::path(
    get,
    path = "/session",
    tag = "session",
    security(("session" = [])),
    responses(
        (status = 200, description = "Signed in", body = SessionDto),
        (status = 401, description = "No session, or it expired, or its key was revoked", body = ErrorBody),
    ),
)]
async fn current(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ConvError> {
    if state.auth == AuthMode::Off {
        let body = SessionDto {
            kind: "secret",
            workspace: state.services.default_workspace,
            csrf_token: String::new(),
            expires_at: None,
            auth: Some("off"),
        };
        return Ok(Json(body).into_response());
    }
    let token = session_cookie(&headers).ok_or(Error::Unauthenticated)?;
    let session = state.services.web_session(token).await?;
    let mut response = Json(body(&session)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Sign out
///
/// Ends the session and clears the cookie. A live session must send its CSRF token, so that
/// another site cannot sign a person out.
#[utoipa::path(
    delete,
    path = "/session",
    tag = "session",
    // Without a session there is nothing to end: the cookie is cleared all the same.
    security((), ("session" = [])),
    responses(
        (status = 204, description = "Signed out; the cookie is cleared"),
        (status = 403, description = "No or a wrong `X-CSRF-Token`", body = ErrorBody),
    ),
)]
async fn sign_out(
    State(state): State<AppState>,
    OriginalUri(original): OriginalUri,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ConvError> {
    if let Some(token) = session_cookie(&headers)
        && let Ok(session) = state.services.web_session(token).await
    {
        let sent = headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !tokens_match(sent, &session.csrf_token) {
            return Err(Error::Forbidden(
                "signing out needs the session's CSRF token in the X-CSRF-Token header".into(),
            )
            .into());
        }
        state.services.sign_out(token).await?;
    }
    let cookie = set_cookie(
        "",
        0,
        &cookie_path(&original, &uri),
        secure(&state, &headers),
    )?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(response)
}
