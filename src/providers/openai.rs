//! Any OpenAI-compatible endpoint.
//!
//! async-openai makes the call: its configuration gives the endpoint and headers (base URL,
//! `Authorization`, organisation, custom headers) and its retry layer retries rate limits, 5xx
//! answers and failed connections with backoff (honouring `Retry-After`) on a pooled client.
//! The streamed body is decoded here, inside the generation task that reads it: async-openai's
//! own stream spawns a reader task and an unbounded channel per answer, one more task wake-up
//! per token than the relay needs, and stops reading at `[DONE]`, which leaves the response
//! unfinished so that its connection cannot go back to the pool.
//!
//! Each chunk is read as JSON with typed structs where it has the usual shape, and as a
//! `serde_json::Value` otherwise, so quirks that strict typed chunks reject (`finish_reason:
//! "eos"` or `""`, missing ids, `{"error":…}` chunks) are normalised instead of failing the
//! stream.

use std::time::Duration;

use async_openai::config::{Config, OpenAIConfig};
use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;
use axum::body::Bytes;
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, header};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};
use std::collections::VecDeque;
use tokio::time::Instant;
use tower::ServiceExt;

use super::audio::{AudioUpload, Form, Transcript};
use super::connections::{Clients, Lease};
use super::event_stream::{Decoder, Event};
use super::{ChatRequest, EventStream, Provider, ProviderError, StreamEvent, ToolCallDelta};
use crate::config::ProviderSettings;
use crate::domain::Usage;

/// The longest event-stream line accepted from an upstream (a chunk is one line).
const MAX_LINE: usize = 16 * 1024 * 1024;
/// How long the rest of a body is read after `[DONE]`, so that its connection can be reused.
const DRAIN: Duration = Duration::from_millis(500);

pub struct OpenAiCompatible {
    name: String,
    target: std::sync::Arc<Target>,
    clients: Clients,
    audio: Audio,
}

/// Where transcriptions go. A streamed upload cannot be sent twice, so it has its own client
/// without the retry layer.
struct Audio {
    url: reqwest::Url,
    client: reqwest::Client,
}

/// How long a transcription's answer may keep the connection silent: a provider can take a
/// while over a long recording.
const TRANSCRIPTION_READ_TIMEOUT: Duration = Duration::from_secs(300);

/// Where and how requests are sent.
struct Target {
    url: reqwest::Url,
    headers: HeaderMap,
}

impl OpenAiCompatible {
    pub fn new(settings: &ProviderSettings) -> Result<Self, String> {
        let key = settings
            .api_key
            .as_ref()
            .map(|k| k.expose_secret().to_owned())
            .unwrap_or_default();
        // async-openai builds the Authorization header from the key and would panic on bytes a
        // header cannot carry: refuse them here, naming the setting.
        if HeaderValue::from_str(&format!("Bearer {key}")).is_err() {
            return Err("the API key contains characters an HTTP header cannot carry".to_owned());
        }
        let mut config = OpenAIConfig::new()
            .with_api_base(settings.base_url.clone())
            .with_api_key(key);
        for (name, value) in &settings.headers {
            let header = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("header `{name}` is not a valid header name"))?;
            config = config
                .with_header(header, value.clone())
                .map_err(|_| format!("header `{name}` has an invalid value"))?;
        }
        let mut headers = config.headers();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        );
        let audio = Audio {
            url: reqwest::Url::parse(&config.url("/audio/transcriptions"))
                .map_err(|e| format!("base_url is not a valid URL: {e}"))?,
            client: reqwest::Client::builder()
                .connect_timeout(settings.timeouts.connect)
                .read_timeout(TRANSCRIPTION_READ_TIMEOUT)
                .build()
                .map_err(|e| format!("cannot build the HTTP client: {e}"))?,
        };
        Ok(Self {
            name: settings.name.clone(),
            audio,
            clients: Clients::new(settings.http, &settings.timeouts)?,
            target: std::sync::Arc::new(Target {
                url: reqwest::Url::parse(&config.url("/chat/completions"))
                    .map_err(|e| format!("base_url is not a valid URL: {e}"))?,
                headers,
            }),
        })
    }
}

