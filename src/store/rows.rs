//! Rows to domain types: the one place where stored strings, nullable counts and JSON columns
//! are read back. Everything above the store works with the parsed values.

use entity::{agent, agent_version, api_key, chat, message, usage_record, workspace};

use crate::domain::{
    Agent, AgentFields, AgentVersion, ApiKey, Chat, ChatSettings, KeyKind, Message, MessageStatus,
    Role, Temperature, TopP, Usage, UsageEntry, Workspace,
};

fn count(v: Option<i32>) -> u32 {
    v.and_then(|v| u32::try_from(v).ok()).unwrap_or(0)
}

/// Stored token counts are `i32`; larger counts are saturated.
pub(super) fn tokens(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

pub(super) fn chat(row: chat::Model) -> Chat {
    // Settings were validated when written; a value that no longer passes (edited by hand) is
    // left to the server's default rather than sent upstream.
    let settings = ChatSettings {
        provider: row.provider,
        model: row.model,
        system_prompt: row.system_prompt,
        temperature: row
            .temperature
            .and_then(|t| Temperature::parse("temperature", t).ok()),
        top_p: row.top_p.and_then(|t| TopP::parse("top_p", t).ok()),
        max_tokens: row.max_tokens.and_then(|t| u32::try_from(t).ok()),
    };
    Chat {
        id: row.id,
        workspace_id: row.workspace_id,
        name: row.name,
        end_user_id: row.end_user_id,
        created_via: KeyKind::parse(&row.created_via).unwrap_or(KeyKind::Secret),
        settings,
        agent_framework: row.agent_framework,
        public_link_id: row.public_link_id,
        agent_id: row.agent_id,
        metadata: row.metadata,
        created_at: row.created_at,
        updated_at: row.updated_at,
    }
}

pub(super) fn message(row: message::Model) -> Message {
    Message {
        id: row.id,
        chat_id: row.chat_id,
        seq: row.seq,
        // sluice writes the four roles only; anything else is shown, and sent, as a tool's.
        role: Role::parse(&row.role).unwrap_or(Role::Tool),
        content: row.content,
        status: MessageStatus::parse(&row.status),
        reply_to: row.reply_to,
        finish_reason: row.finish_reason,
        provider: row.provider,
        model: row.model,
        usage: Usage::new(
            count(row.prompt_tokens),
            count(row.completion_tokens),
            row.usage_estimated,
        ),
        cost_micros: row.cost_micros,
        sources: row.sources,
        agent_version: row.agent_version,
        created_at: row.created_at,
        updated_at: row.updated_at,
    }
}

pub(super) fn workspace(row: workspace::Model) -> Workspace {
    Workspace {
        id: row.id,
        slug: row.slug,
        name: row.name,
        credit_limit_micros: row.credit_limit_micros,
        created_at: row.created_at,
    }
}

pub(super) fn api_key(row: api_key::Model) -> ApiKey {
    ApiKey {
        id: row.id,
        workspace_id: row.workspace_id,
        kind: KeyKind::parse(&row.kind),
        name: row.name,
        prefix: row.prefix,
        is_admin: row.is_admin,
        allowed_origins: row
            .allowed_origins
            .and_then(|v| serde_json::from_value::<Vec<String>>(v).ok())
            .filter(|o| !o.is_empty()),
        created_at: row.created_at,
        revoked_at: row.revoked_at,
        rate_limit: row.rate_limit.and_then(|n| u32::try_from(n).ok()),
    }
}

pub(super) fn usage(row: usage_record::Model) -> UsageEntry {
    UsageEntry {
        id: row.id,
        workspace_id: row.workspace_id,
        chat_id: row.chat_id,
        message_id: row.message_id,
        provider: row.provider,
        model: row.model,
        prompt_tokens: row.prompt_tokens,
        completion_tokens: row.completion_tokens,
        estimated: row.estimated,
        cost_micros: row.cost_micros,
        created_at: row.created_at,
    }
}

/// How an agent version's fields are stored: one JSON document.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredAgentFields {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    system_prompt: Option<String>,
    #[serde(default)]
    provider: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    tools: Vec<String>,
    #[serde(default)]
    agent_type: Option<String>,
}

pub(super) fn agent_fields_json(fields: &AgentFields) -> serde_json::Value {
    serde_json::json!(StoredAgentFields {
        name: fields.name.clone(),
        description: fields.description.clone(),
        system_prompt: fields.system_prompt.clone(),
        provider: fields.provider.clone(),
        model: fields.model.clone(),
        temperature: fields.temperature.map(|t| t.get()),
        max_tokens: fields.max_tokens,
        tools: fields.tools.clone(),
        agent_type: fields.agent_type.clone(),
    })
}

/// Fields written by this code read back; a document that no longer parses (edited by hand)
/// is an agent named as its row, with the server's defaults.
fn agent_fields(name: &str, json: serde_json::Value) -> AgentFields {
    let stored = serde_json::from_value::<StoredAgentFields>(json).unwrap_or(StoredAgentFields {
        name: name.to_owned(),
        description: None,
        system_prompt: None,
        provider: None,
        model: None,
        temperature: None,
        max_tokens: None,
        tools: Vec::new(),
        agent_type: None,
    });
    AgentFields {
        name: stored.name,
        description: stored.description,
        system_prompt: stored.system_prompt,
        provider: stored.provider,
        model: stored.model,
        temperature: stored
            .temperature
            .and_then(|t| Temperature::parse("temperature", t).ok()),
        max_tokens: stored.max_tokens,
        tools: stored.tools,
        agent_type: stored.agent_type,
    }
}

pub(super) fn agent(row: agent::Model) -> Agent {
    Agent {
        id: row.id,
        workspace_id: row.workspace_id,
        version: row.version,
        fields: agent_fields(&row.name, row.fields),
        created_at: row.created_at,
        updated_at: row.updated_at,
        deleted_at: row.deleted_at,
    }
}

pub(super) fn agent_version(row: agent_version::Model, name: &str) -> AgentVersion {
    AgentVersion {
        version: row.version,
        fields: agent_fields(name, row.fields),
        created_at: row.created_at,
    }
}
