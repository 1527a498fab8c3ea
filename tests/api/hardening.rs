//! The edge rules of SPEC §8: `nosniff` on every response, `/docs` never framed, which client
//! `X-Request-Id` is echoed, names people read, and the per-model `max_tokens` cap.

use serde_json::{Value, json};

use crate::helpers::*;

fn nosniff(headers: &reqwest::header::HeaderMap) -> Option<&str> {
    headers
        .get("x-content-type-options")
        .and_then(|v| v.to_str().ok())
}

// ----------------------------------------------------------------------------------------------
// Response headers.

#[tokio::test]
async fn json_html_error_404_and_405_responses_all_carry_nosniff() {
    let app = spawn_app().await;

    let responses = [
        ("JSON", app.get("/chats/").send().await.unwrap()),
        ("page", app.client.get(app.url("/")).send().await.unwrap()),
        (
            "docs",
            app.client.get(app.url("/docs")).send().await.unwrap(),
        ),
        (
            "401",
            app.client.get(app.url("/chats/")).send().await.unwrap(),
        ),
        ("404", app.get("/no/such/route").send().await.unwrap()),
        (
            "405",
            app.client.delete(app.url("/healthz")).send().await.unwrap(),
        ),
    ];

    let expected = [200, 200, 200, 401, 404, 405];
    for ((what, response), status) in responses.iter().zip(expected) {
        assert_eq!(response.status(), status, "{what}");
        assert_eq!(nosniff(response.headers()), Some("nosniff"), "{what}");
    }
}

#[tokio::test]
async fn an_sse_response_carries_nosniff() {
    let app = spawn_app().await;
    let chat = app.chat_with_question("q").await;

    let mut stream = app
        .stream(&format!("/conversations/inference/{chat}"), None)
        .await;

    assert_eq!(stream.status, 200);
    assert_eq!(stream.headers["content-type"], "text/event-stream");
    assert_eq!(nosniff(&stream.headers), Some("nosniff"));
    stream.collect().await;
}

#[tokio::test]
async fn the_docs_page_refuses_framing_like_the_chat_page_and_can_still_fetch_its_description() {
    let app = spawn_app().await;

    let docs = app.client.get(app.url("/docs")).send().await.unwrap();
    let page = app.client.get(app.url("/")).send().await.unwrap();

    for response in [&docs, &page] {
        assert_eq!(response.status(), 200);
        let csp = response.headers()["content-security-policy"]
            .to_str()
            .unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(response.headers()["x-frame-options"], "DENY");
    }
    // What the docs page loads is still allowed: its inline script fetches `openapi.json`.
    let csp = docs.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    assert!(csp.contains("script-src 'unsafe-inline'"), "{csp}");
    let description = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(description.status(), 200);
}

// ----------------------------------------------------------------------------------------------
// X-Request-Id.

async fn echoed_request_id(app: &TestApp, sent: &str) -> String {
    let response = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", sent)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_request_id_of_1_to_128_visible_ascii_characters_is_echoed() {
    let app = spawn_app().await;

    for sent in ["a", "req-42_trace.id:7/abc~!", &"x".repeat(128)] {
        assert_eq!(echoed_request_id(&app, sent).await, sent);
    }
}

#[tokio::test]
async fn a_request_id_too_long_with_a_space_or_with_markup_is_replaced_by_a_generated_one() {
    let app = spawn_app().await;

    for sent in [
        "x".repeat(129),
        "two words".to_owned(),
        "<script src=//evil.example></script>".to_owned(),
        "<img src=x onerror=alert(1)>".to_owned(),
    ] {
        let got = echoed_request_id(&app, &sent).await;

        assert_ne!(got, sent);
        assert!(uuid::Uuid::parse_str(&got).is_ok(), "not generated: {got}");
    }
}

// ----------------------------------------------------------------------------------------------
// Names people read.

fn put_json(app: &TestApp, path: &str, body: &Value) -> reqwest::RequestBuilder {
    app.client
        .put(app.url(path))
        .bearer_auth(&app.key)
        .json(body)
}

