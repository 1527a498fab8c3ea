//! The chat page at `GET /`: static assets compiled into the binary.
//!
//! Every URL inside the page is relative, so the page works wherever sluice is mounted. That
//! needs the page's own URL to end with `/`: `/ai` is redirected to `/ai/`. (A host that nests
//! sluice with axum's `Router::nest` never routes `/ai/` to it, only `/ai`; mount it with
//! `nest_service` for the page to be reachable under a prefix: see the README.)

use std::sync::LazyLock;

use axum::extract::{OriginalUri, Path};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;

/// The page allows its own origin and nothing else: no inline script or style, no plugin, no
/// framing, no `<base>`, forms posting only to sluice.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; object-src 'none'; base-uri 'none'; \
                   frame-ancestors 'none'; form-action 'self'";

/// A file of the page, with its validator computed once.
struct Asset {
    body: &'static str,
    content_type: &'static str,
    etag: HeaderValue,
}

impl Asset {
    fn new(body: &'static str, content_type: &'static str) -> Self {
        let digest = hex::encode(Sha256::digest(body.as_bytes()));
        let etag = HeaderValue::try_from(format!("\"{}\"", &digest[..32]))
            .unwrap_or(HeaderValue::from_static("\"0\""));
        Self {
            body,
            content_type,
            etag,
        }
    }

    /// 200 with the body, or 304 when the client's copy is current. `no-cache` makes browsers
    /// revalidate every time, so a new binary's page is never mixed with an old script.
    fn respond(&self, request: &HeaderMap) -> Response {
        let mut headers = HeaderMap::new();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert(header::ETAG, self.etag.clone());
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        if matches(request, &self.etag) {
            return (StatusCode::NOT_MODIFIED, headers).into_response();
        }
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        (headers, self.body).into_response()
    }
}

/// Whether `If-None-Match` names this entity tag (weak comparison, as RFC 9110 asks for GET).
fn matches(request: &HeaderMap, etag: &HeaderValue) -> bool {
    let etag = etag.as_bytes();
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/").as_bytes() == etag)
}

static INDEX: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(include_str!("page/index.html"), "text/html; charset=utf-8"));
static APP_JS: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        include_str!("page/app.js"),
        "text/javascript; charset=utf-8",
    )
});
static APP_CSS: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(include_str!("page/app.css"), "text/css; charset=utf-8"));

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(index))
        .routes(routes!(asset))
}

/// The chat page
///
/// A small chat client for the conversations API, compiled into the binary: sign in with a
/// key (`POST /session`), then chat over `EventSource`. Served with a strict
/// Content-Security-Policy and an ETag. Under a prefix, a request without the trailing slash is
/// redirected to it.
#[utoipa::path(
    get,
    path = "/",
    tag = "page",
    responses(
        (status = 200, description = "The page", content_type = "text/html", body = String),
        (status = 304, description = "Unchanged since the ETag in `If-None-Match`"),
        (status = 308, description = "To the same path with a trailing slash"),
    ),
)]
async fn index(OriginalUri(uri): OriginalUri, headers: HeaderMap) -> Response {
    let path = uri.path();
    if !path.ends_with('/') {
        return add_slash(path, uri.query());
    }
    let mut response = INDEX.respond(&headers);
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// 308 to the same path with a slash. The location is relative to the request's own URL
/// (`./ai/` from `/ai`), so it stays right behind a proxy that rewrites the prefix, and it can
/// never name another host.
fn add_slash(path: &str, query: Option<&str>) -> Response {
    let last = path.rsplit('/').next().unwrap_or_default();
    let location = match query {
        Some(q) => format!("./{last}/?{q}"),
        None => format!("./{last}/"),
    };
    match HeaderValue::try_from(location) {
        Ok(location) => (
            StatusCode::PERMANENT_REDIRECT,
            [(header::LOCATION, location)],
        )
            .into_response(),
        Err(_) => not_found(),
    }
}

/// The page's script and style sheet
#[utoipa::path(
    get,
    path = "/assets/{file}",
    tag = "page",
    params(("file" = String, Path, description = "`app.js` or `app.css`")),
    responses(
        (status = 200, description = "The asset", content_type = "text/javascript", body = String),
        (status = 304, description = "Unchanged since the ETag in `If-None-Match`"),
        (status = 404, description = "No such asset"),
    ),
)]
async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match file.as_str() {
        "app.js" => APP_JS.respond(&headers),
        "app.css" => APP_CSS.respond(&headers),
        _ => not_found(),
    }
}

/// The same JSON 404 as every other unknown route.
fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(serde_json::json!({"error": "not_found", "message": "no such route"})),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_compares_weakly_and_accepts_lists_and_star() {
        let etag = HeaderValue::from_static("\"abc\"");
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::IF_NONE_MATCH, HeaderValue::from_static(v));
            h
        };
        assert!(matches(&with("\"abc\""), &etag));
        assert!(matches(&with("W/\"abc\""), &etag));
        assert!(matches(&with("\"x\", \"abc\""), &etag));
        assert!(matches(&with("*"), &etag));
        assert!(!matches(&with("\"abd\""), &etag));
        assert!(!matches(&HeaderMap::new(), &etag));
    }

    #[test]
    fn the_redirect_is_relative_and_keeps_the_query() {
        let r = add_slash("/ai", Some("chat=1"));
        assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(r.headers()[header::LOCATION], "./ai/?chat=1");
        let r = add_slash("/x/ai", None);
        assert_eq!(r.headers()[header::LOCATION], "./ai/");
    }
}
