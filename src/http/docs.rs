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
use crate::service::Services;

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
pub fn publish(documented: OpenApiRouter<AppState>, services: &Services) -> Router<AppState> {
    let mut own = OpenApiRouter::<Published>::new()
        .routes(routes!(openapi_json))
        .routes(routes!(docs_page));
    let (router, mut api) = documented.split_for_parts();
    api.merge(own.to_openapi());
    document_unsupported_media_type(&mut api);
    document_head_too_large(&mut api);
    let json = serde_json::to_value(&api)
        .map(|mut doc| {
            let catalogue = services.provider_catalogue();
            let names: Vec<String> = catalogue.iter().map(|(name, _)| name.clone()).collect();
            let served = text_rules::Served {
                max_message_chars: services.limits.max_message_chars,
                output_cap: services.largest_output_cap(),
                providers: text_rules::any_case_of(&names),
            };
            text_rules::attach(&mut doc, &served);
            text_rules::provider_and_model(&mut doc, &catalogue);
            text_rules::json_without_nul(&mut doc);
            text_rules::secret_keys_have_no_origins(&mut doc);
            text_rules::forms_refuse_unknown_fields(&mut doc);
            doc
        })
        .and_then(|doc| serde_json::to_vec(&doc));
    let json = match json {
        Ok(json) => Some(Bytes::from(json)),
        Err(e) => {
            tracing::error!(error = %e, "the API description does not serialize");
            None
        }
    };
    router.merge(Router::from(own.with_state(Published(json))))
}

/// The text rules the server enforces, spelled once as JSON Schema patterns. A field names its
/// rule with a `format` (`#[schema(format = "message-text")]`) and gets the pattern here, so a
/// client generated from the description refuses what the server refuses. The character
/// classes are written out rather than `\s`, whose meaning differs between regex dialects; the
/// white space is Unicode's `White_Space`, what the server trims.
mod text_rules {
    use serde_json::Value;

    /// Unicode `White_Space`, as a class body.
    macro_rules! ws {
        () => {
            r"\u0009-\u000d\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
        };
    }

    /// What the rules take from this server's settings.
    pub struct Served {
        pub max_message_chars: usize,
        /// The largest output cap of any model.
        pub output_cap: u32,
        /// A pattern of the configured providers' names, in any case; `None` when there are
        /// none (the demo model).
        pub providers: Option<String>,
    }

    /// A pattern matching exactly these names, ASCII letters in either case.
    pub fn any_case_of(names: &[String]) -> Option<String> {
        if names.is_empty() {
            return None;
        }
        let alternatives: Vec<String> = names.iter().map(|name| any_case(name)).collect();
        // Blank is as if unset.
        Some(format!("^[{}]*$|^({})$", ws!(), alternatives.join("|")))
    }

    macro_rules! display_text {
        () => {
            r"^\s*[^\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]*[^\s\u0000-\u001f\u007f-\u009f\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f\u2800\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8][^\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]*\s*$"
        };
    }

    /// A chat, session, agent or workspace name (`domain::display_text`): no control characters
    /// or bidirectional override and isolate controls, and one visible character at least.
    const DISPLAY_TEXT: &str = display_text!();

    /// A display text, or only white space: the field is then as if unset.
    const DISPLAY_TEXT_OR_BLANK: &str = concat!("^[", ws!(), "]*$|", display_text!());

    /// A message: one character that is not white space at least, and no NUL.
    const MESSAGE_TEXT: &str = concat!(r"^[^\u0000]*[^\u0000", ws!(), r"][^\u0000]*$");

    /// Something other than white space.
    const NONBLANK: &str = concat!("[^", ws!(), "]");

    /// An end user's id (`domain::end_user_id`): trimmed, 1 to 255 characters, no control
    /// characters.
    const END_USER_ID: &str = concat!(
        "^[",
        ws!(),
        r"]*[^\u0000-\u001f\u007f-\u009f",
        ws!(),
        r"]([^\u0000-\u001f\u007f-\u009f]{0,253}[^\u0000-\u001f\u007f-\u009f",
        ws!(),
        "])?[",
        ws!(),
        "]*$"
    );

    /// US dollars (`domain::parse_usd`): up to 12 digits, then up to 6 decimals.
    const USD: &str = concat!("^[", ws!(), r"]*[0-9]{1,12}(\.[0-9]{0,6})?[", ws!(), "]*$");

    /// A BCP 47 language tag (`domain::language_tag`).
    const LANGUAGE_TAG: &str = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$";

    /// A language tag, or nothing: the field is then as if absent.
    const LANGUAGE_TAG_OR_BLANK: &str = concat!(
        "^[",
        ws!(),
        r"]*([A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*)?[",
        ws!(),
        "]*$"
    );

