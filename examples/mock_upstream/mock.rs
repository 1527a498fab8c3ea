//! A scriptable mock of an OpenAI-compatible upstream (`/v1/chat/completions`, `/v1/models`).
//!
//! Used by the integration tests (`#[path = ...] mod mock;`) and by the `mock_upstream`
//! example binary for benchmarks and manual fault testing.
//!
//! `/v1/audio/transcriptions` reads the multipart form as it arrives, records every part (the
//! file's bytes exactly as received) and answers the [`TranscriptionScript`].
//!
//! Control routes (for manual use from the command line):
//! - `POST /__mock/script` with a [`Script`] JSON body: queue it for the next request.
//! - `POST /__mock/default` with a [`Script`] JSON body: replace the default script.
//! - `GET /__mock/requests`: every recorded `/v1/chat/completions` request body.
//! - `POST /__mock/transcription` with a [`TranscriptionScript`] JSON body: how transcriptions
//!   are answered from now on.
//! - `GET /__mock/transcriptions`: every transcription form received (`bytes` lengths, text
//!   values, file names and types).
//! - `GET /__mock/stats`: `{"requests": n, "aborted": n, "queued": n, "connections": n}`, where
//!   `connections` counts every TCP connection accepted so far (control routes included).
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Handle on a running mock upstream. Cheap to clone; the server stops when the last
/// handle is dropped (in-flight streamed bodies are cut at their next pause).
#[derive(Clone)]
pub struct MockUpstream {
    shared: Arc<Shared>,
    _shutdown: Arc<ShutdownOnDrop>,
}

/// What the mock answers to one `/v1/chat/completions` request.
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize)]
#[serde(default)]
pub struct Script {
    /// Content deltas, one upstream chunk each.
    pub chunks: Vec<String>,
    /// Pause before the first chunk, after the response headers were sent.
    pub first_delay_ms: u64,
    /// Pause before sending the response headers at all.
    pub headers_delay_ms: u64,
    /// Pause between consecutive model chunks (content, tool-call and finish chunks).
    pub chunk_delay_ms: u64,
    /// Answer this HTTP status with an OpenAI error JSON body instead of streaming.
    pub status: Option<u16>,
    /// After N content chunks, send an in-stream error event and end the body (no `[DONE]`).
    pub error_after: Option<usize>,
    /// After N content chunks, abort the connection abruptly (body error on the client).
    pub cut_after: Option<usize>,
    /// Send `data: [DONE]` at the end.
    pub done_marker: bool,
    /// Send the final chunk carrying `finish_reason`.
    pub finish_chunk: bool,
    /// The finish reason of the final chunk (sent verbatim, even when empty).
    /// When `tool_calls` is non-empty and this is `"stop"`, `"tool_calls"` is sent instead.
    pub finish_reason: String,
    /// Send a usage chunk (`choices: []`) before `[DONE]`.
    pub usage: bool,
    /// Write every SSE event as two body frames, split inside its first multi-byte character.
    pub split_utf8: bool,
    /// Chunks carry no `id` field.
    pub omit_id: bool,
    /// Send `: keep-alive` and `event: keepalive\ndata: {}` between chunks.
    pub comments: bool,
    /// Streamed as tool-call deltas after the content chunks.
    pub tool_calls: Vec<MockToolCall>,
}

/// A scripted tool call. `id: None` means the deltas carry no `id` field.
#[derive(Clone, Debug, Default, serde::Deserialize, serde::Serialize)]
#[serde(default)]
pub struct MockToolCall {
    pub id: Option<String>,
    pub name: String,
    pub arguments: String,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            chunks: ["Hello", " from", " the", " mock", " upstream."]
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            first_delay_ms: 0,
            headers_delay_ms: 0,
            chunk_delay_ms: 0,
            status: None,
            error_after: None,
            cut_after: None,
            done_marker: true,
            finish_chunk: true,
            finish_reason: "stop".to_owned(),
            usage: true,
            split_utf8: false,
            omit_id: false,
            comments: false,
            tool_calls: Vec::new(),
        }
    }
}

