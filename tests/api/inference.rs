//! The inference stream: deltas, ids, done, replay, attach, resume, disconnect, stop, faults.

use std::time::Duration;

use crate::helpers::*;

fn slow(chunks: &[&str], delay_ms: u64) -> Script {
    let mut s = Script::text(chunks);
    s.chunk_delay_ms = delay_ms;
    s
}

#[tokio::test]
async fn a_stream_relays_every_delta_then_done_and_saves_the_answer() {
    let app = spawn_app().await;
    app.mock.push(Script::text(&["Hello", ", ", "world", "!"]));
    let chat = app.chat_with_question("Say hello").await;

    let mut sse = app
        .stream(&format!("/conversations/inference/{chat}"), None)
        .await;
    assert_eq!(sse.status, 200);
    assert_eq!(sse.headers["content-type"], "text/event-stream");
    assert_eq!(sse.headers["cache-control"], "no-cache");
    assert_eq!(sse.headers["x-accel-buffering"], "no");
    assert!(sse.headers.get("content-encoding").is_none());
    let events = sse.collect().await;

    assert_eq!(text_of(&events), "Hello, world!");
    let done = named(&events, "done").expect("done event");
    assert_eq!(done["status"], "complete");
    assert_eq!(done["finish_reason"], "stop");
    assert_eq!(done["conversation"]["role"], "Assistant");
    assert_eq!(done["conversation"]["message"], "Hello, world!");
    assert_eq!(done["usage"]["estimated"], false);
    let last = events.last().unwrap();
    assert_eq!(last.event, "done");
    let message_id = done["conversation"]["id"].as_str().unwrap();
    assert_eq!(last.id, format!("{message_id}:done"));
    // Each delta's id is the byte offset after it.
    let ids: Vec<&str> = events
        .iter()
        .filter(|e| e.event == "message")
        .map(|e| e.id.as_str())
        .collect();
    assert_eq!(ids.last().unwrap(), &format!("{message_id}:13"));
    assert_eq!(app.stored_answer(&chat).await["message"], "Hello, world!");
    assert_eq!(app.mock.request_count(), 1);
}

#[tokio::test]
async fn answers_one_after_another_reuse_one_upstream_connection() {
    let app = spawn_app().await;
    let chat = app.create_chat("pool").await;
    for (i, question) in ["one", "two", "three"].into_iter().enumerate() {
        app.mock.push(Script::text(&["a", "b"]));
        app.ask(&chat, question).await;
        let events = app
            .stream(&format!("/conversations/inference/{chat}"), None)
            .await
            .collect()
            .await;
        assert_eq!(text_of(&events), "ab");
        assert_eq!(named(&events, "done").unwrap()["status"], "complete");
        // The body was read to its end after `[DONE]`, so the connection went back to the pool.
        assert_eq!(app.mock.connection_count(), 1, "after answer {}", i + 1);
    }
    assert_eq!(app.mock.request_count(), 3);
}

#[tokio::test]
async fn over_http2_answers_share_connections_up_to_the_stream_limit() {
    let app = spawn_app_over_http2(2).await;
    // Each answer lasts over a second, so that the five overlap even on a busy machine.
    let mut script = slow(&["a", "b", "c"], 100);
    script.first_delay_ms = 1000;
    app.mock.set_default(script);
    let mut chats = Vec::new();
    for i in 0..5 {
        chats.push(app.chat_with_question(&format!("question {i}")).await);
    }
    // Five answers at once, at most two on a connection: three connections.
    let app = &app;
    let answers = futures::future::join_all(chats.iter().map(|chat| async move {
        app.stream(&format!("/conversations/inference/{chat}"), None)
            .await
            .collect()
            .await
    }))
    .await;
    for events in &answers {
        assert_eq!(text_of(events), "abc");
        assert_eq!(named(events, "done").unwrap()["status"], "complete");
    }
    assert_eq!(app.mock.connection_count(), 3);
    // Later answers go on the connections already open.
    let chat = app.chat_with_question("one more").await;
    let events = app
        .stream(&format!("/conversations/inference/{chat}"), None)
        .await
        .collect()
        .await;
    assert_eq!(text_of(&events), "abc");
    assert_eq!(app.mock.connection_count(), 3);
    assert_eq!(app.mock.request_count(), 6);
}

