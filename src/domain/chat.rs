//! Chats and their messages as every layer above the store sees them: parsed once from the
//! rows, so that no dialect re-reads role or status strings or nullable token counts.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::{KeyKind, MessageStatus, Role, Usage, display_text};
use crate::error::{Error, Result};

/// Longest accepted chat name, in characters.
pub const MAX_CHAT_NAME_CHARS: usize = 200;

/// A chat name as stored: trimmed, visible, no control or reordering characters, at most
/// [`MAX_CHAT_NAME_CHARS`] characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatName(String);

impl ChatName {
    /// Checks `text` under the rule for text people read; the error names `field`.
    pub fn parse(field: &str, text: &str) -> Result<Self> {
        display_text(field, text, MAX_CHAT_NAME_CHARS).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// A sampling temperature: a finite number from 0 to 2, as every OpenAI-compatible provider
/// accepts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Temperature(f64);

impl Temperature {
    pub fn parse(field: &str, value: f64) -> Result<Self> {
        in_range(field, value, 0.0, 2.0).map(Self)
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

/// A nucleus-sampling mass: a finite number from 0 to 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TopP(f64);

impl TopP {
    pub fn parse(field: &str, value: f64) -> Result<Self> {
        in_range(field, value, 0.0, 1.0).map(Self)
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

fn in_range(field: &str, value: f64, low: f64, high: f64) -> Result<f64> {
    if value.is_finite() && (low..=high).contains(&value) {
        Ok(value)
    } else {
        Err(Error::bad_request(
            field,
            format!("`{field}` must be a number from {low} to {high}"),
        ))
    }
}

/// What a chat asks of the model; `None` everywhere means the server's defaults.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChatSettings {
    pub provider: Option<String>,
    pub model: Option<String>,
    /// Sent first, as a `system` message, when not empty.
    pub system_prompt: Option<String>,
    pub temperature: Option<Temperature>,
    pub top_p: Option<TopP>,
    pub max_tokens: Option<u32>,
}

/// A chat.
#[derive(Clone, Debug, PartialEq)]
pub struct Chat {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub name: String,
    /// The end user the chat belongs to, when a key acted for one.
    pub end_user_id: Option<String>,
    /// The kind of key that created it (publishable keys see only their own kind's chats).
    pub created_via: KeyKind,
    pub settings: ChatSettings,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A message of a chat: a question, an answer, or a system message.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub id: Uuid,
    pub chat_id: Uuid,
    /// Its place in the chat, from 1.
    pub seq: i64,
    pub role: Role,
    pub content: String,
    pub status: MessageStatus,
    /// For an answer: the question it answers.
    pub reply_to: Option<Uuid>,
    pub finish_reason: Option<String>,
    /// For an answer: who answered it.
    pub provider: Option<String>,
    pub model: Option<String>,
    /// Token counts (zero where none was recorded).
    pub usage: Usage,
    pub cost_micros: Option<i64>,
    /// The sources an answer was given (the internet variant), as sent to readers.
    pub sources: Option<Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A workspace: the tenant boundary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workspace {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    /// Spending limit in micro-dollars; `None` is no limit.
    pub credit_limit_micros: Option<i64>,
}

/// A stored API key (its hash and prefix stay in the store).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    pub id: Uuid,
    pub workspace_id: Uuid,
    /// `None` for a kind this build does not know (refused like an unknown key).
    pub kind: Option<KeyKind>,
    pub is_admin: bool,
    /// Origins a publishable key is bound to; `None` when it is not bound.
    pub allowed_origins: Option<Vec<String>>,
    pub revoked: bool,
}

/// What one answer cost, charged to a workspace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageEntry {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub chat_id: Option<Uuid>,
    pub message_id: Option<Uuid>,
    pub provider: String,
    pub model: String,
    pub prompt_tokens: i32,
    pub completion_tokens: i32,
    pub estimated: bool,
    pub cost_micros: i64,
    pub created_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temperatures_and_top_p_outside_their_range_are_refused_naming_the_field() {
        assert_eq!(Temperature::parse("temperature", 0.7).unwrap().get(), 0.7);
        assert!(Temperature::parse("temperature", 2.0).is_ok());
        let refused = Temperature::parse("temperature", 2.5).unwrap_err();
        assert_eq!(refused.field(), Some("temperature"));
        assert!(Temperature::parse("temperature", f64::NAN).is_err());
        assert!(TopP::parse("top_p", 1.0).is_ok());
        assert_eq!(TopP::parse("topP", -0.1).unwrap_err().field(), Some("topP"));
    }

    #[test]
    fn a_chat_name_is_the_display_text_rule_under_its_length_limit() {
        assert_eq!(ChatName::parse("name", "  hi ").unwrap().as_str(), "hi");
        let long = "x".repeat(MAX_CHAT_NAME_CHARS + 1);
        assert_eq!(
            ChatName::parse("name", &long).unwrap_err().field(),
            Some("name")
        );
    }
}
