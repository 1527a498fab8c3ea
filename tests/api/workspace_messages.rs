//! The workspace API's messages: one generation core behind sync, async and streamed replies.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{SseClient, TestApp, eventually, spawn_app};
use crate::lifecycle::slow;
use crate::mock::Script;

async fn call(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    app.call(method, path, body).await
}

async fn session(app: &TestApp) -> String {
    let (status, s) = call(
        app,
        Method::POST,
        "/api/workspaces/default/chats/",
        Some(json!({"name": "s"})),
    )
    .await;
    assert_eq!(status, 201);
    format!(
        "/api/workspaces/default/chats/{}",
        s["id"].as_str().unwrap()
    )
}

fn question(text: &str) -> Value {
    json!({"role": "user", "content": text})
}

/// The text of `delta` events, concatenated.
fn deltas(events: &[eventsource_stream::Event]) -> String {
    events
        .iter()
        .filter(|e| e.event == "delta")
        .map(|e| {
            serde_json::from_str::<Value>(&e.data).unwrap()["content"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

fn done(events: &[eventsource_stream::Event]) -> Value {
    let e = events
        .iter()
        .find(|e| e.event == "done")
        .expect("a done event");
    serde_json::from_str(&e.data).unwrap()
}

async fn task(app: &TestApp, session: &str, id: &str) -> Value {
    let path = format!("{session}/messages/agent-task-status/{id}/");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = call(app, Method::GET, &path, None).await;
        assert_eq!(status, 200, "{body}");
        if body["status"] != "processing" {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the task never ended: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sync_async_and_streamed_replies_come_from_one_core_and_are_stored_alike() {
    let app = spawn_app().await;
    let session = session(&app).await;

    app.mock.push(Script::text(&["Par", "is"]));
    let (status, sync) = call(
        &app,
        Method::POST,
        &format!("{session}/messages/"),
        Some(question("Capital of France?")),
    )
    .await;
    assert_eq!(status, 201, "{sync}");
    assert_eq!(sync["user_message"]["role"], "user");
    assert_eq!(sync["user_message"]["content"], "Capital of France?");
    assert!(sync["user_message"]["usage"].is_null());
    let answer = &sync["assistant_messages"][0];
    assert_eq!(answer["content"], "Paris");
    assert_eq!(answer["status"], "complete");
    assert_eq!(answer["role"], "assistant");
    assert_eq!(answer["reply_to"], sync["user_message"]["id"]);
    assert_eq!(answer["model"], "mock-model");
    assert!(answer["usage"]["total_tokens"].as_u64().unwrap() > 0);

    app.mock.push(Script::text(&["Par", "is"]));
    let response = app
        .client
        .post(app.url(&format!("{session}/messages/")))
        .bearer_auth(&app.key)
        .header("accept", "text/event-stream")
        .json(&question("Capital of France?"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let named = response.headers()["x-message-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let events = SseClient::new(response).collect().await;
    assert_eq!(deltas(&events), "Paris");
    let streamed = done(&events)["message"].clone();
    assert_eq!(streamed["id"], named);
    assert_eq!(streamed["content"], "Paris");
    assert_eq!(events.last().unwrap().id, format!("{named}:done"));

    app.mock.push(Script::text(&["Par", "is"]));
    let (status, accepted) = call(
        &app,
        Method::POST,
        &format!("{session}/messages/?async=true"),
        Some(question("Capital of France?")),
    )
    .await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["status"], "processing");
    let polled = task(&app, &session, accepted["task_id"].as_str().unwrap()).await;
    assert_eq!(polled["status"], "completed", "{polled}");
    assert!(polled["error"].is_null());
    assert_eq!(polled["result"]["user_message"], accepted["user_message"]);
    assert_eq!(
        polled["result"]["assistant_messages"][0]["content"],
        "Paris"
    );

    // Six messages, in order, every answer the same text.
    let (_, listed) = call(&app, Method::GET, &format!("{session}/messages"), None).await;
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 6);
    let numbers: Vec<i64> = listed
        .iter()
        .map(|m| m["sequence_number"].as_i64().unwrap())
        .collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
    for answer in listed.iter().filter(|m| m["role"] == "assistant") {
        assert_eq!(answer["content"], "Paris");
    }
    let (status, one) = call(
        &app,
        Method::GET,
        &format!("{session}/messages/{}/", named),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(one, streamed);
}

#[tokio::test]
async fn a_streamed_answer_resumes_from_the_middle_and_then_says_it_is_done() {
    let app = spawn_app().await;
    let session = session(&app).await;
    app.mock.push(slow(12, 60));
    let response = app
        .client
        .post(app.url(&format!("{session}/messages/?stream=true")))
        .bearer_auth(&app.key)
        .json(&question("count"))
        .send()
        .await
        .unwrap();
    let answer_id = response.headers()["x-message-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let mut first = SseClient::new(response);
    let (mut seen, mut last_id) = (String::new(), String::new());
    while seen.matches(' ').count() < 3 {
        let event = first.next().await.unwrap();
        if event.event == "delta" {
            seen.push_str(
                serde_json::from_str::<Value>(&event.data).unwrap()["content"]
                    .as_str()
                    .unwrap(),
            );
            last_id = event.id;
        }
    }
    first.disconnect();

    let follow = format!("{session}/messages/{answer_id}/stream/");
    let rest = app.stream(&follow, Some(&last_id)).await.collect().await;
    let whole = format!("{seen}{}", deltas(&rest));
    assert_eq!(whole, (0..12).map(|i| format!("w{i} ")).collect::<String>());
    let saved = done(&rest)["message"].clone();
    assert_eq!(saved["content"], whole);
    assert_eq!(saved["status"], "complete");

    // A replay from the start gives the same bytes; after `done`, 204.
    let replay = app.stream(&follow, None).await.collect().await;
    assert_eq!(deltas(&replay), whole);
    let after = app
        .stream(&follow, Some(&format!("{answer_id}:done")))
        .await;
    assert_eq!(after.status, 204);
}

#[tokio::test]
async fn tasks_end_failed_with_the_reason_and_cancelled_when_stopped() {
    let app = spawn_app().await;
    let session = session(&app).await;
    let mut refused = Script::text(&["x"]);
    refused.status = Some(400);
    app.mock.push(refused);
    let (_, accepted) = call(
        &app,
        Method::POST,
        &format!("{session}/messages/?async=1"),
        Some(question("q")),
    )
    .await;
    let failed = task(&app, &session, accepted["task_id"].as_str().unwrap()).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(!failed["error"].as_str().unwrap().is_empty());
    assert_eq!(
        failed["result"]["assistant_messages"][0]["status"],
        "failed"
    );

    app.mock.push(slow(50, 100));
    let (_, accepted) = call(
        &app,
        Method::POST,
        &format!("{session}/messages/?async=true"),
        Some(question("long")),
    )
    .await;
    let chat = session.rsplit('/').next().unwrap();
    // Stop once some of the answer was written: follow it to its first delta.
    let task_id = accepted["task_id"].as_str().unwrap();
    let mut follower = app
        .stream(&format!("{session}/messages/{task_id}/stream/"), None)
        .await;
    while follower.next().await.unwrap().event != "delta" {}
    let (status, _) = call(
        &app,
        Method::POST,
        &format!("/conversations/stop/{chat}"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let cancelled = task(&app, &session, accepted["task_id"].as_str().unwrap()).await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    let partial = cancelled["result"]["assistant_messages"][0]["content"]
        .as_str()
        .unwrap();
    assert!(partial.starts_with("w0 "), "{partial}");
}

#[tokio::test]
async fn a_client_that_leaves_a_sync_post_loses_nothing() {
    let app = spawn_app().await;
    let session = session(&app).await;
    app.mock.push(slow(8, 50));
    let request = app
        .client
        .post(app.url(&format!("{session}/messages/")))
        .bearer_auth(&app.key)
        .json(&question("q"))
        .send();
    let client = tokio::spawn(request);
    // The client leaves once the answer has begun upstream.
    eventually(Duration::from_secs(10), || async {
        app.mock.request_count() == 1
    })
    .await;
    client.abort();
    assert!(client.await.is_err(), "the client gave up before the end");
    eventually(Duration::from_secs(10), || async {
        let (_, listed) = call(&app, Method::GET, &format!("{session}/messages/"), None).await;
        listed[1]["status"] == "complete"
    })
    .await;
    let (_, listed) = call(&app, Method::GET, &format!("{session}/messages/"), None).await;
    assert_eq!(
        listed[1]["content"],
        (0..8).map(|i| format!("w{i} ")).collect::<String>()
    );
}

#[tokio::test]
async fn messages_are_checked_deleted_with_their_answers_and_scoped() {
    let app = spawn_app().await;
    let session = session(&app).await;
    for (bad, field) in [
        (json!({"role": "assistant", "content": "x"}), "role"),
        (json!({"role": "user"}), "content"),
    ] {
        let (status, body) = call(
            &app,
            Method::POST,
            &format!("{session}/messages/"),
            Some(bad),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["field"], field);
    }
    let (status, body) = call(
        &app,
        Method::POST,
        &format!("{session}/messages/?async=maybe"),
        Some(question("q")),
    )
    .await;
    assert_eq!((status, body["field"].as_str()), (400, Some("async")));

    app.mock.push(Script::text(&["a"]));
    let (_, first) = call(
        &app,
        Method::POST,
        &format!("{session}/messages/"),
        Some(question("one")),
    )
    .await;
    app.mock.push(Script::text(&["b"]));
    call(
        &app,
        Method::POST,
        &format!("{session}/messages/"),
        Some(question("two")),
    )
    .await;
    let question_id = first["user_message"]["id"].as_str().unwrap();
    let (status, _) = call(
        &app,
        Method::DELETE,
        &format!("{session}/messages/{question_id}/"),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (_, listed) = call(&app, Method::GET, &format!("{session}/messages/"), None).await;
    let contents: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["two", "b"], "the question went with its answer");
    let (status, _) = call(
        &app,
        Method::GET,
        &format!("{session}/messages/{question_id}/"),
        None,
    )
    .await;
    assert_eq!(status, 404);

    // Another session's message, another workspace: 404.
    let other = session_in_other_workspace(&app).await;
    let answer_id = listed[1]["id"].as_str().unwrap();
    let (status, _) = call(
        &app,
        Method::GET,
        &format!("{other}/messages/{answer_id}/"),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = call(
        &app,
        Method::GET,
        &format!("{session}/messages/agent-task-status/{question_id}/"),
        None,
    )
    .await;
    assert_eq!(status, 404);
}

/// A session of another workspace, reached by this test's admin key.
async fn session_in_other_workspace(app: &TestApp) -> String {
    let (_, ws) = call(
        app,
        Method::POST,
        "/api/workspaces/",
        Some(json!({"slug": "elsewhere"})),
    )
    .await;
    let (status, s) = call(
        app,
        Method::POST,
        "/api/workspaces/elsewhere/chats/",
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 201, "{s} {ws}");
    format!(
        "/api/workspaces/elsewhere/chats/{}",
        s["id"].as_str().unwrap()
    )
}

#[tokio::test]
async fn regenerate_replaces_the_answer_in_every_reply_mode_and_stops_a_running_one_first() {
    let app = spawn_app().await;
    let session = session(&app).await;
    let regenerate = format!("{session}/messages/regenerate/");
    let (status, body) = call(&app, Method::POST, &regenerate, None).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], "nothing_to_regenerate");

    app.mock.push(Script::text(&["first"]));
    let (_, asked) = call(
        &app,
        Method::POST,
        &format!("{session}/messages/"),
        Some(question("q")),
    )
    .await;
    app.mock.push(Script::text(&["second"]));
    let (status, again) = call(&app, Method::POST, &regenerate, None).await;
    assert_eq!(status, 201, "{again}");
    assert_eq!(again["user_message"]["id"], asked["user_message"]["id"]);
    assert_eq!(again["assistant_messages"][0]["content"], "second");
    let answers = |listed: &Value| -> Vec<String> {
        listed
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["role"] == "assistant")
            .map(|m| m["content"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, listed) = call(&app, Method::GET, &format!("{session}/messages/"), None).await;
    assert_eq!(answers(&listed), ["second"]);
    assert_eq!(listed.as_array().unwrap().len(), 2);

    // Streamed, then as a task.
    app.mock.push(Script::text(&["th", "ird"]));
    let response = app
        .client
        .post(app.url(&format!("{regenerate}?stream=true")))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    let events = SseClient::new(response).collect().await;
    assert_eq!(deltas(&events), "third");
    app.mock.push(Script::text(&["fourth"]));
    let (status, accepted) = call(
        &app,
        Method::POST,
        &format!("{regenerate}?async=true"),
        None,
    )
    .await;
    assert_eq!(status, 202);
    let polled = task(&app, &session, accepted["task_id"].as_str().unwrap()).await;
    assert_eq!(
        polled["result"]["assistant_messages"][0]["content"],
        "fourth"
    );
    let (_, listed) = call(&app, Method::GET, &format!("{session}/messages/"), None).await;
    assert_eq!(answers(&listed), ["fourth"]);

    // A running answer is stopped, then replaced.
    app.mock.push(slow(50, 100));
    let (_, running) = call(
        &app,
        Method::POST,
        &format!("{session}/messages/?async=true"),
        Some(question("long")),
    )
    .await;
    eventually(Duration::from_secs(5), || async {
        app.mock.request_count() == 5
    })
    .await;
    app.mock.push(Script::text(&["short"]));
    let (status, replaced) = call(&app, Method::POST, &regenerate, None).await;
    assert_eq!(status, 201, "{replaced}");
    assert_eq!(
        replaced["user_message"]["id"],
        running["user_message"]["id"]
    );
    assert_eq!(replaced["assistant_messages"][0]["content"], "short");
    assert!(
        app.mock.wait_for_aborted(1, Duration::from_secs(5)).await,
        "upstream not cancelled"
    );
    let (_, listed) = call(&app, Method::GET, &format!("{session}/messages/"), None).await;
    assert_eq!(answers(&listed), ["fourth", "short"]);
    let (status, _) = call(
        &app,
        Method::GET,
        &format!(
            "{session}/messages/agent-task-status/{}/",
            running["task_id"].as_str().unwrap()
        ),
        None,
    )
    .await;
    assert_eq!(status, 404, "the replaced answer's task is gone with it");
}

#[tokio::test]
async fn stop_cancels_the_running_answer_and_keeps_its_partial_text() {
    let app = spawn_app().await;
    let session = session(&app).await;
    let (status, idle) = call(&app, Method::POST, &format!("{session}/stop/"), None).await;
    assert_eq!(status, 200);
    assert_eq!(idle, json!({"stopped": false, "status": null}));

    app.mock.push(slow(50, 100));
    let response = app
        .client
        .post(app.url(&format!("{session}/messages/?stream=true")))
        .bearer_auth(&app.key)
        .json(&question("long"))
        .send()
        .await
        .unwrap();
    let mut reader = SseClient::new(response);
    assert_eq!(reader.next().await.unwrap().event, "delta");
    let (status, stopped) = call(&app, Method::POST, &format!("{session}/stop"), None).await;
    assert_eq!(status, 200);
    assert_eq!(stopped, json!({"stopped": true, "status": "cancelled"}));
    let rest = reader.collect().await;
    let saved = done(&rest)["message"].clone();
    assert_eq!(saved["status"], "cancelled");
    assert!(saved["content"].as_str().unwrap().starts_with("w0 "));
    assert!(app.mock.wait_for_aborted(1, Duration::from_secs(5)).await);
}

#[tokio::test]
async fn deleting_a_running_answers_question_stops_it_first_and_a_widget_key_may_not_delete() {
    let app = spawn_app().await;
    let session = session(&app).await;
    app.mock.push(slow(50, 100));
    let (_, running) = call(
        &app,
        Method::POST,
        &format!("{session}/messages/?async=true"),
        Some(question("long")),
    )
    .await;
    eventually(Duration::from_secs(5), || async {
        app.mock.request_count() == 1
    })
    .await;

    let widget = app
        .new_key(
            app.services.default_workspace,
            sluice::service::KeyKind::Publishable,
        )
        .await;
    let question_id = running["user_message"]["id"].as_str().unwrap();
    let path = format!("{session}/messages/{question_id}/");
    let refused = app
        .client
        .delete(app.url(&path))
        .bearer_auth(&widget)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);

    let (status, _) = call(&app, Method::DELETE, &path, None).await;
    assert_eq!(status, 204);
    assert!(
        app.mock.wait_for_aborted(1, Duration::from_secs(5)).await,
        "upstream not cancelled"
    );
    let (_, listed) = call(&app, Method::GET, &format!("{session}/messages/"), None).await;
    assert_eq!(listed, json!([]));
    // Nothing writes the answer back afterwards.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, listed) = call(&app, Method::GET, &format!("{session}/messages/"), None).await;
    assert_eq!(listed, json!([]));
}

#[tokio::test]
async fn every_route_of_another_workspace_is_404_to_a_plain_key() {
    let app = spawn_app().await;
    let session = session(&app).await;
    app.mock.push(Script::text(&["hi"]));
    let (_, asked) = call(
        &app,
        Method::POST,
        &format!("{session}/messages/"),
        Some(question("q")),
    )
    .await;
    let answer = asked["assistant_messages"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let question_id = asked["user_message"]["id"].as_str().unwrap().to_owned();

    let other = app
        .services
        .store()
        .create_workspace("other", "Other")
        .await
        .unwrap();
    let stranger = app
        .new_key(other.id, sluice::service::KeyKind::Secret)
        .await;
    let default_id = app.services.default_workspace.to_string();
    let chat = session.rsplit('/').next().unwrap();
    let calls = app.mock.request_count();
    for ws in ["default", default_id.as_str()] {
        let base = format!("/api/workspaces/{ws}");
        let s = format!("{base}/chats/{chat}");
        for (method, path, body) in [
            (Method::GET, format!("{base}/"), None),
            (Method::GET, format!("{base}/keys/"), None),
            (
                Method::POST,
                format!("{base}/keys/"),
                Some(json!({"kind": "secret"})),
            ),
            (
                Method::DELETE,
                format!("{base}/keys/{}/", uuid::Uuid::new_v4()),
                None,
            ),
            (Method::GET, format!("{base}/credit-usage/"), None),
            (Method::GET, format!("{base}/chats/"), None),
            (Method::POST, format!("{base}/chats/"), Some(json!({}))),
            (Method::GET, format!("{s}/"), None),
            (Method::PUT, format!("{s}/"), Some(json!({"name": "x"}))),
            (Method::DELETE, format!("{s}/"), None),
            (Method::GET, format!("{s}/messages/"), None),
            (Method::POST, format!("{s}/messages/"), Some(question("q"))),
            (Method::GET, format!("{s}/messages/{answer}/"), None),
            (Method::DELETE, format!("{s}/messages/{question_id}/"), None),
            (Method::GET, format!("{s}/messages/{answer}/stream/"), None),
            (
                Method::GET,
                format!("{s}/messages/agent-task-status/{answer}/"),
                None,
            ),
            (Method::POST, format!("{s}/messages/regenerate/"), None),
            (Method::POST, format!("{s}/stop/"), None),
        ] {
            let mut request = app
                .client
                .request(method.clone(), app.url(&path))
                .bearer_auth(&stranger);
            if let Some(body) = body {
                request = request.json(&body);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 404, "{method} {path}");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"], "not_found", "{method} {path}");
        }
    }
    // Through its own workspace, the stranger still does not find the session.
    let (status, _) = (
        app.client
            .get(app.url(&format!("/api/workspaces/other/chats/{chat}/messages/")))
            .bearer_auth(&stranger)
            .send()
            .await
            .unwrap()
            .status(),
        (),
    );
    assert_eq!(status, 404);
    assert_eq!(
        app.mock.request_count(),
        calls,
        "nothing reached the provider"
    );
    let (_, listed) = call(&app, Method::GET, &format!("{session}/messages/"), None).await;
    assert_eq!(
        listed.as_array().unwrap().len(),
        2,
        "nothing was written or deleted"
    );
}
