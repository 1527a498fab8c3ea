//! Extractors shared by every dialect: the caller, JSON bodies, ids and query strings.
//! Each is generic over the dialect's error type, so rejections use that dialect's envelope.

use std::marker::PhantomData;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use serde::de::{DeserializeOwned, IgnoredAny};
use uuid::Uuid;

use super::AppState;
use super::rate_limit::RateSlot;
use crate::config::AuthMode;
use crate::error::Error;
use crate::service::{KeyKind, Principal, tokens_match};

/// The authenticated caller. `E` is the dialect's error type.
pub struct Auth<E>(pub Principal, pub PhantomData<E>);

impl<E> FromRequestParts<AppState> for Auth<E>
where
    E: From<Error> + IntoResponse,
{
    type Rejection = E;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, E> {
        let who = authenticate(parts, state).await.map_err(E::from)?;
        admit(parts, state, &who).await.map_err(E::from)?;
        Ok(Auth(who, PhantomData))
    }
}

/// Counts the request against its key's rate limit, once however many extractors ask, and
/// leaves the decision for the response's headers (`http::rate_limit`).
async fn admit(parts: &Parts, state: &AppState, who: &Principal) -> Result<(), Error> {
    let slot = parts.extensions.get::<RateSlot>();
    let decision = match slot.and_then(RateSlot::get) {
        Some(counted) => counted,
        None => match state.services.admit(who).await {
            Some(decision) => decision,
            None => return Ok(()),
        },
    };
    if let Some(slot) = slot {
        slot.set(decision);
    }
    decision.check()
}

fn header_key(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    if bearer.is_some() {
        return bearer;
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// The `key` query parameter, for browsers' `EventSource`, which cannot set headers.
fn query_key(parts: &Parts) -> Option<String> {
    let query = parts.uri.query()?;
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .ok()?
        .into_iter()
        .find_map(|(k, v)| (k == "key").then_some(v))
}

/// The name of the browser session cookie set by `POST /session`.
pub const SESSION_COOKIE: &str = "sluice_session";

/// Its name when it is `Secure` at the root path: a cookie with this prefix can only be set by
/// this origin over HTTPS, for every path, so no subdomain or plain-HTTP page can plant one.
pub const HOST_SESSION_COOKIE: &str = "__Host-sluice_session";

/// The request header that must echo a session's CSRF token on state-changing requests.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The value of the session cookie, if the request carries one (the `__Host-` one first).
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    let named = |wanted: &str| {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find_map(|(name, value)| (name == wanted).then_some(value.trim_matches('"')))
    };
    named(HOST_SESSION_COOKIE).or_else(|| named(SESSION_COOKIE))
}

/// Order: a key in a header, then a publishable key in `?key=`, then the session cookie.
async fn authenticate(parts: &Parts, state: &AppState) -> Result<Principal, Error> {
    let mut principal = if state.auth == AuthMode::Off {
        Principal::admin(state.services.default_workspace)
    } else {
        let from_query = query_key(parts);
        let origin = parts
            .headers
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok());
        match (header_key(&parts.headers), from_query.as_deref()) {
            (Some(key), _) => {
                let p = state.services.authenticate(key).await?;
                p.check_origin(origin)?;
                p
            }
            (None, Some(key)) if key.starts_with("sk_") => {
                return Err(Error::UnauthenticatedBecause(
                    "secret keys are refused in URLs, where logs and browser history keep them; \
                     send it in the Authorization header, or use a publishable key in ?key="
                        .into(),
                ));
            }
            (None, Some(key)) => {
                let p = state.services.authenticate(key).await?;
                if p.kind != KeyKind::Publishable {
                    return Err(Error::Unauthenticated);
                }
                p.check_origin(origin)?;
                p
            }
            (None, None) => session_principal(parts, state).await?,
        }
    };
    if let Some(user) = parts.headers.get("x-user-id") {
        // A header that is not text is as invalid as an empty one.
        let user = crate::domain::end_user_id("X-User-Id", user.to_str().unwrap_or_default())?;
        principal = principal.acting_for(user)?;
    }
    Ok(principal)
}

/// The caller behind a session cookie. The cookie is `SameSite=Strict` and a state-changing
/// request must also echo the session's CSRF token, which only the page's own script can read;
/// origin binding was checked when the key signed in.
async fn session_principal(parts: &Parts, state: &AppState) -> Result<Principal, Error> {
    let token = session_cookie(&parts.headers).ok_or(Error::Unauthenticated)?;
    // Browsers say where a request comes from; the cookie serves sluice's own page only, so
    // even a GET (which may start a generation) from another site is refused.
    let fetch_site = parts
        .headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok());
    if matches!(fetch_site, Some("cross-site" | "same-site")) {
        return Err(Error::Forbidden(
            "the session cookie is accepted only from sluice's own pages; another site must \
             send a key"
                .into(),
        ));
    }
    let session = state.services.web_session(token).await?;
    if !parts.method.is_safe() {
        let sent = parts
            .headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !tokens_match(sent, &session.csrf_token) {
            return Err(Error::Forbidden(
                "a request authenticated by the session cookie must send the session's CSRF \
                 token in the X-CSRF-Token header"
                    .into(),
            ));
        }
    }
    Ok(session.principal)
}

/// A JSON body whose rejections name the field at fault, in the dialect's envelope.
pub struct JsonBody<T, E>(pub T, pub PhantomData<E>);

