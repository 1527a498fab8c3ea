//! Agents: named, versioned presets whose chats answer with the current version's settings.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{ChatSettings, Temperature};

/// The tools an agent may name.
pub const AGENT_TOOLS: &[&str] = &["web_search"];

/// Everything one version of an agent fixes.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentFields {
    pub name: String,
    pub description: Option<String>,
    pub system_prompt: Option<String>,
    /// Unset: the server's default provider and model.
    pub provider: Option<String>,
    pub model: Option<String>,
    pub temperature: Option<Temperature>,
    pub max_tokens: Option<u32>,
    /// Names from [`AGENT_TOOLS`].
    pub tools: Vec<String>,
    pub agent_type: Option<String>,
}

impl AgentFields {
    /// The settings its chats answer with.
    pub fn settings(&self) -> ChatSettings {
        ChatSettings {
            provider: self.provider.clone(),
            model: self.model.clone(),
            system_prompt: self.system_prompt.clone(),
            temperature: self.temperature,
            top_p: None,
            max_tokens: self.max_tokens,
        }
    }

    /// Whether its answers search the web first.
    pub fn searches(&self) -> bool {
        self.tools.iter().any(|t| t == "web_search")
    }
}

/// An agent as it is now.
#[derive(Clone, Debug, PartialEq)]
pub struct Agent {
    pub id: Uuid,
    pub workspace_id: Uuid,
    /// From 1, one more for every change (a rollback included).
    pub version: i32,
    pub fields: AgentFields,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Deleted agents keep their row: their chats stay readable, but answer no more.
    pub deleted_at: Option<DateTime<Utc>>,
}

/// One version of an agent, as it was made.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentVersion {
    pub version: i32,
    pub fields: AgentFields,
    pub created_at: DateTime<Utc>,
}
