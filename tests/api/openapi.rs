//! The API description: `/openapi.json` lists exactly the routes the router serves, and `/docs`
//! renders it.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::helpers::*;

/// Every route the router serves, as `(method, path)` in the description's spelling. Routes of
/// the conversations and workspace APIs are also served with the other trailing slash (`/chats` for `/chats/`,
/// `/chats/{id}/` for `/chats/{id}`); the description names each once.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/chats/"),
    ("POST", "/chats/create"),
    ("GET", "/chats/{id}"),
    ("PUT", "/chats/update/{id}"),
    ("DELETE", "/chats/delete/{id}"),
    ("GET", "/conversations/"),
    ("POST", "/conversations/create"),
    ("GET", "/conversations/inference/{id}"),
    ("GET", "/conversations/inference_internet/{id}"),
    ("POST", "/conversations/stop/{id}"),
    ("GET", "/"),
    ("GET", "/assets/{file}"),
    ("GET", "/session"),
    ("POST", "/session"),
    ("DELETE", "/session"),
    ("POST", "/v1/chat/completions"),
    ("GET", "/v1/models"),
    ("POST", "/api/workspaces/"),
    ("GET", "/api/workspaces/{ws}/"),
    ("PATCH", "/api/workspaces/{ws}/"),
    ("POST", "/api/workspaces/{ws}/keys/"),
    ("GET", "/api/workspaces/{ws}/keys/"),
    ("DELETE", "/api/workspaces/{ws}/keys/{id}/"),
    ("GET", "/api/workspaces/{ws}/chats/"),
    ("POST", "/api/workspaces/{ws}/chats/"),
    ("GET", "/api/workspaces/{ws}/chats/{id}/"),
    ("PUT", "/api/workspaces/{ws}/chats/{id}/"),
    ("DELETE", "/api/workspaces/{ws}/chats/{id}/"),
    ("GET", "/api/workspaces/{ws}/chats/{id}/messages/"),
    ("POST", "/api/workspaces/{ws}/chats/{id}/messages/"),
    ("GET", "/api/workspaces/{ws}/chats/{id}/messages/{message}/"),
    (
        "DELETE",
        "/api/workspaces/{ws}/chats/{id}/messages/{message}/",
    ),
    (
        "GET",
        "/api/workspaces/{ws}/chats/{id}/messages/{message}/stream/",
    ),
    (
        "GET",
        "/api/workspaces/{ws}/chats/{id}/messages/agent-task-status/{task}/",
    ),
    (
        "POST",
        "/api/workspaces/{ws}/chats/{id}/messages/regenerate/",
    ),
    ("POST", "/api/workspaces/{ws}/chats/{id}/stop/"),
    ("GET", "/api/workspaces/{ws}/credit-usage/"),
    ("POST", "/api/workspaces/{ws}/chats/{id}/toggle-public/"),
    ("GET", "/api/chats/shared/{link}/"),
    ("POST", "/api/workspaces/{ws}/chats/{id}/share/"),
    ("GET", "/api/workspaces/{ws}/chats/{id}/shares/"),
    ("POST", "/api/workspaces/{ws}/chats/{id}/revoke-share/"),
    ("GET", "/api/workspaces/{ws}/translate/"),
    ("POST", "/api/transcribe-audio/"),
    ("POST", "/agent"),
    ("GET", "/agent"),
    ("GET", "/agent/{id}"),
    ("PUT", "/agent/{id}"),
    ("DELETE", "/agent/{id}"),
    ("GET", "/agent/{id}/versions"),
    ("PUT", "/agent/{id}/rollback"),
    ("POST", "/chat"),
    ("GET", "/chat"),
    ("GET", "/chat/{chatId}"),
    ("DELETE", "/chat/{chatId}"),
    ("POST", "/chat/{chatId}/message"),
    ("GET", "/chat/{chatId}/message"),
    ("GET", "/chat/{chatId}/message/{messageId}/stream"),
];

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("paths");
    paths
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(|m| (m.to_uppercase(), path.clone()))
        })
        .collect()
}

