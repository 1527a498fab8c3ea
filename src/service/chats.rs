//! Chats with their own settings (the workspace API's sessions; later, agents' chats): created,
//! read, changed and deleted inside a named workspace. A chat's settings drive its answers: see
//! `conversations.rs`, which builds every generation's spec from them.

use uuid::Uuid;

use super::{Access, Principal, Services};
use crate::domain::{Chat, ChatName, ChatSettings, Temperature, TopP, Workspace, display_text};
use crate::error::{Error, Result};
use crate::store::{ChatChanges, NewChat};

/// What a new chat is called when its creator names it nothing.
const DEFAULT_NAME: &str = "New chat";
/// Longest `agent_framework`, in characters.
const MAX_FRAMEWORK_CHARS: usize = 100;

/// A chat's fields as a client sends them. For a change, `None` leaves a field as it is and
/// `Some(None)` clears it; for a new chat both mean unset.
#[derive(Default)]
pub struct ChatInput {
    pub name: Option<String>,
    pub provider: Option<Option<String>>,
    pub model: Option<Option<String>>,
    pub system_prompt: Option<Option<String>>,
    pub temperature: Option<Option<f64>>,
    pub top_p: Option<Option<f64>>,
    pub max_tokens: Option<Option<i64>>,
    pub agent_framework: Option<Option<String>>,
}

impl Services {
    /// `base` with `input`'s changes, every value checked: the provider configured, the model
    /// one it serves, temperature 0 to 2, top_p 0 to 1, max_tokens from 1 to the model's cap.
    pub(super) fn settings(&self, base: &ChatSettings, input: &ChatInput) -> Result<ChatSettings> {
        let pick = |change: &Option<Option<String>>, current: &Option<String>| match change {
            Some(value) => value.clone().filter(|v| !v.trim().is_empty()),
            None => current.clone(),
        };
        let provider = pick(&input.provider, &base.provider);
        let model = pick(&input.model, &base.model);
        self.providers
            .check_choice(provider.as_deref(), model.as_deref())
            .map_err(|field| {
                let (what, value, sent) = if field == "ai_provider" {
                    ("provider", provider.as_deref(), input.provider.is_some())
                } else {
                    ("model", model.as_deref(), input.model.is_some())
                };
                let value = value.unwrap_or_default();
                if sent {
                    Error::bad_request(
                        field,
                        format!("`{value}` is not a configured {what} (see GET /v1/models)"),
                    )
                } else {
                    // The request is valid on its own: it is the stored value that the change
                    // no longer fits.
                    Error::Conflict {
                        code: "settings_conflict",
                        message: format!(
                            "the stored {what} `{value}` does not go with this change; send \
                             `{field}` too"
                        ),
                    }
                }
            })?;
        let system_prompt = pick(&input.system_prompt, &base.system_prompt);
        if let Some(prompt) = &system_prompt {
            if prompt.chars().count() > self.limits.max_message_chars {
                return Err(Error::bad_request(
                    "system_prompt",
                    format!(
                        "system_prompt is longer than {} characters",
                        self.limits.max_message_chars
                    ),
                ));
            }
            if prompt.contains('\0') {
                return Err(Error::bad_request(
                    "system_prompt",
                    "system_prompt must not contain NUL characters",
                ));
            }
        }
        let temperature = match input.temperature {
            Some(t) => t
                .map(|t| Temperature::parse("temperature", t))
                .transpose()?,
            None => base.temperature,
        };
        let top_p = match input.top_p {
            Some(t) => t.map(|t| TopP::parse("top_p", t)).transpose()?,
            None => base.top_p,
        };
        let max_tokens = match input.max_tokens {
            Some(Some(n)) => {
                let resolved = self
                    .providers
                    .resolve(provider.as_deref(), model.as_deref())
                    .ok_or_else(|| Error::bad_request("ai_model", "no model serves this chat"))?;
                let cap = i64::from(resolved.max_tokens);
                if !(1..=cap).contains(&n) {
                    return Err(Error::bad_request(
                        "max_tokens",
                        format!("max_tokens must be from 1 to {cap} for this model"),
                    ));
                }
                u32::try_from(n).ok()
            }
            Some(None) => None,
            None => base.max_tokens,
        };
        Ok(ChatSettings {
            provider,
            model,
            system_prompt,
            temperature,
            top_p,
            max_tokens,
        })
    }

