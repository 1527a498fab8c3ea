//! Agents (the agent API): versioned presets of a workspace, and the chats they answer. A chat
//! bound to an agent answers with the agent's current version (see `answer_spec`); everything
//! else about its messages and streams is the same code as any chat's.
//!
//! Field names in errors are the agent API's own (camelCase): it is the only dialect with
//! agents.

use serde_json::Value;
use uuid::Uuid;

use super::{Access, ChatInput, Principal, Services};
use crate::domain::{
    AGENT_TOOLS, Agent, AgentFields, AgentVersion, Chat, ChatName, ChatSettings, display_text,
    end_user_id,
};
use crate::error::{Error, Result};
use crate::store::NewChat;

const MAX_NAME_CHARS: usize = 200;
const MAX_DESCRIPTION_CHARS: usize = 2000;
const MAX_TYPE_CHARS: usize = 100;

/// An agent's fields as a client sends them. For a change, `None` leaves a field as it is and
/// `Some(None)` clears it.
#[derive(Default)]
pub struct AgentInput {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub system_prompt: Option<Option<String>>,
    pub provider: Option<Option<String>>,
    pub model: Option<Option<String>>,
    pub temperature: Option<Option<f64>>,
    pub max_tokens: Option<Option<i64>>,
    pub tools: Option<Option<Vec<String>>>,
    pub agent_type: Option<Option<String>>,
}

/// The agent API's name for a field the shared settings check names.
fn camel(field: &str) -> &str {
    match field {
        "ai_provider" => "provider",
        "ai_model" => "model",
        "system_prompt" => "systemPrompt",
        "max_tokens" => "maxTokens",
        other => other,
    }
}

fn renamed(error: Error) -> Error {
    match error {
        Error::BadRequest {
            field: Some(field),
            message,
        } => {
            let name = camel(&field).to_owned();
            Error::BadRequest {
                message: message.replace(&field, &name),
                field: Some(name),
            }
        }
        Error::Conflict { code, message } => Error::Conflict {
            code,
            message: ["ai_provider", "ai_model"]
                .iter()
                .fold(message, |m, field| m.replace(field, camel(field))),
        },
        other => other,
    }
}

/// Whether a filter can match no stored text: none holds a NUL (no database stores one), so
/// such a filter is answered without asking.
fn names_nothing(filter: &str) -> bool {
    filter.contains('\0')
}

/// Whether any key or string in `value` holds a NUL character.
fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

fn optional_text(field: &str, value: Option<String>, max: usize) -> Result<Option<String>> {
    if value.as_ref().is_some_and(|v| v.chars().nth(max).is_some()) {
        return Err(crate::domain::too_long(field, max));
    }
    value
        .filter(|v| !v.trim().is_empty())
        .map(|v| display_text(field, &v, max))
        .transpose()
}

