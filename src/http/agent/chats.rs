//! An agent's chats and their messages: sync or streamed answers, attach and resume.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::dto::{
    ChatDto, ChatList, ChatSummary, ChatWithMessages, CreateChat, MessageDto, MessageList,
    MessageSummary, PostMessage, StreamDone,
};
use super::error::{AgentError, ErrorBody};
use super::{Body, Caller};
use crate::domain::{GenEvent, Message, Role};
use crate::error::Error;
use crate::http::AppState;
use crate::http::extract::JsonBody;
use crate::http::extract::{Auth, accepts_events, flag, parse_id, query_pairs};
use crate::http::sse::{ServerSentEvent, last_event_id};
use crate::http::workspace::stream::{Spelling, json, response_with};
use crate::service::{AnswerStream, StreamOpen};

const DEFAULT_PAGE: u64 = 50;
const MAX_PAGE: u64 = 100;

/// Create a chat
///
/// A chat with an agent, for an end user (`userId`, or the key's `X-User-Id`); `metadata` is
/// kept as given. It answers with the agent's current version.
#[utoipa::path(
    post,
    path = "/chat",
    operation_id = "agent_create_chat",
    tag = "agent chats",
    request_body = CreateChat,
    security(("bearer" = []), ("api_key" = []), ("publishable_key" = [])),
    responses(
        (status = 200, description = "The chat", body = ChatDto),
        (status = 400, description = "An invalid field, named in `field`", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 402, description = "The workspace's credit is used up", body = ErrorBody),
        (status = 404, description = "No such agent", body = ErrorBody),
    ),
)]
pub async fn create_chat(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    JsonBody(body, _): Body<CreateChat>,
) -> Result<Json<ChatDto>, AgentError> {
    let chat = state
        .services
        .create_agent_chat(&who, body.agent_id, body.user_id.as_deref(), body.metadata)
        .await?;
    Ok(Json(chat.into()))
}

/// List chats
///
/// Agents' chats, newest first; `userId` keeps one end user's, `agentType` those of agents of
/// that type. Pages of `limit` (1–100, default 50); `nextCursor` asks for the next.
#[utoipa::path(
    get,
    path = "/chat",
    operation_id = "agent_list_chats",
    tag = "agent chats",
    params(
        ("userId" = Option<String>, Query, format = "end-user-id", description = "Only this end user's chats"),
        ("agentType" = Option<String>, Query, description = "Only chats of agents of this type"),
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 100, description = "Page size, 1 to 100"),
        ("cursor" = Option<String>, Query, pattern = "^[0-9]{1,18}$", description = "A previous page's nextCursor"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The chats", body = ChatList),
        (status = 400, description = "A bad query parameter", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 403, description = "A publishable key", body = ErrorBody),
    ),
)]
pub async fn list_chats(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<ChatList>, AgentError> {
    let pairs = query_pairs(query.as_deref())?;
    let value = |name: &str| {
        pairs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let limit = match value("limit") {
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| Error::bad_request("limit", "limit must be from 1 to 100"))?,
        None => DEFAULT_PAGE,
    };
    // The cursor is the offset of the next page, as the description's pattern says.
    let offset = match value("cursor") {
        Some(v) => Some(v)
            .filter(|v| (1..=18).contains(&v.len()))
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| Error::bad_request("cursor", "cursor is not one this server gave"))?,
        None => 0,
    };
    let chats = state
        .services
        .agent_chats(
            &who,
            value("userId").as_deref(),
            value("agentType").as_deref(),
            limit + 1,
            offset,
        )
        .await?;
    let more = chats.len() as u64 > limit;
    Ok(Json(ChatList {
        chats: chats
            .into_iter()
            .take(limit as usize)
            .map(ChatSummary::from)
            .collect(),
        next_cursor: more.then(|| (offset + limit).to_string()),
    }))
}

/// Get a chat
///
/// The chat with its messages in order.
#[utoipa::path(
    get,
    path = "/chat/{chatId}",
    operation_id = "agent_get_chat",
    tag = "agent chats",
    params(("chatId" = Uuid, Path, description = "The chat")),
    security(("bearer" = []), ("api_key" = []), ("publishable_key" = [])),
    responses(
        (status = 200, description = "The chat and its messages", body = ChatWithMessages),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 404, description = "No such chat for this key", body = ErrorBody),
    ),
)]
pub async fn get_chat(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    Path(id): Path<String>,
) -> Result<Json<ChatWithMessages>, AgentError> {
    let id = parse_id("chatId", &id)?;
    let services = &state.services;
    let chat = services.chat(&who, id).await?;
    let messages = services.list_messages(&who, id).await?;
    Ok(Json(ChatWithMessages {
        id: chat.id,
        agent_id: chat.agent_id,
        team_id: chat.workspace_id,
        user_id: chat.end_user_id,
        metadata: chat.metadata,
        messages: messages.iter().map(MessageSummary::from).collect(),
        created_at: crate::http::conversations::dto::timestamp(&chat.created_at),
    }))
}