    fn framework(input: &ChatInput) -> Result<Option<Option<String>>> {
        input
            .agent_framework
            .as_ref()
            .map(|f| {
                f.as_deref()
                    .map(|f| display_text("agent_framework", f, MAX_FRAMEWORK_CHARS))
                    .transpose()
            })
            .transpose()
    }

    /// Creates a chat with its settings in `workspace`, once its credit allows answers.
    pub async fn create_chat_in(
        &self,
        who: &Principal,
        workspace: &Workspace,
        input: ChatInput,
    ) -> Result<Chat> {
        who.allow(Access::Widget)?;
        let name = ChatName::parse("name", input.name.as_deref().unwrap_or(DEFAULT_NAME))?;
        let settings = self.settings(&ChatSettings::default(), &input)?;
        let agent_framework = Self::framework(&input)?.flatten();
        self.credits.check(workspace.id).await?;
        Ok(self
            .store
            .create_chat(NewChat {
                workspace_id: workspace.id,
                name,
                end_user_id: who.end_user.clone(),
                created_via: who.kind,
                settings,
                agent_framework,
                agent_id: None,
                metadata: None,
            })
            .await?)
    }

    /// A chat of `workspace` the caller may see.
    pub async fn chat_in(&self, who: &Principal, workspace: &Workspace, id: Uuid) -> Result<Chat> {
        self.store
            .chat(&who.in_workspace(workspace).scope(), id)
            .await?
            .ok_or(Error::NotFound("chat"))
    }

    /// A workspace's chats the caller may see, newest first.
    pub async fn list_chats_in(
        &self,
        who: &Principal,
        workspace: &Workspace,
        limit: u64,
        offset: u64,
    ) -> Result<Vec<Chat>> {
        who.allow(Access::Backend)?;
        Ok(self
            .store
            .list_chats(&who.in_workspace(workspace).scope(), limit, offset)
            .await?)
    }

    /// Changes a chat's name and settings; absent fields stay.
    pub async fn update_chat_in(
        &self,
        who: &Principal,
        workspace: &Workspace,
        id: Uuid,
        input: ChatInput,
    ) -> Result<Chat> {
        who.allow(Access::Backend)?;
        let chat = self.chat_in(who, workspace, id).await?;
        who.owns(&chat)?;
        let name = input
            .name
            .as_deref()
            .map(|n| ChatName::parse("name", n))
            .transpose()?;
        let settings = self.settings(&chat.settings, &input)?;
        let changes = ChatChanges {
            name,
            settings: Some(settings),
            agent_framework: Self::framework(&input)?,
        };
        self.store
            .update_chat(&who.in_workspace(workspace).scope(), chat.id, changes)
            .await?
            .ok_or(Error::NotFound("chat"))
    }

    /// Deletes a chat with everything in it; a running answer is stopped (and saved) first.
    pub async fn delete_chat_in(
        &self,
        who: &Principal,
        workspace: &Workspace,
        id: Uuid,
    ) -> Result<()> {
        who.allow(Access::Backend)?;
        let chat = self.chat_in(who, workspace, id).await?;
        who.owns(&chat)?;
        for live in self.hub.stop_chat(chat.id) {
            live.wait_finished().await;
        }
        self.store
            .delete_chat(&who.in_workspace(workspace).scope(), chat.id)
            .await?
            .map(|_| ())
            .ok_or(Error::NotFound("chat"))
    }
}