#[tokio::test]
async fn a_client_speaking_h2c_streams_an_answer_from_sluice() {
    let app = spawn_app().await;
    app.mock.push(Script::text(&["over ", "h2"]));
    let chat = app.chat_with_question("which protocol?").await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = h2
        .get(format!("{}/conversations/inference/{chat}", app.base))
        .bearer_auth(&app.key)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let events = SseClient::new(response).collect().await;
    assert_eq!(text_of(&events), "over h2");
    assert_eq!(named(&events, "done").unwrap()["status"], "complete");
}

#[tokio::test]
async fn the_context_holds_the_whole_history_in_order() {
    let app = spawn_app().await;
    let chat = app.create_chat("history").await;
    app.ask(&chat, "first").await;
    app.stream(&format!("/conversations/inference/{chat}"), None)
        .await
        .collect()
        .await;
    app.ask(&chat, "second").await;
    app.stream(&format!("/conversations/inference/{chat}"), None)
        .await
        .collect()
        .await;

    let requests = app.mock.requests();
    assert_eq!(requests.len(), 2);
    let messages = requests[1]["messages"].as_array().unwrap();
    let roles: Vec<&str> = messages
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "user"]);
    assert_eq!(messages[0]["content"], "first");
    assert_eq!(messages[2]["content"], "second");
    assert_eq!(requests[1]["stream"], true);
}

#[tokio::test]
async fn tricky_text_is_reassembled_byte_for_byte_from_the_stream_and_the_database() {
    let app = spawn_app().await;
    let mut script = Script::text(&[
        "  leading spaces\r",
        "\nCRLF split above\r\nCRLF inside\rlone CR\n\n\nblank lines\n",
        "data: not a field\n: not a comment\n",
        "emoji 😀 split 👩‍👩‍👧",
        " end\n",
    ]);
    script.split_utf8 = true;
    app.mock.push(script);
    let chat = app.chat_with_question("be tricky").await;

    let events = app
        .stream(&format!("/conversations/inference/{chat}"), None)
        .await
        .collect()
        .await;

    let expected = "  leading spaces\nCRLF split above\nCRLF inside\nlone CR\n\n\nblank lines\ndata: not a field\n: not a comment\nemoji 😀 split 👩‍👩‍👧 end\n";
    assert_eq!(text_of(&events), expected);
    assert_eq!(app.stored_answer(&chat).await["message"], expected);
    let done = named(&events, "done").unwrap();
    assert_eq!(done["conversation"]["message"], expected);
}

#[tokio::test]
async fn concurrent_readers_share_one_upstream_request() {
    let app = spawn_app().await;
    app.mock
        .set_default(slow(&["one ", "two ", "three ", "four"], 50));
    let chat = app.chat_with_question("count").await;
    let path = format!("/conversations/inference/{chat}");

    let (mut a, mut b, mut c) = tokio::join!(
        app.stream(&path, None),
        app.stream(&path, None),
        app.stream(&path, None)
    );
    let (ea, eb, ec) = tokio::join!(a.collect(), b.collect(), c.collect());

    for events in [&ea, &eb, &ec] {
        assert_eq!(text_of(events), "one two three four");
        assert_eq!(named(events, "done").unwrap()["status"], "complete");
    }
    assert_eq!(app.mock.request_count(), 1);
}