fn request_body(request: ChatRequest) -> Value {
    let mut body = request.params;
    body.insert("model".into(), json!(request.model));
    body.insert("messages".into(), Value::Array(request.messages));
    // Always stream and always ask for usage: the core needs both, whatever the client asked.
    body.insert("stream".into(), json!(true));
    body.insert("stream_options".into(), json!({"include_usage": true}));
    Value::Object(body)
}

fn map_error(error: OpenAIError) -> ProviderError {
    match error {
        OpenAIError::ApiError(e) => ProviderError::Status {
            status: e.status_code.as_u16(),
            message: e.api_error.message,
        },
        OpenAIError::Reqwest(e) if e.is_connect() || e.is_timeout() => {
            ProviderError::Connect(e.to_string())
        }
        OpenAIError::Reqwest(e) => match e.status() {
            Some(status) => ProviderError::Status {
                status: status.as_u16(),
                message: e.to_string(),
            },
            None => ProviderError::Stream(e.to_string()),
        },
        OpenAIError::JSONDeserialize(e, _) => {
            ProviderError::Reported(format!("unreadable response: {e}"))
        }
        other => ProviderError::Stream(other.to_string()),
    }
}

/// The error of a non-2xx answer: OpenAI's `{"error": {"message": …}}` where the body has it,
/// else the body's text.
async fn status_error(response: reqwest::Response) -> ProviderError {
    #[derive(Deserialize)]
    struct Wrapped {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        message: String,
    }
    let status = response.status().as_u16();
    let message = match response.bytes().await {
        Ok(body) => match serde_json::from_slice::<Wrapped>(&body) {
            Ok(wrapped) => wrapped.error.message,
            Err(_) => String::from_utf8_lossy(&body).trim().to_owned(),
        },
        Err(e) => e.to_string(),
    };
    ProviderError::Status { status, message }
}

/// Normalises a finish reason: `eos` and friends mean `stop`; an empty string means "not yet".
fn finish_reason(value: &Value) -> Option<String> {
    normalise_finish(value.as_str()?)
}

fn normalise_finish(reason: &str) -> Option<String> {
    match reason {
        "" => None,
        "eos" | "eos_token" | "end_turn" | "stop_sequence" => Some("stop".to_owned()),
        "max_tokens" => Some("length".to_owned()),
        other => Some(other.to_owned()),
    }
}

type Queue = VecDeque<Result<StreamEvent, ProviderError>>;

