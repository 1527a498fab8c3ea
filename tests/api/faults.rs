//! Every scriptable fault of the mock upstream, through the conversations API: a failed
//! upstream ends with an `error` event and an answer that does not claim to be complete.

use std::time::Duration;

use crate::helpers::*;

async fn run(app: &TestApp, script: Script) -> (Vec<eventsource_stream::Event>, String) {
    app.mock.push(script);
    let chat = app.chat_with_question("q").await;
    let events = app
        .stream(&format!("/conversations/inference/{chat}"), None)
        .await
        .collect()
        .await;
    (events, chat)
}

fn error_code(events: &[eventsource_stream::Event]) -> Option<String> {
    named(events, "error").map(|e| e["code"].as_str().unwrap().to_owned())
}

/// The error event comes after the last delta and right before done, which ends the stream.
fn assert_error_then_done(events: &[eventsource_stream::Event]) {
    let n = events.len();
    assert!(n >= 2, "{events:?}");
    assert_eq!(events[n - 2].event, "error", "{events:?}");
    assert_eq!(events[n - 1].event, "done", "{events:?}");
}

#[tokio::test]
async fn a_transient_error_status_is_retried_before_the_first_delta() {
    let app = spawn_app().await;
    let mut script = Script::text(&["never"]);
    script.status = Some(503);

    let (events, _) = run(&app, script).await;

    assert!(named(&events, "error").is_none(), "{events:?}");
    assert_eq!(text_of(&events), "Hello from the mock upstream.");
    assert_eq!(app.mock.request_count(), 2);
}

#[tokio::test]
async fn an_error_status_that_persists_fails_the_answer_cleanly() {
    let app = spawn_app().await;
    let mut script = Script::text(&["never"]);
    script.status = Some(503);
    app.mock.set_default(script.clone());

    let (events, chat) = run(&app, script).await;

    assert_error_then_done(&events);
    assert_eq!(text_of(&events), "");
    assert_eq!(error_code(&events).unwrap(), "upstream_error");
    let done = named(&events, "done").unwrap();
    assert_eq!(done["status"], "failed");
    assert_eq!(done["conversation"]["message"], "");
    // The failure is remembered: a replay says the same.
    let replay = app
        .stream(&format!("/conversations/inference/{chat}"), None)
        .await
        .collect()
        .await;
    assert_eq!(named(&replay, "done").unwrap()["status"], "failed");
    assert_eq!(error_code(&replay).unwrap(), "upstream_error");
}

#[tokio::test]
async fn an_error_chunk_mid_stream_keeps_the_partial_answer_as_incomplete() {
    let app = spawn_app().await;
    let mut script = Script::text(&["one ", "two ", "three"]);
    script.error_after = Some(2);

    let (events, chat) = run(&app, script).await;

    assert_error_then_done(&events);
    assert_eq!(text_of(&events), "one two ");
    assert_eq!(error_code(&events).unwrap(), "upstream_error");
    assert_eq!(named(&events, "done").unwrap()["status"], "incomplete");
    assert_eq!(app.stored_answer(&chat).await["message"], "one two ");
}

/// An upstream stream cut after its first chunk: an `error`, then `done` with the partial
/// answer `incomplete`, as shown and as stored.
async fn assert_a_cut_stream_is_incomplete(app: &TestApp) {
    let mut script = Script::text(&["one ", "two ", "three"]);
    script.cut_after = Some(1);

    let (events, chat) = run(app, script).await;

    assert_error_then_done(&events);
    assert_eq!(text_of(&events), "one ");
    assert_eq!(named(&events, "done").unwrap()["status"], "incomplete");
    assert_eq!(app.stored_answer(&chat).await["message"], "one ");
}

#[tokio::test]
async fn a_cut_connection_is_an_incomplete_answer_not_a_complete_one() {
    assert_a_cut_stream_is_incomplete(&spawn_app().await).await;
}

#[tokio::test]
async fn over_http2_a_cut_stream_is_an_incomplete_answer_and_its_connection_serves_on() {
    let app = spawn_app_over_http2(100).await;
    assert_a_cut_stream_is_incomplete(&app).await;

    // The next answer is whole, whatever became of the connection the cut stream was on.
    let (events, _) = run(&app, Script::text(&["whole"])).await;
    assert_eq!(text_of(&events), "whole");
    assert_eq!(named(&events, "done").unwrap()["status"], "complete");
}

#[tokio::test]
async fn a_stream_that_ends_without_finishing_is_truncated() {
    let app = spawn_app().await;
    let mut script = Script::text(&["one ", "two"]);
    script.finish_chunk = false;
    script.done_marker = false;
    script.usage = false;

    let (events, _) = run(&app, script).await;

    assert_error_then_done(&events);
    assert_eq!(error_code(&events).unwrap(), "upstream_truncated");
    assert_eq!(named(&events, "done").unwrap()["status"], "incomplete");
}

