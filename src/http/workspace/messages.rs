//! A session's messages: post (sync, async task or stream), list, get, delete, follow an
//! answer's stream, poll a task.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::dto::{Exchange, MessageDto, PostMessage, Stopped, TaskAccepted, TaskStatus};
use super::error::{ErrorBody, WsError};
use super::{Body, Caller, stream};
use crate::domain::GenEvent;
use crate::error::Error;
use crate::http::AppState;
use crate::http::extract::{Auth, JsonBody, accepts_events, flag, parse_id, query_pairs};
use crate::http::sse::{ServerSentEvent, last_event_id};
use crate::service::{AnswerStream, StreamOpen};

/// How a post wants its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reply {
    Sync,
    Async,
    Stream,
}

impl Reply {
    /// `Accept: text/event-stream` or `?stream=true` streams; `?async=` overrides the server's
    /// default (`AGENT_ASYNC_ENABLED`) between a task and the answer.
    fn of(headers: &HeaderMap, query: Option<&str>, async_default: bool) -> Result<Self, Error> {
        let pairs = query_pairs(query)?;
        if flag(&pairs, "stream")?.unwrap_or_else(|| accepts_events(headers)) {
            return Ok(Reply::Stream);
        }
        Ok(if flag(&pairs, "async")?.unwrap_or(async_default) {
            Reply::Async
        } else {
            Reply::Sync
        })
    }
}

/// Reads an answer to its end: the saved answer, whatever its status.
async fn ended(mut answer: AnswerStream) -> Vec<MessageDto> {
    while let Some(event) = answer.next().await {
        if let GenEvent::Done(done) = event {
            return done
                .message
                .as_ref()
                .map(MessageDto::from)
                .into_iter()
                .collect();
        }
    }
    Vec::new()
}