/// The `/`-toggled form of a conversations API path.
fn twin(path: &str) -> String {
    match path.strip_suffix('/') {
        Some(trimmed) => trimmed.to_owned(),
        None => format!("{path}/"),
    }
}

/// True when the router's own fallbacks answered, not a route: unknown paths get 404 "no such
/// route" (or, under `/v1`, OpenAI's "route not found"), known paths with another method 405.
/// A handler's own 404 (an unknown chat id) has another message.
fn is_fallback(status: u16, body: &str) -> bool {
    let json: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    status == 405
        || (status == 404
            && (json["message"] == "no such route"
                || json["error"]["message"] == "route not found"))
}

async fn fetch(app: &TestApp, method: &str, path: &str) -> (u16, String) {
    let path = path
        .replace("{id}", &uuid::Uuid::new_v4().to_string())
        .replace("{file}", "app.js")
        .replace("{ws}", "default")
        .replace("{message}", &uuid::Uuid::new_v4().to_string())
        .replace("{task}", &uuid::Uuid::new_v4().to_string())
        .replace("{link}", &uuid::Uuid::new_v4().to_string())
        .replace("{chatId}", &uuid::Uuid::new_v4().to_string())
        .replace("{messageId}", &uuid::Uuid::new_v4().to_string());
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = app
        .client
        .request(method.clone(), app.url(&path))
        .bearer_auth(&app.key);
    if method == reqwest::Method::POST || method == reqwest::Method::PUT {
        request = request.json(&serde_json::json!({}));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

async fn description(app: &TestApp) -> Value {
    let response = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    response.json().await.unwrap()
}

#[tokio::test]
async fn the_description_is_openapi_3_1_named_after_sluice() {
    let app = spawn_app().await;

    let doc = description(&app).await;

    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "sluice");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    for scheme in ["bearer", "api_key", "publishable_key"] {
        assert!(schemes.contains_key(scheme), "no {scheme} scheme");
    }
}

/// Generated clients name their methods after `operationId`, and fuzzers and links find an
/// operation by it: two routes must never share one (the dialects' handlers often do share a
/// function name).
#[tokio::test]
async fn every_operation_has_its_own_id() {
    let app = spawn_app().await;

    let doc = description(&app).await;

    let mut seen = std::collections::BTreeMap::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let Some(id) = operation["operationId"].as_str() else {
                continue;
            };
            if let Some(first) = seen.insert(id.to_owned(), format!("{method} {path}")) {
                panic!("`{id}` names both {first} and {method} {path}");
            }
        }
    }
    assert!(seen.len() > 50, "{} operations", seen.len());
}

// The comparison runs both ways. The description must list exactly `ROUTES` (so a documented
// route that does not exist, or a served route left undocumented once added to `ROUTES`,
// fails), and every entry of `ROUTES` must really be served: requested, it must reach a handler
// rather than the router's fallbacks. Together: what is documented is what is served.
#[tokio::test]
async fn the_description_lists_exactly_the_routes_the_router_serves() {
    let app = spawn_app().await;
    let doc = description(&app).await;

    let expected: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(operations(&doc), expected);

    for (method, path) in ROUTES {
        let (status, body) = fetch(&app, method, path).await;
        assert!(
            !is_fallback(status, &body),
            "{method} {path} is not served: {status} {body}"
        );
        let dialect_route = path.starts_with("/chats/")
            || path.starts_with("/conversations/")
            || path.starts_with("/api/");
        if dialect_route {
            let twin = twin(path);
            let (status, body) = fetch(&app, method, &twin).await;
            assert!(
                !is_fallback(status, &body),
                "{method} {twin} is not served: {status} {body}"
            );
        }
    }
}

#[tokio::test]
async fn the_fallback_check_recognises_unserved_routes() {
    let app = spawn_app().await;

    for (method, path) in [
        ("GET", "/no/such/route"),
        ("DELETE", "/healthz"),
        ("GET", "/v1/no/such/route"),
        ("DELETE", "/v1/models"),
        ("GET", "/chats/create"),
    ] {
        let (status, body) = fetch(&app, method, path).await;
        assert!(
            is_fallback(status, &body),
            "{method} {path}: {status} {body}"
        );
    }
}

