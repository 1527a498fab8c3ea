//! The agent API's JSON (camelCase), and conversions from domain types.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::{Agent, AgentFields, AgentVersion, Chat, Message};
use crate::http::conversations::dto::timestamp;
use crate::http::whole;
use crate::http::workspace::dto::{PostedRole, present};
use crate::service::AgentInput;

/// An agent's fields as a client sends them: every one optional on update, where `null`
/// clears it; `name` is required on create.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentBody {
    /// 1 to 200 visible characters; required on create.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 200, format = "display-text")]
    pub name: Option<String>,
    /// Up to 2000 characters; blank is as if unset.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 2000, format = "display-text-or-blank")]
    pub description: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, format = "text-without-nul")]
    pub system_prompt: Option<Option<String>>,
    /// A model the provider serves; unset: the server's default model.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub model: Option<Option<String>>,
    /// A configured provider (any case); unset: the server's default.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, format = "provider")]
    pub provider: Option<Option<String>>,
    /// 0 to 2.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<f64>, minimum = 0, maximum = 2)]
    pub temperature: Option<Option<f64>>,
    /// 1 to the model's cap.
    #[serde(default, deserialize_with = "whole::present")]
    #[schema(value_type = Option<i64>, minimum = 1, format = "output-tokens")]
    pub max_tokens: Option<Option<i64>>,
    /// `web_search` answers through the internet pipeline, with sources.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<AgentTool>>)]
    pub tools: Option<Option<Vec<String>>>,
    /// Up to 100 characters; blank is as if unset.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 100, format = "display-text-or-blank")]
    pub agent_type: Option<Option<String>>,
}

/// A tool an agent may use (`domain::AGENT_TOOLS`).
#[derive(ToSchema)]
#[allow(dead_code, non_camel_case_types)]
pub enum AgentTool {
    web_search,
}

/// [`AgentBody`] as `POST /agent` takes it, for the description: `name` is required there.
pub struct NewAgent;

impl utoipa::PartialSchema for NewAgent {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{Schema, Type};
        use utoipa::openapi::{RefOr, schema::SchemaType};
        let mut schema = <AgentBody as utoipa::PartialSchema>::schema();
        if let RefOr::T(Schema::Object(body)) = &mut schema {
            body.required.push("name".to_owned());
            if let Some(RefOr::T(Schema::Object(name))) = body.properties.get_mut("name") {
                name.schema_type = SchemaType::Type(Type::String);
            }
        }
        schema
    }
}

impl ToSchema for NewAgent {
    fn name() -> std::borrow::Cow<'static, str> {
        "AgentCreate".into()
    }
}

impl From<AgentBody> for AgentInput {
    fn from(b: AgentBody) -> Self {
        AgentInput {
            name: b.name,
            description: b.description,
            system_prompt: b.system_prompt,
            provider: b.provider,
            model: b.model,
            temperature: b.temperature,
            max_tokens: b.max_tokens,
            tools: b.tools,
            agent_type: b.agent_type,
        }
    }
}

/// What one version of an agent fixes.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentFieldsDto {
    pub name: String,
    pub description: Option<String>,
    pub system_prompt: Option<String>,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub temperature: Option<f64>,
    pub max_tokens: Option<u32>,
    pub tools: Vec<String>,
    pub agent_type: Option<String>,
}

impl From<AgentFields> for AgentFieldsDto {
    fn from(f: AgentFields) -> Self {
        Self {
            name: f.name,
            description: f.description,
            system_prompt: f.system_prompt,
            model: f.model,
            provider: f.provider,
            temperature: f.temperature.map(|t| t.get()),
            max_tokens: f.max_tokens,
            tools: f.tools,
            agent_type: f.agent_type,
        }
    }
}

