//! SSE inference and stop. Core events become SSE events here, at the edge: raw-text deltas,
//! named JSON `sources`, `error` and `done` events, ids `<message id>:<byte offset>`.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};

use super::dto::{DoneEvent, ErrorEvent, StopDto};
use super::error::{ConvError, ErrorBody};
use super::handlers::Caller;
use crate::domain::GenEvent;
use crate::http::AppState;
use crate::http::extract::{Auth, parse_id};
use crate::http::sse::{EventIds, ServerSentEvent, last_event_id};
use crate::service::{AnswerStream, Principal, StreamOpen, Variant};

/// Stream the answer (SSE)
///
/// `{id}` is a chat (its newest `Human` message is answered) or a `Human` conversation. The
/// answer is the server's, not the connection's: the first reader starts it, later readers
/// attach to it, and once finished it is replayed from the database.
///
/// Events, in order (`text/event-stream`; `: ok` at once, `: keep-alive` comments meanwhile):
///
/// - unnamed events (`onmessage`): raw text deltas; a delta with line breaks spans several
///   `data:` lines, and the deltas concatenated are the stored answer byte for byte;
/// - `event: error`: JSON `InferenceError` `{code, message}`, then `done`;
/// - `event: done`: JSON `InferenceDone` `{conversation, status, finish_reason, usage}`, after
///   which the server ends the response.
///
/// Every event's id is `<assistant message id>:<byte offset after it>`, `done`'s is
/// `<message id>:done`. Reconnect with `Last-Event-ID` (or `?last_event_id=`) to continue from
/// that offset, nothing sent twice; after `done` the answer is 204, which stops `EventSource`.
///
/// After a server crash a reader may hold more of an answer than was saved: its resume gets
/// `error` `{code: "interrupted", message, saved_bytes}` and `done` (`incomplete`, the saved
/// row), not a 400.
#[utoipa::path(
    get,
    path = "/conversations/inference/{id}",
    tag = "conversations",
    params(
        ("id" = Uuid, Path, description = "A chat, or a `Human` conversation"),
        ("Last-Event-ID" = Option<String>, Header, nullable = false, description = "Resume after this event: `<message id>:<offset>` or `<message id>:done`", pattern = r"^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}:([0-9]{1,19}|done))?$"),
        ("last_event_id" = Option<String>, Query, nullable = false, description = "The same, for clients that cannot set headers", pattern = r"^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}:([0-9]{1,19}|done))?$"),
    ),
    security(("bearer" = []), ("api_key" = []), ("publishable_key" = [])),
    responses(
        (status = 200, description = "The event stream: text deltas, then `error`? and `done`", content_type = "text/event-stream", body = ServerSentEvent),
        (status = 204, description = "The client already had `done`: nothing more will come"),
        (status = 400, description = "The id is not a UUID, or a malformed Last-Event-ID, or an offset inside a character or beyond the text of an answer that is not `incomplete`", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 404, description = "No such chat or conversation in the key's workspace", body = ErrorBody),
        (status = 402, description = "An answer has to start and the workspace's credit is used up (`insufficient_credits`)", body = ErrorBody),
        (status = 409, description = "The chat has no `Human` message to answer", body = ErrorBody),
        (status = 503, description = "The server is shutting down", body = ErrorBody),
    ),
)]
pub async fn inference(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ConvError> {
    stream(
        &state,
        &who,
        &id,
        &headers,
        query.as_deref(),
        Variant::Plain,
    )
    .await
}

/// Stream an answer grounded in a web search (SSE)
///
/// Exactly the plain stream, with a web search first when the answer has to be generated: the
/// question is searched, the top pages are read (per-page time and size limits, one total
/// deadline, private addresses refused), the best passages become numbered sources, and the
/// model is asked to cite them as `[n]`.
///
/// - `event: sources` comes first: JSON `[{index, title, url, snippet}]` (empty when the search
///   failed); a replay sends it again, a resume does not;
/// - `event: error` with code `search_failed` or `search_disabled` follows it when the search
///   could not help: the answer still streams, without sources;
/// - `done` carries `citations`: `[{index, resolves}]`, each marker the answer used, in order of
///   first use, and whether it names a sent source.
///
/// An answer belongs to its question: a stream that attaches to, or replays, an answer started
/// by the plain endpoint gets that answer, and the other way round.
#[utoipa::path(
    get,
    path = "/conversations/inference_internet/{id}",
    tag = "conversations",
    params(
        ("id" = Uuid, Path, description = "A chat, or a `Human` conversation"),
        ("Last-Event-ID" = Option<String>, Header, nullable = false, description = "Resume after this event: `<message id>:<offset>` or `<message id>:done`", pattern = r"^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}:([0-9]{1,19}|done))?$"),
        ("last_event_id" = Option<String>, Query, nullable = false, description = "The same, for clients that cannot set headers", pattern = r"^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}:([0-9]{1,19}|done))?$"),
    ),
    security(("bearer" = []), ("api_key" = []), ("publishable_key" = [])),
    responses(
        (status = 200, description = "The event stream: `sources`, then as the plain stream", content_type = "text/event-stream", body = ServerSentEvent),
        (status = 204, description = "The client already had `done`: nothing more will come"),
        (status = 400, description = "The id is not a UUID, or a malformed Last-Event-ID, or an offset inside a character or beyond the text of an answer that is not `incomplete`", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 404, description = "No such chat or conversation in the key's workspace", body = ErrorBody),
        (status = 402, description = "An answer has to start and the workspace's credit is used up (`insufficient_credits`)", body = ErrorBody),
        (status = 409, description = "The chat has no `Human` message to answer", body = ErrorBody),
        (status = 503, description = "The server is shutting down", body = ErrorBody),
    ),
)]
pub async fn inference_internet(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ConvError> {
    stream(
        &state,
        &who,
        &id,
        &headers,
        query.as_deref(),
        Variant::Internet,
    )
    .await
}

async fn stream(
    state: &AppState,
    who: &Principal,
    id: &str,
    headers: &HeaderMap,
    query: Option<&str>,
    variant: Variant,
) -> Result<Response, ConvError> {
    let id = parse_id("id", id)?;
    let resume = last_event_id(headers, query)?;
    match state.services.open_stream(who, id, resume, variant).await? {
        // 204 is what makes an EventSource stop reconnecting.
        StreamOpen::AlreadyDone => Ok(StatusCode::NO_CONTENT.into_response()),
        StreamOpen::Stream(subscription) => Ok(crate::http::sse::response(
            events(subscription),
            state.services.closing().clone(),
            state.keepalive,
            crate::http::sse::retry_event(),
            "conversations",
        )),
    }
}

fn events(subscription: AnswerStream) -> impl futures::Stream<Item = Event> + Send + 'static {
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
        GenEvent::Error { failure, offset } => {
            let body = ErrorEvent {
                code: &failure.code,
                message: &failure.message,
                saved_bytes: failure.saved_bytes,
            };
            Event::default()
                .event("error")
                .id(ids.offset(offset))
                .data(to_json(&body))
        }
        GenEvent::Done(done) => Event::default()
            .event("done")
            .id(ids.with("done"))
            .data(to_json(&DoneEvent::from(&*done))),
    })
}