#[tokio::test]
async fn a_finished_answer_is_replayed_without_calling_upstream_again() {
    let app = spawn_app().await;
    app.mock.push(Script::text(&["stored ", "answer"]));
    let chat = app.chat_with_question("q").await;
    let first = app
        .stream(&format!("/conversations/inference/{chat}"), None)
        .await
        .collect()
        .await;

    let replay = app
        .stream(&format!("/conversations/inference/{chat}"), None)
        .await
        .collect()
        .await;

    assert_eq!(text_of(&replay), "stored answer");
    assert_eq!(named(&replay, "done"), named(&first, "done"));
    assert_eq!(app.mock.request_count(), 1);
}

#[tokio::test]
async fn the_stream_also_accepts_the_id_of_a_human_conversation() {
    let app = spawn_app().await;
    let chat = app.create_chat("by message").await;
    let question = app.ask(&chat, "q").await;

    let events = app
        .stream(&format!("/conversations/inference/{question}"), None)
        .await
        .collect()
        .await;

    assert_eq!(text_of(&events), "Hello from the mock upstream.");
}

#[tokio::test]
async fn a_client_that_disconnects_does_not_stop_the_generation() {
    let app = spawn_app().await;
    app.mock
        .push(slow(&["a", "b", "c", "d", "e", "f", "g", "h"], 60));
    let chat = app.chat_with_question("q").await;
    let mut sse = app
        .stream(&format!("/conversations/inference/{chat}"), None)
        .await;
    let first = loop {
        let e = sse.next().await.unwrap();
        if e.event == "message" {
            break e;
        }
    };
    assert_eq!(first.data, "a");

    sse.disconnect();

    eventually(Duration::from_secs(10), || async {
        app.conversations(&chat)
            .await
            .iter()
            .any(|c| c["role"] == "Assistant" && c["message"] == "abcdefgh")
    })
    .await;
    let replay = app
        .stream(&format!("/conversations/inference/{chat}"), None)
        .await
        .collect()
        .await;
    assert_eq!(named(&replay, "done").unwrap()["status"], "complete");
    assert_eq!(app.mock.aborted_count(), 0);
}

async fn read_until_offset(sse: &mut SseClient, min_len: usize) -> (String, String) {
    let mut text = String::new();
    loop {
        let e = sse.next().await.expect("stream ended early");
        if e.event == "message" {
            text.push_str(&e.data);
            if text.len() >= min_len {
                return (text, e.id);
            }
        }
    }
}

#[tokio::test]
async fn a_reader_resumes_mid_stream_with_the_last_event_id_header() {
    let app = spawn_app().await;
    app.mock.push(slow(
        &["alpha ", "beta ", "gamma ", "delta ", "epsilon"],
        80,
    ));
    let chat = app.chat_with_question("q").await;
    let path = format!("/conversations/inference/{chat}");
    let mut sse = app.stream(&path, None).await;
    let (seen, last_id) = read_until_offset(&mut sse, 6).await;
    sse.disconnect();

    let rest = app.stream(&path, Some(&last_id)).await.collect().await;

    assert_eq!(
        format!("{seen}{}", text_of(&rest)),
        "alpha beta gamma delta epsilon"
    );
    assert_eq!(named(&rest, "done").unwrap()["status"], "complete");
    assert_eq!(app.mock.request_count(), 1);
}

