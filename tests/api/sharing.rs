//! Public links: what anyone may read without a key, and what they may never see.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, eventually, spawn_app};
use crate::lifecycle::slow;
use crate::mock::Script;

async fn call(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    app.call(method, path, body).await
}

/// A read with no key at all, as a stranger's browser would.
async fn anonymous(app: &TestApp, method: Method, path: &str) -> (u16, Value) {
    app.request_as(None, method, path, None).await
}

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

#[tokio::test]
async fn a_public_link_shows_the_name_and_finished_messages_only_and_dies_when_toggled() {
    let app = spawn_app().await;
    let (_, session) = call(
        &app,
        Method::POST,
        "/api/workspaces/default/chats/",
        Some(json!({"name": "Shared", "system_prompt": "SECRET PROMPT", "temperature": 0.3})),
    )
    .await;
    let id = session["id"].as_str().unwrap();
    let base = format!("/api/workspaces/default/chats/{id}");
    // One end user's session: the view must not say whose.
    app.mock.push(Script::text(&["Paris"]));
    call(
        &app,
        Method::POST,
        &format!("{base}/messages/"),
        Some(json!({"role": "user", "content": "Capital?"})),
    )
    .await;
    let mut refused = Script::text(&["x"]);
    refused.status = Some(400);
    app.mock.push(refused);
    call(
        &app,
        Method::POST,
        &format!("{base}/messages/"),
        Some(json!({"role": "user", "content": "Broken?"})),
    )
    .await;
    app.mock.push(slow(50, 100));
    call(
        &app,
        Method::POST,
        &format!("{base}/messages/?async=true"),
        Some(json!({"role": "user", "content": "Long?"})),
    )
    .await;
    eventually(Duration::from_secs(5), || async {
        app.mock.request_count() == 3
    })
    .await;

    let (status, on) = call(&app, Method::POST, &format!("{base}/toggle-public/"), None).await;
    assert_eq!(status, 200, "{on}");
    assert_eq!(on["is_public"], true);
    let link = on["shareable_link_id"].as_str().unwrap().to_owned();
    assert_eq!(on["share_url"], format!("/api/chats/shared/{link}/"));
    let (_, got) = call(&app, Method::GET, &format!("{base}/"), None).await;
    assert_eq!(got["is_public"], true);
    assert_eq!(got["shareable_link_id"], on["shareable_link_id"]);

    let (status, view) = anonymous(&app, Method::GET, &format!("/api/chats/shared/{link}/")).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(keys(&view), BTreeSet::from(["session", "messages"]));
    assert_eq!(
        keys(&view["session"]),
        BTreeSet::from(["id", "name", "created_at"])
    );
    assert_eq!(view["session"]["name"], "Shared");
    let messages = view["messages"].as_array().unwrap();
    for m in messages {
        assert_eq!(
            keys(m),
            BTreeSet::from(["id", "role", "content", "created_at"])
        );
    }
    let shown: Vec<(&str, &str)> = messages
        .iter()
        .map(|m| (m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    // The failed answer and the one still streaming are not shown; their questions are.
    assert_eq!(
        shown,
        [
            ("user", "Capital?"),
            ("assistant", "Paris"),
            ("user", "Broken?"),
            ("user", "Long?")
        ]
    );
    let text = view.to_string();
    for secret in [
        "SECRET PROMPT",
        "temperature",
        "usage",
        "user_id",
        "workspace",
        "0.3",
    ] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    // Other methods, unknown and malformed links.
    let (status, _) = anonymous(&app, Method::POST, &format!("/api/chats/shared/{link}/")).await;
    assert_eq!(status, 405);
    let (status, _) = anonymous(&app, Method::DELETE, &format!("/api/chats/shared/{link}")).await;
    assert_eq!(status, 405);
    let unknown = uuid::Uuid::new_v4();
    assert_eq!(
        anonymous(&app, Method::GET, &format!("/api/chats/shared/{unknown}/"))
            .await
            .0,
        404
    );
    assert_eq!(
        anonymous(&app, Method::GET, "/api/chats/shared/not-a-link/")
            .await
            .0,
        404
    );

    // Off: the link is dead. On again: a new link, and the first one stays dead.
    let (_, off) = call(&app, Method::POST, &format!("{base}/toggle-public"), None).await;
    assert_eq!(
        off,
        json!({"is_public": false, "shareable_link_id": null, "share_url": null})
    );
    assert_eq!(
        anonymous(&app, Method::GET, &format!("/api/chats/shared/{link}/"))
            .await
            .0,
        404
    );
    let (_, again) = call(&app, Method::POST, &format!("{base}/toggle-public/"), None).await;
    let second = again["shareable_link_id"].as_str().unwrap();
    assert_ne!(second, link);
    assert_eq!(
        anonymous(&app, Method::GET, &format!("/api/chats/shared/{second}/"))
            .await
            .0,
        200
    );
    assert_eq!(
        anonymous(&app, Method::GET, &format!("/api/chats/shared/{link}/"))
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn public_reads_are_limited_per_client_address() {
    let app = spawn_app().await;
    let (_, session) = call(
        &app,
        Method::POST,
        "/api/workspaces/default/chats/",
        Some(json!({})),
    )
    .await;
    let id = session["id"].as_str().unwrap();
    let (_, on) = call(
        &app,
        Method::POST,
        &format!("/api/workspaces/default/chats/{id}/toggle-public/"),
        None,
    )
    .await;
    let path = format!(
        "/api/chats/shared/{}/",
        on["shareable_link_id"].as_str().unwrap()
    );
    for _ in 0..sluice::service::PUBLIC_VIEWS_PER_WINDOW {
        assert_eq!(anonymous(&app, Method::GET, &path).await.0, 200);
    }
    let response = app.client.get(app.url(&path)).send().await.unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");
    assert!(body["retryAfter"].as_u64().unwrap() >= 1);
}

/// A request as an end user of the test's secret key (`X-User-Id`).
async fn as_user(
    app: &TestApp,
    user: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = app
        .client
        .request(method, app.url(path))
        .bearer_auth(&app.key)
        .header("x-user-id", user);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_shared_user_reads_and_never_writes_and_loses_the_session_at_once_when_revoked() {
    let app = spawn_app().await;
    let (status, session) = as_user(
        &app,
        "owner",
        Method::POST,
        "/api/workspaces/default/chats/",
        Some(json!({"name": "Plans"})),
    )
    .await;
    assert_eq!(status, 201);
    let id = session["id"].as_str().unwrap().to_owned();
    let base = format!("/api/workspaces/default/chats/{id}");
    app.mock.push(Script::text(&["ok"]));
    let (_, asked) = as_user(
        &app,
        "owner",
        Method::POST,
        &format!("{base}/messages/"),
        Some(json!({"role": "user", "content": "hi"})),
    )
    .await;
    let answer = asked["assistant_messages"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Not shared yet: the guest sees nothing.
    assert_eq!(
        as_user(&app, "guest", Method::GET, &format!("{base}/"), None)
            .await
            .0,
        404
    );
    let (status, shared) = as_user(
        &app,
        "owner",
        Method::POST,
        &format!("{base}/share/"),
        Some(json!({"user_id": "guest"})),
    )
    .await;
    assert_eq!(status, 201, "{shared}");
    assert_eq!(shared["user_id"], "guest");
    assert_eq!(shared["permission"], "read");
    let (status, _) = as_user(
        &app,
        "owner",
        Method::POST,
        &format!("{base}/share/"),
        Some(json!({"user_id": "guest", "permission": "read"})),
    )
    .await;
    assert_eq!(status, 200, "sharing again is idempotent");
    let (_, listed) = as_user(&app, "owner", Method::GET, &format!("{base}/shares/"), None).await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let (_, owner_view) = as_user(&app, "owner", Method::GET, &format!("{base}/"), None).await;
    assert_eq!(owner_view["is_shared"], true);
    for (bad, field) in [
        (json!({"user_id": ""}), "user_id"),
        (json!({"user_id": "x", "permission": "write"}), "permission"),
    ] {
        let (status, body) = as_user(
            &app,
            "owner",
            Method::POST,
            &format!("{base}/share/"),
            Some(bad),
        )
        .await;
        assert_eq!(
            (status, body["field"].as_str()),
            (400, Some(field)),
            "{body}"
        );
    }

    // The guest reads it, in their list too, and its messages.
    let (status, seen) = as_user(&app, "guest", Method::GET, &format!("{base}/"), None).await;
    assert_eq!(status, 200);
    assert_eq!(seen["id"], id.as_str());
    let (_, list) = as_user(
        &app,
        "guest",
        Method::GET,
        "/api/workspaces/default/chats/",
        None,
    )
    .await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (status, messages) = as_user(
        &app,
        "guest",
        Method::GET,
        &format!("{base}/messages/"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(messages.as_array().unwrap().len(), 2);
    assert_eq!(
        as_user(
            &app,
            "guest",
            Method::GET,
            &format!("{base}/messages/{answer}/"),
            None
        )
        .await
        .0,
        200
    );

    // Every write is 403, and nothing changed.
    let calls = app.mock.request_count();
    for (method, path, body) in [
        (
            Method::PUT,
            format!("{base}/"),
            Some(json!({"name": "mine now"})),
        ),
        (Method::DELETE, format!("{base}/"), None),
        (
            Method::POST,
            format!("{base}/messages/"),
            Some(json!({"role": "user", "content": "x"})),
        ),
        (Method::DELETE, format!("{base}/messages/{answer}/"), None),
        (Method::POST, format!("{base}/messages/regenerate/"), None),
        (Method::POST, format!("{base}/stop/"), None),
        (Method::POST, format!("{base}/toggle-public/"), None),
        (
            Method::POST,
            format!("{base}/share/"),
            Some(json!({"user_id": "friend"})),
        ),
        (Method::GET, format!("{base}/shares/"), None),
        (
            Method::POST,
            format!("{base}/revoke-share/"),
            Some(json!({"user_id": "guest"})),
        ),
        (
            Method::PUT,
            format!("/chats/update/{id}"),
            Some(json!({"name": "x"})),
        ),
        (Method::DELETE, format!("/chats/delete/{id}"), None),
        (
            Method::POST,
            "/conversations/create".to_owned(),
            Some(json!({"chat_id": id, "role": "Human", "message": "x"})),
        ),
        (Method::POST, format!("/conversations/stop/{id}"), None),
    ] {
        let (status, body) = as_user(&app, "guest", method.clone(), &path, body).await;
        assert_eq!(status, 403, "{method} {path}: {body}");
    }
    assert_eq!(app.mock.request_count(), calls);
    let (_, after) = as_user(
        &app,
        "owner",
        Method::GET,
        &format!("{base}/messages/"),
        None,
    )
    .await;
    assert_eq!(after, messages);

    // Revoked: gone for the guest on the very next request.
    let (status, _) = as_user(
        &app,
        "owner",
        Method::POST,
        &format!("{base}/revoke-share/"),
        Some(json!({"user_id": "guest"})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        as_user(&app, "guest", Method::GET, &format!("{base}/"), None)
            .await
            .0,
        404
    );
    assert_eq!(
        as_user(
            &app,
            "guest",
            Method::GET,
            &format!("{base}/messages/"),
            None
        )
        .await
        .0,
        404
    );
    let (_, list) = as_user(
        &app,
        "guest",
        Method::GET,
        "/api/workspaces/default/chats/",
        None,
    )
    .await;
    assert_eq!(list, json!([]));
    let (status, _) = as_user(
        &app,
        "owner",
        Method::POST,
        &format!("{base}/revoke-share/"),
        Some(json!({"user_id": "guest"})),
    )
    .await;
    assert_eq!(status, 404, "no such share any more");
    let (_, owner_view) = as_user(&app, "owner", Method::GET, &format!("{base}/"), None).await;
    assert_eq!(owner_view["is_shared"], false);
}
