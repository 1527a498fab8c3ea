//! The workspace API's sessions: CRUD, validation, scoping, and settings that drive answers.

use reqwest::Method;
use serde_json::{Value, json};
use sluice::service::KeyKind;

use crate::helpers::{TestApp, named, spawn_app, text_of};
use crate::mock::Script;

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (u16, Value) {
    app.request_as(Some(key), method, path, body).await
}

async fn new_key(app: &TestApp, workspace: uuid::Uuid, kind: KeyKind) -> String {
    app.new_key(workspace, kind).await
}

#[tokio::test]
async fn a_sessions_settings_are_validated_kept_and_drive_its_answers() {
    let app = spawn_app().await;
    let key = app.key.clone();
    let (status, session) = call(
        &app,
        Method::POST,
        "/api/workspaces/default/chats/",
        &key,
        Some(json!({
            "name": "Research Chat",
            "ai_provider": "MOCK",
            "ai_model": "mock-model",
            "system_prompt": "You are a helpful research assistant.",
            "temperature": 0.7,
            "top_p": 0.9,
            "max_tokens": 50,
            "agent_framework": "langgraph",
        })),
    )
    .await;
    assert_eq!(status, 201, "{session}");
    for (field, value) in [
        ("name", json!("Research Chat")),
        ("status", json!("active")),
        ("ai_provider", json!("MOCK")),
        ("ai_model", json!("mock-model")),
        ("temperature", json!(0.7)),
        ("top_p", json!(0.9)),
        ("max_tokens", json!(50)),
        ("agent_framework", json!("langgraph")),
        ("is_public", json!(false)),
        ("is_shared", json!(false)),
        ("shareable_link_id", Value::Null),
        ("user_id", Value::Null),
    ] {
        assert_eq!(session[field], value, "{field}: {session}");
    }
    assert_eq!(
        session["workspace"],
        json!(app.services.default_workspace.to_string())
    );
    let id = session["id"].as_str().unwrap().to_owned();

    // The session's settings are what the provider is asked with, its system prompt first.
    app.ask(&id, "What is the capital of France?").await;
    app.mock.push(Script::text(&["Paris"]));
    let events = app
        .stream(&format!("/conversations/inference/{id}"), None)
        .await
        .collect()
        .await;
    assert_eq!(text_of(&events), "Paris");
    assert_eq!(named(&events, "done").unwrap()["status"], "complete");
    let sent = app.mock.requests().pop().unwrap();
    assert_eq!(sent["messages"][0]["role"], "system");
    assert_eq!(
        sent["messages"][0]["content"],
        "You are a helpful research assistant."
    );
    assert_eq!(
        sent["messages"][1]["content"],
        "What is the capital of France?"
    );
    assert_eq!(sent["temperature"], json!(0.7));
    assert_eq!(sent["top_p"], json!(0.9));
    assert_eq!(sent["max_tokens"], json!(50));
    assert_eq!(sent["model"], "mock-model");

    // A partial update keeps what it does not name; null clears a setting.
    let (status, updated) = call(
        &app,
        Method::PUT,
        &format!("/api/workspaces/default/chats/{id}"),
        &key,
        Some(json!({"name": "Renamed", "temperature": null})),
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["name"], "Renamed");
    assert!(updated["temperature"].is_null());
    assert_eq!(updated["system_prompt"], session["system_prompt"]);
    let (_, got) = call(
        &app,
        Method::GET,
        &format!("/api/workspaces/default/chats/{id}/"),
        &key,
        None,
    )
    .await;
    assert_eq!(got, updated);

    for (bad, field) in [
        (json!({"ai_provider": "nobody"}), "ai_provider"),
        (
            json!({"ai_provider": "mock", "ai_model": "gpt-nothing"}),
            "ai_model",
        ),
        (json!({"temperature": 2.5}), "temperature"),
        (json!({"top_p": 1.5}), "top_p"),
        (json!({"max_tokens": 0}), "max_tokens"),
        (json!({"max_tokens": 100_000_000}), "max_tokens"),
        (json!({"name": "   "}), "name"),
        (json!({"temperature": "hot"}), "temperature"),
    ] {
        for (method, path) in [
            (Method::POST, "/api/workspaces/default/chats/".to_owned()),
            (Method::PUT, format!("/api/workspaces/default/chats/{id}/")),
        ] {
            let (status, body) = call(&app, method, &path, &key, Some(bad.clone())).await;
            assert_eq!(status, 400, "{bad} {body}");
            assert_eq!(body["field"], field, "{bad} {body}");
            assert_eq!(body["detail"], body["message"]);
        }
    }
}

