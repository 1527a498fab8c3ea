//! What fuzzing the server from its own description found (`tests/fuzz/schemathesis.sh`), kept
//! as plain tests: each ran into a disagreement between the description and the server, or a
//! 500 on PostgreSQL.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn a_nul_where_the_database_keeps_text_is_refused_or_finds_nothing_never_a_500() {
    let app = spawn_app().await;
    let (status, agent) = app
        .call(Method::POST, "/agent", Some(json!({"name": "a"})))
        .await;
    assert_eq!(status, 201, "{agent}");

    // Kept as given, so refused as a whole.
    let (status, body) = app
        .call(
            Method::POST,
            "/chat",
            Some(json!({"agentId": agent["id"], "metadata": {"a": {"b": ["x\u{0}y"]}}})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "metadata");
    let (status, body) = app
        .call(
            Method::POST,
            "/chat",
            Some(json!({"agentId": agent["id"], "metadata": {"k\u{0}": 1}})),
        )
        .await;
    assert_eq!(status, 400, "{body}");

    // A filter or a workspace reference with a NUL names nothing.
    let (status, body) = app.call(Method::GET, "/agent?agentType=a%00b", None).await;
    assert_eq!((status, &body["agents"]), (200, &json!([])), "{body}");
    let (status, body) = app.call(Method::GET, "/chat?agentType=%00", None).await;
    assert_eq!((status, &body["chats"]), (200, &json!([])), "{body}");
    let (status, body) = app
        .call(Method::GET, "/api/workspaces/de%00fault/", None)
        .await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn integers_may_come_as_whole_numbers_with_a_point() {
    let app = spawn_app().await;

    let (status, agent) = app
        .call(
            Method::POST,
            "/agent",
            Some(json!({"name": "a", "maxTokens": 64.0})),
        )
        .await;
    assert_eq!(status, 201, "{agent}");
    assert_eq!(agent["maxTokens"], 64);
    let (status, body) = app
        .call(
            Method::POST,
            "/api/workspaces/default/keys/",
            Some(json!({"kind": "secret", "rate_limit": 50.0})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["rate_limit"], 50);

    // A fraction is still no integer, and names its field.
    let (status, body) = app
        .call(
            Method::POST,
            "/agent",
            Some(json!({"name": "a", "maxTokens": 64.5})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "maxTokens", "{body}");
}

#[tokio::test]
async fn a_body_is_an_object_never_an_array_of_the_fields() {
    let app = spawn_app().await;

    for (method, path) in [
        (Method::PATCH, "/api/workspaces/default/"),
        (Method::POST, "/chats/create"),
        (Method::POST, "/agent"),
    ] {
        let (status, body) = app.call(method, path, Some(json!(["x"]))).await;
        assert!(status == 400 || status == 422, "{path}: {status} {body}");
        assert!(
            body.to_string().contains("must be a JSON object"),
            "{path}: {body}"
        );
    }
}

#[tokio::test]
async fn a_change_that_the_stored_model_no_longer_fits_is_a_conflict_naming_the_field() {
    let app = spawn_app().await;
    // The mock's provider is `mock`; its models are listed, so a model given alone as
    // `provider/model` fits no provider given later.
    let (status, agent) = app
        .call(
            Method::POST,
            "/agent",
            Some(json!({"name": "a", "model": "mock/anything"})),
        )
        .await;
    assert_eq!(status, 201, "{agent}");
    let path = format!("/agent/{}", agent["id"].as_str().unwrap());

    let (status, body) = app
        .call(Method::PUT, &path, Some(json!({"provider": "MOCK"})))
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body.to_string().contains("`model`"),
        "the message names the agent API's field: {body}"
    );

    // Sent together, the same pair is simply invalid.
    let (status, body) = app
        .call(
            Method::PUT,
            &path,
            Some(json!({"provider": "MOCK", "model": "mock/anything"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "model");
}

#[tokio::test]
async fn the_description_carries_the_servers_own_limits() {
    let app = spawn_app().await;
    let doc: Value = app
        .get("/openapi.json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let schemas = &doc["components"]["schemas"];

    let content = &schemas["AgentPostMessage"]["properties"]["content"];
    assert_eq!(
        content["maxLength"], app.services.limits.max_message_chars,
        "{content}"
    );
    assert!(content["pattern"].is_string(), "{content}");
    let max_tokens = &schemas["ChatCompletionRequest"]["properties"]["max_tokens"];
    assert_eq!(max_tokens["maximum"], 131_072, "{max_tokens}");
    // Providers by name, in any case, or blank.
    let pattern = schemas["SessionFields"]["properties"]["ai_provider"]["pattern"]
        .as_str()
        .unwrap();
    let re = regex::Regex::new(pattern).unwrap();
    assert!(re.is_match("mock") && re.is_match("MoCk") && re.is_match(" "));
    assert!(!re.is_match("mocks"));
}