/// Delete a chat
///
/// With its messages; a running answer is stopped first.
#[utoipa::path(
    delete,
    path = "/chat/{chatId}",
    operation_id = "agent_delete_chat",
    tag = "agent chats",
    params(("chatId" = Uuid, Path, description = "The chat")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 403, description = "A publishable key, or a chat only shared with this user", body = ErrorBody),
        (status = 404, description = "No such chat for this key", body = ErrorBody),
    ),
)]
pub async fn delete_chat(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, AgentError> {
    state
        .services
        .delete_chat(&who, parse_id("chatId", &id)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Whether the client asked for the answer as an event stream (`?stream=`, else `Accept`).
fn wants_stream(headers: &HeaderMap, query: Option<&str>) -> Result<bool, Error> {
    let pairs = query_pairs(query)?;
    Ok(flag(&pairs, "stream")?.unwrap_or_else(|| accepts_events(headers)))
}

fn done_data(message: Option<&Message>) -> String {
    json(&StreamDone {
        message: message.map(MessageDto::from),
    })
}

fn stream(state: &AppState, answer: AnswerStream) -> Response {
    response_with(
        state,
        answer,
        Spelling {
            label: "agent",
            done: done_data,
            saved_bytes: "savedBytes",
        },
    )
}

/// Send a message
///
/// Posts a `user` message; the chat's agent answers with its current version. By default the
/// answer comes back once it ended (200, whatever its status); with `Accept:
/// text/event-stream` or `?stream=true` as an event stream (`delta` `{content}`, `sources`,
/// `error` `{code, message}`, `done` `{message}`; `X-Message-Id` names the answer; ids
/// resumable with `Last-Event-ID` on `…/message/{messageId}/stream`). The answer is the
/// server's: a client that leaves does not lose it.
#[utoipa::path(
    post,
    path = "/chat/{chatId}/message",
    operation_id = "agent_post_message",
    tag = "agent chats",
    params(
        ("chatId" = Uuid, Path, description = "The chat"),
        ("stream" = Option<bool>, Query, description = "Answer as an event stream"),
    ),
    request_body = PostMessage,
    security(("bearer" = []), ("api_key" = []), ("publishable_key" = [])),
    responses(
        (status = 200, description = "The answer once it ended (JSON), or its event stream (`text/event-stream`)", content(
            (MessageDto = "application/json"),
            (ServerSentEvent = "text/event-stream"),
        )),
        (status = 400, description = "Empty content, a role other than `user`", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 402, description = "The workspace's credit is used up", body = ErrorBody),
        (status = 403, description = "A chat only shared with this user", body = ErrorBody),
        (status = 404, description = "No such chat for this key, or its agent was deleted", body = ErrorBody),
        (status = 503, description = "The server is shutting down", body = ErrorBody),
    ),
)]
pub async fn post_message(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    JsonBody(body, _): Body<PostMessage>,
) -> Result<Response, AgentError> {
    let chat_id = parse_id("chatId", &id)?;
    let streamed = wants_stream(&headers, query.as_deref())?;
    if body.role != "user" {
        return Err(Error::bad_request("role", "role must be `user`").into());
    }
    let (_, mut answer) = state
        .services
        .post_message(&who, chat_id, body.content)
        .await?;
    if streamed {
        return Ok(stream(&state, answer));
    }
    while let Some(event) = answer.next().await {
        if let GenEvent::Done(done) = event {
            return match done.message.as_ref() {
                Some(message) => Ok(Json(MessageDto::from(message)).into_response()),
                None => Err(Error::Internal("the answer could not be saved".into()).into()),
            };
        }
    }
    Err(Error::ShuttingDown.into())
}

/// List messages
#[utoipa::path(
    get,
    path = "/chat/{chatId}/message",
    operation_id = "agent_list_messages",
    tag = "agent chats",
    params(("chatId" = Uuid, Path, description = "The chat")),
    security(("bearer" = []), ("api_key" = []), ("publishable_key" = [])),
    responses(
        (status = 200, description = "The messages in order", body = MessageList),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 404, description = "No such chat for this key", body = ErrorBody),
    ),
)]
pub async fn list_messages(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    Path(id): Path<String>,
) -> Result<Json<MessageList>, AgentError> {
    let messages = state
        .services
        .list_messages(&who, parse_id("chatId", &id)?)
        .await?;
    Ok(Json(MessageList {
        messages: messages
            .iter()
            .filter(|m| m.role != Role::System)
            .map(MessageSummary::from)
            .collect(),
    }))
}

/// Follow an answer
///
/// Attaches to a running answer, or replays a saved one, as the event stream of `POST
/// …/message`; `Last-Event-ID` (or `?last_event_id=`) resumes after the last event seen. A
/// resume after `done`: 204.
#[utoipa::path(
    get,
    path = "/chat/{chatId}/message/{messageId}/stream",
    operation_id = "agent_follow",
    tag = "agent chats",
    params(
        ("chatId" = Uuid, Path, description = "The chat"),
        ("messageId" = Uuid, Path, description = "The answer, or the question it answers"),
        ("Last-Event-ID" = Option<String>, Header, nullable = false, description = "The last event id seen: `<message id>:<offset>` or `<message id>:done`", pattern = r"^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}:([0-9]{1,19}|done))?$"),
    ),
    security(("bearer" = []), ("api_key" = []), ("publishable_key" = [])),
    responses(
        (status = 200, description = "The answer's events", content_type = "text/event-stream", body = ServerSentEvent),
        (status = 204, description = "Nothing after the given id"),
        (status = 400, description = "A malformed id or Last-Event-ID", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 404, description = "No such chat or message for this key", body = ErrorBody),
    ),
)]
pub async fn follow(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    Path((chat, message)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, AgentError> {
    let chat_id = parse_id("chatId", &chat)?;
    let message_id = parse_id("messageId", &message)?;
    let resume = last_event_id(&headers, query.as_deref())?;
    match state
        .services
        .follow_message(&who, chat_id, message_id, resume)
        .await?
    {
        StreamOpen::AlreadyDone => Ok(StatusCode::NO_CONTENT.into_response()),
        StreamOpen::Stream(answer) => Ok(stream(&state, answer)),
    }
}
