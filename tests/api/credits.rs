//! Credits through the real server: a workspace at or over its limit starts no answer in any
//! dialect, before any upstream call, and running answers hold their worst case meanwhile.

use std::time::Duration;

use serde_json::json;
use sluice::config::Price;

use crate::helpers::{TestApp, named, spawn_app_with, text_of};
use crate::lifecycle::slow;
use crate::mock::Script;

/// One micro-dollar per token, in and out.
async fn priced_app() -> TestApp {
    spawn_app_with(|s| {
        s.providers[0].prices.insert(
            "mock-model".into(),
            Price {
                input: 1.0,
                output: 1.0,
            },
        );
    })
    .await
}

async fn set_limit(app: &TestApp, micros: Option<i64>) {
    app.services
        .store()
        .set_credit_limit(app.services.default_workspace, micros)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_workspace_over_its_limit_starts_nothing_in_any_dialect_and_reads_what_it_has() {
    let app = priced_app().await;
    set_limit(&app, Some(1)).await;
    app.mock.push(Script::text(&["paid ", "answer"]));
    let chat = app.chat_with_question("first").await;
    let events = app
        .stream(&format!("/conversations/inference/{chat}"), None)
        .await
        .collect()
        .await;
    assert_eq!(text_of(&events), "paid answer");
    assert_eq!(named(&events, "done").unwrap()["status"], "complete");
    let calls = app.mock.request_count();

    // Spent is now over the limit: a new question is refused before the provider is called.
    app.ask(&chat, "second").await;
    let refused = app
        .get(&format!("/conversations/inference/{chat}"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 402);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "insufficient_credits");
    assert!(body["message"].as_str().unwrap().contains('$'), "{body}");
    let v1 = app
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "mock/mock-model", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(v1.status(), 429);
    let body: serde_json::Value = v1.json().await.unwrap();
    assert_eq!(body["error"]["code"], "insufficient_quota");
    assert_eq!(body["error"]["type"], "insufficient_quota");
    assert_eq!(app.mock.request_count(), calls, "no upstream call was made");

    // What was answered is still replayed: reading costs nothing.
    let first = app.conversations(&chat).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let replay = app
        .stream(&format!("/conversations/inference/{first}"), None)
        .await
        .collect()
        .await;
    assert_eq!(text_of(&replay), "paid answer");

    // Lifting the limit applies within a second.
    set_limit(&app, None).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    app.mock.push(Script::text(&["again"]));
    let events = app
        .stream(&format!("/conversations/inference/{chat}"), None)
        .await
        .collect()
        .await;
    assert_eq!(text_of(&events), "again");
}

#[tokio::test]
async fn a_running_answer_holds_its_worst_case_so_a_concurrent_start_is_refused() {
    let app = priced_app().await;
    // Nothing is spent, but the first answer may cost up to its model's output cap.
    set_limit(&app, Some(1_000)).await;
    app.mock.push(slow(30, 100));
    let first = app.chat_with_question("long").await;
    let mut running = app
        .stream(&format!("/conversations/inference/{first}"), None)
        .await;
    assert_eq!(running.next().await.unwrap().event, "message");

    let second = app.chat_with_question("meanwhile").await;
    let refused = app
        .get(&format!("/conversations/inference/{second}"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 402);
    assert_eq!(app.mock.request_count(), 1);

    let rest = running.collect().await;
    assert_eq!(named(&rest, "done").unwrap()["status"], "complete");
}

#[tokio::test]
async fn concurrent_posts_cannot_overspend_the_limit_by_more_than_one_reservation() {
    use reqwest::Method;
    let app = priced_app().await;
    // Each answer costs about 12 micro-dollars and holds at most about 15 while it runs.
    let limit = 40;
    set_limit(&app, Some(limit)).await;
    let session: serde_json::Value = app
        .post_json(
            "/api/workspaces/default/chats/",
            &json!({"name": "budget", "max_tokens": 10}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let path = format!(
        "/api/workspaces/default/chats/{}/messages/",
        session["id"].as_str().unwrap()
    );
    for _ in 0..20 {
        let mut script = Script::text(&["a", "b", "c"]);
        script.chunk_delay_ms = 20;
        app.mock.push(script);
    }
    let posts = (0..20).map(|i| {
        let request = app
            .client
            .request(Method::POST, app.url(&path))
            .bearer_auth(&app.key)
            .json(&json!({"role": "user", "content": format!("q{i}")}));
        async move { request.send().await.unwrap().status().as_u16() }
    });
    let statuses = futures::future::join_all(posts).await;
    let answered = statuses.iter().filter(|s| **s == 201).count();
    let refused = statuses.iter().filter(|s| **s == 402).count();
    assert_eq!(answered + refused, 20, "{statuses:?}");
    assert!(answered >= 1, "{statuses:?}");
    assert!(refused >= 10, "{statuses:?}");

    let usage: serde_json::Value = app
        .get("/api/workspaces/default/credit-usage/")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let records = app
        .services
        .store()
        .usage_records(app.services.default_workspace)
        .await
        .unwrap();
    let spent: i64 = records.iter().map(|r| r.cost_micros).sum();
    let largest = records.iter().map(|r| r.cost_micros).max().unwrap();
    assert_eq!(records.len(), answered, "every answer charged once");
    assert!(
        spent <= limit + largest + 10,
        "spent {spent} against a limit of {limit}"
    );
    assert_eq!(usage["total_credit_limit"], "0.00004");
    assert_eq!(
        usage["total_cost"],
        sluice::domain::format_usd(spent),
        "{usage}"
    );
    let percentage = usage["percentage_used"].as_f64().unwrap();
    assert!((percentage - spent as f64 * 100.0 / limit as f64).abs() < 1e-9);
    assert_eq!(
        app.mock.request_count(),
        answered,
        "a refused post calls no provider"
    );
}