#[tokio::test]
async fn a_finished_stream_without_the_done_marker_is_complete() {
    let app = spawn_app().await;
    let mut script = Script::text(&["fine"]);
    script.done_marker = false;

    let (events, _) = run(&app, script).await;

    assert!(named(&events, "error").is_none(), "{events:?}");
    assert_eq!(named(&events, "done").unwrap()["status"], "complete");
}

#[tokio::test]
async fn a_stream_without_usage_gets_estimated_usage_never_zero() {
    let app = spawn_app().await;
    let mut script = Script::text(&["some ", "text ", "here"]);
    script.usage = false;

    let (events, _) = run(&app, script).await;

    let usage = &named(&events, "done").unwrap()["usage"];
    assert_eq!(usage["estimated"], true);
    assert!(usage["completion_tokens"].as_u64().unwrap() > 0);
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn usage_reported_by_the_provider_is_kept() {
    let app = spawn_app().await;

    let (events, _) = run(&app, Script::text(&["a", "b", "c"])).await;

    let usage = &named(&events, "done").unwrap()["usage"];
    assert_eq!(usage["estimated"], false);
    assert_eq!(usage["completion_tokens"], 3);
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + 3
    );
}

#[tokio::test]
async fn quirky_finish_reasons_are_normalised() {
    let app = spawn_app().await;
    for (reason, expected) in [("eos", "stop"), ("", "stop"), ("length", "length")] {
        let mut script = Script::text(&["x"]);
        script.finish_reason = reason.to_owned();

        let (events, _) = run(&app, script).await;

        let done = named(&events, "done").unwrap();
        assert_eq!(done["status"], "complete", "finish_reason {reason:?}");
        assert_eq!(done["finish_reason"], expected, "finish_reason {reason:?}");
    }
}

#[tokio::test]
async fn comments_keepalive_events_and_missing_ids_are_ignored() {
    let app = spawn_app().await;
    let mut script = Script::text(&["one ", "two"]);
    script.comments = true;
    script.omit_id = true;

    let (events, _) = run(&app, script).await;

    assert_eq!(text_of(&events), "one two");
    assert_eq!(named(&events, "done").unwrap()["status"], "complete");
}

#[tokio::test]
async fn a_silent_upstream_hits_the_first_token_deadline() {
    let app = spawn_app_with(|s| {
        for p in &mut s.providers {
            p.timeouts.first_token = Duration::from_millis(500);
        }
    })
    .await;
    let mut script = Script::text(&["too late"]);
    script.first_delay_ms = 3000;

    let (events, _) = run(&app, script).await;

    assert_error_then_done(&events);
    assert_eq!(error_code(&events).unwrap(), "upstream_timeout");
    assert_eq!(named(&events, "done").unwrap()["status"], "failed");
}

#[tokio::test]
async fn slow_response_headers_also_count_against_the_first_token_deadline() {
    let app = spawn_app_with(|s| {
        for p in &mut s.providers {
            p.timeouts.first_token = Duration::from_millis(500);
        }
    })
    .await;
    let mut script = Script::text(&["too late"]);
    script.headers_delay_ms = 3000;

    let (events, _) = run(&app, script).await;

    assert_eq!(error_code(&events).unwrap(), "upstream_timeout");
    assert_eq!(named(&events, "done").unwrap()["status"], "failed");
}

#[tokio::test]
async fn a_stall_between_chunks_hits_the_idle_deadline() {
    let app = spawn_app_with(|s| {
        for p in &mut s.providers {
            p.timeouts.idle = Duration::from_millis(500);
        }
    })
    .await;
    let mut script = Script::text(&["first ", "second"]);
    script.chunk_delay_ms = 3000;

    let (events, chat) = run(&app, script).await;

    assert_error_then_done(&events);
    assert_eq!(error_code(&events).unwrap(), "upstream_timeout");
    assert_eq!(text_of(&events), "first ");
    assert_eq!(named(&events, "done").unwrap()["status"], "incomplete");
    assert_eq!(app.stored_answer(&chat).await["message"], "first ");
}

#[tokio::test]
async fn an_unreachable_upstream_is_an_error_event_not_a_hung_stream() {
    let app = spawn_app_with(|s| {
        for p in &mut s.providers {
            p.base_url = "http://127.0.0.1:9/v1".into();
        }
    })
    .await;

    let (events, _) = run(&app, Script::text(&["x"])).await;

    assert_error_then_done(&events);
    assert_eq!(error_code(&events).unwrap(), "upstream_error");
    assert_eq!(named(&events, "done").unwrap()["status"], "failed");
}

#[tokio::test]
async fn an_upstream_401_is_reported_without_its_message() {
    let app = spawn_app().await;
    let mut script = Script::text(&["x"]);
    script.status = Some(401);

    let (events, _) = run(&app, script).await;

    let error = named(&events, "error").unwrap();
    assert!(
        !error["message"].as_str().unwrap().contains("mock failure"),
        "{error}"
    );
    assert!(error["message"].as_str().unwrap().contains("401"));
}