impl Services {
    /// `base` (none for a new agent) with `input`'s changes, every value checked as a chat's
    /// settings are.
    fn agent_fields(&self, base: Option<&AgentFields>, input: AgentInput) -> Result<AgentFields> {
        let name = match (&input.name, base) {
            (Some(name), _) => display_text("name", name, MAX_NAME_CHARS)?,
            (None, Some(base)) => base.name.clone(),
            (None, None) => return Err(Error::bad_request("name", "name is required")),
        };
        let current = base.map(AgentFields::settings).unwrap_or_default();
        let settings = self
            .settings(
                &current,
                &ChatInput {
                    provider: input.provider.clone(),
                    model: input.model.clone(),
                    system_prompt: input.system_prompt.clone(),
                    temperature: input.temperature,
                    max_tokens: input.max_tokens,
                    ..ChatInput::default()
                },
            )
            .map_err(renamed)?;
        let pick = |change: Option<Option<String>>, now: Option<&String>| match change {
            Some(value) => value,
            None => now.cloned(),
        };
        let description = optional_text(
            "description",
            pick(input.description, base.and_then(|b| b.description.as_ref())),
            MAX_DESCRIPTION_CHARS,
        )?;
        let agent_type = optional_text(
            "agentType",
            pick(input.agent_type, base.and_then(|b| b.agent_type.as_ref())),
            MAX_TYPE_CHARS,
        )?;
        let tools = match input.tools {
            Some(tools) => {
                let mut checked: Vec<String> = Vec::new();
                for tool in tools.unwrap_or_default() {
                    if !AGENT_TOOLS.contains(&tool.as_str()) {
                        return Err(Error::bad_request(
                            "tools",
                            format!(
                                "unknown tool `{tool}` in tools: the tools are {}",
                                AGENT_TOOLS.join(", ")
                            ),
                        ));
                    }
                    if !checked.contains(&tool) {
                        checked.push(tool);
                    }
                }
                checked
            }
            None => base.map(|b| b.tools.clone()).unwrap_or_default(),
        };
        let ChatSettings {
            provider,
            model,
            system_prompt,
            temperature,
            max_tokens,
            ..
        } = settings;
        Ok(AgentFields {
            name,
            description,
            system_prompt,
            provider,
            model,
            temperature,
            max_tokens,
            tools,
            agent_type,
        })
    }

    pub async fn create_agent(&self, who: &Principal, input: AgentInput) -> Result<Agent> {
        who.allow(Access::Backend)?;
        let fields = self.agent_fields(None, input)?;
        Ok(self.store.insert_agent(who.workspace_id, &fields).await?)
    }

    /// The workspace's agents, newest first, of one type when `agent_type` names it.
    pub async fn agents(&self, who: &Principal, agent_type: Option<&str>) -> Result<Vec<Agent>> {
        who.allow(Access::Backend)?;
        if agent_type.is_some_and(names_nothing) {
            return Ok(Vec::new());
        }
        Ok(self.store.list_agents(who.workspace_id, agent_type).await?)
    }

    /// An agent that is not deleted.
    pub async fn agent(&self, who: &Principal, id: Uuid) -> Result<Agent> {
        who.allow(Access::Backend)?;
        self.live_agent(who, id).await
    }

    /// An agent of the caller's workspace that is not deleted, whoever asks (a publishable
    /// key creating a chat names one).
    async fn live_agent(&self, who: &Principal, id: Uuid) -> Result<Agent> {
        self.store
            .agent(who.workspace_id, id)
            .await?
            .filter(|a| a.deleted_at.is_none())
            .ok_or(Error::NotFound("agent"))
    }

    /// Applies `input` as the agent's next version.
    pub async fn update_agent(
        &self,
        who: &Principal,
        id: Uuid,
        input: AgentInput,
    ) -> Result<Agent> {
        who.allow(Access::Backend)?;
        let agent = self.agent(who, id).await?;
        let fields = self.agent_fields(Some(&agent.fields), input)?;
        self.save_version(who, id, &fields).await
    }

