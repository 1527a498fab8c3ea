//! The seed's objects: chat `{id, name, created_at, updated_at}` and conversation
//! `{id, role, chat_id, message, created_at, updated_at}` with roles `Human` / `Assistant`.

use chrono::{DateTime, SecondsFormat, Utc};
use entity::{chat, message};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::Role;

/// RFC 3339, UTC, milliseconds, `Z`: as in the seed's examples.
pub fn timestamp(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[derive(Serialize)]
pub struct ChatDto {
    pub id: Uuid,
    pub name: String,
    pub created_at: String,
    pub updated_at: String,
}

impl From<chat::Model> for ChatDto {
    fn from(c: chat::Model) -> Self {
        Self {
            id: c.id,
            name: c.name,
            created_at: timestamp(&c.created_at),
            updated_at: timestamp(&c.updated_at),
        }
    }
}

#[derive(Serialize)]
pub struct ConversationDto {
    pub id: Uuid,
    pub role: &'static str,
    pub chat_id: Uuid,
    pub message: String,
    pub created_at: String,
    pub updated_at: String,
}

pub fn role_name(role: &str) -> &'static str {
    match Role::parse(role) {
        Some(Role::User) => "Human",
        Some(Role::Assistant) => "Assistant",
        Some(Role::System) => "System",
        Some(Role::Tool) | None => "Tool",
    }
}

impl From<&message::Model> for ConversationDto {
    fn from(m: &message::Model) -> Self {
        Self {
            id: m.id,
            role: role_name(&m.role),
            chat_id: m.chat_id,
            message: m.content.clone(),
            created_at: timestamp(&m.created_at),
            updated_at: timestamp(&m.updated_at),
        }
    }
}

#[derive(Deserialize)]
pub struct CreateChat {
    pub name: String,
}

#[derive(Deserialize)]
pub struct UpdateChat {
    pub name: String,
    #[serde(default)]
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
pub struct CreateConversation {
    pub chat_id: Uuid,
    pub role: String,
    pub message: String,
}