    /// RFC 3339, with only the dates the calendar has (February 29th in leap years).
    const DATE_TIME: &str = concat!(
        r"^([0-9]{4}-(0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])",
        r"|[0-9]{4}-(0[469]|11)-(0[1-9]|[12][0-9]|30)",
        r"|[0-9]{4}-02-(0[1-9]|1[0-9]|2[0-8])",
        r"|([0-9]{2}(0[48]|[2468][048]|[13579][26])|(0[48]|[2468][048]|[13579][26])00)-02-29)",
        r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?",
        r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
    );

    /// `name` as a pattern body: ASCII letters in either case, punctuation escaped.
    fn any_case(name: &str) -> String {
        name.chars()
            .map(|c| match c {
                c if c.is_ascii_alphabetic() => {
                    format!("[{}{}]", c.to_ascii_lowercase(), c.to_ascii_uppercase())
                }
                c if c.is_ascii_punctuation() => format!("\\{c}"),
                c => c.to_string(),
            })
            .collect()
    }

    /// `name` exactly, as a pattern body.
    fn exactly(name: &str) -> String {
        name.chars()
            .map(|c| {
                if c.is_ascii_punctuation() {
                    format!("\\{c}")
                } else {
                    c.to_string()
                }
            })
            .collect()
    }

    /// Which models a provider takes is the one rule that joins two fields
    /// (`Providers::check_choice`): with a provider (any case), a model it lists (any model
    /// if it lists none); without one, `provider/anything` or a model some provider lists.
    /// Blank or null is unset. Said as an `anyOf` on each object that has both fields.
    pub fn provider_and_model(doc: &mut Value, catalogue: &[(String, Vec<String>)]) {
        use serde_json::json;
        if catalogue.is_empty() {
            return;
        }
        let unset = json!({"anyOf": [
            {"type": "null"},
            {"type": "string", "pattern": concat!("^[", ws!(), "]*$")},
        ]});
        let providers: Vec<String> = catalogue.iter().map(|(name, _)| any_case(name)).collect();
        let listed: Vec<String> = catalogue
            .iter()
            .flat_map(|(_, models)| models.iter().map(|m| exactly(m)))
            .collect();
        let mut alone = format!(r"^({})/[\s\S]*$", providers.join("|"));
        if !listed.is_empty() {
            alone.push_str(&format!("|^({})$", listed.join("|")));
        }
        for (schema, provider, model) in [
            ("AgentBody", "provider", "model"),
            ("AgentCreate", "provider", "model"),
            ("SessionFields", "ai_provider", "ai_model"),
        ] {
            let Some(object) = doc
                .pointer_mut(&format!("/components/schemas/{schema}"))
                .and_then(Value::as_object_mut)
            else {
                continue;
            };
            let mut choices = vec![json!({"properties": {
                provider: unset,
                model: {"anyOf": [unset, {"type": "string", "pattern": alone}]},
            }})];
            for (name, models) in catalogue {
                let served = if models.is_empty() {
                    json!({"type": "string"})
                } else {
                    json!({"type": "string", "enum": models})
                };
                choices.push(json!({
                    "required": [provider],
                    "properties": {
                        provider: {"type": "string", "pattern": format!("^{}$", any_case(name))},
                        model: {"anyOf": [unset, served]},
                    },
                }));
            }
            object.insert("anyOf".into(), Value::Array(choices));
        }
    }

    /// Any JSON whose keys and strings hold no NUL (which no database stores in text), as a
    /// schema of its own, `NulFreeJson`; the fields kept as given are objects of it.
    pub fn json_without_nul(doc: &mut Value) {
        use serde_json::json;
        let no_nul = json!({"type": "string", "pattern": r"^[^\u0000]*$"});
        let any = json!({"$ref": "#/components/schemas/NulFreeJson"});
        let free = json!({"anyOf": [
            no_nul,
            {"type": ["number", "boolean", "null"]},
            {"type": "array", "items": any},
            {"type": "object", "propertyNames": no_nul, "additionalProperties": any},
        ]});
        for field in ["/components/schemas/AgentCreateChat/properties/metadata"] {
            if let Some(object) = doc.pointer_mut(field).and_then(Value::as_object_mut) {
                object.insert("propertyNames".into(), no_nul.clone());
                object.insert("additionalProperties".into(), any.clone());
            }
        }
        if let Some(schemas) = doc
            .pointer_mut("/components/schemas")
            .and_then(Value::as_object_mut)
        {
            schemas.insert("NulFreeJson".into(), free);
        }
    }

    /// The transcription form refuses fields it does not know, as JSON bodies do (a form has
    /// no serde derive to say it).
    pub fn forms_refuse_unknown_fields(doc: &mut Value) {
        if let Some(form) = doc
            .pointer_mut("/components/schemas/TranscriptionForm")
            .and_then(Value::as_object_mut)
        {
            form.insert("additionalProperties".into(), false.into());
        }
    }

    /// A secret key is bound to no origin: `origins` of a key to create is empty unless its
    /// `kind` is `publishable`.
    pub fn secret_keys_have_no_origins(doc: &mut Value) {
        if let Some(schema) = doc.pointer_mut("/components/schemas/CreateKey")
            && let Some(object) = schema.as_object_mut()
        {
            object.insert(
                "if".into(),
                serde_json::json!({"properties": {"kind": {"const": "secret"}}}),
            );
            object.insert(
                "then".into(),
                serde_json::json!({"properties": {"origins": {"maxItems": 0}}}),
            );
        }
    }