/// The usual shape of a chunk, read without building a JSON tree: the delta's text is the only
/// allocation. A chunk that does not fit (tool calls, an error, odd types) takes the lenient
/// `Value` path instead.
#[derive(Deserialize)]
struct FastChunk {
    #[serde(default)]
    choices: Vec<FastChoice>,
    #[serde(default)]
    usage: Option<FastUsage>,
    #[serde(default)]
    error: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct FastChoice {
    #[serde(default)]
    delta: Option<FastDelta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct FastDelta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct FastUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

fn saturate(v: Option<u64>) -> u32 {
    v.map_or(0, |v| u32::try_from(v).unwrap_or(u32::MAX))
}

/// Parses one chunk's JSON into events; returns whether it carried `finish_reason: ""`.
fn parse_chunk(raw: &str, out: &mut Queue) -> bool {
    if let Ok(chunk) = serde_json::from_str::<FastChunk>(raw) {
        let simple = chunk.error.is_none()
            && chunk
                .choices
                .iter()
                .all(|c| c.delta.as_ref().is_none_or(|d| d.tool_calls.is_none()));
        if simple {
            let mut empty_finish = false;
            if let Some(choice) = chunk.choices.into_iter().next() {
                if let Some(content) = choice.delta.and_then(|d| d.content)
                    && !content.is_empty()
                {
                    out.push_back(Ok(StreamEvent::Delta(content)));
                }
                if let Some(reason) = &choice.finish_reason {
                    empty_finish = reason.is_empty();
                    if let Some(reason) = normalise_finish(reason) {
                        out.push_back(Ok(StreamEvent::Done {
                            finish_reason: reason,
                        }));
                    }
                }
            }
            if let Some(usage) = chunk.usage {
                out.push_back(Ok(StreamEvent::Usage(Usage::new(
                    saturate(usage.prompt_tokens),
                    saturate(usage.completion_tokens),
                    false,
                ))));
            }
            return empty_finish;
        }
    }
    match serde_json::from_str::<Value>(raw) {
        Ok(chunk) => {
            let empty_finish = has_empty_finish(&chunk);
            chunk_events(chunk, out);
            empty_finish
        }
        Err(e) => {
            out.push_back(Err(ProviderError::Reported(format!(
                "unreadable chunk: {e}"
            ))));
            false
        }
    }
}

/// Turns one upstream chunk into sluice's events (usually one, sometimes none or several).
fn chunk_events(chunk: Value, out: &mut Queue) {
    if let Some(error) = chunk.get("error") {
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| error.to_string());
        out.push_back(Err(ProviderError::Reported(message)));
        return;
    }
    if let Some(choice) = chunk.get("choices").and_then(|c| c.get(0)) {
        if let Some(content) = choice
            .get("delta")
            .and_then(|d| d.get("content"))
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
        {
            out.push_back(Ok(StreamEvent::Delta(content.to_owned())));
        }
        if let Some(calls) = choice
            .get("delta")
            .and_then(|d| d.get("tool_calls"))
            .and_then(Value::as_array)
        {
            for (position, call) in calls.iter().enumerate() {
                let function = call.get("function");
                let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
                out.push_back(Ok(StreamEvent::ToolCall(ToolCallDelta {
                    index: call
                        .get("index")
                        .and_then(Value::as_u64)
                        .and_then(|i| u32::try_from(i).ok())
                        .unwrap_or(u32::try_from(position).unwrap_or(0)),
                    id: text(call.get("id")).filter(|id| !id.is_empty()),
                    name: text(function.and_then(|f| f.get("name"))).filter(|n| !n.is_empty()),
                    arguments: text(function.and_then(|f| f.get("arguments"))).unwrap_or_default(),
                })));
            }
        }
        if let Some(reason) = choice.get("finish_reason").and_then(finish_reason) {
            out.push_back(Ok(StreamEvent::Done {
                finish_reason: reason,
            }));
        }
    }
    if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
        let count = |k: &str| {
            usage
                .get(k)
                .and_then(Value::as_u64)
                .map_or(0, |v| u32::try_from(v).unwrap_or(u32::MAX))
        };
        out.push_back(Ok(StreamEvent::Usage(Usage::new(
            count("prompt_tokens"),
            count("completion_tokens"),
            false,
        ))));
    }
}

/// What the stream has seen of its own end.
#[derive(Default)]
struct Ends {
    finished: bool,
    last_empty_finish: bool,
    closed: bool,
}

fn has_empty_finish(chunk: &Value) -> bool {
    chunk
        .get("choices")
        .and_then(|c| c.get(0))
        .and_then(|c| c.get("finish_reason"))
        .and_then(Value::as_str)
        .is_some_and(str::is_empty)
}

/// One upstream body being read: the decoder's events become sluice's events in `queue`.
struct Reading {
    response: reqwest::Response,
    /// The place on an upstream connection, held until the body is dropped.
    _lease: Lease,
    decoder: Decoder,
    queue: Queue,
    ends: Ends,
    /// `[DONE]` arrived: the rest of the body is read (and ignored) until this deadline.
    drain_until: Option<Instant>,
}

