//! `POST /v1/chat/completions`, streaming and not, on the shared generation core.
//!
//! Headers wait for the first event, so that a request the upstream refuses (or cannot be
//! reached for) is an HTTP error the SDKs turn into their own exception types. Once streaming,
//! a failure ends the stream with an error object and no `[DONE]`: a truncated answer never
//! looks complete. Nobody can resume a `/v1` stream, so a client that leaves cancels the
//! upstream request; its usage is still recorded.

use std::collections::{BTreeMap, HashSet, VecDeque};

use axum::Json;
use axum::extract::State;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::dto::{AssistantMessage, Choice, Completion, CompletionUsage, FunctionCall, ToolCall};
use super::error::{ErrorEnvelope, OpenAiError, failure_chunk, failure_response};
use super::request::{self, ChatCompletionRequest};
use crate::domain::{Finished, GenEvent, MessageStatus, ToolCallDelta};
use crate::http::AppState;
use crate::http::extract::{Auth, JsonBody};
use crate::http::sse::ServerSentEvent;
use crate::service::AnswerStream;

/// Create a chat completion
///
/// OpenAI's request and answer formats, so the official SDKs work with `base_url` pointed at
/// `/v1` and a secret key. `model` is `provider/model`, a model listed under a provider, or an
/// alias. Fields sluice knows are checked (400 naming the field in `param`); every other field is
/// relayed to the provider as given. `n` other than 1 is refused.
///
/// With `stream: true` the answer is `text/event-stream`: `data:` lines of
/// `chat.completion.chunk` objects (one `id`, `created` and `model` across them; the role in the
/// first; tool-call deltas piece by piece; `finish_reason` in the last choice chunk; the usage
/// chunk when `stream_options.include_usage` is set), then `data: [DONE]`. A failure after the
/// stream started ends it with a `data: {"error": …}` object (`OpenAIError`) and no `[DONE]`.
/// Headers wait for the first event, so a provider that refuses the request gives an HTTP error.
/// A client that disconnects cancels the upstream request.
#[utoipa::path(
    post,
    path = "/chat/completions",
    tag = "openai",
    request_body = ChatCompletionRequest,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The answer: a `chat.completion` object, or with `stream: true` an event stream of `chat.completion.chunk` objects ending with `[DONE]`", content(
            (Completion = "application/json"),
            (ServerSentEvent = "text/event-stream"),
        )),
        (status = 400, description = "An invalid field, named in `param`; the body is not JSON; or the provider refused the request", body = ErrorEnvelope),
        (status = 401, description = "Missing or invalid key", body = ErrorEnvelope),
        (status = 403, description = "A publishable key", body = ErrorEnvelope),
        (status = 404, description = "`model_not_found`, or the provider's 404", body = ErrorEnvelope),
        (status = 413, description = "The body is over the limit, or the provider's 413", body = ErrorEnvelope),
        (status = 415, description = "The body is not `application/json`", body = ErrorEnvelope),
        (status = 422, description = "The provider's 422", body = ErrorEnvelope),
        (status = 429, description = "The provider's 429, or the workspace's credit is used up (`insufficient_quota`)", body = ErrorEnvelope),
        (status = 502, description = "The provider failed before the first delta", body = ErrorEnvelope),
        (status = 503, description = "The server is shutting down", body = ErrorEnvelope),
        (status = 504, description = "The provider missed a deadline before the first delta", body = ErrorEnvelope),
    ),
)]
pub async fn create(
    State(state): State<AppState>,
    Auth(who, _): Auth<OpenAiError>,
    JsonBody(body, _): JsonBody<Value, OpenAiError>,
) -> Result<Response, OpenAiError> {
    let parsed = request::parse(body)?;
    let shape = Shape {
        id: String::new(),
        created: chrono::Utc::now().timestamp(),
        model: parsed.input.model.clone(),
    };
    let mut reader = state.services.start_completion(&who, parsed.input).await?;
    let shape = Shape {
        id: format!("chatcmpl-{}", reader.message_id().simple()),
        ..shape
    };
    let first = reader.next().await;
    if let Some(GenEvent::Error { failure, .. }) = &first {
        return Ok(failure_response(failure));
    }
    if !parsed.stream {
        return Ok(collect(reader, first, shape).await);
    }
    let writer = ChunkWriter {
        shape,
        include_usage: parsed.include_usage,
        role_sent: false,
        tool_ids: HashSet::new(),
    };
    let events = futures::stream::unfold(
        (reader, writer, first, VecDeque::<Event>::new(), false),
        |(mut reader, mut writer, mut first, mut queue, mut ended)| async move {
            loop {
                if let Some(event) = queue.pop_front() {
                    return Some((event, (reader, writer, first, queue, ended)));
                }
                if ended {
                    return None;
                }
                let next = match first.take() {
                    Some(e) => Some(e),
                    None => reader.next().await,
                };
                match next {
                    None => ended = true,
                    Some(event) => ended = writer.write(event, &mut queue),
                }
            }
        },
    );
    let farewell = Event::default().data(
        super::error::envelope(
            "the server is shutting down",
            "server_error",
            None,
            Some("server_shutdown"),
        )
        .to_json(),
    );
    Ok(crate::http::sse::response(
        events,
        state.services.closing().clone(),
        state.keepalive,
        farewell,
        "openai",
    ))
}

/// What every chunk and completion of one request shares.
struct Shape {
    id: String,
    created: i64,
    model: String,
}

impl Shape {
    fn chunk(&self, delta: Value, finish_reason: Value) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
        })
    }
}

