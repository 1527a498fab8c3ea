//! Several replicas: what they share through Redis (`SLUICE_REDIS_URL`). The tests that need a
//! Redis read `SLUICE_TEST_REDIS_URL` and are skipped, saying so, when it is unset; set, an
//! unreachable Redis fails them.

use std::time::Duration;

use secrecy::SecretString;
use serde_json::Value;
use sluice::config::{RateLimits, Settings};
use sluice::service::KeyKind;

use crate::helpers::{TestApp, fresh_database, spawn_app_on, spawn_app_with};

fn redis_url() -> Option<String> {
    match std::env::var("SLUICE_TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!("skipped: SLUICE_TEST_REDIS_URL is not set");
            None
        }
    }
}

fn limited(settings: &mut Settings, redis: &str) {
    settings.redis_url = Some(SecretString::from(redis.to_owned()));
    settings.rate_limits = RateLimits {
        secret: 3,
        publishable: 3,
        window: Duration::from_secs(5),
    };
}

async fn list(app: &TestApp, key: &str) -> (u16, Option<String>) {
    let response = app
        .client
        .get(app.url("/api/workspaces/default/chats/"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let remaining = response
        .headers()
        .get("x-ratelimit-remaining")
        .map(|v| v.to_str().unwrap().to_owned());
    (response.status().as_u16(), remaining)
}

async fn readiness(app: &TestApp) -> Value {
    app.client
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_key_has_one_rate_limit_across_replicas() {
    let Some(redis) = redis_url() else { return };
    let (database_url, _dir) = fresh_database().await;
    let a = spawn_app_on(&database_url, |s| limited(s, &redis)).await;
    let b = spawn_app_on(&database_url, |s| limited(s, &redis)).await;
    assert_eq!(
        readiness(&a).await["redis"],
        "ok",
        "Redis at {redis} must answer"
    );
    let key = a
        .new_key(a.services.default_workspace, KeyKind::Secret)
        .await;

    let mut seen = Vec::new();
    for app in [&a, &b, &a, &b, &a] {
        seen.push(list(app, &key).await);
    }
    let some = |n: &str| Some(n.to_owned());
    assert_eq!(
        seen,
        [
            (200, some("2")),
            (200, some("1")),
            (200, some("0")),
            (429, some("0")),
            (429, some("0")),
        ]
    );
}

#[tokio::test]
async fn with_redis_unreachable_a_replica_counts_alone_and_says_so() {
    let (database_url, _dir) = fresh_database().await;
    // Nothing listens on port 1.
    let app = spawn_app_on(&database_url, |s| limited(s, "redis://127.0.0.1:1")).await;
    let key = app
        .new_key(app.services.default_workspace, KeyKind::Secret)
        .await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(list(&app, &key).await.0);
    }
    assert_eq!(statuses, [200, 200, 200, 429], "the limit still holds");
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "a replica alone still serves");
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["redis"], "unreachable", "{body}");

    // Without Redis configured, readiness does not mention it.
    let alone = spawn_app_with(|_| {}).await;
    assert!(readiness(&alone).await.get("redis").is_none());
}

#[tokio::test]
async fn a_key_revoked_on_one_replica_is_refused_by_the_other_at_once() {
    let (database_url, _dir) = fresh_database().await;
    let a = spawn_app_on(&database_url, |_| {}).await;
    let b = spawn_app_on(&database_url, |_| {}).await;
    let (status, created) = a
        .call(
            reqwest::Method::POST,
            "/api/workspaces/default/keys/",
            Some(serde_json::json!({"kind": "secret"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    assert_eq!(list(&b, &key).await.0, 200);

    let (status, _) = a
        .call(
            reqwest::Method::DELETE,
            &format!(
                "/api/workspaces/default/keys/{}/",
                created["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(
        list(&b, &key).await.0,
        401,
        "B still accepted a key revoked on A"
    );
}

#[tokio::test]
async fn a_task_started_on_one_replica_is_answered_by_the_other() {
    let (database_url, _dir) = fresh_database().await;
    let a = spawn_app_on(&database_url, |_| {}).await;
    let b = spawn_app_on(&database_url, |_| {}).await;
    let (_, session) = a
        .call(
            reqwest::Method::POST,
            "/api/workspaces/default/chats/",
            Some(serde_json::json!({"name": "tasks"})),
        )
        .await;
    let chats = format!(
        "/api/workspaces/default/chats/{}",
        session["id"].as_str().unwrap()
    );
    let (status, accepted) = a
        .call(
            reqwest::Method::POST,
            &format!("{chats}/messages/?async=true"),
            Some(serde_json::json!({"role": "user", "content": "hello"})),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let task = format!(
        "{chats}/messages/agent-task-status/{}/",
        accepted["task_id"].as_str().unwrap()
    );
    let mut last = Value::Null;
    for _ in 0..100 {
        let (status, seen) = b
            .request_as(Some(&b.key), reqwest::Method::GET, &task, None)
            .await;
        assert_eq!(status, 200, "{seen}");
        if seen["status"] == "completed" {
            last = seen;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(last["status"], "completed", "B never saw A's task complete");
    assert_eq!(
        last["result"]["assistant_messages"][0]["content"], "Hello from the mock upstream.",
        "{last}"
    );
}
