//! The agent API: versioned agents, their chats and messages (sync and streamed), what a
//! publishable key may do, and the dialect's error and rate-limit envelopes.

use std::collections::BTreeSet;
use std::time::Duration;

use eventsource_stream::Event;
use reqwest::Method;
use serde_json::{Value, json};
use sluice::config::RateLimits;
use sluice::service::KeyKind;

use crate::helpers::{SseClient, TestApp, spawn_app, spawn_app_with};
use crate::internet::{app_searching_at, fake_web};
use crate::lifecycle::slow;
use crate::mock::Script;

const AGENT_FIELDS: [&str; 14] = [
    "id",
    "name",
    "description",
    "systemPrompt",
    "model",
    "provider",
    "temperature",
    "maxTokens",
    "tools",
    "agentType",
    "teamId",
    "version",
    "createdAt",
    "updatedAt",
];

const VERSION_FIELDS: [&str; 11] = [
    "version",
    "createdAt",
    "name",
    "description",
    "systemPrompt",
    "model",
    "provider",
    "temperature",
    "maxTokens",
    "tools",
    "agentType",
];

const ANSWER_FIELDS: [&str; 8] = [
    "id",
    "chatId",
    "content",
    "role",
    "status",
    "agentVersion",
    "sources",
    "createdAt",
];

const LISTED_MESSAGE_FIELDS: [&str; 5] = ["id", "content", "role", "status", "createdAt"];

/// Lists are newest first by creation time: rows made in the same millisecond would tie.
const APART: Duration = Duration::from_millis(5);

/// A JSON request of the agent API with `key`: the status and the JSON body (null if none).
async fn send(
    app: &TestApp,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    app.request_as(Some(key), method, path, body).await
}

/// Creates an agent with the test's secret key.
async fn agent(app: &TestApp, body: Value) -> Value {
    let (status, created) = send(app, &app.key, Method::POST, "/agent", Some(body)).await;
    assert_eq!(status, 201, "{created}");
    created
}

/// Creates a chat with `key`.
async fn new_chat(app: &TestApp, key: &str, body: Value) -> Value {
    let (status, created) = send(app, key, Method::POST, "/chat", Some(body)).await;
    assert_eq!(status, 200, "{created}");
    created
}