impl Script {
    /// The default script with these content chunks.
    pub fn text(chunks: &[&str]) -> Script {
        Script {
            chunks: chunks.iter().map(|s| (*s).to_owned()).collect(),
            ..Script::default()
        }
    }

    fn effective_finish_reason(&self) -> &str {
        if !self.tool_calls.is_empty() && self.finish_reason == "stop" {
            "tool_calls"
        } else {
            &self.finish_reason
        }
    }
}

/// What the mock answers to `/v1/audio/transcriptions`.
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize)]
#[serde(default)]
pub struct TranscriptionScript {
    pub text: String,
    /// Reported as `language` when set.
    pub language: Option<String>,
    /// Answer this HTTP status with an OpenAI error JSON body (after reading the whole form).
    pub status: Option<u16>,
    pub message: String,
}

impl Default for TranscriptionScript {
    fn default() -> Self {
        TranscriptionScript {
            text: "Hello from the mock transcriber.".to_owned(),
            language: None,
            status: None,
            message: "the mock refused the audio".to_owned(),
        }
    }
}

/// One part of a received transcription form.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FormPart {
    pub name: String,
    pub file_name: Option<String>,
    pub content_type: Option<String>,
    #[serde(skip)]
    pub bytes: Bytes,
    /// The value of a text part.
    pub text: Option<String>,
    pub len: usize,
}

/// One received transcription form; `complete` is false when the body broke off.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ReceivedForm {
    pub content_type: String,
    pub parts: Vec<FormPart>,
    pub complete: bool,
}

impl ReceivedForm {
    pub fn part(&self, name: &str) -> Option<&FormPart> {
        self.parts.iter().find(|p| p.name == name)
    }
}

struct Shared {
    state: Mutex<MockState>,
    aborted: AtomicUsize,
    /// TCP connections accepted, to see whether clients reuse them.
    connections: AtomicUsize,
    next_id: AtomicU64,
    notify: Notify,
    cancel: CancellationToken,
    addr: SocketAddr,
}

struct MockState {
    default: Script,
    queue: VecDeque<Script>,
    requests: Vec<Value>,
    transcription: TranscriptionScript,
    forms: Vec<ReceivedForm>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, MockState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct ShutdownOnDrop(CancellationToken);

impl Drop for ShutdownOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

impl MockUpstream {
    /// Start on `127.0.0.1:0` with the default [`Script`].
    pub async fn start() -> std::io::Result<MockUpstream> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), Script::default()).await
    }

    /// Start on `addr` with `default` as the default script.
    pub async fn start_on(addr: SocketAddr, default: Script) -> std::io::Result<MockUpstream> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let shared = Arc::new(Shared {
            state: Mutex::new(MockState {
                default,
                queue: VecDeque::new(),
                requests: Vec::new(),
                transcription: TranscriptionScript::default(),
                forms: Vec::new(),
            }),
            aborted: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            notify: Notify::new(),
            cancel: cancel.clone(),
            addr,
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(chat_completions))
            .route("/v1/models", get(models))
            .route("/v1/audio/transcriptions", post(transcriptions))
            .route("/__mock/transcription", post(set_transcription_script))
            .route("/__mock/transcriptions", get(received_forms))
            .route("/__mock/script", post(push_script))
            .route("/__mock/default", post(set_default_script))
            .route("/__mock/requests", get(recorded_requests))
            .route("/__mock/stats", get(stats))
            .with_state(Arc::clone(&shared));
        let counted = Arc::clone(&shared);
        let listener = listener.tap_io(move |tcp| {
            counted.connections.fetch_add(1, Ordering::Relaxed);
            if let Err(err) = tcp.set_nodelay(true) {
                tracing::warn!("mock upstream: failed to set TCP_NODELAY: {err}");
            }
        });
        let shutdown = cancel.clone().cancelled_owned();
        tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app.into_make_service())
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::warn!("mock upstream: server error: {err}");
            }
        });
        Ok(MockUpstream {
            shared,
            _shutdown: Arc::new(ShutdownOnDrop(cancel)),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `http://127.0.0.1:PORT/v1`
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.shared.addr)
    }

    pub fn set_default(&self, script: Script) {
        self.shared.lock().default = script;
    }

    /// Queue a script: the next request takes the first queued script, else the default.
    pub fn push(&self, script: Script) {
        self.shared.lock().queue.push_back(script);
    }

    /// Every `/v1/chat/completions` request body received, in order.
    pub fn requests(&self) -> Vec<Value> {
        self.shared.lock().requests.clone()
    }

    /// How transcriptions are answered from now on.
    pub fn set_transcription(&self, script: TranscriptionScript) {
        self.shared.lock().transcription = script;
    }

    /// Every transcription form received, complete or not, in order.
    pub fn transcriptions(&self) -> Vec<ReceivedForm> {
        self.shared.lock().forms.clone()
    }

    pub fn request_count(&self) -> usize {
        self.shared.lock().requests.len()
    }

    /// TCP connections accepted so far.
    pub fn connection_count(&self) -> usize {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Streamed responses whose body was dropped before the mock finished sending it.
    pub fn aborted_count(&self) -> usize {
        self.shared.aborted.load(Ordering::SeqCst)
    }

    pub async fn wait_for_aborted(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, || self.aborted_count() >= n).await
    }

    pub async fn wait_for_transcriptions(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, || self.shared.lock().forms.len() >= n)
            .await
    }

    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, || self.request_count() >= n).await
    }

    async fn wait_until(&self, timeout: Duration, cond: impl Fn() -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if cond() {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return cond();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers

async fn models() -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{"id": "mock-model", "object": "model", "created": 0, "owned_by": "mock"}]
    }))
}

