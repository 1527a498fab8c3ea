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

/// Replicas on one database share a Redis; where the test needs none, one that does not answer
/// does (they then count rate limits alone).
fn shared(settings: &mut Settings) {
    let url = std::env::var("SLUICE_TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:1".to_owned());
    settings.redis_url = Some(SecretString::from(url));
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
    let a = spawn_app_on(&database_url, shared).await;
    let b = spawn_app_on(&database_url, shared).await;
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
    let a = spawn_app_on(&database_url, shared).await;
    let b = spawn_app_on(&database_url, shared).await;
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

/// The status of a chat's last answer, as stored.
async fn answer_status(app: &TestApp, chat: &str) -> String {
    app.services
        .store()
        .list_messages(chat.parse().unwrap(), false)
        .await
        .unwrap()
        .into_iter()
        .rev()
        .find(|m| m.role == "assistant")
        .map(|m| m.status.as_str().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn without_redis_a_second_replica_refuses_to_start_naming_the_variable() {
    use crate::lifecycle::{sluice_command, spawn_process};
    let mock = crate::mock::MockUpstream::start().await.unwrap();
    let (database_url, _dir) = fresh_database().await;
    let first = spawn_process(sluice_command(&database_url, &mock));
    let started = std::time::Instant::now();
    let second = sluice_command(&database_url, &mock)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert!(!second.status.success(), "a second replica started");
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(said.contains("SLUICE_REDIS_URL"), "{said}");
    // It waited for the first one's heartbeat to go silent before refusing.
    assert!(
        started.elapsed() >= Duration::from_secs(7),
        "{:?}",
        started.elapsed()
    );
    drop(first);
}

#[tokio::test]
async fn with_redis_a_starting_replica_leaves_a_live_replicas_answer_alone() {
    let (database_url, _dir) = fresh_database().await;
    let a = spawn_app_on(&database_url, shared).await;
    a.mock.set_default(crate::lifecycle::slow(30, 50));
    let chat = a.chat_with_question("long").await;
    let mut sse = a
        .stream(&format!("/conversations/inference/{chat}"), None)
        .await;
    let first = sse.next().await.unwrap();
    assert_eq!(first.event, "message", "{first:?}");

    let _b = spawn_app_on(&database_url, shared).await;
    let events = sse.collect().await;
    let done = crate::helpers::named(&events, "done").unwrap();
    assert_eq!(
        done["status"], "complete",
        "B's start cut A's answer: {done}"
    );
    assert_eq!(answer_status(&a, &chat).await, "complete");
}

#[tokio::test]
async fn a_killed_replicas_answer_is_marked_incomplete_by_another_within_the_lease() {
    use crate::lifecycle::{sluice_command, spawn_process};
    let (database_url, _dir) = fresh_database().await;
    let b = spawn_app_on(&database_url, shared).await;
    let mock = crate::mock::MockUpstream::start().await.unwrap();
    mock.set_default(crate::lifecycle::slow(400, 50));
    let mut command = sluice_command(&database_url, &mock);
    let key = sluice::service::generate_key(KeyKind::Secret);
    command.env("SLUICE_ADMIN_KEY", &key);
    if let Some(url) = std::env::var("SLUICE_TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
    {
        command.env("SLUICE_REDIS_URL", url);
    } else {
        command.env("SLUICE_REDIS_URL", "redis://127.0.0.1:1");
    }
    let mut a = spawn_process(command);
    let client = reqwest::Client::new();
    let chat_id = a.ask(&client, &key, "killed").await;
    let mut sse = a.stream(&client, &key, &chat_id).await;
    let mut seen = String::new();
    while seen.len() < 20 {
        let e = sse.next().await.unwrap();
        if e.event == "message" {
            seen.push_str(&e.data);
        }
    }
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let killed = std::time::Instant::now();

    // B's sweep finds the silent lease.
    crate::helpers::eventually(Duration::from_secs(20), || async {
        answer_status(&b, &chat_id).await == "incomplete"
    })
    .await;
    // Ten seconds at most (7 s of silence, then a sweep every 3 s); a margin for a loaded CI.
    eprintln!(
        "the killed replica's answer was saved incomplete after {:?}",
        killed.elapsed()
    );
    assert!(
        killed.elapsed() < Duration::from_secs(15),
        "{:?}",
        killed.elapsed()
    );
    let saved = b.stored_answer(&chat_id).await;
    assert!(
        saved["message"].as_str().unwrap().starts_with("w0 w1 "),
        "{saved}"
    );
}

#[tokio::test]
async fn a_stop_asked_of_one_replica_cancels_the_answer_another_runs() {
    let Some(redis) = redis_url() else { return };
    let (database_url, _dir) = fresh_database().await;
    let with_redis = |s: &mut Settings| s.redis_url = Some(SecretString::from(redis.clone()));
    let a = spawn_app_on(&database_url, with_redis).await;
    let b = spawn_app_on(&database_url, with_redis).await;
    a.mock.set_default(crate::lifecycle::slow(400, 50));
    let chat = a.chat_with_question("long").await;
    let mut sse = a
        .stream(&format!("/conversations/inference/{chat}"), None)
        .await;
    let first = sse.next().await.unwrap();
    assert_eq!(first.event, "message", "{first:?}");
    // A subscribed to stops in the background when it started; give a loaded machine time.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let asked = std::time::Instant::now();
    let (status, stopped) = b
        .call(
            reqwest::Method::POST,
            &format!("/conversations/stop/{chat}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{stopped}");
    assert!(
        a.mock.wait_for_aborted(1, Duration::from_secs(1)).await,
        "A's upstream call was not cut within 1 s of the stop"
    );
    assert!(asked.elapsed() < Duration::from_secs(5));
    let events = sse.collect().await;
    let done = crate::helpers::named(&events, "done").unwrap();
    assert_eq!(done["status"], "cancelled", "{done}");
    assert_eq!(answer_status(&a, &chat).await, "cancelled");
    assert!(stopped.to_string().contains("cancelled"), "{stopped}");
}

#[tokio::test]
async fn a_reader_of_an_answer_whose_owner_died_before_writing_it_is_told() {
    let Some(redis) = redis_url() else { return };
    let (database_url, _dir) = fresh_database().await;
    let b = spawn_app_on(&database_url, shared).await;
    let chat = b.chat_with_question("claimed, never answered").await;
    let question = b.conversations(&chat).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // What a replica leaves when it dies right after claiming the question: the claim and the
    // answer's first entry, no row.
    let answer = uuid::Uuid::now_v7();
    let mut conn = redis::Client::open(redis.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::pipe()
        .cmd("SET")
        .arg(format!("sluice:claim:{question}"))
        .arg(format!("{answer} {chat}"))
        .arg("PX")
        .arg(15_000)
        .ignore()
        .cmd("XADD")
        .arg(format!("sluice:log:{answer}"))
        .arg("0-1")
        .arg("k")
        .arg("s")
        .arg("v")
        .arg(format!("{chat} {question} {}", uuid::Uuid::nil()))
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();

    let asked = std::time::Instant::now();
    // Nothing comes for as long as a claim lives (15 s): read the whole body, with room.
    let body = tokio::time::timeout(
        Duration::from_secs(40),
        b.get(&format!("/conversations/inference/{chat}"))
            .send()
            .await
            .unwrap()
            .text(),
    )
    .await
    .expect("the stream ended")
    .unwrap();
    let event = |name: &str| -> Value {
        let block = body
            .split("\n\n")
            .find(|b| b.lines().any(|l| l == format!("event: {name}")))
            .unwrap_or_else(|| panic!("no {name} event in {body}"));
        let data = block
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .unwrap();
        serde_json::from_str(data).unwrap()
    };
    assert_eq!(event("error")["code"], "interrupted", "{body}");
    assert_eq!(event("done")["status"], "incomplete", "{body}");
    eprintln!("told after {:?}", asked.elapsed());
    assert!(asked.elapsed() < Duration::from_secs(25));
    assert_eq!(
        b.mock.request_count(),
        0,
        "nothing was asked upstream meanwhile"
    );
}
