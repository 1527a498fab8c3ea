//! Server-Sent Events framing shared by the dialects: headers, the opening comment,
//! keep-alives, and a farewell event when the server shuts down.

use std::convert::Infallible;
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};

use crate::generation::Closing;

/// Counts an open SSE response in the `sluice_open_streams` gauge while it lives.
struct OpenStream(metrics::Gauge);

impl OpenStream {
    fn new(dialect: &'static str) -> Self {
        let gauge = metrics::gauge!(crate::telemetry::names::OPEN_STREAMS, "dialect" => dialect);
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// How long a client told to retry at shutdown waits before reconnecting.
const RETRY_AFTER_SHUTDOWN: Duration = Duration::from_secs(1);

/// Tells a resuming client to reconnect soon: the farewell of resumable streams.
pub fn retry_event() -> Event {
    Event::default().retry(RETRY_AFTER_SHUTDOWN)
}

/// Wraps dialect events into an SSE response: a comment goes out at once (so clients and proxies
/// see the stream open before the first token), keep-alive comments fill silences, and when the
/// server starts shutting down the stream sends `farewell` and ends.
pub fn response<S>(
    events: S,
    closing: Closing,
    keepalive: Duration,
    farewell: Event,
    dialect: &'static str,
) -> Response
where
    S: Stream<Item = Event> + Send + 'static,
{
    let open = OpenStream::new(dialect);
    let opening = futures::stream::once(async { Event::default().comment("ok") });
    let watch = closing.clone();
    let last = futures::stream::once(async move { watch.is_cancelled().then_some(farewell) })
        .filter_map(std::future::ready);
    let body = opening
        .chain(closing.until(events))
        .chain(last)
        .map(move |event| {
            // The guard lives as long as the body: dropped when the stream ends or the client
            // goes away.
            let _open = &open;
            Ok::<_, Infallible>(event)
        });
    let mut response = Sse::new(body)
        .keep_alive(KeepAlive::new().interval(keepalive).text("keep-alive"))
        .into_response();
    // Tells nginx-style proxies not to buffer the stream.
    response.headers_mut().insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    response
}
