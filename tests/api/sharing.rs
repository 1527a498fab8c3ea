//! Public links: what anyone may read without a key, and what they may never see.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, eventually, spawn_app};
use crate::lifecycle::slow;
use crate::mock::Script;

async fn call(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = app
        .client
        .request(method, app.url(path))
        .bearer_auth(&app.key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A read with no key at all, as a stranger's browser would.
async fn anonymous(app: &TestApp, method: Method, path: &str) -> (u16, Value) {
    let response = app
        .client
        .request(method, app.url(path))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
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