    /// Adds each named rule's pattern (and the configured length of a message) to every schema
    /// in `doc` whose `format` names it; an `output-tokens` integer gets the largest output cap
    /// of any model served (each model's own cap is in the operation's description).
    pub fn attach(doc: &mut Value, served: &Served) {
        match doc {
            Value::Object(object) => {
                let format = object
                    .get("format")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                let format = format.as_deref();
                if format == Some("output-tokens") {
                    object.insert("maximum".into(), served.output_cap.into());
                }
                if let (Some("provider"), Some(providers)) = (format, &served.providers) {
                    object.insert("pattern".into(), providers.as_str().into());
                }
                let pattern = match format {
                    Some("display-text") => Some(DISPLAY_TEXT),
                    Some("display-text-or-blank") => Some(DISPLAY_TEXT_OR_BLANK),
                    Some("message-text") => {
                        object.insert("maxLength".into(), served.max_message_chars.into());
                        Some(MESSAGE_TEXT)
                    }
                    Some("nonblank") => Some(NONBLANK),
                    Some("text-without-nul") => {
                        object.insert("maxLength".into(), served.max_message_chars.into());
                        Some(r"^[^\u0000]*$")
                    }
                    Some("end-user-id") => Some(END_USER_ID),
                    Some("usd") => Some(USD),
                    Some("language-tag") => Some(LANGUAGE_TAG),
                    Some("language-tag-or-blank") => Some(LANGUAGE_TAG_OR_BLANK),
                    Some("date-time") => Some(DATE_TIME),
                    _ => None,
                };
                if let Some(pattern) = pattern {
                    object.insert("pattern".into(), pattern.into());
                }
                object.values_mut().for_each(|v| attach(v, served));
            }
            Value::Array(items) => items.iter_mut().for_each(|v| attach(v, served)),
            _ => {}
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn matches(pattern: &str, text: &str) -> bool {
            regex::Regex::new(pattern).unwrap().is_match(text)
        }

        #[test]
        fn each_rule_takes_what_the_server_takes() {
            use crate::domain;
            for (text, ok) in [("bob", true), ("  a b ", true), ("", false), (" ", false)] {
                assert_eq!(matches(END_USER_ID, text), ok, "{text:?}");
                assert_eq!(domain::end_user_id("u", text).is_ok(), ok, "{text:?}");
            }
            let long = "x".repeat(255);
            assert!(matches(END_USER_ID, &long) && domain::end_user_id("u", &long).is_ok());
            let longer = "é".repeat(256);
            assert!(!matches(END_USER_ID, &longer) && domain::end_user_id("u", &longer).is_err());
            assert!(!matches(END_USER_ID, "a\u{7}b"));
            for (text, ok) in [
                ("10.00", true),
                ("3", true),
                ("3.", true),
                ("", false),
                ("1.1234567", false),
                ("-1", false),
            ] {
                assert_eq!(matches(USD, text), ok, "{text:?}");
                assert_eq!(domain::parse_usd("c", text).is_ok(), ok, "{text:?}");
            }
            for (text, ok) in [
                ("hi", true),
                (" \n", false),
                ("a\u{0}", false),
                ("\u{feff}", true),
            ] {
                assert_eq!(matches(MESSAGE_TEXT, text), ok, "{text:?}");
            }
            for (text, ok) in [
                ("2024-02-29T00:00:00Z", true),
                ("2023-02-29T00:00:00Z", false),
                ("2000-02-29T23:59:59.5+05:30", true),
                ("1900-02-29T00:00:00Z", false),
                ("2024-04-31T00:00:00Z", false),
                ("2024-12-31T24:00:00Z", false),
            ] {
                assert_eq!(matches(DATE_TIME, text), ok, "{text:?}");
                assert_eq!(
                    chrono::DateTime::parse_from_rfc3339(text).is_ok(),
                    ok,
                    "{text:?}"
                );
            }
        }
    }
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
        for operation in operations(item) {
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

/// The operations of a path, whatever their method.
fn operations(
    item: &mut utoipa::openapi::PathItem,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        &mut item.get,
        &mut item.post,
        &mut item.put,
        &mut item.patch,
        &mut item.delete,
    ]
    .into_iter()
    .flatten()
}

/// Every operation may be answered 431, without a body, by the listener before any route runs:
/// a request head (the path and query included) over the limit.
fn document_head_too_large(api: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{RefOr, ResponseBuilder};
    for item in api.paths.paths.values_mut() {
        for operation in operations(item) {
            let refused = ResponseBuilder::new()
                .description("The request head (with its path and query) is too large")
                .build();
            operation
                .responses
                .responses
                .entry("431".to_owned())
                .or_insert(RefOr::T(refused));
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
