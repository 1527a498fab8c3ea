//! `translate/`: one answer of the default model, checked input, charged like any answer.

use serde_json::Value;

use crate::helpers::{TestApp, spawn_app, spawn_app_with};
use crate::mock::Script;

async fn translate(app: &TestApp, query: &str) -> (u16, Value) {
    let response = app
        .get(&format!("/api/workspaces/default/translate/?{query}"))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn text_is_translated_by_the_default_model_and_charged() {
    let app = spawn_app().await;
    app.mock.push(Script::text(&["Hola", " mundo"]));
    let (status, body) = translate(&app, "text=Hello%20world&target=es").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        serde_json::json!({"text": "Hello world", "target": "es", "translation": "Hola mundo"})
    );
    let sent = app.mock.requests().pop().unwrap();
    assert_eq!(sent["messages"][0]["role"], "system");
    assert!(
        sent["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("`es`")
    );
    assert_eq!(sent["messages"][1]["content"], "Hello world");
    let records = app
        .services
        .store()
        .usage_records(app.services.default_workspace)
        .await
        .unwrap();
    assert_eq!(records.len(), 1, "charged like any answer");
    assert!(records[0].completion_tokens > 0);
}

#[tokio::test]
async fn bad_input_is_400_naming_the_field_and_a_failed_provider_is_502() {
    let app = spawn_app_with(|s| s.limits.max_message_chars = 100).await;
    let long = "a".repeat(101);
    for (query, field) in [
        ("text=&target=es".to_owned(), "text"),
        ("text=%20%20&target=es".to_owned(), "text"),
        ("target=es".to_owned(), "text"),
        ("text=hi".to_owned(), "target"),
        ("text=hi&target=spanish".to_owned(), "target"),
        ("text=hi&target=es_ES".to_owned(), "target"),
        (format!("text={long}&target=es"), "text"),
    ] {
        let (status, body) = translate(&app, &query).await;
        assert_eq!(status, 400, "{query:.40} {body}");
        assert_eq!(body["field"], field, "{query:.40}");
    }
    assert_eq!(app.mock.request_count(), 0, "nothing reached the provider");

    let mut refused = Script::text(&["x"]);
    refused.status = Some(400);
    app.mock.push(refused);
    let (status, body) = translate(&app, "text=hi&target=pt-BR").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"], "upstream_error");
}
