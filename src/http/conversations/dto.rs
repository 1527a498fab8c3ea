//! The seed's objects: chat `{id, name, created_at, updated_at}` and conversation
//! `{id, role, chat_id, message, created_at, updated_at}` with roles `Human` / `Assistant`.
//! The same types give the API description its schemas (`ToSchema`), so it cannot drift.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::{Chat, Finished, Message, Role, Usage};

/// RFC 3339, UTC, milliseconds, `Z`: as in the seed's examples.
pub fn timestamp(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A chat.
#[derive(Serialize, ToSchema)]
#[schema(as = Chat)]
pub struct ChatDto {
    pub id: Uuid,
    pub name: String,
    /// RFC 3339, UTC, with milliseconds and `Z`.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// RFC 3339, UTC, with milliseconds and `Z`.
    #[schema(format = DateTime)]
    pub updated_at: String,
}

impl From<Chat> for ChatDto {
    fn from(c: Chat) -> Self {
        Self {
            id: c.id,
            name: c.name,
            created_at: timestamp(&c.created_at),
            updated_at: timestamp(&c.updated_at),
        }
    }
}

/// A message of a chat.
#[derive(Serialize, ToSchema)]
#[schema(as = Conversation)]
pub struct ConversationDto {
    pub id: Uuid,
    /// `Human` or `Assistant`.
    #[schema(value_type = String, examples("Human", "Assistant"))]
    pub role: &'static str,
    pub chat_id: Uuid,
    pub message: String,
    /// RFC 3339, UTC, with milliseconds and `Z`.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// RFC 3339, UTC, with milliseconds and `Z`.
    #[schema(format = DateTime)]
    pub updated_at: String,
}

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::User => "Human",
        Role::Assistant => "Assistant",
        Role::System => "System",
        Role::Tool => "Tool",
    }
}

impl From<&Message> for ConversationDto {
    fn from(m: &Message) -> Self {
        Self {
            id: m.id,
            role: role_name(m.role),
            chat_id: m.chat_id,
            message: m.content.clone(),
            created_at: timestamp(&m.created_at),
            updated_at: timestamp(&m.updated_at),
        }
    }
}

#[derive(Deserialize, ToSchema)]
pub struct CreateChat {
    /// Trimmed; 1 to 200 characters with at least one visible one, no control characters and
    /// no bidirectional override or isolate controls (422 naming `name` otherwise).
    #[schema(min_length = 1, max_length = 200, format = "display-text")]
    pub name: String,
}

#[derive(Deserialize, ToSchema)]
pub struct UpdateChat {
    /// Trimmed; 1 to 200 characters with at least one visible one, no control characters and
    /// no bidirectional override or isolate controls (422 naming `name` otherwise).
    #[schema(min_length = 1, max_length = 200, format = "display-text")]
    pub name: String,
    /// Stored as given; the time of the request when absent.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize, ToSchema)]
pub struct CreateConversation {
    pub chat_id: Uuid,
    /// `Human` or `Assistant` (anything else is 422).
    #[schema(value_type = ConversationRole, examples("Human"))]
    pub role: String,
    #[schema(format = "text-without-nul")]
    pub message: String,
}

/// Who wrote a conversation a client posts.
#[derive(ToSchema)]
#[allow(dead_code)]
pub enum ConversationRole {
    Human,
    Assistant,
}

/// Token counts of one answer.
#[derive(Serialize, ToSchema)]
#[schema(as = TokenUsage)]
pub struct UsageDto {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
    /// True when the provider sent no usage and sluice counted for itself.
    pub estimated: bool,
}

impl From<Usage> for UsageDto {
    fn from(u: Usage) -> Self {
        Self {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total_tokens,
            estimated: u.estimated,
        }
    }
}

/// The data of the stream's last event, `event: done`.
#[derive(Serialize, ToSchema)]
#[schema(as = InferenceDone)]
pub struct DoneEvent {
    /// The saved `Assistant` conversation (null when nothing was saved).
    pub conversation: Option<ConversationDto>,
    /// `complete`, `incomplete`, `failed` or `cancelled`.
    #[schema(examples("complete"))]
    pub status: &'static str,
    pub finish_reason: Option<String>,
    pub usage: UsageDto,
    /// Internet variant only: each `[n]` marker the answer used, in order of first use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub citations: Option<Vec<CitationDto>>,
}

/// A citation marker of an answer given sources.
#[derive(Serialize, ToSchema)]
pub struct CitationDto {
    /// The `n` of `[n]`.
    pub index: u32,
    /// Whether `n` names one of the sources sent.
    pub resolves: bool,
}

impl From<&Finished> for DoneEvent {
    fn from(done: &Finished) -> Self {
        Self {
            conversation: done.message.as_ref().map(ConversationDto::from),
            status: done.status.as_str(),
            finish_reason: done.finish_reason.clone(),
            usage: done.usage.into(),
            citations: done.citations.as_ref().map(|list| {
                list.iter()
                    .map(|c| CitationDto {
                        index: c.index,
                        resolves: c.resolves,
                    })
                    .collect()
            }),
        }
    }
}

/// The data of `event: error`; `done` follows it.
#[derive(Serialize, ToSchema)]
#[schema(as = InferenceError)]
pub struct ErrorEvent<'a> {
    /// `upstream_error`, `upstream_timeout`, `upstream_truncated`, `server_shutdown` or
    /// `interrupted`.
    #[schema(value_type = String)]
    pub code: &'a str,
    #[schema(value_type = String)]
    pub message: &'a str,
    /// With `interrupted`: the bytes of the answer that were saved. A reader that holds more
    /// (it was streamed past the last checkpoint before the server stopped) may keep its text
    /// or show the saved one, which `done` carries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saved_bytes: Option<usize>,
}

/// What `POST /conversations/stop/{id}` did.
#[derive(Serialize, ToSchema)]
#[schema(as = StopOutcome)]
pub struct StopDto {
    pub chat_id: Uuid,
    /// False when no answer was running.
    pub stopped: bool,
    /// The stopped answer's status (`cancelled`), null when nothing was stopped.
    pub status: Option<&'static str>,
    /// The stopped answer as saved, null when nothing was stopped.
    pub conversation: Option<ConversationDto>,
}
