//! HTTP: router assembly, middleware, SSE encoding, extractors, then one folder per dialect.

pub mod agent;
pub mod conversations;
mod docs;
pub mod extract;
pub mod openai;
mod ops;
mod page;
pub mod rate_limit;
mod request_id;
mod session;
pub mod sse;
pub(crate) mod whole;
pub mod workspace;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Request, StatusCode, header};
use axum::response::IntoResponse;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};

use crate::config::{AuthMode, CorsOrigins};
use crate::service::Services;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub services: Arc<Services>,
    pub auth: AuthMode,
    pub keepalive: Duration,
    pub cors: CorsOrigins,
    /// The workspace API's default reply mode for message posts: a task (true) or the answer.
    pub agent_async: bool,
    /// The session cookie is always `Secure` (`SLUICE_SECURE_COOKIES`).
    pub secure_cookies: bool,
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The complete router with its middleware, ready to serve or to nest in another axum app.
///
/// Middleware order, outermost first: `X-Content-Type-Options: nosniff` on every response (CORS
/// preflights included), CORS, a client's request id dropped unless it is acceptable, request id
/// (set, then propagated to the response), key headers marked sensitive (so no layer below can
/// log them), tracing (method, path without the query, request id: a `?key=` never reaches the
/// log), panics turned into 500s, body limit.
pub fn router(state: AppState) -> Router {
    let body_limit = state.services.limits.max_body_bytes;
    let cors = cors_layer(&state.cors);
    // Documented routes are registered on the `OpenApiRouter` (with `routes!`), which collects
    // their `#[utoipa::path]` descriptions; `docs::publish` serves the result. Plain axum routers
    // merge below it, undocumented.
    let documented = OpenApiRouter::with_openapi(docs::base())
        .merge(ops::router())
        .merge(conversations::router())
        .merge(workspace::router())
        .merge(agent::router())
        .merge(session::router())
        .merge(page::router())
        .nest("/v1", openai::router());
    let app = docs::publish(documented, &state.services)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(
            ServiceBuilder::new()
                .map_request(|request: Request<axum::body::Body>| {
                    request_id::drop_unusable(&REQUEST_ID, request)
                })
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(SetSensitiveRequestHeadersLayer::new([
                    header::AUTHORIZATION,
                    header::COOKIE,
                    HeaderName::from_static("x-api-key"),
                ]))
                .layer(
                    TraceLayer::new_for_http()
                        .on_response(DefaultOnResponse::new().level(tracing::Level::INFO))
                        .make_span_with(|req: &Request<_>| {
                    let request_id = req
                        .headers()
                        .get(REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    tracing::info_span!(
                        "request",
                        method = %req.method(),
                        path = %req.uri().path(),
                        request_id = %request_id,
                    )
                        }),
                )
                .layer(CatchPanicLayer::custom(|_: Box<dyn std::any::Any + Send>| {
                    tracing::error!("a request handler panicked");
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        axum::Json(serde_json::json!({"error": "internal_error", "message": "internal server error"})),
                    )
                        .into_response()
                }))
                .layer(DefaultBodyLimit::max(body_limit))
                .layer(axum::middleware::from_fn(count_requests))
                .layer(axum::middleware::from_fn(rate_limit::headers)),
        );
    // Outside the other layers, so that preflights are answered before any of them runs.
    let app = match cors {
        Some(cors) => app.layer(cors),
        None => app,
    };
    // No response is ever sniffed into another type (a JSON error echoing input rendered as HTML,
    // an SSE body taken for a script). Outermost, so that nothing answers without it.
    app.layer(SetResponseHeaderLayer::if_not_present(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    ))
}

/// `response` with `Retry-After: seconds`, for the errors that say when to try again.
pub(crate) fn with_retry_after(
    mut response: axum::response::Response,
    seconds: Option<u64>,
) -> axum::response::Response {
    if let Some(seconds) = seconds {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, seconds.into());
    }
    response
}

/// CORS for the configured origins: keys in headers, never credentials (the session cookie
/// stays same-site). Preflights are answered here, before authentication.
fn cors_layer(origins: &CorsOrigins) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{HeaderValue, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let allow = match origins {
        CorsOrigins::None => return None,
        CorsOrigins::Any => AllowOrigin::any(),
        CorsOrigins::List(list) => AllowOrigin::list(
            list.iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect::<Vec<_>>(),
        ),
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("x-api-key"),
                HeaderName::from_static("x-user-id"),
                HeaderName::from_static("last-event-id"),
            ])
            .expose_headers([
                REQUEST_ID,
                header::RETRY_AFTER,
                HeaderName::from_static("x-message-id"),
                rate_limit::LIMIT,
                rate_limit::REMAINING,
                rate_limit::RESET,
            ])
            .max_age(Duration::from_secs(3600)),
    )
}

/// Counts every response by method, matched route (never the raw path: ids would explode the
/// label set) and status.
async fn count_requests(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    metrics::counter!(
        crate::telemetry::names::HTTP_REQUESTS,
        "method" => method,
        "route" => route,
        "status" => response.status().as_u16().to_string(),
    )
    .increment(1);
    response
}

async fn not_found() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        axum::Json(serde_json::json!({"error": "not_found", "message": "no such route"})),
    )
}

async fn method_not_allowed() -> impl IntoResponse {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        axum::Json(serde_json::json!({
            "error": "method_not_allowed",
            "message": "this route does not accept that method"
        })),
    )
}

/// Registers a documented route as written in its `#[utoipa::path]` and, undocumented, its
/// trailing-slash twin (`/chats/` and `/chats`, `/chats/{id}` and `/chats/{id}/`): clients use
/// both.
pub(crate) fn both<S: Clone + Send + Sync + 'static>(
    router: OpenApiRouter<S>,
    routes: UtoipaMethodRouter<S>,
) -> OpenApiRouter<S> {
    let (schemas, paths, method_router) = routes;
    let twins: Vec<String> = paths.paths.keys().filter_map(|path| twin(path)).collect();
    let mut router = router.routes((schemas, paths, method_router.clone()));
    for path in twins {
        router = router.route(&path, method_router.clone());
    }
    router
}

/// `/a/` for `/a`, `/a` for `/a/`; none for `/`.
fn twin(path: &str) -> Option<String> {
    match path.strip_suffix('/') {
        Some("") => None,
        Some(trimmed) => Some(trimmed.to_owned()),
        None => Some(format!("{path}/")),
    }
}