fn usage_json(done: &Finished) -> Value {
    // Three integers: serialisation cannot fail.
    serde_json::to_value(CompletionUsage::from(done)).unwrap_or_default()
}

/// Turns core events into OpenAI chunks.
struct ChunkWriter {
    shape: Shape,
    include_usage: bool,
    role_sent: bool,
    tool_ids: HashSet<u32>,
}

fn data(value: &impl serde::Serialize) -> Event {
    // JSON values and envelopes of strings: serialisation cannot fail.
    Event::default().data(serde_json::to_string(value).unwrap_or_default())
}

impl ChunkWriter {
    fn with_role(&mut self, mut delta: Value) -> Value {
        if !self.role_sent {
            self.role_sent = true;
            delta["role"] = json!("assistant");
        }
        delta
    }

    fn tool_delta(&mut self, call: ToolCallDelta) -> Value {
        let mut out = json!({"index": call.index, "function": {"arguments": call.arguments}});
        if self.tool_ids.insert(call.index) {
            // The upstream's id when it sent one; generated only where it did not.
            let id = call
                .id
                .unwrap_or_else(|| format!("call_{}", uuid::Uuid::new_v4().simple()));
            out["id"] = json!(id);
            out["type"] = json!("function");
            out["function"]["name"] = json!(call.name.unwrap_or_default());
        } else if let Some(name) = call.name {
            out["function"]["name"] = json!(name);
        }
        out
    }

    /// Queues the chunks for one event; returns true when the stream must end.
    fn write(&mut self, event: GenEvent, queue: &mut VecDeque<Event>) -> bool {
        match event {
            GenEvent::Delta { text, .. } => {
                let delta = self.with_role(json!({"content": text}));
                queue.push_back(data(&self.shape.chunk(delta, Value::Null)));
                false
            }
            GenEvent::ToolCall { call, .. } => {
                let tool = self.tool_delta(call);
                let delta = self.with_role(json!({"content": null, "tool_calls": [tool]}));
                queue.push_back(data(&self.shape.chunk(delta, Value::Null)));
                false
            }
            GenEvent::Sources(_) => false,
            GenEvent::Error { failure, .. } => {
                queue.push_back(data(&failure_chunk(&failure)));
                true
            }
            GenEvent::Done(done) => {
                if done.status != MessageStatus::Complete {
                    let failure = crate::domain::StreamFailure::new(
                        "incomplete",
                        "the answer ended before it was finished",
                    );
                    queue.push_back(data(&failure_chunk(&failure)));
                    return true;
                }
                if !self.role_sent {
                    let delta = self.with_role(json!({"content": ""}));
                    queue.push_back(data(&self.shape.chunk(delta, Value::Null)));
                }
                let reason = json!(done.finish_reason.as_deref().unwrap_or("stop"));
                queue.push_back(data(&self.shape.chunk(json!({}), reason)));
                if self.include_usage {
                    let mut usage = self.shape.chunk(json!({}), Value::Null);
                    usage["choices"] = json!([]);
                    usage["usage"] = usage_json(&done);
                    queue.push_back(data(&usage));
                }
                queue.push_back(Event::default().data("[DONE]"));
                true
            }
        }
    }
}

/// The non-streaming answer: the same generation, read to its end.
async fn collect(mut reader: AnswerStream, first: Option<GenEvent>, shape: Shape) -> Response {
    let mut text = String::new();
    let mut tools: BTreeMap<u32, (Option<String>, String, String)> = BTreeMap::new();
    let mut next = first;
    loop {
        let Some(event) = next.take() else {
            let failure = crate::domain::StreamFailure::new("incomplete", "the answer ended early");
            return failure_response(&failure);
        };
        match event {
            GenEvent::Delta { text: t, .. } => text.push_str(&t),
            GenEvent::ToolCall { call, .. } => {
                let entry = tools.entry(call.index).or_default();
                if entry.0.is_none() {
                    entry.0 = call.id;
                }
                if let Some(name) = call.name {
                    entry.1.push_str(&name);
                }
                entry.2.push_str(&call.arguments);
            }
            GenEvent::Sources(_) => {}
            GenEvent::Error { failure, .. } => return failure_response(&failure),
            GenEvent::Done(done) => {
                if done.status != MessageStatus::Complete {
                    let failure = crate::domain::StreamFailure::new(
                        "incomplete",
                        "the answer ended before it was finished",
                    );
                    return failure_response(&failure);
                }
                let tool_calls: Vec<ToolCall> = tools
                    .into_values()
                    .map(|(id, name, arguments)| ToolCall {
                        id: id.unwrap_or_else(|| format!("call_{}", uuid::Uuid::new_v4().simple())),
                        kind: "function",
                        function: FunctionCall { name, arguments },
                    })
                    .collect();
                let content = (!text.is_empty() || tool_calls.is_empty()).then_some(text);
                let body = Completion {
                    id: shape.id,
                    object: "chat.completion",
                    created: shape.created,
                    model: shape.model,
                    system_fingerprint: None,
                    choices: vec![Choice {
                        index: 0,
                        message: AssistantMessage {
                            role: "assistant",
                            content,
                            refusal: None,
                            tool_calls,
                        },
                        logprobs: None,
                        finish_reason: done.finish_reason.as_deref().unwrap_or("stop").to_owned(),
                    }],
                    usage: CompletionUsage::from(&*done),
                };
                return Json(body).into_response();
            }
        }
        next = reader.next().await;
    }
}
