//! Structured logs through `tracing` (filtered by `RUST_LOG`, default `info`) and Prometheus
//! metrics through the `metrics` facade, rendered at `GET /metrics`.
//!
//! Metrics are recorded per request and per generation, never per token: the relay's hot path
//! only counts into local variables.

use std::io::IsTerminal;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// Installs the global log subscriber. Safe to call twice (the second call does nothing).
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

/// Metric names, in one place.
pub mod names {
    pub const HTTP_REQUESTS: &str = "sluice_http_requests_total";
    pub const OPEN_STREAMS: &str = "sluice_open_streams";
    pub const GENERATIONS: &str = "sluice_generations_total";
    pub const GENERATIONS_RUNNING: &str = "sluice_generations_running";
    pub const UPSTREAM_TTFT: &str = "sluice_upstream_time_to_first_token_seconds";
    pub const UPSTREAM_DURATION: &str = "sluice_upstream_duration_seconds";
    pub const TOKENS: &str = "sluice_tokens_relayed_total";
    pub const DELTAS: &str = "sluice_deltas_relayed_total";
    pub const CONNECTIONS_OPEN: &str = "sluice_connections_open";
    pub const CONNECTIONS_REFUSED: &str = "sluice_connections_refused_total";
    pub const CONNECTIONS_CLOSED: &str = "sluice_connections_closed_total";
}

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0,
];

/// The process-wide Prometheus recorder, installed on first use. `None` when the embedding
/// application installed a metrics recorder of its own (sluice then reports into that one).
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            Some(handle)
        })
        .as_ref()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        names::HTTP_REQUESTS,
        "HTTP requests by method, route and status"
    );
    describe_gauge!(
        names::OPEN_STREAMS,
        "SSE responses currently open, by dialect"
    );
    describe_counter!(names::GENERATIONS, "finished generations by status");
    describe_gauge!(names::GENERATIONS_RUNNING, "generations running now");
    describe_histogram!(
        names::UPSTREAM_TTFT,
        metrics::Unit::Seconds,
        "time from calling the provider to its first delta"
    );
    describe_histogram!(
        names::UPSTREAM_DURATION,
        metrics::Unit::Seconds,
        "time from calling the provider to the end of its answer"
    );
    describe_gauge!(names::CONNECTIONS_OPEN, "client connections open now");
    describe_counter!(
        names::CONNECTIONS_REFUSED,
        "connections closed at once: the connection limit was reached and every open one was \
         answering a request"
    );
    describe_counter!(
        names::CONNECTIONS_CLOSED,
        "connections closed by the listener, by reason: header_timeout, idle_timeout, or \
         evicted (waiting for a request when a new connection needed the slot)"
    );
    describe_counter!(names::TOKENS, "completion tokens relayed, by provider");
    describe_counter!(
        names::DELTAS,
        "deltas (text or tool-call pieces) relayed, by provider"
    );
}