/// Send a message
///
/// Posts a `user` message and answers it with the session's settings, one of three ways:
///
/// - **sync** (default): 201 `{user_message, assistant_messages}` once the answer ended, whatever
///   its status (a failed answer comes back with status `failed`, not as an error);
/// - **async** (`?async=true`, or the server's `AGENT_ASYNC_ENABLED`): 202 `{task_id, status,
///   user_message}`; poll `agent-task-status/{task_id}/`;
/// - **stream** (`Accept: text/event-stream` or `?stream=true`): `delta` `{content}` events,
///   `sources`, `error` `{code, message}`, then `done` `{message}`; ids `<message id>:<offset>`
///   resumable with `Last-Event-ID` on `messages/{id}/stream/`; `X-Message-Id` names the answer.
///
/// The answer is the server's: a client that leaves does not lose it.
#[utoipa::path(
    post,
    path = "/api/workspaces/{ws}/chats/{id}/messages/",
    tag = "messages",
    params(
        ("ws" = String, Path, description = "Workspace UUID or slug"),
        ("id" = Uuid, Path, description = "The session"),
        ("stream" = Option<bool>, Query, description = "Answer as an event stream"),
        ("async" = Option<bool>, Query, description = "Answer with a task to poll (true) or the answer (false)"),
    ),
    request_body = PostMessage,
    security(("bearer" = []), ("api_key" = []), ("publishable_key" = [])),
    responses(
        (status = 201, description = "The question and its ended answer", body = Exchange),
        (status = 202, description = "The task answering it", body = TaskAccepted),
        (status = 200, description = "The answer as an event stream", content_type = "text/event-stream", body = ServerSentEvent),
        (status = 400, description = "An invalid field, named in `field`", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 402, description = "The workspace's credit is used up", body = ErrorBody),
        (status = 404, description = "No such workspace or session for this key", body = ErrorBody),
        (status = 503, description = "The server is shutting down", body = ErrorBody),
    ),
)]
pub async fn post_message(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    Path((ws, id)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    JsonBody(body, _): Body<PostMessage>,
) -> Result<Response, WsError> {
    let chat_id = parse_id("id", &id)?;
    let reply = Reply::of(&headers, query.as_deref(), state.agent_async)?;
    if body.role != "user" {
        return Err(Error::bad_request("role", "role must be `user`").into());
    }
    let services = &state.services;
    let workspace = services.workspace(&who, &ws).await?;
    let (question, answer) = services
        .ask(&who, &workspace, chat_id, body.content)
        .await?;
    Ok(respond(&state, reply, &question, answer).await)
}

/// The answer to `question` the way the request asked for it.
async fn respond(
    state: &AppState,
    reply: Reply,
    question: &crate::domain::Message,
    answer: AnswerStream,
) -> Response {
    match reply {
        Reply::Stream => stream::response(state, answer),
        Reply::Async => {
            // The task is the answer's row: it exists before the client can poll it.
            answer.stored().await;
            let accepted = TaskAccepted {
                task_id: answer.message_id(),
                status: "processing",
                user_message: MessageDto::from(question),
            };
            (StatusCode::ACCEPTED, Json(accepted)).into_response()
        }
        Reply::Sync => {
            let exchange = Exchange {
                user_message: Some(MessageDto::from(question)),
                assistant_messages: ended(answer).await,
            };
            (StatusCode::CREATED, Json(exchange)).into_response()
        }
    }
}

/// Regenerate the last answer
///
/// Answers the session's last user message again, sync, as a task or streamed as
/// `POST …/messages/` does. The previous answer is replaced: it leaves the list once the new one
/// starts (a running one is stopped first). Nothing to answer again: 409.
#[utoipa::path(
    post,
    path = "/api/workspaces/{ws}/chats/{id}/messages/regenerate/",
    tag = "messages",
    params(
        ("ws" = String, Path, description = "Workspace UUID or slug"),
        ("id" = Uuid, Path, description = "The session"),
        ("stream" = Option<bool>, Query, description = "Answer as an event stream"),
        ("async" = Option<bool>, Query, description = "Answer with a task to poll (true) or the answer (false)"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 201, description = "The question and its new, ended answer", body = Exchange),
        (status = 202, description = "The task answering it", body = TaskAccepted),
        (status = 200, description = "The new answer as an event stream", content_type = "text/event-stream", body = ServerSentEvent),
        (status = 400, description = "An invalid query parameter, named in `field`", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 402, description = "The workspace's credit is used up", body = ErrorBody),
        (status = 403, description = "A publishable key", body = ErrorBody),
        (status = 404, description = "No such workspace or session for this key", body = ErrorBody),
        (status = 409, description = "The session has no user message", body = ErrorBody),
        (status = 503, description = "The server is shutting down", body = ErrorBody),
    ),
)]
pub async fn regenerate(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    Path((ws, id)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, WsError> {
    let chat_id = parse_id("id", &id)?;
    let reply = Reply::of(&headers, query.as_deref(), state.agent_async)?;
    let services = &state.services;
    let workspace = services.workspace(&who, &ws).await?;
    let (question, answer) = services.regenerate(&who, &workspace, chat_id).await?;
    Ok(respond(&state, reply, &question, answer).await)
}

/// Stop the running answer
///
/// Cancels the session's running answer upstream and saves its partial text as `cancelled`;
/// every reader gets `done`.
#[utoipa::path(
    post,
    path = "/api/workspaces/{ws}/chats/{id}/stop/",
    operation_id = "stop_session_answer",
    tag = "messages",
    params(
        ("ws" = String, Path, description = "Workspace UUID or slug"),
        ("id" = Uuid, Path, description = "The session"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "What was stopped, if anything", body = Stopped),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 403, description = "A publishable key", body = ErrorBody),
        (status = 404, description = "No such workspace or session for this key", body = ErrorBody),
    ),
)]
pub async fn stop(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    Path((ws, id)): Path<(String, String)>,
) -> Result<Json<Stopped>, WsError> {
    let chat_id = parse_id("id", &id)?;
    let services = &state.services;
    let workspace = services.workspace(&who, &ws).await?;
    let outcome = services.stop_in(&who, &workspace, chat_id).await?;
    let done = outcome.stopped.as_deref();
    Ok(Json(Stopped {
        stopped: done.is_some(),
        status: done.map(|d| d.status.as_str()),
    }))
}

/// List messages
///
/// By sequence number.
#[utoipa::path(
    get,
    path = "/api/workspaces/{ws}/chats/{id}/messages/",
    tag = "messages",
    params(
        ("ws" = String, Path, description = "Workspace UUID or slug"),
        ("id" = Uuid, Path, description = "The session"),
    ),
    security(("bearer" = []), ("api_key" = []), ("publishable_key" = [])),
    responses(
        (status = 200, description = "The messages", body = [MessageDto]),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 404, description = "No such workspace or session for this key", body = ErrorBody),
    ),
)]
pub async fn list_messages(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    Path((ws, id)): Path<(String, String)>,
) -> Result<Json<Vec<MessageDto>>, WsError> {
    let chat_id = parse_id("id", &id)?;
    let services = &state.services;
    let workspace = services.workspace(&who, &ws).await?;
    let messages = services.messages_in(&who, &workspace, chat_id).await?;
    Ok(Json(messages.iter().map(MessageDto::from).collect()))
}

/// Get a message
#[utoipa::path(
    get,
    path = "/api/workspaces/{ws}/chats/{id}/messages/{message}/",
    tag = "messages",
    params(
        ("ws" = String, Path, description = "Workspace UUID or slug"),
        ("id" = Uuid, Path, description = "The session"),
        ("message" = Uuid, Path, description = "The message"),
    ),
    security(("bearer" = []), ("api_key" = []), ("publishable_key" = [])),
    responses(
        (status = 200, description = "The message", body = MessageDto),
        (status = 400, description = "An id is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 404, description = "No such workspace, session or message for this key", body = ErrorBody),
    ),
)]
pub async fn get_message(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    Path((ws, id, message)): Path<(String, String, String)>,
) -> Result<Json<MessageDto>, WsError> {
    let (chat_id, message_id) = (parse_id("id", &id)?, parse_id("message", &message)?);
    let services = &state.services;
    let workspace = services.workspace(&who, &ws).await?;
    let found = services
        .message_in(&who, &workspace, chat_id, message_id)
        .await?;
    Ok(Json(MessageDto::from(&found)))
}

