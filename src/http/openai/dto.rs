//! The OpenAI objects sluice writes itself: the non-streaming `chat.completion` and the model
//! list. The same types give the API description its schemas (`ToSchema`).

use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::Finished;

/// A whole answer (`stream` false).
#[derive(Serialize, ToSchema)]
#[schema(as = ChatCompletion)]
pub struct Completion {
    pub id: String,
    /// Always `chat.completion`.
    #[schema(value_type = String, examples("chat.completion"))]
    pub object: &'static str,
    /// Unix seconds.
    pub created: i64,
    pub model: String,
    /// Always null.
    pub system_fingerprint: Option<String>,
    pub choices: Vec<Choice>,
    pub usage: CompletionUsage,
}

#[derive(Serialize, ToSchema)]
#[schema(as = ChatCompletionChoice)]
pub struct Choice {
    pub index: u32,
    pub message: AssistantMessage,
    /// Always null.
    #[schema(value_type = Option<Object>)]
    pub logprobs: Option<serde_json::Value>,
    /// `stop`, `length`, `tool_calls`, … as the provider said.
    pub finish_reason: String,
}

#[derive(Serialize, ToSchema)]
#[schema(as = ChatCompletionMessage)]
pub struct AssistantMessage {
    /// Always `assistant`.
    #[schema(value_type = String, examples("assistant"))]
    pub role: &'static str,
    /// Null when the answer is tool calls only.
    pub content: Option<String>,
    /// Always null.
    pub refusal: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = ChatCompletionToolCall)]
pub struct ToolCall {
    pub id: String,
    /// Always `function`.
    #[serde(rename = "type")]
    #[schema(value_type = String, examples("function"))]
    pub kind: &'static str,
    pub function: FunctionCall,
}

#[derive(Serialize, ToSchema)]
#[schema(as = ChatCompletionFunctionCall)]
pub struct FunctionCall {
    pub name: String,
    /// JSON text, as the model wrote it.
    pub arguments: String,
}

#[derive(Serialize, ToSchema)]
pub struct CompletionUsage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
}

impl From<&Finished> for CompletionUsage {
    fn from(done: &Finished) -> Self {
        Self {
            prompt_tokens: done.usage.prompt_tokens,
            completion_tokens: done.usage.completion_tokens,
            total_tokens: done.usage.total_tokens,
        }
    }
}

/// `GET /v1/models`.
#[derive(Serialize, ToSchema)]
pub struct ModelList {
    /// Always `list`.
    #[schema(value_type = String, examples("list"))]
    pub object: &'static str,
    pub data: Vec<Model>,
}

#[derive(Serialize, ToSchema)]
pub struct Model {
    /// `provider/model`, or `demo`.
    pub id: String,
    /// Always `model`.
    #[schema(value_type = String, examples("model"))]
    pub object: &'static str,
    /// Always 0.
    pub created: i64,
    /// The provider, or `sluice` for `demo`.
    pub owned_by: String,
}

impl Model {
    pub fn new(id: String) -> Self {
        let owned_by = id.split_once('/').map_or("sluice", |(p, _)| p).to_owned();
        Self {
            id,
            object: "model",
            created: 0,
            owned_by,
        }
    }
}