/// Asks a question and waits for the answer (no streaming): the assistant message.
async fn say(app: &TestApp, key: &str, chat: &str, text: &str) -> Value {
    let (status, answer) = send(
        app,
        key,
        Method::POST,
        &format!("/chat/{chat}/message"),
        Some(user(text)),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    answer
}

/// Asks a question for a streamed answer, by `Accept` header or by `?stream=true`: the
/// answer's id (`X-Message-Id`) and its stream.
async fn ask_streaming(
    app: &TestApp,
    chat: &str,
    text: &str,
    by_header: bool,
) -> (String, SseClient) {
    let path = if by_header {
        format!("/chat/{chat}/message")
    } else {
        format!("/chat/{chat}/message?stream=true")
    };
    let mut request = app
        .client
        .post(app.url(&path))
        .bearer_auth(&app.key)
        .json(&user(text));
    if by_header {
        request = request.header("accept", "text/event-stream");
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let id = response.headers()["x-message-id"]
        .to_str()
        .unwrap()
        .to_owned();
    (id, SseClient::new(response))
}

fn user(text: &str) -> Value {
    json!({"content": text, "role": "user"})
}

fn id_of(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id: {v}"))
        .to_owned()
}

/// The ids of the objects listed under `field`.
fn ids(v: &Value, field: &str) -> Vec<String> {
    v[field]
        .as_array()
        .unwrap_or_else(|| panic!("no {field}: {v}"))
        .iter()
        .map(id_of)
        .collect()
}

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect()
}

fn not_found(what: &str) -> Value {
    json!({"error": "Not Found", "message": format!("{what} not found")})
}

/// The text of `delta` events, concatenated.
fn deltas(events: &[Event]) -> String {
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

fn done(events: &[Event]) -> Value {
    let e = events
        .iter()
        .find(|e| e.event == "done")
        .unwrap_or_else(|| panic!("no done event: {events:?}"));
    serde_json::from_str(&e.data).unwrap()
}

async fn agent_names(app: &TestApp, path: &str) -> Vec<String> {
    let (status, listed) = send(app, &app.key, Method::GET, path, None).await;
    assert_eq!(status, 200, "{path}: {listed}");
    listed["agents"]
        .as_array()
        .unwrap_or_else(|| panic!("{path}: {listed}"))
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn chat_ids(app: &TestApp, path: &str) -> Vec<String> {
    let (status, listed) = send(app, &app.key, Method::GET, path, None).await;
    assert_eq!(status, 200, "{path}: {listed}");
    ids(&listed, "chats")
}

// ---------------------------------------------------------------------------------------------
// Agents.

#[tokio::test]
async fn agents_are_created_listed_filtered_updated_in_part_validated_and_deleted() {
    let app = spawn_app().await;
    let team = app.services.default_workspace.to_string();
    let full = agent(
        &app,
        json!({
            "name": "Support",
            "description": "Answers customers",
            "systemPrompt": "Be kind.",
            "model": "mock-model",
            "provider": "mock",
            "temperature": 0.3,
            "maxTokens": 100,
            "tools": ["web_search"],
            "agentType": "support",
        }),
    )
    .await;
    assert_eq!(keys(&full), BTreeSet::from(AGENT_FIELDS));
    for (field, value) in [
        ("name", json!("Support")),
        ("description", json!("Answers customers")),
        ("systemPrompt", json!("Be kind.")),
        ("model", json!("mock-model")),
        ("provider", json!("mock")),
        ("temperature", json!(0.3)),
        ("maxTokens", json!(100)),
        ("tools", json!(["web_search"])),
        ("agentType", json!("support")),
        ("teamId", json!(team)),
        ("version", json!(1)),
    ] {
        assert_eq!(full[field], value, "{field}: {full}");
    }
    for field in ["createdAt", "updatedAt"] {
        let at = full[field].as_str().unwrap();
        assert!(at.ends_with('Z'), "{field}: {at}");
    }
    let id = id_of(&full);

    tokio::time::sleep(APART).await;
    let bare = agent(&app, json!({"name": "Bare"})).await;
    assert_eq!(keys(&bare), BTreeSet::from(AGENT_FIELDS));
    for field in [
        "description",
        "systemPrompt",
        "model",
        "provider",
        "temperature",
        "maxTokens",
        "agentType",
    ] {
        assert!(bare[field].is_null(), "{field}: {bare}");
    }
    assert_eq!(bare["tools"], json!([]));
    assert_eq!(bare["version"], 1);
    tokio::time::sleep(APART).await;
    agent(&app, json!({"name": "Sales", "agentType": "sales"})).await;

    // Newest first; filtered by type; one by id.
    assert_eq!(
        agent_names(&app, "/agent").await,
        ["Sales", "Bare", "Support"]
    );
    assert_eq!(
        agent_names(&app, "/agent?agentType=support").await,
        ["Support"]
    );
    assert_eq!(agent_names(&app, "/agent?agentType=sales").await, ["Sales"]);
    assert!(
        agent_names(&app, "/agent?agentType=nothing")
            .await
            .is_empty()
    );
    let (_, listed) = send(&app, &app.key, Method::GET, "/agent", None).await;
    assert_eq!(listed["agents"][2], full);
    let (status, got) = send(&app, &app.key, Method::GET, &format!("/agent/{id}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(got, full);

    // A partial update changes what it names (null clears) and nothing else.
    let (status, updated) = send(
        &app,
        &app.key,
        Method::PUT,
        &format!("/agent/{id}"),
        Some(json!({"description": "Answers everyone", "temperature": null})),
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(keys(&updated), BTreeSet::from(AGENT_FIELDS));
    assert_eq!(updated["version"], 2);
    assert_eq!(updated["description"], "Answers everyone");
    assert!(updated["temperature"].is_null(), "{updated}");
    for field in [
        "id",
        "name",
        "systemPrompt",
        "model",
        "provider",
        "maxTokens",
        "tools",
        "agentType",
        "teamId",
        "createdAt",
    ] {
        assert_eq!(updated[field], full[field], "{field}: {updated}");
    }
    let (_, got) = send(&app, &app.key, Method::GET, &format!("/agent/{id}"), None).await;
    assert_eq!(got, updated);

    // Every invalid field is 400 naming it, on create and on update, and nothing is written.
    for (bad, field) in [
        (json!({"name": ""}), "name"),
        (json!({"tools": ["web_search", "calculator"]}), "tools"),
        (json!({"tools": ["shell"]}), "tools"),
        (json!({"temperature": 2.5}), "temperature"),
        (json!({"temperature": -0.5}), "temperature"),
        (json!({"maxTokens": 0}), "maxTokens"),
        (json!({"provider": "nobody"}), "provider"),
        (json!({"provider": "mock", "model": "gpt-nothing"}), "model"),
    ] {
        let mut create = json!({"name": "Invalid"});
        for (k, v) in bad.as_object().unwrap() {
            create[k.as_str()] = v.clone();
        }
        for (method, path, body) in [
            (Method::POST, "/agent".to_owned(), create),
            (Method::PUT, format!("/agent/{id}"), bad.clone()),
        ] {
            let (status, body) = send(&app, &app.key, method.clone(), &path, Some(body)).await;
            assert_eq!(status, 400, "{method} {path} {bad}: {body}");
            assert_eq!(body["error"], "Bad Request", "{bad}: {body}");
            assert_eq!(body["field"], field, "{bad}: {body}");
            assert!(body["message"].is_string(), "{bad}: {body}");
        }
    }
    let (_, got) = send(&app, &app.key, Method::GET, &format!("/agent/{id}"), None).await;
    assert_eq!(got, updated, "a refused update changes nothing");
    assert_eq!(
        agent_names(&app, "/agent").await,
        ["Sales", "Bare", "Support"]
    );

    // Deleted: gone everywhere.
    let path = format!("/agent/{id}");
    let (status, _) = send(&app, &app.key, Method::DELETE, &path, None).await;
    assert_eq!(status, 204);
    for (method, body) in [
        (Method::GET, None),
        (Method::PUT, Some(json!({"name": "Back"}))),
        (Method::DELETE, None),
    ] {
        let (status, body) = send(&app, &app.key, method.clone(), &path, body).await;
        assert_eq!((status, body), (404, not_found("Agent")), "{method}");
    }
    assert_eq!(agent_names(&app, "/agent").await, ["Sales", "Bare"]);
    let unknown = format!("/agent/{}", uuid::Uuid::new_v4());
    let (status, body) = send(&app, &app.key, Method::GET, &unknown, None).await;
    assert_eq!((status, body), (404, not_found("Agent")));
}

/// What one version of the versioned agent holds.
struct Expected {
    version: i64,
    prompt: &'static str,
    model: &'static str,
    temperature: f64,
    max_tokens: u64,
}

fn expect(
    version: i64,
    prompt: &'static str,
    model: &'static str,
    temperature: f64,
    max_tokens: u64,
) -> Expected {
    Expected {
        version,
        prompt,
        model,
        temperature,
        max_tokens,
    }
}

#[tokio::test]
async fn a_chat_answers_with_its_agents_current_version_through_updates_and_rollbacks() {
    let app = spawn_app_with(|s| s.providers[0].models.push("other-model".into())).await;
    let created = agent(
        &app,
        json!({
            "name": "Versioned",
            "systemPrompt": "Prompt A",
            "provider": "mock",
            "model": "mock-model",
            "temperature": 0.1,
            "maxTokens": 64,
        }),
    )
    .await;
    let id = id_of(&created);
    let chat = id_of(&new_chat(&app, &app.key, json!({"agentId": id})).await);

    let steps = [
        (None, expect(1, "Prompt A", "mock-model", 0.1, 64)),
        (
            Some(("", json!({"systemPrompt": "Prompt B"}))),
            expect(2, "Prompt B", "mock-model", 0.1, 64),
        ),
        (
            Some(("", json!({"model": "other-model"}))),
            expect(3, "Prompt B", "other-model", 0.1, 64),
        ),
        (
            Some(("", json!({"temperature": 1.5, "maxTokens": 128}))),
            expect(4, "Prompt B", "other-model", 1.5, 128),
        ),
        // Back to the version before the current one (3), recorded as version 5.
        (
            Some(("/rollback", json!({}))),
            expect(5, "Prompt B", "other-model", 0.1, 64),
        ),
        // Back to version 1, recorded as version 6.
        (
            Some(("/rollback", json!({"version": 1}))),
            expect(6, "Prompt A", "mock-model", 0.1, 64),
        ),
    ];
    for (i, (change, want)) in steps.iter().enumerate() {
        if let Some((suffix, body)) = change {
            let path = format!("/agent/{id}{suffix}");
            let (status, changed) =
                send(&app, &app.key, Method::PUT, &path, Some(body.clone())).await;
            assert_eq!(status, 200, "{path} {body}: {changed}");
            assert_eq!(changed["version"], want.version, "{body}: {changed}");
            if suffix.is_empty() {
                assert_eq!(keys(&changed), BTreeSet::from(AGENT_FIELDS));
            } else {
                assert_eq!(
                    keys(&changed),
                    BTreeSet::from(["id", "name", "version", "rolledBackAt"])
                );
                assert_eq!(changed["id"], id.as_str());
                assert_eq!(changed["name"], "Versioned");
                assert!(changed["rolledBackAt"].as_str().unwrap().ends_with('Z'));
            }
        }
        let (_, current) = send(&app, &app.key, Method::GET, &format!("/agent/{id}"), None).await;
        assert_eq!(current["version"], want.version, "{current}");
        assert_eq!(current["systemPrompt"], want.prompt, "{current}");
        assert_eq!(current["model"], want.model, "{current}");
        assert_eq!(current["temperature"], json!(want.temperature), "{current}");
        assert_eq!(current["maxTokens"], want.max_tokens, "{current}");

        let question = format!("question {i}");
        app.mock.push(Script::text(&["answer ", "given"]));
        let answer = say(&app, &app.key, &chat, &question).await;
        assert_eq!(answer["content"], "answer given");
        assert_eq!(answer["agentVersion"], current["version"], "{answer}");

        let sent = app.mock.requests().pop().unwrap();
        assert_eq!(sent["model"], want.model, "version {}", want.version);
        assert_eq!(
            sent["temperature"],
            json!(want.temperature),
            "{}",
            want.version
        );
        assert_eq!(
            sent["max_tokens"], want.max_tokens,
            "version {}",
            want.version
        );
        let messages = sent["messages"].as_array().unwrap();
        assert_eq!(messages[0]["role"], "system");
        assert_eq!(
            messages[0]["content"], want.prompt,
            "version {}",
            want.version
        );
        assert_eq!(messages.last().unwrap()["content"], question.as_str());
    }
    assert_eq!(app.mock.request_count(), steps.len());

    // History is never rewritten: six versions, newest first, each as it was.
    let (status, history) = send(
        &app,
        &app.key,
        Method::GET,
        &format!("/agent/{id}/versions"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{history}");
    let versions = history["versions"].as_array().unwrap();
    let numbers: Vec<i64> = versions
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, [6, 5, 4, 3, 2, 1]);
    for (listed, (_, want)) in versions.iter().zip(steps.iter().rev()) {
        assert_eq!(keys(listed), BTreeSet::from(VERSION_FIELDS));
        assert_eq!(listed["name"], "Versioned", "{listed}");
        assert_eq!(listed["provider"], "mock", "{listed}");
        assert_eq!(listed["systemPrompt"], want.prompt, "{listed}");
        assert_eq!(listed["model"], want.model, "{listed}");
        assert_eq!(listed["temperature"], json!(want.temperature), "{listed}");
        assert_eq!(listed["maxTokens"], want.max_tokens, "{listed}");
        assert_eq!(listed["tools"], json!([]), "{listed}");
        assert!(listed["createdAt"].as_str().unwrap().ends_with('Z'));
    }

    // An unknown version is 404 and changes nothing; an agent with one version has nothing to
    // roll back to.
    let (status, body) = send(
        &app,
        &app.key,
        Method::PUT,
        &format!("/agent/{id}/rollback"),
        Some(json!({"version": 99})),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"], "Not Found");
    let (_, current) = send(&app, &app.key, Method::GET, &format!("/agent/{id}"), None).await;
    assert_eq!(current["version"], 6);
    let fresh = id_of(&agent(&app, json!({"name": "Fresh"})).await);
    let (status, body) = send(
        &app,
        &app.key,
        Method::PUT,
        &format!("/agent/{fresh}/rollback"),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], "Conflict");
}

#[tokio::test]
async fn a_web_search_agent_answers_with_sources_that_are_stored_with_the_answer() {
    let web = fake_web("ok").await;
    let app = app_searching_at(web.clone()).await;
    let searcher = agent(
        &app,
        json!({"name": "Researcher", "tools": ["web_search"], "systemPrompt": "Cite sources."}),
    )
    .await;
    assert_eq!(searcher["tools"], json!(["web_search"]));
    let chat = id_of(&new_chat(&app, &app.key, json!({"agentId": id_of(&searcher)})).await);

    app.mock.push(Script::text(&[
        "Rust 1.95 speeds up ",
        "incremental builds [1].",
    ]));
    let answer = say(&app, &app.key, &chat, "What is new in the Rust release?").await;
    assert_eq!(answer["status"], "complete", "{answer}");
    assert_eq!(
        answer["content"],
        "Rust 1.95 speeds up incremental builds [1]."
    );
    let sources = answer["sources"]
        .as_array()
        .unwrap_or_else(|| panic!("no sources: {answer}"));
    assert!(!sources.is_empty());
    let article = format!("{web}/article");
    assert!(
        sources.iter().any(|s| s["url"] == article.as_str()),
        "{sources:?}"
    );
    assert_eq!(app.mock.request_count(), 1, "the search calls no model");

    // Stored with the answer: a replay sends the same sources first, and calls nobody.
    let answer_id = id_of(&answer);
    let replay = app
        .stream(&format!("/chat/{chat}/message/{answer_id}/stream"), None)
        .await
        .collect()
        .await;
    assert_eq!(replay[0].event, "sources", "{replay:?}");
    let replayed: Value = serde_json::from_str(&replay[0].data).unwrap();
    assert_eq!(replayed, answer["sources"]);
    assert_eq!(
        deltas(&replay),
        "Rust 1.95 speeds up incremental builds [1]."
    );
    assert_eq!(app.mock.request_count(), 1);

    // Streamed, the sources come first.
    app.mock.push(Script::text(&["More [1]."]));
    let (_, mut stream) = ask_streaming(&app, &chat, "And Cargo?", true).await;
    let events = stream.collect().await;
    assert_eq!(events[0].event, "sources", "{events:?}");
    let streamed: Value = serde_json::from_str(&events[0].data).unwrap();
    assert!(!streamed.as_array().unwrap().is_empty());
    assert_eq!(deltas(&events), "More [1].");

    // An agent without the tool does not search.
    let plain = agent(&app, json!({"name": "Plain"})).await;
    let chat = id_of(&new_chat(&app, &app.key, json!({"agentId": id_of(&plain)})).await);
    app.mock.push(Script::text(&["No search."]));
    let answer = say(&app, &app.key, &chat, "What is new in the Rust release?").await;
    assert!(answer["sources"].is_null(), "{answer}");
}

// ---------------------------------------------------------------------------------------------
// Chats.

#[tokio::test]
async fn chats_keep_their_metadata_filter_by_user_and_agent_type_and_outlive_their_agent() {
    let app = spawn_app().await;
    let team = app.services.default_workspace.to_string();
    let support = id_of(&agent(&app, json!({"name": "S", "agentType": "support"})).await);
    let sales = id_of(&agent(&app, json!({"name": "T", "agentType": "sales"})).await);

    let metadata = json!({
        "plan": {"tier": "gold", "seats": [1, 2, 3], "trial": false},
        "note": null,
        "score": 4.5,
    });
    let first = new_chat(
        &app,
        &app.key,
        json!({"agentId": support, "userId": "u1", "metadata": metadata}),
    )
    .await;
    assert_eq!(
        keys(&first),
        BTreeSet::from(["id", "agentId", "teamId", "userId", "metadata", "createdAt"])
    );
    assert_eq!(first["agentId"], support.as_str());
    assert_eq!(first["teamId"], team.as_str());
    assert_eq!(first["userId"], "u1");
    assert_eq!(first["metadata"], metadata);
    assert!(first["createdAt"].as_str().unwrap().ends_with('Z'));
    tokio::time::sleep(APART).await;
    let second = new_chat(&app, &app.key, json!({"agentId": support})).await;
    assert!(second["userId"].is_null(), "{second}");
    assert!(second["metadata"].is_null(), "{second}");
    tokio::time::sleep(APART).await;
    let third = new_chat(&app, &app.key, json!({"agentId": sales, "userId": "u2"})).await;
    tokio::time::sleep(APART).await;
    let fourth = new_chat(
        &app,
        &app.key,
        json!({"agentId": sales, "userId": "u1", "metadata": {"source": "web"}}),
    )
    .await;
    let [c1, c2, c3, c4] = [&first, &second, &third, &fourth].map(id_of);

    // An unknown agent, and metadata that is not an object.
    let (status, body) = send(
        &app,
        &app.key,
        Method::POST,
        "/chat",
        Some(json!({"agentId": uuid::Uuid::new_v4().to_string()})),
    )
    .await;
    assert_eq!((status, body), (404, not_found("Agent")));
    for bad in [json!("text"), json!([1, 2]), json!(42)] {
        let (status, body) = send(
            &app,
            &app.key,
            Method::POST,
            "/chat",
            Some(json!({"agentId": support, "metadata": bad})),
        )
        .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"], "Bad Request");
        assert_eq!(body["field"], "metadata", "{bad}: {body}");
    }

    // Newest first, filtered by user, by the agent's type, by both.
    assert_eq!(
        chat_ids(&app, "/chat").await,
        [c4.as_str(), c3.as_str(), c2.as_str(), c1.as_str()]
    );
    assert_eq!(
        chat_ids(&app, "/chat?userId=u1").await,
        [c4.as_str(), c1.as_str()]
    );
    assert_eq!(
        chat_ids(&app, "/chat?agentType=sales").await,
        [c4.as_str(), c3.as_str()]
    );
    assert_eq!(
        chat_ids(&app, "/chat?userId=u1&agentType=support").await,
        [c1.as_str()]
    );
    assert!(chat_ids(&app, "/chat?userId=nobody").await.is_empty());
    let (_, listed) = send(&app, &app.key, Method::GET, "/chat?userId=u1", None).await;
    assert_eq!(
        listed["chats"][1],
        json!({
            "id": c1,
            "agentId": support,
            "userId": "u1",
            "metadata": metadata,
            "createdAt": first["createdAt"],
        })
    );

    // One chat, with its messages.
    let (status, got) = send(&app, &app.key, Method::GET, &format!("/chat/{c1}"), None).await;
    assert_eq!(status, 200, "{got}");
    let mut expected = first.clone();
    expected["messages"] = json!([]);
    assert_eq!(got, expected);
    app.mock.push(Script::text(&["Hi there"]));
    let answer = say(&app, &app.key, &c1, "Hello?").await;
    let (_, got) = send(&app, &app.key, Method::GET, &format!("/chat/{c1}"), None).await;
    let messages = got["messages"].as_array().unwrap();
    let shown: Vec<(&str, &str)> = messages
        .iter()
        .map(|m| (m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    assert_eq!(shown, [("user", "Hello?"), ("assistant", "Hi there")]);
    for m in messages {
        assert_eq!(keys(m), BTreeSet::from(LISTED_MESSAGE_FIELDS), "{m}");
    }
    assert_eq!(messages[1]["id"], answer["id"]);
    assert_eq!(messages[1]["status"], "complete");

    // Deleted: 404 after.
    let path = format!("/chat/{c2}");
    let (status, _) = send(&app, &app.key, Method::DELETE, &path, None).await;
    assert_eq!(status, 204);
    for (method, path) in [
        (Method::GET, path.clone()),
        (Method::GET, format!("{path}/message")),
        (Method::DELETE, path.clone()),
    ] {
        let (status, body) = send(&app, &app.key, method.clone(), &path, None).await;
        assert_eq!((status, body), (404, not_found("Chat")), "{method} {path}");
    }
    assert_eq!(
        chat_ids(&app, "/chat").await,
        [c4.as_str(), c3.as_str(), c1.as_str()]
    );
    let unknown = format!("/chat/{}", uuid::Uuid::new_v4());
    let (status, body) = send(&app, &app.key, Method::GET, &unknown, None).await;
    assert_eq!((status, body), (404, not_found("Chat")));

    // A deleted agent's chat stays readable; no new chat can use it.
    let (status, _) = send(
        &app,
        &app.key,
        Method::DELETE,
        &format!("/agent/{support}"),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, kept) = send(&app, &app.key, Method::GET, &format!("/chat/{c1}"), None).await;
    assert_eq!(status, 200, "{kept}");
    assert_eq!(kept, got);
    let (status, body) = send(
        &app,
        &app.key,
        Method::POST,
        "/chat",
        Some(json!({"agentId": support})),
    )
    .await;
    assert_eq!((status, body), (404, not_found("Agent")));
}

// ---------------------------------------------------------------------------------------------
// Messages.

#[tokio::test]
async fn messages_are_answered_sync_or_streamed_and_a_stream_resumes_with_exactly_the_rest() {
    let app = spawn_app().await;
    let assistant = id_of(&agent(&app, json!({"name": "A", "systemPrompt": "Be brief."})).await);
    let chat = id_of(&new_chat(&app, &app.key, json!({"agentId": assistant})).await);

    // Sync: the finished assistant message.
    app.mock.push(Script::text(&["Hel", "lo"]));
    let sync = say(&app, &app.key, &chat, "Greet me").await;
    assert_eq!(keys(&sync), BTreeSet::from(ANSWER_FIELDS));
    assert_eq!(sync["chatId"], chat.as_str());
    assert_eq!(sync["content"], "Hello");
    assert_eq!(sync["role"], "assistant");
    assert_eq!(sync["status"], "complete");
    assert_eq!(sync["agentVersion"], 1);
    assert!(sync["sources"].is_null());
    assert!(sync["createdAt"].as_str().unwrap().ends_with('Z'));
    let sent = app.mock.requests().pop().unwrap();
    assert_eq!(sent["messages"][0]["content"], "Be brief.");
    assert_eq!(sent["messages"][1]["role"], "user");
    assert_eq!(sent["messages"][1]["content"], "Greet me");

    // Streamed by `Accept`: deltas, then done naming the message of `X-Message-Id`.
    let mut script = Script::text(&["Par", "is", " is", " the", " capital"]);
    script.chunk_delay_ms = 20;
    app.mock.push(script);
    let (second, mut stream) = ask_streaming(&app, &chat, "Capital of France?", true).await;
    let events = stream.collect().await;
    assert_eq!(deltas(&events), "Paris is the capital");
    assert!(events.iter().all(|e| e.event != "error"), "{events:?}");
    let finished = done(&events)["message"].clone();
    assert_eq!(finished["id"], second.as_str());
    assert_eq!(finished["content"], "Paris is the capital");
    assert_eq!(events.last().unwrap().id, format!("{second}:done"));

    // Attached from a middle event, the replay gives exactly the rest.
    let delta_events: Vec<Event> = events
        .iter()
        .filter(|e| e.event == "delta")
        .cloned()
        .collect();
    assert!(delta_events.len() >= 2, "{events:?}");
    let middle = delta_events.len() / 2;
    let follow = format!("/chat/{chat}/message/{second}/stream");
    let rest = app
        .stream(&follow, Some(&delta_events[middle].id))
        .await
        .collect()
        .await;
    assert_eq!(deltas(&rest), deltas(&delta_events[middle + 1..]));
    assert_eq!(done(&rest)["message"]["content"], "Paris is the capital");
    let replay = app.stream(&follow, None).await.collect().await;
    assert_eq!(deltas(&replay), "Paris is the capital");

    // Streamed by `?stream=true`; the client leaves mid-answer and comes back for the rest.
    app.mock.push(slow(12, 60));
    let (third, mut first) = ask_streaming(&app, &chat, "Count", false).await;
    let (mut seen, mut last_id) = (String::new(), String::new());
    while seen.matches(' ').count() < 3 {
        let event = first.next().await.unwrap();
        if event.event == "delta" {
            seen.push_str(&deltas(std::slice::from_ref(&event)));
            last_id = event.id;
        }
    }
    first.disconnect();
    let rest = app
        .stream(
            &format!("/chat/{chat}/message/{third}/stream"),
            Some(&last_id),
        )
        .await
        .collect()
        .await;
    let counted: String = (0..12).map(|i| format!("w{i} ")).collect();
    assert_eq!(format!("{seen}{}", deltas(&rest)), counted);
    let saved = done(&rest)["message"].clone();
    assert_eq!(saved["id"], third.as_str());
    assert_eq!(saved["status"], "complete");
    assert_eq!(app.mock.request_count(), 3, "attaching calls nobody");

    // Listed in order.
    let (status, listed) = send(
        &app,
        &app.key,
        Method::GET,
        &format!("/chat/{chat}/message"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    let messages = listed["messages"].as_array().unwrap();
    let shown: Vec<(&str, &str, &str)> = messages
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap(),
                m["content"].as_str().unwrap(),
                m["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            ("user", "Greet me", "complete"),
            ("assistant", "Hello", "complete"),
            ("user", "Capital of France?", "complete"),
            ("assistant", "Paris is the capital", "complete"),
            ("user", "Count", "complete"),
            ("assistant", counted.as_str(), "complete"),
        ]
    );
    for m in messages {
        assert_eq!(keys(m), BTreeSet::from(LISTED_MESSAGE_FIELDS), "{m}");
    }
    let answers: Vec<String> = messages.iter().skip(1).step_by(2).map(id_of).collect();
    assert_eq!(answers, [id_of(&sync), second, third]);
    let (_, got) = send(&app, &app.key, Method::GET, &format!("/chat/{chat}"), None).await;
    assert_eq!(got["messages"], listed["messages"]);

    // A bad question is 400 naming the field, and reaches no provider.
    for (bad, field) in [
        (json!({"content": "", "role": "user"}), "content"),
        (json!({"role": "user"}), "content"),
        (json!({"content": "x", "role": "assistant"}), "role"),
        (json!({"content": "x", "role": "system"}), "role"),
    ] {
        let (status, body) = send(
            &app,
            &app.key,
            Method::POST,
            &format!("/chat/{chat}/message"),
            Some(bad.clone()),
        )
        .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"], "Bad Request", "{bad}: {body}");
        assert_eq!(body["field"], field, "{bad}: {body}");
    }
    let unknown = format!("/chat/{}/message", uuid::Uuid::new_v4());
    let (status, body) = send(&app, &app.key, Method::POST, &unknown, Some(user("x"))).await;
    assert_eq!((status, body), (404, not_found("Chat")));
    assert_eq!(app.mock.request_count(), 3);
}

// ---------------------------------------------------------------------------------------------
// Keys.

fn assert_forbidden(status: u16, body: &Value, what: &str) {
    assert_eq!(status, 403, "{what}: {body}");
    assert_eq!(body["error"], "Forbidden", "{what}: {body}");
    assert!(body["message"].is_string(), "{what}: {body}");
    let allowed = body["allowedEndpoints"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: no allowedEndpoints: {body}"));
    assert!(!allowed.is_empty(), "{what}: {body}");
    assert!(allowed.iter().all(Value::is_string), "{what}: {body}");
}

#[tokio::test]
async fn a_publishable_key_reaches_only_widget_routes_and_chats_made_with_publishable_keys() {
    let app = spawn_app().await;
    let ws = app.services.default_workspace;
    let widget = app.new_key(ws, KeyKind::Publishable).await;
    let other_widget = app.new_key(ws, KeyKind::Publishable).await;
    let agent_id = id_of(&agent(&app, json!({"name": "Widget"})).await);

    // A publishable key may start a chat with an agent id it is given, and talk in it.
    let widget_chat = new_chat(&app, &widget, json!({"agentId": agent_id})).await;
    assert_eq!(widget_chat["agentId"], agent_id.as_str());
    assert_eq!(widget_chat["teamId"], ws.to_string());
    let widget_chat = id_of(&widget_chat);
    app.mock.push(Script::text(&["hi"]));
    let widget_answer = id_of(&say(&app, &widget, &widget_chat, "hello").await);
    let secret_chat = id_of(&new_chat(&app, &app.key, json!({"agentId": agent_id})).await);
    app.mock.push(Script::text(&["hi"]));
    let secret_answer = id_of(&say(&app, &app.key, &secret_chat, "hello").await);

    // Every route of the dialect; `true`: open to a publishable key. Deletes come last.
    let a = format!("/agent/{agent_id}");
    let c = format!("/chat/{widget_chat}");
    let routes = [
        (
            Method::POST,
            "/agent".to_owned(),
            Some(json!({"name": "New"})),
            false,
        ),
        (Method::GET, "/agent".to_owned(), None, false),
        (Method::GET, a.clone(), None, false),
        (
            Method::PUT,
            a.clone(),
            Some(json!({"description": "d"})),
            false,
        ),
        (Method::GET, format!("{a}/versions"), None, false),
        (Method::PUT, format!("{a}/rollback"), Some(json!({})), false),
        (Method::GET, "/chat".to_owned(), None, false),
        (
            Method::POST,
            "/chat".to_owned(),
            Some(json!({"agentId": agent_id})),
            true,
        ),
        (Method::GET, c.clone(), None, true),
        (
            Method::POST,
            format!("{c}/message"),
            Some(user("again")),
            true,
        ),
        (Method::GET, format!("{c}/message"), None, true),
        (
            Method::GET,
            format!("{c}/message/{widget_answer}/stream"),
            None,
            true,
        ),
        (Method::DELETE, c.clone(), None, false),
        (Method::DELETE, a.clone(), None, false),
    ];
    for (method, path, body, open) in &routes {
        let (status, reply) = send(&app, &widget, method.clone(), path, body.clone()).await;
        let what = format!("publishable {method} {path}");
        if *open {
            assert_eq!(status, 200, "{what}: {reply}");
        } else {
            assert_forbidden(status, &reply, &what);
        }
    }
    // The refused requests changed nothing.
    let (_, kept) = send(&app, &app.key, Method::GET, &a, None).await;
    assert_eq!(kept["version"], 1, "{kept}");
    assert_eq!(send(&app, &app.key, Method::GET, &c, None).await.0, 200);

    // A chat made with a secret key does not exist for a publishable one; a chat made with
    // any publishable key of the team does.
    let calls = app.mock.request_count();
    let s = format!("/chat/{secret_chat}");
    for (method, path, body) in [
        (Method::GET, s.clone(), None),
        (Method::POST, format!("{s}/message"), Some(user("x"))),
        (Method::GET, format!("{s}/message"), None),
        (
            Method::GET,
            format!("{s}/message/{secret_answer}/stream"),
            None,
        ),
    ] {
        let (status, body) = send(&app, &widget, method.clone(), &path, body).await;
        assert_eq!((status, body), (404, not_found("Chat")), "{method} {path}");
    }
    assert_eq!(
        app.mock.request_count(),
        calls,
        "nothing reached the provider"
    );
    let (status, seen) = send(&app, &other_widget, Method::GET, &c, None).await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["id"], widget_chat.as_str());

    // No key, or a key nobody issued: the same 401.
    let unauthorized =
        json!({"error": "Unauthorized", "message": "Unauthorized: Invalid API key."});
    let bogus = [
        None,
        Some("sk_live_bogus0000000000000000"),
        Some("pk_live_bogus"),
        Some("nonsense"),
    ];
    for (method, path, body) in [
        (Method::GET, "/agent".to_owned(), None),
        (
            Method::POST,
            "/chat".to_owned(),
            Some(json!({"agentId": agent_id})),
        ),
        (Method::GET, c.clone(), None),
    ] {
        for key in bogus {
            let (status, reply) = app
                .request_as(key, method.clone(), &path, body.clone())
                .await;
            assert_eq!(
                (status, &reply),
                (401, &unauthorized),
                "{method} {path} {key:?}"
            );
        }
    }

    // A secret key is never refused.
    for (method, path, body, _) in routes {
        let (status, reply) = send(&app, &app.key, method.clone(), &path, body).await;
        assert!(
            (200..300).contains(&status),
            "secret {method} {path}: {status} {reply}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Rate limits.

fn header(response: &reqwest::Response, name: &str) -> Option<u64> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().parse().unwrap())
}

#[tokio::test]
async fn the_agent_api_allows_the_limit_then_answers_429_in_its_own_envelope() {
    const WINDOW: Duration = Duration::from_secs(4);
    let app = spawn_app_with(|s| {
        s.rate_limits = RateLimits {
            secret: 3,
            publishable: 3,
            window: WINDOW,
        }
    })
    .await;
    let key = app
        .new_key(app.services.default_workspace, KeyKind::Secret)
        .await;
    for remaining in [2, 1, 0] {
        let response = app
            .client
            .get(app.url("/agent"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "x-ratelimit-limit"), Some(3));
        assert_eq!(header(&response, "x-ratelimit-remaining"), Some(remaining));
        let reset = header(&response, "x-ratelimit-reset").unwrap();
        assert!((1..=WINDOW.as_secs()).contains(&reset), "{reset}");
    }
    let refused = app
        .client
        .post(app.url("/agent"))
        .bearer_auth(&key)
        .json(&json!({"name": "Too many"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(header(&refused, "x-ratelimit-remaining"), Some(0));
    let retry = header(&refused, "retry-after").expect("Retry-After");
    assert!((1..=WINDOW.as_secs()).contains(&retry), "{retry}");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(
        keys(&body),
        BTreeSet::from(["error", "message", "retryAfter"])
    );
    assert_eq!(body["error"], "Too Many Requests");
    assert!(body["message"].is_string());
    assert_eq!(body["retryAfter"], retry);

    // The refused create wrote nothing (read with another key: its own counter).
    assert!(agent_names(&app, "/agent").await.is_empty());
}

#[tokio::test]
async fn an_origin_bound_publishable_key_works_from_its_origin_only() {
    let app = spawn_app().await;
    let support = agent(&app, json!({"name": "Support"})).await;
    let (status, created) = app
        .call(
            Method::POST,
            "/api/workspaces/default/keys/",
            Some(json!({"kind": "publishable", "origins": ["https://shop.example"]})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    let create = |origin: &'static str| {
        app.client
            .post(app.url("/chat"))
            .bearer_auth(&key)
            .header("origin", origin)
            .json(&json!({"agentId": support["id"]}))
            .send()
    };

    let allowed = create("https://shop.example").await.unwrap();
    assert_eq!(allowed.status(), 200);
    let chat: Value = allowed.json().await.unwrap();
    let refused = create("https://evil.example").await.unwrap();
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "Forbidden", "{body}");

    let answered = app
        .client
        .post(app.url(&format!("/chat/{}/message", chat["id"].as_str().unwrap())))
        .bearer_auth(&key)
        .header("origin", "https://shop.example")
        .json(&user("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(answered.status(), 200);
    let answer: Value = answered.json().await.unwrap();
    assert_eq!(answer["status"], "complete", "{answer}");
}