    async fn save_version(&self, who: &Principal, id: Uuid, fields: &AgentFields) -> Result<Agent> {
        match self.store.update_agent(who.workspace_id, id, fields).await {
            Ok(Some(agent)) => Ok(agent),
            Ok(None) => Err(Error::NotFound("agent")),
            Err(e) if crate::store::is_unique_violation(&e) => Err(Error::Conflict {
                code: "agent_changed",
                message: "the agent was changed by another request at the same time; try again"
                    .into(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes an agent: its chats stay readable, new chats with it are refused.
    pub async fn delete_agent(&self, who: &Principal, id: Uuid) -> Result<()> {
        who.allow(Access::Backend)?;
        if self.store.delete_agent(who.workspace_id, id).await? {
            Ok(())
        } else {
            Err(Error::NotFound("agent"))
        }
    }

    /// Every version of an agent, newest first.
    pub async fn agent_versions(&self, who: &Principal, id: Uuid) -> Result<Vec<AgentVersion>> {
        who.allow(Access::Backend)?;
        let agent = self.agent(who, id).await?;
        Ok(self.store.agent_versions(&agent).await?)
    }

    /// Makes an earlier version's fields current again, as a new version (history is never
    /// rewritten): `version`, or the one before the current.
    pub async fn rollback_agent(
        &self,
        who: &Principal,
        id: Uuid,
        version: Option<i64>,
    ) -> Result<Agent> {
        who.allow(Access::Backend)?;
        let agent = self.agent(who, id).await?;
        let target = match version {
            Some(n) => i32::try_from(n).map_err(|_| Error::NotFound("version"))?,
            None if agent.version > 1 => agent.version - 1,
            None => {
                return Err(Error::Conflict {
                    code: "nothing_to_roll_back",
                    message: "the agent has only one version".into(),
                });
            }
        };
        let earlier = self
            .store
            .agent_version(&agent, target)
            .await?
            .ok_or(Error::NotFound("version"))?;
        self.save_version(who, id, &earlier.fields).await
    }

    /// The agent a chat is bound to (deleted or not), for answering it.
    pub(super) async fn agent_of(&self, chat: &Chat) -> Result<Option<Agent>> {
        match chat.agent_id {
            Some(id) => Ok(self.store.agent(chat.workspace_id, id).await?),
            None => Ok(None),
        }
    }

    /// A chat with an agent, for the end user the request names (its `userId`, or the key's
    /// `X-User-Id`). `metadata`, a JSON object, is kept as given.
    pub async fn create_agent_chat(
        &self,
        who: &Principal,
        agent_id: Uuid,
        user_id: Option<&str>,
        metadata: Option<Value>,
    ) -> Result<Chat> {
        who.allow(Access::Widget)?;
        let end_user = match (user_id, &who.end_user) {
            (Some(user), Some(acting)) if end_user_id("userId", user)? != acting => {
                return Err(Error::bad_request(
                    "userId",
                    "userId differs from the X-User-Id the key acts for",
                ));
            }
            (Some(user), _) => Some(end_user_id("userId", user)?.to_owned()),
            (None, acting) => acting.clone(),
        };
        if metadata.as_ref().is_some_and(holds_nul) {
            // Kept as given, so refused rather than changed; no database stores a NUL in text.
            return Err(Error::bad_request(
                "metadata",
                "metadata must not contain NUL characters (\\u0000)",
            ));
        }
        if metadata.as_ref().is_some_and(|m| !m.is_object()) {
            return Err(Error::bad_request(
                "metadata",
                "metadata must be a JSON object",
            ));
        }
        let agent = self.live_agent(who, agent_id).await?;
        self.credits.check(who.workspace_id).await?;
        let name = ChatName::parse("name", &agent.fields.name)
            .or_else(|_| ChatName::parse("name", "Agent chat"))?;
        Ok(self
            .store
            .create_chat(NewChat {
                workspace_id: who.workspace_id,
                name,
                end_user_id: end_user,
                created_via: who.kind,
                settings: ChatSettings::default(),
                agent_framework: None,
                agent_id: Some(agent.id),
                metadata,
            })
            .await?)
    }

    /// Agents' chats, newest first: one end user's (`user_id`), and of agents of one type.
    pub async fn agent_chats(
        &self,
        who: &Principal,
        user_id: Option<&str>,
        agent_type: Option<&str>,
        limit: u64,
        offset: u64,
    ) -> Result<Vec<Chat>> {
        who.allow(Access::Backend)?;
        let user = user_id.map(|u| end_user_id("userId", u)).transpose()?;
        let agents = match agent_type {
            Some(kind) if names_nothing(kind) => Some(Vec::new()),
            Some(kind) => Some(
                self.store
                    .list_agents(who.workspace_id, Some(kind))
                    .await?
                    .into_iter()
                    .map(|a| a.id)
                    .collect::<Vec<_>>(),
            ),
            None => None,
        };
        Ok(self
            .store
            .list_agent_chats(&who.scope(), user, agents.as_deref(), limit, offset)
            .await?)
    }
}
