//! sluice inside another axum application: the host keeps its own routes and mounts sluice's
//! whole API under `/ai`.
//!
//! `cargo run --example embed`, then for instance
//! `curl -s localhost:3000/` and `curl -s localhost:3000/ai/readyz`; the chat page is at
//! http://127.0.0.1:3000/ai/. `nest_service` rather than `nest`, so that `/ai/` reaches sluice.

use axum::Router;
use axum::routing::get;
use sluice::config::Settings;
use sluice::startup::Sluice;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    sluice::telemetry::init();
    // sluice reads its usual configuration (file and SLUICE_* variables).
    let sluice = Sluice::build(Settings::load(None)?).await?;

    let app = Router::new()
        .route("/", get(|| async { "the host application" }))
        .nest_service("/ai", sluice.router());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    tracing::info!("host application on http://127.0.0.1:3000, sluice under /ai");

    // Ctrl-C closes sluice (its open streams end with `retry:`), the server stops accepting,
    // then running answers are given time to finish and saved.
    let closer = tokio::spawn({
        let close = sluice.services();
        async move {
            let _ = tokio::signal::ctrl_c().await;
            close.closing().cancel();
        }
    });
    // `into_make_service` prepares the router once rather than once per connection.
    axum::serve(listener, app.into_make_service())
        .with_graceful_shutdown(sluice.shutdown_signal())
        .await?;
    closer.abort();
    sluice.finish().await;
    Ok(())
}