/// Delete a message
///
/// A question goes with its answer; a running answer is stopped (and saved) first.
#[utoipa::path(
    delete,
    path = "/api/workspaces/{ws}/chats/{id}/messages/{message}/",
    tag = "messages",
    params(
        ("ws" = String, Path, description = "Workspace UUID or slug"),
        ("id" = Uuid, Path, description = "The session"),
        ("message" = Uuid, Path, description = "The message"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "An id is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 403, description = "A publishable key", body = ErrorBody),
        (status = 404, description = "No such workspace, session or message for this key", body = ErrorBody),
    ),
)]
pub async fn delete_message(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    Path((ws, id, message)): Path<(String, String, String)>,
) -> Result<StatusCode, WsError> {
    let (chat_id, message_id) = (parse_id("id", &id)?, parse_id("message", &message)?);
    let services = &state.services;
    let workspace = services.workspace(&who, &ws).await?;
    services
        .delete_message_in(&who, &workspace, chat_id, message_id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Follow an answer (SSE)
///
/// Attaches to the running answer `{message}` names (or its question does), or replays it once
/// ended; the events of `POST …/messages/` with `stream`. Resume with `Last-Event-ID` (or
/// `?last_event_id=`): nothing is sent twice. After `done`, 204.
#[utoipa::path(
    get,
    path = "/api/workspaces/{ws}/chats/{id}/messages/{message}/stream/",
    tag = "messages",
    params(
        ("ws" = String, Path, description = "Workspace UUID or slug"),
        ("id" = Uuid, Path, description = "The session"),
        ("message" = Uuid, Path, description = "An answer, or the question it answers"),
        ("Last-Event-ID" = Option<String>, Header, nullable = false, description = "Resume after this event: `<message id>:<offset>` or `<message id>:done`", pattern = r"^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}:([0-9]{1,19}|done))?$"),
        ("last_event_id" = Option<String>, Query, nullable = false, description = "The same, for clients that cannot set headers", pattern = r"^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}:([0-9]{1,19}|done))?$"),
    ),
    security(("bearer" = []), ("api_key" = []), ("publishable_key" = [])),
    responses(
        (status = 200, description = "The event stream", content_type = "text/event-stream", body = ServerSentEvent),
        (status = 204, description = "The client already had `done`"),
        (status = 400, description = "An id is not a UUID, or a malformed or impossible Last-Event-ID", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 404, description = "No such workspace, session or message for this key", body = ErrorBody),
        (status = 503, description = "The server is shutting down", body = ErrorBody),
    ),
)]
pub async fn follow(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    Path((ws, id, message)): Path<(String, String, String)>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, WsError> {
    let (chat_id, message_id) = (parse_id("id", &id)?, parse_id("message", &message)?);
    let resume = last_event_id(&headers, query.as_deref())?;
    let services = &state.services;
    let workspace = services.workspace(&who, &ws).await?;
    match services
        .follow_answer(&who, &workspace, chat_id, message_id, resume)
        .await?
    {
        StreamOpen::AlreadyDone => Ok(StatusCode::NO_CONTENT.into_response()),
        StreamOpen::Stream(answer) => Ok(stream::response(&state, answer)),
    }
}

/// Poll a task
///
/// The task of an async post (its id is the answer's): `processing` until the answer ended,
/// then `completed`, `failed` (with `error`) or `cancelled`, with the question and answer.
/// Any replica answers it, and a client that never polls still gets its answer saved.
#[utoipa::path(
    get,
    path = "/api/workspaces/{ws}/chats/{id}/messages/agent-task-status/{task}/",
    tag = "messages",
    params(
        ("ws" = String, Path, description = "Workspace UUID or slug"),
        ("id" = Uuid, Path, description = "The session"),
        ("task" = Uuid, Path, description = "The task"),
    ),
    security(("bearer" = []), ("api_key" = []), ("publishable_key" = [])),
    responses(
        (status = 200, description = "Where the task stands", body = TaskStatus),
        (status = 400, description = "An id is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 404, description = "No such workspace, session or task for this key", body = ErrorBody),
    ),
)]
pub async fn task_status(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    Path((ws, id, task)): Path<(String, String, String)>,
) -> Result<Json<TaskStatus>, WsError> {
    let (chat_id, task_id) = (parse_id("id", &id)?, parse_id("task", &task)?);
    let services = &state.services;
    let workspace = services.workspace(&who, &ws).await?;
    let view = services.task_in(&who, &workspace, chat_id, task_id).await?;
    Ok(Json(view.into()))
}