#[tokio::test]
async fn the_operations_open_to_publishable_keys_are_the_publishable_endpoints() {
    let app = spawn_app().await;
    let doc = description(&app).await;

    let documented: BTreeSet<String> = operations(&doc)
        .into_iter()
        .filter(|(method, path)| {
            doc["paths"][path][method.to_lowercase()]["security"]
                .as_array()
                .is_some_and(|s| s.iter().any(|r| r.get("publishable_key").is_some()))
        })
        .map(|(method, path)| format!("{method} {path}"))
        .collect();
    let allowed: BTreeSet<String> = sluice::http::conversations::PUBLISHABLE_ENDPOINTS
        .iter()
        .chain(sluice::http::workspace::PUBLISHABLE_ENDPOINTS)
        .chain(sluice::http::agent::PUBLISHABLE_ENDPOINTS)
        .map(|e| e.split('?').next().unwrap().to_owned())
        .collect();
    assert_eq!(documented, allowed);
}

#[tokio::test]
async fn the_docs_page_is_html_that_loads_the_description_relatively() {
    let app = spawn_app().await;

    let response = app.client.get(app.url("/docs")).send().await.unwrap();

    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = response.text().await.unwrap();
    assert!(page.contains("fetch(\"openapi.json\")"));
    assert!(!page.contains("innerHTML"));
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "the page loads nothing"
    );
}

#[tokio::test]
async fn nested_under_a_prefix_the_page_finds_the_description_beside_it() {
    let mock = MockUpstream::start().await.unwrap();
    let (database_url, _dir) = fresh_database().await;
    let sluice = sluice::startup::Sluice::build(test_settings(&database_url, &mock))
        .await
        .unwrap();
    let app = axum::Router::new().nest("/ai", sluice.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, app).into_future());
    let client = reqwest::Client::new();

    let page = client.get(format!("{base}/ai/docs")).send().await.unwrap();
    // `openapi.json` relative to `/ai/docs` is `/ai/openapi.json`.
    let doc = client
        .get(format!("{base}/ai/openapi.json"))
        .send()
        .await
        .unwrap();

    assert_eq!(page.status(), 200);
    assert_eq!(doc.status(), 200);
    let doc: Value = doc.json().await.unwrap();
    assert_eq!(doc["info"]["title"], "sluice");
}

#[tokio::test]
async fn what_the_server_refuses_before_a_handler_is_in_the_description() {
    let app = spawn_app().await;
    let doc = description(&app).await;
    let mut json_bodies = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if operation["requestBody"]["content"]
                .get("application/json")
                .is_some()
            {
                json_bodies += 1;
                assert!(
                    operation["responses"].get("415").is_some(),
                    "{method} {path} reads JSON but does not document 415"
                );
            }
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                if parameter["name"] == "Last-Event-ID" {
                    assert!(
                        parameter["schema"]["pattern"].is_string(),
                        "{method} {path}: Last-Event-ID has no pattern"
                    );
                }
            }
        }
    }
    assert!(json_bodies > 10, "{json_bodies}");
    // Signing out without a session is not refused: the cookie is cleared all the same.
    let security = &doc["paths"]["/session"]["delete"]["security"];
    assert!(
        security
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s.as_object().is_some_and(|o| o.is_empty())),
        "{security}"
    );
    let out = app.client.delete(app.url("/session")).send().await.unwrap();
    assert_eq!(out.status(), 204);

    // A body that is not JSON is the documented 415; an id in another spelling than the one the
    // server writes is the documented 400.
    let refused = app
        .client
        .post(app.url("/chats/create"))
        .bearer_auth(&app.key)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 415);
    let chat = app.chat_with_question("q").await;
    for id in [
        format!("{}:0", uuid::Uuid::nil().simple()),
        format!("{}:12345678901234567890", uuid::Uuid::nil()),
    ] {
        let sse = app
            .stream(&format!("/conversations/inference/{chat}"), Some(&id))
            .await;
        assert_eq!(sse.status, 400, "{id}");
    }
}