async fn push_script(State(shared): State<Arc<Shared>>, Json(script): Json<Script>) -> Json<Value> {
    let mut state = shared.lock();
    state.queue.push_back(script);
    Json(json!({"queued": state.queue.len()}))
}

async fn set_default_script(
    State(shared): State<Arc<Shared>>,
    Json(script): Json<Script>,
) -> Json<Value> {
    shared.lock().default = script;
    Json(json!({"ok": true}))
}

async fn recorded_requests(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(Value::Array(shared.lock().requests.clone()))
}

async fn stats(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let state = shared.lock();
    Json(json!({
        "requests": state.requests.len(),
        "aborted": shared.aborted.load(Ordering::SeqCst),
        "queued": state.queue.len(),
        "connections": shared.connections.load(Ordering::Relaxed),
    }))
}

async fn set_transcription_script(
    State(shared): State<Arc<Shared>>,
    Json(script): Json<TranscriptionScript>,
) -> Json<Value> {
    shared.lock().transcription = script;
    Json(json!({"ok": true}))
}

async fn received_forms(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(json!(shared.lock().forms))
}

/// Reads the form part by part as it arrives; records it even when it breaks off.
async fn transcriptions(
    State(shared): State<Arc<Shared>>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let Ok(boundary) = multer::parse_boundary(&content_type) else {
        return error_response(StatusCode::BAD_REQUEST, "not a multipart form", "bad_form");
    };
    let mut form = multer::Multipart::new(body.into_data_stream(), boundary);
    let mut received = ReceivedForm {
        content_type,
        parts: Vec::new(),
        complete: false,
    };
    let outcome: Result<(), multer::Error> = async {
        while let Some(mut field) = form.next_field().await? {
            let mut bytes = Vec::new();
            let name = field.name().unwrap_or_default().to_owned();
            let file_name = field.file_name().map(str::to_owned);
            let content_type = field.content_type().map(ToString::to_string);
            while let Some(chunk) = field.chunk().await? {
                bytes.extend_from_slice(&chunk);
            }
            let text = file_name
                .is_none()
                .then(|| String::from_utf8_lossy(&bytes).into_owned());
            received.parts.push(FormPart {
                name,
                file_name,
                content_type,
                len: bytes.len(),
                bytes: Bytes::from(bytes),
                text,
            });
        }
        Ok(())
    }
    .await;
    received.complete = outcome.is_ok();
    let script = {
        let mut state = shared.lock();
        state.forms.push(received);
        state.transcription.clone()
    };
    shared.notify.notify_waiters();
    if outcome.is_err() {
        return error_response(StatusCode::BAD_REQUEST, "the form broke off", "bad_form");
    }
    if let Some(status) = script.status {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return error_response(status, &script.message, "mock_error");
    }
    let mut answer = json!({"text": script.text});
    if let Some(language) = script.language {
        answer["language"] = json!(language);
    }
    Json(answer).into_response()
}

