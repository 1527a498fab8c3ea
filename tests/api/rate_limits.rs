//! Rate limits: one counter per key per window in every dialect, the headers on every
//! authenticated response, 429 in each dialect's envelope, and nothing done for a refused
//! request.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use sluice::config::RateLimits;
use sluice::service::KeyKind;

use crate::helpers::{TestApp, spawn_app_with};

/// The status, the three rate-limit headers (limit, remaining, reset), `Retry-After` and the
/// JSON body of one response.
struct Seen {
    status: u16,
    limit: Option<u32>,
    remaining: Option<u32>,
    reset: Option<u64>,
    retry_after: Option<u64>,
    body: Value,
}

async fn seen(response: reqwest::Response) -> Seen {
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (limit, remaining, reset, retry_after) = (
        header("x-ratelimit-limit").map(|v| v.parse().unwrap()),
        header("x-ratelimit-remaining").map(|v| v.parse().unwrap()),
        header("x-ratelimit-reset").map(|v| v.parse().unwrap()),
        header("retry-after").map(|v| v.parse().unwrap()),
    );
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    Seen {
        status,
        limit,
        remaining,
        reset,
        retry_after,
        body,
    }
}

/// One request of a dialect with `key`.
async fn call(app: &TestApp, dialect: &str, key: &str) -> Seen {
    let path = match dialect {
        "conversations" => "/chats/",
        "workspace" => "/api/workspaces/default/chats/",
        "openai" => "/v1/models",
        other => panic!("no dialect {other}"),
    };
    seen(
        app.client
            .get(app.url(path))
            .bearer_auth(key)
            .send()
            .await
            .unwrap(),
    )
    .await
}

const WINDOW: Duration = Duration::from_secs(4);

async fn limited_app(secret: u32, publishable: u32) -> TestApp {
    spawn_app_with(|s| {
        s.rate_limits = RateLimits {
            secret,
            publishable,
            window: WINDOW,
        }
    })
    .await
}

#[tokio::test]
async fn every_dialect_allows_exactly_the_limit_per_window_then_429_until_it_resets() {
    let app = limited_app(3, 3).await;
    let ws = app.services.default_workspace;
    let mut keys = Vec::new();
    for dialect in ["conversations", "workspace", "openai"] {
        let key = app.new_key(ws, KeyKind::Secret).await;
        for remaining in [2, 1, 0] {
            let s = call(&app, dialect, &key).await;
            assert_eq!(s.status, 200, "{dialect}: {}", s.body);
            assert_eq!(s.limit, Some(3), "{dialect}");
            assert_eq!(s.remaining, Some(remaining), "{dialect}");
            let reset = s.reset.unwrap();
            assert!(
                (1..=WINDOW.as_secs()).contains(&reset),
                "{dialect}: {reset}"
            );
        }
        let refused = call(&app, dialect, &key).await;
        assert_eq!(refused.status, 429, "{dialect}: {}", refused.body);
        assert_eq!(refused.limit, Some(3));
        assert_eq!(refused.remaining, Some(0));
        let retry = refused.retry_after.expect("Retry-After");
        assert!(
            (1..=WINDOW.as_secs()).contains(&retry),
            "{dialect}: {retry}"
        );
        assert_eq!(refused.reset, Some(retry), "{dialect}");
        assert_eq!(
            refused.body["retryAfter"], retry,
            "{dialect}: {}",
            refused.body
        );
        match dialect {
            "openai" => {
                assert_eq!(refused.body["error"]["code"], "rate_limit_exceeded");
                assert_eq!(refused.body["error"]["type"], "requests");
            }
            "workspace" => {
                assert_eq!(refused.body["error"], "rate_limited");
                assert_eq!(refused.body["detail"], refused.body["message"]);
            }
            _ => assert_eq!(refused.body["error"], "rate_limited"),
        }
        keys.push((dialect, key));
    }
    // Counters are per key: another key of the same workspace is untouched.
    let fresh = app.new_key(ws, KeyKind::Secret).await;
    assert_eq!(call(&app, "workspace", &fresh).await.remaining, Some(2));

    tokio::time::sleep(WINDOW + Duration::from_millis(200)).await;
    for (dialect, key) in keys {
        let s = call(&app, dialect, &key).await;
        assert_eq!(s.status, 200, "{dialect} after the window: {}", s.body);
        assert_eq!(s.remaining, Some(2), "{dialect}: a fresh window");
    }
}

