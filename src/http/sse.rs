//! Server-Sent Events framing shared by the dialects: headers, the opening comment,
//! keep-alives, and a farewell event when the server shuts down.

use std::convert::Infallible;
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;

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
    closing: CancellationToken,
    keepalive: Duration,
    farewell: Event,
) -> Response
where
    S: Stream<Item = Event> + Send + 'static,
{
    let opening = futures::stream::once(async { Event::default().comment("ok") });
    let watch = closing.clone();
    let last = futures::stream::once(async move { watch.is_cancelled().then_some(farewell) })
        .filter_map(std::future::ready);
    let body = opening
        .chain(events.take_until(closing.cancelled_owned()))
        .chain(last)
        .map(Ok::<_, Infallible>);
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
