//! The seed's objects, snake_case. The same types give the API description its schemas.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::{ApiKey, Chat, Message, MessageStatus, Role, Share, Workspace, format_usd};
use crate::http::conversations::{UsageDto, timestamp};
use crate::http::whole;
use crate::service::{ChatInput, CreditUsage, PublicView, TaskView};

/// A workspace.
#[derive(Serialize, ToSchema)]
#[schema(as = WorkspaceObject)]
pub struct WorkspaceDto {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    /// US dollars as a decimal string (`"10.00"`); null when unlimited.
    pub credit_limit: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl From<Workspace> for WorkspaceDto {
    fn from(w: Workspace) -> Self {
        Self {
            id: w.id,
            slug: w.slug,
            name: w.name,
            credit_limit: w.credit_limit_micros.map(format_usd),
            created_at: timestamp(&w.created_at),
        }
    }
}

#[derive(Deserialize, ToSchema)]
pub struct CreateWorkspace {
    /// 1 to 64 characters of `a-z`, `0-9` and `-`; unique.
    #[schema(pattern = r"^[a-z0-9-]{1,64}$")]
    pub slug: String,
    /// Shown to people (1 to 100 visible characters); the slug when absent.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 100, format = "display-text")]
    pub name: Option<String>,
    /// US dollars as a decimal string (`"10.00"`); null or absent for no limit.
    #[serde(default)]
    #[schema(format = "usd")]
    pub credit_limit: Option<String>,
}

/// `null` for `credit_limit` lifts the limit; an absent field leaves it.
#[derive(Deserialize, ToSchema)]
pub struct UpdateWorkspace {
    /// 1 to 100 visible characters.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 100, format = "display-text")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, format = "usd")]
    pub credit_limit: Option<Option<String>>,
}

/// A field that is present: `null` becomes `Some(None)`, absence stays `None` (the default).
pub(crate) fn present<'de, D, T>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(de).map(Some)
}

/// A key, without its value.
#[derive(Serialize, ToSchema)]
#[schema(as = WorkspaceKey)]
pub struct KeyDto {
    pub id: Uuid,
    /// `secret` or `publishable`.
    #[schema(value_type = String, examples("secret"))]
    pub kind: &'static str,
    pub name: Option<String>,
    /// The key's first characters, to tell keys apart.
    pub prefix: String,
    /// The browser origins a publishable key is bound to.
    pub origins: Vec<String>,
    /// The key's own requests per rate-limit window; null: the server's default for its kind.
    pub rate_limit: Option<u32>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub revoked_at: Option<String>,
}

impl From<ApiKey> for KeyDto {
    fn from(k: ApiKey) -> Self {
        Self {
            id: k.id,
            kind: k.kind.map_or("unknown", |k| k.as_str()),
            name: k.name,
            prefix: k.prefix,
            origins: k.allowed_origins.unwrap_or_default(),
            rate_limit: k.rate_limit,
            created_at: timestamp(&k.created_at),
            revoked_at: k.revoked_at.as_ref().map(timestamp),
        }
    }
}

/// A new key: the object and, this once, the key itself.
#[derive(Serialize, ToSchema)]
#[schema(as = WorkspaceNewKey)]
pub struct NewKeyDto {
    #[serde(flatten)]
    pub object: KeyDto,
    /// The key. It is shown this once and never again.
    pub key: String,
}

/// A browser origin: scheme, host and optional port, no path.
#[derive(ToSchema)]
#[schema(pattern = "^https?://[^/?# ]+$")]
#[allow(dead_code)]
pub struct Origin(String);

#[derive(Deserialize, ToSchema)]
pub struct CreateKey {
    /// `secret` or `publishable`.
    #[schema(value_type = KeyKindName, examples("publishable"))]
    pub kind: String,
    /// 1 to 100 visible characters.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 100, format = "display-text")]
    pub name: Option<String>,
    /// Browser origins (`https://example.com`) a publishable key is bound to; none for a
    /// secret key.
    #[serde(default)]
    #[schema(inline, value_type = Vec<Origin>)]
    pub origins: Vec<String>,
    /// Requests per rate-limit window for this key (1 to 1000000); unset: the server's
    /// default for its kind.
    #[serde(default, deserialize_with = "whole::option")]
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub rate_limit: Option<u32>,
}