#[tokio::test]
async fn the_defaults_are_1000_for_secret_keys_and_100_for_publishable_ones() {
    let app = spawn_app_with(|s| s.rate_limits = RateLimits::default()).await;
    let ws = app.services.default_workspace;
    let secret = app.new_key(ws, KeyKind::Secret).await;
    let s = call(&app, "workspace", &secret).await;
    assert_eq!((s.limit, s.remaining), (Some(1000), Some(999)));
    assert!(s.reset.unwrap() <= 60);

    let publishable = app.new_key(ws, KeyKind::Publishable).await;
    let created = seen(
        app.client
            .post(app.url("/chats/create"))
            .bearer_auth(&publishable)
            .json(&json!({"name": "widget"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!((created.limit, created.remaining), (Some(100), Some(99)));

    // A refused key and an unauthenticated request are not counted and carry no headers.
    let anonymous = seen(app.client.get(app.url("/chats/")).send().await.unwrap()).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.limit, None);
    let probe = seen(app.client.get(app.url("/healthz")).send().await.unwrap()).await;
    assert_eq!(probe.limit, None);
}

#[tokio::test]
async fn a_key_created_with_its_own_limit_gets_that_limit() {
    let app = limited_app(1000, 100).await;
    let (status, body) = app
        .call(
            Method::POST,
            "/api/workspaces/default/keys/",
            Some(json!({"kind": "publishable", "name": "widget", "rate_limit": 2})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["rate_limit"], 2);
    let key = body["key"].as_str().unwrap().to_owned();
    let (_, listed) = app
        .call(Method::GET, "/api/workspaces/default/keys/", None)
        .await;
    let listed = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == body["id"])
        .unwrap()
        .clone();
    assert_eq!(listed["rate_limit"], 2);

    let mut statuses = Vec::new();
    for _ in 0..3 {
        let s = seen(
            app.client
                .get(app.url("/chats/00000000-0000-0000-0000-000000000000"))
                .bearer_auth(&key)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s.limit, Some(2));
        statuses.push(s.status);
    }
    assert_eq!(statuses, [404, 404, 429]);

    for bad in [
        json!(0),
        json!(-1),
        json!(1_000_001),
        json!("ten"),
        json!(2.5),
    ] {
        let (status, body) = app
            .call(
                Method::POST,
                "/api/workspaces/default/keys/",
                Some(json!({"kind": "secret", "rate_limit": bad})),
            )
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["field"], "rate_limit", "{bad}: {body}");
    }
}

#[tokio::test]
async fn a_refused_request_reaches_no_provider_and_writes_nothing() {
    let app = limited_app(2, 2).await;
    let key = app
        .new_key(app.services.default_workspace, KeyKind::Secret)
        .await;
    let chat: Value = app
        .client
        .post(app.url("/chats/create"))
        .bearer_auth(&key)
        .json(&json!({"name": "limited"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let chat_id = chat["id"].as_str().unwrap();
    let second = app
        .client
        .get(app.url(&format!("/chats/{chat_id}")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 200);

    for (method, path, body) in [
        (
            Method::POST,
            "/conversations/create".to_owned(),
            Some(json!({"chat_id": chat_id, "role": "Human", "message": "hi"})),
        ),
        (
            Method::POST,
            format!("/api/workspaces/default/chats/{chat_id}/messages/"),
            Some(json!({"role": "user", "content": "hi"})),
        ),
        (
            Method::POST,
            "/v1/chat/completions".to_owned(),
            Some(
                json!({"model": "mock/mock-model", "messages": [{"role": "user", "content": "hi"}]}),
            ),
        ),
        (Method::DELETE, format!("/chats/delete/{chat_id}"), None),
    ] {
        let (status, body) = app.request_as(Some(&key), method, &path, body).await;
        assert_eq!(status, 429, "{path}: {body}");
    }
    assert_eq!(
        app.mock.request_count(),
        0,
        "a refused request reached the provider"
    );
    // Read with another key: the chat is there, with no message.
    assert!(app.conversations(chat_id).await.is_empty());
}

#[tokio::test]
async fn a_browser_session_counts_against_the_key_it_signed_in_with() {
    let app = limited_app(2, 2).await;
    let key = app
        .new_key(app.services.default_workspace, KeyKind::Secret)
        .await;
    let signed_in = app
        .client
        .post(app.url("/session"))
        .json(&json!({"key": key}))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 201);
    let cookie = signed_in.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let mut seen_by_cookie = Vec::new();
    for _ in 0..3 {
        let s = seen(
            app.client
                .get(app.url("/chats/"))
                .header("cookie", &cookie)
                .send()
                .await
                .unwrap(),
        )
        .await;
        seen_by_cookie.push((s.status, s.remaining));
    }
    assert_eq!(
        seen_by_cookie,
        [(200, Some(1)), (200, Some(0)), (429, Some(0))]
    );
    // The same counter as the key itself.
    assert_eq!(call(&app, "conversations", &key).await.status, 429);
}