#[tokio::test]
async fn sessions_are_listed_newest_first_scoped_to_their_workspace_user_and_key() {
    let app = spawn_app().await;
    let key = app.key.clone();
    let mut ids = Vec::new();
    for name in ["one", "two", "three"] {
        let (_, s) = call(
            &app,
            Method::POST,
            "/api/workspaces/default/chats",
            &key,
            Some(json!({"name": name})),
        )
        .await;
        ids.push(s["id"].as_str().unwrap().to_owned());
    }
    let (status, listed) = call(
        &app,
        Method::GET,
        "/api/workspaces/default/chats/?limit=2",
        &key,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["three", "two"]);
    let (_, rest) = call(
        &app,
        Method::GET,
        "/api/workspaces/default/chats/?limit=2&offset=2",
        &key,
        None,
    )
    .await;
    assert_eq!(rest[0]["name"], "one");
    let (status, body) = call(
        &app,
        Method::GET,
        "/api/workspaces/default/chats/?limit=0",
        &key,
        None,
    )
    .await;
    assert_eq!((status, body["field"].as_str()), (400, Some("limit")));

    // An end user's sessions are theirs alone.
    let mine = app
        .client
        .post(app.url("/api/workspaces/default/chats/"))
        .bearer_auth(&key)
        .header("x-user-id", "user-7")
        .json(&json!({"name": "mine"}))
        .send()
        .await
        .unwrap();
    let mine: Value = mine.json().await.unwrap();
    assert_eq!(mine["user_id"], "user-7");
    let theirs: Value = app
        .client
        .get(app.url("/api/workspaces/default/chats/"))
        .bearer_auth(&key)
        .header("x-user-id", "user-7")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(theirs.as_array().unwrap().len(), 1);
    assert_eq!(theirs[0]["id"], mine["id"]);

    // Another workspace's key finds nothing of this one, by either name.
    let other = app
        .services
        .store()
        .create_workspace("other", "Other")
        .await
        .unwrap();
    let other_key = new_key(&app, other.id, KeyKind::Secret).await;
    let path = format!("/api/workspaces/default/chats/{}/", ids[0]);
    for method in [Method::GET, Method::PUT, Method::DELETE] {
        let body = (method == Method::PUT).then(|| json!({"name": "x"}));
        let (status, _) = call(&app, method.clone(), &path, &other_key, body.clone()).await;
        assert_eq!(status, 404, "{method}");
        let (status, _) = call(
            &app,
            method.clone(),
            &format!("/api/workspaces/other/chats/{}/", ids[0]),
            &other_key,
            body,
        )
        .await;
        assert_eq!(status, 404, "{method} through its own workspace");
    }
    let (_, own) = call(
        &app,
        Method::GET,
        "/api/workspaces/other/chats/",
        &other_key,
        None,
    )
    .await;
    assert_eq!(own, json!([]));

    // A publishable key creates and reads sessions, and does nothing else.
    let widget = new_key(&app, app.services.default_workspace, KeyKind::Publishable).await;
    let (status, created) = call(
        &app,
        Method::POST,
        "/api/workspaces/default/chats/",
        &widget,
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(created["name"], "New chat");
    let widget_path = format!(
        "/api/workspaces/default/chats/{}/",
        created["id"].as_str().unwrap()
    );
    assert_eq!(
        call(&app, Method::GET, &widget_path, &widget, None).await.0,
        200
    );
    assert_eq!(
        call(&app, Method::GET, &path, &widget, None).await.0,
        404,
        "a secret key's session"
    );
    assert_eq!(
        call(
            &app,
            Method::GET,
            "/api/workspaces/default/chats/",
            &widget,
            None
        )
        .await
        .0,
        403
    );
    assert_eq!(
        call(&app, Method::DELETE, &widget_path, &widget, None)
            .await
            .0,
        403
    );

    // Deleted: gone, and 404 the second time.
    assert_eq!(call(&app, Method::DELETE, &path, &key, None).await.0, 204);
    assert_eq!(call(&app, Method::GET, &path, &key, None).await.0, 404);
    assert_eq!(call(&app, Method::DELETE, &path, &key, None).await.0, 404);
}

#[tokio::test]
async fn a_workspace_out_of_credit_creates_no_session() {
    let app = spawn_app().await;
    app.services
        .store()
        .set_credit_limit(app.services.default_workspace, Some(0))
        .await
        .unwrap();
    let (status, body) = call(
        &app,
        Method::POST,
        "/api/workspaces/default/chats/",
        &app.key,
        Some(json!({"name": "paid"})),
    )
    .await;
    assert_eq!(status, 402, "{body}");
    assert_eq!(body["error"], "insufficient_credits");
    let (_, listed) = call(
        &app,
        Method::GET,
        "/api/workspaces/default/chats/",
        &app.key,
        None,
    )
    .await;
    assert_eq!(listed, json!([]));
    assert_eq!(app.mock.request_count(), 0);
}