/// Asserts the conversations API's 422 naming `name`.
async fn refused_naming_name(response: reqwest::Response, name: &str) {
    assert_eq!(response.status(), 422, "{name:?}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "validation_error", "{name:?}: {body}");
    assert_eq!(body["field"], "name", "{name:?}: {body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("name"), "{name:?}: {message}");
}

/// Asserts that `name` is refused both for a new chat and as a new name for `chat`.
async fn refused_on_create_and_rename(app: &TestApp, chat: &str, name: &str) {
    let created = app
        .post_json("/chats/create", &json!({"name": name}))
        .send()
        .await
        .unwrap();
    refused_naming_name(created, name).await;
    let renamed = put_json(
        app,
        &format!("/chats/update/{chat}"),
        &json!({"name": name}),
    )
    .send()
    .await
    .unwrap();
    refused_naming_name(renamed, name).await;
}

#[tokio::test]
async fn a_name_with_a_bidirectional_override_or_isolate_is_422_naming_name() {
    let app = spawn_app().await;
    let chat = app.create_chat("valid").await;

    for name in ["invoice\u{202E}fdp.exe", "a\u{2066}b\u{2069}", "\u{202A}x"] {
        refused_on_create_and_rename(&app, &chat, name).await;
    }
    let fetched: Value = app
        .get(&format!("/chats/{chat}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(fetched["name"], "valid");
}

#[tokio::test]
async fn a_name_with_no_visible_character_is_422_naming_name() {
    let app = spawn_app().await;
    let chat = app.create_chat("valid").await;

    for name in [
        "\u{200B}",
        "\u{200B}\u{200C}\u{200D}",
        " \u{2060} \u{FEFF} ",
        "\u{00AD}\u{180E}\u{FE0F}",
    ] {
        refused_on_create_and_rename(&app, &chat, name).await;
    }
}

#[tokio::test]
async fn an_emoji_sequence_joined_by_zwj_is_a_valid_name_on_create_and_update() {
    let app = spawn_app().await;
    let name = "👩\u{200D}💻 team";

    let created = app
        .post_json("/chats/create", &json!({"name": name}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["name"], name);
    let id = created["id"].as_str().unwrap();
    let renamed = put_json(
        &app,
        &format!("/chats/update/{id}"),
        &json!({"name": "👨\u{200D}👩\u{200D}👧 family"}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(renamed.status(), 200);
    let renamed: Value = renamed.json().await.unwrap();
    assert_eq!(renamed["name"], "👨\u{200D}👩\u{200D}👧 family");
}

// ----------------------------------------------------------------------------------------------
// The max_tokens cap.

fn completion(model: &str, field: &str, value: Value) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
        field: value,
    })
}

/// Asserts OpenAI's 400 envelope naming `param`, and that the request never reached upstream.
async fn refused_naming(app: &TestApp, body: &Value, param: &str) -> String {
    let response = app
        .post_json("/v1/chat/completions", body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400, "{body}");
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
    assert_eq!(error["error"]["param"], param, "{error}");
    assert_eq!(app.mock.request_count(), 0, "relayed upstream: {body}");
    error["error"]["message"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn max_tokens_above_the_default_cap_is_400_naming_it_and_never_reaches_upstream() {
    let app = spawn_app().await;

    for (field, value) in [
        ("max_tokens", json!(18_446_744_073_709_551_615_u64)),
        ("max_tokens", json!(131_073)),
        (
            "max_completion_tokens",
            json!(18_446_744_073_709_551_615_u64),
        ),
    ] {
        let message =
            refused_naming(&app, &completion("mock/mock-model", field, value), field).await;
        assert!(message.contains("131072"), "{message}");
    }
}

#[tokio::test]
async fn max_tokens_at_the_default_cap_is_relayed_upstream() {
    let app = spawn_app().await;

    let response = app
        .post_json(
            "/v1/chat/completions",
            &completion("mock/mock-model", "max_tokens", json!(131_072)),
        )
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(app.mock.requests()[0]["max_tokens"], 131_072);
}

#[tokio::test]
async fn a_lower_cap_configured_for_the_model_is_honoured_under_every_name_of_the_model() {
    let app = spawn_app_with(|s| {
        s.providers[0]
            .max_tokens
            .insert("mock-model".to_owned(), 8192);
    })
    .await;

    for model in ["mock/mock-model", "mock-model"] {
        for field in ["max_tokens", "max_completion_tokens"] {
            let message = refused_naming(&app, &completion(model, field, json!(8193)), field).await;
            assert!(message.contains("8192"), "{message}");
        }
    }
    let at_cap = app
        .post_json(
            "/v1/chat/completions",
            &completion("mock-model", "max_completion_tokens", json!(8192)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(at_cap.status(), 200);
    assert_eq!(app.mock.requests()[0]["max_completion_tokens"], 8192);
}