/// A session: a chat with its own settings.
#[derive(Serialize, ToSchema)]
#[schema(as = Session)]
pub struct SessionDto {
    pub id: Uuid,
    /// The workspace's id.
    pub workspace: Uuid,
    pub name: String,
    /// Always `active`.
    #[schema(value_type = String, examples("active"))]
    pub status: &'static str,
    /// Null: the server's default model answers.
    pub ai_provider: Option<String>,
    pub ai_model: Option<String>,
    pub system_prompt: Option<String>,
    pub temperature: Option<f64>,
    pub max_tokens: Option<u32>,
    pub top_p: Option<f64>,
    pub agent_framework: Option<String>,
    /// The end user it belongs to (`X-User-Id` when it was created).
    pub user_id: Option<String>,
    pub is_public: bool,
    pub is_shared: bool,
    pub shareable_link_id: Option<Uuid>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

impl SessionDto {
    /// `shared`: whether the session is shared with any end user.
    pub fn new(c: Chat, shared: bool) -> Self {
        Self {
            id: c.id,
            workspace: c.workspace_id,
            name: c.name,
            status: "active",
            ai_provider: c.settings.provider,
            ai_model: c.settings.model,
            system_prompt: c.settings.system_prompt,
            temperature: c.settings.temperature.map(|t| t.get()),
            max_tokens: c.settings.max_tokens,
            top_p: c.settings.top_p.map(|t| t.get()),
            agent_framework: c.agent_framework,
            user_id: c.end_user_id,
            is_public: c.public_link_id.is_some(),
            is_shared: shared,
            shareable_link_id: c.public_link_id,
            created_at: timestamp(&c.created_at),
            updated_at: timestamp(&c.updated_at),
        }
    }
}

/// A session's fields. Creating: all optional (the name is `New chat`, unset provider and model
/// mean the server's default). Updating: absent fields stay, `null` clears a setting.
#[derive(Deserialize, ToSchema)]
#[schema(as = SessionFields)]
pub struct SessionFields {
    /// 1 to 200 visible characters.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 200, format = "display-text")]
    pub name: Option<String>,
    /// A configured provider (any case).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, format = "provider")]
    pub ai_provider: Option<Option<String>>,
    /// A model the provider serves.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub ai_model: Option<Option<String>>,
    /// Sent first, as a `system` message.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, format = "text-without-nul")]
    pub system_prompt: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<f64>, minimum = 0, maximum = 2)]
    pub temperature: Option<Option<f64>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<f64>, minimum = 0, maximum = 1)]
    pub top_p: Option<Option<f64>>,
    #[serde(default, deserialize_with = "whole::present")]
    #[schema(value_type = Option<i64>, minimum = 1, format = "output-tokens")]
    pub max_tokens: Option<Option<i64>>,
    /// Stored and returned as given.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 100, format = "display-text")]
    pub agent_framework: Option<Option<String>>,
}

impl From<SessionFields> for ChatInput {
    fn from(f: SessionFields) -> Self {
        Self {
            name: f.name,
            provider: f.ai_provider,
            model: f.ai_model,
            system_prompt: f.system_prompt,
            temperature: f.temperature,
            top_p: f.top_p,
            max_tokens: f.max_tokens,
            agent_framework: f.agent_framework,
        }
    }
}