/// An agent as it is now.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = AgentObject)]
pub struct AgentDto {
    pub id: Uuid,
    #[serde(flatten)]
    pub fields: AgentFieldsDto,
    /// The workspace.
    pub team_id: Uuid,
    pub version: i32,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

impl From<Agent> for AgentDto {
    fn from(a: Agent) -> Self {
        Self {
            id: a.id,
            fields: a.fields.into(),
            team_id: a.workspace_id,
            version: a.version,
            created_at: timestamp(&a.created_at),
            updated_at: timestamp(&a.updated_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AgentList {
    pub agents: Vec<AgentDto>,
}

/// One version of an agent.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentVersionDto {
    pub version: i32,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[serde(flatten)]
    pub fields: AgentFieldsDto,
}

impl From<AgentVersion> for AgentVersionDto {
    fn from(v: AgentVersion) -> Self {
        Self {
            version: v.version,
            created_at: timestamp(&v.created_at),
            fields: v.fields.into(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct VersionList {
    /// Newest first.
    pub versions: Vec<AgentVersionDto>,
}

/// Which version to make current again.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    /// Default: the version before the current one.
    #[serde(default, deserialize_with = "whole::option")]
    pub version: Option<i64>,
}

/// A rollback's result: the agent's new version, whose fields are the earlier one's.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolledBack {
    pub id: Uuid,
    pub name: String,
    pub version: i32,
    #[schema(format = DateTime)]
    pub rolled_back_at: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = AgentCreateChat)]
pub struct CreateChat {
    pub agent_id: Uuid,
    /// The end user the chat belongs to.
    #[serde(default)]
    #[schema(format = "end-user-id")]
    pub user_id: Option<String>,
    /// Kept as given: a JSON object, with no NUL character in any key or string.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

/// A chat, as created.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = AgentChat)]
pub struct ChatDto {
    pub id: Uuid,
    pub agent_id: Option<Uuid>,
    pub team_id: Uuid,
    pub user_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl From<Chat> for ChatDto {
    fn from(c: Chat) -> Self {
        Self {
            id: c.id,
            agent_id: c.agent_id,
            team_id: c.workspace_id,
            user_id: c.end_user_id,
            metadata: c.metadata,
            created_at: timestamp(&c.created_at),
        }
    }
}

/// A chat in a list.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = AgentChatSummary)]
pub struct ChatSummary {
    pub id: Uuid,
    pub agent_id: Option<Uuid>,
    pub user_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl From<Chat> for ChatSummary {
    fn from(c: Chat) -> Self {
        Self {
            id: c.id,
            agent_id: c.agent_id,
            user_id: c.end_user_id,
            metadata: c.metadata,
            created_at: timestamp(&c.created_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChatList {
    pub chats: Vec<ChatSummary>,
    /// Give it as `cursor` for the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A chat with its messages.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = AgentChatWithMessages)]
pub struct ChatWithMessages {
    pub id: Uuid,
    pub agent_id: Option<Uuid>,
    pub team_id: Uuid,
    pub user_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    pub messages: Vec<MessageSummary>,
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// A message in a list.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = AgentMessageSummary)]
pub struct MessageSummary {
    pub id: Uuid,
    pub content: String,
    /// `user` or `assistant`.
    #[schema(value_type = String)]
    pub role: &'static str,
    /// `complete`, `streaming`, `incomplete`, `failed` or `cancelled`.
    #[schema(value_type = String)]
    pub status: &'static str,
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl From<&Message> for MessageSummary {
    fn from(m: &Message) -> Self {
        Self {
            id: m.id,
            content: m.content.clone(),
            role: m.role.as_str(),
            status: m.status.as_str(),
            created_at: timestamp(&m.created_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct MessageList {
    pub messages: Vec<MessageSummary>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = AgentPostMessage)]
pub struct PostMessage {
    #[schema(format = "message-text")]
    pub content: String,
    /// `user`.
    #[serde(default = "user")]
    #[schema(value_type = PostedRole)]
    pub role: String,
}

fn user() -> String {
    "user".to_owned()
}

/// An answer.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = AgentMessage)]
pub struct MessageDto {
    pub id: Uuid,
    pub chat_id: Uuid,
    pub content: String,
    #[schema(value_type = String)]
    pub role: &'static str,
    #[schema(value_type = String)]
    pub status: &'static str,
    /// The agent's version that produced it.
    pub agent_version: Option<i32>,
    /// The sources of a `web_search` agent's answer; null otherwise.
    #[schema(value_type = Option<Vec<Object>>)]
    pub sources: Option<Value>,
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl From<&Message> for MessageDto {
    fn from(m: &Message) -> Self {
        Self {
            id: m.id,
            chat_id: m.chat_id,
            content: m.content.clone(),
            role: m.role.as_str(),
            status: m.status.as_str(),
            agent_version: m.agent_version,
            sources: m.sources.clone(),
            created_at: timestamp(&m.created_at),
        }
    }
}

/// The data of `event: done`.
#[derive(Serialize, ToSchema)]
#[schema(as = AgentStreamDone)]
pub struct StreamDone {
    /// The saved answer (null when it could not be saved).
    pub message: Option<MessageDto>,
}