impl Reading {
    /// Handles one event of the upstream stream.
    fn on_event(queue: &mut Queue, ends: &mut Ends, drain: &mut bool, event: Event<'_>) {
        if *drain || event.name == "keepalive" {
            return;
        }
        if event.data == "[DONE]" {
            *drain = true;
            return;
        }
        let before = queue.len();
        let empty_finish = parse_chunk(event.data, queue);
        let added = queue.iter().skip(before);
        // A chunk whose finish_reason is "" right before a clean end is how some servers say
        // "stop"; anywhere else "" means "not finished yet", and text after it means it was not
        // the end after all.
        if empty_finish {
            ends.last_empty_finish = true;
        } else if added
            .clone()
            .any(|e| matches!(e, Ok(StreamEvent::Delta(_) | StreamEvent::ToolCall(_))))
        {
            ends.last_empty_finish = false;
        }
        ends.finished |= added
            .clone()
            .any(|e| matches!(e, Ok(StreamEvent::Done { .. })));
    }

    /// The stream is over: a trailing empty finish_reason counts as `stop`.
    fn close(&mut self) {
        self.ends.closed = true;
        if !self.ends.finished && self.ends.last_empty_finish {
            self.queue.push_back(Ok(StreamEvent::Done {
                finish_reason: "stop".to_owned(),
            }));
        }
    }

    /// Reads the next piece of the body into the queue.
    async fn read(&mut self) {
        let chunk = match self.drain_until {
            Some(deadline) => {
                match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                    Ok(Ok(Some(_))) => return,
                    // Whatever happens after `[DONE]`, the answer is complete.
                    Ok(Ok(None) | Err(_)) | Err(_) => return self.close(),
                }
            }
            None => self.response.chunk().await,
        };
        let Self {
            decoder,
            queue,
            ends,
            ..
        } = self;
        let mut drain = false;
        let mut on_event = |event: Event<'_>| Self::on_event(queue, ends, &mut drain, event);
        let decoded = match chunk {
            Ok(Some(bytes)) => decoder.feed(&bytes, &mut on_event),
            Ok(None) => {
                let decoded = decoder.finish(&mut on_event);
                if decoded.is_ok() {
                    self.close();
                    return;
                }
                decoded
            }
            Err(e) => {
                self.ends.closed = true;
                self.queue
                    .push_back(Err(ProviderError::Stream(e.to_string())));
                return;
            }
        };
        if let Err(e) = decoded {
            self.ends.closed = true;
            self.queue.push_back(Err(ProviderError::Reported(format!(
                "unreadable stream: {e}"
            ))));
        } else if drain && self.drain_until.is_none() {
            self.drain_until = Some(Instant::now() + DRAIN);
        }
    }
}

#[async_trait::async_trait]
impl Provider for OpenAiCompatible {
    fn name(&self) -> &str {
        &self.name
    }