async fn app_with_backup() -> (TestApp, MockUpstream) {
    let backup = MockUpstream::start().await.unwrap();
    let backup_url = backup.base_url();
    let app = spawn_app_with(move |s| {
        let mut second = s.providers[0].clone();
        second.name = "backup".into();
        second.base_url = backup_url;
        s.providers[0].fallbacks = vec!["backup/mock-model".into()];
        s.providers.push(second);
    })
    .await;
    (app, backup)
}

#[tokio::test]
async fn a_provider_that_fails_before_the_first_delta_falls_back_to_the_next() {
    let (app, backup) = app_with_backup().await;
    let mut failing = Script::text(&["never"]);
    failing.status = Some(503);
    app.mock.set_default(failing.clone());
    backup.push(Script::text(&["from ", "the ", "backup"]));

    let (events, chat) = run(&app, failing).await;

    assert!(named(&events, "error").is_none(), "{events:?}");
    assert_eq!(text_of(&events), "from the backup");
    assert_eq!(named(&events, "done").unwrap()["status"], "complete");
    assert_eq!(backup.request_count(), 1);
    let answer = app
        .services
        .store()
        .list_messages(chat.parse().unwrap(), false)
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(answer.provider.as_deref(), Some("backup"));
}

#[tokio::test]
async fn no_fallback_after_the_first_delta_or_for_a_refused_request() {
    let (app, backup) = app_with_backup().await;
    let mut mid_stream = Script::text(&["partial ", "answer"]);
    mid_stream.error_after = Some(1);
    let mut refused = Script::text(&["x"]);
    refused.status = Some(400);

    let (after_delta, _) = run(&app, mid_stream).await;
    let (bad_request, _) = run(&app, refused).await;

    assert_eq!(named(&after_delta, "done").unwrap()["status"], "incomplete");
    assert_eq!(text_of(&after_delta), "partial ");
    assert_eq!(named(&bad_request, "done").unwrap()["status"], "failed");
    assert_eq!(backup.request_count(), 0);
}

#[tokio::test]
async fn the_openai_api_falls_back_too() {
    let (app, backup) = app_with_backup().await;
    let mut silent = Script::text(&["never"]);
    silent.cut_after = Some(0);
    app.mock.push(silent);
    backup.push(Script::text(&["rescued"]));

    let response = app
        .post_json(
            "/v1/chat/completions",
            &serde_json::json!({"model": "mock/mock-model", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "rescued");
}

#[tokio::test]
async fn an_answer_whose_row_cannot_be_created_ends_failed_and_never_claims_to_be_saved() {
    use sea_orm::ConnectionTrait;
    let app = spawn_app().await;
    let chat = app.chat_with_question("q").await;
    // The answer's rows are inserted while the upstream call starts; make that insert fail.
    let drop = if std::env::var("SLUICE_TEST_POSTGRES_URL").is_ok_and(|v| !v.is_empty()) {
        "DROP TABLE generations CASCADE"
    } else {
        "DROP TABLE generations"
    };
    app.services
        .store()
        .connection()
        .execute_unprepared(drop)
        .await
        .unwrap();
    app.mock.push(Script::text(&["lost ", "words"]));
    let events = app
        .stream(&format!("/conversations/inference/{chat}"), None)
        .await
        .collect()
        .await;
    assert_eq!(error_code(&events).as_deref(), Some("internal_error"));
    let done = named(&events, "done").unwrap();
    assert_eq!(done["status"], "failed");
    assert!(done["conversation"].is_null(), "{done}");
}

#[tokio::test]
async fn an_answer_row_that_cannot_be_written_fails_alone_in_its_batch() {
    let app = spawn_app().await;
    let chat = app.create_chat("batch").await;
    let question = app.ask(&chat, "q").await;
    let chat_id: uuid::Uuid = chat.parse().unwrap();
    let start = |chat_id: uuid::Uuid, reply_to: uuid::Uuid| sluice::store::NewGeneration {
        message_id: uuid::Uuid::now_v7(),
        workspace_id: app.services.default_workspace,
        chat_id,
        reply_to,
        provider: "mock".into(),
        model: "m".into(),
        prompt_tokens: 3,
        owner: uuid::Uuid::now_v7(),
        replaces: None,
        agent_version: None,
    };
    let good = start(chat_id, question.parse().unwrap());
    // A chat that does not exist: the foreign key refuses this one row.
    let bad = start(uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let written = app
        .services
        .store()
        .write_batch(&[bad, good], &[])
        .await
        .expect("the batch as a whole is written");
    assert!(written.started[0].is_err());
    let (row, _) = written.started[1]
        .as_ref()
        .expect("the good start is written");
    let stored = app
        .services
        .store()
        .list_messages(chat_id, false)
        .await
        .unwrap();
    assert!(
        stored
            .iter()
            .any(|m| m.id == row.id && m.status == "streaming")
    );
}