#[tokio::test]
async fn a_reader_resumes_from_the_database_with_the_query_parameter() {
    let app = spawn_app().await;
    app.mock.push(Script::text(&["0123456789", "abcdef"]));
    let chat = app.chat_with_question("q").await;
    let path = format!("/conversations/inference/{chat}");
    let all = app.stream(&path, None).await.collect().await;
    let message_id = named(&all, "done").unwrap()["conversation"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let rest = app
        .stream(&format!("{path}?last_event_id={message_id}:10"), None)
        .await
        .collect()
        .await;

    assert_eq!(text_of(&rest), "abcdef");
    assert_eq!(
        rest.iter().find(|e| e.event == "message").unwrap().id,
        format!("{message_id}:16")
    );
}

#[tokio::test]
async fn a_reader_that_had_every_delta_gets_done_alone_and_one_that_had_done_gets_204() {
    let app = spawn_app().await;
    app.mock.push(Script::text(&["complete"]));
    let chat = app.chat_with_question("q").await;
    let path = format!("/conversations/inference/{chat}");
    let all = app.stream(&path, None).await.collect().await;
    let message_id = named(&all, "done").unwrap()["conversation"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let only_done = app
        .stream(&path, Some(&format!("{message_id}:8")))
        .await
        .collect()
        .await;
    let after_done = app
        .get(&path)
        .header("last-event-id", format!("{message_id}:done"))
        .send()
        .await
        .unwrap();

    assert_eq!(only_done.len(), 1);
    assert_eq!(only_done[0].event, "done");
    assert_eq!(after_done.status(), 204);
}

#[tokio::test]
async fn malformed_or_impossible_resume_points_are_400() {
    let app = spawn_app().await;
    app.mock.push(Script::text(&["h\u{e9}llo"]));
    let chat = app.chat_with_question("q").await;
    let path = format!("/conversations/inference/{chat}");
    let all = app.stream(&path, None).await.collect().await;
    let message_id = named(&all, "done").unwrap()["conversation"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    for bad in [
        "garbage".to_owned(),
        format!("{message_id}:x"),
        format!("{message_id}:99"),
        format!("{message_id}:2"),
    ] {
        let r = app
            .get(&path)
            .header("last-event-id", bad.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "Last-Event-ID {bad}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["field"], "Last-Event-ID");
    }
}

#[tokio::test]
async fn stop_cancels_upstream_saves_the_partial_answer_and_ends_every_stream() {
    let app = spawn_app().await;
    app.mock.push(slow(
        &[
            "partial ", "answer ", "that ", "never ", "ends ", "a", "b", "c", "d", "e", "f",
        ],
        200,
    ));
    let chat = app.chat_with_question("q").await;
    let path = format!("/conversations/inference/{chat}");
    let mut a = app.stream(&path, None).await;
    let mut b = app.stream(&path, None).await;
    read_until_offset(&mut a, 8).await;

    let stop = app
        .post_json(
            &format!("/conversations/stop/{chat}"),
            &serde_json::json!({}),
        )
        .send()
        .await
        .unwrap();

    assert_eq!(stop.status(), 200);
    let body: serde_json::Value = stop.json().await.unwrap();
    assert_eq!(body["stopped"], true);
    assert_eq!(body["status"], "cancelled");
    let saved = body["conversation"]["message"].as_str().unwrap().to_owned();
    assert!(saved.starts_with("partial "), "{saved}");
    let rest_a = a.collect().await;
    let all_b = b.collect().await;
    assert_eq!(named(&rest_a, "done").unwrap()["status"], "cancelled");
    assert_eq!(text_of(&all_b), saved);
    assert_eq!(named(&all_b, "done").unwrap()["status"], "cancelled");
    assert!(
        app.mock.wait_for_aborted(1, Duration::from_secs(5)).await,
        "upstream request not cancelled"
    );
    assert_eq!(app.stored_answer(&chat).await["message"], saved);
    // Nothing is running any more: a second stop stops nothing.
    let again: serde_json::Value = app
        .post_json(
            &format!("/conversations/stop/{chat}"),
            &serde_json::json!({}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["stopped"], false);
}

#[tokio::test]
async fn the_running_text_is_checkpointed_while_streaming() {
    let app = spawn_app().await;
    app.mock.push(slow(
        &[
            "checkpointed ",
            "x",
            "x",
            "x",
            "x",
            "x",
            "x",
            "x",
            "x",
            "x",
            "x",
        ],
        100,
    ));
    let chat = app.chat_with_question("q").await;
    let mut sse = app
        .stream(&format!("/conversations/inference/{chat}"), None)
        .await;
    read_until_offset(&mut sse, 12).await;

    eventually(Duration::from_secs(3), || async {
        app.conversations(&chat).await.iter().any(|c| {
            c["role"] == "Assistant" && c["message"].as_str().unwrap().starts_with("checkpointed ")
        })
    })
    .await;
    let events = sse.collect().await;
    assert_eq!(named(&events, "done").unwrap()["status"], "complete");
}

#[tokio::test]
async fn answers_checkpointed_together_each_keep_their_own_text() {
    let app = spawn_app().await;
    let mut chats = Vec::new();
    let mut streams = Vec::new();
    for name in ["first", "second", "third"] {
        let mut chunks = vec![format!("{name} answer ")];
        chunks.extend(std::iter::repeat_n("x".to_owned(), 12));
        let chunks: Vec<&str> = chunks.iter().map(String::as_str).collect();
        app.mock.push(slow(&chunks, 300));
        let chat = app.chat_with_question(name).await;
        let mut sse = app
            .stream(&format!("/conversations/inference/{chat}"), None)
            .await;
        read_until_offset(&mut sse, name.len() + 8).await;
        chats.push((name, chat));
        streams.push(sse);
    }
    // All three are running (each takes about 4 s): checkpoints write all of them, each row
    // with its own text, before any answer is saved.
    eventually(Duration::from_millis(2500), || async {
        let mut all = true;
        for (name, chat) in &chats {
            let stored = app.conversations(chat).await;
            all &= stored.iter().any(|c| {
                c["role"] == "Assistant"
                    && c["message"]
                        .as_str()
                        .unwrap()
                        .starts_with(&format!("{name} answer "))
            });
        }
        all
    })
    .await;
    for ((name, chat), mut sse) in chats.into_iter().zip(streams) {
        let events = sse.collect().await;
        assert_eq!(named(&events, "done").unwrap()["status"], "complete");
        let expected = format!("{name} answer {}", "x".repeat(12));
        assert_eq!(app.stored_answer(&chat).await["message"], expected.as_str());
    }
}

#[tokio::test]
async fn keep_alive_comments_are_sent_while_waiting_for_the_first_token() {
    let app = spawn_app_with(|s| s.keepalive = Duration::from_millis(300)).await;
    let mut script = Script::text(&["late"]);
    script.first_delay_ms = 1200;
    app.mock.push(script);
    let chat = app.chat_with_question("q").await;

    let raw = app
        .get(&format!("/conversations/inference/{chat}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    assert!(raw.starts_with(": ok\n\n"), "{raw}");
    assert!(raw.matches(": keep-alive\n").count() >= 2, "{raw}");
    assert!(raw.contains("data: late\n"), "{raw}");
}

#[tokio::test]
async fn a_chat_without_a_question_is_409_and_an_unknown_id_404() {
    let app = spawn_app().await;
    let chat = app.create_chat("empty").await;

    let empty = app
        .get(&format!("/conversations/inference/{chat}"))
        .send()
        .await
        .unwrap();
    let unknown = app
        .get(&format!(
            "/conversations/inference/{}",
            uuid::Uuid::new_v4()
        ))
        .send()
        .await
        .unwrap();
    let not_uuid = app
        .get("/conversations/inference/123")
        .send()
        .await
        .unwrap();

    assert_eq!(empty.status(), 409);
    assert_eq!(unknown.status(), 404);
    assert_eq!(not_uuid.status(), 400);
}

#[tokio::test]
async fn without_a_provider_the_demo_model_answers_and_says_so() {
    let app = spawn_app_with(|s| s.providers.clear()).await;
    let chat = app.chat_with_question("ping").await;

    let events = app
        .stream(&format!("/conversations/inference/{chat}"), None)
        .await
        .collect()
        .await;
    let ready: serde_json::Value = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    let text = text_of(&events);
    assert!(text.contains("demo model"), "{text}");
    assert!(text.ends_with("You said: ping"), "{text}");
    assert_eq!(named(&events, "done").unwrap()["status"], "complete");
    assert_eq!(ready["demo_model"], true);
    assert_eq!(ready["models"], serde_json::json!(["demo"]));
    assert_eq!(app.mock.request_count(), 0);
}