    async fn transcribe(
        &self,
        model: &str,
        upload: AudioUpload,
    ) -> Result<Transcript, ProviderError> {
        #[derive(Deserialize)]
        struct Answer {
            text: String,
            #[serde(default)]
            language: Option<String>,
        }
        let form = Form::for_transcription(model, upload);
        let mut headers = self.target.headers.clone();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(&format!("multipart/form-data; boundary={}", form.boundary))
                .map_err(|e| ProviderError::Stream(e.to_string()))?,
        );
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let response = self
            .audio
            .client
            .post(self.audio.url.clone())
            .headers(headers)
            .body(reqwest::Body::wrap_stream(form.body))
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    ProviderError::Connect(e.to_string())
                } else {
                    ProviderError::Stream(e.to_string())
                }
            })?;
        if !response.status().is_success() {
            return Err(status_error(response).await);
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| ProviderError::Stream(e.to_string()))?;
        let answer: Answer = serde_json::from_slice(&body)
            .map_err(|e| ProviderError::Reported(format!("unreadable transcription: {e}")))?;
        Ok(Transcript {
            text: answer.text,
            language: answer.language,
        })
    }

    async fn stream(&self, request: ChatRequest) -> Result<EventStream, ProviderError> {
        let body = Bytes::from(
            serde_json::to_vec(&request_body(request))
                .map_err(|e| ProviderError::Stream(format!("cannot encode the request: {e}")))?,
        );
        let target = self.target.clone();
        // Rebuilt for each attempt of the retry layer; the body is shared, not copied.
        let factory = HttpRequestFactory::new(move || {
            let mut request = reqwest::Request::new(reqwest::Method::POST, target.url.clone());
            *request.headers_mut() = target.headers.clone();
            *request.body_mut() = Some(reqwest::Body::from(body.clone()));
            async move { Ok::<_, OpenAIError>(request) }
        });
        let lease = self.clients.lease().map_err(ProviderError::Connect)?;
        let response = lease
            .service
            .clone()
            .oneshot(factory)
            .await
            .map_err(map_error)?;
        if !response.status().is_success() {
            return Err(status_error(response).await);
        }
        let reading = Reading {
            response,
            _lease: lease,
            decoder: Decoder::new(MAX_LINE),
            queue: Queue::new(),
            ends: Ends::default(),
            drain_until: None,
        };
        let events = futures::stream::unfold(reading, |mut reading| async move {
            loop {
                if let Some(item) = reading.queue.pop_front() {
                    return Some((item, reading));
                }
                if reading.ends.closed {
                    return None;
                }
                reading.read().await;
            }
        });
        Ok(events.boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both paths must agree: the typed fast path and the lenient `Value` path.
    fn events(chunk: Value) -> Vec<Result<StreamEvent, ProviderError>> {
        let mut fast = Queue::new();
        parse_chunk(&chunk.to_string(), &mut fast);
        let mut lenient = Queue::new();
        chunk_events(chunk, &mut lenient);
        assert_eq!(format!("{fast:?}"), format!("{lenient:?}"));
        fast.into_iter().collect()
    }

    #[test]
    fn eos_finish_reason_is_normalised_to_stop() {
        let out = events(json!({"choices":[{"delta":{},"finish_reason":"eos"}]}));
        assert_eq!(out.len(), 1);
        assert!(
            matches!(&out[0], Ok(StreamEvent::Done { finish_reason }) if finish_reason == "stop")
        );
    }

    #[test]
    fn empty_finish_reason_means_not_finished() {
        let out = events(json!({"choices":[{"delta":{"content":"hi"},"finish_reason":""}]}));
        assert_eq!(out.len(), 1);
        assert!(matches!(&out[0], Ok(StreamEvent::Delta(t)) if t == "hi"));
    }

    #[test]
    fn an_error_chunk_becomes_an_error() {
        let out = events(json!({"error":{"message":"overloaded"}}));
        assert!(matches!(&out[0], Err(ProviderError::Reported(m)) if m == "overloaded"));
    }

    #[test]
    fn a_chunk_without_id_or_choices_is_accepted() {
        assert!(events(json!({"object":"chat.completion.chunk"})).is_empty());
    }
}

#[cfg(test)]
mod fast_path_tests {
    use super::*;

    #[test]
    fn odd_types_fall_back_to_the_lenient_path() {
        let mut out = Queue::new();
        parse_chunk(
            r#"{"choices":[{"delta":{"content":"hi"},"finish_reason":7}]}"#,
            &mut out,
        );
        assert!(matches!(out.front(), Some(Ok(StreamEvent::Delta(t))) if t == "hi"));
    }

    #[test]
    fn unreadable_json_is_an_error() {
        let mut out = Queue::new();
        parse_chunk("{nope", &mut out);
        assert!(matches!(out.front(), Some(Err(ProviderError::Reported(_)))));
    }

    #[test]
    fn an_empty_finish_reason_is_reported() {
        let mut out = Queue::new();
        assert!(parse_chunk(
            r#"{"choices":[{"delta":{},"finish_reason":""}]}"#,
            &mut out
        ));
        assert!(out.is_empty());
    }
}
