//! The OpenAI-compatible dialect: chunk format, request relay, quirks and faults, usage.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;
use crate::mock::MockToolCall;

fn request(stream: bool) -> Value {
    json!({
        "model": "mock/mock-model",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": stream,
    })
}

async fn stream_chunks(app: &TestApp, body: &Value) -> Vec<String> {
    let response = app
        .post_json("/v1/chat/completions", body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    SseClient::new(response)
        .collect()
        .await
        .into_iter()
        .map(|e| e.data)
        .collect()
}

fn parsed(chunks: &[String]) -> Vec<Value> {
    chunks
        .iter()
        .filter(|c| *c != "[DONE]")
        .map(|c| serde_json::from_str(c).unwrap())
        .collect()
}

fn content(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect()
}

#[tokio::test]
async fn a_stream_has_one_id_the_role_first_the_finish_reason_last_usage_then_done() {
    let app = spawn_app().await;
    app.mock.push(Script::text(&["Hello", " there"]));
    let mut body = request(true);
    body["stream_options"] = json!({"include_usage": true});

    let raw = stream_chunks(&app, &body).await;

    assert_eq!(raw.last().unwrap(), "[DONE]");
    let chunks = parsed(&raw);
    assert_eq!(content(&chunks), "Hello there");
    let ids: std::collections::HashSet<_> =
        chunks.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 1);
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk" && c["model"] == "mock/mock-model")
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 2);
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert!(
        chunks[..chunks.len() - 2]
            .iter()
            .all(|c| c["choices"][0]["finish_reason"].is_null())
    );
}

#[tokio::test]
async fn without_include_usage_there_is_no_usage_chunk() {
    let app = spawn_app().await;

    let chunks = parsed(&stream_chunks(&app, &request(true)).await);

    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    assert_eq!(content(&chunks), "Hello from the mock upstream.");
}

#[tokio::test]
async fn a_non_streaming_request_gets_a_chat_completion() {
    let app = spawn_app().await;
    app.mock.push(Script::text(&["Hello", " world"]));

    let response = app
        .post_json("/v1/chat/completions", &request(false))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["content"], "Hello world");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["completion_tokens"], 2);
}

#[tokio::test]
async fn the_text_is_relayed_unchanged_even_carriage_returns() {
    let app = spawn_app().await;
    app.mock.push(Script::text(&["a\r", "\nb\r\n"]));

    let chunks = parsed(&stream_chunks(&app, &request(true)).await);

    assert_eq!(content(&chunks), "a\r\nb\r\n");
}

#[tokio::test]
async fn request_fields_are_relayed_to_the_provider_as_given() {
    let app = spawn_app().await;
    let body = json!({
        "model": "mock/mock-model",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "42"}
        ],
        "temperature": 0.3, "top_p": 0.9, "max_tokens": 50, "max_completion_tokens": 60,
        "stop": ["\n\n"], "seed": 7, "response_format": {"type": "json_object"},
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "tool_choice": "auto", "user": "end-user-1", "frequency_penalty": 0.5,
    });

    let response = app
        .post_json("/v1/chat/completions", &body)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    let sent = app.mock.requests().pop().unwrap();
    assert_eq!(sent["model"], "mock-model");
    assert_eq!(sent["messages"], body["messages"]);
    for field in [
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "seed",
        "response_format",
        "tools",
        "tool_choice",
        "user",
        "frequency_penalty",
    ] {
        assert_eq!(sent[field], body[field], "{field}");
    }
    assert_eq!(sent["stream"], true);
}

