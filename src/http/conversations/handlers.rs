//! Chat and conversation CRUD. Each handler converts, calls one service method, converts back.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;

use super::dto::{ChatDto, ConversationDto, CreateChat, CreateConversation, UpdateChat};
use super::error::{ConvError, ErrorBody};
use crate::domain::Role;
use crate::error::Error;
use crate::http::AppState;
use crate::http::extract::{Auth, JsonBody, Page, parse_id, query_pairs};

pub type Caller = Auth<ConvError>;
pub type Body<T> = JsonBody<T, ConvError>;

/// List chats
///
/// Newest first. A key acting for an end user (`X-User-Id`) sees that user's chats only.
#[utoipa::path(
    get,
    path = "/chats/",
    tag = "chats",
    params(
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 200, description = "Page size, 50 by default"),
        ("offset" = Option<u64>, Query, description = "Chats to skip"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The chats", body = [ChatDto]),
        (status = 400, description = "A malformed `limit` or `offset`", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 403, description = "A publishable key", body = ErrorBody),
    ),
)]
pub async fn list_chats(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<Vec<ChatDto>>, ConvError> {
    let Page { limit, offset } = Page::from_query(query.as_deref())?;
    let chats = state.services.list_chats(&who, limit, offset).await?;
    Ok(Json(chats.into_iter().map(ChatDto::from).collect()))
}

/// Get a chat
#[utoipa::path(
    get,
    path = "/chats/{id}",
    tag = "chats",
    params(("id" = Uuid, Path, description = "The chat")),
    security(("bearer" = []), ("api_key" = []), ("publishable_key" = [])),
    responses(
        (status = 200, description = "The chat", body = ChatDto),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 404, description = "No such chat in the key's workspace", body = ErrorBody),
    ),
)]
pub async fn get_chat(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    Path(id): Path<String>,
) -> Result<Json<ChatDto>, ConvError> {
    let chat = state.services.chat(&who, parse_id("id", &id)?).await?;
    Ok(Json(chat.into()))
}

/// Create a chat
#[utoipa::path(
    post,
    path = "/chats/create",
    tag = "chats",
    request_body = CreateChat,
    security(("bearer" = []), ("api_key" = []), ("publishable_key" = [])),
    responses(
        (status = 201, description = "The created chat", body = ChatDto),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 413, description = "The body is over the limit", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 422, description = "A missing or invalid field, named in `field`", body = ErrorBody),
    ),
)]
pub async fn create_chat(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    JsonBody(body, _): Body<CreateChat>,
) -> Result<(StatusCode, Json<ChatDto>), ConvError> {
    let chat = state.services.create_chat(&who, &body.name).await?;
    Ok((StatusCode::CREATED, Json(chat.into())))
}

/// Rename a chat
///
/// `updated_at` is stored as given; without it, the time of the request.
#[utoipa::path(
    put,
    path = "/chats/update/{id}",
    tag = "chats",
    params(("id" = Uuid, Path, description = "The chat")),
    request_body = UpdateChat,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The updated chat", body = ChatDto),
        (status = 400, description = "The id is not a UUID, or the body is not JSON", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 403, description = "A publishable key", body = ErrorBody),
        (status = 404, description = "No such chat in the key's workspace", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 422, description = "A missing or invalid field, named in `field`", body = ErrorBody),
    ),
)]
pub async fn update_chat(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    Path(id): Path<String>,
    JsonBody(body, _): Body<UpdateChat>,
) -> Result<Json<ChatDto>, ConvError> {
    let id = parse_id("id", &id)?;
    let chat = state
        .services
        .rename_chat(&who, id, &body.name, body.updated_at)
        .await?;
    Ok(Json(chat.into()))
}

/// Delete a chat
///
/// Stops its running answer, then deletes the chat with its messages.
#[utoipa::path(
    delete,
    path = "/chats/delete/{id}",
    tag = "chats",
    params(("id" = Uuid, Path, description = "The chat")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The deleted chat", body = ChatDto),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 403, description = "A publishable key", body = ErrorBody),
        (status = 404, description = "No such chat in the key's workspace", body = ErrorBody),
    ),
)]
pub async fn delete_chat(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    Path(id): Path<String>,
) -> Result<Json<ChatDto>, ConvError> {
    let chat = state
        .services
        .delete_chat(&who, parse_id("id", &id)?)
        .await?;
    Ok(Json(chat.into()))
}

/// Post a message to a chat
///
/// A `Human` message is what `GET /conversations/inference/{id}` answers.
#[utoipa::path(
    post,
    path = "/conversations/create",
    tag = "conversations",
    request_body = CreateConversation,
    security(("bearer" = []), ("api_key" = []), ("publishable_key" = [])),
    responses(
        (status = 201, description = "The created conversation", body = ConversationDto),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 404, description = "No such chat in the key's workspace", body = ErrorBody),
        (status = 413, description = "The body is over the limit", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 422, description = "A missing or invalid field (an unknown role), named in `field`", body = ErrorBody),
    ),
)]
pub async fn create_conversation(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    JsonBody(body, _): Body<CreateConversation>,
) -> Result<(StatusCode, Json<ConversationDto>), ConvError> {
    let role = match body.role.as_str() {
        "Human" => Role::User,
        "Assistant" => Role::Assistant,
        other => {
            return Err(Error::unprocessable(
                "role",
                format!("role must be `Human` or `Assistant`, not `{other}`"),
            )
            .into());
        }
    };
    let message = state
        .services
        .add_message(&who, body.chat_id, role, body.message)
        .await?;
    Ok((StatusCode::CREATED, Json(ConversationDto::from(&message))))
}

/// List a chat's conversations
///
/// In order, oldest first.
#[utoipa::path(
    get,
    path = "/conversations/",
    tag = "conversations",
    params(("chat_id" = Uuid, Query, description = "The chat")),
    security(("bearer" = []), ("api_key" = []), ("publishable_key" = [])),
    responses(
        (status = 200, description = "The chat's conversations", body = [ConversationDto]),
        (status = 400, description = "`chat_id` is missing or not a UUID", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 404, description = "No such chat in the key's workspace", body = ErrorBody),
    ),
)]
pub async fn list_conversations(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<Vec<ConversationDto>>, ConvError> {
    let pairs = query_pairs(query.as_deref())?;
    let chat_id = pairs
        .iter()
        .find(|(k, _)| k == "chat_id")
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| Error::bad_request("chat_id", "the chat_id query parameter is required"))?;
    let messages = state
        .services
        .list_messages(&who, parse_id("chat_id", chat_id)?)
        .await?;
    Ok(Json(messages.iter().map(ConversationDto::from).collect()))
}
