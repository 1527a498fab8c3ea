//! The API description: OpenAPI 3.1 collected from the handlers' `#[utoipa::path]` attributes
//! as the routes are registered, served at `GET /openapi.json` and rendered at `GET /docs` by a
//! small page compiled into the binary (no network access, at build time or at run time).

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use utoipa::openapi::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi as _};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;

const DESCRIPTION: &str = "A Server-Sent-Events streaming inference gateway and chat backend: \
the conversations API (chats, messages, SSE inference that survives reconnects), the workspace \
API under `/api/` and an OpenAI-compatible API under `/v1`, over one generation core.";

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "sluice", version = env!("CARGO_PKG_VERSION"), description = DESCRIPTION),
    modifiers(&KeySchemes),
    tags(
        (name = "chats", description = "The conversations API: chats"),
        (name = "conversations", description = "The conversations API: messages, SSE inference and stop"),
        (name = "workspaces", description = "The workspace API: workspaces and their keys"),
        (name = "sessions", description = "The workspace API: sessions, chats with their own settings"),
        (name = "sharing", description = "The workspace API: public read-only links"),
        (name = "messages", description = "The workspace API: messages, answered sync, as a task, or as an event stream"),
        (name = "openai", description = "OpenAI-compatible: the official SDKs work with `base_url` set to `/v1`"),
        (name = "operations", description = "Probes and metrics"),
        (name = "session", description = "Browser sign-in for the chat page: a session cookie and a CSRF token"),
        (name = "page", description = "The chat page served at the root"),
        (name = "docs", description = "This description"),
    ),
)]
struct ApiDoc;

/// The three ways a key travels.
struct KeySchemes;

impl Modify for KeySchemes {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "`Authorization: Bearer <key>`: a secret (`sk_live_…`) or publishable \
                         (`pk_live_…`) key. A secret key may act for an end user with \
                         `X-User-Id`.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "x-api-key",
                "The same keys as `bearer`, in the `x-api-key` header.",
            ))),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "sluice_session",
                "The browser session set by `POST /session` (named `__Host-sluice_session` when \
                 it is `Secure` at the root path: over HTTPS, or with `SLUICE_SECURE_COOKIES`). \
                 Every route that takes a key also accepts it, with the rights of the key that \
                 signed in; requests other than GET and HEAD must also send the session's \
                 `X-CSRF-Token`.",
            ))),
        );
        components.add_security_scheme(
            "publishable_key",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "key",
                "A publishable key (`pk_live_…`) in the URL, for `EventSource`, which cannot set \
                 headers. Accepted only by the operations that list this scheme; a secret key \
                 here is refused (401).",
            ))),
        );
    }
}

/// The document every router is merged into: info, tags and security schemes.
pub fn base() -> OpenApi {
    ApiDoc::openapi()
}

/// The serialized document, built once with the router.
#[derive(Clone)]
struct Published(Option<Bytes>);

/// Adds `GET /openapi.json` and `GET /docs` (documented like any other route) and returns the
/// plain axum router, with the description of every route registered so far.
pub fn publish(documented: OpenApiRouter<AppState>) -> Router<AppState> {
    let mut own = OpenApiRouter::<Published>::new()
        .routes(routes!(openapi_json))
        .routes(routes!(docs_page));
    let (router, mut api) = documented.split_for_parts();
    api.merge(own.to_openapi());
    document_unsupported_media_type(&mut api);
    let json = match api.to_json() {
        Ok(json) => Some(Bytes::from(json)),
        Err(e) => {
            tracing::error!(error = %e, "the API description does not serialize");
            None
        }
    };
    router.merge(Router::from(own.with_state(Published(json))))
}

/// Every operation that reads a JSON body refuses another `Content-Type` with 415 (the body
/// extractor does, before the handler runs): said once here for all of them, with the error
/// body of the operation's dialect.
fn document_unsupported_media_type(api: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{Content, Ref, RefOr, ResponseBuilder};
    for (path, item) in &mut api.paths.paths {
        let error = if path.starts_with("/v1/") {
            "OpenAIError"
        } else if path.starts_with("/api/") {
            "WorkspaceError"
        } else if path.starts_with("/agent") || path == "/chat" || path.starts_with("/chat/") {
            "AgentApiError"
        } else {
            "ConversationsError"
        };
        for operation in [
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
            let reads_json = matches!(
                &operation.request_body,
                Some(RefOr::T(body)) if body.content.contains_key("application/json")
            );
            if reads_json && !operation.responses.responses.contains_key("415") {
                let refused = ResponseBuilder::new()
                    .description("The body is not JSON: `Content-Type` must be `application/json`")
                    .content(
                        "application/json",
                        Content::new(Some(Ref::from_schema_name(error))),
                    )
                    .build();
                operation
                    .responses
                    .responses
                    .insert("415".to_owned(), RefOr::T(refused));
            }
        }
    }
}

/// The API description
///
/// This document: OpenAPI 3.1.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "docs",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object)),
)]
async fn openapi_json(State(Published(json)): State<Published>) -> Response {
    match json {
        Some(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The API description, readable
///
/// A page that renders `openapi.json` by operation, grouped by tag. It loads nothing else.
#[utoipa::path(
    get,
    path = "/docs",
    tag = "docs",
    responses((status = 200, description = "The page", content_type = "text/html", body = String)),
)]
async fn docs_page() -> impl IntoResponse {
    (
        [
            (
                header::CONTENT_SECURITY_POLICY,
                // Its own inline script and style, and fetching from this origin only; never
                // framed (like the chat page), no `<base>`, no form submission.
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; base-uri 'none'; form-action 'none'; \
                 frame-ancestors 'none'",
            ),
            // For browsers that predate `frame-ancestors`.
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        Html(include_str!("docs/index.html")),
    )
}