#[tokio::test]
async fn tool_call_deltas_are_relayed_chunk_by_chunk_with_the_upstream_ids() {
    let app = spawn_app().await;
    let mut script = Script::text(&[]);
    script.tool_calls = vec![
        MockToolCall {
            id: Some("call_up_1".into()),
            name: "get_weather".into(),
            arguments: "{\"city\":\"Paris\"}".into(),
        },
        MockToolCall {
            id: None,
            name: "get_time".into(),
            arguments: "{}".into(),
        },
    ];
    app.mock.push(script);

    let chunks = parsed(&stream_chunks(&app, &request(true)).await);

    let deltas: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
        .collect();
    assert_eq!(
        deltas.len(),
        4,
        "each upstream piece is its own chunk: {chunks:?}"
    );
    assert_eq!(deltas[0]["id"], "call_up_1");
    assert_eq!(deltas[0]["function"]["name"], "get_weather");
    let args: String = deltas
        .iter()
        .filter(|d| d["index"] == 0)
        .map(|d| d["function"]["arguments"].as_str().unwrap())
        .collect();
    assert_eq!(args, "{\"city\":\"Paris\"}");
    let second = deltas.iter().find(|d| d["index"] == 1).unwrap();
    assert!(
        second["id"].as_str().unwrap().starts_with("call_"),
        "generated id: {second}"
    );
    let last = &chunks[chunks.len() - 1];
    assert_eq!(last["choices"][0]["finish_reason"], "tool_calls");
}

#[tokio::test]
async fn quirky_upstream_chunks_are_normalised() {
    let app = spawn_app().await;
    for reason in ["eos", ""] {
        let mut script = Script::text(&["x", "y"]);
        script.omit_id = true;
        script.comments = true;
        script.finish_reason = reason.into();
        app.mock.push(script);

        let raw = stream_chunks(&app, &request(true)).await;

        assert_eq!(raw.last().unwrap(), "[DONE]");
        let chunks = parsed(&raw);
        assert_eq!(content(&chunks), "xy");
        assert!(
            chunks
                .iter()
                .all(|c| c["id"].as_str().unwrap().starts_with("chatcmpl-"))
        );
        assert_eq!(
            chunks.last().unwrap()["choices"][0]["finish_reason"],
            "stop",
            "{reason:?}"
        );
    }
}

#[tokio::test]
async fn a_failure_mid_stream_ends_with_an_error_object_and_no_done() {
    let app = spawn_app().await;
    for fault in ["error_after", "cut_after"] {
        let mut script = Script::text(&["one ", "two ", "three"]);
        if fault == "error_after" {
            script.error_after = Some(1);
        } else {
            script.cut_after = Some(1);
        }
        app.mock.push(script);

        let raw = stream_chunks(&app, &request(true)).await;

        assert!(!raw.iter().any(|c| c == "[DONE]"), "{fault}: {raw:?}");
        let last: Value = serde_json::from_str(raw.last().unwrap()).unwrap();
        assert!(last["error"]["message"].is_string(), "{fault}: {last}");
        assert_eq!(content(&parsed(&raw[..raw.len() - 1])), "one ");
    }
}

#[tokio::test]
async fn a_failure_before_the_first_delta_is_an_http_error_in_openai_shape() {
    let app = spawn_app().await;
    let mut failing = Script::text(&["x"]);
    failing.status = Some(503);
    app.mock.set_default(failing);

    let streamed = app
        .post_json("/v1/chat/completions", &request(true))
        .send()
        .await
        .unwrap();
    let plain = app
        .post_json("/v1/chat/completions", &request(false))
        .send()
        .await
        .unwrap();

    assert_eq!(streamed.status(), 502);
    assert_eq!(plain.status(), 502);
    let body: Value = plain.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_error");
    assert!(body["error"]["type"].is_string());
}

#[tokio::test]
async fn an_upstream_refusal_keeps_its_status() {
    let app = spawn_app().await;
    let mut script = Script::text(&["x"]);
    script.status = Some(400);
    app.mock.push(script);

    let response = app
        .post_json("/v1/chat/completions", &request(false))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn a_silent_upstream_is_a_504() {
    let app = spawn_app_with(|s| {
        for p in &mut s.providers {
            p.timeouts.first_token = Duration::from_millis(300);
        }
    })
    .await;
    let mut script = Script::text(&["late"]);
    script.first_delay_ms = 2000;
    app.mock.push(script);

    let response = app
        .post_json("/v1/chat/completions", &request(true))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 504);
}

