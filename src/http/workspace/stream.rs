//! This dialect's event stream: `delta` `{content}`, `sources`, `error` `{code, message}` (and
//! `saved_bytes` when the server stopped before saving all it streamed: the saved answer ends
//! there) and `done` `{message}`, with the resumable ids every SSE dialect shares. The agent API
//! speaks the same stream in its own spelling ([`Spelling`]).

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
    response_with(
        state,
        answer,
        Spelling {
            label: "workspace",
            done: |message| {
                json(&StreamDone {
                    message: message.map(MessageDto::from),
                })
            },
            saved_bytes: "saved_bytes",
        },
    )
}

/// How a dialect writes the data of `event: done` from the saved answer.
pub type DoneData = fn(Option<&Message>) -> String;

/// What a dialect speaking this stream spells its own way.
#[derive(Clone, Copy)]
pub struct Spelling {
    /// For metrics.
    pub label: &'static str,
    /// The data of `event: done`.
    pub done: DoneData,
    /// The name of `error`'s `saved_bytes`.
    pub saved_bytes: &'static str,
}

/// [`response`] in a dialect's own [`Spelling`].
pub fn response_with(state: &AppState, answer: AnswerStream, spelling: Spelling) -> Response {
    let message_id = answer.message_id();
    let ids = EventIds::new(message_id);
    let events = futures::stream::unfold((answer, ids), move |(mut answer, mut ids)| async move {
        loop {
            let event = answer.next().await?;
            if let Some(sse) = to_sse(&mut ids, event, spelling) {
                return Some((sse, (answer, ids)));
            }
        }
    });
    let mut response = crate::http::sse::response(
        events,
        state.services.closing().clone(),
        state.keepalive,
        crate::http::sse::retry_event(),
        spelling.label,
    )
    .into_response();
    if let Ok(value) = HeaderValue::from_str(&message_id.to_string()) {
        response
            .headers_mut()
            .insert(HeaderName::from_static("x-message-id"), value);
    }
    response
}

fn to_sse(ids: &mut EventIds, event: GenEvent, spelling: Spelling) -> Option<Event> {
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
        GenEvent::Error { failure, offset } => {
            let mut data = serde_json::json!({
                "code": failure.code,
                "message": failure.message,
            });
            if let Some(saved) = failure.saved_bytes {
                data[spelling.saved_bytes] = saved.into();
            }
            Event::default()
                .event("error")
                .id(ids.offset(offset))
                .data(json(&data))
        }
        GenEvent::Done(done) => Event::default()
            .event("done")
            .id(ids.with("done"))
            .data((spelling.done)(done.message.as_ref())),
    })
}

/// Strings, numbers and UUIDs only: serialisation cannot fail.
pub fn json(body: &impl serde::Serialize) -> String {
    serde_json::to_string(body).unwrap_or_default()
}