fn error_response(status: StatusCode, message: &str, code: &str) -> Response {
    let body = json!({
        "error": {"message": message, "type": "server_error", "param": null, "code": code}
    });
    (status, Json(body)).into_response()
}

async fn chat_completions(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let parsed = serde_json::from_slice::<Value>(&body);
    let (script, request) = {
        let mut state = shared.lock();
        let recorded = match &parsed {
            Ok(v) => v.clone(),
            Err(_) => Value::String(String::from_utf8_lossy(&body).into_owned()),
        };
        state.requests.push(recorded);
        let script = state
            .queue
            .pop_front()
            .unwrap_or_else(|| state.default.clone());
        (script, parsed)
    };
    shared.notify.notify_waiters();
    let id = format!(
        "chatcmpl-mock-{}",
        shared.next_id.fetch_add(1, Ordering::SeqCst)
    );

    if script.headers_delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(script.headers_delay_ms)).await;
    }
    let request = match request {
        Ok(v) => v,
        Err(err) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &format!("invalid JSON body: {err}"),
                "invalid_json",
            );
        }
    };
    if let Some(code) = script.status {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return error_response(status, "mock failure", "mock_error");
    }

    let model = request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("mock-model")
        .to_owned();
    let prompt_tokens = rough_prompt_tokens(&request);
    let ctx = Ctx {
        id,
        model,
        created: unix_now(),
        prompt_tokens,
    };
    let stream = request.get("stream").and_then(Value::as_bool) == Some(true);
    if stream {
        streaming_response(&shared, &script, &ctx)
    } else {
        non_streaming_response(&shared, &script, &ctx)
    }
}

struct Ctx {
    id: String,
    model: String,
    created: u64,
    prompt_tokens: u64,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// About one token per four characters of message text.
fn rough_prompt_tokens(request: &Value) -> u64 {
    let mut chars = 0usize;
    let mut messages = 0u64;
    if let Some(list) = request.get("messages").and_then(Value::as_array) {
        for message in list {
            messages += 1;
            match message.get("content") {
                Some(Value::String(s)) => chars += s.chars().count(),
                Some(Value::Array(parts)) => {
                    for part in parts {
                        if let Some(t) = part.get("text").and_then(Value::as_str) {
                            chars += t.chars().count();
                        }
                    }
                }
                _ => {}
            }
        }
    }
    (chars as u64).div_ceil(4) + messages
}

fn usage_value(script: &Script, ctx: &Ctx) -> Value {
    let completion = script.chunks.len() as u64;
    json!({
        "prompt_tokens": ctx.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": ctx.prompt_tokens + completion,
    })
}

fn non_streaming_response(shared: &Arc<Shared>, script: &Script, ctx: &Ctx) -> Response {
    if script.cut_after.is_some() {
        // Headers, then an abruptly broken body.
        let steps = VecDeque::from([Step::Fail]);
        let body = Body::from_stream(body_stream(shared, steps));
        return ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    }
    if script.error_after.is_some() {
        return error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "mock mid-stream failure",
            "mock_error",
        );
    }
    let text: String = script.chunks.concat();
    let mut message = json!({"role": "assistant", "content": text});
    if !script.tool_calls.is_empty() {
        if text.is_empty() {
            message["content"] = Value::Null;
        }
        let calls: Vec<Value> = script
            .tool_calls
            .iter()
            .map(|call| {
                let mut v = json!({
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                });
                if let Some(id) = &call.id {
                    v["id"] = json!(id);
                }
                v
            })
            .collect();
        message["tool_calls"] = Value::Array(calls);
    }
    let mut out = json!({
        "object": "chat.completion",
        "created": ctx.created,
        "model": ctx.model,
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": script.effective_finish_reason(),
        }],
    });
    if !script.omit_id {
        out["id"] = json!(ctx.id);
    }
    if script.usage {
        out["usage"] = usage_value(script, ctx);
    }
    Json(out).into_response()
}

