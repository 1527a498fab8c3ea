//! The conversations API's objects and routes: chats and conversations, their validation,
//! paging, trailing slashes, cascades and error envelopes (SPEC §4).

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::*;

// ----------------------------------------------------------------------------------------------
// Small helpers local to this file.

fn put_json(app: &TestApp, path: &str, body: &Value) -> reqwest::RequestBuilder {
    app.client
        .put(app.url(path))
        .bearer_auth(&app.key)
        .json(body)
}

fn delete(app: &TestApp, path: &str) -> reqwest::RequestBuilder {
    app.client.delete(app.url(path)).bearer_auth(&app.key)
}

/// A POST with a raw body and an optional Content-Type.
fn post_raw(
    app: &TestApp,
    path: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> reqwest::RequestBuilder {
    let mut req = app
        .client
        .post(app.url(path))
        .bearer_auth(&app.key)
        .body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    req
}

/// Asserts the status and returns the JSON body.
async fn json_with(response: reqwest::Response, status: u16) -> Value {
    let got = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(got, StatusCode::from_u16(status).unwrap(), "body: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Asserts an error envelope `{"error", "message", "field"?}` with this status and field.
async fn error_with(response: reqwest::Response, status: u16, field: Option<&str>) -> Value {
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = json_with(response, status).await;
    assert_eq!(content_type.as_deref(), Some("application/json"), "{body}");
    assert!(body["error"].is_string(), "{body}");
    assert!(body["message"].is_string(), "{body}");
    match field {
        Some(f) => assert_eq!(body["field"], f, "{body}"),
        None => assert!(body.get("field").is_none(), "{body}"),
    }
    body
}

fn sorted_keys(v: &Value) -> Vec<String> {
    let mut keys: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}

/// Asserts an RFC 3339 UTC timestamp ending in `Z` and returns it parsed.
fn timestamp(v: &Value) -> DateTime<Utc> {
    let s = v.as_str().unwrap_or_else(|| panic!("not a string: {v}"));
    assert!(s.ends_with('Z'), "not UTC with Z: {s}");
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("not RFC 3339 ({e}): {s}"))
        .with_timezone(&Utc)
}

async fn create_chat_body(app: &TestApp, name: &str) -> Value {
    json_with(
        app.post_json("/chats/create", &json!({"name": name}))
            .send()
            .await
            .unwrap(),
        201,
    )
    .await
}

async fn list_chat_ids(app: &TestApp, query: &str) -> Vec<String> {
    let body = json_with(
        app.get(&format!("/chats/{query}")).send().await.unwrap(),
        200,
    )
    .await;
    body.as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Creates chats one after another, a few milliseconds apart so that each has its own
/// (millisecond) creation time; returns their ids in creation order.
async fn create_chats_apart(app: &TestApp, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(app.create_chat(&format!("chat {i}")).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    ids
}

// ----------------------------------------------------------------------------------------------
// Chats.

#[tokio::test]
async fn creating_a_chat_returns_201_with_the_created_row_and_get_returns_the_same_object() {
    let app = spawn_app().await;

    let created = create_chat_body(&app, "My first chat").await;

    assert_eq!(
        sorted_keys(&created),
        ["created_at", "id", "name", "updated_at"]
    );
    assert_eq!(created["name"], "My first chat");
    Uuid::parse_str(created["id"].as_str().unwrap()).unwrap();
    let created_at = timestamp(&created["created_at"]);
    let updated_at = timestamp(&created["updated_at"]);
    assert_eq!(created_at, updated_at);
    assert!(
        (Utc::now() - created_at).num_seconds().abs() < 60,
        "{created_at}"
    );
    let id = created["id"].as_str().unwrap();
    let fetched = json_with(app.get(&format!("/chats/{id}")).send().await.unwrap(), 200).await;
    assert_eq!(fetched, created);
}

#[tokio::test]
async fn the_chat_list_is_newest_first_and_pages_with_limit_and_offset() {
    let app = spawn_app().await;
    let mut ids = create_chats_apart(&app, 5).await;
    ids.reverse();

    let all = list_chat_ids(&app, "").await;
    let first_page = list_chat_ids(&app, "?limit=2").await;
    let second_page = list_chat_ids(&app, "?limit=2&offset=2").await;
    let last_page = list_chat_ids(&app, "?limit=2&offset=4").await;
    let beyond = list_chat_ids(&app, "?offset=5").await;

    assert_eq!(all, ids);
    assert_eq!(first_page, ids[0..2]);
    assert_eq!(second_page, ids[2..4]);
    assert_eq!(last_page, ids[4..5]);
    assert!(beyond.is_empty());
    let listed = json_with(app.get("/chats/?limit=1").send().await.unwrap(), 200).await;
    assert_eq!(
        sorted_keys(&listed[0]),
        ["created_at", "id", "name", "updated_at"]
    );
}

#[tokio::test]
async fn the_chat_list_holds_50_chats_by_default_and_200_at_most() {
    let app = spawn_app().await;
    for i in 0..52 {
        app.create_chat(&format!("chat {i}")).await;
    }

    let default_page = list_chat_ids(&app, "").await;
    let max_page = list_chat_ids(&app, "?limit=200").await;

    assert_eq!(default_page.len(), 50);
    assert_eq!(max_page.len(), 52);
}

#[tokio::test]
async fn a_limit_of_0_or_201_or_a_non_number_is_400_naming_the_parameter() {
    let app = spawn_app().await;

    for (query, field) in [
        ("?limit=0", "limit"),
        ("?limit=201", "limit"),
        ("?limit=ten", "limit"),
        ("?limit=-1", "limit"),
        ("?limit=", "limit"),
        ("?offset=x", "offset"),
        ("?offset=-3", "offset"),
    ] {
        let r = app.get(&format!("/chats/{query}")).send().await.unwrap();
        let body = error_with(r, 400, Some(field)).await;
        assert_eq!(body["error"], "bad_request", "{query}: {body}");
    }
}

#[tokio::test]
async fn a_huge_offset_is_an_empty_page_not_a_server_error() {
    let app = spawn_app().await;
    app.create_chat("only").await;

    for offset in [
        "9223372036854775807",
        "9223372036854775808",
        "18446744073709551615",
    ] {
        let r = app
            .get(&format!("/chats/?offset={offset}"))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        match status.as_u16() {
            200 => assert_eq!(body, json!([]), "offset {offset}"),
            400 => assert_eq!(body["field"], "offset", "offset {offset}: {body}"),
            other => panic!("offset {offset}: {other} {body}"),
        }
    }
    // And the server still answers normally afterwards.
    assert_eq!(list_chat_ids(&app, "").await.len(), 1);
}

#[tokio::test]
async fn renaming_a_chat_returns_it_renamed_with_a_new_updated_at() {
    let app = spawn_app().await;
    let created = create_chat_body(&app, "before").await;
    let id = created["id"].as_str().unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;

    let renamed = json_with(
        put_json(
            &app,
            &format!("/chats/update/{id}"),
            &json!({"name": "after"}),
        )
        .send()
        .await
        .unwrap(),
        200,
    )
    .await;

    assert_eq!(
        sorted_keys(&renamed),
        ["created_at", "id", "name", "updated_at"]
    );
    assert_eq!(renamed["id"], created["id"]);
    assert_eq!(renamed["name"], "after");
    assert_eq!(renamed["created_at"], created["created_at"]);
    assert!(
        timestamp(&renamed["updated_at"]) > timestamp(&created["updated_at"]),
        "{renamed}"
    );
    let fetched = json_with(app.get(&format!("/chats/{id}")).send().await.unwrap(), 200).await;
    assert_eq!(fetched, renamed);
}

#[tokio::test]
async fn an_updated_at_given_on_rename_is_honoured_exactly() {
    let app = spawn_app().await;
    let id = app.create_chat("dated").await;

    let given = json_with(
        put_json(
            &app,
            &format!("/chats/update/{id}"),
            &json!({"name": "dated", "updated_at": "2031-02-03T04:05:06.789Z"}),
        )
        .send()
        .await
        .unwrap(),
        200,
    )
    .await;
    let fetched = json_with(app.get(&format!("/chats/{id}")).send().await.unwrap(), 200).await;
    let with_offset = json_with(
        put_json(
            &app,
            &format!("/chats/update/{id}"),
            &json!({"name": "dated", "updated_at": "2031-02-03T06:05:06.789+02:00"}),
        )
        .send()
        .await
        .unwrap(),
        200,
    )
    .await;

    assert_eq!(given["updated_at"], "2031-02-03T04:05:06.789Z");
    assert_eq!(fetched["updated_at"], "2031-02-03T04:05:06.789Z");
    // The same instant written with an offset comes back in UTC.
    assert_eq!(with_offset["updated_at"], "2031-02-03T04:05:06.789Z");
}

#[tokio::test]
async fn an_updated_at_that_is_not_a_timestamp_is_422_naming_it() {
    let app = spawn_app().await;
    let id = app.create_chat("dated").await;

    let r = put_json(
        &app,
        &format!("/chats/update/{id}"),
        &json!({"name": "x", "updated_at": "yesterday"}),
    )
    .send()
    .await
    .unwrap();

    error_with(r, 422, Some("updated_at")).await;
}

#[tokio::test]
async fn deleting_a_chat_returns_it_and_removes_it_with_its_conversations() {
    let app = spawn_app().await;
    let chat = app.chat_with_question("question").await;
    app.stream(&format!("/conversations/inference/{chat}"), None)
        .await
        .collect()
        .await;
    assert_eq!(app.conversations(&chat).await.len(), 2);
    let before = json_with(
        app.get(&format!("/chats/{chat}")).send().await.unwrap(),
        200,
    )
    .await;
    let chat_id = Uuid::parse_str(&chat).unwrap();

    let deleted = json_with(
        delete(&app, &format!("/chats/delete/{chat}"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;

    assert_eq!(deleted, before);
    error_with(
        app.get(&format!("/chats/{chat}")).send().await.unwrap(),
        404,
        None,
    )
    .await;
    error_with(
        app.get(&format!("/conversations/?chat_id={chat}"))
            .send()
            .await
            .unwrap(),
        404,
        None,
    )
    .await;
    assert!(!list_chat_ids(&app, "").await.contains(&chat));
    // The cascade reached the rows themselves, not just the API's view of them.
    let messages = app
        .services
        .store()
        .list_messages(chat_id, true)
        .await
        .unwrap();
    assert!(messages.is_empty(), "{messages:?}");
    let generations = entity::generation::Entity::find()
        .filter(entity::generation::Column::ChatId.eq(chat_id))
        .count(app.services.store().connection())
        .await
        .unwrap();
    assert_eq!(generations, 0);
    // Deleting it again finds nothing.
    error_with(
        delete(&app, &format!("/chats/delete/{chat}"))
            .send()
            .await
            .unwrap(),
        404,
        None,
    )
    .await;
}

#[tokio::test]
async fn deleting_a_chat_with_a_running_answer_stops_it_and_leaves_nothing_behind() {
    let app = spawn_app().await;
    let mut script = Script::text(&["a ", "b ", "c ", "d ", "e ", "f ", "g ", "h "]);
    script.chunk_delay_ms = 200;
    app.mock.push(script);
    let chat = app.chat_with_question("a long answer, please").await;
    let chat_id = Uuid::parse_str(&chat).unwrap();
    let mut sse = app
        .stream(&format!("/conversations/inference/{chat}"), None)
        .await;
    while sse.next().await.expect("a first delta").event != "message" {}

    let r = delete(&app, &format!("/chats/delete/{chat}"))
        .send()
        .await
        .unwrap();

    assert_eq!(r.status(), 200);
    let rest = sse.collect().await;
    assert!(
        named(&rest, "done").is_some(),
        "the open stream was not ended with done"
    );
    assert!(
        app.mock.wait_for_aborted(1, Duration::from_secs(5)).await,
        "upstream request not cancelled"
    );
    // Wait past a few checkpoint intervals: nothing may write the chat back.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        app.services
            .store()
            .list_messages(chat_id, true)
            .await
            .unwrap()
            .is_empty()
    );
    error_with(
        app.get(&format!("/chats/{chat}")).send().await.unwrap(),
        404,
        None,
    )
    .await;
}

#[tokio::test]
async fn every_route_answers_with_and_without_a_trailing_slash() {
    let app = spawn_app().await;

    for path in ["/chats", "/chats/"] {
        assert_eq!(
            app.get(path).send().await.unwrap().status(),
            200,
            "GET {path}"
        );
    }
    let mut chats = Vec::new();
    for path in ["/chats/create", "/chats/create/"] {
        let body = json_with(
            app.post_json(path, &json!({"name": "slash"}))
                .send()
                .await
                .unwrap(),
            201,
        )
        .await;
        chats.push(body["id"].as_str().unwrap().to_owned());
    }
    let chat = &chats[0];
    for path in [format!("/chats/{chat}"), format!("/chats/{chat}/")] {
        assert_eq!(
            app.get(&path).send().await.unwrap().status(),
            200,
            "GET {path}"
        );
    }
    for path in [
        format!("/chats/update/{chat}"),
        format!("/chats/update/{chat}/"),
    ] {
        let r = put_json(&app, &path, &json!({"name": "renamed"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "PUT {path}");
    }
    for path in ["/conversations/create", "/conversations/create/"] {
        let r = app
            .post_json(
                path,
                &json!({"chat_id": chat, "role": "Human", "message": "hi"}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "POST {path}");
    }
    for path in [
        format!("/conversations?chat_id={chat}"),
        format!("/conversations/?chat_id={chat}"),
    ] {
        assert_eq!(
            app.get(&path).send().await.unwrap().status(),
            200,
            "GET {path}"
        );
    }
    for path in [
        format!("/conversations/inference/{chat}"),
        format!("/conversations/inference/{chat}/"),
    ] {
        let mut sse = app.stream(&path, None).await;
        assert_eq!(sse.status, 200, "GET {path}");
        let events = sse.collect().await;
        assert_eq!(
            named(&events, "done").unwrap()["status"],
            "complete",
            "GET {path}"
        );
    }
    for path in [
        format!("/conversations/stop/{chat}"),
        format!("/conversations/stop/{chat}/"),
    ] {
        let r = app.post_json(&path, &json!({})).send().await.unwrap();
        assert_eq!(r.status(), 200, "POST {path}");
    }
    for (chat, path) in [
        (&chats[0], "/chats/delete/{}"),
        (&chats[1], "/chats/delete/{}/"),
    ] {
        let path = path.replace("{}", chat);
        assert_eq!(
            delete(&app, &path).send().await.unwrap().status(),
            200,
            "DELETE {path}"
        );
    }
}

#[tokio::test]
async fn an_unknown_chat_id_is_404_on_every_route() {
    let app = spawn_app().await;
    let id = Uuid::new_v4();

    let responses = [
        (
            "GET /chats/{id}",
            app.get(&format!("/chats/{id}")).send().await.unwrap(),
        ),
        (
            "PUT /chats/update/{id}",
            put_json(&app, &format!("/chats/update/{id}"), &json!({"name": "x"}))
                .send()
                .await
                .unwrap(),
        ),
        (
            "DELETE /chats/delete/{id}",
            delete(&app, &format!("/chats/delete/{id}"))
                .send()
                .await
                .unwrap(),
        ),
        (
            "POST /conversations/create",
            app.post_json(
                "/conversations/create",
                &json!({"chat_id": id, "role": "Human", "message": "hi"}),
            )
            .send()
            .await
            .unwrap(),
        ),
        (
            "GET /conversations/",
            app.get(&format!("/conversations/?chat_id={id}"))
                .send()
                .await
                .unwrap(),
        ),
        (
            "GET /conversations/inference/{id}",
            app.get(&format!("/conversations/inference/{id}"))
                .send()
                .await
                .unwrap(),
        ),
        (
            "POST /conversations/stop/{id}",
            app.post_json(&format!("/conversations/stop/{id}"), &json!({}))
                .send()
                .await
                .unwrap(),
        ),
    ];

    for (route, r) in responses {
        let body = error_with(r, 404, None).await;
        assert_eq!(body["error"], "not_found", "{route}: {body}");
    }
}

#[tokio::test]
async fn an_id_that_is_not_a_uuid_is_400_naming_it() {
    let app = spawn_app().await;

    let responses = [
        ("id", app.get("/chats/not-a-uuid").send().await.unwrap()),
        (
            "id",
            put_json(&app, "/chats/update/123", &json!({"name": "x"}))
                .send()
                .await
                .unwrap(),
        ),
        (
            "id",
            delete(&app, "/chats/delete/123").send().await.unwrap(),
        ),
        (
            "id",
            app.get("/conversations/inference/123")
                .send()
                .await
                .unwrap(),
        ),
        (
            "id",
            app.post_json("/conversations/stop/123", &json!({}))
                .send()
                .await
                .unwrap(),
        ),
        (
            "chat_id",
            app.get("/conversations/?chat_id=123").send().await.unwrap(),
        ),
    ];

    for (field, r) in responses {
        let body = error_with(r, 400, Some(field)).await;
        assert_eq!(body["error"], "bad_request", "{body}");
    }
}

#[tokio::test]
async fn malformed_json_is_400() {
    let app = spawn_app().await;
    let chat = app.create_chat("json").await;

    for (path, raw) in [
        ("/chats/create", r#"{"name": "#),
        ("/chats/create", r#"{"name": "a"} trailing"#),
        ("/chats/create", "name=a"),
        ("/conversations/create", r#"{"chat_id": "#),
    ] {
        let r = post_raw(&app, path, Some("application/json"), raw)
            .send()
            .await
            .unwrap();
        let body = error_with(r, 400, None).await;
        assert_eq!(body["error"], "bad_request", "{path} {raw}: {body}");
    }
    let r = app
        .client
        .put(app.url(&format!("/chats/update/{chat}")))
        .bearer_auth(&app.key)
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    error_with(r, 400, None).await;
}

#[tokio::test]
async fn a_missing_mistyped_or_blank_name_is_422_naming_name() {
    let app = spawn_app().await;
    let chat = app.create_chat("valid").await;
    let too_long = "x".repeat(201);

    for body in [
        json!({}),
        json!({"name": 42}),
        json!({"name": null}),
        json!({"name": "   "}),
        json!({"name": too_long}),
    ] {
        let r = app.post_json("/chats/create", &body).send().await.unwrap();
        let err = error_with(r, 422, Some("name")).await;
        assert_eq!(err["error"], "validation_error", "{body}: {err}");
        let r = put_json(&app, &format!("/chats/update/{chat}"), &body)
            .send()
            .await
            .unwrap();
        error_with(r, 422, Some("name")).await;
    }
    // Nothing was renamed by the refused updates.
    let fetched = json_with(
        app.get(&format!("/chats/{chat}")).send().await.unwrap(),
        200,
    )
    .await;
    assert_eq!(fetched["name"], "valid");
}

#[tokio::test]
async fn a_body_not_declared_as_json_is_415() {
    let app = spawn_app().await;
    let chat = app.create_chat("media").await;
    let valid = r#"{"name": "x"}"#;

    let none = post_raw(&app, "/chats/create", None, valid)
        .send()
        .await
        .unwrap();
    let text = post_raw(&app, "/chats/create", Some("text/plain"), valid)
        .send()
        .await
        .unwrap();
    let form = post_raw(
        &app,
        "/chats/create",
        Some("application/x-www-form-urlencoded"),
        valid,
    )
    .send()
    .await
    .unwrap();
    let conversation = post_raw(
        &app,
        "/conversations/create",
        Some("text/plain"),
        json!({"chat_id": chat, "role": "Human", "message": "hi"}).to_string(),
    )
    .send()
    .await
    .unwrap();
    let with_charset = post_raw(
        &app,
        "/chats/create",
        Some("application/json; charset=utf-8"),
        valid,
    )
    .send()
    .await
    .unwrap();

    for r in [none, text, form, conversation] {
        let body = error_with(r, 415, None).await;
        assert_eq!(body["error"], "unsupported_media_type", "{body}");
    }
    assert_eq!(with_charset.status(), 201);
}

#[tokio::test]
async fn a_body_over_one_mebibyte_is_413() {
    let app = spawn_app().await;
    let limit = 1024 * 1024;
    let body_of = |len: usize| {
        let overhead = r#"{"name":""}"#.len();
        format!(r#"{{"name":"{}"}}"#, "x".repeat(len - overhead))
    };

    let over = post_raw(
        &app,
        "/chats/create",
        Some("application/json"),
        body_of(limit + 1),
    )
    .send()
    .await
    .unwrap();
    let at_limit = post_raw(
        &app,
        "/chats/create",
        Some("application/json"),
        body_of(limit),
    )
    .send()
    .await
    .unwrap();

    let body = error_with(over, 413, None).await;
    assert_eq!(body["error"], "payload_too_large");
    // A body of exactly the limit is read (and then refused for its over-long name).
    error_with(at_limit, 422, Some("name")).await;
}

// ----------------------------------------------------------------------------------------------
// Conversations.

#[tokio::test]
async fn human_and_assistant_conversations_are_created_with_201() {
    let app = spawn_app().await;
    let chat = app.create_chat("roles").await;

    for role in ["Human", "Assistant"] {
        let r = app
            .post_json(
                "/conversations/create",
                &json!({"chat_id": chat, "role": role, "message": format!("{role} says hi")}),
            )
            .send()
            .await
            .unwrap();
        let body = json_with(r, 201).await;

        assert_eq!(
            sorted_keys(&body),
            [
                "chat_id",
                "created_at",
                "id",
                "message",
                "role",
                "updated_at"
            ]
        );
        Uuid::parse_str(body["id"].as_str().unwrap()).unwrap();
        assert_eq!(body["role"], role);
        assert_eq!(body["chat_id"], chat.as_str());
        assert_eq!(body["message"], format!("{role} says hi"));
        timestamp(&body["created_at"]);
        timestamp(&body["updated_at"]);
    }
}

#[tokio::test]
async fn a_role_other_than_human_or_assistant_is_422_naming_role() {
    let app = spawn_app().await;
    let chat = app.create_chat("roles").await;

    for role in [
        json!("human"),
        json!("System"),
        json!("user"),
        json!("Tool"),
        json!(""),
        json!(1),
    ] {
        let r = app
            .post_json(
                "/conversations/create",
                &json!({"chat_id": chat, "role": role, "message": "hi"}),
            )
            .send()
            .await
            .unwrap();
        let body = error_with(r, 422, Some("role")).await;
        assert_eq!(body["error"], "validation_error", "{role}: {body}");
    }
    assert!(app.conversations(&chat).await.is_empty());
}

#[tokio::test]
async fn a_conversation_for_an_unknown_chat_is_404() {
    let app = spawn_app().await;

    let r = app
        .post_json(
            "/conversations/create",
            &json!({"chat_id": Uuid::new_v4(), "role": "Human", "message": "hi"}),
        )
        .send()
        .await
        .unwrap();

    error_with(r, 404, None).await;
}

#[tokio::test]
async fn a_bad_or_missing_conversation_field_is_422_naming_it() {
    let app = spawn_app().await;
    let chat = app.create_chat("fields").await;

    for (body, field) in [
        (
            json!({"chat_id": "not-a-uuid", "role": "Human", "message": "hi"}),
            "chat_id",
        ),
        (
            json!({"chat_id": 7, "role": "Human", "message": "hi"}),
            "chat_id",
        ),
        (json!({"role": "Human", "message": "hi"}), "chat_id"),
        (json!({"chat_id": chat, "role": "Human"}), "message"),
        (
            json!({"chat_id": chat, "role": "Human", "message": ["hi"]}),
            "message",
        ),
        (json!({"chat_id": chat, "message": "hi"}), "role"),
    ] {
        let r = app
            .post_json("/conversations/create", &body)
            .send()
            .await
            .unwrap();
        error_with(r, 422, Some(field)).await;
    }
}

#[tokio::test]
async fn a_message_longer_than_the_configured_limit_is_422_naming_message() {
    let app = spawn_app_with(|s| s.limits.max_message_chars = 10).await;
    let chat = app.create_chat("short").await;

    let at_limit = app
        .post_json(
            "/conversations/create",
            &json!({"chat_id": chat, "role": "Human", "message": "é".repeat(10)}),
        )
        .send()
        .await
        .unwrap();
    let over = app
        .post_json(
            "/conversations/create",
            &json!({"chat_id": chat, "role": "Human", "message": "x".repeat(11)}),
        )
        .send()
        .await
        .unwrap();

    assert_eq!(at_limit.status(), 201);
    error_with(over, 422, Some("message")).await;
}

#[tokio::test]
async fn conversations_are_listed_in_order_with_human_and_assistant_roles() {
    let app = spawn_app().await;
    app.mock.push(Script::text(&["first answer"]));
    let chat = app.create_chat("ordered").await;
    let q1 = app.ask(&chat, "first question").await;
    app.stream(&format!("/conversations/inference/{chat}"), None)
        .await
        .collect()
        .await;
    let q2 = app.ask(&chat, "second question").await;
    let a2 = json_with(
        app.post_json(
            "/conversations/create",
            &json!({"chat_id": chat, "role": "Assistant", "message": "second answer, by the client"}),
        )
        .send()
        .await
        .unwrap(),
        201,
    )
    .await;

    let listed = app.conversations(&chat).await;

    let summary: Vec<(&str, &str)> = listed
        .iter()
        .map(|c| (c["role"].as_str().unwrap(), c["message"].as_str().unwrap()))
        .collect();
    assert_eq!(
        summary,
        [
            ("Human", "first question"),
            ("Assistant", "first answer"),
            ("Human", "second question"),
            ("Assistant", "second answer, by the client"),
        ]
    );
    assert_eq!(listed[0]["id"], q1.as_str());
    assert_eq!(listed[2]["id"], q2.as_str());
    assert_eq!(listed[3], a2);
    for c in &listed {
        assert_eq!(
            sorted_keys(c),
            [
                "chat_id",
                "created_at",
                "id",
                "message",
                "role",
                "updated_at"
            ]
        );
        assert_eq!(c["chat_id"], chat.as_str());
    }
}

#[tokio::test]
async fn a_system_message_is_never_listed() {
    let app = spawn_app().await;
    let chat = app.create_chat("system").await;
    let chat_id = Uuid::parse_str(&chat).unwrap();
    app.services
        .store()
        .insert_message(
            chat_id,
            sluice::domain::Role::System,
            "you are a test".into(),
            None,
        )
        .await
        .unwrap();
    app.ask(&chat, "visible").await;

    let listed = app.conversations(&chat).await;

    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["role"], "Human");
}

#[tokio::test]
async fn listing_conversations_without_chat_id_is_400_naming_it() {
    let app = spawn_app().await;

    for path in [
        "/conversations/",
        "/conversations",
        "/conversations/?chat=1",
        "/conversations/?chat_id=",
    ] {
        let r = app.get(path).send().await.unwrap();
        error_with(r, 400, Some("chat_id")).await;
    }
}

#[tokio::test]
async fn unknown_routes_answer_a_json_404() {
    let app = spawn_app().await;

    for (method, path) in [
        (reqwest::Method::GET, "/nope"),
        (reqwest::Method::GET, "/chats/create/extra"),
        (reqwest::Method::POST, "/conversations/inference"),
        (reqwest::Method::GET, "/conversations/a/b/c"),
    ] {
        let with_key = app
            .client
            .request(method.clone(), app.url(path))
            .bearer_auth(&app.key)
            .send()
            .await
            .unwrap();
        let without_key = app
            .client
            .request(method.clone(), app.url(path))
            .send()
            .await
            .unwrap();
        for r in [with_key, without_key] {
            let body = error_with(r, 404, None).await;
            assert_eq!(body["error"], "not_found", "{method} {path}: {body}");
        }
    }
}

#[tokio::test]
async fn line_breaks_posted_by_the_client_are_stored_as_lf() {
    let app = spawn_app().await;
    let chat = app.create_chat("crlf").await;

    let created = json_with(
        app.post_json(
            "/conversations/create",
            &json!({"chat_id": chat, "role": "Human", "message": "one\r\ntwo\rthree\n\r\nfour"}),
        )
        .send()
        .await
        .unwrap(),
        201,
    )
    .await;

    let expected = "one\ntwo\nthree\n\nfour";
    assert_eq!(created["message"], expected);
    assert_eq!(app.conversations(&chat).await[0]["message"], expected);
    let stored = app
        .services
        .store()
        .list_messages(Uuid::parse_str(&chat).unwrap(), true)
        .await
        .unwrap();
    assert_eq!(stored[0].content, expected);
    // And the model is asked with the same text.
    app.stream(&format!("/conversations/inference/{chat}"), None)
        .await
        .collect()
        .await;
    assert_eq!(app.mock.requests()[0]["messages"][0]["content"], expected);
}

#[tokio::test]
async fn a_nul_character_in_a_name_or_message_is_refused_or_stored_never_a_server_error() {
    let app = spawn_app().await;
    let chat = app.create_chat("nul").await;

    let created = app
        .post_json("/chats/create", &json!({"name": "a\u{0}b"}))
        .send()
        .await
        .unwrap();
    let renamed = put_json(
        &app,
        &format!("/chats/update/{chat}"),
        &json!({"name": "a\u{0}b"}),
    )
    .send()
    .await
    .unwrap();
    let posted = app
        .post_json(
            "/conversations/create",
            &json!({"chat_id": chat, "role": "Human", "message": "a\u{0}b"}),
        )
        .send()
        .await
        .unwrap();

    let mut failures = Vec::new();
    for (route, field, r) in [
        ("POST /chats/create", "name", created),
        ("PUT /chats/update", "name", renamed),
        ("POST /conversations/create", "message", posted),
    ] {
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        let fine = matches!(status, 200 | 201) || (status == 422 && body["field"] == field);
        if !fine {
            failures.push(format!("{route}: {status} {body}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
