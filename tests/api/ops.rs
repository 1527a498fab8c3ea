//! Operations: health, readiness and Prometheus metrics.

use crate::helpers::*;

#[tokio::test]
async fn metrics_report_requests_streams_generations_latency_and_tokens() {
    let app = spawn_app().await;
    let chat = app.chat_with_question("q").await;
    app.stream(&format!("/conversations/inference/{chat}"), None)
        .await
        .collect()
        .await;

    let response = app.client.get(app.url("/metrics")).send().await.unwrap();

    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    for needle in [
        "sluice_http_requests_total{method=\"GET\",route=\"/conversations/inference/{id}\",status=\"200\"}",
        "sluice_open_streams{dialect=\"conversations\"}",
        "sluice_generations_total{status=\"complete\"}",
        "sluice_generations_running",
        "sluice_upstream_time_to_first_token_seconds_bucket{provider=\"mock\"",
        "sluice_upstream_duration_seconds_count{provider=\"mock\"}",
        "sluice_tokens_relayed_total{provider=\"mock\"}",
        "sluice_deltas_relayed_total{provider=\"mock\"}",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
}

#[tokio::test]
async fn readiness_reports_the_database_and_the_models() {
    let app = spawn_app().await;

    let ready: serde_json::Value = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["database"], "ok");
    assert_eq!(ready["demo_model"], false);
    assert_eq!(ready["models"], serde_json::json!(["mock/mock-model"]));
}
