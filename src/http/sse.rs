//! Server-Sent Events framing shared by the dialects: headers, the opening comment,
//! keep-alives, a farewell event when the server shuts down, and the resumable event ids
//! (`<message id>:<byte offset>`, `<message id>:done`) with their `Last-Event-ID` parser.

use std::convert::Infallible;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use uuid::Uuid;

use crate::domain::{ResumeAt, ResumePoint};
use crate::error::Error;
use crate::http::extract::query_pairs;

use crate::shutdown::Closing;

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
/// One event of a stream, as the description shows it: a client's `EventSource` hands each one
/// over with these fields. `data` is JSON (one object per event) in every dialect.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ServerSentEvent {
    /// The event's name; absent for `message` (the `/v1` chunks).
    event: Option<String>,
    /// A JSON object, or `[DONE]` at the end of a `/v1` stream.
    data: String,
    /// `<message id>:<offset>` or `<message id>:done`, for `Last-Event-ID`; absent where a
    /// stream cannot be resumed.
    id: Option<String>,
    /// How long a client waits before reconnecting, in milliseconds.
    retry: Option<u64>,
}

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

/// Parses an event id this server wrote: `<message id>:<byte offset>` or `<message id>:done`,
/// the id hyphenated as it is written (the API description says so with a pattern).
pub fn parse_event_id(raw: &str) -> Option<ResumePoint> {
    let (id, rest) = raw.trim().split_once(':')?;
    if id.len() != 36 {
        return None;
    }
    let message_id = Uuid::parse_str(id).ok()?;
    let at = if rest == "done" {
        ResumeAt::Done
    } else if (1..=19).contains(&rest.len()) && rest.bytes().all(|b| b.is_ascii_digit()) {
        ResumeAt::Offset(rest.parse().ok()?)
    } else {
        return None;
    };
    Some(ResumePoint { message_id, at })
}

/// `Last-Event-ID` from the header, else from `?last_event_id=` (for clients that cannot set
/// it); `None` when neither is given or it is empty, a 400 naming `Last-Event-ID` when it is
/// not an id this server wrote.
pub fn last_event_id(
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Option<ResumePoint>, Error> {
    let raw = match headers.get("last-event-id") {
        Some(v) => Some(v.to_str().map_err(|_| bad_resume())?.to_owned()),
        None => query_pairs(query)?
            .into_iter()
            .find_map(|(k, v)| (k == "last_event_id").then_some(v)),
    };
    match raw.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(raw) => parse_event_id(raw).map(Some).ok_or_else(bad_resume),
    }
}

fn bad_resume() -> Error {
    Error::bad_request(
        "Last-Event-ID",
        "Last-Event-ID must be `<message id>:<byte offset>` or `<message id>:done`",
    )
}

/// Writes `<message id>:<offset>` event ids into one buffer per stream: no allocation per delta.
pub struct EventIds {
    buf: [u8; 64],
}

/// Length of a hyphenated UUID and its `:`.
const PREFIX: usize = 37;

impl EventIds {
    pub fn new(message_id: Uuid) -> Self {
        let mut buf = [0u8; 64];
        message_id.hyphenated().encode_lower(&mut buf[..36]);
        buf[36] = b':';
        Self { buf }
    }

    /// `<message id>:<suffix>`; the suffix is ASCII of at most 27 bytes (`done`, digits).
    pub fn with(&mut self, suffix: &str) -> &str {
        let end = PREFIX + suffix.len();
        self.buf[PREFIX..end].copy_from_slice(suffix.as_bytes());
        // The buffer holds ASCII only: a UUID, a colon and digits or `done`.
        std::str::from_utf8(&self.buf[..end]).unwrap_or_default()
    }

    /// `<message id>:<offset>`.
    pub fn offset(&mut self, offset: usize) -> &str {
        let mut digits = itoa::Buffer::new();
        self.with(digits.format(offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_parse_offsets_and_done() {
        let id = Uuid::new_v4();
        assert_eq!(
            parse_event_id(&format!("{id}:42")),
            Some(ResumePoint {
                message_id: id,
                at: ResumeAt::Offset(42)
            })
        );
        assert_eq!(
            parse_event_id(&format!("{id}:done")),
            Some(ResumePoint {
                message_id: id,
                at: ResumeAt::Done
            })
        );
        assert_eq!(parse_event_id(&format!("{id}:-1")), None);
        assert_eq!(parse_event_id(&format!("{id}:")), None);
        assert_eq!(parse_event_id("nope:1"), None);
    }

    #[test]
    fn event_ids_are_written_as_they_are_parsed() {
        let id = Uuid::new_v4();
        let mut ids = EventIds::new(id);
        assert_eq!(
            parse_event_id(ids.offset(12345)).map(|p| p.at),
            Some(ResumeAt::Offset(12345))
        );
        assert_eq!(
            parse_event_id(ids.with("done")).map(|p| p.at),
            Some(ResumeAt::Done)
        );
        assert_eq!(
            ids.offset(usize::MAX).len(),
            37 + usize::MAX.to_string().len()
        );
    }
}

#[cfg(test)]
mod props {
    use proptest::prelude::*;
    use uuid::Uuid;

    use super::{EventIds, parse_event_id};
    use crate::domain::{ResumeAt, ResumePoint};

    proptest! {
        #[test]
        fn any_last_event_id_is_read_or_refused_without_panicking(raw in "\\PC*|[0-9a-f:-]{0,60}") {
            let _ = parse_event_id(&raw);
        }

        #[test]
        fn every_id_written_reads_back_as_its_offset(
            id in any::<u128>(),
            // Up to 19 digits: far beyond any answer, and what the description's pattern allows.
            offset in 0usize..10_000_000_000_000_000_000,
        ) {
            let message_id = Uuid::from_u128(id);
            let mut ids = EventIds::new(message_id);
            let written = ids.offset(offset).to_owned();
            prop_assert_eq!(
                parse_event_id(&written),
                Some(ResumePoint { message_id, at: ResumeAt::Offset(offset) })
            );
            prop_assert_eq!(
                parse_event_id(ids.with("done")),
                Some(ResumePoint { message_id, at: ResumeAt::Done })
            );
        }
    }
}