impl<T, E> FromRequest<AppState> for JsonBody<T, E>
where
    T: DeserializeOwned,
    E: From<Error> + IntoResponse,
{
    type Rejection = E;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, E> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<mime_type::Essence>().ok())
            .is_some_and(|m| m.is_json());
        if !is_json {
            return Err(E::from(Error::UnsupportedMediaType(
                "send the body as JSON with Content-Type: application/json".into(),
            )));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                E::from(Error::PayloadTooLarge {
                    what: "the request body",
                    limit: state.services.limits.max_body_bytes,
                })
            } else if body_timed_out(&rejection) {
                E::from(Error::RequestTimeout)
            } else {
                E::from(Error::BadRequest {
                    field: None,
                    message: "could not read the request body".into(),
                })
            }
        })?;
        parse_json(&bytes)
            .map(|v| JsonBody(v, PhantomData))
            .map_err(E::from)
    }
}

/// Whether reading the body failed because it stalled past the listener's body timeout (see
/// `crate::listener`).
fn body_timed_out(rejection: &axum::extract::rejection::BytesRejection) -> bool {
    timed_out(rejection)
}

/// Whether `error` comes from a body that stalled past the listener's body timeout.
pub fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// A `true`/`false` (or `1`/`0`) query parameter, the last one given; anything else is 400.
pub fn flag(pairs: &[(String, String)], name: &str) -> Result<Option<bool>, Error> {
    match pairs.iter().rev().find(|(k, _)| k == name) {
        None => Ok(None),
        Some((_, v)) => match v.to_ascii_lowercase().as_str() {
            "true" | "1" => Ok(Some(true)),
            "false" | "0" => Ok(Some(false)),
            _ => Err(Error::bad_request(
                name,
                format!("{name} must be true or false"),
            )),
        },
    }
}

/// Whether the client's `Accept` asks for an event stream.
pub fn accepts_events(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"))
}

/// Deserialises JSON, mapping syntax errors to 400 and shape errors to 422 naming the field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    // serde reads a struct from an array of its fields too (`[null, null]`); a body is an
    // object, as the description says.
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != b'{') && serde_json::from_slice::<IgnoredAny>(bytes).is_ok() {
        return Err(Error::Unprocessable {
            field: None,
            message: "the body must be a JSON object".into(),
        });
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let text = inner.to_string();
                // "missing field `name`" is reported at the parent's path: name the field itself.
                let field = text
                    .strip_prefix("missing field `")
                    .and_then(|rest| rest.split('`').next())
                    .map(|f| {
                        if path == "." {
                            f.to_owned()
                        } else {
                            format!("{path}.{f}")
                        }
                    })
                    .unwrap_or_else(|| path.clone());
                let text = text
                    .split(" at line ")
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let message = if path == "." {
                    text
                } else {
                    format!("{path}: {text}")
                };
                let message = if path == "." && message.starts_with("invalid type") {
                    format!("the body must be a JSON object: {message}")
                } else {
                    message
                };
                Error::Unprocessable {
                    field: (field != ".").then_some(field),
                    message,
                }
            }
            _ => Error::BadRequest {
                field: None,
                message: format!("the body is not valid JSON: {inner}"),
            },
        }
    })?;
    de.end().map_err(|e| Error::BadRequest {
        field: None,
        message: format!("the body is not valid JSON: {e}"),
    })?;
    Ok(value)
}

/// Parses a path or query id, naming it when it is not a UUID.
pub fn parse_id(field: &str, raw: &str) -> Result<Uuid, Error> {
    Uuid::parse_str(raw.trim())
        .map_err(|_| Error::bad_request(field, format!("{field} is not a UUID: `{raw}`")))
}

/// The query string as key/value pairs (empty when absent).
/// `?limit=` (1 to 200, 50 by default) and `?offset=` of a list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    pub limit: u64,
    pub offset: u64,
}

impl Page {
    const DEFAULT_LIMIT: u64 = 50;
    const MAX_LIMIT: u64 = 200;

    pub fn from_query(query: Option<&str>) -> Result<Self, Error> {
        let pairs = query_pairs(query)?;
        let number = |name: &str| match pairs.iter().rev().find(|(k, _)| k == name) {
            None => Ok(None),
            Some((_, v)) => v.parse::<u64>().map(Some).map_err(|_| {
                Error::bad_request(name, format!("{name} must be a non-negative integer"))
            }),
        };
        let limit = number("limit")?.unwrap_or(Self::DEFAULT_LIMIT);
        if !(1..=Self::MAX_LIMIT).contains(&limit) {
            return Err(Error::bad_request(
                "limit",
                format!("limit must be from 1 to {}", Self::MAX_LIMIT),
            ));
        }
        let offset = number("offset")?.unwrap_or(0);
        if i64::try_from(offset).is_err() {
            return Err(Error::bad_request("offset", "offset is too large"));
        }
        Ok(Self { limit, offset })
    }
}

pub fn query_pairs(parts_query: Option<&str>) -> Result<Vec<(String, String)>, Error> {
    match parts_query {
        None => Ok(Vec::new()),
        Some(q) => serde_urlencoded::from_str(q).map_err(|_| Error::BadRequest {
            field: None,
            message: "the query string is malformed".into(),
        }),
    }
}

mod mime_type {
    //! Just enough media-type parsing to recognise JSON (`application/json`, `…+json`).
    pub struct Essence(String);

    impl std::str::FromStr for Essence {
        type Err = ();
        fn from_str(s: &str) -> Result<Self, ()> {
            let essence = s
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            if essence.contains('/') {
                Ok(Essence(essence))
            } else {
                Err(())
            }
        }
    }

    impl Essence {
        pub fn is_json(&self) -> bool {
            self.0 == "application/json"
                || (self.0.starts_with("application/") && self.0.ends_with("+json"))
        }
    }
}
