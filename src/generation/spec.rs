//! What a generation is asked to do, decided entirely by the service layer: the core runs a
//! spec and knows no dialect, no chat settings, no agent and no regenerate rule.

use uuid::Uuid;

use crate::domain::PromptMessage;
use crate::providers::{ChatRequest, Resolved};

/// One generation to run.
pub struct GenerationSpec {
    /// Who is charged for it.
    pub workspace_id: Uuid,
    /// The provider and model (with their fallbacks, price, caps and deadlines).
    pub resolved: Resolved,
    /// The prompt and every parameter, as sent upstream.
    pub request: ChatRequest,
    /// A web search to run first, its sources inserted into the prompt and sent to readers.
    pub search: Option<SearchSpec>,
    /// What is kept of it.
    pub storage: Storage,
}

/// The search step of a generation.
pub struct SearchSpec {
    /// What to search for.
    pub query: String,
    /// The prompt the sources are inserted into (it replaces the request's messages).
    pub prompt: Vec<PromptMessage>,
}

/// What a generation keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// The answer to `question_id` in `chat_id`: a stored message, checkpointed while it runs,
    /// resumable by any reader, line breaks normalised. `replaces` names the question's previous
    /// answer, deleted in the transaction that creates this one (regenerate); `agent_version`
    /// is recorded on the answer (which version of an agent's preset produced it).
    Answer {
        chat_id: Uuid,
        question_id: Uuid,
        replaces: Option<Uuid>,
        agent_version: Option<i32>,
    },
    /// Relayed exactly as the model wrote it; only its usage is recorded.
    UsageOnly,
}
