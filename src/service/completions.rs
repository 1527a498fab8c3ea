//! Completions for the OpenAI-compatible dialect: model resolution, request checks, and an
//! unstored generation on the same core as every other answer.

use serde_json::{Map, Value};

use super::{Access, AnswerStream, Principal, Services, check_max_tokens};
use crate::error::{Error, Result};
use crate::generation::{GenerationSpec, Storage};
use crate::providers::ChatRequest;

/// A checked completion request.
pub struct CompletionInput {
    pub model: String,
    pub messages: Vec<Value>,
    /// Every other field, relayed to the provider as given.
    pub params: Map<String, Value>,
}

impl Services {
    /// Starts a completion and returns its only reader: nobody can resume an unstored answer,
    /// so dropping the reader before the end cancels the upstream request.
    pub async fn start_completion(
        &self,
        who: &Principal,
        input: CompletionInput,
    ) -> Result<AnswerStream> {
        who.allow(Access::Backend)?;
        let mut resolved = self
            .providers
            .resolve_model(&input.model)
            .ok_or(Error::ModelNotFound(input.model.clone()))?;
        if let Some(field) = input.params.keys().find(|k| !resolved.provider.accepts(k)) {
            return Err(Error::bad_request(
                field.as_str(),
                format!(
                    "`{field}` is not supported by provider `{}`",
                    resolved.provider.name()
                ),
            ));
        }
        // OpenAI's two names for the same limit; the dialect checked both are positive integers.
        for field in ["max_tokens", "max_completion_tokens"] {
            if let Some(requested) = input.params.get(field).and_then(Value::as_u64) {
                check_max_tokens(&mut resolved, field, requested)?;
            }
        }
        let request = ChatRequest {
            model: resolved.model.clone(),
            messages: input.messages,
            params: input.params,
        };
        let live = self
            .hub
            .start(GenerationSpec {
                workspace_id: who.workspace_id,
                resolved,
                request,
                search: None,
                storage: Storage::UsageOnly,
            })
            .await?;
        AnswerStream::sole(live)
    }
}
