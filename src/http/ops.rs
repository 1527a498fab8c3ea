//! Health and readiness probes, and Prometheus metrics.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// Prometheus metrics
///
/// Prometheus text format: `sluice_http_requests_total{method,route,status}`,
/// `sluice_open_streams{dialect}`, `sluice_generations_total{status}`,
/// `sluice_generations_running`, upstream time to first token and duration.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "The metrics", content_type = "text/plain; version=0.0.4", body = String),
        (status = 404, description = "The embedding application owns the metrics recorder"),
    ),
)]
async fn metrics() -> axum::response::Response {
    match crate::telemetry::prometheus() {
        Some(handle) => {
            handle.run_upkeep();
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                handle.render(),
            )
                .into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[derive(Serialize, ToSchema)]
struct Health {
    /// Always `ok`.
    #[schema(value_type = String, examples("ok"))]
    status: &'static str,
}

/// Liveness
///
/// The process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The process is up", body = Health)),
)]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[derive(Serialize, ToSchema)]
struct Readiness {
    /// `ready` or `unavailable`.
    #[schema(value_type = String, examples("ready"))]
    status: &'static str,
    /// `ok` or `unreachable`.
    #[schema(value_type = String, examples("ok"))]
    database: &'static str,
    shutting_down: bool,
    /// True while the built-in `demo` model answers (no provider configured).
    demo_model: bool,
    /// The models served, as `provider/model`.
    models: Vec<String>,
    running_generations: usize,
    /// With `SLUICE_REDIS_URL`: `ok`, or `unreachable` while this replica serves alone (rate
    /// limits counted by each replica). Absent without Redis.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, examples("ok"))]
    redis: Option<&'static str>,
}

/// Readiness
///
/// The database answers and the server is not shutting down; also which models are served.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "The database is unreachable, or the server is shutting down", body = Readiness),
    ),
)]
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let found = state.services.readiness().await;
    let ready = found.database.is_ok() && !found.shutting_down;
    if let Err(e) = &found.database {
        tracing::warn!(error = %e, "readiness: database unreachable");
    }
    let body = Readiness {
        status: if ready { "ready" } else { "unavailable" },
        database: if found.database.is_ok() {
            "ok"
        } else {
            "unreachable"
        },
        shutting_down: found.shutting_down,
        demo_model: found.demo_model,
        models: found.models,
        running_generations: found.running_generations,
        redis: found.redis.map(|up| if up { "ok" } else { "unreachable" }),
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}
