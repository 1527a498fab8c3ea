//! The built-in `demo` model: a local streaming echo, so that a fresh `cargo run` answers with no
//! key and no service. It exists only while no provider is configured, and says what it is.

use std::time::Duration;

use futures::StreamExt;

use super::{ChatRequest, EventStream, Provider, ProviderError, StreamEvent, message_text};
use crate::domain::Usage;

/// Request fields the echo can take (and ignore without changing what it promises).
const DEMO_PARAMS: &[&str] = &[
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "seed",
    "user",
];

pub const DEMO_MODEL: &str = "demo";

/// Streams a fixed introduction followed by the last user message, a word at a time.
#[derive(Debug, Clone)]
pub struct DemoProvider {
    pub word_delay: Duration,
}

impl Default for DemoProvider {
    fn default() -> Self {
        Self {
            word_delay: Duration::from_millis(30),
        }
    }
}

#[async_trait::async_trait]
impl Provider for DemoProvider {
    fn name(&self) -> &str {
        DEMO_MODEL
    }

    fn accepts(&self, param: &str) -> bool {
        DEMO_PARAMS.contains(&param)
    }

    async fn stream(&self, request: ChatRequest) -> Result<EventStream, ProviderError> {
        let question = request
            .messages
            .iter()
            .rev()
            .find(|m| m.get("role").and_then(|r| r.as_str()) == Some("user"))
            .map(message_text)
            .unwrap_or_default();
        let text = format!(
            "This is sluice's built-in demo model: no upstream provider is configured, so I \
             echo what you said. Set OPENAI_API_KEY (or another provider) for real answers.\n\n\
             You said: {question}"
        );
        let prompt_tokens = request.estimate_prompt_tokens();
        let completion_tokens = Usage::estimate_tokens(&text);
        // Split after each space so that the pieces concatenate to the exact text.
        let pieces: Vec<String> = text.split_inclusive(' ').map(str::to_owned).collect();
        let delay = self.word_delay;
        let deltas = futures::stream::iter(pieces).then(move |piece| async move {
            tokio::time::sleep(delay).await;
            Ok(StreamEvent::Delta(piece))
        });
        let tail = futures::stream::iter([
            Ok(StreamEvent::Done {
                finish_reason: "stop".to_owned(),
            }),
            Ok(StreamEvent::Usage(Usage::new(
                prompt_tokens,
                completion_tokens,
                true,
            ))),
        ]);
        Ok(deltas.chain(tail).boxed())
    }
}