// ---------------------------------------------------------------------------------------------
// Streaming

enum Step {
    Sleep(u64),
    Frame(Bytes),
    /// End the body with an error: hyper aborts the connection mid-body.
    Fail,
}

fn chunk(script: &Script, ctx: &Ctx, delta: Value, finish_reason: Value) -> Value {
    let mut v = json!({
        "object": "chat.completion.chunk",
        "created": ctx.created,
        "model": ctx.model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    });
    if !script.omit_id {
        v["id"] = json!(ctx.id);
    }
    v
}

/// Splits `s` into two halves at a char boundary near its middle.
fn split_half(s: &str) -> (&str, &str) {
    let mut mid = s.len() / 2;
    while !s.is_char_boundary(mid) {
        mid += 1;
    }
    s.split_at(mid)
}

struct Plan<'a> {
    script: &'a Script,
    steps: VecDeque<Step>,
    events: usize,
}

impl Plan<'_> {
    /// Queue one SSE event (already formatted, including the trailing blank line).
    fn raw(&mut self, event: String) {
        let bytes = event.into_bytes();
        if self.script.split_utf8 && bytes.len() >= 2 {
            let at = bytes
                .iter()
                .position(|b| *b >= 0xC0)
                .map(|i| i + 1)
                .unwrap_or(bytes.len() / 2);
            let (a, b) = bytes.split_at(at);
            self.steps.push_back(Step::Frame(Bytes::copy_from_slice(a)));
            self.steps.push_back(Step::Sleep(5));
            self.steps.push_back(Step::Frame(Bytes::copy_from_slice(b)));
        } else {
            self.steps.push_back(Step::Frame(Bytes::from(bytes)));
        }
    }

    fn data(&mut self, value: &Value) {
        if self.script.comments && self.events > 0 {
            self.raw(": keep-alive\n\n".to_owned());
            self.raw("event: keepalive\ndata: {}\n\n".to_owned());
        }
        self.events += 1;
        self.raw(format!("data: {value}\n\n"));
    }

    fn sleep(&mut self, ms: u64) {
        if ms > 0 {
            self.steps.push_back(Step::Sleep(ms));
        }
    }
}

