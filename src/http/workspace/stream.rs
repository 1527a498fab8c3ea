//! This dialect's event stream: `delta` `{content}`, `sources`, `error` `{code, message}` and
//! `done` `{message}`, with the resumable ids every SSE dialect shares. The agent API speaks
//! the same stream, its `done` carrying its own message object ([`response_with`]).

use axum::http::{HeaderName, HeaderValue};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};

use super::dto::{MessageDto, StreamDone};
use crate::domain::{GenEvent, Message};
use crate::http::AppState;
use crate::http::sse::EventIds;
use crate::service::AnswerStream;

/// The SSE response for an answer, with `X-Message-Id` naming it at once.
pub fn response(state: &AppState, answer: AnswerStream) -> Response {
    response_with(state, answer, "workspace", |message| {
        json(&StreamDone {
            message: message.map(MessageDto::from),
        })
    })
}

/// How a dialect writes the data of `event: done` from the saved answer.
pub type DoneData = fn(Option<&Message>) -> String;

/// [`response`] for a dialect (`label`, for metrics) with its own `done` data.
pub fn response_with(
    state: &AppState,
    answer: AnswerStream,
    label: &'static str,
    done: DoneData,
) -> Response {
    let message_id = answer.message_id();
    let ids = EventIds::new(message_id);
    let events = futures::stream::unfold((answer, ids), move |(mut answer, mut ids)| async move {
        loop {
            let event = answer.next().await?;
            if let Some(sse) = to_sse(&mut ids, event, done) {
                return Some((sse, (answer, ids)));
            }
        }
    });
    let mut response = crate::http::sse::response(
        events,
        state.services.closing().clone(),
        state.keepalive,
        crate::http::sse::retry_event(),
        label,
    )
    .into_response();
    if let Ok(value) = HeaderValue::from_str(&message_id.to_string()) {
        response
            .headers_mut()
            .insert(HeaderName::from_static("x-message-id"), value);
    }
    response
}

fn to_sse(ids: &mut EventIds, event: GenEvent, done_data: DoneData) -> Option<Event> {
    Some(match event {
        // This dialect sends no tools upstream.
        GenEvent::ToolCall { .. } => return None,
        GenEvent::Delta { text, end } => Event::default()
            .event("delta")
            .id(ids.offset(end))
            .data(json(&serde_json::json!({"content": text}))),
        GenEvent::Sources(sources) => Event::default()
            .event("sources")
            .id(ids.offset(0))
            .data(sources.to_string()),
        GenEvent::Error { failure, offset } => Event::default()
            .event("error")
            .id(ids.offset(offset))
            .data(json(&serde_json::json!({
                "code": failure.code,
                "message": failure.message,
            }))),
        GenEvent::Done(done) => Event::default()
            .event("done")
            .id(ids.with("done"))
            .data(done_data(done.message.as_ref())),
    })
}

/// Strings, numbers and UUIDs only: serialisation cannot fail.
pub fn json(body: &impl serde::Serialize) -> String {
    serde_json::to_string(body).unwrap_or_default()
}