#[tokio::test]
async fn a_client_that_disconnects_cancels_upstream_and_estimated_usage_is_recorded() {
    let app = spawn_app().await;
    let mut script = Script::text(&["a ", "b ", "c ", "d ", "e ", "f ", "g ", "h "]);
    script.chunk_delay_ms = 150;
    app.mock.push(script);
    let response = app
        .post_json("/v1/chat/completions", &request(true))
        .send()
        .await
        .unwrap();
    let mut sse = SseClient::new(response);
    sse.next().await.unwrap();

    sse.disconnect();

    assert!(
        app.mock.wait_for_aborted(1, Duration::from_secs(5)).await,
        "upstream not cancelled"
    );
    let workspace = app.services.default_workspace;
    eventually(Duration::from_secs(5), || async {
        !app.services
            .store()
            .usage_records(workspace)
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    let records = app.services.store().usage_records(workspace).await.unwrap();
    assert_eq!(records.len(), 1);
    assert!(records[0].estimated);
    assert!(records[0].completion_tokens > 0);
    assert_eq!(records[0].provider, "mock");
    assert_eq!(records[0].model, "mock-model");
}

#[tokio::test]
async fn usage_is_charged_to_the_workspace_of_the_key() {
    let app = spawn_app().await;

    app.post_json("/v1/chat/completions", &request(false))
        .send()
        .await
        .unwrap();

    let records = app
        .services
        .store()
        .usage_records(app.services.default_workspace)
        .await
        .unwrap();
    assert_eq!(records.len(), 1);
    assert!(!records[0].estimated);
    assert_eq!(records[0].completion_tokens, 5);
}

#[tokio::test]
async fn models_are_listed_as_provider_slash_model_and_aliases_resolve() {
    let app = spawn_app_with(|s| {
        s.aliases.insert("fast".into(), "mock/mock-model".into());
    })
    .await;

    let models: Value = app
        .get("/v1/models")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut via_alias = request(false);
    via_alias["model"] = json!("fast");
    let by_alias = app
        .post_json("/v1/chat/completions", &via_alias)
        .send()
        .await
        .unwrap();
    let mut bare = request(false);
    bare["model"] = json!("mock-model");
    let by_bare_name = app
        .post_json("/v1/chat/completions", &bare)
        .send()
        .await
        .unwrap();

    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "mock/mock-model");
    assert_eq!(models["data"][0]["owned_by"], "mock");
    assert_eq!(by_alias.status(), 200);
    assert_eq!(by_bare_name.status(), 200);
    assert_eq!(app.mock.requests()[0]["model"], "mock-model");
}

#[tokio::test]
async fn errors_use_openai_envelope_and_status_codes() {
    let app = spawn_app().await;
    let mut unknown = request(false);
    unknown["model"] = json!("nope/none");

    let not_found = app
        .post_json("/v1/chat/completions", &unknown)
        .send()
        .await
        .unwrap();
    let unauthenticated = app
        .client
        .post(app.url("/v1/chat/completions"))
        .json(&request(false))
        .send()
        .await
        .unwrap();
    let malformed = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(&app.key)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    let mut bad_temperature = request(false);
    bad_temperature["temperature"] = json!(9);
    let invalid = app
        .post_json("/v1/chat/completions", &bad_temperature)
        .send()
        .await
        .unwrap();

    assert_eq!(not_found.status(), 404);
    let body: Value = not_found.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_not_found");
    assert_eq!(body["error"]["param"], "model");
    assert_eq!(unauthenticated.status(), 401);
    assert_eq!(
        unauthenticated.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_api_key"
    );
    assert_eq!(malformed.status(), 400);
    assert!(malformed.json::<Value>().await.unwrap()["error"]["message"].is_string());
    assert_eq!(invalid.status(), 400);
    assert_eq!(
        invalid.json::<Value>().await.unwrap()["error"]["param"],
        "temperature"
    );
}

#[tokio::test]
async fn what_the_provider_cannot_do_is_a_400_naming_the_field() {
    let app = spawn_app_with(|s| s.providers.clear()).await;
    let mut body = json!({"model": "demo", "messages": [{"role": "user", "content": "hi"}]});
    body["tools"] = json!([{"type": "function", "function": {"name": "f"}}]);

    let refused = app
        .post_json("/v1/chat/completions", &body)
        .send()
        .await
        .unwrap();
    let models: Value = app
        .get("/v1/models")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    assert_eq!(refused.status(), 400);
    assert_eq!(
        refused.json::<Value>().await.unwrap()["error"]["param"],
        "tools"
    );
    assert_eq!(models["data"][0]["id"], "demo");
}

#[tokio::test]
async fn a_publishable_key_may_not_use_the_openai_api() {
    let app = spawn_app().await;
    let key = sluice::service::create_key(
        app.services.store(),
        app.services.default_workspace,
        sluice::service::KeyKind::Publishable,
        None,
        false,
        vec![],
        None,
    )
    .await
    .unwrap();
    use secrecy::ExposeSecret;

    let response = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(key.key.expose_secret())
        .json(&request(false))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 403);
    assert!(response.json::<Value>().await.unwrap()["error"]["message"].is_string());
}