fn plan_stream(script: &Script, ctx: &Ctx) -> VecDeque<Step> {
    let mut plan = Plan {
        script,
        steps: VecDeque::new(),
        events: 0,
    };
    let mut model_chunks = 0usize;
    let mut role_sent = false;
    plan.sleep(script.first_delay_ms);

    // Before every model chunk but the first: the inter-chunk pause.
    let pause = |plan: &mut Plan<'_>, model_chunks: &mut usize| {
        if *model_chunks > 0 {
            plan.sleep(script.chunk_delay_ms);
        }
        *model_chunks += 1;
    };

    for (i, content) in script.chunks.iter().enumerate() {
        if script.cut_after == Some(i) {
            plan.steps.push_back(Step::Fail);
            return plan.steps;
        }
        if script.error_after == Some(i) {
            push_error(&mut plan);
            return plan.steps;
        }
        pause(&mut plan, &mut model_chunks);
        let delta = if role_sent {
            json!({"content": content})
        } else {
            role_sent = true;
            json!({"role": "assistant", "content": content})
        };
        plan.data(&chunk(script, ctx, delta, Value::Null));
    }
    if script.cut_after.is_some() {
        plan.steps.push_back(Step::Fail);
        return plan.steps;
    }
    if script.error_after.is_some() {
        push_error(&mut plan);
        return plan.steps;
    }

    for (index, call) in script.tool_calls.iter().enumerate() {
        let (first, second) = split_half(&call.arguments);
        let mut head = json!({
            "index": index,
            "type": "function",
            "function": {"name": call.name, "arguments": first},
        });
        if let Some(id) = &call.id {
            head["id"] = json!(id);
        }
        let mut delta = json!({"tool_calls": [head]});
        if !role_sent {
            role_sent = true;
            delta["role"] = json!("assistant");
        }
        pause(&mut plan, &mut model_chunks);
        plan.data(&chunk(script, ctx, delta, Value::Null));
        let tail = json!({"tool_calls": [{"index": index, "function": {"arguments": second}}]});
        pause(&mut plan, &mut model_chunks);
        plan.data(&chunk(script, ctx, tail, Value::Null));
    }

    if script.finish_chunk {
        pause(&mut plan, &mut model_chunks);
        let reason = json!(script.effective_finish_reason());
        plan.data(&chunk(script, ctx, json!({}), reason));
    }
    if script.usage {
        let mut v = json!({
            "object": "chat.completion.chunk",
            "created": ctx.created,
            "model": ctx.model,
            "choices": [],
            "usage": usage_value(script, ctx),
        });
        if !script.omit_id {
            v["id"] = json!(ctx.id);
        }
        plan.data(&v);
    }
    if script.done_marker {
        if script.comments && plan.events > 0 {
            plan.raw(": keep-alive\n\n".to_owned());
            plan.raw("event: keepalive\ndata: {}\n\n".to_owned());
        }
        plan.raw("data: [DONE]\n\n".to_owned());
    }
    plan.steps
}

fn push_error(plan: &mut Plan<'_>) {
    let err = json!({
        "error": {"message": "mock mid-stream failure", "type": "server_error", "code": "mock_error"}
    });
    plan.data(&err);
}

fn streaming_response(shared: &Arc<Shared>, script: &Script, ctx: &Ctx) -> Response {
    let steps = plan_stream(script, ctx);
    let body = Body::from_stream(body_stream(shared, steps));
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Counts the body as aborted if it is dropped before the mock finished sending it.
struct AbortGuard {
    shared: Arc<Shared>,
    finished: bool,
}

impl AbortGuard {
    fn finish(&mut self) {
        self.finished = true;
    }
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.shared.aborted.fetch_add(1, Ordering::SeqCst);
            self.shared.notify.notify_waiters();
        }
    }
}

struct BodyState {
    steps: VecDeque<Step>,
    guard: AbortGuard,
    cancel: CancellationToken,
}

fn body_stream(
    shared: &Arc<Shared>,
    steps: VecDeque<Step>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let state = BodyState {
        steps,
        guard: AbortGuard {
            shared: Arc::clone(shared),
            finished: false,
        },
        cancel: shared.cancel.clone(),
    };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            match st.steps.pop_front() {
                None => {
                    st.guard.finish();
                    return None;
                }
                Some(Step::Sleep(ms)) => {
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(ms)) => {}
                        () = st.cancel.cancelled() => {
                            st.guard.finish();
                            st.steps.clear();
                            let err = std::io::Error::other("mock upstream shut down");
                            return Some((Err(err), st));
                        }
                    }
                }
                Some(Step::Frame(bytes)) => {
                    if st.steps.is_empty() {
                        st.guard.finish();
                    }
                    return Some((Ok(bytes), st));
                }
                Some(Step::Fail) => {
                    st.guard.finish();
                    st.steps.clear();
                    // hyper discards its write buffer when the body fails: go pending once so
                    // the headers and every frame before the cut are flushed to the socket.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    let err = std::io::Error::other("mock upstream: scripted connection cut");
                    return Some((Err(err), st));
                }
            }
        }
    })
}