/// Serialises an event's data. These types hold strings, numbers and UUIDs only: they cannot
/// fail to serialise.
fn to_json(body: &impl serde::Serialize) -> String {
    serde_json::to_string(body).unwrap_or_default()
}

/// Stop the running answer
///
/// Cancels the chat's running generation: the partial text is saved as `cancelled` and every
/// attached stream gets `done`.
#[utoipa::path(
    post,
    path = "/conversations/stop/{id}",
    tag = "conversations",
    params(("id" = Uuid, Path, description = "The chat")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "What was stopped, if anything", body = StopDto),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 403, description = "A publishable key", body = ErrorBody),
        (status = 404, description = "No such chat in the key's workspace", body = ErrorBody),
    ),
)]
pub async fn stop(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    Path(id): Path<String>,
) -> Result<Json<StopDto>, ConvError> {
    let outcome = state.services.stop(&who, parse_id("id", &id)?).await?;
    let done = outcome.stopped.as_deref();
    Ok(Json(StopDto {
        chat_id: outcome.chat_id,
        stopped: done.is_some(),
        status: done.map(|d| d.status.as_str()),
        conversation: done.and_then(|d| d.message.as_ref()).map(Into::into),
    }))
}

#[cfg(test)]
mod props {
    use std::convert::Infallible;

    use axum::response::IntoResponse;
    use axum::response::sse::Sse;
    use eventsource_stream::Eventsource;
    use futures::StreamExt;
    use proptest::prelude::*;
    use proptest::sample::Index;
    use uuid::Uuid;

    use super::to_sse;
    use crate::domain::{GenEvent, LineBreaks};
    use crate::http::sse::EventIds;
    use crate::test_support::pieces;

    proptest! {
        /// Deltas of any stored text (line breaks normalised), cut anywhere, reach an SSE client
        /// byte for byte, each event id naming the offset where its delta ends.
        #[test]
        fn deltas_reach_an_sse_client_byte_for_byte(
            raw in "[a \r\n:é😀]{1,40}|\\PC{1,40}",
            cuts in prop::collection::vec(any::<Index>(), 0..10),
        ) {
            let mut text = String::new();
            LineBreaks::default().push(&raw, &mut text);
            let message_id = Uuid::from_u128(7);
            let mut ids = EventIds::new(message_id);
            let mut events = Vec::new();
            let mut end = 0;
            for piece in pieces(&text, &cuts) {
                end += piece.len();
                events.extend(to_sse(&mut ids, GenEvent::Delta { text: piece.to_owned(), end }));
            }
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let received: Vec<(String, String)> = runtime.block_on(async {
                let body = Sse::new(futures::stream::iter(events).map(Ok::<_, Infallible>))
                    .into_response()
                    .into_body();
                let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
                futures::stream::iter([Ok::<_, Infallible>(bytes)])
                    .eventsource()
                    .map(|e| {
                        let e = e.unwrap();
                        (e.id, e.data)
                    })
                    .collect()
                    .await
            });
            let joined: String = received.iter().map(|(_, data)| data.as_str()).collect();
            prop_assert_eq!(&joined, &text);
            let mut at = 0;
            for (id, data) in &received {
                at += data.len();
                prop_assert_eq!(id, &format!("{message_id}:{at}"));
            }
        }
    }
}
