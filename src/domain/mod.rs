//! Plain domain types shared by every layer: roles, statuses, usage, the provider stream enum,
//! and the rules for text people read.

use serde::{Deserialize, Serialize};

mod agent;
mod answer;
mod chat;
mod display_text;
mod text;

pub use agent::{AGENT_TOOLS, Agent, AgentFields, AgentVersion};
pub use answer::{Citation, Finished, GenEvent, ResumeAt, ResumePoint, ToolCallDelta};
pub use chat::{
    ApiKey, Chat, ChatName, ChatSettings, MAX_CHAT_NAME_CHARS, Message, Share, Slug, Temperature,
    TopP, UsageEntry, Workspace, check_origin, end_user_id, format_usd, key_rate_limit,
    language_tag, parse_usd,
};
pub use display_text::{display_text, too_long};
pub use text::LineBreaks;

/// The two kinds of key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// Server-side key: may do everything in its workspace.
    Secret,
    /// Browser key: public by nature, limited to a chat's own endpoints.
    Publishable,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Secret => "secret",
            KeyKind::Publishable => "publishable",
        }
    }

    pub fn prefix(self) -> &'static str {
        match self {
            KeyKind::Secret => "sk_live_",
            KeyKind::Publishable => "pk_live_",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "secret" => Some(KeyKind::Secret),
            "publishable" => Some(KeyKind::Publishable),
            _ => None,
        }
    }
}

/// Who wrote a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
    System,
    Tool,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::System => "system",
            Role::Tool => "tool",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "user" => Some(Role::User),
            "assistant" => Some(Role::Assistant),
            "system" => Some(Role::System),
            "tool" => Some(Role::Tool),
            _ => None,
        }
    }
}

impl PartialEq<&str> for Role {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Where a message stands. Only `streaming` can still change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageStatus {
    Complete,
    Streaming,
    Incomplete,
    Failed,
    Cancelled,
}

impl MessageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Complete => "complete",
            MessageStatus::Streaming => "streaming",
            MessageStatus::Incomplete => "incomplete",
            MessageStatus::Failed => "failed",
            MessageStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "complete" => MessageStatus::Complete,
            "streaming" => MessageStatus::Streaming,
            "failed" => MessageStatus::Failed,
            "cancelled" => MessageStatus::Cancelled,
            _ => MessageStatus::Incomplete,
        }
    }

    /// The generation status that goes with a final message status.
    pub fn generation_status(self) -> &'static str {
        match self {
            MessageStatus::Complete => "completed",
            MessageStatus::Cancelled => "cancelled",
            MessageStatus::Streaming => "processing",
            MessageStatus::Incomplete | MessageStatus::Failed => "failed",
        }
    }
}

impl PartialEq<&str> for MessageStatus {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Token counts of one answer. `estimated` is true when the provider sent none and sluice
/// counted for itself (never recorded as zero).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
    pub estimated: bool,
}

impl Usage {
    pub fn new(prompt_tokens: u32, completion_tokens: u32, estimated: bool) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
            estimated,
        }
    }

    /// A rough count for text whose provider reported none: about four bytes a token.
    pub fn estimate_tokens(text: &str) -> u32 {
        let bytes = u32::try_from(text.len()).unwrap_or(u32::MAX);
        if bytes == 0 {
            0
        } else {
            bytes.div_ceil(4).max(1)
        }
    }
}

/// One message of the context sent upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromptMessage {
    pub role: Role,
    pub content: String,
}

/// An error to show a client as an `error` event: a stable code and a human message that never
/// carries internal details.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamFailure {
    pub code: String,
    pub message: String,
    /// The upstream's HTTP status, when it refused the request (a dialect may mirror it).
    #[serde(skip)]
    pub upstream_status: Option<u16>,
    /// For `interrupted`: how many bytes of the answer were saved before the server stopped.
    #[serde(skip)]
    pub saved_bytes: Option<usize>,
}

impl StreamFailure {
    /// The code of an answer cut short by a server that stopped without saving all of it.
    pub const INTERRUPTED: &'static str = "interrupted";

    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            upstream_status: None,
            saved_bytes: None,
        }
    }

    /// The server stopped (a crash) while the answer was being generated; `saved_bytes` of it
    /// were saved.
    pub fn interrupted(saved_bytes: usize) -> Self {
        Self {
            saved_bytes: Some(saved_bytes),
            ..Self::new(
                Self::INTERRUPTED,
                "the server stopped while this answer was being generated; the saved answer \
                 may be shorter than what was streamed",
            )
        }
    }
}
