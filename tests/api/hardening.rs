//! The edge rules of SPEC §8: `nosniff` on every response, `/docs` never framed, which client
//! `X-Request-Id` is echoed.

use crate::helpers::*;

fn nosniff(headers: &reqwest::header::HeaderMap) -> Option<&str> {
    headers
        .get("x-content-type-options")
        .and_then(|v| v.to_str().ok())
}

// ----------------------------------------------------------------------------------------------
// Response headers.

#[tokio::test]
async fn json_html_error_404_and_405_responses_all_carry_nosniff() {
    let app = spawn_app().await;

    let responses = [
        ("JSON", app.get("/chats/").send().await.unwrap()),
        ("page", app.client.get(app.url("/")).send().await.unwrap()),
        (
            "docs",
            app.client.get(app.url("/docs")).send().await.unwrap(),
        ),
        (
            "401",
            app.client.get(app.url("/chats/")).send().await.unwrap(),
        ),
        ("404", app.get("/no/such/route").send().await.unwrap()),
        (
            "405",
            app.client.delete(app.url("/healthz")).send().await.unwrap(),
        ),
    ];

    let expected = [200, 200, 200, 401, 404, 405];
    for ((what, response), status) in responses.iter().zip(expected) {
        assert_eq!(response.status(), status, "{what}");
        assert_eq!(nosniff(response.headers()), Some("nosniff"), "{what}");
    }
}

#[tokio::test]
async fn an_sse_response_carries_nosniff() {
    let app = spawn_app().await;
    let chat = app.chat_with_question("q").await;

    let mut stream = app
        .stream(&format!("/conversations/inference/{chat}"), None)
        .await;

    assert_eq!(stream.status, 200);
    assert_eq!(stream.headers["content-type"], "text/event-stream");
    assert_eq!(nosniff(&stream.headers), Some("nosniff"));
    stream.collect().await;
}

#[tokio::test]
async fn the_docs_page_refuses_framing_like_the_chat_page_and_can_still_fetch_its_description() {
    let app = spawn_app().await;

    let docs = app.client.get(app.url("/docs")).send().await.unwrap();
    let page = app.client.get(app.url("/")).send().await.unwrap();

    for response in [&docs, &page] {
        assert_eq!(response.status(), 200);
        let csp = response.headers()["content-security-policy"]
            .to_str()
            .unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(response.headers()["x-frame-options"], "DENY");
    }
    // What the docs page loads is still allowed: its inline script fetches `openapi.json`.
    let csp = docs.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    assert!(csp.contains("script-src 'unsafe-inline'"), "{csp}");
    let description = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(description.status(), 200);
}

// ----------------------------------------------------------------------------------------------
// X-Request-Id.

async fn echoed_request_id(app: &TestApp, sent: &str) -> String {
    let response = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", sent)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_request_id_of_1_to_128_visible_ascii_characters_is_echoed() {
    let app = spawn_app().await;

    for sent in ["a", "req-42_trace.id:7/abc~!", &"x".repeat(128)] {
        assert_eq!(echoed_request_id(&app, sent).await, sent);
    }
}

#[tokio::test]
async fn a_request_id_too_long_with_a_space_or_with_markup_is_replaced_by_a_generated_one() {
    let app = spawn_app().await;

    for sent in [
        "x".repeat(129),
        "two words".to_owned(),
        "<script src=//evil.example></script>".to_owned(),
        "<img src=x onerror=alert(1)>".to_owned(),
    ] {
        let got = echoed_request_id(&app, &sent).await;

        assert_ne!(got, sent);
        assert!(uuid::Uuid::parse_str(&got).is_ok(), "not generated: {got}");
    }
}
