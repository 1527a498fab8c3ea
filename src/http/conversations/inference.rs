//! SSE inference and stop. Core events become SSE events here, at the edge: raw-text deltas,
//! named JSON `sources`, `error` and `done` events, ids `<message id>:<byte offset>`.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use uuid::Uuid;

use super::dto::ConversationDto;
use super::error::ConvError;
use super::handlers::{Caller, require_secret};
use crate::error::Error;
use crate::generation::{GenEvent, Subscription};
use crate::http::AppState;
use crate::http::extract::{Auth, parse_id, query_pairs};
use crate::service::{ResumePoint, StreamOpen};

/// `Last-Event-ID` from the header, else from `?last_event_id=` (for clients that cannot set it).
fn resume_point(headers: &HeaderMap, query: Option<&str>) -> Result<Option<ResumePoint>, Error> {
    let raw = match headers.get("last-event-id") {
        Some(v) => Some(v.to_str().map_err(|_| bad_resume())?.to_owned()),
        None => query_pairs(query)?
            .into_iter()
            .find_map(|(k, v)| (k == "last_event_id").then_some(v)),
    };
    match raw.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(raw) => ResumePoint::parse(raw).map(Some).ok_or_else(bad_resume),
    }
}

fn bad_resume() -> Error {
    Error::bad_request(
        "Last-Event-ID",
        "Last-Event-ID must be `<message id>:<byte offset>` or `<message id>:done`",
    )
}

pub async fn inference(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ConvError> {
    let id = parse_id("id", &id)?;
    let resume = resume_point(&headers, query.as_deref())?;
    match state.services.open_stream(&who, id, resume).await? {
        // 204 is what makes an EventSource stop reconnecting.
        StreamOpen::AlreadyDone => Ok(StatusCode::NO_CONTENT.into_response()),
        StreamOpen::Stream(subscription) => Ok(crate::http::sse::response(
            events(subscription),
            state.services.hub.closing().clone(),
            state.keepalive,
            crate::http::sse::retry_event(),
            "conversations",
        )),
    }
}

fn events(subscription: Subscription) -> impl futures::Stream<Item = Event> + Send + 'static {
    let ids = EventIds::new(subscription.message_id());
    futures::stream::unfold((subscription, ids), |(mut sub, mut ids)| async move {
        loop {
            let event = sub.next().await?;
            if let Some(sse) = to_sse(&mut ids, event) {
                return Some((sse, (sub, ids)));
            }
        }
    })
}

/// Writes `<message id>:<offset>` event ids into one buffer per stream: no allocation per delta.
struct EventIds {
    buf: [u8; 64],
}

/// Length of a hyphenated UUID and its `:`.
const PREFIX: usize = 37;

impl EventIds {
    fn new(message_id: Uuid) -> Self {
        let mut buf = [0u8; 64];
        message_id.hyphenated().encode_lower(&mut buf[..36]);
        buf[36] = b':';
        Self { buf }
    }

    fn with(&mut self, suffix: &str) -> &str {
        let end = PREFIX + suffix.len();
        self.buf[PREFIX..end].copy_from_slice(suffix.as_bytes());
        // The buffer holds ASCII only: a UUID, a colon and digits or `done`.
        std::str::from_utf8(&self.buf[..end]).unwrap_or_default()
    }

    fn offset(&mut self, offset: usize) -> &str {
        let mut digits = itoa::Buffer::new();
        self.with(digits.format(offset))
    }
}

/// The SSE event for a core event; `None` for what this dialect does not show.
fn to_sse(ids: &mut EventIds, event: GenEvent) -> Option<Event> {
    Some(match event {
        // The conversations API sends no tools upstream, so this is never expected here.
        GenEvent::ToolCall { .. } => return None,
        GenEvent::Delta { text, end } => Event::default().id(ids.offset(end)).data(text),
        GenEvent::Sources(sources) => Event::default()
            .event("sources")
            .id(ids.offset(0))
            .data(sources.to_string()),
        GenEvent::Error { failure, offset } => Event::default()
            .event("error")
            .id(ids.offset(offset))
            .data(json!({"code": failure.code, "message": failure.message}).to_string()),
        GenEvent::Done(done) => {
            let body = json!({
                "conversation": done.message.as_ref().map(ConversationDto::from),
                "status": done.status.as_str(),
                "finish_reason": done.finish_reason,
                "usage": done.usage,
            });
            Event::default()
                .event("done")
                .id(ids.with("done"))
                .data(body.to_string())
        }
    })
}

pub async fn stop(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ConvError> {
    require_secret(&who)?;
    let outcome = state.services.stop(&who, parse_id("id", &id)?).await?;
    let body = match outcome.stopped {
        Some(done) => json!({
            "chat_id": outcome.chat_id,
            "stopped": true,
            "status": done.status.as_str(),
            "conversation": done.message.as_ref().map(ConversationDto::from),
        }),
        None => json!({
            "chat_id": outcome.chat_id,
            "stopped": false,
            "status": null,
            "conversation": null,
        }),
    };
    Ok(Json(body))
}
