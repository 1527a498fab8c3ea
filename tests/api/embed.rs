//! sluice nested in another axum application, as `examples/embed.rs` does it.

use axum::Router;
use axum::routing::get;
use serde_json::{Value, json};
use sluice::startup::Sluice;

use crate::helpers::*;

#[tokio::test]
async fn a_host_application_nests_sluice_under_a_prefix_and_streams_an_answer() {
    let mock = MockUpstream::start().await.unwrap();
    mock.push(Script::text(&["nested ", "answer"]));
    let (database_url, _dir) = fresh_database().await;
    let settings = test_settings(&database_url, &mock);
    let key = {
        use secrecy::ExposeSecret;
        settings
            .admin_key
            .as_ref()
            .unwrap()
            .expose_secret()
            .to_owned()
    };
    let sluice = Sluice::build(settings).await.unwrap();
    let app = Router::new()
        .route("/", get(|| async { "host" }))
        .nest_service("/ai", sluice.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(sluice.shutdown_signal())
            .into_future(),
    );
    let client = reqwest::Client::new();

    let host = client
        .get(format!("{base}/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let chat: Value = client
        .post(format!("{base}/ai/chats/create"))
        .bearer_auth(&key)
        .json(&json!({"name": "embedded"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let chat_id = chat["id"].as_str().unwrap();
    client
        .post(format!("{base}/ai/conversations/create"))
        .bearer_auth(&key)
        .json(&json!({"chat_id": chat_id, "role": "Human", "message": "hi"}))
        .send()
        .await
        .unwrap();
    let events = SseClient::new(
        client
            .get(format!("{base}/ai/conversations/inference/{chat_id}"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap(),
    )
    .collect()
    .await;
    // The same core is reachable without HTTP.
    let services = sluice.services();
    let stored = services
        .store()
        .list_messages(chat_id.parse().unwrap(), false)
        .await
        .unwrap();

    assert_eq!(host, "host");
    assert_eq!(text_of(&events), "nested answer");
    assert_eq!(named(&events, "done").unwrap()["status"], "complete");
    assert_eq!(stored.last().unwrap().content, "nested answer");
    sluice.close();
    server.await.unwrap().unwrap();
    sluice.finish().await;
}
