//! Translation: one answer of the workspace's default model with a fixed instruction, charged
//! like any answer, its text not stored.

use super::{Access, AnswerStream, Principal, Services};
use crate::domain::{
    GenEvent, MessageStatus, PromptMessage, Role, StreamFailure, Workspace, language_tag,
};
use crate::error::{Error, Result};
use crate::generation::{GenerationSpec, Storage};
use crate::providers::{ChatRequest, ProviderError};

fn failed(failure: StreamFailure) -> Error {
    Error::Upstream(match failure.upstream_status {
        Some(status) => ProviderError::Status {
            status,
            message: failure.message,
        },
        None => ProviderError::Reported(failure.message),
    })
}

impl Services {
    /// `text` translated into `target` by the server's default model.
    pub async fn translate(
        &self,
        who: &Principal,
        workspace: &Workspace,
        text: &str,
        target: &str,
    ) -> Result<String> {
        who.allow(Access::Backend)?;
        if text.trim().is_empty() || text.contains('\0') {
            return Err(Error::bad_request("text", "text must not be empty"));
        }
        if text.chars().count() > self.limits.max_message_chars {
            return Err(Error::bad_request(
                "text",
                format!(
                    "text is longer than {} characters",
                    self.limits.max_message_chars
                ),
            ));
        }
        language_tag("target", target)?;
        let resolved = self
            .providers
            .resolve(None, None)
            .ok_or_else(|| Error::Internal("no default model".into()))?;
        let prompt = [
            PromptMessage {
                role: Role::System,
                content: format!(
                    "Translate the user's message into the language whose BCP 47 code is \
                     `{target}`. Reply with the translation only: no quotes, notes or \
                     explanations."
                ),
            },
            PromptMessage {
                role: Role::User,
                content: text.to_owned(),
            },
        ];
        let request = ChatRequest::from_prompt(resolved.model.clone(), &prompt, None, None, None);
        let live = self
            .hub
            .start(GenerationSpec {
                workspace_id: workspace.id,
                resolved,
                request,
                search: None,
                storage: Storage::UsageOnly,
            })
            .await?;
        let mut answer = AnswerStream::sole(live)?;
        let mut translation = String::new();
        while let Some(event) = answer.next().await {
            match event {
                GenEvent::Delta { text, .. } => translation.push_str(&text),
                GenEvent::Error { failure, .. } => return Err(failed(failure)),
                GenEvent::Done(done) if done.status == MessageStatus::Complete => {
                    return Ok(translation.trim().to_owned());
                }
                GenEvent::Done(_) => {
                    return Err(failed(StreamFailure::new(
                        "incomplete",
                        "the translation ended before it was finished",
                    )));
                }
                GenEvent::Sources(_) | GenEvent::ToolCall { .. } => {}
            }
        }
        Err(Error::Internal(
            "the translation ended without an end".into(),
        ))
    }
}