#[tokio::test]
async fn the_remaining_mock_faults_behave_through_v1() {
    let app = spawn_app_with(|s| {
        for p in &mut s.providers {
            p.timeouts.idle = Duration::from_millis(400);
        }
    })
    .await;

    // No [DONE] after a finished answer: still a clean, complete stream.
    let mut no_done = Script::text(&["fin", "ished"]);
    no_done.done_marker = false;
    app.mock.push(no_done);
    let raw = stream_chunks(&app, &request(true)).await;
    assert_eq!(raw.last().unwrap(), "[DONE]");
    assert_eq!(content(&parsed(&raw)), "finished");

    // No usage from the provider: the usage chunk still comes, estimated.
    let mut no_usage = Script::text(&["some ", "words"]);
    no_usage.usage = false;
    app.mock.push(no_usage);
    let mut body = request(true);
    body["stream_options"] = json!({"include_usage": true});
    let chunks = parsed(&stream_chunks(&app, &body).await);
    assert!(
        chunks.last().unwrap()["usage"]["completion_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );

    // Events split inside a UTF-8 character reassemble.
    let mut split = Script::text(&["caf\u{e9} ", "\u{1F600}"]);
    split.split_utf8 = true;
    app.mock.push(split);
    assert_eq!(
        content(&parsed(&stream_chunks(&app, &request(true)).await)),
        "caf\u{e9} \u{1F600}"
    );

    // A stall after the first chunk: an error object, no [DONE].
    let mut stall = Script::text(&["first ", "never"]);
    stall.chunk_delay_ms = 2000;
    app.mock.push(stall);
    let raw = stream_chunks(&app, &request(true)).await;
    assert!(!raw.iter().any(|c| c == "[DONE]"), "{raw:?}");
    let last: Value = serde_json::from_str(raw.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_timeout");

    // A stream that just stops: an error object, no [DONE].
    let mut truncated = Script::text(&["cut ", "short"]);
    truncated.finish_chunk = false;
    truncated.done_marker = false;
    truncated.usage = false;
    app.mock.push(truncated);
    let raw = stream_chunks(&app, &request(true)).await;
    assert!(!raw.iter().any(|c| c == "[DONE]"), "{raw:?}");
    let last: Value = serde_json::from_str(raw.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_truncated");

    let wrong_method = app.get("/v1/chat/completions").send().await.unwrap();
    assert_eq!(wrong_method.status(), 405);
    assert!(wrong_method.json::<Value>().await.unwrap()["error"]["message"].is_string());
}