/// A message of a session.
#[derive(Serialize, ToSchema)]
#[schema(as = SessionMessage)]
pub struct MessageDto {
    pub id: Uuid,
    /// The session's id.
    pub session: Uuid,
    /// `user` or `assistant`.
    #[schema(value_type = String, examples("user"))]
    pub role: &'static str,
    pub content: String,
    pub sequence_number: i64,
    /// `complete`, `streaming`, `incomplete`, `failed` or `cancelled`.
    #[schema(value_type = String, examples("complete"))]
    pub status: &'static str,
    /// The model that answered (answers only).
    pub model: Option<String>,
    /// Token counts of an ended answer; null for questions and running answers.
    pub usage: Option<UsageDto>,
    /// The sources an answer was given, when it searched.
    #[schema(value_type = Option<Vec<Object>>)]
    pub sources: Option<serde_json::Value>,
    /// For an answer: the question it answers.
    pub reply_to: Option<Uuid>,
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl From<&Message> for MessageDto {
    fn from(m: &Message) -> Self {
        let ended = m.role == Role::Assistant && m.status != MessageStatus::Streaming;
        Self {
            id: m.id,
            session: m.chat_id,
            role: m.role.as_str(),
            content: m.content.clone(),
            sequence_number: m.seq,
            status: m.status.as_str(),
            model: m.model.clone(),
            usage: ended.then(|| m.usage.into()),
            sources: m.sources.clone(),
            reply_to: m.reply_to,
            created_at: timestamp(&m.created_at),
        }
    }
}

#[derive(Deserialize, ToSchema)]
pub struct PostMessage {
    /// Only `user`.
    #[schema(value_type = PostedRole, examples("user"))]
    pub role: String,
    #[schema(format = "message-text")]
    pub content: String,
}

/// The kind of a key to create.
#[derive(ToSchema)]
#[allow(dead_code, non_camel_case_types)]
pub enum KeyKindName {
    secret,
    publishable,
}

/// What a share allows: reading only.
#[derive(ToSchema)]
#[allow(dead_code, non_camel_case_types)]
pub enum SharePermission {
    read,
}

/// Who writes a message posted to a session: always the user.
#[derive(ToSchema)]
#[allow(dead_code, non_camel_case_types)]
pub enum PostedRole {
    user,
}

/// A question and its ended answer (sync replies).
#[derive(Serialize, ToSchema)]
pub struct Exchange {
    pub user_message: Option<MessageDto>,
    /// The answer, whatever its status; empty only when it could not be saved.
    pub assistant_messages: Vec<MessageDto>,
}

/// An async reply: the task to poll.
#[derive(Serialize, ToSchema)]
pub struct TaskAccepted {
    pub task_id: Uuid,
    /// Always `processing`.
    #[schema(value_type = String, examples("processing"))]
    pub status: &'static str,
    pub user_message: MessageDto,
}

/// Where a task stands.
#[derive(Serialize, ToSchema)]
pub struct TaskStatus {
    pub task_id: Uuid,
    /// `processing`, `completed`, `failed` or `cancelled`.
    #[schema(value_type = String, examples("completed"))]
    pub status: &'static str,
    /// The question and the answer, once the task ended.
    pub result: Option<Exchange>,
    /// Why it failed.
    pub error: Option<String>,
}

impl From<TaskView> for TaskStatus {
    fn from(t: TaskView) -> Self {
        let status = t.status();
        let ended = status != "processing";
        Self {
            task_id: t.answer.id,
            status,
            error: t.failure.map(|f| f.message),
            result: ended.then(|| Exchange {
                user_message: t.question.as_ref().map(MessageDto::from),
                assistant_messages: vec![MessageDto::from(&t.answer)],
            }),
        }
    }
}

/// The data of `event: done`.
#[derive(Serialize, ToSchema)]
#[schema(as = SessionStreamDone)]
pub struct StreamDone {
    /// The saved answer (null when it could not be saved).
    pub message: Option<MessageDto>,
}

/// What a stop did.
#[derive(Serialize, ToSchema)]
#[schema(as = SessionStopped)]
pub struct Stopped {
    /// False when no answer was running.
    pub stopped: bool,
    /// The stopped answer's status (`cancelled`); null when nothing was stopped.
    #[schema(value_type = Option<String>, examples("cancelled"))]
    pub status: Option<&'static str>,
}

/// A workspace's spending.
#[derive(Serialize, ToSchema)]
pub struct CreditUsageDto {
    /// US dollars as a decimal string; null when unlimited.
    pub total_credit_limit: Option<String>,
    /// US dollars spent so far, as a decimal string.
    pub total_cost: String,
    /// The cost as a percentage of the limit; 0 when unlimited.
    pub percentage_used: f64,
}

impl From<CreditUsage> for CreditUsageDto {
    fn from(u: CreditUsage) -> Self {
        let percentage_used = match u.limit_micros {
            Some(limit) if limit > 0 => u.spent_micros as f64 * 100.0 / limit as f64,
            Some(_) if u.spent_micros > 0 => 100.0,
            _ => 0.0,
        };
        Self {
            total_credit_limit: u.limit_micros.map(format_usd),
            total_cost: format_usd(u.spent_micros),
            percentage_used,
        }
    }
}

/// A session's public link, after a toggle.
#[derive(Serialize, ToSchema)]
pub struct PublicLink {
    pub is_public: bool,
    /// The link's id; a new one every time the link is turned on.
    pub shareable_link_id: Option<Uuid>,
    /// The public view's path on this server (`/api/chats/shared/{id}/`); null when off.
    pub share_url: Option<String>,
}

impl From<Chat> for PublicLink {
    fn from(c: Chat) -> Self {
        Self {
            is_public: c.public_link_id.is_some(),
            shareable_link_id: c.public_link_id,
            share_url: c
                .public_link_id
                .map(|id| format!("/api/chats/shared/{id}/")),
        }
    }
}

/// What a public link shows.
#[derive(Serialize, ToSchema)]
pub struct PublicSession {
    pub session: PublicSessionHead,
    /// The questions and the complete answers, in order.
    pub messages: Vec<PublicMessage>,
}

#[derive(Serialize, ToSchema)]
pub struct PublicSessionHead {
    pub id: Uuid,
    pub name: String,
    #[schema(format = DateTime)]
    pub created_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct PublicMessage {
    pub id: Uuid,
    /// `user` or `assistant`.
    #[schema(value_type = String, examples("assistant"))]
    pub role: &'static str,
    pub content: String,
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl From<PublicView> for PublicSession {
    fn from(v: PublicView) -> Self {
        Self {
            session: PublicSessionHead {
                id: v.chat.id,
                name: v.chat.name,
                created_at: timestamp(&v.chat.created_at),
            },
            messages: v
                .messages
                .into_iter()
                .map(|m| PublicMessage {
                    id: m.id,
                    role: m.role.as_str(),
                    content: m.content,
                    created_at: timestamp(&m.created_at),
                })
                .collect(),
        }
    }
}

#[derive(Deserialize, ToSchema)]
pub struct ShareRequest {
    /// The end user (as `X-User-Id` names them).
    #[schema(format = "end-user-id")]
    pub user_id: String,
    /// Only `read`, the default.
    #[serde(default)]
    #[schema(value_type = Option<SharePermission>)]
    pub permission: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct RevokeShare {
    #[schema(format = "end-user-id")]
    pub user_id: String,
}

/// A share of a session with an end user.
#[derive(Serialize, ToSchema)]
pub struct ShareDto {
    pub user_id: String,
    /// `read`.
    pub permission: String,
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl From<Share> for ShareDto {
    fn from(s: Share) -> Self {
        Self {
            user_id: s.user_id,
            permission: s.permission,
            created_at: timestamp(&s.created_at),
        }
    }
}

/// What the transcription provider heard.
#[derive(Serialize, ToSchema)]
pub struct TranscriptionOut {
    pub text: String,
    /// The spoken language as the provider reports it, else as the form named it.
    pub language: Option<String>,
}

/// A translation.
#[derive(Serialize, ToSchema)]
pub struct Translation {
    pub text: String,
    pub target: String,
    pub translation: String,
}
